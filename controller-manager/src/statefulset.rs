//! The statefulset controller: pods with stable names `<name>-<ordinal>` (and hostname,
//! subdomain = serviceName). OrderedReady creates ordinal i only when all lower ones are
//! Running and Ready, and removes the highest first, one at a time; Parallel acts on
//! all at once. RollingUpdate replaces pods from the highest ordinal down to
//! `partition`, one at a time, each after the previous is Ready again.
//! Each pod's PersistentVolumeClaims (`<template>-<set>-<ordinal>`, one per
//! `volumeClaimTemplates` entry) are created before the pod and mounted in its volumes;
//! `persistentVolumeClaimRetentionPolicy` decides whether they go with the set (owner
//! reference, the garbage collector deletes them) and with a scale-down (this controller
//! deletes the claims of ordinals past the replicas once their pods are gone).
//! (Nothing provisions or binds the claims yet: they stay Pending.)

use crate::controller::{self, controller_of, controller_ref, run_workers, Requeue};
use crate::deployment::template_hash;
use crate::pods;
use crate::Context;
use client::informer::Event;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::sync::Arc;

const HASH_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

#[derive(Clone)]
pub struct StatefulSetController {
    ctx: Context,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    claims: Informer<PersistentVolumeClaim>,
    queue: WorkQueue<String>,
}

