//! The `client` crate against real apiservers: an informer keeps exactly the server's
//! state and reports every change once, in order, while its apiserver is SIGKILLed
//! (failover to a second one) and restarted; after a compaction it relists and reports
//! the difference; leader election hands over only after the old leader stopped acting.

use client::informer::Event;
use client::leader::{self, LeaderElectionConfig};
use client::{Api, Client, DeleteParams, Informer, ListParams};
use e2e::apiserver::{wait_ready, ControlPlane};
use e2e::kvstore::Flavor;
use e2e::wait::wait_for;
use e2e::RunDir;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cm(name: &str, value: u32) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value.to_string()}}))
        .unwrap()
}

fn client(path: &std::path::Path) -> Client {
    Client::from_kubeconfig_file(path, "client-test").unwrap()
}

async fn namespace(c: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(c.clone()).create(&ns).await.unwrap();
}

/// Creates the config map; when the apiserver died with the outcome unknown, looks
/// whether it landed (this test is the only writer). Returns its resourceVersion.
async fn create_once(api: &Api<ConfigMap>, name: &str, value: u32) -> String {
    loop {
        match api.create(&cm(name, value)).await {
            Ok(o) => return o.metadata.resource_version.unwrap(),
            Err(client::Error::Transport(_)) => {
                if let Some(o) = api.get_opt(name).await.unwrap() {
                    return o.metadata.resource_version.unwrap();
                }
            }
            Err(e) => panic!("create {name}: {e}"),
        }
    }
}

/// Updates the value; a Conflict after a retry means the first attempt landed.
async fn update_once(api: &Api<ConfigMap>, mut o: ConfigMap, value: u32) -> String {
    let name = o.metadata.name.clone().unwrap();
    o.data = Some([("v".to_string(), value.to_string())].into());
    match api.replace(&o).await {
        Ok(o) => o.metadata.resource_version.unwrap(),
        Err(e) if e.is_conflict() => {
            let now = api.get(&name).await.unwrap();
            assert_eq!(
                now.data, o.data,
                "a conflict that is not our own earlier attempt"
            );
            now.metadata.resource_version.unwrap()
        }
        Err(e) => panic!("update {name}: {e}"),
    }
}

/// Per key, what happened: "+rv", "~rv", "-".
type Log = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

fn record(informer: &Informer<ConfigMap>) -> Log {
    let log: Log = Arc::default();
    let l = log.clone();
    informer.add_handler(move |ev| {
        let (key, entry) = match ev {
            Event::Add(o) => (
                o.metadata.name.clone().unwrap(),
                format!("+{}", o.metadata.resource_version.clone().unwrap()),
            ),
            Event::Update(_, o) => (
                o.metadata.name.clone().unwrap(),
                format!("~{}", o.metadata.resource_version.clone().unwrap()),
            ),
            Event::Delete(o) => (o.metadata.name.clone().unwrap(), "-".to_string()),
        };
        l.lock().unwrap().entry(key).or_default().push(entry);
    });
    log
}

/// Waits until the informer's cache holds exactly what a consistent list returns.
fn wait_converged(
    rt: &tokio::runtime::Runtime,
    informer: &Informer<ConfigMap>,
    api: &Api<ConfigMap>,
) {
    wait_for(
        "the informer to converge",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let listed: BTreeMap<String, String> = rt
                .block_on(api.list(&ListParams::default()))?
                .items
                .into_iter()
                .map(|c| {
                    (
                        c.metadata.name.unwrap(),
                        c.metadata.resource_version.unwrap(),
                    )
                })
                .collect();
            let cached: BTreeMap<String, String> = informer
                .store()
                .list()
                .iter()
                .map(|c| {
                    (
                        c.metadata.name.clone().unwrap(),
                        c.metadata.resource_version.clone().unwrap(),
                    )
                })
                .collect();
            Ok((listed == cached).then_some(()))
        },
    )
    .unwrap();
}

