//! The etcd v3 API subset the kvstore serves (packages `etcdserverpb`, `mvccpb`), with
//! etcd's own service, method, message and field numbers.

/// `mvccpb`: key-values and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// `etcdserverpb`: the KV, Watch, Lease, Cluster and Maintenance services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
