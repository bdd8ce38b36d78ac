//! Validation with the field paths and messages of the real API (422 Invalid causes).

use crate::error::Cause;
use api::names;
use api::ResourceInfo;
use serde_json::{json, Value};

/// The name rule of each resource (most use DNS-1123 subdomains).
fn name_errors(info: &ResourceInfo, name: &str) -> Vec<String> {
    match info.resource {
        "namespaces" | "serviceaccounts" => names::dns1123_label(name),
        "services" => names::rfc1035_label(name),
        // RBAC names and events allow more (path segment names).
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" | "events" => {
            if name.contains('/') || name.contains('%') || name == "." || name == ".." {
                vec!["may not contain '/' or '%' and may not be '.' or '..'".into()]
            } else {
                vec![]
            }
        }
        _ => names::dns1123_subdomain(name),
    }
}

fn metadata(info: &ResourceInfo, v: &Value, out: &mut Vec<Cause>) {
    let meta = &v["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    if name.is_empty() {
        out.push(Cause::required_msg(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for e in name_errors(info, name) {
            out.push(Cause::invalid("metadata.name", &json!(name), &e));
        }
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, val) in labels {
            for e in names::qualified_name(k) {
                out.push(Cause::invalid("metadata.labels", &json!(k), &e));
            }
            let s = val.as_str().unwrap_or("");
            for e in names::label_value(s) {
                out.push(Cause::invalid("metadata.labels", &json!(s), &e));
            }
        }
    }
    if let Some(ann) = meta["annotations"].as_object() {
        for k in ann.keys() {
            for e in names::qualified_name(&k.to_ascii_lowercase()) {
                out.push(Cause::invalid("metadata.annotations", &json!(k), &e));
            }
        }
        let size: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size > 256 * 1024 {
            out.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!("Too long: may not be more than 262144 bytes (got {size})"),
            });
        }
    }
    if let Some(fins) = meta["finalizers"].as_array() {
        for (i, f) in fins.iter().enumerate() {
            for e in names::qualified_name(f.as_str().unwrap_or("")) {
                out.push(Cause::invalid(format!("metadata.finalizers[{i}]"), f, &e));
            }
        }
    }
}

fn port(field: String, v: &Value, out: &mut Vec<Cause>) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(_) => out.push(Cause::invalid(
            field,
            v,
            "must be between 1 and 65535, inclusive",
        )),
        None => out.push(Cause::required(field)),
    }
}

