//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl sends it
//! for `apply`, `edit`, `cordon` and `set image`: maps merge like a JSON merge patch,
//! lists of objects merge by their merge key (containers by `name`, container ports by
//! `containerPort`, …), primitive lists with a merge strategy are unions, everything
//! else is replaced; plus the directives `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`. No `$` key
//! survives into the result.

use super::meta::{field, ListMerge};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Applies `patch` to `original`, an object whose schema is `ty` (as named in the
/// OpenAPI definitions, e.g. `io.k8s.api.apps.v1.Deployment`; None: no list merges).
pub fn apply(
    defs: &Map<String, Value>,
    ty: Option<&str>,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let mut out = original.clone();
    if !out.is_object() {
        out = Value::Object(Map::new());
    }
    merge_map(defs, ty, &mut out, p, &mut Vec::new())?;
    Ok(out)
}

fn merge_map(
    defs: &Map<String, Value>,
    ty: Option<&str>,
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(strip(patch));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError(format!(
                "unknown patch type {other:?} in $patch"
            )))
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = match patch.get("$retainKeys") {
        None => None,
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
        ),
        Some(_) => return Err(PatchError("$retainKeys must be a list of strings".into())),
    };
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let Some(remove) = value.as_array() else {
                return Err(PatchError(format!("{key} must be a list")));
            };
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue; // $patch, $retainKeys, $setElementOrder/...: handled around here
        }
        let obj = target.as_object_mut().expect("made an object above");
        if value.is_null() {
            obj.remove(key);
            continue;
        }
        path.push(key.clone());
        let (merge, child) = field(defs, ty, key);
        match value {
            Value::Object(pm) => {
                let slot = obj.entry(key.clone()).or_insert(Value::Null);
                merge_map(defs, child, slot, pm, path)?;
                if slot.is_null() {
                    obj.remove(key);
                }
            }
            Value::Array(pl) => {
                let order = patch
                    .get(&format!("$setElementOrder/{key}"))
                    .and_then(Value::as_array);
                let merged = match merge {
                    ListMerge::Replace => {
                        // A list directive can still replace explicitly.
                        pl.iter()
                            .filter(|v| !is_directive(v))
                            .map(strip_value)
                            .collect()
                    }
                    ListMerge::Primitives => {
                        let mut cur = obj
                            .get(key)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for v in pl {
                            if !cur.contains(v) {
                                cur.push(v.clone());
                            }
                        }
                        if let Some(order) = order {
                            sort_like(&mut cur, order, |v| Some(v.clone()));
                        }
                        cur
                    }
                    ListMerge::ByKey(mk) => {
                        let cur = obj
                            .get(key)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        merge_list(defs, child, cur, pl, mk, order, path)?
                    }
                };
                obj.insert(key.clone(), Value::Array(merged));
            }
            other => {
                obj.insert(key.clone(), other.clone());
            }
        }
        path.pop();
    }
    if let Some(keep) = retain {
        if let Some(obj) = target.as_object_mut() {
            obj.retain(|k, _| keep.iter().any(|r| r == k));
        }
    }
    Ok(())
}

fn is_directive(v: &Value) -> bool {
    v.get("$patch").is_some()
}

fn merge_list(
    defs: &Map<String, Value>,
    ty: Option<&str>,
    mut cur: Vec<Value>,
    patch: &[Value],
    key: &str,
    order: Option<&Vec<Value>>,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    if patch
        .iter()
        .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|v| !is_directive(v))
            .map(strip_value)
            .collect());
    }
    for item in patch {
        let Some(obj) = item.as_object() else {
            return Err(PatchError(format!(
                "list {} merges by {key:?} but an element is not an object",
                path.join(".")
            )));
        };
        let Some(id) = obj.get(key) else {
            return Err(PatchError(format!(
                "an element of {} lacks its merge key {key:?}",
                path.join(".")
            )));
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(id));
        match (obj.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                cur.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => merge_map(defs, ty, &mut cur[i], obj, path)?,
            (_, None) => {
                let mut fresh = Value::Object(Map::new());
                merge_map(defs, ty, &mut fresh, obj, path)?;
                cur.push(fresh);
            }
        }
    }
    if let Some(order) = order {
        sort_like(&mut cur, order, |v| v.get(key).cloned());
    }
    Ok(cur)
}

