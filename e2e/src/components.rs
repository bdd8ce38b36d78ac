//! The components that reach the apiserver through a kubeconfig (scheduler,
//! controller-manager, …): started as processes with a run-unique metrics port, ready
//! once their `/readyz` says their caches are synced.

use crate::ports::free_port;
use crate::process::{Process, Spec};
use crate::wait::{http_get, wait_for};
use crate::RunDir;
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub struct Component {
    pub process: Process,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics: SocketAddr,
}

/// Starts `binary` as `name` with `--kubeconfig` and a free `--metrics-bind-address`.
pub fn spawn(
    run: &RunDir,
    name: &str,
    binary: &str,
    kubeconfig: &Path,
    extra_args: &[String],
    detached: bool,
) -> Result<Component> {
    let program = crate::binaries::binary(binary)?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut spec = Spec::new(name, &program, run.log_file(name))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--metrics-bind-address={metrics}"))
        .args(extra_args.iter().cloned());
    spec.detached = detached;
    Ok(Component {
        process: Process::start(spec)?,
        metrics,
    })
}

impl Component {
    /// Waits until `/readyz` is 200 (caches synced).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let addr = self.metrics;
        let process = &mut self.process;
        wait_for(
            &format!("{} to be ready", process.name()),
            timeout,
            Duration::from_millis(100),
            || {
                if !process.is_running() {
                    let status = process.exit_status();
                    bail!(
                        "{} exited ({status:?}); log:\n{}",
                        process.name(),
                        process.log_tail(30)
                    );
                }
                match http_get(addr, "/readyz") {
                    Ok((200, _)) => Ok(Some(())),
                    Ok((code, body)) => Err(anyhow::anyhow!("/readyz {code}: {body}")),
                    Err(e) => Err(e),
                }
            },
        )
    }

    /// The value of a metric line (name with labels, as printed) from `/metrics`.
    pub fn metric(&self, line_prefix: &str) -> Result<Option<f64>> {
        let (_, body) = http_get(self.metrics, "/metrics")?;
        Ok(body
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok()))
    }
}
