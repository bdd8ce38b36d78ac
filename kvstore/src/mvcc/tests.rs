//! The store driven directly through `apply_entry`, as raft drives it: revision
//! arithmetic identical to etcd's (notes/etcd-compat.md), tombstones, transactions,
//! compaction, leases, restart and snapshots.

use super::*;
use crate::raft::StateMachine;
use proto::etcd::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use proto::peer::kvstorepb::internal_request::Request as Q;
use proto::peer::kvstorepb::internal_response::Response as R;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    index: u64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = Store::open(db, Arc::new(Hub::new())).unwrap();
        Fixture {
            _dir: dir,
            store,
            index: 0,
        }
    }

    fn apply(&mut self, q: Q) -> Result<R, StoreError> {
        self.index += 1;
        let bytes = InternalRequest { request: Some(q) }.encode_to_vec();
        let out = self.store.apply_entry(self.index, &bytes).unwrap();
        decode_response(&out)
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        match self.apply(Q::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })) {
            Ok(R::Put(p)) => p.header.unwrap().revision,
            other => panic!("{other:?}"),
        }
    }

    fn get(&self, k: &str, rev: i64) -> Result<Vec<KeyValue>, StoreError> {
        self.store
            .range(&RangeRequest {
                key: k.into(),
                revision: rev,
                ..Default::default()
            })
            .map(|(r, _)| r.kvs)
    }
}

fn del(k: &str) -> Q {
    Q::DeleteRange(DeleteRangeRequest {
        key: k.into(),
        ..Default::default()
    })
}

#[test]
fn revisions_match_etcd() {
    let mut f = Fixture::new();
    assert_eq!(
        f.store.current_revision(),
        1,
        "a fresh store is at revision 1"
    );
    assert_eq!(f.put("a", "1"), 2);
    assert_eq!(f.put("a", "2"), 3);
    let kv = &f.get("a", 0).unwrap()[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    // Deleting a missing key adds no revision.
    match f.apply(del("missing")).unwrap() {
        R::DeleteRange(d) => assert_eq!((d.deleted, d.header.unwrap().revision), (0, 3)),
        other => panic!("{other:?}"),
    }
    // A delete writes a tombstone; a new put starts the key's life over.
    f.apply(del("a")).unwrap();
    assert_eq!(f.store.current_revision(), 4);
    assert!(f.get("a", 0).unwrap().is_empty());
    assert_eq!(f.put("a", "3"), 5);
    let kv = &f.get("a", 0).unwrap()[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // History stays readable until compacted.
    assert_eq!(f.get("a", 3).unwrap()[0].value, b"2");
    assert!(f.get("a", 4).unwrap().is_empty());
    assert_eq!(f.get("a", 9).unwrap_err(), StoreError::future_rev());
}

#[test]
fn transactions_compare_and_write_in_one_revision() {
    let mut f = Fixture::new();
    f.put("k", "v1");
    let put = |k: &str, v: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    };
    let cmp = |target: compare::CompareTarget, union: compare::TargetUnion| Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: b"k".to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    };
    let txn = |c: Compare| {
        Q::Txn(TxnRequest {
            compare: vec![c],
            success: vec![put("x", "yes"), put("y", "yes")],
            failure: vec![put("x", "no")],
        })
    };
    let cases = [
        (
            cmp(
                compare::CompareTarget::Value,
                compare::TargetUnion::Value(b"v1".to_vec()),
            ),
            true,
        ),
        (
            cmp(
                compare::CompareTarget::Value,
                compare::TargetUnion::Value(b"v2".to_vec()),
            ),
            false,
        ),
        (
            cmp(
                compare::CompareTarget::Version,
                compare::TargetUnion::Version(1),
            ),
            true,
        ),
        (
            cmp(
                compare::CompareTarget::Create,
                compare::TargetUnion::CreateRevision(2),
            ),
            true,
        ),
        (
            cmp(
                compare::CompareTarget::Mod,
                compare::TargetUnion::ModRevision(99),
            ),
            false,
        ),
        (
            cmp(
                compare::CompareTarget::Lease,
                compare::TargetUnion::Lease(0),
            ),
            true,
        ),
    ];
    for (c, want) in cases {
        let before = f.store.current_revision();
        match f.apply(txn(c.clone())).unwrap() {
            R::Txn(t) => {
                assert_eq!(t.succeeded, want, "{c:?}");
                // Both puts of the success branch share one revision.
                assert_eq!(t.header.unwrap().revision, before + 1);
            }
            other => panic!("{other:?}"),
        }
        let x = &f.get("x", 0).unwrap()[0];
        assert_eq!(
            x.value,
            if want {
                b"yes".to_vec()
            } else {
                b"no".to_vec()
            }
        );
        assert_eq!(x.mod_revision, before + 1);
    }
    // A compare on a missing key: version 0, value compares are false.
    let missing = Compare {
        key: b"nope".to_vec(),
        ..cmp(
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(0),
        )
    };
    match f.apply(txn(missing)).unwrap() {
        R::Txn(t) => assert!(t.succeeded),
        other => panic!("{other:?}"),
    }
}

