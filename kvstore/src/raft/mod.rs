//! Raft replication with raft-rs: one task owns the `RawNode`; proposals are batched so
//! many share one sled flush (group commit); linearizable reads go through ReadIndex.
//!
//! The contract with the state machine above it is [`StateMachine`].

/// What raft replicates into: the MVCC store implements it.
///
/// Raft and the state machine share one `sled::Db`, so the single flush per raft
/// `Ready` covers both the log and what was applied.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one committed normal entry. `data` is exactly what was proposed. Must be
    /// deterministic: every member applies the same entries in the same order and must
    /// reach the same state. Returns the bytes handed back to the proposer (on the
    /// member that proposed it). Writes go to sled without flushing; the raft loop
    /// flushes before anything is acknowledged.
    fn apply(&self, index: u64, data: &[u8]) -> Vec<u8>;

    /// The index of the last entry applied (persisted with the state, so a restart
    /// resumes after it).
    fn applied_index(&self) -> u64;

    /// The whole state, for a raft snapshot sent to a member that fell behind.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a snapshot taken at `index`.
    fn restore(&self, index: u64, data: &[u8]) -> anyhow::Result<()>;
}
