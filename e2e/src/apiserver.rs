//! A control plane as processes: a kvstore (or etcd) reached over mutual TLS, and an
//! apiserver with the cluster PKI, a token file and an admin kubeconfig; plus a `kubectl`
//! runner bound to that kubeconfig.

use crate::kvstore::{Flavor, KvCluster, Options};
use crate::pki::{self, CertFiles, Pki};
use crate::ports::free_port;
use crate::process::{Process, Spec};
use crate::wait::wait_for;
use crate::RunDir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What an apiserver process needs from the cluster around it.
pub struct ApiserverSpec<'a> {
    pub name: &'a str,
    pub port: u16,
    pub etcd_servers: &'a [String],
    pub etcd_client: &'a CertFiles,
    pub serving: &'a CertFiles,
    pub ca: &'a Path,
    pub token_file: Option<&'a Path>,
    /// Signs service account tokens (the same file for every apiserver of a cluster).
    pub service_account_key: &'a Path,
    pub detached: bool,
    pub extra_args: &'a [String],
}

/// Starts one apiserver process (not waiting for it).
pub fn spawn_apiserver(run: &RunDir, s: &ApiserverSpec<'_>) -> Result<Process> {
    let program = crate::binaries::binary("apiserver")?;
    let mut spec = Spec::new(s.name, &program, run.log_file(s.name)).args([
        format!("--etcd-servers={}", s.etcd_servers.join(",")),
        format!("--etcd-cafile={}", s.ca.display()),
        format!("--etcd-certfile={}", s.etcd_client.cert.display()),
        format!("--etcd-keyfile={}", s.etcd_client.key.display()),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={}", s.port),
        format!("--tls-cert-file={}", s.serving.cert.display()),
        format!("--tls-private-key-file={}", s.serving.key.display()),
        format!("--client-ca-file={}", s.ca.display()),
        format!(
            "--service-account-signing-key-file={}",
            s.service_account_key.display()
        ),
    ]);
    if let Some(t) = s.token_file {
        spec = spec.arg(format!("--token-auth-file={}", t.display()));
    }
    spec = spec.args(s.extra_args.iter().cloned());
    spec.detached = s.detached;
    Process::start(spec)
}

/// Runs `kubectl` with this kubeconfig; returns (success, stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .context("running kubectl (is it installed?)")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Waits until the apiserver answers `/readyz` through kubectl (TLS, auth and all).
pub fn wait_ready(process: &mut Process, kubeconfig: &Path, timeout: Duration) -> Result<()> {
    wait_for(
        &format!("{} to be ready", process.name()),
        timeout,
        Duration::from_millis(200),
        || {
            if !process.is_running() {
                let status = process.exit_status();
                bail!(
                    "{} exited ({status:?}); log:\n{}",
                    process.name(),
                    process.log_tail(30)
                );
            }
            let (ok, out, err) = kubectl(kubeconfig, &["get", "--raw", "/readyz"])?;
            if ok && out.trim() == "ok" {
                Ok(Some(()))
            } else {
                Err(anyhow::anyhow!("{}{}", out.trim(), err.trim()))
            }
        },
    )
}

pub struct ControlPlane {
    pub kv: KvCluster,
    pub apiserver: Process,
    pub port: u16,
    pub kubeconfig: PathBuf,
    /// A bearer token for user `token-user` (groups `dev`) in the token file.
    pub token: String,
    pub ca: PathBuf,
    pub url: String,
    /// The admin's client certificate (user kubernetes-admin, group system:masters).
    pub admin: CertFiles,
    pki: Pki,
    etcd_client: CertFiles,
    serving: CertFiles,
    token_file: PathBuf,
    /// The flags each apiserver of this control plane gets beyond the harness's own.
    apiserver_args: Vec<String>,
}

impl ControlPlane {
    /// A 1-member store of `flavor` and one apiserver, ready to serve.
    pub fn start(run: &RunDir, flavor: Flavor) -> Result<Self> {
        Self::start_with(run, flavor, &[])
    }

