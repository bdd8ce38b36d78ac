//! Pod-to-node rules several components apply the same way: taints and tolerations,
//! node selectors and required node affinity, and a pod's resource requests. The
//! scheduler filters with them; the daemonset and node-lifecycle controllers decide with
//! them, so they live here once.

use crate::labels::{Operator, Requirement};
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, ResourceRequirements, Taint, Toleration,
};
use std::collections::BTreeMap;

/// Whether `t` tolerates `taint` (Kubernetes' `ToleratesTaint`): same effect (or any when
/// empty), and the key matches with `Exists` (an empty key with `Exists` matches every
/// taint) or `Equal` and the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => {
            key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first of `taints` with one of `effects` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

fn node_requirement(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let op = match r.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        _ => return None,
    };
    Requirement::new(&r.key, op, r.values.iter().flatten().cloned()).ok()
}

/// Whether a node selector term matches (all its expressions on the labels, all its field
/// expressions on `metadata.name`). An empty term matches nothing, as in Kubernetes.
pub fn term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let fields_map: BTreeMap<String, String> =
        [("metadata.name".to_string(), node_name.to_string())].into();
    exprs
        .iter()
        .all(|e| node_requirement(e).is_some_and(|r| r.matches(labels)))
        && fields.iter().all(|e| {
            e.key == "metadata.name" && node_requirement(e).is_some_and(|r| r.matches(&fields_map))
        })
}

fn labels_of(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// `spec.nodeSelector` and required node affinity (any of the terms) both hold.
pub fn matches_node_selector_and_affinity(pod: &Pod, node: &Node) -> bool {
    let labels = labels_of(node);
    let spec = match &pod.spec {
        Some(s) => s,
        None => return true,
    };
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            sel.node_selector_terms
                .iter()
                .any(|t| term_matches(t, name, labels))
        }
    }
}

/// Resource amounts: CPU in millicores, everything else in base units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (`nvidia.com/gpu`, hugepages, …).
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parses a resource list (a container's requests, a node's allocatable).
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = q.to_milli().unwrap_or(i64::MAX),
                "memory" => r.memory = q.value().unwrap_or(i64::MAX),
                "ephemeral-storage" => r.ephemeral_storage = q.value().unwrap_or(i64::MAX),
                "pods" => {}
                other => {
                    r.scalar
                        .insert(other.to_string(), q.value().unwrap_or(i64::MAX));
                }
            }
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each amount the larger of the two.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

fn requests(r: Option<&ResourceRequirements>) -> Resources {
    Resources::from_list(r.and_then(|r| r.requests.as_ref()))
}

/// A pod's effective requests (Kubernetes' `PodRequests`): the sum over its containers,
/// at least the largest init container (restartable "sidecar" init containers add to
/// both, since they keep running), plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&requests(c.resources.as_ref()));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = requests(c.resources.as_ref());
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            init_max.max_with(&during);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    sum.add(&Resources::from_list(spec.overhead.as_ref()));
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        serde_json::from_value(json!({"key": key, "value": value, "effect": effect})).unwrap()
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        let cases = [
            (
                json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
                true,
            ),
            (
                json!({"key": "dedicated", "operator": "Equal", "value": "cpu"}),
                false,
            ),
            (json!({"key": "dedicated", "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "other", "operator": "Exists"}), false),
        ];
        for (v, want) in cases {
            assert_eq!(tolerates(&tol(v.clone()), &t), want, "{v}");
        }
        let taints = vec![taint("a", "", "PreferNoSchedule"), t.clone()];
        assert_eq!(
            untolerated(&taints, &[], &["NoSchedule", "NoExecute"])
                .unwrap()
                .key,
            "dedicated"
        );
        assert!(untolerated(
            &taints,
            &[tol(json!({"operator": "Exists"}))],
            &["NoSchedule"]
        )
        .is_none());
    }

    #[test]
    fn selectors_and_required_affinity() {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}}}),
        )
        .unwrap();
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"spec": spec})).unwrap()
        };
        let term = |e: serde_json::Value| json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [e]}}}});
        let cases = [
            (
                json!({"containers": [], "nodeSelector": {"zone": "a"}}),
                true,
            ),
            (
                json!({"containers": [], "nodeSelector": {"zone": "b"}}),
                false,
            ),
            (
                term(
                    json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}),
                ),
                true,
            ),
            (
                term(
                    json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}),
                ),
                true,
            ),
            (
                term(
                    json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}),
                ),
                false,
            ),
            (
                term(json!({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]})),
                true,
            ),
            (
                term(
                    json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
                ),
                true,
            ),
            (
                term(
                    json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}),
                ),
                false,
            ),
            (term(json!({})), false),
        ];
        for (spec, want) in cases {
            assert_eq!(
                matches_node_selector_and_affinity(&pod(spec.clone()), &node),
                want,
                "{spec}"
            );
        }
    }

    #[test]
    fn pod_requests_follow_init_and_overhead_rules() {
        let pod: Pod = serde_json::from_value(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "nvidia.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "500m", "memory": "32Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }}))
        .unwrap();
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 510);
        assert_eq!(r.memory, 64 << 20);
        assert_eq!(r.scalar["nvidia.com/gpu"], 1);
    }
}
