//! Linearizability under faults: concurrent clients put, get and compare-and-swap on a
//! three-member kvstore while members are SIGKILLed, paused (SIGSTOP/SIGCONT) and
//! restarted. The history of every key must be linearizable, and watchers on the prefix
//! (reconnecting to another member whenever theirs fails) must each see every revision
//! exactly once, in order, with no gap, and all see the same thing.

use e2e::kvstore::{Flavor, KvCluster, Options};
use e2e::linearizability::{check, Call, Op};
use e2e::wait::wait_for;
use e2e::RunDir;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Error, EventType, GetOptions, Txn, TxnOp,
    WatchOptions,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: u64 = 6;
const KEYS: u64 = 3;
const WATCHERS: usize = 3;
/// Fault rounds: each kills or pauses one member and lets the rest make progress.
const ROUNDS: usize = 10;
const PREFIX: &str = "lin/";

fn key(k: u64) -> String {
    format!("{PREFIX}{k}")
}

/// Values are unique per write: client id and sequence number.
fn value(id: u64) -> String {
    format!("{id:016x}")
}

fn parse_value(v: &[u8]) -> u64 {
    u64::from_str_radix(std::str::from_utf8(v).unwrap(), 16).unwrap()
}

fn opts() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1))
}

/// Whether an error proves the request had no effect: no connection was made, or the
/// server refused it before proposing (no leader).
fn surely_not_applied(e: &Error) -> bool {
    match e {
        Error::TransportError(_) => true,
        Error::GRpcStatus(s) => s.message().contains("no leader"),
        _ => false,
    }
}

struct Recorded {
    key: u64,
    call: Call,
}

struct Shared {
    start: Instant,
    up: Vec<AtomicBool>,
    stop: AtomicBool,
    done_ops: AtomicUsize,
    history: Mutex<Vec<Recorded>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

async fn client_loop(id: u64, endpoints: Vec<String>, shared: Arc<Shared>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut seq = 0u64;
    let mut last_seen: HashMap<u64, u64> = HashMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let up: Vec<usize> = (0..endpoints.len())
            .filter(|i| shared.up[*i].load(Ordering::Relaxed))
            .collect();
        if up.is_empty() {
            tokio::task::yield_now().await;
            continue;
        }
        let m = up[rng.gen_range(0..up.len())];
        if let std::collections::hash_map::Entry::Vacant(e) = clients.entry(m) {
            match Client::connect([endpoints[m].clone()], Some(opts())).await {
                Ok(c) => {
                    e.insert(c);
                }
                Err(_) => continue,
            }
        }
        let c = clients.get_mut(&m).unwrap();
        let k = rng.gen_range(0..KEYS);
        seq += 1;
        let fresh = (id << 32) | seq;
        let choice = rng.gen_range(0..10);
        let call = shared.now();
        let (op, outcome) = if choice < 4 {
            let r = c.put(key(k), value(fresh), None).await;
            (Op::Put(fresh), r.map(|_| None))
        } else if choice < 7 {
            let r = c.get(key(k), None).await;
            match r {
                Ok(resp) => {
                    let v = resp.kvs().first().map(|kv| parse_value(kv.value()));
                    (Op::Get(v), Ok(Some(v)))
                }
                Err(e) => (Op::Get(None), Err(e)),
            }
        } else {
            let expect = last_seen.get(&k).copied().unwrap_or(0);
            let txn = Txn::new()
                .when([Compare::value(key(k), CompareOp::Equal, value(expect))])
                .and_then([TxnOp::put(key(k), value(fresh), None)]);
            let r = c.txn(txn).await;
            let ok = r.as_ref().ok().map(|t| t.succeeded());
            (
                Op::Cas {
                    expect,
                    new: fresh,
                    ok,
                },
                r.map(|_| None),
            )
        };
        let ret = shared.now();
        match outcome {
            Ok(seen) => {
                match (&op, seen) {
                    (Op::Put(v), _) => {
                        last_seen.insert(k, *v);
                    }
                    (Op::Get(_), Some(Some(v))) => {
                        last_seen.insert(k, v);
                    }
                    (Op::Cas { new, ok, .. }, _) if *ok == Some(true) => {
                        last_seen.insert(k, *new);
                    }
                    _ => {}
                }
                shared.done_ops.fetch_add(1, Ordering::Relaxed);
                shared.history.lock().unwrap().push(Recorded {
                    key: k,
                    call: Call {
                        op,
                        call,
                        ret: Some(ret),
                    },
                });
            }
            Err(e) => {
                // A broken connection is rebuilt next time.
                clients.remove(&m);
                if surely_not_applied(&e) || matches!(op, Op::Get(_)) {
                    continue;
                }
                shared.history.lock().unwrap().push(Recorded {
                    key: k,
                    call: Call {
                        op,
                        call,
                        ret: None,
                    },
                });
            }
        }
    }
}

