//! A kvstore raft group — or a real etcd one, started with the same flags — as processes
//! of the harness, so tests can compare the two and kill, pause or restart members.

use crate::pki::CertFiles;
use crate::ports::free_port;
use crate::process::{Process, Spec};
use crate::wait::{http_get, wait_for};
use crate::RunDir;
use anyhow::{bail, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which server to start: ours, or Debian's etcd to compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Kvstore,
    Etcd,
}

impl Flavor {
    pub fn program(self) -> Result<PathBuf> {
        match self {
            Flavor::Kvstore => crate::binaries::binary("kvstore"),
            Flavor::Etcd => {
                let p = PathBuf::from("/usr/bin/etcd");
                if !p.is_file() {
                    bail!("/usr/bin/etcd not found: run `make deps` (Debian package etcd-server)");
                }
                Ok(p)
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Flavor::Kvstore => "kvstore",
            Flavor::Etcd => "etcd",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A serving certificate (also valid for client auth) and the CA to trust: client
    /// and peer URLs become https, and clients and peers must present a certificate
    /// signed by the CA.
    pub tls: Option<(CertFiles, PathBuf)>,
    /// Leave members running after the harness exits (`local-cluster up --background`).
    pub detached: bool,
    pub extra_args: Vec<String>,
}

#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    pub process: Process,
}

impl Member {
    pub fn client_url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    /// Whether the member answers `/health` with 200.
    pub fn healthy(&self) -> bool {
        matches!(http_get(self.metrics_addr(), "/health"), Ok((200, _)))
    }
}

#[derive(Debug)]
pub struct KvCluster {
    pub flavor: Flavor,
    pub members: Vec<Member>,
    tls: bool,
    opts: Options,
}

/// Starts one member process (not waiting for it).
fn spawn_member(
    run: &RunDir,
    flavor: Flavor,
    name: &str,
    (client, peer, metrics): (u16, u16, u16),
    initial_cluster: &str,
    state: &str,
    opts: &Options,
) -> Result<Member> {
    let program = flavor.program()?;
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let data_dir = run.subdir(&format!("data/{name}"))?;
    let client_url = format!("{scheme}://127.0.0.1:{client}");
    let peer_url = format!("{scheme}://127.0.0.1:{peer}");
    let mut spec = Spec::new(name, &program, run.log_file(name)).args([
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-state={state}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
    ]);
    if let Some((certs, ca)) = &opts.tls {
        spec = spec.args([
            format!("--cert-file={}", certs.cert.display()),
            format!("--key-file={}", certs.key.display()),
            format!("--trusted-ca-file={}", ca.display()),
            "--client-cert-auth".to_string(),
            format!("--peer-cert-file={}", certs.cert.display()),
            format!("--peer-key-file={}", certs.key.display()),
            format!("--peer-trusted-ca-file={}", ca.display()),
            "--peer-client-cert-auth".to_string(),
        ]);
    }
    spec = spec.args(opts.extra_args.iter().cloned());
    spec.detached = opts.detached;
    Ok(Member {
        name: name.to_string(),
        client_port: client,
        peer_port: peer,
        metrics_port: metrics,
        data_dir,
        process: Process::start(spec)?,
    })
}

impl KvCluster {
    /// Starts `size` members as a new raft group and waits until every one is healthy.
    pub fn start(run: &RunDir, flavor: Flavor, size: usize, opts: &Options) -> Result<Self> {
        if size == 0 {
            bail!("a kvstore group needs at least one member");
        }
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| Self::new_ports())
            .collect::<Result<_>>()?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, _))| format!("{}{i}={scheme}://127.0.0.1:{peer}", flavor.label()))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, ports) in ports.into_iter().enumerate() {
            let name = format!("{}{i}", flavor.label());
            members.push(spawn_member(
                run,
                flavor,
                &name,
                ports,
                &initial_cluster,
                "new",
                opts,
            )?);
        }
        let mut cluster = KvCluster {
            flavor,
            members,
            tls: opts.tls.is_some(),
            opts: opts.clone(),
        };
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Waits until every running member answers `/health` with 200; fails early, with its
    /// log, if a member exits.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        for m in &mut self.members {
            wait_for(
                &format!("{} to be healthy", m.name),
                timeout,
                Duration::from_millis(50),
                || {
                    if !m.process.is_running() {
                        bail!(
                            "{} exited ({:?}); log:\n{}",
                            m.name,
                            m.process.exit_status(),
                            m.process.log_tail(20)
                        );
                    }
                    Ok(m.healthy().then_some(()))
                },
            )?;
        }
        Ok(())
    }

    /// Free ports for a member to be added: (client, peer, metrics).
    pub fn new_ports() -> Result<(u16, u16, u16)> {
        Ok((free_port()?, free_port()?, free_port()?))
    }

    /// Starts a member that joins the running group (`--initial-cluster-state existing`),
    /// after it was added with `member add` for peer URL `{scheme}://127.0.0.1:{ports.1}`.
    /// Does not wait for it.
    pub fn join(&mut self, run: &RunDir, name: &str, ports: (u16, u16, u16)) -> Result<()> {
        let scheme = if self.tls { "https" } else { "http" };
        let mut initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={scheme}://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        initial.push(format!("{name}={scheme}://127.0.0.1:{}", ports.1));
        let member = spawn_member(
            run,
            self.flavor,
            name,
            ports,
            &initial.join(","),
            "existing",
            &self.opts,
        )?;
        self.members.push(member);
        Ok(())
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_url(self.tls))
            .collect()
    }

    /// Stops every member gracefully.
    pub fn stop(&mut self) -> Result<()> {
        for m in &mut self.members {
            m.process.stop()?;
        }
        Ok(())
    }
}
