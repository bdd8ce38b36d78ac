//! The kvstore: Rustkube's etcd stand-in and the one place cluster state lives.
//!
//! Owns: the MVCC key-value state machine on sled (`mvcc`), Raft replication with
//! raft-rs (`raft`: node loop, log storage), the etcd v3 gRPC services (`server`),
//! watches (`watch`), leases, compaction, `/health` and `/metrics` (`http`).
//!
//! Start reading at [`start`], which wires them together.
//!
//! Must not: acknowledge a write before it is flushed to disk, or serve a linearizable
//! read without ReadIndex.

mod http;
pub mod metrics;
pub mod mvcc;
pub mod raft;
pub mod server;
pub mod watch;

use anyhow::{bail, Context};
use proto::peer::kvstorepb::Member;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// etcd's flag names (DESIGN.md §4), so scripts written for etcd start a kvstore.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "kvstore",
    version,
    about = "Rustkube kvstore: an etcd v3 compatible store"
)]
pub struct Config {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Directory holding the database (raft log and key-value state).
    #[arg(long, default_value = "default.kvstore")]
    pub data_dir: PathBuf,
    /// URLs to serve the etcd v3 gRPC API on (http:// or https://, IP:port).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: Vec<String>,
    /// Client URLs this member advertises (shown by `member list`).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub advertise_client_urls: Vec<String>,
    /// URLs to listen on for raft peers.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2380")]
    pub listen_peer_urls: Vec<String>,
    /// Peer URLs this member advertises to the rest of the cluster.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2380")]
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peerURL,...` for every member of a new cluster.
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    pub initial_cluster: String,
    /// `new` to bootstrap a cluster, `existing` to join one.
    #[arg(long, value_parser = ["new", "existing"], default_value = "new")]
    pub initial_cluster_state: String,
    /// Distinguishes clusters bootstrapped with the same member names and URLs.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Serving certificate for https client URLs.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Key of --cert-file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA that client certificates must be signed by (with --client-cert-auth).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Peer serving/client certificate.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Key of --peer-cert-file.
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA peers' certificates must be signed by.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require peers to present a certificate signed by --peer-trusted-ca-file.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// URLs (http) serving /health and /metrics.
    #[arg(long, value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,
    /// How much history auto-compaction keeps: in periodic mode hours (a plain number)
    /// or a duration (`30m`), in revision mode a number of revisions; 0 disables.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// `periodic` (keep a time span of history) or `revision` (keep a number of
    /// revisions, checked every 5 minutes).
    #[arg(long, value_parser = ["periodic", "revision"], default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Largest request the server accepts, in bytes (etcd's default: 1.5 MiB).
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Raft election timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Applied entries kept in the raft log before it is compacted.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Size of each raft WAL segment file in bytes (preallocated; a new one starts when
    /// it is full, and older ones are deleted once the log is compacted past them).
    #[arg(long = "experimental-wal-segment-size", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub wal_segment_size: u64,
    /// Interval of progress notifications for watches that ask for them (Go duration:
    /// `10m`, `5s`, `500ms`).
    #[arg(
        long = "experimental-watch-progress-notify-interval",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pub progress_notify_interval: Duration,
}

/// Go-style durations as etcd's flags take them: `500ms`, `5s`, `10m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("invalid duration {s:?}: use ms, s, m or h")),
    };
    if ms == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_millis(ms))
}

/// An `http://` or `https://` URL on an IP address (or `localhost`), as a socket address.
fn parse_url(flag: &str, url: &str) -> anyhow::Result<(bool, SocketAddr)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("--{flag}: {url:?} must start with http:// or https://");
    };
    let hostport = rest
        .trim_end_matches('/')
        .replace("localhost:", "127.0.0.1:");
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("--{flag}: {url:?} is not http(s)://IP:PORT"))?;
    Ok((tls, addr))
}

/// `name=url,name=url` into (name, urls) in first-seen order.
fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster: {part:?} is not name=url"))?;
        parse_url("initial-cluster", url)?;
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => out.push((name.to_string(), vec![url.to_string()])),
        }
    }
    Ok(out)
}

fn read(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--{flag}: reading {}", path.display()))
}

/// TLS for the client URLs, from the flags.
fn client_tls(config: &Config) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
        bail!("--listen-client-urls: https needs --cert-file and --key-file");
    };
    let identity =
        tonic::transport::Identity::from_pem(read(cert, "cert-file")?, read(key, "key-file")?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if config.client_cert_auth {
        let Some(ca) = &config.trusted_ca_file else {
            bail!("--client-cert-auth needs --trusted-ca-file");
        };
        let ca = tonic::transport::Certificate::from_pem(read(ca, "trusted-ca-file")?);
        tls = tls.client_ca_root(ca);
    }
    Ok(tls)
}

