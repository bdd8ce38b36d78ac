//! Watches: a hub of watchers fed by the store as it applies revisions.
//!
//! Ordering: the store notifies the hub while it still holds its write lock, and a watcher
//! is registered (history replayed, then added to the hub) under the store's read lock, so
//! every watcher sees every revision from its start once, in order, with no gap between
//! replay and live events. Each watcher's channel is unbounded: a slow watcher costs
//! memory, never a lost event.

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
}

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
    tx: mpsc::UnboundedSender<Batch>,
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

    /// Called by the store with the state write-locked: delivers one applied revision.
    pub fn notify(&self, revision: i64, events: &[Event]) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|_, w| {
            if revision < w.spec.start_revision {
                return true;
            }
            // From now on `start_revision` is the next revision this watcher has not seen.
            w.spec.start_revision = revision + 1;
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| w.spec.matches(e))
                .map(|e| w.spec.shape(e))
                .collect();
            if mine.is_empty() {
                return true;
            }
            // A closed receiver means the stream went away: drop the watcher.
            w.tx.send(Batch {
                watch_id: w.spec.watch_id,
                revision,
                events: mine,
            })
            .is_ok()
        });
    }

    /// Registers a watch: replays history from `start_revision` (as one batch) and then
    /// delivers live events, all through `tx`.
    pub fn register(
        &self,
        store: &Store,
        spec: WatchSpec,
        tx: mpsc::UnboundedSender<Batch>,
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
                // The receiver is the caller's and alive; a send error would mean it was
                // dropped, and then nobody is left to tell.
                let _ = tx.send(Batch {
                    watch_id: spec.watch_id,
                    revision: state.current_rev,
                    events: history,
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
            .insert(id, Watcher { spec, tx });
        drop(state);
        Ok(Registered::Watching { id })
    }

    /// After the store jumped forward by installing a snapshot (state read-locked):
    /// replays to every watcher what it missed, from the store's history, so it still
    /// sees every revision once, in order. A watcher whose next revision was compacted
    /// away by the snapshot is dropped (its stream ends).
    pub(crate) fn resync(&self, store: &Store, state: &State) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|_, w| {
            if w.spec.start_revision > state.current_rev {
                return true;
            }
            if w.spec.start_revision < state.compact_rev {
                return false;
            }
            let Ok(history) = store.history(
                state,
                &w.spec.key,
                &w.spec.range_end,
                w.spec.start_revision,
                w.spec.prev_kv,
            ) else {
                return false;
            };
            w.spec.start_revision = state.current_rev + 1;
            let mine: Vec<Event> = history.into_iter().filter(|e| w.spec.matches(e)).collect();
            mine.is_empty()
                || w.tx
                    .send(Batch {
                        watch_id: w.spec.watch_id,
                        revision: state.current_rev,
                        events: mine,
                    })
                    .is_ok()
        });
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
