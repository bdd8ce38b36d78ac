//! Service ClusterIP and NodePort allocation from `--service-cluster-ip-range` and
//! `--service-node-port-range`.
//!
//! Each allocated value is a storage key (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`) created in the same transaction as the
//! service and deleted with it, so two services can never hold the same one, even
//! across apiserver replicas, and nothing leaks when a write fails.

use crate::error::Cause;
use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;

pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

#[derive(Debug, Clone)]
pub struct ServiceRanges {
    network: u32,
    /// Number of addresses in the range (network and broadcast excluded from use).
    size: u32,
    ports: (u16, u16),
}

impl ServiceRanges {
    pub fn parse(cidr: &str, ports: &str) -> anyhow::Result<Self> {
        let (addr, bits) = cidr.split_once('/').with_context(|| {
            format!(
                "--service-cluster-ip-range {cidr:?}: expected an IPv4 CIDR such as 10.96.0.0/12"
            )
        })?;
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("--service-cluster-ip-range {cidr:?}: bad address"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .with_context(|| {
                format!("--service-cluster-ip-range {cidr:?}: the prefix length must be 8..30")
            })?;
        let mask = u32::MAX << (32 - bits);
        let (lo, hi) = ports
            .split_once('-')
            .with_context(|| format!("--service-node-port-range {ports:?}: expected LOW-HIGH"))?;
        let lo: u16 = lo
            .trim()
            .parse()
            .context("--service-node-port-range: bad low port")?;
        let hi: u16 = hi
            .trim()
            .parse()
            .context("--service-node-port-range: bad high port")?;
        if lo == 0 || hi < lo {
            bail!("--service-node-port-range {ports:?}: LOW must be > 0 and <= HIGH");
        }
        Ok(ServiceRanges {
            network: u32::from(addr) & mask,
            size: 1 << (32 - bits),
            ports: (lo, hi),
        })
    }

    /// The `kubernetes` service's address: the first usable one.
    pub fn first_ip(&self) -> String {
        Ipv4Addr::from(self.network + 1).to_string()
    }

    fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>().is_ok_and(|a| {
            let a = u32::from(a);
            a > self.network && a < self.network + self.size - 1
        })
    }

    /// The allocation keys a stored service holds.
    pub fn held(&self, svc: &Value) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(ip) = svc["spec"]["clusterIP"].as_str() {
            if ip != "None" && !ip.is_empty() {
                keys.push(format!("{IP_PREFIX}{ip}"));
            }
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_i64().filter(|n| *n > 0) {
                keys.push(format!("{PORT_PREFIX}{np}"));
            }
        }
        keys
    }

    /// Fills in an unset ClusterIP and the node ports a NodePort/LoadBalancer service
    /// needs, avoiding `taken` keys; checks values the user chose. `old` is the stored
    /// service on update (its clusterIP carries over).
    pub fn assign(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        taken: &HashSet<String>,
    ) -> Vec<Cause> {
        let mut causes = Vec::new();
        let mut rng = rand::thread_rng();
        let ty = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return causes;
        }
        let spec = &mut svc["spec"];
        let ip = match spec["clusterIP"].as_str() {
            Some(ip) if !ip.is_empty() => ip.to_string(),
            _ => match old.and_then(|o| o["spec"]["clusterIP"].as_str()) {
                Some(ip) if !ip.is_empty() => ip.to_string(),
                _ => {
                    let mut pick = String::new();
                    for _ in 0..10_000 {
                        let off = rng.gen_range(2..self.size - 1);
                        let candidate = Ipv4Addr::from(self.network + off).to_string();
                        if !taken.contains(&format!("{IP_PREFIX}{candidate}")) {
                            pick = candidate;
                            break;
                        }
                    }
                    if pick.is_empty() {
                        causes.push(Cause::invalid(
                            "spec.clusterIPs",
                            &json!([]),
                            "failed to allocate IP: range is full",
                        ));
                        return causes;
                    }
                    pick
                }
            },
        };
        if ip != "None" && !self.contains(&ip) {
            causes.push(Cause::invalid(
                "spec.clusterIPs",
                &json!([ip]),
                "failed to allocate IP: the provided IP is not in the valid range",
            ));
        }
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
        let mut used: HashSet<i64> = HashSet::new();
        if let Some(ports) = spec["ports"].as_array_mut() {
            for (i, p) in ports.iter_mut().enumerate() {
                let given = p["nodePort"].as_i64().filter(|n| *n > 0);
                match given {
                    Some(np) => {
                        if np < self.ports.0 as i64 || np > self.ports.1 as i64 {
                            causes.push(Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(np),
                                &format!(
                                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                                    self.ports.0, self.ports.1
                                ),
                            ));
                        }
                        if !used.insert(np) {
                            causes.push(Cause::duplicate(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(np),
                            ));
                        }
                    }
                    None if wants_node_ports => {
                        // Keep the port the stored service had for the same port entry.
                        let kept = old
                            .and_then(|o| o["spec"]["ports"].as_array())
                            .and_then(|ops| {
                                ops.iter().find(|op| {
                                    op["port"] == p["port"] && op["protocol"] == p["protocol"]
                                })
                            })
                            .and_then(|op| op["nodePort"].as_i64())
                            .filter(|n| *n > 0 && !used.contains(n));
                        let np = match kept {
                            Some(n) => n,
                            None => {
                                let mut pick = 0;
                                for _ in 0..100_000 {
                                    let c = rng.gen_range(self.ports.0..=self.ports.1) as i64;
                                    if !used.contains(&c)
                                        && !taken.contains(&format!("{PORT_PREFIX}{c}"))
                                    {
                                        pick = c;
                                        break;
                                    }
                                }
                                pick
                            }
                        };
                        if np == 0 {
                            causes.push(Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &json!(0),
                                "failed to allocate a node port: range is full",
                            ));
                        } else {
                            used.insert(np);
                            p["nodePort"] = json!(np);
                        }
                    }
                    None => {}
                }
            }
        }
        causes
    }

    /// The cause to report when a value the user chose is already held by another service.
    pub fn taken_cause(key: &str) -> Cause {
        if let Some(ip) = key.strip_prefix(IP_PREFIX) {
            Cause::invalid(
                "spec.clusterIPs",
                &json!([ip]),
                &format!("failed to allocate IP {ip}: provided IP is already allocated"),
            )
        } else {
            let port = key.strip_prefix(PORT_PREFIX).unwrap_or(key);
            Cause::invalid(
                "spec.ports[*].nodePort",
                &json!(port.parse::<i64>().unwrap_or(0)),
                "provided port is already allocated",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_inside_the_ranges_and_avoids_taken_values() {
        let r = ServiceRanges::parse("10.96.0.0/29", "30000-30001").unwrap();
        assert_eq!(r.first_ip(), "10.96.0.1");
        let taken: HashSet<String> = ["10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5"]
            .iter()
            .map(|ip| format!("{IP_PREFIX}{ip}"))
            .chain([format!("{PORT_PREFIX}30000")])
            .collect();
        let mut svc =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(r.assign(&mut svc, None, &taken).is_empty());
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.6");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
        assert_eq!(r.held(&svc).len(), 2);
        let mut bad = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        assert_eq!(r.assign(&mut bad, None, &HashSet::new()).len(), 1);
        assert!(ServiceRanges::parse("10.96.0.0", "1-2").is_err());
    }
}
