//! The raft peer transport: gRPC service `kvstorepb.RaftPeer` (proto/kvstore/raft.proto).
//!
//! Both sides run on the raft thread's runtime (see `node.rs`). Outgoing, one task per
//! peer owns a bounded queue and one long-lived client stream of raft messages to that
//! peer; when the stream breaks it reconnects with backoff and the messages queued
//! meanwhile are dropped (raft retransmits what matters). Snapshots go on a call of their
//! own, in 1 MiB pieces, so their outcome can be reported to raft and no message is the
//! size of the store. Incoming, the service puts a snapshot back together and hands every
//! message of the right cluster to the node loop.
//!
//! Must not: wait on the loop. `send` only ever `try_send`s, and the loop's channel is
//! unbounded, since both ends share one thread.

use super::node::RaftNode;
use proto::peer::kvstorepb::{
    raft_peer_client::RaftPeerClient,
    raft_peer_server::{RaftPeer, RaftPeerServer},
    Ack, LeaseRenewRequest, LeaseRenewResponse, Member, MembersRequest, MembersResponse,
    RaftEnvelope,
};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

/// Outcomes the node loop must tell raft about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Sending to this peer failed: raft probes it instead of streaming appends.
    Unreachable(u64),
    /// A snapshot to this peer was delivered (`ok`) or not.
    Snapshot { to: u64, ok: bool },
    /// A peer refused our messages because this member was removed from the cluster.
    Removed,
}

/// How a member refuses messages from a removed one (the sender then stops).
const REMOVED: &str = "kvstore: the sending member was removed from the cluster";

pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

/// Messages waiting for one peer; beyond this they are dropped.
const QUEUE: usize = 4096;
/// The largest peer message: an append whose one entry is as large as
/// `--max-request-bytes` allows (snapshots travel in pieces).
pub const MAX_MESSAGE: usize = 1024 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

struct Link {
    urls: Vec<String>,
    tx: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Transport {
    me: u64,
    cluster_id: u64,
    handle: tokio::runtime::Handle,
    tls: Option<ClientTlsConfig>,
    report: Reporter,
    links: Mutex<HashMap<u64, Link>>,
}

impl Transport {
    pub fn new(
        me: u64,
        cluster_id: u64,
        handle: tokio::runtime::Handle,
        tls: Option<ClientTlsConfig>,
        report: Reporter,
    ) -> Self {
        Transport {
            me,
            cluster_id,
            handle,
            tls,
            report,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the set of links match the members: new peers get one, removed ones lose
    /// theirs, changed URLs reconnect.
    pub fn update(&self, members: &[Member]) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|id, l| members.iter().any(|m| m.id == *id && m.peer_urls == l.urls));
        for m in members {
            if m.id == self.me || links.contains_key(&m.id) || m.peer_urls.is_empty() {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let task = self.handle.spawn(run_link(LinkCtx {
                to: m.id,
                urls: m.peer_urls.clone(),
                cluster_id: self.cluster_id,
                tls: self.tls.clone(),
                report: self.report.clone(),
                rx,
            }));
            links.insert(
                m.id,
                Link {
                    urls: m.peer_urls.clone(),
                    tx,
                    task,
                },
            );
        }
    }

    /// Queues messages for their peers without waiting.
    pub fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let sent = links.get(&to).is_some_and(|l| l.tx.try_send(m).is_ok());
            if !sent {
                // A full queue or an unknown peer: raft learns and retries.
                (self.report)(Report::Unreachable(to));
                if snapshot {
                    (self.report)(Report::Snapshot { to, ok: false });
                }
            }
        }
    }
}

struct LinkCtx {
    to: u64,
    urls: Vec<String>,
    cluster_id: u64,
    tls: Option<ClientTlsConfig>,
    report: Reporter,
    rx: mpsc::Receiver<Message>,
}

