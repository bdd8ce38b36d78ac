//! `/health` and `/metrics` over plain HTTP on `--listen-metrics-urls`.

use crate::raft::RaftNode;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

pub struct Endpoints {
    pub raft: RaftNode,
    pub registry: Arc<Mutex<Registry>>,
    /// Refreshes gauges (db size, watchers) just before they are encoded.
    pub refresh: Box<dyn Fn() + Send + Sync>,
}

fn respond(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

impl Endpoints {
    fn handle(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/health" | "/livez" | "/readyz" => {
                let status = self.raft.status();
                // Like etcd's readiness: a leader, and this member's client URLs published
                // to the cluster.
                let reason = if status.leader_id == 0 {
                    Some("no leader")
                } else if !status.published {
                    Some("member attributes not yet published")
                } else {
                    None
                };
                match reason {
                    None => respond(
                        StatusCode::OK,
                        "application/json",
                        r#"{"health":"true"}"#.into(),
                    ),
                    Some(reason) => respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        format!(r#"{{"health":"false","reason":"{reason}"}}"#),
                    ),
                }
            }
            "/metrics" => {
                (self.refresh)();
                let mut text = String::new();
                let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => respond(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(e) => respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        e.to_string(),
                    ),
                }
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "404 page not found\n".into(),
            ),
        }
    }
}

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = endpoints.handle(req.uri().path());
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}
