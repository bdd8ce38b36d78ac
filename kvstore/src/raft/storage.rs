//! Raft log storage: raft-rs's `MemStorage` as the in-memory view raft reads, mirrored
//! into the sled tree `raft` that survives restarts. Nothing here flushes: the node loop
//! flushes sled once per `Ready`, before anything that depends on durability.
//!
//! Key layout of the `raft` tree:
//!
//! | key                        | value                                          |
//! |----------------------------|------------------------------------------------|
//! | `b'e'` index:u64 BE (9 B)  | `eraftpb.Entry` (protobuf)                      |
//! | `b"hard"`                  | `eraftpb.HardState`                             |
//! | `b"conf"`                  | `eraftpb.ConfState`                             |
//! | `b"snap"`                  | `eraftpb.SnapshotMetadata` of the last compaction point |
//! | `b"ident"`                 | this member's id and the cluster id (2 × u64 BE)  |
//! | `b'm'` id:u64 BE (9 B)     | `kvstorepb.Member` of each member                 |
//! | `b'r'` id:u64 BE (9 B)     | empty: a member removed from the cluster          |

use super::StateMachine;
use prost::Message as _;
use proto::peer::kvstorepb::{Member, SnapshotData};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};
use std::sync::Arc;

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

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(raft::StorageError::Other(e.to_string().into()))
}

#[derive(Clone)]
pub struct LogStorage {
    mem: MemStorage,
    tree: sled::Tree,
    sm: Arc<dyn StateMachine>,
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

    /// Opens the log in `db`. An empty one is bootstrapped as `bootstrap` says (and the
    /// identity recorded); an existing one ignores both and resumes from what was
    /// persisted.
    pub fn open(
        db: &sled::Db,
        sm: Arc<dyn StateMachine>,
        identity: Identity,
        bootstrap: &Bootstrap,
    ) -> anyhow::Result<Self> {
        let tree = db.open_tree("raft")?;
        let mem = MemStorage::new();
        let fresh = tree.get(CONF_STATE)?.is_none();
        if fresh {
            let mut batch = sled::Batch::default();
            let mut ident = identity.member_id.to_be_bytes().to_vec();
            ident.extend_from_slice(&identity.cluster_id.to_be_bytes());
            batch.insert(IDENTITY, ident);
            let (members, voters) = match bootstrap {
                Bootstrap::New(m) => (m, m.iter().map(|m| m.id).collect()),
                Bootstrap::Join(m) => (m, Vec::new()),
            };
            for m in members {
                batch.insert(&member_key(m.id)[..], m.encode_to_vec());
            }
            let cs = ConfState {
                voters,
                ..Default::default()
            };
            batch.insert(CONF_STATE, cs.write_to_bytes()?);
            if let Bootstrap::New(_) = bootstrap {
                // Like raft-rs's own bootstrap: the initial configuration is a snapshot at
                // index 1, term 1, so a member that joins later (an empty log) is sent a
                // snapshot carrying it rather than a log that never mentions it.
                let mut meta = SnapshotMetadata {
                    index: 1,
                    term: 1,
                    ..Default::default()
                };
                meta.set_conf_state(cs);
                batch.insert(SNAP_META, meta.write_to_bytes()?);
                let hs = HardState {
                    term: 1,
                    commit: 1,
                    ..Default::default()
                };
                batch.insert(HARD_STATE, hs.write_to_bytes()?);
            }
            tree.apply_batch(batch)?;
        } else if tree.get(IDENTITY)?.is_none() {
            // A data directory from before identities were recorded (single member).
            let mut ident = identity.member_id.to_be_bytes().to_vec();
            ident.extend_from_slice(&identity.cluster_id.to_be_bytes());
            tree.insert(IDENTITY, ident)?;
        }
        {
            let mut core = mem.wl();
            if let Some(b) = tree.get(SNAP_META)? {
                let meta = SnapshotMetadata::parse_from_bytes(&b)?;
                let mut snap = Snapshot::default();
                snap.set_metadata(meta);
                core.apply_snapshot(snap)?;
            }
            let cs = ConfState::parse_from_bytes(&tree.get(CONF_STATE)?.unwrap_or_default())?;
            core.set_conf_state(cs);
            let mut entries = Vec::new();
            for item in tree.scan_prefix([ENTRY_PREFIX]) {
                let (_, v) = item?;
                entries.push(Entry::parse_from_bytes(&v)?);
            }
            if !entries.is_empty() {
                core.append(&entries)?;
            }
            if let Some(b) = tree.get(HARD_STATE)? {
                core.set_hardstate(HardState::parse_from_bytes(&b)?);
            }
        }
        Ok(LogStorage { mem, tree, sm })
    }

    /// Appends entries (replacing any conflicting suffix) to memory and sled.
    pub fn append(&self, entries: &[Entry]) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let last_before = Storage::last_index(&self.mem)?;
        self.mem.wl().append(entries)?;
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(&entry_key(e.index)[..], e.write_to_bytes()?);
        }
        // A conflicting suffix beyond the new last entry is gone from memory: drop it here.
        let new_last = entries.last().map(|e| e.index).unwrap_or(0);
        for i in new_last + 1..=last_before {
            batch.remove(&entry_key(i)[..]);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn set_hard_state(&self, hs: &HardState) -> anyhow::Result<()> {
        self.mem.wl().set_hardstate(hs.clone());
        self.tree.insert(HARD_STATE, hs.write_to_bytes()?)?;
        Ok(())
    }

    pub fn set_commit(&self, commit: u64) -> anyhow::Result<()> {
        let mut hs = self.mem.rl().hard_state().clone();
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
        for item in self.tree.scan_prefix([ENTRY_PREFIX]) {
            let (k, _) = item?;
            batch.remove(k);
        }
        for item in self.tree.scan_prefix([MEMBER_PREFIX]) {
            let (k, _) = item?;
            batch.remove(k);
        }
        for m in &data.members {
            batch.insert(&member_key(m.id)[..], m.encode_to_vec());
        }
        batch.insert(SNAP_META, meta.write_to_bytes()?);
        batch.insert(CONF_STATE, meta.get_conf_state().write_to_bytes()?);
        self.tree.apply_batch(batch)?;
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes = snap.get_data().len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Drops log entries before `index` (already applied and durable in the state
    /// machine), remembering the compaction point so a restart resumes after it.
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
        let mut batch = sled::Batch::default();
        for i in first..index {
            batch.remove(&entry_key(i)[..]);
        }
        batch.insert(SNAP_META, meta.write_to_bytes()?);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn first_index(&self) -> u64 {
        Storage::first_index(&self.mem).unwrap_or(1)
    }

    pub fn last_index(&self) -> u64 {
        Storage::last_index(&self.mem).unwrap_or(0)
    }
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
    /// state at its applied index.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.sm.applied_index();
        // Nothing applied past the log's start yet (a brand-new cluster): ask again later.
        if index < request_index || index + 1 < self.mem.first_index()? {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // MemStorage also knows the term at the compaction point itself.
        let term = self.mem.term(index)?;
        let data = SnapshotData {
            members: self.members().map_err(storage_err)?,
            state: self.sm.snapshot().map_err(storage_err)?,
        };
        let mut snap = Snapshot::default();
        snap.set_data(data.encode_to_vec().into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        Ok(snap)
    }
}
