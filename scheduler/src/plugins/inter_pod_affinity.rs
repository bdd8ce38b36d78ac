//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's, and the
//! existing pods' anti-affinity against it) by topology domain; preferred terms score.

use crate::framework::{
    AffinityTerm, CycleState, Filter, NodeInfo, Nodes, Plugin, PodInfo, PreFilter, Score, Status,
    MAX_SCORE,
};
use std::collections::HashMap;

const STATE: &str = "InterPodAffinity";
const SCORE_STATE: &str = "InterPodAffinity/score";

/// Pods (or weights) per topology domain: key → value → count. Looked up with the
/// node's own label strings, so filtering allocates nothing.
#[derive(Default)]
struct Counts(HashMap<String, HashMap<String, i64>>);

impl Counts {
    fn add(&mut self, node: &NodeInfo, key: &str, n: i64) {
        let Some(value) = node.labels().get(key) else {
            return;
        };
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), HashMap::new());
        }
        let Some(values) = self.0.get_mut(key) else {
            return;
        };
        match values.get_mut(value) {
            Some(c) => *c += n,
            None => {
                values.insert(value.clone(), n);
            }
        }
    }

    /// The count of the node's domain for `key`.
    fn at(&self, node: &NodeInfo, key: &str) -> i64 {
        node.labels()
            .get(key)
            .and_then(|v| self.0.get(key)?.get(v))
            .copied()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any key's count for the node's domain is positive.
    fn any_here(&self, node: &NodeInfo) -> bool {
        self.0.keys().any(|k| self.at(node, k) > 0)
    }

    /// The sum over keys of the node's domains.
    fn sum_here(&self, node: &NodeInfo) -> i64 {
        self.0.keys().map(|k| self.at(node, k)).sum()
    }
}

#[derive(Default)]
struct Pre {
    /// Pods matching all the incoming pod's affinity terms, per domain of each term.
    affinity: Counts,
    /// Pods the incoming pod's anti-affinity terms select, per domain.
    anti: Counts,
    /// Existing pods whose anti-affinity selects the incoming pod, per domain.
    existing_anti: Counts,
}

pub struct InterPodAffinity;

impl PreFilter for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, nodes: Nodes<'_>) -> Status {
        let mut pre = Pre::default();
        let own_terms =
            !(pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty());
        if !own_terms && nodes.required_anti_pods == 0 {
            state.write(STATE, pre); // nothing anywhere to count
            return Status::success();
        }
        for node in nodes.iter() {
            if !own_terms && node.required_anti_pods == 0 {
                continue;
            }
            for existing in &node.pods {
                for term in &existing.required_anti_affinity {
                    if term.matches(pod) {
                        pre.existing_anti.add(node, &term.topology_key, 1);
                    }
                }
                if !pod.required_affinity.is_empty()
                    && pod.required_affinity.iter().all(|t| t.matches(existing))
                {
                    for term in &pod.required_affinity {
                        pre.affinity.add(node, &term.topology_key, 1);
                    }
                }
                for term in &pod.required_anti_affinity {
                    if term.matches(existing) {
                        pre.anti.add(node, &term.topology_key, 1);
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
        // Existing pods' anti-affinity: any of them in this node's domain refuses us.
        if pre.existing_anti.any_here(node) {
            return Status::unschedulable(
                self.name(),
                "node(s) didn't satisfy existing pods anti-affinity rules",
            );
        }
        if !pod.required_affinity.is_empty() {
            let satisfied = pod
                .required_affinity
                .iter()
                .all(|t| pre.affinity.at(node, &t.topology_key) > 0);
            // The first pod of a group that selects itself may go anywhere the keys exist.
            let first_of_group = pre.affinity.is_empty()
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(pod) && node.labels().contains_key(&t.topology_key));
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
            .any(|t| pre.anti.at(node, &t.topology_key) > 0)
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
        let own_terms =
            !(pod.preferred_affinity.is_empty() && pod.preferred_anti_affinity.is_empty());
        if !own_terms && all.affinity_pods == 0 {
            return; // no terms anywhere: every node scores 0
        }
        let mut weights = Counts::default();
        let mut add =
            |node: &NodeInfo, term: &AffinityTerm, w: i64| weights.add(node, &term.topology_key, w);
        for node in all.iter() {
            if !own_terms && node.affinity_pods == 0 {
                continue;
            }
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
        weights.sum_here(node)
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
