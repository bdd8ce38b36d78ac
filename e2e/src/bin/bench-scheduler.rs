//! `make bench-scheduler`: in the style of Kubernetes' scheduler_perf. Fake nodes and
//! pending pods are created through the apiserver (over the kvstore), then the scheduler
//! process is started and every binding is observed through a watch:
//!
//! 1. plain pods: `--nodes` (5000) nodes, `--pods` (10000) pods;
//! 2. constraints: `--constraint-nodes` (500) nodes in 10 zones, pods with required
//!    pod anti-affinity by host (one per node) and pods with a zone topology spread.
//!
//! Measured in the same run, on the same apiserver: the raw throughput of `pods/binding`
//! calls alone (same client library, same concurrency as the scheduler's binder), so
//! the share shows whether the scheduler or the API is the bottleneck.

use client::{Api, Client, ListParams, WatchEvent};
use e2e::apiserver::ControlPlane;
use e2e::bench::{arg, peak_rss_kib};
use e2e::components;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Concurrent writes while setting up, and bindings in flight in the raw measurement
/// (the scheduler's binder allows 512).
const SETUP_CONCURRENCY: usize = 64;
const BIND_CONCURRENCY: usize = 512;

async fn create_namespace(c: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(c.clone()).create(&ns).await?;
    Ok(())
}

