//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use super::Server;
use proto::etcd::etcdserverpb::{
    kv_server::Kv, request_op, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use proto::peer::kvstorepb::{internal_request::Request as Q, internal_response::Response as R};
use std::collections::HashSet;
use tonic::{Request, Response, Status};

fn key_missing() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

fn unexpected(r: R) -> Status {
    Status::internal(format!("kvstore: unexpected apply result {r:?}"))
}

/// etcd refuses a transaction branch that writes one key twice.
fn check_txn(t: &TxnRequest) -> Result<(), Status> {
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(key_missing());
        }
    }
    for branch in [&t.success, &t.failure] {
        let mut puts = HashSet::new();
        check_ops(branch, &mut puts)?;
    }
    Ok(())
}

fn check_ops(ops: &[RequestOp], puts: &mut HashSet<Vec<u8>>) -> Result<(), Status> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if p.key.is_empty() {
                    return Err(key_missing());
                }
                if !puts.insert(p.key.clone()) {
                    return Err(Status::invalid_argument(
                        "etcdserver: duplicate key given in txn request",
                    ));
                }
            }
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(key_missing())
            }
            Some(request_op::Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(key_missing())
            }
            Some(request_op::Request::RequestTxn(t)) => {
                for branch in [&t.success, &t.failure] {
                    check_ops(branch, &mut puts.clone())?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn rev_of(h: &Option<ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

#[tonic::async_trait]
impl Kv for Server {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(key_missing());
        }
        if !req.serializable {
            self.refuse_on_learner()?;
            self.linearize().await?;
        }
        let (mut resp, rev) = self.store.range(&req)?;
        resp.header = Some(self.header(rev));
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(key_missing());
        }
        self.check_size(&req)?;
        match self.propose(Q::Put(req)).await? {
            R::Put(mut p) => {
                p.header = Some(self.header(rev_of(&p.header)));
                Ok(Response::new(p))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(key_missing());
        }
        self.check_size(&req)?;
        match self.propose(Q::DeleteRange(req)).await? {
            R::DeleteRange(mut d) => {
                d.header = Some(self.header(rev_of(&d.header)));
                Ok(Response::new(d))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        check_txn(&req)?;
        self.check_size(&req)?;
        // Read-only transactions go through raft too: one code path, linearizable.
        match self.propose(Q::Txn(req)).await? {
            R::Txn(mut t) => {
                // Only the outer header carries ids and term; nested ones carry just the
                // revision, as etcd's do.
                t.header = Some(self.header(rev_of(&t.header)));
                Ok(Response::new(t))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        match self.propose(Q::Compaction(req)).await? {
            R::Compaction(mut c) => {
                c.header = Some(self.header(rev_of(&c.header)));
                Ok(Response::new(c))
            }
            other => Err(unexpected(other)),
        }
    }
}
