//! Discovery documents, generated from the `api` registry: aggregated discovery (v2,
//! what kubectl asks for first), the legacy `/api`, `/apis`, `/api/v1` and `/apis/G/V`
//! documents, and `/version`.

use api::registry::{self, ResourceInfo, RESOURCES};
use serde_json::{json, Value};

/// The content type of an aggregated discovery answer of `version` (v2, or v2beta1 for
/// kubectl before 1.30); kubectl only accepts the exact string.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// Which aggregated discovery version an Accept header asks for, if any.
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    accept
        .split(',')
        .filter(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("g=apidiscovery.k8s.io"))
        .find_map(|a| {
            if a.contains("v=v2beta1") {
                Some("v2beta1")
            } else if a.contains("v=v2") {
                Some("v2")
            } else {
                None
            }
        })
}

/// A review kind: created to ask a question about the request's own identity, answered
/// by the REST layer from it, never stored (so not in the registry).
pub struct Review {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
}

/// `kubectl auth whoami` asks a SelfSubjectReview; `kubectl auth can-i` a
/// SelfSubjectAccessReview, and with `--list` a SelfSubjectRulesReview.
pub const REVIEWS: [Review; 3] = [
    Review {
        group: "authentication.k8s.io",
        version: "v1",
        resource: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        resource: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        resource: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
    },
];

impl Review {
    /// The review `/apis/<group>/<version>/<resource>` names.
    pub fn at(segs: &[&str]) -> Option<&'static Review> {
        REVIEWS
            .iter()
            .find(|r| segs == ["apis", r.group, r.version, r.resource])
    }

    pub fn answer(&self, status: Value) -> Value {
        json!({"kind": self.kind, "apiVersion": format!("{}/{}", self.group, self.version),
            "metadata": {"creationTimestamp": null}, "status": status})
    }
}

/// The groups (and their one version) the review kinds are served in, each once.
fn review_groups() -> impl Iterator<Item = (&'static str, &'static str)> {
    REVIEWS
        .iter()
        .enumerate()
        .filter(|(i, r)| REVIEWS[..*i].iter().all(|o| o.group != r.group))
        .map(|(_, r)| (r.group, r.version))
}

/// The answer to a SelfSubjectReview: who the request was authenticated as.
pub fn self_subject_review(user: &crate::auth::User) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    REVIEWS[0].answer(json!({"userInfo": info}))
}

/// The answer to a SelfSubjectAccessReview: whether the request's own user may do what
/// its `spec.resourceAttributes` describe (a non-resource question is allowed: those
/// paths are not authorized here).
pub fn self_subject_access_review(
    user: &crate::auth::User,
    body: &Value,
    authorizer: &dyn crate::auth::Authorizer,
) -> Value {
    let spec = &body["spec"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut review = REVIEWS[1].answer(json!({"allowed": true}));
    review["spec"] = spec.clone();
    let r = &spec["resourceAttributes"];
    if r.is_object() {
        let (verb, group, resource) = (text(&r["verb"]), text(&r["group"]), text(&r["resource"]));
        let (subresource, namespace, name) = (
            text(&r["subresource"]),
            text(&r["namespace"]),
            text(&r["name"]),
        );
        let attrs = crate::auth::Attributes {
            user,
            verb: &verb,
            group: &group,
            resource: &resource,
            subresource: &subresource,
            namespace: &namespace,
            name: &name,
            path: "",
        };
        if let Err(why) = authorizer.authorize(&attrs) {
            review["status"] = json!({"allowed": false});
            if !why.is_empty() {
                review["status"]["reason"] = json!(why);
            }
        }
    }
    review
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-rustkube",
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rustc",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

fn kind_ref(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            json!({"subresource": s.name, "responseKind": kind_ref(s.group, s.version, s.kind), "verbs": s.verbs})
        })
        .collect();
    let mut v = json!({
        "resource": r.resource,
        "responseKind": kind_ref(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subs.is_empty() {
        v["subresources"] = json!(subs);
    }
    v
}

/// `/api` (core only) or `/apis` (every named group) as an `APIGroupDiscoveryList`.
pub fn aggregated(core: bool, version: &str) -> Value {
    let items: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = RESOURCES
                        .iter()
                        .filter(|r| r.group == group && r.version == *v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    let mut items = items;
    if !core {
        for (group, version) in review_groups() {
            let resources: Vec<Value> = REVIEWS
                .iter()
                .filter(|r| r.group == group)
                .map(|r| {
                    json!({"resource": r.resource,
                "responseKind": kind_ref(r.group, r.version, r.kind), "scope": "Cluster",
                "singularResource": r.singular, "verbs": ["create"]})
                })
                .collect();
            items.push(json!({"metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}]}));
        }
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| api_group(g, &vs))
        .chain(review_groups().map(|(g, v)| api_group(g, &[v])))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/G`, if the group is served.
pub fn group(name: &str) -> Option<Value> {
    registry::groups()
        .into_iter()
        .chain(review_groups().map(|(g, v)| (g, vec![v])))
        .find(|(g, _)| *g == name && !g.is_empty())
        .map(|(g, vs)| {
            let mut v = api_group(g, &vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        })
}

/// `/api/v1` or `/apis/G/V` as an `APIResourceList`, subresources included.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in REVIEWS
        .iter()
        .filter(|r| (r.group, r.version) == (group, version))
    {
        resources.push(json!({"name": r.resource, "singularName": r.singular,
            "namespaced": false, "kind": r.kind, "verbs": ["create"]}));
    }
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut v = json!({"name": r.resource, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs});
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        for s in r.subresources {
            let mut sv = json!({"name": format!("{}/{}", r.resource, s.name), "singularName": "",
                "namespaced": r.namespaced, "kind": s.kind, "verbs": s.verbs});
            if s.group != r.group || s.version != r.version {
                sv["group"] = json!(s.group);
                sv["version"] = json!(s.version);
            }
            resources.push(sv);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_core_has_pods_with_subresources() {
        let a = aggregated(true, "v2");
        assert_eq!(a["items"].as_array().unwrap().len(), 1);
        let pods = a["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap()
            .clone();
        assert_eq!(pods["scope"], "Namespaced");
        assert!(pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "eviction"));
        assert_eq!(
            wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"),
            Some("v2")
        );
        assert_eq!(
            wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"),
            Some("v2beta1")
        );
        assert_eq!(wants_aggregated("application/json"), None);
    }

    #[test]
    fn legacy_lists_name_subresources_and_their_groups() {
        let l = resource_list("apps", "v1").unwrap();
        let scale = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap()
            .clone();
        assert_eq!(scale["group"], "autoscaling");
        assert!(resource_list("nope", "v1").is_none());
        assert!(group("apps").is_some());
    }
}
