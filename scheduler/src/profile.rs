//! A scheduling profile: which plugins run at each extension point, with score weights,
//! and the algorithm that runs them for one pod — pre-filter, filter a sample of nodes
//! (in parallel on large clusters), score, pick the best.

use crate::framework::{
    Code, CycleState, Filter, NodeInfo, PodInfo, PreFilter, Score, Snapshot, Status,
};
use crate::plugins::{inter_pod_affinity, node_rules, resources, topology_spread};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Profile {
    pub pre_filters: Vec<Arc<dyn PreFilter>>,
    pub filters: Vec<Arc<dyn Filter>>,
    pub scores: Vec<(Arc<dyn Score>, i64)>,
    /// 0: kube-scheduler's adaptive default (50% minus 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: u32,
}

/// Why no node fits: each rejecting node's status.
#[derive(Debug, Default)]
pub struct Diagnosis {
    pub statuses: BTreeMap<String, Status>,
    pub num_nodes: usize,
    /// A pre-filter refused the pod before any node was looked at.
    pub pre_filter: Option<Status>,
}

impl Diagnosis {
    /// kube-scheduler's message: "0/5 nodes are available: 2 Insufficient cpu, 3 node(s)
    /// had untolerated taint {k: v}." (reasons counted, sorted).
    pub fn message(&self) -> String {
        if let Some(s) = &self.pre_filter {
            return format!(
                "0/{} nodes are available: {}.",
                self.num_nodes,
                s.reasons.join(", ")
            );
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in self.statuses.values() {
            for r in &s.reasons {
                *counts.entry(r.as_str()).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        if parts.is_empty() {
            format!("0/{} nodes are available.", self.num_nodes)
        } else {
            format!(
                "0/{} nodes are available: {}.",
                self.num_nodes,
                parts.join(", ")
            )
        }
    }

    /// The plugins that rejected the pod (they decide which cluster events retry it).
    pub fn plugins(&self) -> Vec<&'static str> {
        let mut p: Vec<&'static str> = self.statuses.values().map(|s| s.plugin).collect();
        if let Some(s) = &self.pre_filter {
            p.push(s.plugin);
        }
        p.sort();
        p.dedup();
        p
    }
}

/// The cores to filter on (asking the OS reads cgroup files: once is enough).
static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Nodes filtered on the scheduling thread before the rest is split over the cores.
const SEQUENTIAL: usize = 1024;

/// One thread's share of filtering: feasible node indexes, rejections, nodes looked at.
type Scanned = (Vec<usize>, Vec<(String, Status)>, usize);

pub struct Placement {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

impl Default for Profile {
    /// The default plugins with kube-scheduler's score weights.
    fn default() -> Self {
        let affinity = Arc::new(inter_pod_affinity::InterPodAffinity);
        let spread = Arc::new(topology_spread::PodTopologySpread);
        let taints = Arc::new(node_rules::TaintToleration);
        let node_affinity = Arc::new(node_rules::NodeAffinity);
        Profile {
            pre_filters: vec![affinity.clone(), spread.clone()],
            filters: vec![
                Arc::new(node_rules::NodeUnschedulable),
                Arc::new(node_rules::NodeName),
                taints.clone(),
                node_affinity.clone(),
                Arc::new(node_rules::NodePorts),
                Arc::new(resources::NodeResourcesFit),
                spread.clone(),
                affinity.clone(),
            ],
            scores: vec![
                (taints, 3),
                (node_affinity, 2),
                (Arc::new(resources::LeastAllocated), 1),
                (Arc::new(resources::BalancedAllocation), 1),
                (affinity, 2),
                (spread, 2),
            ],
            percentage_of_nodes_to_score: 0,
        }
    }
}

/// Nodes to find before scoring (kube-scheduler's `numFeasibleNodesToFind`).
pub fn nodes_to_find(all: usize, percentage: u32) -> usize {
    const MIN: usize = 100;
    if all < MIN || percentage >= 100 {
        return all;
    }
    let pct = if percentage == 0 {
        (50 - (all / 125) as i64).max(5) as usize
    } else {
        percentage as usize
    };
    (all * pct / 100).max(MIN)
}

impl Profile {
    pub fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for f in &self.filters {
            let s = f.filter(state, pod, node);
            if !s.is_success() {
                return s;
            }
        }
        Status::success()
    }

    pub fn run_pre_filters(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &Snapshot<'_>,
    ) -> Status {
        for p in &self.pre_filters {
            let s = p.pre_filter(state, pod, nodes);
            if !s.is_success() {
                return s;
            }
        }
        Status::success()
    }

    /// Places `pod` on one of `nodes`, starting the search at `start` (rotated per cycle
    /// so every node gets looked at). Returns the node, or why none fits.
    pub fn schedule(
        &self,
        pod: &PodInfo,
        nodes: &Snapshot<'_>,
        start: usize,
    ) -> Result<Placement, Diagnosis> {
        let mut state = CycleState::default();
        let mut diagnosis = Diagnosis {
            num_nodes: nodes.len(),
            ..Default::default()
        };
        if nodes.is_empty() {
            return Err(diagnosis);
        }
        let pre = self.run_pre_filters(&mut state, pod, nodes);
        if !pre.is_success() {
            diagnosis.pre_filter = Some(pre);
            return Err(diagnosis);
        }
        let want = nodes_to_find(nodes.len(), self.percentage_of_nodes_to_score);
        let (feasible, evaluated, rejected) = self.find_feasible(&state, pod, nodes, start, want);
        diagnosis.statuses = rejected;
        if feasible.is_empty() {
            return Err(diagnosis);
        }
        let chosen = if feasible.len() == 1 {
            feasible[0]
        } else {
            self.pick(&mut state, pod, nodes, &feasible)
        };
        Ok(Placement {
            node: nodes[chosen].name.clone(),
            evaluated,
            feasible: feasible.len(),
        })
    }

    /// Filters nodes in rotated order until `want` fit; large clusters are split over the
    /// available cores. Returns the feasible indexes, how many nodes were evaluated, and
    /// the rejections.
    fn find_feasible(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        start: usize,
        want: usize,
    ) -> (Vec<usize>, usize, BTreeMap<String, Status>) {
        let n = nodes.len();
        let found = AtomicUsize::new(0);
        let scan = |from: usize, to: usize| {
            let mut ok = Vec::new();
            let mut bad = Vec::new();
            let mut seen = 0;
            for i in from..to {
                if found.load(Ordering::Relaxed) >= want {
                    break;
                }
                let idx = (start + i) % n;
                seen += 1;
                let s = self.run_filters(state, pod, &nodes[idx]);
                if s.is_success() {
                    ok.push(idx);
                    found.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.push((nodes[idx].name.clone(), s));
                }
            }
            (ok, bad, seen)
        };
        // Most cycles find enough nodes in the first stretch; only a long scan (most nodes
        // rejected) is worth spreading over the cores.
        let threads = *THREADS.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(1, |p| p.get())
                .min(8)
        });
        let first = if threads > 1 && n > 2 * SEQUENTIAL {
            SEQUENTIAL
        } else {
            n
        };
        let mut parts: Vec<Scanned> = vec![scan(0, first)];
        if first < n && found.load(Ordering::Relaxed) < want {
            let chunk = (n - first).div_ceil(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let scan = &scan;
                        let from = first + t * chunk;
                        s.spawn(move || scan(from, (from + chunk).min(n)))
                    })
                    .collect();
                for h in handles {
                    parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
                }
            });
        }
        let mut feasible = Vec::new();
        let mut rejected = BTreeMap::new();
        let mut evaluated = 0;
        for (ok, bad, seen) in parts {
            feasible.extend(ok);
            rejected.extend(bad);
            evaluated += seen;
        }
        feasible.truncate(want);
        (feasible, evaluated, rejected)
    }

    /// Scores the feasible nodes (weighted sum of normalized plugin scores) and returns
    /// the best, breaking ties at random.
    fn pick(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &Snapshot<'_>,
        feasible: &[usize],
    ) -> usize {
        let candidates: Vec<&NodeInfo> = feasible.iter().map(|i| nodes[*i].as_ref()).collect();
        let mut total = vec![0i64; feasible.len()];
        for (plugin, weight) in &self.scores {
            plugin.pre_score(state, pod, &candidates, nodes);
            let mut scores: Vec<i64> = candidates
                .iter()
                .map(|n| plugin.score(state, pod, n))
                .collect();
            plugin.normalize(state, &mut scores);
            for (t, s) in total.iter_mut().zip(scores) {
                *t += s * weight;
            }
        }
        let best = total.iter().copied().max().unwrap_or(0);
        let ties: Vec<usize> = (0..total.len()).filter(|i| total[*i] == best).collect();
        feasible[ties[rand::random::<usize>() % ties.len()]]
    }
}

/// Whether a rejection could be undone by evicting pods from the node.
pub fn preemption_may_help(s: &Status) -> bool {
    s.code == Code::Unschedulable
}
