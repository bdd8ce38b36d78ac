//! What every controller shares: the worker loop over a work queue (retries rate
//! limited, a key never processed by two workers at once), expectations (so a slow watch
//! never makes a controller act twice), owner references and event helpers.

use client::informer::Event;
use client::WorkQueue;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a sync asks for afterwards.
pub type Requeue = Option<Duration>;

/// Runs `workers` workers taking keys from `queue` until it is shut down. A sync error
/// retries the key with the queue's rate limit; a success forgets its failures and, if
/// asked, looks again after the given delay.
pub fn run_workers<F, Fut>(name: &'static str, queue: WorkQueue<String>, workers: usize, sync: F)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Requeue>> + Send + 'static,
{
    for _ in 0..workers.max(1) {
        let (queue, sync) = (queue.clone(), sync.clone());
        tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(key.clone()).await {
                    Ok(again) => {
                        queue.forget(&key);
                        if let Some(d) = again {
                            queue.add_after(key.clone(), d);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller = name, %key, error = %format!("{e:#}"), "sync failed; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
}

/// `namespace/name` of an object's metadata.
pub fn key(m: &ObjectMeta) -> String {
    match m.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        _ => m.name.clone().unwrap_or_default(),
    }
}

/// Splits `namespace/name`.
pub fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The controller owner reference, if any.
pub fn controller_of(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// An owner reference making `owner` the controller of a dependent.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Enqueues the key of the object an event is about (for the controller's own kind).
pub fn enqueue_own<K: client::Object>(
    queue: &WorkQueue<String>,
) -> impl Fn(Event<'_, K>) + Send + Sync + 'static {
    let q = queue.clone();
    move |ev| {
        let o = match ev {
            Event::Add(o) | Event::Update(_, o) | Event::Delete(o) => o,
        };
        q.add(key(o.metadata()));
    }
}

/// Creations and deletions a controller has asked for but not yet seen in its informer,
/// per controller key (Kubernetes' `ControllerExpectations`). While some are pending the
/// controller does not act on counts, which would otherwise be stale. Expectations older
/// than five minutes are considered met (a watch event can be lost to a relist).
#[derive(Default, Clone)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<String, Pending>>>,
}

/// Creations and deletions still to be seen, and since when.
type Pending = (i64, i64, Instant);

const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some((adds, dels, at)) => (*adds <= 0 && *dels <= 0) || at.elapsed() > EXPECTATIONS_TTL,
        }
    }

    pub fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.lock()
            .insert(key.to_string(), (adds, dels, Instant::now()));
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.0 -= 1;
        }
    }

    pub fn deletion_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.1 -= 1;
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The current time as Kubernetes' `Time`.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(unix_now())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Seconds since a `Time` (negative if in the future).
pub fn age_secs(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    unix_now() - t.0.as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_block_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("a"));
        e.expect("a", 2, 0);
        assert!(!e.satisfied("a"));
        e.creation_observed("a");
        assert!(!e.satisfied("a"));
        e.creation_observed("a");
        assert!(e.satisfied("a"));
        e.expect("a", 0, 1);
        e.deletion_observed("a");
        assert!(e.satisfied("a"));
    }
}
