//! `etcdserverpb.Lease`: grant, revoke, keep-alive, time-to-live, list.

use super::Shared;
use proto::etcd::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use proto::peer::kvstorepb::{internal_request::Request as Q, internal_response::Response as R};
use rand::Rng;
use std::pin::Pin;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// etcd's smallest TTL with its default timing: 1.5 election timeouts, rounded up.
const MIN_TTL: i64 = 2;

#[tonic::async_trait]
impl Lease for Shared {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.refuse_on_learner()?;
        let mut req = req.into_inner();
        if req.id == 0 {
            // The proposer picks the id, so applying stays deterministic. Positive, as
            // etcd's are.
            req.id = rand::thread_rng().gen_range(1..i64::MAX);
        }
        req.ttl = req.ttl.max(MIN_TTL);
        match self.propose(Q::LeaseGrant(req)).await? {
            R::LeaseGrant(mut g) => {
                self.lessor.renew(g.id, g.ttl);
                g.header = Some(self.header(self.store.current_revision()));
                Ok(Response::new(g))
            }
            other => Err(Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        let id = req.id;
        match self.propose(Q::LeaseRevoke(req)).await? {
            R::LeaseRevoke(mut r) => {
                self.lessor.remove(id);
                let rev = r.header.as_ref().map_or(0, |h| h.revision);
                r.header = Some(self.header(rev));
                Ok(Response::new(r))
            }
            other => Err(Status::internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.refuse_on_learner()?;
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let server = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(_) => break, // the client went away
                };
                let status = server.raft.status();
                let ttl = if status.leader_id == status.member_id {
                    server.renew(msg.id)
                } else {
                    // Only the leader tracks deadlines: forward, as etcd does.
                    match server.raft.renew_on_leader(msg.id).await {
                        Ok(ttl) => ttl,
                        Err(e) => {
                            // The client retries on a new stream.
                            let _ = tx.send(Err(Status::from(e))).await;
                            break;
                        }
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header: Some(server.header(server.store.current_revision())),
                    id: msg.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        self.linearize().await?;
        let header = Some(self.header(self.store.current_revision()));
        let resp = match self.store.lease(req.id) {
            Some(l) => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: self.lessor.remaining(req.id).unwrap_or(l.ttl),
                granted_ttl: l.ttl,
                keys: if req.keys {
                    l.keys.into_iter().collect()
                } else {
                    Vec::new()
                },
            },
            // etcd reports a lease that does not exist (or expired) with TTL -1.
            None => LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.refuse_on_learner()?;
        self.linearize().await?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header(self.store.current_revision())),
            leases: self
                .store
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}
