//! The controller-manager as a process against a real apiserver and scheduler, with fake
//! nodes and a stand-in kubelet (pods become Running and Ready; deleted pods finish):
//! deployments scaled, rolled (maxSurge/maxUnavailable checked at every step) and
//! rolled back with kubectl; the three cascading deletes; namespace deletion; default
//! service accounts; endpoints and slices following readiness; node CIDRs; pod GC;
//! volume binding; resource quota usage (and what quota admission refuses); cluster role
//! aggregation.

use client::{Api, DeleteParams};
use e2e::apiserver::ControlPlane;
use e2e::components::{self, Component};
use e2e::fake_kubelet::{FakeKubelet, NOT_READY_LABEL};
use e2e::kube::TestClient;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ResourceQuota, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Env {
    run: RunDir,
    cp: ControlPlane,
    kube: TestClient,
    _scheduler: Component,
    _cm: Component,
    _kubelet: FakeKubelet,
}

fn env(name: &str, nodes: usize) -> Env {
    env_with(name, nodes, &[])
}

fn env_with(name: &str, nodes: usize, cm_args: &[&str]) -> Env {
    let run = RunDir::temp(name).unwrap();
    // The controller-manager makes each namespace's default account: the ServiceAccount
    // admission plugin can run, as in a real cluster.
    let sa_admission = ["--enable-admission-plugins=ServiceAccount".to_string()];
    let cp = ControlPlane::start_with(&run, Flavor::Kvstore, &sa_admission).unwrap();
    let kube = TestClient::new(&cp);
    for i in 0..nodes {
        kube.node(&format!("n{i}"), json!({}), json!({}), "100");
    }
    let mut scheduler =
        components::spawn(&run, "scheduler", "scheduler", &cp.kubeconfig, &[], false).unwrap();
    scheduler.wait_ready(Duration::from_secs(60)).unwrap();
    let cm_args: Vec<String> = cm_args.iter().map(|a| a.to_string()).collect();
    let mut cm = components::spawn(
        &run,
        "controller-manager",
        "controller-manager",
        &cp.kubeconfig,
        &cm_args,
        false,
    )
    .unwrap();
    cm.wait_ready(Duration::from_secs(60)).unwrap();
    let kubelet = {
        let _g = kube.rt.enter();
        FakeKubelet::start(kube.client.clone())
    };
    Env {
        run,
        cp,
        kube,
        _scheduler: scheduler,
        _cm: cm,
        _kubelet: kubelet,
    }
}

fn write(run: &RunDir, name: &str, text: &str) -> String {
    let p = run.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn deployment(name: &str, replicas: u32, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: d}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n{extra}  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: {image}, ports: [{{name: http, containerPort: 8080}}]}}]\n"
    )
}

