//! `etcdserverpb.Cluster`: membership as etcdctl's `member` commands see it.
//!
//! A kvstore runs as a single-member group until the peer transport lands; membership
//! changes are refused with a clear error rather than half-done.

use super::Server;
use proto::etcd::etcdserverpb::{
    cluster_server::Cluster, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

fn not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

fn single_member() -> Status {
    Status::unimplemented(
        "kvstore: membership changes need the raft peer transport, which is not built yet",
    )
}

impl Server {
    fn known(&self, id: u64) -> Result<(), Status> {
        if id == self.member.id {
            Ok(())
        } else {
            Err(not_found())
        }
    }
}

#[tonic::async_trait]
impl Cluster for Server {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = req.into_inner();
        if req.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: member peer URLs not provided",
            ));
        }
        if req
            .peer_ur_ls
            .iter()
            .any(|u| self.member.peer_urls.contains(u))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        Err(single_member())
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.known(req.into_inner().id)?;
        Err(single_member())
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.known(req.into_inner().id)?;
        Err(single_member())
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let mut header = self.header(0);
        // etcd leaves the revision out of member list headers.
        header.revision = 0;
        Ok(Response::new(MemberListResponse {
            header: Some(header),
            members: vec![self.member.to_proto()],
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.known(req.into_inner().id)?;
        Err(Status::failed_precondition(
            "etcdserver: can only promote a learner member",
        ))
    }
}
