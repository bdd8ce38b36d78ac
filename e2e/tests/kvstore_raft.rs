//! Raft replication across kvstore processes: a 3-member group keeps serving when its
//! leader is SIGKILLed, elects a new one within a few election timeouts, and the killed
//! member catches up by snapshot; a minority never acknowledges a write; membership
//! changes through the real etcdctl (learner first, promote, remove); `/metrics` counts it.

use e2e::kvstore::{Flavor, KvCluster, Options};
use e2e::wait::{http_get, wait_for};
use e2e::RunDir;
use etcd_client::{Client, ConnectOptions, GetOptions, StatusResponse};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const ELECTION_MS: u64 = 500;

/// Short raft timings and a short log, so a member that misses 100 writes needs a
/// snapshot to catch up.
fn fast() -> Options {
    Options {
        extra_args: vec![
            "--heartbeat-interval=50".into(),
            format!("--election-timeout={ELECTION_MS}"),
            "--snapshot-count=16".into(),
        ],
        ..Default::default()
    }
}

fn connect_opts() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(3))
}

async fn client(endpoints: Vec<String>) -> Client {
    Client::connect(endpoints, Some(connect_opts()))
        .await
        .expect("connecting to the kvstore")
}

async fn status(endpoint: &str) -> Option<StatusResponse> {
    let mut c = Client::connect([endpoint], Some(connect_opts()))
        .await
        .ok()?;
    c.status().await.ok()
}

/// The index of the member every running member agrees is the leader.
fn agreed_leader(rt: &tokio::runtime::Runtime, kv: &mut KvCluster) -> Option<usize> {
    let endpoints: Vec<(usize, String)> = kv
        .members
        .iter_mut()
        .enumerate()
        .filter_map(|(i, m)| m.process.is_running().then(|| (i, m.client_url(false))))
        .collect();
    let statuses: Vec<(usize, StatusResponse)> = rt.block_on(async {
        let mut out = Vec::new();
        for (i, ep) in &endpoints {
            out.push((*i, status(ep).await?));
        }
        Some(out)
    })?;
    let leader = statuses[0].1.leader();
    if leader == 0 || statuses.iter().any(|(_, s)| s.leader() != leader) {
        return None;
    }
    statuses
        .iter()
        .find(|(_, s)| s.header().map(|h| h.member_id()) == Some(leader))
        .map(|(i, _)| *i)
}

fn count(rt: &tokio::runtime::Runtime, endpoint: &str, serializable: bool) -> Option<usize> {
    rt.block_on(async {
        let mut c = Client::connect([endpoint], Some(connect_opts()))
            .await
            .ok()?;
        let mut opts = GetOptions::new().with_prefix().with_keys_only();
        if serializable {
            opts = opts.with_serializable();
        }
        Some(c.get("k/", Some(opts)).await.ok()?.kvs().len())
    })
}

