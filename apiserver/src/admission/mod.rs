//! Admission: what happens to an object between the request body and storage —
//! decoding into its typed form (unknown fields dropped, wrong types refused), the
//! defaults the real API applies, and validation with field causes.
//!
//! Must not: touch storage. Everything here is a pure function of the objects.

pub mod defaults;
pub mod limits;
pub mod plugins;
pub mod podsecurity;
pub mod serviceaccount;
pub mod validation;

use crate::error::ApiError;
use api::ResourceInfo;
use serde_json::Value;

/// What can be done with the Rust type of a served kind (see `with_kind`).
pub trait KindFn {
    type Out;
    fn call<T: Kind>(self, info: &ResourceInfo) -> Self::Out;
}

/// A served kind's `k8s-openapi` type: decodable, encodable, and with a schema.
pub trait Kind:
    serde::de::DeserializeOwned + serde::Serialize + api::k8s_openapi::schemars::JsonSchema
{
}
impl<T> Kind for T where
    T: serde::de::DeserializeOwned + serde::Serialize + api::k8s_openapi::schemars::JsonSchema
{
}

/// Calls `f` with the type of `info`'s kind; None for a kind without one.
pub fn with_kind<F: KindFn>(info: &ResourceInfo, f: F) -> Option<F::Out> {
    macro_rules! kinds {
        ($($group:literal $kind:literal => $ty:ty),* $(,)?) => {
            match (info.group, info.kind) {
                $(($group, $kind) => Some(f.call::<$ty>(info)),)*
                _ => None,
            }
        };
    }
    use api::k8s_openapi::api::*;
    kinds! {
        "" "Namespace" => core::v1::Namespace,
        "" "Pod" => core::v1::Pod,
        "" "Node" => core::v1::Node,
        "" "Service" => core::v1::Service,
        "" "Endpoints" => core::v1::Endpoints,
        "" "ConfigMap" => core::v1::ConfigMap,
        "" "Secret" => core::v1::Secret,
        "" "Event" => core::v1::Event,
        "" "ServiceAccount" => core::v1::ServiceAccount,
        "" "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "" "PersistentVolume" => core::v1::PersistentVolume,
        "" "ResourceQuota" => core::v1::ResourceQuota,
        "" "LimitRange" => core::v1::LimitRange,
        "" "PodTemplate" => core::v1::PodTemplate,
        "apps" "ControllerRevision" => apps::v1::ControllerRevision,
        "autoscaling" "HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "networking.k8s.io" "Ingress" => networking::v1::Ingress,
        "networking.k8s.io" "IngressClass" => networking::v1::IngressClass,
        "networking.k8s.io" "NetworkPolicy" => networking::v1::NetworkPolicy,
        "storage.k8s.io" "StorageClass" => storage::v1::StorageClass,
        "storage.k8s.io" "CSIDriver" => storage::v1::CSIDriver,
        "storage.k8s.io" "CSINode" => storage::v1::CSINode,
        "storage.k8s.io" "VolumeAttachment" => storage::v1::VolumeAttachment,
        "scheduling.k8s.io" "PriorityClass" => scheduling::v1::PriorityClass,
        "node.k8s.io" "RuntimeClass" => node::v1::RuntimeClass,
        "apps" "Deployment" => apps::v1::Deployment,
        "apps" "ReplicaSet" => apps::v1::ReplicaSet,
        "apps" "DaemonSet" => apps::v1::DaemonSet,
        "apps" "StatefulSet" => apps::v1::StatefulSet,
        "batch" "Job" => batch::v1::Job,
        "batch" "CronJob" => batch::v1::CronJob,
        "coordination.k8s.io" "Lease" => coordination::v1::Lease,
        "discovery.k8s.io" "EndpointSlice" => discovery::v1::EndpointSlice,
        "policy" "PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "rbac.authorization.k8s.io" "Role" => rbac::v1::Role,
        "rbac.authorization.k8s.io" "ClusterRole" => rbac::v1::ClusterRole,
        "rbac.authorization.k8s.io" "RoleBinding" => rbac::v1::RoleBinding,
        "rbac.authorization.k8s.io" "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
    }
}

struct Roundtrip(Value);

