//! The scheduling framework: what plugins see (`PodInfo`, `NodeInfo`, `CycleState`), the
//! extension points they implement (pre-filter, filter, pre-score, score with
//! normalization, post-filter), and `Profile`, which runs them for one pod.

use api::scheduling::{pod_requests, Resources};
use api::LabelSelector;
use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};
use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Scores are 0..=MAX_SCORE after normalization, as in kube-scheduler.
pub const MAX_SCORE: i64 = 100;

/// Requests used for scoring when a container asks for nothing (kube-scheduler's
/// non-zero defaults: 100m CPU, 200 MiB).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Success,
    /// Might fit after something changes (or after preemption).
    Unschedulable,
    /// Preempting would not help on this node.
    UnschedulableAndUnresolvable,
    Error,
}

/// A plugin's verdict; `reasons` are what `kubectl describe` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn error(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Error,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// One pod-affinity term, parsed once.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub selector: LabelSelector,
    /// Namespaces the term looks at; `None` means all (an empty namespaceSelector).
    pub namespaces: Option<HashSet<String>>,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, own_namespace: &str) -> Option<AffinityTerm> {
        let selector = LabelSelector::from_label_selector(term.label_selector.as_ref()).ok()?;
        let listed: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        // An empty namespaceSelector ({}) selects every namespace. A non-empty one would
        // need namespace labels, which the scheduler does not watch: it is treated like
        // no selector (the listed namespaces, or the pod's own).
        let all = term.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        });
        let namespaces = if all {
            None
        } else if listed.is_empty() {
            Some([own_namespace.to_string()].into())
        } else {
            Some(listed)
        };
        Some(AffinityTerm {
            selector,
            namespaces,
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether `pod` is one the term selects.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|ns| ns.contains(&pod.namespace))
            && self.selector.matches_opt(pod.pod.metadata.labels.as_ref())
    }
}

/// A pod with what the plugins need computed once.
/// A pod's `namespace/name`, what the scheduler's queue and cache know it by.
pub fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub requests: Resources,
    /// Requests with the non-zero defaults, for scoring.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub priority: i32,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i32, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i32, AffinityTerm)>,
    pub host_ports: Vec<HostPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Two host ports collide when protocol and port match and either IP is a wildcard
    /// or they are equal.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == o.port
            && self.protocol == o.protocol
            && (wild(&self.ip) || wild(&o.ip) || self.ip == o.ip)
    }
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = pod_key(&pod);
        let requests = pod_requests(&pod);
        let spec = pod.spec.as_ref();
        let mut non_zero_cpu = 0;
        let mut non_zero_memory = 0;
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            let r = Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
            non_zero_cpu += if r.milli_cpu == 0 {
                DEFAULT_MILLI_CPU
            } else {
                r.milli_cpu
            };
            non_zero_memory += if r.memory == 0 {
                DEFAULT_MEMORY
            } else {
                r.memory
            };
        }
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter_map(|t| AffinityTerm::parse(t, &namespace))
                .collect()
        };
        let preferred =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .filter_map(|w| {
                        AffinityTerm::parse(&w.pod_affinity_term, &namespace).map(|t| (w.weight, t))
                    })
                    .collect::<Vec<_>>()
            };
        let mut host_ports = Vec::new();
        for c in spec
            .map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .into_iter()
            .flatten()
        {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ip: p.host_ip.clone().unwrap_or_default(),
                        port: hp,
                    });
                }
            }
        }
        PodInfo {
            key,
            requests,
            non_zero_cpu,
            non_zero_memory,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            host_ports,
            namespace,
            pod,
        }
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.pod.metadata.labels.as_ref()
    }

    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// A node and the pods on it (bound or assumed), with their totals.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resources,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub used_ports: Vec<HostPort>,
    /// Pods here with any pod-affinity terms, and with required anti-affinity.
    pub affinity_pods: usize,
    pub required_anti_pods: usize,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let allowed_pods = alloc
            .and_then(|a| a.get("pods"))
            .and_then(|q| api::Quantity::parse(&q.0).ok())
            .and_then(|q| q.value().ok())
            .unwrap_or(110);
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: Resources::from_list(alloc),
            allowed_pods,
            node,
            pods: Vec::new(),
            requested: Resources::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            used_ports: Vec::new(),
            affinity_pods: 0,
            required_anti_pods: 0,
        }
    }

    /// Replaces the node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let mut fresh = NodeInfo::new(node);
        fresh.pods = std::mem::take(&mut self.pods);
        fresh.requested = std::mem::take(&mut self.requested);
        fresh.non_zero_cpu = self.non_zero_cpu;
        fresh.non_zero_memory = self.non_zero_memory;
        fresh.used_ports = std::mem::take(&mut self.used_ports);
        fresh.affinity_pods = self.affinity_pods;
        fresh.required_anti_pods = self.required_anti_pods;
        *self = fresh;
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_cpu += p.non_zero_cpu;
        self.non_zero_memory += p.non_zero_memory;
        self.used_ports.extend(p.host_ports.iter().cloned());
        self.affinity_pods += usize::from(p.has_affinity());
        self.required_anti_pods += usize::from(!p.required_anti_affinity.is_empty());
        self.pods.push(p);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_cpu -= p.non_zero_cpu;
        self.non_zero_memory -= p.non_zero_memory;
        self.affinity_pods -= usize::from(p.has_affinity());
        self.required_anti_pods -= usize::from(!p.required_anti_affinity.is_empty());
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        Some(p)
    }
}

