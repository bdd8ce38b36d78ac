//! Table-driven tests of each plugin, and of the profile's choices, over hand-built
//! nodes and pods.

use super::inter_pod_affinity::InterPodAffinity;
use super::node_rules::{NodeAffinity, NodeName, NodePorts, NodeUnschedulable, TaintToleration};
use super::resources::{BalancedAllocation, LeastAllocated, NodeResourcesFit};
use super::topology_spread::PodTopologySpread;
use crate::framework::{Code, CycleState, Filter, NodeInfo, PodInfo, PreFilter, Score, Snapshot};
use crate::profile::Profile;
use serde_json::{json, Value};
use std::sync::Arc;

fn pod(v: Value) -> PodInfo {
    let mut v = v;
    if v["metadata"]["namespace"].is_null() {
        v["metadata"]["namespace"] = json!("default");
    }
    if v["spec"]["containers"].is_null() {
        v["spec"]["containers"] = json!([{"name": "c"}]);
    }
    PodInfo::new(Arc::new(serde_json::from_value(v).unwrap()))
}

fn node(name: &str, labels: Value, spec: Value) -> NodeInfo {
    let n = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"}}
    });
    NodeInfo::new(Arc::new(serde_json::from_value(n).unwrap()))
}

fn with_pods(mut n: NodeInfo, pods: Vec<PodInfo>) -> NodeInfo {
    for p in pods {
        n.add_pod(Arc::new(p));
    }
    n
}

fn filter(f: &dyn Filter, p: &PodInfo, n: &NodeInfo) -> (Code, Vec<String>) {
    let s = f.filter(&CycleState::default(), p, n);
    (s.code, s.reasons)
}

#[test]
fn node_name_unschedulable_and_taints() {
    let plain = node("n1", json!({}), json!({}));
    let cordoned = node("n2", json!({}), json!({"unschedulable": true}));
    let tainted = node(
        "n3",
        json!({}),
        json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}),
    );
    let p = pod(json!({"metadata": {"name": "p"}}));
    let named = pod(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}}));
    let tolerant =
        pod(json!({"metadata": {"name": "p"}, "spec": {"tolerations": [{"operator": "Exists"}]}}));
    let cases: Vec<(&dyn Filter, &PodInfo, &NodeInfo, Code, &str)> = vec![
        (&NodeName, &p, &plain, Code::Success, ""),
        (
            &NodeName,
            &named,
            &plain,
            Code::UnschedulableAndUnresolvable,
            "node(s) didn't match the requested node name",
        ),
        (&NodeName, &named, &cordoned, Code::Success, ""),
        (
            &NodeUnschedulable,
            &p,
            &cordoned,
            Code::UnschedulableAndUnresolvable,
            "node(s) were unschedulable",
        ),
        (&NodeUnschedulable, &tolerant, &cordoned, Code::Success, ""),
        (
            &TaintToleration,
            &p,
            &tainted,
            Code::UnschedulableAndUnresolvable,
            "node(s) had untolerated taint {gpu: yes}",
        ),
        (&TaintToleration, &tolerant, &tainted, Code::Success, ""),
        (&TaintToleration, &p, &plain, Code::Success, ""),
    ];
    for (f, p, n, code, reason) in cases {
        let (c, r) = filter(f, p, n);
        assert_eq!(c, code, "{} on {}", f.name(), n.name);
        if !reason.is_empty() {
            assert_eq!(r, vec![reason.to_string()]);
        }
    }
}

#[test]
fn prefer_no_schedule_taints_lower_the_score() {
    let soft = node(
        "soft",
        json!({}),
        json!({"taints": [{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]}),
    );
    let one = node(
        "one",
        json!({}),
        json!({"taints": [{"key": "a", "effect": "PreferNoSchedule"}]}),
    );
    let clean = node("clean", json!({}), json!({}));
    let p = pod(json!({"metadata": {"name": "p"}}));
    let st = CycleState::default();
    let mut scores: Vec<i64> = [&soft, &one, &clean]
        .iter()
        .map(|n| TaintToleration.score(&st, &p, n))
        .collect();
    assert_eq!(scores, vec![2, 1, 0]);
    TaintToleration.normalize(&st, &mut scores);
    assert_eq!(scores, vec![0, 50, 100]);
}

#[test]
fn node_affinity_filters_and_scores() {
    let a = node("a", json!({"zone": "z1", "disk": "ssd"}), json!({}));
    let b = node("b", json!({"zone": "z2"}), json!({}));
    let p = pod(json!({"metadata": {"name": "p"}, "spec": {
        "nodeSelector": {"zone": "z1"}
    }}));
    assert_eq!(filter(&NodeAffinity, &p, &a).0, Code::Success);
    assert_eq!(
        filter(&NodeAffinity, &p, &b).1,
        vec!["node(s) didn't match Pod's node affinity/selector".to_string()]
    );
    let pref = pod(
        json!({"metadata": {"name": "p"}, "spec": {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}}
        ]}}}}),
    );
    let st = CycleState::default();
    let mut s = vec![
        NodeAffinity.score(&st, &pref, &a),
        NodeAffinity.score(&st, &pref, &b),
    ];
    assert_eq!(s, vec![6, 1]);
    NodeAffinity.normalize(&st, &mut s);
    assert_eq!(s, vec![100, 16]);
}

