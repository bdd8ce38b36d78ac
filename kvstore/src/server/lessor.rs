//! Lease expiry. The granted TTL is replicated state; *when* a lease expires is not: the
//! leader keeps a deadline per lease, refreshed by keep-alives, and proposes a revoke
//! when one passes. A member that becomes leader restarts every deadline at a full TTL,
//! as etcd does, so a leader change never revokes a lease early.

use super::Server;
use crate::mvcc::Store;
use proto::etcd::etcdserverpb::LeaseRevokeRequest;
use proto::peer::kvstorepb::internal_request::Request as Q;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Lessor {
    deadlines: Mutex<HashMap<i64, Instant>>,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restarts every lease at its full TTL (on becoming leader, and at startup).
    pub fn reset_all(&self, store: &Store) {
        let now = Instant::now();
        let mut map = self.map();
        map.clear();
        for id in store.lease_ids() {
            if let Some(l) = store.lease(id) {
                map.insert(id, now + ttl_duration(l.ttl));
            }
        }
    }

    /// Starts or refreshes a lease's deadline.
    pub fn renew(&self, id: i64, ttl: i64) {
        self.map().insert(id, Instant::now() + ttl_duration(ttl));
    }

    pub fn remove(&self, id: i64) {
        self.map().remove(&id);
    }

    /// Seconds left, rounded up; None when this member tracks no deadline for it.
    pub fn remaining(&self, id: i64) -> Option<i64> {
        self.map().get(&id).map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            left.as_millis().div_ceil(1000) as i64
        })
    }

    fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        self.map()
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Runs until the process stops: revokes expired leases while this member leads.
pub async fn run_expiry(server: Arc<Server>) {
    let mut leader = server.raft.leader_changes();
    let me = server.raft.status().member_id;
    let mut was_leader = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let is_leader = *leader.borrow_and_update() == me;
        if is_leader && !was_leader {
            server.lessor.reset_all(&server.store);
        }
        was_leader = is_leader;
        if !is_leader {
            continue;
        }
        for id in server.lessor.expired() {
            // Forget the deadline first: a failed revoke is retried with a fresh one.
            server.lessor.renew(id, 1);
            match server
                .propose(Q::LeaseRevoke(LeaseRevokeRequest { id }))
                .await
            {
                Ok(_) => server.lessor.remove(id),
                Err(e) if e.code() == tonic::Code::NotFound => server.lessor.remove(id),
                Err(e) => tracing::warn!("revoking expired lease {id}: {e}"),
            }
        }
    }
}