#[test]
fn compaction_removes_history_and_reports_errors() {
    let mut f = Fixture::new();
    for i in 0..5 {
        f.put("a", &i.to_string()); // revisions 2..=6
    }
    f.apply(del("a")).unwrap(); // 7
    f.put("b", "x"); // 8
    let compact = |rev| {
        Q::Compaction(CompactionRequest {
            revision: rev,
            physical: true,
        })
    };
    assert_eq!(f.apply(compact(99)).unwrap_err(), StoreError::future_rev());
    assert!(matches!(f.apply(compact(5)).unwrap(), R::Compaction(_)));
    assert_eq!(f.get("a", 4).unwrap_err(), StoreError::compacted());
    assert_eq!(f.get("a", 5).unwrap()[0].value, b"3");
    assert_eq!(f.apply(compact(5)).unwrap_err(), StoreError::compacted());
    f.apply(compact(8)).unwrap();
    // The deleted key's whole history is gone; the live one stays.
    assert!(!f.store.read_state().index.contains_key(b"a".as_slice()));
    assert_eq!(f.get("b", 0).unwrap()[0].value, b"x");
    assert_eq!(f.store.current_revision(), 8, "compaction adds no revision");
}

#[test]
fn leases_attach_and_revoke_keys() {
    let mut f = Fixture::new();
    let grant = Q::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 7 });
    assert!(matches!(f.apply(grant.clone()).unwrap(), R::LeaseGrant(_)));
    assert_eq!(
        f.apply(grant).unwrap_err().code,
        tonic::Code::FailedPrecondition
    );
    let put = |k: &str, lease| {
        Q::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    };
    f.apply(put("a", 7)).unwrap();
    f.apply(put("b", 7)).unwrap();
    assert_eq!(
        f.apply(put("c", 8)).unwrap_err(),
        StoreError::lease_not_found()
    );
    assert_eq!(f.store.lease(7).unwrap().keys.len(), 2);
    let rev = f.store.current_revision();
    f.apply(Q::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
        .unwrap();
    assert!(f.get("a", 0).unwrap().is_empty() && f.get("b", 0).unwrap().is_empty());
    assert_eq!(
        f.store.current_revision(),
        rev + 1,
        "one revision for the revoke"
    );
    assert_eq!(
        f.apply(Q::LeaseRevoke(LeaseRevokeRequest { id: 7 }))
            .unwrap_err(),
        StoreError::lease_not_found()
    );
}