#[test]
fn resources_fit_counts_requests_and_pods() {
    let req = |cpu: &str, mem: &str| {
        pod(
            json!({"metadata": {"name": format!("r{cpu}{mem}")}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
        )
    };
    let busy = with_pods(
        node("busy", json!({}), json!({})),
        vec![req("1500m", "1Gi")],
    );
    let full = with_pods(
        node("full", json!({}), json!({})),
        vec![req("1m", "1Mi"), req("2m", "1Mi"), req("3m", "1Mi")],
    );
    let cases = [
        (req("500m", "1Gi"), &busy, vec![]),
        (req("600m", "1Gi"), &busy, vec!["Insufficient cpu"]),
        (req("100m", "4Gi"), &busy, vec!["Insufficient memory"]),
        (
            req("1", "5Gi"),
            &busy,
            vec!["Insufficient cpu", "Insufficient memory"],
        ),
        (req("1m", "1Mi"), &full, vec!["Too many pods"]),
    ];
    for (p, n, want) in cases {
        let (code, reasons) = filter(&NodeResourcesFit, &p, n);
        assert_eq!(reasons, want, "{} on {}", p.key, n.name);
        assert_eq!(code == Code::Success, want.is_empty());
    }
    let gpu = pod(
        json!({"metadata": {"name": "g"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]}}),
    );
    assert_eq!(
        filter(&NodeResourcesFit, &gpu, &busy).1,
        vec!["Insufficient nvidia.com/gpu".to_string()]
    );
}

#[test]
fn least_allocated_and_balanced_scores() {
    let st = CycleState::default();
    let req = |cpu: &str, mem: &str| {
        pod(
            json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
        )
    };
    let empty = node("e", json!({}), json!({}));
    let half = with_pods(node("h", json!({}), json!({})), vec![req("1", "2Gi")]);
    let p = req("1", "1Gi");
    // Empty node: cpu 50% and memory 25% used after placing → (50 + 75) / 2.
    assert_eq!(LeastAllocated.score(&st, &p, &empty), 62);
    assert_eq!(LeastAllocated.score(&st, &p, &half), 12);
    // Balanced: |0.5 - 0.25| / 2 = 0.125 off → 87; on `half`: cpu 1.0, mem 0.75 → 87.
    assert_eq!(BalancedAllocation.score(&st, &p, &empty), 87);
    assert_eq!(BalancedAllocation.score(&st, &p, &half), 87);
}

#[test]
fn host_ports_conflict() {
    let hp = |port: i32, ip: &str| {
        pod(
            json!({"metadata": {"name": format!("p{port}{ip}")}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}}),
        )
    };
    let n = with_pods(node("n", json!({}), json!({})), vec![hp(8080, "10.0.0.1")]);
    assert_eq!(filter(&NodePorts, &hp(8080, ""), &n).0, Code::Unschedulable);
    assert_eq!(
        filter(&NodePorts, &hp(8080, "10.0.0.1"), &n).0,
        Code::Unschedulable
    );
    assert_eq!(
        filter(&NodePorts, &hp(8080, "10.0.0.2"), &n).0,
        Code::Success
    );
    assert_eq!(filter(&NodePorts, &hp(9090, ""), &n).0, Code::Success);
}

fn labeled(name: &str, app: &str) -> PodInfo {
    pod(json!({"metadata": {"name": name, "labels": {"app": app}}}))
}

fn run_prefilter_filter(
    p: &dyn PreFilter,
    f: &dyn Filter,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
) -> Vec<Code> {
    let mut st = CycleState::default();
    assert!(p
        .pre_filter(&mut st, pod, &Snapshot::new(nodes))
        .is_success());
    nodes.iter().map(|n| f.filter(&st, pod, n).code).collect()
}

