//! `local-cluster` rejects what it cannot run with errors that name the flag.

use e2e::binaries::binary;
use std::process::Command;

fn local_cluster(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("local-cluster").unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out) = local_cluster(&["up", "--dir", d, "--masters", "2"]);
    assert!(!ok && out.contains("--masters"), "{out}");
    let (ok, out) = local_cluster(&["up", "--dir", d, "--nodes", "1"]);
    assert!(!ok && out.contains("kubelet is not built yet"), "{out}");
    let (ok, out) = local_cluster(&["up", "--dir", d, "--runtime", "docker"]);
    assert!(!ok && out.contains("--runtime"), "{out}");
    // Nothing was started or recorded by the refused commands.
    assert!(!dir.path().join("cluster.json").exists());
}

#[test]
fn down_and_status_without_a_cluster_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for cmd in ["down", "status"] {
        let (ok, out) = local_cluster(&[cmd, "--dir", d]);
        assert!(!ok && out.contains("no cluster recorded"), "{cmd}: {out}");
    }
}

/// Runs `local-cluster down` when dropped, so a failing test leaves no cluster behind.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0.join("cluster.json").exists() {
            let (ok, out) = local_cluster(&["down", "--dir", self.0.to_str().unwrap()]);
            if !ok {
                eprintln!("cleanup: local-cluster down failed: {out}");
            }
        }
    }
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn up_in_background_then_status_and_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let _guard = Down(dir.path().to_path_buf());
    let (ok, out) = local_cluster(&["up", "--dir", d, "--background"]);
    assert!(ok, "{out}");
    assert!(out.contains("export KUBECONFIG="), "{out}");
    assert!(dir.path().join("kubeconfig").is_file());
    assert!(dir.path().join("pki/ca.crt").is_file());

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cluster.json")).unwrap())
            .unwrap();
    let pids: Vec<i64> = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert!(!pids.is_empty() && pids.iter().all(|p| alive(*p)));
    let names: Vec<&str> = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"scheduler0") && names.contains(&"apiserver0"),
        "{names:?}"
    );

    // A second `up` on a live cluster is refused.
    let (ok, out) = local_cluster(&["up", "--dir", d, "--background"]);
    assert!(!ok && out.contains("already running"), "{out}");

    let (ok, out) = local_cluster(&["status", "--dir", d]);
    assert!(ok && out.contains("running"), "{out}");

    // The kvstore answers a real etcd client.
    let endpoint = state["kvstore_endpoints"][0].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        c.put("hello", "world", None).await.unwrap();
        let got = c.get("hello", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"world");
    });

    let (ok, out) = local_cluster(&["down", "--dir", d]);
    assert!(ok, "{out}");
    e2e::wait::wait_for(
        "the cluster's processes to exit",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(20),
        || Ok(pids.iter().all(|p| !alive(*p)).then_some(())),
    )
    .unwrap();
    assert!(!dir.path().join("cluster.json").exists());
}
