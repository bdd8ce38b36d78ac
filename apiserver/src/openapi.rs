//! OpenAPI v3 (`/openapi/v3` and `/openapi/v3/<group-version>`), generated from the
//! `k8s-openapi` types' schemas: one document per group-version with a path per
//! operation (each tagged with `x-kubernetes-group-version-kind` and, on writes, the
//! `fieldValidation` parameter, which tells kubectl to validate on the server) and the
//! kinds' schemas under `components.schemas` (what `kubectl explain` reads).

use crate::admission::{with_kind, Kind, KindFn};
use api::k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use api::registry::{self, ResourceInfo, RESOURCES};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

/// A rendered document and the hash clients use to cache it.
pub struct Document {
    pub json: Bytes,
    pub hash: String,
}

/// The group-version keys served: `api/v1`, `apis/apps/v1`, …
fn key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn documents() -> &'static BTreeMap<String, Document> {
    static DOCS: OnceLock<BTreeMap<String, Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut out = BTreeMap::new();
        for (group, versions) in registry::groups() {
            for v in versions {
                let doc = group_version(group, v);
                let json = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
                let mut h = std::collections::hash_map::DefaultHasher::new();
                json.hash(&mut h);
                out.insert(
                    key(group, v),
                    Document {
                        json,
                        hash: format!("{:016X}", h.finish()),
                    },
                );
            }
        }
        out
    })
}

/// `/openapi/v3`: where each group-version's document is.
pub fn root() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(k, d)| {
            (
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", d.hash)}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/<key>`.
pub fn document(key: &str) -> Option<&'static Document> {
    documents().get(key)
}

struct SchemaRef<'a>(&'a mut SchemaGenerator);

impl KindFn for SchemaRef<'_> {
    type Out = Value;
    fn call<T: Kind>(self, _: &ResourceInfo) -> Value {
        self.0.subschema_for::<T>().into()
    }
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description,
        "required": location == "path", "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        param("fieldManager", "query", "fieldManager is a name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "query", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"),
    ]
}

fn content(schema: &Value) -> Value {
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

/// One operation object.
fn operation(
    action: &str,
    id: String,
    gvk: &Value,
    response: &Value,
    body: Option<&Value>,
    patch: bool,
    mut params: Vec<Value>,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "responses": {"200": {"description": "OK", "content": content(response)}, "401": {"description": "Unauthorized"}},
    });
    if let Some(b) = body {
        params.extend(write_params());
        let mut c = content(b);
        if patch {
            let patch_schema = json!({"type": "object"});
            c = json!({
                "application/json-patch+json": {"schema": patch_schema},
                "application/merge-patch+json": {"schema": patch_schema},
                "application/strategic-merge-patch+json": {"schema": patch_schema},
                "application/apply-patch+yaml": {"schema": patch_schema},
            });
            params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true},
                "description": "Force is going to \"force\" Apply requests."}));
        }
        op["requestBody"] = json!({"content": c, "required": true});
    }
    op["parameters"] = Value::Array(params);
    op
}

fn camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Every kind's schema and everything they reference, keyed by name
/// (`io.k8s.api.apps.v1.Deployment`), with the Kubernetes extensions: the group-version
/// -kind on each kind, and the patch strategies and merge keys (`patch::meta`) that
/// kubectl computes strategic merge patches from and the server applies them with.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut gen = SchemaSettings::openapi3().into_generator();
        let kinds: Vec<(&ResourceInfo, Value)> = RESOURCES
            .iter()
            .filter_map(|r| with_kind(r, SchemaRef(&mut gen)).map(|s| (r, s)))
            .collect();
        let mut defs: Map<String, Value> = gen.take_definitions(true).into_iter().collect();
        for (r, schema) in kinds {
            if let Some(s) = ref_name(&schema)
                .and_then(|n| defs.get_mut(n))
                .and_then(Value::as_object_mut)
            {
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": r.group, "kind": r.kind, "version": r.version}]),
                );
            }
        }
        crate::patch::meta::annotate(&mut defs);
        defs
    })
}

/// The schema name a `$ref` (direct, or in `allOf`, or in array `items`) points to.
pub fn ref_name(schema: &Value) -> Option<&str> {
    schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str())
        .or_else(|| schema["items"]["$ref"].as_str())
        .and_then(|r| r.rsplit('/').next())
}

