//! The apiserver driven by the real `kubectl` (and curl for raw auth checks) against a
//! kvstore: CRUD, stored-object semantics, tables, selectors, errors as kubectl prints
//! them, watches, authentication. OpenAPI comes with the "kubectl fidelity" issue, so
//! commands that read files pass `--validate=false` until then.

use e2e::apiserver::ControlPlane;
use e2e::kvstore::Flavor;
use e2e::RunDir;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Writes `text` to `name` in the run's directory; its path.
fn write(run: &RunDir, name: &str, text: &str) -> String {
    let path = run.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn apply_file(cp: &ControlPlane, run: &RunDir, name: &str, yaml: &str, verb: &str) -> String {
    cp.kubectl_ok(&[verb, "-f", &write(run, name, yaml), "--validate=false"])
        .unwrap()
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: t1
  labels: {app: web, tier: front}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
"#;

fn curl(cp: &ControlPlane, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(&cp.ca)
        .arg(format!("{}{path}", cp.url));
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn kubectl_against_the_apiserver_on_kvstore() {
    kubectl_suite(Flavor::Kvstore);
}

/// The same binary and the same suite over Debian's etcd 3.4.
#[test]
fn kubectl_against_the_apiserver_on_etcd() {
    kubectl_suite(Flavor::Etcd);
}

fn kubectl_suite(flavor: Flavor) {
    let run = RunDir::temp("apiserver-kubectl").unwrap();
    let cp = ControlPlane::start(&run, flavor).unwrap();

    // Version and discovery: kubectl picks its 1.33 client and finds resources.
    let v = json(&cp.kubectl_ok(&["version", "-o", "json"]).unwrap());
    assert_eq!(v["serverVersion"]["minor"], "33");
    let res = cp.kubectl_ok(&["api-resources", "--no-headers"]).unwrap();
    assert!(
        res.contains("deployments") && res.contains("apps/v1"),
        "{res}"
    );

    // The namespaces and service every cluster starts with.
    let ns = cp.kubectl_ok(&["get", "ns"]).unwrap();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.starts_with("NAME"), "a server-side table: {ns}");
    let svc = json(
        &cp.kubectl_ok(&["get", "svc", "kubernetes", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");

    // Create in a missing namespace: NotFound, as kubectl prints it.
    let path = run.path().join("d.yaml");
    std::fs::write(&path, DEPLOYMENT).unwrap();
    let err = cp
        .kubectl_err(&["create", "-f", path.to_str().unwrap(), "--validate=false"])
        .unwrap();
    assert!(
        err.contains("Error from server (NotFound)") && err.contains("namespaces \"t1\" not found"),
        "{err}"
    );
    apply_file(
        &cp,
        &run,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: t1}\n",
        "create",
    );
    let created = cp
        .kubectl_ok(&["create", "-f", path.to_str().unwrap(), "--validate=false"])
        .unwrap();
    assert!(created.contains("deployment.apps/web created"), "{created}");
    let err = cp
        .kubectl_err(&["create", "-f", path.to_str().unwrap(), "--validate=false"])
        .unwrap();
    assert!(
        err.contains("(AlreadyExists)") && err.contains("deployments.apps \"web\" already exists"),
        "{err}"
    );

    // What was stored: server-owned metadata and the real API's defaults.
    let d = json(
        &cp.kubectl_ok(&["get", "deploy", "web", "-n", "t1", "-o", "json"])
            .unwrap(),
    );
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(d["metadata"]["creationTimestamp"].is_string());
    assert_eq!(d["metadata"]["generation"], 1);
    let rv1: i64 = d["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");

    // Table output, wide columns, selectors, all namespaces.
    let t = cp.kubectl_ok(&["get", "deploy", "-n", "t1"]).unwrap();
    assert!(
        t.contains("READY") && t.contains("UP-TO-DATE") && t.contains("0/1"),
        "{t}"
    );
    let wide = cp
        .kubectl_ok(&["get", "deploy", "-n", "t1", "-o", "wide"])
        .unwrap();
    assert!(
        wide.contains("nginx:1.25") && wide.contains("app=web"),
        "{wide}"
    );
    let all = cp.kubectl_ok(&["get", "deploy", "-A"]).unwrap();
    assert!(all.contains("NAMESPACE") && all.contains("t1"), "{all}");
    let labels = cp
        .kubectl_ok(&["get", "deploy", "-n", "t1", "--show-labels"])
        .unwrap();
    assert!(labels.contains("tier=front"), "{labels}");
    assert!(cp
        .kubectl_ok(&[
            "get",
            "deploy",
            "-n",
            "t1",
            "-l",
            "tier=front",
            "-o",
            "name"
        ])
        .unwrap()
        .contains("deployment.apps/web"));
    assert_eq!(
        cp.kubectl_ok(&["get", "deploy", "-n", "t1", "-l", "tier=back", "-o", "name"])
            .unwrap()
            .trim(),
        ""
    );
    let by_name = cp
        .kubectl_ok(&[
            "get",
            "ns",
            "--field-selector",
            "metadata.name=t1",
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(by_name.trim(), "namespace/t1");
    let err = cp
        .kubectl_err(&["get", "pods", "--field-selector", "spec.bogus=x"])
        .unwrap();
    assert!(err.contains("BadRequest"), "{err}");

    // Replace: a spec change bumps generation; a stale resourceVersion is a conflict.
    let mut changed = d.clone();
    changed["spec"]["replicas"] = Value::from(3);
    let p = run.path().join("d2.json");
    std::fs::write(&p, changed.to_string()).unwrap();
    cp.kubectl_ok(&["replace", "-f", p.to_str().unwrap(), "--validate=false"])
        .unwrap();
    let d2 = json(
        &cp.kubectl_ok(&["get", "deploy", "web", "-n", "t1", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(d2["metadata"]["generation"], 2);
    assert_eq!(d2["spec"]["replicas"], 3);
    assert!(
        d2["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > rv1
    );
    let err = cp
        .kubectl_err(&["replace", "-f", p.to_str().unwrap(), "--validate=false"])
        .unwrap();
    assert!(
        err.contains("(Conflict)") && err.contains("the object has been modified"),
        "{err}"
    );

    // Validation: 422 with the field named.
    let bad = DEPLOYMENT
        .replace(
            "labels: {app: web}}\n    spec",
            "labels: {app: other}}\n    spec",
        )
        .replace("name: web\n", "name: bad\n");
    let bp = run.path().join("bad.yaml");
    std::fs::write(&bp, bad).unwrap();
    let err = cp
        .kubectl_err(&["create", "-f", bp.to_str().unwrap(), "--validate=false"])
        .unwrap();
    assert!(
        err.contains(
            "The Deployment \"bad\" is invalid: spec.template.metadata.labels: Invalid value"
        ),
        "{err}"
    );
    let err = cp
        .kubectl_err(&["get", "deploy", "nope", "-n", "t1"])
        .unwrap();
    assert!(
        err.contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{err}"
    );

    // Services get a ClusterIP from the range; NodePorts from theirs.
    apply_file(&cp, &run, "s.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: t1}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80}]\n", "create");
    let s = json(
        &cp.kubectl_ok(&["get", "svc", "s", "-n", "t1", "-o", "json"])
            .unwrap(),
    );
    let ip = s["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.") && ip != "10.96.0.1", "{ip}");
    let np = s["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&np));
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
    let clash = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s2, namespace: t1}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n");
    let cp2 = run.path().join("s2.yaml");
    std::fs::write(&cp2, clash).unwrap();
    let err = cp
        .kubectl_err(&["create", "-f", cp2.to_str().unwrap(), "--validate=false"])
        .unwrap();
    assert!(err.contains("already allocated"), "{err}");
    let svcs = cp.kubectl_ok(&["get", "svc", "-n", "t1"]).unwrap();
    assert!(svcs.contains(&format!("80:{np}/TCP")), "{svcs}");

    // get -w: the table, then a line per change.
    let mut watch = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
        .args(["get", "configmaps", "-n", "t1", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Whether the create lands before kubectl's list or after it, a line for w1 follows:
    // from the list, or from the watch that resumes at the list's revision.
    apply_file(
        &cp,
        &run,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w1, namespace: t1}\ndata: {a: b}\n",
        "create",
    );
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch line for w1");
    assert!(line.starts_with("w1"), "{line}");
    let _ = watch.kill();
    let _ = watch.wait();

    // Delete, and a second delete is NotFound.
    let out = cp
        .kubectl_ok(&["delete", "deploy", "web", "-n", "t1"])
        .unwrap();
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = cp
        .kubectl_err(&["delete", "deploy", "web", "-n", "t1"])
        .unwrap();
    assert!(err.contains("NotFound"), "{err}");
    // Deleting the service released its ClusterIP: it can be taken again.
    cp.kubectl_ok(&["delete", "svc", "s", "-n", "t1"]).unwrap();
    cp.kubectl_ok(&["create", "-f", cp2.to_str().unwrap(), "--validate=false"])
        .unwrap();

    // Authentication: no credentials is 401 except on the public paths; tokens work.
    assert_eq!(curl(&cp, "/api/v1/namespaces", None).0, 401);
    assert_eq!(curl(&cp, "/version", None).0, 200);
    assert_eq!(curl(&cp, "/healthz", None).0, 200);
    let (code, body) = curl(&cp, "/readyz?verbose", None);
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "[+]ping ok\n[+]informer-sync ok\nreadyz check passed\n"
        )
    );
    assert_eq!(curl(&cp, "/livez/ping", None), (200, "ok".to_string()));
    assert_eq!(curl(&cp, "/readyz/nothing", None).0, 404);
    assert_eq!(curl(&cp, "/api/v1/namespaces", Some("wrong")).0, 401);
    let (code, body) = curl(&cp, "/api/v1/namespaces?limit=2", Some(&cp.token));
    assert_eq!(code, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cont = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    let (code, body) = curl(
        &cp,
        &format!("/api/v1/namespaces?limit=2&continue={cont}"),
        Some(&cp.token),
    );
    assert_eq!(code, 200, "{body}");
    let metrics = curl(&cp, "/metrics", Some(&cp.token)).1;
    assert!(metrics.contains("apiserver_request_total"), "{metrics}");
}

const MORE_KINDS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: kinds}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: batch-low}
value: 1000
description: batch work
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: example.test/local
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: kinds}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local
  resources: {requests: {storage: 1Gi}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: kinds}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-only, namespace: kinds}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: [{ports: [{port: 53}]}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: kinds}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: q, namespace: kinds}
spec:
  hard: {pods: "10", requests.cpu: "2", limits.memory: 4Gi}
"#;

/// Kinds beyond workloads that real manifests carry (storage, networking, autoscaling,
/// quotas, priority classes): applied, printed with Kubernetes' columns, defaulted,
/// validated, and priority classes admitted into pods.
#[test]
fn storage_networking_autoscaling_and_priority_kinds() {
    let run = RunDir::temp("apiserver-kinds").unwrap();
    let cp = ControlPlane::start(&run, Flavor::Kvstore).unwrap();
    let out = apply_file(&cp, &run, "kinds.yaml", MORE_KINDS, "apply");
    assert!(
        out.contains("persistentvolumeclaim/data created")
            && out.contains("horizontalpodautoscaler.autoscaling/web created"),
        "{out}"
    );
    let resources = cp.kubectl_ok(&["api-resources", "--no-headers"]).unwrap();
    for short in [
        "pvc", "pv", "hpa", "ing", "netpol", "sc", "pc", "quota", "limits",
    ] {
        assert!(
            resources.split_whitespace().any(|w| w == short),
            "{short}: {resources}"
        );
    }

    // Tables with Kubernetes' columns.
    let pvc = cp.kubectl_ok(&["get", "pvc", "-n", "kinds"]).unwrap();
    assert!(
        pvc.starts_with("NAME") && pvc.contains("ACCESS MODES") && pvc.contains("STORAGECLASS"),
        "{pvc}"
    );
    let row = pvc.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("data") && row.contains("Pending") && row.contains("local"),
        "{pvc}"
    );
    let sc = cp.kubectl_ok(&["get", "sc"]).unwrap();
    assert!(
        sc.contains("local (default)")
            && sc.contains("example.test/local")
            && sc.contains("Delete"),
        "{sc}"
    );
    let ing = cp.kubectl_ok(&["get", "ing", "-n", "kinds"]).unwrap();
    assert!(
        ing.contains("nginx") && ing.contains("web.example.test") && ing.contains("80"),
        "{ing}"
    );
    let hpa = cp.kubectl_ok(&["get", "hpa", "-n", "kinds"]).unwrap();
    assert!(
        hpa.contains("Deployment/web") && hpa.contains("cpu: <unknown>/80%"),
        "{hpa}"
    );
    let quota = cp.kubectl_ok(&["get", "quota", "-n", "kinds"]).unwrap();
    assert!(
        quota.contains("pods: 0/10") && quota.contains("limits.memory: 0/4Gi"),
        "{quota}"
    );
    let pc = cp.kubectl_ok(&["get", "pc"]).unwrap();
    for name in [
        "system-node-critical",
        "system-cluster-critical",
        "batch-low",
    ] {
        assert!(pc.contains(name), "{pc}");
    }

    // Defaults the real API fills in.
    let claim = json(
        &cp.kubectl_ok(&["get", "pvc", "data", "-n", "kinds", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
    assert_eq!(claim["status"]["phase"], "Pending");
    assert!(claim["metadata"]["generation"].is_null(), "{claim}");
    let netpol = json(
        &cp.kubectl_ok(&["get", "netpol", "dns-only", "-n", "kinds", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(
        netpol["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(netpol["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");

    // `create` sends protobuf: the decoder knows the new kinds too.
    let path = write(&run, "claim.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: logs, namespace: kinds}\nspec: {accessModes: [ReadWriteMany], resources: {requests: {storage: 2Gi}}}\n");
    cp.kubectl_ok(&["create", "-f", &path]).unwrap();
    let logs = json(
        &cp.kubectl_ok(&["get", "pvc", "logs", "-n", "kinds", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(
        logs["spec"]["accessModes"],
        serde_json::json!(["ReadWriteMany"])
    );
    assert_eq!(logs["spec"]["resources"]["requests"]["storage"], "2Gi");

    // Validation: a claim's spec is fixed once created, an ingress path needs its type,
    // a class's value is fixed, only one class is the global default.
    let err = cp
        .kubectl_err(&[
            "patch",
            "pvc",
            "data",
            "-n",
            "kinds",
            "-p",
            r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
        ])
        .unwrap();
    assert!(err.contains("spec is immutable after creation"), "{err}");
    cp.kubectl_ok(&[
        "patch",
        "pvc",
        "data",
        "-n",
        "kinds",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    ])
    .unwrap();
    let path = write(&run, "bad-ingress.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad, namespace: kinds}\nspec:\n  rules:\n  - http:\n      paths:\n      - {path: /, pathType: Regex, backend: {service: {name: web, port: {number: 80}}}}\n");
    let err = cp.kubectl_err(&["create", "-f", &path]).unwrap();
    assert!(
        err.contains("is invalid") && err.contains("spec.rules[0].http.paths[0].pathType"),
        "{err}"
    );
    // A missing required field is a 422 naming it, as Kubernetes' validation reports it.
    let path = write(&run, "no-path-type.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad, namespace: kinds}\nspec:\n  rules:\n  - http:\n      paths:\n      - {path: /, backend: {service: {name: web, port: {number: 80}}}}\n");
    let err = cp
        .kubectl_err(&["create", "--validate=false", "-f", &path])
        .unwrap();
    assert!(
        err.contains(
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
        ),
        "{err}"
    );
    let err = cp
        .kubectl_err(&[
            "patch",
            "pc",
            "batch-low",
            "--type=merge",
            "-p",
            r#"{"value":5}"#,
        ])
        .unwrap();
    assert!(err.contains("field is immutable"), "{err}");
    let default_class = |name: &str| {
        format!("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {name}}}\nvalue: 10\nglobalDefault: true\n")
    };
    apply_file(
        &cp,
        &run,
        "default1.yaml",
        &default_class("fallback"),
        "create",
    );
    let path = write(&run, "default2.yaml", &default_class("another"));
    let err = cp.kubectl_err(&["create", "-f", &path]).unwrap();
    assert!(
        err.contains("Forbidden") && err.contains("fallback is already marked as default"),
        "{err}"
    );

    // A cron job's time zone must be one the system's database knows.
    let cron = |zone: &str| {
        format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly, namespace: kinds}}\nspec:\n  schedule: '0 3 * * *'\n  timeZone: {zone}\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: c, image: busybox:1.36}}]\n")
    };
    let path = write(&run, "cron-bad.yaml", &cron("Mars/Olympus"));
    let err = cp.kubectl_err(&["create", "-f", &path]).unwrap();
    assert!(err.contains("unknown time zone Mars/Olympus"), "{err}");
    apply_file(&cp, &run, "cron.yaml", &cron("Europe/Berlin"), "create");
    let cj = cp
        .kubectl_ok(&["get", "cj", "nightly", "-n", "kinds"])
        .unwrap();
    assert!(cj.contains("Europe/Berlin"), "{cj}");

    // Priority admission: a named class sets the pod's priority, no name takes the
    // global default, an unknown class is refused.
    cp.kubectl_ok(&[
        "run",
        "low",
        "-n",
        "kinds",
        "--image=busybox:1.36",
        "--overrides",
        r#"{"spec":{"priorityClassName":"batch-low"}}"#,
    ])
    .unwrap();
    let low = json(
        &cp.kubectl_ok(&["get", "pod", "low", "-n", "kinds", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(low["spec"]["priority"], 1000);
    assert_eq!(low["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    cp.kubectl_ok(&["run", "plain", "-n", "kinds", "--image=busybox:1.36"])
        .unwrap();
    let plain = json(
        &cp.kubectl_ok(&["get", "pod", "plain", "-n", "kinds", "-o", "json"])
            .unwrap(),
    );
    assert_eq!(plain["spec"]["priorityClassName"], "fallback");
    assert_eq!(plain["spec"]["priority"], 10);
    let err = cp
        .kubectl_err(&[
            "run",
            "lost",
            "-n",
            "kinds",
            "--image=busybox:1.36",
            "--overrides",
            r#"{"spec":{"priorityClassName":"nope"}}"#,
        ])
        .unwrap();
    assert!(
        err.contains("Error from server (Forbidden)")
            && err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );
    let err = cp
        .kubectl_err(&[
            "run",
            "greedy",
            "-n",
            "kinds",
            "--image=busybox:1.36",
            "--overrides",
            r#"{"spec":{"priorityClassName":"batch-low","priority":7}}"#,
        ])
        .unwrap();
    assert!(err.contains("must not be provided in pod spec"), "{err}");

    // LimitRanger: a namespace's limit range fills what containers leave out and bounds
    // what they and claims ask for.
    apply_file(&cp, &run, "limits.yaml", LIMITS, "apply");
    cp.kubectl_ok(&["run", "sized", "-n", "limited", "--image=busybox:1.36"])
        .unwrap();
    let sized = json(
        &cp.kubectl_ok(&["get", "pod", "sized", "-n", "limited", "-o", "json"])
            .unwrap(),
    );
    let resources = &sized["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["limits"],
        serde_json::json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(
        resources["requests"],
        serde_json::json!({"cpu": "100m", "memory": "256Mi"})
    );
    assert_eq!(sized["status"]["qosClass"], "Burstable");
    assert_eq!(
        sized["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container sized; cpu, memory limit for container sized"
    );
    let err = cp
        .kubectl_err(&[
            "run",
            "huge",
            "-n",
            "limited",
            "--image=busybox:1.36",
            "--overrides",
            r#"{"spec":{"containers":[{"name":"huge","image":"busybox:1.36","resources":{"limits":{"memory":"2Gi"}}}]}}"#,
        ])
        .unwrap();
    assert!(
        err.contains("Error from server (Forbidden)")
            && err.contains("pods \"huge\" is forbidden: maximum memory usage per Container is 1Gi, but limit is 2Gi"),
        "{err}"
    );
    // PodSecurity: a namespace enforcing "restricted" refuses a plain pod, naming every
    // check it breaks, and admits a hardened one.
    apply_file(&cp, &run, "secure.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: secure\n  labels: {pod-security.kubernetes.io/enforce: restricted}\n", "apply");
    let err = cp
        .kubectl_err(&["run", "plain", "-n", "secure", "--image=busybox:1.36"])
        .unwrap();
    assert!(
        err.contains(r#"pods "plain" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "plain" must set securityContext.allowPrivilegeEscalation=false)"#)
            && err.contains("runAsNonRoot != true"),
        "{err}"
    );
    cp.kubectl_ok(&[
        "run",
        "hardened",
        "-n",
        "secure",
        "--image=busybox:1.36",
        "--overrides",
        r#"{"spec":{"securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},"containers":[{"name":"hardened","image":"busybox:1.36","securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}"#,
    ])
    .unwrap();
    // A workload whose pods would be refused is admitted with Kubernetes' warning; a
    // level that does not exist is refused on the namespace.
    let (ok, _, err) = cp
        .kubectl(&[
            "create",
            "deployment",
            "plain",
            "-n",
            "secure",
            "--image=busybox:1.36",
        ])
        .unwrap();
    assert!(
        ok && err.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#),
        "{err}"
    );
    let err = cp
        .kubectl_err(&[
            "label",
            "namespace",
            "secure",
            "--overwrite",
            "pod-security.kubernetes.io/enforce=strict",
        ])
        .unwrap();
    assert!(
        err.contains("must be one of privileged, baseline, restricted"),
        "{err}"
    );
    let path = write(&run, "big-claim.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: big, namespace: limited}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 20Gi}}\n");
    let err = cp.kubectl_err(&["create", "-f", &path]).unwrap();
    assert!(
        err.contains(
            "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
        ),
        "{err}"
    );
}

const LIMITS: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: limited}
---
apiVersion: v1
kind: LimitRange
metadata: {name: bounds, namespace: limited}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 100m}
    max: {memory: 1Gi}
  - type: PersistentVolumeClaim
    max: {storage: 10Gi}
"#;

/// RBAC (`--authorization-mode=RBAC`): the default roles exist, a user is refused until
/// a binding grants it a role (Kubernetes' texts), `kubectl auth can-i` answers from the
/// same rules.
#[test]
fn rbac_authorizes_by_roles_and_bindings() {
    let run = RunDir::temp("apiserver-rbac").unwrap();
    let cp = ControlPlane::start_with(&run, Flavor::Kvstore, &["--authorization-mode=RBAC".into()])
        .unwrap();
    let roles = cp.kubectl_ok(&["get", "clusterroles"]).unwrap();
    for name in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
    ] {
        assert!(
            roles
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name}: {roles}"
        );
    }
    // token-user (group dev), through a kubeconfig of its own.
    let kubeconfig = cp.token_user_kubeconfig(&run).unwrap();
    let as_user = |args: &[&str]| e2e::apiserver::kubectl(&kubeconfig, args).unwrap();
    let (ok, _, err) = as_user(&["get", "pods", "-n", "default"]);
    assert!(!ok);
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "token-user" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{err}"
    );
    let (ok, out, err) = as_user(&["auth", "can-i", "list", "pods", "-n", "default"]);
    assert!(!ok && out.trim() == "no", "{out}{err}");
    // Paths that are not resources: discovery is everyone's, /metrics is not.
    let (ok, out, err) = as_user(&["api-resources", "--no-headers"]);
    assert!(ok && out.contains("pods"), "{out}{err}");
    let (ok, _, err) = as_user(&["get", "--raw", "/metrics"]);
    assert!(
        !ok && err.contains(r#"forbidden: User "token-user" cannot get path "/metrics""#),
        "{err}"
    );

    cp.kubectl_ok(&[
        "create",
        "rolebinding",
        "dev-view",
        "--clusterrole=view",
        "--group=dev",
        "-n",
        "default",
    ])
    .unwrap();
    let (ok, out, err) = as_user(&["get", "pods", "-n", "default"]);
    assert!(ok, "{out}{err}");
    let wide = cp
        .kubectl_ok(&["get", "rolebindings", "-n", "default", "-o", "wide"])
        .unwrap();
    assert!(
        wide.starts_with("NAME")
            && wide.contains("SERVICEACCOUNTS")
            && wide.lines().any(|l| l.starts_with("dev-view")
                && l.contains("ClusterRole/view")
                && l.contains("dev")),
        "{wide}"
    );
    let (ok, out, _) = as_user(&["auth", "can-i", "list", "pods", "-n", "default"]);
    assert!(ok && out.trim() == "yes", "{out}");
    let (_, out, _) = as_user(&["auth", "can-i", "create", "pods", "-n", "default"]);
    assert_eq!(out.trim(), "no");
    // view reads no secrets, and binds nothing in other namespaces or at cluster scope.
    let (ok, _, err) = as_user(&["get", "secrets", "-n", "default"]);
    assert!(
        !ok && err.contains("cannot list resource \"secrets\""),
        "{err}"
    );
    let (ok, _, err) = as_user(&["get", "pods", "-n", "kube-system"]);
    assert!(
        !ok && err.contains("in the namespace \"kube-system\""),
        "{err}"
    );
    let (ok, _, err) = as_user(&["get", "nodes"]);
    assert!(
        !ok && err.contains(r#"cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{err}"
    );
    let (ok, _, err) = as_user(&["run", "web", "-n", "default", "--image=busybox:1.36"]);
    assert!(
        !ok && err.contains(r#"User "token-user" cannot create resource "pods""#),
        "{err}"
    );

    // `can-i --list` shows the rules bound in a namespace.
    let (_, out, err) = as_user(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{out}{err}"
    );
    // Impersonation: the admin may act as anyone; token-user may not.
    let can_i = |extra: &[&str]| {
        let mut args = vec!["auth", "can-i", "list", "pods", "-n", "default"];
        args.extend_from_slice(extra);
        let (_, out, _) = cp.kubectl(&args).unwrap();
        out.trim().to_string()
    };
    assert_eq!(can_i(&["--as=token-user"]), "no");
    assert_eq!(can_i(&["--as=token-user", "--as-group=dev"]), "yes");
    let (ok, _, err) = as_user(&["get", "pods", "-n", "default", "--as=bob"]);
    assert!(
        !ok && err.contains(r#"users "bob" is forbidden: User "token-user" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{err}"
    );

    // Service account tokens: issued for an account, accepted until it goes.
    cp.kubectl_ok(&["create", "serviceaccount", "builder", "-n", "default"])
        .unwrap();
    let token = cp
        .kubectl_ok(&["create", "token", "builder", "-n", "default"])
        .unwrap()
        .trim()
        .to_string();
    let as_sa = |args: &[&str]| {
        let flag = format!("--token={token}");
        let mut all = args.to_vec();
        all.push(&flag);
        as_user(&all)
    };
    let (ok, out, err) = as_sa(&["auth", "whoami"]);
    assert!(
        ok && out.contains("system:serviceaccount:default:builder")
            && out.contains("system:serviceaccounts:default"),
        "{out}{err}"
    );
    let (ok, _, err) = as_sa(&["get", "pods", "-n", "default"]);
    assert!(
        !ok && err.contains(
            r#"User "system:serviceaccount:default:builder" cannot list resource "pods""#
        ),
        "{err}"
    );
    cp.kubectl_ok(&[
        "create",
        "rolebinding",
        "builder-view",
        "--clusterrole=view",
        "--serviceaccount=default:builder",
        "-n",
        "default",
    ])
    .unwrap();
    let (ok, out, err) = as_sa(&["get", "pods", "-n", "default"]);
    assert!(ok, "{out}{err}");
    let err = cp
        .kubectl_err(&[
            "create",
            "token",
            "builder",
            "-n",
            "default",
            "--duration=5m",
        ])
        .unwrap();
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    // A token bound to a pod works while that pod exists.
    cp.kubectl_ok(&["run", "holder", "-n", "default", "--image=busybox:1.36"])
        .unwrap();
    let bound = cp
        .kubectl_ok(&[
            "create",
            "token",
            "builder",
            "-n",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=holder",
        ])
        .unwrap()
        .trim()
        .to_string();
    let whoami = |token: &str| as_user(&["auth", "whoami", &format!("--token={token}")]);
    let (ok, out, err) = whoami(&bound);
    assert!(
        ok && out.contains("system:serviceaccount:default:builder"),
        "{out}{err}"
    );
    cp.kubectl_ok(&["delete", "pod", "holder", "-n", "default", "--wait=false"])
        .unwrap();
    e2e::wait::wait_for(
        "the deleted pod's token to be refused",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || {
            let (ok, _, err) = whoami(&bound);
            Ok((!ok && err.contains("Unauthorized")).then_some(()))
        },
    )
    .unwrap();

    // So does one bound to a secret, or to a node.
    cp.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "holder",
        "-n",
        "default",
        "--from-literal=k=v",
    ])
    .unwrap();
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: token-holder}\n";
    cp.kubectl_ok(&["create", "-f", &write(&run, "token-node.yaml", node)])
        .unwrap();
    for (kind, delete) in [
        (
            "Secret",
            vec!["delete", "secret", "holder", "-n", "default"],
        ),
        ("Node", vec!["delete", "node", "token-holder"]),
    ] {
        let name = if kind == "Node" {
            "token-holder"
        } else {
            "holder"
        };
        let token = cp
            .kubectl_ok(&[
                "create",
                "token",
                "builder",
                "-n",
                "default",
                &format!("--bound-object-kind={kind}"),
                &format!("--bound-object-name={name}"),
            ])
            .unwrap()
            .trim()
            .to_string();
        let (ok, out, err) = whoami(&token);
        assert!(
            ok && out.contains("system:serviceaccount:default:builder"),
            "{kind}: {out}{err}"
        );
        cp.kubectl_ok(&delete).unwrap();
        e2e::wait::wait_for(
            &format!("the deleted {kind}'s token to be refused"),
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(100),
            || {
                let (ok, _, err) = whoami(&token);
                Ok((!ok && err.contains("Unauthorized")).then_some(()))
            },
        )
        .unwrap();
    }

    // The same name made again is another account: the old token no longer works.
    cp.kubectl_ok(&["delete", "serviceaccount", "builder", "-n", "default"])
        .unwrap();
    cp.kubectl_ok(&["create", "serviceaccount", "builder", "-n", "default"])
        .unwrap();
    let (ok, _, err) = as_sa(&["get", "pods", "-n", "default"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");

    // Escalation: a namespace admin may grant what it holds there, nothing more.
    cp.kubectl_ok(&["create", "namespace", "team"]).unwrap();
    cp.kubectl_ok(&[
        "create",
        "rolebinding",
        "dev-admin",
        "--clusterrole=admin",
        "--group=dev",
        "-n",
        "team",
    ])
    .unwrap();
    let (ok, out, err) = as_user(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get",
        "--resource=secrets",
        "-n",
        "team",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = as_user(&[
        "create",
        "rolebinding",
        "viewers",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "team",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = as_user(&[
        "create",
        "role",
        "node-reader",
        "--verb=list",
        "--resource=nodes",
        "-n",
        "team",
    ]);
    assert!(
        !ok && err.contains(r#"is attempting to grant RBAC permissions not currently held"#)
            && err.contains(r#"{APIGroups:[""], Resources:["nodes"], Verbs:["list"]}"#),
        "{err}"
    );
    let (ok, _, err) = as_user(&[
        "create",
        "rolebinding",
        "me-admin",
        "--clusterrole=cluster-admin",
        "--user=token-user",
        "-n",
        "team",
    ]);
    assert!(
        !ok && err.contains(
            r#"rolebindings.rbac.authorization.k8s.io "me-admin" is forbidden: user "token-user""#
        ),
        "{err}"
    );
}

#[test]
fn pod_security_defaults_and_exemptions_come_from_the_admission_configuration() {
    let run = RunDir::temp("apiserver-psa").unwrap();
    let admission = "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults: {enforce: baseline, warn: restricted}\n    exemptions: {namespaces: [open], usernames: [token-user]}\n";
    let flag = format!(
        "--admission-control-config-file={}",
        write(&run, "admission.yaml", admission)
    );
    let cp = ControlPlane::start_with(&run, Flavor::Kvstore, &[flag]).unwrap();
    for ns in ["open", "labelled"] {
        cp.kubectl_ok(&["create", "namespace", ns]).unwrap();
    }
    let label = "pod-security.kubernetes.io/enforce=privileged";
    cp.kubectl_ok(&["label", "namespace", "labelled", label])
        .unwrap();
    let pod = |name: &str, security: &str| {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    securityContext: {security}\n");
        write(&run, &format!("{name}.yaml"), &text)
    };
    let root = pod("root", "{privileged: true}");
    // Where a namespace says nothing, the cluster's default level is enforced...
    let err = cp
        .kubectl_err(&["create", "-f", &root, "-n", "default"])
        .unwrap();
    assert!(
        err.contains(r#"pods "root" is forbidden: violates PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)"#),
        "{err}"
    );
    // ... and warned: a baseline pod that is not restricted is admitted with a warning.
    let (ok, _, err) = cp
        .kubectl(&["create", "-f", &pod("plain", "{}"), "-n", "default"])
        .unwrap();
    assert!(
        ok && err.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#),
        "{err}"
    );
    // A namespace's own label wins for its mode (the default warning still comes); an
    // exempt namespace or user is not checked at all.
    let (ok, out, err) = cp
        .kubectl(&["create", "-f", &root, "-n", "labelled"])
        .unwrap();
    assert!(
        ok && err.contains(r#"Warning: would violate PodSecurity "restricted:latest": privileged"#),
        "{out}{err}"
    );
    let (ok, out, err) = cp.kubectl(&["create", "-f", &root, "-n", "open"]).unwrap();
    assert!(ok && !err.contains("Warning"), "{out}{err}");
    // Once its namespace enforces baseline, the privileged pod may change its labels but
    // not its image (an update Kubernetes checks again).
    let label = "pod-security.kubernetes.io/enforce=baseline";
    cp.kubectl_ok(&["label", "namespace", "labelled", label, "--overwrite"])
        .unwrap();
    let set_image = |extra: &[&str]| {
        let mut args = vec![
            "set",
            "image",
            "pod/root",
            "c=busybox:1.37",
            "-n",
            "labelled",
        ];
        args.extend_from_slice(extra);
        cp.kubectl(&args).unwrap()
    };
    e2e::wait::wait_for(
        "the namespace's new level to be enforced",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || Ok((!set_image(&["--dry-run=server"]).0).then_some(())),
    )
    .unwrap();
    let (ok, _, err) = set_image(&[]);
    assert!(
        !ok && err.contains(r#"violates PodSecurity "baseline:latest": privileged"#),
        "{err}"
    );
    cp.kubectl_ok(&["label", "pod", "root", "-n", "labelled", "seen=yes"])
        .unwrap();
    // (This control plane authorizes everyone: token-user may create pods.)
    let kubeconfig = cp.token_user_kubeconfig(&run).unwrap();
    let (ok, out, err) =
        e2e::apiserver::kubectl(&kubeconfig, &["create", "-f", &root, "-n", "default"]).unwrap();
    assert!(ok && !err.contains("Warning"), "{out}{err}");
}

#[test]
fn audit_events_follow_the_policy() {
    let run = RunDir::temp("apiserver-audit").unwrap();
    let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: \"\", resources: [configmaps], resourceNames: [noisy]}]\n- level: RequestResponse\n  resources: [{group: \"\", resources: [pods]}]\n  omitStages: [RequestReceived]\n  omitManagedFields: true\n- level: Metadata\n  resources: [{group: \"\", resources: [configmaps]}]\n";
    let log = run.path().join("audit.log");
    let cp = ControlPlane::start_with(
        &run,
        Flavor::Kvstore,
        &[
            format!("--audit-policy-file={}", write(&run, "policy.yaml", policy)),
            format!("--audit-log-path={}", log.display()),
        ],
    )
    .unwrap();
    cp.kubectl_ok(&["create", "namespace", "audited"]).unwrap();
    let label = "pod-security.kubernetes.io/audit=restricted";
    cp.kubectl_ok(&["label", "namespace", "audited", label])
        .unwrap();
    cp.kubectl_ok(&["run", "web", "-n", "audited", "--image=busybox:1.36"])
        .unwrap();
    let err = cp
        .kubectl_err(&["get", "configmap", "absent", "-n", "audited"])
        .unwrap();
    assert!(err.contains("NotFound"), "{err}");
    cp.kubectl_err(&["get", "configmap", "noisy", "-n", "audited"])
        .unwrap();
    cp.kubectl_err(&[
        "get",
        "configmap",
        "as-someone",
        "-n",
        "audited",
        "--as=someone",
    ])
    .unwrap();
    let (code, _) = curl(
        &cp,
        "/api/v1/namespaces/audited/pods?watch=true&timeoutSeconds=1",
        Some(&cp.token),
    );
    assert_eq!(code, 200);
    // The components' calls over gRPC are audited alike.
    let kube = e2e::kube::TestClient::new(&cp);
    let cms: client::Api<k8s_openapi::api::core::v1::ConfigMap> =
        client::Api::namespaced(kube.client.clone(), "audited");
    let made =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "over-grpc"}})).unwrap();
    kube.rt.block_on(cms.create(&made)).unwrap();
    assert!(kube.rt.block_on(cms.get_opt("gone")).unwrap().is_none());

    let events = |want: usize| -> Option<Vec<Value>> {
        let text = std::fs::read_to_string(&log).ok()?;
        let events: Vec<Value> = text.lines().map(json).collect();
        (events.len() >= want).then_some(events)
    };
    // pod create: ResponseComplete; configmap get: RequestReceived + ResponseComplete;
    // the watch: ResponseStarted + ResponseComplete; over gRPC, a configmap create and
    // get: two each.
    let events = e2e::wait::wait_for(
        "the audit events",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || Ok(events(11)),
    )
    .unwrap();
    let find = |verb: &str, resource: &str, stage: &str| -> &Value {
        events
            .iter()
            .find(|e| {
                e["verb"] == verb && e["objectRef"]["resource"] == resource && e["stage"] == stage
            })
            .unwrap_or_else(|| panic!("no {verb} {resource} {stage} event in {events:#?}"))
    };
    let create = find("create", "pods", "ResponseComplete");
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["level"], "RequestResponse");
    assert_eq!(create["user"]["username"], "kubernetes-admin");
    assert_eq!(
        create["objectRef"],
        serde_json::json!({"resource": "pods", "namespace": "audited", "apiVersion": "v1"})
    );
    assert_eq!(create["responseStatus"]["code"], 201);
    assert_eq!(create["requestObject"]["metadata"]["name"], "web");
    assert!(create["responseObject"]["metadata"]["uid"].is_string());
    assert!(
        create["responseObject"]["metadata"]["managedFields"].is_null(),
        "omitManagedFields"
    );
    let impersonated = events
        .iter()
        .find(|e| e["objectRef"]["name"] == "as-someone" && e["stage"] == "ResponseComplete")
        .expect("the impersonated get");
    assert_eq!(impersonated["user"]["username"], "kubernetes-admin");
    assert_eq!(impersonated["impersonatedUser"]["username"], "someone");
    assert_eq!(
        create["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    let violations = create["annotations"]["pod-security.kubernetes.io/audit-violations"]
        .as_str()
        .unwrap_or_default();
    assert!(
        violations.starts_with(
            r#"would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false"#
        ),
        "{create}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["objectRef"]["resource"] == "pods" && e["stage"] == "RequestReceived"),
        "pods omit RequestReceived"
    );
    let received = find("get", "configmaps", "RequestReceived");
    let missing = find("get", "configmaps", "ResponseComplete");
    assert_eq!(received["auditID"], missing["auditID"]);
    assert_eq!(missing["level"], "Metadata");
    assert_eq!(missing["responseStatus"]["code"], 404);
    assert_eq!(missing["responseStatus"]["reason"], "NotFound");
    assert!(missing.get("requestObject").is_none() && missing.get("responseObject").is_none());
    assert!(
        !events.iter().any(|e| e["objectRef"]["name"] == "noisy"),
        "level None is not audited"
    );
    let grpc_create = find("create", "configmaps", "ResponseComplete");
    assert_eq!(grpc_create["requestURI"], "/apiserver.v1.Resources/Create");
    assert_eq!(grpc_create["responseStatus"]["code"], 201);
    assert_eq!(grpc_create["user"]["username"], "kubernetes-admin");
    let grpc_missing = events
        .iter()
        .find(|e| e["objectRef"]["name"] == "gone" && e["stage"] == "ResponseComplete")
        .expect("the gRPC get of a missing object");
    assert_eq!(grpc_missing["responseStatus"]["code"], 404);
    assert_eq!(grpc_missing["responseStatus"]["reason"], "NotFound");
    let started = find("watch", "pods", "ResponseStarted");
    let ended = find("watch", "pods", "ResponseComplete");
    assert_eq!(started["auditID"], ended["auditID"]);
    assert_eq!(started["user"]["username"], "token-user");
}
