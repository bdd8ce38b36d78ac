//! The apiserver: the only client of the kvstore and the only server every other
//! component talks to.
//!
//! Owns: the Kubernetes REST API and the internal gRPC `Resources` API on one HTTPS port,
//! storage over etcd v3 with a watch cache, admission (defaulting, validation, the
//! admission plugins), authentication and authorization, auditing, tables, patch and
//! apply, discovery, OpenAPI and subresources.
//!
//! Must not: hold cluster state anywhere but the kvstore (it is stateless, so three
//! replicas can serve one cluster).
//!
//! Start reading at `start`: it connects `storage`, fills the per-resource watch caches
//! (`cache`), and serves `rest` and `grpc` on one TLS port (`server`). Both front ends
//! call the generic registry in `store`, which runs `admission` (typed decoding,
//! defaults, validation) and `alloc` (service addresses) before every write. Tables,
//! discovery documents and errors have a module each.

// `ApiError` carries a whole Kubernetes `Status` (message, details, causes) so every
// layer can fail with the exact answer the client gets; errors are the rare path, so its
// size in `Result` is accepted rather than boxed at every call site.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod alloc;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod discovery;
pub mod error;
pub mod grpc;
pub mod managed;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod rest;
pub mod satoken;
pub mod server;
pub mod storage;
pub mod store;
pub mod subresources;
pub mod tables;
pub mod tls;
pub mod watch;

use std::path::PathBuf;

/// kube-apiserver's flag names (DESIGN.md §5).
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "apiserver", version, about = "Rustkube apiserver")]
pub struct Config {
    /// Comma-separated etcd v3 client URLs (the kvstore, or real etcd).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: String,
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    #[arg(long, default_value = "AlwaysAllow")]
    pub authorization_mode: String,
    /// The `iss` of the service account tokens this apiserver issues, and the audience
    /// a token must name to be accepted here.
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    pub service_account_issuer: String,
    /// The ECDSA P-256 private key (PEM) service account tokens are signed with.
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// More keys (PEM, public or private; repeatable) whose tokens are accepted, e.g.
    /// another apiserver's during a key rotation.
    #[arg(long)]
    pub service_account_key_file: Vec<PathBuf>,
    /// Admission plugins to run besides the default ones (comma-separated). All of this
    /// apiserver's plugins are on by default: LimitRanger, ServiceAccount, Priority,
    /// DefaultStorageClass, ResourceQuota, PodSecurity.
    #[arg(long, value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plugins to turn off (comma-separated), e.g. ServiceAccount where no
    /// controller-manager makes the namespaces' default service accounts.
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// An AdmissionConfiguration (YAML) configuring admission plugins: PodSecurity's
    /// cluster-wide defaults and exemptions.
    #[arg(long)]
    pub admission_control_config_file: Option<PathBuf>,
    /// The audit policy (audit.k8s.io/v1 Policy, YAML): which requests are audited, and
    /// how much of each. Nothing is audited without it and --audit-log-path.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Where audit events go, one JSON line each ("-": standard output).
    #[arg(long)]
    pub audit_log_path: Option<String>,
    /// Megabytes the audit log may reach before it is rotated (0: 100, as in
    /// kube-apiserver).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (0: all).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Days a rotated audit log is kept (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    #[arg(long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

pub use server::{run, start, Running, Server};
