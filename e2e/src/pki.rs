//! The cluster's PKI, generated with rcgen: a CA, serving certificates (SANs 127.0.0.1
//! and localhost) for kvstore members and apiservers, client certificates for the admin
//! and each component, and the kubeconfig files that carry them.

use anyhow::{Context, Result};
use api::kubeconfig::{
    AuthInfo, Cluster, Context as KubeContext, Kubeconfig, NamedCluster, NamedContext, NamedUser,
};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A certificate and key written as `<dir>/<name>.crt` and `<dir>/<name>.key`.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn cert_pem(&self) -> Result<String> {
        std::fs::read_to_string(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))
    }
    pub fn key_pem(&self) -> Result<String> {
        std::fs::read_to_string(&self.key)
            .with_context(|| format!("reading {}", self.key.display()))
    }
}

/// A CA able to sign certificates, kept in `<dir>/ca.crt`, `<dir>/ca.key`.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca: CertFiles,
}

/// The client identities Kubernetes components use (CN = user, O = groups).
pub const ADMIN: (&str, &[&str]) = ("kubernetes-admin", &["system:masters"]);
pub const APISERVER_ETCD_CLIENT: (&str, &[&str]) = ("kube-apiserver-etcd-client", &[]);
pub const SCHEDULER: (&str, &[&str]) = ("system:kube-scheduler", &[]);
pub const CONTROLLER_MANAGER: (&str, &[&str]) = ("system:kube-controller-manager", &[]);
pub const KUBE_PROXY: (&str, &[&str]) = ("system:kube-proxy", &[]);

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn name(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn
}

impl Pki {
    /// Creates a new CA in `dir` (overwriting any there).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name("rustkube-ca", &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let ca = CertFiles {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        write_file(&ca.cert, &cert.pem(), 0o644)?;
        write_file(&ca.key, &key.serialize_pem(), 0o600)?;
        // The key service account tokens are signed with (every apiserver the same).
        write_file(
            &dir.join("sa.key"),
            &KeyPair::generate()?.serialize_pem(),
            0o600,
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca,
        })
    }

    /// The service account signing key (ECDSA P-256, PEM).
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    pub fn ca(&self) -> &CertFiles {
        &self.ca
    }

    fn issue(
        &self,
        file: &str,
        dn: DistinguishedName,
        sans: &[String],
        usage: &[ExtendedKeyUsagePurpose],
    ) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usage.to_vec();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        write_file(&files.cert, &cert.pem(), 0o644)?;
        write_file(&files.key, &key.serialize_pem(), 0o600)?;
        Ok(files)
    }

    /// A serving certificate for `127.0.0.1`, `localhost` and `extra` names. It is also
    /// valid as a client certificate, since raft peers are both.
    pub fn serving(&self, file: &str, cn: &str, extra: &[&str]) -> Result<CertFiles> {
        let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        sans.extend(extra.iter().map(|s| s.to_string()));
        self.issue(
            file,
            name(cn, &[]),
            &sans,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate: user `cn`, groups `orgs`.
    pub fn client(&self, file: &str, (cn, orgs): (&str, &[&str])) -> Result<CertFiles> {
        self.issue(
            file,
            name(cn, orgs),
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// A kubeconfig for `servers` (comma-joined, for failover) with `user`'s client
    /// certificate, everything embedded so the file works from anywhere.
    pub fn kubeconfig(
        &self,
        servers: &[String],
        user: &str,
        creds: &CertFiles,
    ) -> Result<Kubeconfig> {
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let cluster = "rustkube";
        let context = format!("{user}@{cluster}");
        Ok(Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: cluster.into(),
                cluster: Cluster {
                    server: servers.join(","),
                    certificate_authority_data: Some(b64(self.ca.cert_pem()?)),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: user.into(),
                user: AuthInfo {
                    client_certificate_data: Some(b64(creds.cert_pem()?)),
                    client_key_data: Some(b64(creds.key_pem()?)),
                    ..Default::default()
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: KubeContext {
                    cluster: cluster.into(),
                    user: user.into(),
                    namespace: None,
                },
            }],
            current_context: context,
        })
    }
}

/// Writes a kubeconfig with owner-only permissions (it holds a private key).
pub fn write_kubeconfig(path: &Path, cfg: &Kubeconfig) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_file(path, &cfg.to_yaml()?, 0o600)
}
