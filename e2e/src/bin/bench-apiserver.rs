//! `make bench-apiserver`: the apiserver under load, once over the kvstore and once over
//! Debian's etcd 3.4, in one run. 64 REST clients create pods while gRPC watchers follow
//! them; then the pods are listed. Prints create throughput and latency, LIST latency,
//! watch delivery latency, apiserver RSS, and create throughput as a share of the raw
//! store's transaction throughput measured just before (the layer's overhead), and what
//! each create cost the machine in CPU (apiserver, store, and this process's creators
//! and watchers), from the first create until every watcher has every event.
//!
//! Flags: `--pods N` (10000), `--clients N` (64), `--watchers N` (500).

use e2e::apiserver::ControlPlane;
use e2e::bench::{arg, cpu_time, cpu_time_of, own_cpu_time, peak_rss_kib, percentile, Measured};
use e2e::https::{tls_config, HttpsClient};
use e2e::kvstore::Flavor;
use e2e::RunDir;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use proto::apiserver::v1 as pb;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy)]
struct Opts {
    pods: usize,
    clients: usize,
    watchers: usize,
}

struct Report {
    raw: Measured,
    create: Measured,
    list: Vec<Duration>,
    list_cache: Duration,
    delivery: Vec<Duration>,
    delivered: usize,
    rss_kib: u64,
    /// CPU time per create of the apiserver, the store and this process (the creators and
    /// the watchers), over the creates and their delivery to every watcher.
    cpu_per_create: [Duration; 3],
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn pod(i: usize) -> Vec<u8> {
    let sent = now_nanos();
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench", "shard": (i % 16).to_string()},
            "annotations": {"bench/sent": sent.to_string()}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/bench:1.0",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 8080, "name": "http"}]}]}
    }))
    .unwrap_or_default()
}

/// The send time a pod carries, found without decoding the whole object.
fn sent_at(json: &[u8]) -> Option<u128> {
    let needle = br#""bench/sent":""#;
    let at = json.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let end = json[at..].iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&json[at..at + end]).ok()?.parse().ok()
}

async fn raw_txns(cp: &ControlPlane, run: &RunDir, opts: Opts) -> anyhow::Result<Measured> {
    let pki = run.path().join("pki");
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&cp.ca)?))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(pki.join("apiserver-etcd-client.crt"))?,
            std::fs::read(pki.join("apiserver-etcd-client.key"))?,
        ));
    let eps: Vec<String> = cp
        .kv
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("https://").to_string())
        .collect();
    let client =
        etcd_client::Client::connect(eps, Some(etcd_client::ConnectOptions::new().with_tls(tls)))
            .await?;
    let per = opts.pods / opts.clients;
    let value = pod(0);
    let start = Instant::now();
    let tasks: Vec<_> = (0..opts.clients)
        .map(|t| {
            let mut c = client.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for n in 0..per {
                    let key = format!("/bench/raw/{t}/{n}");
                    let s = Instant::now();
                    // The shape of an apiserver create: compare-absent, put.
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, value.clone(), None)]);
                    c.txn(txn).await.expect("raw txn");
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    Ok(Measured {
        ops: per * opts.clients,
        elapsed: start.elapsed(),
        latencies,
        ..Default::default()
    })
}

fn grpc_channel(cp: &ControlPlane) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cp.ca)?))
        .identity(Identity::from_pem(
            std::fs::read(&cp.admin.cert)?,
            std::fs::read(&cp.admin.key)?,
        ))
        .domain_name("127.0.0.1");
    Ok(Endpoint::from_shared(cp.url.clone())?
        .tls_config(tls)?
        .connect_lazy())
}