/// The schema name of a served kind.
pub fn kind_schema_name(info: &ResourceInfo) -> Option<String> {
    struct Name;
    impl KindFn for Name {
        type Out = String;
        fn call<T: Kind>(self, _: &ResourceInfo) -> String {
            T::schema_name().into_owned()
        }
    }
    with_kind(info, Name)
}

/// The definitions reachable from `roots`.
fn reachable(roots: &[String]) -> Map<String, Value> {
    let defs = definitions();
    let mut out = Map::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(def) = defs.get(&name) else { continue };
        collect_refs(def, &mut todo);
        out.insert(name, def.clone());
    }
    out
}

fn collect_refs(v: &Value, into: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                if let Some(n) = r.rsplit('/').next() {
                    into.push(n.to_string());
                }
            }
            m.values().for_each(|x| collect_refs(x, into));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, into)),
        _ => {}
    }
}

fn group_version(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut roots = Vec::new();
    let list_schema = json!({"type": "object", "properties": {"items": {"type": "array"}, "metadata": {"type": "object"}}});
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let Some(name) = kind_schema_name(r) else {
            continue;
        };
        let schema = json!({"$ref": format!("#/components/schemas/{name}")});
        roots.push(name);
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let id = |verb: &str, ns: bool| {
            format!(
                "{verb}{}{}{}",
                camel(&if group.is_empty() {
                    "core".to_string()
                } else {
                    group.split('.').next().unwrap_or("").to_string()
                }),
                camel(version),
                if ns {
                    format!("Namespaced{}", r.kind)
                } else {
                    r.kind.to_string()
                }
            )
        };
        let (collection, item, ns_param) = if r.namespaced {
            (
                r.collection_path(Some("{namespace}")),
                r.object_path(Some("{namespace}"), "{name}"),
                vec![param(
                    "namespace",
                    "path",
                    "object name and auth scope, such as for teams and projects",
                )],
            )
        } else {
            (
                r.collection_path(None),
                r.object_path(None, "{name}"),
                vec![],
            )
        };
        let name_param = || {
            let mut p = ns_param.clone();
            p.push(param("name", "path", &format!("name of the {}", r.kind)));
            p
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": operation("list", id("list", r.namespaced), &gvk, &list_schema, None, false, ns_param.clone()),
                "post": operation("post", id("create", r.namespaced), &gvk, &schema, Some(&schema), false, ns_param.clone()),
                "delete": operation("deletecollection", id("deleteCollection", r.namespaced), &gvk, &json!({"type": "object"}), None, false, ns_param.clone()),
            }),
        );
        paths.insert(
            item.clone(),
            json!({
                "get": operation("get", id("read", r.namespaced), &gvk, &schema, None, false, name_param()),
                "put": operation("put", id("replace", r.namespaced), &gvk, &schema, Some(&schema), false, name_param()),
                "patch": operation("patch", id("patch", r.namespaced), &gvk, &schema, Some(&schema), true, name_param()),
                "delete": operation("delete", id("delete", r.namespaced), &gvk, &json!({"type": "object"}), None, false, name_param()),
            }),
        );
        if r.namespaced {
            paths.insert(
                r.collection_path(None),
                json!({"get": operation("list", id("list", false) + "ForAllNamespaces", &gvk, &list_schema, None, false, vec![])}),
            );
        }
        if r.subresource("status").is_some() {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": operation("get", id("read", r.namespaced) + "Status", &gvk, &schema, None, false, name_param()),
                    "put": operation("put", id("replace", r.namespaced) + "Status", &gvk, &schema, Some(&schema), false, name_param()),
                    "patch": operation("patch", id("patch", r.namespaced) + "Status", &gvk, &schema, Some(&schema), true, name_param()),
                }),
            );
        }
    }
    let schemas = reachable(&roots);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_document_has_deployment_patch_with_field_validation_and_its_schema() {
        let doc: Value = serde_json::from_slice(&document("apis/apps/v1").unwrap().json).unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let d = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(
            doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentStrategy"]["description"]
                .is_string()
        );
        let root = root();
        assert!(root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
    }
}
