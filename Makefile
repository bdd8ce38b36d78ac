# Rustkube developer entry points. `make run` and `make test` are the two commands the
# README promises work on a fresh machine; everything a test needs is installed by `deps`.

CARGO      ?= cargo
CLUSTER    ?= .cluster
# Debian packages the tests use: real etcd/etcdctl to compare the kvstore against, curl for
# raw HTTPS checks of the apiserver, tzdata for cron jobs' time zones, and
# protoc for the etcd-client crate (our own proto crate uses a vendored protoc).
DEB_PKGS   := etcd-server etcd-client protobuf-compiler libprotobuf-dev curl tzdata
SHELL      := /bin/bash
# A fresh clone gains nothing from incremental compilation, and its session files are
# gigabytes of disk; set CARGO_INCREMENTAL=1 in the environment to keep them.
export CARGO_INCREMENTAL ?= 0
# A virtualenv for the Python client the e2e tests drive (kept out of the system's
# site-packages); the tests find it here.
PYVENV     := $(CURDIR)/target/pyvenv

.PHONY: all build test e2e run down status bench bench-kvstore bench-apiserver bench-scheduler bench-controllers lint fmt deps

all: build

build:
	$(CARGO) build --workspace --bins

## deps: install the Debian and PyPI packages the tests need (idempotent: installs only what is missing).
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all present ($(DEB_PKGS))"; fi
	@command -v rustfmt >/dev/null && command -v cargo-clippy >/dev/null || rustup component add rustfmt clippy
	@test -x $(PYVENV)/bin/python || python3 -m venv $(PYVENV)
	@$(PYVENV)/bin/python -c 'import kubernetes' 2>/dev/null || $(PYVENV)/bin/pip install --quiet "kubernetes>=29"

## test: the whole workspace's tests (unit, integration and process-level suites).
test: deps build
	$(CARGO) test --workspace --no-fail-fast

## e2e: only the suites that start clusters as processes.
e2e: deps build
	$(CARGO) test -p e2e --no-fail-fast

## run: start a local cluster in $(CLUSTER)/ (foreground; Ctrl-C stops it).
run: build
	./target/debug/local-cluster up --dir $(CLUSTER)

down:
	./target/debug/local-cluster down --dir $(CLUSTER)

status:
	./target/debug/local-cluster status --dir $(CLUSTER)

## bench: every benchmark, each printing ratios against its reference measured in the same run.
bench: bench-kvstore bench-apiserver bench-scheduler bench-controllers

## bench-kvstore: the same load against Debian's etcd 3.4 and the kvstore, with ratios.
bench-kvstore: deps
	$(CARGO) build --release --bins
	RUSTKUBE_BIN_DIR=$(CURDIR)/target/release ./target/release/bench-kvstore

## bench-apiserver: pods created over REST with gRPC watchers, over the kvstore and over etcd.
bench-apiserver: deps
	$(CARGO) build --release --bins
	RUSTKUBE_BIN_DIR=$(CURDIR)/target/release ./target/release/bench-apiserver

## bench-scheduler: scheduler_perf-style runs (5000 nodes/10000 pods; constraints on 500 nodes) with raw bind throughput.
bench-scheduler: deps
	$(CARGO) build --release --bins
	RUSTKUBE_BIN_DIR=$(CURDIR)/target/release ./target/release/bench-scheduler

## bench-controllers: a 5000-pod ReplicaSet against raw pod creates, and a 1000-pod Deployment's rolling update.
bench-controllers: deps
	$(CARGO) build --release --bins
	RUSTKUBE_BIN_DIR=$(CURDIR)/target/release ./target/release/bench-controllers

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
