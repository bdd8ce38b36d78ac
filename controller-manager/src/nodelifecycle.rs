//! The node-lifecycle controller: a node whose Lease in `kube-node-lease` has not been
//! renewed for `--node-monitor-grace-period` gets Ready=Unknown and the
//! `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints; a renewed lease
//! removes them. Pods on a node with NoExecute taints are evicted (deleted): at once
//! without a matching toleration, after `tolerationSeconds` with one (the apiserver gives
//! every pod 300 s for not-ready and unreachable). Evictions are rate limited.

use crate::controller::{self, run_workers, Requeue};
use crate::Context;
use api::scheduling::tolerates;
use client::{Api, DeleteParams, Informer, Patch, WorkQueue};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Pod evictions per second across the cluster, with a small burst.
const EVICTIONS_PER_SECOND: f64 = 10.0;
const EVICTION_BURST: f64 = 10.0;

#[derive(Clone)]
pub struct NodeLifecycleController {
    ctx: Context,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    grace: Duration,
    period: Duration,
    bucket: Arc<Mutex<(f64, Instant)>>,
}

fn ready_status(n: &Node) -> Option<&str> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

impl NodeLifecycleController {
    pub fn new(ctx: &Context, grace: Duration, period: Duration) -> Self {
        let c = NodeLifecycleController {
            ctx: ctx.clone(),
            nodes: ctx.factory.informer::<Node>(),
            leases: ctx.factory.informer::<Lease>(),
            pods: ctx.factory.informer::<Pod>(),
            queue: WorkQueue::default(),
            grace,
            period,
            bucket: Arc::new(Mutex::new((EVICTION_BURST, Instant::now()))),
        };
        let q = c.queue.clone();
        c.leases.add_handler(move |_| q.add("monitor".into()));
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.nodes.clone()),
            Box::new(self.leases.clone()),
            Box::new(self.pods.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        self.queue.add("monitor".into());
        run_workers(
            "node-lifecycle",
            self.queue.clone(),
            workers.min(1),
            move |_| {
                let me = me.clone();
                async move { me.monitor().await }
            },
        );
    }

    /// Takes one eviction token, or says how long until one is free.
    fn take_token(&self) -> Result<(), Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * EVICTIONS_PER_SECOND)
            .min(EVICTION_BURST);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.0) / EVICTIONS_PER_SECOND))
        }
    }

    async fn monitor(&self) -> anyhow::Result<Requeue> {
        let mut next = self.period;
        let nodes_api: Api<Node> = Api::all(self.ctx.client.clone());
        for node in self.nodes.store().list() {
            let name = node.metadata.name.clone().unwrap_or_default();
            let renewed = self
                .leases
                .store()
                .get(&format!("kube-node-lease/{name}"))
                .and_then(|l| {
                    l.spec
                        .as_ref()?
                        .renew_time
                        .as_ref()
                        .map(|t| t.0.as_second())
                })
                .or_else(|| {
                    node.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second())
                })
                .unwrap_or(0);
            let now = controller::unix_now();
            let stale = now - renewed > self.grace.as_secs() as i64;
            let taints: Vec<Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let has_unreachable = taints.iter().any(|t| t.key == UNREACHABLE);
            if stale {
                if ready_status(&node) != Some("Unknown") {
                    let mut n = node.as_ref().clone();
                    let status = n.status.get_or_insert_with(Default::default);
                    let conditions = status.conditions.get_or_insert_with(Vec::new);
                    let now_t = controller::now();
                    if !conditions.iter().any(|c| c.type_ == "Ready") {
                        conditions.push(serde_json::from_value(
                            json!({"type": "Ready", "status": "Unknown"}),
                        )?);
                    }
                    for c in conditions.iter_mut() {
                        c.status = "Unknown".into();
                        c.reason = Some("NodeStatusUnknown".into());
                        c.message = Some("Kubelet stopped posting node status.".into());
                        c.last_transition_time = Some(now_t.clone());
                    }
                    match nodes_api.replace_status(&n).await {
                        Ok(_) => self.ctx.recorder.record(
                            node.as_ref(),
                            "Normal",
                            "NodeNotReady",
                            &format!("Node {name} status is now: NodeNotReady"),
                        ),
                        Err(e) if e.is_conflict() || e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if !has_unreachable {
                    let mut new = taints.clone();
                    let added = controller::now();
                    new.push(Taint {
                        key: UNREACHABLE.into(),
                        effect: "NoSchedule".into(),
                        value: None,
                        time_added: None,
                    });
                    new.push(Taint {
                        key: UNREACHABLE.into(),
                        effect: "NoExecute".into(),
                        value: None,
                        time_added: Some(added),
                    });
                    self.set_taints(&nodes_api, &node, new).await?;
                }
            } else if has_unreachable {
                let kept: Vec<Taint> = taints
                    .iter()
                    .filter(|t| t.key != UNREACHABLE && t.key != NOT_READY)
                    .cloned()
                    .collect();
                self.set_taints(&nodes_api, &node, kept).await?;
            } else {
                // Time until this node's lease would go stale.
                let left = (self.grace.as_secs() as i64 - (now - renewed)).max(1) as u64;
                next = next.min(Duration::from_secs(left));
            }
            if let Some(d) = self.evict(&node, &taints).await? {
                next = next.min(d);
            }
        }
        Ok(Some(next))
    }

    async fn set_taints(
        &self,
        api: &Api<Node>,
        node: &Node,
        taints: Vec<Taint>,
    ) -> anyhow::Result<()> {
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": taints}});
        match api
            .patch(
                node.metadata.name.as_deref().unwrap_or_default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Evicts pods that do not tolerate the node's NoExecute taints (now, or once their
    /// tolerationSeconds have passed since the taint was added). Returns when to look
    /// again.
    async fn evict(&self, node: &Node, taints: &[Taint]) -> anyhow::Result<Option<Duration>> {
        let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
        if no_execute.is_empty() {
            return Ok(None);
        }
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let mut again: Option<Duration> = None;
        let mut sooner = |d: Duration| again = Some(again.map_or(d, |a: Duration| a.min(d)));
        for pod in self.pods.store().list() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name)
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            // The longest wait any taint allows; None = evict now.
            let mut wait: Option<i64> = Some(i64::MAX);
            for taint in &no_execute {
                let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
                let allowed = if matching.is_empty() {
                    None
                } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
                    Some(i64::MAX)
                } else {
                    let secs = matching
                        .iter()
                        .filter_map(|t| t.toleration_seconds)
                        .min()
                        .unwrap_or(0);
                    let since = taint.time_added.as_ref().map_or(0, controller::age_secs);
                    Some(secs - since)
                };
                wait = match (wait, allowed) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    _ => None,
                };
            }
            match wait {
                Some(w) if w > 0 => {
                    if w != i64::MAX {
                        sooner(Duration::from_secs(w as u64));
                    }
                    continue;
                }
                _ => {}
            }
            if let Err(d) = self.take_token() {
                sooner(d);
                continue;
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let dp = DeleteParams {
                precondition_uid: pod.metadata.uid.clone(),
                ..Default::default()
            };
            if api.delete_if_current(&pod_name, &dp).await? {
                self.ctx.recorder.record(
                    pod.as_ref(),
                    "Normal",
                    "TaintManagerEviction",
                    &format!(
                        "Marking for deletion Pod {}/{pod_name}",
                        pod.metadata.namespace.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
        Ok(again)
    }
}
