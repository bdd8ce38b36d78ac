//! The controller-manager: one daemon running the controllers that reconcile workloads.
//!
//! Owns: each controller as a module (`replicaset`, `deployment`, `endpoints`,
//! `garbagecollector`, `namespace`, `serviceaccount`, `nodeipam`, `nodelifecycle`,
//! `job`, `cronjob` with its `cron` schedules, `daemonset`, `statefulset`, `podgc`,
//! `persistentvolume` (the binder), `resourcequota`, `clusterroleaggregation`,
//! `rootcacert` (the root-ca-cert-publisher)) on shared
//! informers and work queues (`controller` holds the worker loop and expectations),
//! leader election on `kube-system/kube-controller-manager`.
//!
//! Must not: talk to anything but the apiserver, or act while it is not the leader.

pub mod clusterroleaggregation;
pub mod controller;
pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod garbagecollector;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod resourcequota;
pub mod rootcacert;
pub mod serviceaccount;
pub mod statefulset;

use client::serve::{shutdown_signal, Health};
use std::sync::atomic::Ordering;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "controller-manager",
    version,
    about = "Rustkube controller-manager"
)]
pub struct Config {
    #[command(flatten)]
    pub common: client::ComponentFlags,
    #[command(flatten)]
    pub election: client::flags::LeaderElectionFlags,
    /// Controllers to run: `*` for all, `name` to add one, `-name` to disable one.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// The range node-ipam hands out `/24` podCIDRs from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: usize,
    #[arg(long, default_value_t = 2)]
    pub concurrent_daemonset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_statefulset_syncs: usize,
    /// A node whose lease is not renewed for this long is NotReady (Unknown).
    #[arg(long, default_value = "40s", value_parser = client::flags::parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = client::flags::parse_duration)]
    pub node_monitor_period: std::time::Duration,
    /// Terminated pods kept before podgc deletes the oldest.
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_resource_quota_syncs: usize,
    /// The CA bundle (PEM) published in every namespace as config map kube-root-ca.crt;
    /// without it, the certificate authority of the kubeconfig.
    #[arg(long)]
    pub root_ca_file: Option<std::path::PathBuf>,
    /// How often every quota's usage is counted again, events or not.
    #[arg(long, default_value = "5m", value_parser = client::flags::parse_duration)]
    pub resource_quota_sync_period: std::time::Duration,
}

/// What every controller gets: the client, the shared informers and the event recorder.
#[derive(Clone)]
pub struct Context {
    pub client: client::Client,
    pub factory: client::Factory,
    pub recorder: client::events::Recorder,
}

/// Every controller this build has, in start order.
pub const ALL: &[&str] = &[
    "serviceaccount",
    "namespace",
    "garbagecollector",
    "replicaset",
    "deployment",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "endpoint",
    "endpointslice",
    "nodeipam",
    "nodelifecycle",
    "podgc",
    "persistentvolume-binder",
    "resourcequota",
    "clusterrole-aggregation",
    "root-ca-cert-publisher",
];

/// Resolves `--controllers` (`*`, names, `-name`) to the controllers to run.
pub fn selected(flags: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let mut on: Vec<&'static str> = Vec::new();
    for f in flags {
        let f = f.trim();
        if f == "*" {
            for c in ALL {
                if !on.contains(c) {
                    on.push(c);
                }
            }
            continue;
        }
        let (disable, name) = match f.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, f),
        };
        let Some(c) = ALL.iter().find(|c| **c == name) else {
            anyhow::bail!(
                "--controllers: unknown controller {name:?} (known: {})",
                ALL.join(", ")
            );
        };
        if disable {
            on.retain(|x| x != c);
        } else if !on.contains(c) {
            on.push(c);
        }
    }
    // A later "*" must not re-enable an explicit "-name".
    for f in flags {
        if let Some(n) = f.trim().strip_prefix('-') {
            on.retain(|x| *x != n);
        }
    }
    Ok(on)
}

pub fn run(config: Config) -> anyhow::Result<()> {
    config.common.init_logging();
    let enabled = selected(&config.controllers)?;
    let cidr = nodeipam::parse_cluster_cidr(&config.cluster_cidr)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(config, enabled, cidr))
}

