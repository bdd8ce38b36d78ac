//! The components' client of the apiserver: the Rust analogue of client-go.
//!
//! Owns: the flags every component shares, connection to a list of apiservers with
//! failover and TLS, typed CRUD over the gRPC `Resources` API, the reflector (list,
//! watch, resume, relist on expiry), the informer cache with indexes, the rate-limited
//! work queue and leader election — each a module with one job, composed by the
//! components rather than bundled into one object.
//!
//! Must not: talk to the kvstore, or depend on any daemon crate.

pub mod flags;

pub use flags::ComponentFlags;
