//! Subresources that are views of their parent: `scale` (autoscaling/v1 `Scale` over a
//! workload's `spec.replicas`, what `kubectl scale` reads and patches) and
//! `pods/eviction` (policy/v1: a delete that honours PodDisruptionBudgets, what
//! `kubectl drain` posts), and `serviceaccounts/token` (a TokenRequest answered with a
//! signed token, what `kubectl create token` asks).

use crate::cache::labels_of;
use crate::error::{ApiError, Cause, Result};
use crate::satoken::{Bound, BoundKind};
use crate::store::{DeleteOptions, Deleted, ListOptions, Store, WriteOptions};
use api::ResourceInfo;
use serde_json::{json, Value};

/// `matchLabels` and `matchExpressions` in the selector string form.
fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// The `Scale` view of a workload.
pub fn to_scale(parent: &Value) -> Value {
    let m = &parent["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": parent["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": parent["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&parent["spec"]["selector"])},
    })
}

/// PUT (`patch_type` None, `body` a Scale) or PATCH of `.../scale`: sets the parent's
/// `spec.replicas`; returns the new Scale.
pub async fn update_scale(
    store: &Store,
    info: &'static ResourceInfo,
    ns: &str,
    name: &str,
    patch_type: Option<&str>,
    body: &[u8],
    write: &WriteOptions,
) -> Result<Value> {
    let parent = store
        .update_with(info, ns, name, "scale", write, &|current| {
            let scale = to_scale(current);
            let wanted = match patch_type {
                Some(pt) => crate::patch::patched("Scale", pt, &scale, body)?,
                None => serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding Scale: {e}")))?,
            };
            let replicas = &wanted["spec"]["replicas"];
            let n = match replicas.as_i64() {
                Some(n) if n >= 0 => n,
                _ => {
                    return Err(ApiError::invalid(
                        info,
                        name,
                        vec![Cause::invalid(
                            "spec.replicas",
                            replicas,
                            "must be greater than or equal to 0",
                        )],
                    ))
                }
            };
            let mut out = current.clone();
            out["spec"]["replicas"] = json!(n);
            // A Scale that names a resourceVersion pins it; otherwise whatever is current.
            let pinned = wanted["metadata"]["resourceVersion"]
                .as_str()
                .filter(|s| !s.is_empty());
            match (pinned, patch_type) {
                (Some(rv), None) => out["metadata"]["resourceVersion"] = json!(rv),
                _ => {
                    if let Some(m) = out["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                }
            }
            Ok(out)
        })
        .await?;
    Ok(to_scale(&parent))
}

fn too_many(message: String, causes: Vec<Cause>) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", message);
    e.causes = causes;
    e.retry_after_seconds = Some(10);
    e
}

/// `POST pods/<name>/eviction`: deletes the pod unless a PodDisruptionBudget covering it
/// allows no disruption now (429), spending one allowed disruption otherwise.
pub async fn evict(
    store: &Store,
    ns: &str,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> Result<()> {
    let pods = api::registry::by_resource("", "v1", "pods").expect("pods");
    let pdbs = api::registry::by_resource("policy", "v1", "poddisruptionbudgets").expect("pdbs");
    let pod = store.get(pods, ns, name, "").await?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    // Kubernetes lets pods that are not running go without asking their budgets.
    let guarded = !matches!(phase, "Succeeded" | "Failed" | "Pending")
        && pod["metadata"]["deletionTimestamp"].is_null();
    if guarded {
        let labels = labels_of(&pod);
        let list = store.list(pdbs, Some(ns), &ListOptions::default()).await?;
        for pdb in list.items {
            let sel: Result<api::LabelSelector, _> =
                serde_json::from_value(pdb["spec"]["selector"].clone())
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        api::LabelSelector::from_label_selector(Some(&s)).map_err(|e| e.0)
                    });
            let Ok(sel) = sel else { continue };
            if !sel.matches(&labels) {
                continue;
            }
            let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
            let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
            let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(-1);
            if observed < generation {
                return Err(too_many(
                    "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    vec![Cause {
                        reason: "DisruptionBudget",
                        field: String::new(),
                        message: format!("The disruption budget {pdb_name} is still being processed by the server."),
                    }],
                ));
            }
            let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
            if allowed <= 0 {
                let desired = pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0);
                let current = pdb["status"]["currentHealthy"].as_i64().unwrap_or(0);
                return Err(too_many(
                    "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    vec![Cause {
                        reason: "DisruptionBudget",
                        field: String::new(),
                        message: format!(
                            "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
                        ),
                    }],
                ));
            }
            if !dry_run {
                // Spend the disruption (the disruption controller recomputes it later).
                store
                    .update_with(
                        pdbs,
                        ns,
                        &pdb_name,
                        "status",
                        &WriteOptions::default(),
                        &|cur| {
                            let mut out = cur.clone();
                            let left = cur["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
                            if left <= 0 {
                                return Err(too_many(
                                "Cannot evict pod as it would violate the pod's disruption budget."
                                    .into(),
                                Vec::new(),
                            ));
                            }
                            out["status"]["disruptionsAllowed"] = json!(left - 1);
                            out["status"]["disruptedPods"][name] = json!(crate::store::now());
                            if let Some(m) = out["metadata"].as_object_mut() {
                                m.remove("resourceVersion");
                            }
                            Ok(out)
                        },
                    )
                    .await?;
            }
        }
    }
    let d = &eviction["deleteOptions"];
    let opts = DeleteOptions {
        uid: d["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: d["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        propagation: d["propagationPolicy"].as_str().map(str::to_string),
        grace_period_seconds: d["gracePeriodSeconds"].as_i64(),
        dry_run,
    };
    match store.delete(pods, ns, name, &opts).await? {
        Deleted::Gone(_) | Deleted::Pending(_) => Ok(()),
    }
}