/// Watches the prefix from `from`, moving to the next member whenever the stream fails,
/// resuming after the last revision seen. Returns every (revision, key, value) seen.
async fn watcher_loop(
    first: usize,
    endpoints: Vec<String>,
    from: i64,
    until: Arc<Mutex<Option<i64>>>,
) -> Vec<(i64, String, u64)> {
    let mut seen: Vec<(i64, String, u64)> = Vec::new();
    let mut next = from;
    let mut member = first;
    loop {
        if let Some(last) = *until.lock().unwrap() {
            if next > last {
                return seen;
            }
        }
        let ep = endpoints[member % endpoints.len()].clone();
        member += 1;
        let Ok(mut c) = Client::connect([ep], Some(opts())).await else {
            continue;
        };
        let Ok(mut stream) = c
            .watch(
                PREFIX,
                Some(WatchOptions::new().with_prefix().with_start_revision(next)),
            )
            .await
        else {
            continue;
        };
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
            let Ok(Ok(Some(resp))) = msg else {
                break; // silent for 2 s, failed or closed: try another member
            };
            if resp.canceled() {
                break;
            }
            for ev in resp.events() {
                let kv = ev.kv().unwrap();
                assert_eq!(ev.event_type(), EventType::Put, "only puts are written");
                seen.push((
                    kv.mod_revision(),
                    kv.key_str().unwrap().to_string(),
                    parse_value(kv.value()),
                ));
                next = kv.mod_revision() + 1;
            }
            if let Some(last) = *until.lock().unwrap() {
                if next > last {
                    return seen;
                }
            }
        }
    }
}

#[test]
fn histories_are_linearizable_and_watches_complete_under_faults() {
    let run = RunDir::temp("kvstore-linearizable").unwrap();
    let options = Options {
        extra_args: vec![
            "--heartbeat-interval=50".into(),
            "--election-timeout=500".into(),
            // Short logs: members that were down catch up by snapshot too.
            "--snapshot-count=64".into(),
        ],
        ..Default::default()
    };
    let mut kv = KvCluster::start(&run, Flavor::Kvstore, 3, &options).unwrap();
    let endpoints = kv.endpoints();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start_rev = rt.block_on(async {
        let mut c = Client::connect(endpoints.clone(), None).await.unwrap();
        c.get("x", None).await.unwrap().header().unwrap().revision() + 1
    });

    let shared = Arc::new(Shared {
        start: Instant::now(),
        up: (0..3).map(|_| AtomicBool::new(true)).collect(),
        stop: AtomicBool::new(false),
        done_ops: AtomicUsize::new(0),
        history: Mutex::new(Vec::new()),
    });
    let until: Arc<Mutex<Option<i64>>> = Arc::default();
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|w| rt.spawn(watcher_loop(w, endpoints.clone(), start_rev, until.clone())))
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| rt.spawn(client_loop(id + 1, endpoints.clone(), shared.clone())))
        .collect();

    // The nemesis: each round faults one member until the others have completed more
    // operations (or a few seconds pass), then heals it and waits for progress again.
    let progress = |n: usize| {
        let target = shared.done_ops.load(Ordering::Relaxed) + n;
        // Progress may stall while no majority is up; the deadline ends the round.
        let _ = wait_for(
            "client progress",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || Ok((shared.done_ops.load(Ordering::Relaxed) >= target).then_some(())),
        );
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    progress(100);
    for round in 0..ROUNDS {
        let m = rng.gen_range(0..3);
        if round % 2 == 0 {
            shared.up[m].store(false, Ordering::Relaxed);
            kv.members[m].process.kill().unwrap();
            progress(150);
            kv.members[m].process.restart().unwrap();
            shared.up[m].store(true, Ordering::Relaxed);
        } else {
            // Clients keep using a paused member: their requests time out, unknown.
            kv.members[m].process.pause().unwrap();
            progress(150);
            kv.members[m].process.resume().unwrap();
        }
        progress(100);
    }
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        rt.block_on(c).unwrap();
    }
    kv.wait_healthy(Duration::from_secs(30)).unwrap();
    let final_rev = rt.block_on(async {
        let mut c = Client::connect(endpoints.clone(), None).await.unwrap();
        c.get(PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
    });
    *until.lock().unwrap() = Some(final_rev);
    let streams: Vec<Vec<(i64, String, u64)>> = watchers
        .into_iter()
        .map(|w| {
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), w).await })
                .expect("a watcher did not reach the final revision in 60 s")
                .unwrap()
        })
        .collect();

    // Watches: every revision once, in order, no gaps, the same for every watcher.
    let expected: Vec<i64> = (start_rev..=final_rev).collect();
    for (i, s) in streams.iter().enumerate() {
        let revs: Vec<i64> = s.iter().map(|e| e.0).collect();
        assert_eq!(
            revs, expected,
            "watcher {i} saw revisions out of order or missed some"
        );
        assert_eq!(s, &streams[0], "watcher {i} disagrees with watcher 0");
    }

    // Writes with unknown outcomes: the watch history says which took effect. Those it
    // never saw did not happen and leave the history; the others may land anywhere
    // after their call.
    let written: HashSet<u64> = streams[0].iter().map(|e| e.2).collect();
    let history = std::mem::take(&mut *shared.history.lock().unwrap());
    let mut per_key: BTreeMap<u64, Vec<Call>> = BTreeMap::new();
    let (mut total, mut unknown) = (0, 0);
    for r in history {
        if r.call.ret.is_none() {
            let new = match r.call.op {
                Op::Put(v) | Op::Cas { new: v, .. } => v,
                Op::Get(_) => continue,
            };
            if !written.contains(&new) {
                continue;
            }
            unknown += 1;
        }
        total += 1;
        per_key.entry(r.key).or_default().push(r.call);
    }
    eprintln!(
        "{total} operations ({unknown} with unknown outcome that took effect), \
         revisions {start_rev}..={final_rev}"
    );
    assert!(total > 1000, "too few operations completed: {total}");
    for (k, calls) in &per_key {
        if let Err(e) = check(None, calls) {
            panic!("key {}: {e}", key(*k));
        }
    }
    kv.stop().unwrap();
}
