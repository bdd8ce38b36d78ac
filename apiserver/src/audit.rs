//! Auditing, as kube-apiserver's: with `--audit-policy-file` and `--audit-log-path`, every
//! request the policy selects (REST, and the components' gRPC calls) is written to the
//! log as `audit.k8s.io/v1` Event lines (JSON), one per stage (RequestReceived; ResponseStarted for a watch;
//! ResponseComplete), at the level of the first policy rule that matches it: Metadata
//! (who, what, the answer's status), Request (and the request's object), RequestResponse
//! (and the response's object). Every audited response carries its `Audit-Id` header.
//!
//! A request's record lives in a task-local while it is served; the front ends authorize
//! through `authorize`, which also decides the request's level. The functions here
//! are no-ops outside one, so a server without auditing pays nothing. Lines go to a
//! writer thread, so a slow disk does not hold requests up.

use crate::auth::{Attributes, Authorizer, User};
use crate::rest::Body;
use anyhow::{bail, Context};
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

/// How much of a request is recorded, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
    /// Overrides the policy's `omitManagedFields` for this rule's requests.
    #[serde(default)]
    omit_managed_fields: Option<bool>,
}

/// An audit policy (`audit.k8s.io/v1` Policy): the first rule a request matches decides
/// its level; requests no rule matches are not audited.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<String>,
    /// Whether request and response objects are logged without `managedFields`.
    #[serde(default)]
    omit_managed_fields: bool,
}

/// What the policy decides for a request.
#[derive(Debug, PartialEq)]
pub struct Decision {
    pub level: Level,
    pub omit_stages: Vec<String>,
    pub omit_managed_fields: bool,
}

const STAGES: &[&str] = &[
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

impl Policy {
    pub fn from_yaml(text: &str) -> anyhow::Result<Policy> {
        let v: Value = serde_yaml::from_str(text)?;
        let api_version = v["apiVersion"].as_str().unwrap_or("");
        if v["kind"] != "Policy" || !matches!(api_version, "audit.k8s.io/v1") {
            bail!("expected kind Policy of apiVersion audit.k8s.io/v1");
        }
        let policy: Policy = serde_json::from_value(v)?;
        let stages = policy
            .omit_stages
            .iter()
            .chain(policy.rules.iter().flat_map(|r| &r.omit_stages));
        for s in stages {
            if !STAGES.contains(&s.as_str()) {
                bail!("omitStages: unknown stage {s:?}");
            }
        }
        for r in &policy.rules {
            if !r.non_resource_urls.is_empty()
                && (!r.resources.is_empty() || !r.namespaces.is_empty())
            {
                bail!("a rule may name resources or namespaces, or nonResourceURLs, not both");
            }
        }
        Ok(policy)
    }

    /// The level of a request, the stages not to record, and whether objects are logged
    /// without their managedFields.
    pub fn decide(&self, a: &Attributes) -> Decision {
        match self.rules.iter().find(|r| r.matches(a)) {
            Some(r) => {
                let mut omit_stages = self.omit_stages.clone();
                omit_stages.extend(r.omit_stages.iter().cloned());
                Decision {
                    level: r.level,
                    omit_stages,
                    omit_managed_fields: r.omit_managed_fields.unwrap_or(self.omit_managed_fields),
                }
            }
            None => Decision {
                level: Level::None,
                omit_stages: Vec::new(),
                omit_managed_fields: false,
            },
        }
    }
}

impl Rule {
    /// Whether the rule covers a request (a resource request has a resource; any other
    /// is judged by its path).
    fn matches(&self, a: &Attributes) -> bool {
        let any_or = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        if !any_or(&self.users, &a.user.name)
            || !(self.user_groups.is_empty()
                || a.user.groups.iter().any(|g| self.user_groups.contains(g)))
            || !any_or(&self.verbs, a.verb)
        {
            return false;
        }
        let resource_request = !a.resource.is_empty();
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return resource_request
                && any_or(&self.namespaces, a.namespace)
                && (self.resources.is_empty() || self.resources.iter().any(|gr| gr.matches(a)));
        }
        if !self.non_resource_urls.is_empty() {
            return !resource_request
                && self.non_resource_urls.iter().any(|spec| {
                    spec == "*"
                        || spec == a.path
                        || spec
                            .strip_suffix('*')
                            .is_some_and(|prefix| a.path.starts_with(prefix))
                });
        }
        true
    }
}

