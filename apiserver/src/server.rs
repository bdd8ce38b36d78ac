//! Process wiring: flags to components, the TLS listener that sends `application/grpc`
//! requests to the gRPC service and everything else to REST, startup (storage, caches,
//! the objects every cluster has) and shutdown.

use crate::alloc::ServiceRanges;
use crate::auth::{self, Authorizer, TokenFile, User};
use crate::metrics::Metrics;
use crate::rest::{self, Body};
use crate::storage::{EtcdConfig, Storage};
use crate::store::Store;
use crate::Config;
use anyhow::Context;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Everything a request handler needs.
pub struct Server {
    pub store: Arc<Store>,
    pub tokens: TokenFile,
    /// Service account tokens (None without a key: none are issued or accepted).
    pub sa_tokens: Option<crate::satoken::Tokens>,
    pub authorizer: Arc<dyn Authorizer>,
    pub metrics: Metrics,
    /// Set when auditing (`--audit-policy-file` and `--audit-log-path`).
    pub auditor: Option<Arc<crate::audit::Auditor>>,
    /// host:port clients reach this server at (legacy discovery reports it).
    pub address: String,
}

impl Server {
    /// The user an `Authorization: Bearer` header names: a `--token-auth-file` token, or
    /// a service account token whose account still exists (same uid).
    pub fn bearer_user(&self, headers: &http::HeaderMap) -> Option<User> {
        let header = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        if let Some(u) = self.tokens.authenticate(header) {
            return Some(u);
        }
        let token = header.strip_prefix("Bearer ")?.trim();
        let now = chrono::Utc::now().timestamp();
        let claims = self.sa_tokens.as_ref()?.verify(token, now)?;
        let info = api::registry::by_resource("", "v1", "serviceaccounts")?;
        let key = info.storage_key(&claims.namespace, &claims.name);
        let account = self.store.cache(info).get(&key)?;
        if account["metadata"]["uid"] != *claims.uid {
            return None;
        }
        if let Some(b) = &claims.bound {
            let info = api::registry::by_resource("", "v1", b.kind.resource())?;
            let ns = if info.namespaced {
                &claims.namespace
            } else {
                ""
            };
            let object = self.store.cache(info).get(&info.storage_key(ns, &b.name))?;
            if object["metadata"]["uid"] != *b.uid {
                return None;
            }
        }
        Some(User {
            name: format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            uid: claims.uid,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", claims.namespace),
                "system:authenticated".into(),
            ],
        })
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn shutdown(self) {
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

fn is_grpc(req: &http::Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Checks the flags and starts serving; returns once the listener is bound. Caches fill
/// and the bootstrap objects are created in the background (`/readyz` says when).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let (cert, key) = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file are required (the apiserver serves only HTTPS)"),
    };
    let tls = crate::tls::server_config(&cert, &key, config.client_ca_file.as_deref())?;
    let ranges = ServiceRanges::parse(
        &config.service_cluster_ip_range,
        &config.service_node_port_range,
    )?;
    let modes = auth::parse_modes(&config.authorization_mode)?;
    let mut plugins = crate::admission::plugins::Plugins::from_flags(
        &config.enable_admission_plugins,
        &config.disable_admission_plugins,
    )?;
    if let Some(file) = &config.admission_control_config_file {
        plugins.configure(file)?;
    }
    let megabytes = if config.audit_log_maxsize == 0 {
        100
    } else {
        config.audit_log_maxsize
    };
    let auditor = crate::audit::Auditor::open(
        config.audit_policy_file.as_deref(),
        config.audit_log_path.as_deref(),
        crate::audit::Rotation {
            max_size: megabytes.saturating_mul(1024 * 1024),
            max_backups: config.audit_log_maxbackup,
            max_age_days: config.audit_log_maxage,
        },
    )?;
    let sa_tokens = crate::satoken::Tokens::load(
        &config.service_account_issuer,
        config.service_account_signing_key_file.as_deref(),
        &config.service_account_key_file,
    )?;
    let tokens = match &config.token_auth_file {
        Some(p) => TokenFile::load(p)?,
        None => TokenFile::default(),
    };
    let bind: SocketAddr = format!("{}:{}", config.bind_address, config.secure_port)
        .parse()
        .with_context(|| {
            format!(
                "--bind-address {:?} / --secure-port {}",
                config.bind_address, config.secure_port
            )
        })?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("--secure-port: binding {bind}"))?;
    let addr = listener.local_addr()?;
    let storage = Storage::connect(
        &EtcdConfig {
            servers: config.etcd_servers.clone(),
            ca_file: config.etcd_cafile.clone(),
            cert_file: config.etcd_certfile.clone(),
            key_file: config.etcd_keyfile.clone(),
        },
        Duration::from_secs(60),
    )
    .await?;
    let store = Arc::new(Store::new(storage, ranges, plugins));
    let authorizer = Arc::new(auth::chain(&modes, || {
        Box::new(crate::rbac::Rbac::new(store.clone()))
    }));
    let mut tasks = store.start_caches();
    let advertise_ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let server = Arc::new(Server {
        store: store.clone(),
        tokens,
        sa_tokens,
        authorizer,
        metrics: Metrics::new(),
        auditor,
        address: format!("{advertise_ip}:{}", addr.port()),
    });
    let port = addr.port();
    tasks.push(tokio::spawn(async move {
        // Every replica tries; AlreadyExists is success. Retried until storage answers.
        loop {
            match store.bootstrap((&advertise_ip, port)).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("creating the default namespaces and service: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }));
    tasks.push(tokio::spawn(accept_loop(
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        server.clone(),
    )));
    tracing::info!("apiserver serving on https://{addr}");
    Ok(Running {
        addr,
        server,
        tasks,
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<Server>,
) {
    let grpc = proto::apiserver::v1::resources_server::ResourcesServer::new(crate::grpc::Grpc {
        server: server.clone(),
    })
    .max_decoding_message_size(rest::MAX_BODY)
    .max_encoding_message_size(usize::MAX);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, server, grpc) = (acceptor.clone(), server.clone(), grpc.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
            };
            let cert_user: Option<User> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| auth::user_from_certificate(c));
            let service =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    let (server, grpc, cert_user) =
                        (server.clone(), grpc.clone(), cert_user.clone());
                    async move {
                        if is_grpc(&req) {
                            let user = cert_user.or_else(|| server.bearer_user(req.headers()));
                            if let Some(u) = user {
                                req.extensions_mut().insert(u);
                            }
                            let arrival = (server.auditor.as_ref())
                                .map(|a| crate::audit::Arrival::new(a, &req, peer.ip()));
                            let resp = crate::audit::audited(arrival, async {
                                let resp = match grpc.oneshot(req).await {
                                    Ok(r) => r,
                                    Err(never) => match never {},
                                };
                                resp.map(|b| -> Body {
                                    b.map_err(|e| Box::new(e) as rest::BoxError).boxed_unsync()
                                })
                            })
                            .await;
                            Ok::<_, std::convert::Infallible>(resp)
                        } else {
                            Ok(rest::handle(server, req, cert_user, peer.ip()).await)
                        }
                    }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

/// The binary's entry point: start, serve until SIGTERM or Ctrl-C, stop.
pub fn run(config: Config) -> anyhow::Result<()> {
    client::flags::init_logging(config.verbosity);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {},
        }
        tracing::info!("apiserver shutting down");
        running.shutdown().await;
        Ok(())
    })
}
