//! One write transaction: applies a committed request to the key index and stages its
//! records in a sled batch. All changes of one request share one main revision; `sub`
//! orders them. Reads inside a transaction see its earlier writes, as in etcd.

use super::range;
use super::revision::{
    encode_i64, lease_key, Revision, KIND_PUT, KIND_TOMBSTONE, META_COMPACT_REV,
};
use super::{check_read_rev, LeaseState, State, Store, StoreError};
use prost::Message;
use proto::etcd::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, CompactionResponse, Compare,
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use proto::etcd::mvccpb::{event::EventType, Event, KeyValue};
use proto::peer::kvstorepb::{
    internal_request, internal_response, ApplyError, InternalRequest, InternalResponse,
};
use std::collections::HashMap;

/// etcd's largest lease TTL (seconds).
const MAX_LEASE_TTL: i64 = 9_000_000_000;

pub(super) struct WriteTxn<'a> {
    state: &'a mut State,
    store: &'a Store,
    batch: &'a mut sled::Batch,
    rev: i64,
    sub: i64,
    /// Values written by this and earlier entries not yet in sled.
    pending: &'a mut HashMap<Revision, KeyValue>,
    events: Vec<Event>,
}

impl<'a> WriteTxn<'a> {
    pub fn new(
        state: &'a mut State,
        store: &'a Store,
        batch: &'a mut sled::Batch,
        pending: &'a mut HashMap<Revision, KeyValue>,
    ) -> Self {
        let rev = state.current_rev + 1;
        WriteTxn {
            state,
            store,
            batch,
            rev,
            sub: 0,
            pending,
            events: Vec::new(),
        }
    }

    /// The events produced and the store revision after this transaction.
    pub fn finish(self) -> (Vec<Event>, i64) {
        let rev = self.revision_after();
        (self.events, rev)
    }

    fn revision_after(&self) -> i64 {
        if self.sub > 0 {
            self.rev
        } else {
            self.state.current_rev
        }
    }

    pub fn apply(&mut self, req: InternalRequest) -> InternalResponse {
        use internal_request::Request as Q;
        use internal_response::Response as R;
        let result = match req.request {
            Some(Q::Put(p)) => self.check_put(&p).and_then(|_| self.put(&p)).map(R::Put),
            Some(Q::DeleteRange(d)) => self.delete_range(&d).map(R::DeleteRange),
            Some(Q::Txn(t)) => self.txn(&t).map(R::Txn),
            Some(Q::Compaction(c)) => self.compact(&c).map(R::Compaction),
            Some(Q::LeaseGrant(g)) => self.lease_grant(&g).map(R::LeaseGrant),
            Some(Q::LeaseRevoke(r)) => self.lease_revoke(&r).map(R::LeaseRevoke),
            None => Err(StoreError::new(
                tonic::Code::InvalidArgument,
                "empty request",
            )),
        };
        let mut response = match result {
            Ok(r) => r,
            Err(e) => R::Error(ApplyError {
                code: e.code as i32,
                message: e.message,
            }),
        };
        let rev = self.revision_after();
        set_headers(&mut response, rev);
        InternalResponse {
            response: Some(response),
        }
    }

    /// The revision reads inside this transaction see.
    fn read_at(&self) -> i64 {
        self.revision_after()
    }

    fn read(&self, rev: Revision) -> Result<KeyValue, StoreError> {
        match self.pending.get(&rev) {
            Some(kv) => Ok(kv.clone()),
            None => self.store.read_rev(self.state, rev),
        }
    }

    fn current(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let at = self.read_at();
        match self.state.index.get(key).and_then(|ki| ki.get(at)) {
            Some(rev) => Ok(Some(self.read(rev)?)),
            None => Ok(None),
        }
    }

    fn next_rev(&mut self) -> Revision {
        let r = Revision::new(self.rev, self.sub);
        self.sub += 1;
        r
    }

    fn write(&mut self, rev: Revision, kind: u8, kv: &KeyValue) {
        let mut bytes = Vec::with_capacity(1 + kv.encoded_len());
        bytes.push(kind);
        kv.encode(&mut bytes).expect("a Vec grows as needed");
        self.batch.insert(&rev.to_key()[..], bytes);
        self.state
            .index
            .entry(kv.key.clone())
            .or_default()
            .push(rev, kind == KIND_TOMBSTONE);
        self.pending.insert(rev, kv.clone());
    }