/// Pods of the app that count: not terminating.
fn live(kube: &TestClient, ns: &str, app: &str) -> Vec<Pod> {
    kube.pods(ns, &format!("app={app}"))
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[test]
fn deployments_scale_roll_and_roll_back() {
    let e = env("ctl-deploy", 3);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("d");
    let strategy =
        "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n";
    let f = write(
        &e.run,
        "web.yaml",
        &deployment("web", 4, "busybox:1.36", strategy),
    );
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    let out = cp
        .kubectl_ok(&[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "d",
            "--timeout=60s",
        ])
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(
        live(kube, "d", "web").iter().filter(|p| ready(p)).count(),
        4
    );
    let owners: BTreeSet<String> = live(kube, "d", "web")
        .iter()
        .map(|p| {
            p.metadata.owner_references.as_ref().unwrap()[0]
                .name
                .clone()
        })
        .collect();
    assert_eq!(owners.len(), 1, "one ReplicaSet owns them: {owners:?}");

    // Scale up and down.
    cp.kubectl_ok(&["scale", "deploy/web", "-n", "d", "--replicas=6"])
        .unwrap();
    kube.wait("6 ready pods", |k| {
        (live(k, "d", "web").iter().filter(|p| ready(p)).count() == 6).then_some(())
    });
    cp.kubectl_ok(&["scale", "deploy/web", "-n", "d", "--replicas=4"])
        .unwrap();
    kube.wait("4 pods", |k| {
        (k.pods("d", "app=web").len() == 4).then_some(())
    });

    // A rolling update, watched at every step: never more than 4+1 pods, never fewer
    // than 4-1 ready.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let watcher = {
        let (stop, seen, client) = (stop.clone(), seen.clone(), kube.client.clone());
        kube.rt.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "d");
            while !stop.load(Ordering::Relaxed) {
                let pods = api
                    .list(&client::ListParams::default().labels("app=web"))
                    .await
                    .unwrap()
                    .items;
                let total = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count();
                let ready = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
                    .count();
                seen.lock().unwrap().push((total, ready));
                tokio::task::yield_now().await;
            }
        })
    };
    cp.kubectl_ok(&["set", "image", "deploy/web", "-n", "d", "c=busybox:1.37"])
        .unwrap();
    let out = cp
        .kubectl_ok(&[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "d",
            "--timeout=60s",
        ])
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    stop.store(true, Ordering::Relaxed);
    kube.rt.block_on(watcher).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 3, "the watcher sampled {} times", seen.len());
    for (total, ready) in &seen {
        assert!(
            *total <= 5,
            "{total} pods exceed replicas + maxSurge: {seen:?}"
        );
        assert!(
            *ready >= 3,
            "{ready} ready pods is below replicas - maxUnavailable: {seen:?}"
        );
    }
    let pods = live(kube, "d", "web");
    assert_eq!(pods.len(), 4);
    assert!(pods
        .iter()
        .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1.37")));
    let sets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), "d");
    let rs = kube
        .rt
        .block_on(sets.list(&Default::default()))
        .unwrap()
        .items;
    assert_eq!(rs.len(), 2);
    let revisions: BTreeSet<String> = rs
        .iter()
        .map(|r| {
            r.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"].clone()
        })
        .collect();
    assert_eq!(revisions, ["1".to_string(), "2".to_string()].into());

    // Roll back: the first template again, as revision 3.
    cp.kubectl_ok(&["rollout", "undo", "deploy/web", "-n", "d"])
        .unwrap();
    let out = cp
        .kubectl_ok(&[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "d",
            "--timeout=60s",
        ])
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = live(kube, "d", "web");
    assert!(
        pods.iter().all(
            |p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1.36")
        ),
        "rolled back"
    );
    let history = cp
        .kubectl_ok(&["rollout", "history", "deploy/web", "-n", "d"])
        .unwrap();
    assert!(
        history.contains('2') && history.contains('3') && !history.contains("\n1 "),
        "{history}"
    );
    let described = cp
        .kubectl_ok(&["describe", "deploy", "web", "-n", "d"])
        .unwrap();
    assert!(described.contains("ScalingReplicaSet"), "{described}");

    // Recreate: old pods are all gone before new ones start.
    let f = write(
        &e.run,
        "re.yaml",
        &deployment("re", 3, "busybox:1.36", "  strategy: {type: Recreate}\n"),
    );
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    cp.kubectl_ok(&["rollout", "status", "deploy/re", "-n", "d", "--timeout=60s"])
        .unwrap();
    cp.kubectl_ok(&["set", "image", "deploy/re", "-n", "d", "c=busybox:1.37"])
        .unwrap();
    let out = cp
        .kubectl_ok(&["rollout", "status", "deploy/re", "-n", "d", "--timeout=60s"])
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), "d");
    let d = kube.rt.block_on(deployments.get("re")).unwrap();
    let st = d.status.unwrap();
    assert_eq!(
        (st.replicas, st.updated_replicas, st.available_replicas),
        (Some(3), Some(3), Some(3))
    );
}

#[test]
fn cascading_deletes_background_foreground_and_orphan() {
    let e = env("ctl-gc", 2);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("d");
    for name in ["bg", "fg", "orph"] {
        let f = write(
            &e.run,
            &format!("{name}.yaml"),
            &deployment(name, 2, "busybox:1.36", ""),
        );
        cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
        cp.kubectl_ok(&[
            "rollout",
            "status",
            &format!("deploy/{name}"),
            "-n",
            "d",
            "--timeout=60s",
        ])
        .unwrap();
    }
    let sets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), "d");
    // Background: the deployment goes at once; the garbage collector removes the rest.
    cp.kubectl_ok(&["delete", "deploy", "bg", "-n", "d", "--cascade=background"])
        .unwrap();
    kube.wait("bg's ReplicaSet and pods to be collected", |k| {
        (k.pods("d", "app=bg").is_empty()
            && k.rt
                .block_on(sets.get_opt(&rs_of_none(k, "bg")))
                .unwrap()
                .is_none())
        .then_some(())
    });
    // Foreground: the deployment waits, marked, until its dependents are gone.
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), "d");
    kube.rt
        .block_on(deployments.delete("fg", &DeleteParams::propagation("Foreground")))
        .unwrap();
    let marked = kube.rt.block_on(deployments.get_opt("fg")).unwrap();
    if let Some(d) = marked {
        assert!(d
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string()));
    }
    kube.wait("fg and its dependents to be gone", |k| {
        (k.rt.block_on(deployments.get_opt("fg")).unwrap().is_none()
            && k.pods("d", "app=fg").is_empty())
        .then_some(())
    });
    // Orphan: the ReplicaSet goes, its pods stay, without an owner.
    let orphan_rs = rs_of_none(kube, "orph");
    cp.kubectl_ok(&["delete", "deploy", "orph", "-n", "d", "--cascade=orphan"])
        .unwrap();
    kube.wait("orph's deployment to go", |k| {
        k.rt.block_on(deployments.get_opt("orph"))
            .unwrap()
            .is_none()
            .then_some(())
    });
    cp.kubectl_ok(&["delete", "rs", &orphan_rs, "-n", "d", "--cascade=orphan"])
        .unwrap();
    kube.wait("the orphaned pods to lose their owner", |k| {
        let pods = k.pods("d", "app=orph");
        (pods.len() == 2
            && pods.iter().all(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(|r| r.is_empty())
            }))
        .then_some(())
    });
    assert!(kube
        .rt
        .block_on(sets.get_opt(&orphan_rs))
        .unwrap()
        .is_none());
}

