//! One watcher's stream, shared by REST and gRPC: the starting state (synthetic ADDED
//! events or a replay from the cache's window), then live events with selectors applied
//! (an object that stops matching becomes DELETED for this watcher), bookmarks, and the
//! timeout.

use crate::cache::{decode, Event, EventType, Filter, Message, WatchCache};
use crate::error::ApiError;
use crate::storage::{prefix_end, Storage};
use bytes::Bytes;
use etcd_client::{EventType as EtcdEventType, WatchOptions};
use futures::StreamExt;
use serde_json::Value;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How often a watcher that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Params {
    pub prefix: String,
    pub filter: Filter,
    /// None: current state first, as ADDED events.
    pub from: Option<i64>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// What a front end writes to its stream.
pub enum Out {
    Event { kind: &'static str, object: Object },
    Bookmark(i64),
    Error(ApiError),
}

/// An event's object.
pub enum Object {
    /// A change the cache fanned out: its JSON was serialized once for every watcher.
    Change(Arc<Event>),
    /// An object of the starting state.
    Current(Arc<Value>),
}

impl Object {
    pub fn value(&self) -> &Arc<Value> {
        match self {
            Object::Change(ev) => &ev.object,
            Object::Current(v) => v,
        }
    }

    /// The object's JSON: the cache's own when it has it.
    pub fn json(&self) -> Bytes {
        match self {
            Object::Change(ev) => ev.json.clone(),
            Object::Current(v) => Bytes::from(serde_json::to_vec(&**v).unwrap_or_default()),
        }
    }

    /// Appends the object's JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Object::Change(ev) => out.extend_from_slice(&ev.json),
            Object::Current(v) => {
                let _ = serde_json::to_writer(out, &**v);
            }
        }
    }
}

/// What a watcher with `filter` is told of `ev`, if anything. The event moves into the
/// answer rather than being taken apart: every reference counted handle copied per
/// watcher is an atomic write to a line all of them share.
fn transform(ev: Arc<Event>, filter: &Filter) -> Option<Out> {
    // An object's namespace is part of its key: the same before and after.
    if !filter.matches_namespace(&ev.namespace) {
        return None;
    }
    let now = filter.selects(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.selects(p));
    let kind = match ev.kind {
        EventType::Added if now => "ADDED",
        EventType::Modified if now && before => "MODIFIED",
        EventType::Modified if now => "ADDED",
        EventType::Modified if before => "DELETED",
        EventType::Deleted if now => "DELETED",
        _ => return None,
    };
    Some(Out::Event {
        kind,
        object: Object::Change(ev),
    })
}

/// A watcher as a stream of what its front end writes, polled by the front end itself:
/// the starting state (synthetic ADDED events, or the replay from the cache's window),
/// then live events with the filter applied, bookmarks, until the timeout. It ends when
/// the consumer drops it, on timeout, or when it fell behind the cache's fan-out buffer
/// (the client then resumes from its last revision).
///
/// A revision older than the cache's window (typically: the client resumes after this
/// apiserver restarted) is served from storage's own history instead, so the client
/// still gets every event exactly once; only a compacted revision is 410 Expired.
///
/// `gauge` counts the stream while it lives; `convert` turns each item into the front
/// end's own type.
pub fn stream<T>(
    cache: Arc<WatchCache>,
    storage: Storage,
    params: Params,
    gauge: prometheus_client::metrics::gauge::Gauge,
    mut convert: impl FnMut(Out) -> T + Send + 'static,
) -> impl futures::Stream<Item = T> + Send + 'static {
    struct Counted(prometheus_client::metrics::gauge::Gauge);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    gauge.inc();
    let counted = Counted(gauge);
    // Boxed: `unfold` moves its state into each item's future and back out.
    let state = Box::new(Watcher {
        phase: Phase::Start(cache, Box::new(storage)),
        pending: VecDeque::new(),
        deadline: Box::pin(tokio::time::sleep(params.timeout)),
        ticker: tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_EVERY,
            BOOKMARK_EVERY,
        ),
        last: 0,
        start: 0,
        params,
    });
    futures::stream::unfold(state, Watcher::next).map(move |out| {
        let _ = &counted;
        convert(out)
    })
}