    fn detach(&mut self, lease: i64, key: &[u8]) {
        if lease != 0 {
            if let Some(l) = self.state.leases.get_mut(&lease) {
                l.keys.remove(key);
            }
        }
    }

    /// The checks etcd makes before a put changes anything.
    fn check_put(&self, p: &PutRequest) -> Result<(), StoreError> {
        if (p.ignore_value || p.ignore_lease) && self.current(&p.key)?.is_none() {
            return Err(StoreError::new(
                tonic::Code::InvalidArgument,
                "etcdserver: key not found",
            ));
        }
        if !p.ignore_lease && p.lease != 0 && !self.state.leases.contains_key(&p.lease) {
            return Err(StoreError::lease_not_found());
        }
        Ok(())
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, StoreError> {
        let prev = self.current(&p.key)?;
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let rev = self.next_rev();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev.main, |k| k.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        self.write(rev, KIND_PUT, &kv);
        if let Some(old) = &prev {
            if old.lease != lease {
                self.detach(old.lease, &p.key);
            }
        }
        if lease != 0 {
            if let Some(l) = self.state.leases.get_mut(&lease) {
                l.keys.insert(p.key.clone());
            }
        }
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            header: None,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, StoreError> {
        let at = self.read_at();
        let doomed: Vec<(Vec<u8>, Revision)> =
            range::visible(&self.state.index, &d.key, &d.range_end, at)
                .map(|(k, r)| (k.clone(), r))
                .collect();
        let mut prev_kvs = Vec::new();
        for (key, prev_rev) in &doomed {
            let prev = self.read(*prev_rev)?;
            let rev = self.next_rev();
            let tomb = KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            self.write(rev, KIND_TOMBSTONE, &tomb);
            self.detach(prev.lease, key);
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev.clone()),
            });
            if d.prev_kv {
                prev_kvs.push(prev);
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, StoreError> {
        let at = if r.revision > 0 {
            check_read_rev(self.state, r.revision)?
        } else {
            self.read_at()
        };
        range::range(&self.state.index, r, at, &mut |rev| self.read(rev))
    }

    fn compare(&self, c: &Compare) -> Result<bool, StoreError> {
        let at = self.read_at();
        let keys: Vec<Option<KeyValue>> = if c.range_end.is_empty() {
            vec![self.current(&c.key)?]
        } else {
            let revs: Vec<Revision> = range::visible(&self.state.index, &c.key, &c.range_end, at)
                .map(|(_, r)| r)
                .collect();
            revs.into_iter()
                .map(|r| self.read(r).map(Some))
                .collect::<Result<_, _>>()?
        };
        let result =
            compare::CompareResult::try_from(c.result).unwrap_or(compare::CompareResult::Equal);
        let target =
            compare::CompareTarget::try_from(c.target).unwrap_or(compare::CompareTarget::Version);
        for kv in keys {
            let ord = match (target, &c.target_union, &kv) {
                // A value compare against a missing key is false whatever the operator.
                (compare::CompareTarget::Value, _, None) => return Ok(false),
                (compare::CompareTarget::Value, Some(compare::TargetUnion::Value(v)), Some(kv)) => {
                    kv.value.as_slice().cmp(v.as_slice())
                }
                (_, Some(u), kv) => {
                    let have = match target {
                        compare::CompareTarget::Version => kv.as_ref().map_or(0, |k| k.version),
                        compare::CompareTarget::Create => {
                            kv.as_ref().map_or(0, |k| k.create_revision)
                        }
                        compare::CompareTarget::Mod => kv.as_ref().map_or(0, |k| k.mod_revision),
                        compare::CompareTarget::Lease => kv.as_ref().map_or(0, |k| k.lease),
                        compare::CompareTarget::Value => 0,
                    };
                    let want = match u {
                        compare::TargetUnion::Version(v)
                        | compare::TargetUnion::CreateRevision(v)
                        | compare::TargetUnion::ModRevision(v)
                        | compare::TargetUnion::Lease(v) => *v,
                        compare::TargetUnion::Value(_) => 0,
                    };
                    have.cmp(&want)
                }
                (_, None, _) => return Ok(false),
            };
            let ok = match result {
                compare::CompareResult::Equal => ord.is_eq(),
                compare::CompareResult::Greater => ord.is_gt(),
                compare::CompareResult::Less => ord.is_lt(),
                compare::CompareResult::NotEqual => ord.is_ne(),
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check_ops(&self, ops: &[RequestOp]) -> Result<(), StoreError> {
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.check_put(p)?,
                Some(request_op::Request::RequestTxn(t)) => {
                    self.check_ops(&t.success)?;
                    self.check_ops(&t.failure)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let mut succeeded = true;
        for c in &t.compare {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &t.success } else { &t.failure };
        self.check_ops(ops)?;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            use request_op::Request as Q;
            use response_op::Response as R;
            // Each nested header carries the revision as of that operation, as etcd's do.
            let r = match &op.request {
                Some(Q::RequestRange(r)) => {
                    let mut resp = self.range(r)?;
                    resp.header = header(self.read_at());
                    R::ResponseRange(resp)
                }
                Some(Q::RequestPut(p)) => {
                    let mut resp = self.put(p)?;
                    resp.header = header(self.read_at());
                    R::ResponsePut(resp)
                }
                Some(Q::RequestDeleteRange(d)) => {
                    let mut resp = self.delete_range(d)?;
                    resp.header = header(self.read_at());
                    R::ResponseDeleteRange(resp)
                }
                Some(Q::RequestTxn(t)) => {
                    let mut resp = self.txn(t)?;
                    resp.header = header(self.read_at());
                    R::ResponseTxn(resp)
                }
                None => {
                    return Err(StoreError::new(
                        tonic::Code::InvalidArgument,
                        "empty txn operation",
                    ))
                }
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, StoreError> {
        if c.revision > self.state.current_rev {
            return Err(StoreError::future_rev());
        }
        if c.revision <= self.state.compact_rev {
            return Err(StoreError::compacted());
        }
        let mut emptied = Vec::new();
        for (key, ki) in self.state.index.iter_mut() {
            for rev in ki.compact(c.revision) {
                self.batch.remove(&rev.to_key()[..]);
            }
            if ki.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.state.index.remove(&key);
        }
        self.state.compact_rev = c.revision;
        self.batch.insert(META_COMPACT_REV, &encode_i64(c.revision));
        Ok(CompactionResponse { header: None })
    }

    fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, StoreError> {
        if g.id == 0 {
            return Err(StoreError::new(
                tonic::Code::InvalidArgument,
                "etcdserver: lease ID must be chosen before proposing",
            ));
        }
        if g.ttl > MAX_LEASE_TTL {
            return Err(StoreError::new(
                tonic::Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ));
        }
        if self.state.leases.contains_key(&g.id) {
            return Err(StoreError::new(
                tonic::Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ));
        }
        self.state.leases.insert(
            g.id,
            LeaseState {
                ttl: g.ttl,
                keys: Default::default(),
            },
        );
        self.batch.insert(&lease_key(g.id)[..], &encode_i64(g.ttl));
        Ok(LeaseGrantResponse {
            header: None,
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(&mut self, r: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, StoreError> {
        let lease = self
            .state
            .leases
            .get(&r.id)
            .cloned()
            .ok_or_else(StoreError::lease_not_found)?;
        for key in &lease.keys {
            self.delete_range(&DeleteRangeRequest {
                key: key.clone(),
                range_end: Vec::new(),
                prev_kv: false,
            })?;
        }
        self.state.leases.remove(&r.id);
        self.batch.remove(&lease_key(r.id)[..]);
        Ok(LeaseRevokeResponse { header: None })
    }
}

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

/// Stamps the revision into the outer header of a response.
fn set_headers(r: &mut internal_response::Response, rev: i64) {
    use internal_response::Response as R;
    match r {
        R::Put(p) => p.header = header(rev),
        R::DeleteRange(d) => d.header = header(rev),
        R::Txn(t) => t.header = header(rev),
        R::Compaction(c) => c.header = header(rev),
        R::LeaseGrant(g) => g.header = header(rev),
        R::LeaseRevoke(l) => l.header = header(rev),
        R::Error(_) => {}
    }
}
