//! The connection to the apiservers: one lazily connected channel per URL of the
//! kubeconfig's `server` list, TLS with the kubeconfig's CA and client certificate (or a
//! bearer token), and failover — a call that finds its apiserver unreachable moves on to
//! the next one and, when it is safe to repeat, retries with backoff.

use crate::error::{Error, Result};
use api::kubeconfig::Kubeconfig;
use base64::Engine;
use futures::future::BoxFuture;
use proto::apiserver::v1 as pb;
use proto::apiserver::v1::resources_client::ResourcesClient;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long a call keeps trying other apiservers before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// One RPC of the `Resources` service, as `call` runs it.
type Rpc<M, T> = fn(
    ResourcesClient<Channel>,
    tonic::Request<M>,
) -> BoxFuture<'static, Result<tonic::Response<T>, tonic::Status>>;

/// A handle on the apiservers; cheap to clone, shared by every `Api` and informer.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<(String, Channel)>,
    current: AtomicUsize,
    token: Option<MetadataValue<Ascii>>,
    namespace: String,
    /// The certificate authority (PEM) the kubeconfig trusts for the apiservers.
    ca: Option<Vec<u8>>,
}

/// Whether a call may be sent twice: reads, watches, and writes guarded by a
/// resourceVersion or otherwise idempotent. A create is retried only when the request
/// provably never left (the connection could not be made).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Retry {
    Idempotent,
    OnlyUnsent,
}

