//! The watch cache: one etcd watch per resource feeds an in-memory copy of the
//! resource's objects and a window of recent events. REST and gRPC watchers and
//! `resourceVersion=0` lists are served from here; each event is serialized once for all
//! watchers.
//!
//! Must not: write to storage, or serve a watch from a revision it cannot prove it has
//! every event after (that is a 410 Expired).

use crate::error::{ApiError, Result};
use crate::storage::{prefix_end, Storage};
use api::{FieldSelector, LabelSelector, ResourceInfo};
use bytes::Bytes;
use etcd_client::{EventType as EtcdEventType, WatchOptions};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How many recent events each resource keeps for watches that resume.
pub const WINDOW: usize = 10_000;
/// A watcher this many events behind is cut off (it resumes from its last revision).
const FANOUT_BUFFER: usize = 8_192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, decoded and serialized once.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub revision: i64,
    /// The object after the change (for DELETED: its last state, at the deletion's
    /// revision, as Kubernetes reports it).
    pub object: Arc<Value>,
    /// The object before the change, if it existed (selectors need it).
    pub prev: Option<Arc<Value>>,
    /// `object` as JSON.
    pub json: Bytes,
    /// `object`'s namespace ("" when cluster-scoped), read once for every watcher's filter.
    pub namespace: String,
}

impl Event {
    pub(crate) fn new(
        kind: EventType,
        revision: i64,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) -> Self {
        let json = Bytes::from(serde_json::to_vec(&*object).unwrap_or_default());
        let namespace = namespace_of(&object).to_string();
        Event {
            kind,
            revision,
            object,
            prev,
            json,
            namespace,
        }
    }
}

/// What the fan-out channel carries.
#[derive(Debug, Clone)]
pub enum Message {
    Event(Arc<Event>),
    /// The cache was rebuilt from a fresh list (its watch broke beyond repair); every
    /// watcher ends and resumes from its own revision.
    Reset,
}

struct State {
    /// Storage key → object with `metadata.resourceVersion` set.
    objects: BTreeMap<String, Arc<Value>>,
    /// The revision the cache reflects.
    revision: i64,
    window: VecDeque<Arc<Event>>,
    /// Every event after this revision is in `window` (or was not for this resource).
    oldest: i64,
    synced: bool,
}

/// Which objects a list or watch wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether every object matches (no namespace, label or field requirement).
    pub fn is_everything(&self) -> bool {
        self.namespace.is_none()
            && self
                .labels
                .as_ref()
                .is_none_or(LabelSelector::is_everything)
            && self.fields.is_everything()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.matches_namespace(namespace_of(object)) && self.selects(object)
    }

    pub fn matches_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// Whether `object` matches the label and field selectors (the namespace aside).
    pub fn selects(&self, object: &Value) -> bool {
        if let Some(sel) = &self.labels {
            let labels = &object["metadata"]["labels"];
            let label = |k: &str| labels.get(k).map(|v| v.as_str().unwrap_or(""));
            if !sel.is_everything() && !sel.matches_by(&label) {
                return false;
            }
        }
        self.fields.matches(object)
    }
}

fn namespace_of(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or("")
}

pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(value: &[u8], revision: i64) -> Result<Value> {
    let mut v: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Ok(v)
}

