//! NodeResourcesFit (requests against allocatable, pod count) with LeastAllocated
//! scoring, and NodeResourcesBalancedAllocation.

use crate::framework::{CycleState, Filter, NodeInfo, Plugin, PodInfo, Score, Status, MAX_SCORE};

pub struct NodeResourcesFit;

impl Filter for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > node.allowed_pods {
            reasons.push("Too many pods".to_string());
        }
        let (want, have, alloc) = (&pod.requests, &node.requested, &node.allocatable);
        if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - have.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && want.memory > alloc.memory - have.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0
            && want.ephemeral_storage > alloc.ephemeral_storage - have.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, amount) in &want.scalar {
            let free = alloc.scalar.get(name).copied().unwrap_or(0)
                - have.scalar.get(name).copied().unwrap_or(0);
            if *amount > 0 && *amount > free {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Status::success()
        } else {
            let mut s = Status::unschedulable(self.name(), "");
            s.reasons = reasons;
            s
        }
    }
}

/// Fractions of CPU and memory the node would have in use with the pod (non-zero
/// request defaults), each capped at 1.
fn fractions(pod: &PodInfo, node: &NodeInfo) -> (f64, f64) {
    let f = |used: i64, alloc: i64| {
        if alloc <= 0 {
            1.0
        } else {
            (used as f64 / alloc as f64).min(1.0)
        }
    };
    (
        f(
            node.non_zero_cpu + pod.non_zero_cpu,
            node.allocatable.milli_cpu,
        ),
        f(
            node.non_zero_memory + pod.non_zero_memory,
            node.allocatable.memory,
        ),
    )
}

/// Favors nodes with more free CPU and memory (the default scoring strategy).
pub struct LeastAllocated;

impl Score for LeastAllocated {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (cpu, mem) = fractions(pod, node);
        (((1.0 - cpu) + (1.0 - mem)) / 2.0 * MAX_SCORE as f64) as i64
    }
}

/// Favors nodes whose CPU and memory use would stay balanced.
pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (cpu, mem) = fractions(pod, node);
        let std = (cpu - mem).abs() / 2.0;
        ((1.0 - std) * MAX_SCORE as f64) as i64
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
}

impl Plugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
}
