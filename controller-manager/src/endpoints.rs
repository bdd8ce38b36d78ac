//! The endpoints and endpointslice controllers: for each Service with a selector, the
//! addresses of its pods (ready, and not ready) with the ports its `targetPort`s resolve
//! to in each pod (a named port per pod). Endpoints group pods by identical port sets;
//! EndpointSlices hold at most 100 endpoints each, labelled with
//! `kubernetes.io/service-name`, with ready/serving/terminating conditions.

use crate::controller::{self, controller_ref, run_workers, Requeue};
use crate::pods;
use crate::Context;
use api::LabelSelector;
use client::informer::Event;
use client::{Api, DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MAX_PER_SLICE: usize = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Endpoints,
    Slices,
}

#[derive(Clone)]
pub struct EndpointsController {
    ctx: Context,
    kind: Kind,
    services: Informer<Service>,
    pods: Informer<Pod>,
    slices: Informer<EndpointSlice>,
    endpoints: Informer<Endpoints>,
    queue: WorkQueue<String>,
}

fn selector(svc: &Service) -> Option<LabelSelector> {
    let sel = svc
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())?;
    let ls = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(sel.clone()),
        match_expressions: None,
    };
    LabelSelector::from_label_selector(Some(&ls)).ok()
}

/// One resolved port of a pod: (name, port, protocol).
type Port = (String, i32, String);

/// The service's ports as this pod serves them; `None` for a port the pod does not have
/// (a named targetPort it does not declare).
fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    let mut out = Vec::new();
    for sp in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &sp.target_port {
            None => Some(sp.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(name)) => name.parse().ok().or_else(|| {
                pod.spec
                    .as_ref()?
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find_map(|p| {
                        (p.name.as_deref() == Some(name.as_str())
                            && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                            .then_some(p.container_port)
                    })
            }),
        };
        if let Some(port) = port {
            out.push((sp.name.clone().unwrap_or_default(), port, protocol));
        }
    }
    out
}

struct Member {
    pod: Arc<Pod>,
    ip: String,
    ready: bool,
    terminating: bool,
    ports: Vec<Port>,
}

