//! A real single-member kvstore (raft, sled, gRPC on 127.0.0.1) driven in-process with the
//! `etcd-client` crate, the client the apiserver uses.

use clap::Parser;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions,
};
use std::time::{Duration, Instant};

struct Kv {
    running: Option<kvstore::Running>,
    _dir: tempfile::TempDir,
    client: Client,
}

async fn start_in(dir: &std::path::Path) -> kvstore::Running {
    start_with(dir, &[]).await
}

async fn start_with(dir: &std::path::Path, extra: &[&str]) -> kvstore::Running {
    kvstore::start(config(dir, extra)).await.unwrap()
}

/// A single member's flags with its data under `dir`, plus `extra`.
fn config(dir: &std::path::Path, extra: &[&str]) -> kvstore::Config {
    let data_dir = format!("--data-dir={}", dir.join("data").display());
    let mut args = vec![
        "kvstore",
        "--name=t0",
        &data_dir,
        "--listen-client-urls=http://127.0.0.1:0",
        "--listen-peer-urls=http://127.0.0.1:0",
        "--initial-cluster=t0=http://127.0.0.1:1",
        "--initial-advertise-peer-urls=http://127.0.0.1:1",
        "--listen-metrics-urls=http://127.0.0.1:0",
        "--experimental-watch-progress-notify-interval=200ms",
    ];
    args.extend_from_slice(extra);
    kvstore::Config::parse_from(args)
}

impl Kv {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let running = start_in(dir.path()).await;
        let client = connect(&running).await;
        Kv {
            running: Some(running),
            _dir: dir,
            client,
        }
    }

    /// Stops the member cleanly and starts it again on the same data dir.
    async fn restart(&mut self) {
        self.running.take().unwrap().shutdown().await.unwrap();
        let running = start_in(self._dir.path()).await;
        self.client = connect(&running).await;
        self.running = Some(running);
    }
}

async fn connect(r: &kvstore::Running) -> Client {
    Client::connect([format!("http://{}", r.client_addrs[0])], None)
        .await
        .unwrap()
}

fn grpc_code(e: &etcd_client::Error) -> Option<tonic::Code> {
    match e {
        etcd_client::Error::GRpcStatus(s) => Some(s.code()),
        _ => None,
    }
}

