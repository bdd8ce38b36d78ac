//! ResourceQuota accounting, the one place the apiserver's quota admission and the
//! controller-manager's `resourcequota` controller take it from, so both count alike:
//! what an object uses of a quota's resources (Kubernetes' evaluators for pods,
//! services, claims, and `count/<resource>.<group>` for every namespaced kind), which
//! quotas' scopes cover an object, what a quota refuses, and amounts as quantity text.
//!
//! Amounts are integers in milli-units, so CPU's `100m` and memory's bytes share one
//! type and add exactly.

use crate::quantity::{Format, Quantity};
use crate::registry::ResourceInfo;
use crate::scheduling::{pod_requests, Resources};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, ResourceQuotaSpec, ScopedResourceSelectorRequirement,
    Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use std::collections::BTreeMap;

/// Amounts by resource name (`pods`, `requests.cpu`, `count/deployments.apps`, …), in
/// milli-units.
pub type Usage = BTreeMap<String, i64>;

const ONE: i64 = 1000;

/// The resource names counting one object of `info`'s kind: `count/<resource>[.<group>]`
/// and, for the kinds quota knew before object counts, the plain name (`pods`,
/// `services`, `configmaps`, …).
fn count_names(info: &ResourceInfo) -> Vec<String> {
    let mut names = vec![if info.group.is_empty() {
        format!("count/{}", info.resource)
    } else {
        format!("count/{}.{}", info.resource, info.group)
    }];
    if info.group.is_empty()
        && matches!(
            info.resource,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "resourcequotas"
                | "replicationcontrollers"
        )
    {
        names.push(info.resource.to_string());
    }
    names
}

/// Whether quota charges for this pod at `now`: not once it is terminal, nor once it is
/// stuck terminating past its grace period (a lost node must not block new pods).
pub fn pod_counts(pod: &Pod, now: jiff::Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    let meta = &pod.metadata;
    match (&meta.deletion_timestamp, meta.deletion_grace_period_seconds) {
        (Some(at), Some(grace)) => now <= at.0 + jiff::SignedDuration::from_secs(grace),
        _ => true,
    }
}

fn add_resources(u: &mut Usage, prefix: &str, r: &Resources, alias: bool) {
    let mut put = |name: &str, v: i64| {
        if v != 0 {
            u.insert(format!("{prefix}.{name}"), v);
            if alias {
                u.insert(name.to_string(), v);
            }
        }
    };
    put("cpu", r.milli_cpu);
    put("memory", r.memory.saturating_mul(ONE));
    put("ephemeral-storage", r.ephemeral_storage.saturating_mul(ONE));
    for (k, v) in &r.scalar {
        // Extended resources are only ever quota'd as requests (`requests.nvidia.com/gpu`).
        if prefix == "requests" && !k.starts_with("hugepages-") {
            u.insert(format!("requests.{k}"), v.saturating_mul(ONE));
        }
    }
}

/// A pod's limits, summed over its containers as its requests are (the larger of that
/// and its largest init container).
fn pod_limits(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let limits =
        |c: &Container| Resources::from_list(c.resources.as_ref().and_then(|r| r.limits.as_ref()));
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&limits(c));
    }
    for c in spec.init_containers.iter().flatten() {
        sum.max_with(&limits(c));
    }
    sum
}

/// What a pod uses: one pod, and its requests and limits (a pod quota no longer charges
/// uses nothing).
pub fn pod_usage(info: &ResourceInfo, pod: &Pod, now: jiff::Timestamp) -> Usage {
    let mut u = Usage::new();
    if !pod_counts(pod, now) {
        return u;
    }
    for n in count_names(info) {
        u.insert(n, ONE);
    }
    add_resources(&mut u, "requests", &pod_requests(pod), true);
    add_resources(&mut u, "limits", &pod_limits(pod), false);
    u
}

