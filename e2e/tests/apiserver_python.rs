//! The Python `kubernetes` client (installed by `make deps`) against the apiserver: list,
//! create, patch, delete, watch with resume. The checks live in `py/client_smoke.py`.

use e2e::apiserver::ControlPlane;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use std::process::Command;

#[test]
fn python_client_smoke() {
    let run = RunDir::temp("apiserver-python").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/client_smoke.py");
    // `make deps` installs the client into a virtualenv under target/.
    let python = std::env::var("RUSTKUBE_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyvenv/bin/python").to_string()
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} not found: run `make deps` (it creates the virtualenv with the kubernetes client)"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(&cp.kubeconfig)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "python client failed:\n{stdout}\n{stderr}\napiserver log:\n{}",
        cp.apiserver.log_tail(30)
    );
}