/// `POST serviceaccounts/<name>/token` (TokenRequest, `kubectl create token`): a token
/// for the account as it is now (its uid), for `spec.audiences` (the apiserver's own
/// when empty), valid `spec.expirationSeconds` (an hour by default, at least ten
/// minutes).
pub async fn token_request(
    server: &crate::Server,
    ns: &str,
    account: &str,
    request: &Value,
) -> Result<Value> {
    let info = api::registry::by_resource("", "v1", "serviceaccounts").expect("serviceaccounts");
    let sa = server.store.get(info, ns, account, "").await?;
    let spec = &request["spec"];
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if seconds < 600 {
        let cause = Cause::invalid(
            "spec.expirationSeconds",
            &spec["expirationSeconds"],
            "may not specify a duration less than 10 minutes",
        );
        let text = format!(
            "TokenRequest.authentication.k8s.io \"{account}\" is invalid: {}: {}",
            cause.field, cause.message
        );
        return Err(ApiError::invalid(info, account, vec![cause]).with_message(text));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let tokens = server.sa_tokens.as_ref().ok_or_else(|| {
        ApiError::internal("no --service-account-signing-key-file: the apiserver issues no tokens")
    })?;
    // A token bound to an object lives only as long as that object.
    let bound = &spec["boundObjectRef"];
    let bound = match bound["kind"].as_str() {
        None | Some("") => None,
        Some(kind) => {
            let Some(kind) = BoundKind::ALL.into_iter().find(|k| k.kind() == kind) else {
                return Err(ApiError::bad_request(format!(
                    "cannot bind a token to a {kind}: only Pod, Secret and Node are supported"
                )));
            };
            let of = api::registry::by_resource("", "v1", kind.resource()).expect("core kind");
            let name = bound["name"].as_str().unwrap_or("");
            let object_ns = if of.namespaced { ns } else { "" };
            let o = server.store.get(of, object_ns, name, "").await?;
            let uid = o["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if bound["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u != uid)
            {
                return Err(ApiError::conflict(
                    info,
                    account,
                    &format!("the UID in the bound object reference ({}) does not match the UID in record ({uid}); the object might have been deleted and then recreated", bound["uid"].as_str().unwrap_or("")),
                ));
            }
            Some(Bound {
                kind,
                name: name.to_string(),
                uid,
            })
        }
    };
    let claims = crate::satoken::Claims {
        namespace: ns.to_string(),
        name: account.to_string(),
        uid: sa["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        bound,
    };
    let now = chrono::Utc::now();
    let (token, exp) = tokens
        .issue(&claims, &audiences, now.timestamp(), seconds)
        .map_err(ApiError::internal)?;
    let expires = chrono::DateTime::from_timestamp(exp, 0)
        .unwrap_or(now)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut spec = spec.clone();
    spec["expirationSeconds"] = json!(seconds);
    if audiences.is_empty() {
        spec["audiences"] = json!([]);
    }
    Ok(
        json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": account, "namespace": ns, "creationTimestamp": null},
        "spec": spec, "status": {"token": token, "expirationTimestamp": expires}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view_of_a_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "d", "resourceVersion": "7"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = to_scale(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
    }
}
