//! Typed CRUD over the gRPC `Resources` API for any `k8s-openapi` type: `Api<Pod>`,
//! `Api<Node>`, … Objects travel as their Kubernetes JSON, so the type only decides the
//! resource path and the serde round trip.

use crate::conn::Client;
use crate::error::{Error, Result};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use proto::apiserver::v1 as pb;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

/// What `Api` can carry: a top-level Kubernetes object type.
pub trait Object:
    Resource + Metadata<Ty = ObjectMeta> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}

impl<T> Object for T where
    T: Resource
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// `namespace/name` (or `name` for cluster-scoped objects): the key informers and work
/// queues use, as in client-go.
pub fn key_of<K: Object>(obj: &K) -> String {
    let m = obj.metadata();
    let name = m.name.as_deref().unwrap_or_default();
    match m.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// The resourceVersion of an object as a number (the apiserver's are kvstore revisions).
pub fn revision_of<K: Object>(obj: &K) -> i64 {
    obj.metadata()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Page size (0: everything in one answer).
    pub limit: i64,
    pub continue_token: String,
    /// "" for a consistent read, "0" for whatever the apiserver's cache holds.
    pub resource_version: String,
}

impl ListParams {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = selector.into();
        self
    }
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = selector.into();
        self
    }
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
    pub continue_token: String,
}

#[derive(Clone, Debug)]
pub enum Patch {
    Merge(serde_json::Value),
    Json(serde_json::Value),
    Strategic(serde_json::Value),
    /// Server-side apply as `manager`.
    Apply {
        manager: String,
        force: bool,
        config: serde_json::Value,
    },
}

#[derive(Clone, Debug, Default)]
pub struct DeleteParams {
    /// Background, Foreground or Orphan ("" for the resource's default).
    pub propagation_policy: String,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

impl DeleteParams {
    pub fn propagation(policy: &str) -> Self {
        DeleteParams {
            propagation_policy: policy.into(),
            ..Default::default()
        }
    }
}

/// One event of a watch stream.
#[derive(Clone, Debug)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// No object changed, but the stream has seen everything up to this resourceVersion.
    Bookmark(String),
    /// The server ended the watch with a `Status` (410: the revision is compacted).
    Error(Error),
}

/// One event of a gRPC watch stream, its object decoded by `decode`.
pub(crate) fn decode_event<T>(
    ev: pb::WatchEvent,
    decode: impl Fn(&[u8]) -> Result<T>,
) -> Result<WatchEvent<T>> {
    let json = ev.object.map(|o| o.json).unwrap_or_default();
    Ok(match ev.r#type.as_str() {
        "ADDED" => WatchEvent::Added(decode(&json)?),
        "MODIFIED" => WatchEvent::Modified(decode(&json)?),
        "DELETED" => WatchEvent::Deleted(decode(&json)?),
        "BOOKMARK" => {
            let v: serde_json::Value = serde_json::from_slice(&json)?;
            WatchEvent::Bookmark(
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
        "ERROR" => WatchEvent::Error(Error::from_status_json(&json)),
        other => return Err(Error::Decode(format!("unknown watch event type {other:?}"))),
    })
}

/// Typed access to one resource, in one namespace or across all.
pub struct Api<K> {
    client: Client,
    namespace: String,
    _k: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            _k: PhantomData,
        }
    }
}

impl<K: Object> Api<K> {
    /// All namespaces (or a cluster-scoped resource).
    pub fn all(client: Client) -> Self {
        Api {
            client,
            namespace: String::new(),
            _k: PhantomData,
        }
    }

    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Api {
            client,
            namespace: namespace.into(),
            _k: PhantomData,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn reference(&self, namespace: &str, name: &str, subresource: &str) -> pb::ResourceRef {
        pb::ResourceRef {
            group: K::GROUP.into(),
            version: K::VERSION.into(),
            resource: K::URL_PATH_SEGMENT.into(),
            namespace: namespace.into(),
            name: name.into(),
            subresource: subresource.into(),
        }
    }

    /// The namespace a write of `obj` goes to: the object's, else this Api's.
    fn namespace_of(&self, obj: &K) -> Result<String> {
        let own = obj.metadata().namespace.clone().unwrap_or_default();
        if !self.namespace.is_empty() && !own.is_empty() && own != self.namespace {
            return Err(Error::Config(format!(
                "the object's namespace {own:?} is not the Api's namespace {:?}",
                self.namespace
            )));
        }
        Ok(if own.is_empty() {
            self.namespace.clone()
        } else {
            own
        })
    }

    fn name_of(obj: &K) -> Result<String> {
        obj.metadata()
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Config(format!("the {} has no metadata.name", K::KIND)))
    }

    /// Serializes with `apiVersion` and `kind` set (k8s-openapi adds them).
    fn body(obj: &impl Serialize) -> Result<bytes::Bytes> {
        Ok(serde_json::to_vec(obj)?.into())
    }

    fn decode(json: &[u8]) -> Result<K> {
        serde_json::from_slice(json).map_err(|e| Error::Decode(format!("{}: {e}", K::KIND)))
    }

    pub async fn get(&self, name: &str) -> Result<K> {
        Self::decode(
            &self
                .client
                .get_raw(self.reference(&self.namespace, name, ""))
                .await?,
        )
    }

