//! The MVCC key-value state machine, etcd's data model on sled: one global revision (+1
//! per write transaction), per-key create/mod revision and version, tombstones,
//! compaction, leases. Raft applies committed entries here in log order
//! ([`Store::apply_entries`]); reads come straight from the in-memory key index and sled.
//!
//! Applied effects collect in one pending sled batch (their values readable from memory
//! meanwhile) that [`Store::persist`] writes, on a thread of its own unless asked to
//! wait: a sled batch costs an IO-buffer roll and a wake-up of sled's IO threads, far
//! too much to pay per write or on the raft thread. The raft WAL holds the
//! entries until sled has them, so nothing is lost by the wait.
//!
//! Must not: read clocks or randomness while applying (every member must reach the same
//! state), or let a reader observe half of an applied entry.

mod key_index;
pub mod range;
pub mod revision;
mod snapshot;
mod txn;

use crate::watch::Hub;
use key_index::KeyIndex;
use prost::Message;
use proto::etcd::etcdserverpb::{RangeRequest, RangeResponse};
use proto::etcd::mvccpb::{event::EventType, Event, KeyValue};
use proto::peer::kvstorepb::{internal_response, ApplyError, InternalRequest, InternalResponse};
use revision::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard};

/// An error with the gRPC code and message etcd answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub code: tonic::Code,
    pub message: String,
}

impl StoreError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
        }
    }
    pub fn compacted() -> Self {
        Self::new(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        )
    }
    pub fn future_rev() -> Self {
        Self::new(
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        )
    }
    pub fn lease_not_found() -> Self {
        Self::new(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found",
        )
    }
    fn storage(e: impl std::fmt::Display) -> Self {
        Self::new(tonic::Code::Internal, format!("kvstore storage: {e}"))
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        tonic::Status::new(e.code, e.message)
    }
}

#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    /// Granted TTL in seconds.
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub current_rev: i64,
    pub compact_rev: i64,
    pub applied_index: u64,
    pub index: BTreeMap<Vec<u8>, KeyIndex>,
    pub leases: BTreeMap<i64, LeaseState>,
    /// Effects applied since the last [`Store::persist`], not yet in sled: one atomic
    /// batch, with the applied index, so sled never holds part of an entry.
    pub unwritten: sled::Batch,
    /// The revisions written by `unwritten`, for readers until it reaches sled.
    pub unwritten_revs: HashMap<Revision, KeyValue>,
    /// `unwritten` holds something.
    pub dirty: bool,
    /// The revisions of the batch the writer thread is writing.
    pub writing_revs: HashMap<Revision, KeyValue>,
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    state: RwLock<State>,
    hub: Arc<Hub>,
    writer: Mutex<Writer>,
    /// Counts the applied changes that remove revision records (compactions, restores),
    /// which a snapshot job reading them concurrently must not miss.
    rewrites: Arc<AtomicU64>,
}

/// The thread that writes pending batches to sled, so the raft loop does not wait for
/// sled's IO-buffer handling. One batch at a time, in order.
struct Writer {
    jobs: mpsc::Sender<sled::Batch>,
    done: mpsc::Receiver<sled::Result<()>>,
    /// A batch was handed over and its result not yet collected.
    busy: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Waits for the thread, which holds the database open (a reopen would find it
    /// locked otherwise).
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the mvcc writer thread panicked");
            }
        }
    }
}