async fn create_nodes(c: &Client, n: usize, zones: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(c.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("node-{i}");
                let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % zones)}}}))?;
                let mut node = api.create(&node).await?;
                node.status = Some(serde_json::from_value(json!({
                    "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}))?);
                api.replace_status(&node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn pod(name: &str, labels: Value, extra: Value) -> anyhow::Result<Pod> {
    let mut spec = json!({"containers": [{"name": "c", "image": "registry.local/pause:3.9",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
    )?)
}

async fn create_pods(c: &Client, ns: &str, pods: Vec<Pod>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    futures::stream::iter(pods)
        .map(|p| {
            let api = api.clone();
            async move { api.create(&p).await.map(|_| ()) }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

struct Outcome {
    pods: usize,
    /// First binding to last.
    window: Duration,
    /// Scheduler start to last binding (includes its start and cache sync).
    total: Duration,
    attempt_p50: f64,
    attempt_p99: f64,
    rss_mib: u64,
}

/// An upper bound of quantile `q` from a Prometheus histogram's buckets.
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(0.0, |(le, _)| *le)
}

/// Starts the scheduler on the pods already pending in `ns` and waits for them all to
/// be bound (seen through a watch that started before the scheduler).
async fn schedule_all(
    run: &RunDir,
    cp: &ControlPlane,
    c: &Client,
    ns: &str,
    expect: usize,
) -> anyhow::Result<Outcome> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let list = api
        .list(&ListParams {
            resource_version: String::new(),
            ..Default::default()
        })
        .await?;
    let mut stream = api
        .watch(&ListParams::default(), &list.resource_version)
        .await?;
    let started = Instant::now();
    let mut sched = components::spawn(
        run,
        &format!("scheduler-{ns}"),
        "scheduler",
        &cp.kubeconfig,
        &[],
        false,
    )?;
    let mut bound = HashSet::new();
    let mut first = None;
    let mut last = started;
    let deadline = started + Duration::from_secs(900);
    while bound.len() < expect {
        let ev = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "only {} of {expect} pods were bound in 15 minutes",
                    bound.len()
                )
            })?;
        match ev {
            Some(Ok(WatchEvent::Modified(p)))
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() =>
            {
                if bound.insert(p.metadata.name.unwrap_or_default()) {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => anyhow::bail!("watch: {e}"),
            None => anyhow::bail!("the watch ended"),
        }
    }
    let (_, metrics) = e2e::wait::http_get(sched.metrics, "/metrics")?;
    let name = "scheduler_scheduling_attempt_duration_seconds";
    let outcome = Outcome {
        pods: expect,
        window: last - first.unwrap_or(started),
        total: last - started,
        attempt_p50: histogram_quantile(&metrics, name, 0.5),
        attempt_p99: histogram_quantile(&metrics, name, 0.99),
        rss_mib: peak_rss_kib(sched.process.pid()) / 1024,
    };
    sched.process.stop()?;
    Ok(outcome)
}

/// The raw API: pods created for nobody's scheduler, then bound directly.
async fn raw_binds(c: &Client, n: usize, nodes: usize) -> anyhow::Result<f64> {
    create_namespace(c, "raw").await?;
    let pods = (0..n)
        .map(|i| {
            pod(
                &format!("raw-{i}"),
                json!({}),
                json!({"schedulerName": "nobody"}),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    create_pods(c, "raw", pods).await?;
    let api: Api<Pod> = Api::namespaced(c.clone(), "raw");
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("raw-{i}");
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": "raw"},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": format!("node-{}", i % nodes)}});
                api.create_subresource(&name, "binding", &binding).await.map(|_| ())
            }
        })
        .buffer_unordered(BIND_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let nodes = arg("--nodes", 5000)?;
    let pods = arg("--pods", 10_000)?;
    let cnodes = arg("--constraint-nodes", 500)?;
    let rt = tokio::runtime::Runtime::new()?;
    let _enter = rt.enter();

    // 1. Plain pods on many nodes, and the raw binding throughput on the same apiserver.
    let run = RunDir::temp("bench-scheduler")?;
    let cp = ControlPlane::start(&run, Flavor::Kvstore)?;
    let c = Client::from_kubeconfig_file(&cp.kubeconfig, "bench-scheduler")?;
    let (plain, raw) = rt.block_on(async {
        eprintln!("bench-scheduler: creating {nodes} nodes and {pods} pending pods");
        create_nodes(&c, nodes, 10).await?;
        create_namespace(&c, "plain").await?;
        let ps = (0..pods)
            .map(|i| pod(&format!("p-{i}"), json!({"app": "plain"}), json!({})))
            .collect::<anyhow::Result<Vec<_>>>()?;
        create_pods(&c, "plain", ps).await?;
        eprintln!("bench-scheduler: scheduling {pods} plain pods");
        let plain = schedule_all(&run, &cp, &c, "plain", pods).await?;
        eprintln!("bench-scheduler: raw bindings");
        let raw = raw_binds(&c, pods.min(5000), nodes).await?;
        anyhow::Ok((plain, raw))
    })?;
    drop(cp);

    // 2. Anti-affinity and topology spread on fewer nodes.
    let run = RunDir::temp("bench-scheduler-constraints")?;
    let cp = ControlPlane::start(&run, Flavor::Kvstore)?;
    let c = Client::from_kubeconfig_file(&cp.kubeconfig, "bench-scheduler")?;
    let spread_pods = cnodes * 4;
    let constrained = rt.block_on(async {
        eprintln!("bench-scheduler: {cnodes} nodes, {cnodes} anti-affinity pods, {spread_pods} spread pods");
        create_nodes(&c, cnodes, 10).await?;
        create_namespace(&c, "constrained").await?;
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"group": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"group": "spread"}}}]});
        let mut ps = Vec::new();
        for i in 0..cnodes {
            ps.push(pod(&format!("anti-{i}"), json!({"group": "anti"}), anti.clone())?);
        }
        for i in 0..spread_pods {
            ps.push(pod(&format!("spread-{i}"), json!({"group": "spread"}), spread.clone())?);
        }
        create_pods(&c, "constrained", ps).await?;
        schedule_all(&run, &cp, &c, "constrained", cnodes + spread_pods).await
    })?;
    drop(cp);

    println!("\nscheduler (scheduler_perf style; binds through apiserver and kvstore)\n");
    println!(
        "{:<34} {:>7} {:>9} {:>12} {:>12} {:>12} {:>10} {:>9}",
        "workload",
        "pods",
        "pods/s",
        "incl. start",
        "attempt p50",
        "attempt p99",
        "share",
        "RSS MiB"
    );
    for (name, o) in [
        (format!("plain, {nodes} nodes"), &plain),
        (
            format!("anti-affinity + spread, {cnodes} nodes"),
            &constrained,
        ),
    ] {
        let rate = o.pods as f64 / o.window.as_secs_f64().max(1e-9);
        println!(
            "{:<34} {:>7} {:>9.0} {:>12.0} {:>11.2}ms {:>11.2}ms {:>10.2} {:>9}",
            name,
            o.pods,
            rate,
            o.pods as f64 / o.total.as_secs_f64().max(1e-9),
            o.attempt_p50 * 1e3,
            o.attempt_p99 * 1e3,
            rate / raw,
            o.rss_mib
        );
    }
    let plain_rate = plain.pods as f64 / plain.window.as_secs_f64().max(1e-9);
    println!("\nraw pods/binding calls ({BIND_CONCURRENCY} in flight): {raw:.0}/s");
    println!(
        "targets: plain >= 2000 pods/s: {} ({plain_rate:.0}); share of raw binds >= 0.70: {} ({:.2})",
        if plain_rate >= 2000.0 { "met" } else { "NOT met" },
        if plain_rate / raw >= 0.7 { "met" } else { "NOT met" },
        plain_rate / raw
    );
    println!(
        "(attempt latency: upper bounds of the histogram buckets; share = pods/s ÷ raw binds/s)"
    );
    Ok(())
}
