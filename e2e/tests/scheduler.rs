//! The scheduler as a process against a real apiserver, with fake Node objects (no
//! kubelet): each constraint end to end — taints, selectors, resources, anti-affinity,
//! topology spread — the explanation a pending pod gets, event-driven retries,
//! preemption, and leader election between two schedulers.

use client::{Api, ListParams, Patch};
use e2e::apiserver::ControlPlane;
use e2e::components::{self, Component};
use e2e::kube::TestClient as Cluster;
use e2e::kvstore::Flavor;
use e2e::wait::wait_for;
use e2e::RunDir;
use k8s_openapi::api::core::v1::{Event, Node};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

fn start_scheduler(run: &RunDir, cp: &ControlPlane, name: &str, extra: &[&str]) -> Component {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let mut s = components::spawn(run, name, "scheduler", &cp.kubeconfig, &extra, false).unwrap();
    s.wait_ready(Duration::from_secs(60)).unwrap();
    s
}

fn cpu(c: &str) -> Value {
    json!({"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": c}}}]})
}

#[test]
fn scheduler_places_pods_by_every_constraint() {
    let run = RunDir::temp("scheduler").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let c = Cluster::new(&cp);
    c.node("n1", json!({"zone": "a"}), json!({}), "2");
    c.node("n2", json!({"zone": "b"}), json!({}), "2");
    c.node(
        "gpu",
        json!({"zone": "b", "gpu": "true"}),
        json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        "2",
    );
    c.node(
        "off",
        json!({"zone": "a"}),
        json!({"unschedulable": true}),
        "2",
    );
    let sched = start_scheduler(&run, &cp, "scheduler", &[]);
    c.namespace("s1");

    // Taints and selectors.
    c.pod("s1", "tolerant", json!({"nodeSelector": {"gpu": "true"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}], "containers": [{"name": "c", "image": "busybox:1.36"}]}), json!({}));
    assert_eq!(c.wait_bound("s1", "tolerant"), "gpu");
    c.pod(
        "s1",
        "intolerant",
        json!({"nodeSelector": {"gpu": "true"}}),
        json!({}),
    );
    let msg = c.wait_unschedulable("s1", "intolerant");
    assert!(
        msg.starts_with("0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."),
        "{msg}"
    );

    // Resources: two pods of 1.5 CPU fill n1 and n2; a third waits until one goes.
    c.pod("s1", "big-1", cpu("1500m"), json!({}));
    c.pod("s1", "big-2", cpu("1500m"), json!({}));
    let (b1, b2) = (c.wait_bound("s1", "big-1"), c.wait_bound("s1", "big-2"));
    let mut placed = [b1.clone(), b2];
    placed.sort();
    assert_eq!(placed, ["n1".to_string(), "n2".to_string()]);
    c.pod("s1", "big-3", cpu("1500m"), json!({}));
    let msg = c.wait_unschedulable("s1", "big-3");
    assert!(msg.contains("2 Insufficient cpu"), "{msg}");
    c.delete("s1", "big-1");
    assert_eq!(
        c.wait_bound("s1", "big-3"),
        b1,
        "a deleted pod's room is used at once"
    );

    // A node change retries parked pods: removing the taint lets "intolerant" in.
    let nodes: Api<Node> = Api::all(c.client.clone());
    c.rt.block_on(nodes.patch("gpu", &Patch::Merge(json!({"spec": {"taints": null}}))))
        .unwrap();
    assert_eq!(c.wait_bound("s1", "intolerant"), "gpu");

    // Required anti-affinity by host: one per schedulable node, the fourth waits.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}},
        "containers": [{"name": "c", "image": "busybox:1.36"}]});
    for i in 0..3 {
        c.pod(
            "s1",
            &format!("solo-{i}"),
            anti.clone(),
            json!({"app": "solo"}),
        );
    }
    let mut hosts: Vec<String> = (0..3)
        .map(|i| c.wait_bound("s1", &format!("solo-{i}")))
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["gpu", "n1", "n2"]);
    c.pod("s1", "solo-3", anti, json!({"app": "solo"}));
    let msg = c.wait_unschedulable("s1", "solo-3");
    assert!(
        msg.contains("3 node(s) didn't satisfy existing pods anti-affinity rules"),
        "{msg}"
    );

    // Topology spread over zones (a: n1; b: n2, gpu): 4 pods split 2/2.
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "spread"}}}], "containers": [{"name": "c", "image": "busybox:1.36"}]});
    let mut zones: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        c.pod(
            "s1",
            &format!("spread-{i}"),
            spread.clone(),
            json!({"app": "spread"}),
        );
        let node = c.wait_bound("s1", &format!("spread-{i}"));
        *zones
            .entry(if node == "n1" { "a".into() } else { "b".into() })
            .or_default() += 1;
    }
    assert_eq!(zones, [("a".to_string(), 2), ("b".to_string(), 2)].into());

    // What `kubectl describe pod` shows: a FailedScheduling event, and Scheduled ones.
    let events: Api<Event> = Api::namespaced(c.client.clone(), "s1");
    wait_for(
        "scheduler events",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let evs = c.rt.block_on(events.list(&ListParams::default()))?.items;
            let failed = evs.iter().any(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name.as_deref() == Some("solo-3")
            });
            let scheduled = evs.iter().any(|e| {
                e.reason.as_deref() == Some("Scheduled")
                    && e.message.as_deref() == Some("Successfully assigned s1/tolerant to gpu")
            });
            Ok((failed && scheduled).then_some(()))
        },
    )
    .unwrap();
    let described = cp
        .kubectl_ok(&["describe", "pod", "solo-3", "-n", "s1"])
        .unwrap();
    assert!(
        described.contains("FailedScheduling") && described.contains("anti-affinity rules"),
        "{described}"
    );

    // Metrics.
    wait_for(
        "the scheduled-attempts metric",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let n = sched
                .metric("scheduler_schedule_attempts_total{result=\"scheduled\"")?
                .unwrap_or(0.0);
            Ok((n >= 12.0).then_some(()))
        },
    )
    .unwrap();
    assert!(sched
        .metric("scheduler_pending_pods{queue=\"unschedulable\"}")
        .unwrap()
        .is_some());
}

