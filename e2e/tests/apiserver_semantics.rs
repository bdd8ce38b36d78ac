//! Storage semantics of the apiserver over REST, as a program sees them: server-owned
//! metadata, the status split, finalizers, deletecollection, terminating namespaces,
//! binding, body limits and decoding, selector-filtered watches, bookmarks, and 410s
//! after compaction.

use e2e::apiserver::{wait_ready, ControlPlane};
use e2e::https::{tls_config, HttpsClient};
use e2e::kvstore::Flavor;
use e2e::RunDir;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

async fn client(cp: &ControlPlane) -> HttpsClient {
    let addr: SocketAddr = format!("127.0.0.1:{}", cp.port).parse().unwrap();
    HttpsClient::connect(addr, tls_config(&cp.ca).unwrap(), &cp.token)
        .await
        .unwrap()
}

async fn next_event(rx: &mut Receiver<String>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a watch event in time")
        .expect("the stream is open");
    serde_json::from_str(&line).unwrap()
}

const CMS: &str = "/api/v1/namespaces/s1/configmaps";

#[test]
fn rest_semantics() {
    let run = RunDir::temp("apiserver-semantics").unwrap();
    let mut cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&cp).await;
        c.json("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "s1"}})), 201).await.unwrap();

        // generateName.
        let g = c.json("POST", CMS, Some(&json!({"metadata": {"generateName": "gen-"}})), 201).await.unwrap();
        let name = g["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

        // The status split: the main resource ignores status, /status ignores spec.
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        let dpath = "/apis/apps/v1/namespaces/s1/deployments";
        let mut d = c.json("POST", dpath, Some(&d), 201).await.unwrap();
        d["status"] = json!({"replicas": 7});
        let d2 = c.json("PUT", &format!("{dpath}/d"), Some(&d), 200).await.unwrap();
        assert!(d2["status"]["replicas"].is_null(), "main resource wrote status: {d2}");
        let mut s = d2.clone();
        s["status"] = json!({"replicas": 5});
        s["spec"]["replicas"] = json!(9);
        let d3 = c.json("PUT", &format!("{dpath}/d/status"), Some(&s), 200).await.unwrap();
        assert_eq!(d3["status"]["replicas"], 5);
        assert_eq!(d3["spec"]["replicas"], 1);
        assert_eq!(d3["metadata"]["generation"], 1);
        let got = c.json("GET", &format!("{dpath}/d/status"), None, 200).await.unwrap();
        assert_eq!(got["status"]["replicas"], 5);

        // Finalizers: delete marks, removing the last finalizer removes.
        c.json("POST", CMS, Some(&json!({"metadata": {"name": "fin", "finalizers": ["example.com/hold"]}})), 201).await.unwrap();
        let marked = c.json("DELETE", &format!("{CMS}/fin"), None, 200).await.unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
        c.json("GET", &format!("{CMS}/fin"), None, 200).await.unwrap();
        let (code, body) = c
            .request("PATCH", &format!("{CMS}/fin"), Some(("application/merge-patch+json", br#"{"metadata":{"finalizers":null}}"#.to_vec())))
            .await
            .unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let gone = c.json("GET", &format!("{CMS}/fin"), None, 404).await.unwrap();
        assert_eq!(gone["reason"], "NotFound");

        // deletecollection with a selector takes exactly the matching objects.
        for (n, l) in [("l1", "1"), ("l2", "1"), ("l3", "2")] {
            c.json("POST", CMS, Some(&json!({"metadata": {"name": n, "labels": {"a": l}}})), 201).await.unwrap();
        }
        let deleted = c.json("DELETE", &format!("{CMS}?labelSelector=a%3D1"), None, 200).await.unwrap();
        assert_eq!(deleted["items"].as_array().unwrap().len(), 2);
        let left = c.json("GET", &format!("{CMS}?labelSelector=a"), None, 200).await.unwrap();
        let names: Vec<&str> = left["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["l3"]);

        // Binding sets spec.nodeName once.
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        c.json("POST", "/api/v1/namespaces/s1/pods", Some(&pod), 201).await.unwrap();
        let b = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
        c.json("POST", "/api/v1/namespaces/s1/pods/p/binding", Some(&b), 201).await.unwrap();
        let p = c.json("GET", "/api/v1/namespaces/s1/pods/p", None, 200).await.unwrap();
        assert_eq!(p["spec"]["nodeName"], "n1");
        let again = c.json("POST", "/api/v1/namespaces/s1/pods/p/binding", Some(&b), 409).await.unwrap();
        assert_eq!(again["reason"], "Conflict");

        // Eviction honours PodDisruptionBudgets: 429 until the budget allows one, then
        // the pod is deleted (gracefully: it is bound) and the budget spent.
        let mut running = c.json("GET", "/api/v1/namespaces/s1/pods/p", None, 200).await.unwrap();
        running["status"]["phase"] = json!("Running");
        c.json("PUT", "/api/v1/namespaces/s1/pods/p/status", Some(&running), 200).await.unwrap();
        let labels = json!({"metadata": {"labels": {"app": "guarded"}}});
        c.request("PATCH", "/api/v1/namespaces/s1/pods/p", Some(("application/merge-patch+json", labels.to_string().into_bytes()))).await.unwrap();
        let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}});
        let pdbs = "/apis/policy/v1/namespaces/s1/poddisruptionbudgets";
        c.json("POST", pdbs, Some(&pdb), 201).await.unwrap();
        let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "s1"}});
        let blocked = c.json("POST", "/api/v1/namespaces/s1/pods/p/eviction", Some(&eviction), 429).await.unwrap();
        assert_eq!(blocked["reason"], "TooManyRequests");
        assert_eq!(blocked["details"]["causes"][0]["reason"], "DisruptionBudget");
        let mut b = c.json("GET", &format!("{pdbs}/b"), None, 200).await.unwrap();
        b["status"] = json!({"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2});
        c.json("PUT", &format!("{pdbs}/b/status"), Some(&b), 200).await.unwrap();
        c.json("POST", "/api/v1/namespaces/s1/pods/p/eviction", Some(&eviction), 201).await.unwrap();
        let evicted = c.json("GET", "/api/v1/namespaces/s1/pods/p", None, 200).await.unwrap();
        assert!(evicted["metadata"]["deletionTimestamp"].is_string(), "{evicted}");
        let spent = c.json("GET", &format!("{pdbs}/b"), None, 200).await.unwrap();
        assert_eq!(spent["status"]["disruptionsAllowed"], 0);

        // Bodies: too large, malformed, YAML, unsupported.
        let big = vec![b' '; 4 * 1024 * 1024];
        let (code, body) = c.request("POST", CMS, Some(("application/json", big))).await.unwrap();
        assert_eq!(code, 413, "{}", String::from_utf8_lossy(&body));
        let (code, body) = c.request("POST", CMS, Some(("application/json", b"{\"metadata\": ".to_vec()))).await.unwrap();
        assert_eq!(code, 400);
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], "BadRequest");
        let (code, _) = c.request("POST", CMS, Some(("application/yaml", b"metadata:\n  name: y\ndata:\n  k: v\n".to_vec()))).await.unwrap();
        assert_eq!(code, 201);
        let (code, _) = c.request("POST", CMS, Some(("text/csv", b"a,b".to_vec()))).await.unwrap();
        assert_eq!(code, 415);
        let bad = c.json("GET", &format!("{CMS}?labelSelector=a%3D%3D%3D"), None, 400).await.unwrap();
        assert_eq!(bad["reason"], "BadRequest");
        c.json("GET", "/api/v1/namespaces/s1/nothings", None, 404).await.unwrap();

        // A watch with a label selector: objects entering and leaving the selection.
        let list = c.json("GET", CMS, None, 200).await.unwrap();
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        let w = client(&cp).await;
        let (code, mut rx) = w
            .lines(&format!("{CMS}?watch=true&labelSelector=sel%3Dyes&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"))
            .await
            .unwrap();
        assert_eq!(code, 200);
        c.json("POST", CMS, Some(&json!({"metadata": {"name": "w", "labels": {"sel": "yes"}}})), 201).await.unwrap();
        c.json("POST", CMS, Some(&json!({"metadata": {"name": "other", "labels": {"sel": "no"}}})), 201).await.unwrap();
        let patch = |v: &str| ("application/merge-patch+json", format!(r#"{{"metadata":{{"labels":{{"sel":"{v}"}}}}}}"#).into_bytes());
        c.request("PATCH", &format!("{CMS}/w"), Some(patch("no"))).await.unwrap();
        c.request("PATCH", &format!("{CMS}/w"), Some(patch("yes"))).await.unwrap();
        let mut kinds = Vec::new();
        while kinds.len() < 3 {
            let ev = next_event(&mut rx).await;
            if ev["type"] != "BOOKMARK" {
                assert_eq!(ev["object"]["metadata"]["name"], "w", "{ev}");
                kinds.push(ev["type"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(kinds, vec!["ADDED", "DELETED", "ADDED"]);
        // Bookmarks carry only the resourceVersion.
        loop {
            let ev = next_event(&mut rx).await;
            if ev["type"] == "BOOKMARK" {
                assert!(ev["object"]["metadata"]["resourceVersion"].is_string(), "{ev}");
                assert!(ev["object"]["spec"].is_null());
                break;
            }
        }

        // timeoutSeconds ends the stream.
        let w = client(&cp).await;
        let (_, mut rx) = w.lines(&format!("{CMS}?watch=true&timeoutSeconds=1")).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "the watch outlived its timeoutSeconds");

        // Terminating namespaces refuse new content.
        c.json("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "term"}})), 201).await.unwrap();
        let t = c.json("DELETE", "/api/v1/namespaces/term", None, 200).await.unwrap();
        assert_eq!(t["status"]["phase"], "Terminating");
        let refused = c
            .json("POST", "/api/v1/namespaces/term/configmaps", Some(&json!({"metadata": {"name": "x"}})), 403)
            .await
            .unwrap();
        assert_eq!(refused["reason"], "Forbidden");

        // A plain list read from storage (its items are passed on undecoded) gives every
        // item as a get does, resourceVersion included, whole or in pages; a selector's
        // list (decoded) agrees.
        let all = c.json("GET", CMS, None, 200).await.unwrap();
        let items = all["items"].as_array().unwrap();
        assert!(items.len() >= 2, "{all}");
        let mut paged = Vec::new();
        let mut cont = String::new();
        loop {
            let page = c.json("GET", &format!("{CMS}?limit=1&continue={cont}"), None, 200).await.unwrap();
            paged.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["metadata"]["continue"].as_str() {
                Some(next) if !next.is_empty() => cont = next.to_string(),
                _ => break,
            }
        }
        assert_eq!(&paged, items);
        for item in items {
            let name = item["metadata"]["name"].as_str().unwrap();
            assert!(item["metadata"]["resourceVersion"].is_string(), "{item}");
            let one = c.json("GET", &format!("{CMS}/{name}"), None, 200).await.unwrap();
            assert_eq!(item, &one);
            let selected = c
                .json("GET", &format!("{CMS}?fieldSelector=metadata.name%3D{name}"), None, 200)
                .await
                .unwrap();
            assert_eq!(selected["items"], json!([one]));
        }

        // Paging, then compaction: a continue token and a watch from before it are 410.
        let page = c.json("GET", &format!("{CMS}?limit=1"), None, 200).await.unwrap();
        let cont = page["metadata"]["continue"].as_str().unwrap().to_string();
        // A write after the page, so compacting at the head removes the page's revision.
        let later = c.json("POST", CMS, Some(&json!({"metadata": {"name": "later"}})), 201).await.unwrap();
        let now: i64 = later["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        cp.compact_store(now).await.unwrap();
        let expired = c.json("GET", &format!("{CMS}?limit=1&continue={cont}"), None, 410).await.unwrap();
        assert_eq!(expired["reason"], "Expired");
        // Restarted, the apiserver's caches begin after the compaction, so a watch from
        // revision 1 is older than their windows and storage no longer has it. (Before,
        // a cache that started at revision 1 could still serve it from its window.)
        cp.apiserver.restart().unwrap();
        wait_ready(&mut cp.apiserver, &cp.kubeconfig, Duration::from_secs(60)).unwrap();
        let w = client(&cp).await;
        let (_, mut rx) = w.lines(&format!("{CMS}?watch=true&resourceVersion=1")).await.unwrap();
        let ev = next_event(&mut rx).await;
        assert_eq!(ev["type"], "ERROR", "{ev}");
        assert_eq!(ev["object"]["code"], 410);
    });
}
