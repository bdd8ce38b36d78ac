//! The pod garbage collector: deletes terminated pods beyond
//! `--terminated-pod-gc-threshold` (oldest first), pods bound to nodes that no longer
//! exist, and unscheduled pods that are being deleted (no kubelet will finish them).

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::core::v1::{Node, Pod};
use std::sync::Arc;
use std::time::Duration;

/// How often the collector looks even without events (Kubernetes: 20 s).
const PERIOD: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct PodGcController {
    ctx: Context,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    queue: WorkQueue<String>,
    threshold: usize,
}

impl PodGcController {
    pub fn new(ctx: &Context, threshold: usize) -> Self {
        let c = PodGcController {
            ctx: ctx.clone(),
            pods: ctx.factory.informer::<Pod>(),
            nodes: ctx.factory.informer::<Node>(),
            queue: WorkQueue::default(),
            threshold,
        };
        let q = c.queue.clone();
        c.nodes.add_handler(move |ev| {
            if let client::informer::Event::Delete(_) = ev {
                q.add("gc".into());
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.pods.clone()), Box::new(self.nodes.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        self.queue.add("gc".into());
        run_workers("podgc", self.queue.clone(), workers, move |_| {
            let me = me.clone();
            async move { me.sync().await }
        });
    }

    async fn delete(&self, p: &Pod, grace: Option<i64>) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            p.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let dp = DeleteParams {
            grace_period_seconds: grace,
            precondition_uid: p.metadata.uid.clone(),
            ..Default::default()
        };
        api.delete_if_current(p.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await?;
        Ok(())
    }

    async fn sync(&self) -> anyhow::Result<Requeue> {
        let pods = self.pods.store().list();
        // Terminated pods over the threshold, oldest first.
        let mut done: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if done.len() > self.threshold {
            done.sort_by_key(|p| {
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second())
            });
            let excess = done.len() - self.threshold;
            for p in &done[..excess] {
                self.delete(p, None).await?;
            }
        }
        // Pods on nodes that are gone (checked with the apiserver, not just the cache).
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        for p in &pods {
            let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
            else {
                if p.metadata.deletion_timestamp.is_some() {
                    self.delete(p, Some(0)).await?;
                }
                continue;
            };
            if self.nodes.store().get(node).is_none() && nodes.get_opt(node).await?.is_none() {
                tracing::info!(pod = %format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or_default(), p.metadata.name.as_deref().unwrap_or_default()), %node, "deleting a pod bound to a node that no longer exists");
                self.delete(p, Some(0)).await?;
            }
        }
        Ok(Some(PERIOD))
    }
}
