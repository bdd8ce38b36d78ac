//! The Kubernetes REST front end: routing of `/api` and `/apis` paths, authentication
//! and authorization, request decoding (size limit, JSON or YAML), responses (objects,
//! lists, `Table`s, `Status` errors) and chunked watch streams.

use crate::admission::FieldValidation;
use crate::audit;
use crate::auth::{Attributes, User};
use crate::cache::Filter;
use crate::discovery;
use crate::error::{success_status, ApiError, Result};
use crate::store::{DeleteOptions, Deleted, ListOptions, WriteOptions};
use crate::subresources;
use crate::watch::{self, Out};
use crate::Server;
use api::{FieldSelector, LabelSelector, ResourceInfo};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Request bodies larger than this get 413 (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn respond(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after_seconds {
        if let Ok(v) = s.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// Query parameters, percent-decoded (`+` is a space, as in forms).
fn query(uri: &http::Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

/// What a resource path names.
#[derive(Debug)]
struct Target {
    info: &'static ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// A request header as text ("" when absent or not text).
fn header_text<B>(req: &Request<B>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn parse_target(segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let lookup = |r: &str| api::registry::by_resource(group, version, r);
    let t = |info, ns: Option<&&str>, name: Option<&&str>, sub: Option<&&str>| Target {
        info,
        namespace: ns.map(|s| s.to_string()),
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    };
    if let ["namespaces", ns, res, more @ ..] = rest {
        if let Some(info) = lookup(res).filter(|i| i.namespaced) {
            return match more {
                [] => Some(t(info, Some(ns), None, None)),
                [name] => Some(t(info, Some(ns), Some(name), None)),
                [name, sub] => Some(t(info, Some(ns), Some(name), Some(sub))),
                _ => None,
            };
        }
    }
    match rest {
        [res] => Some(t(lookup(res)?, None, None, None)),
        [res, name] => {
            let info = lookup(res)?;
            (!info.namespaced).then(|| t(info, None, Some(name), None))
        }
        [res, name, sub] => {
            let info = lookup(res)?;
            (!info.namespaced).then(|| t(info, None, Some(name), Some(sub)))
        }
        _ => None,
    }
}

fn bool_param(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

fn list_options(info: &ResourceInfo, q: &HashMap<String, String>) -> Result<ListOptions> {
    let labels = match q.get("labelSelector").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            LabelSelector::parse(s)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        ),
    };
    let fields = match q.get("fieldSelector").map(String::as_str) {
        None | Some("") => FieldSelector::default(),
        Some(s) => FieldSelector::parse_for(s, info.group, info.resource)
            .map_err(|e| ApiError::bad_request(format!("field label not supported: {e}")))?,
    };
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?
            .max(0),
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned().unwrap_or_default(),
        resource_version_match: q.get("resourceVersionMatch").cloned().unwrap_or_default(),
        ..Default::default()
    })
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// Serializes a list without re-encoding each item into one big `Value`: the decoded
/// `items`, then the ones still in JSON.
pub fn list_json(
    info: &ResourceInfo,
    items: &[Arc<Value>],
    json: &[Vec<u8>],
    revision: i64,
    cont: Option<&str>,
) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let raw_bytes: usize = json.iter().map(|j| j.len() + 1).sum();
    let mut out = Vec::with_capacity(256 + items.len() * 1024 + raw_bytes);
    out.extend_from_slice(b"{\"kind\":");
    out.extend_from_slice(json!(info.list_kind).to_string().as_bytes());
    out.extend_from_slice(b",\"apiVersion\":");
    out.extend_from_slice(json!(info.api_version()).to_string().as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(meta.to_string().as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &**item);
    }
    for (i, j) in json.iter().enumerate() {
        if i > 0 || !items.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(j);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Decodes a request body: JSON, YAML or Kubernetes protobuf; anything else is 415.
fn decode_body(content_type: &str, bytes: &[u8]) -> Result<Value> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let object = match ct {
        "" | "application/json" | "*/*" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }?;
    audit::decoded(&object);
    Ok(object)
}

async fn read_body(mut body: hyper::body::Incoming) -> Result<Bytes> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= MAX_BODY {
            buf.extend_from_slice(&data);
        } else if total > 8 * MAX_BODY {
            // Stop reading a runaway body; the connection closes with the answer.
            break;
        }
        // Between the limit and 8x it, the rest is drained so the client reads the
        // 413 instead of a reset connection.
    }
    if total > MAX_BODY {
        return Err(ApiError::too_large(format!(
            "the request body is larger than the {MAX_BODY}-byte limit"
        )));
    }
    let body = buf.freeze();
    audit::request_body(&body);
    Ok(body)
}

/// Serves one request: everything but the gRPC services.
pub async fn handle(
    server: Arc<Server>,
    req: Request<hyper::body::Incoming>,
    cert_user: Option<User>,
    source: std::net::IpAddr,
) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut outcome = (String::new(), String::new());
    let arrival = (server.auditor.as_ref()).map(|a| audit::Arrival::new(a, &req, source));
    let resp = audit::audited(arrival, async {
        let (verb, resource, resp) = route(&server, req, cert_user).await;
        outcome = (verb, resource);
        resp
    })
    .await;
    let (verb, resource) = outcome;
    let code = resp.status().as_u16();
    server
        .metrics
        .observe(&verb, &resource, code, start.elapsed().as_secs_f64());
    tracing::debug!(%method, path, code, "request");
    resp
}

fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Returns (verb, resource) for the metrics along with the response.
async fn route(
    server: &Arc<Server>,
    req: Request<hyper::body::Incoming>,
    cert_user: Option<User>,
) -> (String, String, Response<Body>) {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    let user = cert_user.or_else(|| server.bearer_user(req.headers()));
    if public(&path) {
        let q = query(req.uri());
        return ("get".into(), String::new(), plain(server, &path, &q));
    }
    let Some(user) = user else {
        return (
            "".into(),
            String::new(),
            error_response(&ApiError::unauthorized()),
        );
    };
    if req.headers().contains_key("impersonate-user") {
        audit::impersonating(&user);
    }
    let user = match crate::auth::impersonate(req.headers(), user, server.authorizer.as_ref()) {
        Ok(u) => u,
        Err(e) => return ("impersonate".into(), String::new(), error_response(&e)),
    };
    let accept = header_text(&req, header::ACCEPT);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // What is not a resource (discovery, OpenAPI, /metrics) is authorized by its path;
    // a review by its kind.
    let review = discovery::Review::at(&segs);
    let target = parse_target(&segs);
    if target.is_none() {
        let verb = match review {
            Some(_) => "create",
            None => "get",
        };
        let attrs = Attributes {
            user: &user,
            verb,
            group: review.map_or("", |r| r.group),
            resource: review.map_or("", |r| r.resource),
            subresource: "",
            namespace: "",
            name: "",
            path: if review.is_some() { "" } else { &path },
        };
        if let Err(why) = audit::authorize(server.authorizer.as_ref(), &attrs, "v1") {
            let e = ApiError::forbidden(crate::auth::forbidden_message(
                &attrs,
                review.map_or("", |r| r.resource),
                &why,
            ));
            return (verb.into(), String::new(), error_response(&e));
        }
    }
    let aggregated = discovery::wants_aggregated(&accept);
    let doc = match (segs.as_slice(), aggregated) {
        (["api"], Some(v)) => Some((discovery::aggregated(true, v), Some(v))),
        (["apis"], Some(v)) => Some((discovery::aggregated(false, v), Some(v))),
        (["api"], None) => Some((discovery::api_versions(&server.address), None)),
        (["apis"], None) => Some((discovery::api_group_list(), None)),
        (["api", v], _) => discovery::resource_list("", v).map(|d| (d, None)),
        (["apis", g], _) => discovery::group(g).map(|d| (d, None)),
        (["apis", g, v], _) => discovery::resource_list(g, v).map(|d| (d, None)),
        (["openapi", "v3"], _) => Some((crate::openapi::root(), None)),
        (["openapi", "v3", rest @ ..], _) => {
            let resp = match crate::openapi::document(&rest.join("/")) {
                Some(d) => respond(200, "application/json", d.json.clone()),
                None => error_response(&ApiError::no_route()),
            };
            return ("get".into(), String::new(), resp);
        }
        (["metrics"], _) => {
            let text = server.metrics.encode();
            return (
                "get".into(),
                String::new(),
                respond(200, "text/plain; version=0.0.4", text),
            );
        }
        _ => None,
    };
    if let Some((doc, aggregated)) = doc {
        let ct = match aggregated {
            Some(v) => discovery::aggregated_content_type(v),
            None => "application/json".to_string(),
        };
        return (
            "get".into(),
            String::new(),
            respond(200, &ct, serde_json::to_vec(&doc).unwrap_or_default()),
        );
    }
    if let Some(review) = review {
        let resp = if req.method() != Method::POST {
            error_response(&ApiError::method_not_allowed(format!(
                "{} only accept create",
                review.resource
            )))
        } else if review.kind == "SelfSubjectReview" {
            json_response(201, &discovery::self_subject_review(&user))
        } else {
            let content_type = header_text(&req, header::CONTENT_TYPE);
            let body = read_body(req.into_body())
                .await
                .and_then(|bytes| decode_body(&content_type, &bytes));
            match body {
                Ok(body) if review.kind == "SelfSubjectRulesReview" => {
                    json_response(201, &crate::rbac::rules_review(&server.store, &user, &body))
                }
                Ok(body) => json_response(
                    201,
                    &discovery::self_subject_access_review(
                        &user,
                        &body,
                        server.authorizer.as_ref(),
                    ),
                ),
                Err(e) => error_response(&e),
            }
        };
        return ("create".into(), review.resource.into(), resp);
    }
    let Some(target) = target else {
        return (
            "".into(),
            String::new(),
            error_response(&ApiError::no_route()),
        );
    };
    let resource = target.info.resource.to_string();
    let q = query(req.uri());
    let verb = match (req.method(), &target.name) {
        (&Method::GET, None) if bool_param(&q, "watch") => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => {
            let e = ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                req.method()
            ));
            return ("".into(), resource, error_response(&e));
        }
    };
    let attrs = Attributes {
        user: &user,
        verb,
        group: target.info.group,
        resource: target.info.resource,
        subresource: target.sub.as_deref().unwrap_or(""),
        namespace: target.namespace.as_deref().unwrap_or(""),
        name: target.name.as_deref().unwrap_or(""),
        path: "",
    };
    if let Err(why) = audit::authorize(server.authorizer.as_ref(), &attrs, target.info.version) {
        let e = ApiError::forbidden(crate::auth::forbidden_message(
            &attrs,
            &target.info.qualified_resource(),
            &why,
        ));
        return (verb.into(), resource, error_response(&e));
    }
    let requester = Arc::new(crate::auth::Requester {
        user,
        authorizer: server.authorizer.clone(),
    });
    let resp = match serve(server, req, &target, verb, &q, &accept, requester).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    (verb.into(), resource, resp)
}

