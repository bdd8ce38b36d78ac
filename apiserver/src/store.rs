//! The generic registry: what create, get, list, update, delete, bind and patch mean
//! for any resource — metadata the server owns (uid, timestamps, generation,
//! resourceVersion), the spec/status split, finalizers and graceful deletion, namespace
//! checks, service allocations — on top of `storage` (writes, quorum reads) and `cache`
//! (watches and `resourceVersion=0` reads).
//!
//! Must not: know about HTTP or gRPC. Both front ends call these functions.

use crate::admission::plugins::Plugins;
use crate::admission::{self, defaults, validation};
use crate::alloc::ServiceRanges;
use crate::cache::{decode, stamp_json, Filter, WatchCache};
use crate::error::{ApiError, Cause, Result};
use crate::managed;
use crate::storage::{SideKeys, Storage, Stored, WriteError};
use api::{FieldSelector, LabelSelector, ResourceInfo};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Options of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: Option<LabelSelector>,
    pub fields: FieldSelector,
    pub limit: i64,
    pub continue_token: Option<String>,
    pub resource_version: String,
    pub resource_version_match: String,
    /// The caller only passes the items on as JSON (a plain REST list, a gRPC list):
    /// what is read from storage with no selector to apply comes back in
    /// `ListResult::json`.
    pub json_only: bool,
}

pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    /// Instead of `items`, for a `json_only` list read from storage with no selector: the
    /// stored JSON with each resourceVersion stamped in (`cache::stamp_json`), never
    /// decoded.
    pub json: Vec<Vec<u8>>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

impl ListResult {
    /// How many items it holds (decoded or not).
    pub fn count(&self) -> usize {
        self.items.len() + self.json.len()
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub dry_run: bool,
}

/// How a create or update is made.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: everything but the write.
    pub dry_run: bool,
    /// Who writes (`fieldManager`, or the client's user agent): recorded in
    /// `managedFields` as an Update.
    pub manager: Option<String>,
    /// The body is a server-side apply result that carries its own `managedFields`.
    pub apply: bool,
    /// Who asks (None for the apiserver's own writes): roles and bindings may grant only
    /// what the requester holds.
    pub requester: Option<Arc<crate::auth::Requester>>,
}

/// A server-side apply's parameters: who applies, whether conflicts are overridden.
#[derive(Clone)]
pub struct ApplyOptions<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub dry_run: bool,
    pub requester: Option<Arc<crate::auth::Requester>>,
}

impl WriteOptions {
    pub fn dry_run(dry_run: bool) -> Self {
        WriteOptions {
            dry_run,
            ..Default::default()
        }
    }
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from storage; the object as it last was.
    Gone(Value),
    /// Marked for deletion (finalizers or a graceful pod deletion); the marked object.
    Pending(Value),
}

/// What an update computes from the stored object.
pub type Mutation<'a> = dyn Fn(&Value) -> Result<Value> + Send + Sync + 'a;

mod admit;

pub struct Store {
    pub storage: Storage,
    caches: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
    pub ranges: ServiceRanges,
    pub plugins: Plugins,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// Resources whose spec changes bump `metadata.generation`.
fn has_generation(info: &ResourceInfo) -> bool {
    info.subresource("status").is_some()
        && !matches!(
            info.kind,
            "Namespace"
                | "Node"
                | "PersistentVolumeClaim"
                | "PersistentVolume"
                | "ResourceQuota"
                | "VolumeAttachment"
                | "HorizontalPodAutoscaler"
        )
}

/// Everything but metadata and status: what a generation counts changes of.
fn spec_part(v: &Value) -> Value {
    let mut s = v.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    s
}

/// The bytes stored: the object without its resourceVersion (that is the key's
/// mod_revision, stamped on every read).
fn encode(v: &Value) -> Result<Vec<u8>> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&v).map_err(ApiError::internal)
}

fn with_rv(mut v: Value, rv: i64) -> Value {
    meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
    v
}

fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<ContinueToken> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if t.rv <= 0 || t.start.contains("..") {
        return Err(bad());
    }
    Ok(t)
}

impl Store {
    pub fn new(storage: Storage, ranges: ServiceRanges, plugins: Plugins) -> Self {
        let caches = api::registry::RESOURCES
            .iter()
            .map(|info| ((info.group, info.resource), WatchCache::new(info)))
            .collect();
        Store {
            storage,
            caches,
            ranges,
            plugins,
        }
    }

