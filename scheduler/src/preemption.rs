//! DefaultPreemption (the post-filter): when no node fits a pod, find a node where
//! evicting lower-priority pods would make it fit, evicting as few and as unimportant
//! pods as possible.
//!
//! Per candidate node: remove every lower-priority pod, check the pod fits, then give
//! pods back in priority order while it still fits; those that cannot come back are the
//! victims. The node whose victims have the lowest top priority wins, then the smallest
//! priority sum, then the fewest victims. PodDisruptionBudgets are not consulted (the
//! scheduler does not watch them); victims are deleted with their grace period.

use crate::framework::{NodeInfo, PodInfo, Snapshot};
use crate::profile::{preemption_may_help, Diagnosis, Profile};
use std::sync::Arc;

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
) -> Option<Preemption> {
    let mut best: Option<(Preemption, (i32, i64, usize))> = None;
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
        let Some(victims) = victims_on(profile, pod, nodes, i) else {
            continue;
        };
        let top = victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let sum: i64 = victims.iter().map(|v| i64::from(v.priority)).sum();
        let rank = (top, sum, victims.len());
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

fn victims_on(
    profile: &Profile,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    i: usize,
) -> Option<Vec<Arc<PodInfo>>> {
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
    // Give back the most important pods first; whoever cannot come back is a victim.
    lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
    let mut victims = Vec::new();
    for p in lower {
        node.add_pod(p.clone());
        if !fits(profile, pod, nodes, i, &node) {
            node.remove_pod(&p.key);
            victims.push(p);
        }
    }
    Some(victims)
}
