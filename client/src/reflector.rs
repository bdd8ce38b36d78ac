//! The reflector: List, then Watch from the list's resourceVersion, keeping a `Store`
//! equal to the server's state and reporting each change once, in order.
//!
//! When a watch stream ends (timeout, apiserver restart, failover) it resumes from the
//! last resourceVersion it saw — an event, or a bookmark; events the resumed stream
//! repeats (an object at or below the revision the store holds) are dropped. When the
//! revision is compacted (410) it lists again and reports the difference between the
//! store and the new list, so consumers see every object's final state without gaps or
//! repeats.

use crate::error::Result;
use crate::store::Store;
use crate::typed::{key_of, revision_of, Api, ListParams, Object, WatchEvent};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// A change to the store.
#[derive(Debug)]
pub enum Delta<K> {
    Added(Arc<K>),
    Updated {
        old: Arc<K>,
        new: Arc<K>,
    },
    /// The object's last known state (from the watch, or the store when a relist found
    /// it gone).
    Deleted(Arc<K>),
    /// The first list is in the store.
    Synced,
}

/// Page size of the reflector's lists.
const PAGE: i64 = 500;

/// Lists everything (in pages, all at the first page's revision).
async fn list_all<K: Object>(api: &Api<K>, lp: &ListParams) -> Result<(Vec<K>, String)> {
    let mut lp = lp.clone();
    lp.limit = PAGE;
    lp.continue_token.clear();
    lp.resource_version.clear();
    let mut items = Vec::new();
    loop {
        let page = api.list(&lp).await?;
        items.extend(page.items);
        if page.continue_token.is_empty() {
            return Ok((items, page.resource_version));
        }
        lp.continue_token = page.continue_token;
    }
}

/// Replaces the store's contents with `items`, reporting the difference.
fn replace<K: Object>(store: &Store<K>, items: Vec<K>, on: &mut impl FnMut(Delta<K>)) {
    let mut seen = HashSet::new();
    for item in items {
        let key = key_of(&item);
        let rev = revision_of(&item);
        seen.insert(key.clone());
        match store.get(&key) {
            Some(old) if revision_of(old.as_ref()) == rev => {}
            _ => {
                let new = Arc::new(item);
                match store.upsert(new.clone()) {
                    Some(old) => on(Delta::Updated { old, new }),
                    None => on(Delta::Added(new)),
                }
            }
        }
    }
    for key in store.keys() {
        if !seen.contains(&key) {
            if let Some(old) = store.remove(&key) {
                on(Delta::Deleted(old));
            }
        }
    }
}

/// Applies one watch event unless the store already reflects it.
fn apply<K: Object>(store: &Store<K>, ev: WatchEvent<K>, on: &mut impl FnMut(Delta<K>)) {
    match ev {
        WatchEvent::Added(o) | WatchEvent::Modified(o) => {
            let key = key_of(&o);
            if let Some(cur) = store.get(&key) {
                if revision_of(cur.as_ref()) >= revision_of(&o) {
                    return; // a resumed stream repeating what we have
                }
            }
            let new = Arc::new(o);
            match store.upsert(new.clone()) {
                Some(old) => on(Delta::Updated { old, new }),
                None => on(Delta::Added(new)),
            }
        }
        WatchEvent::Deleted(o) => {
            if store.remove(&key_of(&o)).is_some() {
                on(Delta::Deleted(Arc::new(o)));
            }
        }
        WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
    }
}

/// Runs forever (until its task is dropped), keeping `store` in step with the server and
/// calling `on` for every change.
pub async fn run<K: Object>(
    api: Api<K>,
    lp: ListParams,
    store: Store<K>,
    mut on: impl FnMut(Delta<K>) + Send,
) {
    let mut synced = false;
    let mut rv = String::new();
    let mut need_list = true;
    let mut backoff = Duration::from_millis(50);
    loop {
        if need_list {
            match list_all(&api, &lp).await {
                Ok((items, list_rv)) => {
                    replace(&store, items, &mut on);
                    rv = list_rv;
                    need_list = false;
                    if !synced {
                        synced = true;
                        on(Delta::Synced);
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = K::KIND, error = %e, "list failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let mut stream = match api.watch(&lp, &rv).await {
            Ok(s) => s,
            Err(e) if e.is_gone() => {
                tracing::info!(kind = K::KIND, %rv, "watch revision compacted; relisting");
                need_list = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(kind = K::KIND, error = %e, "watch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchEvent::Error(e)) => {
                    if e.is_gone() {
                        tracing::info!(kind = K::KIND, %rv, "watch expired; relisting");
                        need_list = true;
                    } else {
                        tracing::warn!(kind = K::KIND, error = %e, "watch ended with an error");
                    }
                    break;
                }
                Ok(WatchEvent::Bookmark(b)) => {
                    if !b.is_empty() {
                        rv = b;
                    }
                }
                Ok(ev) => {
                    let ev_rv = match &ev {
                        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                            o.metadata().resource_version.clone()
                        }
                        _ => None,
                    };
                    apply(&store, ev, &mut on);
                    if let Some(r) = ev_rv {
                        rv = r;
                    }
                }
                Err(e) => {
                    tracing::debug!(kind = K::KIND, error = %e, %rv, "watch stream broke; resuming");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn cm(name: &str, rv: u64) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"namespace": "d", "name": name, "resourceVersion": rv.to_string()}})).unwrap()
    }

    fn names(deltas: &[Delta<ConfigMap>]) -> Vec<String> {
        deltas
            .iter()
            .map(|d| match d {
                Delta::Added(o) => format!("+{}", key_of(o.as_ref())),
                Delta::Updated { new, .. } => format!("~{}", key_of(new.as_ref())),
                Delta::Deleted(o) => format!("-{}", key_of(o.as_ref())),
                Delta::Synced => "synced".into(),
            })
            .collect()
    }

    #[test]
    fn repeats_are_dropped_and_relists_report_the_difference() {
        let store = Store::new();
        let mut out = Vec::new();
        apply(&store, WatchEvent::Added(cm("a", 5)), &mut |d| out.push(d));
        apply(&store, WatchEvent::Added(cm("a", 5)), &mut |d| out.push(d));
        apply(&store, WatchEvent::Modified(cm("a", 4)), &mut |d| {
            out.push(d)
        });
        apply(&store, WatchEvent::Modified(cm("a", 6)), &mut |d| {
            out.push(d)
        });
        apply(&store, WatchEvent::Added(cm("b", 7)), &mut |d| out.push(d));
        apply(&store, WatchEvent::Deleted(cm("c", 8)), &mut |d| {
            out.push(d)
        });
        assert_eq!(names(&out), vec!["+d/a", "~d/a", "+d/b"]);
        out.clear();
        // After a 410: "a" unchanged, "b" gone, "c" new.
        replace(&store, vec![cm("a", 6), cm("c", 9)], &mut |d| out.push(d));
        assert_eq!(names(&out), vec!["+d/c", "-d/b"]);
        assert_eq!(store.len(), 2);
    }
}
