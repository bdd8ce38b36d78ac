//! The kubelet: the node agent.
//!
//! Owns: node registration and heartbeats, pod workers, the container runtime (runc, and
//! a simulated runtime for scale tests), images, the pod network (netlink), volumes,
//! probes, and the logs and exec server.
//!
//! Must not: route pod or service CIDRs off the machine (DESIGN.md §8), or touch
//! containers, cgroups or interfaces it did not create.
//!
//! Not built yet: `run` refuses to start.

use std::path::PathBuf;

/// Flags (DESIGN.md §7).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "kubelet", version, about = "Rustkube kubelet")]
pub struct Config {
    #[command(flatten)]
    pub common: client::ComponentFlags,
    #[arg(long)]
    pub hostname_override: Option<String>,
    #[arg(long, default_value = "/var/lib/rustkube/kubelet")]
    pub root_dir: PathBuf,
    #[arg(long, value_parser = ["runc", "simulated"], default_value = "runc")]
    pub container_runtime: String,
    #[arg(long)]
    pub node_ip: Option<String>,
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    #[arg(long, default_value = "/rustkube")]
    pub cgroup_root: String,
    #[arg(long, value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
    #[arg(long)]
    pub allow_pod_egress: bool,
}

pub fn run(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("the kubelet is not built yet; nothing was started")
}
