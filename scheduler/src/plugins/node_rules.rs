//! Plugins that look at the node alone: NodeName, NodeUnschedulable, TaintToleration,
//! NodeAffinity and NodePorts.

use crate::framework::{
    normalize_max, CycleState, Filter, NodeInfo, Plugin, PodInfo, Score, Status,
};
use api::scheduling::{matches_node_selector_and_affinity, term_matches, tolerates, untolerated};
use k8s_openapi::api::core::v1::{Taint, Toleration};

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// `spec.nodeName`, when a pod names its node.
pub struct NodeName;

impl Filter for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name => {
                Status::unresolvable(self.name(), "node(s) didn't match the requested node name")
            }
            _ => Status::success(),
        }
    }
}

/// Cordoned nodes (`spec.unschedulable`) take only pods tolerating their taint.
pub struct NodeUnschedulable;

impl Filter for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let cordoned = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::unresolvable(self.name(), "node(s) were unschedulable")
        }
    }
}

/// NoSchedule and NoExecute taints must be tolerated; untolerated PreferNoSchedule taints
/// lower the score.
pub struct TaintToleration;

impl Filter for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match untolerated(taints(node), tolerations(pod), &["NoSchedule", "NoExecute"]) {
            None => Status::success(),
            Some(t) => Status::unresolvable(
                self.name(),
                format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key,
                    t.value.as_deref().unwrap_or("")
                ),
            ),
        }
    }
}

impl Score for TaintToleration {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .collect();
        taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        normalize_max(scores, true);
    }
}

/// `nodeSelector` and required node affinity filter; preferred node affinity scores.
pub struct NodeAffinity;

impl Filter for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if matches_node_selector_and_affinity(&pod.pod, &node.node) {
            Status::success()
        } else {
            Status::unresolvable(
                self.name(),
                "node(s) didn't match Pod's node affinity/selector",
            )
        }
    }
}

impl Score for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let preferred = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        preferred
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.name, node.labels()))
            .map(|p| i64::from(p.weight))
            .sum()
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        normalize_max(scores, false);
    }
}

/// Host ports the pod asks for must be free on the node.
pub struct NodePorts;

impl Filter for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let clash = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if clash {
            Status::unschedulable(
                self.name(),
                "node(s) didn't have free ports for the requested pod ports",
            )
        } else {
            Status::success()
        }
    }
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
}
