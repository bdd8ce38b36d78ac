//! What the benchmarks share: a measured run's latencies and throughput, and a process's
//! peak memory and CPU time.

use std::time::Duration;

/// One workload's outcome: how many operations in how long, and each one's latency.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub ops: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// CPU time the servers under test used meanwhile (zero when not measured).
    pub server_cpu: Duration,
    /// CPU time the load generator (this process) used meanwhile.
    pub client_cpu: Duration,
}

impl Measured {
    /// Adds another run of the same workload: throughput becomes the total operations over
    /// the total time, percentiles are over every latency.
    pub fn merge(&mut self, other: Measured) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
    }

    /// Server CPU time per operation, in microseconds.
    pub fn server_us_per_op(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }

    /// Load generator CPU time per operation, in microseconds.
    pub fn client_us_per_op(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
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

/// CPU time (user + system) a live process has used so far, zero if unknown. With the
/// load generator on the same cores as the servers, this shows what each side of an
/// operation costs the machine.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / hz.max(1) as f64)
}

/// This process's own CPU time so far.
pub fn own_cpu_time() -> Duration {
    cpu_time(std::process::id() as i32)
}

/// CPU time used so far by all of `pids` together.
pub fn cpu_time_of(pids: impl IntoIterator<Item = i32>) -> Duration {
    pids.into_iter().map(cpu_time).sum()
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