fn plain(server: &Server, path: &str, q: &HashMap<String, String>) -> Response<Body> {
    if path == "/version" {
        return json_response(200, &discovery::version());
    }
    health(server, path, q)
}

/// `/healthz`, `/livez` and `/readyz`, as kube-apiserver answers them: each endpoint's
/// checks (`ping`; `/readyz` also `informer-sync`, the watch caches), "ok" or a 500
/// naming what failed; `?verbose` lists every check, `?exclude=<check>` leaves one out,
/// and `/<endpoint>/<check>` asks one (404 for a check the endpoint does not have).
fn health(server: &Server, path: &str, q: &HashMap<String, String>) -> Response<Body> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let endpoint = parts.next().unwrap_or("");
    let only = parts.next();
    let synced = || {
        server
            .store
            .caches_synced()
            .then_some(())
            .ok_or("caches are not synced yet")
    };
    let mut checks: Vec<(&str, Result<(), &str>)> = vec![("ping", Ok(()))];
    if endpoint == "readyz" {
        checks.push(("informer-sync", synced()));
    }
    if let Some(name) = only {
        return match checks.into_iter().find(|(n, _)| *n == name) {
            Some((_, Ok(()))) => respond(200, "text/plain", "ok"),
            Some((n, Err(why))) => respond(
                500,
                "text/plain",
                format!("internal server error: {n} failed: {why}"),
            ),
            None => error_response(&ApiError::no_route()),
        };
    }
    let excluded = q.get("exclude").map(String::as_str);
    checks.retain(|(n, _)| Some(*n) != excluded);
    let failed = checks.iter().any(|(_, r)| r.is_err());
    if !failed && !q.contains_key("verbose") {
        return respond(200, "text/plain", "ok");
    }
    let mut text = String::new();
    for (name, result) in &checks {
        match result {
            Ok(()) => text.push_str(&format!("[+]{name} ok\n")),
            Err(why) => text.push_str(&format!("[-]{name} failed: {why}\n")),
        }
    }
    if let Some(x) = excluded {
        text.push_str(&format!("[+]{x} excluded: ok\n"));
    }
    let verdict = if failed { "failed" } else { "passed" };
    text.push_str(&format!("{endpoint} check {verdict}\n"));
    respond(if failed { 500 } else { 200 }, "text/plain", text)
}

