//! The kubeconfig file format (`clusters`, `users`, `contexts`, `current-context`), as
//! kubectl reads it. A cluster's `server` may hold several comma-separated URLs; Rustkube's
//! clients fail over between them, kubectl uses the first.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("reading kubeconfig {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing kubeconfig: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("kubeconfig: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(default = "api_version_v1")]
    pub api_version: String,
    #[serde(default = "kind_config")]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default)]
    pub current_context: String,
}

fn api_version_v1() -> String {
    "v1".into()
}
fn kind_config() -> String {
    "Config".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// One URL, or several separated by commas.
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// Base64 PEM, as kubectl writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: AuthInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The cluster, user and namespace a kubeconfig's current context selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub servers: Vec<String>,
    pub cluster: &'a Cluster,
    pub user: &'a AuthInfo,
    pub namespace: String,
}

impl Kubeconfig {
    pub fn from_yaml(text: &str) -> Result<Self, KubeconfigError> {
        let cfg: Kubeconfig = serde_yaml::from_str(text)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        Ok(serde_yaml::to_string(self)?)
    }

    /// Resolves `current-context` (or `context` when given) to its cluster and user.
    pub fn resolve(&self, context: Option<&str>) -> Result<Resolved<'_>, KubeconfigError> {
        let name = context.unwrap_or(&self.current_context);
        if name.is_empty() {
            return Err(KubeconfigError::Invalid("no current-context set".into()));
        }
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| KubeconfigError::Invalid(format!("context {name:?} not found")))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                KubeconfigError::Invalid(format!("cluster {:?} not found", ctx.context.cluster))
            })?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| {
                KubeconfigError::Invalid(format!("user {:?} not found", ctx.context.user))
            })?;
        let servers = split_servers(&cluster.cluster.server)?;
        Ok(Resolved {
            servers,
            cluster: &cluster.cluster,
            user: &user.user,
            namespace: ctx
                .context
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        })
    }
}

/// Splits a `server` field into its URLs. Each must be an `http://` or `https://` URL.
pub fn split_servers(server: &str) -> Result<Vec<String>, KubeconfigError> {
    let urls: Vec<String> = server
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(KubeconfigError::Invalid("cluster server is empty".into()));
    }
    for u in &urls {
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {}
            _ => {
                return Err(KubeconfigError::Invalid(format!(
                    "server URL {u:?} must be http:// or https:// with a host"
                )))
            }
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443, https://127.0.0.1:6444
    certificate-authority-data: Q0E=
contexts:
- name: admin@local
  context:
    cluster: local
    user: admin
    namespace: kube-system
current-context: admin@local
users:
- name: admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"#;

    #[test]
    fn resolves_current_context_with_several_servers() {
        let cfg = Kubeconfig::from_yaml(SAMPLE).unwrap();
        let r = cfg.resolve(None).unwrap();
        assert_eq!(
            r.servers,
            ["https://127.0.0.1:6443", "https://127.0.0.1:6444"]
        );
        assert_eq!(r.namespace, "kube-system");
        assert_eq!(r.user.client_key_data.as_deref(), Some("S0VZ"));
        assert_eq!(
            r.cluster.certificate_authority_data.as_deref(),
            Some("Q0E=")
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let cfg = Kubeconfig::from_yaml(SAMPLE).unwrap();
        let again = Kubeconfig::from_yaml(&cfg.to_yaml().unwrap()).unwrap();
        assert_eq!(cfg, again);
        assert!(cfg
            .to_yaml()
            .unwrap()
            .contains("current-context: admin@local"));
    }

    #[test]
    fn token_user_and_default_namespace() {
        let text = SAMPLE.replace("    namespace: kube-system\n", "").replace(
            "    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n",
            "    token: secret\n",
        );
        let cfg = Kubeconfig::from_yaml(&text).unwrap();
        let r = cfg.resolve(None).unwrap();
        assert_eq!(r.user.token.as_deref(), Some("secret"));
        assert_eq!(r.namespace, "default");
    }

    #[test]
    fn missing_references_are_errors() {
        let cfg = Kubeconfig::from_yaml(SAMPLE).unwrap();
        assert!(cfg.resolve(Some("nope")).is_err());
        let mut no_cluster = cfg.clone();
        no_cluster.clusters.clear();
        assert!(no_cluster
            .resolve(None)
            .unwrap_err()
            .to_string()
            .contains("cluster"));
        let mut no_user = cfg.clone();
        no_user.users.clear();
        assert!(no_user
            .resolve(None)
            .unwrap_err()
            .to_string()
            .contains("user"));
        let mut no_current = cfg;
        no_current.current_context.clear();
        assert!(no_current.resolve(None).is_err());
    }

    #[test]
    fn malformed_input() {
        assert!(Kubeconfig::from_yaml("clusters: [").is_err());
        assert!(Kubeconfig::from_yaml("clusters: 5").is_err());
        assert!(Kubeconfig::from_yaml("- a\n- b").is_err());
        assert!(Kubeconfig::load(Path::new("/nonexistent/kubeconfig")).is_err());
    }

    #[test]
    fn server_urls_are_checked() {
        assert!(split_servers("").is_err());
        assert!(split_servers(" , ").is_err());
        assert!(split_servers("127.0.0.1:6443").is_err());
        assert!(split_servers("https://").is_err());
        assert!(split_servers("ftp://x").is_err());
        assert_eq!(split_servers("http://a,https://b").unwrap().len(), 2);
    }
}
