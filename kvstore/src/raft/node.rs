//! The raft node loop. One OS thread owns the raft-rs `RawNode` and blocks in sled and
//! in the WAL's fsync, so it must not be an async worker of the servers' runtime. It runs
//! a single-threaded runtime of its own that also drives the peer transport (links and
//! the peer server): a raft message reaches the socket, and a peer's message reaches the
//! loop, without a wake of another thread (measured: ~80 us each on these VMs, three per
//! hop; 3 members, sequential puts +25-30%). Commands arrive on a channel and are drained
//! in batches, so the proposals that arrive while one flush runs all share the next one.
//!
//! Durability order per `Ready` (raft-rs 0.7): send the leader's messages (they may go
//! out before its own append is durable; the loop yields once so they are written before
//! it blocks), apply snapshot, apply committed entries, append
//! new entries and hard state, **sync the WAL**, only then send persisted messages and
//! acknowledge proposers — one fdatasync per `Ready`, shared by every proposal in it.
//! What the state machine applied reaches sled unflushed: the WAL holds those entries
//! until sled is flushed, and a restart applies them again.
//! Proposers are matched to their entries by a context of (member id, request id)
//! carried in the entry.
//!
//! Membership lives here too: the member records (names, URLs) change only by applying
//! committed `ConfChangeV2` entries (the record rides in the change's context) and
//! "member attributes" entries (a member publishing its client URLs after it starts).

use super::storage::{Bootstrap, Identity, LogStorage};
use super::transport::{Report, Transport};
use super::StateMachine;
use crate::metrics::Metrics;
use prost::Message as _;
use proto::peer::kvstorepb::Member;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, Message,
    MessageType,
};
use raft::{RawNode, StateRole};
use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub identity: Identity,
    /// How an empty data directory starts (ignored when the log already exists).
    pub bootstrap: Bootstrap,
    /// This member's name and client URLs, published to the cluster once it runs.
    pub attributes: Member,
    /// TLS for connecting to https peer URLs.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// How long a proposal or read may wait before failing with a timeout.
    pub request_timeout: Duration,
    /// Applied entries kept in the log before compacting it.
    pub snapshot_count: u64,
    /// The directory sled was opened at: its files are fdatasynced after each flush.
    pub sled_dir: std::path::PathBuf,
    /// The directory of the raft log's write-ahead log.
    pub wal_dir: std::path::PathBuf,
    /// The size of a WAL segment file.
    pub wal_segment_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: raft storage failure: {0}")]
    Storage(String),
    /// A membership change that cannot be made now (the message says why).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request forwarded to the leader failed.
    #[error("etcdserver: forwarding to the leader: {0}")]
    Forward(String),
}

impl From<RaftError> for tonic::Status {
    fn from(e: RaftError) -> Self {
        let code = match e {
            RaftError::Storage(_) => tonic::Code::Internal,
            RaftError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            _ => tonic::Code::Unavailable,
        };
        tonic::Status::new(code, e.to_string())
    }
}

#[derive(Debug, Clone, Default)]
pub struct RaftStatus {
    pub member_id: u64,
    pub cluster_id: u64,
    /// 0 when there is no leader.
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub is_learner: bool,
    /// This member's name and client URLs are applied to the cluster's records.
    pub published: bool,
}

type Reply<T> = oneshot::Sender<Result<T, RaftError>>;

enum Cmd {
    Propose(Vec<u8>, Reply<Vec<u8>>),
    ReadIndex(Reply<()>),
    ConfChange(ConfChangeV2, Reply<Vec<u8>>),
    Step(Box<Message>),
    Report(Report),
    Shutdown,
}

