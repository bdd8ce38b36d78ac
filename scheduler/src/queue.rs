//! The scheduling queue: `active` (a heap ordered by PrioritySort: higher priority first,
//! then the earlier arrival), `backoff` (pods waiting out 1 s doubling to 10 s after a
//! failed attempt) and `unschedulable` (pods no node fits, parked until a cluster event
//! one of their rejecting plugins cares about — or 5 minutes pass).

use crate::framework::PodInfo;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// Cluster changes that may make parked pods schedulable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    AssignedPodAdd,
    AssignedPodDelete,
}

impl ClusterEvent {
    /// Whether a pod rejected by `plugin` may fit after this event.
    fn helps(self, plugin: &str) -> bool {
        match self {
            ClusterEvent::NodeAdd | ClusterEvent::NodeUpdate => true,
            ClusterEvent::AssignedPodDelete => matches!(
                plugin,
                "NodeResourcesFit"
                    | "NodePorts"
                    | "InterPodAffinity"
                    | "PodTopologySpread"
                    | "DefaultPreemption"
            ),
            ClusterEvent::AssignedPodAdd => {
                matches!(plugin, "InterPodAffinity" | "PodTopologySpread")
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    pub attempts: u32,
    /// When the pod first entered the queue (for the end-to-end latency metric).
    pub first_seen: Instant,
    /// When it entered the active queue this time (orders equal priorities).
    enqueued: Instant,
    backoff_until: Instant,
    rejected_by: Vec<&'static str>,
    parked_at: Instant,
    /// The queue's event counter when this attempt started.
    pub cycle: u64,
}

struct Active(QueuedPod);

impl PartialEq for Active {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Active {}
impl PartialOrd for Active {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Active {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0
            .info
            .priority
            .cmp(&o.0.info.priority)
            .then_with(|| o.0.enqueued.cmp(&self.0.enqueued))
    }
}

#[derive(Default)]
struct Inner {
    active: BinaryHeap<Active>,
    /// Keys in `active`, with a generation so stale heap entries are skipped.
    active_keys: HashMap<String, u64>,
    backoff: HashMap<String, QueuedPod>,
    unschedulable: HashMap<String, QueuedPod>,
    /// Keys popped and being scheduled.
    in_flight: HashSet<String>,
    /// Bumped by every cluster event; an attempt that fails after one moved pods goes
    /// to backoff instead of parking (the event may have been the one it needed).
    events: u64,
    generation: u64,
    closed: bool,
}

#[derive(Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

/// Queue lengths for the pending_pods metric.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
}

fn backoff_for(attempts: u32) -> Duration {
    INITIAL_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
        .min(MAX_BACKOFF)
}

impl SchedulingQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_active(g: &mut Inner, mut qp: QueuedPod) {
        g.generation += 1;
        qp.enqueued = Instant::now();
        g.active_keys.insert(qp.info.key.clone(), g.generation);
        qp.cycle = g.generation;
        g.active.push(Active(qp));
    }

    /// A new pending pod, or a new version of one already queued.
    pub fn add(&self, info: Arc<PodInfo>) {
        self.update(info, true)
    }

    /// A new version of a pending pod. Only a change of more than its status
    /// (`changed`) takes a parked pod out of the unschedulable queue: the scheduler's own
    /// status updates must not make it retry in a loop.
    pub fn update(&self, info: Arc<PodInfo>, changed: bool) {
        let mut g = self.lock();
        let key = info.key.clone();
        if let Some(qp) = g.backoff.get_mut(&key) {
            qp.info = info;
            return;
        }
        if !changed {
            if let Some(qp) = g.unschedulable.get_mut(&key) {
                qp.info = info;
                return;
            }
        }
        if let Some(mut qp) = g.unschedulable.remove(&key) {
            // Its spec may have changed: give it another try.
            qp.info = info;
            Self::push_active(&mut g, qp);
        } else if g.active_keys.contains_key(&key) {
            // Replace the entry: the old heap element becomes stale.
            let old = g
                .active
                .iter()
                .find(|a| a.0.info.key == key && g.active_keys.get(&key) == Some(&a.0.cycle))
                .map(|a| a.0.clone());
            let mut qp = old.unwrap_or_else(|| Self::fresh(info.clone()));
            qp.info = info;
            Self::push_active(&mut g, qp);
        } else if g.in_flight.contains(&key) {
            return;
        } else {
            Self::push_active(&mut g, Self::fresh(info));
        }
        drop(g);
        self.notify.notify_one();
    }

    fn fresh(info: Arc<PodInfo>) -> QueuedPod {
        let now = Instant::now();
        QueuedPod {
            info,
            attempts: 0,
            first_seen: now,
            enqueued: now,
            backoff_until: now,
            rejected_by: Vec::new(),
            parked_at: now,
            cycle: 0,
        }
    }

    /// The pod is gone or bound by someone else.
    pub fn delete(&self, key: &str) {
        let mut g = self.lock();
        g.active_keys.remove(key);
        g.backoff.remove(key);
        g.unschedulable.remove(key);
    }

    /// The next pod to schedule (highest priority first), waiting for one. `None` once
    /// the queue is closed.
    pub async fn pop(&self) -> Option<QueuedPod> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake = {
                let mut g = self.lock();
                if g.closed {
                    return None;
                }
                let now = Instant::now();
                let ready: Vec<String> = g
                    .backoff
                    .iter()
                    .filter(|(_, q)| q.backoff_until <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in ready {
                    if let Some(qp) = g.backoff.remove(&k) {
                        Self::push_active(&mut g, qp);
                    }
                }
                let stale: Vec<String> = g
                    .unschedulable
                    .iter()
                    .filter(|(_, q)| now.duration_since(q.parked_at) >= MAX_UNSCHEDULABLE)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    if let Some(qp) = g.unschedulable.remove(&k) {
                        Self::push_active(&mut g, qp);
                    }
                }
                while let Some(Active(mut qp)) = g.active.pop() {
                    if g.active_keys.get(&qp.info.key) != Some(&qp.cycle) {
                        continue; // replaced or deleted
                    }
                    g.active_keys.remove(&qp.info.key);
                    g.in_flight.insert(qp.info.key.clone());
                    qp.attempts += 1;
                    qp.cycle = g.events;
                    return Some(qp);
                }
                let next_backoff = g.backoff.values().map(|q| q.backoff_until).min();
                let next_flush = g
                    .unschedulable
                    .values()
                    .map(|q| q.parked_at + MAX_UNSCHEDULABLE)
                    .min();
                next_backoff.into_iter().chain(next_flush).min()
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The attempt is over (bound, or the pod vanished).
    pub fn done(&self, key: &str) {
        self.lock().in_flight.remove(key);
    }

    /// No node fits: park the pod until an event its rejecting plugins care about (or
    /// straight to backoff if such an event already happened during the attempt).
    pub fn unschedulable(&self, mut qp: QueuedPod, rejected_by: Vec<&'static str>) {
        let mut g = self.lock();
        let key = qp.info.key.clone();
        if !g.in_flight.remove(&key) {
            return; // deleted meanwhile
        }
        let now = Instant::now();
        qp.backoff_until = now + backoff_for(qp.attempts);
        qp.parked_at = now;
        qp.rejected_by = rejected_by;
        if g.events != qp.cycle {
            g.backoff.insert(key, qp);
        } else {
            g.unschedulable.insert(key, qp);
        }
        drop(g);
        self.notify.notify_one();
    }

    /// An error (binding failed, API unreachable): retry after the backoff.
    pub fn retry(&self, mut qp: QueuedPod) {
        let mut g = self.lock();
        let key = qp.info.key.clone();
        g.in_flight.remove(&key);
        qp.backoff_until = Instant::now() + backoff_for(qp.attempts);
        g.backoff.insert(key, qp);
        drop(g);
        self.notify.notify_one();
    }

    /// A cluster event: parked pods it may help move on (to backoff while their backoff
    /// lasts, else to active).
    pub fn on_event(&self, ev: ClusterEvent) {
        let mut g = self.lock();
        g.events += 1;
        let keys: Vec<String> = g
            .unschedulable
            .iter()
            .filter(|(_, q)| q.rejected_by.is_empty() || q.rejected_by.iter().any(|p| ev.helps(p)))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        let now = Instant::now();
        for k in keys {
            if let Some(qp) = g.unschedulable.remove(&k) {
                if qp.backoff_until > now {
                    g.backoff.insert(k, qp);
                } else {
                    Self::push_active(&mut g, qp);
                }
            }
        }
        drop(g);
        self.notify.notify_one();
    }

    pub fn lengths(&self) -> Lengths {
        let g = self.lock();
        Lengths {
            active: g.active_keys.len(),
            backoff: g.backoff.len(),
            unschedulable: g.unschedulable.len(),
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "q"}, "spec": {"priority": priority, "containers": []}})).unwrap(),
        )))
    }

    #[tokio::test]
    async fn priority_then_arrival_order() {
        let q = SchedulingQueue::default();
        q.add(pod("low", 0));
        q.add(pod("high", 10));
        q.add(pod("low2", 0));
        q.add(pod("low", 0)); // an update keeps one entry
        let order: Vec<String> = [q.pop().await, q.pop().await, q.pop().await]
            .into_iter()
            .map(|p| p.unwrap().info.key.clone())
            .collect();
        assert_eq!(order, vec!["q/high", "q/low2", "q/low"]);
        assert_eq!(q.lengths(), Lengths::default());
    }

    #[tokio::test]
    async fn parked_pods_move_on_relevant_events_only() {
        let q = SchedulingQueue::default();
        q.add(pod("big", 0));
        let qp = q.pop().await.unwrap();
        q.unschedulable(qp, vec!["NodeResourcesFit"]);
        assert_eq!(q.lengths().unschedulable, 1);
        q.on_event(ClusterEvent::AssignedPodAdd); // does not free resources
        assert_eq!(q.lengths().unschedulable, 1);
        q.on_event(ClusterEvent::AssignedPodDelete);
        // Still backing off (1 s after the first attempt), then active.
        assert_eq!(q.lengths().backoff, 1);
        let again = tokio::time::timeout(Duration::from_secs(5), q.pop())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.attempts, 2);
    }

    #[tokio::test]
    async fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
        let q = SchedulingQueue::default();
        q.add(pod("p", 0));
        let qp = q.pop().await.unwrap();
        q.on_event(ClusterEvent::NodeAdd);
        q.unschedulable(qp, vec!["TaintToleration"]);
        assert_eq!(q.lengths().backoff, 1);
        q.delete("q/p");
        assert_eq!(q.lengths(), Lengths::default());
    }
}
