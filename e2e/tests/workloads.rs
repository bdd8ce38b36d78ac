//! Jobs, cron jobs, daemon sets, stateful sets and node failure, driven by the
//! controller-manager process with fake nodes and a stand-in kubelet; the test finishes
//! job pods itself (Succeeded or Failed) as containers would.

use client::{Api, ListParams, Patch};
use e2e::apiserver::ControlPlane;
use e2e::components;
use e2e::fake_kubelet::FakeKubelet;
use e2e::kube::TestClient;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

struct Env {
    run: RunDir,
    cp: ControlPlane,
    kube: TestClient,
    _components: Vec<components::Component>,
    _kubelet: FakeKubelet,
}

fn env(name: &str, cm_args: &[&str]) -> Env {
    let run = RunDir::temp(name).unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let kube = TestClient::new(&cp);
    let mut comps = Vec::new();
    for (binary, args) in [
        ("scheduler", Vec::new()),
        (
            "controller-manager",
            cm_args.iter().map(|s| s.to_string()).collect(),
        ),
    ] {
        let mut c = components::spawn(&run, binary, binary, &cp.kubeconfig, &args, false).unwrap();
        c.wait_ready(Duration::from_secs(60)).unwrap();
        comps.push(c);
    }
    let kubelet = {
        let _g = kube.rt.enter();
        FakeKubelet::start(kube.client.clone())
    };
    kube.namespace("w");
    Env {
        run,
        cp,
        kube,
        _components: comps,
        _kubelet: kubelet,
    }
}

fn apply(e: &Env, name: &str, yaml: &str) {
    let p = e.run.path().join(name);
    std::fs::write(&p, yaml).unwrap();
    e.cp.kubectl_ok(&["apply", "-f", p.to_str().unwrap()])
        .unwrap();
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Finishes a running pod as its containers would.
fn finish(kube: &TestClient, p: &Pod, outcome: &str) {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), "w");
    let patch = json!({"status": {"phase": outcome}});
    kube.rt
        .block_on(api.patch_status(p.metadata.name.as_deref().unwrap(), &Patch::Merge(patch)))
        .unwrap();
}

