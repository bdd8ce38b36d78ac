//! The informer cache: objects by key, with indexes (by namespace always, plus any the
//! caller adds: `spec.nodeName`, owner, …) kept up to date on every change.

use crate::typed::{key_of, Object};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Computes the index values of an object (none, one or several).
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// The index every store has: objects by `metadata.namespace`.
pub const NAMESPACE_INDEX: &str = "namespace";

/// The index name for pods by `spec.nodeName` (see [`pod_node_index`]).
pub const NODE_NAME_INDEX: &str = "spec.nodeName";

/// Pods by the node they are bound to: `informer.add_index(NODE_NAME_INDEX, pod_node_index())`.
pub fn pod_node_index() -> IndexFn<k8s_openapi::api::core::v1::Pod> {
    Arc::new(|p: &k8s_openapi::api::core::v1::Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .into_iter()
            .collect()
    })
}

/// A shared, indexed cache of objects; cloning shares it.
pub struct Store<K> {
    inner: Arc<RwLock<Inner<K>>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    objects: HashMap<String, Arc<K>>,
    indexers: HashMap<String, IndexFn<K>>,
    /// index name → value → keys
    indexes: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl<K> Inner<K> {
    fn unindex(&mut self, key: &str, obj: &K) {
        for (name, f) in &self.indexers {
            let index = self.indexes.entry(name.clone()).or_default();
            for v in f(obj) {
                if let Some(keys) = index.get_mut(&v) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.remove(&v);
                    }
                }
            }
        }
    }

    fn index(&mut self, key: &str, obj: &K) {
        for (name, f) in &self.indexers {
            let index = self.indexes.entry(name.clone()).or_default();
            for v in f(obj) {
                index.entry(v).or_default().insert(key.to_string());
            }
        }
    }
}

impl<K: Object> Default for Store<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Object> Store<K> {
    pub fn new() -> Self {
        let store = Store {
            inner: Arc::new(RwLock::new(Inner {
                objects: HashMap::new(),
                indexers: HashMap::new(),
                indexes: HashMap::new(),
            })),
        };
        store.add_index(
            NAMESPACE_INDEX,
            Arc::new(|o: &K| o.metadata().namespace.iter().cloned().collect()),
        );
        store
    }

    /// Adds (or replaces) an index and builds it over what the store holds.
    pub fn add_index(&self, name: &str, f: IndexFn<K>) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let mut index: HashMap<String, HashSet<String>> = HashMap::new();
        for (k, o) in &g.objects {
            for v in f(o) {
                index.entry(v).or_default().insert(k.clone());
            }
        }
        g.indexes.insert(name.into(), index);
        g.indexers.insert(name.into(), f);
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.read().objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects whose index `name` has `value`.
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<K>> {
        let g = self.read();
        let Some(keys) = g.indexes.get(name).and_then(|i| i.get(value)) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| g.objects.get(k).cloned())
            .collect()
    }

    /// The objects of one namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.by_index(NAMESPACE_INDEX, namespace)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts or replaces an object; returns what it replaced.
    pub(crate) fn upsert(&self, obj: Arc<K>) -> Option<Arc<K>> {
        let key = key_of(obj.as_ref());
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = g.objects.insert(key.clone(), obj.clone());
        if let Some(o) = &old {
            g.unindex(&key, o);
        }
        g.index(&key, &obj);
        old
    }

    pub(crate) fn remove(&self, key: &str) -> Option<Arc<K>> {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = g.objects.remove(key);
        if let Some(o) = &old {
            g.unindex(key, o);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(ns: &str, name: &str, node: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"nodeName": node, "containers": []}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn indexes_follow_updates_and_removals() {
        let s: Store<Pod> = Store::new();
        s.add_index("node", pod_node_index());
        s.upsert(pod("a", "p1", "n1"));
        s.upsert(pod("a", "p2", "n1"));
        s.upsert(pod("b", "p3", "n2"));
        assert_eq!(s.by_index("node", "n1").len(), 2);
        assert_eq!(s.in_namespace("b").len(), 1);
        let old = s.upsert(pod("a", "p2", "n2")).unwrap();
        assert_eq!(old.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        assert_eq!(s.by_index("node", "n1").len(), 1);
        assert_eq!(s.by_index("node", "n2").len(), 2);
        s.remove("b/p3");
        assert_eq!(s.by_index("node", "n2").len(), 1);
        assert!(s.in_namespace("b").is_empty());
        assert_eq!(s.get("a/p1").unwrap().metadata.name.as_deref(), Some("p1"));
        assert_eq!(s.len(), 2);
    }
}
