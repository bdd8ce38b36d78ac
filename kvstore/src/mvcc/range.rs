//! Range reads over the key index at a revision: the one implementation behind KV.Range,
//! ranges inside transactions, compares and watch replay.

use super::key_index::KeyIndex;
use super::revision::Revision;
use super::StoreError;
use proto::etcd::etcdserverpb::{range_request, RangeRequest, RangeResponse};
use proto::etcd::mvccpb::KeyValue;
use std::collections::BTreeMap;
use std::ops::Bound;

/// `[key, range_end)` as etcd reads it: empty `range_end` is the single key, `"\0"` is
/// every key from `key` on.
pub fn key_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    }
}

/// Whether `[key, range_end)` is a valid, non-inverted range.
pub fn valid_range(key: &[u8], range_end: &[u8]) -> bool {
    range_end.is_empty() || range_end == [0] || key < range_end
}

/// The keys of a range visible at `at`, with the revision holding each one's value.
pub fn visible<'a>(
    index: &'a BTreeMap<Vec<u8>, KeyIndex>,
    key: &'a [u8],
    range_end: &'a [u8],
    at: i64,
) -> impl Iterator<Item = (&'a Vec<u8>, Revision)> + 'a {
    let empty_range = !valid_range(key, range_end);
    let (lo, hi) = key_bounds(key, range_end);
    let iter = (!empty_range).then(|| index.range::<[u8], _>((lo, hi)));
    iter.into_iter()
        .flatten()
        .filter_map(move |(k, ki)| ki.get(at).map(|r| (k, r)))
}

/// Answers a RangeRequest at revision `at` (already checked against compaction and the
/// current revision). `read` fetches the KeyValue stored at a revision.
pub fn range(
    index: &BTreeMap<Vec<u8>, KeyIndex>,
    req: &RangeRequest,
    at: i64,
    read: &mut dyn FnMut(Revision) -> Result<KeyValue, StoreError>,
) -> Result<RangeResponse, StoreError> {
    let revs: Vec<Revision> = visible(index, &req.key, &req.range_end, at)
        .map(|(_, r)| r)
        .collect();
    let total = revs.len() as i64;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let order = range_request::SortOrder::try_from(req.sort_order).unwrap_or_default();
    let target = range_request::SortTarget::try_from(req.sort_target).unwrap_or_default();
    // Key order ascending is the index's natural order; anything else needs a sort.
    let natural = target == range_request::SortTarget::Key
        && matches!(
            order,
            range_request::SortOrder::None | range_request::SortOrder::Ascend
        );
    let sorting = !natural;

    if req.count_only && !filtered {
        return Ok(RangeResponse {
            count: total,
            ..Default::default()
        });
    }
    // Without sorting or filtering only limit+1 values need reading.
    let fetch = if !sorting && !filtered && req.limit > 0 {
        (req.limit as usize + 1).min(revs.len())
    } else {
        revs.len()
    };
    let mut kvs = Vec::with_capacity(fetch);
    for r in &revs[..fetch] {
        kvs.push(read(*r)?);
    }
    if filtered {
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
    }
    if sorting {
        use range_request::SortTarget as T;
        match target {
            T::Key => {}
            T::Version => kvs.sort_by_key(|kv| kv.version),
            T::Create => kvs.sort_by_key(|kv| kv.create_revision),
            T::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            T::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == range_request::SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.count_only {
        return Ok(RangeResponse {
            count: total,
            ..Default::default()
        });
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: None,
        kvs,
        more,
        count: total,
    })
}
