//! What ServiceAccount admission (Kubernetes' plugin of that name) does to a new pod: its
//! account defaults to `default`, and unless automounting is off (the pod's
//! `automountServiceAccountToken`, else its account's) every container mounts a projected
//! `kube-api-access-<random>` volume at /var/run/secrets/kubernetes.io/serviceaccount: a
//! token bound to the pod, the cluster's CA (config map `kube-root-ca.crt`) and the
//! namespace. That the account exists is checked by the store (`store::admit`).

use serde_json::{json, Value};

/// Where containers find the API access volume.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";

/// Whether a pod is a node's mirror of a static pod (which runs as no account).
pub fn is_mirror(pod: &Value) -> bool {
    !pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null()
}

/// The account a pod runs as, written into `serviceAccountName` (and its deprecated
/// twin `serviceAccount`, which v1 pods always carry alike).
pub fn account(pod: &mut Value) -> String {
    let name = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(name);
    pod["spec"]["serviceAccount"] = json!(name);
    name
}

/// Mounts the API access volume into every container and init container that has
/// nothing mounted at its path yet; `account_automount` is the account's own
/// `automountServiceAccountToken`. A pod that already has a `kube-api-access-` volume
/// keeps it.
pub fn mount_token(pod: &mut Value, account_automount: Option<bool>) {
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or(account_automount)
        .unwrap_or(true);
    let Some(spec) = pod["spec"].as_object_mut().filter(|_| automount) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let volume = existing
        .clone()
        .unwrap_or_else(|| api::names::generate_name(VOLUME_PREFIX));
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            let has_path = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if has_path {
                continue;
            }
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(ms) = mounts.as_array_mut() {
                ms.push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
                mounted = true;
            }
        }
    }
    if !mounted || existing.is_some() {
        return;
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(vs) = volumes.as_array_mut() {
        vs.push(
            json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    fn mounts(p: &Value, list: &str, i: usize) -> Vec<String> {
        p["spec"][list][i]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{}@{}",
                    m["name"].as_str().unwrap(),
                    m["mountPath"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn every_container_mounts_one_generated_volume() {
        let mut p = pod(json!({"initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}));
        assert_eq!(account(&mut p), "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        mount_token(&mut p, None);
        let volumes = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);
        let name = volumes[0]["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        assert_eq!(
            volumes[0]["projected"]["sources"][1]["configMap"]["name"],
            "kube-root-ca.crt"
        );
        let at = format!("{name}@{TOKEN_MOUNT_PATH}");
        assert_eq!(mounts(&p, "initContainers", 0), vec![at.clone()]);
        assert_eq!(mounts(&p, "containers", 0), vec![at.clone()]);
        assert_eq!(
            mounts(&p, "containers", 1),
            vec!["data@/data".to_string(), at]
        );
    }

    #[test]
    fn automount_off_or_a_mount_at_the_path_adds_nothing() {
        let mut off =
            pod(json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}));
        mount_token(&mut off, Some(true));
        assert!(
            off["spec"]["volumes"].is_null()
                && off["spec"]["containers"][0]["volumeMounts"].is_null()
        );
        // The account's setting counts when the pod has none; the pod's wins.
        let mut by_account = pod(json!({"containers": [{"name": "a"}]}));
        mount_token(&mut by_account, Some(false));
        assert!(by_account["spec"]["volumes"].is_null());
        let mut pod_wins =
            pod(json!({"automountServiceAccountToken": true, "containers": [{"name": "a"}]}));
        mount_token(&mut pod_wins, Some(false));
        assert_eq!(pod_wins["spec"]["volumes"].as_array().unwrap().len(), 1);
        let mut own = pod(json!({"containers": [{"name": "a",
            "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}]}));
        mount_token(&mut own, None);
        assert!(own["spec"]["volumes"].is_null());
        assert_eq!(
            mounts(&own, "containers", 0),
            vec![format!("mine@{TOKEN_MOUNT_PATH}")]
        );
    }

    #[test]
    fn an_existing_api_access_volume_is_reused() {
        let mut p = pod(
            json!({"volumes": [{"name": "kube-api-access-abcde", "emptyDir": {}}],
            "containers": [{"name": "a"}]}),
        );
        mount_token(&mut p, None);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            mounts(&p, "containers", 0),
            vec![format!("kube-api-access-abcde@{TOKEN_MOUNT_PATH}")]
        );
    }

    #[test]
    fn a_given_account_is_kept() {
        let mut p = pod(json!({"serviceAccountName": "builder", "containers": []}));
        assert_eq!(account(&mut p), "builder");
        assert_eq!(p["spec"]["serviceAccount"], "builder");
    }
}