/// The name of the (first) ReplicaSet of an app, or "" when none is left.
fn rs_of_none(kube: &TestClient, app: &str) -> String {
    let sets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), "d");
    kube.rt
        .block_on(sets.list(&client::ListParams::default().labels(&format!("app={app}"))))
        .unwrap()
        .items
        .first()
        .and_then(|r| r.metadata.name.clone())
        .unwrap_or_else(|| "none-left".into())
}

#[test]
fn namespaces_service_accounts_endpoints_node_cidrs_and_pod_gc() {
    let e = env("ctl-misc", 2);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("d");
    // Every namespace gets a default service account.
    let sas: Api<ServiceAccount> = Api::namespaced(kube.client.clone(), "d");
    kube.wait("the default service account", |k| {
        k.rt.block_on(sas.get_opt("default")).unwrap()
    });

    // Endpoints and slices follow ready pods, with named target ports resolved.
    let f = write(
        &e.run,
        "svc.yaml",
        &deployment("web", 3, "busybox:1.36", ""),
    );
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    let svc = write(&e.run, "s.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: d}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n");
    cp.kubectl_ok(&["apply", "-f", &svc]).unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(kube.client.clone(), "d");
    let ep = kube.wait("3 ready endpoints", |k| {
        let ep = k.rt.block_on(endpoints.get_opt("web")).unwrap()?;
        let subset = ep.subsets.as_ref()?.first()?.clone();
        (subset.addresses.as_ref().map_or(0, |a| a.len()) == 3).then_some(subset)
    });
    assert_eq!(ep.ports.unwrap()[0].port, 8080);
    let slices: Api<EndpointSlice> = Api::namespaced(kube.client.clone(), "d");
    kube.wait("a slice with 3 ready endpoints", |k| {
        let list =
            k.rt.block_on(
                slices
                    .list(&client::ListParams::default().labels("kubernetes.io/service-name=web")),
            )
            .unwrap()
            .items;
        let ready = list
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        (list.len() == 1 && ready == 3 && list[0].ports.as_ref()?[0].port == Some(8080))
            .then_some(())
    });
    // A not-ready pod is listed as such.
    let bare = json!({"containers": [{"name": "c", "image": "busybox:1.36", "ports": [{"name": "http", "containerPort": 9090}]}]});
    kube.pod(
        "d",
        "slow",
        bare,
        json!({"app": "web", NOT_READY_LABEL: "false"}),
    );
    kube.wait("the not-ready address", |k| {
        let ep = k.rt.block_on(endpoints.get_opt("web")).unwrap()?;
        let not_ready: Vec<_> = ep
            .subsets?
            .iter()
            .flat_map(|s| s.not_ready_addresses.clone().unwrap_or_default())
            .collect();
        (not_ready.len() == 1 && not_ready[0].target_ref.as_ref()?.name.as_deref() == Some("slow"))
            .then_some(())
    });

    // Nodes get distinct /24 pod CIDRs; a deleted node's range is handed out again.
    let nodes: Api<Node> = Api::all(kube.client.clone());
    let cidrs = kube.wait("pod CIDRs on both nodes", |k| {
        let list =
            k.rt.block_on(nodes.list(&Default::default()))
                .unwrap()
                .items;
        let c: Vec<String> = list
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        (c.len() == 2).then_some(c)
    });
    assert_ne!(cidrs[0], cidrs[1]);
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );

    // podgc: a pod bound to a node that does not exist is removed.
    kube.pod("d", "stray", json!({"nodeName": "ghost"}), json!({}));
    kube.wait("the stray pod to be collected", |k| {
        k.get("d", "stray").is_none().then_some(())
    });

    // Deleting a namespace deletes what is in it, then the namespace itself.
    let cms: Api<ConfigMap> = Api::namespaced(kube.client.clone(), "d");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    kube.rt.block_on(cms.create(&cm)).unwrap();
    let namespaces: Api<Namespace> = Api::all(kube.client.clone());
    kube.rt
        .block_on(namespaces.delete("d", &DeleteParams::default()))
        .unwrap();
    kube.wait("namespace d to disappear", |k| {
        k.rt.block_on(namespaces.get_opt("d"))
            .unwrap()
            .is_none()
            .then_some(())
    });
    assert!(kube.rt.block_on(cms.get_opt("c")).unwrap().is_none());
}

