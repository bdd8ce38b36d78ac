//! The gRPC `Resources` API: CRUD, and a watch that survives its apiserver being
//! SIGKILLed and restarted mid-stream — the client resumes from its last
//! resourceVersion and sees every change exactly once, in order.

use bytes::Bytes;
use e2e::apiserver::ControlPlane;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use proto::apiserver::v1 as pb;
use proto::apiserver::v1::resources_client::ResourcesClient;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn channel(cp: &ControlPlane) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cp.ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&cp.admin.cert).unwrap(),
            std::fs::read(&cp.admin.key).unwrap(),
        ))
        .domain_name("127.0.0.1");
    Endpoint::from_shared(cp.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

fn cm_ref(name: &str) -> pb::ResourceRef {
    pb::ResourceRef {
        version: "v1".into(),
        resource: "configmaps".into(),
        namespace: "g1".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn body(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap())
}

/// Retries a write while the apiserver is down; AlreadyExists/NotFound after a retry mean
/// an earlier attempt landed.
async fn write<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::Object>, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut retried = false;
    loop {
        match f().await {
            Ok(_) => return,
            Err(s)
                if retried
                    && matches!(s.code(), tonic::Code::AlreadyExists | tonic::Code::NotFound) =>
            {
                return
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) =>
            {
                assert!(
                    Instant::now() < deadline,
                    "{what}: apiserver did not come back: {s}"
                );
                retried = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("{what}: {s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    kind: String,
    name: String,
    rv: i64,
}

#[test]
fn grpc_watch_resumes_across_an_apiserver_restart() {
    let run = RunDir::temp("apiserver-grpc").unwrap();
    let mut cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The lazy channel spawns its connection tasks on this runtime.
    let _enter = rt.enter();
    let mut client = ResourcesClient::new(channel(&cp));

    rt.block_on(async {
        let ns = pb::ResourceRef {
            version: "v1".into(),
            resource: "namespaces".into(),
            ..Default::default()
        };
        client
            .create(pb::CreateRequest {
                r#ref: Some(ns),
                body: body(&json!({"metadata": {"name": "g1"}})),
                options: None,
            })
            .await
            .unwrap();
        // Errors carry the Kubernetes Status.
        let err = client
            .get(pb::GetRequest {
                r#ref: Some(cm_ref("missing")),
                resource_version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let status: Value = serde_json::from_slice(err.details()).unwrap();
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
    });

    let list = rt
        .block_on(client.list(pb::ListRequest {
            resource: Some(cm_ref("")),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let start_rv: i64 = list.resource_version.parse().unwrap();

    // The watcher: resumes from the last revision it saw whenever its stream ends.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let watcher = {
        let seen = seen.clone();
        let mut client = client.clone();
        rt.spawn(async move {
            let mut last = start_rv;
            loop {
                let req = pb::WatchRequest {
                    resource: Some(cm_ref("")),
                    resource_version: last.to_string(),
                    allow_bookmarks: true,
                    ..Default::default()
                };
                let mut stream = match client.watch(req).await {
                    Ok(s) => s.into_inner(),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while let Ok(Some(ev)) = stream.message().await {
                    let o: Value = serde_json::from_slice(&ev.object.unwrap().json).unwrap();
                    assert_ne!(ev.r#type, "ERROR", "{o}");
                    let rv: i64 = o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    last = rv;
                    if ev.r#type != "BOOKMARK" {
                        let name = o["metadata"]["name"].as_str().unwrap().to_string();
                        seen.lock().unwrap().push(Seen {
                            kind: ev.r#type,
                            name,
                            rv,
                        });
                    }
                }
            }
        })
    };

    // The writer: creates, updates and deletes; the apiserver dies and comes back midway.
    const N: usize = 60;
    let mut changes = 0;
    for i in 0..N {
        if i == N / 2 {
            // Wait until the watcher is mid-stream, then crash the apiserver.
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.lock().unwrap().len() < changes && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            cp.apiserver.kill().unwrap();
            cp.apiserver.restart().unwrap();
        }
        let name = format!("cm-{i}");
        let c = client.clone();
        let n = name.clone();
        // Each operation is one change whether its first attempt or a retry landed.
        rt.block_on(write("create", || {
            let mut c = c.clone();
            let b = body(&json!({"metadata": {"name": n}, "data": {"v": "0"}}));
            async move {
                c.create(pb::CreateRequest {
                    r#ref: Some(cm_ref("")),
                    body: b,
                    options: None,
                })
                .await
            }
        }));
        changes += 1;
        if i % 3 == 0 {
            let n = name.clone();
            rt.block_on(write("patch", || {
                let mut c = c.clone();
                let r = cm_ref(&n);
                async move {
                    c.patch(pb::PatchRequest {
                        r#ref: Some(r),
                        patch_type: "application/merge-patch+json".into(),
                        body: body(&json!({"data": {"v": "1"}})),
                        options: None,
                    })
                    .await
                }
            }));
            changes += 1;
        }
        if i % 5 == 4 {
            let n = format!("cm-{}", i - 1);
            rt.block_on(write("delete", || {
                let mut c = c.clone();
                let r = cm_ref(&n);
                async move {
                    c.delete(pb::DeleteRequest {
                        r#ref: Some(r),
                        ..Default::default()
                    })
                    .await
                }
            }));
            changes += 1;
        }
    }

    // Every change arrives exactly once, in revision order, and replaying the events
    // gives the state a fresh list shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < changes && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), changes, "events: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].rv < w[1].rv),
        "out of order or duplicated: {seen:?}"
    );
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    for s in &seen {
        match s.kind.as_str() {
            "ADDED" => assert!(
                state.insert(s.name.clone(), s.rv).is_none(),
                "{s:?} added twice"
            ),
            "MODIFIED" => assert!(
                state.insert(s.name.clone(), s.rv).is_some(),
                "{s:?} modified before added"
            ),
            "DELETED" => assert!(
                state.remove(&s.name).is_some(),
                "{s:?} deleted before added"
            ),
            other => panic!("unexpected event type {other}"),
        }
    }
    let list = rt
        .block_on(client.list(pb::ListRequest {
            resource: Some(cm_ref("")),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let listed: BTreeMap<String, i64> = list
        .items
        .iter()
        .map(|o| {
            let v: Value = serde_json::from_slice(&o.json).unwrap();
            (
                v["metadata"]["name"].as_str().unwrap().to_string(),
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(state, listed);
}
