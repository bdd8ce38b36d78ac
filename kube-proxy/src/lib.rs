//! kube-proxy: programs Service VIPs and NodePorts in nftables.
//!
//! Owns: one nftables table per kube-proxy (ClusterIP, NodePort, ready endpoints only,
//! masquerade for hairpin and NodePort), stale conntrack cleanup, and the service CIDR
//! route to a dummy interface.
//!
//! Must not: touch nftables tables or interfaces it did not create.
//!
//! Not built yet: `run` refuses to start.

#[derive(clap::Parser, Debug, Clone)]
#[command(name = "kube-proxy", version, about = "Rustkube kube-proxy")]
pub struct Config {
    #[command(flatten)]
    pub common: client::ComponentFlags,
    #[arg(long)]
    pub hostname_override: Option<String>,
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
}

pub fn run(_config: Config) -> anyhow::Result<()> {
    anyhow::bail!("kube-proxy is not built yet; nothing was started")
}
