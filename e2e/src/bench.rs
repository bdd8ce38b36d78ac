//! What the benchmarks share: a measured run's latencies and throughput, and a process's
//! peak memory.

use std::time::Duration;

/// One workload's outcome: how many operations in how long, and each one's latency.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub ops: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Measured {
    /// Adds another run of the same workload: throughput becomes the total operations over
    /// the total time, percentiles are over every latency.
    pub fn merge(&mut self, other: Measured) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `p` (0.5, 0.99); zero when nothing was measured.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut l = latencies.to_vec();
    l.sort();
    if l.is_empty() {
        return Duration::ZERO;
    }
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
}

/// Peak resident memory of a live process in KiB (`VmHWM`), 0 if unknown.
pub fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The number after flag `name` on the command line, `default` without the flag.
pub fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{name} needs a number")),
    }
}
