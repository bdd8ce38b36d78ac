//! Field management: `metadata.managedFields` and server-side apply
//! (`application/apply-patch+yaml`).
//!
//! Every write records which manager set which fields (`FieldsV1`: `f:<field>`,
//! `k:{<merge key>}` for list items merged by key, `v:<value>` for set members, `.` for
//! an item itself). An apply makes the applied configuration the manager's whole intent:
//! fields it applied before and no longer does are removed unless another manager owns
//! them, and fields another manager owns with a different value are conflicts (409
//! `FieldManagerConflict`) unless forced, which moves their ownership.

use crate::error::{ApiError, Cause, Result};
use crate::patch::meta::{field, ListMerge};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

type Path = Vec<String>;
type FieldSet = BTreeSet<Path>;

/// Fields nobody manages: identity and server-owned metadata.
const UNMANAGED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

fn item_key(key: &str, item: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), item[key].clone());
    format!("k:{}", Value::Object(m))
}

/// The leaf paths `v` sets, under `prefix`.
fn walk(
    defs: &Map<String, Value>,
    ty: Option<&str>,
    v: &Value,
    prefix: &mut Path,
    out: &mut FieldSet,
) {
    let Value::Object(m) = v else { return };
    for (k, val) in m {
        if val.is_null() {
            continue;
        }
        if prefix.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if prefix.len() == 1 && prefix[0] == "f:metadata" && UNMANAGED_META.contains(&k.as_str()) {
            continue;
        }
        let (merge, child) = field(defs, ty, k);
        prefix.push(format!("f:{k}"));
        match val {
            Value::Object(inner) if !inner.is_empty() => walk(defs, child, val, prefix, out),
            Value::Array(items) => match merge {
                ListMerge::ByKey(key) => {
                    for item in items {
                        prefix.push(item_key(key, item));
                        prefix.push(".".into());
                        out.insert(prefix.clone());
                        prefix.pop();
                        walk(defs, child, item, prefix, out);
                        prefix.pop();
                    }
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                }
                ListMerge::Primitives => {
                    for item in items {
                        prefix.push(format!("v:{item}"));
                        out.insert(prefix.clone());
                        prefix.pop();
                    }
                }
                ListMerge::Replace => {
                    out.insert(prefix.clone());
                }
            },
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

fn fields_of(defs: &Map<String, Value>, ty: Option<&str>, v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(defs, ty, v, &mut Vec::new(), &mut out);
    out
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for el in path {
            node = node
                .entry(el.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fields are objects");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Value::Object(m) = v else { return };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, child) in m {
        prefix.push(k.clone());
        from_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = FieldSet::new();
            from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            Entry {
                manager: e["manager"].as_str().unwrap_or("").to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                time: e["time"].as_str().unwrap_or("").to_string(),
                subresource: e["subresource"].as_str().unwrap_or("").to_string(),
                fields,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, list: &[Entry]) {
    let out: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if out.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(out));
        }
    }
}

/// The value a path names in an object (for `.`: the list item itself).
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = if let Some(f) = el.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?
                .iter()
                .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?
        } else if let Some(v) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|x| **x == want)?
        } else {
            cur // "."
        };
    }
    Some(cur)
}

/// Removes what a path names from an object.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        // Remove the list item the parent path names.
        let Some((item, list_path)) = parent.split_last() else {
            return;
        };
        let Some(k) = item.strip_prefix("k:") else {
            return;
        };
        let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
            return;
        };
        if let Some(Value::Array(list)) = value_mut(obj, list_path) {
            list.retain(|it| !key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)));
        }
        return;
    }
    let Some(container) = value_mut(obj, parent) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = container.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(want), Some(list)) = (serde_json::from_str::<Value>(v), container.as_array_mut())
        {
            list.retain(|x| *x != want);
        }
    }
}

fn value_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for el in path {
        cur = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)?
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?
        } else {
            cur
        };
    }
    Some(cur)
}

