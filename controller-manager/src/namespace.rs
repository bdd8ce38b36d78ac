//! The namespace controller: a namespace being deleted (Terminating) has everything in
//! it deleted, every namespaced kind of the registry; once nothing is left its
//! `kubernetes` finalizer is removed (`namespaces/<name>/finalize`) and the apiserver
//! lets it go.

use crate::controller::{run_workers, Requeue};
use crate::Context;
use client::dynamic::DynamicApi;
use client::informer::Event;
use client::{DeleteParams, Informer, WorkQueue};
use k8s_openapi::api::core::v1::Namespace;
use serde_json::json;
use std::time::Duration;

#[derive(Clone)]
pub struct NamespaceController {
    ctx: Context,
    namespaces: Informer<Namespace>,
    queue: WorkQueue<String>,
}

impl NamespaceController {
    pub fn new(ctx: &Context) -> Self {
        let c = NamespaceController {
            ctx: ctx.clone(),
            namespaces: ctx.factory.informer::<Namespace>(),
            queue: WorkQueue::default(),
        };
        let q = c.queue.clone();
        c.namespaces.add_handler(move |ev| {
            if let Event::Add(n) | Event::Update(_, n) = ev {
                if n.metadata.deletion_timestamp.is_some() {
                    q.add(n.metadata.name.clone().unwrap_or_default());
                }
            }
        });
        c
    }

    pub fn informers(&self) -> Vec<Box<dyn client::informer::Startable>> {
        vec![Box::new(self.namespaces.clone())]
    }

    pub fn start(&self, workers: usize) {
        let me = self.clone();
        run_workers("namespace", self.queue.clone(), workers, move |ns| {
            let me = me.clone();
            async move { me.sync(&ns).await }
        });
    }

    async fn sync(&self, name: &str) -> anyhow::Result<Requeue> {
        let Some(ns) = self.namespaces.store().get(name) else {
            return Ok(None);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        let mut left = 0usize;
        for info in api::registry::RESOURCES
            .iter()
            .filter(|r| r.namespaced && r.verbs.contains(&"list") && r.verbs.contains(&"delete"))
        {
            let dynamic = DynamicApi::new(self.ctx.client.clone(), info);
            let objects = match dynamic.list(name).await {
                Ok(o) => o,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(anyhow::anyhow!("listing {} in {name}: {e}", info.resource)),
            };
            for o in objects {
                left += 1;
                if !o["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let obj_name = o["metadata"]["name"].as_str().unwrap_or_default();
                let dp = DeleteParams {
                    precondition_uid: o["metadata"]["uid"].as_str().map(str::to_string),
                    ..Default::default()
                };
                match dynamic.delete(name, obj_name, &dp).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => {
                        return Err(anyhow::anyhow!(
                            "deleting {}/{obj_name} in {name}: {e}",
                            info.resource
                        ))
                    }
                }
            }
        }
        if left > 0 {
            // Pods finish gracefully (their kubelet removes them); look again soon.
            return Ok(Some(Duration::from_secs(1)));
        }
        let finalizers: Vec<String> = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != "kubernetes")
            .collect();
        let mut body = serde_json::to_value(ns.as_ref())?;
        body["spec"] = json!({"finalizers": finalizers});
        let namespaces = DynamicApi::new(
            self.ctx.client.clone(),
            api::registry::by_resource("", "v1", "namespaces")
                .ok_or_else(|| anyhow::anyhow!("namespaces are not in the registry"))?,
        );
        match namespaces.update_subresource(name, "finalize", &body).await {
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) if e.is_conflict() => Ok(Some(Duration::from_millis(100))),
            Err(e) => Err(e.into()),
        }
    }
}