#[test]
fn leader_sigkill_new_leader_and_catch_up_by_snapshot() {
    let run = RunDir::temp("kvstore-failover").unwrap();
    let mut kv = KvCluster::start(&run, Flavor::Kvstore, 3, &fast()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(kv.endpoints()).await;
        for i in 0..10 {
            c.put(format!("k/{i:03}"), "before", None).await.unwrap();
        }
    });
    let old = wait_for(
        "a leader all members agree on",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || Ok(agreed_leader(&rt, &mut kv)),
    )
    .unwrap();
    kv.members[old].process.kill().unwrap();
    let killed_at = Instant::now();
    // "Within a few election timeouts": ten, generous for a loaded 2-core machine.
    let new = wait_for(
        "a new leader among the survivors",
        Duration::from_millis(10 * ELECTION_MS),
        Duration::from_millis(20),
        || Ok(agreed_leader(&rt, &mut kv)),
    )
    .unwrap();
    assert_ne!(new, old);
    eprintln!("new leader after {:?}", killed_at.elapsed());

    // The survivors take writes; enough that the log is compacted past the dead member.
    let survivors: Vec<String> = kv
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, m)| m.client_url(false))
        .collect();
    // Some large values too, written at once through both survivors (a follower forwards
    // its share to the leader in one message), so the snapshot comes in several pieces.
    let big = |i: usize| vec![b'a' + i as u8; 700 * 1024];
    rt.block_on(async {
        let c = client(survivors.clone()).await;
        let puts: Vec<_> = (0..6)
            .map(|i| {
                let mut c = c.clone();
                tokio::spawn(async move { c.put(format!("big/{i}"), big(i), None).await })
            })
            .collect();
        for p in puts {
            p.await.unwrap().unwrap();
        }
        let mut c = c.clone();
        for i in 10..110 {
            c.put(format!("k/{i:03}"), "after", None).await.unwrap();
        }
    });

    kv.members[old].process.restart().unwrap();
    let back = kv.members[old].client_url(false);
    wait_for(
        "the restarted member to catch up",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || Ok((count(&rt, &back, true) == Some(110)).then_some(())),
    )
    .unwrap();
    assert_eq!(count(&rt, &back, false), Some(110), "linearizable read");
    rt.block_on(async {
        let mut c = Client::connect([back.as_str()], Some(connect_opts()))
            .await
            .unwrap();
        for i in 0..6 {
            let opts = GetOptions::new().with_serializable();
            let got = c.get(format!("big/{i}"), Some(opts)).await.unwrap();
            let value = got.kvs().first().map(|kv| kv.value());
            assert!(
                value == Some(big(i).as_slice()),
                "big/{i} did not arrive intact"
            );
        }
    });
    let log = std::fs::read_to_string(kv.members[old].process.log_path()).unwrap();
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the member should have caught up by snapshot:\n{log}"
    );

    // The new leader's /metrics: etcd's names, moved by what happened here.
    let (code, body) = http_get(kv.members[new].metrics_addr(), "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
    };
    assert!(value("etcd_server_proposals_committed_total") >= 100.0);
    assert!(value("etcd_server_proposals_applied_total") >= 100.0);
    assert!(value("etcd_server_proposals_failed_total") >= 0.0);
    // It followed the old leader, then led: two changes at least.
    assert!(value("etcd_server_leader_changes_seen_total") >= 2.0);
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 100.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    kv.stop().unwrap();
}

