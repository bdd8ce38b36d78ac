//! `make bench-controllers`: the controller-manager against apiserver + kvstore.
//!
//! 1. A ReplicaSet of `--replicas` (5000) pods: pods created per second by the
//!    replicaset controller (first to last pod seen by a watch), against the raw
//!    pod-create throughput of the same apiserver measured just before (the same number
//!    of pods created directly, 256 in flight).
//! 2. A Deployment of `--deployment-replicas` (1000) pods with the scheduler and a
//!    stand-in kubelet (pods become Running and Ready): the wall time of a rolling
//!    update (default 25% surge and unavailability) from the template change until the
//!    rollout is complete as `kubectl rollout status` judges it.

use client::{Api, Client, ListParams, Patch, WatchEvent};
use e2e::apiserver::ControlPlane;
use e2e::bench::{arg, peak_rss_kib};
use e2e::components;
use e2e::fake_kubelet::FakeKubelet;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde_json::json;
use std::time::{Duration, Instant};

const RAW_CONCURRENCY: usize = 256;

async fn namespace(c: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(c.clone()).create(&ns).await?;
    Ok(())
}

fn template(app: &str, image: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": image,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
}

/// Raw pod creates: `n` pods, RAW_CONCURRENCY in flight; pods per second.
async fn raw_creates(c: &Client, n: usize) -> anyhow::Result<f64> {
    namespace(c, "raw").await?;
    let api: Api<Pod> = Api::namespaced(c.clone(), "raw");
    let mut t = template("raw", "registry.local/pause:3.9");
    t["spec"]["schedulerName"] = json!("nobody");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"generateName": "raw-", "labels": {"app": "raw"}}, "spec": t["spec"]}),
    )?;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| {
            let (api, pod) = (api.clone(), pod.clone());
            async move { api.create(&pod).await.map(|_| ()) }
        })
        .buffer_unordered(RAW_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Creates a ReplicaSet and times its pods' creation through a watch.
async fn replicaset_run(c: &Client, n: usize) -> anyhow::Result<(f64, Duration)> {
    namespace(c, "rs").await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "rs");
    let list = pods.list(&ListParams::default()).await?;
    let mut stream = pods
        .watch(&ListParams::default(), &list.resource_version)
        .await?;
    let mut t = template("big", "registry.local/pause:3.9");
    t["spec"]["schedulerName"] = json!("nobody"); // measured: creation, not scheduling
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "big"}, "spec": {
        "replicas": n, "selector": {"matchLabels": {"app": "big"}}, "template": t}}))?;
    let started = Instant::now();
    Api::<ReplicaSet>::namespaced(c.clone(), "rs")
        .create(&rs)
        .await?;
    let mut seen = 0;
    let mut first = None;
    let deadline = started + Duration::from_secs(600);
    while seen < n {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Err(_) => anyhow::bail!("only {seen} of {n} pods were created in 10 minutes"),
            Ok(Some(Ok(WatchEvent::Added(_)))) => {
                seen += 1;
                first.get_or_insert_with(Instant::now);
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => anyhow::bail!("watch: {e}"),
            Ok(None) => anyhow::bail!("the watch ended"),
        }
    }
    let window = first.map_or(started.elapsed(), |f| f.elapsed());
    Ok((n as f64 / window.as_secs_f64(), started.elapsed()))
}

/// A deployment rolled from one image to another; the rollout's wall time.
async fn rollout_run(c: &Client, n: usize) -> anyhow::Result<(Duration, Duration)> {
    namespace(c, "roll").await?;
    let nodes: Api<Node> = Api::all(c.clone());
    for i in 0..20 {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": format!("node-{i}")}}))?;
        nodes.create(&node).await?;
        let status = json!({"status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"}, "conditions": [{"type": "Ready", "status": "True"}]}});
        nodes
            .patch_status(&format!("node-{i}"), &Patch::Merge(status))
            .await?;
    }
    let api: Api<Deployment> = Api::namespaced(c.clone(), "roll");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
        "replicas": n, "selector": {"matchLabels": {"app": "web"}}, "template": template("web", "registry.local/web:1")}}))?;
    let started = Instant::now();
    api.create(&d).await?;
    wait_complete(&api, n, Duration::from_secs(900)).await?;
    let initial = started.elapsed();
    let started = Instant::now();
    api.patch("web", &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "registry.local/web:2"}]}}}}))).await?;
    wait_complete(&api, n, Duration::from_secs(900)).await?;
    Ok((initial, started.elapsed()))
}

/// `kubectl rollout status`'s test, polled.
async fn wait_complete(api: &Api<Deployment>, n: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let d = api.get("web").await?;
        let st = d.status.clone().unwrap_or_default();
        let n = n as i32;
        if d.metadata.generation <= st.observed_generation
            && st.updated_replicas == Some(n)
            && st.replicas == Some(n)
            && st.available_replicas == Some(n)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rollout did not complete: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let replicas = arg("--replicas", 5000)?;
    let deployment_replicas = arg("--deployment-replicas", 1000)?;
    let rt = tokio::runtime::Runtime::new()?;
    let _enter = rt.enter();
    let run = RunDir::temp("bench-controllers")?;
    let cp = ControlPlane::start(&run, Flavor::Kvstore)?;
    let c = Client::from_kubeconfig_file(&cp.kubeconfig, "bench-controllers")?;
    eprintln!("bench-controllers: raw pod creates ({replicas})");
    let raw = rt.block_on(raw_creates(&c, replicas))?;
    let mut cm = components::spawn(
        &run,
        "controller-manager",
        "controller-manager",
        &cp.kubeconfig,
        &[],
        false,
    )?;
    cm.wait_ready(Duration::from_secs(60))?;
    eprintln!("bench-controllers: a ReplicaSet of {replicas}");
    let (rs_rate, rs_total) = rt.block_on(replicaset_run(&c, replicas))?;
    let mut sched = components::spawn(&run, "scheduler", "scheduler", &cp.kubeconfig, &[], false)?;
    sched.wait_ready(Duration::from_secs(60))?;
    let kubelet = FakeKubelet::start(c.clone());
    eprintln!("bench-controllers: a Deployment of {deployment_replicas}, then a rolling update");
    let (initial, rollout) = rt.block_on(rollout_run(&c, deployment_replicas))?;
    drop(kubelet);
    let rss = peak_rss_kib(cm.process.pid()) / 1024;
    println!("\ncontroller-manager (apiserver + kvstore, 1 member)\n");
    println!("raw pod creates ({RAW_CONCURRENCY} in flight): {raw:.0} pods/s");
    println!(
        "replicaset of {replicas}: {rs_rate:.0} pods/s ({:.2} of raw), all created {:.1}s after the ReplicaSet",
        rs_rate / raw,
        rs_total.as_secs_f64()
    );
    println!(
        "deployment of {deployment_replicas}: first rollout {:.1}s, rolling update {:.1}s (scheduler and stand-in kubelet included)",
        initial.as_secs_f64(),
        rollout.as_secs_f64()
    );
    println!("controller-manager peak RSS: {rss} MiB");
    println!(
        "target: replicaset pods/s >= 0.80 of raw creates: {} ({:.2})",
        if rs_rate / raw >= 0.8 {
            "met"
        } else {
            "NOT met"
        },
        rs_rate / raw
    );
    Ok(())
}