impl GroupResources {
    fn matches(&self, a: &Attributes) -> bool {
        let (resource, sub) = (a.resource, a.subresource);
        if self.group != a.group {
            return false;
        }
        if !self.resource_names.is_empty() && !self.resource_names.iter().any(|n| n == a.name) {
            return false;
        }
        let combined = if sub.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{sub}")
        };
        self.resources.is_empty()
            || self.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!sub.is_empty() && r.strip_prefix("*/") == Some(sub))
                    || r.strip_suffix("/*") == Some(resource) && !sub.is_empty()
            })
    }
}

/// The policy and the log.
pub struct Auditor {
    policy: Policy,
    lines: std::sync::mpsc::Sender<Vec<u8>>,
}

impl Auditor {
    /// From `--audit-policy-file` and `--audit-log-path` ("-": standard output; a file is
    /// rotated by `rotation`); None unless both are set, as in kube-apiserver.
    pub fn open(
        policy: Option<&Path>,
        log: Option<&str>,
        rotation: Rotation,
    ) -> anyhow::Result<Option<Arc<Auditor>>> {
        let (Some(policy_file), Some(log)) = (policy, log) else {
            if policy.is_some() {
                tracing::warn!("--audit-policy-file without --audit-log-path: nothing is audited");
            }
            return Ok(None);
        };
        let text = std::fs::read_to_string(policy_file)
            .with_context(|| format!("--audit-policy-file: reading {}", policy_file.display()))?;
        let policy = Policy::from_yaml(&text)
            .with_context(|| format!("--audit-policy-file: {}", policy_file.display()))?;
        let mut out: Box<dyn Write + Send> = if log == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                RotatingFile::open(Path::new(log), rotation)
                    .with_context(|| format!("--audit-log-path: opening {log}"))?,
            )
        };
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut result = out.write_all(&line);
                    // Everything queued meanwhile goes out before the flush.
                    while let (Ok(()), Ok(more)) = (&result, rx.try_recv()) {
                        result = out.write_all(&more);
                    }
                    if let Err(e) = result.and_then(|()| out.flush()) {
                        tracing::error!(error = %e, "writing the audit log failed");
                    }
                }
            })?;
        Ok(Some(Arc::new(Auditor { policy, lines: tx })))
    }

    fn write(&self, event: &Value) {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        if self.lines.send(line).is_err() {
            tracing::error!("the audit log writer is gone");
        }
    }
}

/// When the audit log file is rotated (`--audit-log-maxsize`, `--audit-log-maxbackup`,
/// `--audit-log-maxage`).
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// Bytes past which the file is rotated.
    pub max_size: u64,
    /// Old files kept (0: all).
    pub max_backups: usize,
    /// Days an old file is kept (0: any age).
    pub max_age_days: u64,
}

/// The audit log file, rotated as kube-apiserver's is: a write that would take it past
/// `max_size` first renames it `<name>-<UTC time>.<ext>` and starts a new one; then old
/// files beyond `max_backups` or older than `max_age_days` are removed.
struct RotatingFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    rotation: Rotation,
}

const STAMP: &str = "%Y-%m-%dT%H-%M-%S%.3f";