/// The stored JSON with its resourceVersion stamped into `metadata`, as `decode` would
/// give it once serialized again, but spliced into the bytes: for a list that only passes
/// objects on, decoding and re-encoding them was most of its time (10k pods: ~0.45 s of
/// CPU). None when the value is not an object with a `metadata` object whose keys are
/// plain (no escapes) and has no resourceVersion already; `decode` handles those.
/// The field goes where serde_json's sorted maps put it, so the two agree byte for byte.
pub fn stamp_json(value: &[u8], revision: i64) -> Option<Vec<u8>> {
    let b = value;
    let mut i = json_scan::ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = json_scan::ws(b, i);
        let (key, after) = json_scan::key(b, i)?;
        i = after;
        if key == b"metadata" {
            break;
        }
        i = json_scan::value(b, i)?;
        i = json_scan::ws(b, i);
        if b.get(i) != Some(&b',') {
            return None; // the object ended without metadata
        }
        i += 1;
    }
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let field = format!("\"resourceVersion\":\"{revision}\"");
    let splice = |at: usize, before: &str, after: &str| {
        let mut out = Vec::with_capacity(b.len() + field.len() + 1);
        out.extend_from_slice(&b[..at]);
        out.extend_from_slice(before.as_bytes());
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(after.as_bytes());
        out.extend_from_slice(&b[at..]);
        out
    };
    let mut first = true;
    loop {
        i = json_scan::ws(b, i);
        if b.get(i) == Some(&b'}') {
            return Some(splice(i, if first { "" } else { "," }, ""));
        }
        let (key, after) = json_scan::key(b, i)?;
        match key.cmp(b"resourceVersion".as_slice()) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Greater => return Some(splice(i, "", ",")),
        }
        i = json_scan::value(b, after)?;
        i = json_scan::ws(b, i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => {}
            _ => return None,
        }
        first = false;
    }
}

/// Just enough of a JSON reader to find a member: positions, never copies.
mod json_scan {
    pub fn ws(b: &[u8], mut i: usize) -> usize {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    }

    /// Past the string starting at `i` (a quote).
    fn string(b: &[u8], i: usize) -> Option<usize> {
        let mut j = i + 1;
        loop {
            match b.get(j)? {
                b'"' => return Some(j + 1),
                b'\\' => j += 2,
                _ => j += 1,
            }
        }
    }