fn service_usage(info: &ResourceInfo, svc: &Service) -> Usage {
    let mut u: Usage = count_names(info).into_iter().map(|n| (n, ONE)).collect();
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len) as i64;
    match spec.and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => {
            u.insert("services.nodeports".into(), ports * ONE);
        }
        Some("LoadBalancer") => {
            u.insert("services.loadbalancers".into(), ONE);
            if spec.and_then(|s| s.allocate_load_balancer_node_ports) != Some(false) {
                u.insert("services.nodeports".into(), ports * ONE);
            }
        }
        _ => {}
    }
    u
}

fn claim_usage(info: &ResourceInfo, claim: &PersistentVolumeClaim) -> Usage {
    let mut u: Usage = count_names(info).into_iter().map(|n| (n, ONE)).collect();
    let spec = claim.spec.as_ref();
    let class = spec
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("");
    if !class.is_empty() {
        u.insert(
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            ONE,
        );
    }
    let storage = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .and_then(|q| q.to_milli().ok())
        .unwrap_or(0);
    if storage > 0 {
        u.insert("requests.storage".into(), storage);
        if !class.is_empty() {
            u.insert(
                format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                storage,
            );
        }
    }
    u
}

/// What an object of `info`'s kind uses (an object that does not decode counts as one
/// object, as its kind's count does).
pub fn usage(info: &ResourceInfo, obj: &serde_json::Value, now: jiff::Timestamp) -> Usage {
    fn decode<T: serde::de::DeserializeOwned>(o: &serde_json::Value) -> Option<T> {
        serde_json::from_value(o.clone()).ok()
    }
    match (info.group, info.resource) {
        ("", "pods") => {
            if let Some(pod) = decode(obj) {
                return pod_usage(info, &pod, now);
            }
        }
        ("", "services") => {
            if let Some(svc) = decode(obj) {
                return service_usage(info, &svc);
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(claim) = decode(obj) {
                return claim_usage(info, &claim);
            }
        }
        _ => {}
    }
    count_names(info).into_iter().map(|n| (n, ONE)).collect()
}

/// Whether a quota of `spec`'s scopes covers an object: `pod` for a pod, None for any
/// other kind. Scopes select pods only: a quota with any scope covers no other kind (as
/// Kubernetes' object-count evaluators match no scope).
pub fn covers(spec: &ResourceQuotaSpec, pod: Option<&Pod>) -> bool {
    let scopes = spec.scopes.as_deref().unwrap_or_default();
    let selector = spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_deref())
        .unwrap_or_default();
    if scopes.is_empty() && selector.is_empty() {
        return true;
    }
    let Some(pod) = pod else {
        return false;
    };
    scopes.iter().all(|s| scope_matches(s, None, pod))
        && selector
            .iter()
            .all(|r| scope_matches(&r.scope_name, Some(r), pod))
}

fn best_effort(pod: &Pod) -> bool {
    let empty = |m: Option<&BTreeMap<String, Q>>| {
        m.is_none_or(|m| !m.contains_key("cpu") && !m.contains_key("memory"))
    };
    let spec = pod.spec.as_ref();
    let all = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    all.into_iter().all(|c| {
        let r = c.resources.as_ref();
        empty(r.and_then(|r| r.requests.as_ref())) && empty(r.and_then(|r| r.limits.as_ref()))
    })
}

fn scope_matches(scope: &str, req: Option<&ScopedResourceSelectorRequirement>, pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let terminating = spec.and_then(|s| s.active_deadline_seconds).is_some();
    let yes = match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = spec.and_then(|s| s.priority_class_name.as_deref());
            return match req {
                None => class.is_some_and(|c| !c.is_empty()),
                Some(r) => {
                    let values = r.values.as_deref().unwrap_or_default();
                    let class = class.unwrap_or("");
                    match r.operator.as_str() {
                        "In" => values.iter().any(|v| v == class),
                        "NotIn" => !values.iter().any(|v| v == class),
                        "Exists" => !class.is_empty(),
                        "DoesNotExist" => class.is_empty(),
                        _ => false,
                    }
                }
            };
        }
        _ => return false,
    };
    // The boolean scopes in a selector take Exists (or In/NotIn with no values).
    match req.map(|r| r.operator.as_str()) {
        Some("DoesNotExist" | "NotIn") => !yes,
        _ => yes,
    }
}

