//! The node-ipam controller: each node gets a `/24` `podCIDR` from `--cluster-cidr`,
//! never one another node holds; a deleted node's range is free again.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::informer::Event;
use client::{Api, Informer, Patch, WorkQueue};
use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// An IPv4 range of /24s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

/// Parses `--cluster-cidr` (IPv4, prefix 8..=24).
pub fn parse_cluster_cidr(s: &str) -> anyhow::Result<Cidr> {
    let bad = || {
        anyhow::anyhow!("--cluster-cidr {s:?}: want an IPv4 CIDR with a prefix from /8 to /24, like 10.244.0.0/16")
    };
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=24).contains(&prefix) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - prefix);
    Ok(Cidr {
        base: u32::from(ip) & mask,
        prefix,
    })
}

impl Cidr {
    fn subnets(&self) -> u32 {
        1 << (24 - self.prefix)
    }
    fn subnet(&self, i: u32) -> String {
        format!("{}/24", Ipv4Addr::from(self.base + (i << 8)))
    }
}

#[derive(Clone)]
pub struct NodeIpamController {
    ctx: Context,
    nodes: Informer<Node>,
    queue: WorkQueue<String>,
    cidr: Cidr,
    /// node → range, including assignments the informer has not shown yet.
    assigned: Arc<Mutex<HashMap<String, String>>>,
}

impl NodeIpamController {
    pub fn new(ctx: &Context, cidr: Cidr) -> Self {
        let c = NodeIpamController {
            ctx: ctx.clone(),
            nodes: ctx.factory.informer::<Node>(),
            queue: WorkQueue::default(),
            cidr,
            assigned: Arc::default(),
        };
        let (q, assigned) = (c.queue.clone(), c.assigned.clone());
        c.nodes.add_handler(move |ev| match ev {
            Event::Add(n) | Event::Update(_, n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                match n.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
                    Some(c) => {
                        assigned
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name, c);
                    }
                    None => q.add(name),
                }
            }
            Event::Delete(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                assigned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.nodes.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("nodeipam", self.queue.clone(), workers, move |name| {
            let me = me.clone();
            async move { me.sync(&name).await }
        });
    }

    async fn sync(&self, name: &str) -> anyhow::Result<Requeue> {
        let Some(node) = self.nodes.store().get(name) else {
            return Ok(None);
        };
        if node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some()
        {
            return Ok(None);
        }
        let range = {
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = assigned.get(name) {
                r.clone()
            } else {
                let used: std::collections::HashSet<&String> = assigned.values().collect();
                let Some(free) = (0..self.cidr.subnets())
                    .map(|i| self.cidr.subnet(i))
                    .find(|s| !used.contains(s))
                else {
                    self.ctx.recorder.record(
                        node.as_ref(),
                        "Warning",
                        "CIDRNotAvailable",
                        "no pod CIDR left in --cluster-cidr",
                    );
                    anyhow::bail!("no /24 left in the cluster CIDR for node {name}");
                };
                assigned.insert(name.to_string(), free.clone());
                free
            }
        };
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let patch = json!({"spec": {"podCIDR": range, "podCIDRs": [range]}});
        match api.patch(name, &Patch::Merge(patch)).await {
            Ok(_) => {
                self.ctx.recorder.record(
                    node.as_ref(),
                    "Normal",
                    "CIDRAssignmentSucceeded",
                    &format!("Node {name} got pod CIDR {range}"),
                );
                Ok(None)
            }
            Err(e) if e.is_not_found() => {
                self.assigned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_cidrs() {
        let c = parse_cluster_cidr("10.244.0.0/16").unwrap();
        assert_eq!(c.subnets(), 256);
        assert_eq!(c.subnet(0), "10.244.0.0/24");
        assert_eq!(c.subnet(255), "10.244.255.0/24");
        assert!(parse_cluster_cidr("10.244.0.0/25")
            .unwrap_err()
            .to_string()
            .contains("--cluster-cidr"));
        assert!(parse_cluster_cidr("fd00::/64").is_err());
    }
}