fn running(kube: &TestClient, selector: &str) -> Vec<Pod> {
    kube.pods("w", selector)
        .into_iter()
        .filter(|p| phase(p) == "Running" && p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn job_condition(kube: &TestClient, name: &str, cond: &str) -> Option<Job> {
    let jobs: Api<Job> = Api::namespaced(kube.client.clone(), "w");
    let j = kube.rt.block_on(jobs.get_opt(name)).unwrap()?;
    let met = j
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == cond && c.status == "True");
    met.then_some(j)
}

#[test]
fn jobs_complete_fail_index_and_expire() {
    let e = env("wl-jobs", &[]);
    let kube = &e.kube;
    kube.node("n0", json!({}), json!({}), "100");
    let job = |name: &str, extra: &str| {
        format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}, namespace: w}}\nspec:\n{extra}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: busybox:1.36}}]\n")
    };
    // completions 3, parallelism 2: two at a time until three succeed.
    apply(
        &e,
        "ok.yaml",
        &job("ok", "  completions: 3\n  parallelism: 2\n"),
    );
    let first = kube.wait("2 running pods", |k| {
        Some(running(k, "job-name=ok")).filter(|p| p.len() == 2)
    });
    for p in &first {
        finish(kube, p, "Succeeded");
    }
    let third = kube.wait("the third pod", |k| {
        Some(running(k, "job-name=ok")).filter(|p| p.len() == 1)
    });
    finish(kube, &third[0], "Succeeded");
    let done = kube.wait("job ok to complete", |k| job_condition(k, "ok", "Complete"));
    let st = done.status.unwrap();
    assert_eq!((st.succeeded, st.active), (Some(3), None));
    assert!(st.completion_time.is_some());
    e.cp.kubectl_ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "-n",
        "w",
        "--timeout=10s",
    ])
    .unwrap();

    // backoffLimit 1: the second failure fails the job (after a 10 s backoff).
    apply(&e, "bad.yaml", &job("bad", "  backoffLimit: 1\n"));
    let p = kube.wait("bad's first pod", |k| running(k, "job-name=bad").pop());
    finish(kube, &p, "Failed");
    let p = kube.wait("bad's retry", |k| running(k, "job-name=bad").pop());
    finish(kube, &p, "Failed");
    let failed = kube.wait("job bad to fail", |k| job_condition(k, "bad", "Failed"));
    let reason = failed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .reason;
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));

    // Indexed: each pod knows its index; completedIndexes records them.
    apply(&e, "idx.yaml", &job("idx", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  ttlSecondsAfterFinished: 1\n"));
    let pods = kube.wait("3 indexed pods", |k| {
        Some(running(k, "job-name=idx")).filter(|p| p.len() == 3)
    });
    let indexes: BTreeSet<String> = pods
        .iter()
        .map(|p| {
            let env = p.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
            env.iter()
                .find(|v| v.name == "JOB_COMPLETION_INDEX")
                .unwrap()
                .value
                .clone()
                .unwrap()
        })
        .collect();
    assert_eq!(
        indexes,
        ["0", "1", "2"].iter().map(|s| s.to_string()).collect()
    );
    for p in &pods {
        finish(kube, p, "Succeeded");
    }
    let done = kube.wait("idx to complete", |k| job_condition(k, "idx", "Complete"));
    assert_eq!(
        done.status.unwrap().completed_indexes.as_deref(),
        Some("0-2")
    );
    // ttlSecondsAfterFinished: 1 — the job is then deleted.
    let jobs: Api<Job> = Api::namespaced(kube.client.clone(), "w");
    kube.wait("idx to be deleted after its TTL", |k| {
        k.rt.block_on(jobs.get_opt("idx"))
            .unwrap()
            .is_none()
            .then_some(())
    });
}

#[test]
fn daemonsets_statefulsets_and_cronjobs() {
    let e = env("wl-sets", &[]);
    let kube = &e.kube;
    kube.node("w1", json!({"role": "worker"}), json!({}), "100");
    kube.node("w2", json!({"role": "worker"}), json!({}), "100");
    kube.node("m1", json!({"role": "master"}), json!({}), "100");
    kube.node(
        "t1",
        json!({"role": "worker"}),
        json!({"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}),
        "100",
    );
    // A daemon set on the workers it tolerates: w1 and w2.
    let ds = |image: &str| {
        format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: w}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      nodeSelector: {{role: worker}}\n      containers: [{{name: c, image: {image}}}]\n")
    };
    apply(&e, "ds.yaml", &ds("busybox:1.36"));
    let nodes_of = |k: &TestClient| -> BTreeSet<String> {
        running(k, "app=agent")
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect()
    };
    kube.wait("agents on w1 and w2", |k| {
        (nodes_of(k) == ["w1".to_string(), "w2".to_string()].into()).then_some(())
    });
    kube.node("w3", json!({"role": "worker"}), json!({}), "100");
    kube.wait("an agent on the new worker", |k| {
        (nodes_of(k).len() == 3).then_some(())
    });
    apply(&e, "ds2.yaml", &ds("busybox:1.37"));
    kube.wait("agents rolled to the new image", |k| {
        let pods = running(k, "app=agent");
        (pods.len() == 3
            && pods.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1.37")
            }))
        .then_some(())
    });
    let dss: Api<DaemonSet> = Api::namespaced(kube.client.clone(), "w");
    kube.wait("daemon set status", |k| {
        let st = k.rt.block_on(dss.get("agent")).unwrap().status?;
        (st.desired_number_scheduled == 3
            && st.number_ready == 3
            && st.updated_number_scheduled == Some(3))
        .then_some(())
    });

    // A stateful set: stable names, scaled down from the highest ordinal.
    // Its claims go with a scale-down and with the set.
    apply(&e, "sts.yaml", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: w}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {matchLabels: {app: db}}\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: c, image: busybox:1.36}]\n");
    let names = |k: &TestClient| -> Vec<String> {
        let mut n: Vec<String> = running(k, "app=db")
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        n.sort();
        n
    };
    kube.wait("db-0, db-1, db-2", |k| {
        (names(k) == ["db-0", "db-1", "db-2"]).then_some(())
    });
    let pods = running(kube, "app=db");
    let created = |n: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .unwrap()
            .metadata
            .creation_timestamp
            .clone()
            .unwrap()
            .0
    };
    assert!(
        created("db-0") <= created("db-1") && created("db-1") <= created("db-2"),
        "created in order"
    );
    assert_eq!(
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some("db-1"))
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .hostname
            .as_deref(),
        Some("db-1")
    );
    let db1 = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("db-1"))
        .unwrap();
    let volume = db1
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == "data"))
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone());
    assert_eq!(volume.as_deref(), Some("data-db-1"));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), "w");
    let claim_names = |k: &TestClient| -> Vec<String> {
        let mut n: Vec<String> =
            k.rt.block_on(claims.list(&ListParams::default().labels("app=db")))
                .unwrap()
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
        n.sort();
        n
    };
    assert_eq!(claim_names(kube), ["data-db-0", "data-db-1", "data-db-2"]);
    let claim = kube.rt.block_on(claims.get("data-db-0")).unwrap();
    assert_eq!(
        claim.spec.as_ref().and_then(|s| s.access_modes.clone()),
        Some(vec!["ReadWriteOnce".to_string()])
    );
    e.cp.kubectl_ok(&["scale", "sts/db", "-n", "w", "--replicas=1"])
        .unwrap();
    kube.wait("only db-0 left", |k| {
        (k.pods("w", "app=db").len() == 1 && names(k) == ["db-0"]).then_some(())
    });
    kube.wait("the scaled-down claims deleted", |k| {
        (claim_names(k) == ["data-db-0"]).then_some(())
    });
    let sts: Api<StatefulSet> = Api::namespaced(kube.client.clone(), "w");
    kube.wait("stateful set status", |k| {
        let st = k.rt.block_on(sts.get("db")).unwrap().status?;
        (st.replicas == 1 && st.ready_replicas == Some(1)).then_some(())
    });
    e.cp.kubectl_ok(&["delete", "sts/db", "-n", "w"]).unwrap();
    kube.wait("the set's claims deleted with it", |k| {
        claim_names(k).is_empty().then_some(())
    });

    // A cron job every minute: a job appears within a minute, owned by it.
    apply(&e, "cj.yaml", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick, namespace: w}\nspec:\n  schedule: '* * * * *'\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: busybox:1.36}]\n");
    let jobs: Api<Job> = Api::namespaced(kube.client.clone(), "w");
    let j = e2e::wait::wait_for(
        "a job from the cron job",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let list = kube.rt.block_on(jobs.list(&Default::default()))?.items;
            Ok(list.into_iter().find(|j| {
                j.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("tick-"))
            }))
        },
    )
    .unwrap();
    assert_eq!(j.metadata.owner_references.unwrap()[0].kind, "CronJob");
}

