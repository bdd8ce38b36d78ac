//! Patch metadata: which list fields merge and by which key, as the Kubernetes types
//! declare with `patchStrategy`/`patchMergeKey`. Written into the OpenAPI schemas
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`), where kubectl reads
//! it to compute patches, and read back from there by the server to apply them — one
//! table for both sides.

use serde_json::{Map, Value};

/// (schema, field, strategy, merge key)
const PATCH_META: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
];

/// Writes the table into the schemas' properties.
pub fn annotate(defs: &mut Map<String, Value>) {
    for (ty, field, strategy, key) in PATCH_META {
        let Some(prop) = defs
            .get_mut(*ty)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        prop.insert(
            "x-kubernetes-patch-strategy".into(),
            Value::String(strategy.to_string()),
        );
        if !key.is_empty() {
            prop.insert(
                "x-kubernetes-patch-merge-key".into(),
                Value::String(key.to_string()),
            );
        }
    }
}

/// How a list merges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListMerge<'a> {
    /// Replaced whole (no strategy).
    Replace,
    /// Objects merged by this key.
    ByKey(&'a str),
    /// A set of primitives (union).
    Primitives,
}

/// What the schemas say about `field` of the type named `ty`: how it merges if it is a
/// list, and the type name of its value (or of its items).
pub fn field<'a>(
    defs: &'a Map<String, Value>,
    ty: Option<&str>,
    field: &str,
) -> (ListMerge<'a>, Option<&'a str>) {
    let Some(prop) = ty
        .and_then(|t| defs.get(t))
        .map(|d| &d["properties"][field])
    else {
        return (ListMerge::Replace, None);
    };
    let child = crate::openapi::ref_name(prop);
    let merges = prop["x-kubernetes-patch-strategy"]
        .as_str()
        .is_some_and(|s| s.split(',').any(|p| p == "merge"));
    let merge = match (merges, prop["x-kubernetes-patch-merge-key"].as_str()) {
        (true, Some(k)) => ListMerge::ByKey(k),
        (true, None) => ListMerge::Primitives,
        _ => ListMerge::Replace,
    };
    (merge, child)
}
