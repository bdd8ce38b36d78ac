//! The in-memory key index: for every key, the revisions at which it changed and whether
//! each change was a delete (tombstone). Rebuilt from sled at open; the values themselves
//! stay in sled.

use super::revision::Revision;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// Ascending; `true` marks a tombstone.
    pub revs: Vec<(Revision, bool)>,
}

impl KeyIndex {
    /// The revision holding the key's value as of store revision `at`, or None when it did
    /// not exist then (never written, or deleted).
    pub fn get(&self, at: i64) -> Option<Revision> {
        let pos = self.revs.partition_point(|(r, _)| r.main <= at);
        match pos.checked_sub(1).map(|i| self.revs[i]) {
            Some((rev, false)) => Some(rev),
            _ => None,
        }
    }

    pub fn push(&mut self, rev: Revision, tombstone: bool) {
        self.revs.push((rev, tombstone));
    }

    /// Drops history older than `at`: every revision below it except the one still
    /// visible at `at` (when that is a live value). Returns the revisions removed.
    pub fn compact(&mut self, at: i64) -> Vec<Revision> {
        let pos = self.revs.partition_point(|(r, _)| r.main <= at);
        // Keep the newest revision <= at if it is a live value.
        let keep_from = match pos.checked_sub(1) {
            Some(i) if !self.revs[i].1 => i,
            _ => pos,
        };
        self.revs.drain(..keep_from).map(|(r, _)| r).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(revs: &[(i64, bool)]) -> KeyIndex {
        KeyIndex {
            revs: revs
                .iter()
                .map(|&(m, t)| (Revision::new(m, 0), t))
                .collect(),
        }
    }

    #[test]
    fn visibility() {
        let k = idx(&[(2, false), (4, false), (6, true), (8, false)]);
        assert_eq!(k.get(1), None);
        assert_eq!(k.get(3), Some(Revision::new(2, 0)));
        assert_eq!(k.get(5), Some(Revision::new(4, 0)));
        assert_eq!(k.get(6), None);
        assert_eq!(k.get(7), None);
        assert_eq!(k.get(100), Some(Revision::new(8, 0)));
    }

    #[test]
    fn compaction_keeps_the_visible_value() {
        let mut k = idx(&[(2, false), (4, false), (6, true), (8, false)]);
        assert_eq!(k.compact(5), vec![Revision::new(2, 0)]);
        assert_eq!(k.get(5), Some(Revision::new(4, 0)));
        // A tombstone at or below the compaction point goes, with everything before it.
        assert_eq!(k.compact(7), vec![Revision::new(4, 0), Revision::new(6, 0)]);
        assert_eq!(k.revs.len(), 1);
        let mut gone = idx(&[(2, false), (3, true)]);
        gone.compact(3);
        assert!(gone.is_empty());
    }
}