    /// Starts every resource's cache feed.
    pub fn start_caches(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.caches
            .values()
            .map(|c| tokio::spawn(c.clone().run(self.storage.clone())))
            .collect()
    }

    pub fn caches_synced(&self) -> bool {
        self.caches.values().all(|c| c.is_synced())
    }

    pub fn cache(&self, info: &ResourceInfo) -> &Arc<WatchCache> {
        self.caches
            .get(&(info.group, info.resource))
            .expect("every registry resource has a cache")
    }

    /// The key prefix of a list: one namespace's objects, or all of them.
    pub fn list_prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if info.namespaced => format!("{}{ns}/", info.storage_prefix()),
            _ => info.storage_prefix(),
        }
    }

    pub async fn get(&self, info: &ResourceInfo, ns: &str, name: &str, rv: &str) -> Result<Value> {
        let key = info.storage_key(ns, name);
        if rv == "0" {
            if let Some(o) = self.cache(info).get(&key) {
                return Ok((*o).clone());
            }
        }
        match self.storage.get(&key).await? {
            Some(s) => decode(&s.value, s.mod_revision),
            None => Err(ApiError::not_found(info, name)),
        }
    }

    pub async fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult> {
        let prefix = Self::list_prefix(info, ns);
        let filter = Filter {
            namespace: None,
            labels: opts.labels.clone(),
            fields: opts.fields.clone(),
        };
        if let Some(token) = &opts.continue_token {
            let t = decode_continue(token)?;
            let start = format!("{prefix}{}", t.start);
            return self
                .list_storage(&prefix, &start, t.rv, opts, &filter, true)
                .await;
        }
        let cache = self.cache(info);
        let rv: Option<i64> = match opts.resource_version.as_str() {
            "" => None,
            s => Some(
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
            ),
        };
        let from_cache = match (rv, opts.resource_version_match.as_str()) {
            (Some(0), _) => true,
            (Some(n), "" | "NotOlderThan") => cache.is_synced() && cache.revision() >= n,
            _ => false,
        };
        if from_cache && cache.is_synced() {
            let (items, revision) = cache.list(&prefix, &filter);
            return Ok(ListResult {
                items,
                json: Vec::new(),
                revision,
                continue_token: None,
            });
        }
        let at = match (rv, opts.resource_version_match.as_str()) {
            (Some(n), "Exact") => n,
            (_, "" | "NotOlderThan" | "Exact") => 0,
            (_, other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}"
                )))
            }
        };
        self.list_storage(&prefix, &prefix, at, opts, &filter, false)
            .await
    }

    /// A (paged) list read from storage at one revision.
    async fn list_storage(
        &self,
        prefix: &str,
        start: &str,
        revision: i64,
        opts: &ListOptions,
        filter: &Filter,
        continuing: bool,
    ) -> Result<ListResult> {
        let limit = opts.limit;
        let raw = opts.json_only && filter.is_everything();
        let mut result = ListResult {
            items: Vec::new(),
            json: Vec::new(),
            revision,
            continue_token: None,
        };
        let mut key = start.to_string();
        let mut rev = revision;
        loop {
            // A paged list reads pages of at least 100 keys (selectors may skip many) and
            // at most PAGE; an unpaged one reads everything at once, as Kubernetes does.
            let fetch = if limit > 0 {
                limit.clamp(100, crate::storage::PAGE)
            } else {
                0
            };
            let page = match self.storage.range(prefix, &key, fetch, rev).await {
                Ok(p) => p,
                Err(e) if e.code == 410 && continuing => {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ))
                }
                Err(e) => return Err(e),
            };
            if rev == 0 {
                rev = page.revision;
            }
            result.revision = rev;
            let n = page.items.len();
            for (i, s) in page.items.into_iter().enumerate() {
                if limit > 0 && result.count() as i64 == limit {
                    let next = s.key.strip_prefix(prefix).unwrap_or("");
                    result.continue_token = Some(encode_continue(rev, next));
                    return Ok(result);
                }
                if raw {
                    let json = match stamp_json(&s.value, s.mod_revision) {
                        Some(j) => j,
                        None => serde_json::to_vec(&decode(&s.value, s.mod_revision)?)
                            .map_err(ApiError::internal)?,
                    };
                    result.json.push(json);
                } else {
                    let o = decode(&s.value, s.mod_revision)?;
                    if filter.matches(&o) {
                        result.items.push(Arc::new(o));
                    }
                }
                if i + 1 == n {
                    key = format!("{}\0", s.key);
                }
            }
            if !page.more || n == 0 {
                return Ok(result);
            }
            if limit > 0 && result.count() as i64 == limit {
                let next = key.strip_prefix(prefix).unwrap_or("");
                result.continue_token = Some(encode_continue(rev, next));
                return Ok(result);
            }
        }
    }

    /// Checks the body's namespace against the request's and sets it.
    fn place(info: &ResourceInfo, ns: &str, body: &mut Value) -> Result<()> {
        let meta = meta_mut(body);
        if info.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    pub async fn create(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value> {
        let dry_run = opts.dry_run;
        admission::check_type(info, &mut body)?;
        let mut obj = admission::normalize(info, body)?;
        Self::place(info, ns, &mut obj)?;
        let meta = meta_mut(&mut obj);
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name_empty = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        // With generateName, a name that turns out taken is generated again (up to 8
        // tries), as Kubernetes' apiserver does since 1.32.
        let mut generate_from = None;
        if name_empty {
            if let Some(base) = meta.get("generateName").and_then(Value::as_str) {
                if !base.is_empty() {
                    let generated = api::names::generate_name(base);
                    generate_from = Some(base.to_string());
                    meta.insert("name".into(), json!(generated));
                }
            }
        }
        let uid = uuid::Uuid::new_v4().to_string();
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if !opts.apply {
            meta.remove("managedFields");
        }
        if has_generation(info) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        defaults::apply(info.group, info.kind, &mut obj);
        if info.kind == "Job" {
            defaults::job_selector(&mut obj, &uid);
        }
        if let (Some(manager), false) = (&opts.manager, opts.apply) {
            let ty = crate::openapi::kind_schema_name(info);
            managed::record_update(
                ty.as_deref(),
                &info.api_version(),
                None,
                &mut obj,
                manager,
                "",
            );
        }
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if info.group.is_empty() && info.kind == "Pod" {
            self.admit_priority(&mut obj, &name).await?;
        }
        if info.group.is_empty() && info.kind == "PersistentVolumeClaim" {
            self.admit_storage_class(&mut obj).await;
        }
        if info.namespaced {
            self.admit_limits(info, ns, &mut obj, &name).await?;
        }
        if info.group.is_empty() && info.kind == "Pod" {
            self.admit_service_account(ns, &mut obj, &name).await?;
        }
        let causes = validation::validate_create(info, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(info, &name, causes));
        }
        self.admit_default_class(info, &obj, &name).await?;
        self.confirm_no_escalation(info, ns, &obj, &name, opts)?;
        if info.namespaced {
            let namespace = self.check_namespace(info, ns, &name).await?;
            let user = opts.requester.as_deref().map(|r| r.user.name.as_str());
            self.admit_pod_security(info, &namespace, &obj, &name, user)?;
            self.admit_quota(info, ns, &obj, None, &name, dry_run)
                .await?;
        }
        let mut key = info.storage_key(ns, &name);
        let mut name_tries = 0;
        let is_service = info.group.is_empty() && info.kind == "Service";
        let user_ip = obj["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|s| !s.is_empty());
        let mut taken = HashSet::new();
        for _attempt in 0..16 {
            let mut candidate = obj.clone();
            let mut side = SideKeys::default();
            if is_service {
                let causes = self.ranges.assign(&mut candidate, None, &taken);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(info, &name, causes));
                }
                let owner = format!("{ns}/{name}").into_bytes();
                side.create = self
                    .ranges
                    .held(&candidate)
                    .into_iter()
                    .map(|k| (k, owner.clone()))
                    .collect();
            }
            if dry_run {
                return Ok(candidate);
            }
            match self.storage.create(&key, encode(&candidate)?, &side).await {
                Ok(rev) => return Ok(with_rv(candidate, rev)),
                Err(WriteError::Api(e)) => return Err(e),
                Err(WriteError::Conflict {
                    current: Some(_), ..
                }) => match &generate_from {
                    Some(base) if name_tries < 8 => {
                        name_tries += 1;
                        name = api::names::generate_name(base);
                        meta_mut(&mut obj).insert("name".into(), json!(name));
                        key = info.storage_key(ns, &name);
                    }
                    _ => return Err(ApiError::already_exists(info, &name)),
                },
                Err(WriteError::Conflict {
                    current: None,
                    taken: t,
                }) => {
                    // An allocation collided: a chosen value is an error, a picked one is
                    // picked again.
                    for k in &t {
                        let chosen_ip = user_ip && k.starts_with(crate::alloc::IP_PREFIX);
                        let chosen_port = k.starts_with(crate::alloc::PORT_PREFIX)
                            && obj["spec"]["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|p| {
                                    p["nodePort"]
                                        .as_i64()
                                        .is_some_and(|n| k.ends_with(&format!("/{n}")))
                                });
                        if chosen_ip || chosen_port {
                            return Err(ApiError::invalid(
                                info,
                                &name,
                                vec![ServiceRanges::taken_cause(k)],
                            ));
                        }
                    }
                    taken.extend(t);
                }
            }
        }
        Err(ApiError::internal(
            "could not allocate service addresses after 16 attempts",
        ))
    }

    /// Read-modify-write with compare-and-swap: `mutate` computes the desired object from
    /// the stored one (with its resourceVersion). When `mutate` pins a resourceVersion,
    /// a concurrent change is a 409; otherwise the update is retried on the new state.
    pub async fn update_with(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        subresource: &str,
        opts: &WriteOptions,
        mutate: &Mutation<'_>,
    ) -> Result<Value> {
        let dry_run = opts.dry_run;
        let key = info.storage_key(ns, name);
        let mut current = self.storage.get(&key).await?;
        let mut taken = HashSet::new();
        for _attempt in 0..32 {
            let Some(stored) = current.take() else {
                return Err(ApiError::not_found(info, name));
            };
            let old = decode(&stored.value, stored.mod_revision)?;
            let mut body = mutate(&old)?;
            let pinned = body["metadata"]["resourceVersion"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if let Some(rv) = &pinned {
                if *rv != stored.mod_revision.to_string() {
                    return Err(ApiError::stale(info, name));
                }
            }
            admission::check_type(info, &mut body)?;
            let mut new = admission::normalize(info, body)?;
            Self::place(info, ns, &mut new)?;
            match new["metadata"]["name"].as_str() {
                None | Some("") => {
                    meta_mut(&mut new).insert("name".into(), json!(name));
                }
                Some(n) if n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                }
                Some(_) => {}
            }
            let mut new = self.merge_update(info, subresource, &old, new)?;
            // managedFields: an apply brings its own; any other write keeps the stored
            // ones and records what its manager changed.
            if !opts.apply {
                match old["metadata"].get("managedFields") {
                    Some(m) => meta_mut(&mut new).insert("managedFields".into(), m.clone()),
                    None => meta_mut(&mut new).remove("managedFields"),
                };
                if let Some(manager) = &opts.manager {
                    let ty = crate::openapi::kind_schema_name(info);
                    managed::record_update(
                        ty.as_deref(),
                        &info.api_version(),
                        Some(&old),
                        &mut new,
                        manager,
                        subresource,
                    );
                }
            }
            let causes = validation::validate_update(info, &old, &new);
            if !causes.is_empty() {
                return Err(ApiError::invalid(info, name, causes));
            }
            self.admit_default_class(info, &new, name).await?;
            if subresource.is_empty() {
                self.confirm_no_escalation(info, ns, &new, name, opts)?;
                if info.group.is_empty() && info.kind == "Pod" {
                    let user = opts.requester.as_deref().map(|r| r.user.name.as_str());
                    self.admit_pod_security_update(ns, &old, &new, name, user)?;
                }
            }
            let mut side = SideKeys::default();
            if info.group.is_empty() && info.kind == "Service" {
                let causes = self.ranges.assign(&mut new, Some(&old), &taken);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(info, name, causes));
                }
                let before: HashSet<String> = self.ranges.held(&old).into_iter().collect();
                let after: HashSet<String> = self.ranges.held(&new).into_iter().collect();
                let owner = format!("{ns}/{name}").into_bytes();
                side.create = after
                    .difference(&before)
                    .map(|k| (k.clone(), owner.clone()))
                    .collect();
                side.delete = before.difference(&after).cloned().collect();
            }
            if new == old {
                return Ok(old); // nothing changed: no write, resourceVersion unchanged
            }
            // Growth quota limits: more node ports, a claim's resize.
            if subresource.is_empty()
                && matches!(info.resource, "services" | "persistentvolumeclaims")
                && info.group.is_empty()
            {
                self.admit_quota(info, ns, &new, Some(&old), name, dry_run)
                    .await?;
            }
            // The last finalizer gone from an object being deleted: it goes now.
            let finished = !new["metadata"]["deletionTimestamp"].is_null()
                && finalizers(&new).is_empty()
                && new["spec"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
            if dry_run {
                return Ok(new);
            }
            let result = if finished {
                side.delete.extend(self.ranges_held(info, &old));
                self.storage.delete(&key, stored.mod_revision, &side).await
            } else {
                self.storage
                    .update(&key, stored.mod_revision, encode(&new)?, &side)
                    .await
            };
            match result {
                Ok(rev) => return Ok(with_rv(new, rev)),
                Err(WriteError::Api(e)) => return Err(e),
                Err(WriteError::Conflict {
                    current: now,
                    taken: t,
                }) => {
                    if pinned.is_some() {
                        return Err(ApiError::stale(info, name));
                    }
                    taken.extend(t);
                    current = now;
                }
            }
        }
        Err(ApiError::conflict(
            info,
            name,
            "too many concurrent updates; try again",
        ))
    }

    fn ranges_held(&self, info: &ResourceInfo, obj: &Value) -> Vec<String> {
        if info.group.is_empty() && info.kind == "Service" {
            self.ranges.held(obj)
        } else {
            Vec::new()
        }
    }

    /// The spec/status split and the metadata the server owns.
    fn merge_update(
        &self,
        info: &ResourceInfo,
        subresource: &str,
        old: &Value,
        new: Value,
    ) -> Result<Value> {
        let mut out = match subresource {
            "status" => {
                let mut o = old.clone();
                o["status"] = new["status"].clone();
                o
            }
            "finalize" => {
                let mut o = old.clone();
                o["spec"]["finalizers"] = new["spec"]["finalizers"].clone();
                o
            }
            "" | "scale" => {
                let mut n = new;
                if info.subresource("status").is_some() {
                    match old.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(o) = n.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                defaults::apply(info.group, info.kind, &mut n);
                if info.kind == "Job" && n["spec"]["selector"].is_null() {
                    let uid = old["metadata"]["uid"].as_str().unwrap_or("").to_string();
                    defaults::job_selector(&mut n, &uid);
                }
                n
            }
            other => {
                return Err(ApiError::no_route().with_message(format!(
                    "the server does not allow updates of the {other} subresource here"
                )))
            }
        };
        let om = &old["metadata"];
        let meta = meta_mut(&mut out);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match om.get(k) {
                Some(v) if !v.is_null() => {
                    meta.insert(k.into(), v.clone());
                }
                _ => {
                    meta.remove(k);
                }
            }
        }
        meta.insert("resourceVersion".into(), om["resourceVersion"].clone());
        if has_generation(info) && spec_part(old) != spec_part(&out) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut out).insert("generation".into(), json!(g));
        }
        Ok(out)
    }

    /// Server-side apply (`application/apply-patch+yaml`): creates the object from the
    /// applied configuration when it does not exist, otherwise merges it under field
    /// management. Returns the object and whether it was created.
    pub async fn apply(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        mut applied: Value,
        apply: &ApplyOptions<'_>,
    ) -> Result<(Value, bool)> {
        let ApplyOptions {
            manager,
            force,
            dry_run,
            ref requester,
        } = *apply;
        admission::check_type(info, &mut applied)?;
        match applied["metadata"]["name"].as_str() {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            None => {
                return Err(ApiError::bad_request(
                    "metadata.name is required in an applied configuration",
                ))
            }
        }
        let ty = crate::openapi::kind_schema_name(info);
        let opts = WriteOptions {
            dry_run,
            manager: None,
            apply: true,
            requester: requester.clone(),
        };
        for _ in 0..8 {
            let exists = self
                .storage
                .get(&info.storage_key(ns, name))
                .await?
                .is_some();
            if !exists {
                let created = managed::apply(
                    ty.as_deref(),
                    &info.api_version(),
                    None,
                    &applied,
                    manager,
                    force,
                )?;
                match self.create(info, ns, created, &opts).await {
                    Ok(o) => return Ok((o, true)),
                    Err(e) if e.reason == "AlreadyExists" => continue, // raced a create: apply to it
                    Err(e) => return Err(e),
                }
            }
            let result = self
                .update_with(info, ns, name, "", &opts, &|current| {
                    let mut out = managed::apply(
                        ty.as_deref(),
                        &info.api_version(),
                        Some(current),
                        &applied,
                        manager,
                        force,
                    )?;
                    if let Some(m) = out["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    Ok(out)
                })
                .await;
            match result {
                Err(e) if e.code == 404 => continue, // deleted meanwhile: create it
                other => return other.map(|o| (o, false)),
            }
        }
        Err(ApiError::conflict(
            info,
            name,
            "the object kept changing; try again",
        ))
    }

    /// PUT: the body replaces the object (its resourceVersion, when set, must match).
    pub async fn update(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        subresource: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value> {
        self.update_with(info, ns, name, subresource, opts, &|_old| Ok(body.clone()))
            .await
    }

    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted> {
        let key = info.storage_key(ns, name);
        let mut current = self.storage.get(&key).await?;
        for _attempt in 0..32 {
            let Some(stored) = current.take() else {
                return Err(ApiError::not_found(info, name));
            };
            let old = decode(&stored.value, stored.mod_revision)?;
            let meta = &old["metadata"];
            if let Some(uid) = &opts.uid {
                if meta["uid"].as_str() != Some(uid) {
                    return Err(ApiError::conflict(
                        info,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta["uid"].as_str().unwrap_or("")
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != stored.mod_revision.to_string() {
                    return Err(ApiError::conflict(
                        info,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            stored.mod_revision
                        ),
                    ));
                }
            }
            let marked = !meta["deletionTimestamp"].is_null();
            let mut fins = finalizers(&old);
            match opts.propagation.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") && !marked => {
                    fins.push("foregroundDeletion".into())
                }
                Some("Orphan") if !fins.iter().any(|f| f == "orphan") && !marked => fins.push("orphan".into()),
                None | Some("Background" | "Foreground" | "Orphan") => {}
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    )))
                }
            }
            let spec_fins = old["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            let grace = self.pod_grace(info, &old, opts.grace_period_seconds);
            let immediate_ok = fins.is_empty() && !spec_fins;
            if marked && !(immediate_ok && grace == 0) {
                return Ok(Deleted::Pending(old));
            }
            let result = if immediate_ok && grace == 0 {
                if opts.dry_run {
                    return Ok(Deleted::Gone(old));
                }
                let side = SideKeys {
                    delete: self.ranges_held(info, &old),
                    ..Default::default()
                };
                self.storage
                    .delete(&key, stored.mod_revision, &side)
                    .await
                    .map(|_| Deleted::Gone(old))
            } else {
                let mut new = old.clone();
                let when = if grace > 0 {
                    (chrono::Utc::now() + chrono::Duration::seconds(grace))
                        .format("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()
                } else {
                    now()
                };
                let m = meta_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(when));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if !fins.is_empty() {
                    m.insert("finalizers".into(), json!(fins));
                }
                if info.kind == "Namespace" {
                    new["status"]["phase"] = json!("Terminating");
                }
                if opts.dry_run {
                    return Ok(Deleted::Pending(new));
                }
                self.storage
                    .update(
                        &key,
                        stored.mod_revision,
                        encode(&new)?,
                        &SideKeys::default(),
                    )
                    .await
                    .map(|rev| Deleted::Pending(with_rv(new, rev)))
            };
            match result {
                Ok(d) => return Ok(d),
                Err(WriteError::Api(e)) => return Err(e),
                Err(WriteError::Conflict { current: now, .. }) => {
                    if opts.resource_version.is_some() {
                        return Err(ApiError::stale(info, name));
                    }
                    current = now;
                }
            }
        }
        Err(ApiError::conflict(
            info,
            name,
            "too many concurrent updates; try again",
        ))
    }

    /// A pod bound to a node is deleted gracefully (the kubelet finishes it); anything
    /// else at once.
    fn pod_grace(&self, info: &ResourceInfo, pod: &Value, requested: Option<i64>) -> i64 {
        if !(info.group.is_empty() && info.kind == "Pod") {
            return 0;
        }
        let bound = pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let done = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if !bound || done {
            return 0;
        }
        requested
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0)
    }

    /// `deletecollection`: deletes every matching object; returns those deleted or marked.
    pub async fn delete_collection(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<(Vec<Value>, i64)> {
        let found = self
            .list(
                info,
                ns,
                &ListOptions {
                    limit: 0,
                    continue_token: None,
                    ..list.clone()
                },
            )
            .await?;
        let mut out = Vec::new();
        for o in found.items {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            match self.delete(info, ns, name, opts).await {
                Ok(Deleted::Gone(v) | Deleted::Pending(v)) => out.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((out, found.revision))
    }

    /// `pods/binding`: sets `spec.nodeName` of an unbound pod.
    pub async fn bind(&self, ns: &str, name: &str, binding: &Value, dry_run: bool) -> Result<()> {
        let pods = api::registry::by_resource("", "v1", "pods").expect("pods");
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                pods,
                name,
                vec![Cause::required("target.name")],
            ));
        }
        if let Some(n) = binding["metadata"]["name"].as_str() {
            if !n.is_empty() && n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the binding ({n}) does not match the name of the pod ({name})"
                )));
            }
        }
        let key = pods.storage_key(ns, name);
        let mut current = self.storage.get(&key).await?;
        for _ in 0..32 {
            let Some(Stored {
                value,
                mod_revision,
                ..
            }) = current.take()
            else {
                return Err(ApiError::not_found(pods, name));
            };
            let mut pod: Value = decode(&value, mod_revision)?;
            if let Some(uid) = binding["metadata"]["uid"].as_str() {
                if !uid.is_empty() && pod["metadata"]["uid"].as_str() != Some(uid) {
                    return Err(ApiError::conflict(
                        pods,
                        name,
                        "the pod's UID does not match the binding's",
                    ));
                }
            }
            if let Some(bound) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    &format!("pod {name} is already assigned to node \"{bound}\""),
                ));
            }
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let conditions = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
            pod["status"]["conditions"] = json!(conditions);
            if dry_run {
                return Ok(());
            }
            match self
                .storage
                .update(&key, mod_revision, encode(&pod)?, &SideKeys::default())
                .await
            {
                Ok(_) => return Ok(()),
                Err(WriteError::Api(e)) => return Err(e),
                Err(WriteError::Conflict { current: now, .. }) => current = now,
            }
        }
        Err(ApiError::conflict(
            pods,
            name,
            "too many concurrent updates; try again",
        ))
    }

    /// The objects every cluster starts with: the four system namespaces and the
    /// `default/kubernetes` service with its endpoints. Safe to run on every replica.
    pub async fn bootstrap(&self, advertise: (&str, u16)) -> Result<()> {
        let ns = api::registry::by_resource("", "v1", "namespaces").expect("namespaces");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            ignore_exists(self.create(ns, "", body, &WriteOptions::default()).await)?;
        }
        let pc = api::registry::by_resource("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priorityclasses");
        for (name, value) in validation::SYSTEM_PRIORITY_CLASSES {
            let body = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value,
                "description": "A system priority class: for pods the cluster cannot do without."});
            ignore_exists(self.create(pc, "", body, &WriteOptions::default()).await)?;
        }
        for (resource, body) in crate::rbac::defaults() {
            let info = api::registry::by_resource("rbac.authorization.k8s.io", "v1", resource)
                .expect("an rbac resource");
            ignore_exists(self.create(info, "", body, &WriteOptions::default()).await)?;
        }
        let svc = api::registry::by_resource("", "v1", "services").expect("services");
        let body = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": self.ranges.first_ip(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": advertise.1}]}});
        ignore_exists(
            self.create(svc, "default", body, &WriteOptions::default())
                .await,
        )?;
        let eps = api::registry::by_resource("", "v1", "endpoints").expect("endpoints");
        let body = json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise.0}], "ports": [{"name": "https", "port": advertise.1, "protocol": "TCP"}]}]});
        ignore_exists(
            self.create(eps, "default", body, &WriteOptions::default())
                .await,
        )?;
        Ok(())
    }
}

fn ignore_exists(r: Result<Value>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

impl ApiError {
    pub fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/p-7");
        let d = decode_continue(&t).unwrap();
        assert_eq!((d.rv, d.start.as_str()), (42, "default/p-7"));
        assert_eq!(decode_continue("not-a-token").unwrap_err().code, 400);
        let evil = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"v":"x","rv":1,"start":"../secrets/"}"#);
        assert_eq!(decode_continue(&evil).unwrap_err().code, 400);
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let a = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1}, "status": {"r": 1}});
        let mut b = a.clone();
        b["metadata"]["labels"]["x"] = json!("2");
        b["status"]["r"] = json!(2);
        assert_eq!(spec_part(&a), spec_part(&b));
        b["spec"]["replicas"] = json!(2);
        assert_ne!(spec_part(&a), spec_part(&b));
    }
}
