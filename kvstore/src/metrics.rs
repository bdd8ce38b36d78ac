//! The kvstore's Prometheus metrics, named after etcd's where etcd has one.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    pub proposals_committed: Counter,
    pub proposals_applied: Counter,
    pub proposals_failed: Counter,
    pub proposals_pending: Gauge,
    pub leader_changes: Counter,
    pub has_leader: Gauge,
    pub fsync_seconds: Histogram,
    pub db_size_bytes: Gauge,
    pub watchers: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them (prefix `etcd_`, as etcd names them).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            proposals_committed: Counter::default(),
            proposals_applied: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_pending: Gauge::default(),
            leader_changes: Counter::default(),
            has_leader: Gauge::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            db_size_bytes: Gauge::default(),
            watchers: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("etcd");
        r.register(
            "server_proposals_committed",
            "Entries with data committed",
            m.proposals_committed.clone(),
        );
        r.register(
            "server_proposals_applied",
            "Entries applied",
            m.proposals_applied.clone(),
        );
        r.register(
            "server_proposals_failed",
            "Proposals that failed or timed out",
            m.proposals_failed.clone(),
        );
        r.register(
            "server_proposals_pending",
            "Proposals waiting to be applied",
            m.proposals_pending.clone(),
        );
        r.register(
            "server_leader_changes_seen",
            "Leader changes seen",
            m.leader_changes.clone(),
        );
        r.register(
            "server_has_leader",
            "1 if this member knows a leader",
            m.has_leader.clone(),
        );
        r.register(
            "disk_wal_fsync_duration_seconds",
            "Duration of raft WAL writes with fdatasync",
            m.fsync_seconds.clone(),
        );
        r.register(
            "mvcc_db_total_size_in_bytes",
            "Size of the database on disk",
            m.db_size_bytes.clone(),
        );
        r.register(
            "debugging_mvcc_watcher_total",
            "Active watchers",
            m.watchers.clone(),
        );
        m
    }
}
