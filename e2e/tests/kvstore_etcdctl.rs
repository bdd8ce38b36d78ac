//! The kvstore against real etcd 3.4 (Debian's `etcd-server`), driven by the real
//! `etcdctl`: the same script runs against both, and the JSON answers must be identical
//! once cluster and member ids, raft terms and lease ids are set aside.

use e2e::kvstore::{Flavor, KvCluster, Options};
use e2e::RunDir;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One etcdctl call: arguments and what it reads on stdin.
struct Step {
    args: &'static [&'static str],
    stdin: &'static str,
}

const fn step(args: &'static [&'static str]) -> Step {
    Step { args, stdin: "" }
}

const SCRIPT: &[Step] = &[
    step(&["put", "a", "1", "-w", "json"]),
    step(&["put", "a", "2", "--prev-kv", "-w", "json"]),
    step(&["put", "ab", "3", "-w", "json"]),
    step(&["put", "b", "4", "-w", "json"]),
    step(&["put", "c", "5", "-w", "json"]),
    step(&["get", "a", "-w", "json"]),
    step(&["get", "a", "--prefix", "-w", "json"]),
    step(&["get", "ab", "--from-key", "-w", "json"]),
    step(&["get", "a", "--from-key", "--limit", "2", "-w", "json"]),
    step(&["get", "a", "--rev", "2", "-w", "json"]),
    step(&["get", "a", "--prefix", "--keys-only", "-w", "json"]),
    step(&[
        "get",
        "a",
        "--from-key",
        "--order",
        "DESCEND",
        "--sort-by",
        "MODIFY",
        "-w",
        "json",
    ]),
    step(&[
        "get",
        "a",
        "--from-key",
        "--order",
        "ASCEND",
        "--sort-by",
        "VALUE",
        "-w",
        "json",
    ]),
    step(&["del", "zz", "-w", "json"]),
    step(&["del", "b", "--prev-kv", "-w", "json"]),
    Step {
        args: &["txn", "-w", "json"],
        stdin: "mod(\"a\") = \"3\"\n\nput t ok\n\nput t fail\n\n",
    },
    Step {
        args: &["txn", "-w", "json"],
        stdin: "value(\"a\") = \"nope\"\n\nput t ok\n\nput t fail\n\n",
    },
    Step {
        args: &["txn", "-w", "json"],
        stdin: "version(\"c\") = \"1\"\ncreate(\"c\") = \"6\"\n\nget c\ndel c\n\nput t fail\n\n",
    },
    step(&["get", "t", "-w", "json"]),
    step(&["get", "c", "-w", "json"]),
    step(&["compaction", "4"]),
    step(&["get", "a", "--rev", "3", "-w", "json"]),
    step(&["compaction", "99"]),
    step(&["get", "a", "--rev", "99"]),
    step(&["lease", "grant", "1", "-w", "json"]),
    step(&["del", "a", "--prefix", "-w", "json"]),
    step(&["get", "", "--from-key", "-w", "json"]),
];

/// Removes what legitimately differs between two clusters.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in ["cluster_id", "member_id", "raft_term", "ID"] {
                m.remove(k);
            }
            m.values_mut().for_each(normalize);
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The outcome of one step: exit status, normalized JSON (or plain) stdout, and the
/// final `Error:` line etcdctl prints on failure.
#[derive(Debug, PartialEq)]
struct Outcome {
    ok: bool,
    stdout: Value,
    error: String,
}

fn run(endpoint: &str, s: &Step) -> Outcome {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(s.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl (Debian etcd-client) is installed by `make deps`");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(s.stdin.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut stdout = serde_json::from_str(&text).unwrap_or(Value::String(text));
    normalize(&mut stdout);
    let error = String::from_utf8_lossy(&out.stderr)
        .lines()
        .rfind(|l| l.starts_with("Error:"))
        .unwrap_or_default()
        .to_string();
    Outcome {
        ok: out.status.success(),
        stdout,
        error,
    }
}

/// The first response of a `--rev` watch (replayed history), normalized.
fn watch_replay(endpoint: &str) -> Value {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args([
            "watch",
            "--rev",
            "2",
            "--prefix",
            "a",
            "--prev-kv",
            "-w",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read the first line on a thread so a silent server fails the test instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut v: Value = serde_json::from_str(&line.expect("a watch response")).unwrap();
    normalize(&mut v);
    v
}

#[test]
fn etcdctl_sees_the_same_answers_from_kvstore_and_etcd() {
    let run_dir = RunDir::temp("etcdctl-compare").unwrap();
    let mut etcd = KvCluster::start(&run_dir, Flavor::Etcd, 1, &Options::default()).unwrap();
    let mut ours = KvCluster::start(&run_dir, Flavor::Kvstore, 1, &Options::default()).unwrap();
    let (e, k) = (etcd.endpoints()[0].clone(), ours.endpoints()[0].clone());
    let mut mismatches = Vec::new();
    for s in SCRIPT {
        let want = run(&e, s);
        let got = run(&k, s);
        if want != got {
            mismatches.push(format!(
                "etcdctl {:?}\n  etcd:    {want:?}\n  kvstore: {got:?}",
                s.args
            ));
        }
    }
    let (want, got) = (watch_replay(&e), watch_replay(&k));
    if want != got {
        mismatches.push(format!(
            "watch --rev 2\n  etcd:    {want}\n  kvstore: {got}"
        ));
    }
    etcd.stop().unwrap();
    ours.stop().unwrap();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn etcdctl_admin_commands_work_against_kvstore() {
    let run_dir = RunDir::temp("etcdctl-admin").unwrap();
    let mut kv = KvCluster::start(&run_dir, Flavor::Kvstore, 1, &Options::default()).unwrap();
    let ep = kv.endpoints()[0].clone();
    let health = run(&ep, &step(&["endpoint", "health"]));
    assert!(health.ok, "{health:?}");
    let members = run(&ep, &step(&["member", "list", "-w", "json"]));
    assert_eq!(
        members.stdout["members"][0]["name"], "kvstore0",
        "{members:?}"
    );
    assert_eq!(
        members.stdout["members"][0]["clientURLs"][0],
        Value::String(ep.clone())
    );
    // With a URL endpoint grpc-go sends `:authority: http://…` (the kvstore rewrites
    // it for h2, see `server::authority`); a bare host:port sends `host:port`.
    assert!(ep.starts_with("http://"), "{ep}");
    for endpoint in [ep.as_str(), ep.trim_start_matches("http://")] {
        let status = run(endpoint, &step(&["endpoint", "status", "-w", "json"]));
        assert!(status.ok, "{endpoint}: {status:?}");
        assert!(
            status.stdout[0]["Status"]["leader"].as_u64().unwrap_or(0) != 0,
            "{status:?}"
        );
    }
    let lease = run(&ep, &step(&["lease", "list"]));
    assert!(
        lease.ok
            && lease
                .stdout
                .as_str()
                .unwrap_or("")
                .contains("found 0 leases"),
        "{lease:?}"
    );
    let unknown = run(&ep, &step(&["member", "remove", "1234"]));
    assert!(
        !unknown.ok && unknown.error.contains("member not found"),
        "{unknown:?}"
    );
    kv.stop().unwrap();
}
