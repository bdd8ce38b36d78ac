//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic
//! merge patch, applied to the stored object before it goes through the same update
//! path as a PUT.

pub mod meta;
pub mod strategic;

use crate::error::{ApiError, Result};
use serde_json::{json, Value};

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Applies a patch of the given content type to `current` (an object of `kind`).
pub fn apply(kind: &str, patch_type: &str, current: &Value, body: &[u8]) -> Result<Value> {
    let ct = patch_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let ty = api::registry::RESOURCES
                .iter()
                .find(|r| r.kind == kind)
                .and_then(crate::openapi::kind_schema_name);
            strategic::apply(crate::openapi::definitions(), ty.as_deref(), current, &p)
                .map_err(|e| ApiError::bad_request(e.0))
        }
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut out = current.clone();
            merge_patch(&mut out, &p);
            Ok(out)
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            let mut out = current.clone();
            json_patch::patch(&mut out, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })?;
            Ok(out)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Whether a patch sets `metadata.resourceVersion` itself (then a concurrent change
/// is a conflict; otherwise the patch applies to whatever is current).
fn pins_resource_version(patch_type: &str, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if patch_type.starts_with("application/json-patch+json") {
        v.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["path"] == "/metadata/resourceVersion")
        })
    } else {
        !v["metadata"]["resourceVersion"].is_null()
    }
}

/// The object a PATCH asks for: the patch applied to `current`, with the stored
/// resourceVersion dropped unless the patch pins one.
pub fn patched(kind: &str, patch_type: &str, current: &Value, body: &[u8]) -> Result<Value> {
    let mut out = apply(kind, patch_type, current, body)?;
    if !pins_resource_version(patch_type, body) {
        if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_patch_that_sets_the_resource_version_pins_it() {
        let cur = json!({"metadata": {"name": "a", "resourceVersion": "5"}});
        let free = patched(
            "ConfigMap",
            "application/merge-patch+json",
            &cur,
            br#"{"data":{"a":"b"}}"#,
        )
        .unwrap();
        assert!(free["metadata"]["resourceVersion"].is_null());
        let pinned = patched(
            "ConfigMap",
            "application/merge-patch+json",
            &cur,
            br#"{"metadata":{"resourceVersion":"4"}}"#,
        )
        .unwrap();
        assert_eq!(pinned["metadata"]["resourceVersion"], "4");
        let jp = br#"[{"op":"test","path":"/metadata/resourceVersion","value":"5"}]"#;
        let pinned = patched("ConfigMap", "application/json-patch+json", &cur, jp).unwrap();
        assert_eq!(pinned["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }
}