    /// `None` when the object does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page (all of it when `lp.limit` is 0).
    pub async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>> {
        let out = self
            .client
            .list_raw(pb::ListRequest {
                resource: Some(self.reference(&self.namespace, "", "")),
                label_selector: lp.label_selector.clone(),
                field_selector: lp.field_selector.clone(),
                limit: lp.limit,
                r#continue: lp.continue_token.clone(),
                resource_version: lp.resource_version.clone(),
            })
            .await?;
        let items = out
            .items
            .iter()
            .map(|o| Self::decode(&o.json))
            .collect::<Result<Vec<_>>>()?;
        Ok(ObjectList {
            items,
            resource_version: out.resource_version,
            continue_token: out.r#continue,
        })
    }

    pub async fn create(&self, obj: &K) -> Result<K> {
        let ns = self.namespace_of(obj)?;
        let json = self
            .client
            .create_raw(pb::CreateRequest {
                r#ref: Some(self.reference(&ns, "", "")),
                body: Self::body(obj)?,
                options: None,
            })
            .await?;
        Self::decode(&json)
    }

    /// PUT: fails with a Conflict when `obj`'s resourceVersion is no longer current.
    pub async fn replace(&self, obj: &K) -> Result<K> {
        self.update(obj, "").await
    }

    /// PUT on `status`: only the status is written.
    pub async fn replace_status(&self, obj: &K) -> Result<K> {
        self.update(obj, "status").await
    }

    async fn update(&self, obj: &K, subresource: &str) -> Result<K> {
        let ns = self.namespace_of(obj)?;
        let name = Self::name_of(obj)?;
        let json = self
            .client
            .update_raw(pb::UpdateRequest {
                r#ref: Some(self.reference(&ns, &name, subresource)),
                body: Self::body(obj)?,
                options: None,
            })
            .await?;
        Self::decode(&json)
    }

    pub async fn patch(&self, name: &str, patch: &Patch) -> Result<K> {
        self.patch_subresource(name, "", patch).await
    }

    pub async fn patch_status(&self, name: &str, patch: &Patch) -> Result<K> {
        self.patch_subresource(name, "status", patch).await
    }

    async fn patch_subresource(&self, name: &str, subresource: &str, patch: &Patch) -> Result<K> {
        let (patch_type, body, options) = match patch {
            Patch::Merge(v) => ("application/merge-patch+json", v, None),
            Patch::Json(v) => ("application/json-patch+json", v, None),
            Patch::Strategic(v) => ("application/strategic-merge-patch+json", v, None),
            Patch::Apply {
                manager,
                force,
                config,
            } => (
                "application/apply-patch+yaml",
                config,
                Some(pb::WriteOptions {
                    field_manager: manager.clone(),
                    force: *force,
                    ..Default::default()
                }),
            ),
        };
        let json = self
            .client
            .patch_raw(pb::PatchRequest {
                r#ref: Some(self.reference(&self.namespace, name, subresource)),
                patch_type: patch_type.into(),
                body: Self::body(body)?,
                options,
            })
            .await?;
        Self::decode(&json)
    }

    pub async fn delete(&self, name: &str, dp: &DeleteParams) -> Result<()> {
        let preconditions = (dp.precondition_uid.is_some()
            || dp.precondition_resource_version.is_some())
        .then(|| pb::Preconditions {
            uid: dp.precondition_uid.clone(),
            resource_version: dp.precondition_resource_version.clone(),
        });
        self.client
            .delete_raw(pb::DeleteRequest {
                r#ref: Some(self.reference(&self.namespace, name, "")),
                preconditions,
                propagation_policy: dp.propagation_policy.clone(),
                grace_period_seconds: dp.grace_period_seconds,
                dry_run: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// `delete` of the object a controller saw (its uid in `dp`'s preconditions): an
    /// object already gone, or replaced by a newer one of the same name, is not an error
    /// but `Ok(false)`, nothing deleted (the informer brings the newer state).
    pub async fn delete_if_current(&self, name: &str, dp: &DeleteParams) -> Result<bool> {
        match self.delete(name, dp).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// POST to a subresource (`pods/binding`, `pods/eviction`); the answer as JSON.
    pub async fn create_subresource(
        &self,
        name: &str,
        subresource: &str,
        body: &impl Serialize,
    ) -> Result<serde_json::Value> {
        let json = self
            .client
            .create_raw(pb::CreateRequest {
                r#ref: Some(self.reference(&self.namespace, name, subresource)),
                body: Self::body(body)?,
                options: None,
            })
            .await?;
        Ok(serde_json::from_slice(&json)?)
    }

    /// A watch from `resource_version` with bookmarks. The stream ends when the server
    /// closes it (timeout, apiserver gone); the reflector resumes it.
    pub async fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>>> + Send + Unpin + use<K>> {
        let stream = self
            .client
            .watch_raw(pb::WatchRequest {
                resource: Some(self.reference(&self.namespace, "", "")),
                label_selector: lp.label_selector.clone(),
                field_selector: lp.field_selector.clone(),
                resource_version: resource_version.into(),
                allow_bookmarks: true,
                timeout_seconds: 0,
            })
            .await?;
        Ok(stream.map(|item| decode_event(item?, Self::decode)))
    }
}
