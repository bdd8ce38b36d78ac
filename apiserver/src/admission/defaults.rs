//! The defaults the real API server fills in, per kind (only where a field is absent).

use serde_json::{json, Map, Value};

/// Sets `obj[key] = value` when the key is absent or null.
fn default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// The object at `path` under `v`, created as `{}` when absent.
fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        let obj = cur.as_object_mut()?;
        if !matches!(obj.get(*p), Some(Value::Object(_))) {
            obj.insert(p.to_string(), json!({}));
        }
        cur = obj.get_mut(*p)?;
    }
    cur.as_object_mut()
}

/// Applies the defaults of `kind` (group-qualified by the caller's resource info).
pub fn apply(group: &str, kind: &str, v: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                pod_spec(spec);
                requests_from_limits(spec);
            }
            if let Some(status) = object_at(v, &["status"]) {
                default(status, "phase", json!("Pending"));
            }
            let qos = qos_class(&v["spec"]);
            if let Some(status) = object_at(v, &["status"]) {
                default(status, "qosClass", json!(qos));
            }
        }
        ("", "Service") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                service_spec(spec);
            }
        }
        ("", "LimitRange") => {
            let items = v["spec"]["limits"].as_array_mut().into_iter().flatten();
            for item in items.filter_map(Value::as_object_mut) {
                limit_range_item(item);
            }
        }
        ("", "Namespace") => {
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Some(labels) = object_at(v, &["metadata", "labels"]) {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = object_at(v, &["status"]) {
                default(status, "phase", json!("Active"));
            }
        }
        ("", "Secret") => {
            if let Some(obj) = v.as_object_mut() {
                default(obj, "type", json!("Opaque"));
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
                if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate" {
                        default(strategy, "rollingUpdate", json!({}));
                        if let Some(ru) = strategy
                            .get_mut("rollingUpdate")
                            .and_then(Value::as_object_mut)
                        {
                            default(ru, "maxUnavailable", json!("25%"));
                            default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
            }
            template(v);
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "replicas", json!(1));
            }
            template(v);
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            template(v);
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            template(v);
        }
        ("batch", "Job") => {
            job_spec(v);
        }
        ("batch", "CronJob") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(job_spec) = object_at(v, &["spec", "jobTemplate", "spec"]) {
                default(job_spec, "backoffLimit", json!(6));
                default(job_spec, "completionMode", json!("NonIndexed"));
                default(job_spec, "suspend", json!(false));
            }
            if let Some(pod) = object_at(v, &["spec", "jobTemplate", "spec", "template", "spec"]) {
                pod_spec(pod);
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = object_at(v, &["status"]) {
                default(status, "phase", json!("Pending"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = object_at(v, &["status"]) {
                default(status, "phase", json!("Pending"));
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "minReplicas", json!(1));
                if spec
                    .get("metrics")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    spec.insert(
                        "metrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                    );
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                for dir in ["ingress", "egress"] {
                    for rule in spec
                        .get_mut(dir)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        for port in rule
                            .get_mut("ports")
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_object_mut)
                        {
                            default(port, "protocol", json!("TCP"));
                        }
                    }
                }
                let has_egress = spec
                    .get("egress")
                    .and_then(Value::as_array)
                    .is_some_and(|e| !e.is_empty());
                if spec
                    .get("policyTypes")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    let mut types = vec![json!("Ingress")];
                    if has_egress {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), json!(types));
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            if let Some(o) = v.as_object_mut() {
                default(o, "reclaimPolicy", json!("Delete"));
                default(o, "volumeBindingMode", json!("Immediate"));
            }
        }
        ("storage.k8s.io", "CSIDriver") => {
            if let Some(spec) = object_at(v, &["spec"]) {
                default(spec, "attachRequired", json!(true));
                default(spec, "podInfoOnMount", json!(false));
                default(spec, "storageCapacity", json!(false));
                default(spec, "requiresRepublish", json!(false));
                default(spec, "seLinuxMount", json!(false));
                default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
                default(spec, "volumeLifecycleModes", json!(["Persistent"]));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(o) = v.as_object_mut() {
                default(o, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        _ => {}
    }
}

/// Defaults of a pod template's spec (deployments, replica sets, …).
fn template(v: &mut Value) {
    if let Some(spec) = object_at(v, &["spec", "template", "spec"]) {
        pod_spec(spec);
    }
}

fn job_spec(v: &mut Value) {
    let parallel_default = v["spec"]["completions"].is_null();
    if let Some(spec) = object_at(v, &["spec"]) {
        if parallel_default {
            default(spec, "completions", json!(1));
        }
        default(spec, "parallelism", json!(1));
        default(spec, "backoffLimit", json!(6));
        default(spec, "completionMode", json!("NonIndexed"));
        default(spec, "suspend", json!(false));
        default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    template(v);
}

/// The Job controller's selector: unless the user chose one (`manualSelector`), the job
/// selects its pods by its own uid, and the template carries those labels.
pub fn job_selector(v: &mut Value, uid: &str) {
    if v["spec"]["manualSelector"] == json!(true) {
        return;
    }
    let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
    if let Some(spec) = object_at(v, &["spec"]) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    if let Some(labels) = object_at(v, &["spec", "template", "metadata", "labels"]) {
        for (k, val) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid),
            ("job-name", name.as_str()),
        ] {
            labels.insert(k.into(), json!(val));
        }
    }
}

pub fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_none()
    {
        if let Some(sa) = spec.get("serviceAccount").cloned() {
            spec.insert("serviceAccountName".into(), sa);
        }
    }
    // What the DefaultTolerationSeconds admission plugin adds to every pod.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !list.iter().any(|t| t["key"] == key) {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
}

/// A pod's (not a template's) containers request what they limit unless they say
/// otherwise.
fn requests_from_limits(spec: &mut Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        let cs = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in cs.into_iter().flatten() {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            if let Some(requests) = object_at(c, &["resources", "requests"]) {
                for (res, q) in limits {
                    requests.entry(res).or_insert(q);
                }
            }
        }
    }
}