#[test]
fn an_unreachable_node_is_tainted_and_its_pods_evicted() {
    let e = env(
        "wl-nodes",
        &["--node-monitor-grace-period=3s", "--node-monitor-period=1s"],
    );
    let kube = &e.kube;
    kube.node("gone", json!({}), json!({}), "100");
    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), "kube-node-lease");
    let renew = || {
        let now = k8s_openapi::jiff::Timestamp::from_second(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        )
        .unwrap();
        let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "gone", "namespace": "kube-node-lease"}, "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 40, "renewTime": now.to_string()}})).unwrap();
        match kube.rt.block_on(leases.get_opt("gone")).unwrap() {
            Some(mut l) => {
                l.spec = lease.spec;
                kube.rt.block_on(leases.replace(&l)).unwrap();
            }
            None => {
                kube.rt.block_on(leases.create(&lease)).unwrap();
            }
        }
    };
    renew();
    let tol = |secs: Option<i64>| {
        let mut t = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        json!({"nodeName": "gone", "tolerations": [t], "containers": [{"name": "c", "image": "busybox:1.36"}]})
    };
    kube.pod("w", "brief", tol(Some(2)), json!({}));
    kube.pod("w", "patient", tol(None), json!({}));
    kube.wait("both pods running", |k| {
        (running(k, "").len() == 2).then_some(())
    });
    // No more renewals: after the grace period the node is unreachable.
    let nodes: Api<Node> = Api::all(kube.client.clone());
    kube.wait("the unreachable taint and Ready=Unknown", |k| {
        let n = k.rt.block_on(nodes.get("gone")).unwrap();
        let tainted = n
            .spec
            .as_ref()?
            .taints
            .as_ref()?
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
        let unknown = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "Unknown");
        (tainted && unknown).then_some(())
    });
    kube.wait("the pod tolerating 2 s to be evicted", |k| {
        k.get("w", "brief").is_none().then_some(())
    });
    assert!(
        kube.get("w", "patient").is_some(),
        "a pod tolerating the taint forever stays"
    );
    // The node comes back: the taints go.
    renew();
    kube.wait("the taints to be removed", |k| {
        let n = k.rt.block_on(nodes.get("gone")).unwrap();
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        (!taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable"))
        .then_some(())
    });
}

#[test]
fn statefulset_partitioned_rolling_update() {
    let e = env("wl-partition", &[]);
    let kube = &e.kube;
    kube.node("n0", json!({}), json!({}), "100");
    let sts = |image: &str| {
        format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: w}}\nspec:\n  serviceName: db\n  replicas: 3\n  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{partition: 1}}}}\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers: [{{name: c, image: {image}}}]\n")
    };
    apply(&e, "sts.yaml", &sts("busybox:1.36"));
    kube.wait("3 running pods", |k| {
        (running(k, "app=db").len() == 3).then_some(())
    });
    apply(&e, "sts2.yaml", &sts("busybox:1.37"));
    let image_of = |k: &TestClient, n: &str| -> Option<String> {
        let p = running(k, "app=db")
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))?;
        p.spec?.containers[0].image.clone()
    };
    kube.wait("db-1 and db-2 updated", |k| {
        (image_of(k, "db-2").as_deref() == Some("busybox:1.37")
            && image_of(k, "db-1").as_deref() == Some("busybox:1.37"))
        .then_some(())
    });
    let sets: Api<StatefulSet> = Api::namespaced(kube.client.clone(), "w");
    kube.wait("status: 2 updated of 3", |k| {
        let st = k.rt.block_on(sets.get("db")).unwrap().status?;
        (st.updated_replicas == Some(2) && st.ready_replicas == Some(3)).then_some(())
    });
    assert_eq!(
        image_of(kube, "db-0").as_deref(),
        Some("busybox:1.36"),
        "below the partition: untouched"
    );
}
