//! The RBAC authorizer (`--authorization-mode=RBAC`) and the default roles every
//! apiserver writes at startup.
//!
//! A request is allowed when a ClusterRoleBinding, or a RoleBinding of the request's
//! namespace, names the user (as a User, one of its Groups, or the ServiceAccount it is)
//! and binds a role with a rule matching the verb, API group, resource (with its
//! subresource: `pods` does not cover `pods/log`, `*/scale` covers every scale) and,
//! where the rule lists them, the object's name. Users of `system:masters` are allowed
//! everything, as Kubernetes' privileged-group authorizer does. Roles and bindings are
//! read from the watch caches on every request, so a new binding counts at once.
//! A ClusterRole with an `aggregationRule` has the rules the controller-manager's
//! `clusterrole-aggregation` writes into it, as in Kubernetes; the default `view`, `edit`
//! and `admin` are aggregated (from `system:aggregate-to-*` and each other) and start with
//! the rules that aggregation gives them, so an apiserver alone authorizes them fully.

use crate::auth::{Attributes, Authorizer, Decision, User};
use crate::cache::Filter;
use crate::store::Store;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Rbac {
    store: Arc<Store>,
}

const GROUP: &str = "rbac.authorization.k8s.io";

impl Rbac {
    pub fn new(store: Arc<Store>) -> Self {
        Rbac { store }
    }
}

fn objects(store: &Store, resource: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
    let info = api::registry::by_resource(GROUP, "v1", resource).expect("an rbac resource");
    let prefix = match namespace {
        Some(ns) => info.storage_key(ns, ""),
        None => info.storage_prefix(),
    };
    store.cache(info).list(&prefix, &Filter::default()).0
}

