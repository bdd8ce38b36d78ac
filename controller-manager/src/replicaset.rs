//! The replicaset controller: keeps `spec.replicas` pods matching a ReplicaSet's selector.
//!
//! It adopts orphans that match (adding itself as controller owner) and releases pods
//! that stop matching; creates with a window that doubles (1, 2, 4, … in flight, like
//! Kubernetes' slow start, so a failing template costs one error, not hundreds); on
//! scale-down deletes the least useful pods first (unscheduled, then pending, then not
//! ready, then the youngest); and writes status (replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas with minReadySeconds, observedGeneration).

use crate::controller::{
    self, controller_of, controller_ref, key, run_workers, Expectations, Requeue,
};
use crate::pods;
use crate::Context;
use api::LabelSelector;
use client::informer::Event;
use client::{Api, DeleteParams, Informer, Patch, WorkQueue};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Pods created or deleted per sync at most (Kubernetes' burstReplicas).
const BURST: usize = 500;
/// Creates in flight at most.
const MAX_WINDOW: usize = 256;

/// The create window each ReplicaSet reached (see `create_pods`).
#[derive(Clone, Default)]
struct Windows(Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

impl Windows {
    fn get(&self, key: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(1)
    }
    fn set(&self, key: &str, w: usize) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), w);
    }
}

#[derive(Clone)]
pub struct ReplicaSetController {
    ctx: Context,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    expectations: Expectations,
    windows: Windows,
}

/// The ReplicaSets in the pod's namespace whose selector matches it.
fn matching_sets(sets: &Informer<ReplicaSet>, pod: &Pod) -> Vec<Arc<ReplicaSet>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    sets.store()
        .in_namespace(ns)
        .into_iter()
        .filter(|rs| {
            selector(rs)
                .is_some_and(|s| !s.is_everything() && s.matches_opt(pod.metadata.labels.as_ref()))
        })
        .collect()
}

fn selector(rs: &ReplicaSet) -> Option<LabelSelector> {
    LabelSelector::from_label_selector(rs.spec.as_ref().map(|s| &s.selector)).ok()
}