enum Phase {
    Start(Arc<WatchCache>, Box<Storage>),
    Live(broadcast::Receiver<Message>),
    /// Served from storage by a task (a revision older than the cache's window).
    Storage(mpsc::Receiver<Out>),
    Done,
}

struct Watcher {
    phase: Phase,
    /// Items decided but not yet handed out (the starting state, a refusal).
    pending: VecDeque<Out>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    ticker: tokio::time::Interval,
    /// The newest revision this watcher has passed (bookmarks carry it).
    last: i64,
    /// The cache's revision when subscribed: live events up to it are already covered.
    start: i64,
    params: Params,
}

impl Watcher {
    async fn next(mut self: Box<Self>) -> Option<(Out, Box<Self>)> {
        loop {
            if let Some(out) = self.pending.pop_front() {
                return Some((out, self));
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                // Boxed: the start's state (cache sync, subscription) would make every
                // watcher's pending future ~9 KB instead of ~0.7 KB.
                Phase::Start(cache, storage) => Box::pin(self.subscribe(cache, *storage)).await,
                Phase::Storage(mut rx) => {
                    let out = rx.recv().await?;
                    self.phase = Phase::Storage(rx);
                    return Some((out, self));
                }
                Phase::Live(mut live) => {
                    tokio::select! {
                        _ = &mut self.deadline => return None,
                        _ = self.ticker.tick(), if self.params.bookmarks => {
                            self.phase = Phase::Live(live);
                            return Some((Out::Bookmark(self.last), self));
                        }
                        msg = live.recv() => match msg {
                            Ok(Message::Event(ev)) => {
                                self.phase = Phase::Live(live);
                                // Events up to `start` are in the starting state, or
                                // before the requested revision.
                                if ev.revision > self.start {
                                    self.last = self.last.max(ev.revision);
                                    if let Some(out) = transform(ev, &self.params.filter) {
                                        return Some((out, self));
                                    }
                                }
                            }
                            Ok(Message::Reset) | Err(broadcast::error::RecvError::Closed) => {
                                return None
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                tracing::info!(missed = n, "watcher fell behind; closing it so it resumes");
                                return None;
                            }
                        },
                    }
                }
            }
        }
    }

    /// Leaves the starting state in `pending` and the watcher live (or served from
    /// storage, or refused).
    async fn subscribe(&mut self, cache: Arc<WatchCache>, storage: Storage) {
        cache.wait_synced().await;
        let p = &self.params;
        match cache.subscribe(&p.prefix, &p.filter, p.from) {
            Ok(sub) => {
                self.start = sub.revision;
                self.last = sub.revision;
                self.pending
                    .extend(sub.initial.into_iter().map(|object| Out::Event {
                        kind: "ADDED",
                        object: Object::Current(object),
                    }));
                for ev in sub.replay {
                    self.last = self.last.max(ev.revision);
                    self.pending.extend(transform(ev, &p.filter));
                }
                self.phase = Phase::Live(sub.live);
            }
            Err(e) if e.code == 410 => {
                if let Some(from) = p.from {
                    let (tx, rx) = mpsc::channel(256);
                    tokio::spawn(from_storage(storage, p.clone(), from, tx));
                    self.phase = Phase::Storage(rx);
                }
            }
            Err(e) => self.pending.push_back(Out::Error(e)),
        }
    }
}

