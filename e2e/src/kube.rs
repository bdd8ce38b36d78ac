//! A blocking test client over the `client` crate: namespaces, fake nodes (created with
//! a kubelet-like status), pods, and waits for what the scheduler and controllers do.

use crate::apiserver::ControlPlane;
use crate::wait::wait_for;
use client::{Api, Client, DeleteParams, ListParams};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::{json, Value};
use std::time::Duration;

pub struct TestClient {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
}

impl TestClient {
    pub fn new(cp: &ControlPlane) -> TestClient {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async {
            Client::from_kubeconfig_file(&cp.kubeconfig, "scheduler-test").unwrap()
        });
        TestClient { rt, client }
    }

    pub fn namespace(&self, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        self.rt
            .block_on(Api::<Namespace>::all(self.client.clone()).create(&ns))
            .unwrap();
    }

    /// A PriorityClass (pods name it in `priorityClassName`; admission sets their
    /// priority and preemption policy from it).
    pub fn priority_class(&self, name: &str, value: i32, preemption_policy: &str) {
        let pc: PriorityClass = serde_json::from_value(json!({"metadata": {"name": name},
            "value": value, "preemptionPolicy": preemption_policy}))
        .unwrap();
        self.rt
            .block_on(Api::<PriorityClass>::all(self.client.clone()).create(&pc))
            .unwrap();
    }

    /// A fake node: created, then its status (allocatable, Ready) written like a kubelet.
    pub fn node(&self, name: &str, labels: Value, spec: Value, cpu: &str) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut labels = labels;
        labels["kubernetes.io/hostname"] = json!(name);
        let n: Node = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
        )
        .unwrap();
        self.rt.block_on(api.create(&n)).unwrap();
        // A patch, not a PUT: controllers (node-ipam) may write the node meanwhile.
        let status = json!({"status": {
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "20"},
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "20"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }});
        self.rt
            .block_on(api.patch_status(name, &client::Patch::Merge(status)))
            .unwrap();
    }

    pub fn pod(&self, ns: &str, name: &str, spec: Value, labels: Value) {
        let mut spec = spec;
        if spec["containers"].is_null() {
            spec["containers"] = json!([{"name": "c", "image": "busybox:1.36"}]);
        }
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
        )
        .unwrap();
        self.rt
            .block_on(Api::<Pod>::namespaced(self.client.clone(), ns).create(&p))
            .unwrap();
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<Pod> {
        self.rt
            .block_on(Api::<Pod>::namespaced(self.client.clone(), ns).get_opt(name))
            .unwrap()
    }

    pub fn node_of(&self, ns: &str, name: &str) -> Option<String> {
        self.get(ns, name)?.spec?.node_name
    }

    /// Waits until the pod is bound; returns its node.
    pub fn wait_bound(&self, ns: &str, name: &str) -> String {
        wait_for(
            &format!("{ns}/{name} to be bound"),
            Duration::from_secs(60),
            Duration::from_millis(50),
            || Ok(self.node_of(ns, name)),
        )
        .unwrap()
    }

    /// Waits until the scheduler has explained why the pod is pending; returns the message.
    pub fn wait_unschedulable(&self, ns: &str, name: &str) -> String {
        wait_for(
            &format!("{ns}/{name} to be reported unschedulable"),
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                let pod = self.get(ns, name).unwrap();
                assert!(
                    pod.spec.as_ref().unwrap().node_name.is_none(),
                    "{name} was bound"
                );
                let cond = pod
                    .status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False");
                Ok(cond.map(|c| {
                    assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
                    c.message.unwrap_or_default()
                }))
            },
        )
        .unwrap()
    }

    pub fn delete(&self, ns: &str, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            ))
            .unwrap();
    }

    /// What the kubelet would do for pods being deleted: finish them.
    pub fn finish_terminating(&self, ns: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for p in self
            .rt
            .block_on(api.list(&ListParams::default()))
            .unwrap()
            .items
        {
            if p.metadata.deletion_timestamp.is_some() {
                let name = p.metadata.name.unwrap();
                let _ = self.rt.block_on(api.delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                ));
            }
        }
    }

    /// Pods of a namespace matching a label selector ("" for all).
    pub fn pods(&self, ns: &str, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .unwrap()
            .items
    }

    /// Waits (up to a minute) until `check` returns Some.
    pub fn wait<T>(&self, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        wait_for(
            what,
            Duration::from_secs(60),
            Duration::from_millis(50),
            || Ok(check(self)),
        )
        .unwrap()
    }
}
