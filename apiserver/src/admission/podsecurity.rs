//! PodSecurity admission: a namespace labelled `pod-security.kubernetes.io/enforce:
//! baseline` or `restricted` refuses new pods that break that level of the Pod Security
//! Standards, listing every check broken in Kubernetes' words (`allowPrivilegeEscalation
//! != false (container "web" must set securityContext.allowPrivilegeEscalation=false)`);
//! the `warn` label turns the same findings into warnings, and a workload (deployment,
//! job, ...) whose pod template breaks the enforced or warned level is admitted with a
//! warning. A pod update is checked again when Kubernetes would (an image changed, a
//! container added). `privileged` allows everything. A namespace without a label gets the
//! cluster's default for that mode (`Config`, from the PodSecurityConfiguration in
//! `--admission-control-config-file`; privileged unless it says otherwise), and the
//! configuration's exemptions (namespaces, requesting users, pods' runtime classes) are
//! never checked. Every version reads as the latest standard.

use serde_json::Value;
use std::collections::BTreeMap;

const LEVELS: &[&str] = &["privileged", "baseline", "restricted"];
const MODES: &[&str] = &["enforce", "audit", "warn"];

/// Cluster-wide PodSecurity settings: each mode's level (and version) where a namespace
/// has no label for it, and what is exempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Per mode, (level, version); a mode not here is privileged.
    defaults: BTreeMap<String, (String, String)>,
    exempt_usernames: Vec<String>,
    exempt_runtime_classes: Vec<String>,
    exempt_namespaces: Vec<String>,
}

impl Config {
    /// From a `PodSecurityConfiguration` (pod-security.admission.config.k8s.io v1,
    /// v1beta1 or v1alpha1); an error names the field at fault.
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let api_version = v["apiVersion"].as_str().unwrap_or("");
        let known = ["v1", "v1beta1", "v1alpha1"]
            .map(|ver| format!("pod-security.admission.config.k8s.io/{ver}"));
        if v["kind"] != "PodSecurityConfiguration" || !known.iter().any(|k| k == api_version) {
            return Err(format!(
                "expected kind PodSecurityConfiguration of apiVersion pod-security.admission.config.k8s.io/v1, got {} {api_version}",
                v["kind"]
            ));
        }
        let mut config = Config::default();
        let defaults = &v["defaults"];
        for mode in MODES {
            let text = |key: &str, fallback: &'static str| match &defaults[key] {
                Value::Null => Ok(fallback.to_string()),
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("defaults.{key}: {other} is not a string")),
            };
            let level = text(mode, "privileged")?;
            if !LEVELS.contains(&level.as_str()) {
                return Err(format!(
                    "defaults.{mode}: {level:?} must be one of privileged, baseline, restricted"
                ));
            }
            let version = text(&format!("{mode}-version"), "latest")?;
            if !valid_version(&version) {
                return Err(format!(
                    "defaults.{mode}-version: {version:?} must be \"latest\" or \"v1.x\""
                ));
            }
            config.defaults.insert(mode.to_string(), (level, version));
        }
        let exemptions = &v["exemptions"];
        let list = |key: &str| -> Result<Vec<String>, String> {
            match &exemptions[key] {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .ok_or_else(|| format!("exemptions.{key}: {i} is not a name"))
                    })
                    .collect(),
                other => Err(format!("exemptions.{key}: {other} is not a list")),
            }
        };
        config.exempt_usernames = list("usernames")?;
        config.exempt_runtime_classes = list("runtimeClasses")?;
        config.exempt_namespaces = list("namespaces")?;
        Ok(config)
    }

    /// Whether a request is exempt: its namespace, its user, or the pod's runtime class.
    pub fn exempt(&self, namespace: &str, user: Option<&str>, pod: &Value) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
            || user.is_some_and(|u| self.exempt_usernames.iter().any(|n| n == u))
            || pod["spec"]["runtimeClassName"]
                .as_str()
                .is_some_and(|rc| self.exempt_runtime_classes.iter().any(|n| n == rc))
    }
}

/// The level that applies in a namespace for `mode` (`enforce`, `warn`) and its version:
/// the namespace's labels, else the cluster's defaults; None when it restricts nothing.
pub fn level(namespace: &Value, mode: &str, config: &Config) -> Option<(String, String)> {
    let labels = &namespace["metadata"]["labels"];
    let (default_level, default_version) = config
        .defaults
        .get(mode)
        .map_or(("privileged", "latest"), |(l, v)| (l.as_str(), v.as_str()));
    let level = labels[format!("pod-security.kubernetes.io/{mode}")]
        .as_str()
        .unwrap_or(default_level);
    if !matches!(level, "baseline" | "restricted") {
        return None;
    }
    let version = labels[format!("pod-security.kubernetes.io/{mode}-version")]
        .as_str()
        .unwrap_or(default_version);
    Some((level.to_string(), version.to_string()))
}

/// `latest` or `v1.<minor>`.
fn valid_version(text: &str) -> bool {
    text == "latest"
        || text
            .strip_prefix("v1.")
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
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
            "enforce-version" | "warn-version" | "audit-version" if !valid_version(text) => {
                out.push((k.clone(), v.clone(), "must be \"latest\" or \"v1.x\""))
            }
            _ => {}
        }
    }
    out
}

