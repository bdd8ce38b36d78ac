//! `make bench-kvstore`: the same load against Debian's etcd 3.4 and against the kvstore
//! on this machine and loopback, fsync on for both, through the `etcd-client` crate. Both
//! groups run side by side; each workload runs `--rounds N` times (3) on one right after
//! the other (which one goes first alternates), so a drift in the machine's speed falls
//! on both alike. Prints throughput (all rounds together), p50/p99 latency and peak RSS
//! per workload, the kvstore/etcd ratio next to the target, and each round's ratio; then
//! the CPU each operation cost the servers and the load generator.

use e2e::bench::{arg, cpu_time_of, own_cpu_time, peak_rss_kib, Measured};
use e2e::kvstore::{Flavor, KvCluster, Options};
use e2e::RunDir;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Runs `total` operations spread over `clients` concurrent tasks sharing `conns`
/// connections; `op(client, task, n)` performs one.
async fn load<F, Fut>(
    endpoints: &[String],
    clients: usize,
    conns: usize,
    total: usize,
    op: F,
) -> Measured
where
    F: Fn(Client, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut pool = Vec::new();
    for _ in 0..conns {
        pool.push(Client::connect(endpoints, None).await.expect("connect"));
    }
    let op = Arc::new(op);
    let per = total / clients;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let c = pool[t % conns].clone();
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for n in 0..per {
                    let s = Instant::now();
                    op(c.clone(), t, n).await.expect("operation");
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    Measured {
        ops: per * clients,
        elapsed: start.elapsed(),
        latencies,
        ..Default::default()
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// 1,000 watchers on one prefix; each put carries its send time; the latency of every
/// delivery to every watcher is recorded.
async fn watch_delivery(endpoint: &str, round: usize, watchers: usize, puts: usize) -> Measured {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(Client::connect([endpoint], None).await.expect("connect"));
    }
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(watchers);
    for w in 0..watchers {
        let mut c = conns[w % conns.len()].clone();
        let lat = lat.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = c
                .watch("bench/watch/", Some(WatchOptions::new().with_prefix()))
                .await
                .expect("watch");
            ready.send(()).await.expect("ready");
            let mut seen = 0;
            while seen < puts {
                let Ok(Some(msg)) = stream.message().await else {
                    break;
                };
                let now = now_nanos();
                for e in msg.events() {
                    if let Some(kv) = e.kv() {
                        let sent: u128 = kv.value_str().unwrap_or("0").parse().unwrap_or(0);
                        lat.lock()
                            .unwrap()
                            .push(Duration::from_nanos((now - sent) as u64));
                        seen += 1;
                    }
                }
            }
        }));
    }
    for _ in 0..watchers {
        ready_rx.recv().await.expect("watchers ready");
    }
    let mut c = conns[0].clone();
    let start = Instant::now();
    for i in 0..puts {
        c.put(
            format!("bench/watch/{round}/{i}"),
            now_nanos().to_string(),
            None,
        )
        .await
        .expect("put");
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every watcher got every event")
            .expect("watcher");
    }
    let latencies = std::mem::take(&mut *lat.lock().unwrap());
    Measured {
        ops: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
        ..Default::default()
    }
}

const WORKLOADS: &[&str] = &[
    "sequential puts (1 client)",
    "puts (128 clients)",
    "linearizable gets (16 clients)",
    "CAS txns (32 clients)",
    "watch delivery (1000 watchers)",
];

/// Puts of 256-byte values to new keys `bench/<prefix>/<task>/<n>`.
async fn puts(
    endpoints: &[String],
    prefix: String,
    clients: usize,
    conns: usize,
    total: usize,
) -> Measured {
    load(endpoints, clients, conns, total, move |mut c, t, n| {
        let key = format!("bench/{prefix}/{t}/{n}");
        async move {
            c.put(key, "x".repeat(256), None).await?;
            Ok(())
        }
    })
    .await
}