/// Serves a watch from storage's history: every change after `from`, in order, until
/// the timeout or the client leaves.
async fn from_storage(storage: Storage, params: Params, from: i64, tx: mpsc::Sender<Out>) {
    let opts = WatchOptions::new()
        .with_range(prefix_end(&params.prefix))
        .with_start_revision(from + 1)
        .with_prev_key();
    let mut stream = match storage
        .client()
        .watch(params.prefix.as_str(), Some(opts))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Out::Error(e.into())).await;
            return;
        }
    };
    let deadline = tokio::time::sleep(params.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    let mut last = from;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if params.bookmarks => {
                if tx.send(Out::Bookmark(last)).await.is_err() {
                    return;
                }
            }
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    // The stream broke: the client resumes from its last revision.
                    Ok(None) | Err(_) => return,
                };
                if resp.compact_revision() > 0 {
                    let _ = tx.send(Out::Error(ApiError::gone_revision(from))).await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let revision = kv.mod_revision();
                    let prev = ev
                        .prev_kv()
                        .and_then(|p| decode(p.value(), p.mod_revision()).ok())
                        .map(Arc::new);
                    let event = match ev.event_type() {
                        EtcdEventType::Put => {
                            let Ok(object) = decode(kv.value(), revision) else { continue };
                            let kind = if kv.create_revision() == revision {
                                EventType::Added
                            } else {
                                EventType::Modified
                            };
                            Event::new(kind, revision, Arc::new(object), prev)
                        }
                        EtcdEventType::Delete => {
                            let Some(last_state) = prev else { continue };
                            let mut object = (*last_state).clone();
                            object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
                            Event::new(EventType::Deleted, revision, Arc::new(object), Some(last_state))
                        }
                    };
                    last = revision;
                    if let Some(out) = transform(Arc::new(event), &params.filter) {
                        if tx.send(out).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: EventType, now: Value, prev: Option<Value>) -> Arc<Event> {
        Arc::new(Event {
            kind,
            revision: 5,
            json: Bytes::from(now.to_string()),
            object: Arc::new(now),
            prev: prev.map(Arc::new),
            namespace: String::new(),
        })
    }

    fn kind(o: Option<Out>) -> Option<&'static str> {
        match o {
            Some(Out::Event { kind, .. }) => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn selector_changes_become_added_and_deleted() {
        let filter = Filter {
            labels: Some(api::LabelSelector::parse("app=a").unwrap()),
            ..Default::default()
        };
        let a = json!({"metadata": {"labels": {"app": "a"}}});
        let b = json!({"metadata": {"labels": {"app": "b"}}});
        assert_eq!(
            kind(transform(
                ev(EventType::Modified, b.clone(), Some(a.clone())),
                &filter
            )),
            Some("DELETED")
        );
        assert_eq!(
            kind(transform(
                ev(EventType::Modified, a.clone(), Some(b.clone())),
                &filter
            )),
            Some("ADDED")
        );
        assert_eq!(
            kind(transform(
                ev(EventType::Modified, a.clone(), Some(a.clone())),
                &filter
            )),
            Some("MODIFIED")
        );
        assert_eq!(
            kind(transform(
                ev(EventType::Modified, b.clone(), Some(b)),
                &filter
            )),
            None
        );
        assert_eq!(
            kind(transform(ev(EventType::Deleted, a, None), &filter)),
            Some("DELETED")
        );
    }

    #[test]
    fn a_namespaced_watcher_hears_of_its_namespace_only() {
        let filter = Filter {
            namespace: Some("a".into()),
            ..Default::default()
        };
        let in_ns = |ns: &str| {
            let object = json!({"metadata": {"namespace": ns, "name": "x"}});
            Arc::new(Event::new(EventType::Added, 5, Arc::new(object), None))
        };
        assert_eq!(in_ns("a").namespace, "a");
        assert_eq!(kind(transform(in_ns("a"), &filter)), Some("ADDED"));
        assert_eq!(kind(transform(in_ns("b"), &filter)), None);
        assert_eq!(kind(transform(in_ns(""), &filter)), None);
        let everywhere = Filter::default();
        assert_eq!(kind(transform(in_ns("b"), &everywhere)), Some("ADDED"));
    }
}