    /// A member's key at `i` (no escapes) and where its value starts.
    pub fn key(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string(b, i)?;
        let key = &b[i + 1..end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        let colon = ws(b, end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        Some((key, ws(b, colon + 1)))
    }

    /// Past the value starting at `i`.
    pub fn value(b: &[u8], i: usize) -> Option<usize> {
        match b.get(i)? {
            b'"' => string(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match b.get(j)? {
                        b'"' => {
                            j = string(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let mut j = i;
                while b
                    .get(j)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    j += 1;
                }
                (j > i).then_some(j)
            }
        }
    }
}

/// A watcher's starting point and its stream of messages.
pub struct Subscription {
    /// Objects to send as synthetic ADDED first (a watch from "" or "0").
    pub initial: Vec<Arc<Value>>,
    /// Window events after the requested revision, in order.
    pub replay: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Message>,
    /// The cache's revision when subscribed (bookmarks start there).
    pub revision: i64,
}

pub struct WatchCache {
    pub info: &'static ResourceInfo,
    state: RwLock<State>,
    tx: broadcast::Sender<Message>,
    synced: watch::Sender<bool>,
}

impl WatchCache {
    pub fn new(info: &'static ResourceInfo) -> Arc<Self> {
        let (tx, _) = broadcast::channel(FANOUT_BUFFER);
        Arc::new(WatchCache {
            info,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                window: VecDeque::new(),
                oldest: 0,
                synced: false,
            }),
            tx,
            synced: watch::channel(false).0,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    /// Waits until the first list is loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.read().objects.get(key).cloned()
    }

    /// Matching objects under `prefix` (a namespace's keys, or all), in key order, and the
    /// revision they reflect.
    pub fn list(&self, prefix: &str, filter: &Filter) -> (Vec<Arc<Value>>, i64) {
        let state = self.read();
        let end = String::from_utf8_lossy(&prefix_end(prefix)).into_owned();
        let items = state
            .objects
            .range(prefix.to_string()..end)
            .filter(|(_, o)| filter.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        (items, state.revision)
    }

    /// Starts a watch. `from`: None = current state as ADDED events then changes;
    /// Some(n) = every change after revision n (410 if the window no longer has them).
    pub fn subscribe(
        &self,
        prefix: &str,
        filter: &Filter,
        from: Option<i64>,
    ) -> Result<Subscription> {
        let state = self.read();
        let live = self.tx.subscribe();
        match from {
            None => {
                let end = String::from_utf8_lossy(&prefix_end(prefix)).into_owned();
                let initial = state
                    .objects
                    .range(prefix.to_string()..end)
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect();
                Ok(Subscription {
                    initial,
                    replay: Vec::new(),
                    live,
                    revision: state.revision,
                })
            }
            Some(n) => {
                if n < state.oldest {
                    return Err(ApiError::gone_revision(n));
                }
                let start = state.window.partition_point(|e| e.revision <= n);
                Ok(Subscription {
                    initial: Vec::new(),
                    replay: state.window.range(start..).cloned().collect(),
                    live,
                    revision: state.revision.max(n),
                })
            }
        }
    }

    /// Replaces the contents with a fresh list at `revision`.
    fn reset(&self, objects: BTreeMap<String, Arc<Value>>, revision: i64) {
        let mut state = self.write();
        let was_synced = state.synced;
        state.objects = objects;
        state.revision = revision;
        state.window.clear();
        state.oldest = revision;
        state.synced = true;
        if was_synced {
            let _ = self.tx.send(Message::Reset);
        }
        drop(state);
        self.synced.send_replace(true);
    }

    fn apply(&self, key: String, kind: EtcdEventType, value: &[u8], revision: i64) {
        let mut state = self.write();
        if revision <= state.revision {
            return; // already reflected (a resumed etcd watch may repeat)
        }
        state.revision = revision;
        let prev = state.objects.get(&key).cloned();
        let event = match kind {
            EtcdEventType::Put => {
                let object = match decode(value, revision) {
                    Ok(o) => Arc::new(o),
                    Err(e) => {
                        tracing::error!(key, "watch cache: skipping undecodable value: {e}");
                        return;
                    }
                };
                state.objects.insert(key, object.clone());
                let kind = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                Event::new(kind, revision, object, prev)
            }
            EtcdEventType::Delete => {
                let Some(last) = state.objects.remove(&key) else {
                    return;
                };
                let mut object = (*last).clone();
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert(
                        "resourceVersion".into(),
                        Value::String(revision.to_string()),
                    );
                }
                Event::new(EventType::Deleted, revision, Arc::new(object), Some(last))
            }
        };
        let event = Arc::new(event);
        if state.window.len() >= WINDOW {
            if let Some(old) = state.window.pop_front() {
                state.oldest = old.revision;
            }
        }
        state.window.push_back(event.clone());
        let _ = self.tx.send(Message::Event(event));
    }

    /// Keeps the cache fed until the process ends: list, then watch from the list's
    /// revision; on a broken stream resume, on compaction relist.
    pub async fn run(self: Arc<Self>, storage: Storage) {
        let prefix = self.info.storage_prefix();
        let mut need_list = true;
        loop {
            if need_list {
                match storage.range_all(&prefix, 0).await {
                    Ok(page) => {
                        let mut objects = BTreeMap::new();
                        for s in page.items {
                            match decode(&s.value, s.mod_revision) {
                                Ok(o) => {
                                    objects.insert(s.key, Arc::new(o));
                                }
                                Err(e) => tracing::error!(key = s.key, "watch cache: {e}"),
                            }
                        }
                        self.reset(objects, page.revision);
                        need_list = false;
                    }
                    Err(e) => {
                        tracing::warn!(resource = self.info.resource, "watch cache list: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            match self.follow(&storage, &prefix).await {
                Follow::Compacted => need_list = true,
                Follow::Broken(e) => {
                    tracing::warn!(resource = self.info.resource, "watch cache stream: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn follow(&self, storage: &Storage, prefix: &str) -> Follow {
        let from = self.revision() + 1;
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(from)
            .with_prev_key();
        let mut stream = match storage.client().watch(prefix, Some(opts)).await {
            Ok(s) => s,
            Err(e) => return Follow::Broken(e.to_string()),
        };
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        return Follow::Compacted;
                    }
                    if resp.canceled() {
                        return Follow::Broken(format!("canceled: {}", resp.cancel_reason()));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        self.apply(key, ev.event_type(), kv.value(), kv.mod_revision());
                    }
                }
                Ok(None) => return Follow::Broken("stream ended".into()),
                Err(e) => return Follow::Broken(e.to_string()),
            }
        }
    }
}

enum Follow {
    Compacted,
    Broken(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache() -> Arc<WatchCache> {
        let info = api::registry::by_resource("", "v1", "configmaps").unwrap();
        let c = WatchCache::new(info);
        c.reset(BTreeMap::new(), 10);
        c
    }

    fn cm(name: &str, app: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": app}}}),
        )
        .unwrap()
    }

    #[test]
    fn stamping_stored_json_gives_what_decoding_and_encoding_give() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d",
                "uid": "u-1", "labels": {"a": "b"}, "managedFields": [{"manager": "m}]\\\"{"}]},
                "spec": {"template": {"metadata": {"name": "inner"}}}}),
            json!({"metadata": {}}),
            json!({"metadata": {"annotations": {"x": "{\"metadata\": 1}"}}}),
            json!({"metadata": {"selfLink": "/s", "uid": "z"}, "data": {"k": "v"}}),
            json!({"data": {"metadata": {"name": "decoy"}, "n": [1, 2.5, true, null]},
                "metadata": {"name": "n"}, "zz": -3}),
        ];
        for o in objects {
            let stored = serde_json::to_vec(&o).unwrap();
            let stamped = stamp_json(&stored, 42).expect("stamped");
            let decoded = serde_json::to_vec(&decode(&stored, 42).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(stamped).unwrap(),
                String::from_utf8(decoded).unwrap()
            );
        }
        // Spaced JSON (not what the server writes) reads the same.
        let spaced = br#" { "kind" : "X" , "metadata" : { "name" : "n" , "uid" : "u" } } "#;
        let v: Value = serde_json::from_slice(&stamp_json(spaced, 7).unwrap()).unwrap();
        assert_eq!(v, decode(spaced, 7).unwrap());
    }

    #[test]
    fn stamping_leaves_odd_shapes_to_the_decoder() {
        for odd in [
            &br#"[1]"#[..],
            br#"{"kind": "X"}"#,
            br#"{"metadata": "m"}"#,
            br#"{"metadata": {"resourceVersion": "3"}}"#,
            br#"{"metadata": {"na\u006de": "n"}}"#,
            br#"{"metadata": {"name": "n""#,
            b"",
        ] {
            assert_eq!(stamp_json(odd, 1), None, "{}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn replay_from_a_revision_in_the_window_and_410_before_it() {
        let c = cache();
        c.apply(
            "/registry/configmaps/d/a".into(),
            EtcdEventType::Put,
            &cm("a", "x"),
            11,
        );
        c.apply(
            "/registry/configmaps/d/a".into(),
            EtcdEventType::Put,
            &cm("a", "y"),
            12,
        );
        c.apply(
            "/registry/configmaps/d/a".into(),
            EtcdEventType::Delete,
            b"",
            13,
        );
        let sub = c
            .subscribe("/registry/configmaps/", &Filter::default(), Some(11))
            .unwrap();
        let kinds: Vec<_> = sub.replay.iter().map(|e| (e.kind, e.revision)).collect();
        assert_eq!(
            kinds,
            vec![(EventType::Modified, 12), (EventType::Deleted, 13)]
        );
        assert_eq!(sub.replay[1].object["metadata"]["resourceVersion"], "13");
        let err = c
            .subscribe("/registry/configmaps/", &Filter::default(), Some(9))
            .err()
            .unwrap();
        assert_eq!(err.code, 410);
    }

    #[test]
    fn list_filters_by_namespace_prefix_and_labels() {
        let c = cache();
        c.apply(
            "/registry/configmaps/d/a".into(),
            EtcdEventType::Put,
            &cm("a", "x"),
            11,
        );
        c.apply(
            "/registry/configmaps/d/b".into(),
            EtcdEventType::Put,
            &cm("b", "y"),
            12,
        );
        let filter = Filter {
            labels: Some(LabelSelector::parse("app=y").unwrap()),
            ..Default::default()
        };
        let (items, rv) = c.list("/registry/configmaps/d/", &filter);
        assert_eq!(rv, 12);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "b");
    }
}
