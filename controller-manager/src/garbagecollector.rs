//! The garbage collector: deletes dependents whose owners are gone, and carries out the
//! two deletion policies that involve dependents:
//!
//! - Foreground: an owner marked with the `foregroundDeletion` finalizer has its
//!   dependents deleted (in the foreground too); when no dependent that blocks owner
//!   deletion is left, the finalizer is removed and the owner goes.
//! - Orphan: an owner marked with the `orphan` finalizer has itself removed from its
//!   dependents' ownerReferences, then the finalizer is removed.
//!
//! It keeps a graph (uid → owners, owner uid → dependents) from informers on the kinds
//! that own or are owned in practice. An owner not in the graph is looked up with the
//! apiserver before anything is deleted.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::dynamic::DynamicApi;
use client::informer::Event;
use client::{DeleteParams, Informer, Object, WorkQueue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
struct Node {
    api_version: &'static str,
    kind: &'static str,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn remove(&mut self, uid: &str) -> Option<Node> {
        let n = self.nodes.remove(uid)?;
        for o in &n.owners {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(n)
    }

    fn insert(&mut self, uid: String, n: Node) {
        self.remove(&uid);
        for o in &n.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, n);
    }
}

#[derive(Clone)]
pub struct GarbageCollector {
    ctx: Context,
    graph: Arc<Mutex<Graph>>,
    queue: WorkQueue<String>,
    informers: Vec<Arc<dyn client::informer::Startable + Send + Sync>>,
}

/// Work items: `delete:<uid>` (check whether a dependent's owners are gone),
/// `foreground:<uid>`, `orphan:<uid>`.
fn watch<K: Object>(
    ctx: &Context,
    graph: &Arc<Mutex<Graph>>,
    queue: &WorkQueue<String>,
) -> Option<Arc<dyn client::informer::Startable + Send + Sync>> {
    // Only kinds the apiserver serves.
    api::registry::by_api_version_kind(K::API_VERSION, K::KIND)?;
    let informer: Informer<K> = ctx.factory.informer::<K>();
    let (graph, q) = (graph.clone(), queue.clone());
    informer.add_handler(move |ev| {
        let mut g = graph.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::Add(o) | Event::Update(_, o) => {
                let m: &ObjectMeta = o.metadata();
                let Some(uid) = m.uid.clone() else { return };
                let n = Node {
                    api_version: K::API_VERSION,
                    kind: K::KIND,
                    namespace: m.namespace.clone().unwrap_or_default(),
                    name: m.name.clone().unwrap_or_default(),
                    owners: m.owner_references.clone().unwrap_or_default(),
                    deleting: m.deletion_timestamp.is_some(),
                    finalizers: m.finalizers.clone().unwrap_or_default(),
                };
                if n.deleting && n.finalizers.iter().any(|f| f == "foregroundDeletion") {
                    q.add(format!("foreground:{uid}"));
                }
                if n.deleting && n.finalizers.iter().any(|f| f == "orphan") {
                    q.add(format!("orphan:{uid}"));
                }
                if !n.owners.is_empty() {
                    q.add(format!("delete:{uid}"));
                }
                // A dependent that stopped blocking may unblock its owner's foreground
                // deletion.
                for o in &n.owners {
                    q.add(format!("foreground:{}", o.uid));
                }
                g.insert(uid, n);
            }
            Event::Delete(o) => {
                let Some(uid) = o.metadata().uid.clone() else {
                    return;
                };
                let gone = g.remove(&uid);
                for d in g.dependents.get(&uid).into_iter().flatten() {
                    q.add(format!("delete:{d}"));
                }
                for owner in gone.iter().flat_map(|n| n.owners.iter()) {
                    q.add(format!("foreground:{}", owner.uid));
                }
            }
        }
    });
    Some(Arc::new(informer))
}

impl GarbageCollector {
    pub fn new(ctx: &Context) -> Self {
        use k8s_openapi::api::{
            apps::v1 as apps, batch::v1 as batch, core::v1 as core, discovery::v1 as discovery,
        };
        let graph: Arc<Mutex<Graph>> = Arc::default();
        let queue = WorkQueue::default();
        let informers: Vec<Arc<dyn client::informer::Startable + Send + Sync>> = [
            watch::<core::Pod>(ctx, &graph, &queue),
            watch::<apps::ReplicaSet>(ctx, &graph, &queue),
            watch::<apps::Deployment>(ctx, &graph, &queue),
            watch::<apps::StatefulSet>(ctx, &graph, &queue),
            watch::<apps::DaemonSet>(ctx, &graph, &queue),
            watch::<apps::ControllerRevision>(ctx, &graph, &queue),
            watch::<batch::Job>(ctx, &graph, &queue),
            watch::<batch::CronJob>(ctx, &graph, &queue),
            watch::<core::ConfigMap>(ctx, &graph, &queue),
            watch::<core::Secret>(ctx, &graph, &queue),
            watch::<core::Service>(ctx, &graph, &queue),
            watch::<core::PersistentVolumeClaim>(ctx, &graph, &queue),
            watch::<discovery::EndpointSlice>(ctx, &graph, &queue),
        ]
        .into_iter()
        .flatten()
        .collect();
        GarbageCollector {
            ctx: ctx.clone(),
            graph,
            queue,
            informers,
        }
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        self.informers
            .iter()
            .map(|i| Box::new(Shared(i.clone())) as Box<dyn client::informer::Startable>)
            .collect()
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers(
            "garbagecollector",
            self.queue.clone(),
            workers,
            move |item| {
                let me = me.clone();
                async move {
                    match item.split_once(':') {
                        Some(("delete", uid)) => me.attempt_delete(uid).await,
                        Some(("foreground", uid)) => me.foreground(uid).await,
                        Some(("orphan", uid)) => me.orphan(uid).await,
                        _ => Ok(None),
                    }
                }
            },
        );
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .get(uid)
            .cloned()
    }

