//! The scheduling loop: informer events feed the cache (bound pods, nodes) and the queue
//! (pending pods that name this scheduler); the loop pops one pod at a time, places it
//! with the profile, assumes it onto the node and binds in the background so the next
//! pod does not wait for the API. A failed binding forgets the assumption and retries.
//! Pods no node fits get `PodScheduled=False` and a `FailedScheduling` event, and may
//! preempt lower-priority pods.

use crate::cache::Cache;
use crate::framework::{pod_key as key, PodInfo};
use crate::metrics::Metrics;
use crate::preemption;
use crate::profile::Profile;
use crate::queue::{ClusterEvent, QueuedPod, SchedulingQueue};
use client::events::Recorder;
use client::informer::Event;
use client::{Api, Client, DeleteParams, Factory, Informer, Patch};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bindings in flight at once.
const MAX_BINDS: usize = 512;

pub struct Scheduler {
    pub name: String,
    profile: Arc<Profile>,
    cache: Arc<Mutex<Cache>>,
    pub queue: Arc<SchedulingQueue>,
    pub pods: Informer<Pod>,
    pub nodes: Informer<Node>,
    /// PodDisruptionBudgets, which preemption respects.
    pub pdbs: Informer<PodDisruptionBudget>,
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    next_start: AtomicUsize,
    binds: Arc<tokio::sync::Semaphore>,
}

