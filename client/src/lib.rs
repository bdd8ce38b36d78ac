//! The components' client of the apiserver: the Rust analogue of client-go.
//!
//! Owns: the flags every component shares, connection to a list of apiservers with
//! failover and TLS (`conn`), typed CRUD over the gRPC `Resources` API (`typed`; `dynamic` for any registry kind as JSON), the
//! reflector (list, watch, resume, relist on expiry), the informer cache with indexes
//! (`store`, `informer`), the rate-limited work queue, leader election, the event
//! recorder and the `/metrics`/`/healthz` endpoint every component serves — each a module
//! with one job, composed by the components rather than bundled into one object.
//!
//! Must not: talk to the kvstore, or depend on any daemon crate.

pub mod conn;
pub mod dynamic;
pub mod error;
pub mod events;
pub mod flags;
pub mod informer;
pub mod leader;
pub mod reflector;
pub mod serve;
pub mod store;
pub mod typed;
pub mod workqueue;

pub use conn::Client;
pub use error::{Error, Result};
pub use flags::ComponentFlags;
pub use informer::{Factory, Informer};
pub use store::Store;
pub use typed::{Api, DeleteParams, ListParams, Object, Patch, WatchEvent};
pub use workqueue::WorkQueue;