/// TLS for serving https peer URLs.
fn peer_server_tls(config: &Config) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let (Some(cert), Some(key)) = (&config.peer_cert_file, &config.peer_key_file) else {
        bail!("--listen-peer-urls: https needs --peer-cert-file and --peer-key-file");
    };
    let identity = tonic::transport::Identity::from_pem(
        read(cert, "peer-cert-file")?,
        read(key, "peer-key-file")?,
    );
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if config.peer_client_cert_auth {
        let Some(ca) = &config.peer_trusted_ca_file else {
            bail!("--peer-client-cert-auth needs --peer-trusted-ca-file");
        };
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
            ca,
            "peer-trusted-ca-file",
        )?));
    }
    Ok(tls)
}

/// TLS for connecting to https peer URLs: the peer CA, and our peer certificate as the
/// client identity when there is one.
fn peer_client_tls(config: &Config) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let Some(ca) = &config.peer_trusted_ca_file else {
        return Ok(None);
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(read(ca, "peer-trusted-ca-file")?),
    );
    if let (Some(cert), Some(key)) = (&config.peer_cert_file, &config.peer_key_file) {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read(cert, "peer-cert-file")?,
            read(key, "peer-key-file")?,
        ));
    }
    Ok(Some(tls))
}

/// Who this member is and how an empty data directory starts: from an earlier start's
/// record, else from `--initial-cluster` (a new cluster) or by asking the members named
/// there (`--initial-cluster-state existing`, after `member add`).
async fn identify(
    config: &Config,
    db: &sled::Db,
    peer_tls: Option<&tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<(raft::Identity, raft::Bootstrap)> {
    let members = parse_initial_cluster(&config.initial_cluster)?;
    let Some((_, my_peer_urls)) = members.iter().find(|(n, _)| *n == config.name) else {
        bail!(
            "--initial-cluster has no entry for --name {:?}",
            config.name
        );
    };
    if let Some(identity) = raft::LogStorage::identity(db)? {
        // Like etcd: once a data directory exists, the initial-cluster flags are ignored.
        return Ok((identity, raft::Bootstrap::Join(Vec::new())));
    }
    if config.initial_cluster_state == "new" {
        let token = &config.initial_cluster_token;
        let records: Vec<Member> = members
            .iter()
            .map(|(name, urls)| Member {
                id: raft::member_id(token, name, urls),
                name: name.clone(),
                peer_urls: urls.clone(),
                // Each member publishes its own through raft once it runs.
                client_urls: Vec::new(),
                is_learner: false,
            })
            .collect();
        let ids: Vec<u64> = records.iter().map(|m| m.id).collect();
        let identity = raft::Identity {
            member_id: raft::member_id(token, &config.name, my_peer_urls),
            cluster_id: raft::cluster_id(token, &ids),
        };
        return Ok((identity, raft::Bootstrap::New(records)));
    }
    let others: Vec<String> = members
        .iter()
        .filter(|(n, _)| *n != config.name)
        .flat_map(|(_, urls)| urls.clone())
        .collect();
    let resp = raft::transport::fetch_members(&others, peer_tls)
        .await
        .context(
            "--initial-cluster-state existing: asking the other members in --initial-cluster",
        )?;
    let Some(me) = resp
        .members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| my_peer_urls.contains(u)))
    else {
        bail!(
            "--initial-cluster-state existing: no member of the cluster has peer URLs {my_peer_urls:?}; \
             add this member first (etcdctl member add {} --peer-urls=...)",
            config.name
        );
    };
    let identity = raft::Identity {
        member_id: me.id,
        cluster_id: resp.cluster_id,
    };
    Ok((identity, raft::Bootstrap::Join(resp.members)))
}

/// A running kvstore: its bound addresses, and what `shutdown` stops.
pub struct Running {
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addrs: Vec<SocketAddr>,
    pub metrics_addrs: Vec<SocketAddr>,
    pub server: Arc<server::Server>,
    /// The gRPC servers: they stop gracefully (closing connections) on `stop`.
    serving: Vec<tokio::task::JoinHandle<()>>,
    /// Background tasks that are simply aborted.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    db: sled::Db,
}