/// Merges an applied configuration into an object: maps by key, keyed lists by item,
/// sets by union, everything else replaced.
fn merge_applied(defs: &Map<String, Value>, ty: Option<&str>, target: &mut Value, applied: &Value) {
    let Value::Object(a) = applied else {
        *target = applied.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in a {
        if v.is_null() {
            continue;
        }
        let (merge, child) = field(defs, ty, k);
        match (v, merge) {
            (Value::Object(_), _) => {
                merge_applied(defs, child, t.entry(k.clone()).or_insert(Value::Null), v)
            }
            (Value::Array(items), ListMerge::ByKey(key)) => {
                let list = t.entry(k.clone()).or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                let list = list.as_array_mut().expect("array");
                for item in items {
                    match list.iter_mut().find(|x| x.get(key) == item.get(key)) {
                        Some(existing) => merge_applied(defs, child, existing, item),
                        None => list.push(item.clone()),
                    }
                }
            }
            (Value::Array(items), ListMerge::Primitives) => {
                let list = t.entry(k.clone()).or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Server-side apply of `applied` by `manager` to `current` (None: the object does not
/// exist yet). Returns the object to store, managedFields included.
pub fn apply(
    kind_type: Option<&str>,
    api_version: &str,
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value> {
    let defs = crate::openapi::definitions();
    let mut applied = applied.clone();
    if let Some(o) = applied.as_object_mut() {
        o.remove("status"); // the main resource ignores status
    }
    let wanted = fields_of(defs, kind_type, &applied);
    let empty = json!({});
    let cur = current.unwrap_or(&empty);
    let mut list = entries(cur);
    let mine =
        |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource.is_empty();
    let before: FieldSet = list
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    let mut conflicts: Vec<(String, &Path)> = Vec::new();
    for p in &wanted {
        if p.last().is_some_and(|l| l == ".") {
            continue;
        }
        for e in list.iter().filter(|e| !mine(e)) {
            if e.fields.contains(p) && value_at(cur, p) != value_at(&applied, p) {
                let via = if e.subresource.is_empty() {
                    String::new()
                } else {
                    format!(" with subresource \"{}\"", e.subresource)
                };
                conflicts.push((
                    format!(
                        "conflict with \"{}\"{via} using {}",
                        e.manager, e.api_version
                    ),
                    p,
                ));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(msg, p)| Cause {
                reason: "FieldManagerConflict",
                field: display(p),
                message: msg.clone(),
            })
            .collect();
        let listed: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.message, c.field))
            .collect();
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                causes.len(),
                if causes.len() == 1 { "" } else { "s" },
                listed.join("\n")
            ),
        );
        e.causes = causes;
        return Err(e);
    }
    if force {
        // Forcing moves only the conflicting fields; equal values stay co-owned.
        let taken: FieldSet = conflicts.iter().map(|(_, p)| (*p).clone()).collect();
        for e in list.iter_mut().filter(|e| !mine(e)) {
            e.fields.retain(|p| !taken.contains(p));
        }
    }
    let mut out = cur.clone();
    // Fields this manager stopped applying go, unless someone else owns them.
    let others: FieldSet = list
        .iter()
        .filter(|e| !mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in before.difference(&wanted) {
        let item_prefix: &[String] = if p.last().is_some_and(|l| l == ".") {
            &p[..p.len() - 1]
        } else {
            p
        };
        let shared = others.iter().any(|o| o.starts_with(item_prefix));
        if !shared {
            remove_at(&mut out, p);
        }
    }
    merge_applied(defs, kind_type, &mut out, &applied);
    match list.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            e.fields = wanted;
            e.time = crate::store::now();
            e.api_version = api_version.to_string();
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: crate::store::now(),
            subresource: String::new(),
            fields: wanted,
        }),
    }
    write_entries(&mut out, &list);
    Ok(out)
}

/// Records a non-apply write by `manager`: it owns every field whose value it changed
/// (taken from whoever owned it); fields that no longer exist are forgotten.
pub fn record_update(
    kind_type: Option<&str>,
    api_version: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
) {
    let defs = crate::openapi::definitions();
    let empty = json!({});
    let before = old.unwrap_or(&empty);
    let mut list = entries(before);
    let now_fields = fields_of(defs, kind_type, new);
    let changed: FieldSet = now_fields
        .iter()
        .filter(|p| value_at(before, p) != value_at(new, p) || (old.is_none()))
        .cloned()
        .collect();
    for e in list.iter_mut() {
        e.fields.retain(|p| {
            now_fields.contains(p)
                || p.last().is_some_and(|l| l == ".") && value_at(new, &p[..p.len() - 1]).is_some()
        });
        if !(e.manager == manager && e.operation == "Update" && e.subresource == subresource) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = crate::store::now();
                e.api_version = api_version.to_string();
            }
            None => list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: crate::store::now(),
                subresource: subresource.to_string(),
                fields: changed,
            }),
        }
    }
    write_entries(new, &list);
}