#[test]
fn reopening_rebuilds_the_same_state_and_skips_replayed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = |q| InternalRequest { request: Some(q) }.encode_to_vec();
    {
        let store = Store::open(sled::open(dir.path()).unwrap(), Arc::new(Hub::new())).unwrap();
        store
            .apply_entry(
                1,
                &bytes(Q::LeaseGrant(LeaseGrantRequest { ttl: 9, id: 3 })),
            )
            .unwrap();
        store
            .apply_entry(
                2,
                &bytes(Q::Put(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    lease: 3,
                    ..Default::default()
                })),
            )
            .unwrap();
        store.persist(true).unwrap();
        // Applied but not persisted: gone after a restart (raft's WAL delivers it again).
        store
            .apply_entry(
                3,
                &bytes(Q::DeleteRange(DeleteRangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            )
            .unwrap();
        let read = |s: &Store| {
            s.range(&RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .unwrap()
            .0
            .kvs
        };
        assert!(
            read(&store).is_empty(),
            "readers see applied effects at once"
        );
        store.db.flush().unwrap();
    }
    let store = Store::open(sled::open(dir.path()).unwrap(), Arc::new(Hub::new())).unwrap();
    assert_eq!(store.applied_index(), 2);
    assert_eq!(store.current_revision(), 2);
    assert!(store.lease(3).unwrap().keys.contains(b"k".as_slice()));
    // Raft replays entry 2 after a crash: it must not apply twice.
    let again = bytes(Q::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"w".to_vec(),
        ..Default::default()
    }));
    store.apply_entry(2, &again).unwrap();
    assert_eq!(store.current_revision(), 2);
}

#[test]
fn snapshots_restore_the_whole_state() {
    let mut a = Fixture::new();
    a.put("x", "1");
    a.put("y", "2");
    a.apply(Q::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 }))
        .unwrap();
    let snap = a.store.begin_snapshot().unwrap()().unwrap().unwrap();
    let b = Fixture::new();
    b.store.restore(a.index, &snap).unwrap();
    assert_eq!(b.store.current_revision(), a.store.current_revision());
    assert_eq!(b.store.applied_index(), a.index);
    assert_eq!(b.get("y", 0).unwrap(), a.get("y", 0).unwrap());
    assert!(b.store.lease(1).is_some());
    assert!(b.store.restore(1, &snap[..snap.len() - 1]).is_err());
}

#[test]
fn a_snapshot_job_copies_the_state_it_began_at() {
    let mut a = Fixture::new();
    a.apply(Q::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 }))
        .unwrap();
    let leased = |k: &str| {
        Q::Put(PutRequest {
            key: k.into(),
            value: b"1".to_vec(),
            lease: 1,
            ..Default::default()
        })
    };
    a.apply(leased("x")).unwrap();
    // Attached, then detached by a put without the lease.
    a.apply(leased("z")).unwrap();
    a.put("z", "2");
    let job = a.store.begin_snapshot().unwrap();
    let (index, rev) = (a.index, a.store.current_revision());
    // Applied while the job has not run yet: none of it may show.
    a.put("x", "2");
    a.put("y", "3");
    a.apply(Q::LeaseRevoke(LeaseRevokeRequest { id: 1 }))
        .unwrap();
    a.store.persist(true).unwrap();
    let snap = job().unwrap().expect("nothing was compacted");
    let b = Fixture::new();
    b.store.restore(index, &snap).unwrap();
    assert_eq!(b.store.current_revision(), rev);
    assert_eq!(b.store.applied_index(), index);
    assert_eq!(b.get("x", 0).unwrap()[0].value, b"1");
    assert!(b.get("y", 0).unwrap().is_empty());
    let keys = b.store.lease(1).unwrap().keys;
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), [b"x".to_vec()]);

    // A compaction removes records a running job may be reading: it gives up.
    let job = a.store.begin_snapshot().unwrap();
    let now = a.store.current_revision();
    a.apply(Q::Compaction(CompactionRequest {
        revision: now,
        ..Default::default()
    }))
    .unwrap();
    assert!(job().unwrap().is_none());
    // So does a restore replacing everything.
    let job = b.store.begin_snapshot().unwrap();
    let whole = a.store.begin_snapshot().unwrap()().unwrap().unwrap();
    b.store.restore(a.index, &whole).unwrap();
    assert!(job().unwrap().is_none());
    assert_eq!(b.get("y", 0).unwrap(), a.get("y", 0).unwrap());
}

fn watch_all(f: &Fixture, watch_id: i64) -> tokio::sync::mpsc::Receiver<crate::watch::Batch> {
    let (tx, rx) = tokio::sync::mpsc::channel(crate::watch::CHANNEL);
    let spec = crate::watch::WatchSpec {
        watch_id,
        key: b"w/".to_vec(),
        range_end: b"w0".to_vec(),
        ..Default::default()
    };
    f.store.hub().register(&f.store, spec, tx).unwrap();
    rx
}