impl Running {
    /// Stops serving, stops raft and flushes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        for t in self.serving {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("client connections did not close in 5s; dropping them");
                abort.abort();
            }
        }
        for t in self.tasks {
            t.abort();
            // An aborted task reports cancellation; that is the expected outcome.
            let _ = t.await;
        }
        let raft = self.server.raft.clone();
        tokio::task::spawn_blocking(move || raft.shutdown()).await?;
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Starts a kvstore in this process (the binary and in-process tests both use it).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let mut client = Vec::new();
    for u in &config.listen_client_urls {
        client.push(parse_url("listen-client-urls", u)?);
    }
    let mut metrics_urls = Vec::new();
    for u in &config.listen_metrics_urls {
        let (tls, addr) = parse_url("listen-metrics-urls", u)?;
        if tls {
            bail!("--listen-metrics-urls: https is not supported, use http");
        }
        metrics_urls.push(addr);
    }
    let tls = if client.iter().any(|(tls, _)| *tls) {
        Some(client_tls(&config)?)
    } else {
        None
    };
    let mut peer = Vec::new();
    for u in &config.listen_peer_urls {
        peer.push(parse_url("listen-peer-urls", u)?);
    }
    for u in &config.initial_advertise_peer_urls {
        parse_url("initial-advertise-peer-urls", u)?;
    }
    let peer_tls = if peer.iter().any(|(tls, _)| *tls) {
        Some(peer_server_tls(&config)?)
    } else {
        None
    };
    let peer_client = peer_client_tls(&config)?;

    let compaction = server::compactor::parse(
        &config.auto_compaction_mode,
        &config.auto_compaction_retention,
    )
    .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("--data-dir: creating {}", config.data_dir.display()))?;
    // HighThroughput: sled holds the applied state, flushed lazily (the raft WAL is
    // what each write waits for), so its write path should favour batching.
    let db = sled::Config::new()
        .path(config.data_dir.join("db"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .with_context(|| {
            format!(
                "--data-dir: opening the database in {}",
                config.data_dir.display()
            )
        })?;

    let (identity, bootstrap) = identify(&config, &db, peer_client.as_ref()).await?;
    let member_id = identity.member_id;
    // Bound before raft starts, so a port clash fails the start, not the first message.
    let mut peer_listeners = Vec::new();
    for (_, addr) in &peer {
        peer_listeners.push(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--listen-peer-urls: binding {addr}"))?,
        );
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let hub = Arc::new(watch::Hub::new());
    let store = Arc::new(mvcc::Store::open(db.clone(), hub)?);
    let heartbeat = Duration::from_millis(config.heartbeat_interval.max(1));
    let election =
        Duration::from_millis(config.election_timeout.max(2 * config.heartbeat_interval));
    let raft = raft::RaftNode::start(
        raft::RaftConfig {
            identity,
            bootstrap,
            attributes: Member {
                id: member_id,
                name: config.name.clone(),
                peer_urls: config.initial_advertise_peer_urls.clone(),
                client_urls: config.advertise_client_urls.clone(),
                is_learner: false,
            },
            peer_tls: peer_client,
            heartbeat_interval: heartbeat,
            election_timeout: election,
            request_timeout: Duration::from_secs(5) + 2 * election,
            snapshot_count: config.snapshot_count,
            sled_dir: config.data_dir.join("db"),
            wal_dir: config.data_dir.join("wal"),
            wal_segment_bytes: config.wal_segment_size,
        },
        db.clone(),
        store.clone(),
        metrics.clone(),
    )?;
    let server = Arc::new(server::Server {
        store: store.clone(),
        raft: raft.clone(),
        lessor: Arc::new(server::lessor::Lessor::new()),
        max_request_bytes: config.max_request_bytes,
        progress_interval: config.progress_notify_interval,
    });
    server.lessor.reset_all(&store);

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut serving = Vec::new();
    let mut client_addrs = Vec::new();
    for (_, addr) in client {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--listen-client-urls: binding {addr}"))?;
        client_addrs.push(listener.local_addr()?);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            builder = builder.tls_config(tls.clone())?;
        }
        let mut builder =
            builder.layer(tower::util::MapResponseLayer::new(server::oversize_as_etcd));
        let routes = server::router(server.clone());
        let mut stop_rx = stop_rx.clone();
        // Plaintext connections get grpc-go's URL-shaped `:authority` fixed (see
        // `server::authority`); TLS ones are decrypted inside tonic, past our reach.
        let rewrite = tls.is_none();
        serving.push(tokio::spawn(async move {
            use futures::StreamExt as _;
            let incoming = nodelay(listener).map(move |c| {
                c.map(|c| {
                    server::coalesce::Coalesce::new(server::authority::FixAuthority::new(
                        c, rewrite,
                    ))
                })
            });
            let shutdown = async move {
                // Either a stop request or the sender going away ends serving.
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = builder
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!("client server on {addr}: {e}");
            }
        }));
    }
    let mut peer_addrs = Vec::new();
    for listener in peer_listeners {
        let addr = listener.local_addr()?;
        peer_addrs.push(addr);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &peer_tls {
            builder = builder.tls_config(tls.clone())?;
        }
        let renew: raft::transport::Renew = {
            let server = server.clone();
            Arc::new(move |id| {
                let s = server.raft.status();
                if s.leader_id != s.member_id {
                    return Err(tonic::Status::failed_precondition(
                        "etcdserver: not the leader",
                    ));
                }
                Ok(server.renew(id))
            })
        };
        let service = raft::transport::PeerService::server(raft.clone(), renew);
        let mut stop_rx = stop_rx.clone();
        // The listener moves to the raft thread's runtime (see `RaftNode::start`).
        let listener = listener.into_std()?;
        // Peers hold their streams open forever: no draining, the server is aborted
        // with the other background tasks.
        tasks.push(raft.peer_runtime().spawn(async move {
            let shutdown = async move {
                // Either a stop request or the sender going away ends serving.
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            let serve = async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                builder
                    .add_service(service)
                    .serve_with_incoming_shutdown(nodelay(listener), shutdown)
                    .await?;
                anyhow::Ok(())
            };
            if let Err(e) = serve.await {
                tracing::error!("peer server on {addr}: {e}");
            }
        }));
    }
    let endpoints = Arc::new(http::Endpoints {
        raft: raft.clone(),
        registry: Arc::new(Mutex::new(registry)),
        refresh: {
            let store = store.clone();
            let metrics = metrics.clone();
            Box::new(move || {
                metrics.db_size_bytes.set(store.db_size());
                metrics.watchers.set(store.hub().len() as i64);
            })
        },
    });
    let mut metrics_addrs = Vec::new();
    for addr in metrics_urls {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--listen-metrics-urls: binding {addr}"))?;
        metrics_addrs.push(listener.local_addr()?);
        tasks.push(tokio::spawn(http::serve(listener, endpoints.clone())));
    }
    tasks.push(tokio::spawn(server::lessor::run_expiry(server.clone())));
    tasks.push(tokio::spawn({
        let store = store.clone();
        async move {
            let mut every = tokio::time::interval(watch::SYNC_EVERY);
            loop {
                every.tick().await;
                store.hub().sync(&store);
            }
        }
    }));
    if let Some(policy) = compaction {
        tasks.push(tokio::spawn(server::compactor::run(server.clone(), policy)));
    }
    tracing::info!(
        name = %config.name,
        member_id = format!("{member_id:x}"),
        client = ?client_addrs,
        "kvstore serving"
    );
    Ok(Running {
        client_addrs,
        peer_addrs,
        metrics_addrs,
        server,
        serving,
        tasks,
        stop,
        db,
    })
}

/// Accepted connections with Nagle off: etcd clients send small requests and wait for
/// each answer, so delaying a segment costs a round trip per request.
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            // Still a working connection, only slower.
            tracing::warn!("TCP_NODELAY on an accepted connection: {e}");
        }
        Ok(conn)
    })
}

/// The binary's entry point: serves until SIGTERM or Ctrl-C, then shuts down cleanly.
pub fn run(config: Config) -> anyhow::Result<()> {
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut removed = running.server.raft.removed();
        let result = tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(anyhow::Error::from),
            _ = term.recv() => Ok(()),
            _ = removed.wait_for(|r| *r) => Err(anyhow::anyhow!(
                "this member was removed from the cluster; its data directory cannot rejoin"
            )),
        };
        tracing::info!("kvstore shutting down");
        running.shutdown().await?;
        result
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already installed (tests), which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn urls_clusters_durations() {
        assert_eq!(
            parse_url("x", "http://127.0.0.1:2379").unwrap().1.port(),
            2379
        );
        assert!(parse_url("x", "https://localhost:1").unwrap().0);
        let e = parse_url("x", "127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("--x"), "{e}");
        assert!(parse_url("x", "http://example.com:1").is_err());
        let c =
            parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3")
                .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].1.len(), 2);
        assert!(parse_initial_cluster("nope").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