/// A client for a peer URL (`http://` or `https://`).
pub async fn connect(
    url: &str,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<RaftPeerClient<Channel>> {
    let mut ep = Endpoint::from_shared(url.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3));
    if url.starts_with("https://") {
        let Some(tls) = tls else {
            anyhow::bail!("{url}: https peer URLs need --peer-trusted-ca-file");
        };
        ep = ep.tls_config(tls.clone())?;
    }
    let channel = ep.connect().await?;
    Ok(RaftPeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

fn envelope(m: &Message, cluster_id: u64) -> Option<RaftEnvelope> {
    match m.write_to_bytes() {
        Ok(bytes) => Some(RaftEnvelope {
            message: bytes,
            cluster_id,
            ..Default::default()
        }),
        Err(e) => {
            tracing::error!("encoding a raft message: {e}");
            None
        }
    }
}

async fn run_link(mut ctx: LinkCtx) {
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 0usize;
    loop {
        let url = &ctx.urls[attempt % ctx.urls.len()];
        attempt += 1;
        let client = match connect(url, ctx.tls.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(to = format!("{:x}", ctx.to), "peer {url}: {e:#}");
                (ctx.report)(Report::Unreachable(ctx.to));
                // What queued while the peer was down is stale: drop it.
                while let Ok(m) = ctx.rx.try_recv() {
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        (ctx.report)(Report::Snapshot {
                            to: ctx.to,
                            ok: false,
                        });
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        if stream(&mut ctx, client).await {
            return; // the link was removed
        }
        (ctx.report)(Report::Unreachable(ctx.to));
    }
}

/// Streams messages until the stream breaks (false) or the link is removed (true).
async fn stream(ctx: &mut LinkCtx, client: RaftPeerClient<Channel>) -> bool {
    let (tx, rx) = mpsc::channel::<RaftEnvelope>(256);
    let mut call_client = client.clone();
    let mut call = tokio::spawn(async move {
        call_client
            .send(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    loop {
        tokio::select! {
            done = &mut call => {
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(s)) if s.code() == tonic::Code::PermissionDenied && s.message() == REMOVED => {
                        (ctx.report)(Report::Removed);
                    }
                    Ok(Err(s)) => tracing::debug!(to = format!("{:x}", ctx.to), "peer stream: {s}"),
                    Err(e) => tracing::debug!("peer stream task: {e}"),
                }
                return false;
            }
            m = ctx.rx.recv() => {
                let Some(m) = m else {
                    call.abort();
                    return true;
                };
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    tokio::spawn(send_snapshot(client.clone(), m, ctx.cluster_id, ctx.report.clone()));
                    continue;
                }
                let Some(env) = envelope(&m, ctx.cluster_id) else { continue };
                if tx.send(env).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// A snapshot on a call of its own, in pieces (see `snapshot_envelopes`): its answer tells
/// raft whether it arrived.
async fn send_snapshot(
    mut client: RaftPeerClient<Channel>,
    m: Message,
    cluster_id: u64,
    report: Reporter,
) {
    let to = m.to;
    let ok = match snapshot_envelopes(m, cluster_id) {
        Some(envs) => match client.send(futures::stream::iter(envs)).await {
            Ok(_) => true,
            Err(s) => {
                tracing::warn!(to = format!("{to:x}"), "sending a snapshot: {s}");
                false
            }
        },
        None => false,
    };
    report(Report::Snapshot { to, ok });
}

/// A snapshot's data goes in pieces of this size, so no one message is the whole store.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// A snapshot message as envelopes: the message without its data (and the data's length),
/// then the data in `SNAPSHOT_CHUNK` slices of the same buffer, made as they are sent.
fn snapshot_envelopes(
    mut m: Message,
    cluster_id: u64,
) -> Option<impl Iterator<Item = RaftEnvelope> + Send> {
    let data = std::mem::take(&mut m.mut_snapshot().data);
    let mut head = envelope(&m, cluster_id)?;
    head.snapshot_head = std::mem::take(&mut head.message);
    head.snapshot_size = data.len() as u64;
    let chunks = (0..data.len())
        .step_by(SNAPSHOT_CHUNK)
        .map(move |at| RaftEnvelope {
            chunk: data.slice(at..(at + SNAPSHOT_CHUNK).min(data.len())),
            cluster_id,
            ..Default::default()
        });
    Some(std::iter::once(head).chain(chunks))
}

/// Reads the chunks of a snapshot whose first envelope announced `size` bytes, and puts
/// them back into the message.
async fn receive_snapshot_data(
    inbound: &mut Streaming<RaftEnvelope>,
    m: &mut Message,
    size: u64,
) -> Result<(), Status> {
    let mut data = bytes::BytesMut::with_capacity(size.min(MAX_MESSAGE as u64) as usize);
    while (data.len() as u64) < size {
        let Some(env) = inbound.message().await? else {
            return Err(Status::invalid_argument(format!(
                "a snapshot of {size} bytes ended after {}",
                data.len()
            )));
        };
        data.extend_from_slice(&env.chunk);
    }
    if data.len() as u64 != size {
        return Err(Status::invalid_argument(format!(
            "a snapshot of {size} bytes came with {}",
            data.len()
        )));
    }
    m.mut_snapshot().data = data.freeze();
    Ok(())
}

/// Asks the members at `urls` who is in the cluster (a member joining one).
pub async fn fetch_members(
    urls: &[String],
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<MembersResponse> {
    let mut last = None;
    for url in urls {
        match connect(url, tls).await {
            Ok(mut c) => match c.members(MembersRequest {}).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => last = Some(anyhow::anyhow!("{url}: {}", s.message())),
            },
            Err(e) => last = Some(e.context(url.clone())),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no peer URLs to ask")))
}

/// Renews a lease on the leader: its TTL, 0 if unknown, or an error if this member does
/// not lead.
pub type Renew = Arc<dyn Fn(i64) -> Result<i64, Status> + Send + Sync>;

/// The receiving side, served on `--listen-peer-urls`.
pub struct PeerService {
    node: RaftNode,
    renew: Renew,
}

impl PeerService {
    pub fn server(node: RaftNode, renew: Renew) -> RaftPeerServer<PeerService> {
        RaftPeerServer::new(PeerService { node, renew })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn send(&self, req: Request<Streaming<RaftEnvelope>>) -> Result<Response<Ack>, Status> {
        let mut inbound = req.into_inner();
        let cluster_id = self.node.status().cluster_id;
        while let Some(env) = inbound.message().await? {
            if env.cluster_id != cluster_id {
                return Err(Status::failed_precondition(format!(
                    "raft message for cluster {:x}, this is cluster {cluster_id:x}",
                    env.cluster_id
                )));
            }
            let snapshot = !env.snapshot_head.is_empty();
            let bytes = if snapshot {
                &env.snapshot_head
            } else {
                &env.message
            };
            let mut m = Message::parse_from_bytes(bytes)
                .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
            if self.node.is_removed(m.from) {
                return Err(Status::permission_denied(REMOVED));
            }
            if snapshot {
                receive_snapshot_data(&mut inbound, &mut m, env.snapshot_size).await?;
            }
            self.node
                .step(m)
                .map_err(|_| Status::unavailable("this member is stopping"))?;
        }
        Ok(Response::new(Ack {}))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let ttl = (self.renew)(req.into_inner().id)?;
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn members(
        &self,
        _req: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.node.status().cluster_id,
            members: self.node.members(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_goes_in_pieces_that_add_up_to_its_data() {
        let data: Vec<u8> = (0..SNAPSHOT_CHUNK * 2 + 12_345).map(|i| i as u8).collect();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.mut_snapshot().mut_metadata().index = 77;
        m.mut_snapshot().data = data.clone().into();

        let envs: Vec<RaftEnvelope> = snapshot_envelopes(m, 9).unwrap().collect();
        assert_eq!(envs.len(), 4, "a head and three chunks");
        assert!(
            envs[0].message.is_empty(),
            "the head is not an ordinary message"
        );
        let head = Message::parse_from_bytes(&envs[0].snapshot_head).unwrap();
        assert!(
            head.get_snapshot().data.is_empty(),
            "the head leaves the data out"
        );
        assert_eq!(head.get_snapshot().get_metadata().index, 77);
        assert_eq!(envs[0].snapshot_size, data.len() as u64);
        assert!(envs.iter().all(|e| e.cluster_id == 9));
        assert!(envs[1..]
            .iter()
            .all(|e| e.message.is_empty() && e.snapshot_head.is_empty()));
        assert!(envs[1..].iter().all(|e| e.chunk.len() <= SNAPSHOT_CHUNK));
        let joined: Vec<u8> = envs[1..].iter().flat_map(|e| e.chunk.to_vec()).collect();
        assert_eq!(joined, data);
    }
}
