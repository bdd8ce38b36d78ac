//! The scheduler's view of the cluster: every node with the pods on it — bound pods from
//! the informer, and pods it has assumed onto a node while their binding is in flight, so
//! the next pod is placed knowing about them.

use crate::framework::{pod_key, NodeInfo, PodInfo, Snapshot};
use k8s_openapi::api::core::v1::{Node, Pod};
use std::collections::HashMap;
use std::sync::Arc;

struct PodState {
    node: String,
    info: Arc<PodInfo>,
    assumed: bool,
}

#[derive(Default)]
pub struct Cache {
    nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    pods: HashMap<String, PodState>,
    /// Over the pods attached to known nodes.
    affinity_pods: usize,
    required_anti_pods: usize,
    /// Pending pods that preemption nominated to a node (`status.nominatedNodeName`):
    /// key -> (node, pod).
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
}

impl Cache {
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    /// What a scheduling cycle looks at.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot::with_counts(&self.nodes, self.affinity_pods, self.required_anti_pods)
    }

    fn count(&mut self, p: &PodInfo, sign: isize) {
        let step = |total: &mut usize, yes: bool| {
            if yes {
                *total = total.saturating_add_signed(sign);
            }
        };
        step(&mut self.affinity_pods, p.has_affinity());
        step(
            &mut self.required_anti_pods,
            !p.required_anti_affinity.is_empty(),
        );
    }

    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(i) = self.index.get(&name) {
            Arc::make_mut(&mut self.nodes[*i]).set_node(node);
            return;
        }
        let mut info = NodeInfo::new(node);
        for p in self.pods.values().filter(|p| p.node == name) {
            info.add_pod(p.info.clone());
        }
        self.affinity_pods += info.affinity_pods;
        self.required_anti_pods += info.required_anti_pods;
        self.index.insert(name, self.nodes.len());
        self.nodes.push(Arc::new(info));
    }

    /// Forgets a node; its pods stay known in case it comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }

    fn attach(&mut self, key: &str) {
        let Some(p) = self.pods.get(key) else { return };
        let Some(i) = self.index.get(&p.node).copied() else {
            return;
        };
        let info = p.info.clone();
        Arc::make_mut(&mut self.nodes[i]).add_pod(info.clone());
        self.count(&info, 1);
    }

    fn detach(&mut self, key: &str) -> Option<PodState> {
        let p = self.pods.remove(key)?;
        if let Some(i) = self.index.get(&p.node).copied() {
            if Arc::make_mut(&mut self.nodes[i]).remove_pod(key).is_some() {
                self.count(&p.info, -1);
            }
        }
        Some(p)
    }

    /// A bound pod as the informer reports it (confirms an assumption).
    pub fn set_bound_pod(&mut self, pod: Arc<Pod>) {
        let info = Arc::new(PodInfo::new(pod));
        let node = info
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let key = info.key.clone();
        self.detach(&key);
        self.pods.insert(
            key.clone(),
            PodState {
                node,
                info,
                assumed: false,
            },
        );
        self.attach(&key);
    }

    /// A pod that is gone or finished (it no longer uses the node).
    pub fn remove_pod(&mut self, key: &str) {
        self.detach(key);
    }

    /// Places `info` on `node` before its binding is confirmed.
    pub fn assume(&mut self, info: Arc<PodInfo>, node: &str) {
        let key = info.key.clone();
        self.detach(&key);
        self.pods.insert(
            key.clone(),
            PodState {
                node: node.to_string(),
                info,
                assumed: true,
            },
        );
        self.attach(&key);
    }

    /// Undoes an assumption whose binding failed (a confirmed pod stays).
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.detach(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Records (or forgets) a pending pod's nomination as the informer reports it.
    pub fn set_nominated(&mut self, pod: &Arc<Pod>) {
        let node = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty() && pod.metadata.deletion_timestamp.is_none());
        match node {
            Some(n) => {
                let info = PodInfo::new(pod.clone());
                self.nominated.insert(info.key.clone(), (n, Arc::new(info)));
            }
            // Most pods hold none: no PodInfo is built for them.
            None if !self.nominated.is_empty() => {
                self.nominated.remove(&pod_key(pod));
            }
            None => {}
        }
    }

    /// A pod bound or gone holds no nomination.
    pub fn clear_nominated(&mut self, key: &str) {
        self.nominated.remove(key);
    }

    /// The nodes as `pod` must see them, as Kubernetes' filters do: the pods nominated to
    /// a node that go before it (priority at least its own; itself aside) counted as if
    /// they ran there, so the room a preemption made is kept for its preemptor. None when
    /// there are none (the cache's own nodes serve).
    pub fn nodes_for(&self, pod: &PodInfo) -> Option<Vec<Arc<NodeInfo>>> {
        let mut ahead = self
            .nominated
            .iter()
            .filter(|(k, (_, p))| **k != pod.key && p.priority >= pod.priority)
            .peekable();
        ahead.peek()?;
        let mut nodes = self.nodes.clone();
        for (_, (node, p)) in ahead {
            if let Some(&i) = self.index.get(node) {
                Arc::make_mut(&mut nodes[i]).add_pod(p.clone());
            }
        }
        Some(nodes)
    }

    /// A snapshot of `nodes` (a view from `nodes_for`) with the cache's counts.
    pub fn snapshot_of<'a>(&self, nodes: &'a [Arc<NodeInfo>]) -> Snapshot<'a> {
        Snapshot::with_counts(nodes, self.affinity_pods, self.required_anti_pods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})).unwrap())
    }

    fn pod(name: &str, node: &str) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}})).unwrap())
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut c = Cache::default();
        c.upsert_node(node("n1"));
        c.upsert_node(node("n2"));
        c.assume(Arc::new(PodInfo::new(pod("a", ""))), "n1");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert!(c.is_assumed("d/a"));
        c.set_bound_pod(pod("a", "n1"));
        assert!(!c.is_assumed("d/a"));
        c.forget("d/a"); // confirmed: stays
        assert_eq!(c.node("n1").unwrap().pods.len(), 1);
        c.assume(Arc::new(PodInfo::new(pod("b", ""))), "n2");
        c.forget("d/b");
        assert_eq!(c.node("n2").unwrap().requested.milli_cpu, 0);
        // Pods known before their node arrives are attached to it.
        c.set_bound_pod(pod("x", "n3"));
        c.upsert_node(node("n3"));
        assert_eq!(c.node("n3").unwrap().pods.len(), 1);
        c.remove_node("n1");
        assert!(c.node("n1").is_none());
        assert_eq!(c.node("n3").unwrap().name, "n3");
        c.remove_pod("d/x");
        assert!(c.node("n3").unwrap().pods.is_empty());
    }

    #[test]
    fn room_made_by_preemption_is_kept_for_the_nominated_pod() {
        let pending = |name: &str, cpu: &str, priority: i32, nominated: &str| -> Arc<Pod> {
            Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
                "status": {"nominatedNodeName": nominated}})).unwrap())
        };
        let mut c = Cache::default();
        c.upsert_node(node("n1"));
        let vip = pending("vip", "3", 100, "n1");
        c.set_nominated(&vip);
        let profile = crate::profile::Profile::default();
        let fits = |c: &Cache, p: &Arc<Pod>| {
            let info = PodInfo::new(p.clone());
            let view = c.nodes_for(&info);
            let snapshot = match &view {
                Some(nodes) => c.snapshot_of(nodes),
                None => c.snapshot(),
            };
            profile.schedule(&info, &snapshot, 0).is_ok()
        };
        // A less important pod may not take the room; a more important one may, and so
        // may the nominated pod itself.
        assert!(!fits(&c, &pending("low", "2", 10, "")));
        assert!(fits(&c, &pending("high", "2", 200, "")));
        assert!(fits(&c, &vip));
        // Bound or gone, the nomination no longer holds room.
        c.clear_nominated("d/vip");
        assert!(fits(&c, &pending("low", "2", 10, "")));
        // A nomination cleared by the informer (empty name) is forgotten too.
        c.set_nominated(&vip);
        c.set_nominated(&pending("vip", "3", 100, ""));
        assert!(c
            .nodes_for(&PodInfo::new(pending("low", "2", 10, "")))
            .is_none());
    }
}
