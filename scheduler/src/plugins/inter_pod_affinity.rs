//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's, and the
//! existing pods' anti-affinity against it) by topology domain; preferred terms score.

use crate::framework::{
    AffinityTerm, CycleState, Filter, NodeInfo, Nodes, Plugin, PodInfo, PreFilter, Score, Status,
    MAX_SCORE,
};
use std::collections::HashMap;

const STATE: &str = "InterPodAffinity";
const SCORE_STATE: &str = "InterPodAffinity/score";

/// (topology key, value) → count
type Counts = HashMap<(String, String), i64>;

#[derive(Default)]
struct Pre {
    /// Pods matching all the incoming pod's affinity terms, per domain of each term.
    affinity: Counts,
    /// Pods the incoming pod's anti-affinity terms select, per domain.
    anti: Counts,
    /// Existing pods whose anti-affinity selects the incoming pod, per domain.
    existing_anti: Counts,
}

fn domain(node: &NodeInfo, key: &str) -> Option<(String, String)> {
    node.labels().get(key).map(|v| (key.to_string(), v.clone()))
}

pub struct InterPodAffinity;

impl PreFilter for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, nodes: Nodes<'_>) -> Status {
        let mut pre = Pre::default();
        for node in nodes {
            for existing in &node.pods {
                for term in &existing.required_anti_affinity {
                    if term.matches(pod) {
                        if let Some(d) = domain(node, &term.topology_key) {
                            *pre.existing_anti.entry(d).or_default() += 1;
                        }
                    }
                }
                if !pod.required_affinity.is_empty()
                    && pod.required_affinity.iter().all(|t| t.matches(existing))
                {
                    for term in &pod.required_affinity {
                        if let Some(d) = domain(node, &term.topology_key) {
                            *pre.affinity.entry(d).or_default() += 1;
                        }
                    }
                }
                for term in &pod.required_anti_affinity {
                    if term.matches(existing) {
                        if let Some(d) = domain(node, &term.topology_key) {
                            *pre.anti.entry(d).or_default() += 1;
                        }
                    }
                }
            }
        }
        state.write(STATE, pre);
        Status::success()
    }
}

impl Filter for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(pre) = state.read::<Pre>(STATE) else {
            return Status::error(self.name(), "pre-filter state missing");
        };
        let count = |m: &Counts, key: &str| {
            domain(node, key)
                .and_then(|d| m.get(&d).copied())
                .unwrap_or(0)
        };
        // Existing pods' anti-affinity: any of them in this node's domain refuses us.
        if pre
            .existing_anti
            .keys()
            .any(|(k, _)| count(&pre.existing_anti, k) > 0)
        {
            return Status::unschedulable(
                self.name(),
                "node(s) didn't satisfy existing pods anti-affinity rules",
            );
        }
        if !pod.required_affinity.is_empty() {
            let satisfied = pod
                .required_affinity
                .iter()
                .all(|t| count(&pre.affinity, &t.topology_key) > 0);
            // The first pod of a group that selects itself may go anywhere the keys exist.
            let first_of_group = pre.affinity.is_empty()
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(pod) && domain(node, &t.topology_key).is_some());
            if !satisfied && !first_of_group {
                return Status::unresolvable(
                    self.name(),
                    "node(s) didn't match pod affinity rules",
                );
            }
        }
        if pod
            .required_anti_affinity
            .iter()
            .any(|t| count(&pre.anti, &t.topology_key) > 0)
        {
            return Status::unschedulable(
                self.name(),
                "node(s) didn't match pod anti-affinity rules",
            );
        }
        Status::success()
    }
}

impl Score for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _feasible: &[&NodeInfo],
        all: Nodes<'_>,
    ) {
        // Weights per domain: the incoming pod's preferred terms over existing pods, and
        // existing pods' preferred terms over the incoming pod (symmetry).
        let mut weights: Counts = HashMap::new();
        let mut add = |node: &NodeInfo, term: &AffinityTerm, w: i64| {
            if let Some(d) = domain(node, &term.topology_key) {
                *weights.entry(d).or_default() += w;
            }
        };
        for node in all {
            for existing in &node.pods {
                for (w, t) in &pod.preferred_affinity {
                    if t.matches(existing) {
                        add(node, t, i64::from(*w));
                    }
                }
                for (w, t) in &pod.preferred_anti_affinity {
                    if t.matches(existing) {
                        add(node, t, -i64::from(*w));
                    }
                }
                if existing.has_affinity() {
                    for (w, t) in &existing.preferred_affinity {
                        if t.matches(pod) {
                            add(node, t, i64::from(*w));
                        }
                    }
                    for (w, t) in &existing.preferred_anti_affinity {
                        if t.matches(pod) {
                            add(node, t, -i64::from(*w));
                        }
                    }
                }
            }
        }
        state.write(SCORE_STATE, weights);
    }
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(weights) = state.read::<Counts>(SCORE_STATE) else {
            return 0;
        };
        weights
            .iter()
            .filter(|((k, v), _)| node.labels().get(k) == Some(v))
            .map(|(_, w)| *w)
            .sum()
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        let (min, max) = (
            scores.iter().copied().min().unwrap_or(0),
            scores.iter().copied().max().unwrap_or(0),
        );
        for s in scores.iter_mut() {
            *s = if max == min {
                0
            } else {
                MAX_SCORE * (*s - min) / (max - min)
            };
        }
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
}