/// The rules of a role: `kind` Role (in `namespace`) or ClusterRole.
pub fn role_rules(store: &Store, kind: &str, namespace: &str, name: &str) -> Vec<Value> {
    match kind {
        "ClusterRole" => cluster_role_rules(store, name),
        "Role" => {
            let info = api::registry::by_resource(GROUP, "v1", "roles").expect("roles");
            let role = store.cache(info).get(&info.storage_key(namespace, name));
            role.map(|r| rules(&r)).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

fn cluster_role_rules(store: &Store, name: &str) -> Vec<Value> {
    let info = api::registry::by_resource(GROUP, "v1", "clusterroles").expect("clusterroles");
    let role = store.cache(info).get(&info.storage_key("", name));
    role.map(|r| rules(&r)).unwrap_or_default()
}

/// Every rule bound to `user` in `namespace` (cluster-wide bindings only for "").
pub fn rules_for(store: &Store, user: &User, namespace: &str) -> Vec<Value> {
    let mut bindings = objects(store, "clusterrolebindings", None);
    if !namespace.is_empty() {
        bindings.extend(objects(store, "rolebindings", Some(namespace)));
    }
    bindings
        .iter()
        .filter(|b| names(b, user))
        .flat_map(|b| {
            let role = &b["roleRef"];
            let ns = b["metadata"]["namespace"].as_str().unwrap_or("");
            role_rules(
                store,
                role["kind"].as_str().unwrap_or(""),
                ns,
                role["name"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

fn rules(role: &Value) -> Vec<Value> {
    role["rules"].as_array().cloned().unwrap_or_default()
}

fn listed(list: &Value, item: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|v| v == "*" || v == item)
}

/// Whether a binding names this user.
fn names(binding: &Value, user: &User) -> bool {
    let binding_ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            let name = s["name"].as_str().unwrap_or("");
            match s["kind"].as_str() {
                Some("User") => name == user.name,
                Some("Group") => user.groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = s["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(binding_ns);
                    user.name == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
}

/// Whether one rule allows the request.
pub fn allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    if !attrs.path.is_empty() {
        return grant_covered(rule, attrs.verb, None, attrs.path, "");
    }
    let resource: std::borrow::Cow<str> = match attrs.subresource {
        "" => attrs.resource.into(),
        sub => format!("{}/{sub}", attrs.resource).into(),
    };
    grant_covered(rule, attrs.verb, Some(attrs.group), &resource, attrs.name)
}

impl Authorizer for Rbac {
    fn decide(&self, attrs: &Attributes<'_>) -> Decision {
        if attrs.user.groups.iter().any(|g| g == "system:masters") {
            return Decision::Allow;
        }
        let rules = rules_for(&self.store, attrs.user, attrs.namespace);
        if rules.iter().any(|r| allows(r, attrs)) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

/// The answer to a SelfSubjectRulesReview (`kubectl auth can-i --list`): the rules bound
/// to the user in `spec.namespace`, resource and non-resource ones apart.
pub fn rules_review(store: &Store, user: &User, body: &Value) -> Value {
    let ns = body["spec"]["namespace"].as_str().unwrap_or("");
    let (mut resource_rules, mut url_rules) = (Vec::new(), Vec::new());
    if user.groups.iter().any(|g| g == "system:masters") {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        url_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    for r in rules_for(store, user, ns) {
        if r["nonResourceURLs"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
        {
            url_rules.push(json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}));
        } else {
            let mut rule = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]});
            if r["resourceNames"].as_array().is_some_and(|n| !n.is_empty()) {
                rule["resourceNames"] = r["resourceNames"].clone();
            }
            resource_rules.push(rule);
        }
    }
    let mut review = crate::discovery::REVIEWS[2].answer(json!({
        "resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false}));
    review["spec"] = body["spec"].clone();
    review
}

/// Whether an owned rule covers one grant (a single verb, group, resource and name; or
/// a single verb and non-resource URL when `group` is None).
fn grant_covered(
    owned: &Value,
    verb: &str,
    group: Option<&str>,
    resource: &str,
    name: &str,
) -> bool {
    if !listed(&owned["verbs"], verb) {
        return false;
    }
    let Some(group) = group else {
        return owned["nonResourceURLs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|u| {
                u == "*"
                    || u == resource
                    || u.strip_suffix('*').is_some_and(|p| resource.starts_with(p))
            });
    };
    if !listed(&owned["apiGroups"], group) {
        return false;
    }
    let resource_ok = owned["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|r| {
            r == "*"
                || r == resource
                || r.strip_prefix("*/")
                    .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
        });
    let names = owned["resourceNames"].as_array().filter(|n| !n.is_empty());
    resource_ok && names.is_none_or(|n| !name.is_empty() && n.iter().any(|x| x == name))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The grants of `requested` rules that no `owned` rule covers, each as Kubernetes
/// prints a policy rule (`{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`).
pub fn uncovered(owned: &[Value], requested: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for rule in requested {
        let verbs = strings(&rule["verbs"]);
        for url in strings(&rule["nonResourceURLs"]) {
            for verb in &verbs {
                if !owned.iter().any(|o| grant_covered(o, verb, None, url, "")) {
                    out.push(format!(
                        "{{NonResourceURLs:[\"{url}\"], Verbs:[\"{verb}\"]}}"
                    ));
                }
            }
        }
        let names = strings(&rule["resourceNames"]);
        let names = if names.is_empty() { vec![""] } else { names };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for name in &names {
                    for verb in &verbs {
                        if owned
                            .iter()
                            .any(|o| grant_covered(o, verb, Some(group), resource, name))
                        {
                            continue;
                        }
                        let named = if name.is_empty() {
                            String::new()
                        } else {
                            format!(", ResourceNames:[\"{name}\"]")
                        };
                        out.push(format!(
                            "{{APIGroups:[\"{group}\"], Resources:[\"{resource}\"]{named}, Verbs:[\"{verb}\"]}}"
                        ));
                    }
                }
            }
        }
    }
    out
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const ALL: &[&str] = &["*"];

/// What `view` may read: the namespaced kinds a user works with, secrets excepted.
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "services/status",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "serviceaccounts",
                "events",
                "limitranges",
                "resourcequotas",
                "resourcequotas/status",
                "namespaces",
                "namespaces/status",
                "podtemplates",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "controllerrevisions",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
            READ,
        ),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
    ]
}

/// What `edit` may change beyond what `view` reads (no roles or bindings, no quotas).
fn edit_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/eviction",
                "pods/exec",
                "pods/attach",
                "pods/portforward",
                "services",
                "endpoints",
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
                "serviceaccounts",
                "events",
            ],
            WRITE,
        ),
        rule(&[""], &["secrets"], READ),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
            ],
            WRITE,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], WRITE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
    ]
}