#[test]
fn inter_pod_affinity_and_anti_affinity() {
    let zone = |z: &str| json!({"zone": z});
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(
            node("a1", zone("a"), json!({})),
            vec![labeled("db", "db")],
        )),
        Arc::new(node("a2", zone("a"), json!({}))),
        Arc::new(node("b1", zone("b"), json!({}))),
    ];
    let term = |app: &str| json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "zone"}]);
    let near_db = pod(
        json!({"metadata": {"name": "w", "labels": {"app": "web"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}}}),
    );
    let away_db = pod(
        json!({"metadata": {"name": "w", "labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}}}),
    );
    let (s, u, x) = (
        Code::Success,
        Code::Unschedulable,
        Code::UnschedulableAndUnresolvable,
    );
    assert_eq!(
        run_prefilter_filter(&InterPodAffinity, &InterPodAffinity, &near_db, &nodes),
        vec![s, s, x]
    );
    assert_eq!(
        run_prefilter_filter(&InterPodAffinity, &InterPodAffinity, &away_db, &nodes),
        vec![u, u, s]
    );
    // The first pod of a group that selects itself may go anywhere.
    let first = pod(
        json!({"metadata": {"name": "f", "labels": {"app": "cache"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache")}}}}),
    );
    assert_eq!(
        run_prefilter_filter(&InterPodAffinity, &InterPodAffinity, &first, &nodes),
        vec![s, s, s]
    );
    // An existing pod's anti-affinity keeps matching pods out of its zone.
    let loner = pod(
        json!({"metadata": {"name": "l", "labels": {"app": "loner"}}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web")}}}}),
    );
    let nodes2: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(node("a1", zone("a"), json!({})), vec![loner])),
        Arc::new(node("b1", zone("b"), json!({}))),
    ];
    assert_eq!(
        run_prefilter_filter(
            &InterPodAffinity,
            &InterPodAffinity,
            &labeled("w2", "web"),
            &nodes2
        ),
        vec![u, s]
    );
    assert_eq!(
        run_prefilter_filter(
            &InterPodAffinity,
            &InterPodAffinity,
            &labeled("o", "other"),
            &nodes2
        ),
        vec![s, s]
    );
}

#[test]
fn preferred_pod_affinity_scores_by_domain() {
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(
            node("a", json!({"zone": "a"}), json!({})),
            vec![labeled("db", "db")],
        )),
        Arc::new(node("b", json!({"zone": "b"}), json!({}))),
    ];
    let p = pod(
        json!({"metadata": {"name": "w"}, "spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}
        ]}}}}),
    );
    let mut st = CycleState::default();
    let refs: Vec<&NodeInfo> = nodes.iter().map(|n| n.as_ref()).collect();
    InterPodAffinity.pre_score(&mut st, &p, &refs, &Snapshot::new(&nodes));
    let mut s: Vec<i64> = nodes
        .iter()
        .map(|n| InterPodAffinity.score(&st, &p, n))
        .collect();
    InterPodAffinity.normalize(&st, &mut s);
    assert_eq!(s, vec![100, 0]);
}

#[test]
fn topology_spread_do_not_schedule() {
    let spread = |skew: i32| {
        pod(
            json!({"metadata": {"name": "new", "labels": {"app": "s"}}, "spec": {"topologySpreadConstraints": [
                {"maxSkew": skew, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "s"}}}
            ]}}),
        )
    };
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(
            node("a1", json!({"zone": "a"}), json!({})),
            vec![labeled("s1", "s"), labeled("s2", "s")],
        )),
        Arc::new(with_pods(
            node("b1", json!({"zone": "b"}), json!({})),
            vec![labeled("s3", "s")],
        )),
        Arc::new(node("c1", json!({"zone": "c"}), json!({}))),
        Arc::new(node("nolabel", json!({}), json!({}))),
    ];
    let (s, u, x) = (
        Code::Success,
        Code::Unschedulable,
        Code::UnschedulableAndUnresolvable,
    );
    // Counts a=2 b=1 c=0: with maxSkew 1 only c fits; with 2, b and c.
    assert_eq!(
        run_prefilter_filter(&PodTopologySpread, &PodTopologySpread, &spread(1), &nodes),
        vec![u, u, s, x]
    );
    assert_eq!(
        run_prefilter_filter(&PodTopologySpread, &PodTopologySpread, &spread(2), &nodes),
        vec![u, s, s, x]
    );
}