impl ReplicaSetController {
    pub fn new(ctx: &Context) -> Self {
        let c = ReplicaSetController {
            ctx: ctx.clone(),
            sets: ctx.factory.informer::<ReplicaSet>(),
            pods: ctx.factory.informer::<Pod>(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
            windows: Windows::default(),
        };
        c.sets
            .add_handler(controller::enqueue_own::<ReplicaSet>(&c.queue));
        let (q, sets, exp) = (c.queue.clone(), c.sets.clone(), c.expectations.clone());
        let owner_key = move |p: &Pod| -> Option<String> {
            let r = controller_of(&p.metadata).filter(|r| r.kind == "ReplicaSet")?;
            Some(format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                r.name
            ))
        };
        c.pods.add_handler(move |ev| match ev {
            Event::Add(p) => match owner_key(p) {
                Some(k) => {
                    exp.creation_observed(&k);
                    q.add(k);
                }
                None => matching_sets(&sets, p)
                    .iter()
                    .for_each(|rs| q.add(key(&rs.metadata))),
            },
            Event::Update(old, new) => {
                let (a, b) = (owner_key(old), owner_key(new));
                if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                {
                    // A graceful delete: count it as observed now, as Kubernetes does.
                    if let Some(k) = &b {
                        exp.deletion_observed(k);
                    }
                }
                for k in [a.clone(), b.clone()].into_iter().flatten() {
                    q.add(k);
                }
                if b.is_none() || old.metadata.labels != new.metadata.labels {
                    matching_sets(&sets, new)
                        .iter()
                        .for_each(|rs| q.add(key(&rs.metadata)));
                }
            }
            Event::Delete(p) => {
                if let Some(k) = owner_key(p) {
                    if p.metadata.deletion_timestamp.is_none() {
                        exp.deletion_observed(&k);
                    }
                    q.add(k);
                }
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.sets.clone()), Box::new(self.pods.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("replicaset", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(rs) = self.sets.store().get(key) else {
            self.expectations.forget(key);
            self.windows
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
            return Ok(None);
        };
        let (ns, name) = controller::split(key);
        let Some(sel) = selector(&rs).filter(|s| !s.is_everything()) else {
            return Ok(None); // validation forbids it; nothing sane to do
        };
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        // Claim: ours that match, orphans that match (adopted), ours that stopped
        // matching (released).
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        for p in self.pods.store().in_namespace(ns) {
            let matches = sel.matches_opt(p.metadata.labels.as_ref());
            match controller_of(&p.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(p);
                    } else if p.metadata.deletion_timestamp.is_none() {
                        let refs: Vec<_> = p
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .cloned()
                            .collect();
                        let patch =
                            json!({"metadata": {"ownerReferences": refs, "uid": p.metadata.uid}});
                        ignore_gone(
                            pods_api
                                .patch(
                                    p.metadata.name.as_deref().unwrap_or_default(),
                                    &Patch::Merge(patch),
                                )
                                .await,
                        )?;
                    }
                }
                None if matches
                    && !deleting
                    && p.metadata.deletion_timestamp.is_none()
                    && pods::is_active(&p) =>
                {
                    let mut refs: Vec<_> = p.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref("apps/v1", "ReplicaSet", &rs.metadata));
                    let patch = json!({"metadata": {"ownerReferences": refs, "uid": p.metadata.uid, "resourceVersion": p.metadata.resource_version}});
                    if let Some(adopted) = ignore_gone(
                        pods_api
                            .patch(
                                p.metadata.name.as_deref().unwrap_or_default(),
                                &Patch::Merge(patch),
                            )
                            .await,
                    )? {
                        owned.push(Arc::new(adopted));
                    }
                }
                _ => {}
            }
        }
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        let mut failure = None;
        if self.expectations.satisfied(key) && !deleting {
            if active.len() < want {
                let n = (want - active.len()).min(BURST);
                failure = self.create_pods(&rs, ns, name, n).await.err();
            } else if active.len() > want {
                let n = (active.len() - want).min(BURST);
                self.delete_pods(&rs, key, &pods_api, active.clone(), n)
                    .await?;
            }
        }
        let requeue = self.update_status(&rs, &owned, failure.as_ref()).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(requeue)
    }

    /// Creates `n` pods in doubling batches; stops at the first failure.
    async fn create_pods(
        &self,
        rs: &ReplicaSet,
        ns: &str,
        name: &str,
        n: usize,
    ) -> anyhow::Result<()> {
        let key = format!("{ns}/{name}");
        let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
            return Ok(());
        };
        self.expectations.expect(&key, n as i64, 0);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let owner = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
        let pod = pods::from_template(template, ns, name, owner);
        // Slow start as a window of creates in flight: one at first, doubling with each
        // success (so a failing template costs one error); the window a ReplicaSet
        // reached is remembered for its next sync, and reset by a failure.
        let mut window = self.windows.get(&key).max(1);
        let mut launched = 0;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut failed = None;
        loop {
            while failed.is_none() && launched < n && in_flight.len() < window {
                in_flight.push(api.create(&pod));
                launched += 1;
            }
            let Some(r) = futures::StreamExt::next(&mut in_flight).await else {
                break;
            };
            match r {
                Ok(p) => {
                    window = (window * 2).min(MAX_WINDOW);
                    self.ctx.recorder.record(
                        rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                    );
                }
                Err(e) => {
                    self.expectations.creation_observed(&key);
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            self.windows.set(&key, 1);
            // The rest will not be created this round: stop expecting them.
            for _ in launched..n {
                self.expectations.creation_observed(&key);
            }
            self.ctx.recorder.record(
                rs,
                "Warning",
                "FailedCreate",
                &format!("Error creating: {e}"),
            );
            return Err(anyhow::anyhow!("creating pods for {key}: {e}"));
        }
        self.windows.set(&key, window);
        Ok(())
    }

    async fn delete_pods(
        &self,
        rs: &ReplicaSet,
        key: &str,
        api: &Api<Pod>,
        mut active: Vec<Arc<Pod>>,
        n: usize,
    ) -> anyhow::Result<()> {
        // Least useful first: unscheduled, pending, not ready, then the youngest.
        active.sort_by_key(|p| {
            let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let created = p
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            (
                scheduled,
                running,
                pods::is_ready(p),
                std::cmp::Reverse(created),
            )
        });
        let victims: Vec<Arc<Pod>> = active.into_iter().take(n).collect();
        self.expectations.expect(key, 0, victims.len() as i64);
        let results = futures::future::join_all(victims.iter().map(|p| {
            let dp = DeleteParams {
                precondition_uid: p.metadata.uid.clone(),
                ..Default::default()
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            async move { (api.delete(&name, &dp).await, name) }
        }))
        .await;
        for (r, pod) in results {
            match r {
                Ok(()) => self.ctx.recorder.record(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod}"),
                ),
                Err(e) if e.is_not_found() || e.is_conflict() => {
                    self.expectations.deletion_observed(key)
                }
                Err(e) => {
                    self.expectations.deletion_observed(key);
                    return Err(anyhow::anyhow!("deleting pod {pod}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Writes status when it changed; asks to look again when a pod becomes available
    /// after minReadySeconds.
    async fn update_status(
        &self,
        rs: &ReplicaSet,
        owned: &[Arc<Pod>],
        failure: Option<&anyhow::Error>,
    ) -> anyhow::Result<Requeue> {
        let spec = rs.spec.as_ref();
        let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let template_labels = spec
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pods::is_active(p)).collect();
        let ready = active.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let available = active
            .iter()
            .filter(|p| pods::is_available(p, min_ready))
            .count() as i32;
        let fully_labeled = active
            .iter()
            .filter(|p| {
                template_labels
                    .iter()
                    .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
            })
            .count() as i32;
        let mut conditions: Vec<_> = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "ReplicaFailure");
        if let Some(e) = failure {
            conditions.push(serde_json::from_value(json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": e.to_string(), "lastTransitionTime": controller::now(),
            }))?);
        }
        let status = ReplicaSetStatus {
            replicas: active.len() as i32,
            fully_labeled_replicas: Some(fully_labeled),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            observed_generation: rs.metadata.generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
            terminating_replicas: None,
        };
        let same = rs.status.as_ref().is_some_and(|s| {
            s.replicas == status.replicas
                && s.fully_labeled_replicas.unwrap_or(0) == fully_labeled
                && s.ready_replicas.unwrap_or(0) == ready
                && s.available_replicas.unwrap_or(0) == available
                && s.observed_generation == status.observed_generation
                && s.conditions
                    .as_ref()
                    .map(|c| c.iter().filter(|c| c.type_ == "ReplicaFailure").count())
                    == status
                        .conditions
                        .as_ref()
                        .map(|c| c.iter().filter(|c| c.type_ == "ReplicaFailure").count())
        });
        if !same {
            let mut updated = rs.clone();
            updated.status = Some(status);
            let api: Api<ReplicaSet> = Api::namespaced(
                self.ctx.client.clone(),
                rs.metadata.namespace.as_deref().unwrap_or_default(),
            );
            match api.replace_status(&updated).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {} // a newer version is coming
                Err(e) => return Err(e.into()),
            }
        }
        Ok((min_ready > 0 && ready > available).then(|| Duration::from_secs(1)))
    }
}

/// Ok(None) for NotFound/Conflict (the object moved on; the informer will say how).
fn ignore_gone<T>(r: client::Result<T>) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
