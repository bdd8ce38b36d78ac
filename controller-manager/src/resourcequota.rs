//! The resourcequota controller: keeps each ResourceQuota's status, `hard` a copy of
//! `spec.hard` and `used` what the objects of its namespace that its scopes cover use of
//! each of those resources (counted by `api::quota`, as the apiserver's quota admission
//! counts them; a resource nothing uses is "0").
//!
//! Pods, services, claims, config maps and secrets come from informers: one coming,
//! going or changing what it uses resyncs the quotas of its namespace. Other kinds a
//! quota counts (`count/deployments.apps`, `count/jobs.batch`, …) are listed when the
//! quota syncs, and from the first such sync one watch of the kind across namespaces
//! resyncs a namespace's quotas when one of its objects is deleted (Kubernetes' quota
//! monitors; creates are charged by admission already).
//! Every quota is resynced every `--resource-quota-sync-period` as well, and a namespace's
//! quotas once a deleted pod's grace period is over (a pod stuck terminating then no
//! longer counts). The status is written only when its amounts differ, with the quota's
//! resourceVersion: a quota changed meanwhile (admission charging it) is looked at again.

use crate::controller::{key, run_workers, split, Requeue};
use crate::Context;
use api::quota::{self, Usage};
use api::ResourceInfo;
use client::dynamic::DynamicApi;
use client::informer::Event;
use client::{Api, Informer, WatchEvent, WorkQueue};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus,
    Secret, Service,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a lost race (a write that met a newer version) waits before it looks again.
const RETRY: Option<Duration> = Some(Duration::from_millis(100));

/// The kinds whose usage comes from this controller's informers, as (group, resource).
const WATCHED: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "services"),
    ("", "persistentvolumeclaims"),
    ("", "resourcequotas"),
    ("", "configmaps"),
    ("", "secrets"),
];

/// Resource names that count objects of a core kind without `count/`.
const LEGACY: &[&str] = &[
    "configmaps",
    "secrets",
    "resourcequotas",
    "replicationcontrollers",
    "services",
    "pods",
    "persistentvolumeclaims",
];

#[derive(Clone)]
pub struct ResourceQuotaController {
    ctx: Context,
    quotas: Informer<ResourceQuota>,
    pods: Informer<Pod>,
    services: Informer<Service>,
    claims: Informer<PersistentVolumeClaim>,
    configmaps: Informer<ConfigMap>,
    secrets: Informer<Secret>,
    queue: WorkQueue<String>,
    period: Duration,
    /// The listed kinds whose deletions are watched, by qualified resource.
    replenished: Arc<Mutex<HashSet<String>>>,
}

fn core(resource: &str) -> &'static ResourceInfo {
    api::registry::by_resource("", "v1", resource)
        .unwrap_or_else(|| panic!("{resource} are not in the registry"))
}

/// Adds what an object uses of the resources in `hard` to `total`.
fn charge(total: &mut Usage, hard: &Usage, u: Usage) {
    for (k, v) in u {
        if hard.contains_key(&k) {
            let t = total.entry(k).or_insert(0);
            *t = t.saturating_add(v);
        }
    }
}

