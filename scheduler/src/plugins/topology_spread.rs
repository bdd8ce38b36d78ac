//! PodTopologySpread: `DoNotSchedule` constraints filter nodes whose domain would exceed
//! `maxSkew` over the least loaded domain; `ScheduleAnyway` constraints score emptier
//! domains higher.

use crate::framework::{
    CycleState, Filter, NodeInfo, Nodes, Plugin, PodInfo, PreFilter, Score, Status, MAX_SCORE,
};
use api::scheduling::matches_node_selector_and_affinity;
use api::LabelSelector;
use std::collections::HashMap;

const STATE: &str = "PodTopologySpread";
const SCORE_STATE: &str = "PodTopologySpread/score";

struct Constraint {
    max_skew: i64,
    key: String,
    selector: LabelSelector,
    min_domains: i64,
    /// The incoming pod matches its own selector (it will count once placed).
    self_match: i64,
}

struct Counted {
    c: Constraint,
    counts: HashMap<String, i64>,
    min: i64,
}

fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .filter_map(|c| {
            let selector = LabelSelector::from_label_selector(c.label_selector.as_ref()).ok()?;
            let self_match = i64::from(selector.matches_opt(pod.labels()));
            Some(Constraint {
                max_skew: i64::from(c.max_skew),
                key: c.topology_key.clone(),
                selector,
                min_domains: i64::from(c.min_domains.unwrap_or(1)),
                self_match,
            })
        })
        .collect()
}

/// Matching pods per domain, over the nodes that qualify (they carry the key and pass
/// the pod's node selector and affinity: nodeAffinityPolicy Honor, taints ignored).
fn count(pod: &PodInfo, cs: Vec<Constraint>, nodes: &[&NodeInfo]) -> Vec<Counted> {
    cs.into_iter()
        .map(|c| {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in nodes {
                let Some(value) = node.labels().get(&c.key) else {
                    continue;
                };
                if !matches_node_selector_and_affinity(&pod.pod, &node.node) {
                    continue;
                }
                let n = node
                    .pods
                    .iter()
                    .filter(|p| {
                        p.namespace == pod.namespace
                            && p.pod.metadata.deletion_timestamp.is_none()
                            && c.selector.matches_opt(p.labels())
                    })
                    .count() as i64;
                *counts.entry(value.clone()).or_default() += n;
            }
            let mut min = counts.values().copied().min().unwrap_or(0);
            if (counts.len() as i64) < c.min_domains {
                min = 0;
            }
            Counted { c, counts, min }
        })
        .collect()
}

pub struct PodTopologySpread;

impl PreFilter for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, nodes: Nodes<'_>) -> Status {
        let cs = constraints(pod, "DoNotSchedule");
        if !cs.is_empty() {
            let refs: Vec<&NodeInfo> = nodes.iter().map(|n| n.as_ref()).collect();
            state.write(STATE, count(pod, cs, &refs));
        }
        Status::success()
    }
}

impl Filter for PodTopologySpread {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(counted) = state.read::<Vec<Counted>>(STATE) else {
            return Status::success();
        };
        for k in counted {
            let Some(value) = node.labels().get(&k.c.key) else {
                return Status::unresolvable(
                    self.name(),
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
            let here = k.counts.get(value).copied().unwrap_or(0);
            if here + k.c.self_match - k.min > k.c.max_skew {
                return Status::unschedulable(
                    self.name(),
                    "node(s) didn't match pod topology spread constraints",
                );
            }
        }
        Status::success()
    }
}

impl Score for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _feasible: &[&NodeInfo],
        all: Nodes<'_>,
    ) {
        let cs = constraints(pod, "ScheduleAnyway");
        if !cs.is_empty() {
            let refs: Vec<&NodeInfo> = all.iter().map(|n| n.as_ref()).collect();
            state.write(SCORE_STATE, count(pod, cs, &refs));
        }
    }
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(counted) = state.read::<Vec<Counted>>(SCORE_STATE) else {
            return 0;
        };
        counted
            .iter()
            .map(|k| {
                node.labels()
                    .get(&k.c.key)
                    .and_then(|v| k.counts.get(v))
                    .copied()
                    .unwrap_or(0)
                    + k.c.self_match
            })
            .sum()
    }
    fn normalize(&self, state: &CycleState, scores: &mut [i64]) {
        if state.read::<Vec<Counted>>(SCORE_STATE).is_none() {
            scores.iter_mut().for_each(|s| *s = 0);
            return;
        }
        // Fewer matching pods in the domain is better.
        let (min, max) = (
            scores.iter().copied().min().unwrap_or(0),
            scores.iter().copied().max().unwrap_or(0),
        );
        for s in scores.iter_mut() {
            *s = if max == min {
                MAX_SCORE
            } else {
                MAX_SCORE * (max - *s) / (max - min)
            };
        }
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
}