#[test]
fn a_high_priority_pod_preempts_a_lower_one() {
    let run = RunDir::temp("scheduler-preempt").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let c = Cluster::new(&cp);
    c.node("p1", json!({}), json!({}), "2");
    c.node("p2", json!({}), json!({}), "2");
    let _sched = start_scheduler(&run, &cp, "scheduler", &[]);
    c.namespace("pre");
    for p in [10, 50, 100] {
        c.priority_class(&format!("p{p}"), p, "PreemptLowerPriority");
    }
    c.priority_class("polite", 1000, "Never");
    let prio = |p: i32, cpu_req: &str| {
        let mut s = cpu(cpu_req);
        s["priorityClassName"] = json!(format!("p{p}"));
        s
    };
    c.pod("pre", "low", prio(10, "1500m"), json!({}));
    c.pod("pre", "mid", prio(50, "1500m"), json!({}));
    let low_node = c.wait_bound("pre", "low");
    c.wait_bound("pre", "mid");
    c.pod("pre", "high", prio(100, "1500m"), json!({}));
    // The scheduler nominates the low-priority pod's node and deletes that pod.
    wait_for(
        "the victim to be deleted",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            c.finish_terminating("pre");
            Ok(c.get("pre", "low").is_none().then_some(()))
        },
    )
    .unwrap();
    let high = c.get("pre", "high").unwrap();
    // Priority admission set the pod's priority from its class.
    assert_eq!(high.spec.as_ref().and_then(|s| s.priority), Some(100));
    let nominated = high.status.and_then(|s| s.nominated_node_name);
    assert!(nominated.is_none() || nominated.as_deref() == Some(low_node.as_str()));
    assert_eq!(c.wait_bound("pre", "high"), low_node);
    assert!(
        c.get("pre", "mid").is_some(),
        "the higher-priority pod was spared"
    );
    // A pod that may not preempt stays pending.
    let mut never = cpu("1500m");
    never["priorityClassName"] = json!("polite");
    c.pod("pre", "polite", never, json!({}));
    let msg = c.wait_unschedulable("pre", "polite");
    assert!(msg.contains("2 Insufficient cpu"), "{msg}");
    assert!(c.get("pre", "mid").is_some());
}

#[test]
fn two_schedulers_elect_one_leader_and_the_standby_takes_over() {
    let run = RunDir::temp("scheduler-leader").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let c = Cluster::new(&cp);
    c.node("l1", json!({}), json!({}), "100");
    let flags = [
        "--leader-elect",
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ];
    let mut first = start_scheduler(&run, &cp, "scheduler-a", &flags);
    let holder = || -> String {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(c.client.clone(), "kube-system");
        c.rt.block_on(leases.get_opt("kube-scheduler"))
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    };
    let leader = wait_for(
        "a leader",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || Ok(Some(holder()).filter(|h| !h.is_empty())),
    )
    .unwrap();
    let second = start_scheduler(&run, &cp, "scheduler-b", &flags);
    c.namespace("le");
    for i in 0..5 {
        c.pod("le", &format!("a{i}"), json!({}), json!({}));
        c.wait_bound("le", &format!("a{i}"));
    }
    let attempts = |s: &Component| {
        s.metric("scheduler_schedule_attempts_total{result=\"scheduled\"")
            .unwrap()
            .unwrap_or(0.0)
    };
    assert_eq!(attempts(&second), 0.0, "the standby must not schedule");
    assert_eq!(holder(), leader);
    // Kill the leader: the standby takes over once the lease expires.
    first.process.kill().unwrap();
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let h = holder();
            Ok((!h.is_empty() && h != leader).then_some(()))
        },
    )
    .unwrap();
    for i in 0..5 {
        c.pod("le", &format!("b{i}"), json!({}), json!({}));
        c.wait_bound("le", &format!("b{i}"));
    }
    // The binding response reaches the scheduler just after the pod shows as bound.
    wait_for(
        "the new leader's scheduled count",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || Ok((attempts(&second) >= 5.0).then_some(())),
    )
    .unwrap();
}