impl Writer {
    fn start(tree: sled::Tree) -> std::io::Result<Writer> {
        let (jobs, job_rx) = mpsc::channel::<sled::Batch>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mvcc-writer".into())
            .spawn(move || {
                // Ends when the store (the sender) is dropped.
                for batch in job_rx {
                    if done_tx.send(tree.apply_batch(batch)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Writer {
            jobs,
            done,
            busy: false,
            thread: Some(thread),
        })
    }
}

/// The fields of a stored `mvccpb.KeyValue` that rebuilding the index needs; decoding
/// only these skips the value.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyAndLease {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// A revision record: whether it is a tombstone, and its `KeyValue` (or the part of it
/// that `M` decodes).
fn decode_value<M: prost::Message + Default>(bytes: &[u8]) -> Result<(bool, M), StoreError> {
    let (kind, rest) = bytes
        .split_first()
        .ok_or_else(|| StoreError::storage("empty revision record"))?;
    let kv = M::decode(rest).map_err(StoreError::storage)?;
    Ok((*kind == KIND_TOMBSTONE, kv))
}

impl Store {
    /// Opens (or creates) the store in `db` and rebuilds the key index from history.
    pub fn open(db: sled::Db, hub: Arc<Hub>) -> anyhow::Result<Self> {
        let tree = db.open_tree("mvcc")?;
        let state = Self::load(&tree)?;
        let writer = Writer::start(tree.clone())?;
        Ok(Store {
            db,
            tree,
            state: RwLock::new(state),
            hub,
            writer: Mutex::new(writer),
            rewrites: Arc::default(),
        })
    }

    /// Rebuilds the in-memory state from sled (after a snapshot replaced the records).
    fn reload(&self) -> anyhow::Result<()> {
        let fresh = Self::load(&self.tree)?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn load(tree: &sled::Tree) -> anyhow::Result<State> {
        let meta = |k: &[u8]| -> anyhow::Result<Option<i64>> {
            Ok(tree.get(k)?.and_then(|v| decode_i64(&v)))
        };
        let mut state = State {
            // A fresh store is at revision 1, as etcd's is.
            current_rev: meta(META_CURRENT_REV)?.unwrap_or(1),
            compact_rev: meta(META_COMPACT_REV)?.unwrap_or(0),
            applied_index: meta(META_APPLIED_INDEX)?.unwrap_or(0) as u64,
            ..Default::default()
        };
        // One pass in revision order; a key's lease is the one of its newest record
        // (a tombstone has none), and values are not decoded.
        let mut leased = HashMap::new();
        for item in tree.scan_prefix([REV_PREFIX]) {
            let (k, v) = item?;
            let rev = Revision::from_key(&k)
                .ok_or_else(|| anyhow::anyhow!("malformed revision key {k:?}"))?;
            let (tombstone, KeyAndLease { key, lease }) = decode_value(&v)?;
            if lease != 0 && !tombstone {
                leased.insert(key.clone(), lease);
            } else {
                leased.remove(&key);
            }
            state.index.entry(key).or_default().push(rev, tombstone);
        }
        for item in tree.scan_prefix([LEASE_PREFIX]) {
            let (k, v) = item?;
            let id = lease_id_from_key(&k).ok_or_else(|| anyhow::anyhow!("malformed lease key"))?;
            let ttl = decode_i64(&v).ok_or_else(|| anyhow::anyhow!("malformed lease record"))?;
            state.leases.insert(
                id,
                LeaseState {
                    ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        // Re-attach live keys to their leases.
        for (key, lease) in leased {
            if let Some(l) = state.leases.get_mut(&lease) {
                l.keys.insert(key);
            }
        }
        Ok(state)
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_revision(&self) -> i64 {
        self.read_state().current_rev
    }

    pub fn compact_revision(&self) -> i64 {
        self.read_state().compact_rev
    }

    pub fn applied_index(&self) -> u64 {
        self.read_state().applied_index
    }

    /// The KeyValue stored at a revision.
    pub(crate) fn read_rev(&self, state: &State, rev: Revision) -> Result<KeyValue, StoreError> {
        if let Some(kv) = state
            .unwritten_revs
            .get(&rev)
            .or_else(|| state.writing_revs.get(&rev))
        {
            return Ok(kv.clone());
        }
        let v = self
            .tree
            .get(rev.to_key())
            .map_err(StoreError::storage)?
            .ok_or_else(|| StoreError::storage(format!("revision {rev:?} missing")))?;
        Ok(decode_value::<KeyValue>(&v)?.1)
    }

    /// Serves a Range: returns the response and the store revision it was read at.
    pub fn range(&self, req: &RangeRequest) -> Result<(RangeResponse, i64), StoreError> {
        let state = self.read_state();
        let at = check_read_rev(&state, req.revision)?;
        let resp = range::range(&state.index, req, at, &mut |r| self.read_rev(&state, r))?;
        Ok((resp, state.current_rev))
    }

    /// A lease's granted TTL and attached keys.
    pub fn lease(&self, id: i64) -> Option<LeaseState> {
        self.read_state().leases.get(&id).cloned()
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.read_state().leases.keys().copied().collect()
    }

    /// The history of `[key, range_end)` from revision `from` (inclusive) to now, as watch
    /// events in revision order, with prev_kv when asked. Called with the state locked by
    /// the watch hub so no event can slip between replay and live delivery.
    pub(crate) fn history(
        &self,
        state: &State,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        prev_kv: bool,
    ) -> Result<Vec<Event>, StoreError> {
        let mut revs: Vec<(Revision, bool, Option<Revision>)> = Vec::new();
        let (lo, hi) = range::key_bounds(key, range_end);
        if range::valid_range(key, range_end) {
            for (_, ki) in state.index.range::<[u8], _>((lo, hi)) {
                for (i, (rev, tomb)) in ki.revs.iter().enumerate() {
                    if rev.main >= from {
                        let prev = i.checked_sub(1).and_then(|p| {
                            let (r, t) = ki.revs[p];
                            (!t).then_some(r)
                        });
                        revs.push((*rev, *tomb, prev));
                    }
                }
            }
        }
        revs.sort_by_key(|(r, _, _)| *r);
        let mut out = Vec::with_capacity(revs.len());
        for (rev, tomb, prev) in revs {
            let kv = self.read_rev(state, rev)?;
            let prev_kv = match (prev_kv, prev) {
                (true, Some(p)) => Some(self.read_rev(state, p)?),
                _ => None,
            };
            out.push(Event {
                r#type: if tomb {
                    EventType::Delete
                } else {
                    EventType::Put
                } as i32,
                kv: Some(kv),
                prev_kv,
            });
        }
        Ok(out)
    }

    /// Applies committed raft entries, in order, and returns each one's response. Their
    /// effects and the applied index join the pending batch ([`Store::persist`] writes
    /// it), then watchers are notified, in revision order, before the lock is released.
    /// An entry at or below the applied index (replayed after a restart) is skipped.
    pub fn apply_entries(&self, entries: &[(u64, &[u8])]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut batch = std::mem::take(&mut state.unwritten);
        let mut pending = std::mem::take(&mut state.unwritten_revs);
        let mut notify = Vec::new();
        let mut out = Vec::with_capacity(entries.len());
        let (applied, current, compacted) =
            (state.applied_index, state.current_rev, state.compact_rev);
        for &(index, data) in entries {
            if index <= state.applied_index || data.is_empty() {
                state.applied_index = state.applied_index.max(index);
                out.push(Vec::new());
                continue;
            }
            let req = InternalRequest::decode(data)?;
            let mut t = txn::WriteTxn::new(&mut state, self, &mut batch, &mut pending);
            let resp = t.apply(req);
            let (events, rev) = t.finish();
            state.applied_index = index;
            state.current_rev = rev;
            if !events.is_empty() {
                notify.push((rev, events));
            }
            out.push(resp.encode_to_vec());
        }
        if state.applied_index != applied {
            state.dirty = true;
            batch.insert(META_APPLIED_INDEX, &encode_i64(state.applied_index as i64));
        }
        if state.current_rev != current {
            batch.insert(META_CURRENT_REV, &encode_i64(state.current_rev));
        }
        if state.compact_rev != compacted {
            self.rewrites.fetch_add(1, Ordering::SeqCst);
        }
        state.unwritten = batch;
        state.unwritten_revs = pending;
        for (rev, events) in notify {
            self.hub.notify(rev, &events);
        }
        Ok(out)
    }

    /// Writes the pending batch of applied effects to sled (not flushed). With `wait`,
    /// everything applied is in sled when it returns. Without, the batch goes to the
    /// writer thread, unless that is still busy with the previous one: then nothing
    /// happens and the answer is false.
    pub fn persist(&self, wait: bool) -> anyhow::Result<bool> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if writer.busy {
            let result = if wait {
                Some(writer.done.recv()?)
            } else {
                match writer.done.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            let Some(result) = result else {
                return Ok(false);
            };
            writer.busy = false;
            result?;
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        // Whatever the writer had is in sled now.
        state.writing_revs.clear();
        if !state.dirty {
            return Ok(true);
        }
        let batch = std::mem::take(&mut state.unwritten);
        state.dirty = false;
        if wait {
            self.tree.apply_batch(batch)?;
            state.unwritten_revs.clear();
        } else {
            state.writing_revs = std::mem::take(&mut state.unwritten_revs);
            drop(state);
            writer.jobs.send(batch)?;
            writer.busy = true;
        }
        Ok(true)
    }

    /// Applies one committed raft entry (see [`Store::apply_entries`]).
    #[cfg(test)]
    pub fn apply_entry(&self, index: u64, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .apply_entries(&[(index, data)])?
            .pop()
            .unwrap_or_default())
    }

    /// Bytes used on disk by the database.
    pub fn db_size(&self) -> i64 {
        self.db.size_on_disk().map(|s| s as i64).unwrap_or(0)
    }
}

/// The revision a read at `requested` (0 = latest) sees, or etcd's error for it.
pub(crate) fn check_read_rev(state: &State, requested: i64) -> Result<i64, StoreError> {
    if requested <= 0 {
        return Ok(state.current_rev);
    }
    if requested > state.current_rev {
        return Err(StoreError::future_rev());
    }
    if requested < state.compact_rev {
        return Err(StoreError::compacted());
    }
    Ok(requested)
}

/// Turns an apply result back into a response or the error decided while applying.
pub fn decode_response(bytes: &[u8]) -> Result<internal_response::Response, StoreError> {
    let resp = InternalResponse::decode(bytes).map_err(StoreError::storage)?;
    match resp.response {
        Some(internal_response::Response::Error(ApplyError { code, message })) => {
            Err(StoreError::new(tonic::Code::from(code), message))
        }
        Some(r) => Ok(r),
        None => Err(StoreError::storage("empty apply result")),
    }
}

#[cfg(test)]
mod tests;