fn assigned(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether preemption nominated the pod to a node.
fn nominated(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// More than the status changed (spec, labels, annotations).
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl Scheduler {
    /// Wires the informers' handlers (start them with `client::informer::start_and_sync`).
    pub fn new(
        factory: &Factory,
        name: &str,
        profile: Profile,
        metrics: Metrics,
    ) -> Arc<Scheduler> {
        let s = Arc::new(Scheduler {
            name: name.to_string(),
            profile: Arc::new(profile),
            cache: Arc::default(),
            queue: Arc::default(),
            pods: factory.informer::<Pod>(),
            nodes: factory.informer::<Node>(),
            pdbs: factory.informer::<PodDisruptionBudget>(),
            client: factory.client().clone(),
            recorder: Recorder::new(factory.client().clone(), name),
            metrics,
            next_start: AtomicUsize::new(0),
            binds: Arc::new(tokio::sync::Semaphore::new(MAX_BINDS)),
        });
        let (cache, queue, ours) = (s.cache.clone(), s.queue.clone(), s.name.clone());
        let responsible = move |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.scheduler_name.as_deref())
                .unwrap_or("default-scheduler")
                == ours
                && p.metadata.deletion_timestamp.is_none()
                && !terminal(p)
        };
        s.pods.add_handler(move |ev| {
            let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                Event::Add(p) => {
                    if assigned(p) {
                        if !terminal(p) {
                            lock().set_bound_pod(p.clone());
                            queue.on_event(ClusterEvent::AssignedPodAdd);
                        }
                    } else {
                        if nominated(p) {
                            lock().set_nominated(p);
                        }
                        if responsible(p) {
                            queue.add(Arc::new(PodInfo::new(p.clone())));
                        }
                    }
                }
                Event::Update(old, new) => {
                    // The cache's lock is taken only for pods that hold or held a
                    // nomination (it is held through every scheduling cycle).
                    let nomination = nominated(old) || nominated(new);
                    if nomination && !assigned(new) {
                        lock().set_nominated(new);
                    }
                    if assigned(new) {
                        if nomination {
                            lock().clear_nominated(&key(new));
                        }
                        queue.delete(&key(new));
                        if terminal(new) {
                            lock().remove_pod(&key(new));
                            queue.on_event(ClusterEvent::AssignedPodDelete);
                        } else {
                            lock().set_bound_pod(new.clone());
                            if !assigned(old) {
                                queue.on_event(ClusterEvent::AssignedPodAdd);
                            }
                        }
                    } else if responsible(new) {
                        queue.update(Arc::new(PodInfo::new(new.clone())), spec_changed(old, new));
                    } else {
                        queue.delete(&key(new));
                    }
                }
                Event::Delete(p) => {
                    if nominated(p) {
                        lock().clear_nominated(&key(p));
                    }
                    if assigned(p) {
                        lock().remove_pod(&key(p));
                        queue.on_event(ClusterEvent::AssignedPodDelete);
                    } else {
                        queue.delete(&key(p));
                    }
                }
            }
        });
        let (cache, queue) = (s.cache.clone(), s.queue.clone());
        s.nodes.add_handler(move |ev| {
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                Event::Add(n) => {
                    c.upsert_node(n.clone());
                    drop(c);
                    queue.on_event(ClusterEvent::NodeAdd);
                }
                Event::Update(_, n) => {
                    c.upsert_node(n.clone());
                    drop(c);
                    queue.on_event(ClusterEvent::NodeUpdate);
                }
                Event::Delete(n) => c.remove_node(n.metadata.name.as_deref().unwrap_or_default()),
            }
        });
        s
    }

    /// Schedules until the queue is closed.
    pub async fn run(self: Arc<Self>) {
        while let Some(qp) = self.queue.pop().await {
            self.metrics.set_pending(self.queue.lengths());
            self.schedule_one(qp).await;
        }
        // Let bindings in flight finish.
        let _ = self.binds.acquire_many(MAX_BINDS as u32).await;
    }

    async fn schedule_one(self: &Arc<Self>, qp: QueuedPod) {
        let key = qp.info.key.clone();
        // The informer's latest version decides: gone, bound or deleting means done.
        let Some(current) = self.pods.store().get(&key) else {
            self.queue.done(&key);
            return;
        };
        if assigned(&current) || current.metadata.deletion_timestamp.is_some() {
            self.queue.done(&key);
            return;
        }
        let info = if Arc::ptr_eq(&current, &qp.info.pod) {
            qp.info.clone()
        } else {
            Arc::new(PodInfo::new(current))
        };
        let started = Instant::now();
        let outcome = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let n = cache.nodes().len().max(1);
            let start = self.next_start.load(Ordering::Relaxed) % n;
            let view = cache.nodes_for(&info);
            let snapshot = match &view {
                Some(nodes) => cache.snapshot_of(nodes),
                None => cache.snapshot(),
            };
            match self.profile.schedule(&info, &snapshot, start) {
                Ok(placement) => {
                    self.next_start
                        .store((start + placement.evaluated) % n, Ordering::Relaxed);
                    let mut pod = info.pod.as_ref().clone();
                    if let Some(spec) = pod.spec.as_mut() {
                        spec.node_name = Some(placement.node.clone());
                    }
                    cache.assume(Arc::new(PodInfo::new(Arc::new(pod))), &placement.node);
                    Ok(placement.node)
                }
                Err(diagnosis) => {
                    let preempt = if preemption::eligible(&info, cache.nodes()) {
                        let budgets: Vec<preemption::Budget> = self
                            .pdbs
                            .store()
                            .list()
                            .iter()
                            .filter_map(|b| preemption::Budget::new(b))
                            .collect();
                        Some(preemption::find(
                            &self.profile,
                            &info,
                            cache.nodes(),
                            &diagnosis,
                            &budgets,
                        ))
                    } else {
                        None
                    };
                    Err((diagnosis, preempt))
                }
            }
        };
        self.metrics
            .attempt_duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(node) => self.bind(qp, info, node).await,
            Err((diagnosis, preempt)) => {
                self.metrics.attempt("unschedulable", &self.name);
                let mut message = diagnosis.message();
                let mut nominated = None;
                let mut rejected_by = diagnosis.plugins();
                match preempt {
                    Some(Some(p)) => {
                        self.metrics.preemption_attempts.inc();
                        self.metrics
                            .preemption_victims
                            .inc_by(p.victims.len() as u64);
                        self.evict(&info, &p);
                        nominated = Some(p.node);
                        rejected_by.push("DefaultPreemption");
                    }
                    Some(None) => {
                        message.push_str(&format!(
                            " preemption: 0/{} nodes are available: No preemption victims found for incoming pod.",
                            diagnosis.num_nodes
                        ));
                    }
                    None => {}
                }
                tracing::debug!(pod = %key, %message, "unschedulable");
                self.report_failure(&info, &message, nominated);
                self.queue.unschedulable(qp, rejected_by);
            }
        }
    }

    /// Binds in the background; a failure forgets the assumption and retries the pod.
    async fn bind(self: &Arc<Self>, qp: QueuedPod, info: Arc<PodInfo>, node: String) {
        let Ok(permit) = self.binds.clone().acquire_owned().await else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let pod = &info.pod;
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let api: Api<Pod> = Api::namespaced(me.client.clone(), &ns);
            match api.create_subresource(&name, "binding", &binding).await {
                Ok(_) => {
                    me.metrics.attempt("scheduled", &me.name);
                    me.metrics
                        .e2e_duration
                        .observe(qp.first_seen.elapsed().as_secs_f64());
                    me.recorder.record(
                        pod.as_ref(),
                        "Normal",
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{name} to {node}"),
                    );
                    me.queue.done(&info.key);
                }
                Err(e) => {
                    me.cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .forget(&info.key);
                    me.metrics.attempt("error", &me.name);
                    if e.is_not_found() || e.is_conflict() {
                        // Deleted, or bound meanwhile: the informer will tell.
                        me.queue.done(&info.key);
                    } else {
                        tracing::warn!(pod = %info.key, %node, error = %e, "binding failed; retrying");
                        me.queue.retry(qp);
                    }
                }
            }
            drop(permit);
        });
    }

    /// `PodScheduled=False` (and `nominatedNodeName`) on the pod, and a FailedScheduling
    /// event; in the background, so the loop goes on.
    fn report_failure(&self, info: &PodInfo, message: &str, nominated: Option<String>) {
        let pod = info.pod.clone();
        self.recorder
            .record(pod.as_ref(), "Warning", "FailedScheduling", message);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &info.namespace);
        let mut status = json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::from_second(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
            ).map(|t| t.to_string()).unwrap_or_default(),
        }]});
        if let Some(n) = nominated {
            status["nominatedNodeName"] = json!(n);
        }
        let already = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.message.as_deref() == Some(message)
                })
            })
            && status.get("nominatedNodeName").is_none();
        if already {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        tokio::spawn(async move {
            if let Err(e) = api
                .patch_status(&name, &Patch::Strategic(json!({"status": status})))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "updating PodScheduled");
            }
        });
    }

    /// Deletes the victims (with their grace period) and records why.
    fn evict(&self, preemptor: &PodInfo, p: &preemption::Preemption) {
        for v in &p.victims {
            let pod = v.pod.clone();
            self.recorder.record(
                pod.as_ref(),
                "Normal",
                "Preempted",
                &format!(
                    "Preempted by pod {} on node {}",
                    preemptor
                        .pod
                        .metadata
                        .uid
                        .as_deref()
                        .unwrap_or(&preemptor.key),
                    p.node
                ),
            );
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &v.namespace);
            let name = pod.metadata.name.clone().unwrap_or_default();
            let uid = pod.metadata.uid.clone();
            tokio::spawn(async move {
                let dp = DeleteParams {
                    precondition_uid: uid,
                    ..Default::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, "deleting a preemption victim")
                    }
                }
            });
        }
    }
}