async fn serve(
    server: &Arc<Server>,
    req: Request<hyper::body::Incoming>,
    t: &Target,
    verb: &str,
    q: &HashMap<String, String>,
    accept: &str,
    requester: Arc<crate::auth::Requester>,
) -> Result<Response<Body>> {
    let store = &server.store;
    let info = t.info;
    let ns = t.namespace.as_deref().unwrap_or("");
    let name = t.name.as_deref().unwrap_or("");
    let sub = t.sub.as_deref().unwrap_or("");
    if !sub.is_empty() && info.subresource(sub).is_none() {
        return Err(ApiError::no_route());
    }
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    if let Some(d) = q.get("dryRun").filter(|d| !d.is_empty() && *d != "All") {
        return Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: {d:?}: supported values: \"All\""
        )));
    }
    let validation = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    // Who writes: `fieldManager`, else the client's name from its user agent, as
    // Kubernetes does.
    let manager = q
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| {
            req.headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|m| !m.is_empty())
                .map(|m| m.chars().take(128).collect())
        });
    let write = WriteOptions {
        dry_run,
        manager: manager.clone(),
        apply: false,
        requester: Some(requester.clone()),
    };
    let user = Some(requester.user.name.as_str());
    let table = wants_table(accept);
    let include_object = q.get("includeObject").is_some_and(|v| v == "Object");
    let content_type = header_text(&req, header::CONTENT_TYPE);
    match verb {
        "list" => {
            let mut opts = list_options(info, q)?;
            opts.json_only = !table;
            let r = store.list(info, t.namespace.as_deref(), &opts).await?;
            if table {
                let tv = crate::tables::table(
                    info.resource,
                    &r.items,
                    r.revision,
                    r.continue_token.as_deref(),
                    include_object,
                );
                return Ok(json_response(200, &tv));
            }
            let body = list_json(
                info,
                &r.items,
                &r.json,
                r.revision,
                r.continue_token.as_deref(),
            );
            // Freeing thousands of decoded objects takes a while: not on the reply's path.
            if r.items.len() > 1000 {
                tokio::task::spawn_blocking(move || drop(r));
            }
            Ok(respond(200, "application/json", body))
        }
        "watch" => watch_response(server, t, q, table, include_object),
        "get" => {
            if !matches!(sub, "" | "status" | "scale") {
                return Err(ApiError::no_route());
            }
            let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
            let o = store.get(info, ns, name, rv).await?;
            if sub == "scale" {
                return Ok(json_response(200, &subresources::to_scale(&o)));
            }
            if table {
                let tv =
                    crate::tables::table(info.resource, &[Arc::new(o)], 0, None, include_object);
                return Ok(json_response(200, &tv));
            }
            Ok(json_response(200, &o))
        }
        "create" => {
            let bytes = read_body(req.into_body()).await?;
            let body = decode_body(&content_type, &bytes)?;
            match (t.name.as_deref(), sub) {
                (None, "") => {
                    let mut warnings = validation.check(info, &body)?;
                    warnings.extend(store.pod_security_warnings(info, ns, &body, user));
                    let o = store.create(info, ns, body, &write).await?;
                    Ok(with_warnings(json_response(201, &o), &warnings))
                }
                (Some(pod), "eviction") => {
                    subresources::evict(store, ns, pod, &body, dry_run).await?;
                    let mut s = success_status();
                    s["code"] = json!(201);
                    Ok(json_response(201, &s))
                }
                (Some(account), "token") => {
                    let review = subresources::token_request(server, ns, account, &body).await?;
                    Ok(json_response(201, &review))
                }
                (Some(pod), "binding") => {
                    store.bind(ns, pod, &body, dry_run).await?;
                    let mut s = success_status();
                    s["code"] = json!(201);
                    Ok(json_response(201, &s))
                }
                _ => Err(ApiError::method_not_allowed(format!(
                    "the server does not allow creating {}{}",
                    info.resource,
                    if sub.is_empty() {
                        String::new()
                    } else {
                        format!("/{sub}")
                    }
                ))),
            }
        }
        "update" => {
            if !matches!(sub, "" | "status" | "finalize" | "scale") {
                return Err(ApiError::no_route());
            }
            let bytes = read_body(req.into_body()).await?;
            if sub == "scale" {
                let scale =
                    subresources::update_scale(store, info, ns, name, None, &bytes, &write).await?;
                return Ok(json_response(200, &scale));
            }
            let body = decode_body(&content_type, &bytes)?;
            let mut warnings = validation.check(info, &body)?;
            if sub.is_empty() && info.kind != "Pod" {
                warnings.extend(store.pod_security_warnings(info, ns, &body, user));
            }
            let o = store.update(info, ns, name, sub, body, &write).await?;
            Ok(with_warnings(json_response(200, &o), &warnings))
        }
        "patch" => {
            if !matches!(sub, "" | "status" | "scale") {
                return Err(ApiError::no_route());
            }
            let bytes = read_body(req.into_body()).await?;
            if sub == "scale" {
                let scale = subresources::update_scale(
                    store,
                    info,
                    ns,
                    name,
                    Some(&content_type),
                    &bytes,
                    &write,
                )
                .await?;
                return Ok(json_response(200, &scale));
            }
            if content_type.starts_with("application/apply-patch+yaml") {
                if !sub.is_empty() {
                    return Err(ApiError::unsupported_media_type(&content_type));
                }
                let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                    return Err(ApiError::bad_request(
                        "PATCH requests with the apply content type must have a fieldManager",
                    ));
                };
                let applied: Value = serde_yaml::from_slice(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                let warnings = validation.check(info, &applied)?;
                let force = bool_param(q, "force");
                let (o, created) = store
                    .apply(
                        info,
                        ns,
                        name,
                        applied,
                        &crate::store::ApplyOptions {
                            manager,
                            force,
                            dry_run,
                            requester: Some(requester.clone()),
                        },
                    )
                    .await?;
                return Ok(with_warnings(
                    json_response(if created { 201 } else { 200 }, &o),
                    &warnings,
                ));
            }
            let warnings = std::sync::Mutex::new(Vec::new());
            let o = store
                .update_with(info, ns, name, sub, &write, &|current| {
                    let out = crate::patch::patched(info.kind, &content_type, current, &bytes)?;
                    *warnings.lock().unwrap_or_else(|p| p.into_inner()) =
                        validation.check(info, &out)?;
                    Ok(out)
                })
                .await?;
            let warnings = warnings.into_inner().unwrap_or_else(|p| p.into_inner());
            Ok(with_warnings(json_response(200, &o), &warnings))
        }
        "delete" => {
            let bytes = read_body(req.into_body()).await?;
            let opts = delete_options(&bytes, q, dry_run)?;
            match store.delete(info, ns, name, &opts).await? {
                Deleted::Pending(o) => Ok(json_response(200, &o)),
                Deleted::Gone(o) => {
                    let mut s = success_status();
                    s["details"] = json!({"name": name, "group": info.group, "kind": info.resource,
                        "uid": o["metadata"]["uid"]});
                    Ok(json_response(200, &s))
                }
            }
        }
        "deletecollection" => {
            let bytes = read_body(req.into_body()).await?;
            let opts = delete_options(&bytes, q, dry_run)?;
            let list = list_options(info, q)?;
            let (items, rev) = store
                .delete_collection(info, t.namespace.as_deref(), &list, &opts)
                .await?;
            let items: Vec<Arc<Value>> = items.into_iter().map(Arc::new).collect();
            Ok(respond(
                200,
                "application/json",
                list_json(info, &items, &[], rev, None),
            ))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Adds a `Warning` header per message (kubectl prints them as `Warning: …`).
fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// `DeleteOptions` from the body (kubectl sends one) and the query.
fn delete_options(
    body: &[u8],
    q: &HashMap<String, String>,
    dry_run: bool,
) -> Result<DeleteOptions> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let grace = match q.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
        None => b["gracePeriodSeconds"].as_i64(),
    };
    let orphan = b["orphanDependents"]
        .as_bool()
        .or_else(|| q.get("orphanDependents").map(|o| o == "true"));
    let propagation = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| b["propagationPolicy"].as_str().map(str::to_string))
        .or_else(|| {
            orphan.map(|o| {
                if o {
                    "Orphan".to_string()
                } else {
                    "Background".to_string()
                }
            })
        });
    let dry = dry_run
        || b["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        uid: b["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        propagation,
        grace_period_seconds: grace,
        dry_run: dry,
    })
}

