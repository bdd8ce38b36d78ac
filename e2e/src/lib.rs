//! The end-to-end harness: starts Rustkube's daemons as separate processes with
//! run-unique ports and directories, captures their logs, waits for readiness by
//! polling, and stops exactly the processes it started (by pid), also when a test fails.
//! Also the cluster PKI and kubeconfigs, and the logic behind the `local-cluster` binary.
//!
//! Start with [`process::Process`] (one daemon), [`kvstore::KvCluster`] (a kvstore or
//! etcd group) and [`apiserver::ControlPlane`] (a store and an apiserver with PKI and
//! kubeconfig); [`components`] starts the scheduler and controller-manager,
//! [`kube::TestClient`] drives the API in tests, [`fake_kubelet`] stands in for kubelets;
//! [`cluster`] is what `local-cluster` runs.
//!
//! Must not: link any daemon crate (tests drive the real binaries and real clients), or
//! signal a process it did not start.

pub mod apiserver;
pub mod bench;
pub mod binaries;
pub mod cluster;
pub mod components;
pub mod fake_kubelet;
pub mod https;
pub mod kube;
pub mod kvstore;
pub mod linearizability;
pub mod pki;
pub mod ports;
pub mod process;
pub mod rundir;
pub mod wait;

pub use process::Process;
pub use rundir::RunDir;
