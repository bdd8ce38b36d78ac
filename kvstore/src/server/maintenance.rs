//! `etcdserverpb.Maintenance`: status and alarms (what `etcdctl endpoint status|health`
//! use). Operations that have no meaning on sled or are not built yet say so.

use super::Server;
use proto::etcd::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_server::Maintenance, AlarmRequest, AlarmResponse,
    DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest,
    HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The etcd API level we implement, with our own build after `+`.
pub const VERSION: &str = concat!("3.4.23+rustkube.", env!("CARGO_PKG_VERSION"));

#[tonic::async_trait]
impl Maintenance for Server {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        self.refuse_on_learner()?;
        match AlarmAction::try_from(req.into_inner().action) {
            // The kvstore raises no alarms (no space quota yet): the list is empty.
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: Some(self.header(self.store.current_revision())),
                alarms: Vec::new(),
            })),
            _ => Err(Status::unimplemented("kvstore: alarms cannot be set")),
        }
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let s = self.raft.status();
        let size = self.store.db_size();
        Ok(Response::new(StatusResponse {
            header: Some(self.header(self.store.current_revision())),
            version: VERSION.to_string(),
            db_size: size,
            leader: s.leader_id,
            raft_index: s.last_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.refuse_on_learner()?;
        Err(Status::unimplemented(
            "kvstore: defragment is not supported (sled compacts itself)",
        ))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.refuse_on_learner()?;
        Err(Status::unimplemented("kvstore: hash is not supported"))
    }

    async fn hash_kv(
        &self,
        _req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.refuse_on_learner()?;
        Err(Status::unimplemented("kvstore: hashkv is not supported"))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.refuse_on_learner()?;
        Err(Status::unimplemented(
            "kvstore: snapshot save is not supported",
        ))
    }

    async fn move_leader(
        &self,
        _req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.refuse_on_learner()?;
        Err(Status::failed_precondition(
            "kvstore: a single-member group has no one to move to",
        ))
    }
}