/// Orders `items` as `order` lists them (by `id`); items it does not name keep their
/// relative order after the named ones.
fn sort_like(items: &mut [Value], order: &[Value], id: impl Fn(&Value) -> Option<Value>) {
    let rank = |v: &Value| {
        let own = id(v);
        order
            .iter()
            .position(|o| match (&own, o) {
                (Some(own), Value::Object(m)) => m.values().any(|x| x == own),
                (Some(own), other) => other == own,
                (None, _) => false,
            })
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

fn strip(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

/// The value without any `$` keys, at any depth.
fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
        let defs = crate::openapi::definitions();
        let ty = api::registry::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .and_then(crate::openapi::kind_schema_name);
        super::apply(defs, ty.as_deref(), original, patch)
    }

    fn deployment() -> Value {
        json!({"spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"spec": {"containers": [
                {"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "b", "image": "busybox"}]}}}})
    }

    #[test]
    fn kubectl_style_patch_merges_by_keys_and_follows_directives() {
        // What kubectl apply sends when a container, an env var and the strategy change.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"},
            "template": {"spec": {"$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"$setElementOrder/env": [{"name": "Y"}], "env": [{"$patch": "delete", "name": "X"}],
                    "image": "nginx:2", "name": "a"}, {"$patch": "delete", "name": "b"}]}}}});
        let out = apply("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["env"], json!([{"name": "Y", "value": "2"}]));
        assert_eq!(
            cs[0]["ports"][0]["containerPort"], 80,
            "untouched fields stay"
        );
        assert!(!out.to_string().contains('$'));
    }

    #[test]
    fn new_elements_append_and_lists_without_strategy_replace() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [{"key": "k1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "image": "y"}], "tolerations": [{"key": "k2"}]}});
        let out = apply("Pod", &orig, &patch).unwrap();
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "c"]);
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "k2"}]));
    }

    #[test]
    fn primitive_lists_union_and_delete_from_primitive_list() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = apply(
            "ConfigMap",
            &orig,
            &json!({"metadata": {"finalizers": ["c"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let out = apply(
            "ConfigMap",
            &orig,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn patch_replace_on_maps_and_lists_and_nulls_delete() {
        let orig = json!({"spec": {"selector": {"a": "1", "b": "2"}, "ports": [{"port": 80, "name": "h"}, {"port": 443, "name": "s"}]}, "x": 1});
        let out = apply(
            "Service",
            &orig,
            &json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}, "x": null}),
        )
        .unwrap();
        assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
        assert!(out.get("x").is_none());
        let out = apply(
            "Service",
            &orig,
            &json!({"spec": {"ports": [{"port": 443, "name": "tls"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "h"}, {"port": 443, "name": "tls"}]),
            "service ports merge by port"
        );
        let out = apply(
            "Service",
            &orig,
            &json!({"spec": {"ports": [{"$patch": "replace"}, {"port": 8080}]}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"port": 8080}]));
    }

    #[test]
    fn cordon_and_conditions() {
        let node = json!({"spec": {}, "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}});
        let out = apply("Node", &node, &json!({"spec": {"unschedulable": true}})).unwrap();
        assert_eq!(out["spec"]["unschedulable"], true);
        let out = apply(
            "Node",
            &node,
            &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["status"]["conditions"][0],
            json!({"type": "Ready", "status": "True"})
        );
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_patches_are_errors() {
        assert!(apply("Pod", &json!({}), &json!([1])).is_err());
        assert!(apply(
            "Pod",
            &json!({}),
            &json!({"spec": {"containers": [{"image": "x"}]}})
        )
        .is_err());
        assert!(apply("Pod", &json!({}), &json!({"$patch": "explode"})).is_err());
    }
}
