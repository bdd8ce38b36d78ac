//! The internal gRPC `Resources` service (DESIGN.md §5), served on the HTTPS port next
//! to REST: the same store, the same watch streams, objects as their JSON.

use crate::auth::{Attributes, User};
use crate::error::ApiError;
use crate::rest::watch_params;
use crate::store::{DeleteOptions, Deleted, ListOptions, WriteOptions};
use crate::watch::{self, Out};
use crate::Server;
use api::{FieldSelector, LabelSelector, ResourceInfo};
use bytes::Bytes;
use futures::Stream;
use proto::apiserver::v1 as pb;
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Grpc {
    pub server: Arc<Server>,
}

fn info_of(
    r: Option<&pb::ResourceRef>,
) -> Result<(&'static ResourceInfo, pb::ResourceRef), Status> {
    let r = r
        .cloned()
        .ok_or_else(|| Status::invalid_argument("the resource reference is required"))?;
    let info = api::registry::by_resource(&r.group, &r.version, &r.resource).ok_or_else(|| {
        ApiError::no_route()
            .with_message(format!(
                "the server could not find the requested resource ({}/{} {})",
                r.group, r.version, r.resource
            ))
            .to_grpc()
    })?;
    Ok((info, r))
}

fn object(v: &Value) -> pb::Object {
    pb::Object {
        json: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    }
}

fn parse(body: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")).to_grpc())
}

/// The write's manager: `options.field_manager`, else the client's user agent name.
fn write_options<T>(
    req: &Request<T>,
    dry_run: bool,
    authorizer: &Arc<dyn crate::auth::Authorizer>,
) -> WriteOptions
where
    T: HasOptions,
{
    let manager = req
        .get_ref()
        .field_manager()
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .or_else(|| {
            req.metadata()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .map(str::to_string)
        });
    WriteOptions {
        dry_run,
        manager,
        apply: false,
        requester: requester(req, authorizer),
    }
}

/// The request's user with the authorizer that judged it (see `WriteOptions`).
fn requester<T>(
    req: &Request<T>,
    authorizer: &Arc<dyn crate::auth::Authorizer>,
) -> Option<Arc<crate::auth::Requester>> {
    let user = req.extensions().get::<User>()?;
    Some(Arc::new(crate::auth::Requester {
        user: user.clone(),
        authorizer: authorizer.clone(),
    }))
}

trait HasOptions {
    fn field_manager(&self) -> Option<&str>;
}

impl HasOptions for pb::CreateRequest {
    fn field_manager(&self) -> Option<&str> {
        self.options.as_ref().map(|o| o.field_manager.as_str())
    }
}

impl HasOptions for pb::UpdateRequest {
    fn field_manager(&self) -> Option<&str> {
        self.options.as_ref().map(|o| o.field_manager.as_str())
    }
}

impl HasOptions for pb::PatchRequest {
    fn field_manager(&self) -> Option<&str> {
        self.options.as_ref().map(|o| o.field_manager.as_str())
    }
}

fn dry_run(d: &[String]) -> bool {
    d.iter().any(|x| x == "All")
}

impl Grpc {
    fn authorize<T>(
        &self,
        req: &Request<T>,
        verb: &str,
        info: &ResourceInfo,
        r: &pb::ResourceRef,
    ) -> Result<(), Status> {
        let user = req
            .extensions()
            .get::<User>()
            .ok_or_else(|| ApiError::unauthorized().to_grpc())?;
        let attrs = Attributes {
            user,
            verb,
            group: info.group,
            resource: info.resource,
            subresource: &r.subresource,
            namespace: &r.namespace,
            name: &r.name,
            path: "",
        };
        crate::audit::authorize(self.server.authorizer.as_ref(), &attrs, info.version).map_err(
            |why| {
                ApiError::forbidden(crate::auth::forbidden_message(
                    &attrs,
                    &info.qualified_resource(),
                    &why,
                ))
                .to_grpc()
            },
        )
    }