/// The default cluster roles and their bindings, as Kubernetes' bootstrap policy names
/// them. The components' own roles are broad: the controller-manager acts as one identity
/// (Kubernetes splits it into a service account per controller).
pub fn defaults() -> Vec<(&'static str, Value)> {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Vec<Value>| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta(name), "rules": rules})
    };
    let bind = |name: &str, role: &str, subjects: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(name),
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": subjects})
    };
    let group = |g: &str| json!([{"apiGroup": GROUP, "kind": "Group", "name": g}]);
    let user = |u: &str| json!([{"apiGroup": GROUP, "kind": "User", "name": u}]);
    let view = view_rules();
    let mut edit = view.clone();
    edit.extend(edit_rules());
    // Not `escalate` or `bind`: an admin grants only what it holds.
    let admin_only = vec![
        rule(&[GROUP], &["roles", "rolebindings"], READ),
        rule(&[GROUP], &["roles", "rolebindings"], WRITE),
        rule(&[""], &["resourcequotas", "limitranges"], READ),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
    ];
    let mut admin = edit.clone();
    admin.extend(admin_only.clone());
    // view, edit and admin aggregate the `system:aggregate-to-*` roles (and view is
    // picked by edit, edit by admin), as Kubernetes' default policy has it.
    let aggregate = |name: &str, to: &str, also: Option<&str>, rules: Vec<Value>| {
        let mut r = role(name, rules);
        r["aggregationRule"] = json!({"clusterRoleSelectors": [
            {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]});
        if let Some(label) = also {
            r["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{label}")] =
                json!("true");
        }
        r
    };
    let part = |to: &str, rules: Vec<Value>| {
        let mut r = role(&format!("system:aggregate-to-{to}"), rules);
        r["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{to}")] =
            json!("true");
        r
    };
    let mut cluster_admin = role("cluster-admin", vec![rule(ALL, ALL, ALL)]);
    cluster_admin["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({"nonResourceURLs": ["*"], "verbs": ["*"]}));
    let scheduler = vec![
        rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
        rule(&[""], &["pods/binding", "bindings"], &["create"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(
            &[""],
            &[
                "nodes",
                "namespaces",
                "services",
                "persistentvolumes",
                "persistentvolumeclaims",
                "replicationcontrollers",
            ],
            READ,
        ),
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(&["apps"], &["replicasets", "statefulsets"], READ),
        rule(&["policy"], &["poddisruptionbudgets"], READ),
        rule(
            &["storage.k8s.io"],
            &["storageclasses", "csinodes", "csidrivers"],
            READ,
        ),
        rule(&["scheduling.k8s.io"], &["priorityclasses"], READ),
        rule(&["coordination.k8s.io"], &["leases"], &["*"]),
    ];
    vec![
        ("clusterroles", cluster_admin),
        ("clusterroles", aggregate("admin", "admin", None, admin)),
        (
            "clusterroles",
            aggregate("edit", "edit", Some("admin"), edit),
        ),
        (
            "clusterroles",
            aggregate("view", "view", Some("edit"), view.clone()),
        ),
        ("clusterroles", part("view", view)),
        ("clusterroles", part("edit", edit_rules())),
        ("clusterroles", part("admin", admin_only)),
        (
            "clusterroles",
            role(
                "system:basic-user",
                vec![rule(
                    &["authorization.k8s.io", "authentication.k8s.io"],
                    &[
                        "selfsubjectaccessreviews",
                        "selfsubjectrulesreviews",
                        "selfsubjectreviews",
                    ],
                    &["create"],
                )],
            ),
        ),
        ("clusterroles", role("system:kube-scheduler", scheduler)),
        (
            "clusterroles",
            role(
                "system:discovery",
                vec![
                    json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*",
                    "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version",
                    "/version/"], "verbs": ["get"]}),
                ],
            ),
        ),
        (
            "clusterroles",
            role(
                "system:monitoring",
                vec![
                    json!({"nonResourceURLs": ["/healthz", "/healthz/*", "/livez",
                    "/livez/*", "/metrics", "/readyz", "/readyz/*"], "verbs": ["get"]}),
                ],
            ),
        ),
        (
            "clusterrolebindings",
            bind(
                "system:discovery",
                "system:discovery",
                group("system:authenticated"),
            ),
        ),
        (
            "clusterrolebindings",
            bind(
                "system:monitoring",
                "system:monitoring",
                group("system:monitoring"),
            ),
        ),
        (
            "clusterroles",
            role("system:kube-controller-manager", vec![rule(ALL, ALL, ALL)]),
        ),
        (
            "clusterrolebindings",
            bind("cluster-admin", "cluster-admin", group("system:masters")),
        ),
        (
            "clusterrolebindings",
            bind(
                "system:basic-user",
                "system:basic-user",
                group("system:authenticated"),
            ),
        ),
        (
            "clusterrolebindings",
            bind(
                "system:kube-scheduler",
                "system:kube-scheduler",
                user("system:kube-scheduler"),
            ),
        ),
        (
            "clusterrolebindings",
            bind(
                "system:kube-controller-manager",
                "system:kube-controller-manager",
                user("system:kube-controller-manager"),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;

    fn attrs<'a>(
        user: &'a User,
        verb: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: "dev",
            name,
            path: "",
        }
    }

    #[test]
    fn rules_match_verbs_groups_subresources_and_names() {
        let u = User {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        };
        let r =
            json!({"apiGroups": [""], "resources": ["pods", "*/scale"], "verbs": ["get", "list"]});
        assert!(allows(&r, &attrs(&u, "get", "pods", "", "web")));
        assert!(!allows(&r, &attrs(&u, "delete", "pods", "", "web")));
        assert!(!allows(&r, &attrs(&u, "get", "pods", "log", "web")));
        assert!(allows(&r, &attrs(&u, "get", "deployments", "scale", "web")));
        let named = json!({"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["*"], "resourceNames": ["settings"]});
        assert!(allows(
            &named,
            &attrs(&u, "update", "configmaps", "", "settings")
        ));
        assert!(!allows(
            &named,
            &attrs(&u, "update", "configmaps", "", "other")
        ));
        assert!(!allows(&named, &attrs(&u, "list", "configmaps", "", "")));
        let urls = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        let path = |p: &'static str| Attributes {
            path: p,
            ..attrs(&u, "get", "", "", "")
        };
        assert!(allows(&urls, &path("/apis/apps/v1")));
        assert!(allows(&urls, &path("/version")));
        assert!(!allows(&urls, &path("/metrics")));
        assert!(
            !allows(&r, &path("/version")),
            "a resource rule grants no path"
        );
    }

    #[test]
    fn bindings_name_users_groups_and_service_accounts() {
        let sa = User {
            name: "system:serviceaccount:dev:builder".into(),
            uid: String::new(),
            groups: vec!["system:serviceaccounts".into()],
        };
        let binding =
            |subject: Value| json!({"metadata": {"namespace": "dev"}, "subjects": [subject]});
        assert!(names(
            &binding(json!({"kind": "ServiceAccount", "name": "builder"})),
            &sa
        ));
        assert!(!names(
            &binding(json!({"kind": "ServiceAccount", "name": "builder", "namespace": "prod"})),
            &sa
        ));
        assert!(names(
            &binding(json!({"kind": "Group", "name": "system:serviceaccounts"})),
            &sa
        ));
        assert!(!names(
            &binding(json!({"kind": "User", "name": "builder"})),
            &sa
        ));
    }

    #[test]
    fn a_grant_is_covered_only_by_rules_at_least_as_wide() {
        let owned = vec![
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}),
            json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}),
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get"]}),
            json!({"nonResourceURLs": ["/healthz/*"], "verbs": ["get"]}),
        ];
        let ok = vec![
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}),
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get"]}),
            json!({"nonResourceURLs": ["/healthz/ready"], "verbs": ["get"]}),
        ];
        assert_eq!(uncovered(&owned, &ok), Vec::<String>::new());
        let wider = vec![
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}),
            json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}),
        ];
        assert_eq!(
            uncovered(&owned, &wider),
            vec![
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["*"]}"#,
                r#"{APIGroups:[""], Resources:["configmaps"], Verbs:["get"]}"#,
            ]
        );
    }
}