/// The kinds not watched that `hard` counts (`count/<resource>[.<group>]`, or a legacy
/// name), each with the names it answers for.
fn listed(hard: &Usage) -> Vec<(&'static ResourceInfo, Vec<String>)> {
    let mut out: Vec<(&'static ResourceInfo, Vec<String>)> = Vec::new();
    for name in hard.keys() {
        let (resource, group) = match name.strip_prefix("count/") {
            Some(r) => r.split_once('.').unwrap_or((r, "")),
            None if LEGACY.contains(&name.as_str()) => (name.as_str(), ""),
            None => continue,
        };
        if WATCHED.contains(&(group, resource)) {
            continue;
        }
        let Some(info) = api::registry::RESOURCES.iter().find(|r| {
            r.group == group && r.resource == resource && r.namespaced && r.verbs.contains(&"list")
        }) else {
            continue;
        };
        match out.iter_mut().find(|(i, _)| std::ptr::eq(*i, info)) {
            Some((_, names)) => names.push(name.clone()),
            None => out.push((info, vec![name.clone()])),
        }
    }
    out
}

/// Whether the stored status differs from `hard` and `used` (as amounts: `1` is `1000m`).
fn needs_write(status: Option<&ResourceQuotaStatus>, hard: &Usage, used: &Usage) -> bool {
    quota::amounts(status.and_then(|s| s.hard.as_ref())) != *hard
        || quota::amounts(status.and_then(|s| s.used.as_ref())) != *used
}

/// Whether a quota's status is behind its spec: other hard limits, or one not counted.
fn behind(q: &ResourceQuota) -> bool {
    let hard = quota::amounts(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
    let status = q.status.as_ref();
    let used = quota::amounts(status.and_then(|s| s.used.as_ref()));
    quota::amounts(status.and_then(|s| s.hard.as_ref())) != hard
        || hard.keys().any(|k| !used.contains_key(k))
}

/// How long until a pod being deleted stops counting (its grace period is over), plus a
/// second; None if it is not being deleted or already does not count.
fn uncounted_in(pod: &Pod, now: jiff::Timestamp) -> Option<Duration> {
    let at = pod.metadata.deletion_timestamp.as_ref()?;
    let grace = pod.metadata.deletion_grace_period_seconds?;
    let left = now.duration_until(at.0 + jiff::SignedDuration::from_secs(grace));
    if left.is_negative() {
        return None;
    }
    Some(Duration::try_from(left).ok()? + Duration::from_secs(1))
}

fn enqueue_namespace(queue: &WorkQueue<String>, quotas: &[Arc<ResourceQuota>]) {
    for q in quotas {
        queue.add(key(&q.metadata));
    }
}

/// Resyncs the quotas of an object's namespace when an object of `K` comes, goes, or
/// changes what it uses.
fn watch_usage<K: client::Object>(
    informer: &Informer<K>,
    info: &'static ResourceInfo,
    quotas: &Informer<ResourceQuota>,
    queue: &WorkQueue<String>,
) {
    let (quotas, queue) = (quotas.clone(), queue.clone());
    informer.add_handler(move |ev| {
        let o = match &ev {
            Event::Add(o) | Event::Update(_, o) | Event::Delete(o) => *o,
        };
        let targets = quotas
            .store()
            .in_namespace(o.metadata().namespace.as_deref().unwrap_or_default());
        if targets.is_empty() {
            return;
        }
        if let Event::Update(old, new) = ev {
            let now = jiff::Timestamp::now();
            let uses = |o: &K| {
                serde_json::to_value(o)
                    .ok()
                    .map(|v| quota::usage(info, &v, now))
            };
            if uses(old) == uses(new) {
                return;
            }
        }
        enqueue_namespace(&queue, &targets);
    });
}

/// Follows one watch of `api`'s kind across namespaces from `from` (now, when empty),
/// calling `gone` with the namespace of each object deleted and keeping `from` at the
/// newest revision seen, until the stream ends. A watch that expired is `Err` 410.
async fn follow_deletions(
    api: &DynamicApi,
    from: &mut String,
    gone: &impl Fn(&str),
) -> client::Result<()> {
    if from.is_empty() {
        *from = api.revision("").await?;
    }
    let mut events = api.watch("", from).await?;
    while let Some(ev) = events.next().await {
        let object = match ev? {
            WatchEvent::Error(e) => return Err(e),
            WatchEvent::Bookmark(rv) => {
                if !rv.is_empty() {
                    *from = rv;
                }
                continue;
            }
            WatchEvent::Deleted(o) => {
                gone(o["metadata"]["namespace"].as_str().unwrap_or_default());
                o
            }
            WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
        };
        if let Some(rv) = object["metadata"]["resourceVersion"].as_str() {
            *from = rv.to_string();
        }
    }
    Ok(())
}

impl ResourceQuotaController {
    pub fn new(ctx: &Context, period: Duration) -> Self {
        let c = ResourceQuotaController {
            ctx: ctx.clone(),
            quotas: ctx.factory.informer::<ResourceQuota>(),
            pods: ctx.factory.informer::<Pod>(),
            services: ctx.factory.informer::<Service>(),
            claims: ctx.factory.informer::<PersistentVolumeClaim>(),
            configmaps: ctx.factory.informer::<ConfigMap>(),
            secrets: ctx.factory.informer::<Secret>(),
            queue: WorkQueue::default(),
            period,
            replenished: Arc::default(),
        };
        // A quota's status is this controller's (and admission's): only a new quota, a
        // changed spec or a status behind the spec needs a count.
        let q = c.queue.clone();
        c.quotas.add_handler(move |ev| match ev {
            Event::Add(rq) => q.add(key(&rq.metadata)),
            Event::Update(old, new) => {
                if old.spec != new.spec || behind(new) {
                    q.add(key(&new.metadata));
                }
            }
            Event::Delete(_) => {}
        });
        let (q, quotas, info) = (c.queue.clone(), c.quotas.clone(), core("pods"));
        c.pods.add_handler(move |ev| {
            let pod = match &ev {
                Event::Add(p) | Event::Update(_, p) | Event::Delete(p) => *p,
            };
            let targets = quotas
                .store()
                .in_namespace(pod.metadata.namespace.as_deref().unwrap_or_default());
            if targets.is_empty() {
                return;
            }
            let now = jiff::Timestamp::now();
            let (changed, newly_deleting) = match ev {
                Event::Add(_) => (true, true),
                Event::Delete(_) => (true, false),
                // The spec too: it decides which scopes select the pod.
                Event::Update(old, new) => (
                    old.spec != new.spec
                        || quota::pod_usage(info, old, now) != quota::pod_usage(info, new, now),
                    old.metadata.deletion_timestamp.is_none(),
                ),
            };
            if changed {
                enqueue_namespace(&q, &targets);
            }
            // Look again once a pod being deleted stops counting.
            if let Some(later) = newly_deleting.then(|| uncounted_in(pod, now)).flatten() {
                for t in &targets {
                    q.add_after(key(&t.metadata), later);
                }
            }
        });
        watch_usage(&c.services, core("services"), &c.quotas, &c.queue);
        watch_usage(
            &c.claims,
            core("persistentvolumeclaims"),
            &c.quotas,
            &c.queue,
        );
        watch_usage(&c.configmaps, core("configmaps"), &c.quotas, &c.queue);
        watch_usage(&c.secrets, core("secrets"), &c.quotas, &c.queue);
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.quotas.clone()),
            Box::new(self.pods.clone()),
            Box::new(self.services.clone()),
            Box::new(self.claims.clone()),
            Box::new(self.configmaps.clone()),
            Box::new(self.secrets.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("resourcequota", self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
        let (queue, quotas) = (self.queue.clone(), self.quotas.clone());
        let period = self.period.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                for k in quotas.store().keys() {
                    queue.add(k);
                }
            }
        });
    }

    /// Adds what the cached objects of one kind in `ns` that `spec` covers use.
    fn charge_cached<K: client::Object>(
        informer: &Informer<K>,
        info: &'static ResourceInfo,
        ns: &str,
        spec: &ResourceQuotaSpec,
        hard: &Usage,
        now: jiff::Timestamp,
        total: &mut Usage,
    ) -> anyhow::Result<()> {
        // Scopes select pods only.
        if !quota::covers(spec, None) {
            return Ok(());
        }
        for o in informer.store().in_namespace(ns) {
            let v = serde_json::to_value(o.as_ref())?;
            charge(total, hard, quota::usage(info, &v, now));
        }
        Ok(())
    }

    /// Has deletions of `info`'s objects resync their namespace's quotas from now on: one
    /// watch of the kind across namespaces, resumed when it ends; when it expired (and
    /// deletions may have gone unheard) every quota is resynced.
    fn replenish(&self, info: &'static ResourceInfo) {
        let fresh = self
            .replenished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.qualified_resource());
        if !fresh {
            return;
        }
        let api = DynamicApi::new(self.ctx.client.clone(), info);
        let (quotas, queue) = (self.quotas.clone(), self.queue.clone());
        tokio::spawn(async move {
            let gone = |ns: &str| enqueue_namespace(&queue, &quotas.store().in_namespace(ns));
            let mut from = String::new();
            let mut backoff = Duration::from_millis(100);
            loop {
                match follow_deletions(&api, &mut from, &gone).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) if e.is_gone() => {
                        from.clear();
                        for k in quotas.store().keys() {
                            queue.add(k);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(kind = %info.qualified_resource(), error = %e, "watching deletions failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let Some(rq) = self.quotas.store().get(key) else {
            return Ok(None);
        };
        let (ns, _) = split(key);
        let spec = rq.spec.clone().unwrap_or_default();
        let hard = quota::amounts(spec.hard.as_ref());
        let now = jiff::Timestamp::now();
        let mut total = Usage::new();
        let pods = core("pods");
        for p in self.pods.store().in_namespace(ns) {
            if quota::covers(&spec, Some(&p)) {
                charge(&mut total, &hard, quota::pod_usage(pods, &p, now));
            }
        }
        let services = core("services");
        Self::charge_cached(&self.services, services, ns, &spec, &hard, now, &mut total)?;
        let claims = core("persistentvolumeclaims");
        Self::charge_cached(&self.claims, claims, ns, &spec, &hard, now, &mut total)?;
        let quotas = core("resourcequotas");
        Self::charge_cached(&self.quotas, quotas, ns, &spec, &hard, now, &mut total)?;
        let configmaps = core("configmaps");
        Self::charge_cached(
            &self.configmaps,
            configmaps,
            ns,
            &spec,
            &hard,
            now,
            &mut total,
        )?;
        let secrets = core("secrets");
        Self::charge_cached(&self.secrets, secrets, ns, &spec, &hard, now, &mut total)?;
        // A kind that cannot be listed keeps its last count (and the sync is retried).
        let mut failed: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        // Scopes select pods only: a scoped quota counts none of these kinds.
        let kinds = if quota::covers(&spec, None) {
            listed(&hard)
        } else {
            Vec::new()
        };
        for (info, names) in kinds {
            self.replenish(info);
            match DynamicApi::new(self.ctx.client.clone(), info)
                .list(ns)
                .await
            {
                Ok(objects) => {
                    for o in &objects {
                        charge(&mut total, &hard, quota::usage(info, o, now));
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    errors.push(format!("listing {}: {e}", info.qualified_resource()));
                    failed.extend(names);
                }
            }
        }
        let previous = quota::amounts(rq.status.as_ref().and_then(|s| s.used.as_ref()));
        let used: Usage = hard
            .keys()
            .map(|k| {
                let from = if failed.contains(k) {
                    &previous
                } else {
                    &total
                };
                (k.clone(), from.get(k).copied().unwrap_or(0))
            })
            .collect();
        if needs_write(rq.status.as_ref(), &hard, &used) {
            let mut updated = (*rq).clone();
            updated.status = Some(ResourceQuotaStatus {
                hard: spec.hard.clone(),
                used: Some(quota::to_list(&used)),
            });
            match Api::<ResourceQuota>::namespaced(self.ctx.client.clone(), ns)
                .replace_status(&updated)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_conflict() => return Ok(RETRY),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        if !errors.is_empty() {
            anyhow::bail!("{}", errors.join("; "));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(pairs: &[(&str, i64)]) -> Usage {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn status(v: serde_json::Value) -> ResourceQuotaStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn writes_only_when_amounts_differ() {
        let hard = usage(&[("pods", 2000), ("requests.cpu", 1000)]);
        let used = usage(&[("pods", 0), ("requests.cpu", 600)]);
        let same = status(json!({"hard": {"pods": "2", "requests.cpu": "1000m"},
            "used": {"pods": "0", "requests.cpu": "0.6"}}));
        assert!(!needs_write(Some(&same), &hard, &used));
        assert!(needs_write(None, &hard, &used));
        // A name not counted yet, one no longer limited, another amount.
        let missing = status(json!({"hard": {"pods": "2", "requests.cpu": "1"},
            "used": {"requests.cpu": "600m"}}));
        assert!(needs_write(Some(&missing), &hard, &used));
        let extra = status(json!({"hard": {"pods": "2", "requests.cpu": "1"},
            "used": {"pods": "0", "requests.cpu": "600m", "secrets": "1"}}));
        assert!(needs_write(Some(&extra), &hard, &used));
        let other_hard = status(json!({"hard": {"pods": "3", "requests.cpu": "1"},
            "used": {"pods": "0", "requests.cpu": "600m"}}));
        assert!(needs_write(Some(&other_hard), &hard, &used));
        // Nothing limited and no status: nothing to write.
        assert!(!needs_write(None, &Usage::new(), &Usage::new()));
    }

    #[test]
    fn a_status_behind_its_spec_is_noticed() {
        let rq = |v: serde_json::Value| -> ResourceQuota { serde_json::from_value(v).unwrap() };
        let spec = json!({"hard": {"pods": "2", "count/configmaps": "3"}});
        assert!(behind(&rq(json!({"spec": spec}))));
        assert!(!behind(&rq(json!({"spec": spec, "status": {
            "hard": {"pods": "2", "count/configmaps": "3"},
            "used": {"pods": "1", "count/configmaps": "0"}}}))));
        assert!(behind(&rq(json!({"spec": spec, "status": {
            "hard": {"pods": "2", "count/configmaps": "3"}, "used": {"pods": "1"}}}))));
        assert!(behind(&rq(json!({"spec": spec, "status": {
            "hard": {"pods": "1", "count/configmaps": "3"},
            "used": {"pods": "1", "count/configmaps": "0"}}}))));
    }

    #[test]
    fn kinds_not_watched_are_listed_once_for_all_their_names() {
        let hard = usage(&[
            ("configmaps", 1),
            ("count/configmaps", 1),
            ("count/deployments.apps", 1),
            ("count/jobs.batch", 1),
            ("secrets", 1),
            ("pods", 1),
            ("count/services", 1),
            ("resourcequotas", 1),
            ("requests.cpu", 1),
            ("count/widgets.example.com", 1),
            ("count/nodes", 1),
        ]);
        let got: Vec<(String, Vec<String>)> = listed(&hard)
            .into_iter()
            .map(|(i, n)| (i.qualified_resource(), n))
            .collect();
        let want = |r: &str, n: &[&str]| (r.to_string(), n.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            got,
            vec![
                want("deployments.apps", &["count/deployments.apps"]),
                want("jobs.batch", &["count/jobs.batch"]),
            ]
        );
    }

    #[test]
    fn a_deleted_pod_is_looked_at_again_after_its_grace_period() {
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let pod = |at: &str, grace: i64| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p",
                "deletionTimestamp": at, "deletionGracePeriodSeconds": grace}}))
            .unwrap()
        };
        assert_eq!(
            uncounted_in(&pod("2025-01-01T00:00:00Z", 30), now),
            Some(Duration::from_secs(31))
        );
        assert_eq!(uncounted_in(&pod("2024-12-31T23:59:00Z", 30), now), None);
        let live: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(uncounted_in(&live, now), None);
    }

    #[test]
    fn charges_only_limited_names() {
        let hard = usage(&[("pods", 2000)]);
        let mut total = Usage::new();
        charge(
            &mut total,
            &hard,
            usage(&[("pods", 1000), ("requests.cpu", 100)]),
        );
        charge(&mut total, &hard, usage(&[("pods", 1000)]));
        assert_eq!(total, usage(&[("pods", 2000)]));
    }
}
