//! The scheduler's Prometheus metrics, named as kube-scheduler's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// scheduler_schedule_attempts_total{result="scheduled"|"unschedulable"|"error"}
    pub attempts: Family<ResultLabel, Counter>,
    /// scheduler_scheduling_attempt_duration_seconds: one cycle, filter to assume.
    pub attempt_duration: Histogram,
    /// scheduler_pod_scheduling_sli_duration_seconds: first queued to bound.
    pub e2e_duration: Histogram,
    /// scheduler_pending_pods{queue="active"|"backoff"|"unschedulable"}
    pub pending: Family<QueueLabel, Gauge>,
    pub preemption_attempts: Counter,
    pub preemption_victims: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            attempts: Family::default(),
            attempt_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            e2e_duration: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            pending: Family::default(),
            preemption_attempts: Counter::default(),
            preemption_victims: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("scheduler");
        r.register(
            "schedule_attempts",
            "Scheduling attempts by result",
            m.attempts.clone(),
        );
        r.register(
            "scheduling_attempt_duration_seconds",
            "One scheduling attempt: filtering, scoring and assuming",
            m.attempt_duration.clone(),
        );
        r.register(
            "pod_scheduling_sli_duration_seconds",
            "From a pod entering the queue to its binding",
            m.e2e_duration.clone(),
        );
        r.register("pending_pods", "Pending pods by queue", m.pending.clone());
        r.register(
            "preemption_attempts",
            "Preemption attempts",
            m.preemption_attempts.clone(),
        );
        r.register(
            "preemption_victims",
            "Pods evicted by preemption",
            m.preemption_victims.clone(),
        );
        m
    }

    pub fn attempt(&self, result: &str, profile: &str) {
        self.attempts
            .get_or_create(&ResultLabel {
                result: result.into(),
                profile: profile.into(),
            })
            .inc();
    }

    pub fn set_pending(&self, l: crate::queue::Lengths) {
        for (q, n) in [
            ("active", l.active),
            ("backoff", l.backoff),
            ("unschedulable", l.unschedulable),
        ] {
            self.pending
                .get_or_create(&QueueLabel { queue: q.into() })
                .set(n as i64);
        }
    }
}