impl RotatingFile {
    fn open(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// The file name's stem and extension (with its dot).
    fn parts(&self) -> (String, String) {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name.rfind('.').filter(|&i| i > 0) {
            Some(i) => (name[..i].to_string(), name[i..].to_string()),
            None => (name, String::new()),
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let (stem, ext) = self.parts();
        // Names are unique to the millisecond: a second rotation within one takes the
        // next free one rather than overwrite the first.
        let mut at = chrono::Utc::now();
        let mut backup;
        loop {
            let stamp = at.format(STAMP);
            backup = self.path.with_file_name(format!("{stem}-{stamp}{ext}"));
            if !backup.exists() {
                break;
            }
            at += chrono::Duration::milliseconds(1);
        }
        std::fs::rename(&self.path, &backup)?;
        *self = RotatingFile::open(&self.path, self.rotation)?;
        self.prune(chrono::Utc::now())
    }

    /// Removes the old files the limits no longer keep.
    fn prune(&self, now: chrono::DateTime<chrono::Utc>) -> std::io::Result<()> {
        let (stem, ext) = self.parts();
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut old: Vec<(chrono::NaiveDateTime, std::path::PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stamp = name
                .strip_prefix(&format!("{stem}-"))
                .and_then(|rest| rest.strip_suffix(ext.as_str()));
            if let Some(t) =
                stamp.and_then(|t| chrono::NaiveDateTime::parse_from_str(t, STAMP).ok())
            {
                old.push((t, path));
            }
        }
        old.sort();
        let r = self.rotation;
        let too_many = if r.max_backups == 0 {
            0
        } else {
            old.len().saturating_sub(r.max_backups)
        };
        for (i, (t, path)) in old.iter().enumerate() {
            let age_days = (now.naive_utc() - *t).num_days();
            if i < too_many || (r.max_age_days > 0 && age_days >= r.max_age_days as i64) {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// One request's audit state.
struct Record {
    auditor: Arc<Auditor>,
    id: String,
    received: String,
    uri: String,
    source: IpAddr,
    user_agent: String,
    level: Level,
    omit: Vec<String>,
    omit_managed_fields: bool,
    verb: String,
    user: Option<User>,
    /// Who asked, when they asked as someone else (`user` is then whom they became).
    impersonator: Option<User>,
    object_ref: Option<Value>,
    /// The request's body as it came, and the object it decoded to (preferred: it is
    /// there for YAML and protobuf bodies too); kept at Request level and above.
    request_bytes: Option<Bytes>,
    request_object: Option<Value>,
    annotations: Map<String, Value>,
}

tokio::task_local! {
    static RECORD: Arc<Mutex<Record>>;
}

/// Drops `metadata.managedFields` from an object, or from each item of a list.
fn strip_managed_fields(o: &mut Value) {
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    if let Some(items) = o["items"].as_array_mut() {
        items.iter_mut().for_each(strip_managed_fields);
    }
}

fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn with_record<T>(f: impl FnOnce(&mut Record) -> T) -> Option<T> {
    RECORD
        .try_with(|r| f(&mut r.lock().unwrap_or_else(|p| p.into_inner())))
        .ok()
}

impl Record {
    fn event(&self, stage: &str, status: Option<Value>, response: Option<Value>) -> Option<Value> {
        if self.level == Level::None || self.omit.iter().any(|s| s == stage) {
            return None;
        }
        let mut e = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1",
            "level": format!("{:?}", self.level), "auditID": self.id, "stage": stage,
            "requestURI": self.uri, "verb": self.verb,
            "sourceIPs": [self.source.to_string()], "userAgent": self.user_agent,
            "requestReceivedTimestamp": self.received, "stageTimestamp": timestamp(),
        });
        let user_info = |u: &User| {
            let mut user = json!({"username": u.name, "groups": u.groups});
            if !u.uid.is_empty() {
                user["uid"] = json!(u.uid);
            }
            user
        };
        match (&self.impersonator, &self.user) {
            (Some(by), Some(as_user)) => {
                e["user"] = user_info(by);
                e["impersonatedUser"] = user_info(as_user);
            }
            (None, Some(u)) => e["user"] = user_info(u),
            _ => {}
        }
        if let Some(o) = &self.object_ref {
            e["objectRef"] = o.clone();
        }
        if let Some(s) = status {
            e["responseStatus"] = s;
        }
        let logged = |mut o: Value| {
            if self.omit_managed_fields {
                strip_managed_fields(&mut o);
            }
            o
        };
        if self.level >= Level::Request {
            let object = self.request_object.clone().or_else(|| {
                let bytes = self.request_bytes.as_ref()?;
                serde_json::from_slice(bytes).ok()
            });
            if let Some(o) = object {
                e["requestObject"] = logged(o);
            }
        }
        if let Some(o) = response.filter(|_| self.level == Level::RequestResponse) {
            e["responseObject"] = logged(o);
        }
        if stage != "RequestReceived" && !self.annotations.is_empty() {
            e["annotations"] = Value::Object(self.annotations.clone());
        }
        Some(e)
    }

    fn emit(&self, stage: &str, status: Option<Value>, response: Option<Value>) {
        if let Some(e) = self.event(stage, status, response) {
            self.auditor.write(&e);
        }
    }
}

/// A request as it arrived, before it is served: the start of its audit record.
pub struct Arrival(Record);

impl Arrival {
    pub fn new(
        auditor: &Arc<Auditor>,
        req: &http::Request<hyper::body::Incoming>,
        source: IpAddr,
    ) -> Self {
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Arrival(Record {
            auditor: auditor.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            received: timestamp(),
            uri: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            source,
            user_agent,
            level: Level::None,
            omit: Vec::new(),
            omit_managed_fields: false,
            verb: req.method().as_str().to_lowercase(),
            user: None,
            impersonator: None,
            object_ref: None,
            request_bytes: None,
            request_object: None,
            annotations: Map::new(),
        })
    }
}

/// Serves `fut` (one REST request) with its audit record, if it has one, then records
/// how it ended.
pub async fn audited(
    arrival: Option<Arrival>,
    fut: impl std::future::Future<Output = Response<Body>>,
) -> Response<Body> {
    let Some(Arrival(record)) = arrival else {
        return fut.await;
    };
    let record = Arc::new(Mutex::new(record));
    let resp = RECORD.scope(record.clone(), fut).await;
    finish(record, resp).await
}

/// Authorizes a request (`version`: its resource's API version), recording it for
/// auditing: who asked for what decides its level and records RequestReceived, and the
/// authorizer's answer becomes the `authorization.k8s.io/decision` and `/reason`
/// annotations. Every front end authorizes through here.
pub fn authorize(authorizer: &dyn Authorizer, a: &Attributes, version: &str) -> Result<(), String> {
    with_record(|r| {
        let d = r.auditor.policy.decide(a);
        r.level = d.level;
        r.omit = d.omit_stages;
        r.omit_managed_fields = d.omit_managed_fields;
        r.verb = a.verb.to_string();
        r.user = Some(a.user.clone());
        r.object_ref = (!a.resource.is_empty()).then(|| {
            let mut v = json!({"resource": a.resource, "apiVersion": version});
            let parts = [
                ("namespace", a.namespace),
                ("name", a.name),
                ("apiGroup", a.group),
                ("subresource", a.subresource),
            ];
            for (k, text) in parts {
                if !text.is_empty() {
                    v[k] = json!(text);
                }
            }
            v
        });
        r.emit("RequestReceived", None, None);
    });
    let decision = authorizer.authorize(a);
    with_record(|r| {
        let (decision, reason) = match &decision {
            Ok(()) => ("allow", ""),
            Err(why) => ("forbid", why.as_str()),
        };
        r.annotations
            .insert("authorization.k8s.io/decision".into(), json!(decision));
        r.annotations
            .insert("authorization.k8s.io/reason".into(), json!(reason));
    });
    decision
}

/// The user who asked, when the request impersonates another (called before the
/// impersonation replaces it).
pub fn impersonating(by: &User) {
    with_record(|r| r.impersonator = Some(by.clone()));
}

/// Adds an annotation to the request's events (PodSecurity's, for one).
pub fn annotate(key: &str, value: impl Into<String>) {
    with_record(|r| {
        r.annotations.insert(key.to_string(), json!(value.into()));
    });
}

/// The request's body, kept for Request and RequestResponse levels (read as JSON only
/// if nothing decoded it: see `decoded`).
pub fn request_body(bytes: &Bytes) {
    with_record(|r| {
        if r.level >= Level::Request {
            r.request_bytes = Some(bytes.clone());
        }
    });
}

/// The object a request body decoded to (JSON, YAML or protobuf).
pub fn decoded(object: &Value) {
    with_record(|r| {
        if r.level >= Level::Request {
            r.request_object = Some(object.clone());
        }
    });
}

/// Records the answer: ResponseComplete (a watch: ResponseStarted now, ResponseComplete
/// when its stream ends), and the `Audit-Id` header.
async fn finish(record: Arc<Mutex<Record>>, resp: Response<Body>) -> Response<Body> {
    let (level, id, watch) = {
        let r = record.lock().unwrap_or_else(|p| p.into_inner());
        (r.level, r.id.clone(), r.verb == "watch")
    };
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = id.parse() {
        parts.headers.insert("audit-id", v);
    }
    if level == Level::None {
        return Response::from_parts(parts, body);
    }
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return finish_grpc(record, parts, body, level, watch).await;
    }
    let code = parts.status.as_u16();
    let ok_status = json!({"metadata": {}, "code": code});
    if watch && code < 300 {
        return WatchEnd::started(record, parts, body, ok_status);
    }
    // The body is needed for an error's status or the response object; these answers
    // are whole in memory already.
    let wanted = code >= 300 || level == Level::RequestResponse;
    let (body, object) = if wanted {
        match body.collect().await {
            Ok(c) => {
                let bytes = c.to_bytes();
                let object: Option<Value> = serde_json::from_slice(&bytes).ok();
                (crate::rest::full(bytes), object)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a response to audit it");
                (crate::rest::full(Bytes::new()), None)
            }
        }
    } else {
        (body, None)
    };
    let status = match &object {
        Some(s) if code >= 300 && s["kind"] == "Status" => {
            let mut st = json!({"metadata": {}, "code": code});
            for k in ["status", "message", "reason", "details"] {
                if !s[k].is_null() {
                    st[k] = s[k].clone();
                }
            }
            st
        }
        _ => ok_status,
    };
    record
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .emit("ResponseComplete", Some(status), object);
    Response::from_parts(parts, body)
}

/// The status a gRPC answer failed with (from its headers when it is trailers-only, or
/// its trailers): the Kubernetes `Status` this apiserver puts in the details, else the
/// gRPC message as a 500. None for success.
fn grpc_failure(headers: &http::HeaderMap) -> Option<Value> {
    use base64::Engine;
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    if code == 0 {
        return None;
    }
    let details = headers.get("grpc-status-details-bin").and_then(|v| {
        let engines = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::STANDARD,
        ];
        engines.iter().find_map(|e| e.decode(v.as_bytes()).ok())
    });
    let status: Option<Value> = details.and_then(|d| serde_json::from_slice(&d).ok());
    Some(match status {
        Some(s) if s["kind"] == "Status" => {
            let mut st = json!({"metadata": {}, "code": s["code"]});
            for k in ["status", "message", "reason", "details"] {
                if !s[k].is_null() {
                    st[k] = s[k].clone();
                }
            }
            st
        }
        _ => {
            let message = headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            json!({"metadata": {}, "code": 500, "status": "Failure", "message": message})
        }
    })
}

/// The object a unary gRPC answer carries (one length-prefixed message: an `Object`, or
/// the `ObjectList` of a List, shown as a list).
fn grpc_object(data: &[u8], list: bool) -> Option<Value> {
    use prost::Message;
    use proto::apiserver::v1 as pb;
    let message = data.get(5..)?;
    if list {
        let l = pb::ObjectList::decode(message).ok()?;
        let items: Vec<Value> = l
            .items
            .iter()
            .filter_map(|o| serde_json::from_slice(&o.json).ok())
            .collect();
        Some(json!({"metadata": {"resourceVersion": l.resource_version}, "items": items}))
    } else {
        serde_json::from_slice(&pb::Object::decode(message).ok()?.json).ok()
    }
}

/// `finish` for a gRPC call: its status is in the gRPC headers or trailers; a create
/// that succeeded counts as 201, as over REST.
async fn finish_grpc(
    record: Arc<Mutex<Record>>,
    parts: http::response::Parts,
    body: Body,
    level: Level,
    watch: bool,
) -> Response<Body> {
    let emit = |stage: &str, status: Value, object: Option<Value>| {
        record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .emit(stage, Some(status), object);
    };
    if let Some(failed) = grpc_failure(&parts.headers) {
        emit("ResponseComplete", failed, None);
        return Response::from_parts(parts, body);
    }
    let (verb, list) = {
        let r = record.lock().unwrap_or_else(|p| p.into_inner());
        (r.verb.clone(), r.uri.ends_with("/List"))
    };
    let ok = json!({"metadata": {}, "code": if verb == "create" { 201 } else { 200 }});
    if watch {
        return WatchEnd::started(record, parts, body, ok);
    }
    if level < Level::RequestResponse {
        emit("ResponseComplete", ok, None);
        return Response::from_parts(parts, body);
    }
    // The whole answer is needed for its object; it is one message and its trailers.
    let (data, trailers) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading a gRPC answer to audit it");
            (Bytes::new(), None)
        }
    };
    match trailers.as_ref().and_then(grpc_failure) {
        Some(failed) => emit("ResponseComplete", failed, None),
        None => emit("ResponseComplete", ok, grpc_object(&data, list)),
    }
    let mut frames = vec![hyper::body::Frame::data(data)];
    frames.extend(trailers.map(hyper::body::Frame::trailers));
    let frames = frames.into_iter().map(Ok::<_, crate::rest::BoxError>);
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    Response::from_parts(parts, body.boxed_unsync())
}

