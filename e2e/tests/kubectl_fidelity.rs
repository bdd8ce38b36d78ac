//! What people type into kubectl, end to end against the apiserver: client-side apply
//! (create, reapply with removed fields), explain, patch in all three types, edit, scale,
//! label, annotate, set image, cordon/uncordon, drain through evictions (and a
//! PodDisruptionBudget's 429), delete with its wait, sorting and chunked gets, describe,
//! discovery commands and `auth whoami` — each checked in kubectl's output and in the
//! stored object. Run with the kubectl matching the server (1.33) and with 1.29 (kubectl
//! 1.28 and older need OpenAPI v2 for `apply` and `explain`; we serve v3 only).

use e2e::apiserver::ControlPlane;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use serde_json::Value;
use std::path::Path;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn write(run: &RunDir, name: &str, text: &str) -> String {
    let p = run.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const DEPLOY_V1: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: f1
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
      - name: side
        image: busybox:1.36
"#;

const DEPLOY_V2: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: f1
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.26
        env: [{name: A, value: "1"}]
"#;

/// The kubectl binary for a minor version, installed beside the dispatcher (`kubectl`
/// may be a symlink into that directory).
fn kubectl_version(minor: &str) -> Option<String> {
    let dispatcher = std::fs::canonicalize(which("kubectl")?).ok()?;
    let p = dispatcher.parent()?.join(format!("kubectl.1.{minor}"));
    p.exists().then(|| p.to_string_lossy().into_owned())
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn suite(cp: &ControlPlane, run: &RunDir, kubectl: &str) {
    let k = |args: &[&str]| -> (bool, String, String) {
        let out = std::process::Command::new(kubectl)
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("EDITOR", run.path().join("editor.sh"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str]| -> String {
        let (ok, out, err) = k(args);
        assert!(ok, "{kubectl} {}: {err}{out}", args.join(" "));
        out
    };
    let fail = |args: &[&str]| -> String {
        let (ok, out, err) = k(args);
        assert!(!ok, "{kubectl} {} should fail: {out}", args.join(" "));
        err
    };
    let get = |what: &[&str]| -> Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        json(&ok(&args))
    };

    // Discovery commands.
    let version = ok(&["version"]);
    assert!(
        version.contains("Server Version") && version.contains("v1.33"),
        "{version}"
    );
    let versions = ok(&["api-versions"]);
    assert!(
        versions.contains("apps/v1") && versions.contains("v1\n"),
        "{versions}"
    );
    assert!(ok(&["api-resources", "--api-group=apps"]).contains("deployments"));
    let who = ok(&["auth", "whoami"]);
    assert!(
        who.contains("kubernetes-admin") && who.contains("system:masters"),
        "{who}"
    );
    let explain = ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        explain.contains("FIELD: strategy <DeploymentStrategy>")
            && explain.contains("rollingUpdate"),
        "{explain}"
    );

    // Client-side apply with default (server-side, strict) validation.
    ok(&[
        "create",
        "namespace",
        "f1",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let ns = write(
        run,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: f1}\n",
    );
    ok(&["apply", "-f", &ns]);
    let v1 = write(run, "v1.yaml", DEPLOY_V1);
    assert!(ok(&["apply", "-f", &v1]).contains("deployment.apps/web created"));
    let d = get(&["deploy", "web", "-n", "f1"]);
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert!(ok(&["apply", "-f", &v1]).contains("unchanged"));
    let v2 = write(run, "v2.yaml", DEPLOY_V2);
    assert!(ok(&["apply", "-f", &v2]).contains("configured"));
    let d = get(&["deploy", "web", "-n", "f1"]);
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1, "the removed container is gone: {cs:?}");
    assert_eq!(cs[0]["image"], "nginx:1.26");
    assert_eq!(
        cs[0]["env"].as_array().unwrap().len(),
        1,
        "the removed env var is gone"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    // Strict validation: an unknown field is refused by the server.
    let bad = write(
        run,
        "bad.yaml",
        &DEPLOY_V2.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n"),
    );
    let err = fail(&["apply", "-f", &bad]);
    assert!(
        err.contains("unknown field") && err.contains("replicaz"),
        "{err}"
    );

    // Patches of all three types.
    ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "f1",
        "-p",
        r#"{"metadata":{"labels":{"tier":"front"}}}"#,
    ]);
    ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "f1",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "f1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]"#,
    ]);
    let d = get(&["deploy", "web", "-n", "f1"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["spec"]["minReadySeconds"], 5);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 3);
    let err = fail(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "f1",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/nope"}]"#,
    ]);
    assert!(err.contains("/spec/nope"), "{err}");

    // scale, label, annotate, set image, edit.
    assert!(ok(&["scale", "deploy", "web", "-n", "f1", "--replicas=4"]).contains("scaled"));
    assert_eq!(get(&["deploy", "web", "-n", "f1"])["spec"]["replicas"], 4);
    ok(&["label", "deploy", "web", "-n", "f1", "team=a"]);
    ok(&["label", "deploy", "web", "-n", "f1", "tier-"]);
    ok(&["annotate", "deploy", "web", "-n", "f1", "note=hello"]);
    ok(&["set", "image", "deploy/web", "-n", "f1", "nginx=nginx:1.27"]);
    std::fs::write(
        run.path().join("editor.sh"),
        "#!/bin/sh\nsed -i 's/minReadySeconds: 5/minReadySeconds: 7/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        run.path().join("editor.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(ok(&["edit", "deploy", "web", "-n", "f1"]).contains("edited"));
    let d = get(&["deploy", "web", "-n", "f1"]);
    assert_eq!(d["metadata"]["labels"]["team"], "a");
    assert!(d["metadata"]["labels"]["tier"].is_null());
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(d["spec"]["minReadySeconds"], 7);

    // get: sorting, chunking, label columns, describe with events.
    for i in 0..5 {
        let cm = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: f1, labels: {{rank: \"{}\"}}}}\ndata: {{k: v}}\n", 4 - i);
        let f = write(run, &format!("c{i}.yaml"), &cm);
        ok(&["apply", "-f", &f]);
    }
    let sorted = ok(&[
        "get",
        "cm",
        "-n",
        "f1",
        "-l",
        "rank",
        "--sort-by=.metadata.labels.rank",
        "-o",
        "name",
    ]);
    assert_eq!(sorted.lines().next(), Some("configmap/c4"), "{sorted}");
    let chunked = ok(&[
        "get",
        "cm",
        "-n",
        "f1",
        "-l",
        "rank",
        "--chunk-size=2",
        "-o",
        "name",
    ]);
    assert_eq!(chunked.lines().count(), 5, "{chunked}");
    let cols = ok(&["get", "cm", "-n", "f1", "-l", "rank", "-L", "rank"]);
    assert!(cols.lines().next().unwrap().contains("RANK"), "{cols}");
    let ev = write(run, "ev.yaml", "apiVersion: v1\nkind: Event\nmetadata: {name: web.1, namespace: f1}\ninvolvedObject: {kind: Deployment, name: web, namespace: f1, apiVersion: apps/v1}\nreason: Testing\nmessage: hello from the test\ntype: Normal\nsource: {component: e2e}\n");
    ok(&["create", "-f", &ev]);
    let uid = get(&["deploy", "web", "-n", "f1"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let patch_uid = format!(r#"{{"involvedObject":{{"uid":"{uid}"}}}}"#);
    ok(&[
        "patch",
        "event",
        "web.1",
        "-n",
        "f1",
        "--type=merge",
        "-p",
        &patch_uid,
    ]);
    let described = ok(&["describe", "deploy", "web", "-n", "f1"]);
    assert!(
        described.contains("Name:") && described.contains("hello from the test"),
        "{described}"
    );

    // Nodes: cordon, uncordon, drain through evictions.
    let node = write(
        run,
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {kubernetes.io/hostname: n1}}\n",
    );
    ok(&["create", "-f", &node]);
    ok(&["cordon", "n1"]);
    assert_eq!(get(&["node", "n1"])["spec"]["unschedulable"], true);
    assert!(ok(&["get", "nodes"]).contains("SchedulingDisabled"));
    ok(&["uncordon", "n1"]);
    assert!(get(&["node", "n1"])["spec"]["unschedulable"].is_null());
    for p in ["d1", "d2"] {
        let pod = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {p}, namespace: f1, labels: {{app: drain}}}}\nspec:\n  containers: [{{name: c, image: busybox:1.36}}]\n");
        let f = write(run, &format!("{p}.yaml"), &pod);
        ok(&["create", "-f", &f]);
        let b = write(run, &format!("{p}-b.json"), r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"POD"},"target":{"kind":"Node","name":"n1"}}"#.replace("POD", p).as_str());
        ok(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/f1/pods/{p}/binding"),
            "-f",
            &b,
        ]);
    }
    let drained = ok(&[
        "drain",
        "n1",
        "--force",
        "--grace-period=0",
        "--timeout=60s",
    ]);
    assert!(drained.contains("drained"), "{drained}");
    assert!(ok(&["get", "pods", "-n", "f1", "-o", "name"])
        .trim()
        .is_empty());
    ok(&["uncordon", "n1"]);

    // Typed generators send protobuf bodies.
    ok(&[
        "create",
        "deployment",
        "pb",
        "--image=busybox:1.36",
        "--replicas=2",
        "-n",
        "f1",
    ]);
    let d = get(&["deploy", "pb", "-n", "f1"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "pb");
    ok(&[
        "create",
        "service",
        "clusterip",
        "pbs",
        "--tcp=80:8080",
        "-n",
        "f1",
    ]);
    let svc = get(&["svc", "pbs", "-n", "f1"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{svc}"
    );
    ok(&[
        "create",
        "configmap",
        "pbc",
        "--from-literal=a=b",
        "-n",
        "f1",
    ]);
    assert_eq!(get(&["cm", "pbc", "-n", "f1"])["data"]["a"], "b");
    ok(&[
        "create",
        "secret",
        "generic",
        "pbsec",
        "--from-literal=k=v",
        "-n",
        "f1",
    ]);
    assert_eq!(get(&["secret", "pbsec", "-n", "f1"])["data"]["k"], "dg==");
    ok(&["create", "job", "pbj", "--image=busybox:1.36", "-n", "f1"]);
    assert_eq!(
        get(&["job", "pbj", "-n", "f1"])["spec"]["template"]["spec"]["restartPolicy"],
        "Never"
    );
    ok(&[
        "create",
        "cronjob",
        "pbcj",
        "--image=busybox:1.36",
        "--schedule=*/5 * * * *",
        "-n",
        "f1",
    ]);
    assert_eq!(
        get(&["cronjob", "pbcj", "-n", "f1"])["spec"]["schedule"],
        "*/5 * * * *"
    );
    ok(&["create", "serviceaccount", "pbsa", "-n", "f1"]);
    // Maps whose values are messages (quantities).
    ok(&[
        "create",
        "quota",
        "pbq",
        "--hard=pods=10,requests.cpu=500m",
        "-n",
        "f1",
    ]);
    assert_eq!(
        get(&["quota", "pbq", "-n", "f1"])["spec"]["hard"],
        serde_json::json!({"pods": "10", "requests.cpu": "500m"})
    );
    ok(&["create", "namespace", "pbns"]);
    assert_eq!(get(&["ns", "pbns"])["status"]["phase"], "Active");
    for (kind, name) in [
        ("deploy", "pb"),
        ("svc", "pbs"),
        ("cm", "pbc"),
        ("secret", "pbsec"),
        ("job", "pbj"),
        ("cronjob", "pbcj"),
        ("sa", "pbsa"),
        ("quota", "pbq"),
    ] {
        ok(&["delete", kind, name, "-n", "f1", "--wait=false"]);
    }
    ok(&["delete", "ns", "pbns", "--wait=false"]);

    // dryRun=All on every kind of write persists nothing.
    let before = get(&["deploy", "web", "-n", "f1"]);
    let rv = before["metadata"]["resourceVersion"].clone();
    ok(&[
        "scale",
        "deploy/web",
        "-n",
        "f1",
        "--replicas=7",
        "--dry-run=server",
    ]);
    ok(&[
        "label",
        "deploy/web",
        "-n",
        "f1",
        "dry=run",
        "--dry-run=server",
    ]);
    ok(&[
        "annotate",
        "deploy/web",
        "-n",
        "f1",
        "dry=run",
        "--dry-run=server",
    ]);
    ok(&[
        "set",
        "image",
        "deploy/web",
        "-n",
        "f1",
        "*=busybox:9",
        "--dry-run=server",
    ]);
    ok(&[
        "patch",
        "deploy/web",
        "-n",
        "f1",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":9}}"#,
        "--dry-run=server",
    ]);
    ok(&["delete", "deploy/web", "-n", "f1", "--dry-run=server"]);
    let dry = write(
        run,
        "dry.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry, namespace: f1}\ndata: {a: b}\n",
    );
    ok(&["create", "-f", &dry, "--dry-run=server"]);
    ok(&["apply", "-f", &dry, "--dry-run=server"]);
    ok(&["apply", "--server-side", "-f", &dry, "--dry-run=server"]);
    ok(&[
        "create",
        "deployment",
        "drypb",
        "--image=busybox:1.36",
        "-n",
        "f1",
        "--dry-run=server",
    ]);
    let after = get(&["deploy", "web", "-n", "f1"]);
    assert_eq!(
        after["metadata"]["resourceVersion"], rv,
        "a dry run wrote the deployment"
    );
    assert!(
        !k(&["get", "cm", "dry", "-n", "f1"]).0,
        "a dry-run create persisted"
    );
    assert!(
        !k(&["get", "deploy", "drypb", "-n", "f1"]).0,
        "a dry-run protobuf create persisted"
    );

    // Output formats.
    assert!(ok(&["get", "deploy", "-n", "f1", "-o", "name"]).contains("deployment.apps/web"));
    assert!(ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "f1",
        "-o",
        "jsonpath={.spec.replicas}"
    ])
    .trim()
    .parse::<u32>()
    .is_ok());
    let cols = ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "f1",
        "-o",
        "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[0].image",
    ]);
    assert!(cols.contains("NAME") && cols.contains("web"), "{cols}");
    let tpl = ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "f1",
        "-o",
        "go-template={{.metadata.name}}",
    ]);
    assert_eq!(tpl.trim(), "web");
    let wide = ok(&["get", "deploy", "web", "-n", "f1", "-o", "wide"]);
    assert!(
        wide.contains("CONTAINERS") && wide.contains("SELECTOR"),
        "{wide}"
    );

    // Server-side apply: create, conflict with another manager, force.
    let ssa = |replicas: u32, image: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: ssa, namespace: f1}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: ssa}}}}\n  template:\n    metadata: {{labels: {{app: ssa}}}}\n    spec:\n      containers: [{{name: c, image: {image}}}]\n")
    };
    let ssa1 = write(run, "ssa1.yaml", &ssa(1, "busybox:1.36"));
    assert!(ok(&["apply", "--server-side", "-f", &ssa1]).contains("serverside-applied"));
    let managed = get(&["deploy", "ssa", "-n", "f1", "--show-managed-fields"]);
    let managers: Vec<&str> = managed["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, vec!["kubectl"], "{managed}");
    ok(&["scale", "deploy", "ssa", "-n", "f1", "--replicas=3"]);
    // kubectl scale writes through the scale subresource, and its fields are recorded so.
    let managed = get(&["deploy", "ssa", "-n", "f1", "--show-managed-fields"]);
    let scaled = managed["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["operation"] == "Update")
        .cloned()
        .unwrap_or_default();
    assert_eq!(scaled["subresource"], "scale", "{managed}");
    assert!(
        scaled["fieldsV1"]["f:spec"]["f:replicas"].is_object(),
        "{managed}"
    );
    let err = fail(&["apply", "--server-side", "-f", &ssa1]);
    assert!(
        err.contains("conflict")
            && err.contains("with subresource \"scale\"")
            && err.contains(".spec.replicas"),
        "{err}"
    );
    let ssa2 = write(run, "ssa2.yaml", &ssa(1, "busybox:1.37"));
    ok(&["apply", "--server-side", "--force-conflicts", "-f", &ssa2]);
    let d = get(&["deploy", "ssa", "-n", "f1"]);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    ok(&["delete", "deploy", "ssa", "-n", "f1"]);

    // delete waits for the object to go.
    assert!(ok(&["delete", "deploy", "web", "-n", "f1"]).contains("deleted"));
    fail(&["get", "deploy", "web", "-n", "f1"]);
    ok(&["delete", "node", "n1"]);
    ok(&["delete", "ns", "f1", "--wait=false"]);
}

#[test]
fn kubectl_commands_end_to_end() {
    let run = RunDir::temp("kubectl-fidelity").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    suite(&cp, &run, "kubectl");
}

#[test]
fn kubectl_1_29_commands_end_to_end() {
    let Some(old) = kubectl_version("29") else {
        panic!("kubectl.1.29 is not installed beside kubectl");
    };
    let run = RunDir::temp("kubectl-fidelity-129").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    suite(&cp, &run, &old);
}