#[test]
fn two_controller_managers_killing_the_leader_mid_rollout() {
    let run = RunDir::temp("ctl-leader").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let kube = TestClient::new(&cp);
    for i in 0..3 {
        kube.node(&format!("n{i}"), json!({}), json!({}), "100");
    }
    let mut scheduler =
        components::spawn(&run, "scheduler", "scheduler", &cp.kubeconfig, &[], false).unwrap();
    scheduler.wait_ready(Duration::from_secs(60)).unwrap();
    let flags: Vec<String> = [
        "--leader-elect",
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(kube.client.clone(), "kube-system");
    let holder = |k: &TestClient| -> Option<String> {
        k.rt.block_on(leases.get_opt("kube-controller-manager"))
            .unwrap()?
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let mut first = components::spawn(
        &run,
        "cm-a",
        "controller-manager",
        &cp.kubeconfig,
        &flags,
        false,
    )
    .unwrap();
    first.wait_ready(Duration::from_secs(60)).unwrap();
    let leader = kube.wait("a leader", holder);
    let mut second = components::spawn(
        &run,
        "cm-b",
        "controller-manager",
        &cp.kubeconfig,
        &flags,
        false,
    )
    .unwrap();
    second.wait_ready(Duration::from_secs(60)).unwrap();
    let _kubelet = {
        let _g = kube.rt.enter();
        FakeKubelet::start(kube.client.clone())
    };
    kube.namespace("d");
    let strategy =
        "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 2, maxUnavailable: 0}}\n";
    let f = write(
        &run,
        "web.yaml",
        &deployment("web", 12, "busybox:1.36", strategy),
    );
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    cp.kubectl_ok(&[
        "rollout",
        "status",
        "deploy/web",
        "-n",
        "d",
        "--timeout=60s",
    ])
    .unwrap();
    cp.kubectl_ok(&["set", "image", "deploy/web", "-n", "d", "c=busybox:1.37"])
        .unwrap();
    // Mid-rollout: some new pods exist, old ones remain.
    kube.wait("the rollout to be under way", |k| {
        let pods = live(k, "d", "web");
        let new = pods
            .iter()
            .filter(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1.37")
            })
            .count();
        (new > 0 && new < 12).then_some(())
    });
    first.process.kill().unwrap();
    kube.wait("the standby to lead", |k| {
        holder(k).filter(|h| *h != leader)
    });
    let out = cp
        .kubectl_ok(&[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "d",
            "--timeout=90s",
        ])
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = kube.wait("exactly 12 pods, all new", |k| {
        let all = k.pods("d", "app=web");
        (all.len() == 12
            && all.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1.37")
            }))
        .then_some(all)
    });
    assert!(pods.iter().all(ready));
    let sets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), "d");
    let rs = kube
        .rt
        .block_on(sets.list(&Default::default()))
        .unwrap()
        .items;
    assert_eq!(rs.len(), 2, "one ReplicaSet per template");
    drop(second);
}