/// Per-cycle data plugins compute in pre-filter/pre-score and read in filter/score. A
/// handful of entries, read once per node per plugin: a short list beats hashing.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, v: T) {
        self.data.retain(|(k, _)| *k != key);
        self.data.push((key, Box::new(v)));
    }
    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, b)| b.downcast_ref())
    }
}

/// The nodes a cycle looks at, with cluster-wide counts that let plugins skip work
/// (no pod anywhere has affinity terms: nothing to count).
pub struct Snapshot<'a> {
    nodes: &'a [Arc<NodeInfo>],
    pub affinity_pods: usize,
    pub required_anti_pods: usize,
}

impl<'a> Snapshot<'a> {
    /// With counts the caller keeps up to date (the cache does).
    pub fn with_counts(
        nodes: &'a [Arc<NodeInfo>],
        affinity_pods: usize,
        required_anti_pods: usize,
    ) -> Self {
        Snapshot {
            nodes,
            affinity_pods,
            required_anti_pods,
        }
    }

    /// Counting over the nodes (tests, preemption's what-if views).
    pub fn new(nodes: &'a [Arc<NodeInfo>]) -> Self {
        Snapshot {
            nodes,
            affinity_pods: nodes.iter().map(|n| n.affinity_pods).sum(),
            required_anti_pods: nodes.iter().map(|n| n.required_anti_pods).sum(),
        }
    }
}

impl std::ops::Deref for Snapshot<'_> {
    type Target = [Arc<NodeInfo>];
    fn deref(&self) -> &Self::Target {
        self.nodes
    }
}

pub type Nodes<'a> = &'a Snapshot<'a>;

/// What every plugin has: its name (in statuses, metrics and events).
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
}

pub trait PreFilter: Plugin {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, nodes: Nodes<'_>) -> Status;
}

pub trait Filter: Plugin {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

pub trait Score: Plugin {
    /// Runs once before scoring, over the nodes that passed the filters.
    fn pre_score(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _feasible: &[&NodeInfo],
        _all: Nodes<'_>,
    ) {
    }
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps raw scores into 0..=MAX_SCORE (default: already in range).
    fn normalize(&self, _state: &CycleState, _scores: &mut [i64]) {}
}

/// Scales scores so the highest is MAX_SCORE (or the lowest, when `reverse`).
pub fn normalize_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_SCORE * *s / max;
        *s = if reverse { MAX_SCORE - v } else { v };
    }
}
