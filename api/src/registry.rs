//! The resource registry: every built-in kind Rustkube serves, with the facts discovery,
//! routing, storage and kubectl need (group, version, plural, kind, scope, short names,
//! verbs, subresources). One static table; everything else looks things up in it.

/// The eight verbs of a normal resource, in discovery's order.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind its requests and responses carry, as (group, version, kind).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower case: the path segment and storage key segment.
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` for the core group, `deployments.apps` otherwise (the form Kubernetes uses
    /// in messages such as `deployments.apps "x" not found`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// The collection's REST path: `/api/v1/namespaces/NS/pods`, `/apis/apps/v1/deployments`
    /// (all namespaces when `namespace` is None).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.resource),
            _ => format!("{base}/{}", self.resource),
        }
    }

    /// One object's REST path.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// The storage key prefix of the whole resource: `/registry/<resource>/`.
    pub fn storage_prefix(&self) -> String {
        format!("/registry/{}/", self.resource)
    }

    /// The storage key of one object: `/registry/<resource>/<namespace>/<name>`, or
    /// `/registry/<resource>/<name>` for cluster-scoped resources (DESIGN.md §5).
    pub fn storage_key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{namespace}/{name}", self.resource)
        } else {
            format!("/registry/{}/{name}", self.resource)
        }
    }
}

const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: GET_PATCH_UPDATE,
    }
}

const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: GET_PATCH_UPDATE,
};

#[allow(clippy::too_many_arguments)]
const fn res(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        resource,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names,
        categories,
        verbs: STANDARD_VERBS,
        subresources,
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every resource Rustkube serves.
pub static RESOURCES: &[ResourceInfo] = &[
    res(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        "NamespaceList",
        false,
        &["ns"],
        NONE,
        &[
            status("", "v1", "Namespace"),
            Subresource {
                name: "finalize",
                group: "",
                version: "v1",
                kind: "Namespace",
                verbs: &["update"],
            },
        ],
    ),
    res(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        "PodList",
        true,
        &["po"],
        ALL,
        &[
            status("", "v1", "Pod"),
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: &["create"],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            Subresource {
                name: "exec",
                group: "",
                version: "v1",
                kind: "PodExecOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "portforward",
                group: "",
                version: "v1",
                kind: "PodPortForwardOptions",
                verbs: &["create", "get"],
            },
        ],
    ),
    res(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        "NodeList",
        false,
        &["no"],
        NONE,
        &[status("", "v1", "Node")],
    ),
    res(
        "",
        "v1",
        "services",
        "service",
        "Service",
        "ServiceList",
        true,
        &["svc"],
        ALL,
        &[status("", "v1", "Service")],
    ),
    res(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        "EndpointsList",
        true,
        &["ep"],
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        "ConfigMapList",
        true,
        &["cm"],
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        "SecretList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "events",
        "event",
        "Event",
        "EventList",
        true,
        &["ev"],
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        "ServiceAccountList",
        true,
        &["sa"],
        NONE,
        &[Subresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        }],
    ),
    res(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        "PersistentVolumeClaimList",
        true,
        &["pvc"],
        NONE,
        &[status("", "v1", "PersistentVolumeClaim")],
    ),
    res(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        "PersistentVolumeList",
        false,
        &["pv"],
        NONE,
        &[status("", "v1", "PersistentVolume")],
    ),
    res(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        "ResourceQuotaList",
        true,
        &["quota"],
        NONE,
        &[status("", "v1", "ResourceQuota")],
    ),
    res(
        "",
        "v1",
        "limitranges",
        "limitrange",
        "LimitRange",
        "LimitRangeList",
        true,
        &["limits"],
        NONE,
        &[],
    ),
    res(
        "",
        "v1",
        "podtemplates",
        "podtemplate",
        "PodTemplate",
        "PodTemplateList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        "DeploymentList",
        true,
        &["deploy"],
        ALL,
        &[status("apps", "v1", "Deployment"), SCALE],
    ),
    res(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        "ReplicaSetList",
        true,
        &["rs"],
        ALL,
        &[status("apps", "v1", "ReplicaSet"), SCALE],
    ),
    res(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        "DaemonSetList",
        true,
        &["ds"],
        ALL,
        &[status("apps", "v1", "DaemonSet")],
    ),
    res(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        "StatefulSetList",
        true,
        &["sts"],
        ALL,
        &[status("apps", "v1", "StatefulSet"), SCALE],
    ),
    res(
        "apps",
        "v1",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        "ControllerRevisionList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        "HorizontalPodAutoscalerList",
        true,
        &["hpa"],
        ALL,
        &[status("autoscaling", "v2", "HorizontalPodAutoscaler")],
    ),
    res(
        "batch",
        "v1",
        "jobs",
        "job",
        "Job",
        "JobList",
        true,
        NONE,
        ALL,
        &[status("batch", "v1", "Job")],
    ),
    res(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        "CronJobList",
        true,
        &["cj"],
        ALL,
        &[status("batch", "v1", "CronJob")],
    ),
    res(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        "IngressList",
        true,
        &["ing"],
        NONE,
        &[status("networking.k8s.io", "v1", "Ingress")],
    ),
    res(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        "IngressClassList",
        false,
        NONE,
        NONE,
        &[],
    ),
    res(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        "NetworkPolicyList",
        true,
        &["netpol"],
        NONE,
        &[],
    ),
    res(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        "LeaseList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        "EndpointSliceList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        "PodDisruptionBudgetList",
        true,
        &["pdb"],
        NONE,
        &[status("policy", "v1", "PodDisruptionBudget")],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        "RoleList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        "ClusterRoleList",
        false,
        NONE,
        NONE,
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        "RoleBindingList",
        true,
        NONE,
        NONE,
        &[],
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        false,
        NONE,
        NONE,
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        "StorageClassList",
        false,
        &["sc"],
        NONE,
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "csidriver",
        "CSIDriver",
        "CSIDriverList",
        false,
        NONE,
        NONE,
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "csinodes",
        "csinode",
        "CSINode",
        "CSINodeList",
        false,
        NONE,
        NONE,
        &[],
    ),
    res(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "volumeattachment",
        "VolumeAttachment",
        "VolumeAttachmentList",
        false,
        NONE,
        NONE,
        &[status("storage.k8s.io", "v1", "VolumeAttachment")],
    ),
    res(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "priorityclass",
        "PriorityClass",
        "PriorityClassList",
        false,
        &["pc"],
        NONE,
        &[],
    ),
    res(
        "node.k8s.io",
        "v1",
        "runtimeclasses",
        "runtimeclass",
        "RuntimeClass",
        "RuntimeClassList",
        false,
        NONE,
        NONE,
        &[],
    ),
];

/// By API group, version and plural resource name (the REST path's view).
pub fn by_resource(group: &str, version: &str, resource: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// By API group and kind (an object's view: `apiVersion` + `kind`).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// By an object's `apiVersion` (`v1`, `apps/v1`) and `kind`.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The API groups served, each with its versions, in a stable order (core first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resolves what a user types, as kubectl does: plural, singular, short name or kind
/// (case-insensitive), optionally qualified by `.group` or `.version.group`
/// (`deployments.apps`, `deploy.v1.apps`).
pub fn resolve(word: &str) -> Option<&'static ResourceInfo> {
    let lower = word.to_ascii_lowercase();
    let matches_name = |r: &ResourceInfo, name: &str| {
        r.resource == name
            || r.singular == name
            || r.short_names.contains(&name)
            || r.kind.eq_ignore_ascii_case(name)
    };
    if let Some(r) = RESOURCES.iter().find(|r| matches_name(r, &lower)) {
        return Some(r);
    }
    let (name, qualifier) = lower.split_once('.')?;
    RESOURCES.iter().find(|r| {
        matches_name(r, name)
            && (qualifier == r.group || qualifier == format!("{}.{}", r.version, r.group))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        assert_eq!(RESOURCES.len(), 38);
        for r in RESOURCES {
            assert_eq!(r.list_kind, format!("{}List", r.kind), "{}", r.resource);
            assert!(r.resource.chars().all(|c| c.is_ascii_lowercase()));
            assert_eq!(by_resource(r.group, r.version, r.resource), Some(r));
            assert_eq!(by_kind(r.group, r.kind), Some(r));
            assert_eq!(resolve(&r.qualified_resource()), Some(r));
            for s in r.short_names {
                assert_eq!(resolve(s), Some(r), "{s}");
            }
        }
        // No short name or singular is claimed twice.
        let mut seen = std::collections::HashSet::new();
        for r in RESOURCES {
            for n in r.short_names.iter().chain([&r.singular]) {
                assert!(seen.insert(*n), "{n} claimed twice");
            }
        }
    }

    #[test]
    fn lookups() {
        let d = resolve("deploy").unwrap();
        assert_eq!((d.group, d.kind), ("apps", "Deployment"));
        assert_eq!(resolve("Deployment"), Some(d));
        assert_eq!(resolve("deployments.apps"), Some(d));
        assert_eq!(resolve("deploy.v1.apps"), Some(d));
        assert_eq!(resolve("po").unwrap().kind, "Pod");
        assert_eq!(resolve("pdb").unwrap().group, "policy");
        assert!(resolve("deployments.batch").is_none());
        assert!(resolve("nonsense").is_none());
        assert!(resolve("").is_none());
        assert_eq!(
            by_api_version_kind("apps/v1", "ReplicaSet")
                .unwrap()
                .resource,
            "replicasets"
        );
        assert_eq!(by_api_version_kind("v1", "Node").unwrap().resource, "nodes");
        assert!(by_api_version_kind("apps/v2", "ReplicaSet").is_none());
    }

    #[test]
    fn paths_and_keys() {
        let pods = resolve("pods").unwrap();
        assert_eq!(
            pods.object_path(Some("ns1"), "p"),
            "/api/v1/namespaces/ns1/pods/p"
        );
        assert_eq!(pods.collection_path(None), "/api/v1/pods");
        assert_eq!(pods.storage_key("ns1", "p"), "/registry/pods/ns1/p");
        let nodes = resolve("nodes").unwrap();
        assert_eq!(nodes.object_path(Some("ignored"), "n1"), "/api/v1/nodes/n1");
        assert_eq!(nodes.storage_key("", "n1"), "/registry/nodes/n1");
        let deploy = resolve("deployments").unwrap();
        assert_eq!(
            deploy.collection_path(Some("a")),
            "/apis/apps/v1/namespaces/a/deployments"
        );
        assert_eq!(deploy.subresource("scale").unwrap().kind, "Scale");
        assert_eq!(
            resolve("pods")
                .unwrap()
                .subresource("eviction")
                .unwrap()
                .group,
            "policy"
        );
    }

    #[test]
    fn groups_in_order() {
        let g = groups();
        assert_eq!(g[0], ("", vec!["v1"]));
        assert!(g
            .iter()
            .any(|(name, _)| *name == "rbac.authorization.k8s.io"));
        assert_eq!(g.len(), 12);
    }
}
