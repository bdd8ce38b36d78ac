//! The `kube` crate against the apiserver: `Api::list`, the `watcher` (initial list,
//! then events), and `Patch::Apply` (server-side apply with a field manager).

use e2e::apiserver::ControlPlane;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;
use std::time::Duration;

#[test]
fn kube_crate_list_watch_and_apply() {
    let run = RunDir::temp("kube-crate").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kc = Kubeconfig::read_from(&cp.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();

        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.contains(&"kube-system".to_string()), "{names:?}");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "kube-rs"}})).unwrap();
        namespaces.create(&PostParams::default(), &ns).await.unwrap();

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-rs");
        let first: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "first"}, "data": {"a": "1"}})).unwrap();
        cms.create(&PostParams::default(), &first).await.unwrap();

        // The watcher: the existing object, then one applied through Patch::Apply.
        let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
        let mut seen = Vec::new();
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "second"}, "data": {"b": "2"}});
        let mut applied_once = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !seen.contains(&"second".to_string()) {
            let next = tokio::time::timeout_at(deadline, events.try_next()).await.expect("watch events in time");
            match next.unwrap().expect("the watch stream is open") {
                watcher::Event::InitApply(cm) | watcher::Event::Apply(cm) => {
                    seen.push(cm.metadata.name.unwrap_or_default());
                }
                watcher::Event::InitDone if !applied_once => {
                    applied_once = true;
                    cms.patch("second", &PatchParams::apply("kube-test"), &Patch::Apply(&applied)).await.unwrap();
                }
                _ => {}
            }
        }
        assert_eq!(seen, vec!["first", "second"]);

        // Server-side apply recorded the manager, and a conflicting apply is refused.
        let cm = cms.get("second").await.unwrap();
        let managers: Vec<String> = cm.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
        assert_eq!(managers, vec!["kube-test"]);
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "second"}, "data": {"b": "3"}});
        let err = cms.patch("second", &PatchParams::apply("someone-else"), &Patch::Apply(&other)).await.unwrap_err();
        match err {
            kube::Error::Api(s) => assert_eq!(s.code, 409, "{s:?}"),
            other => panic!("expected a 409, got {other:?}"),
        }
        let forced = cms.patch("second", &PatchParams::apply("someone-else").force(), &Patch::Apply(&other)).await.unwrap();
        assert_eq!(forced.data.unwrap()["b"], "3");
    });
}
