//! Events (`core/v1`) about objects, as `kubectl describe` and `kubectl get events` show
//! them. Like client-go's broadcaster, recording never blocks the caller: events go
//! through a bounded queue to a background writer, and are dropped (with a log line)
//! when the queue is full — losing an Event is better than stalling a control loop.
//! client-go's spam filter applies too: per object, a burst of 25 events, then one per
//! five minutes (a 5000-pod ReplicaSet does not write 5000 events about itself).

use crate::conn::Client;
use crate::typed::{Api, Object};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use std::sync::Arc;

const QUEUE: usize = 1000;
/// Per-object event budget (client-go: burst 25, refilled at 1 per 300 s).
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL_PER_SEC: f64 = 1.0 / 300.0;
/// Objects whose budgets are remembered at most.
const SPAM_OBJECTS: usize = 4096;
/// Event writes in flight at once.
const WRITERS: usize = 8;

#[derive(Clone)]
pub struct Recorder {
    tx: tokio::sync::mpsc::Sender<Event>,
    component: Arc<str>,
    instance: Arc<str>,
    spam: Arc<SpamFilter>,
}

/// Per-object token buckets (client-go's `EventSourceObjectSpamFilter`).
#[derive(Default)]
struct SpamFilter {
    budgets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl SpamFilter {
    /// Takes one event from the object's budget; false when it is spent.
    fn allow(&self, key: &str, now: std::time::Instant) -> bool {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if budgets.len() >= SPAM_OBJECTS && !budgets.contains_key(key) {
            budgets.clear();
        }
        let b = budgets.entry(key.to_string()).or_insert((SPAM_BURST, now));
        b.0 = (b.0 + now.saturating_duration_since(b.1).as_secs_f64() * SPAM_REFILL_PER_SEC)
            .min(SPAM_BURST);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A reference to `obj` for `involvedObject`.
pub fn reference<K: Object>(obj: &K) -> ObjectReference {
    let m = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.into()),
        kind: Some(K::KIND.into()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

fn now() -> Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl Recorder {
    /// Starts the writer (needs a Tokio runtime). `component` is `source.component`
    /// ("default-scheduler", "replicaset-controller", …).
    pub fn new(client: Client, component: &str) -> Recorder {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(WRITERS));
            while let Some(ev) = rx.recv().await {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                let api: Api<Event> = Api::namespaced(
                    client.clone(),
                    ev.metadata.namespace.as_deref().unwrap_or("default"),
                );
                tokio::spawn(async move {
                    if let Err(e) = api.create(&ev).await {
                        tracing::debug!(reason = ?ev.reason, error = %e, "writing an event");
                    }
                    drop(permit);
                });
            }
        });
        Recorder {
            tx,
            component: component.into(),
            instance: crate::leader::default_identity().into(),
            spam: Arc::default(),
        }
    }

    fn allowed(&self, object: &ObjectReference) -> bool {
        let key = format!(
            "{}/{}/{}/{}",
            object.kind.as_deref().unwrap_or_default(),
            object.namespace.as_deref().unwrap_or_default(),
            object.name.as_deref().unwrap_or_default(),
            object.uid.as_deref().unwrap_or_default()
        );
        self.spam.allow(&key, std::time::Instant::now())
    }

    /// Records an event (`type_` is "Normal" or "Warning") about `obj`.
    pub fn record<K: Object>(&self, obj: &K, type_: &str, reason: &str, message: &str) {
        let r = reference(obj);
        if !self.allowed(&r) {
            tracing::debug!(
                reason,
                "event budget of the object spent; dropping the event"
            );
            return;
        }
        let namespace = r
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{stamp:x}",
                    r.name.as_deref().unwrap_or("object")
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: r,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            first_timestamp: Some(now()),
            last_timestamp: Some(now()),
            count: Some(1),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.instance.to_string()),
            ..Default::default()
        };
        if self.tx.try_send(ev).is_err() {
            tracing::warn!(reason, "event queue full; dropping the event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let f = SpamFilter::default();
        let t = Instant::now();
        assert_eq!((0..30).filter(|_| f.allow("rs/a", t)).count(), 25);
        assert!(f.allow("rs/b", t), "other objects have their own budget");
        assert!(!f.allow("rs/a", t + Duration::from_secs(100)));
        assert!(f.allow("rs/a", t + Duration::from_secs(301)));
    }
}
