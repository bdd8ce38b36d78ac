//! PodSecurity admission: a namespace labelled `pod-security.kubernetes.io/enforce:
//! baseline` or `restricted` refuses new pods that break that level of the Pod Security
//! Standards, listing every check broken in Kubernetes' words (`allowPrivilegeEscalation
//! != false (container "web" must set securityContext.allowPrivilegeEscalation=false)`);
//! the `warn` label turns the same findings into warnings, and a workload (deployment,
//! job, ...) whose pod template breaks the enforced or warned level is admitted with a
//! warning. `privileged` (and no label) allows everything. Every version label reads as
//! the latest standard.

use serde_json::Value;

const LEVELS: &[&str] = &["privileged", "baseline", "restricted"];

/// The level a namespace sets for `mode` (`enforce`, `warn`) and its version label, if
/// it restricts anything.
pub fn level(namespace: &Value, mode: &str) -> Option<(String, String)> {
    let labels = &namespace["metadata"]["labels"];
    let level = labels[format!("pod-security.kubernetes.io/{mode}")].as_str()?;
    if !matches!(level, "baseline" | "restricted") {
        return None;
    }
    let version = labels[format!("pod-security.kubernetes.io/{mode}-version")]
        .as_str()
        .unwrap_or("latest");
    Some((level.to_string(), version.to_string()))
}

/// What is wrong with a namespace's pod-security labels, as (label, value, allowed).
pub fn bad_labels(namespace: &Value) -> Vec<(String, Value, &'static str)> {
    let mut out = Vec::new();
    let labels = namespace["metadata"]["labels"].as_object();
    for (k, v) in labels.into_iter().flatten() {
        let Some(mode) = k.strip_prefix("pod-security.kubernetes.io/") else {
            continue;
        };
        let text = v.as_str().unwrap_or("");
        match mode {
            "enforce" | "warn" | "audit" if !LEVELS.contains(&text) => out.push((
                k.clone(),
                v.clone(),
                "must be one of privileged, baseline, restricted",
            )),
            "enforce-version" | "warn-version" | "audit-version"
                if text != "latest"
                    && !text.strip_prefix("v1.").is_some_and(|m| {
                        !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())
                    }) =>
            {
                out.push((k.clone(), v.clone(), "must be \"latest\" or \"v1.x\""))
            }
            _ => {}
        }
    }
    out
}

/// The pod template of a workload kind (the object itself for a pod).
pub fn pod_of<'a>(kind: &str, obj: &'a Value) -> Option<&'a Value> {
    match kind {
        "Pod" => Some(obj),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some(&obj["spec"]["template"]),
        "PodTemplate" => Some(&obj["template"]),
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
    .filter(|p| p.is_object())
}

/// The warnings a new object of `kind` earns in `namespace`: a pod for the `warn` level,
/// a workload's template for the stricter of `enforce` and `warn` (workloads are never
/// refused: their pods are).
pub fn warnings(namespace: &Value, kind: &str, obj: &Value) -> Vec<String> {
    let Some(pod) = pod_of(kind, obj) else {
        return Vec::new();
    };
    let mut levels = vec![level(namespace, "warn")];
    if kind != "Pod" {
        levels.push(level(namespace, "enforce"));
    }
    let Some((level, version)) = levels
        .into_iter()
        .flatten()
        .max_by_key(|(l, _)| LEVELS.iter().position(|x| x == l))
    else {
        return Vec::new();
    };
    let broken = violations(&level, pod);
    if broken.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "would violate PodSecurity \"{level}:{version}\": {}",
        broken.join(", ")
    )]
}