#[test]
fn topology_spread_schedule_anyway_prefers_empty_domains() {
    let p = pod(
        json!({"metadata": {"name": "new", "labels": {"app": "s"}}, "spec": {"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "s"}}}
        ]}}),
    );
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(
            node("a1", json!({"zone": "a"}), json!({})),
            vec![labeled("s1", "s"), labeled("s2", "s")],
        )),
        Arc::new(node("b1", json!({"zone": "b"}), json!({}))),
    ];
    let mut st = CycleState::default();
    let refs: Vec<&NodeInfo> = nodes.iter().map(|n| n.as_ref()).collect();
    PodTopologySpread.pre_score(&mut st, &p, &refs, &Snapshot::new(&nodes));
    let mut s: Vec<i64> = nodes
        .iter()
        .map(|n| PodTopologySpread.score(&st, &p, n))
        .collect();
    PodTopologySpread.normalize(&st, &mut s);
    assert_eq!(s, vec![0, 100]);
}

#[test]
fn profile_explains_why_nothing_fits() {
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(node(
            "t1",
            json!({}),
            json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}),
        )),
        Arc::new(node(
            "t2",
            json!({}),
            json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}),
        )),
        Arc::new(node("c", json!({}), json!({}))),
    ];
    let big = pod(
        json!({"metadata": {"name": "big"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}}),
    );
    let Err(d) = Profile::default().schedule(&big, &Snapshot::new(&nodes), 0) else {
        panic!("should not fit")
    };
    assert_eq!(
        d.message(),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
    );
    assert_eq!(d.plugins(), vec!["NodeResourcesFit", "TaintToleration"]);
    let small = pod(json!({"metadata": {"name": "small"}}));
    let Ok(placed) = Profile::default().schedule(&small, &Snapshot::new(&nodes), 0) else {
        panic!("should fit")
    };
    assert_eq!(placed.node, "c");
}

#[test]
fn preemption_picks_the_least_important_victims() {
    let req = |name: &str, cpu: &str, prio: i32| {
        pod(
            json!({"metadata": {"name": name}, "spec": {"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    };
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(
            node("n1", json!({}), json!({})),
            vec![req("mid", "2", 50)],
        )),
        Arc::new(with_pods(
            node("n2", json!({}), json!({})),
            vec![req("low-a", "1", 10), req("low-b", "1", 10)],
        )),
        Arc::new(with_pods(
            node("n3", json!({}), json!({})),
            vec![req("vip", "2", 1000)],
        )),
    ];
    let profile = Profile::default();
    let high = req("high", "1", 100);
    let Err(d) = profile.schedule(&high, &Snapshot::new(&nodes), 0) else {
        panic!("nothing should fit")
    };
    assert!(crate::preemption::eligible(&high, &nodes));
    let p = crate::preemption::find(&profile, &high, &nodes, &d, &[]).expect("a preemption");
    // n2 needs one victim of priority 10; n1 one of 50; n3 is not preemptible.
    assert_eq!(p.node, "n2");
    assert_eq!(p.victims.len(), 1);
    let never = pod(
        json!({"metadata": {"name": "n"}, "spec": {"priority": 100, "preemptionPolicy": "Never", "containers": [{"name": "c"}]}}),
    );
    assert!(!crate::preemption::eligible(&never, &nodes));
}

#[test]
fn preemption_spares_pods_a_disruption_budget_protects() {
    let req = |name: &str, app: &str, prio: i32| {
        pod(
            json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}}, "spec": {"priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}),
        )
    };
    // n1's pod is the least important but its budget allows no disruption.
    let nodes: Vec<Arc<NodeInfo>> = vec![
        Arc::new(with_pods(
            node("n1", json!({}), json!({})),
            vec![req("db", "db", 10)],
        )),
        Arc::new(with_pods(
            node("n2", json!({}), json!({})),
            vec![req("web", "web", 20)],
        )),
    ];
    let budget = |allowed: i32| {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(
            json!({"metadata": {"name": "db", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "db"}}, "minAvailable": 1},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}),
        )
        .unwrap();
        crate::preemption::Budget::new(&pdb).unwrap()
    };
    let profile = Profile::default();
    let high = req("high", "x", 100);
    let Err(d) = profile.schedule(&high, &Snapshot::new(&nodes), 0) else {
        panic!("nothing should fit")
    };
    let find = |budgets: &[crate::preemption::Budget]| {
        crate::preemption::find(&profile, &high, &nodes, &d, budgets).expect("a preemption")
    };
    assert_eq!(find(&[]).node, "n1");
    let p = find(&[budget(0)]);
    assert_eq!(p.node, "n2", "the protected pod is spared");
    assert_eq!(p.victims[0].pod.metadata.name.as_deref(), Some("web"));
    assert_eq!(
        find(&[budget(1)]).node,
        "n1",
        "a budget with room allows it"
    );
}
