//! The kvstore's raft formats: the payload of a raft log entry (`InternalRequest`), the
//! result of applying it, and the peer transport carrying raft-rs message bytes
//! (`Message::write_to_bytes()`) in `bytes` fields.

// Generated code names sibling packages through `super::`.
use crate::etcd::etcdserverpb;

pub mod kvstorepb {
    tonic::include_proto!("kvstorepb");
}