#[test]
fn pause_resume_progress_deadline_and_adoption() {
    let e = env("ctl-more", 2);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("d");
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), "d");
    let progressing = |k: &TestClient, name: &str| -> Option<(String, String)> {
        let d = k.rt.block_on(deployments.get(name)).unwrap();
        let c = d
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Progressing")?;
        Some((c.status, c.reason.unwrap_or_default()))
    };
    // Pause: a template change waits; resume rolls it out.
    let f = write(&e.run, "p.yaml", &deployment("p", 2, "busybox:1.36", ""));
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    cp.kubectl_ok(&["rollout", "status", "deploy/p", "-n", "d", "--timeout=60s"])
        .unwrap();
    cp.kubectl_ok(&["rollout", "pause", "deploy/p", "-n", "d"])
        .unwrap();
    cp.kubectl_ok(&["set", "image", "deploy/p", "-n", "d", "c=busybox:1.37"])
        .unwrap();
    kube.wait("Progressing=Unknown (DeploymentPaused)", |k| {
        (progressing(k, "p") == Some(("Unknown".into(), "DeploymentPaused".into()))).then_some(())
    });
    let sets: Api<ReplicaSet> = Api::namespaced(kube.client.clone(), "d");
    let count = |k: &TestClient| {
        k.rt.block_on(sets.list(&client::ListParams::default().labels("app=p")))
            .unwrap()
            .items
            .len()
    };
    assert_eq!(
        count(kube),
        1,
        "a paused deployment starts no new ReplicaSet"
    );
    cp.kubectl_ok(&["rollout", "resume", "deploy/p", "-n", "d"])
        .unwrap();
    let out = cp
        .kubectl_ok(&["rollout", "status", "deploy/p", "-n", "d", "--timeout=60s"])
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(count(kube), 2);

    // Pods that never become ready: the progress deadline passes.
    let stuck = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: stuck, namespace: d}}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 2\n  selector: {{matchLabels: {{app: stuck}}}}\n  template:\n    metadata: {{labels: {{app: stuck, {NOT_READY_LABEL}: 'false'}}}}\n    spec:\n      containers: [{{name: c, image: busybox:1.36}}]\n"
    );
    let f = write(&e.run, "stuck.yaml", &stuck);
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    kube.wait("ProgressDeadlineExceeded", |k| {
        (progressing(k, "stuck") == Some(("False".into(), "ProgressDeadlineExceeded".into())))
            .then_some(())
    });
    let err = cp
        .kubectl_err(&[
            "rollout",
            "status",
            "deploy/stuck",
            "-n",
            "d",
            "--timeout=20s",
        ])
        .unwrap();
    assert!(err.contains("exceeded its progress deadline"), "{err}");

    // A ReplicaSet adopts a matching orphan and releases a pod relabelled away.
    let bare = json!({"containers": [{"name": "c", "image": "busybox:1.36"}]});
    kube.pod("d", "orphan", bare, json!({"app": "adopt"}));
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: adopt, namespace: d}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: adopt}}\n  template:\n    metadata: {labels: {app: adopt}}\n    spec:\n      containers: [{name: c, image: busybox:1.36}]\n";
    let f = write(&e.run, "rs.yaml", rs);
    cp.kubectl_ok(&["apply", "-f", &f]).unwrap();
    let owner_of = |p: &Pod| {
        p.metadata
            .owner_references
            .as_ref()
            .and_then(|r| r.first())
            .map(|r| r.name.clone())
    };
    kube.wait("the orphan adopted, one more created", |k| {
        let pods = live(k, "d", "adopt");
        (pods.len() == 2
            && pods.iter().all(|p| owner_of(p).as_deref() == Some("adopt"))
            && pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some("orphan")))
        .then_some(())
    });
    cp.kubectl_ok(&[
        "label",
        "pod",
        "orphan",
        "-n",
        "d",
        "app=gone",
        "--overwrite",
    ])
    .unwrap();
    kube.wait("the relabelled pod released and replaced", |k| {
        let released = k.get("d", "orphan").is_some_and(|p| owner_of(&p).is_none());
        (released && live(k, "d", "adopt").len() == 2).then_some(())
    });
}

