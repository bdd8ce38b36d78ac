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
