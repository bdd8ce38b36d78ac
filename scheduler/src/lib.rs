//! The scheduler: binds each pending pod to a node.
//!
//! Owns: the scheduling queue (active, backoff, unschedulable — `queue`), the node and
//! pod cache with assumed pods (`cache`), the plugin framework (`framework`, `profile`)
//! and the default plugins (`plugins`, `preemption`), the loop that binds through
//! `pods/binding` (`scheduler`), and its metrics.
//!
//! Must not: talk to anything but the apiserver, or bind while it is not the leader.

pub mod cache;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod profile;
pub mod queue;
pub mod scheduler;

use client::informer::start_and_sync;
use client::serve::{shutdown_signal, Health};
use std::sync::atomic::Ordering;

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "scheduler", version, about = "Rustkube scheduler")]
pub struct Config {
    #[command(flatten)]
    pub common: client::ComponentFlags,
    #[command(flatten)]
    pub election: client::flags::LeaderElectionFlags,
    /// Pods whose `spec.schedulerName` is this are ours.
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Share of nodes to find feasible before scoring (0: kube-scheduler's adaptive
    /// default).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub percentage_of_nodes_to_score: u32,
}

pub fn run(config: Config) -> anyhow::Result<()> {
    config.common.init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(config))
}

async fn run_async(config: Config) -> anyhow::Result<()> {
    let client = client::Client::from_flags(&config.common, "scheduler")?;
    let health = Health::default();
    let metrics =
        metrics::Metrics::register(&mut health.registry.lock().unwrap_or_else(|p| p.into_inner()));
    let (addr, _server) = health
        .serve(&config.common.metrics_bind_address, "metrics-bind-address")
        .await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    let factory = client::Factory::new(client.clone());
    let profile = profile::Profile {
        percentage_of_nodes_to_score: config.percentage_of_nodes_to_score,
        ..Default::default()
    };
    let sched = scheduler::Scheduler::new(&factory, &config.scheduler_name, profile, metrics);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let informers: [&dyn client::informer::Startable; 3] = [&sched.pods, &sched.nodes, &sched.pdbs];
    tokio::select! {
        _ = start_and_sync(&informers) => {}
        _ = &mut shutdown => return Ok(()),
    }
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!("caches synced");
    let mut leadership = None;
    if config.election.leader_elect {
        let cfg = config.election.config("kube-scheduler");
        tokio::select! {
            l = client::leader::acquire(client.clone(), cfg) => leadership = Some(l?),
            _ = &mut shutdown => return Ok(()),
        }
    }
    let looping = tokio::spawn(sched.clone().run());
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = &mut shutdown => {}
        _ = lost => {
            // Stop at once: another scheduler may take over after the lease duration.
            sched.queue.close();
            anyhow::bail!("leader election lost: the lease could not be renewed in time");
        }
    }
    tracing::info!("shutting down");
    sched.queue.close();
    let _ = looping.await;
    if let Some(l) = leadership {
        l.release().await;
    }
    Ok(())
}