fn containers(path: &str, list: &Value, required: bool, out: &mut Vec<Cause>) {
    let Some(cs) = list.as_array() else {
        if required {
            out.push(Cause::required(path));
        }
        return;
    };
    if cs.is_empty() && required {
        out.push(Cause::required(path));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in cs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            out.push(Cause::required(format!("{p}.name")));
        } else {
            for e in names::dns1123_label(name) {
                out.push(Cause::invalid(format!("{p}.name"), &json!(name), &e));
            }
            if !seen.insert(name.to_string()) {
                out.push(Cause::duplicate(format!("{p}.name"), &json!(name)));
            }
        }
        if c["image"].as_str().unwrap_or("").trim().is_empty() {
            out.push(Cause::required(format!("{p}.image")));
        }
        if let Some(ports) = c["ports"].as_array() {
            for (j, pt) in ports.iter().enumerate() {
                port(
                    format!("{p}.ports[{j}].containerPort"),
                    &pt["containerPort"],
                    out,
                );
                let proto = &pt["protocol"];
                if !proto.is_null()
                    && !["TCP", "UDP", "SCTP"].contains(&proto.as_str().unwrap_or(""))
                {
                    out.push(Cause::not_supported(
                        format!("{p}.ports[{j}].protocol"),
                        proto,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
        }
        let policy = &c["imagePullPolicy"];
        if !policy.is_null()
            && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str().unwrap_or(""))
        {
            out.push(Cause::not_supported(
                format!("{p}.imagePullPolicy"),
                policy,
                &["Always", "IfNotPresent", "Never"],
            ));
        }
    }
}

fn pod_spec(path: &str, spec: &Value, out: &mut Vec<Cause>) {
    containers(
        &format!("{path}.containers"),
        &spec["containers"],
        true,
        out,
    );
    containers(
        &format!("{path}.initContainers"),
        &spec["initContainers"],
        false,
        out,
    );
    let rp = &spec["restartPolicy"];
    if !rp.is_null() && !["Always", "OnFailure", "Never"].contains(&rp.as_str().unwrap_or("")) {
        out.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
    let dns = &spec["dnsPolicy"];
    if !dns.is_null()
        && !["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
            .contains(&dns.as_str().unwrap_or(""))
    {
        out.push(Cause::not_supported(
            format!("{path}.dnsPolicy"),
            dns,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ));
    }
    if let Some(g) = spec["terminationGracePeriodSeconds"].as_i64() {
        if g < 0 {
            out.push(Cause::invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                &json!(g),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// A workload's selector: required, valid, and matching its template's labels.
fn selector_matches_template(kind: &str, spec: &Value, out: &mut Vec<Cause>) {
    let sel = &spec["selector"];
    if sel.is_null() {
        out.push(Cause::required("spec.selector"));
        return;
    }
    let parsed: Result<api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector, _> =
        serde_json::from_value(sel.clone());
    let selector = match parsed
        .map_err(|e| e.to_string())
        .and_then(|s| api::LabelSelector::from_label_selector(Some(&s)).map_err(|e| e.0))
    {
        Ok(s) => s,
        Err(e) => {
            out.push(Cause::invalid("spec.selector", sel, &e));
            return;
        }
    };
    if sel.as_object().is_some_and(|o| {
        o.get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
            && o.get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(|m| m.is_empty())
    }) {
        out.push(Cause::invalid(
            "spec.selector",
            sel,
            "empty selector is invalid for deployment",
        ));
        return;
    }
    if kind == "CronJob" {
        return;
    }
    let labels = crate::cache::labels_of(&json!({"metadata": spec["template"]["metadata"]}));
    if !selector.matches(&labels) {
        out.push(Cause::invalid(
            "spec.template.metadata.labels",
            &json!(labels),
            "`selector` does not match template `labels`",
        ));
    }
}

fn non_negative(field: &str, v: &Value, out: &mut Vec<Cause>) {
    if let Some(n) = v.as_i64() {
        if n < 0 {
            out.push(Cause::invalid(
                field,
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn service(spec: &Value, out: &mut Vec<Cause>) {
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        out.push(Cause::not_supported(
            "spec.type",
            &spec["type"],
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        out.push(Cause::required("spec.ports"));
    }
    if ty == "ExternalName" && spec["externalName"].as_str().unwrap_or("").is_empty() {
        out.push(Cause::required("spec.externalName"));
    }
    let mut names_seen = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        port(format!("{path}.port"), &p["port"], out);
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            out.push(Cause::required(format!("{path}.name")));
        }
        if !name.is_empty() && !names_seen.insert(name.to_string()) {
            out.push(Cause::duplicate(format!("{path}.name"), &json!(name)));
        }
        let proto = &p["protocol"];
        if !proto.is_null() && !["TCP", "UDP", "SCTP"].contains(&proto.as_str().unwrap_or("")) {
            out.push(Cause::not_supported(
                format!("{path}.protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        match &p["targetPort"] {
            Value::Number(_) => port(format!("{path}.targetPort"), &p["targetPort"], out),
            Value::String(s) if !names::dns1123_label(s).is_empty() || s.len() > 15 => {
                out.push(Cause::invalid(
                    format!("{path}.targetPort"),
                    &p["targetPort"],
                    "must be a valid port name",
                ))
            }
            _ => {}
        }
        if let Some(np) = p["nodePort"].as_i64() {
            if np != 0 && ty == "ClusterIP" {
                out.push(Cause::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
}

/// Validation of a new object (after defaults).
pub fn validate_create(info: &ResourceInfo, v: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    metadata(info, v, &mut out);
    kind_rules(info, v, &mut out);
    out
}

fn kind_rules(info: &ResourceInfo, v: &Value, out: &mut Vec<Cause>) {
    let spec = &v["spec"];
    match (info.group, info.kind) {
        ("", "Pod") => pod_spec("spec", spec, out),
        ("", "Service") => service(spec, out),
        ("", "Namespace") => {
            for (label, value, why) in super::podsecurity::bad_labels(v) {
                out.push(Cause::invalid(
                    format!("metadata.labels[{label}]"),
                    &value,
                    why,
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            non_negative("spec.replicas", &spec["replicas"], out);
            selector_matches_template(info.kind, spec, out);
            pod_spec("spec.template.spec", &spec["template"]["spec"], out);
            if info.kind != "DaemonSet"
                && spec["template"]["spec"]["restartPolicy"]
                    .as_str()
                    .is_some_and(|r| r != "Always")
            {
                out.push(Cause::not_supported(
                    "spec.template.spec.restartPolicy",
                    &spec["template"]["spec"]["restartPolicy"],
                    &["Always"],
                ));
            }
        }
        ("batch", "Job") => {
            non_negative("spec.parallelism", &spec["parallelism"], out);
            non_negative("spec.completions", &spec["completions"], out);
            non_negative("spec.backoffLimit", &spec["backoffLimit"], out);
            selector_matches_template(info.kind, spec, out);
            pod_spec("spec.template.spec", &spec["template"]["spec"], out);
            let rp = &spec["template"]["spec"]["restartPolicy"];
            if !["OnFailure", "Never"].contains(&rp.as_str().unwrap_or("")) {
                out.push(Cause::not_supported(
                    "spec.template.spec.restartPolicy",
                    rp,
                    &["OnFailure", "Never"],
                ));
            }
        }
        ("batch", "CronJob") => {
            let schedule = spec["schedule"].as_str().unwrap_or("").trim();
            if schedule.is_empty() {
                out.push(Cause::required("spec.schedule"));
            } else if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
                out.push(Cause::invalid(
                    "spec.schedule",
                    &spec["schedule"],
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            }
            if let Some(zone) = spec["timeZone"].as_str() {
                if zone.is_empty() {
                    out.push(Cause::invalid(
                        "spec.timeZone",
                        &spec["timeZone"],
                        "timeZone must be nil or non-empty string",
                    ));
                } else if jiff::tz::TimeZone::get(zone).is_err() {
                    out.push(Cause::invalid(
                        "spec.timeZone",
                        &spec["timeZone"],
                        &format!("unknown time zone {zone}"),
                    ));
                }
            }
            pod_spec(
                "spec.jobTemplate.spec.template.spec",
                &spec["jobTemplate"]["spec"]["template"]["spec"],
                out,
            );
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = v[field].as_object() {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                        if !ok {
                            out.push(Cause::invalid(
                                format!("{field}[{k}]"),
                                &json!(k),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                            ));
                        }
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
                out.push(Cause::required_msg(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            if spec["resources"]["requests"]["storage"].is_null() {
                out.push(Cause::required("spec.resources[storage]"));
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let target = &spec["scaleTargetRef"];
            for f in ["kind", "name"] {
                if target[f].as_str().unwrap_or("").is_empty() {
                    out.push(Cause::required(format!("spec.scaleTargetRef.{f}")));
                }
            }
            let max = spec["maxReplicas"].as_i64().unwrap_or(0);
            if max < 1 {
                out.push(Cause::invalid(
                    "spec.maxReplicas",
                    &spec["maxReplicas"],
                    "must be greater than or equal to 1",
                ));
            }
            if let Some(min) = spec["minReplicas"].as_i64() {
                if min < 1 {
                    out.push(Cause::invalid(
                        "spec.minReplicas",
                        &spec["minReplicas"],
                        "must be greater than or equal to 1",
                    ));
                } else if max >= 1 && min > max {
                    out.push(Cause::invalid(
                        "spec.minReplicas",
                        &spec["minReplicas"],
                        "must be less than or equal to maxReplicas",
                    ));
                }
            }
        }
        ("networking.k8s.io", "Ingress") => {
            for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
                let paths = rule["http"]["paths"].as_array().into_iter().flatten();
                for (j, path) in paths.enumerate() {
                    let field = format!("spec.rules[{i}].http.paths[{j}].pathType");
                    // The typed decode makes a missing pathType "".
                    match path["pathType"].as_str().filter(|t| !t.is_empty()) {
                        None => out.push(Cause::required_msg(field, "pathType must be specified")),
                        Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                        Some(_) => out.push(Cause::not_supported(
                            field,
                            &path["pathType"],
                            &["Exact", "ImplementationSpecific", "Prefix"],
                        )),
                    }
                }
            }
        }
        ("storage.k8s.io", "StorageClass")
            if v["provisioner"].as_str().unwrap_or("").is_empty() =>
        {
            out.push(Cause::required("provisioner"));
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            let name = v["metadata"]["name"].as_str().unwrap_or("");
            let value = v["value"].as_i64().unwrap_or(0);
            if name.starts_with("system-") {
                if !SYSTEM_PRIORITY_CLASSES
                    .iter()
                    .any(|(n, val)| *n == name && *val == value)
                {
                    out.push(Cause::forbidden(
                        "metadata.name",
                        "priority class names with 'system-' prefix are reserved for system use only",
                    ));
                }
            } else if value > HIGHEST_USER_PRIORITY {
                out.push(Cause::forbidden(
                    "value",
                    &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
                ));
            }
        }
        _ => {}
    }
}

/// The priority classes every cluster has, and their values.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// The highest priority a class that is not a system class may have.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// The fields of a pod's spec an update may change (everything else is immutable).
const POD_MUTABLE: &[&str] = &[
    "activeDeadlineSeconds",
    "tolerations",
    "terminationGracePeriodSeconds",
    "schedulingGates",
];

/// Validation of an update: the new object's own rules plus what may not change.
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = validate_create(info, new);
    match (info.group, info.kind) {
        ("", "Pod") => {
            let strip = |spec: &Value| {
                let mut s = spec.clone();
                if let Some(o) = s.as_object_mut() {
                    for f in POD_MUTABLE {
                        o.remove(*f);
                    }
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
                            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                                c.remove("image");
                            }
                        }
                    }
                }
                s
            };
            if strip(&old["spec"]) != strip(&new["spec"]) {
                out.push(Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        ("", "Service") => {
            let (o, n) = (&old["spec"]["clusterIP"], &new["spec"]["clusterIP"]);
            if !o.is_null() && o != n && !n.is_null() {
                out.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    n,
                    "may not change once set",
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job")
            if old["spec"]["selector"] != new["spec"]["selector"] =>
        {
            out.push(Cause::invalid(
                "spec.selector",
                &new["spec"]["selector"],
                "field is immutable",
            ));
        }
        ("", "PersistentVolumeClaim") => {
            // Requests may grow (expansion), and a claim is bound once.
            let strip = |spec: &Value, binding: bool| {
                let mut s = spec.clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("volumeAttributesClassName");
                    if binding {
                        o.remove("volumeName");
                    }
                    if let Some(r) = o.get_mut("resources").and_then(Value::as_object_mut) {
                        r.remove("requests");
                    }
                }
                s
            };
            let binding = old["spec"]["volumeName"].as_str().unwrap_or("").is_empty();
            if strip(&old["spec"], binding) != strip(&new["spec"], binding) {
                out.push(Cause::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            for f in ["parameters", "provisioner", "reclaimPolicy"] {
                if old[f] != new[f] {
                    out.push(Cause::forbidden(
                        f,
                        &format!("updates to {f} are forbidden."),
                    ));
                }
            }
            if old["volumeBindingMode"] != new["volumeBindingMode"] {
                out.push(Cause::invalid(
                    "volumeBindingMode",
                    &new["volumeBindingMode"],
                    "field is immutable",
                ));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            for f in ["value", "preemptionPolicy"] {
                if old[f] != new[f] {
                    out.push(Cause::invalid(f, &new[f], "field is immutable"));
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(g: &str, r: &str) -> &'static ResourceInfo {
        api::registry::by_resource(g, "v1", r).unwrap()
    }

    #[test]
    fn names_and_required_fields() {
        let causes = validate_create(
            info("", "pods"),
            &json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "a"}]}}),
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.name", "spec.containers[0].image"]);
        assert_eq!(causes[1].reason, "FieldValueRequired");
    }

    #[test]
    fn selector_must_match_template_labels() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let causes = validate_create(info("apps", "deployments"), &d);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn service_ports_are_checked() {
        let s = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{"port": 70000}]}});
        let causes = validate_create(info("", "services"), &s);
        assert_eq!(causes[0].field, "spec.ports[0].port");
    }

    #[test]
    fn pod_spec_is_immutable_except_images() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        assert!(validate_update(info("", "pods"), &old, &new).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let causes = validate_update(info("", "pods"), &old, &new);
        assert_eq!(causes[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn priority_classes_and_claims() {
        let pc = api::registry::by_resource("scheduling.k8s.io", "v1", "priorityclasses").unwrap();
        let class = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert!(validate_create(pc, &class("system-node-critical", 2_000_001_000)).is_empty());
        assert_eq!(
            validate_create(pc, &class("system-mine", 5))[0].field,
            "metadata.name"
        );
        assert_eq!(
            validate_create(pc, &class("huge", 1_000_000_001))[0].field,
            "value"
        );
        assert!(validate_create(pc, &class("top", 1_000_000_000)).is_empty());
        let causes = validate_update(pc, &class("top", 1), &class("top", 2));
        assert_eq!(causes[0].message, "Invalid value: 2: field is immutable");

        let pvc = info("", "persistentvolumeclaims");
        let claim = json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}});
        assert!(validate_create(pvc, &claim).is_empty());
        let fields: Vec<String> =
            validate_create(pvc, &json!({"metadata": {"name": "c"}, "spec": {}}))
                .into_iter()
                .map(|c| c.field)
                .collect();
        assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
        // Growing the request and binding are allowed; anything else is not.
        let mut grown = claim.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        grown["spec"]["volumeName"] = json!("pv-1");
        assert!(validate_update(pvc, &claim, &grown).is_empty());
        let mut rebound = grown.clone();
        rebound["spec"]["volumeName"] = json!("pv-2");
        assert_eq!(validate_update(pvc, &grown, &rebound)[0].field, "spec");
        let mut changed = claim.clone();
        changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(validate_update(pvc, &claim, &changed)[0].field, "spec");
    }
}
