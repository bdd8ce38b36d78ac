//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), run by
//! the leader as etcd's compactor is.
//!
//! - periodic: keeps at least the retention period of history. The current revision is
//!   sampled every tenth of the period; each sample older than the period is a point
//!   the history may be compacted to, and the newest such point is used.
//! - revision: every five minutes, compacts to the current revision minus the
//!   retention (etcd's interval for this mode).

use super::Server;
use proto::etcd::etcdserverpb::CompactionRequest;
use proto::peer::kvstorepb::internal_request::Request as Q;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    Periodic(Duration),
    Revision(i64),
}

/// Reads the two flags as etcd 3.4 does: "0" disables; in periodic mode a plain number
/// is hours, otherwise a duration (`30m`, `90s`); in revision mode a revision count.
pub fn parse(mode: &str, retention: &str) -> Result<Option<Policy>, String> {
    let flag = "--auto-compaction-retention";
    if retention.trim() == "0" || retention.is_empty() {
        return Ok(None);
    }
    match mode {
        "periodic" => {
            let period = match retention.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours * 3600),
                Err(_) => crate::parse_duration(retention).map_err(|e| format!("{flag}: {e}"))?,
            };
            Ok(Some(Policy::Periodic(period)))
        }
        "revision" => match retention.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(Policy::Revision(n))),
            _ => Err(format!(
                "{flag}: {retention:?} is not a positive revision count (revision mode)"
            )),
        },
        other => Err(format!(
            "--auto-compaction-mode: {other:?} must be periodic or revision"
        )),
    }
}

/// Where `samples` (oldest first, (when, revision)) allow compacting to at `now`: the
/// newest sample at least `period` old. Older samples are dropped.
fn periodic_target(
    samples: &mut VecDeque<(Instant, i64)>,
    now: Instant,
    period: Duration,
) -> Option<i64> {
    let mut target = None;
    while let Some(&(at, rev)) = samples.front() {
        if now.duration_since(at) < period {
            break;
        }
        target = Some(rev);
        samples.pop_front();
    }
    target
}

pub async fn run(server: Arc<Server>, policy: Policy) {
    let me = server.raft.status().member_id;
    let every = match policy {
        Policy::Periodic(p) => (p / 10).max(Duration::from_millis(100)),
        Policy::Revision(_) => Duration::from_secs(300),
    };
    let mut tick = tokio::time::interval(every);
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let current = server.store.current_revision();
        let target = match policy {
            Policy::Periodic(period) => {
                samples.push_back((now, current));
                periodic_target(&mut samples, now, period)
            }
            Policy::Revision(keep) => Some(current - keep),
        };
        let Some(target) = target else { continue };
        if server.raft.status().leader_id != me || target <= server.store.compact_revision() {
            continue;
        }
        let req = CompactionRequest {
            revision: target,
            physical: false,
        };
        match server.propose(Q::Compaction(req)).await {
            Ok(_) => tracing::info!(revision = target, "auto-compaction: compacted"),
            // Someone (a client, a previous leader) compacted further meanwhile.
            Err(e) if e.message().contains("compacted") => {}
            Err(e) => tracing::warn!(revision = target, "auto-compaction failed: {}", e.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_etcd_reads_them() {
        assert_eq!(parse("periodic", "0"), Ok(None));
        assert_eq!(
            parse("periodic", "1"),
            Ok(Some(Policy::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            parse("periodic", "30m"),
            Ok(Some(Policy::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(parse("revision", "1000"), Ok(Some(Policy::Revision(1000))));
        assert!(parse("revision", "1h")
            .unwrap_err()
            .contains("--auto-compaction-retention"));
        assert!(parse("daily", "1")
            .unwrap_err()
            .contains("--auto-compaction-mode"));
        assert!(parse("periodic", "soon")
            .unwrap_err()
            .contains("--auto-compaction-retention"));
    }

    #[test]
    fn periodic_keeps_at_least_the_period() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut samples: VecDeque<_> = (0..5)
            .map(|i| (start + Duration::from_secs(i * 4), 10 + i as i64))
            .collect();
        // At 9s nothing is 10s old yet.
        assert_eq!(
            periodic_target(&mut samples, start + Duration::from_secs(9), period),
            None
        );
        // At 14s the samples of 0s and 4s are old enough: the newer one wins.
        assert_eq!(
            periodic_target(&mut samples, start + Duration::from_secs(14), period),
            Some(11)
        );
        assert_eq!(samples.front().map(|s| s.1), Some(12));
    }
}
