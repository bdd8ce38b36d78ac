//! The Kubernetes object model, shared by the apiserver and every client of it.
//!
//! Owns: the types (re-exported from `k8s-openapi`), the resource registry (group,
//! version, resource, kind, scope, short names, verbs, subresources), label and field
//! selectors, resource quantities, quota accounting, name validation, the kubeconfig file format, and the pod-to-node
//! rules (taints, node affinity, pod requests) every component applies alike.
//!
//! Must not: do I/O beyond reading a kubeconfig file, or know about any transport.
//! Everything here is pure so servers and clients agree on it byte for byte.

pub use k8s_openapi;

pub mod fields;
pub mod kubeconfig;
pub mod labels;
pub mod names;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod scheduling;

pub use fields::FieldSelector;
pub use kubeconfig::Kubeconfig;
pub use labels::Selector as LabelSelector;
pub use quantity::Quantity;
pub use registry::ResourceInfo;

#[cfg(test)]
mod fuzz;