impl EndpointsController {
    pub fn new(ctx: &Context, kind: Kind) -> Self {
        let c = EndpointsController {
            ctx: ctx.clone(),
            kind,
            services: ctx.factory.informer::<Service>(),
            pods: ctx.factory.informer::<Pod>(),
            slices: ctx.factory.informer::<EndpointSlice>(),
            endpoints: ctx.factory.informer::<Endpoints>(),
            queue: WorkQueue::default(),
        };
        c.services
            .add_handler(controller::enqueue_own::<Service>(&c.queue));
        let (q, services) = (c.queue.clone(), c.services.clone());
        let for_pod = move |p: &Pod, q: &WorkQueue<String>| {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            for svc in services.store().in_namespace(ns) {
                if selector(&svc).is_some_and(|s| s.matches_opt(p.metadata.labels.as_ref())) {
                    q.add(controller::key(&svc.metadata));
                }
            }
        };
        c.pods.add_handler(move |ev| match ev {
            Event::Add(p) | Event::Delete(p) => for_pod(p, &q),
            Event::Update(old, new) => {
                if old.status != new.status
                    || old.metadata.labels != new.metadata.labels
                    || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
                {
                    for_pod(old, &q);
                    for_pod(new, &q);
                }
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        let mut v: Vec<Box<dyn client::informer::Startable>> =
            vec![Box::new(self.services.clone()), Box::new(self.pods.clone())];
        match self.kind {
            Kind::Endpoints => v.push(Box::new(self.endpoints.clone())),
            Kind::Slices => v.push(Box::new(self.slices.clone())),
        }
        v
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        let name = match self.kind {
            Kind::Endpoints => "endpoint",
            Kind::Slices => "endpointslice",
        };
        run_workers(name, self.queue.clone(), workers, move |key| {
            let me = me.clone();
            async move { me.sync(&key).await }
        });
    }

    fn members(&self, svc: &Service, sel: &LabelSelector, ns: &str) -> Vec<Member> {
        let publish = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let mut out: Vec<Member> = self
            .pods
            .store()
            .in_namespace(ns)
            .into_iter()
            .filter(|p| sel.matches_opt(p.metadata.labels.as_ref()))
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .filter_map(|p| {
                let ip = p
                    .status
                    .as_ref()?
                    .pod_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())?;
                Some(Member {
                    ip,
                    ready: publish || pods::is_ready(&p),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    ports: resolve_ports(svc, &p),
                    pod: p,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.ip.cmp(&b.ip)
                .then_with(|| a.pod.metadata.name.cmp(&b.pod.metadata.name))
        });
        out
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Requeue> {
        let (ns, name) = controller::split(key);
        let svc = self.services.store().get(key);
        let sel = svc.as_deref().and_then(selector);
        match self.kind {
            Kind::Endpoints => {
                self.sync_endpoints(ns, name, svc.as_deref(), sel.as_ref())
                    .await
            }
            Kind::Slices => {
                self.sync_slices(ns, name, svc.as_deref(), sel.as_ref())
                    .await
            }
        }
    }

    fn target(p: &Pod) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
            ..Default::default()
        }
    }

    async fn sync_endpoints(
        &self,
        ns: &str,
        name: &str,
        svc: Option<&Service>,
        sel: Option<&LabelSelector>,
    ) -> anyhow::Result<Requeue> {
        let api: Api<Endpoints> = Api::namespaced(self.ctx.client.clone(), ns);
        let existing = self.endpoints.store().get(&format!("{ns}/{name}"));
        let Some(svc) = svc else {
            if existing.is_some() {
                ignore(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(None);
        };
        let Some(sel) = sel else { return Ok(None) }; // no selector: the user manages them
                                                      // Group by port set; terminating pods are left out of Endpoints.
        let mut groups: BTreeMap<Vec<Port>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
            BTreeMap::new();
        for m in self
            .members(svc, sel, ns)
            .into_iter()
            .filter(|m| !m.terminating)
        {
            let addr = EndpointAddress {
                ip: m.ip.clone(),
                node_name: m.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(Self::target(&m.pod)),
                hostname: None,
            };
            let g = groups.entry(m.ports.clone()).or_default();
            if m.ready {
                g.0.push(addr);
            } else {
                g.1.push(addr);
            }
        }
        let subsets: Vec<EndpointSubset> = groups
            .into_iter()
            .map(|(ports, (ready, not_ready))| EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect()
                }),
            })
            .collect();
        let subsets = (!subsets.is_empty()).then_some(subsets);
        let labels = svc.metadata.labels.clone();
        match existing {
            Some(e) if e.subsets == subsets && e.metadata.labels == labels => Ok(None),
            Some(e) => {
                let mut updated = e.as_ref().clone();
                updated.subsets = subsets;
                updated.metadata.labels = labels;
                ignore(api.replace(&updated).await)?;
                Ok(None)
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        labels,
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&ep).await {
                    Ok(_) => Ok(None),
                    Err(e) if e.is_already_exists() => {
                        Ok(Some(std::time::Duration::from_millis(100)))
                    }
                    Err(e) if e.code() == 403 => Ok(None), // namespace terminating
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn sync_slices(
        &self,
        ns: &str,
        name: &str,
        svc: Option<&Service>,
        sel: Option<&LabelSelector>,
    ) -> anyhow::Result<Requeue> {
        let api: Api<EndpointSlice> = Api::namespaced(self.ctx.client.clone(), ns);
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .store()
            .in_namespace(ns)
            .into_iter()
            .filter(|s| {
                let l = s.metadata.labels.as_ref();
                l.and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(name)
                    && l.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str)
                        == Some(MANAGED_BY)
            })
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let desired: Vec<(Vec<Port>, Vec<Endpoint>)> = match (svc, sel) {
            (Some(svc), Some(sel)) => {
                let mut groups: BTreeMap<Vec<Port>, Vec<Endpoint>> = BTreeMap::new();
                for m in self.members(svc, sel, ns) {
                    groups.entry(m.ports.clone()).or_default().push(Endpoint {
                        addresses: vec![m.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(m.ready && !m.terminating),
                            serving: Some(m.ready),
                            terminating: Some(m.terminating),
                        }),
                        node_name: m.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                        target_ref: Some(Self::target(&m.pod)),
                        ..Default::default()
                    });
                }
                let mut out = Vec::new();
                for (ports, eps) in groups {
                    for chunk in eps.chunks(MAX_PER_SLICE) {
                        out.push((ports.clone(), chunk.to_vec()));
                    }
                }
                if out.is_empty() {
                    out.push((Vec::new(), Vec::new())); // an empty slice says "no endpoints"
                }
                out
            }
            (Some(_), None) => return Ok(None),
            (None, _) => Vec::new(),
        };
        let mut existing = existing.into_iter();
        for (ports, endpoints) in desired {
            let Some(svc) = svc else { break };
            let mut labels = svc.metadata.labels.clone().unwrap_or_default();
            labels.insert(SERVICE_NAME_LABEL.into(), name.into());
            labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
            let ports: Vec<SlicePort> = ports
                .into_iter()
                .map(|(n, port, protocol)| SlicePort {
                    name: Some(n),
                    port: Some(port),
                    protocol: Some(protocol),
                    app_protocol: None,
                })
                .collect();
            match existing.next() {
                Some(cur) => {
                    if cur.endpoints == endpoints
                        && cur.ports.as_ref() == Some(&ports)
                        && cur.metadata.labels.as_ref() == Some(&labels)
                    {
                        continue;
                    }
                    let mut updated = cur.as_ref().clone();
                    updated.endpoints = endpoints;
                    updated.ports = Some(ports);
                    updated.metadata.labels = Some(labels);
                    ignore(api.replace(&updated).await)?;
                }
                None => {
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(format!("{name}-")),
                            namespace: Some(ns.into()),
                            labels: Some(labels),
                            owner_references: Some(vec![controller_ref(
                                "v1",
                                "Service",
                                &svc.metadata,
                            )]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints,
                        ports: Some(ports),
                    };
                    match api.create(&slice).await {
                        Ok(_) => {}
                        Err(e) if e.code() == 403 => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        for extra in existing {
            let dp = DeleteParams {
                precondition_uid: extra.metadata.uid.clone(),
                ..Default::default()
            };
            ignore(
                api.delete(extra.metadata.name.as_deref().unwrap_or_default(), &dp)
                    .await,
            )?;
        }
        Ok(None)
    }
}

/// NotFound and Conflict mean a newer state is on its way through the informer.
fn ignore<T>(r: client::Result<T>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
