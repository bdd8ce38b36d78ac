//! Storage over the etcd v3 API (the kvstore, or real etcd): reads, and the
//! compare-and-swap transactions every write is. Knows keys, bytes and revisions, not
//! Kubernetes objects.

use crate::error::{ApiError, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach etcd: `--etcd-servers` and the TLS files.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    pub servers: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// One stored value with its revisions.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A page of a range read.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Stored>,
    /// The revision the read was served at.
    pub revision: i64,
    pub more: bool,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// A compare failed: the object key's current state (None when absent), and which
    /// of the side keys (allocations) already existed.
    Conflict {
        current: Option<Stored>,
        taken: Vec<String>,
    },
    Api(ApiError),
}

impl From<etcd_client::Error> for WriteError {
    fn from(e: etcd_client::Error) -> Self {
        WriteError::Api(e.into())
    }
}

/// Side effects a write carries in the same transaction: keys that must not exist yet
/// and are created (allocations), and keys deleted (released allocations).
#[derive(Debug, Default, Clone)]
pub struct SideKeys {
    pub create: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
}

/// Keys per range request when reading many objects.
pub const PAGE: i64 = 500;

#[derive(Clone)]
pub struct Storage {
    client: Client,
    /// For ranges: responses as large as the store sends (Kubernetes allows 2 GiB too),
    /// so an unlimited list is one read at one revision.
    kv: KvClient,
}

/// The largest range response accepted (Go's math.MaxInt32, as kube-apiserver sets).
const MAX_RESPONSE: usize = i32::MAX as usize;

fn read_pem(flag: &str, path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag}: reading {}: {e}", path.display()))
}

/// Strips the scheme: etcd-client takes `host:port` and decides http/https from TLS.
fn endpoint(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

impl Storage {
    /// Connects, retrying until `deadline` passes (the kvstore may still be starting).
    pub async fn connect(config: &EtcdConfig, deadline: Duration) -> anyhow::Result<Self> {
        if config.servers.is_empty() {
            anyhow::bail!("--etcd-servers: at least one URL is required");
        }
        let tls_wanted = config.servers.iter().any(|s| s.starts_with("https://"));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if tls_wanted {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem(
                    "--etcd-cafile",
                    ca,
                )?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read_pem("--etcd-certfile", c)?,
                        read_pem("--etcd-keyfile", k)?,
                    ));
                }
                (None, None) => {}
                _ => anyhow::bail!("--etcd-certfile and --etcd-keyfile must be given together"),
            }
            options = options.with_tls(tls);
        }
        let endpoints: Vec<String> = config.servers.iter().map(|s| endpoint(s)).collect();
        let start = std::time::Instant::now();
        loop {
            let attempt = async {
                let mut c = Client::connect(endpoints.clone(), Some(options.clone())).await?;
                // A real round trip: connecting alone does not prove the store answers.
                c.get("/registry/health", None).await?;
                Ok::<_, etcd_client::Error>(c)
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(client)) => {
                    let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
                    return Ok(Storage { client, kv });
                }
                Ok(Err(e)) if start.elapsed() > deadline => {
                    anyhow::bail!("--etcd-servers {}: {e}", config.servers.join(","))
                }
                Err(_) if start.elapsed() > deadline => {
                    anyhow::bail!("--etcd-servers {}: timed out", config.servers.join(","))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A linearizable read of one key.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>> {
        let mut resp = self.client.clone().get(key, None).await?;
        Ok(resp.take_kvs().into_iter().next().map(|kv| Stored {
            key: key.to_string(),
            mod_revision: kv.mod_revision(),
            value: kv.value().to_vec(),
        }))
    }

    /// The store's current revision (a linearizable read).
    pub async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .client
            .clone()
            .get("/registry/", Some(GetOptions::new().with_count_only()))
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Keys from `start` (inclusive) up to the end of `prefix`, at `revision` (0 =
    /// latest), at most `limit` (0 = all).
    pub async fn range(
        &self,
        prefix: &str,
        start: &str,
        limit: i64,
        revision: i64,
    ) -> Result<Page> {
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let mut resp = self.kv.clone().get(start, Some(opts)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let more = resp.more();
        let items = resp
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let mod_revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                Stored {
                    key: String::from_utf8(key)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    mod_revision,
                    value,
                }
            })
            .collect();
        Ok(Page {
            items,
            revision,
            more,
        })
    }

    /// Every key under `prefix` at one revision (0 = latest), in one read.
    pub async fn range_all(&self, prefix: &str, revision: i64) -> Result<Page> {
        self.range(prefix, prefix, 0, revision).await
    }

    /// Creates `key` if it does not exist, with the side keys, atomically. Returns the
    /// new revision.
    pub async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        side: &SideKeys,
    ) -> Result<i64, WriteError> {
        self.write(key, 0, Some(value), side).await
    }

    /// Replaces `key` if its mod_revision is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
        side: &SideKeys,
    ) -> Result<i64, WriteError> {
        self.write(key, expected, Some(value), side).await
    }

    /// Deletes `key` if its mod_revision is still `expected`.
    pub async fn delete(
        &self,
        key: &str,
        expected: i64,
        side: &SideKeys,
    ) -> Result<i64, WriteError> {
        self.write(key, expected, None, side).await
    }

    /// The one transaction shape: compare the key's mod_revision (0 = must not exist)
    /// and that each side key to create is absent; then put or delete the key and apply
    /// the side keys. On failure, read back what differed.
    async fn write(
        &self,
        key: &str,
        expected: i64,
        value: Option<Vec<u8>>,
        side: &SideKeys,
    ) -> Result<i64, WriteError> {
        let mut compares = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        for (k, _) in &side.create {
            compares.push(Compare::create_revision(k.as_str(), CompareOp::Equal, 0));
        }
        let mut ops = vec![match value {
            Some(v) => TxnOp::put(key, v, None),
            None => TxnOp::delete(key, None),
        }];
        for (k, v) in &side.create {
            ops.push(TxnOp::put(k.as_str(), v.clone(), None));
        }
        for k in &side.delete {
            ops.push(TxnOp::delete(k.as_str(), None));
        }
        let mut failure = vec![TxnOp::get(key, None)];
        for (k, _) in &side.create {
            failure.push(TxnOp::get(
                k.as_str(),
                Some(GetOptions::new().with_count_only()),
            ));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(failure);
        let resp = self.client.clone().txn(txn).await?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        let mut current = None;
        let mut taken = Vec::new();
        for (i, r) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(get) = r else { continue };
            if i == 0 {
                current = get.kvs().first().map(|kv| Stored {
                    key: key.to_string(),
                    mod_revision: kv.mod_revision(),
                    value: kv.value().to_vec(),
                });
            } else if get.count() > 0 {
                taken.push(side.create[i - 1].0.clone());
            }
        }
        Err(WriteError::Conflict { current, taken })
    }
}

/// The end of the range of keys starting with `prefix` (etcd's prefix convention).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(endpoint("https://127.0.0.1:2379/"), "127.0.0.1:2379");
    }
}
