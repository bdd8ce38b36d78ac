//! The controller-manager: one daemon running the controllers that reconcile workloads
//! (replicaset, deployment, endpoints, garbage collector, namespace, node-ipam, …).
//!
//! Owns: each controller as a module on shared informers and work queues, leader
//! election on `kube-system/kube-controller-manager`.
//!
//! Must not: talk to anything but the apiserver, or act while it is not the leader.
//!
//! Not built yet (issue "controller-manager"): `run` refuses to start.

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "controller-manager",
    version,
    about = "Rustkube controller-manager"
)]
pub struct Config {
    #[command(flatten)]
    pub common: client::ComponentFlags,
    #[arg(long)]
    pub leader_elect: bool,
    /// Controllers to run: `*` for all, `-name` to disable one.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// The range node-ipam hands out `/24` podCIDRs from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
}

pub fn run(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("the controller-manager is not built yet (see the issue \"controller-manager\"); nothing was started")
}
