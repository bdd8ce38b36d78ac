//! Protocol buffer contracts of Rustkube and the code tonic generates from them: the
//! apiserver's internal `Resources` API, the etcd v3 subset the kvstore serves, and the
//! kvstore's raft peer transport.
//!
//! This crate holds wire definitions only: no logic, no I/O, nothing hand-written
//! beyond the module tree that mirrors the `.proto` packages.

pub mod etcd;
pub mod peer;

/// `apiserver.v1`: the `Resources` service components use to reach the apiserver.
pub mod apiserver {
    pub mod v1 {
        tonic::include_proto!("apiserver.v1");
    }
}