struct Shared {
    /// For calls to peers outside the raft stream (lease renewals to the leader).
    peer_tls: Option<tonic::transport::ClientTlsConfig>,
    status: RwLock<RaftStatus>,
    members: RwLock<Vec<Member>>,
    /// Members removed from the cluster: their messages are refused.
    removed_ids: RwLock<std::collections::HashSet<u64>>,
    leader: watch::Sender<u64>,
    /// Set once this member has applied its own removal from the cluster.
    removed: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The context of "member attributes" entries: their data is a `Member` whose name and
/// client URLs replace the recorded ones.
const ATTRIBUTES_CONTEXT: &[u8] = b"member-attributes";

/// A cheap handle to the node loop.
#[derive(Clone)]
pub struct RaftNode {
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    peer_runtime: tokio::runtime::Handle,
}

impl RaftNode {
    /// Opens the raft log in `db` and starts the node loop on a thread of its own, with
    /// a runtime of its own that also runs the peer transport (see `peer_runtime`).
    pub fn start(
        cfg: RaftConfig,
        db: sled::Db,
        sm: Arc<dyn StateMachine>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let storage = LogStorage::open(
            &db,
            &cfg.sled_dir,
            &cfg.wal_dir,
            cfg.wal_segment_bytes,
            sm.clone(),
            cfg.identity,
            &cfg.bootstrap,
        )?;
        let member_id = cfg.identity.member_id;
        let heartbeat = cfg.heartbeat_interval.max(Duration::from_millis(1));
        let election_tick =
            (cfg.election_timeout.as_millis() / heartbeat.as_millis()).max(2) as usize;
        // sled recovers a prefix of each tree's writes, not necessarily of all trees
        // together, so after a crash the state machine may have applied entries past the
        // persisted commit index. They were committed (nothing uncommitted is applied), so
        // raft delivers them again and the state machine skips what it already has.
        let applied = {
            use raft::Storage as _;
            let commit = storage.initial_state()?.hard_state.commit;
            let floor = storage.first_index().saturating_sub(1);
            sm.applied_index().min(commit).max(floor)
        };
        let raft_cfg = raft::Config {
            id: member_id,
            election_tick,
            heartbeat_tick: 1,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: MAX_ENTRIES_BYTES as u64,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&raft_cfg, storage.clone(), &logger)?;
        // A lone voter need not wait an election timeout to lead.
        let cs = storage.conf_state();
        if cs.voters == [member_id] {
            node.campaign()?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (leader, _) = watch::channel(0);
        let (removed, _) = watch::channel(false);
        let members = storage.members()?;
        let shared = Arc::new(Shared {
            peer_tls: cfg.peer_tls.clone(),
            status: RwLock::new(RaftStatus {
                member_id,
                cluster_id: cfg.identity.cluster_id,
                ..Default::default()
            }),
            members: RwLock::new(members.clone()),
            removed_ids: RwLock::new(storage.removed_ids()?.into_iter().collect()),
            leader,
            removed,
            thread: Mutex::new(None),
        });
        // The loop, the links to peers and the peer server share one thread (see the
        // module's doc).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let report_tx = tx.clone();
        let transport = Transport::new(
            member_id,
            cfg.identity.cluster_id,
            runtime.handle().clone(),
            cfg.peer_tls.clone(),
            Arc::new(move |r| {
                // The loop may have stopped; then no one needs the report.
                let _ = report_tx.send(Cmd::Report(r));
            }),
        );
        transport.update(&members);
        let mut lp = Loop {
            transport,
            published: None,
            attributes_applied: false,
            node,
            storage,
            sm,
            cfg,
            shared: shared.clone(),
            metrics,
            next_id: 1,
            proposals: HashMap::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            read_retry: HashMap::new(),
            leader: 0,
            unpersisted: 0,
            unpersisted_since: None,
        };
        let (started_tx, started_rx) = std_mpsc::channel();
        let peer_runtime = runtime.handle().clone();
        let handle = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || runtime.block_on(lp.run(rx, started_tx)))?;
        *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        // Callers see the node's first status (a lone voter already leading), not zeros.
        started_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the raft loop stopped while starting"))?;
        Ok(RaftNode {
            tx,
            shared,
            peer_runtime,
        })
    }

    /// The raft thread's runtime: the peer server belongs on it, so that a message from a
    /// peer reaches the loop on the thread it runs on.
    pub fn peer_runtime(&self) -> &tokio::runtime::Handle {
        &self.peer_runtime
    }

    /// Replicates `data`; resolves with the state machine's answer once the entry is
    /// committed, applied and flushed on this member.
    pub async fn propose(&self, data: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        self.call(|reply| Cmd::Propose(data, reply)).await
    }

