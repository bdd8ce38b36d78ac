//! Raft log storage: raft-rs's `MemStorage` as the in-memory view raft reads, made
//! durable by the write-ahead log in `wal.rs` (entries, hard state, compaction point) and
//! the sled tree `raft` (who this member is, the configuration and the member records).
//! The state machine's own writes in sled are flushed lazily: the WAL keeps every entry
//! until a sled flush has made its effects durable. Nothing here syncs except [`sync`],
//! called once per `Ready`, and the rare changes of membership or snapshot.
//!
//! Key layout of the `raft` tree:
//!
//! | key                        | value                                          |
//! |----------------------------|------------------------------------------------|
//! | `b"conf"`                  | `eraftpb.ConfState`                             |
//! | `b"ident"`                 | this member's id and the cluster id (2 × u64 BE)  |
//! | `b'm'` id:u64 BE (9 B)     | `kvstorepb.Member` of each member                 |
//! | `b'r'` id:u64 BE (9 B)     | empty: a member removed from the cluster          |
//!
//! Data directories from before the WAL kept the log there too (`b'e'` index → entry,
//! `b"hard"`, `b"snap"`); opening one moves that log into a new WAL.
//!
//! [`sync`]: LogStorage::sync

use super::durable::SledFiles;
use super::wal::{Replayed, Wal};
use super::StateMachine;
use prost::Message as _;
use proto::peer::kvstorepb::{Member, SnapshotData};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

const ENTRY_PREFIX: u8 = b'e';
const HARD_STATE: &[u8] = b"hard";
const CONF_STATE: &[u8] = b"conf";
const SNAP_META: &[u8] = b"snap";
const IDENTITY: &[u8] = b"ident";
const MEMBER_PREFIX: u8 = b'm';
const REMOVED_PREFIX: u8 = b'r';

fn member_key(id: u64) -> [u8; 9] {
    id_key(MEMBER_PREFIX, id)
}