/// A container limit range's default limit is its max, and its default request its
/// default limit, else its min (per resource, where those are given).
fn limit_range_item(item: &mut Map<String, Value>) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let list =
        |item: &Map<String, Value>, key: &str| item.get(key).and_then(Value::as_object).cloned();
    let mut defaults = list(item, "default").unwrap_or_default();
    for (res, q) in list(item, "max").unwrap_or_default() {
        defaults.entry(res).or_insert(q);
    }
    let mut requests = list(item, "defaultRequest").unwrap_or_default();
    for (res, q) in defaults
        .iter()
        .chain(&list(item, "min").unwrap_or_default())
    {
        requests.entry(res.clone()).or_insert(q.clone());
    }
    if !defaults.is_empty() {
        item.insert("default".into(), Value::Object(defaults));
    }
    if !requests.is_empty() {
        item.insert("defaultRequest".into(), Value::Object(requests));
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    // Kubernetes: Always when the tag is `latest` or absent (and no digest).
    let last = image.rsplit('/').next().unwrap_or("");
    let pull = if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            None => "Always",
            Some((_, "latest")) => "Always",
            Some(_) => "IfNotPresent",
        }
    };
    default(c, "imagePullPolicy", json!(pull));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
        }
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty != "ExternalName" {
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                default(p, "targetPort", port);
            }
        }
    }
}

/// Kubernetes' QoS class from the containers' requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec[*l].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(res));
            // Requests default to limits, so a limit alone is enough.
            let r = req.and_then(|r| r.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed && !containers.is_empty() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_match_the_real_api() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "reg:5000/x:1.2"}]}});
        apply("", "Pod", &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            spec["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn service_and_deployment_defaults() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn qos_classes() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
