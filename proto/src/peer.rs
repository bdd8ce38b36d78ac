//! The kvstore's raft peer transport: raft-rs messages (`Message::write_to_bytes()`)
//! carried in `bytes` fields over a gRPC stream between members.
