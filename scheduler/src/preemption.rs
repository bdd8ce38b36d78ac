//! DefaultPreemption (the post-filter): when no node fits a pod, find a node where
//! evicting lower-priority pods would make it fit, evicting as few and as unimportant
//! pods as possible.
//!
//! Per candidate node: remove every lower-priority pod, check the pod fits, then give
//! pods back in priority order while it still fits; those that cannot come back are the
//! victims. PodDisruptionBudgets are respected as Kubernetes does, on a best-effort
//! basis: pods whose eviction would take a budget below zero are given back first, and
//! the node whose victims violate the fewest budgets wins; then the lowest top priority,
//! the smallest priority sum, the fewest victims. Victims are deleted with their grace
//! period.

use crate::framework::{NodeInfo, PodInfo, Snapshot};
use crate::profile::{preemption_may_help, Diagnosis, Profile};
use api::LabelSelector;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::sync::Arc;

/// A PodDisruptionBudget as preemption reads it: which pods it covers and how many of
/// them may still be disrupted.
pub struct Budget {
    namespace: String,
    selector: LabelSelector,
    allowed: i32,
    /// Pods already counted as disrupted (evicted, not yet gone).
    disrupted: Vec<String>,
}

impl Budget {
    /// None for a budget without a selector (it covers no pod).
    pub fn new(pdb: &PodDisruptionBudget) -> Option<Budget> {
        let spec = pdb.spec.as_ref()?;
        let selector = LabelSelector::from_label_selector(spec.selector.as_ref()).ok()?;
        let status = pdb.status.as_ref();
        Some(Budget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        })
    }

    fn covers(&self, p: &PodInfo) -> bool {
        p.namespace == self.namespace
            && !self
                .disrupted
                .iter()
                .any(|d| Some(d.as_str()) == p.pod.metadata.name.as_deref())
            && self.selector.matches_opt(p.pod.metadata.labels.as_ref())
    }
}

/// Candidate nodes examined at most (kube-scheduler samples too).
const MAX_CANDIDATES: usize = 100;

pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// Whether the pod may preempt at all.
pub fn eligible(pod: &PodInfo, nodes: &[Arc<NodeInfo>]) -> bool {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return false;
    }
    // Already preempted on its nominated node and victims are still leaving: wait.
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    if let Some(n) = nominated.filter(|n| !n.is_empty()) {
        if let Some(node) = nodes.iter().find(|x| x.name == n) {
            let leaving = node
                .pods
                .iter()
                .any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some());
            if leaving {
                return false;
            }
        }
    }
    true
}

/// Finds where to preempt, or `None`.
pub fn find(
    profile: &Profile,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    diagnosis: &Diagnosis,
    budgets: &[Budget],
) -> Option<Preemption> {
    let mut best: Option<(Preemption, (usize, i32, i64, usize))> = None;
    let candidates = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            diagnosis
                .statuses
                .get(&n.name)
                .is_some_and(preemption_may_help)
        })
        .filter(|(_, n)| n.pods.iter().any(|p| p.priority < pod.priority))
        .take(MAX_CANDIDATES);
    for (i, node) in candidates {
        let Some((victims, violations)) = victims_on(profile, pod, nodes, i, budgets) else {
            continue;
        };
        let top = victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let sum: i64 = victims.iter().map(|v| i64::from(v.priority)).sum();
        let rank = (violations, top, sum, victims.len());
        if best.as_ref().is_none_or(|(_, r)| rank < *r) {
            best = Some((
                Preemption {
                    node: node.name.clone(),
                    victims,
                },
                rank,
            ));
        }
    }
    best.map(|(p, _)| p)
}

/// Whether the pod fits on `nodes[i]` after it is replaced by `node`.
fn fits(
    profile: &Profile,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    i: usize,
    node: &NodeInfo,
) -> bool {
    let mut view: Vec<Arc<NodeInfo>> = nodes.to_vec();
    view[i] = Arc::new(node.clone());
    let mut state = crate::framework::CycleState::default();
    profile
        .run_pre_filters(&mut state, pod, &Snapshot::new(&view))
        .is_success()
        && profile.run_filters(&state, pod, node).is_success()
}

/// The victims on `nodes[i]` and how many of them violate a budget, or None when even
/// removing every lower-priority pod does not make room.
fn victims_on(
    profile: &Profile,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    i: usize,
    budgets: &[Budget],
) -> Option<(Vec<Arc<PodInfo>>, usize)> {
    let mut node: NodeInfo = nodes[i].as_ref().clone();
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    for p in &lower {
        node.remove_pod(&p.key);
    }
    if !fits(profile, pod, nodes, i, &node) {
        return None;
    }
    // The most important first; those whose eviction would take a budget below zero
    // (counting the more important ones before them) are given back before the rest.
    lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut other) = (Vec::new(), Vec::new());
    for p in lower {
        let mut violates = false;
        for (b, left) in budgets.iter().zip(allowed.iter_mut()) {
            if b.covers(&p) {
                *left -= 1;
                violates |= *left < 0;
            }
        }
        if violates {
            violating.push(p);
        } else {
            other.push(p);
        }
    }
    let mut victims = Vec::new();
    let mut violations = 0;
    for (group, counts) in [(violating, true), (other, false)] {
        for p in group {
            node.add_pod(p.clone());
            if !fits(profile, pod, nodes, i, &node) {
                node.remove_pod(&p.key);
                victims.push(p);
                violations += usize::from(counts);
            }
        }
    }
    Some((victims, violations))
}