    fn list_options(
        info: &ResourceInfo,
        labels: &str,
        fields: &str,
    ) -> Result<ListOptions, Status> {
        let labels = if labels.is_empty() {
            None
        } else {
            Some(LabelSelector::parse(labels).map_err(|e| {
                ApiError::bad_request(format!("unable to parse requirement: {e}")).to_grpc()
            })?)
        };
        let fields = if fields.is_empty() {
            FieldSelector::default()
        } else {
            FieldSelector::parse_for(fields, info.group, info.resource).map_err(|e| {
                ApiError::bad_request(format!("field label not supported: {e}")).to_grpc()
            })?
        };
        Ok(ListOptions {
            labels,
            fields,
            ..Default::default()
        })
    }
}

fn ns_opt(r: &pb::ResourceRef) -> Option<&str> {
    (!r.namespace.is_empty()).then_some(r.namespace.as_str())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::resources_server::Resources for Grpc {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Object>, Status> {
        let (info, r) = info_of(req.get_ref().r#ref.as_ref())?;
        self.authorize(&req, "get", info, &r)?;
        let o = self
            .server
            .store
            .get(info, &r.namespace, &r.name, &req.get_ref().resource_version)
            .await
            .map_err(|e| e.to_grpc())?;
        Ok(Response::new(object(&o)))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ObjectList>, Status> {
        let (info, r) = info_of(req.get_ref().resource.as_ref())?;
        self.authorize(&req, "list", info, &r)?;
        let m = req.get_ref();
        let mut opts = Self::list_options(info, &m.label_selector, &m.field_selector)?;
        opts.limit = m.limit.max(0);
        opts.continue_token = (!m.r#continue.is_empty()).then(|| m.r#continue.clone());
        opts.resource_version = m.resource_version.clone();
        opts.json_only = true;
        let res = self
            .server
            .store
            .list(info, ns_opt(&r), &opts)
            .await
            .map_err(|e| e.to_grpc())?;
        let stamped = res.json.into_iter().map(|j| pb::Object {
            json: Bytes::from(j),
        });
        Ok(Response::new(pb::ObjectList {
            items: res.items.iter().map(|o| object(o)).chain(stamped).collect(),
            resource_version: res.revision.to_string(),
            r#continue: res.continue_token.unwrap_or_default(),
            remaining_item_count: None,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (info, r) = info_of(req.get_ref().resource.as_ref())?;
        self.authorize(&req, "watch", info, &r)?;
        let m = req.get_ref();
        let mut opts = Self::list_options(info, &m.label_selector, &m.field_selector)?;
        opts.resource_version = m.resource_version.clone();
        let timeout = (m.timeout_seconds > 0).then_some(m.timeout_seconds as u64);
        let params = watch_params(info, ns_opt(&r), &opts, m.allow_bookmarks, timeout)
            .map_err(|e| e.to_grpc())?;
        let stream = watch::stream(
            self.server.store.cache(info).clone(),
            self.server.store.storage.clone(),
            params,
            self.server.metrics.watchers.clone(),
            move |out| {
                Ok(match out {
                    Out::Event { kind, object } => pb::WatchEvent {
                        r#type: kind.to_string(),
                        object: Some(pb::Object {
                            json: object.json(),
                        }),
                    },
                    Out::Bookmark(rv) => pb::WatchEvent {
                        r#type: "BOOKMARK".into(),
                        object: Some(object(
                            &json!({"kind": info.kind, "apiVersion": info.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}}),
                        )),
                    },
                    Out::Error(e) => pb::WatchEvent {
                        r#type: "ERROR".into(),
                        object: Some(object(&e.to_status())),
                    },
                })
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        let (info, r) = info_of(req.get_ref().r#ref.as_ref())?;
        self.authorize(&req, "create", info, &r)?;
        let m = req.get_ref();
        crate::audit::request_body(&m.body);
        let dry = m.options.as_ref().is_some_and(|o| dry_run(&o.dry_run));
        let body = parse(&m.body)?;
        let store = &self.server.store;
        let out = match r.subresource.as_str() {
            "" => {
                store
                    .create(
                        info,
                        &r.namespace,
                        body,
                        &write_options(&req, dry, &self.server.authorizer),
                    )
                    .await
            }
            "binding" if info.kind == "Pod" => store
                .bind(&r.namespace, &r.name, &body, dry)
                .await
                .map(|()| crate::error::success_status()),
            other => Err(ApiError::method_not_allowed(format!(
                "create is not supported on {}/{other}",
                info.resource
            ))),
        };
        Ok(Response::new(object(&out.map_err(|e| e.to_grpc())?)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        let (info, r) = info_of(req.get_ref().r#ref.as_ref())?;
        self.authorize(&req, "update", info, &r)?;
        let m = req.get_ref();
        crate::audit::request_body(&m.body);
        let dry = m.options.as_ref().is_some_and(|o| dry_run(&o.dry_run));
        let body = parse(&m.body)?;
        let o = self
            .server
            .store
            .update(
                info,
                &r.namespace,
                &r.name,
                &r.subresource,
                body,
                &write_options(&req, dry, &self.server.authorizer),
            )
            .await
            .map_err(|e| e.to_grpc())?;
        Ok(Response::new(object(&o)))
    }

    async fn patch(&self, req: Request<pb::PatchRequest>) -> Result<Response<pb::Object>, Status> {
        let (info, r) = info_of(req.get_ref().r#ref.as_ref())?;
        self.authorize(&req, "patch", info, &r)?;
        let m = req.get_ref();
        crate::audit::request_body(&m.body);
        let dry = m.options.as_ref().is_some_and(|o| dry_run(&o.dry_run));
        let (pt, body) = (m.patch_type.clone(), m.body.clone());
        if pt.starts_with("application/apply-patch+yaml") {
            let manager = m
                .options
                .as_ref()
                .map(|o| o.field_manager.clone())
                .unwrap_or_default();
            if manager.is_empty() {
                return Err(
                    ApiError::bad_request("apply requests must have a field manager").to_grpc(),
                );
            }
            let applied: Value = serde_yaml::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("error decoding YAML: {e}")).to_grpc()
            })?;
            let force = m.options.as_ref().is_some_and(|o| o.force);
            let (o, _) = self
                .server
                .store
                .apply(
                    info,
                    &r.namespace,
                    &r.name,
                    applied,
                    &crate::store::ApplyOptions {
                        manager: &manager,
                        force,
                        dry_run: dry,
                        requester: requester(&req, &self.server.authorizer),
                    },
                )
                .await
                .map_err(|e| e.to_grpc())?;
            return Ok(Response::new(object(&o)));
        }
        let write = write_options(&req, dry, &self.server.authorizer);
        let o = self
            .server
            .store
            .update_with(
                info,
                &r.namespace,
                &r.name,
                &r.subresource,
                &write,
                &|current| crate::patch::patched(info.kind, &pt, current, &body),
            )
            .await
            .map_err(|e| e.to_grpc())?;
        Ok(Response::new(object(&o)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        let (info, r) = info_of(req.get_ref().r#ref.as_ref())?;
        self.authorize(&req, "delete", info, &r)?;
        let m = req.get_ref();
        let pre = m.preconditions.clone().unwrap_or_default();
        let opts = DeleteOptions {
            uid: pre.uid,
            resource_version: pre.resource_version,
            propagation: (!m.propagation_policy.is_empty()).then(|| m.propagation_policy.clone()),
            grace_period_seconds: m.grace_period_seconds,
            dry_run: dry_run(&m.dry_run),
        };
        let o = match self
            .server
            .store
            .delete(info, &r.namespace, &r.name, &opts)
            .await
            .map_err(|e| e.to_grpc())?
        {
            Deleted::Gone(o) | Deleted::Pending(o) => o,
        };
        Ok(Response::new(object(&o)))
    }
}