    /// Linearizable read barrier (ReadIndex): resolves once this member has applied
    /// everything committed when the call was made.
    pub async fn read_index(&self) -> Result<(), RaftError> {
        self.call(Cmd::ReadIndex).await
    }

    /// Adds, promotes or removes one member; resolves once the change is applied here.
    /// For an add, `member` is the record to keep (its id is the change's node id).
    pub async fn change_membership(
        &self,
        change: ConfChangeType,
        id: u64,
        member: Option<Member>,
    ) -> Result<(), RaftError> {
        let mut cc = ConfChangeV2::default();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = id;
        cc.mut_changes().push(single);
        if let Some(m) = member {
            cc.set_context(m.encode_to_vec().into());
        }
        let result = self.call(|reply| Cmd::ConfChange(cc, reply)).await?;
        if result.is_empty() {
            Ok(())
        } else {
            Err(RaftError::FailedPrecondition(
                String::from_utf8_lossy(&result).into_owned(),
            ))
        }
    }

    /// Forwards a lease keep-alive to the leader over the peer URLs (only the leader
    /// tracks deadlines); returns the lease's TTL, 0 if the leader knows no such lease.
    pub async fn renew_on_leader(&self, lease: i64) -> Result<i64, RaftError> {
        let leader = self.status().leader_id;
        let urls = self
            .members()
            .into_iter()
            .find(|m| m.id == leader)
            .map(|m| m.peer_urls)
            .ok_or(RaftError::NoLeader)?;
        let mut last = RaftError::NoLeader;
        for url in &urls {
            match super::transport::connect(url, self.shared.peer_tls.as_ref()).await {
                Ok(mut c) => {
                    match c
                        .lease_renew(proto::peer::kvstorepb::LeaseRenewRequest { id: lease })
                        .await
                    {
                        Ok(r) => return Ok(r.into_inner().ttl),
                        Err(s) => last = RaftError::Forward(s.message().to_string()),
                    }
                }
                Err(e) => last = RaftError::Forward(format!("{url}: {e:#}")),
            }
        }
        Err(last)
    }

    /// Hands a message from a peer to raft.
    pub fn step(&self, m: Message) -> Result<(), RaftError> {
        self.tx
            .send(Cmd::Step(Box::new(m)))
            .map_err(|_| RaftError::Stopped)
    }