#[test]
fn a_minority_never_acknowledges_a_write() {
    let run = RunDir::temp("kvstore-minority").unwrap();
    let mut kv = KvCluster::start(&run, Flavor::Kvstore, 3, &fast()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lone = kv.members[0].client_url(false);
    rt.block_on(async {
        client(vec![lone.clone()])
            .await
            .put("k/before", "1", None)
            .await
            .unwrap();
    });
    kv.members[1].process.kill().unwrap();
    kv.members[2].process.kill().unwrap();
    rt.block_on(async {
        let mut c = client(vec![lone.clone()]).await;
        let put = c.put("k/minority", "x", None).await;
        assert!(put.is_err(), "a lone member acknowledged a write: {put:?}");
        let get = c.get("k/before", None).await;
        assert!(get.is_err(), "a lone member served a linearizable read");
        // A serializable read is local, and allowed.
        let local = c
            .get("k/before", Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        assert_eq!(local.kvs().len(), 1);
    });
    // A majority again: writes go through.
    kv.members[1].process.restart().unwrap();
    rt.block_on(async {
        let mut c = client(vec![lone.clone()]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c.put("k/majority", "y", None).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for the majority: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no write after the majority came back: {e}"),
            }
        }
    });
    kv.stop().unwrap();
}

fn etcdctl(endpoints: &[String], args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("etcdctl (Debian etcd-client) is installed by `make deps`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn member_list(endpoints: &[String]) -> Vec<Value> {
    let (ok, out) = etcdctl(endpoints, &["member", "list", "-w", "json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["members"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(members: &'a [Value], name: &str) -> Option<&'a Value> {
    members.iter().find(|m| m["name"] == name)
}

#[test]
fn membership_learner_promote_remove_with_etcdctl() {
    let run = RunDir::temp("kvstore-membership").unwrap();
    let mut kv = KvCluster::start(&run, Flavor::Kvstore, 3, &fast()).unwrap();
    let eps = kv.endpoints();
    let (ok, out) = etcdctl(&eps, &["put", "k/0", "hello"]);
    assert!(ok, "{out}");

    let ports = KvCluster::new_ports().unwrap();
    let peer = format!("http://127.0.0.1:{}", ports.1);
    let (ok, out) = etcdctl(
        &eps,
        &[
            "member",
            "add",
            "kvstore3",
            &format!("--peer-urls={peer}"),
            "--learner",
        ],
    );
    assert!(ok && out.contains("added to cluster"), "{out}");
    // Adding the same peer URL twice is refused.
    let (ok, out) = etcdctl(
        &eps,
        &["member", "add", "again", &format!("--peer-urls={peer}")],
    );
    assert!(!ok && out.contains("Peer URLs already exists"), "{out}");

    kv.join(&run, "kvstore3", ports).unwrap();
    let joined = kv.members[3].client_url(false);
    let id = wait_for(
        "the learner to publish its client URL",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let members = member_list(&eps);
            Ok(find(&members, "kvstore3").and_then(|m| {
                (m["clientURLs"][0] == joined.as_str() && m["isLearner"] == true)
                    .then(|| m["ID"].as_u64().unwrap())
            }))
        },
    )
    .unwrap();
    let hex = format!("{id:x}");
    let (ok, out) = etcdctl(
        std::slice::from_ref(&joined),
        &["get", "k/0", "--consistency=s"],
    );
    assert!(ok && out.contains("hello"), "{out}");
    // As in etcd, a learner serves serializable reads only.
    for args in [&["put", "k/x", "v"][..], &["get", "k/0"][..]] {
        let (ok, out) = etcdctl(std::slice::from_ref(&joined), args);
        assert!(
            !ok && out.contains("rpc not supported for learner"),
            "{args:?}: {out}"
        );
    }

    let (ok, out) = wait_for(
        "the learner to be promotable",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let r = etcdctl(&eps, &["member", "promote", &hex]);
            Ok((r.0 || !r.1.contains("in sync")).then_some(r))
        },
    )
    .unwrap();
    assert!(ok && out.contains("promoted"), "{out}");
    let members = member_list(&eps);
    assert_eq!(
        find(&members, "kvstore3").unwrap()["isLearner"],
        Value::Null
    );
    let (ok, out) = etcdctl(&eps, &["member", "promote", &hex]);
    assert!(
        !ok && out.contains("can only promote a learner member"),
        "{out}"
    );
    // Now a voter: it takes writes.
    let (ok, out) = etcdctl(
        std::slice::from_ref(&joined),
        &["put", "k/1", "from-the-new-voter"],
    );
    assert!(ok, "{out}");

    let (ok, out) = etcdctl(&eps, &["member", "remove", &hex]);
    assert!(ok && out.contains("removed from cluster"), "{out}");
    wait_for(
        "the removed member to stop",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || Ok((!kv.members[3].process.is_running()).then_some(())),
    )
    .unwrap();
    assert_eq!(member_list(&eps).len(), 3);
    let (ok, out) = etcdctl(&eps, &["member", "remove", "1234"]);
    assert!(!ok && out.contains("member not found"), "{out}");
    let (ok, out) = etcdctl(&eps, &["get", "k/1"]);
    assert!(ok && out.contains("from-the-new-voter"), "{out}");
    kv.stop().unwrap();
}

#[test]
fn keep_alives_sent_to_a_follower_reach_the_leader() {
    let run = RunDir::temp("kvstore-lease-forward").unwrap();
    let mut kv = KvCluster::start(&run, Flavor::Kvstore, 3, &fast()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leader = wait_for(
        "a leader",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || Ok(agreed_leader(&rt, &mut kv)),
    )
    .unwrap();
    let follower = kv.members[(leader + 1) % 3].client_url(false);
    let leader_ep = kv.members[leader].client_url(false);
    rt.block_on(async {
        let mut c = client(vec![follower.clone()]).await;
        let lease = c.lease_grant(2, None).await.unwrap().id();
        c.put(
            "k/leased",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
        // Keep it alive through the follower for three TTLs: only the leader expires
        // leases, so it must hear about every renewal.
        let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            keeper.keep_alive().await.unwrap();
            let a = answers.message().await.unwrap().unwrap();
            assert!(a.ttl() > 0, "the leader does not know the lease");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut l = client(vec![leader_ep.clone()]).await;
        assert_eq!(
            l.get("k/leased", None).await.unwrap().kvs().len(),
            1,
            "the lease expired although a follower kept it alive"
        );
        drop(keeper);
        // Without keep-alives it expires, and its key goes with it.
        let deadline = Instant::now() + Duration::from_secs(15);
        while l.get("k/leased", None).await.unwrap().count() != 0 {
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    kv.stop().unwrap();
}
