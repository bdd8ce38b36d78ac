//! The daemonset controller: one pod per eligible node — the node matches the pod's node
//! selector and required affinity and its NoSchedule/NoExecute taints are tolerated (the
//! pods also get the tolerations Kubernetes adds to daemons). Each pod is pinned to its
//! node with required node affinity on `metadata.name`, so the scheduler places it.
//! RollingUpdate replaces pods of an older template (`controller-revision-hash`) at most
//! `maxUnavailable` at a time.

use crate::controller::{self, controller_of, controller_ref, run_workers, Expectations, Requeue};
use crate::deployment::template_hash;
use crate::pods;
use crate::Context;
use api::scheduling::{matches_node_selector_and_affinity, untolerated};
use client::informer::Event;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub const HASH_LABEL: &str = "controller-revision-hash";

#[derive(Clone)]
pub struct DaemonSetController {
    ctx: Context,
    sets: Informer<DaemonSet>,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    expectations: Expectations,
}

/// The tolerations every daemon pod gets (Kubernetes adds the same).
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The pod the daemon set would put on `node` (template, pinned, with tolerations).
fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Option<Pod> {
    let spec = ds.spec.as_ref()?;
    let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    let mut pod = pods::from_template(
        &spec.template,
        ns,
        name,
        controller_ref("apps/v1", "DaemonSet", &ds.metadata),
    );
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let ps = pod.spec.as_mut()?;
    let tolerations = ps.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations() {
        if !tolerations
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    let mut affinity = serde_json::to_value(ps.affinity.clone().unwrap_or_default()).ok()?;
    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    ps.affinity = serde_json::from_value(affinity).ok();
    Some(pod)
}

/// Whether the daemon set should run on the node.
fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let Some(spec) = ds.spec.as_ref() else {
        return false;
    };
    let probe = Pod {
        spec: spec.template.spec.clone(),
        ..Default::default()
    };
    if !matches_node_selector_and_affinity(&probe, node) {
        return false;
    }
    let mut tolerations = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    untolerated(taints, &tolerations, &["NoSchedule", "NoExecute"]).is_none()
}

