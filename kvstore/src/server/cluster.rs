//! `etcdserverpb.Cluster`: membership as etcdctl's `member` commands see it. Changes go
//! through raft (`RaftNode::change_membership`), one at a time; answers reflect the
//! membership after the change is applied on this member.

use super::Server;
use crate::raft::ConfChangeType;
use proto::etcd::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use proto::peer::kvstorepb::Member as Record;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

fn not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

fn to_proto(m: &Record) -> Member {
    Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// etcd accepts `http(s)://host:port` peer URLs only.
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let bad = || Status::invalid_argument("etcdserver: given member URLs are invalid");
    if urls.is_empty() {
        return Err(bad());
    }
    for u in urls {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .ok_or_else(bad)?;
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    Ok(())
}

impl Server {
    /// Member list headers carry no revision in etcd.
    fn cluster_header(&self) -> ResponseHeader {
        let mut h = self.header(0);
        h.revision = 0;
        h
    }

    fn member_protos(&self) -> Vec<Member> {
        self.raft.members().iter().map(to_proto).collect()
    }

    fn record(&self, id: u64) -> Result<Record, Status> {
        self.raft
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(not_found)
    }
}

#[tonic::async_trait]
impl Cluster for Server {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.refuse_on_learner()?;
        let req = req.into_inner();
        check_urls(&req.peer_ur_ls)?;
        let members = self.raft.members();
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u)))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        // etcd 3.4 allows one learner at a time.
        if req.is_learner && members.iter().any(|m| m.is_learner) {
            return Err(Status::failed_precondition(
                "etcdserver: too many learner members in cluster",
            ));
        }
        // Like etcd: the id mixes the peer URLs with the time, so re-adding the same URLs
        // later gives a new member.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = crate::raft::member_id(&nanos.to_string(), "", &req.peer_ur_ls);
        let record = Record {
            id,
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: req.is_learner,
        };
        let change = if req.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.raft
            .change_membership(change, id, Some(record.clone()))
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.cluster_header()),
            member: Some(to_proto(&record)),
            members: self.member_protos(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.refuse_on_learner()?;
        let id = req.into_inner().id;
        self.record(id)?;
        self.raft
            .change_membership(ConfChangeType::RemoveNode, id, None)
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.cluster_header()),
            members: self.member_protos(),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.refuse_on_learner()?;
        self.record(req.into_inner().id)?;
        Err(Status::unimplemented(
            "kvstore: changing a member's peer URLs is not supported; remove and re-add it",
        ))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.refuse_on_learner()?;
        Ok(Response::new(MemberListResponse {
            header: Some(self.cluster_header()),
            members: self.member_protos(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.refuse_on_learner()?;
        let id = req.into_inner().id;
        if !self.record(id)?.is_learner {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member",
            ));
        }
        self.raft
            .change_membership(ConfChangeType::AddNode, id, None)
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.cluster_header()),
            members: self.member_protos(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_urls_are_checked() {
        assert!(super::check_urls(&["http://127.0.0.1:2380".into()]).is_ok());
        assert!(super::check_urls(&["https://localhost:1".into()]).is_ok());
        for bad in [
            "",
            "127.0.0.1:2380",
            "http://127.0.0.1",
            "http://:1",
            "ftp://a:1",
        ] {
            assert!(super::check_urls(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(super::check_urls(&[]).is_err());
    }
}