impl KindFn for Roundtrip {
    type Out = Result<Value, ApiError>;
    fn call<T: Kind>(self, info: &ResourceInfo) -> Self::Out {
        let typed: T = serde_json::from_value(self.0).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
                kind = info.kind,
                version = info.version
            ))
        })?;
        serde_json::to_value(&typed).map_err(ApiError::internal)
    }
}

/// Round-trips `value` through the kind's `k8s-openapi` type, as the real apiserver's
/// decoder does: fields the type does not have are dropped, fields of the wrong shape
/// are a 400.
pub fn normalize(info: &ResourceInfo, value: Value) -> Result<Value, ApiError> {
    let fallback = value.clone();
    with_kind(info, Roundtrip(value)).unwrap_or(Ok(fallback))
}

/// Dotted paths of fields in `input` that the kind does not have (what
/// `fieldValidation=Strict` refuses and `Warn` reports).
pub fn unknown_fields(info: &ResourceInfo, input: &Value) -> Vec<String> {
    let Ok(known) = normalize(info, input.clone()) else {
        return Vec::new(); // the decode error itself is reported by the write
    };
    let mut out = Vec::new();
    diff_fields(input, &known, "", &mut out);
    out
}

fn diff_fields(input: &Value, known: &Value, prefix: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff_fields(v, kv, &path, out),
                    None if v.is_null() => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                diff_fields(iv, kv, &format!("{prefix}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// `fieldValidation`: what to do about unknown fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    /// Checks `body` (the object as sent, or as a patch produced it): an error when
    /// strict, otherwise the warnings to send back.
    pub fn check(self, info: &ResourceInfo, body: &Value) -> Result<Vec<String>, ApiError> {
        if self == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        let unknown = unknown_fields(info, body);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        if self == FieldValidation::Strict {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                list.join(", "),
                kind = info.kind,
                version = info.version
            )));
        }
        Ok(list)
    }
}

/// Checks (and fills in when absent) `apiVersion` and `kind` against the endpoint.
pub fn check_type(info: &ResourceInfo, body: &mut Value) -> Result<(), ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = info.api_version();
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), Value::String(info.kind.into()));
        }
        Some(k) if k == info.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind of the body ({k}) does not match the endpoint's kind ({})",
                info.kind
            )))
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), Value::String(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_dropped_and_wrong_types_refused() {
        let info = api::registry::by_resource("apps", "v1", "deployments").unwrap();
        let v = normalize(
            info,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}, "bogus": 1, "spec": {"replicas": 2}}),
        )
        .unwrap();
        assert!(v.get("bogus").is_none());
        assert_eq!(v["spec"]["replicas"], 2);
        let e = normalize(
            info,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "two"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("cannot be handled as a Deployment"),
            "{}",
            e.message
        );
    }

    #[test]
    fn strict_field_validation_names_unknown_fields() {
        let info = api::registry::by_resource("apps", "v1", "deployments").unwrap();
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "bogus": 1},
            "spec": {"replicas": 1, "extra": true, "template": {"spec": {"containers": [{"name": "c", "image": "x", "nope": 2}]}}}});
        let unknown = unknown_fields(info, &body);
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.extra",
                "spec.template.spec.containers[0].nope"
            ]
        );
        let e = FieldValidation::Strict.check(info, &body).unwrap_err();
        assert!(
            e.message
                .contains("strict decoding error: unknown field \"metadata.bogus\""),
            "{}",
            e.message
        );
        assert_eq!(FieldValidation::Warn.check(info, &body).unwrap().len(), 3);
        assert!(FieldValidation::Ignore
            .check(info, &body)
            .unwrap()
            .is_empty());
        assert!(FieldValidation::parse(Some("Loose")).is_err());
    }

    #[test]
    fn kind_mismatch_is_a_bad_request() {
        let info = api::registry::by_resource("", "v1", "pods").unwrap();
        let mut body = json!({"kind": "Service"});
        assert_eq!(check_type(info, &mut body).unwrap_err().code, 400);
        let mut body = json!({});
        check_type(info, &mut body).unwrap();
        assert_eq!(body["apiVersion"], "v1");
    }
}