/// Whether a pod update is checked again, as Kubernetes decides: containers added or
/// removed, an image changed (or an ephemeral container added or changed), or a
/// container's seccomp annotation changed. Other updates keep the pod's standing.
pub fn significant_update(old: &Value, new: &Value) -> bool {
    let seccomp = |pod: &Value, c: &Value| {
        let name = c["name"].as_str().unwrap_or("");
        pod["metadata"]["annotations"]
            [format!("container.seccomp.security.alpha.kubernetes.io/{name}")]
        .clone()
    };
    let changed =
        |a: &Value, b: &Value| a["image"] != b["image"] || seccomp(new, a) != seccomp(old, b);
    for list in ["containers", "initContainers"] {
        let (now, before) = (&new["spec"][list], &old["spec"][list]);
        let (now, before) = (now.as_array(), before.as_array());
        if now.map_or(0, Vec::len) != before.map_or(0, Vec::len) {
            return true;
        }
        let pairs = now.into_iter().flatten().zip(before.into_iter().flatten());
        if pairs.into_iter().any(|(a, b)| changed(a, b)) {
            return true;
        }
    }
    let before = old["spec"]["ephemeralContainers"].as_array();
    new["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            match before
                .into_iter()
                .flatten()
                .find(|o| o["name"] == c["name"])
            {
                Some(o) => changed(c, o),
                None => true,
            }
        })
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

/// The warnings a new object of `kind` earns in `namespace` from `user`: a pod for the
/// `warn` level, a workload's template for the stricter of `enforce` and `warn`
/// (workloads are never refused: their pods are).
pub fn warnings(
    namespace: &Value,
    kind: &str,
    obj: &Value,
    config: &Config,
    user: Option<&str>,
) -> Vec<String> {
    let Some(pod) = pod_of(kind, obj) else {
        return Vec::new();
    };
    let ns = namespace["metadata"]["name"].as_str().unwrap_or("");
    if config.exempt(ns, user, pod) {
        return Vec::new();
    }
    let mut levels = vec![level(namespace, "warn", config)];
    if kind != "Pod" {
        levels.push(level(namespace, "enforce", config));
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
                "enforce",
                &Config::default()
            ),
            Some(("restricted".into(), "latest".into()))
        );
        assert_eq!(
            level(
                &labels(json!({"pod-security.kubernetes.io/enforce": "privileged"})),
                "enforce",
                &Config::default()
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
            warnings(&ns, "Deployment", &deploy, &Config::default(), None),
            vec![
                r#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
            ]
        );
        assert!(warnings(
            &ns,
            "Pod",
            &deploy["spec"]["template"],
            &Config::default(),
            None
        )
        .is_empty());
    }

    fn config(v: Value) -> Result<Config, String> {
        let mut doc = json!({"apiVersion": "pod-security.admission.config.k8s.io/v1",
            "kind": "PodSecurityConfiguration"});
        doc.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        Config::from_value(&doc)
    }

    #[test]
    fn cluster_defaults_apply_where_a_namespace_has_no_label() {
        let c = config(
            json!({"defaults": {"enforce": "baseline", "warn": "restricted",
            "warn-version": "v1.33"}}),
        )
        .unwrap();
        let ns = |l: Value| json!({"metadata": {"name": "n", "labels": l}});
        let plain = ns(json!({}));
        assert_eq!(
            level(&plain, "enforce", &c),
            Some(("baseline".into(), "latest".into()))
        );
        assert_eq!(
            level(&plain, "warn", &c),
            Some(("restricted".into(), "v1.33".into()))
        );
        // A label wins, and its level keeps the default's version.
        let open = ns(json!({"pod-security.kubernetes.io/enforce": "privileged"}));
        assert_eq!(level(&open, "enforce", &c), None);
        let strict = ns(json!({"pod-security.kubernetes.io/warn": "baseline"}));
        assert_eq!(
            level(&strict, "warn", &c),
            Some(("baseline".into(), "v1.33".into()))
        );
        assert_eq!(level(&plain, "audit", &c), None);
    }

    #[test]
    fn exemptions_and_bad_configurations() {
        let c = config(json!({"exemptions": {"usernames": ["admin"],
            "runtimeClasses": ["kata"], "namespaces": ["kube-system"]}}))
        .unwrap();
        let pod = json!({"spec": {"containers": []}});
        let kata = json!({"spec": {"runtimeClassName": "kata", "containers": []}});
        assert!(c.exempt("kube-system", None, &pod));
        assert!(c.exempt("dev", Some("admin"), &pod));
        assert!(c.exempt("dev", Some("someone"), &kata));
        assert!(!c.exempt("dev", Some("someone"), &pod));
        assert_eq!(
            config(json!({"defaults": {"enforce": "strict"}})).unwrap_err(),
            r#"defaults.enforce: "strict" must be one of privileged, baseline, restricted"#
        );
        assert_eq!(
            config(json!({"defaults": {"audit-version": "1.29"}})).unwrap_err(),
            r#"defaults.audit-version: "1.29" must be "latest" or "v1.x""#
        );
        assert!(config(json!({"exemptions": {"namespaces": "kube-system"}}))
            .unwrap_err()
            .starts_with("exemptions.namespaces:"));
        let wrong = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert!(Config::from_value(&wrong).is_err());
    }

    #[test]
    fn image_changes_and_new_containers_are_significant_updates() {
        let pod = |image: &str, extra: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": image}],
                "ephemeralContainers": extra}})
        };
        let old = pod("a:1", json!(null));
        assert!(!significant_update(&old, &old.clone()));
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(!significant_update(&old, &labelled));
        assert!(significant_update(&old, &pod("a:2", json!(null))));
        let debug = pod("a:1", json!([{"name": "debugger", "image": "busybox"}]));
        assert!(significant_update(&old, &debug));
        assert!(!significant_update(&debug, &debug.clone()));
        let mut seccomp = old.clone();
        seccomp["metadata"]["annotations"] =
            json!({"container.seccomp.security.alpha.kubernetes.io/c": "unconfined"});
        assert!(significant_update(&old, &seccomp));
    }
}