#[test]
fn a_slow_watcher_is_caught_up_from_history_without_gaps() {
    let mut f = Fixture::new();
    let mut rx = watch_all(&f, 1);
    // Nobody reads while far more revisions than the channel holds are applied.
    let total = crate::watch::CHANNEL + 50;
    let first = f.put("w/0", "v");
    for i in 1..total {
        f.put(&format!("w/{i}"), "v");
    }
    let mut seen = Vec::new();
    while seen.len() < total {
        match rx.try_recv() {
            Ok(batch) => {
                assert_eq!(batch.compact_revision, 0);
                seen.extend(
                    batch
                        .events
                        .iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision),
                );
            }
            // Drained: the hub sends the rest from history.
            Err(_) => {
                f.store.hub().sync(&f.store);
                assert!(
                    !rx.is_empty(),
                    "sync sent nothing with {} of {total} seen",
                    seen.len()
                );
            }
        }
    }
    let expected: Vec<i64> = (first..first + total as i64).collect();
    assert_eq!(seen, expected, "every revision once, in order");
    // Synced again: live events flow directly.
    let next = f.put("w/live", "v");
    let batch = rx.try_recv().expect("a live event");
    assert_eq!(batch.events[0].kv.as_ref().unwrap().mod_revision, next);
}

#[test]
fn a_watcher_left_behind_by_compaction_is_cancelled() {
    let mut f = Fixture::new();
    let mut rx = watch_all(&f, 7);
    let mut last = 0;
    for i in 0..crate::watch::CHANNEL + 10 {
        last = f.put(&format!("w/{i}"), "v");
    }
    f.apply(Q::Compaction(CompactionRequest {
        revision: last,
        physical: false,
    }))
    .unwrap();
    while rx.try_recv().is_ok() {}
    f.store.hub().sync(&f.store);
    let notice = rx.try_recv().expect("a compaction notice");
    assert_eq!(notice.watch_id, 7);
    assert_eq!(notice.compact_revision, last);
    assert!(f.store.hub().is_empty(), "the watcher is dropped");
}

#[test]
fn entries_applied_together_see_each_other_and_notify_in_order() {
    let mut f = Fixture::new();
    let mut rx = watch_all(&f, 3);
    let put = |k: &str, v: &str, prev_kv: bool| {
        InternalRequest {
            request: Some(Q::Put(PutRequest {
                key: k.into(),
                value: v.into(),
                prev_kv,
                ..Default::default()
            })),
        }
        .encode_to_vec()
    };
    // The second entry's prev_kv and the third's compare read what the first wrote,
    // before anything of the batch is in sled.
    let swap = InternalRequest {
        request: Some(Q::Txn(TxnRequest {
            compare: vec![Compare {
                key: b"w/a".to_vec(),
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                target_union: Some(compare::TargetUnion::Value(b"2".to_vec())),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"w/b".to_vec(),
                    value: b"swapped".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let (one, two) = (put("w/a", "1", false), put("w/a", "2", true));
    let out = f
        .store
        .apply_entries(&[(1, &one), (2, &two), (3, &[]), (4, &swap)])
        .unwrap();
    f.index = 4;
    assert_eq!(out.len(), 4);
    assert!(
        out[2].is_empty(),
        "an empty entry only moves the applied index"
    );
    match decode_response(&out[1]) {
        Ok(R::Put(p)) => assert_eq!(p.prev_kv.unwrap().value, b"1"),
        other => panic!("{other:?}"),
    }
    match decode_response(&out[3]) {
        Ok(R::Txn(t)) => assert!(t.succeeded),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.store.applied_index(), 4);
    assert_eq!(f.get("w/b", 0).unwrap()[0].value, b"swapped");
    let mut revs = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        revs.extend(
            batch
                .events
                .iter()
                .map(|e| e.kv.as_ref().unwrap().mod_revision),
        );
    }
    assert_eq!(
        revs,
        vec![2, 3, 4],
        "one notification per revision, in order"
    );
    // Entries at or below the applied index (a restart's replay) are skipped.
    let again = f.store.apply_entries(&[(2, &two)]).unwrap();
    assert!(again[0].is_empty());
    assert_eq!(f.store.current_revision(), 4);
}
