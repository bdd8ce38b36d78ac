//! The root-ca-cert-publisher controller: a `kube-root-ca.crt` ConfigMap in every active
//! namespace whose `ca.crt` is the cluster's CA bundle (`--root-ca-file`, else the CA of
//! the controller-manager's kubeconfig), so pods can verify the apiserver at its
//! in-cluster addresses (the API access volume of every pod projects it). A copy that is
//! deleted or changed is put back.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::informer::Event;
use client::{Api, Informer, WorkQueue};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: (&str, &str) = (
    "kubernetes.io/description",
    "The cluster's CA bundle, to verify the apiserver at its in-cluster addresses \
     (kubernetes.default.svc, the service IP). Published by the controller-manager.",
);

#[derive(Clone)]
pub struct RootCaPublisher {
    ctx: Context,
    namespaces: Informer<Namespace>,
    configmaps: Informer<ConfigMap>,
    queue: WorkQueue<String>,
    ca: Arc<String>,
}

/// The data and annotations a namespace's copy must carry, merged into `cm`; whether
/// anything changed.
fn publish(cm: &mut ConfigMap, ca: &str) -> bool {
    let data = BTreeMap::from([("ca.crt".to_string(), ca.to_string())]);
    let annotations = cm.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let described = annotations.get(DESCRIPTION.0).map(String::as_str) == Some(DESCRIPTION.1);
    if described && cm.data.as_ref() == Some(&data) && cm.binary_data.is_none() {
        return false;
    }
    annotations.insert(DESCRIPTION.0.into(), DESCRIPTION.1.into());
    cm.data = Some(data);
    cm.binary_data = None;
    true
}

impl RootCaPublisher {
    /// `ca`: the bundle to publish (PEM).
    pub fn new(ctx: &Context, ca: String) -> Self {
        let c = RootCaPublisher {
            ctx: ctx.clone(),
            namespaces: ctx.factory.informer::<Namespace>(),
            configmaps: ctx.factory.informer::<ConfigMap>(),
            queue: WorkQueue::default(),
            ca: Arc::new(ca),
        };
        let q = c.queue.clone();
        c.namespaces.add_handler(move |ev| {
            if let Event::Add(n) | Event::Update(_, n) = ev {
                q.add(n.metadata.name.clone().unwrap_or_default());
            }
        });
        let q = c.queue.clone();
        c.configmaps.add_handler(move |ev| {
            let cm = match ev {
                Event::Add(cm) | Event::Update(_, cm) | Event::Delete(cm) => cm,
            };
            if cm.metadata.name.as_deref() == Some(NAME) {
                q.add(cm.metadata.namespace.clone().unwrap_or_default());
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.namespaces.clone()),
            Box::new(self.configmaps.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers(
            "root-ca-cert-publisher",
            self.queue.clone(),
            workers,
            move |ns| {
                let me = me.clone();
                async move { me.sync(&ns).await }
            },
        );
    }

    async fn sync(&self, ns: &str) -> anyhow::Result<Requeue> {
        let Some(n) = self.namespaces.store().get(ns) else {
            return Ok(None);
        };
        if n.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let api = Api::<ConfigMap>::namespaced(self.ctx.client.clone(), ns);
        let result = match self.configmaps.store().get(&format!("{ns}/{NAME}")) {
            Some(current) => {
                let mut cm = (*current).clone();
                if !publish(&mut cm, &self.ca) {
                    return Ok(None);
                }
                api.replace(&cm).await.map(drop)
            }
            None => {
                let mut cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        namespace: Some(ns.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                publish(&mut cm, &self.ca);
                api.create(&cm).await.map(drop)
            }
        };
        match result {
            Ok(()) => Ok(None),
            // Our cache was behind: the informer's event for the copy brings the
            // namespace back.
            Err(e) if e.is_already_exists() || e.is_conflict() => Ok(None),
            // The namespace went or started terminating meanwhile.
            Err(e) if e.code() == 403 || e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_rewritten_only_when_it_differs() {
        let mut cm = ConfigMap::default();
        assert!(publish(&mut cm, "PEM"));
        assert_eq!(cm.data.as_ref().unwrap()["ca.crt"], "PEM");
        assert!(!publish(&mut cm, "PEM"));
        cm.data.as_mut().unwrap().insert("extra".into(), "x".into());
        assert!(publish(&mut cm, "PEM"));
        assert_eq!(cm.data.as_ref().unwrap().len(), 1);
        assert!(publish(&mut cm, "OTHER"));
    }
}
