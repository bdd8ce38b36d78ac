//! The serviceaccount controller: a `default` ServiceAccount in every active namespace.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::informer::Event;
use client::{Api, Informer, WorkQueue};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

#[derive(Clone)]
pub struct ServiceAccountController {
    ctx: Context,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
    queue: WorkQueue<String>,
}

impl ServiceAccountController {
    pub fn new(ctx: &Context) -> Self {
        let c = ServiceAccountController {
            ctx: ctx.clone(),
            namespaces: ctx.factory.informer::<Namespace>(),
            accounts: ctx.factory.informer::<ServiceAccount>(),
            queue: WorkQueue::default(),
        };
        let q = c.queue.clone();
        c.namespaces.add_handler(move |ev| {
            if let Event::Add(n) | Event::Update(_, n) = ev {
                q.add(n.metadata.name.clone().unwrap_or_default());
            }
        });
        let q = c.queue.clone();
        c.accounts.add_handler(move |ev| {
            if let Event::Delete(sa) = ev {
                if sa.metadata.name.as_deref() == Some("default") {
                    q.add(sa.metadata.namespace.clone().unwrap_or_default());
                }
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![
            Box::new(self.namespaces.clone()),
            Box::new(self.accounts.clone()),
        ]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("serviceaccount", self.queue.clone(), workers, move |ns| {
            let me = me.clone();
            async move { me.sync(&ns).await }
        });
    }

    async fn sync(&self, ns: &str) -> anyhow::Result<Requeue> {
        let Some(n) = self.namespaces.store().get(ns) else {
            return Ok(None);
        };
        let terminating = n.metadata.deletion_timestamp.is_some()
            || n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        if terminating
            || self
                .accounts
                .store()
                .get(&format!("{ns}/default"))
                .is_some()
        {
            return Ok(None);
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<ServiceAccount>::namespaced(self.ctx.client.clone(), ns)
            .create(&sa)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if e.is_already_exists() => Ok(None),
            // The namespace started terminating meanwhile.
            Err(e) if e.code() == 403 || e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
