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

/// Leader election flags (scheduler, controller-manager), as in Kubernetes.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderElectionFlags {
    /// Take the component's Lease in kube-system before acting; standbys wait.
    #[arg(long)]
    pub leader_elect: bool,
    /// How long a lease not renewed keeps other candidates out.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps trying to renew before it gives up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire, and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: std::time::Duration,
}

impl LeaderElectionFlags {
    /// The election config for the Lease `kube-system/<lease>`.
    pub fn config(&self, lease: &str) -> crate::leader::LeaderElectionConfig {
        crate::leader::LeaderElectionConfig {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            ..crate::leader::LeaderElectionConfig::new(
                "kube-system",
                lease,
                &crate::leader::default_identity(),
            )
        }
    }
}

/// A Go-style duration: `15s`, `500ms`, `2m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: missing unit (s, ms, m, h)"))?;
        let (num, tail) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{s:?}: bad number {num:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs = match unit {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
        };
        total += std::time::Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