/// Builds the watch parameters shared by REST and gRPC.
pub fn watch_params(
    info: &ResourceInfo,
    ns: Option<&str>,
    opts: &ListOptions,
    bookmarks: bool,
    timeout_seconds: Option<u64>,
) -> Result<watch::Params> {
    let from = match opts.resource_version.as_str() {
        "" | "0" => None,
        s => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let namespace = ns.filter(|_| info.namespaced).map(str::to_string);
    // Kubernetes spreads unspecified watch timeouts over 30–60 minutes.
    let timeout = timeout_seconds.unwrap_or(1800 + rand::random::<u64>() % 1800);
    Ok(watch::Params {
        prefix: crate::store::Store::list_prefix(info, ns),
        filter: Filter {
            namespace,
            labels: opts.labels.clone(),
            fields: opts.fields.clone(),
        },
        from,
        bookmarks,
        timeout: Duration::from_secs(timeout),
    })
}

fn watch_response(
    server: &Arc<Server>,
    t: &Target,
    q: &HashMap<String, String>,
    table: bool,
    include_object: bool,
) -> Result<Response<Body>> {
    let info = t.info;
    let opts = list_options(info, q)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => None,
    };
    let params = watch_params(
        info,
        t.namespace.as_deref(),
        &opts,
        bool_param(q, "allowWatchBookmarks"),
        timeout,
    )?;
    let frames = watch::stream(
        server.store.cache(info).clone(),
        server.store.storage.clone(),
        params,
        server.metrics.watchers.clone(),
        move |out| {
            Ok::<_, BoxError>(hyper::body::Frame::data(watch_line(
                info,
                out,
                table,
                include_object,
            )))
        },
    );
    let body = StreamBody::new(frames);
    let mut r = Response::new(BodyExt::boxed_unsync(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// One line of a REST watch stream.
fn watch_line(info: &ResourceInfo, out: Out, table: bool, include_object: bool) -> Bytes {
    let mut line = Vec::with_capacity(512);
    match out {
        Out::Event { kind, object } => {
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            if table {
                let t = crate::tables::table(
                    info.resource,
                    &[object.value().clone()],
                    0,
                    None,
                    include_object,
                );
                let _ = serde_json::to_writer(&mut line, &t);
            } else {
                object.write_json(&mut line);
            }
            line.extend_from_slice(b"}\n");
        }
        Out::Bookmark(rv) => {
            let v = json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}}});
            line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
        }
        Out::Error(e) => {
            let v = json!({"type": "ERROR", "object": e.to_status()});
            line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
        }
    }
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        let t = parse_target(&["api", "v1", "namespaces", "d", "pods", "p", "status"]).unwrap();
        assert_eq!(
            (
                t.info.resource,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("d"), Some("p"), Some("status"))
        );
        let t = parse_target(&["api", "v1", "namespaces", "d"]).unwrap();
        assert_eq!(
            (t.info.resource, t.name.as_deref()),
            ("namespaces", Some("d"))
        );
        let t = parse_target(&["api", "v1", "namespaces", "d", "finalize"]).unwrap();
        assert_eq!(
            (t.info.resource, t.sub.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let t = parse_target(&["apis", "apps", "v1", "deployments"]).unwrap();
        assert_eq!((t.info.resource, t.namespace), ("deployments", None));
        assert!(parse_target(&["api", "v1", "pods", "p"]).is_none());
        assert!(parse_target(&["api", "v1", "nothing"]).is_none());
    }

    #[test]
    fn bodies_decode_as_json_or_yaml_and_refuse_others() {
        assert_eq!(
            decode_body("application/yaml", b"a: 1\n").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(decode_body("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(
            decode_body("application/vnd.kubernetes.protobuf", b"k8s")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(decode_body("application/cbor", b"x").unwrap_err().code, 415);
    }

    #[test]
    fn query_strings_are_decoded() {
        let uri: http::Uri = "/api/v1/pods?labelSelector=app%3Dx&fieldSelector=spec.nodeName%3Dn"
            .parse()
            .unwrap();
        let q = query(&uri);
        assert_eq!(q["labelSelector"], "app=x");
        assert_eq!(q["fieldSelector"], "spec.nodeName=n");
    }
}