/// An amount as parsed from a quota's `hard` (or `used`) list; 0 for a malformed one
/// (the apiserver refuses those on write).
pub fn amount(q: &Q) -> i64 {
    Quantity::parse(&q.0)
        .and_then(|q| q.to_milli())
        .unwrap_or(0)
}

/// Parses a whole resource list.
pub fn amounts(list: Option<&BTreeMap<String, Q>>) -> Usage {
    list.into_iter()
        .flatten()
        .map(|(k, q)| (k.clone(), amount(q)))
        .collect()
}

/// An amount as Kubernetes prints it: `500m` or `2` for CPU, `1Gi` for whole binary
/// multiples of memory and storage, plain numbers otherwise.
pub fn format(resource: &str, milli: i64) -> String {
    let cpu = resource == "cpu" || resource.ends_with(".cpu");
    let binary = !cpu && milli % ONE == 0 && (milli / ONE) % 1024 == 0;
    let format = if binary {
        Format::BinarySI
    } else {
        Format::DecimalSI
    };
    Quantity::from_milli(milli, format).to_string()
}

/// Formats a usage as a resource list.
pub fn to_list(u: &Usage) -> BTreeMap<String, Q> {
    u.iter()
        .map(|(k, v)| (k.clone(), Q(format(k, *v))))
        .collect()
}