    /// As `start`, with more apiserver flags (`--authorization-mode=RBAC`).
    ///
    /// The ServiceAccount admission plugin is off unless the flags name admission plugins
    /// themselves: no controller-manager runs here to make each namespace's `default`
    /// account, which that plugin wants for every pod (Kubernetes' integration tests run
    /// their apiservers without it for the same reason).
    pub fn start_with(run: &RunDir, flavor: Flavor, apiserver_args: &[String]) -> Result<Self> {
        let mut apiserver_args = apiserver_args.to_vec();
        if !apiserver_args
            .iter()
            .any(|a| a.contains("-admission-plugins"))
        {
            apiserver_args.push("--disable-admission-plugins=ServiceAccount".into());
        }
        let pki = Pki::create(&run.path().join("pki"))?;
        let kv_certs = pki.serving("kvstore", "kvstore", &[])?;
        let ca = pki.ca().cert.clone();
        let kv = KvCluster::start(
            run,
            flavor,
            1,
            &Options {
                tls: Some((kv_certs, ca.clone())),
                ..Default::default()
            },
        )?;
        let etcd_client = pki.client("apiserver-etcd-client", pki::APISERVER_ETCD_CLIENT)?;
        let serving = pki.serving(
            "apiserver",
            "kube-apiserver",
            &["kubernetes", "kubernetes.default"],
        )?;
        let token = format!("t{:016x}", rand_u64());
        let token_file = run.path().join("tokens.csv");
        std::fs::write(&token_file, format!("{token},token-user,1001,\"dev\"\n"))?;
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let admin = pki.client("admin", pki::ADMIN)?;
        let kubeconfig = run.path().join("kubeconfig");
        pki::write_kubeconfig(
            &kubeconfig,
            &pki.kubeconfig(std::slice::from_ref(&url), "kubernetes-admin", &admin)?,
        )?;
        let mut apiserver = spawn_apiserver(
            run,
            &ApiserverSpec {
                name: "apiserver",
                port,
                etcd_servers: &kv.endpoints(),
                etcd_client: &etcd_client,
                serving: &serving,
                ca: &ca,
                token_file: Some(&token_file),
                service_account_key: &pki.service_account_key(),
                detached: false,
                extra_args: &apiserver_args,
            },
        )?;
        wait_ready(&mut apiserver, &kubeconfig, Duration::from_secs(60))?;
        Ok(ControlPlane {
            kv,
            apiserver,
            port,
            kubeconfig,
            token,
            ca,
            url,
            admin,
            pki,
            etcd_client,
            serving,
            token_file,
            apiserver_args,
        })
    }

    /// Starts another apiserver over the same store and waits until it is ready; returns
    /// it and its URL.
    pub fn add_apiserver(&self, run: &RunDir, name: &str) -> Result<(Process, String)> {
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let mut p = spawn_apiserver(
            run,
            &ApiserverSpec {
                name,
                port,
                etcd_servers: &self.kv.endpoints(),
                etcd_client: &self.etcd_client,
                serving: &self.serving,
                ca: &self.ca,
                token_file: Some(&self.token_file),
                service_account_key: &self.pki.service_account_key(),
                detached: false,
                extra_args: &self.apiserver_args,
            },
        )?;
        let kubeconfig = self.admin_kubeconfig(
            run,
            &format!("{name}.kubeconfig"),
            std::slice::from_ref(&url),
        )?;
        wait_ready(&mut p, &kubeconfig, Duration::from_secs(60))?;
        Ok((p, url))
    }

    /// Compacts the store at `rev` over the etcd API, as the apiserver's own client.
    pub async fn compact_store(&self, rev: i64) -> Result<()> {
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(&self.etcd_client.cert)?,
                std::fs::read(&self.etcd_client.key)?,
            ));
        let eps: Vec<String> = self
            .kv
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("https://").to_string())
            .collect();
        let mut etcd = etcd_client::Client::connect(
            eps,
            Some(etcd_client::ConnectOptions::new().with_tls(tls)),
        )
        .await?;
        etcd.compact(rev, None).await?;
        Ok(())
    }

    /// Writes an admin kubeconfig listing `servers` (clients fail over in that order).
    pub fn admin_kubeconfig(
        &self,
        run: &RunDir,
        file: &str,
        servers: &[String],
    ) -> Result<PathBuf> {
        let path = run.path().join(file);
        pki::write_kubeconfig(
            &path,
            &self
                .pki
                .kubeconfig(servers, "kubernetes-admin", &self.admin)?,
        )?;
        Ok(path)
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<(bool, String, String)> {
        kubectl(&self.kubeconfig, args)
    }

    /// A kubeconfig for `token-user` (groups `dev`, by its bearer token), in `run`.
    pub fn token_user_kubeconfig(&self, run: &RunDir) -> Result<PathBuf> {
        let path = run.path().join("token-user.kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority: '{}'}}\nusers:\n- name: u\n  user: {{token: '{}'}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
                self.url,
                self.ca.display(),
                self.token
            ),
        )?;
        Ok(path)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.kubectl(args)?;
        if !ok {
            bail!("kubectl {} failed: {err}{out}", args.join(" "));
        }
        Ok(out)
    }

    /// kubectl that must fail; returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.kubectl(args)?;
        if ok {
            bail!(
                "kubectl {} should have failed, printed: {out}",
                args.join(" ")
            );
        }
        Ok(err)
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
