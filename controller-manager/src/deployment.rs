//! The deployment controller: one ReplicaSet per pod template (named and labelled with
//! the template's hash), rolled between them by the strategy.
//!
//! RollingUpdate scales the new ReplicaSet up while the total stays within `replicas +
//! maxSurge`, and old ones down while at least `replicas - maxUnavailable` pods stay
//! available; Recreate scales old ones to zero and waits for their pods to be gone first.
//! Each new template gets the next revision (`deployment.kubernetes.io/revision`);
//! `kubectl rollout undo` puts an old template back, which makes its ReplicaSet the new
//! one again with a fresh revision. Old ReplicaSets beyond `revisionHistoryLimit` are
//! deleted. Status and the Available/Progressing conditions are written so that
//! `kubectl rollout status` finishes exactly when the rollout is complete.

use crate::controller::{self, controller_of, controller_ref, run_workers, Requeue};
use crate::Context;
use api::LabelSelector;
use client::informer::Event;
use client::{Api, DeleteParams, Informer, Patch, WorkQueue};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Clone)]
pub struct DeploymentController {
    ctx: Context,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
}

/// The hash naming a template's ReplicaSet: FNV-1a of its JSON, spelled with Kubernetes'
/// vowel-free alphabet (no words by accident).
pub fn template_hash(t: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A percentage or count against `total` (surge rounds up, unavailability down).
fn resolve(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => percent(s, total, round_up),
        None => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i32, round_up: bool) -> i32 {
    let p: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
    let v = p * f64::from(total) / 100.0;
    (if round_up { v.ceil() } else { v.floor() }) as i32
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

impl DeploymentController {
    pub fn new(ctx: &Context) -> Self {
        let c = DeploymentController {
            ctx: ctx.clone(),
            deployments: ctx.factory.informer::<Deployment>(),
            sets: ctx.factory.informer::<ReplicaSet>(),
            pods: ctx.factory.informer::<Pod>(),
            queue: WorkQueue::default(),
        };
        c.deployments
            .add_handler(controller::enqueue_own::<Deployment>(&c.queue));
        let q = c.queue.clone();
        c.sets.add_handler(move |ev| {
            let rs = match ev {
                Event::Add(o) | Event::Update(_, o) | Event::Delete(o) => o,
            };
            if let Some(r) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                q.add(format!(
                    "{}/{}",
                    rs.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                ));
            }
        });
        // Recreate waits for old pods to be gone: their deletion matters.
        let (q, sets) = (c.queue.clone(), c.sets.clone());
        c.pods.add_handler(move |ev| {
            if let Event::Delete(p) = ev {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "ReplicaSet") else {
                    return;
                };
                if let Some(rs) = sets.store().get(&format!("{ns}/{}", r.name)) {
                    if let Some(d) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")
                    {
                        q.add(format!("{ns}/{}", d.name));
                    }
                }
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.deployments.clone()),
            Box::new(self.sets.clone()),
            Box::new(self.pods.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("deployment", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(d) = self.deployments.store().get(key) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (ns, name) = controller::split(key);
        let Some(spec) = d.spec.as_ref() else {
            return Ok(None);
        };
        let Ok(sel) = LabelSelector::from_label_selector(Some(&spec.selector)) else {
            return Ok(None);
        };
        if sel.is_everything() {
            return Ok(None);
        }
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), ns);
        // Ours, and orphans that match (adopted).
        let mut sets: Vec<ReplicaSet> = Vec::new();
        for rs in self.sets.store().in_namespace(ns) {
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => sets.push(rs.as_ref().clone()),
                None if sel.matches_opt(rs.metadata.labels.as_ref())
                    && rs.metadata.deletion_timestamp.is_none() =>
                {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref("apps/v1", "Deployment", &d.metadata));
                    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.metadata.resource_version}});
                    match rs_api
                        .patch(
                            rs.metadata.name.as_deref().unwrap_or_default(),
                            &Patch::Merge(patch),
                        )
                        .await
                    {
                        Ok(adopted) => sets.push(adopted),
                        Err(e) if e.is_conflict() || e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => {}
            }
        }
        let hash = template_hash(&spec.template);
        let want = spec.replicas.unwrap_or(1).max(0);
        let max_revision = sets.iter().map(revision).max().unwrap_or(0);
        let new_idx = sets.iter().position(|rs| {
            rs.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash)
        });
        let paused = spec.paused.unwrap_or(false);
        let mut progressed = false;
        if !paused {
            let new_idx = match new_idx {
                Some(i) => {
                    // A template brought back (rollback) is the newest revision again.
                    if revision(&sets[i]) < max_revision {
                        let rev = (max_revision + 1).to_string();
                        let rs_name = sets[i].metadata.name.clone().unwrap_or_default();
                        sets[i] = rs_api
                            .patch(
                                &rs_name,
                                &Patch::Merge(
                                    json!({"metadata": {"annotations": {REVISION: rev}}}),
                                ),
                            )
                            .await?;
                        progressed = true;
                    }
                    i
                }
                None => {
                    let initial = if self.is_recreate(&d) {
                        0
                    } else {
                        self.initial_replicas(&d, &sets, want)
                    };
                    let created = self
                        .create_new(&d, ns, name, &hash, initial, max_revision + 1)
                        .await?;
                    progressed = true;
                    sets.push(created);
                    sets.len() - 1
                }
            };
            let new_rs = sets.remove(new_idx);
            let mut olds = sets;
            let new_rs = if self.is_recreate(&d) {
                self.recreate(&d, ns, new_rs, &mut olds, want, &mut progressed)
                    .await?
            } else {
                self.rolling(&d, new_rs, &mut olds, want, &mut progressed)
                    .await?
            };
            self.cleanup(&d, &rs_api, &olds).await?;
            self.sync_revision_annotation(&d, &new_rs).await?;
            olds.push(new_rs);
            sets = olds;
        }
        let new_rs = sets
            .iter()
            .find(|rs| rs.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash));
        self.update_status(&d, new_rs, &sets, progressed, paused)
            .await
    }

    fn is_recreate(&self, d: &Deployment) -> bool {
        d.spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
            == Some("Recreate")
    }

    fn surge_unavailable(d: &Deployment, want: i32) -> (i32, i32) {
        let ru = d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref());
        let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), "25%", want, true);
        let mut unavailable = resolve(
            ru.and_then(|r| r.max_unavailable.as_ref()),
            "25%",
            want,
            false,
        );
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        (surge, unavailable)
    }

    /// How many pods a brand-new ReplicaSet may start with.
    fn initial_replicas(&self, d: &Deployment, olds: &[ReplicaSet], want: i32) -> i32 {
        let (surge, _) = Self::surge_unavailable(d, want);
        let total: i32 = olds.iter().map(replicas).sum();
        (want + surge - total).clamp(0, want)
    }

    async fn create_new(
        &self,
        d: &Deployment,
        ns: &str,
        name: &str,
        hash: &str,
        initial: i32,
        rev: i64,
    ) -> anyhow::Result<ReplicaSet> {
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("deployment without spec"))?;
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.into());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.into());
        let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
        annotations.retain(|k, _| {
            !k.starts_with("kubectl.kubernetes.io/") && !k.starts_with("deployment.kubernetes.io/")
        });
        annotations.insert(REVISION.into(), rev.to_string());
        annotations.insert(
            "deployment.kubernetes.io/desired-replicas".into(),
            spec.replicas.unwrap_or(1).to_string(),
        );
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{hash}")),
                namespace: Some(ns.into()),
                labels: meta.labels.clone(),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(initial),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), ns);
        let created = match api.create(&rs).await {
            Ok(c) => c,
            // Created by an earlier sync whose event has not arrived yet.
            Err(e) if e.is_already_exists() => api.get(&format!("{name}-{hash}")).await?,
            Err(e) => return Err(e.into()),
        };
        self.ctx.recorder.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled up replica set {name}-{hash} from 0 to {initial}"),
        );
        Ok(created)
    }

    async fn scale(&self, d: &Deployment, rs: &mut ReplicaSet, to: i32) -> anyhow::Result<()> {
        let from = replicas(rs);
        if from == to {
            return Ok(());
        }
        let api: Api<ReplicaSet> = Api::namespaced(
            self.ctx.client.clone(),
            rs.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).to_string()}}, "spec": {"replicas": to}});
        *rs = api.patch(&name, &Patch::Merge(patch)).await?;
        let dir = if to > from { "up" } else { "down" };
        self.ctx.recorder.record(
            d,
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {dir} replica set {name} from {from} to {to}"),
        );
        Ok(())
    }

    async fn rolling(
        &self,
        d: &Deployment,
        mut new_rs: ReplicaSet,
        olds: &mut [ReplicaSet],
        want: i32,
        progressed: &mut bool,
    ) -> anyhow::Result<ReplicaSet> {
        let (surge, unavailable) = Self::surge_unavailable(d, want);
        // Scale the new ReplicaSet up within the surge.
        let total: i32 = olds.iter().map(replicas).sum::<i32>() + replicas(&new_rs);
        let current = replicas(&new_rs);
        let target = if current > want {
            want
        } else {
            let room = (want + surge - total).max(0);
            current + room.min(want - current)
        };
        if target != current {
            self.scale(d, &mut new_rs, target).await?;
            *progressed = true;
        }
        // Scale old ones down while enough stay available.
        let old_total: i32 = olds.iter().map(replicas).sum();
        if old_total == 0 {
            return Ok(new_rs);
        }
        let all: i32 = old_total + replicas(&new_rs);
        let min_available = want - unavailable;
        let new_unavailable = (replicas(&new_rs) - available(&new_rs)).max(0);
        let mut budget = all - min_available - new_unavailable;
        if budget <= 0 {
            return Ok(new_rs);
        }
        // Unhealthy old pods go first (they do not count as available anyway).
        olds.sort_by_key(|rs| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second())
        });
        for rs in olds.iter_mut() {
            if budget <= 0 {
                break;
            }
            let unhealthy = (replicas(rs) - available(rs)).max(0);
            let cut = unhealthy.min(budget);
            if cut > 0 {
                let to = replicas(rs) - cut;
                self.scale(d, rs, to).await?;
                budget -= cut;
                *progressed = true;
            }
        }
        // Then healthy ones, oldest first, as far as availability allows.
        let available_total: i32 = olds.iter().map(available).sum::<i32>() + available(&new_rs);
        let mut cut_total = (available_total - min_available).min(budget);
        for rs in olds.iter_mut() {
            if cut_total <= 0 {
                break;
            }
            let cut = replicas(rs).min(cut_total);
            if cut > 0 {
                let to = replicas(rs) - cut;
                self.scale(d, rs, to).await?;
                cut_total -= cut;
                *progressed = true;
            }
        }
        Ok(new_rs)
    }

    async fn recreate(
        &self,
        d: &Deployment,
        ns: &str,
        mut new_rs: ReplicaSet,
        olds: &mut [ReplicaSet],
        want: i32,
        progressed: &mut bool,
    ) -> anyhow::Result<ReplicaSet> {
        for rs in olds.iter_mut() {
            if replicas(rs) > 0 {
                self.scale(d, rs, 0).await?;
                *progressed = true;
            }
        }
        // Wait until no pod of an old ReplicaSet is left (terminating ones included).
        let old_uids: Vec<String> = olds.iter().filter_map(|r| r.metadata.uid.clone()).collect();
        let old_pods = self
            .pods
            .store()
            .in_namespace(ns)
            .iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid)))
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .count();
        if old_pods == 0 && replicas(&new_rs) != want {
            self.scale(d, &mut new_rs, want).await?;
            *progressed = true;
        }
        Ok(new_rs)
    }

    /// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit` (oldest first).
    async fn cleanup(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        olds: &[ReplicaSet],
    ) -> anyhow::Result<()> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut empty: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|rs| {
                replicas(rs) == 0
                    && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                    && rs.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(|rs| revision(rs));
        for rs in &empty[..empty.len() - limit] {
            let dp = DeleteParams {
                precondition_uid: rs.metadata.uid.clone(),
                ..Default::default()
            };
            api.delete_if_current(rs.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await?;
        }
        Ok(())
    }

    /// The deployment carries its newest ReplicaSet's revision, as in Kubernetes.
    async fn sync_revision_annotation(
        &self,
        d: &Deployment,
        new_rs: &ReplicaSet,
    ) -> anyhow::Result<()> {
        let rev = revision(new_rs).to_string();
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            == Some(&rev)
        {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        );
        match api
            .patch(
                d.metadata.name.as_deref().unwrap_or_default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev}}})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn update_status(
        &self,
        d: &Deployment,
        new_rs: Option<&ReplicaSet>,
        sets: &[ReplicaSet],
        progressed: bool,
        paused: bool,
    ) -> anyhow::Result<Requeue> {
        let spec = d.spec.as_ref();
        let want = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| sets.iter().map(f).sum::<i32>();
        let total = sum(&|rs| rs.status.as_ref().map_or(0, |s| s.replicas));
        let ready = sum(&|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        });
        let avail = sum(&available);
        let updated = new_rs
            .and_then(|rs| rs.status.as_ref())
            .map_or(0, |s| s.replicas);
        let (_, max_unavailable) = Self::surge_unavailable(d, want);
        let min_available = if self.is_recreate(d) {
            want
        } else {
            want - max_unavailable
        };
        let new_ready = new_rs.is_some_and(|rs| {
            replicas(rs) == want
                && rs.status.as_ref().is_some_and(|s| {
                    s.available_replicas.unwrap_or(0) == want
                        && s.observed_generation >= rs.metadata.generation
                })
        });
        let complete = updated == want && total == want && avail == want && new_ready;
        let old = d.status.clone().unwrap_or_default();
        let mut conditions: Vec<DeploymentCondition> = old.conditions.clone().unwrap_or_default();
        let set = |conditions: &mut Vec<DeploymentCondition>,
                   type_: &str,
                   status: &str,
                   reason: &str,
                   message: String,
                   touch: bool| {
            let now = controller::now();
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    if c.status != status {
                        c.last_transition_time = Some(now.clone());
                    }
                    if c.status != status || c.reason.as_deref() != Some(reason) || touch {
                        c.last_update_time = Some(now);
                    }
                    c.status = status.into();
                    c.reason = Some(reason.into());
                    c.message = Some(message);
                }
                None => conditions.push(DeploymentCondition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_transition_time: Some(now.clone()),
                    last_update_time: Some(now),
                }),
            }
        };
        if avail >= min_available {
            set(
                &mut conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            );
        } else {
            set(
                &mut conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            );
        }
        let rs_name = new_rs
            .and_then(|r| r.metadata.name.clone())
            .unwrap_or_default();
        let deadline = spec
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600);
        let mut requeue = None;
        if paused {
            set(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            );
        } else if complete {
            set(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                false,
            );
        } else if progressed {
            set(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
                true,
            );
            requeue = Some(Duration::from_secs(deadline.max(1) as u64));
        } else {
            let last = conditions
                .iter()
                .find(|c| c.type_ == "Progressing")
                .and_then(|c| c.last_update_time.clone());
            let stalled = last
                .as_ref()
                .is_some_and(|t| controller::age_secs(t) > i64::from(deadline));
            let timed_out = conditions.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
            if stalled && !timed_out {
                set(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    false,
                );
                self.ctx.recorder.record(
                    d,
                    "Warning",
                    "ProgressDeadlineExceeded",
                    &format!(
                        "Deployment {:?} has timed out progressing.",
                        d.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
            } else if !timed_out && !conditions.iter().any(|c| c.type_ == "Progressing") {
                set(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                    true,
                );
            }
            if !timed_out {
                let left = last.as_ref().map_or(i64::from(deadline), |t| {
                    i64::from(deadline) - controller::age_secs(t)
                });
                requeue = Some(Duration::from_secs(
                    left.clamp(1, i64::from(deadline.max(1))) as u64,
                ));
            }
        }
        conditions.sort_by(|a, b| b.type_.cmp(&a.type_)); // Progressing, then Available
        let status = DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: Some(total),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(avail),
            unavailable_replicas: Some((want - avail).max(0)),
            conditions: Some(conditions),
            collision_count: old.collision_count,
            terminating_replicas: None,
        };
        if d.status.as_ref() != Some(&status) {
            let mut updated = d.clone();
            updated.status = Some(status);
            let api: Api<Deployment> = Api::namespaced(
                self.ctx.client.clone(),
                d.metadata.namespace.as_deref().unwrap_or_default(),
            );
            match api.replace_status(&updated).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    return Ok(Some(Duration::from_millis(100)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(if complete { None } else { requeue })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailability_round_like_kubernetes() {
        assert_eq!(percent("25%", 10, true), 3);
        assert_eq!(percent("25%", 10, false), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), "25%", 10, true), 2);
        assert_eq!(resolve(None, "25%", 1, false), 0);
    }

    #[test]
    fn template_hashes_are_stable_and_distinct() {
        let t = |image: &str| -> PodTemplateSpec {
            serde_json::from_value(json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": image}]}})).unwrap()
        };
        assert_eq!(template_hash(&t("a")), template_hash(&t("a")));
        assert_ne!(template_hash(&t("a")), template_hash(&t("b")));
        assert!(template_hash(&t("a"))
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
