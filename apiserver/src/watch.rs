//! One watcher's stream, shared by REST and gRPC: the starting state (synthetic ADDED
//! events or a replay from the cache's window), then live events with selectors applied
//! (an object that stops matching becomes DELETED for this watcher), bookmarks, and the
//! timeout.

use crate::cache::{decode, Event, EventType, Filter, Message, WatchCache};
use crate::error::ApiError;
use crate::storage::{prefix_end, Storage};
use bytes::Bytes;
use etcd_client::{EventType as EtcdEventType, WatchOptions};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How often a watcher that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

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
    /// `json` is the cache's serialization of `object` (shared by every watcher).
    Event {
        kind: &'static str,
        object: Arc<Value>,
        json: Option<Bytes>,
    },
    Bookmark(i64),
    Error(ApiError),
}

fn transform(ev: &Arc<Event>, filter: &Filter) -> Option<Out> {
    let now = filter.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches(p));
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
        object: ev.object.clone(),
        json: Some(ev.json.clone()),
    })
}

/// A watcher's events converted for its front end in the consumer's own task (no
/// extra task or channel per watcher); `gauge` counts the stream while it lives.
pub fn stream<T>(
    rx: mpsc::Receiver<Out>,
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
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        move |out| {
            let _ = &counted;
            convert(out)
        },
    )
}

/// Starts the watcher; the stream ends when the receiver is dropped, on timeout, or when
/// the watcher cannot keep up (it then resumes from its last revision).
///
/// A revision older than the cache's window (typically: the client resumes after this
/// apiserver restarted) is served from storage's own history instead, so the client
/// still gets every event exactly once; only a compacted revision is 410 Expired.
pub fn start(cache: Arc<WatchCache>, storage: Storage, params: Params) -> mpsc::Receiver<Out> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        cache.wait_synced().await;
        let sub = match cache.subscribe(&params.prefix, &params.filter, params.from) {
            Ok(s) => s,
            Err(e) if e.code == 410 => {
                if let Some(from) = params.from {
                    from_storage(storage, params, from, tx).await;
                }
                return;
            }
            Err(e) => {
                let _ = tx.send(Out::Error(e)).await;
                return;
            }
        };
        let mut last = sub.revision;
        for o in sub.initial {
            let out = Out::Event {
                kind: "ADDED",
                object: o,
                json: None,
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
        for ev in sub.replay {
            last = last.max(ev.revision);
            if let Some(out) = transform(&ev, &params.filter) {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        }
        let mut live = sub.live;
        let deadline = tokio::time::sleep(params.timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if params.bookmarks => {
                    if tx.send(Out::Bookmark(last)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                msg = live.recv() => match msg {
                    Ok(Message::Event(ev)) => {
                        if ev.revision <= sub.revision {
                            continue; // in the starting state, or before the requested revision
                        }
                        last = last.max(ev.revision);
                        if let Some(out) = transform(&ev, &params.filter) {
                            if tx.send(out).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Message::Reset) | Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!(missed = n, "watcher fell behind; closing it so it resumes");
                        return;
                    }
                },
            }
        }
    });
    rx
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
                    if let Some(out) = transform(&Arc::new(event), &params.filter) {
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
                &ev(EventType::Modified, b.clone(), Some(a.clone())),
                &filter
            )),
            Some("DELETED")
        );
        assert_eq!(
            kind(transform(
                &ev(EventType::Modified, a.clone(), Some(b.clone())),
                &filter
            )),
            Some("ADDED")
        );
        assert_eq!(
            kind(transform(
                &ev(EventType::Modified, a.clone(), Some(a.clone())),
                &filter
            )),
            Some("MODIFIED")
        );
        assert_eq!(
            kind(transform(
                &ev(EventType::Modified, b.clone(), Some(b)),
                &filter
            )),
            None
        );
        assert_eq!(
            kind(transform(&ev(EventType::Deleted, a, None), &filter)),
            Some("DELETED")
        );
    }
}
