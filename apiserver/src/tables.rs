//! Server-side `Table` responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`):
//! the columns `kubectl get` prints for each kind, as the real API server defines them.
//! Priority-1 columns appear only with `-o wide`.

use serde_json::{json, Value};
use std::sync::Arc;

struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
}

const fn c(name: &'static str, ty: &'static str, priority: u8) -> Col {
    Col { name, ty, priority }
}

fn columns(resource: &str) -> Vec<Col> {
    let name = c("Name", "string", 0);
    let age = c("Age", "string", 0);
    match resource {
        "pods" => vec![
            name,
            c("Ready", "string", 0),
            c("Status", "string", 0),
            c("Restarts", "string", 0),
            age,
            c("IP", "string", 1),
            c("Node", "string", 1),
            c("Nominated Node", "string", 1),
            c("Readiness Gates", "string", 1),
        ],
        "nodes" => vec![
            name,
            c("Status", "string", 0),
            c("Roles", "string", 0),
            age,
            c("Version", "string", 0),
            c("Internal-IP", "string", 1),
            c("External-IP", "string", 1),
            c("OS-Image", "string", 1),
            c("Kernel-Version", "string", 1),
            c("Container-Runtime", "string", 1),
        ],
        "namespaces" => vec![name, c("Status", "string", 0), age],
        "services" => vec![
            name,
            c("Type", "string", 0),
            c("Cluster-IP", "string", 0),
            c("External-IP", "string", 0),
            c("Port(s)", "string", 0),
            age,
            c("Selector", "string", 1),
        ],
        "endpoints" => vec![name, c("Endpoints", "string", 0), age],
        "deployments" => vec![
            name,
            c("Ready", "string", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "replicasets" => vec![
            name,
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "daemonsets" => vec![
            name,
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Node Selector", "string", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "statefulsets" => vec![
            name,
            c("Ready", "string", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
        ],
        "jobs" => vec![
            name,
            c("Status", "string", 0),
            c("Completions", "string", 0),
            c("Duration", "string", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "cronjobs" => vec![
            name,
            c("Schedule", "string", 0),
            c("Timezone", "string", 0),
            c("Suspend", "boolean", 0),
            c("Active", "integer", 0),
            c("Last Schedule", "string", 0),
            age,
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        "configmaps" => vec![name, c("Data", "integer", 0), age],
        "secrets" => vec![name, c("Type", "string", 0), c("Data", "integer", 0), age],
        "events" => vec![
            c("Last Seen", "string", 0),
            c("Type", "string", 0),
            c("Reason", "string", 0),
            c("Object", "string", 0),
            c("Subobject", "string", 1),
            c("Source", "string", 1),
            c("Message", "string", 0),
            c("First Seen", "string", 1),
            c("Count", "string", 1),
            c("Name", "string", 1),
        ],
        "leases" => vec![name, c("Holder", "string", 0), age],
        "serviceaccounts" => vec![name, c("Secrets", "integer", 0), age],
        "persistentvolumeclaims" => vec![
            name,
            c("Status", "string", 0),
            c("Volume", "string", 0),
            c("Capacity", "string", 0),
            c("Access Modes", "string", 0),
            c("StorageClass", "string", 0),
            c("VolumeAttributesClass", "string", 0),
            age,
            c("VolumeMode", "string", 1),
        ],
        "persistentvolumes" => vec![
            name,
            c("Capacity", "string", 0),
            c("Access Modes", "string", 0),
            c("Reclaim Policy", "string", 0),
            c("Status", "string", 0),
            c("Claim", "string", 0),
            c("StorageClass", "string", 0),
            c("VolumeAttributesClass", "string", 0),
            c("Reason", "string", 0),
            age,
            c("VolumeMode", "string", 1),
        ],
        "resourcequotas" => vec![
            name,
            age,
            c("Request", "string", 0),
            c("Limit", "string", 0),
        ],
        "limitranges" => vec![name, c("Created At", "date", 0)],
        "podtemplates" => vec![
            c("Template", "string", 0),
            c("Containers", "string", 0),
            c("Images", "string", 0),
            c("Pod Labels", "string", 0),
        ],
        "controllerrevisions" => vec![
            name,
            c("Controller", "string", 0),
            c("Revision", "integer", 0),
            age,
        ],
        "horizontalpodautoscalers" => vec![
            name,
            c("Reference", "string", 0),
            c("Targets", "string", 0),
            c("MinPods", "string", 0),
            c("MaxPods", "string", 0),
            c("Replicas", "string", 0),
            age,
        ],
        "ingresses" => vec![
            name,
            c("Class", "string", 0),
            c("Hosts", "string", 0),
            c("Address", "string", 0),
            c("Ports", "string", 0),
            age,
        ],
        "ingressclasses" => vec![
            name,
            c("Controller", "string", 0),
            c("Parameters", "string", 0),
            age,
        ],
        "networkpolicies" => vec![name, c("Pod-Selector", "string", 0), age],
        "storageclasses" => vec![
            name,
            c("Provisioner", "string", 0),
            c("ReclaimPolicy", "string", 0),
            c("VolumeBindingMode", "string", 0),
            c("AllowVolumeExpansion", "string", 0),
            age,
        ],
        "csidrivers" => vec![
            name,
            c("AttachRequired", "boolean", 0),
            c("PodInfoOnMount", "boolean", 0),
            c("StorageCapacity", "boolean", 0),
            c("TokenRequests", "string", 0),
            c("RequiresRepublish", "boolean", 0),
            c("Modes", "string", 0),
            age,
        ],
        "csinodes" => vec![name, c("Drivers", "integer", 0), age],
        "volumeattachments" => vec![
            name,
            c("Attacher", "string", 0),
            c("PV", "string", 0),
            c("Node", "string", 0),
            c("Attached", "boolean", 0),
            age,
        ],
        "priorityclasses" => vec![
            name,
            c("Value", "integer", 0),
            c("Global-Default", "boolean", 0),
            age,
            c("PreemptionPolicy", "string", 0),
        ],
        "runtimeclasses" => vec![name, c("Handler", "string", 0), age],
        "roles" | "clusterroles" => vec![name, c("Created At", "date", 0)],
        "rolebindings" | "clusterrolebindings" => vec![
            name,
            c("Role", "string", 0),
            age,
            c("Users", "string", 1),
            c("Groups", "string", 1),
            c("ServiceAccounts", "string", 1),
        ],
        _ => vec![name, age],
    }
}

/// Kubernetes' short human durations: `45s`, `3m20s`, `5h`, `2d3h`, `400d`, `3y`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn since(ts: &Value) -> String {
    match ts
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        Some(t) => {
            human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        }
        None => "<unknown>".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `v`, or kubectl's `text` for an empty value.
fn placeholder(v: String, text: &str) -> String {
    if v.is_empty() {
        text.into()
    } else {
        v
    }
}

fn or_none(v: String) -> String {
    placeholder(v, "<none>")
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn containers_images(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<String> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let vals: Vec<String> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let op = s(&e["operator"]);
        parts.push(match op.as_str() {
            "In" => format!("{} in ({})", s(&e["key"]), vals.join(",")),
            "NotIn" => format!("{} notin ({})", s(&e["key"]), vals.join(",")),
            "Exists" => s(&e["key"]),
            _ => format!("!{}", s(&e["key"])),
        });
    }
    or_none(parts.join(","))
}

fn map_selector(sel: &Value) -> String {
    or_none(
        sel.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    )
}

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(modes: &Value) -> String {
    let mut out: Vec<&str> = Vec::new();
    for m in modes.as_array().into_iter().flatten() {
        let short = match m.as_str().unwrap_or("") {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            _ => continue,
        };
        if !out.contains(&short) {
            out.push(short);
        }
    }
    out.join(",")
}

/// A claim's or volume's class: the field, or the beta annotation it replaced.
fn storage_class(o: &Value) -> String {
    match s(&o["spec"]["storageClassName"]) {
        c if c.is_empty() => {
            s(&o["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"])
        }
        c => c,
    }
}

fn unset(v: String) -> String {
    placeholder(v, "<unset>")
}

/// An autoscaler's targets: `cpu: 42%/80%`, `<unknown>` for what it has not measured.
fn hpa_targets(metrics: &Value, current: &Value) -> String {
    let specs = metrics.as_array().cloned().unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let currents = current.as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ty = s(&m["type"]);
            let field = match ty.as_str() {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                _ => "external",
            };
            let target = &m[field]["target"];
            let now = &currents
                .get(i)
                .map_or(Value::Null, |c| c[field]["current"].clone());
            let (want, have) = match &target["averageUtilization"] {
                Value::Null => {
                    let key = if target["averageValue"].is_null() {
                        "value"
                    } else {
                        "averageValue"
                    };
                    (s(&target[key]), s(&now[key]))
                }
                u => (
                    format!("{}%", s(u)),
                    match &now["averageUtilization"] {
                        Value::Null => String::new(),
                        h => format!("{}%", s(h)),
                    },
                ),
            };
            let have = if have.is_empty() {
                "<unknown>".to_string()
            } else {
                have
            };
            match ty.as_str() {
                "Resource" | "ContainerResource" => {
                    format!("{}: {have}/{want}", s(&m[field]["name"]))
                }
                _ => format!("{have}/{want}"),
            }
        })
        .collect();
    parts.join(", ")
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut reason = s(&o["status"]["reason"]);
    if reason.is_empty() {
        reason = s(&o["status"]["phase"]);
    }
    for c in &statuses {
        let st = &c["state"];
        if let Some(r) = st["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.into();
        } else if let Some(r) = st["terminated"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.into();
        }
    }
    if !o["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    let gates = o["spec"]["readinessGates"].as_array().map_or(0, Vec::len);
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(since(&o["metadata"]["creationTimestamp"])),
        json!(or_none(s(&o["status"]["podIP"]))),
        json!(or_none(s(&o["spec"]["nodeName"]))),
        json!(or_none(s(&o["status"]["nominatedNodeName"]))),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

fn node_cells(o: &Value) -> Vec<Value> {
    let conds = o["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut status = match conds.iter().find(|c| c["type"] == "Ready") {
        Some(c) if c["status"] == "True" => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if o["spec"]["unschedulable"] == json!(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let addr = |t: &str| {
        o["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == t))
            .map(|x| s(&x["address"]))
            .unwrap_or_default()
    };
    let info = &o["status"]["nodeInfo"];
    vec![
        json!(status),
        json!(or_none(roles.join(","))),
        json!(since(&o["metadata"]["creationTimestamp"])),
        json!(s(&info["kubeletVersion"])),
        json!(or_none(addr("InternalIP"))),
        json!(or_none(addr("ExternalIP"))),
        json!(s(&info["osImage"])),
        json!(s(&info["kernelVersion"])),
        json!(s(&info["containerRuntimeVersion"])),
    ]
}

fn service_cells(o: &Value) -> Vec<Value> {
    let spec = &o["spec"];
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["nodePort"].as_i64() {
            Some(np) if np > 0 => format!("{}:{np}/{}", s(&p["port"]), s(&p["protocol"])),
            _ => format!("{}/{}", s(&p["port"]), s(&p["protocol"])),
        })
        .collect();
    let ty = s(&spec["type"]);
    let external = if ty == "ExternalName" {
        s(&spec["externalName"])
    } else {
        let ips: Vec<String> = spec["externalIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let lb: Vec<String> = o["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| s(&i["ip"]))
            .collect();
        let all: Vec<String> = ips.into_iter().chain(lb).collect();
        if all.is_empty() && ty == "LoadBalancer" {
            "<pending>".into()
        } else {
            or_none(all.join(","))
        }
    };
    vec![
        json!(ty),
        json!(s(&spec["clusterIP"])),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(since(&o["metadata"]["creationTimestamp"])),
        json!(map_selector(&spec["selector"])),
    ]
}

/// A binding's role (`ClusterRole/view`), age, and its subjects by kind.
fn binding_cells(o: &Value, age: Value) -> Vec<Value> {
    let subjects = o["subjects"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| {
        let names: Vec<String> = subjects
            .iter()
            .filter(|x| x["kind"] == kind)
            .map(|x| match kind {
                "ServiceAccount" => format!("{}/{}", s(&x["namespace"]), s(&x["name"])),
                _ => s(&x["name"]),
            })
            .collect();
        json!(names.join(", "))
    };
    vec![
        json!(format!(
            "{}/{}",
            s(&o["roleRef"]["kind"]),
            s(&o["roleRef"]["name"])
        )),
        age,
        of("User"),
        of("Group"),
        of("ServiceAccount"),
    ]
}

fn cells(resource: &str, o: &Value) -> Vec<Value> {
    let age = || json!(since(&o["metadata"]["creationTimestamp"]));
    let st = &o["status"];
    let spec = &o["spec"];
    let mut row = vec![json!(s(&o["metadata"]["name"]))];
    let rest: Vec<Value> = match resource {
        "pods" => pod_cells(o),
        "nodes" => node_cells(o),
        "namespaces" => vec![json!(s(&st["phase"])), age()],
        "services" => service_cells(o),
        "endpoints" => {
            let mut eps = Vec::new();
            for sub in o["subsets"].as_array().into_iter().flatten() {
                for a in sub["addresses"].as_array().into_iter().flatten() {
                    for p in sub["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", s(&a["ip"]), s(&p["port"])));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                or_none(eps.join(","))
            };
            vec![json!(shown), age()]
        }
        "deployments" => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                json!(format!(
                    "{}/{}",
                    st["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                int(&st["updatedReplicas"]),
                int(&st["availableReplicas"]),
                age(),
                json!(cs),
                json!(is),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "replicasets" => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                int(&spec["replicas"]),
                int(&st["replicas"]),
                int(&st["readyReplicas"]),
                age(),
                json!(cs),
                json!(is),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "daemonsets" => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                int(&st["desiredNumberScheduled"]),
                int(&st["currentNumberScheduled"]),
                int(&st["numberReady"]),
                int(&st["updatedNumberScheduled"]),
                int(&st["numberAvailable"]),
                json!(map_selector(&spec["template"]["spec"]["nodeSelector"])),
                age(),
                json!(cs),
                json!(is),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "statefulsets" => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                json!(format!(
                    "{}/{}",
                    st["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                age(),
                json!(cs),
                json!(is),
            ]
        }
        "jobs" => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            let conds = st["conditions"].as_array().cloned().unwrap_or_default();
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let duration = match (st["startTime"].as_str(), st["completionTime"].as_str()) {
                (Some(a), Some(b)) => match (
                    chrono::DateTime::parse_from_rfc3339(a),
                    chrono::DateTime::parse_from_rfc3339(b),
                ) {
                    (Ok(a), Ok(b)) => human_duration((b - a).num_seconds()),
                    _ => String::new(),
                },
                (Some(_), None) => since(&st["startTime"]),
                _ => String::new(),
            };
            vec![
                json!(status),
                json!(format!(
                    "{}/{}",
                    st["succeeded"].as_i64().unwrap_or(0),
                    spec["completions"].as_i64().unwrap_or(1)
                )),
                json!(duration),
                age(),
                json!(cs),
                json!(is),
                json!(selector_string(&spec["selector"])),
            ]
        }
        "cronjobs" => {
            let (cs, is) = containers_images(&spec["jobTemplate"]["spec"]["template"]["spec"]);
            vec![
                json!(s(&spec["schedule"])),
                json!(or_none(s(&spec["timeZone"]))),
                json!(spec["suspend"].as_bool().unwrap_or(false)),
                json!(st["active"].as_array().map_or(0, Vec::len)),
                json!(if st["lastScheduleTime"].is_null() {
                    "<none>".to_string()
                } else {
                    since(&st["lastScheduleTime"])
                }),
                age(),
                json!(cs),
                json!(is),
                json!(selector_string(&spec["jobTemplate"]["spec"]["selector"])),
            ]
        }
        "configmaps" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![json!(n), age()]
        }
        "secrets" => vec![
            json!(s(&o["type"])),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            age(),
        ],
        "events" => {
            let last = if o["lastTimestamp"].is_null() {
                &o["eventTime"]
            } else {
                &o["lastTimestamp"]
            };
            let obj = &o["involvedObject"];
            let source = s(&o["source"]["component"]);
            return vec![
                json!(since(last)),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(format!(
                    "{}/{}",
                    s(&obj["kind"]).to_lowercase(),
                    s(&obj["name"])
                )),
                json!(s(&obj["fieldPath"])),
                json!(if source.is_empty() {
                    s(&o["reportingComponent"])
                } else {
                    source
                }),
                json!(s(&o["message"])),
                json!(since(&o["firstTimestamp"])),
                json!(o["count"].as_i64().unwrap_or(1).to_string()),
                json!(s(&o["metadata"]["name"])),
            ];
        }
        "leases" => vec![json!(s(&spec["holderIdentity"])), age()],
        "serviceaccounts" => vec![json!(o["secrets"].as_array().map_or(0, Vec::len)), age()],
        "persistentvolumeclaims" => {
            let bound = st["phase"] == "Bound";
            let (capacity, modes) = if bound {
                (
                    s(&st["capacity"]["storage"]),
                    access_modes(&st["accessModes"]),
                )
            } else {
                (String::new(), String::new())
            };
            vec![
                json!(s(&st["phase"])),
                json!(s(&spec["volumeName"])),
                json!(capacity),
                json!(modes),
                json!(storage_class(o)),
                json!(unset(s(&spec["volumeAttributesClassName"]))),
                age(),
                json!(unset(s(&spec["volumeMode"]))),
            ]
        }
        "persistentvolumes" => {
            let claim = &spec["claimRef"];
            vec![
                json!(s(&spec["capacity"]["storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(s(&spec["persistentVolumeReclaimPolicy"])),
                json!(s(&st["phase"])),
                json!(if claim.is_null() {
                    String::new()
                } else {
                    format!("{}/{}", s(&claim["namespace"]), s(&claim["name"]))
                }),
                json!(storage_class(o)),
                json!(unset(s(&spec["volumeAttributesClassName"]))),
                json!(s(&st["reason"])),
                age(),
                json!(unset(s(&spec["volumeMode"]))),
            ]
        }
        "resourcequotas" => {
            let (mut requests, mut limits) = (Vec::new(), Vec::new());
            for (k, hard) in spec["hard"].as_object().into_iter().flatten() {
                let used = match &st["used"][k] {
                    Value::Null => "0".to_string(),
                    u => s(u),
                };
                let line = format!("{k}: {used}/{}", s(hard));
                if k.starts_with("limits.") {
                    limits.push(line);
                } else {
                    requests.push(line);
                }
            }
            vec![age(), json!(requests.join(", ")), json!(limits.join(", "))]
        }
        "limitranges" => vec![json!(s(&o["metadata"]["creationTimestamp"]))],
        "podtemplates" => {
            let (cs, is) = containers_images(&o["template"]["spec"]);
            return vec![
                json!(s(&o["metadata"]["name"])),
                json!(cs),
                json!(is),
                json!(map_selector(&o["template"]["metadata"]["labels"])),
            ];
        }
        "controllerrevisions" => {
            let owner = o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["controller"] == json!(true));
            let controller = match owner {
                Some(r) => {
                    let group = s(&r["apiVersion"])
                        .rsplit_once('/')
                        .map(|(g, _)| g.to_string());
                    let kind = s(&r["kind"]).to_lowercase();
                    match group {
                        Some(g) => format!("{kind}.{g}/{}", s(&r["name"])),
                        None => format!("{kind}/{}", s(&r["name"])),
                    }
                }
                None => "<none>".into(),
            };
            vec![json!(controller), int(&o["revision"]), age()]
        }
        "horizontalpodautoscalers" => {
            let target = &spec["scaleTargetRef"];
            vec![
                json!(format!("{}/{}", s(&target["kind"]), s(&target["name"]))),
                json!(hpa_targets(&spec["metrics"], &st["currentMetrics"])),
                json!(match &spec["minReplicas"] {
                    Value::Null => "<unset>".to_string(),
                    v => s(v),
                }),
                json!(s(&spec["maxReplicas"])),
                json!(st["currentReplicas"].as_i64().unwrap_or(0).to_string()),
                age(),
            ]
        }
        "ingresses" => {
            let rules = spec["rules"].as_array().cloned().unwrap_or_default();
            let hosts: Vec<String> = rules
                .iter()
                .map(|r| match s(&r["host"]) {
                    h if h.is_empty() => "*".to_string(),
                    h => h,
                })
                .collect();
            let address: Vec<String> = st["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| match s(&i["ip"]) {
                    ip if ip.is_empty() => s(&i["hostname"]),
                    ip => ip,
                })
                .collect();
            let tls = spec["tls"].as_array().is_some_and(|t| !t.is_empty());
            vec![
                json!(or_none(s(&spec["ingressClassName"]))),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(address.join(",")),
                json!(if tls { "80, 443" } else { "80" }),
                age(),
            ]
        }
        "ingressclasses" => {
            let p = &spec["parameters"];
            vec![
                json!(s(&spec["controller"])),
                json!(if p.is_null() {
                    "<none>".to_string()
                } else {
                    format!("{}/{}", s(&p["kind"]), s(&p["name"]))
                }),
                age(),
            ]
        }
        "networkpolicies" => vec![json!(selector_string(&spec["podSelector"])), age()],
        "storageclasses" => {
            let expand = o["allowVolumeExpansion"].as_bool().unwrap_or(false);
            let mut name = s(&o["metadata"]["name"]);
            let annotations = &o["metadata"]["annotations"];
            if [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|a| annotations[*a] == "true")
            {
                name.push_str(" (default)");
            }
            return vec![
                json!(name),
                json!(s(&o["provisioner"])),
                json!(s(&o["reclaimPolicy"])),
                json!(s(&o["volumeBindingMode"])),
                json!(expand.to_string()),
                age(),
            ];
        }
        "csidrivers" => {
            let tokens: Vec<String> = spec["tokenRequests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| s(&t["audience"]))
                .collect();
            let modes: Vec<String> = spec["volumeLifecycleModes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            let flag = |k: &str| json!(spec[k].as_bool().unwrap_or(false));
            vec![
                flag("attachRequired"),
                flag("podInfoOnMount"),
                flag("storageCapacity"),
                json!(or_none(tokens.join(","))),
                flag("requiresRepublish"),
                json!(modes.join(",")),
                age(),
            ]
        }
        "csinodes" => vec![json!(spec["drivers"].as_array().map_or(0, Vec::len)), age()],
        "volumeattachments" => vec![
            json!(s(&spec["attacher"])),
            json!(s(&spec["source"]["persistentVolumeName"])),
            json!(s(&spec["nodeName"])),
            json!(st["attached"].as_bool().unwrap_or(false)),
            age(),
        ],
        "priorityclasses" => vec![
            int(&o["value"]),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            age(),
            json!(s(&o["preemptionPolicy"])),
        ],
        "runtimeclasses" => vec![json!(s(&o["handler"])), age()],
        "roles" | "clusterroles" => vec![json!(s(&o["metadata"]["creationTimestamp"]))],
        "rolebindings" | "clusterrolebindings" => binding_cells(o, age()),
        _ => vec![age()],
    };
    row.extend(rest);
    row
}

/// `row.object`: the whole object, or (the default) its metadata as a
/// `PartialObjectMetadata`, which is what `-A`, `--show-labels` and `-L` read.
fn row_object(o: &Value, include_object: bool) -> Value {
    if include_object {
        o.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
    }
}

/// A `Table` of `items`.
pub fn table(
    resource: &str,
    items: &[Arc<Value>],
    revision: i64,
    continue_token: Option<&str>,
    include_object: bool,
) -> Value {
    let defs: Vec<Value> = columns(resource)
        .into_iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": c.ty, "format": format, "description": c.name, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(resource, o), "object": row_object(o, include_object)}))
        .collect();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(86400 * 3 + 3600), "3d1h");
        assert_eq!(human_duration(86400 * 400), "400d");
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        for info in api::registry::RESOURCES {
            let o = Arc::new(
                json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}}),
            );
            let t = table(info.resource, &[o], 1, None, false);
            let cols = t["columnDefinitions"].as_array().unwrap().len();
            let cells = t["rows"][0]["cells"].as_array().unwrap().len();
            assert_eq!(cols, cells, "{}", info.resource);
        }
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let c = cells("pods", &pod);
        assert_eq!(c[1], "1/1");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "2");
        assert_eq!(c[5], "10.244.0.5");
        assert_eq!(c[6], "n1");
    }

    #[test]
    fn bindings_show_their_role_and_subjects() {
        let b = json!({"metadata": {"name": "dev-view", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "dev"}, {"kind": "User", "name": "alice"},
                {"kind": "ServiceAccount", "name": "builder", "namespace": "ci"}]});
        let row = cells("rolebindings", &b);
        assert_eq!(row[0], "dev-view");
        assert_eq!(row[1], "ClusterRole/view");
        assert_eq!(
            &row[3..],
            &[json!("alice"), json!("dev"), json!("ci/builder")]
        );
        assert_eq!(columns("rolebindings").len(), row.len());
        let r = cells("clusterroles", &b);
        assert_eq!(r, vec![json!("dev-view"), json!("2020-01-01T00:00:00Z")]);
    }

    #[test]
    fn autoscaler_targets_and_access_modes_print_as_kubectl_does() {
        let metrics = json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}
        ]);
        assert_eq!(
            hpa_targets(&metrics, &Value::Null),
            "cpu: <unknown>/80%, <unknown>/10"
        );
        let current = json!([
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}},
            {"type": "Pods", "pods": {"current": {"averageValue": "7"}}}
        ]);
        assert_eq!(hpa_targets(&metrics, &current), "cpu: 42%/80%, 7/10");
        assert_eq!(hpa_targets(&json!([]), &Value::Null), "<none>");
        assert_eq!(
            access_modes(&json!([
                "ReadWriteOnce",
                "ReadOnlyMany",
                "ReadWriteOnce",
                "ReadWriteOncePod"
            ])),
            "RWO,ROX,RWOP"
        );
    }
}
