//! The scheduler: binds each pending pod to a node.
//!
//! Owns: the scheduling queue (active, backoff, unschedulable), the node and pod cache
//! with assumed pods, the plugin framework and the default plugins, binding through
//! `pods/binding`.
//!
//! Must not: talk to anything but the apiserver, or bind while it is not the leader.
//!
//! Not built yet (issue "client library and scheduler"): `run` refuses to start.

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "scheduler", version, about = "Rustkube scheduler")]
pub struct Config {
    #[command(flatten)]
    pub common: client::ComponentFlags,
    /// Take the `kube-system/kube-scheduler` Lease before scheduling.
    #[arg(long)]
    pub leader_elect: bool,
    /// Pods whose `spec.schedulerName` is this are ours.
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
}

pub fn run(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("the scheduler is not built yet (see the issue \"client library and scheduler\"); nothing was started")
}
