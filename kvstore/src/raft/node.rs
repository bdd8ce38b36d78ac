//! The raft node loop. One OS thread owns the raft-rs `RawNode` (sled's fsync blocks, so
//! it must not sit on an async worker). Commands arrive on a channel and are drained in
//! batches, so the proposals that arrive while one flush runs all share the next one.
//!
//! Durability order per `Ready` (raft-rs 0.7): apply snapshot, apply committed entries,
//! append new entries and hard state, **flush sled**, only then send persisted messages
//! and acknowledge proposers — one fsync per `Ready`, shared by every proposal in it. Proposers are matched to their entries by a context of
//! (member id, request id) carried in the entry.

use super::storage::LogStorage;
use super::StateMachine;
use crate::metrics::Metrics;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, StateRole};
use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Voters of a new cluster (ignored when the log already exists).
    pub voters: Vec<u64>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// How long a proposal or read may wait before failing with a timeout.
    pub request_timeout: Duration,
    /// Applied entries kept in the log before compacting it.
    pub snapshot_count: u64,
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
}

impl From<RaftError> for tonic::Status {
    fn from(e: RaftError) -> Self {
        let code = match e {
            RaftError::Storage(_) => tonic::Code::Internal,
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
}

type Reply<T> = oneshot::Sender<Result<T, RaftError>>;

enum Cmd {
    Propose(Vec<u8>, Reply<Vec<u8>>),
    ReadIndex(Reply<()>),
    Shutdown,
}

struct Shared {
    status: RwLock<RaftStatus>,
    leader: watch::Sender<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A cheap handle to the node loop.
#[derive(Clone)]
pub struct RaftNode {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

impl RaftNode {
    /// Opens the raft log in `db` and starts the node loop on its own thread.
    pub fn start(
        cfg: RaftConfig,
        db: sled::Db,
        sm: Arc<dyn StateMachine>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let storage = LogStorage::open(&db, sm.clone(), &cfg.voters)?;
        let heartbeat = cfg.heartbeat_interval.max(Duration::from_millis(1));
        let election_tick =
            (cfg.election_timeout.as_millis() / heartbeat.as_millis()).max(2) as usize;
        let raft_cfg = raft::Config {
            id: cfg.member_id,
            election_tick,
            heartbeat_tick: 1,
            applied: sm.applied_index(),
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&raft_cfg, storage.clone(), &logger)?;
        // A lone voter need not wait an election timeout to lead.
        let cs = storage.conf_state();
        if cs.voters == [cfg.member_id] {
            node.campaign()?;
        }
        let (tx, rx) = mpsc::channel();
        let (leader, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            status: RwLock::new(RaftStatus {
                member_id: cfg.member_id,
                cluster_id: cfg.cluster_id,
                ..Default::default()
            }),
            leader,
            thread: Mutex::new(None),
        });
        let mut lp = Loop {
            node,
            storage,
            db,
            sm,
            cfg,
            shared: shared.clone(),
            metrics,
            next_id: 1,
            proposals: HashMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            read_retry: HashMap::new(),
            leader: 0,
        };
        let (started_tx, started_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || lp.run(rx, started_tx))?;
        *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        // Callers see the node's first status (a lone voter already leading), not zeros.
        started_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the raft loop stopped while starting"))?;
        Ok(RaftNode { tx, shared })
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
    node: RawNode<LogStorage>,
    storage: LogStorage,
    db: sled::Db,
    sm: Arc<dyn StateMachine>,
    cfg: RaftConfig,
    shared: Arc<Shared>,
    metrics: Metrics,
    next_id: u64,
    proposals: HashMap<u64, Waiter<Vec<u8>>>,
    reads: HashMap<u64, Waiter<()>>,
    /// ReadIndex answers waiting for the applied index to reach them: (index, request id).
    ready_reads: Vec<(u64, u64)>,
    /// When each unanswered ReadIndex was last sent: a new leader drops them until it has
    /// committed an entry in its term, so they are sent again.
    read_retry: HashMap<u64, Instant>,
    leader: u64,
}

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
    fn run(&mut self, rx: mpsc::Receiver<Cmd>, started: mpsc::Sender<()>) {
        let tick = self.cfg.heartbeat_interval.max(Duration::from_millis(1));
        let mut next_tick = Instant::now() + tick;
        // A lone voter campaigned before the loop started: settle that first, so status
        // and /health report the leader at once.
        if self.node.has_ready() {
            if let Err(e) = self.on_ready() {
                tracing::error!("raft: storage failure, stopping: {e:#}");
                self.fail_all(RaftError::Storage(e.to_string()));
                return;
            }
        }
        self.publish_status();
        // The starter waits for this; if it has gone there is no one to tell.
        let _ = started.send(());
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut stop = false;
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    stop |= !self.handle(cmd);
                    // Everything already queued joins this round (group commit).
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(cmd) => stop |= !self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            if stop {
                break;
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + tick;
            }
            if self.node.has_ready() {
                if let Err(e) = self.on_ready() {
                    tracing::error!("raft: storage failure, stopping: {e:#}");
                    self.fail_all(RaftError::Storage(e.to_string()));
                    return;
                }
            }
            self.resolve_reads();
            self.expire();
            self.publish_status();
        }
        self.fail_all(RaftError::Stopped);
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
                match self.node.propose(context(self.cfg.member_id, id), data) {
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
                    Err(_) => {
                        self.metrics.proposals_failed.inc();
                        let _ = reply.send(Err(RaftError::NoLeader)); // the caller may have gone
                    }
                }
            }
            Cmd::ReadIndex(reply) => {
                if self.node.raft.leader_id == 0 {
                    let _ = reply.send(Err(RaftError::NoLeader)); // the caller may have gone
                    return true;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.node.read_index(context(self.cfg.member_id, id));
                self.reads.insert(
                    id,
                    Waiter {
                        reply,
                        since: Instant::now(),
                    },
                );
                self.read_retry.insert(id, Instant::now());
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    fn flush(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        self.db.flush()?;
        self.metrics
            .fsync_seconds
            .observe(start.elapsed().as_secs_f64());
        Ok(())
    }

    fn on_ready(&mut self) -> anyhow::Result<()> {
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
        // Single-member groups exchange no messages; a transport is needed before raft
        // can address peers, and members with peers are refused at startup until then.
        debug_assert!(rd.messages().is_empty());
        if !rd.snapshot().is_empty() {
            self.storage.apply_snapshot(rd.snapshot())?;
        }
        let mut acks = Vec::new();
        self.apply_committed(rd.take_committed_entries(), &mut acks)?;
        self.storage.append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            self.storage.set_hard_state(hs)?;
        }
        for rs in rd.take_read_states() {
            if let Some((member, id)) = parse_context(&rs.request_ctx) {
                if member == self.cfg.member_id {
                    self.read_retry.remove(&id);
                    self.ready_reads.push((rs.index, id));
                }
            }
        }
        self.flush()?;
        debug_assert!(rd.persisted_messages().is_empty());
        self.ack(&mut acks);

        let mut light = self.node.advance(rd);
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
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    let result = self.sm.apply(e.index, e.get_data())?;
                    self.metrics.proposals_applied.inc();
                    if !e.get_data().is_empty() {
                        self.metrics.proposals_committed.inc();
                    }
                    if let Some((member, id)) = parse_context(e.get_context()) {
                        if member == self.cfg.member_id {
                            acks.push((id, result));
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(e.get_data())?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.storage.set_conf_state(&cs)?;
                    self.sm.apply(e.index, &[])?;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(e.get_data())?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.storage.set_conf_state(&cs)?;
                    self.sm.apply(e.index, &[])?;
                }
            }
        }
        Ok(())
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
                self.node.read_index(context(self.cfg.member_id, *id));
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
        let applied = self.sm.applied_index();
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
        s.is_learner = raft.prs().conf().learners().contains(&self.cfg.member_id);
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
