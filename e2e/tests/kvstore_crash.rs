//! Durability: a kvstore — one member, and a three-member group killed all at once —
//! SIGKILLed over and over under concurrent writes loses no write it acknowledged, and
//! reopens cleanly every time.

use e2e::kvstore::{Flavor, KvCluster, Options};
use e2e::wait::wait_for;
use e2e::RunDir;
use etcd_client::{Client, GetOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 20;
const WRITERS: usize = 8;

#[test]
fn acknowledged_writes_survive_sigkill_one_member() {
    crash_rounds(1);
}

#[test]
fn acknowledged_writes_survive_sigkill_three_members() {
    crash_rounds(3);
}

fn crash_rounds(size: usize) {
    let run = RunDir::temp(&format!("kvstore-crash-{size}")).unwrap();
    let opts = Options {
        // Short election timeouts: each round restarts the whole group.
        extra_args: vec![
            "--heartbeat-interval=50".into(),
            "--election-timeout=500".into(),
            // Small WAL segments and a short log: segments fill, the log is compacted
            // and old segments are deleted many times while members are killed.
            "--experimental-wal-segment-size=65536".into(),
            "--snapshot-count=100".into(),
        ],
        ..Default::default()
    };
    let mut kv = KvCluster::start(&run, Flavor::Kvstore, size, &opts).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;

    for round in 0..ROUNDS {
        let endpoints = kv.endpoints();
        // Kill after a pseudo-random number of acknowledged writes this round.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 20 + (seed % 150) as usize;
        let round_acks = Arc::new(Mutex::new(0usize));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (acked, round_acks) = (acked.clone(), round_acks.clone());
                // Writers spread over the members.
                let endpoint = endpoints[w % endpoints.len()].clone();
                rt.spawn(async move {
                    let Ok(mut c) = Client::connect([endpoint], None).await else {
                        return;
                    };
                    for n in 0.. {
                        let (k, v) = (
                            format!("crash/{round}/{w}/{n}"),
                            format!("v{round}.{w}.{n}"),
                        );
                        // Any error means the member is gone: stop writing.
                        if c.put(k.clone(), v.clone(), None).await.is_err() {
                            return;
                        }
                        acked.lock().unwrap().insert(k, v);
                        *round_acks.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        wait_for(
            "acknowledged writes",
            Duration::from_secs(30),
            Duration::from_millis(1),
            || Ok((*round_acks.lock().unwrap() >= kill_after).then_some(())),
        )
        .unwrap();
        for m in &mut kv.members {
            m.process.kill().unwrap();
        }
        for w in writers {
            rt.block_on(w).unwrap();
        }
        for m in &mut kv.members {
            m.process.restart().unwrap();
        }
        kv.wait_healthy(Duration::from_secs(30)).unwrap();

        // Every acknowledged write is there with its value.
        let stored: BTreeMap<String, String> = rt.block_on(async {
            let mut c = Client::connect(endpoints, None).await.unwrap();
            let resp = c
                .get("crash/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            resp.kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap().to_string(),
                        kv.value_str().unwrap().to_string(),
                    )
                })
                .collect()
        });
        let acked = acked.lock().unwrap();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|(k, v)| stored.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged writes lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    assert!(acked.lock().unwrap().len() >= ROUNDS * 20);
    kv.stop().unwrap();
}