/// What a quota with `hard` limits and `used` so far refuses of an object using `delta`:
/// Kubernetes' "exceeded quota" text (`requested: pods=1, used: pods=2, limited:
/// pods=2`), or None if it fits.
pub fn exceeded(hard: &Usage, used: &Usage, delta: &Usage) -> Option<String> {
    let over: Vec<(&String, i64, i64, i64)> = delta
        .iter()
        .filter_map(|(k, d)| {
            let h = *hard.get(k)?;
            let u = used.get(k).copied().unwrap_or(0);
            (*d > 0 && u.saturating_add(*d) > h).then_some((k, *d, u, h))
        })
        .collect();
    if over.is_empty() {
        return None;
    }
    let list = |pick: fn(&(&String, i64, i64, i64)) -> i64| {
        over.iter()
            .map(|o| format!("{}={}", o.0, format(o.0, pick(o))))
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(format!(
        "requested: {}, used: {}, limited: {}",
        list(|o| o.1),
        list(|o| o.2),
        list(|o| o.3)
    ))
}

/// The compute resources a quota limits that a pod's containers must then state, as
/// Kubernetes' "must specify" text (`limits.cpu for: web; requests.memory for: web`), or
/// None when every container states them.
pub fn must_specify(hard: &Usage, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    let mut missing = Vec::new();
    for (names, list, res) in [
        (&["requests.cpu", "cpu"][..], "requests", "cpu"),
        (&["requests.memory", "memory"][..], "requests", "memory"),
        (&["limits.cpu"][..], "limits", "cpu"),
        (&["limits.memory"][..], "limits", "memory"),
    ] {
        let Some(name) = names.iter().find(|n| hard.contains_key(**n)) else {
            continue;
        };
        let without: Vec<&str> = containers
            .iter()
            .filter(|c| {
                let r = c.resources.as_ref();
                let l = if list == "requests" {
                    r.and_then(|r| r.requests.as_ref())
                } else {
                    r.and_then(|r| r.limits.as_ref())
                };
                !l.is_some_and(|l| l.contains_key(res))
            })
            .map(|c| c.name.as_str())
            .collect();
        if !without.is_empty() {
            missing.push(format!("{name} for: {}", without.join(",")));
        }
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(resource: &str) -> &'static ResourceInfo {
        let group = match resource {
            "deployments" => "apps",
            _ => "",
        };
        crate::registry::by_resource(group, "v1", resource).unwrap()
    }

    fn pod(v: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "p"}, "spec": v})
    }

    #[test]
    fn a_pod_uses_one_pod_and_its_requests_and_limits() {
        let now = jiff::Timestamp::now();
        let p = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi", "nvidia.com/gpu": "1"}}}]}));
        let u = usage(info("pods"), &p, now);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(format("requests.cpu", u["requests.cpu"]), "500m");
        assert_eq!(u["cpu"], u["requests.cpu"]);
        assert_eq!(format("requests.memory", u["requests.memory"]), "128Mi");
        assert_eq!(format("limits.cpu", u["limits.cpu"]), "1");
        assert_eq!(format("limits.memory", u["limits.memory"]), "128Mi");
        assert_eq!(u["requests.nvidia.com/gpu"], 1000);
        let mut done = p.clone();
        done["status"] = json!({"phase": "Succeeded"});
        assert!(usage(info("pods"), &done, now).is_empty());
        let mut stuck = p.clone();
        stuck["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        stuck["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert!(usage(info("pods"), &stuck, now).is_empty());
    }

    #[test]
    fn other_kinds_count_as_objects_services_by_ports_claims_by_storage() {
        let now = jiff::Timestamp::now();
        let d = usage(
            info("deployments"),
            &json!({"metadata": {"name": "d"}}),
            now,
        );
        assert_eq!(d, Usage::from([("count/deployments.apps".into(), 1000)]));
        let s = usage(
            info("services"),
            &json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}}),
            now,
        );
        assert_eq!(s["services"], 1000);
        assert_eq!(s["services.nodeports"], 2000);
        let c = usage(
            info("persistentvolumeclaims"),
            &json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}}),
            now,
        );
        assert_eq!(c["persistentvolumeclaims"], 1000);
        assert_eq!(format("requests.storage", c["requests.storage"]), "1Gi");
        assert_eq!(
            c["fast.storageclass.storage.k8s.io/requests.storage"],
            c["requests.storage"]
        );
    }

    #[test]
    fn scopes_select_pods_only() {
        let spec =
            |v: serde_json::Value| -> ResourceQuotaSpec { serde_json::from_value(v).unwrap() };
        let typed = |v: serde_json::Value| -> Pod { serde_json::from_value(pod(v)).unwrap() };
        let best = typed(json!({"containers": [{"name": "a"}]}));
        let burst = typed(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}], "priorityClassName": "high"}),
        );
        let be = spec(json!({"scopes": ["BestEffort"]}));
        assert!(covers(&be, Some(&best)));
        assert!(!covers(&be, Some(&burst)));
        assert!(!covers(&be, None));
        let high = spec(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}));
        assert!(covers(&high, Some(&burst)));
        assert!(!covers(&high, Some(&best)));
        assert!(covers(&spec(json!({})), None));
    }

    #[test]
    fn refusals_read_as_kubernetes_writes_them() {
        let hard = Usage::from([("pods".into(), 2000), ("limits.memory".into(), 2 << 40)]);
        let used = Usage::from([("pods".into(), 2000)]);
        let delta = Usage::from([("pods".into(), 1000), ("requests.cpu".into(), 100)]);
        assert_eq!(
            exceeded(&hard, &used, &delta).unwrap(),
            "requested: pods=1, used: pods=2, limited: pods=2"
        );
        assert!(exceeded(&hard, &Usage::new(), &delta).is_none());
        let p: Pod = serde_json::from_value(pod(json!({"containers": [
            {"name": "web", "resources": {"limits": {"cpu": "1"}}}, {"name": "side"}]})))
        .unwrap();
        assert_eq!(
            must_specify(&hard, &p).unwrap(),
            "limits.memory for: web,side"
        );
    }
}