    fn dependents(&self, uid: &str) -> Vec<(String, Node)> {
        let g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    fn api_of(&self, api_version: &str, kind: &str) -> Option<DynamicApi> {
        api::registry::by_api_version_kind(api_version, kind)
            .map(|info| DynamicApi::new(self.ctx.client.clone(), info))
    }

    /// Whether the owner exists (same uid), asking the apiserver when the graph does not
    /// know it.
    async fn owner_exists(&self, namespace: &str, owner: &OwnerReference) -> anyhow::Result<bool> {
        if self.node(&owner.uid).is_some() {
            return Ok(true);
        }
        let Some(api) = self.api_of(&owner.api_version, &owner.kind) else {
            return Ok(true); // a kind we cannot check: never delete on a guess
        };
        let ns = if api.info().namespaced { namespace } else { "" };
        match api.get(ns, &owner.name).await {
            Ok(o) => Ok(o["metadata"]["uid"].as_str() == Some(owner.uid.as_str())),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn attempt_delete(&self, uid: &str) -> anyhow::Result<Requeue> {
        let Some(n) = self.node(uid) else {
            return Ok(None);
        };
        if n.deleting || n.owners.is_empty() {
            return Ok(None);
        }
        let mut alive = Vec::new();
        for o in &n.owners {
            if self.owner_exists(&n.namespace, o).await? {
                alive.push(o.clone());
            }
        }
        let Some(api) = self.api_of(n.api_version, n.kind) else {
            return Ok(None);
        };
        if alive.is_empty() {
            tracing::info!(kind = n.kind, name = %format!("{}/{}", n.namespace, n.name), "deleting: its owners are gone");
            let dp = DeleteParams {
                propagation_policy: "Background".into(),
                precondition_uid: Some(uid.to_string()),
                ..Default::default()
            };
            match api.delete(&n.namespace, &n.name, &dp).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        } else if alive.len() < n.owners.len() {
            // Some owners are gone: drop the dangling references.
            let patch = json!({"metadata": {"ownerReferences": alive, "uid": uid}});
            match api.merge_patch(&n.namespace, &n.name, &patch).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Removes `finalizer` from the object (optimistically, on its current version).
    async fn remove_finalizer(&self, n: &Node, finalizer: &str) -> anyhow::Result<Requeue> {
        let Some(api) = self.api_of(n.api_version, n.kind) else {
            return Ok(None);
        };
        let current = match api.get(&n.namespace, &n.name).await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let left: Vec<&str> = current["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .filter(|f| *f != finalizer)
            .collect();
        let patch = json!({"metadata": {"finalizers": left, "resourceVersion": current["metadata"]["resourceVersion"]}});
        match api.merge_patch(&n.namespace, &n.name, &patch).await {
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) if e.is_conflict() => Ok(Some(Duration::from_millis(50))),
            Err(e) => Err(e.into()),
        }
    }

    async fn foreground(&self, uid: &str) -> anyhow::Result<Requeue> {
        let Some(owner) = self.node(uid) else {
            return Ok(None);
        };
        if !(owner.deleting && owner.finalizers.iter().any(|f| f == "foregroundDeletion")) {
            return Ok(None);
        }
        let mut blocking = 0;
        for (duid, d) in self.dependents(uid) {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if d.deleting {
                continue;
            }
            let Some(api) = self.api_of(d.api_version, d.kind) else {
                continue;
            };
            let dp = DeleteParams {
                propagation_policy: "Foreground".into(),
                precondition_uid: Some(duid),
                ..Default::default()
            };
            match api.delete(&d.namespace, &d.name, &dp).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if blocking > 0 {
            return Ok(None); // their deletions will bring us back here
        }
        self.remove_finalizer(&owner, "foregroundDeletion").await
    }

    async fn orphan(&self, uid: &str) -> anyhow::Result<Requeue> {
        let Some(owner) = self.node(uid) else {
            return Ok(None);
        };
        if !(owner.deleting && owner.finalizers.iter().any(|f| f == "orphan")) {
            return Ok(None);
        }
        for (duid, d) in self.dependents(uid) {
            let Some(api) = self.api_of(d.api_version, d.kind) else {
                continue;
            };
            let refs: Vec<&OwnerReference> = d.owners.iter().filter(|o| o.uid != uid).collect();
            let patch = json!({"metadata": {"ownerReferences": refs, "uid": duid}});
            match api.merge_patch(&d.namespace, &d.name, &patch).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.remove_finalizer(&owner, "orphan").await
    }
}

/// An informer shared between the collector and the component's start list.
struct Shared(Arc<dyn client::informer::Startable + Send + Sync>);

impl client::informer::Startable for Shared {
    fn start_informer(&self) {
        self.0.start_informer()
    }
    fn wait_synced_boxed(&self) -> futures::future::BoxFuture<'_, ()> {
        self.0.wait_synced_boxed()
    }
}