#[test]
fn informer_sees_every_change_once_across_kill_failover_and_restart() {
    let run = RunDir::temp("client-informer").unwrap();
    let mut cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let (_b, b_url) = cp.add_apiserver(&run, "apiserver-b").unwrap();
    let both = cp
        .admin_kubeconfig(&run, "both.kubeconfig", &[cp.url.clone(), b_url])
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(async { client(&both) });
    rt.block_on(namespace(&c, "inf"));
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "inf");
    let informer = rt.block_on(async {
        let i = Informer::new(api.clone(), ListParams::default());
        i.start();
        i.wait_synced().await;
        i
    });
    let log = record(&informer);

    // The writer: creates, updates and deletes, recording what each write produced.
    let done = Arc::new(AtomicUsize::new(0));
    let expected: Log = Arc::default();
    let writer = {
        let (api, done, expected) = (api.clone(), done.clone(), expected.clone());
        rt.spawn(async move {
            for i in 0..240u32 {
                let name = format!("cm{}", i % 12);
                let existing = api.get_opt(&name).await.unwrap();
                let entry = match (existing, i % 5) {
                    (None, _) => format!("+{}", create_once(&api, &name, i).await),
                    (Some(_), 4) => {
                        match api.delete(&name, &DeleteParams::default()).await {
                            Ok(()) => {}
                            // A retry of a delete that landed before its apiserver died.
                            Err(e) if e.is_not_found() => {}
                            Err(e) => panic!("delete {name}: {e}"),
                        }
                        "-".to_string()
                    }
                    (Some(o), _) => format!("~{}", update_once(&api, o, i).await),
                };
                expected
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_default()
                    .push(entry);
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let reached = |n: usize| {
        wait_for(
            &format!("{n} writes"),
            Duration::from_secs(120),
            Duration::from_millis(20),
            || Ok((done.load(Ordering::SeqCst) >= n).then_some(())),
        )
        .unwrap()
    };
    reached(60);
    cp.apiserver.kill().unwrap(); // the informer's and the writer's server: both fail over
    reached(140);
    cp.apiserver.restart().unwrap();
    wait_ready(&mut cp.apiserver, &cp.kubeconfig, Duration::from_secs(60)).unwrap();
    rt.block_on(writer).unwrap();
    wait_converged(&rt, &informer, &api);
    let seen = log.lock().unwrap().clone();
    let wanted = expected.lock().unwrap().clone();
    assert_eq!(seen, wanted, "the informer's events differ from the writes");
}

#[test]
fn reflector_relists_after_compaction_and_reports_the_difference() {
    let run = RunDir::temp("client-relist").unwrap();
    let mut cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let (_b, b_url) = cp.add_apiserver(&run, "apiserver-b").unwrap();
    let only_b = cp.admin_kubeconfig(&run, "b.kubeconfig", &[b_url]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ca, cb) = rt.block_on(async { (client(&cp.kubeconfig), client(&only_b)) });
    rt.block_on(namespace(&cb, "rel"));
    let writes: Api<ConfigMap> = Api::namespaced(cb.clone(), "rel");
    for i in 0..5 {
        rt.block_on(writes.create(&cm(&format!("c{i}"), i)))
            .unwrap();
    }
    let informer = rt.block_on(async {
        let i = Informer::new(Api::namespaced(ca.clone(), "rel"), ListParams::default());
        i.start();
        i.wait_synced().await;
        i
    });
    let log = record(&informer);
    log.lock().unwrap().clear(); // forget the replayed adds

    // While the informer's only apiserver is down: changes, then a compaction that
    // removes the revision its watch would resume from.
    cp.apiserver.kill().unwrap();
    let last_rv = rt.block_on(async {
        writes.delete("c0", &DeleteParams::default()).await.unwrap();
        writes.delete("c1", &DeleteParams::default()).await.unwrap();
        let mut c2 = writes.get("c2").await.unwrap();
        c2.data = Some([("v".to_string(), "changed".to_string())].into());
        let c2 = writes.replace(&c2).await.unwrap();
        writes.create(&cm("n1", 0)).await.unwrap();
        writes.create(&cm("n2", 0)).await.unwrap();
        let n2 = writes.get("n2").await.unwrap();
        (
            c2.metadata.resource_version.unwrap(),
            n2.metadata.resource_version.unwrap(),
        )
    });
    rt.block_on(cp.compact_store(last_rv.1.parse().unwrap()))
        .unwrap();
    cp.apiserver.restart().unwrap();
    wait_ready(&mut cp.apiserver, &cp.kubeconfig, Duration::from_secs(60)).unwrap();
    wait_converged(&rt, &informer, &writes);
    let seen = log.lock().unwrap().clone();
    let n1 = rt
        .block_on(writes.get("n1"))
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wanted: BTreeMap<String, Vec<String>> = [
        ("c0", vec!["-".to_string()]),
        ("c1", vec!["-".to_string()]),
        ("c2", vec![format!("~{}", last_rv.0)]),
        ("n1", vec![format!("+{n1}")]),
        ("n2", vec![format!("+{}", last_rv.1)]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(seen, wanted);
}

#[test]
fn leader_election_hands_over_only_after_the_leader_stopped() {
    let run = RunDir::temp("client-leader").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let (b, b_url) = cp.add_apiserver(&run, "apiserver-b").unwrap();
    let only_b = cp.admin_kubeconfig(&run, "b.kubeconfig", &[b_url]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ca, cb) = rt.block_on(async { (client(&cp.kubeconfig), client(&only_b)) });
    let cfg = |id: &str| LeaderElectionConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..LeaderElectionConfig::new("kube-system", "client-test", id)
    };
    // Graceful hand-over: the first leader releases, the second takes over at once.
    let first = rt
        .block_on(leader::acquire(ca.clone(), cfg("first")))
        .unwrap();
    let second = rt.spawn(leader::acquire(cb.clone(), cfg("second")));
    let leases: Api<Lease> = Api::namespaced(cb.clone(), "kube-system");
    let holder = || {
        rt.block_on(leases.get("client-test"))
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .unwrap_or_default()
    };
    assert_eq!(holder(), "first");
    assert!(!second.is_finished());
    let released = Instant::now();
    rt.block_on(first.release());
    let mut second = rt.block_on(second).unwrap().unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "the standby waited {:?}",
        released.elapsed()
    );
    assert_eq!(holder(), "second");

    // The leader loses its apiserver: it must give up before anyone else takes over.
    let third = rt.spawn(async move {
        let l = leader::acquire(ca, cfg("third")).await.unwrap();
        (Instant::now(), l)
    });
    let mut b = b;
    b.kill().unwrap(); // "second" renews through B only; "third" campaigns through A
    let lost_at = rt.block_on(async {
        second.lost().await;
        Instant::now()
    });
    let (taken_at, third) = rt.block_on(third).unwrap();
    assert!(
        lost_at < taken_at,
        "the new leader took over before the old one stopped"
    );
    assert!(!third.is_lost());
    let leases: Api<Lease> =
        Api::namespaced(rt.block_on(async { client(&cp.kubeconfig) }), "kube-system");
    let holder = rt
        .block_on(leases.get("client-test"))
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("third"));
}
