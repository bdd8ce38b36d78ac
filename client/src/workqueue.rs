//! The work queue controllers process keys from, with client-go's guarantees: a key
//! added many times before it is handed out is processed once; a key being processed is
//! never handed to a second worker — adding it meanwhile queues it again for after
//! `done`; retries are rate limited per key (exponential backoff) and overall (a token
//! bucket), whichever asks for the longer wait.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Retry pacing; the defaults are client-go's (5 ms doubling to 1000 s per key; 10 per
/// second with bursts of 100 overall).
#[derive(Clone, Debug)]
pub struct RateLimit {
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub qps: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100.0,
        }
    }
}

struct State<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    tokens: f64,
    refilled: Instant,
    shutting_down: bool,
}

/// A de-duplicating, rate-limited queue; cloning shares it.
pub struct WorkQueue<T> {
    state: Arc<Mutex<State<T>>>,
    notify: Arc<Notify>,
    limit: Arc<RateLimit>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            notify: self.notify.clone(),
            limit: self.limit.clone(),
        }
    }
}

impl<T: Hash + Eq + Clone + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new(RateLimit::default())
    }
}

impl<T: Hash + Eq + Clone + Send + 'static> WorkQueue<T> {
    pub fn new(limit: RateLimit) -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                tokens: limit.burst,
                refilled: Instant::now(),
                shutting_down: false,
            })),
            notify: Arc::new(Notify::new()),
            limit: Arc::new(limit),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` unless it is already waiting.
    pub fn add(&self, item: T) {
        let mut s = self.lock();
        if s.shutting_down || !s.dirty.insert(item.clone()) {
            return;
        }
        if !s.processing.contains(&item) {
            s.queue.push_back(item);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `item` after `delay` (needs a Tokio runtime).
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(item);
        });
    }

    /// Queues `item` after its rate-limited delay, counting one more failure for it.
    pub fn add_rate_limited(&self, item: T) {
        let delay = self.next_delay(&item);
        self.add_after(item, delay);
    }

    fn next_delay(&self, item: &T) -> Duration {
        let mut s = self.lock();
        let n = s.failures.entry(item.clone()).or_insert(0);
        let exp = self
            .limit
            .base_delay
            .saturating_mul(2u32.saturating_pow((*n).min(31)))
            .min(self.limit.max_delay);
        *n += 1;
        let now = Instant::now();
        let elapsed = now.duration_since(s.refilled).as_secs_f64();
        s.refilled = now;
        s.tokens = (s.tokens + elapsed * self.limit.qps).min(self.limit.burst) - 1.0;
        let bucket = if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.limit.qps)
        };
        exp.max(bucket)
    }

    /// Clears `item`'s failure count (call after it was processed successfully).
    pub fn forget(&self, item: &T) {
        self.lock().failures.remove(item);
    }

    pub fn num_requeues(&self, item: &T) -> u32 {
        self.lock().failures.get(item).copied().unwrap_or(0)
    }

    /// The next item, waiting for one; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(item);
                }
                if s.shutting_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `item` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, item: &T) {
        let mut s = self.lock();
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Items waiting (not counting those being processed).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out items; waiting `get`s return `None`.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_never_hands_out_an_item_twice() {
        let q: WorkQueue<&str> = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // while processing: waits for done
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.done(&"b");
        q.shut_down();
        assert_eq!(q.get().await, None);
    }

    #[tokio::test]
    async fn waiting_workers_wake_up() {
        let q: WorkQueue<u32> = WorkQueue::default();
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        };
        q.add(7);
        assert_eq!(worker.await.unwrap(), Some(7));
    }

    #[test]
    fn backoff_doubles_per_item_and_the_bucket_limits_overall() {
        let q: WorkQueue<u32> = WorkQueue::new(RateLimit {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            qps: 1.0,
            burst: 3.0,
        });
        let d: Vec<_> = (0..3).map(|_| q.next_delay(&1)).collect();
        assert_eq!(
            d,
            vec![
                Duration::from_millis(5),
                Duration::from_millis(10),
                Duration::from_millis(20)
            ]
        );
        assert_eq!(q.num_requeues(&1), 3);
        // The bucket is empty now: the next retry of any item waits about a second.
        assert!(q.next_delay(&2) > Duration::from_millis(500));
        q.forget(&1);
        assert_eq!(q.num_requeues(&1), 0);
        let capped = WorkQueue::<u32>::new(RateLimit {
            qps: 1000.0,
            burst: 1000.0,
            ..RateLimit {
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(40),
                qps: 0.0,
                burst: 0.0,
            }
        });
        let d: Vec<_> = (0..6).map(|_| capped.next_delay(&1)).collect();
        assert_eq!(d[5], Duration::from_millis(40));
    }
}
