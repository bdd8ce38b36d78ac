//! Revisions and the byte layout of the sled keys that hold them.
//!
//! Everything the MVCC store persists lives in ONE sled tree, so an applied raft entry is
//! written with one atomic `apply_batch`. Keys are prefixed by one byte:
//!
//! | key                                   | value                                        |
//! |---------------------------------------|----------------------------------------------|
//! | `b'r'` main:i64 BE, sub:i64 BE (17 B) | kind:u8 (0 put, 1 tombstone) + `mvccpb.KeyValue` protobuf |
//! | `b'l'` lease id:i64 BE (9 B)          | granted TTL seconds: i64 BE                  |
//! | `b'm'` name                           | meta: `current_rev`, `compact_rev`, `applied_index` (8 B BE each) |
//!
//! Big-endian encodings sort like the numbers they hold, so a prefix scan over `b'r'`
//! walks history in revision order (how the key index is rebuilt at open).

pub const REV_PREFIX: u8 = b'r';
pub const LEASE_PREFIX: u8 = b'l';
pub const META_PREFIX: u8 = b'm';

pub const META_CURRENT_REV: &[u8] = b"mcurrent_rev";
pub const META_COMPACT_REV: &[u8] = b"mcompact_rev";
pub const META_APPLIED_INDEX: &[u8] = b"mapplied_index";

pub const KIND_PUT: u8 = 0;
pub const KIND_TOMBSTONE: u8 = 1;

/// A point in history: `main` is the store revision (one per write transaction), `sub`
/// orders the changes inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    pub fn to_key(self) -> [u8; 17] {
        let mut k = [0u8; 17];
        k[0] = REV_PREFIX;
        k[1..9].copy_from_slice(&self.main.to_be_bytes());
        k[9..17].copy_from_slice(&self.sub.to_be_bytes());
        k
    }

    pub fn from_key(k: &[u8]) -> Option<Self> {
        if k.len() != 17 || k[0] != REV_PREFIX {
            return None;
        }
        Some(Revision {
            main: i64::from_be_bytes(k[1..9].try_into().ok()?),
            sub: i64::from_be_bytes(k[9..17].try_into().ok()?),
        })
    }
}

pub fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LEASE_PREFIX;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn lease_id_from_key(k: &[u8]) -> Option<i64> {
    (k.len() == 9 && k[0] == LEASE_PREFIX)
        .then(|| i64::from_be_bytes(k[1..].try_into().unwrap_or_default()))
}

pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn decode_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_revisions() {
        let a = Revision::new(2, 0).to_key();
        let b = Revision::new(2, 1).to_key();
        let c = Revision::new(10, 0).to_key();
        assert!(a < b && b < c);
        assert_eq!(Revision::from_key(&c), Some(Revision::new(10, 0)));
        assert_eq!(Revision::from_key(b"r1"), None);
        assert_eq!(lease_id_from_key(&lease_key(77)), Some(77));
    }
}