async fn run_once(cp: &ControlPlane, run: &RunDir, opts: Opts) -> anyhow::Result<Report> {
    let raw = raw_txns(cp, run, opts).await?;
    let addr: SocketAddr = format!("127.0.0.1:{}", cp.port).parse()?;
    let tls = tls_config(&cp.ca)?;
    let mut admin = HttpsClient::connect(addr, tls.clone(), &cp.token).await?;
    admin
        .json(
            "POST",
            "/api/v1/namespaces",
            Some(&serde_json::json!({"metadata": {"name": "bench"}})),
            201,
        )
        .await?;
    let list = admin
        .json("GET", "/api/v1/namespaces/bench/pods", None, 200)
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let per = opts.pods / opts.clients;
    let total = per * opts.clients;

    // Watchers, spread over a few HTTP/2 connections, each counting every pod's arrival.
    let delivery: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let channels: Vec<_> = (0..8)
        .map(|_| grpc_channel(cp))
        .collect::<anyhow::Result<_>>()?;
    let mut watchers = Vec::new();
    for w in 0..opts.watchers {
        let mut client =
            pb::resources_client::ResourcesClient::new(channels[w % channels.len()].clone());
        let req = pb::WatchRequest {
            resource: Some(pb::ResourceRef {
                version: "v1".into(),
                resource: "pods".into(),
                namespace: "bench".into(),
                ..Default::default()
            }),
            resource_version: rv.clone(),
            ..Default::default()
        };
        let mut stream = client.watch(req).await?.into_inner();
        let (delivery, delivered) = (delivery.clone(), delivered.clone());
        watchers.push(tokio::spawn(async move {
            let mut seen = 0;
            let mut lat = Vec::with_capacity(total);
            while seen < total {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        let json = ev.object.map(|o| o.json).unwrap_or_default();
                        if let Some(sent) = sent_at(&json) {
                            lat.push(Duration::from_nanos(now_nanos().saturating_sub(sent) as u64));
                        }
                        seen += 1;
                    }
                    _ => break,
                }
            }
            delivered.fetch_add(seen, std::sync::atomic::Ordering::Relaxed);
            delivery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(lat);
        }));
    }

    // Creates: one HTTPS connection per client.
    let cpu_now = || {
        [
            cpu_time(cp.apiserver.pid()),
            cpu_time_of(cp.kv.members.iter().map(|m| m.process.pid())),
            own_cpu_time(),
        ]
    };
    let cpu_before = cpu_now();
    let start = Instant::now();
    let mut creators = Vec::new();
    for t in 0..opts.clients {
        let mut c = HttpsClient::connect(addr, tls.clone(), &cp.token).await?;
        creators.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for n in 0..per {
                let s = Instant::now();
                let (code, body) = c
                    .request(
                        "POST",
                        "/api/v1/namespaces/bench/pods",
                        Some(("application/json", pod(t * per + n))),
                    )
                    .await
                    .expect("create");
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for c in creators {
        latencies.extend(c.await?);
    }
    let create = Measured {
        ops: total,
        elapsed: start.elapsed(),
        latencies,
        ..Default::default()
    };

    let deadline = Instant::now() + Duration::from_secs(300);
    for w in watchers {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, w).await.is_err() {
            eprintln!("bench-apiserver: a watcher did not receive every event in time");
            break;
        }
    }
    let cpu_after = cpu_now();
    let cpu_per_create =
        std::array::from_fn(|i| cpu_after[i].saturating_sub(cpu_before[i]) / total.max(1) as u32);

    let mut list = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        let (code, body) = admin
            .request("GET", "/api/v1/namespaces/bench/pods", None)
            .await?;
        list.push(s.elapsed());
        anyhow::ensure!(
            code == 200 && body.len() > total * 100,
            "LIST failed: {code}"
        );
    }
    list.sort();
    let s = Instant::now();
    let (code, _) = admin
        .request(
            "GET",
            "/api/v1/namespaces/bench/pods?resourceVersion=0",
            None,
        )
        .await?;
    let list_cache = s.elapsed();
    anyhow::ensure!(code == 200, "cached LIST failed: {code}");
    let delivery = std::mem::take(&mut *delivery.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Report {
        raw,
        create,
        list,
        list_cache,
        delivery,
        delivered: delivered.load(std::sync::atomic::Ordering::Relaxed),
        rss_kib: peak_rss_kib(cp.apiserver.pid()),
        cpu_per_create,
    })
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    }
}

fn main() -> anyhow::Result<()> {
    let opts = Opts {
        pods: arg("--pods", 10_000)?,
        clients: arg("--clients", 64)?,
        watchers: arg("--watchers", 500)?,
    };
    anyhow::ensure!(
        opts.clients > 0 && opts.pods >= opts.clients,
        "--pods must be at least --clients"
    );
    let rt = tokio::runtime::Runtime::new()?;
    let _enter = rt.enter();
    let mut reports = Vec::new();
    for flavor in [Flavor::Kvstore, Flavor::Etcd] {
        let run = RunDir::temp("bench-apiserver")?;
        let cp = ControlPlane::start(&run, flavor)?;
        eprintln!(
            "bench-apiserver: over {flavor:?}: {} pods, {} clients, {} watchers",
            opts.pods, opts.clients, opts.watchers
        );
        let r = rt.block_on(run_once(&cp, &run, opts))?;
        reports.push((flavor, r));
    }
    println!(
        "\napiserver: {} pods created by {} REST clients, {} gRPC watchers on pods\n",
        opts.pods, opts.clients, opts.watchers
    );
    println!(
        "{:<9} {:>10} {:>9} {:>9} {:>11} {:>8} {:>11} {:>10} {:>10} {:>9} {:>9}",
        "store",
        "create/s",
        "p50",
        "p99",
        "raw txn/s",
        "share",
        "LIST all",
        "LIST rv=0",
        "watch p99",
        "delivered",
        "RSS MiB"
    );
    for (flavor, r) in &reports {
        let expected = r.create.ops * opts.watchers;
        println!(
            "{:<9} {:>10.0} {:>9} {:>9} {:>11.0} {:>8.2} {:>11} {:>10} {:>10} {:>8.1}% {:>9}",
            format!("{flavor:?}"),
            r.create.throughput(),
            ms(r.create.percentile(0.5)),
            ms(r.create.percentile(0.99)),
            r.raw.throughput(),
            r.create.throughput() / r.raw.throughput(),
            ms(r.list[r.list.len() / 2]),
            ms(r.list_cache),
            ms(percentile(&r.delivery, 0.99)),
            100.0 * r.delivered as f64 / expected.max(1) as f64,
            r.rss_kib / 1024,
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\nCPU per create, from the first create until every watcher had every event, and the\n\
         create rate at which that CPU fills all {cores} cores (the machine's ceiling here):\n"
    );
    println!(
        "{:<9} {:>11} {:>9} {:>22} {:>9} {:>10}",
        "store", "apiserver", "store", "bench (clients+watch)", "total", "ceiling/s"
    );
    for (flavor, r) in &reports {
        let [api, store, bench] = r.cpu_per_create;
        let total = api + store + bench;
        println!(
            "{:<9} {:>11} {:>9} {:>22} {:>9} {:>10.0}",
            format!("{flavor:?}"),
            ms(api),
            ms(store),
            ms(bench),
            ms(total),
            cores as f64 / total.as_secs_f64().max(1e-9),
        );
    }
    println!("\ntargets: create p99 < 50ms, watch delivery p99 < 100ms, LIST of 10k pods < 300ms, share (create/raw txn) >= 0.50");
    Ok(())
}
