//! The components' `/metrics`, `/healthz` and `/readyz` endpoint (plain HTTP on
//! `--metrics-bind-address`, loopback by default).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the endpoint serves: the registry, and whether the component is ready (caches
/// synced; for leader-elected components that holds on standbys too).
#[derive(Clone)]
pub struct Health {
    pub registry: Arc<Mutex<Registry>>,
    pub ready: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            registry: Arc::new(Mutex::new(Registry::default())),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

fn respond(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

impl Health {
    fn handle(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/healthz" | "/livez" => respond(StatusCode::OK, "text/plain", "ok".into()),
            "/readyz" => {
                if self.ready.load(Ordering::Relaxed) {
                    respond(StatusCode::OK, "text/plain", "ok".into())
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "caches not synced".into(),
                    )
                }
            }
            "/metrics" => {
                let mut text = String::new();
                let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                match prometheus_client::encoding::text::encode(&mut text, &reg) {
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

    /// Binds `addr` (a flag value such as `127.0.0.1:10259`) and serves until the task
    /// is dropped; returns the bound address.
    pub async fn serve(
        &self,
        addr: &str,
        flag: &str,
    ) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("--{flag} {addr:?}: not an address:port ({e})"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--{flag} {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let resp = me.handle(req.uri().path());
                            async move { Ok::<_, std::convert::Infallible>(resp) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok((bound, task))
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the components' graceful shutdown.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