/// The claim a template makes for one ordinal: `<template>-<set>-<ordinal>`.
fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    format!(
        "{}-{set}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The claims of one ordinal, as the set's templates make them: the template's labels
/// and the selector's, and an owner reference to the set when they go with it.
fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(t, name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: with_set
                        .then(|| vec![controller_ref("apps/v1", "StatefulSet", &set.metadata)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pods::is_ready(p)
}

impl StatefulSetController {
    pub fn new(ctx: &Context) -> Self {
        let c = StatefulSetController {
            ctx: ctx.clone(),
            sets: ctx.factory.informer::<StatefulSet>(),
            pods: ctx.factory.informer::<Pod>(),
            claims: ctx.factory.informer::<PersistentVolumeClaim>(),
            queue: WorkQueue::default(),
        };
        c.sets
            .add_handler(controller::enqueue_own::<StatefulSet>(&c.queue));
        let q = c.queue.clone();
        c.pods.add_handler(move |ev| {
            let p = match ev {
                Event::Add(p) | Event::Update(_, p) | Event::Delete(p) => p,
            };
            if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "StatefulSet") {
                q.add(format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                ));
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.sets.clone()),
            Box::new(self.pods.clone()),
            Box::new(self.claims.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("statefulset", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    fn pod(&self, set: &StatefulSet, ordinal: i32, hash: &str) -> Option<Pod> {
        let spec = set.spec.as_ref()?;
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let pod_name = format!("{name}-{ordinal}");
        let mut pod = pods::from_template(
            &spec.template,
            ns,
            name,
            controller_ref("apps/v1", "StatefulSet", &set.metadata),
        );
        pod.metadata.generate_name = None;
        pod.metadata.name = Some(pod_name.clone());
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(HASH_LABEL.into(), hash.into());
        labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
        labels.insert("apps.kubernetes.io/pod-index".into(), ordinal.to_string());
        let ps = pod.spec.as_mut()?;
        ps.hostname = Some(pod_name);
        ps.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
        // Each template's claim replaces a volume of the same name.
        for t in spec.volume_claim_templates.iter().flatten() {
            let volume = t.metadata.name.clone().unwrap_or_default();
            let volumes = ps.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != volume);
            volumes.push(Volume {
                name: volume,
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(t, name, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        Some(pod)
    }

    /// Creates the claims of `ordinal` that do not exist yet.
    async fn create_claims(&self, set: &StatefulSet, ordinal: i32) -> anyhow::Result<()> {
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), ns);
        for claim in claims(set, ordinal) {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            if self
                .claims
                .store()
                .get(&format!("{ns}/{claim_name}"))
                .is_some()
            {
                continue;
            }
            match api.create(&claim).await {
                Ok(_) => self.ctx.recorder.record(
                    set,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("create Claim {claim_name} Pod {name}-{ordinal} in StatefulSet {name} success"),
                ),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(anyhow::anyhow!("creating claim {claim_name}: {e}")),
            }
        }
        Ok(())
    }

    /// With `whenScaled: Delete`, the claims of ordinals at or past `replicas` whose
    /// pods are gone.
    async fn delete_scaled_claims(
        &self,
        set: &StatefulSet,
        replicas: i32,
        pods: &BTreeMap<i32, Arc<Pod>>,
    ) -> anyhow::Result<()> {
        let Some(spec) = set.spec.as_ref() else {
            return Ok(());
        };
        let policy = spec.persistent_volume_claim_retention_policy.as_ref();
        if policy.and_then(|p| p.when_scaled.as_deref()) != Some("Delete") {
            return Ok(());
        }
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), ns);
        for claim in self.claims.store().in_namespace(ns) {
            let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
            let ordinal = spec.volume_claim_templates.iter().flatten().find_map(|t| {
                let prefix = format!("{}-{name}-", t.metadata.name.as_deref().unwrap_or_default());
                claim_name.strip_prefix(&prefix)?.parse::<i32>().ok()
            });
            let Some(o) = ordinal else { continue };
            if o < replicas || pods.contains_key(&o) || claim.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let dp = DeleteParams {
                precondition_uid: claim.metadata.uid.clone(),
                ..Default::default()
            };
            let deleted = api
                .delete_if_current(claim_name, &dp)
                .await
                .map_err(|e| anyhow::anyhow!("deleting claim {claim_name}: {e}"))?;
            if deleted {
                self.ctx.recorder.record(
                    set,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("delete Claim {claim_name} in StatefulSet {name} success"),
                );
            }
        }
        Ok(())
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(set) = self.sets.store().get(key) else {
            return Ok(None);
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (ns, name) = controller::split(key);
        let Some(spec) = set.spec.as_ref() else {
            return Ok(None);
        };
        let hash = template_hash(&spec.template);
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        // Ordinal → pod (terminating ones included: a name is taken until it is gone).
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in self.pods.store().in_namespace(ns) {
            if controller_of(&p.metadata).is_some_and(|r| r.uid == uid) {
                if let Some(o) = p.metadata.name.as_deref().and_then(|n| ordinal(name, n)) {
                    by_ordinal.insert(o, p);
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let delete = |p: Arc<Pod>| {
            let api = api.clone();
            async move {
                let dp = DeleteParams {
                    precondition_uid: p.metadata.uid.clone(),
                    ..Default::default()
                };
                let name = p.metadata.name.as_deref().unwrap_or_default();
                api.delete_if_current(name, &dp)
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("deleting {name}: {e}"))
            }
        };
        // Failed pods are replaced.
        for p in by_ordinal.values() {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
                && p.metadata.deletion_timestamp.is_none()
            {
                delete(p.clone()).await?;
            }
        }
        'create: {
            // Scale up: the missing ordinals, in order (one at a time unless Parallel).
            for o in 0..replicas {
                match by_ordinal.get(&o) {
                    None => {
                        if let Some(pod) = self.pod(&set, o, &hash) {
                            self.create_claims(&set, o).await?;
                            match api.create(&pod).await {
                                Ok(_) => self.ctx.recorder.record(
                                    set.as_ref(),
                                    "Normal",
                                    "SuccessfulCreate",
                                    &format!(
                                        "create Pod {name}-{o} in StatefulSet {name} successful"
                                    ),
                                ),
                                Err(e) if e.is_already_exists() => {}
                                Err(e) => return Err(anyhow::anyhow!("creating {name}-{o}: {e}")),
                            }
                        }
                        if !parallel {
                            break 'create;
                        }
                    }
                    Some(p) if !parallel && !running_and_ready(p) => break 'create,
                    _ => {}
                }
            }
            // Scale down: the highest ordinal first (all at once if Parallel), only when
            // the rest are healthy.
            let extra: Vec<Arc<Pod>> = by_ordinal
                .range(replicas..)
                .rev()
                .map(|(_, p)| p.clone())
                .collect();
            for p in extra {
                if p.metadata.deletion_timestamp.is_some() {
                    if !parallel {
                        break 'create;
                    }
                    continue;
                }
                delete(p.clone()).await?;
                self.ctx.recorder.record(
                    set.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    &format!(
                        "delete Pod {} in StatefulSet {name} successful",
                        p.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
                if !parallel {
                    break 'create;
                }
            }
            // Rolling update: from the highest ordinal down to the partition, one at a time.
            let rolling = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref())
                .unwrap_or("RollingUpdate")
                == "RollingUpdate";
            let partition = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0);
            if rolling {
                let all_healthy = (0..replicas).all(|o| {
                    by_ordinal.get(&o).is_some_and(|p| {
                        running_and_ready(p) && p.metadata.deletion_timestamp.is_none()
                    })
                });
                if all_healthy {
                    for o in (partition..replicas).rev() {
                        let Some(p) = by_ordinal.get(&o) else {
                            continue;
                        };
                        if p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) != Some(&hash)
                        {
                            delete(p.clone()).await?;
                            break;
                        }
                    }
                }
            }
        }
        self.delete_scaled_claims(&set, replicas, &by_ordinal)
            .await?;
        // Status.
        let live: Vec<&Arc<Pod>> = by_ordinal.values().filter(|p| pods::is_active(p)).collect();
        let updated = live
            .iter()
            .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash))
            .count() as i32;
        let ready = live.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let available = live
            .iter()
            .filter(|p| pods::is_available(p, min_ready))
            .count() as i32;
        let old = set.status.clone().unwrap_or_default();
        let current_revision = if updated == replicas && live.len() as i32 == replicas {
            Some(hash.clone())
        } else {
            old.current_revision.clone().or(Some(hash.clone()))
        };
        let status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: live.len() as i32,
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            current_replicas: Some(
                live.iter()
                    .filter(|p| {
                        p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL))
                            == current_revision.as_ref()
                    })
                    .count() as i32,
            ),
            updated_replicas: Some(updated),
            current_revision,
            update_revision: Some(hash),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
        };
        if set.status.as_ref() != Some(&status) {
            let mut s = set.as_ref().clone();
            s.status = Some(status);
            let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), ns);
            match api.replace_status(&s).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    return Ok(Some(std::time::Duration::from_millis(100)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}