    /// The members as of the last applied configuration.
    pub fn members(&self) -> Vec<Member> {
        self.shared
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed(&self, id: u64) -> bool {
        self.shared
            .removed_ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// Becomes true once this member has been removed from the cluster (it then stops).
    pub fn removed(&self) -> watch::Receiver<bool> {
        self.shared.removed.subscribe()
    }

    async fn call<T>(&self, cmd: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    pub fn status(&self) -> RaftStatus {
        self.shared
            .status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current leader id (0 = none), updated on every change.
    pub fn leader_changes(&self) -> watch::Receiver<u64> {
        self.shared.leader.subscribe()
    }

    /// Stops the loop (pending requests fail with `Stopped`) and waits for it. Blocking.
    pub fn shutdown(&self) {
        // The loop may already be gone; then there is nothing to stop.
        let _ = self.tx.send(Cmd::Shutdown);
        let handle = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("raft loop panicked");
            }
        }
    }
}

struct Waiter<T> {
    reply: Reply<T>,
    since: Instant,
}

/// Removes and returns the waiters older than `timeout`.
fn take_expired<T>(
    waiters: &mut HashMap<u64, Waiter<T>>,
    timeout: Duration,
) -> Vec<(u64, Waiter<T>)> {
    let ids: Vec<u64> = waiters
        .iter()
        .filter(|(_, w)| w.since.elapsed() >= timeout)
        .map(|(id, _)| *id)
        .collect();
    ids.into_iter()
        .filter_map(|id| waiters.remove(&id).map(|w| (id, w)))
        .collect()
}

struct Loop {
    transport: Transport,
    /// When this member last proposed its attributes (None: not yet).
    published: Option<Instant>,
    /// Its attributes are applied: nothing more to publish.
    attributes_applied: bool,
    node: RawNode<LogStorage>,
    storage: LogStorage,
    sm: Arc<dyn StateMachine>,
    cfg: RaftConfig,
    shared: Arc<Shared>,
    metrics: Metrics,
    next_id: u64,
    proposals: HashMap<u64, Waiter<Vec<u8>>>,
    /// Proposals received this round, proposed together by `propose_batch`, and their
    /// size in bytes.
    batch: Vec<(u64, Vec<u8>, Reply<Vec<u8>>)>,
    batch_bytes: usize,
    reads: HashMap<u64, Waiter<()>>,
    /// ReadIndex answers waiting for the applied index to reach them: (index, request id).
    ready_reads: Vec<(u64, u64)>,
    /// When each unanswered ReadIndex was last sent: a new leader drops them until it has
    /// committed an entry in its term, so they are sent again.
    read_retry: HashMap<u64, Instant>,
    leader: u64,
    /// Entries applied since the state machine last persisted, and since when.
    unpersisted: usize,
    unpersisted_since: Option<Instant>,
}

/// The state machine's pending writes go to sled once this many entries are applied...
const PERSIST_ENTRIES: usize = 1024;
/// ...or once the oldest has waited this long (each write costs sled an IO-buffer roll
/// and a thread-pool wake-up, so they are batched and written on the state machine's
/// own thread; the WAL holds the entries meanwhile).
const PERSIST_AFTER: Duration = Duration::from_millis(10);

/// About the most bytes of entries one raft message carries: raft's limit for an append
/// (`max_size_per_msg`), and the size at which a batch of proposals (which a follower
/// forwards as one message) is proposed without waiting for the round to end.
const MAX_ENTRIES_BYTES: usize = 1024 * 1024;

/// Entry and read contexts: this member's id and the request id, so only the proposing
/// member resolves a waiter.
fn context(member: u64, id: u64) -> Vec<u8> {
    let mut c = Vec::with_capacity(16);
    c.extend_from_slice(&member.to_be_bytes());
    c.extend_from_slice(&id.to_be_bytes());
    c
}

fn parse_context(c: &[u8]) -> Option<(u64, u64)> {
    if c.len() != 16 {
        return None;
    }
    Some((
        u64::from_be_bytes(c[..8].try_into().ok()?),
        u64::from_be_bytes(c[8..].try_into().ok()?),
    ))
}

impl Loop {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, started: std_mpsc::Sender<()>) {
        let tick = self.cfg.heartbeat_interval.max(Duration::from_millis(1));
        let mut next_tick = Instant::now() + tick;
        // A lone voter campaigned before the loop started: settle that first, so status
        // and /health report the leader at once.
        if self.node.has_ready() {
            if let Err(e) = self.on_ready().await {
                tracing::error!("raft: storage failure, stopping: {e:#}");
                self.fail_all(RaftError::Storage(e.to_string()));
                return;
            }
        }
        self.publish_status();
        // The starter waits for this; if it has gone there is no one to tell.
        let _ = started.send(());
        loop {
            let deadline = match self.unpersisted_since {
                Some(t) => next_tick.min(t + PERSIST_AFTER),
                None => next_tick,
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            let mut stop = false;
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(cmd)) => {
                    stop |= !self.handle(cmd);
                    // Everything already queued joins this round (group commit).
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(cmd) => stop |= !self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Err(_elapsed) => {}
                Ok(None) => stop = true,
            }
            self.propose_batch();
            if stop {
                break;
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + tick;
            }
            if self.node.has_ready() {
                if let Err(e) = self.on_ready().await {
                    tracing::error!("raft: storage failure, stopping: {e:#}");
                    self.fail_all(RaftError::Storage(e.to_string()));
                    return;
                }
            }
            if let Err(e) = self.maybe_persist() {
                tracing::error!("raft: storage failure, stopping: {e:#}");
                self.fail_all(RaftError::Storage(e.to_string()));
                return;
            }
            self.resolve_reads();
            self.expire();
            self.maybe_publish();
            self.publish_status();
            if *self.shared.removed.borrow() {
                break;
            }
        }
        if let Err(e) = self.sm.persist(true) {
            tracing::error!("raft: writing applied state at shutdown: {e:#}");
        }
        self.fail_all(RaftError::Stopped);
    }

    fn maybe_persist(&mut self) -> anyhow::Result<()> {
        let due = self.unpersisted >= PERSIST_ENTRIES
            || self
                .unpersisted_since
                .is_some_and(|t| t.elapsed() >= PERSIST_AFTER);
        if due {
            if self.sm.persist(false)? {
                self.unpersisted = 0;
                self.unpersisted_since = None;
            } else {
                // The previous write is still running: try again a little later.
                self.unpersisted_since = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Propose(data, reply) => {
                if self.node.raft.leader_id == 0 {
                    self.metrics.proposals_failed.inc();
                    let _ = reply.send(Err(RaftError::NoLeader)); // the caller may have gone
                    return true;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.batch_bytes += data.len();
                self.batch.push((id, data, reply));
                // A forwarded batch is one peer message: keep it the size of an append.
                if self.batch_bytes >= MAX_ENTRIES_BYTES {
                    self.propose_batch();
                }
            }
            Cmd::ReadIndex(reply) => {
                if self.node.raft.leader_id == 0 {
                    let _ = reply.send(Err(RaftError::NoLeader)); // the caller may have gone
                    return true;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.node
                    .read_index(context(self.cfg.identity.member_id, id));
                self.reads.insert(
                    id,
                    Waiter {
                        reply,
                        since: Instant::now(),
                    },
                );
                self.read_retry.insert(id, Instant::now());
            }
            Cmd::ConfChange(cc, reply) => {
                // Proposals that arrived first go first.
                self.propose_batch();
                if let Err(e) = self.check_conf_change(&cc) {
                    let _ = reply.send(Err(e)); // the caller may have gone
                    return true;
                }
                let id = self.next_id;
                self.next_id += 1;
                match self
                    .node
                    .propose_conf_change(context(self.cfg.identity.member_id, id), cc)
                {
                    Ok(()) => {
                        self.metrics.proposals_pending.inc();
                        self.proposals.insert(
                            id,
                            Waiter {
                                reply,
                                since: Instant::now(),
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RaftError::FailedPrecondition(format!(
                            "etcdserver: {e}"
                        ))));
                    }
                }
            }
            Cmd::Step(m) => {
                // Messages from members raft does not know, or stale ones, are dropped.
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!("raft: dropping a peer message: {e}");
                }
            }
            Cmd::Report(Report::Unreachable(id)) => self.node.report_unreachable(id),
            Cmd::Report(Report::Removed) => {
                tracing::warn!("raft: a peer says this member was removed from the cluster");
                self.shared.removed.send_replace(true);
            }
            Cmd::Report(Report::Snapshot { to, ok }) => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    /// Proposes this round's writes as one raft message: a follower forwards them to the
    /// leader together, and the leader appends them at once, instead of one message and
    /// one append per write. Raft takes or drops the message whole.
    fn propose_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let me = self.cfg.identity.member_id;
        self.batch_bytes = 0;
        let mut waiting = Vec::with_capacity(self.batch.len());
        let mut entries = Vec::with_capacity(self.batch.len());
        for (id, data, reply) in self.batch.drain(..) {
            entries.push(Entry {
                data: data.into(),
                context: context(me, id).into(),
                ..Default::default()
            });
            waiting.push((id, reply));
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.node.raft.id;
        m.set_entries(entries.into());
        let proposed = self.node.raft.step(m).is_ok();
        for (id, reply) in waiting {
            if proposed {
                self.metrics.proposals_pending.inc();
                let since = Instant::now();
                self.proposals.insert(id, Waiter { reply, since });
            } else {
                self.metrics.proposals_failed.inc();
                let _ = reply.send(Err(RaftError::NoLeader)); // the caller may have gone
            }
        }
    }

    /// What only the raft thread can check before a membership change is proposed:
    /// one change at a time, a leader, and (on the leader) that a learner to promote has
    /// caught up, as etcd requires.
    fn check_conf_change(&self, cc: &ConfChangeV2) -> Result<(), RaftError> {
        let raft = &self.node.raft;
        if raft.leader_id == 0 {
            return Err(RaftError::NoLeader);
        }
        if raft.has_pending_conf() {
            return Err(RaftError::FailedPrecondition(
                "etcdserver: unhealthy cluster (a membership change is in progress)".into(),
            ));
        }
        for c in cc.get_changes() {
            if c.get_change_type() == ConfChangeType::AddNode
                && raft.state == StateRole::Leader
                && raft.prs().conf().learners().contains(&c.node_id)
            {
                let matched = raft.prs().get(c.node_id).map_or(0, |p| p.matched);
                let leader = raft.raft_log.last_index();
                if matched * 10 < leader * 9 {
                    return Err(RaftError::FailedPrecondition(
                        "etcdserver: can only promote a learner member which is in sync with leader"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        self.storage.sync()?;
        self.metrics
            .fsync_seconds
            .observe(start.elapsed().as_secs_f64());
        Ok(())
    }

    async fn on_ready(&mut self) -> anyhow::Result<()> {
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            let leader = if ss.raft_state == StateRole::Leader || ss.leader_id != 0 {
                ss.leader_id
            } else {
                0
            };
            if leader != self.leader {
                self.leader = leader;
                self.metrics.leader_changes.inc();
                self.metrics.has_leader.set(i64::from(leader != 0));
                self.shared.leader.send_replace(leader);
            }
        }
        // A leader's appends may go out before its own copy is durable (raft counts its
        // own vote only after the flush): the link tasks get to write them to the sockets
        // before this thread blocks in the flush.
        let early = rd.take_messages();
        let sent_early = !early.is_empty();
        self.transport.send(early);
        let committed = rd.take_committed_entries();
        // Only new entries and a new term or vote must be durable before anything is sent
        // or acknowledged (as etcd's raft.MustSync): a commit index can be learned again,
        // and committed entries are already durable (raft hands out only persisted ones).
        let before = self.storage.hard_state();
        let must_sync = !rd.entries().is_empty()
            || rd
                .hs()
                .is_some_and(|hs| hs.term != before.term || hs.vote != before.vote);
        if !rd.snapshot().is_empty() {
            self.storage.apply_snapshot(rd.snapshot())?;
            self.members_changed()?;
        }
        // The WAL replays in order, so the log goes before the hard state that commits it:
        // a restart never finds a commit beyond its log.
        self.storage.append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            self.storage.set_hard_state(hs)?;
        }
        let mut acks = Vec::new();
        self.apply_committed(committed, &mut acks)?;
        for rs in rd.take_read_states() {
            if let Some((member, id)) = parse_context(&rs.request_ctx) {
                if member == self.cfg.identity.member_id {
                    self.read_retry.remove(&id);
                    self.ready_reads.push((rs.index, id));
                }
            }
        }
        if must_sync {
            if sent_early {
                tokio::task::yield_now().await;
            }
            self.flush()?;
        }
        self.transport.send(rd.take_persisted_messages());
        self.ack(&mut acks);

        let mut light = self.node.advance(rd);
        self.transport.send(light.take_messages());
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        // Entries committed by this advance were appended and flushed above, so their
        // acknowledgement needs no second fsync: a crash before the next flush loses only
        // applied effects, and a restart re-applies committed entries after the persisted
        // applied index (sled recovers a prefix of its writes, so that index never runs
        // ahead of the persisted commit).
        self.apply_committed(light.take_committed_entries(), &mut acks)?;
        self.ack(&mut acks);
        self.node.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn apply_committed(
        &mut self,
        entries: Vec<Entry>,
        acks: &mut Vec<(u64, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let me = self.cfg.identity.member_id;
        // Runs of ordinary entries are applied with one call (one sled batch); a
        // membership change or attributes entry ends a run and is applied on its own.
        let mut run: Vec<&Entry> = Vec::new();
        for e in &entries {
            let special = match e.get_entry_type() {
                EntryType::EntryNormal => e.get_context() == ATTRIBUTES_CONTEXT,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => true,
            };
            if !special {
                run.push(e);
                continue;
            }
            self.apply_run(&mut run, acks)?;
            let result = match e.get_entry_type() {
                EntryType::EntryNormal => {
                    self.apply_attributes(e.get_data())?;
                    Vec::new()
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(e.get_data())?;
                    let mut single = ConfChangeSingle::default();
                    single.set_change_type(cc.get_change_type());
                    single.node_id = cc.node_id;
                    let mut v2 = ConfChangeV2::default();
                    v2.mut_changes().push(single);
                    v2.set_context(cc.get_context().to_vec().into());
                    self.apply_conf_change(v2)?
                }
                EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(ConfChangeV2::parse_from_bytes(e.get_data())?)?
                }
            };
            // The records it changed are durable before the applied index moves past it
            // (sled does not promise one crash-consistent prefix across trees).
            self.storage.flush_sled()?;
            self.apply_to_sm(&[(e.index, &[])])?;
            if let Some((_, id)) = parse_context(e.get_context()).filter(|(m, _)| *m == me) {
                acks.push((id, result));
            }
        }
        self.apply_run(&mut run, acks)
    }

    /// Hands entries to the state machine, counting what it has not persisted yet.
    fn apply_to_sm(&mut self, entries: &[(u64, &[u8])]) -> anyhow::Result<Vec<Vec<u8>>> {
        let results = self.sm.apply(entries)?;
        self.unpersisted += entries.len();
        self.unpersisted_since.get_or_insert_with(Instant::now);
        Ok(results)
    }

    /// Applies a run of ordinary entries in one call to the state machine.
    fn apply_run(
        &mut self,
        run: &mut Vec<&Entry>,
        acks: &mut Vec<(u64, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let batch: Vec<(u64, &[u8])> = run.iter().map(|e| (e.index, e.get_data())).collect();
        let results = self.apply_to_sm(&batch)?;
        let me = self.cfg.identity.member_id;
        for (e, result) in run.drain(..).zip(results) {
            self.metrics.proposals_applied.inc();
            if !e.get_data().is_empty() {
                self.metrics.proposals_committed.inc();
            }
            if let Some((_, id)) = parse_context(e.get_context()).filter(|(m, _)| *m == me) {
                acks.push((id, result));
            }
        }
        Ok(())
    }

    /// Applies a committed membership change: raft's configuration and the member
    /// records. A change raft refuses (every member refuses it alike) changes nothing;
    /// the result is empty on success, else the reason.
    fn apply_conf_change(&mut self, cc: ConfChangeV2) -> anyhow::Result<Vec<u8>> {
        let cs = match self.node.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(e) => {
                tracing::warn!("raft: membership change refused: {e}");
                return Ok(format!("etcdserver: {e}").into_bytes());
            }
        };
        self.storage.set_conf_state(&cs)?;
        let record = if cc.get_context().is_empty() {
            None
        } else {
            Some(Member::decode(cc.get_context())?)
        };
        let members = self.storage.members()?;
        for c in cc.get_changes() {
            let id = c.node_id;
            let existing = members.iter().find(|m| m.id == id).cloned();
            match c.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let learner = c.get_change_type() == ConfChangeType::AddLearnerNode;
                    let mut m = existing
                        .or_else(|| record.clone().filter(|r| r.id == id))
                        .unwrap_or(Member {
                            id,
                            ..Default::default()
                        });
                    m.is_learner = learner;
                    self.storage.put_member(&m)?;
                }
                ConfChangeType::RemoveNode => {
                    self.storage.remove_member(id)?;
                    self.shared
                        .removed_ids
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id);
                    if id == self.cfg.identity.member_id {
                        tracing::warn!("raft: this member was removed from the cluster");
                        self.shared.removed.send_replace(true);
                    }
                }
            }
        }
        self.members_changed()?;
        Ok(Vec::new())
    }

    /// A member's published name and client URLs.
    fn apply_attributes(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let attrs = Member::decode(data)?;
        let Some(mut m) = self
            .storage
            .members()?
            .into_iter()
            .find(|m| m.id == attrs.id)
        else {
            return Ok(()); // removed meanwhile
        };
        m.name = attrs.name;
        m.client_urls = attrs.client_urls;
        self.storage.put_member(&m)?;
        if m.id == self.cfg.identity.member_id {
            self.attributes_applied = true;
        }
        self.members_changed()
    }

    /// After the member records changed: tell readers and the transport.
    fn members_changed(&mut self) -> anyhow::Result<()> {
        let members = self.storage.members()?;
        self.transport.update(&members);
        *self
            .shared
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner()) = members;
        Ok(())
    }

    /// Proposes this member's attributes once there is a leader and this member has
    /// applied its own membership (so once others see it published, it knows whether it
    /// is a learner), again every few seconds until they are applied (a proposal can be
    /// lost with a leader).
    fn maybe_publish(&mut self) {
        if self.attributes_applied || self.leader == 0 {
            return;
        }
        let me = self.cfg.identity.member_id;
        let conf = self.node.raft.prs().conf();
        if !conf.voters().contains(me) && !conf.learners().contains(&me) {
            return;
        }
        if self
            .published
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        let recorded = self
            .shared
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|m| m.id == self.cfg.identity.member_id)
            .cloned();
        let attrs = &self.cfg.attributes;
        if recorded
            .as_ref()
            .is_some_and(|m| m.name == attrs.name && m.client_urls == attrs.client_urls)
        {
            self.attributes_applied = true;
            return;
        }
        let mut attrs = attrs.clone();
        attrs.id = self.cfg.identity.member_id;
        self.published = Some(Instant::now());
        if let Err(e) = self
            .node
            .propose(ATTRIBUTES_CONTEXT.to_vec(), attrs.encode_to_vec())
        {
            tracing::debug!("raft: publishing member attributes: {e}");
        }
    }

    /// Answers proposers whose entries are applied and flushed.
    fn ack(&mut self, acks: &mut Vec<(u64, Vec<u8>)>) {
        for (id, result) in acks.drain(..) {
            if let Some(w) = self.proposals.remove(&id) {
                self.metrics.proposals_pending.dec();
                let _ = w.reply.send(Ok(result)); // the caller may have given up waiting
            }
        }
    }

    fn resolve_reads(&mut self) {
        let applied = self.sm.applied_index();
        let reads = &mut self.reads;
        self.ready_reads.retain(|(index, id)| {
            if *index > applied {
                return true;
            }
            if let Some(w) = reads.remove(id) {
                let _ = w.reply.send(Ok(())); // the caller may have given up waiting
            }
            false
        });
    }

    /// Fails requests that waited longer than the request timeout (a lost leader, a
    /// partition) with `Timeout`, so no caller hangs.
    fn expire(&mut self) {
        let retry_after = self.cfg.heartbeat_interval * 2;
        for (id, sent) in self.read_retry.iter_mut() {
            if sent.elapsed() >= retry_after && self.node.raft.leader_id != 0 {
                self.node
                    .read_index(context(self.cfg.identity.member_id, *id));
                *sent = Instant::now();
            }
        }
        let timeout = self.cfg.request_timeout;
        for (_, w) in take_expired(&mut self.proposals, timeout) {
            self.metrics.proposals_pending.dec();
            self.metrics.proposals_failed.inc();
            let _ = w.reply.send(Err(RaftError::Timeout)); // the caller may be gone
        }
        for (id, w) in take_expired(&mut self.reads, timeout) {
            self.read_retry.remove(&id);
            let _ = w.reply.send(Err(RaftError::Timeout)); // the caller may be gone
        }
    }

    fn maybe_compact(&mut self) -> anyhow::Result<()> {
        // Raft's own applied index can trail the state machine's right after a restart
        // (see `start`): keep what raft may still deliver.
        let applied = self.sm.applied_index().min(self.node.raft.raft_log.applied);
        let first = self.storage.first_index();
        let keep = self.cfg.snapshot_count.max(1);
        if applied > first + 2 * keep {
            self.storage.compact(applied - keep)?;
        }
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.node.raft;
        let mut s = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        s.leader_id = self.leader;
        s.term = raft.term;
        s.commit_index = raft.raft_log.committed;
        s.applied_index = self.sm.applied_index();
        s.last_index = self.storage.last_index();
        s.is_learner = raft
            .prs()
            .conf()
            .learners()
            .contains(&self.cfg.identity.member_id);
        s.published = self.attributes_applied;
    }

    fn fail_all(&mut self, e: RaftError) {
        for (_, w) in self.proposals.drain() {
            let _ = w.reply.send(Err(e.clone())); // callers may be gone
        }
        for (_, w) in self.reads.drain() {
            let _ = w.reply.send(Err(e.clone())); // callers may be gone
        }
    }
}
