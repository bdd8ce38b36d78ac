//! Untyped access to any resource of the registry, as JSON: what the namespace
//! controller and the garbage collector need to walk every kind, and the quota controller
//! to hear of any kind's deletions.

use crate::conn::Client;
use crate::error::Result;
use crate::typed::{decode_event, DeleteParams, WatchEvent};
use api::ResourceInfo;
use futures::{Stream, StreamExt};
use proto::apiserver::v1 as pb;
use serde_json::Value;

#[derive(Clone)]
pub struct DynamicApi {
    client: Client,
    info: &'static ResourceInfo,
}

impl DynamicApi {
    pub fn new(client: Client, info: &'static ResourceInfo) -> Self {
        DynamicApi { client, info }
    }

    pub fn info(&self) -> &'static ResourceInfo {
        self.info
    }

    fn reference(&self, namespace: &str, name: &str) -> pb::ResourceRef {
        pb::ResourceRef {
            group: self.info.group.into(),
            version: self.info.version.into(),
            resource: self.info.resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            subresource: String::new(),
        }
    }

    /// Every object in `namespace` ("" for all or cluster-scoped), paged.
    pub async fn list(&self, namespace: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cont = String::new();
        loop {
            let page = self
                .client
                .list_raw(pb::ListRequest {
                    resource: Some(self.reference(namespace, "")),
                    limit: 500,
                    r#continue: cont.clone(),
                    ..Default::default()
                })
                .await?;
            for o in page.items {
                out.push(serde_json::from_slice(&o.json)?);
            }
            if page.r#continue.is_empty() {
                return Ok(out);
            }
            cont = page.r#continue;
        }
    }

    /// The resourceVersion a list of `namespace` has now (a watch from it misses nothing
    /// after it), read with a one-item page.
    pub async fn revision(&self, namespace: &str) -> Result<String> {
        let page = self
            .client
            .list_raw(pb::ListRequest {
                resource: Some(self.reference(namespace, "")),
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok(page.resource_version)
    }

    /// A watch of `namespace` ("" for all) from `resource_version`, with bookmarks; it
    /// ends when the server closes it.
    pub async fn watch(
        &self,
        namespace: &str,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<Value>>> + Send + Unpin + use<>> {
        let stream = self
            .client
            .watch_raw(pb::WatchRequest {
                resource: Some(self.reference(namespace, "")),
                resource_version: resource_version.into(),
                allow_bookmarks: true,
                ..Default::default()
            })
            .await?;
        Ok(stream.map(|item| decode_event(item?, |json| Ok(serde_json::from_slice(json)?))))
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<Value> {
        Ok(serde_json::from_slice(
            &self.client.get_raw(self.reference(namespace, name)).await?,
        )?)
    }

    pub async fn delete(&self, namespace: &str, name: &str, dp: &DeleteParams) -> Result<()> {
        let preconditions = (dp.precondition_uid.is_some()
            || dp.precondition_resource_version.is_some())
        .then(|| pb::Preconditions {
            uid: dp.precondition_uid.clone(),
            resource_version: dp.precondition_resource_version.clone(),
        });
        self.client
            .delete_raw(pb::DeleteRequest {
                r#ref: Some(self.reference(namespace, name)),
                preconditions,
                propagation_policy: dp.propagation_policy.clone(),
                grace_period_seconds: dp.grace_period_seconds,
                dry_run: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// A JSON merge patch.
    pub async fn merge_patch(&self, namespace: &str, name: &str, patch: &Value) -> Result<Value> {
        let json = self
            .client
            .patch_raw(pb::PatchRequest {
                r#ref: Some(self.reference(namespace, name)),
                patch_type: "application/merge-patch+json".into(),
                body: serde_json::to_vec(patch)?.into(),
                options: None,
            })
            .await?;
        Ok(serde_json::from_slice(&json)?)
    }

    /// PUT on a subresource (`namespaces/<name>/finalize`).
    pub async fn update_subresource(
        &self,
        name: &str,
        subresource: &str,
        body: &Value,
    ) -> Result<Value> {
        let mut r = self.reference("", name);
        r.subresource = subresource.into();
        let json = self
            .client
            .update_raw(pb::UpdateRequest {
                r#ref: Some(r),
                body: serde_json::to_vec(body)?.into(),
                options: None,
            })
            .await?;
        Ok(serde_json::from_slice(&json)?)
    }
}
