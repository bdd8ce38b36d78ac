//! The whole MVCC state as raft snapshot bytes, and `StateMachine` for the store.
//!
//! Snapshot layout: a sequence of records `key_len:u32 BE, key, value_len:u32 BE, value`
//! covering every record of the `mvcc` tree (see `revision` for what they are).

use super::revision::{Revision, REV_PREFIX};
use super::Store;
use crate::raft::{SnapshotJob, StateMachine};
use std::sync::atomic::Ordering;

impl StateMachine for Store {
    fn apply(&self, entries: &[(u64, &[u8])]) -> anyhow::Result<Vec<Vec<u8>>> {
        self.apply_entries(entries)
    }

    fn persist(&self, wait: bool) -> anyhow::Result<bool> {
        Store::persist(self, wait)
    }

    fn applied_index(&self) -> u64 {
        Store::applied_index(self)
    }

    fn begin_snapshot(&self) -> anyhow::Result<SnapshotJob> {
        // Only the raft thread applies and asks for snapshots, so nothing is applied
        // between writing what is pending and reading the state below.
        self.persist(true)?;
        let state = self.read_state();
        let rewrites = self.rewrites.load(Ordering::SeqCst);
        let last = Revision::new(state.current_rev, i64::MAX).to_key();
        // Lease and meta records change in place: copied now. A revision record never
        // changes once written, and only a compaction or a restore removes one, which the
        // job notices; those written after `last` are left out.
        let mut out = Vec::new();
        for item in self
            .tree
            .range(..[REV_PREFIX])
            .chain(self.tree.range([REV_PREFIX + 1]..))
        {
            let (k, v) = item?;
            push_record(&mut out, &k, &v);
        }
        drop(state);
        let (tree, counter) = (self.tree.clone(), self.rewrites.clone());
        Ok(Box::new(move || {
            for item in tree.range(&[REV_PREFIX][..]..=&last[..]) {
                let (k, v) = item?;
                push_record(&mut out, &k, &v);
            }
            Ok((counter.load(Ordering::SeqCst) == rewrites).then_some(out))
        }))
    }

    fn restore(&self, _index: u64, data: &[u8]) -> anyhow::Result<()> {
        // No write of older effects may land after the snapshot's records.
        self.persist(true)?;
        self.rewrites.fetch_add(1, Ordering::SeqCst);
        let mut records = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let (k, r) = take(rest)?;
            let (v, r) = take(r)?;
            records.push((k.to_vec(), v.to_vec()));
            rest = r;
        }
        let mut batch = sled::Batch::default();
        for item in self.tree.iter() {
            batch.remove(item?.0);
        }
        for (k, v) in records {
            batch.insert(k, v);
        }
        self.tree.apply_batch(batch)?;
        self.reload()?;
        // Watchers on this member missed what the snapshot skipped over.
        let state = self.read_state();
        self.hub().resync(self, &state);
        Ok(())
    }
}

fn push_record(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v);
}

fn take(b: &[u8]) -> anyhow::Result<(&[u8], &[u8])> {
    anyhow::ensure!(b.len() >= 4, "truncated snapshot");
    let n = u32::from_be_bytes(b[..4].try_into()?) as usize;
    anyhow::ensure!(b.len() >= 4 + n, "truncated snapshot");
    Ok((&b[4..4 + n], &b[4 + n..]))
}
