//! Raft replication with raft-rs: one thread owns the `RawNode`; proposals are batched so
//! many share one WAL fdatasync (group commit); linearizable reads go through ReadIndex.
//!
//! The contract with the state machine above it is [`StateMachine`]; the handle the
//! servers use is [`RaftNode`]; members talk through [`transport`].

mod durable;
mod node;
mod storage;
pub mod transport;
mod wal;

pub use node::{RaftConfig, RaftError, RaftNode, RaftStatus};
pub use raft::eraftpb::ConfChangeType;
pub use storage::{Bootstrap, Identity, LogStorage};

/// Builds a snapshot's bytes off the raft thread (see [`StateMachine::begin_snapshot`]).
pub type SnapshotJob = Box<dyn FnOnce() -> anyhow::Result<Option<Vec<u8>>> + Send>;

/// What raft replicates into: the MVCC store implements it.
///
/// The state machine writes to sled without flushing; the raft log's WAL keeps every
/// entry until a sled flush made its effects durable, and a restart applies again what
/// sled lost, so the applied index it persists may trail what was acknowledged.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies committed entries `(index, data)` in order and returns each one's answer.
    /// `data` is exactly what was proposed (empty for raft's own entries, which only
    /// advance the applied index). Must be deterministic: every
    /// member applies the same entries in the same order and must reach the same state.
    /// The answers are the bytes handed back to the proposers. Writes go to sled without flushing (the
    /// entry is already durable in the WAL); an entry at or below the persisted applied
    /// index must be skipped, as a restart delivers such entries again. An error is a storage
    /// failure: the node stops rather than diverge.
    fn apply(&self, entries: &[(u64, &[u8])]) -> anyhow::Result<Vec<Vec<u8>>>;

    /// Writes what `apply` left pending to the storage the state machine shares with the
    /// raft log's metadata (sled), without flushing. With `wait` (before every sled
    /// flush) it is all written on return; without (whenever the raft loop finds enough
    /// pending) the write may run in the background, and false means an earlier one is
    /// still running, so nothing started.
    fn persist(&self, wait: bool) -> anyhow::Result<bool>;

    /// The index of the last entry applied (persisted with the state, so a restart
    /// resumes after it).
    fn applied_index(&self) -> u64;

    /// Starts a snapshot of the whole state at the applied index, for a member that fell
    /// behind the log. Called on the raft thread, so it does only what must see the state
    /// as it is now; the job it returns builds the bytes on another thread while entries
    /// go on being applied, and answers `None` if something applied meanwhile rewrote
    /// history the job was reading (a compaction, a restore): the caller starts again.
    fn begin_snapshot(&self) -> anyhow::Result<SnapshotJob>;

    /// Replaces the whole state with a snapshot taken at `index`.
    fn restore(&self, index: u64, data: &[u8]) -> anyhow::Result<()>;
}

/// A stable member id from the cluster token, the member's name and peer URLs (FNV-1a,
/// 64 bit), so every member computes the same ids from `--initial-cluster`.
pub fn member_id(token: &str, name: &str, peer_urls: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    feed(token.as_bytes());
    feed(name.as_bytes());
    let mut urls = peer_urls.to_vec();
    urls.sort();
    for u in &urls {
        feed(u.as_bytes());
    }
    // 0 means "no node" to raft-rs.
    h.max(1)
}

/// The cluster id: derived from the sorted member ids.
pub fn cluster_id(token: &str, member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    member_id(token, "cluster", &names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_stable_and_distinct() {
        let a = super::member_id("t", "a", &["http://127.0.0.1:1".into()]);
        assert_eq!(
            a,
            super::member_id("t", "a", &["http://127.0.0.1:1".into()])
        );
        assert_ne!(
            a,
            super::member_id("t", "b", &["http://127.0.0.1:1".into()])
        );
        assert_ne!(
            a,
            super::member_id("u", "a", &["http://127.0.0.1:1".into()])
        );
        assert_eq!(
            super::cluster_id("t", &[2, 1]),
            super::cluster_id("t", &[1, 2])
        );
    }
}