/// `.spec.replicas`, `.spec.template.spec.containers[name="a"].image`: a path as the
/// conflict messages print it.
fn display(p: &Path) -> String {
    let mut out = String::new();
    for el in p {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TY: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");

    fn dep(replicas: i64, containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn apply_records_fields_and_a_second_apply_removes_what_it_dropped() {
        let first = dep(
            2,
            json!([{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]),
        );
        let o = apply(TY, "apps/v1", None, &first, "kubectl", false).unwrap();
        let mf = &o["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "kubectl");
        assert_eq!(mf["operation"], "Apply");
        assert!(
            mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"a\"}"]
                ["f:image"]
                .is_object()
        );
        let second = dep(2, json!([{"name": "a", "image": "x:2"}]));
        let o2 = apply(TY, "apps/v1", Some(&o), &second, "kubectl", false).unwrap();
        let cs = o2["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["image"], "x:2");
    }

    #[test]
    fn another_managers_field_is_a_conflict_unless_forced() {
        let o = apply(
            TY,
            "apps/v1",
            None,
            &dep(2, json!([{"name": "a", "image": "x:1"}])),
            "one",
            false,
        )
        .unwrap();
        let e = apply(
            TY,
            "apps/v1",
            Some(&o),
            &dep(5, json!([{"name": "a", "image": "x:1"}])),
            "two",
            false,
        )
        .unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(e.causes[0].reason, "FieldManagerConflict");
        assert_eq!(e.causes[0].field, ".spec.replicas");
        assert!(e.message.contains("conflict with \"one\""), "{}", e.message);
        // Same value: shared ownership, no conflict.
        apply(
            TY,
            "apps/v1",
            Some(&o),
            &dep(2, json!([{"name": "a", "image": "x:1"}])),
            "two",
            false,
        )
        .unwrap();
        let forced = apply(
            TY,
            "apps/v1",
            Some(&o),
            &dep(5, json!([{"name": "a", "image": "x:1"}])),
            "two",
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let one = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["manager"] == "one")
            .unwrap()
            .clone();
        assert!(
            one["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
            "ownership moved: {one}"
        );
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let o = apply(
            TY,
            "apps/v1",
            None,
            &dep(2, json!([{"name": "a", "image": "x:1"}])),
            "kubectl",
            false,
        )
        .unwrap();
        let mut new = o.clone();
        new["spec"]["replicas"] = json!(7);
        record_update(TY, "apps/v1", Some(&o), &mut new, "kubectl-scale", "");
        let mf = new["metadata"]["managedFields"].as_array().unwrap();
        let scale = mf.iter().find(|m| m["manager"] == "kubectl-scale").unwrap();
        assert!(scale["fieldsV1"]["f:spec"]["f:replicas"].is_object());
        // The applier no longer owns replicas: applying without it does not remove it.
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        let o2 = apply(TY, "apps/v1", Some(&new), &applied, "kubectl", false).unwrap();
        assert_eq!(o2["spec"]["replicas"], 7);
    }
}