#[tokio::test]
async fn put_get_delete_with_etcd_revisions() {
    let mut kv = Kv::start().await;
    let c = &mut kv.client;
    assert_eq!(
        c.put("a", "1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision(),
        2
    );
    let prev = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(prev.prev_key().unwrap().value(), b"1");
    c.put("ab", "3", None).await.unwrap();
    c.put("b", "4", None).await.unwrap();

    let got = c.get("a", None).await.unwrap();
    let kv0 = &got.kvs()[0];
    assert_eq!(
        (kv0.create_revision(), kv0.mod_revision(), kv0.version()),
        (2, 3, 2)
    );
    assert_eq!(got.header().unwrap().revision(), 5);

    let prefix = c
        .get("a", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(prefix.kvs().len(), 2);
    let limited = c
        .get("", Some(GetOptions::new().with_all_keys().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(
        (limited.kvs().len(), limited.more(), limited.count()),
        (2, true, 3)
    );
    let from_b = c
        .get("b", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(from_b.kvs().len(), 1);
    let desc = c
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    let keys: Vec<&[u8]> = desc.kvs().iter().map(|k| k.key()).collect();
    assert_eq!(keys, [b"b".as_slice(), b"ab", b"a"]);
    let keys_only = c
        .get("a", Some(GetOptions::new().with_keys_only()))
        .await
        .unwrap();
    assert!(keys_only.kvs()[0].value().is_empty());
    let count = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!((count.count(), count.kvs().len()), (3, 0));
    let old = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"1");
    let serial = c
        .get("a", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(serial.kvs()[0].value(), b"2");

    let del = c
        .delete(
            "a",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!((del.deleted(), del.prev_kvs().len()), (2, 2));
    assert_eq!(del.header().unwrap().revision(), 6);
    let none = c.delete("zzz", None).await.unwrap();
    assert_eq!(
        none.header().unwrap().revision(),
        6,
        "deleting nothing adds no revision"
    );
}

#[tokio::test]
async fn transactions_take_the_right_branch() {
    let mut kv = Kv::start().await;
    let c = &mut kv.client;
    c.put("k", "v", None).await.unwrap();
    let txn = |cmp| {
        Txn::new()
            .when([cmp])
            .and_then([TxnOp::put("r", "success", None), TxnOp::get("k", None)])
            .or_else([TxnOp::put("r", "failure", None)])
    };
    for (cmp, want) in [
        (Compare::value("k", CompareOp::Equal, "v"), true),
        (Compare::value("k", CompareOp::NotEqual, "v"), false),
        (Compare::version("k", CompareOp::Greater, 0), true),
        (Compare::create_revision("k", CompareOp::Equal, 2), true),
        (Compare::mod_revision("k", CompareOp::Less, 2), false),
    ] {
        let resp = c.txn(txn(cmp)).await.unwrap();
        assert_eq!(resp.succeeded(), want);
        let r = c.get("r", None).await.unwrap();
        assert_eq!(
            r.kvs()[0].value(),
            if want {
                &b"success"[..]
            } else {
                &b"failure"[..]
            }
        );
    }
    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    let err = c.txn(dup).await.unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
}

#[tokio::test]
async fn watch_replays_history_then_streams_live() {
    let mut kv = Kv::start().await;
    let c = &mut kv.client;
    c.put("w/a", "1", None).await.unwrap(); // 2
    c.put("w/a", "2", None).await.unwrap(); // 3
    c.delete("w/a", None).await.unwrap(); // 4
    let mut stream = c
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(2)
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    c.put("w/b", "live", None).await.unwrap(); // 5
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 4 && Instant::now() < deadline {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("watch response")
            .unwrap()
            .expect("stream open");
        for e in msg.events() {
            let kv = e.kv().unwrap();
            seen.push((
                e.event_type(),
                kv.mod_revision(),
                e.prev_kv().map(|p| p.value().to_vec()),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, 2, None),
            (EventType::Put, 3, Some(b"1".to_vec())),
            (EventType::Delete, 4, Some(b"2".to_vec())),
            (EventType::Put, 5, None),
        ]
    );
}

/// As with etcd, a watch call returns only once the watch is registered: a put made
/// right after it (no revision given, so "from now") always reaches the watcher.
#[tokio::test]
async fn a_returned_watch_sees_the_next_put() {
    let kv = Kv::start().await;
    for i in 0..50 {
        // A fresh connection per round, so the watch stream really opens each time.
        let mut watcher = connect(kv.running.as_ref().unwrap()).await;
        let mut stream = watcher.watch(format!("race/{i}"), None).await.unwrap();
        kv.client
            .clone()
            .put(format!("race/{i}"), "v", None)
            .await
            .unwrap();
        let msg = loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .unwrap_or_else(|_| panic!("round {i}: the put never reached the watcher"))
                .unwrap()
                .expect("stream open");
            if !msg.events().is_empty() {
                break msg;
            }
        };
        assert_eq!(
            msg.events()[0].kv().unwrap().key(),
            format!("race/{i}").as_bytes()
        );
    }
}

/// Periodic auto-compaction keeps the retention period of history and compacts what is
/// older; revisions written since stay readable.
#[tokio::test]
async fn periodic_auto_compaction_drops_old_history() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_with(
        dir.path(),
        &[
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1s",
        ],
    )
    .await;
    let mut c = connect(&running).await;
    let put = |mut c: Client, v: &'static str| async move {
        let resp = c.put("ac/k", v, None).await.unwrap();
        resp.header().unwrap().revision()
    };
    let first = put(c.clone(), "1").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let latest = loop {
        // Keep writing, so there is always newer history to keep.
        let latest = put(c.clone(), "n").await;
        match c
            .get("ac/k", Some(GetOptions::new().with_revision(first)))
            .await
        {
            Err(e) => {
                assert!(
                    e.to_string()
                        .contains("required revision has been compacted"),
                    "{e}"
                );
                break latest;
            }
            Ok(_) => assert!(
                Instant::now() < deadline,
                "revision {first} was never compacted"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The newest revision is never compacted away.
    let now = c
        .get("ac/k", Some(GetOptions::new().with_revision(latest)))
        .await
        .unwrap();
    assert_eq!(now.kvs()[0].value(), b"n");
    running.shutdown().await.unwrap();
}

#[test]
fn auto_compaction_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        let config = config(
            dir.path(),
            &[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=2h",
            ],
        );
        kvstore::start(config).await.err().expect("refused")
    });
    assert!(
        err.to_string().contains("--auto-compaction-retention"),
        "{err}"
    );
}

#[tokio::test]
async fn compaction_errors_match_etcd() {
    let mut kv = Kv::start().await;
    let c = &mut kv.client;
    for i in 0..4 {
        c.put("c", i.to_string(), None).await.unwrap(); // 2..=5
    }
    c.compact(4, None).await.unwrap();
    let err = c
        .get("c", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap_err();
    assert_eq!(grpc_code(&err), Some(tonic::Code::OutOfRange));
    assert!(
        err.to_string()
            .contains("required revision has been compacted"),
        "{err}"
    );
    let err = c.compact(99, None).await.unwrap_err();
    assert!(err.to_string().contains("future revision"), "{err}");
    let err = c
        .get("c", Some(GetOptions::new().with_revision(99)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("future revision"), "{err}");

    // A watch from a compacted revision is refused with the compaction point.
    let mut stream = c
        .watch("c", Some(WatchOptions::new().with_start_revision(2)))
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if m.canceled() {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(msg.compact_revision(), 4);
}

#[tokio::test]
async fn leases_expire_and_take_their_keys() {
    let mut kv = Kv::start().await;
    let c = &mut kv.client;
    let lease = c.lease_grant(2, None).await.unwrap();
    c.put(
        "leased",
        "v",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    let ttl = c
        .lease_time_to_live(
            lease.id(),
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 2);
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    assert!(c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .any(|l| l.id() == lease.id()));
    // Expiry: the key disappears without anyone revoking.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if c.get("leased", None).await.unwrap().kvs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Revoke works the same, and unknown leases are NotFound.
    let l2 = c.lease_grant(60, None).await.unwrap();
    c.put("k2", "v", Some(PutOptions::new().with_lease(l2.id())))
        .await
        .unwrap();
    c.lease_revoke(l2.id()).await.unwrap();
    assert!(c.get("k2", None).await.unwrap().kvs().is_empty());
    let err = c.lease_revoke(l2.id()).await.unwrap_err();
    assert_eq!(grpc_code(&err), Some(tonic::Code::NotFound));
    let err = c
        .put("k3", "v", Some(PutOptions::new().with_lease(12345)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("requested lease not found"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let mut kv = Kv::start().await;
    let c = &mut kv.client;
    // Over --max-request-bytes (1.5 MiB) but within the transport limit: etcd's own error.
    let big = vec![b'x'; 1600 * 1024];
    let err = c.put("big", big, None).await.unwrap_err();
    assert!(err.to_string().contains("request is too large"), "{err}");
    // Beyond the transport limit (1.5 MiB + 512 KiB): grpc-go's ResourceExhausted.
    let huge = vec![b'x'; 2600 * 1024];
    let err = c.put("huge", huge, None).await.unwrap_err();
    assert_eq!(
        grpc_code(&err),
        Some(tonic::Code::ResourceExhausted),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("grpc: received message larger than max"),
        "{err}"
    );
    let err = c.put("", "v", None).await.unwrap_err();
    assert!(err.to_string().contains("key is not provided"), "{err}");
    let status = c.status().await.unwrap();
    assert_eq!(
        status.header().unwrap().revision(),
        1,
        "nothing was written"
    );
    assert!(status.leader() != 0);
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "t0");
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let mut kv = Kv::start().await;
    for i in 0..50 {
        kv.client
            .put(format!("d/{i}"), i.to_string(), None)
            .await
            .unwrap();
    }
    kv.restart().await;
    let all = kv
        .client
        .get("d/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.count(), 50);
    assert_eq!(all.header().unwrap().revision(), 51);
    assert_eq!(
        kv.client
            .put("after", "x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision(),
        52
    );
}
