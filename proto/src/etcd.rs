//! The etcd v3 API subset the kvstore serves (packages `etcdserverpb`, `mvccpb`,
//! `authpb`), with etcd's own service, method, message and field numbers.
