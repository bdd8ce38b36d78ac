//! Flags every component (scheduler, controller-manager, kubelet, kube-proxy) shares,
//! named as in Kubernetes (DESIGN.md §6).

use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ComponentFlags {
    /// Kubeconfig with the apiserver URL(s) (comma-separated for failover), CA and
    /// client credentials.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Log verbosity (0-5); RUST_LOG, when set, takes precedence.
    #[arg(long = "v", default_value_t = 0)]
    pub verbosity: u8,

    /// Address the /metrics and /healthz endpoints listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_bind_address: String,
}

impl ComponentFlags {
    /// Starts logging to stderr at this verbosity (RUST_LOG wins when set).
    pub fn init_logging(&self) {
        init_logging(self.verbosity);
    }
}

/// Starts `tracing` output to stderr: RUST_LOG when set, otherwise a level from `--v`.
pub fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // A second initialisation (tests starting two components in one process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
