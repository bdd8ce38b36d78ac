//! The persistentvolume-binder controller: binds PersistentVolumeClaims to the
//! PersistentVolumes that satisfy them, and keeps the volumes' phases.
//!
//! A Pending claim without `volumeName` gets the smallest Available volume of its storage
//! class ("" for none) with the claim's volume mode, every access mode it asks for, a
//! capacity at least its request and labels its selector matches (a volume pre-bound to
//! the claim through `claimRef` first). A claim naming a volume gets that one. Binding
//! writes the volume's `claimRef` and phase Bound, then the claim's `volumeName`,
//! bind annotations and status (phase, access modes, capacity). A class with
//! `volumeBindingMode: WaitForFirstConsumer` is left alone (the scheduler's part in
//! Kubernetes; ours does not bind volumes). A volume whose claim is gone is Released
//! (`persistentVolumeReclaimPolicy` Retain or Recycle) or deleted (Delete); a bound claim
//! whose volume is gone is Lost. Nothing provisions volumes: a claim of a class with a
//! provisioner waits for one made by hand.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use api::{LabelSelector, Quantity};
use client::informer::Event;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use std::time::Duration;

/// What a lost race (a write that met a newer version) waits before it looks again.
const RETRY: Option<Duration> = Some(Duration::from_millis(100));

#[derive(Clone)]
pub struct VolumeBinder {
    ctx: Context,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    queue: WorkQueue<String>,
}

fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!(
        "claim:{}/{}",
        c.metadata.namespace.as_deref().unwrap_or_default(),
        c.metadata.name.as_deref().unwrap_or_default()
    )
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i64> {
    Quantity::parse(&q?.0).ok()?.to_bytes().ok()
}