/// `container "a"` or `containers "a", "b"`.
fn containers(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.len() {
        1 => format!("container {}", quoted[0]),
        _ => format!("containers {}", quoted.join(", ")),
    }
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The checks of `level` (`baseline` or `restricted`) the pod breaks, in Kubernetes'
/// order and words; empty when it complies.
pub fn violations(level: &str, pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let psc = &spec["securityContext"];
    let all: Vec<(&str, &Value)> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .map(|c| (c["name"].as_str().unwrap_or(""), c))
        .collect();
    let which = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        all.iter()
            .filter(|(_, c)| f(c))
            .map(|(n, _)| n.to_string())
            .collect()
    };
    let mut out = Vec::new();

    // Baseline.
    let hosts: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !hosts.is_empty() {
        out.push(format!("host namespaces ({})", hosts.join(", ")));
    }
    let privileged = which(&|c| c["securityContext"]["privileged"] == true);
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            containers(&privileged)
        ));
    }
    let (adding, added) = added_caps(&all, &|cap| BASELINE_CAPS.contains(&cap));
    if !adding.is_empty() {
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            containers(&adding),
            quoted(&added)
        ));
    }
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| v["name"].as_str().unwrap_or("").to_string())
        .collect();
    if !host_paths.is_empty() {
        let word = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!("hostPath volumes ({word} {})", quoted(&host_paths)));
    }
    let (mut host_port_users, mut ports) = (Vec::new(), Vec::new());
    for (name, c) in &all {
        let used: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64().filter(|h| *h != 0))
            .map(|h| h.to_string())
            .collect();
        if !used.is_empty() {
            host_port_users.push(name.to_string());
            ports.extend(used);
        }
    }
    if !host_port_users.is_empty() {
        let word = if ports.len() == 1 {
            "hostPort"
        } else {
            "hostPorts"
        };
        out.push(format!(
            "hostPort ({} {} {})",
            containers(&host_port_users),
            if host_port_users.len() == 1 {
                "uses"
            } else {
                "use"
            },
            format_args!("{word} {}", ports.join(", "))
        ));
    }
    let proc_mount = which(&|c| {
        c["securityContext"]["procMount"]
            .as_str()
            .is_some_and(|m| m != "Default")
    });
    if !proc_mount.is_empty() {
        out.push(format!(
            "procMount ({} must not set securityContext.procMount to \"Unmasked\")",
            containers(&proc_mount)
        ));
    }
    let unconfined = |sc: &Value| sc["seccompProfile"]["type"] == "Unconfined";
    let unconfined_containers = which(&|c| unconfined(&c["securityContext"]));
    if unconfined(psc) || !unconfined_containers.is_empty() {
        let who = if unconfined(psc) {
            "pod".to_string()
        } else {
            containers(&unconfined_containers)
        };
        out.push(format!(
            "seccompProfile ({who} must not set securityContext.seccompProfile.type to \"Unconfined\")"
        ));
    }
    let sysctls: Vec<String> = psc["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(str::to_string)
        .collect();
    if !sysctls.is_empty() {
        out.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    if level != "restricted" {
        return out;
    }

    // Restricted.
    let restricted: Vec<String> = volumes
        .iter()
        .filter(|v| {
            v.as_object().is_some_and(|o| {
                o.keys()
                    .filter(|k| k.as_str() != "name")
                    .any(|k| !RESTRICTED_VOLUMES.contains(&k.as_str()))
            })
        })
        .map(|v| v["name"].as_str().unwrap_or("").to_string())
        .collect();
    if !restricted.is_empty() {
        let types: Vec<String> = volumes
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys())
            .filter(|k| k.as_str() != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()))
            .cloned()
            .collect();
        let word = if restricted.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!(
            "restricted volume types ({word} {} {} restricted volume type {})",
            quoted(&restricted),
            if restricted.len() == 1 { "uses" } else { "use" },
            quoted(&types)
        ));
    }
    let escalating = which(&|c| c["securityContext"]["allowPrivilegeEscalation"] != false);
    if !escalating.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            containers(&escalating)
        ));
    }
    let drop_all = |c: &Value| {
        c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    };
    let not_dropping = which(&|c| !drop_all(c));
    let (adding_more, beyond_bind) = added_caps(&all, &|cap| cap == "NET_BIND_SERVICE");
    if !not_dropping.is_empty() || !adding_more.is_empty() {
        let mut parts = Vec::new();
        if !not_dropping.is_empty() {
            parts.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                containers(&not_dropping)
            ));
        }
        if !adding_more.is_empty() {
            parts.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers(&adding_more),
                quoted(&beyond_bind)
            ));
        }
        out.push(format!("unrestricted capabilities ({})", parts.join("; ")));
    }
    let pod_non_root = psc["runAsNonRoot"] == true;
    let not_non_root = which(&|c| {
        let v = &c["securityContext"]["runAsNonRoot"];
        v == false || (v.is_null() && !pod_non_root)
    });
    if psc["runAsNonRoot"] == false || !not_non_root.is_empty() {
        let who = if not_non_root.len() == all.len() && !pod_non_root {
            format!("pod or {}", containers(&not_non_root))
        } else {
            containers(&not_non_root)
        };
        out.push(format!(
            "runAsNonRoot != true ({who} must set securityContext.runAsNonRoot=true)"
        ));
    }
    let root_users = which(&|c| c["securityContext"]["runAsUser"] == 0);
    if psc["runAsUser"] == 0 || !root_users.is_empty() {
        let who = if psc["runAsUser"] == 0 {
            "pod".to_string()
        } else {
            containers(&root_users)
        };
        out.push(format!("runAsUser=0 ({who} must not set runAsUser=0)"));
    }
    let confined = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let pod_confined = confined(psc);
    let unconfined_restricted = which(&|c| {
        let t = &c["securityContext"]["seccompProfile"]["type"];
        if t.is_null() {
            !pod_confined
        } else {
            !confined(&c["securityContext"])
        }
    });
    if !unconfined_restricted.is_empty() {
        let who = if unconfined_restricted.len() == all.len() && !pod_confined {
            format!("pod or {}", containers(&unconfined_restricted))
        } else {
            containers(&unconfined_restricted)
        };
        out.push(format!(
            "seccompProfile ({who} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        ));
    }
    out
}

/// The containers adding capabilities `allowed` refuses, and those capabilities (each
/// once, in order).
fn added_caps(
    all: &[(&str, &Value)],
    allowed: &dyn Fn(&str) -> bool,
) -> (Vec<String>, Vec<String>) {
    let (mut who, mut caps) = (Vec::new(), Vec::<String>::new());
    for (name, c) in all {
        let added = c["securityContext"]["capabilities"]["add"].as_array();
        let refused: Vec<&str> = added
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| !allowed(cap))
            .collect();
        if !refused.is_empty() {
            who.push(name.to_string());
        }
        for cap in refused {
            if !caps.iter().any(|c| c == cap) {
                caps.push(cap.to_string());
            }
        }
    }
    (who, caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restricted_lists_every_check_a_plain_pod_breaks() {
        let pod = json!({"spec": {"containers": [{"name": "web", "image": "nginx"}]}});
        assert!(violations("baseline", &pod).is_empty());
        assert_eq!(
            violations("restricted", &pod),
            vec![
                r#"allowPrivilegeEscalation != false (container "web" must set securityContext.allowPrivilegeEscalation=false)"#,
                r#"unrestricted capabilities (container "web" must set securityContext.capabilities.drop=["ALL"])"#,
                r#"runAsNonRoot != true (pod or container "web" must set securityContext.runAsNonRoot=true)"#,
                r#"seccompProfile (pod or container "web" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
            ]
        );
        let hardened = json!({"spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "web", "image": "nginx", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}});
        assert!(violations("restricted", &hardened).is_empty());
    }

    #[test]
    fn baseline_refuses_host_access_and_privilege() {
        let pod = json!({"spec": {"hostNetwork": true, "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [
                {"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}},
                {"name": "b", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
        assert_eq!(
            violations("baseline", &pod),
            vec![
                "host namespaces (hostNetwork=true)",
                r#"privileged (container "a" must not set securityContext.privileged=true)"#,
                r#"non-default capabilities (container "a" must not include "NET_ADMIN" in securityContext.capabilities.add)"#,
                r#"hostPath volumes (volume "root")"#,
                r#"hostPort (container "b" uses hostPort 8080)"#,
            ]
        );
        let labels = |l: Value| json!({"metadata": {"labels": l}});
        assert_eq!(
            level(
                &labels(json!({"pod-security.kubernetes.io/enforce": "restricted"})),
                "enforce"
            ),
            Some(("restricted".into(), "latest".into()))
        );
        assert_eq!(
            level(
                &labels(json!({"pod-security.kubernetes.io/enforce": "privileged"})),
                "enforce"
            ),
            None
        );
        let bad = labels(json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn-version": "v1.29", "pod-security.kubernetes.io/audit-version": "1.29"}));
        let found: Vec<String> = bad_labels(&bad).into_iter().map(|b| b.0).collect();
        assert_eq!(
            found,
            vec![
                "pod-security.kubernetes.io/audit-version",
                "pod-security.kubernetes.io/enforce"
            ]
        );
        // A deployment in a namespace enforcing baseline: admitted, with a warning.
        let ns = labels(json!({"pod-security.kubernetes.io/enforce": "baseline"}));
        let deploy = json!({"spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c"}]}}}});
        assert_eq!(
            warnings(&ns, "Deployment", &deploy),
            vec![
                r#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
            ]
        );
        assert!(warnings(&ns, "Pod", &deploy["spec"]["template"]).is_empty());
    }
}
