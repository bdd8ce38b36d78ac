//! Watches: a hub of watchers fed by the store as it applies revisions.
//!
//! Ordering: the store notifies the hub while it still holds its write lock, and a watcher
//! is registered (history replayed, then added to the hub) under the store's read lock, so
//! every watcher sees every revision from its start once, in order, with no gap between
//! replay and live events.
//!
//! Each watcher's channel is bounded (etcd's 128). A watcher whose channel is full is
//! *unsynced*: live events skip it, and [`Hub::sync`] (run every 100 ms, as etcd's
//! watcher sync loop) later sends what it missed from the store's history, in one batch,
//! under the store's read lock — so a slow client costs bounded memory and still loses
//! nothing. A watcher that falls so far behind that its next revision is compacted is
//! told so (a batch with `compact_revision`) and dropped, as etcd cancels it.
use crate::mvcc::{range, State, Store, StoreError};
use proto::etcd::mvccpb::{event::EventType, Event};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Events of one revision (or, for a replay, of many) for one watch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub watch_id: i64,
    /// The store revision these events bring the watcher to.
    pub revision: i64,
    pub events: Vec<Event>,
    /// Non-zero: the watcher fell behind this compaction and is cancelled.
    pub compact_revision: i64,
}

/// Batches a watcher's channel holds before the watcher counts as slow.
pub const CHANNEL: usize = 128;

/// How often unsynced watchers are caught up.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What a client asked to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    pub watch_id: i64,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 = from the next revision.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    fn matches(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        let kind_ok = match EventType::try_from(e.r#type) {
            Ok(EventType::Put) => !self.no_put,
            Ok(EventType::Delete) => !self.no_delete,
            Err(_) => false,
        };
        kind_ok && in_range(&kv.key, &self.key, &self.range_end)
    }

    fn shape(&self, e: &Event) -> Event {
        let mut e = e.clone();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        e
    }
}

fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

struct Watcher {
    spec: WatchSpec,
    tx: mpsc::Sender<Batch>,
    /// Its channel was full: live events skip it until `catch_up` succeeds.
    /// `spec.start_revision` is then the first revision it has not been sent.
    unsynced: bool,
}

impl Watcher {
    /// Sends everything from `spec.start_revision` up to the state's revision, from
    /// history (state read-locked, so no revision is applied meanwhile). False: drop
    /// the watcher (compacted past it, or its stream is gone).
    fn catch_up(&mut self, store: &Store, state: &State) -> bool {
        if self.spec.start_revision > state.current_rev {
            self.unsynced = false;
            return true;
        }
        if self.spec.start_revision < state.compact_rev {
            // Best effort: a full channel means the client is not reading anyway.
            let _ = self.tx.try_send(Batch {
                watch_id: self.spec.watch_id,
                revision: state.current_rev,
                events: Vec::new(),
                compact_revision: state.compact_rev,
            });
            return false;
        }
        let Ok(history) = store.history(
            state,
            &self.spec.key,
            &self.spec.range_end,
            self.spec.start_revision,
            self.spec.prev_kv,
        ) else {
            return false;
        };
        let mine: Vec<Event> = history
            .into_iter()
            .filter(|e| self.spec.matches(e))
            .collect();
        match self.offer(state.current_rev, mine) {
            Offer::Sent => {
                self.spec.start_revision = state.current_rev + 1;
                self.unsynced = false;
                true
            }
            Offer::Full => true, // still unsynced; retried on the next sync
            Offer::Gone => false,
        }
    }

    /// Puts `events` (if any) of `revision` in the channel without waiting.
    fn offer(&self, revision: i64, events: Vec<Event>) -> Offer {
        if events.is_empty() {
            return Offer::Sent;
        }
        let batch = Batch {
            watch_id: self.spec.watch_id,
            revision,
            events,
            compact_revision: 0,
        };
        match self.tx.try_send(batch) {
            Ok(()) => Offer::Sent,
            Err(mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }
}

enum Offer {
    Sent,
    /// The channel is full: the watcher is slow.
    Full,
    /// The stream went away.
    Gone,
}

#[derive(Default)]
pub struct Hub {
    watchers: Mutex<HashMap<u64, Watcher>>,
    next: std::sync::atomic::AtomicU64,
}

/// The outcome of registering a watch.
pub enum Registered {
    /// Live; `id` cancels it. The replayed history (if any) is already in the channel.
    Watching { id: u64 },
    /// The start revision was compacted: the watch is refused with this revision.
    Compacted { compact_revision: i64 },
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the store with the state write-locked: delivers one applied revision
    /// to every synced watcher.
    pub fn notify(&self, revision: i64, events: &[Event]) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|_, w| {
            if w.unsynced || revision < w.spec.start_revision {
                return true;
            }
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| w.spec.matches(e))
                .map(|e| w.spec.shape(e))
                .collect();
            match w.offer(revision, mine) {
                Offer::Sent => {
                    // From now on `start_revision` is the next revision it has not seen.
                    w.spec.start_revision = revision + 1;
                    true
                }
                // Slow: `sync` sends this revision and later ones from history.
                Offer::Full => {
                    w.unsynced = true;
                    w.spec.start_revision = revision;
                    true
                }
                Offer::Gone => false,
            }
        });
    }

    /// Catches up unsynced watchers whose channels have room again.
    pub fn sync(&self, store: &Store) {
        if !self.has_unsynced() {
            return;
        }
        let state = store.read_state();
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|_, w| !w.unsynced || w.catch_up(store, &state));
    }

    fn has_unsynced(&self) -> bool {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|w| w.unsynced)
    }

    /// Registers a watch: replays history from `start_revision` (as one batch) and then
    /// delivers live events, all through `tx`.
    pub fn register(
        &self,
        store: &Store,
        spec: WatchSpec,
        tx: mpsc::Sender<Batch>,
    ) -> Result<Registered, StoreError> {
        let state = store.read_state();
        if spec.start_revision > 0 && spec.start_revision < state.compact_rev {
            return Ok(Registered::Compacted {
                compact_revision: state.compact_rev,
            });
        }
        if spec.start_revision > 0 && spec.start_revision <= state.current_rev {
            let history: Vec<Event> = store
                .history(
                    &state,
                    &spec.key,
                    &spec.range_end,
                    spec.start_revision,
                    spec.prev_kv,
                )?
                .into_iter()
                .filter(|e| spec.matches(e))
                .collect();
            if !history.is_empty() {
                // The channel is new and empty, so the batch fits; a send error would
                // mean the caller dropped the receiver, and then nobody is left to tell.
                let _ = tx.try_send(Batch {
                    watch_id: spec.watch_id,
                    revision: state.current_rev,
                    events: history,
                    compact_revision: 0,
                });
            }
        }
        let mut spec = spec;
        // Live delivery starts after what was replayed (or after now).
        spec.start_revision = spec.start_revision.max(state.current_rev + 1);
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Watcher {
                    spec,
                    tx,
                    unsynced: false,
                },
            );
        drop(state);
        Ok(Registered::Watching { id })
    }

    /// After the store jumped forward by installing a snapshot (state read-locked):
    /// sends every watcher what it missed, from the store's history, so it still sees
    /// every revision once, in order. A watcher whose next revision was compacted away
    /// by the snapshot is told so and dropped.
    pub(crate) fn resync(&self, store: &Store, state: &State) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|_, w| w.catch_up(store, state));
    }

    pub fn cancel(&self, id: u64) {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub fn len(&self) -> usize {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Validates a watch range the way etcd does.
pub fn valid(key: &[u8], range_end: &[u8]) -> bool {
    range::valid_range(key, range_end)
}