/// Whether `volume` can serve `claim` (class, mode, access modes, size, selector).
fn satisfies(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let class = |c: Option<&String>| c.cloned().unwrap_or_default();
    let mode = |m: Option<&String>| m.cloned().unwrap_or_else(|| "Filesystem".into());
    let has = vs.access_modes.clone().unwrap_or_default();
    let wanted = cs.access_modes.clone().unwrap_or_default();
    let request = bytes(
        cs.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    let capacity = bytes(vs.capacity.as_ref().and_then(|c| c.get("storage")));
    let selected = match &cs.selector {
        None => true,
        Some(sel) => LabelSelector::from_label_selector(Some(sel))
            .is_ok_and(|s| s.matches_opt(volume.metadata.labels.as_ref())),
    };
    class(vs.storage_class_name.as_ref()) == class(cs.storage_class_name.as_ref())
        && mode(vs.volume_mode.as_ref()) == mode(cs.volume_mode.as_ref())
        && wanted.iter().all(|m| has.contains(m))
        && matches!((request, capacity), (Some(r), Some(c)) if c >= r)
        && selected
}

/// Whether `volume`'s `claimRef` (if any) points at `claim`.
fn reserved_for(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> Option<bool> {
    let r = volume.spec.as_ref()?.claim_ref.as_ref()?;
    Some(
        r.namespace == claim.metadata.namespace
            && r.name == claim.metadata.name
            && r.uid
                .as_ref()
                .is_none_or(|u| Some(u) == claim.metadata.uid.as_ref()),
    )
}

impl VolumeBinder {
    pub fn new(ctx: &Context) -> Self {
        let c = VolumeBinder {
            ctx: ctx.clone(),
            claims: ctx.factory.informer::<PersistentVolumeClaim>(),
            volumes: ctx.factory.informer::<PersistentVolume>(),
            classes: ctx.factory.informer::<StorageClass>(),
            queue: WorkQueue::default(),
        };
        let q = c.queue.clone();
        c.claims.add_handler(move |ev| match ev {
            Event::Add(cl) | Event::Update(_, cl) => q.add(claim_key(cl)),
            // Its volume is released.
            Event::Delete(cl) => {
                if let Some(v) = cl.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                    q.add(format!("volume:{v}"));
                }
            }
        });
        let (q, claims) = (c.queue.clone(), c.claims.clone());
        c.volumes.add_handler(move |ev| {
            let (v, gone) = match ev {
                Event::Add(v) | Event::Update(_, v) => (v, false),
                Event::Delete(v) => (v, true),
            };
            q.add(format!(
                "volume:{}",
                v.metadata.name.as_deref().unwrap_or_default()
            ));
            // A volume free to take (no claim, or one named by hand) may be what a
            // waiting claim needs; a claim bound to a volume that went is Lost. A volume
            // already held (the binder's own writes) wakes no one.
            let free = !gone
                && v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_none_or(|r| r.uid.is_none());
            for cl in claims.store().list() {
                let waiting = free && phase_of_claim(&cl) == "Pending";
                let on_it = cl.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                    == v.metadata.name.as_deref();
                if waiting || on_it {
                    q.add(claim_key(&cl));
                }
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.claims.clone()),
            Box::new(self.volumes.clone()),
            Box::new(self.classes.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers(
            "persistentvolume-binder",
            self.queue.clone(),
            workers,
            move |key| {
                let me = me.clone();
                async move {
                    match key.split_once(':') {
                        Some(("claim", k)) => me.sync_claim(k).await,
                        Some(("volume", k)) => me.sync_volume(k).await,
                        _ => Ok(None),
                    }
                }
            },
        );
    }

    async fn sync_volume(&self, name: &str) -> anyhow::Result<Requeue> {
        let Some(volume) = self.volumes.store().get(name) else {
            return Ok(None);
        };
        if volume.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let phase = match claim_ref {
            None => "Available",
            Some(r) => {
                let key = format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default()
                );
                let claim = self.claims.store().get(&key);
                let same = claim
                    .as_ref()
                    .is_some_and(|c| r.uid.is_none() || c.metadata.uid == r.uid);
                match (same, r.uid.is_some()) {
                    // Bound once the claim names it (the claim's sync does that).
                    (true, _) => match claim.and_then(|c| c.spec.clone()?.volume_name) {
                        Some(v) if v == name => "Bound",
                        _ => return Ok(None),
                    },
                    // Pre-bound by hand to a claim that does not exist yet.
                    (false, false) => "Available",
                    // Its claim is gone.
                    (false, true) => {
                        let policy = volume
                            .spec
                            .as_ref()
                            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
                        if policy == Some("Delete") {
                            let api: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
                            let dp = DeleteParams {
                                precondition_uid: volume.metadata.uid.clone(),
                                ..Default::default()
                            };
                            api.delete_if_current(name, &dp).await?;
                            return Ok(None);
                        }
                        "Released"
                    }
                }
            }
        };
        self.volume_phase(&volume, phase).await
    }

    async fn volume_phase(
        &self,
        volume: &PersistentVolume,
        phase: &str,
    ) -> anyhow::Result<Requeue> {
        if phase_of_volume(volume) == phase {
            return Ok(None);
        }
        let mut v = volume.clone();
        v.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            last_phase_transition_time: Some(crate::controller::now()),
            ..Default::default()
        });
        match Api::<PersistentVolume>::all(self.ctx.client.clone())
            .replace_status(&v)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if e.is_conflict() => Ok(RETRY),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn sync_claim(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(claim) = self.claims.store().get(key) else {
            return Ok(None);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let named = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        if let Some(name) = named {
            return match self.volumes.store().get(&name) {
                Some(v) if reserved_for(&v, &claim) != Some(false) => self.bind(&claim, &v).await,
                Some(_) => Ok(None),
                None if phase_of_claim(&claim) == "Bound" => self.claim_lost(&claim).await,
                None => Ok(None),
            };
        }
        let class = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_default();
        let sc = (!class.is_empty())
            .then(|| self.classes.store().get(&class))
            .flatten();
        if sc.as_ref().and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer")
        {
            return Ok(None);
        }
        let volumes = self.volumes.store().list();
        let candidates = volumes.iter().filter(|v| {
            v.metadata.deletion_timestamp.is_none()
                && reserved_for(v, &claim) != Some(false)
                && matches!(phase_of_volume(v), "Available" | "Pending")
                && satisfies(v, &claim)
        });
        let best = candidates.min_by_key(|v| {
            let capacity = bytes(
                v.spec
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage")),
            );
            (reserved_for(v, &claim).is_none(), capacity)
        });
        match best {
            Some(v) => self.bind(&claim, v).await,
            None => {
                let why = match sc.as_ref().map(|c| c.provisioner.as_str()) {
                    Some(p) => format!(
                        "waiting for a volume to be created by provisioner {p:?} or by hand"
                    ),
                    None if class.is_empty() => {
                        "no persistent volumes available for this claim and no storage class is set"
                            .to_string()
                    }
                    None => format!("storageclass.storage.k8s.io {class:?} not found"),
                };
                let reason = if sc.is_some() {
                    "ExternalProvisioning"
                } else {
                    "FailedBinding"
                };
                let kind = if sc.is_some() { "Normal" } else { "Warning" };
                self.ctx.recorder.record(claim.as_ref(), kind, reason, &why);
                Ok(None)
            }
        }
    }

    /// Binds `claim` and `volume` to each other: the volume first (its `claimRef` is the
    /// reservation), then the claim.
    async fn bind(
        &self,
        claim: &PersistentVolumeClaim,
        volume: &PersistentVolume,
    ) -> anyhow::Result<Requeue> {
        let volumes: Api<PersistentVolume> = Api::all(self.ctx.client.clone());
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.client.clone(), &ns);
        let volume_name = volume.metadata.name.clone().unwrap_or_default();
        let mut by_controller = false;
        let mut v = volume.clone();
        let reference = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if reference.is_none_or(|r| r.uid.is_none()) {
            by_controller = reference.is_none();
            if let Some(spec) = v.spec.as_mut() {
                spec.claim_ref = Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: claim.metadata.namespace.clone(),
                    name: claim.metadata.name.clone(),
                    uid: claim.metadata.uid.clone(),
                    resource_version: claim.metadata.resource_version.clone(),
                    field_path: None,
                });
            }
            v = match volumes.replace(&v).await {
                Ok(v) => v,
                Err(e) if e.is_conflict() => return Ok(RETRY),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        }
        if phase_of_volume(&v) != "Bound" {
            if let Some(r) = self.volume_phase(&v, "Bound").await? {
                return Ok(Some(r));
            }
        }
        let mut c = claim.clone();
        let spec = c.spec.get_or_insert_with(Default::default);
        if spec.volume_name.as_deref() != Some(volume_name.as_str()) {
            spec.volume_name = Some(volume_name.clone());
            let annotations = c.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert("pv.kubernetes.io/bind-completed".into(), "yes".into());
            if by_controller {
                annotations.insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
            }
            c = match claims.replace(&c).await {
                Ok(c) => c,
                Err(e) if e.is_conflict() => return Ok(RETRY),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        }
        let vs = v.spec.as_ref();
        let status = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: vs.and_then(|s| s.access_modes.clone()),
            capacity: vs.and_then(|s| s.capacity.clone()),
            ..c.status.clone().unwrap_or_default()
        };
        if c.status.as_ref() == Some(&status) {
            return Ok(None);
        }
        c.status = Some(status);
        match claims.replace_status(&c).await {
            Ok(_) => Ok(None),
            Err(e) if e.is_conflict() => Ok(RETRY),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn claim_lost(&self, claim: &PersistentVolumeClaim) -> anyhow::Result<Requeue> {
        let mut c = claim.clone();
        c.status.get_or_insert_with(Default::default).phase = Some("Lost".into());
        self.ctx.recorder.record(
            claim,
            "Warning",
            "ClaimLost",
            "the volume this claim was bound to no longer exists",
        );
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        match Api::<PersistentVolumeClaim>::namespaced(self.ctx.client.clone(), &ns)
            .replace_status(&c)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if e.is_conflict() => Ok(RETRY),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
