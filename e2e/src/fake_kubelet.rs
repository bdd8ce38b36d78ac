//! A stand-in for kubelets in tests that need no containers: every pod bound to a node
//! becomes Running and Ready with a pod IP, and pods being deleted are finished (deleted
//! with grace 0), as a kubelet would. Pod IPs are strings in API objects only; nothing is
//! configured on the host.

use client::informer::Event;
use client::{Api, Client, DeleteParams, Informer, ListParams, Patch};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Pods with this label set to "false" are left not ready.
pub const NOT_READY_LABEL: &str = "e2e.rustkube.io/not-ready";

pub struct FakeKubelet {
    _informer: Informer<Pod>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl FakeKubelet {
    /// Starts acting on every pod of the cluster (needs a Tokio runtime).
    pub fn start(client: Client) -> FakeKubelet {
        let informer = Informer::new(Api::<Pod>::all(client.clone()), ListParams::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Pod>>();
        informer.add_handler(move |ev| {
            if let Event::Add(p) | Event::Update(_, p) = ev {
                let _ = tx.send(p.clone());
            }
        });
        informer.start();
        let next_ip = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let client = client.clone();
                let next_ip = next_ip.clone();
                tokio::spawn(async move {
                    let ns = p.metadata.namespace.clone().unwrap_or_default();
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(client, &ns);
                    let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                    if p.metadata.deletion_timestamp.is_some() {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            precondition_uid: p.metadata.uid.clone(),
                            ..Default::default()
                        };
                        let _ = api.delete(&name, &dp).await;
                        return;
                    }
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    if !bound || matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
                        return;
                    }
                    let ready = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(NOT_READY_LABEL))
                        .map(String::as_str)
                        != Some("false");
                    let n = next_ip.fetch_add(1, Ordering::Relaxed);
                    let ip = format!("10.244.{}.{}", 100 + n / 250, n % 250 + 1);
                    let t = now();
                    let flag = if ready { "True" } else { "False" };
                    let status = json!({"status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1", "startTime": t,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                        {"type": "ContainersReady", "status": flag, "lastTransitionTime": t},
                        {"type": "Ready", "status": flag, "lastTransitionTime": t}
                    ]}});
                    let _ = api.patch_status(&name, &Patch::Merge(status)).await;
                });
            }
        });
        FakeKubelet {
            _informer: informer,
            task,
        }
    }
}