fn read_source(
    data: &Option<String>,
    file: &Option<String>,
    base: &Path,
) -> Result<Option<Vec<u8>>> {
    if let Some(d) = data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| Error::Config(format!("base64 data in kubeconfig: {e}")))?;
        return Ok(Some(bytes));
    }
    if let Some(f) = file {
        let path = base.join(f);
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// The host part of a URL, for TLS server name verification.
fn url_host(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

impl Client {
    /// Reads a kubeconfig file; relative certificate paths are relative to its directory.
    /// Must be called inside a Tokio runtime (connections are made lazily on it).
    pub fn from_kubeconfig_file(path: &Path, user_agent: &str) -> Result<Client> {
        let cfg = Kubeconfig::load(path).map_err(|e| Error::Config(e.to_string()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Client::from_kubeconfig(&cfg, &base, user_agent)
    }

    /// The client `--kubeconfig` (or `$KUBECONFIG`) names.
    pub fn from_flags(flags: &crate::ComponentFlags, user_agent: &str) -> Result<Client> {
        let path: PathBuf = flags
            .kubeconfig
            .clone()
            .ok_or_else(|| Error::Config("--kubeconfig is required (or set KUBECONFIG)".into()))?;
        Client::from_kubeconfig_file(&path, user_agent)
    }

    pub fn from_kubeconfig(cfg: &Kubeconfig, base: &Path, user_agent: &str) -> Result<Client> {
        let resolved = cfg
            .resolve(None)
            .map_err(|e| Error::Config(e.to_string()))?;
        let ca = read_source(
            &resolved.cluster.certificate_authority_data,
            &resolved.cluster.certificate_authority,
            base,
        )?;
        let cert = read_source(
            &resolved.user.client_certificate_data,
            &resolved.user.client_certificate,
            base,
        )?;
        let key = read_source(
            &resolved.user.client_key_data,
            &resolved.user.client_key,
            base,
        )?;
        let token = match &resolved.user.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::Config("the token is not valid header text".into()))?,
            ),
            None => None,
        };
        let mut servers = Vec::new();
        for url in &resolved.servers {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::Config(format!("server {url}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .user_agent(user_agent)
                .map_err(|e| Error::Config(format!("user agent {user_agent:?}: {e}")))?;
            if url.starts_with("https://") {
                let mut tls = ClientTlsConfig::new().domain_name(
                    resolved
                        .cluster
                        .tls_server_name
                        .clone()
                        .unwrap_or_else(|| url_host(url).to_string()),
                );
                if let Some(ca) = &ca {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                match (&cert, &key) {
                    (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(c, k)),
                    (None, None) => {}
                    _ => {
                        return Err(Error::Config(
                            "the kubeconfig user has a client certificate without a key, or a key without a certificate".into(),
                        ))
                    }
                }
                ep = ep
                    .tls_config(tls)
                    .map_err(|e| Error::Config(format!("TLS for {url}: {e}")))?;
            }
            servers.push((url.clone(), ep.connect_lazy()));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                servers,
                current: AtomicUsize::new(0),
                token,
                namespace: resolved.namespace,
                ca,
            }),
        })
    }

    /// The certificate authority (PEM) the kubeconfig trusts for the apiservers, if it
    /// names one.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.inner.ca.as_deref()
    }

    /// The kubeconfig context's namespace ("default" when it names none).
    pub fn default_namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The URL calls go to now.
    pub fn current_server(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.servers.len();
        &self.inner.servers[i].0
    }

    fn request<M>(&self, msg: M) -> tonic::Request<M> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.inner.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }

    /// Moves on from server `failed` (unless another call already did).
    fn fail_over(&self, failed: usize) {
        let n = self.inner.servers.len();
        if n > 1
            && self
                .inner
                .current
                .compare_exchange(
                    failed,
                    (failed + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::info!(
                from = %self.inner.servers[failed].0,
                to = %self.inner.servers[(failed + 1) % n].0,
                "apiserver unreachable, failing over"
            );
        }
    }

    /// Runs one RPC, failing over and retrying as `retry` allows.
    pub(crate) async fn call<M, T>(&self, retry: Retry, msg: M, f: Rpc<M, T>) -> Result<T>
    where
        M: Clone,
    {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(25);
        let mut attempts = 0usize;
        loop {
            let i = self.inner.current.load(Ordering::Relaxed) % self.inner.servers.len();
            let client = ResourcesClient::new(self.inner.servers[i].1.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(64 << 20);
            let status = match f(client, self.request(msg.clone())).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) => s,
            };
            let unsent = status.code() == tonic::Code::Unavailable
                && status.details().is_empty()
                && is_connect_failure(&status);
            let err = Error::from(status);
            if !err.is_transient() {
                return Err(err);
            }
            if matches!(err, Error::Transport(_)) {
                self.fail_over(i);
            }
            attempts += 1;
            let may_retry = retry == Retry::Idempotent || unsent;
            // Every server gets one immediate try; after that, back off.
            if !may_retry || start.elapsed() > RETRY_FOR {
                return Err(err);
            }
            if attempts >= self.inner.servers.len() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    pub(crate) async fn get_raw(&self, r: pb::ResourceRef) -> Result<Vec<u8>> {
        let req = pb::GetRequest {
            r#ref: Some(r),
            resource_version: String::new(),
        };
        let o = self
            .call(Retry::Idempotent, req, |mut c, r| {
                Box::pin(async move { c.get(r).await })
            })
            .await?;
        Ok(o.json.to_vec())
    }

    pub(crate) async fn list_raw(&self, req: pb::ListRequest) -> Result<pb::ObjectList> {
        self.call(Retry::Idempotent, req, |mut c, r| {
            Box::pin(async move { c.list(r).await })
        })
        .await
    }

    pub(crate) async fn watch_raw(
        &self,
        req: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::WatchEvent>> {
        self.call(Retry::Idempotent, req, |mut c, r| {
            Box::pin(async move { c.watch(r).await })
        })
        .await
    }

    pub(crate) async fn create_raw(&self, req: pb::CreateRequest) -> Result<Vec<u8>> {
        let o = self
            .call(Retry::OnlyUnsent, req, |mut c, r| {
                Box::pin(async move { c.create(r).await })
            })
            .await?;
        Ok(o.json.to_vec())
    }

    /// Updates carry the resourceVersion they read, so a repeat of one that landed fails
    /// with a Conflict instead of writing twice.
    pub(crate) async fn update_raw(&self, req: pb::UpdateRequest) -> Result<Vec<u8>> {
        let o = self
            .call(Retry::Idempotent, req, |mut c, r| {
                Box::pin(async move { c.update(r).await })
            })
            .await?;
        Ok(o.json.to_vec())
    }

    pub(crate) async fn patch_raw(&self, req: pb::PatchRequest) -> Result<Vec<u8>> {
        let o = self
            .call(Retry::Idempotent, req, |mut c, r| {
                Box::pin(async move { c.patch(r).await })
            })
            .await?;
        Ok(o.json.to_vec())
    }

    pub(crate) async fn delete_raw(&self, req: pb::DeleteRequest) -> Result<Vec<u8>> {
        let o = self
            .call(Retry::Idempotent, req, |mut c, r| {
                Box::pin(async move { c.delete(r).await })
            })
            .await?;
        Ok(o.json.to_vec())
    }
}

/// Whether a transport status says the connection was never made (so the request
/// was not sent).
fn is_connect_failure(s: &tonic::Status) -> bool {
    let text = format!("{s:?}").to_ascii_lowercase();
    text.contains("tcp connect")
        || text.contains("error trying to connect")
        || text.contains("connection refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("https://127.0.0.1:6443"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:6443/x"), "::1");
        assert_eq!(url_host("https://api.example"), "api.example");
    }
}
