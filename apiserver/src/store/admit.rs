//! The admission steps that read other objects (from the watch caches): priority
//! classes, the default storage class, a namespace being deleted, and resource quotas.
//! The pure ones (decode, defaults, validation) are in `crate::admission`.

use super::Store;
use crate::admission::plugins::Plugin;
use crate::admission::{defaults, limits, podsecurity, serviceaccount};
use crate::auth::Attributes;
use crate::cache::{decode, Filter, WatchCache};
use crate::error::{ApiError, Cause, Result};
use api::k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use api::ResourceInfo;
use serde_json::{json, Value};
use std::sync::Arc;

impl Store {
    /// A registry resource's cache once it holds the resource (what admission reads).
    async fn synced(
        &self,
        group: &str,
        resource: &str,
    ) -> (&'static ResourceInfo, &Arc<WatchCache>) {
        let info = api::registry::by_resource(group, "v1", resource).expect("a registry resource");
        let cache = self.cache(info);
        cache.wait_synced().await;
        (info, cache)
    }

    /// The priority classes, from the cache once it holds them.
    async fn priority_classes(&self) -> (&'static ResourceInfo, &Arc<WatchCache>) {
        self.synced("scheduling.k8s.io", "priorityclasses").await
    }

    /// Priority admission, as Kubernetes' `Priority` plugin: the pod's
    /// `priorityClassName` (or, without one, the global default class with the lowest
    /// value) sets `priority` and `preemptionPolicy` (no class: 0 and
    /// PreemptLowerPriority). A class that does not exist, or a priority or policy the pod
    /// brings that differs from the computed one, is a 403.
    pub(super) async fn admit_priority(&self, pod: &mut Value, name: &str) -> Result<()> {
        if !self.plugins.on(Plugin::Priority) {
            return Ok(());
        }
        let pods = api::registry::by_resource("", "v1", "pods").expect("pods");
        let forbidden = |why: String| ApiError::denied(pods, name, why);
        let (info, cache) = self.priority_classes().await;
        let wanted = pod["spec"]["priorityClassName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let class = if wanted.is_empty() {
            let (all, _) = cache.list(&info.storage_prefix(), &Filter::default());
            all.into_iter()
                .filter(|c| c["globalDefault"] == json!(true))
                .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
        } else {
            let key = info.storage_key("", &wanted);
            match cache.get(&key) {
                Some(c) => Some(c),
                // The cache may lag a class created a moment ago.
                None => match self.storage.get(&key).await? {
                    Some(s) => Some(Arc::new(decode(&s.value, s.mod_revision)?)),
                    None => {
                        return Err(forbidden(format!(
                            "no PriorityClass with name {wanted} was found"
                        )))
                    }
                },
            }
        };
        let (class_name, priority, policy) = match &class {
            Some(c) => (
                c["metadata"]["name"].as_str().unwrap_or("").to_string(),
                c["value"].as_i64().unwrap_or(0),
                c["preemptionPolicy"]
                    .as_str()
                    .unwrap_or("PreemptLowerPriority")
                    .to_string(),
            ),
            None => (String::new(), 0, "PreemptLowerPriority".to_string()),
        };
        let spec = &mut pod["spec"];
        if let Some(p) = spec.get("priority").and_then(Value::as_i64) {
            if p != priority {
                return Err(forbidden(format!("the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name")));
            }
        }
        if let Some(p) = spec.get("preemptionPolicy").and_then(Value::as_str) {
            if p != policy {
                return Err(forbidden(format!("the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
            }
        }
        if !class_name.is_empty() {
            spec["priorityClassName"] = json!(class_name);
        }
        spec["priority"] = json!(priority);
        spec["preemptionPolicy"] = json!(policy);
        Ok(())
    }

    /// DefaultStorageClass admission: a claim that names no class (the field absent, not
    /// "") gets the default one, the newest if several are marked.
    pub(super) async fn admit_storage_class(&self, claim: &mut Value) {
        if !self.plugins.on(Plugin::DefaultStorageClass) {
            return;
        }
        if !claim["spec"]["storageClassName"].is_null() {
            return;
        }
        let (info, cache) = self.synced("storage.k8s.io", "storageclasses").await;
        let (all, _) = cache.list(&info.storage_prefix(), &Filter::default());
        let marked = |c: &Value| {
            let a = &c["metadata"]["annotations"];
            a["storageclass.kubernetes.io/is-default-class"] == "true"
                || a["storageclass.beta.kubernetes.io/is-default-class"] == "true"
        };
        let newest = all.into_iter().filter(|c| marked(c)).max_by_key(|c| {
            c["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        if let (Some(class), Some(spec)) = (newest, claim["spec"].as_object_mut()) {
            spec.insert("storageClassName".into(), class["metadata"]["name"].clone());
        }
    }

    /// ServiceAccount admission for a new pod: the account it runs as (`default` unless
    /// it names one) must exist, else a 403 (for `default`, which the controller-manager
    /// makes in each new namespace, after retrying for a second or two, as Kubernetes
    /// does); then its API access volume is mounted (`admission::serviceaccount`).
    pub(super) async fn admit_service_account(
        &self,
        ns: &str,
        pod: &mut Value,
        name: &str,
    ) -> Result<()> {
        if !self.plugins.on(Plugin::ServiceAccount) || serviceaccount::is_mirror(pod) {
            return Ok(());
        }
        let account = serviceaccount::account(pod);
        let (info, cache) = self.synced("", "serviceaccounts").await;
        let key = info.storage_key(ns, &account);
        let tries = if account == "default" { 10 } else { 1 };
        let pods = api::registry::by_resource("", "v1", "pods").expect("pods");
        let mut found = cache.get(&key);
        // A namespace that is missing or going is refused as such, later.
        if found.is_none() && self.check_namespace(pods, ns, name).await.is_err() {
            return Ok(());
        }
        for attempt in 0..tries {
            if found.is_some() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            }
            // The cache may lag an account created a moment ago.
            if let Some(s) = self.storage.get(&key).await? {
                found = Some(Arc::new(decode(&s.value, s.mod_revision)?));
            }
        }
        let Some(sa) = found else {
            return Err(ApiError::denied(
                pods,
                name,
                format!("error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"),
            ));
        };
        serviceaccount::mount_token(pod, sa["automountServiceAccountToken"].as_bool());
        Ok(())
    }

    /// Only one PriorityClass may be the global default (403 otherwise, as Kubernetes'
    /// admission answers).
    pub(super) async fn admit_default_class(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        name: &str,
    ) -> Result<()> {
        if !self.plugins.on(Plugin::Priority) {
            return Ok(());
        }
        if info.kind != "PriorityClass" || obj["globalDefault"] != json!(true) {
            return Ok(());
        }
        let (pc, cache) = self.priority_classes().await;
        let (all, _) = cache.list(&pc.storage_prefix(), &Filter::default());
        match all.iter().find(|c| {
            c["globalDefault"] == json!(true) && c["metadata"]["name"].as_str() != Some(name)
        }) {
            Some(other) => Err(ApiError::denied(
                info,
                name,
                format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    other["metadata"]["name"].as_str().unwrap_or("")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The namespace a new object goes into: 404 when it does not exist, 403 when it is
    /// being deleted.
    pub(super) async fn check_namespace(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> Result<Value> {
        let ns_info = api::registry::by_resource("", "v1", "namespaces").expect("namespaces");
        let key = ns_info.storage_key("", ns);
        let found = match self.cache(ns_info).get(&key) {
            Some(o) => Some((*o).clone()),
            // The cache may lag a namespace created a moment ago.
            None => match self.storage.get(&key).await? {
                Some(s) => Some(decode(&s.value, s.mod_revision)?),
                None => None,
            },
        };
        match found {
            None => Err(ApiError::not_found(ns_info, ns)),
            Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => {
                let mut e = ApiError::denied(
                    info,
                    name,
                    format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
                );
                e.causes = vec![Cause {
                    reason: "NamespaceTerminating",
                    field: "metadata.namespace".into(),
                    message: format!("namespace {ns} is being terminated"),
                }];
                Err(e)
            }
            Some(n) => Ok(n),
        }
    }

    /// RBAC's escalation check, as Kubernetes' role and binding registries make it: a
    /// role may hold only rules its writer holds (or may `escalate`), a binding may refer
    /// only to a role whose rules its writer holds (or may `bind`); an aggregation rule
    /// takes `escalate`. The apiserver's own writes and `system:masters` pass.
    pub(super) fn confirm_no_escalation(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
        name: &str,
        opts: &super::WriteOptions,
    ) -> Result<()> {
        const RBAC: &str = "rbac.authorization.k8s.io";
        let Some(req) = opts.requester.as_deref() else {
            return Ok(());
        };
        if info.group != RBAC || req.user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let may = |verb: &str, resource: &str, object: &str| {
            req.authorizer
                .authorize(&Attributes {
                    user: &req.user,
                    verb,
                    group: RBAC,
                    resource,
                    subresource: "",
                    namespace: ns,
                    name: object,
                    path: "",
                })
                .is_ok()
        };
        let requested = match info.resource {
            "roles" | "clusterroles" => {
                if may("escalate", info.resource, name) {
                    return Ok(());
                }
                let selectors = &obj["aggregationRule"]["clusterRoleSelectors"];
                if selectors.as_array().is_some_and(|s| !s.is_empty()) {
                    return Err(ApiError::denied(
                        info,
                        name,
                        "must have cluster-admin privileges to use the aggregationRule",
                    ));
                }
                obj["rules"].as_array().cloned().unwrap_or_default()
            }
            "rolebindings" | "clusterrolebindings" => {
                let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
                let role = obj["roleRef"]["name"].as_str().unwrap_or("");
                let resource = if kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                if may("bind", resource, role) {
                    return Ok(());
                }
                crate::rbac::role_rules(self, kind, ns, role)
            }
            _ => return Ok(()),
        };
        let held = crate::rbac::rules_for(self, &req.user, ns);
        let missing = crate::rbac::uncovered(&held, &requested);
        if missing.is_empty() {
            return Ok(());
        }
        let groups: Vec<String> = req.user.groups.iter().map(|g| format!("{g:?}")).collect();
        Err(ApiError::denied(
            info,
            name,
            format!(
                "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
                req.user.name,
                groups.join(" "),
                missing.join("\n")
            ),
        ))
    }

    /// PodSecurity admission (see `admission::podsecurity`): a new pod in a namespace
    /// that enforces a level (by its label, or the cluster's default) must meet it,
    /// unless its namespace, its requesting `user` or its runtime class is exempt.
    pub(super) fn admit_pod_security(
        &self,
        info: &ResourceInfo,
        namespace: &Value,
        pod: &Value,
        name: &str,
        user: Option<&str>,
    ) -> Result<()> {
        if !self.plugins.on(Plugin::PodSecurity) {
            return Ok(());
        }
        if (info.group, info.resource) != ("", "pods") {
            return Ok(());
        }
        let config = &self.plugins.pod_security;
        let ns = namespace["metadata"]["name"].as_str().unwrap_or("");
        if config.exempt(ns, user, pod) {
            crate::audit::annotate("pod-security.kubernetes.io/exempt", "true");
            return Ok(());
        }
        // The `audit` level only annotates the request's audit events.
        if let Some((level, version)) = podsecurity::level(namespace, "audit", config) {
            let broken = podsecurity::violations(&level, pod);
            if !broken.is_empty() {
                crate::audit::annotate(
                    "pod-security.kubernetes.io/audit-violations",
                    format!(
                        "would violate PodSecurity \"{level}:{version}\": {}",
                        broken.join(", ")
                    ),
                );
            }
        }
        let Some((level, version)) = podsecurity::level(namespace, "enforce", config) else {
            return Ok(());
        };
        crate::audit::annotate(
            "pod-security.kubernetes.io/enforce-policy",
            format!("{level}:{version}"),
        );
        let broken = podsecurity::violations(&level, pod);
        if broken.is_empty() {
            return Ok(());
        }
        Err(ApiError::denied(
            info,
            name,
            format!(
                "violates PodSecurity \"{level}:{version}\": {}",
                broken.join(", ")
            ),
        ))
    }

    /// PodSecurity for a pod update that Kubernetes checks again
    /// (`podsecurity::significant_update`): the updated pod must meet the level its
    /// namespace enforces now.
    pub(super) fn admit_pod_security_update(
        &self,
        ns: &str,
        old: &Value,
        new: &Value,
        name: &str,
        user: Option<&str>,
    ) -> Result<()> {
        if !podsecurity::significant_update(old, new) {
            return Ok(());
        }
        let (pods, namespaces) = (
            api::registry::by_resource("", "v1", "pods").expect("pods"),
            api::registry::by_resource("", "v1", "namespaces").expect("namespaces"),
        );
        match self.cache(namespaces).get(&namespaces.storage_key("", ns)) {
            Some(namespace) => self.admit_pod_security(pods, &namespace, new, name, user),
            None => Ok(()),
        }
    }

    /// The PodSecurity warnings a new object earns (`warn` level for pods, enforced or
    /// warned level for workloads' templates); none if its namespace is not known yet.
    pub fn pod_security_warnings(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
        user: Option<&str>,
    ) -> Vec<String> {
        if !self.plugins.on(Plugin::PodSecurity)
            || !info.namespaced
            || podsecurity::pod_of(info.kind, obj).is_none()
        {
            return Vec::new();
        }
        let namespaces = api::registry::by_resource("", "v1", "namespaces").expect("namespaces");
        match self.cache(namespaces).get(&namespaces.storage_key("", ns)) {
            Some(namespace) => {
                podsecurity::warnings(&namespace, info.kind, obj, &self.plugins.pod_security, user)
            }
            None => Vec::new(),
        }
    }

    /// LimitRanger admission (see `admission::limits`) for pods and claims.
    pub(super) async fn admit_limits(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        obj: &mut Value,
        name: &str,
    ) -> Result<()> {
        if !self.plugins.on(Plugin::LimitRanger) {
            return Ok(());
        }
        let pod = match (info.group, info.resource) {
            ("", "pods") => true,
            ("", "persistentvolumeclaims") => false,
            _ => return Ok(()),
        };
        let (ranges, cache) = self.synced("", "limitranges").await;
        let (ranges, _) = cache.list(&ranges.storage_key(ns, ""), &Filter::default());
        if ranges.is_empty() {
            return Ok(());
        }
        let refused = if pod {
            limits::default_pod(&ranges, obj);
            obj["status"]["qosClass"] = json!(defaults::qos_class(&obj["spec"]));
            limits::validate_pod(&ranges, obj)
        } else {
            limits::validate_claim(&ranges, obj)
        };
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ApiError::denied(info, name, limits::joined(&refused)))
        }
    }

    /// ResourceQuota admission, as Kubernetes' plugin: every quota of the namespace whose
    /// scopes cover the new object (or the growth of an updated one, `old` being what it
    /// was) and which limits something the object uses must have
    /// its usage known (the `resourcequota` controller fills `status.used`), must still
    /// have room for it, and, for pods, sees every container state the compute resources
    /// it limits. The usage is charged to each such quota (compare-and-swap on its
    /// status) before the object is stored; a create that then fails leaves the charge
    /// until the controller's next count, as in Kubernetes. A dry run only checks.
    pub(super) async fn admit_quota(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        obj: &Value,
        old: Option<&Value>,
        name: &str,
        dry_run: bool,
    ) -> Result<()> {
        if !self.plugins.on(Plugin::ResourceQuota) {
            return Ok(());
        }
        if !info.namespaced {
            return Ok(());
        }
        let (quotas, cache) = self.synced("", "resourcequotas").await;
        let (listed, _) = cache.list(&quotas.storage_key(ns, ""), &Filter::default());
        if listed.is_empty() {
            return Ok(());
        }
        let now = jiff::Timestamp::now();
        // A pod is decoded once, for its usage, the quotas' scopes and what they require
        // (pods reach quota only on create).
        let pod: Option<Pod> = match (info.group, info.resource) {
            ("", "pods") => serde_json::from_value(obj.clone()).ok(),
            _ => None,
        };
        let mut delta = match &pod {
            Some(p) => api::quota::pod_usage(info, p, now),
            None => api::quota::usage(info, obj, now),
        };
        if let Some(old) = old {
            let before = api::quota::usage(info, old, now);
            delta.retain(|k, v| {
                *v -= before.get(k).copied().unwrap_or(0);
                *v > 0
            });
            if delta.is_empty() {
                return Ok(());
            }
        }
        // Check every quota first, so a refusal charges none.
        let mut charges = Vec::new();
        for quota in &listed {
            if let Some(charge) = charge(info, name, quota, &delta, pod.as_ref())? {
                charges.push((quota.clone(), charge));
            }
        }
        if dry_run {
            return Ok(());
        }
        for (mut quota, mut charged) in charges {
            let key = quotas.storage_key(ns, quota["metadata"]["name"].as_str().unwrap_or(""));
            for attempt in 0.. {
                let rev: i64 = quota["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                let mut updated = (*quota).clone();
                if let Some(meta) = updated["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                }
                updated["status"]["used"] = json!(api::quota::to_list(&charged));
                match self
                    .storage
                    .update(&key, rev, super::encode(&updated)?, &Default::default())
                    .await
                {
                    Ok(_) => break,
                    Err(crate::storage::WriteError::Api(e)) => return Err(e),
                    Err(crate::storage::WriteError::Conflict { .. }) if attempt < 16 => {
                        // Another write charged or recounted it: check again on what it is now.
                        let Some(stored) = self.storage.get(&key).await? else {
                            break; // the quota went: nothing to charge
                        };
                        quota = Arc::new(decode(&stored.value, stored.mod_revision)?);
                        match charge(info, name, &quota, &delta, pod.as_ref())? {
                            Some(c) => charged = c,
                            None => break,
                        }
                    }
                    Err(crate::storage::WriteError::Conflict { .. }) => {
                        return Err(ApiError::conflict(
                            quotas,
                            quota["metadata"]["name"].as_str().unwrap_or(""),
                            "too many concurrent changes to the quota, please retry",
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// What one quota makes of an object using `delta`: None when it does not cover it or
/// limits nothing it uses, its new `used` when the object fits, a 403 otherwise.
fn charge(
    info: &ResourceInfo,
    name: &str,
    quota: &Value,
    delta: &api::quota::Usage,
    pod: Option<&Pod>,
) -> Result<Option<api::quota::Usage>> {
    let Ok(q) = serde_json::from_value::<ResourceQuota>(quota.clone()) else {
        return Ok(None);
    };
    let spec = q.spec.unwrap_or_default();
    if !api::quota::covers(&spec, pod) {
        return Ok(None);
    }
    let status = q.status.unwrap_or_default();
    let hard = api::quota::amounts(status.hard.as_ref());
    let quota_name = q.metadata.name.unwrap_or_default();
    if let Some(missing) = pod.and_then(|p| api::quota::must_specify(&hard, p)) {
        return Err(ApiError::denied(
            info,
            name,
            format!("failed quota: {quota_name}: must specify {missing}"),
        ));
    }
    let limited: api::quota::Usage = delta
        .iter()
        .filter(|(k, _)| hard.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if limited.is_empty() {
        return Ok(None);
    }
    let used = api::quota::amounts(status.used.as_ref());
    if let Some(unknown) = limited.keys().find(|k| !used.contains_key(*k)) {
        return Err(ApiError::denied(
            info,
            name,
            format!("status unknown for quota: {quota_name}, resource: {unknown}"),
        ));
    }
    if let Some(over) = api::quota::exceeded(&hard, &used, &limited) {
        return Err(ApiError::denied(
            info,
            name,
            format!("exceeded quota: {quota_name}, {over}"),
        ));
    }
    let mut total = used;
    for (k, v) in limited {
        *total.entry(k).or_default() += v;
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        api::registry::by_resource("", "v1", "pods").unwrap()
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "compute"}, "spec": {"hard": hard},
            "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> (Value, Pod) {
        let resources = cpu.map_or(json!({}), |c| json!({"requests": {"cpu": c}}));
        let v = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "web", "resources": resources}]}});
        (v.clone(), serde_json::from_value(v).unwrap())
    }

    fn try_charge(quota: &Value, cpu: Option<&str>) -> Result<Option<api::quota::Usage>> {
        let (v, p) = pod(cpu);
        let delta = api::quota::usage(pods(), &v, jiff::Timestamp::now());
        charge(pods(), "p", quota, &delta, Some(&p))
    }

    #[test]
    fn a_quota_charges_what_fits_and_refuses_the_rest_as_kubernetes_words_it() {
        let q = quota(
            json!({"pods": "2", "requests.cpu": "1"}),
            json!({"pods": "1", "requests.cpu": "600m"}),
        );
        let used = try_charge(&q, Some("300m")).unwrap().unwrap();
        assert_eq!(
            api::quota::to_list(&used)["requests.cpu"].0,
            "900m".to_string()
        );
        assert_eq!(used["pods"], 2000);
        let e = try_charge(&q, Some("600m")).unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(e.message, "pods \"p\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1");
        let e = try_charge(&q, None).unwrap_err();
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: failed quota: compute: must specify requests.cpu for: web"
        );
        let unsynced = quota(json!({"pods": "2"}), json!({}));
        let e = try_charge(&unsynced, Some("1")).unwrap_err();
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: status unknown for quota: compute, resource: pods"
        );
        let other = quota(json!({"services": "1"}), json!({"services": "0"}));
        assert!(try_charge(&other, Some("1")).unwrap().is_none());
    }
}