/// The node a daemon pod is pinned to (or bound to).
fn node_of(p: &Pod) -> Option<String> {
    if let Some(n) = p.spec.as_ref()?.node_name.clone() {
        return Some(n);
    }
    let terms = p
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    terms
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

impl DaemonSetController {
    pub fn new(ctx: &Context) -> Self {
        let c = DaemonSetController {
            ctx: ctx.clone(),
            sets: ctx.factory.informer::<DaemonSet>(),
            nodes: ctx.factory.informer::<Node>(),
            pods: ctx.factory.informer::<Pod>(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
        };
        c.sets
            .add_handler(controller::enqueue_own::<DaemonSet>(&c.queue));
        let (q, sets) = (c.queue.clone(), c.sets.clone());
        c.nodes.add_handler(move |_| {
            for ds in sets.store().list() {
                q.add(controller::key(&ds.metadata));
            }
        });
        let (q, exp) = (c.queue.clone(), c.expectations.clone());
        c.pods.add_handler(move |ev| {
            let (p, added) = match ev {
                Event::Add(p) => (p, true),
                Event::Update(_, p) | Event::Delete(p) => (p, false),
            };
            if let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "DaemonSet") {
                let key = format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                );
                if added {
                    exp.creation_observed(&key);
                }
                q.add(key);
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.sets.clone()),
            Box::new(self.nodes.clone()),
            Box::new(self.pods.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("daemonset", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(ds) = self.sets.store().get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (ns, _) = controller::split(key);
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(None);
        };
        let hash = template_hash(&spec.template);
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods.store().in_namespace(ns) {
            if controller_of(&p.metadata).is_some_and(|r| r.uid == uid) && pods::is_active(&p) {
                if let Some(n) = node_of(&p) {
                    by_node.entry(n).or_default().push(p);
                }
            }
        }
        let nodes = self.nodes.store().list();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let mut to_create = Vec::new();
        let mut to_delete: Vec<Arc<Pod>> = Vec::new();
        let mut desired = 0;
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let here = by_node.remove(&name).unwrap_or_default();
            if eligible(&ds, node) {
                desired += 1;
                if here.is_empty() {
                    to_create.push(name);
                } else {
                    to_delete.extend(here.into_iter().skip(1)); // duplicates
                }
            } else {
                to_delete.extend(here);
            }
        }
        // Pods on nodes that no longer exist.
        to_delete.extend(by_node.into_values().flatten());
        // Rolling update: old-template pods, within maxUnavailable.
        let all: Vec<Arc<Pod>> = self
            .pods
            .store()
            .in_namespace(ns)
            .into_iter()
            .filter(|p| {
                controller_of(&p.metadata).is_some_and(|r| r.uid == uid) && pods::is_active(p)
            })
            .collect();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        if rolling && self.expectations.satisfied(key) {
            let max_unavailable = match spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref())
            {
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(s)) => {
                    (s.trim_end_matches('%').parse::<f64>().unwrap_or(0.0) * f64::from(desired)
                        / 100.0)
                        .floor() as i32
                }
                None => 1,
            }
            .max(1);
            let unavailable = (desired
                - all
                    .iter()
                    .filter(|p| pods::is_available(p, min_ready))
                    .count() as i32)
                .max(0);
            let mut budget = max_unavailable - unavailable - to_create.len() as i32;
            let old: Vec<&Arc<Pod>> = all
                .iter()
                .filter(|p| {
                    p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) != Some(&hash)
                })
                .collect();
            // Not-available old pods first: replacing them costs nothing.
            for p in old.iter().filter(|p| !pods::is_available(p, min_ready)) {
                to_delete.push((*p).clone());
            }
            for p in old.iter().filter(|p| pods::is_available(p, min_ready)) {
                if budget <= 0 {
                    break;
                }
                to_delete.push((*p).clone());
                budget -= 1;
            }
        }
        if self.expectations.satisfied(key) {
            self.expectations.expect(key, to_create.len() as i64, 0);
            for node in &to_create {
                let Some(pod) = pod_for(&ds, node, &hash) else {
                    continue;
                };
                match api.create(&pod).await {
                    Ok(p) => self.ctx.recorder.record(
                        ds.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                    ),
                    Err(e) => {
                        self.expectations.forget(key);
                        return Err(anyhow::anyhow!(
                            "creating a daemon pod for node {node}: {e}"
                        ));
                    }
                }
            }
            to_delete.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            to_delete.dedup_by(|a, b| a.metadata.uid == b.metadata.uid);
            for p in &to_delete {
                let dp = DeleteParams {
                    precondition_uid: p.metadata.uid.clone(),
                    ..Default::default()
                };
                let pod = p.metadata.name.as_deref().unwrap_or_default();
                if api.delete_if_current(pod, &dp).await? {
                    self.ctx.recorder.record(
                        ds.as_ref(),
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pod}"),
                    );
                }
            }
        }
        // Status.
        let scheduled: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .collect();
        let on_eligible = |p: &Arc<Pod>| {
            node_of(p)
                .and_then(|n| {
                    nodes
                        .iter()
                        .find(|x| x.metadata.name.as_deref() == Some(n.as_str()))
                        .cloned()
                })
                .is_some_and(|n| eligible(&ds, &n))
        };
        let current = scheduled.iter().filter(|p| on_eligible(p)).count() as i32;
        let misscheduled = scheduled.len() as i32 - current;
        let ready = scheduled.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let available = scheduled
            .iter()
            .filter(|p| pods::is_available(p, min_ready))
            .count() as i32;
        let updated = scheduled
            .iter()
            .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash))
            .count() as i32;
        let status = DaemonSetStatus {
            current_number_scheduled: current,
            desired_number_scheduled: desired,
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_available: Some(available),
            number_unavailable: Some((desired - available).max(0)),
            updated_number_scheduled: Some(updated),
            observed_generation: ds.metadata.generation,
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        if ds.status.as_ref() != Some(&status) {
            let mut updated = ds.as_ref().clone();
            updated.status = Some(status);
            let api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), ns);
            match api.replace_status(&updated).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    return Ok(Some(std::time::Duration::from_millis(100)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((min_ready > 0 && ready > available).then(|| std::time::Duration::from_secs(1)))
    }
}
