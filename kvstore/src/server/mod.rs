//! The etcd v3 gRPC services over the MVCC store and raft: `KV`, `Watch`, `Lease`,
//! `Cluster`, `Maintenance`. Writes become raft proposals; reads are linearizable
//! (ReadIndex) unless the request asks for serializable.
//!
//! Must not: change the store except through raft, or answer a write before raft says
//! it is applied and durable.

pub(crate) mod authority;
mod cluster;
pub(crate) mod coalesce;
pub mod compactor;
mod kv;
mod lease;
pub mod lessor;
mod maintenance;
mod watch;

use crate::mvcc::{decode_response, Store};
use crate::raft::{RaftError, RaftNode};
use lessor::Lessor;
use prost::Message;
use proto::etcd::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};
use proto::peer::kvstorepb::{internal_request, internal_response, InternalRequest};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Everything the services share.
pub struct Server {
    pub store: Arc<Store>,
    pub raft: RaftNode,
    pub lessor: Arc<Lessor>,
    pub max_request_bytes: usize,
    /// How often a watch created with `progress_notify` gets a progress response.
    pub progress_interval: Duration,
}

/// The handle the streaming services (Watch, Lease keep-alive) implement their traits on:
/// their spawned tasks need an owned reference to the server.
#[derive(Clone)]
pub struct Shared(pub Arc<Server>);

impl std::ops::Deref for Shared {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

/// The message etcd returns for a request over `--max-request-bytes`.
const TOO_LARGE: &str = "etcdserver: request is too large";

impl Server {
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let s = self.raft.status();
        ResponseHeader {
            cluster_id: s.cluster_id,
            member_id: s.member_id,
            revision,
            raft_term: s.term,
        }
    }

    /// A learner serves only serializable reads and status, as in etcd; everything else
    /// gets etcd's refusal, so clients go to a voting member.
    pub(crate) fn refuse_on_learner(&self) -> Result<(), Status> {
        if self.raft.status().is_learner {
            return Err(Status::unavailable(
                "etcdserver: rpc not supported for learner",
            ));
        }
        Ok(())
    }

    /// Rejects requests over the size limit, as etcd does.
    fn check_size(&self, m: &impl Message) -> Result<(), Status> {
        if m.encoded_len() > self.max_request_bytes {
            return Err(Status::invalid_argument(TOO_LARGE));
        }
        Ok(())
    }

    /// Replicates a write and returns what applying it produced (or the error decided
    /// while applying).
    async fn propose(
        &self,
        req: internal_request::Request,
    ) -> Result<internal_response::Response, Status> {
        let bytes = InternalRequest { request: Some(req) }.encode_to_vec();
        let result = self.raft.propose(bytes).await.map_err(Status::from)?;
        Ok(decode_response(&result)?)
    }

    /// Restarts a lease's deadline on this member (the leader): its TTL, or 0 for an
    /// unknown lease (etcd's keep-alive answer).
    pub fn renew(&self, id: i64) -> i64 {
        match self.store.lease(id) {
            Some(l) => {
                self.lessor.renew(id, l.ttl);
                l.ttl
            }
            None => 0,
        }
    }

    /// The linearizable-read barrier.
    async fn linearize(&self) -> Result<(), Status> {
        self.raft
            .read_index()
            .await
            .map_err(|e: RaftError| Status::from(e))
    }
}

/// A request beyond the transport limit: tonic answers `OutOfRange` ("Error, decoded
/// message length too large: found N bytes, the limit is: M bytes"), grpc-go — so etcd —
/// `ResourceExhausted` ("grpc: received message larger than max (N vs. M)"). Rewrites
/// tonic's answer (trailers-only, so in the headers) to etcd's.
pub fn oversize_as_etcd<B>(
    mut resp: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = resp.headers_mut();
    // Successful answers carry their status in trailers: this is one header lookup.
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"11") {
        return resp; // not OutOfRange
    }
    let Some(sizes) = headers
        .get("grpc-message")
        .and_then(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8()
                .ok()
        })
        .and_then(|m| {
            let rest = m.strip_prefix("Error, decoded message length too large: found ")?;
            let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
            let limit = rest.strip_suffix(" bytes")?;
            Some((found.parse::<u64>().ok()?, limit.parse::<u64>().ok()?))
        })
    else {
        return resp;
    };
    let message = format!(
        "grpc: received message larger than max ({} vs. {})",
        sizes.0, sizes.1
    );
    if let Ok(v) = tonic::codegen::http::HeaderValue::from_str(&message) {
        headers.insert(
            "grpc-status",
            (tonic::Code::ResourceExhausted as i32).into(),
        );
        headers.insert("grpc-message", v);
    }
    resp
}

/// The gRPC router with every service, limits set so oversized requests reach our own
/// check (etcd's message) unless they are far beyond it.
pub fn router(server: Arc<Server>) -> tonic::service::Routes {
    // Like etcd: the transport accepts max-request-bytes plus gRPC overhead.
    let limit = server.max_request_bytes + 512 * 1024;
    tonic::service::Routes::new(KvServer::from_arc(server.clone()).max_decoding_message_size(limit))
        .add_service(WatchServer::new(Shared(server.clone())).max_decoding_message_size(limit))
        .add_service(LeaseServer::new(Shared(server.clone())).max_decoding_message_size(limit))
        .add_service(ClusterServer::from_arc(server.clone()).max_decoding_message_size(limit))
        .add_service(MaintenanceServer::from_arc(server).max_decoding_message_size(limit))
}