/// The persistentvolume-binder: claims bind to the smallest volume that satisfies them,
/// a waiting claim binds when a volume appears, and a volume whose claim is deleted is
/// Released (Retain) or deleted (Delete).
#[test]
fn claims_bind_to_volumes_which_are_released_or_deleted_after() {
    let e = env("ctl-pv", 0);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("d");
    let volume = |name: &str, size: &str, modes: &str, policy: &str| {
        format!("apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  storageClassName: manual\n  capacity: {{storage: {size}}}\n  accessModes: [{modes}]\n  persistentVolumeReclaimPolicy: {policy}\n  hostPath: {{path: /srv/{name}}}\n---\n")
    };
    let claim = |name: &str, size: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: d}}\nspec:\n  storageClassName: manual\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n---\n")
    };
    let volumes = [
        volume("pv-small", "1Gi", "ReadWriteOnce", "Retain"),
        volume("pv-mid", "3Gi", "ReadWriteOnce", "Retain"),
        volume("pv-big", "10Gi", "ReadWriteOnce", "Retain"),
        volume("pv-shared", "2Gi", "ReadWriteMany", "Retain"),
    ]
    .concat();
    let sc = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: manual}\nprovisioner: kubernetes.io/no-provisioner\n---\n";
    cp.kubectl_ok(&[
        "apply",
        "-f",
        &write(&e.run, "pv.yaml", &format!("{sc}{volumes}")),
    ])
    .unwrap();
    let pvs: Api<PersistentVolume> = Api::all(kube.client.clone());
    let phase = |k: &TestClient, name: &str| -> Option<String> {
        k.rt.block_on(pvs.get_opt(name)).unwrap()?.status?.phase
    };
    kube.wait("the volumes Available", |k| {
        ["pv-small", "pv-mid", "pv-big", "pv-shared"]
            .iter()
            .all(|n| phase(k, n).as_deref() == Some("Available"))
            .then_some(())
    });

    // 2Gi, ReadWriteOnce: pv-mid is the smallest that fits (pv-shared has the size but
    // not the access mode).
    cp.kubectl_ok(&["apply", "-f", &write(&e.run, "a.yaml", &claim("a", "2Gi"))])
        .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kube.client.clone(), "d");
    let bound = |k: &TestClient, name: &str| -> Option<PersistentVolumeClaim> {
        let c = k.rt.block_on(pvcs.get_opt(name)).unwrap()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    };
    let a = kube.wait("claim a bound", |k| bound(k, "a"));
    assert_eq!(a.spec.unwrap().volume_name.as_deref(), Some("pv-mid"));
    let st = a.status.unwrap();
    assert_eq!(st.capacity.unwrap()["storage"].0, "3Gi");
    assert_eq!(
        a.metadata.annotations.unwrap()["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    let mid = kube.rt.block_on(pvs.get("pv-mid")).unwrap();
    assert_eq!(
        mid.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("a")
    );
    kube.wait("pv-mid Bound", |k| {
        (phase(k, "pv-mid").as_deref() == Some("Bound")).then_some(())
    });
    let table = cp.kubectl_ok(&["get", "pvc", "a", "-n", "d"]).unwrap();
    assert!(
        table.contains("Bound") && table.contains("pv-mid") && table.contains("RWO"),
        "{table}"
    );

    // 20Gi fits nothing until a volume that large appears.
    cp.kubectl_ok(&["apply", "-f", &write(&e.run, "b.yaml", &claim("b", "20Gi"))])
        .unwrap();
    cp.kubectl_ok(&[
        "apply",
        "-f",
        &write(
            &e.run,
            "huge.yaml",
            &volume("pv-huge", "50Gi", "ReadWriteOnce", "Delete"),
        ),
    ])
    .unwrap();
    let b = kube.wait("claim b bound to the new volume", |k| bound(k, "b"));
    assert_eq!(b.spec.unwrap().volume_name.as_deref(), Some("pv-huge"));

    // Claims deleted: Retain releases the volume, Delete removes it.
    cp.kubectl_ok(&["delete", "pvc", "a", "b", "-n", "d"])
        .unwrap();
    kube.wait("pv-mid Released", |k| {
        (phase(k, "pv-mid").as_deref() == Some("Released")).then_some(())
    });
    kube.wait("pv-huge deleted", |k| {
        k.rt.block_on(pvs.get_opt("pv-huge"))
            .unwrap()
            .is_none()
            .then_some(())
    });
    assert_eq!(phase(kube, "pv-small").as_deref(), Some("Available"));
}

#[test]
fn resource_quotas_count_usage_and_refuse_what_exceeds_them() {
    // No nodes: the pods stay Pending, which still counts.
    let e = env("ctl-quota", 0);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("q");
    // The config maps the namespace starts with (the published kube-root-ca.crt) count
    // too.
    let cms: Api<ConfigMap> = Api::namespaced(kube.client.clone(), "q");
    kube.wait("the namespace's kube-root-ca.crt", |k| {
        k.rt.block_on(cms.get_opt("kube-root-ca.crt"))
            .unwrap()
            .map(drop)
    });
    let configmaps = kube
        .rt
        .block_on(cms.list(&Default::default()))
        .unwrap()
        .items
        .len()
        .to_string();
    let quotas = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: compute, namespace: q}\nspec:\n  hard:\n    pods: \"2\"\n    requests.cpu: \"1\"\n    count/configmaps: \"3\"\n    count/cronjobs.batch: \"1\"\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata: {name: best-effort, namespace: q}\nspec:\n  hard: {pods: \"1\"}\n  scopes: [BestEffort]\n";
    cp.kubectl_ok(&["apply", "-f", &write(&e.run, "quotas.yaml", quotas)])
        .unwrap();
    let rqs: Api<ResourceQuota> = Api::namespaced(kube.client.clone(), "q");
    let strings = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, String> {
        m.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    };
    // The quota's status once its hard limits are the spec's: the used amounts as text.
    let used = |k: &TestClient, name: &str| -> Option<BTreeMap<String, String>> {
        let rq = k.rt.block_on(rqs.get_opt(name)).unwrap()?;
        let status = rq.status?;
        let spec_hard = strings(rq.spec.as_ref()?.hard.as_ref());
        (strings(status.hard.as_ref()) == spec_hard).then(|| strings(status.used.as_ref()))
    };
    let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let wait_used = |name: &str, want: BTreeMap<String, String>| {
        kube.wait(&format!("quota {name} to show {want:?} used"), |k| {
            (used(k, name)? == want).then_some(())
        })
    };
    let compute = |pods: &str, cpu: &str| {
        expect(&[
            ("pods", pods),
            ("requests.cpu", cpu),
            ("count/configmaps", &configmaps),
            ("count/cronjobs.batch", "0"),
        ])
    };
    wait_used("compute", compute("0", "0"));
    wait_used("best-effort", expect(&[("pods", "0")]));

    let pod = |name: &str, cpu: Option<&str>| {
        let resources = cpu
            .map(|c| format!("    resources: {{requests: {{cpu: {c}}}}}\n"))
            .unwrap_or_default();
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: q}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n{resources}");
        write(&e.run, &format!("{name}.yaml"), &text)
    };
    cp.kubectl_ok(&["create", "-f", &pod("p1", Some("600m"))])
        .unwrap();
    wait_used("compute", compute("1", "600m"));
    // A pod with requests is not best effort.
    assert_eq!(used(kube, "best-effort"), Some(expect(&[("pods", "0")])));

    // Admission refuses what would exceed a quota, and a pod not stating what it limits.
    let refused = |name: &str, cpu: Option<&str>, why: &str| {
        let err = cp.kubectl_err(&["create", "-f", &pod(name, cpu)]).unwrap();
        assert!(
            err.contains("Error from server (Forbidden)")
                && err.contains(&format!("pods \"{name}\" is forbidden: {why}")),
            "{err}"
        );
    };
    refused(
        "p2",
        Some("600m"),
        "exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1",
    );
    refused(
        "none",
        None,
        "failed quota: compute: must specify requests.cpu for: c",
    );
    cp.kubectl_ok(&["create", "-f", &pod("p3", Some("300m"))])
        .unwrap();
    wait_used("compute", compute("2", "900m"));
    refused(
        "p4",
        Some("50m"),
        "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2",
    );

    // A pod gone is uncounted; so is a config map, as soon as it goes.
    kube.delete("q", "p1");
    wait_used("compute", compute("1", "300m"));
    let base: usize = configmaps.parse().unwrap();
    let counted = |n: usize| {
        expect(&[
            ("pods", "1"),
            ("requests.cpu", "300m"),
            ("count/configmaps", &(base + n).to_string()),
            ("count/cronjobs.batch", "0"),
        ])
    };
    cp.kubectl_ok(&["create", "configmap", "settings", "-n", "q"])
        .unwrap();
    wait_used("compute", counted(1));
    cp.kubectl_ok(&["delete", "configmap", "settings", "-n", "q"])
        .unwrap();
    wait_used("compute", counted(0));
    assert_eq!(used(kube, "best-effort"), Some(expect(&[("pods", "0")])));

    // A kind no informer of the controller follows: admission charges its creates, and
    // its deletions are heard at once (the periodic resync is five minutes away).
    let cronjob = |name: &str| {
        let schedule = "--schedule=0 0 1 1 *";
        let image = "--image=busybox:1.36";
        cp.kubectl(&["create", "cronjob", name, "-n", "q", image, schedule])
            .unwrap()
    };
    let (ok, _, err) = cronjob("yearly");
    assert!(ok, "{err}");
    let one = |n: &str| {
        let mut m = counted(0);
        m.insert("count/cronjobs.batch".into(), n.into());
        m
    };
    wait_used("compute", one("1"));
    let (ok, _, err) = cronjob("again");
    assert!(
        !ok && err.contains("cronjobs.batch \"again\" is forbidden: exceeded quota: compute, requested: count/cronjobs.batch=1, used: count/cronjobs.batch=1, limited: count/cronjobs.batch=1"),
        "{err}"
    );
    cp.kubectl_ok(&["delete", "cronjob", "yearly", "-n", "q"])
        .unwrap();
    wait_used("compute", one("0"));
    let (ok, _, err) = cronjob("again");
    assert!(ok, "{err}");
    wait_used("compute", one("1"));
}