/// Runs round `round` of workload `w` (an index into `WORKLOADS`). Puts always create
/// keys, as in the first round.
async fn run_workload(w: usize, round: usize, endpoints: &[String]) -> Measured {
    match w {
        0 => puts(endpoints, format!("seq{round}"), 1, 1, 2_000).await,
        // The gets below read the first round's keys.
        1 => puts(endpoints, format!("conc{round}"), 128, 16, 25_600).await,
        2 => {
            load(endpoints, 16, 4, 16_000, |mut c, t, n| async move {
                c.get(format!("bench/conc0/{t}/{n}"), Some(GetOptions::new()))
                    .await?;
                Ok(())
            })
            .await
        }
        3 => {
            load(endpoints, 32, 8, 6_400, |mut c, t, _| async move {
                // Compare-and-swap on the task's own key: read its mod revision, then swap.
                // Nobody else writes the key, so a lost compare means the read was stale;
                // it is retried (and counted) rather than aborting the run.
                let key = format!("bench/cas/{t}");
                for _ in 0..100 {
                    let rev = c
                        .get(key.clone(), None)
                        .await?
                        .kvs()
                        .first()
                        .map_or(0, |kv| kv.mod_revision());
                    let txn = Txn::new()
                        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                        .and_then([TxnOp::put(key.clone(), "swapped", None)]);
                    if c.txn(txn).await?.succeeded() {
                        return Ok(());
                    }
                    LOST_CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                anyhow::bail!("CAS on {key} lost 100 times in a row with no other writer")
            })
            .await
        }
        _ => watch_delivery(&endpoints[0], round, 1000, 200).await,
    }
}

/// Compare-and-swaps that lost although nobody else wrote their key (stale reads).
static LOST_CAS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn main() -> anyhow::Result<()> {
    // The machine's speed drifts between runs; several rounds of each workload, each
    // pair back to back, give a ratio that drifts less, and show how much it varies.
    let rounds = arg("--rounds", 3)?.max(1);
    let rt = tokio::runtime::Runtime::new()?;
    for size in [1, 3] {
        // A run directory per cluster size: member data dirs are named by index, and a
        // member that found the 1-member run's data would rejoin that old cluster.
        let run = RunDir::temp("bench-kvstore")?;
        let flavors = [Flavor::Etcd, Flavor::Kvstore];
        let mut clusters = Vec::new();
        for flavor in flavors {
            let cluster = KvCluster::start(&run, flavor, size, &Options::default())?;
            eprintln!("bench-kvstore: {flavor:?} at {:?}", cluster.endpoints());
            clusters.push(cluster);
        }
        let mut results: [Vec<Measured>; 2] = Default::default();
        let mut ratios = Vec::new();
        for w in 0..WORKLOADS.len() {
            let mut ratio = Vec::new();
            let mut totals: [Measured; 2] = Default::default();
            for round in 0..rounds {
                // Who goes first alternates, so neither always runs on a warmer machine.
                let order = if (w + round) % 2 == 0 { [0, 1] } else { [1, 0] };
                let mut runs: [Measured; 2] = Default::default();
                for i in order {
                    let pids = || clusters[i].members.iter().map(|m| m.process.pid());
                    let (server0, client0) = (cpu_time_of(pids()), own_cpu_time());
                    runs[i] = rt.block_on(run_workload(w, round, &clusters[i].endpoints()));
                    runs[i].server_cpu = cpu_time_of(pids()).saturating_sub(server0);
                    runs[i].client_cpu = own_cpu_time().saturating_sub(client0);
                    let lost = LOST_CAS.swap(0, std::sync::atomic::Ordering::Relaxed);
                    if lost > 0 {
                        eprintln!(
                            "bench-kvstore: {:?}: {lost} CAS retries after a stale read",
                            flavors[i]
                        );
                    }
                }
                ratio.push(runs[1].throughput() / runs[0].throughput());
                for (total, run) in totals.iter_mut().zip(runs) {
                    total.merge(run);
                }
            }
            for (result, total) in results.iter_mut().zip(totals) {
                result.push(total);
            }
            ratios.push(ratio);
        }
        let mut rss = [0u64; 2];
        for (i, mut cluster) in clusters.into_iter().enumerate() {
            // Summed over the members: what the group costs the machine.
            rss[i] = cluster
                .members
                .iter()
                .map(|m| peak_rss_kib(m.process.pid()))
                .sum();
            cluster.stop()?;
        }
        let [etcd, kv] = results;
        report(size, &(etcd, rss[0]), &(kv, rss[1]), &ratios);
    }
    println!(
        "\ntargets: sequential puts ratio >= 1.2, 128-client puts ratio >= 2.0, p99 x <= 1.0, RSS ratio <= 1.0"
    );
    Ok(())
}

fn report(
    size: usize,
    etcd: &(Vec<Measured>, u64),
    kv: &(Vec<Measured>, u64),
    ratios: &[Vec<f64>],
) {
    let members = if size == 1 { "member" } else { "members" };
    println!(
        "\nkvstore vs etcd 3.4, {size} {members}, loopback, fsync on (ratio = kvstore/etcd)\n"
    );
    println!(
        "{:<32} {:>12} {:>12} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7}  ratio per round",
        "workload",
        "etcd ops/s",
        "kv ops/s",
        "ratio",
        "etcd p50",
        "kv p50",
        "etcd p99",
        "kv p99",
        "p99 x"
    );
    let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1000.0);
    for (i, name) in WORKLOADS.iter().enumerate() {
        let (e, k) = (&etcd.0[i], &kv.0[i]);
        println!(
            "{:<32} {:>12.0} {:>12.0} {:>7.2} {:>10} {:>10} {:>10} {:>10} {:>7.2}  {}",
            name,
            e.throughput(),
            k.throughput(),
            k.throughput() / e.throughput(),
            ms(e.percentile(0.5)),
            ms(k.percentile(0.5)),
            ms(e.percentile(0.99)),
            ms(k.percentile(0.99)),
            k.percentile(0.99).as_secs_f64() / e.percentile(0.99).as_secs_f64().max(1e-9),
            ratios[i]
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    // Loader and servers share the machine's cores: when a workload saturates them, the
    // ratio can reach at most (loader + etcd) / (loader + kvstore) of these costs.
    println!(
        "\nCPU per operation in microseconds (servers: all members together; loader: this\n\
         process); ceiling = the ratio at which both runs would fill the same cores, which\n\
         binds the workloads that keep the cores busy (not the 1-client one)\n"
    );
    println!(
        "{:<32} {:>12} {:>12} {:>14} {:>14} {:>8}",
        "workload", "etcd", "kvstore", "loader (etcd)", "loader (kv)", "ceiling"
    );
    for (i, name) in WORKLOADS.iter().enumerate() {
        let (e, k) = (&etcd.0[i], &kv.0[i]);
        let ceiling = (e.server_us_per_op() + e.client_us_per_op())
            / (k.server_us_per_op() + k.client_us_per_op()).max(1e-9);
        println!(
            "{:<32} {:>12.1} {:>12.1} {:>14.1} {:>14.1} {:>8.2}",
            name,
            e.server_us_per_op(),
            k.server_us_per_op(),
            e.client_us_per_op(),
            k.client_us_per_op(),
            ceiling,
        );
    }
    println!(
        "\npeak RSS ({size} {members} together): etcd {} MiB, kvstore {} MiB (ratio {:.2})",
        etcd.1 / 1024,
        kv.1 / 1024,
        kv.1 as f64 / etcd.1.max(1) as f64
    );
}