async fn run_async(
    config: Config,
    enabled: Vec<&'static str>,
    cidr: nodeipam::Cidr,
) -> anyhow::Result<()> {
    let client = client::Client::from_flags(&config.common, "controller-manager")?;
    let root_ca = match &config.root_ca_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("--root-ca-file: reading {}: {e}", p.display()))?,
        None => String::from_utf8_lossy(client.ca_pem().unwrap_or_default()).into_owned(),
    };
    if enabled.contains(&"root-ca-cert-publisher") && root_ca.trim().is_empty() {
        anyhow::bail!("root-ca-cert-publisher: no --root-ca-file, and the kubeconfig names no certificate authority to publish");
    }
    let health = Health::default();
    let (addr, _server) = health
        .serve(&config.common.metrics_bind_address, "metrics-bind-address")
        .await?;
    tracing::info!(%addr, controllers = ?enabled, "serving /metrics and /healthz");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // Kubernetes elects before starting informers; a standby keeps no caches.
    let mut leadership = None;
    if config.election.leader_elect {
        health.ready.store(true, Ordering::Relaxed);
        let cfg = config.election.config("kube-controller-manager");
        tokio::select! {
            l = client::leader::acquire(client.clone(), cfg) => leadership = Some(l?),
            _ = &mut shutdown => return Ok(()),
        }
    }
    let ctx = Context {
        factory: client::Factory::new(client.clone()),
        recorder: client::events::Recorder::new(client.clone(), "controller-manager"),
        client,
    };
    let on = |name: &str| enabled.contains(&name);
    let mut starts: Vec<Box<dyn FnOnce()>> = Vec::new();
    let mut informers: Vec<Box<dyn client::informer::Startable>> = Vec::new();
    macro_rules! controller {
        ($name:expr, $c:expr, $workers:expr) => {
            if on($name) {
                let c = $c;
                for i in c.informers() {
                    informers.push(i);
                }
                let workers = $workers;
                starts.push(Box::new(move || c.start(workers)));
            }
        };
    }
    controller!(
        "serviceaccount",
        serviceaccount::ServiceAccountController::new(&ctx),
        2
    );
    controller!(
        "namespace",
        namespace::NamespaceController::new(&ctx),
        config.concurrent_namespace_syncs
    );
    controller!(
        "garbagecollector",
        garbagecollector::GarbageCollector::new(&ctx),
        config.concurrent_gc_syncs
    );
    controller!(
        "replicaset",
        replicaset::ReplicaSetController::new(&ctx),
        config.concurrent_replicaset_syncs
    );
    controller!(
        "deployment",
        deployment::DeploymentController::new(&ctx),
        config.concurrent_deployment_syncs
    );
    controller!(
        "statefulset",
        statefulset::StatefulSetController::new(&ctx),
        config.concurrent_statefulset_syncs
    );
    controller!(
        "daemonset",
        daemonset::DaemonSetController::new(&ctx),
        config.concurrent_daemonset_syncs
    );
    controller!(
        "job",
        job::JobController::new(&ctx),
        config.concurrent_job_syncs
    );
    controller!("cronjob", cronjob::CronJobController::new(&ctx), 2);
    controller!(
        "endpoint",
        endpoints::EndpointsController::new(&ctx, endpoints::Kind::Endpoints),
        config.concurrent_endpoint_syncs
    );
    controller!(
        "endpointslice",
        endpoints::EndpointsController::new(&ctx, endpoints::Kind::Slices),
        config.concurrent_endpoint_syncs
    );
    controller!("nodeipam", nodeipam::NodeIpamController::new(&ctx, cidr), 1);
    controller!(
        "nodelifecycle",
        nodelifecycle::NodeLifecycleController::new(
            &ctx,
            config.node_monitor_grace_period,
            config.node_monitor_period
        ),
        1
    );
    controller!(
        "podgc",
        podgc::PodGcController::new(&ctx, config.terminated_pod_gc_threshold),
        1
    );
    controller!(
        "persistentvolume-binder",
        persistentvolume::VolumeBinder::new(&ctx),
        2
    );
    controller!(
        "resourcequota",
        resourcequota::ResourceQuotaController::new(&ctx, config.resource_quota_sync_period),
        config.concurrent_resource_quota_syncs
    );
    controller!(
        "clusterrole-aggregation",
        clusterroleaggregation::ClusterRoleAggregationController::new(&ctx),
        1
    );
    controller!(
        "root-ca-cert-publisher",
        rootcacert::RootCaPublisher::new(&ctx, root_ca),
        1
    );
    let refs: Vec<&dyn client::informer::Startable> =
        informers.iter().map(|b| b.as_ref()).collect();
    tokio::select! {
        _ = client::informer::start_and_sync(&refs) => {}
        _ = &mut shutdown => return Ok(()),
    }
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!("caches synced; starting controllers");
    for s in starts {
        s();
    }
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = &mut shutdown => {}
        _ = lost => anyhow::bail!("leader election lost: the lease could not be renewed in time"),
    }
    tracing::info!("shutting down");
    if let Some(l) = leadership {
        l.release().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag() {
        let s = |v: &[&str]| selected(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["*"]).unwrap(), ALL.to_vec());
        assert!(!s(&["*", "-podgc"]).unwrap().contains(&"podgc"));
        assert!(!s(&["-podgc", "*"]).unwrap().contains(&"podgc"));
        assert_eq!(s(&["replicaset"]).unwrap(), vec!["replicaset"]);
        assert!(s(&["nope"])
            .unwrap_err()
            .to_string()
            .contains("--controllers"));
    }
}