#[test]
fn pods_run_as_service_accounts_and_every_namespace_has_the_cluster_ca() {
    let e = env("ctl-sa", 0);
    let (kube, cp) = (&e.kube, &e.cp);
    kube.namespace("sa");
    // The namespace's copy of the CA bundle, put back when deleted or changed.
    let cms: Api<ConfigMap> = Api::namespaced(kube.client.clone(), "sa");
    let ca = std::fs::read_to_string(&cp.ca).unwrap();
    let published = |k: &TestClient| -> Option<()> {
        let cm = k.rt.block_on(cms.get_opt("kube-root-ca.crt")).unwrap()?;
        (cm.data?.get("ca.crt")? == &ca).then_some(())
    };
    kube.wait("kube-root-ca.crt in the new namespace", published);
    cp.kubectl_ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "sa"])
        .unwrap();
    kube.wait("kube-root-ca.crt put back", published);
    let forged = r#"{"data":{"ca.crt":"forged"}}"#;
    cp.kubectl_ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "sa",
        "--type=merge",
        "-p",
        forged,
    ])
    .unwrap();
    kube.wait("kube-root-ca.crt restored", published);

    // A pod runs as the namespace's default account and mounts the API access volume.
    let run_as = |name: &str, account: Option<&str>| {
        let overrides = account.map(|a| {
            format!(r#"--overrides={{"apiVersion":"v1","spec":{{"serviceAccountName":"{a}"}}}}"#)
        });
        let mut args = vec!["run", name, "-n", "sa", "--image=busybox:1.36"];
        args.extend(overrides.as_deref());
        cp.kubectl(&args).unwrap()
    };
    let (ok, _, err) = run_as("web", None);
    assert!(ok, "{err}");
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), "sa");
    let spec = kube.rt.block_on(pods.get("web")).unwrap().spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .expect("the API access volume");
    let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert!(sources.iter().any(|s| s
        .config_map
        .as_ref()
        .is_some_and(|c| c.name == "kube-root-ca.crt")));
    assert!(sources.iter().any(|s| s.service_account_token.is_some()));
    let path = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert!(spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == volume.name && m.mount_path == path && m.read_only == Some(true)));
    let described = cp
        .kubectl_ok(&["describe", "pod", "web", "-n", "sa"])
        .unwrap();
    assert!(
        described.contains(&format!("{path} from {} (ro)", volume.name)),
        "{described}"
    );

    // An account that does not exist is refused; one that opts out gets no volume.
    let (ok, _, err) = run_as("ghost", Some("nobody"));
    assert!(
        !ok && err.contains(r#"pods "ghost" is forbidden: error looking up service account sa/nobody: serviceaccount "nobody" not found"#),
        "{err}"
    );
    let quiet = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet, namespace: sa}\nautomountServiceAccountToken: false\n";
    cp.kubectl_ok(&["apply", "-f", &write(&e.run, "quiet.yaml", quiet)])
        .unwrap();
    let (ok, _, err) = run_as("quiet", Some("quiet"));
    assert!(ok, "{err}");
    let spec = kube.rt.block_on(pods.get("quiet")).unwrap().spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("quiet"));
    assert!(spec.volumes.is_none() && spec.containers[0].volume_mounts.is_none());
}