/// A watch's body: ResponseComplete is recorded when the stream is done (ended, or
/// dropped because the client left).
struct WatchEnd {
    inner: Body,
    record: Option<Arc<Mutex<Record>>>,
}

impl hyper::body::Body for WatchEnd {
    type Data = Bytes;
    type Error = crate::rest::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl WatchEnd {
    /// Records ResponseStarted with `status`, and answers with the watch's stream.
    fn started(
        record: Arc<Mutex<Record>>,
        parts: http::response::Parts,
        body: Body,
        status: Value,
    ) -> Response<Body> {
        let r = record.lock().unwrap_or_else(|p| p.into_inner());
        r.emit("ResponseStarted", Some(status), None);
        drop(r);
        let body = WatchEnd {
            inner: body,
            record: Some(record),
        };
        Response::from_parts(parts, body.boxed_unsync())
    }
}

impl Drop for WatchEnd {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            let r = record.lock().unwrap_or_else(|p| p.into_inner());
            let ok = json!({"metadata": {}, "code": 200});
            r.emit("ResponseComplete", Some(ok), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
omitManagedFields: true
rules:
- level: None
  resources: [{group: "", resources: [configmaps], resourceNames: [noisy]}]
- level: RequestResponse
  resources: [{group: "", resources: [pods, "pods/*"]}]
- level: Request
  verbs: [create, update]
  namespaces: [prod]
- level: None
  users: ["system:kube-scheduler"]
- level: Metadata
  userGroups: [dev]
  nonResourceURLs: ["/api*", /version]
- level: Metadata
  resources: [{group: apps, resources: ["*/scale"]}]
  omitManagedFields: false
"#;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = Policy::from_yaml(POLICY).unwrap();
        let admin = &user("admin", &["system:masters"]);
        let dev = &user("d", &["dev"]);
        // A resource request (group, resource, subresource, namespace, name), or a path.
        type Res<'a> = Option<(&'a str, &'a str, &'a str, &'a str, &'a str)>;
        fn attrs<'a>(u: &'a User, verb: &'a str, res: Res<'a>, path: &'a str) -> Attributes<'a> {
            let (group, resource, subresource, namespace, name) = res.unwrap_or_default();
            Attributes {
                user: u,
                verb,
                group,
                resource,
                subresource,
                namespace,
                name,
                path,
            }
        }
        let level =
            |u: &User, verb: &str, res: Res, path: &str| p.decide(&attrs(u, verb, res, path)).level;
        let obj = |group, resource, subresource, namespace, name| {
            Some((group, resource, subresource, namespace, name))
        };
        let cm = |name| obj("", "configmaps", "", "prod", name);
        assert_eq!(level(admin, "get", cm("noisy"), ""), Level::None);
        assert_eq!(level(admin, "create", cm("app"), ""), Level::Request);
        assert_eq!(level(admin, "get", cm("app"), ""), Level::None, "no rule");
        let pod = |sub| obj("", "pods", sub, "dev", "p");
        assert_eq!(level(admin, "get", pod(""), ""), Level::RequestResponse);
        assert_eq!(level(admin, "get", pod("log"), ""), Level::RequestResponse);
        let scale = obj("apps", "deployments", "scale", "dev", "web");
        assert_eq!(level(admin, "update", scale, ""), Level::Metadata);
        let deploy = obj("apps", "deployments", "", "dev", "web");
        assert_eq!(level(admin, "update", deploy, ""), Level::None);
        assert_eq!(level(dev, "get", None, "/apis/apps/v1"), Level::Metadata);
        assert_eq!(level(dev, "get", None, "/version"), Level::Metadata);
        assert_eq!(level(dev, "get", None, "/metrics"), Level::None);
        assert_eq!(level(admin, "get", None, "/version"), Level::None);
        let d = p.decide(&attrs(admin, "get", pod(""), ""));
        assert_eq!(d.omit_stages, vec!["RequestReceived".to_string()]);
        assert!(d.omit_managed_fields, "the policy's default");
        let d = p.decide(&attrs(admin, "update", scale, ""));
        assert!(!d.omit_managed_fields, "the rule's own");
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::from_yaml("apiVersion: v1\nkind: ConfigMap\n").is_err());
        let stage = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Later]\n";
        assert!(Policy::from_yaml(stage).is_err());
        let level = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n";
        assert!(Policy::from_yaml(level).is_err());
    }

    #[test]
    fn the_log_rotates_and_keeps_what_the_limits_allow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_size: 10,
            max_backups: 2,
            max_age_days: 0,
        };
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        for i in 0..4 {
            // Each line fills the file: the next one rotates it.
            f.write_all(format!("line {i}:\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line 3:\n");
        assert!(names[..2]
            .iter()
            .all(|n| n.starts_with("audit-") && n.ends_with(".log")));
        let newest = std::fs::read_to_string(dir.path().join(&names[1])).unwrap();
        assert_eq!(newest, "line 2:\n");
        // An age limit removes backups older than it.
        let aged = RotatingFile {
            rotation: Rotation {
                max_age_days: 1,
                ..rotation
            },
            ..RotatingFile::open(&path, rotation).unwrap()
        };
        aged.prune(chrono::Utc::now() + chrono::Duration::days(2))
            .unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