fn id_key(prefix: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Who this member is: what a restart reads instead of `--initial-cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

/// How a member with an empty data directory starts.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// A new cluster of these members, all voters.
    New(Vec<Member>),
    /// Joining an existing cluster (added with `member add`): the leader sends a
    /// snapshot with the configuration and the data.
    Join(Vec<Member>),
}

/// Whether a follower that installs `snap` can go on from a log starting at `first`.
fn leads_into(snap: &Snapshot, first: u64) -> bool {
    snap.get_metadata().index + 1 >= first
}

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(e.to_string().into()))
}

#[derive(Clone)]
pub struct LogStorage {
    mem: MemStorage,
    tree: sled::Tree,
    sm: Arc<dyn StateMachine>,
    disk: Arc<Mutex<Disk>>,
    snapshots: Arc<Mutex<Snapshots>>,
}

/// Snapshots for members that fell behind, built on a thread of their own so the raft
/// thread goes on (heartbeats, appends, applies) while a large store is copied.
#[derive(Default)]
struct Snapshots {
    /// The build under way; its snapshot (or `None`: history was rewritten under it,
    /// start again) arrives here.
    building: Option<mpsc::Receiver<anyhow::Result<Option<Snapshot>>>>,
    /// The last one built, handed out while a follower can go on from the log after it.
    ready: Option<Snapshot>,
}

/// What only the raft thread writes (behind a lock because raft-rs's `Storage` is shared).
struct Disk {
    wal: Wal,
    db: sled::Db,
    sled_files: SledFiles,
    /// Where the log starts now (entries up to it are compacted away in memory); written
    /// at the head of the next WAL segment.
    compacted: Option<SnapshotMetadata>,
}

impl Disk {
    /// Makes everything the state machine applied durable in sled, with the records
    /// written here (see `durable.rs` for why sled's own flush is not enough).
    fn flush_sled(&mut self, sm: &dyn StateMachine) -> anyhow::Result<()> {
        sm.persist(true)?;
        self.db.flush()?;
        self.sled_files.sync()?;
        Ok(())
    }
}

impl LogStorage {
    /// The identity persisted by an earlier start, if any.
    pub fn identity(db: &sled::Db) -> anyhow::Result<Option<Identity>> {
        let tree = db.open_tree("raft")?;
        let Some(b) = tree.get(IDENTITY)? else {
            return Ok(None);
        };
        anyhow::ensure!(b.len() == 16, "corrupt member identity in the raft tree");
        Ok(Some(Identity {
            member_id: u64::from_be_bytes(b[..8].try_into()?),
            cluster_id: u64::from_be_bytes(b[8..].try_into()?),
        }))
    }

    /// Opens the log: the WAL at `wal_dir`, the rest in `db` (opened at `sled_dir`). An
    /// empty one is bootstrapped as `bootstrap` says (and the identity recorded); an
    /// existing one ignores both and resumes from what was persisted.
    pub fn open(
        db: &sled::Db,
        sled_dir: &Path,
        wal_dir: &Path,
        segment_bytes: u64,
        sm: Arc<dyn StateMachine>,
        identity: Identity,
        bootstrap: &Bootstrap,
    ) -> anyhow::Result<Self> {
        let tree = db.open_tree("raft")?;
        let fresh = tree.get(CONF_STATE)?.is_none();
        let (voters, members) = match bootstrap {
            Bootstrap::New(m) => (m.iter().map(|m| m.id).collect(), m),
            Bootstrap::Join(m) => (Vec::new(), m),
        };
        let initial_conf = ConfState {
            voters,
            ..Default::default()
        };
        // The WAL is created before the records in sled: a crash in between leaves a
        // fresh-looking sled next to a complete WAL, which the next start resumes.
        let (wal, replayed) = if wal_dir.exists() {
            Wal::open(wal_dir, segment_bytes)?
        } else {
            let replayed = if fresh {
                initial_log(bootstrap, &initial_conf)
            } else {
                legacy_log(&tree)?
            };
            let hs = replayed.hard_state.clone().unwrap_or_default();
            let wal = Wal::create(
                wal_dir,
                segment_bytes,
                replayed.snapshot.as_ref(),
                &hs,
                &replayed.entries,
            )?;
            (wal, replayed)
        };
        let mut batch = sled::Batch::default();
        if fresh {
            for m in members {
                batch.insert(&member_key(m.id)[..], m.encode_to_vec());
            }
            batch.insert(CONF_STATE, initial_conf.write_to_bytes()?);
        }
        if fresh || tree.get(IDENTITY)?.is_none() {
            let mut ident = identity.member_id.to_be_bytes().to_vec();
            ident.extend_from_slice(&identity.cluster_id.to_be_bytes());
            batch.insert(IDENTITY, ident);
        }
        // A log moved into the WAL leaves sled.
        for item in tree.scan_prefix([ENTRY_PREFIX]) {
            batch.remove(item?.0);
        }
        batch.remove(HARD_STATE);
        batch.remove(SNAP_META);
        tree.apply_batch(batch)?;
        let mut disk = Disk {
            wal,
            db: db.clone(),
            sled_files: SledFiles::open(sled_dir)?,
            compacted: replayed.snapshot.clone(),
        };
        disk.flush_sled(&*sm)?;

        let mem = MemStorage::new();
        {
            let mut core = mem.wl();
            if let Some(meta) = replayed.snapshot {
                let mut snap = Snapshot::default();
                snap.set_metadata(meta);
                core.apply_snapshot(snap)?;
            }
            let cs = ConfState::parse_from_bytes(&tree.get(CONF_STATE)?.unwrap_or_default())?;
            core.set_conf_state(cs);
            if !replayed.entries.is_empty() {
                core.append(&replayed.entries)?;
            }
            if let Some(hs) = replayed.hard_state {
                core.set_hardstate(hs);
            }
        }
        Ok(LogStorage {
            mem,
            tree,
            sm,
            disk: Arc::new(Mutex::new(disk)),
            snapshots: Arc::default(),
        })
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the log durable: writes what was appended since the last call and fdatasyncs
    /// it. When the WAL segment is full, flushes sled (so everything applied so far is
    /// durable there) and starts a new segment, deleting the ones before the compaction
    /// point.
    pub fn sync(&self) -> anyhow::Result<()> {
        let mut disk = self.disk();
        disk.wal.sync()?;
        if disk.wal.full() {
            disk.flush_sled(&*self.sm)?;
            let compacted = disk.compacted.clone();
            let hs = self.hard_state();
            disk.wal.rotate(compacted.as_ref(), &hs)?;
        }
        Ok(())
    }

    /// Makes the state machine and the member records durable now (after a membership
    /// change, before the applied index can move past it).
    pub fn flush_sled(&self) -> anyhow::Result<()> {
        self.disk().flush_sled(&*self.sm)
    }

    /// Appends entries (replacing any conflicting suffix) to memory and sled.
    pub fn append(&self, entries: &[Entry]) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.mem.wl().append(entries)?;
        // The WAL's replay drops a conflicting suffix when the new entries arrive.
        self.disk().wal.append(entries)?;
        Ok(())
    }

    pub fn set_hard_state(&self, hs: &HardState) -> anyhow::Result<()> {
        self.mem.wl().set_hardstate(hs.clone());
        self.disk().wal.set_hard_state(hs)?;
        Ok(())
    }

    pub fn hard_state(&self) -> HardState {
        self.mem.rl().hard_state().clone()
    }

    pub fn set_commit(&self, commit: u64) -> anyhow::Result<()> {
        let mut hs = self.hard_state();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    pub fn set_conf_state(&self, cs: &ConfState) -> anyhow::Result<()> {
        self.mem.wl().set_conf_state(cs.clone());
        self.tree.insert(CONF_STATE, cs.write_to_bytes()?)?;
        Ok(())
    }

    /// Every member recorded (the applied configuration's, with names and URLs).
    pub fn members(&self) -> anyhow::Result<Vec<Member>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([MEMBER_PREFIX]) {
            out.push(Member::decode(&*item?.1)?);
        }
        Ok(out)
    }

    pub fn put_member(&self, m: &Member) -> anyhow::Result<()> {
        self.tree.insert(&member_key(m.id)[..], m.encode_to_vec())?;
        Ok(())
    }

    /// Drops a member's record and remembers that it was removed, so its messages are
    /// refused (which tells it to stop).
    pub fn remove_member(&self, id: u64) -> anyhow::Result<()> {
        let mut batch = sled::Batch::default();
        batch.remove(&member_key(id)[..]);
        batch.insert(&id_key(REMOVED_PREFIX, id)[..], &[]);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn removed_ids(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([REMOVED_PREFIX]) {
            let (k, _) = item?;
            out.push(u64::from_be_bytes(k[1..].try_into()?));
        }
        Ok(out)
    }

    pub fn conf_state(&self) -> ConfState {
        self.mem
            .initial_state()
            .map(|s| s.conf_state)
            .unwrap_or_default()
    }

    /// Installs a snapshot received from the leader: the state machine takes its data,
    /// the log restarts after it.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> anyhow::Result<()> {
        let meta = snap.get_metadata();
        let data = SnapshotData::decode(snap.get_data())?;
        self.sm.restore(meta.index, &data.state)?;
        self.mem.wl().apply_snapshot(snap.clone())?;
        let mut batch = sled::Batch::default();
        for item in self.tree.scan_prefix([MEMBER_PREFIX]) {
            let (k, _) = item?;
            batch.remove(k);
        }
        for m in &data.members {
            batch.insert(&member_key(m.id)[..], m.encode_to_vec());
        }
        batch.insert(CONF_STATE, meta.get_conf_state().write_to_bytes()?);
        self.tree.apply_batch(batch)?;
        // The new state is durable before the WAL forgets the old log.
        let hs = self.hard_state();
        let mut disk = self.disk();
        disk.flush_sled(&*self.sm)?;
        disk.wal.install_snapshot(meta, &hs)?;
        disk.compacted = Some(meta.clone());
        drop(disk);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes = snap.get_data().len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Drops log entries before `index` (already applied) from memory. The WAL keeps them
    /// until its next segment starts, after a sled flush made their effects durable.
    pub fn compact(&self, index: u64) -> anyhow::Result<()> {
        let first = Storage::first_index(&self.mem)?;
        if index <= first {
            return Ok(());
        }
        let term = self.mem.term(index - 1)?;
        let mut meta = SnapshotMetadata {
            index: index - 1,
            term,
            ..Default::default()
        };
        meta.set_conf_state(self.conf_state());
        self.mem.wl().compact(index)?;
        self.disk().compacted = Some(meta);
        // A snapshot a follower could no longer go on from is only memory now.
        let mut snaps = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if snaps.ready.as_ref().is_some_and(|s| !leads_into(s, index)) {
            snaps.ready = None;
        }
        Ok(())
    }

    pub fn first_index(&self) -> u64 {
        Storage::first_index(&self.mem).unwrap_or(1)
    }

    pub fn last_index(&self) -> u64 {
        Storage::last_index(&self.mem).unwrap_or(0)
    }
}

/// The log of a new member: a new cluster's configuration is a snapshot at index 1,
/// term 1 (like raft-rs's own bootstrap), so a member that joins later, with an empty
/// log, is sent a snapshot carrying it rather than a log that never mentions it. A
/// joining member starts empty and waits for the leader's snapshot.
fn initial_log(bootstrap: &Bootstrap, conf: &ConfState) -> Replayed {
    match bootstrap {
        Bootstrap::New(_) => {
            let mut meta = SnapshotMetadata {
                index: 1,
                term: 1,
                ..Default::default()
            };
            meta.set_conf_state(conf.clone());
            Replayed {
                snapshot: Some(meta),
                hard_state: Some(HardState {
                    term: 1,
                    commit: 1,
                    ..Default::default()
                }),
                entries: Vec::new(),
            }
        }
        Bootstrap::Join(_) => Replayed::default(),
    }
}

/// The log kept in the `raft` tree by data directories from before the WAL.
fn legacy_log(tree: &sled::Tree) -> anyhow::Result<Replayed> {
    let mut out = Replayed::default();
    if let Some(b) = tree.get(SNAP_META)? {
        out.snapshot = Some(SnapshotMetadata::parse_from_bytes(&b)?);
    }
    if let Some(b) = tree.get(HARD_STATE)? {
        out.hard_state = Some(HardState::parse_from_bytes(&b)?);
    }
    for item in tree.scan_prefix([ENTRY_PREFIX]) {
        out.entries.push(Entry::parse_from_bytes(&item?.1)?);
    }
    Ok(out)
}

impl Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// A snapshot for a follower that fell behind the log: the state machine's whole
    /// state at its applied index. Building one takes a while on a large store, so the
    /// first call starts it on another thread and answers "temporarily unavailable";
    /// raft asks again on the follower's next heartbeat response and gets it once built.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = || {
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ))
        };
        let mut snaps = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(building) = &snaps.building {
            match building.try_recv() {
                Err(mpsc::TryRecvError::Empty) => return unavailable(),
                Ok(Ok(Some(snap))) => snaps.ready = Some(snap),
                Ok(Ok(None)) => tracing::info!(
                    "raft: a compaction or restore ran under a snapshot; building again"
                ),
                Ok(Err(e)) => tracing::warn!("raft: building a snapshot: {e:#}"),
                Err(mpsc::TryRecvError::Disconnected) => {
                    tracing::warn!("raft: the snapshot thread died; building again")
                }
            }
            snaps.building = None;
        }
        let first = self.mem.first_index()?;
        if let Some(snap) = &snaps.ready {
            if snap.get_metadata().index >= request_index && leads_into(snap, first) {
                return Ok(snap.clone());
            }
            snaps.ready = None;
        }
        let index = self.sm.applied_index();
        // Nothing applied past the log's start yet (a brand-new cluster): ask again later.
        if index < request_index || index + 1 < first {
            return unavailable();
        }
        // MemStorage also knows the term at the compaction point itself.
        let term = self.mem.term(index)?;
        let members = self.members().map_err(storage_err)?;
        let conf_state = self.conf_state();
        let job = self.sm.begin_snapshot().map_err(storage_err)?;
        let (done, building) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let snap = job().map(|state| {
                    state.map(|state| {
                        let data = SnapshotData { members, state };
                        let mut snap = Snapshot::default();
                        snap.set_data(data.encode_to_vec().into());
                        let meta = snap.mut_metadata();
                        meta.index = index;
                        meta.term = term;
                        meta.set_conf_state(conf_state);
                        tracing::info!(
                            index,
                            bytes = snap.get_data().len(),
                            "raft: built a snapshot in {:?}",
                            started.elapsed()
                        );
                        snap
                    })
                });
                // Nobody waiting means the member stopped.
                let _ = done.send(snap);
            })
            .map_err(storage_err)?;
        snaps.building = Some(building);
        unavailable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_log_kept_in_sled_moves_into_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let (sled_dir, wal_dir) = (dir.path().join("db"), dir.path().join("wal"));
        let identity = Identity {
            member_id: 1,
            cluster_id: 9,
        };
        let bootstrap = Bootstrap::New(vec![Member {
            id: 1,
            ..Default::default()
        }]);
        // A data directory as written before the WAL existed.
        {
            let db = sled::open(&sled_dir).unwrap();
            let tree = db.open_tree("raft").unwrap();
            let cs = ConfState {
                voters: vec![1],
                ..Default::default()
            };
            tree.insert(CONF_STATE, cs.write_to_bytes().unwrap())
                .unwrap();
            let mut meta = SnapshotMetadata {
                index: 1,
                term: 1,
                ..Default::default()
            };
            meta.set_conf_state(cs);
            tree.insert(SNAP_META, meta.write_to_bytes().unwrap())
                .unwrap();
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 4,
                ..Default::default()
            };
            tree.insert(HARD_STATE, hs.write_to_bytes().unwrap())
                .unwrap();
            for i in 2..=5u64 {
                let mut k = vec![ENTRY_PREFIX];
                k.extend_from_slice(&i.to_be_bytes());
                tree.insert(k, entry(i, 2).write_to_bytes().unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        for round in 0..2 {
            let db = sled::open(&sled_dir).unwrap();
            let sm = Arc::new(
                crate::mvcc::Store::open(db.clone(), Arc::new(crate::watch::Hub::new())).unwrap(),
            );
            let log = LogStorage::open(&db, &sled_dir, &wal_dir, 1 << 20, sm, identity, &bootstrap)
                .unwrap();
            assert_eq!(
                (log.first_index(), log.last_index()),
                (2, 5),
                "round {round}"
            );
            let got = log
                .entries(2, 6, None, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(got, (2..=5).map(|i| entry(i, 2)).collect::<Vec<_>>());
            assert_eq!(log.hard_state().commit, 4);
            assert_eq!(log.hard_state().vote, 1);
            assert_eq!(log.conf_state().voters, vec![1]);
            let tree = db.open_tree("raft").unwrap();
            assert!(tree.get(HARD_STATE).unwrap().is_none(), "moved out of sled");
            assert_eq!(tree.scan_prefix([ENTRY_PREFIX]).count(), 0);
            assert!(wal_dir.exists());
        }
    }
}