#[test]
fn cluster_roles_aggregate_the_rules_their_selectors_pick() {
    let e = env("ctl-aggregate", 0);
    let (kube, cp) = (&e.kube, &e.cp);
    cp.kubectl_ok(&["apply", "-f", &write(&e.run, "aggregated.yaml", AGGREGATED)])
        .unwrap();
    let roles: Api<ClusterRole> = Api::all(kube.client.clone());
    let nodes_rule = |k: &TestClient, name: &str| -> Option<()> {
        let role = k.rt.block_on(roles.get_opt(name)).unwrap()?;
        role.rules
            .iter()
            .flatten()
            .any(|r| r.resources.iter().flatten().any(|x| x == "nodes"))
            .then_some(())
    };
    // A role of one's own aggregating another.
    kube.wait("monitoring to carry node-reader's rule", |k| {
        nodes_rule(k, "monitoring")
    });
    // A role labelled aggregate-to-view extends view, and through it edit and admin.
    for name in ["view", "edit", "admin"] {
        kube.wait(&format!("{name} to carry node-viewer's rule"), |k| {
            nodes_rule(k, name)
        });
    }
    let edit = kube.rt.block_on(roles.get("edit")).unwrap();
    assert!(
        edit.rules
            .iter()
            .flatten()
            .any(|r| r.resources.iter().flatten().any(|x| x == "secrets")
                && r.verbs.iter().any(|v| v == "create")),
        "edit keeps its own rules: {:?}",
        edit.rules
    );
}

const AGGREGATED: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: monitoring}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {rbac.example.com/aggregate-to-monitoring: "true"}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-reader
  labels: {rbac.example.com/aggregate-to-monitoring: "true"}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-viewer
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
"#;
