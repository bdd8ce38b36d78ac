//! Informers: a reflector feeding a shared, indexed `Store`, and event handlers called
//! for every change. A `Factory` hands out one informer per type, so the components'
//! controllers share caches and watches.

use crate::conn::Client;
use crate::reflector::{self, Delta};
use crate::store::{IndexFn, Store};
use crate::typed::{Api, ListParams, Object};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// What a handler is told.
#[derive(Debug)]
pub enum Event<'a, K> {
    Add(&'a Arc<K>),
    Update(&'a Arc<K>, &'a Arc<K>),
    Delete(&'a Arc<K>),
}

pub type Handler<K> = Arc<dyn Fn(Event<'_, K>) + Send + Sync>;

/// A shared cache of one resource with handlers; cloning shares it.
pub struct Informer<K> {
    inner: Arc<InformerInner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            inner: self.inner.clone(),
        }
    }
}

struct InformerInner<K> {
    api: Api<K>,
    params: ListParams,
    store: Store<K>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<K> Drop for InformerInner<K> {
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

impl<K: Object> Informer<K> {
    pub fn new(api: Api<K>, params: ListParams) -> Self {
        Informer {
            inner: Arc::new(InformerInner {
                api,
                params,
                store: Store::new(),
                handlers: RwLock::new(Vec::new()),
                synced: tokio::sync::watch::channel(false).0,
                task: Mutex::new(None),
            }),
        }
    }

    pub fn store(&self) -> &Store<K> {
        &self.inner.store
    }

    pub fn add_index(&self, name: &str, f: IndexFn<K>) {
        self.inner.store.add_index(name, f);
    }

    /// Registers a handler. Objects already in the cache are replayed to it as adds, so
    /// a late handler misses nothing. Handlers run on the informer's task: keep them short
    /// (enqueue a key).
    pub fn add_handler(&self, h: impl Fn(Event<'_, K>) + Send + Sync + 'static) {
        let h: Handler<K> = Arc::new(h);
        let mut handlers = self
            .inner
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for o in self.inner.store.list() {
            h(Event::Add(&o));
        }
        handlers.push(h);
    }

    /// Starts the reflector (once; later calls do nothing). Needs a Tokio runtime.
    pub fn start(&self) {
        let mut task = self.inner.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.is_some() {
            return;
        }
        // The task holds only a weak reference: dropping the last informer handle stops it.
        let weak = Arc::downgrade(&self.inner);
        let api = self.inner.api.clone();
        let params = self.inner.params.clone();
        let store = self.inner.store.clone();
        *task = Some(tokio::spawn(reflector::run(api, params, store, move |d| {
            let Some(inner) = weak.upgrade() else { return };
            let handlers = inner.handlers.read().unwrap_or_else(|p| p.into_inner());
            match &d {
                Delta::Added(o) => handlers.iter().for_each(|h| h(Event::Add(o))),
                Delta::Updated { old, new } => {
                    handlers.iter().for_each(|h| h(Event::Update(old, new)))
                }
                Delta::Deleted(o) => handlers.iter().for_each(|h| h(Event::Delete(o))),
                Delta::Synced => {
                    inner.synced.send_replace(true);
                }
            }
        })));
    }

    /// Whether the first list has reached the cache.
    pub fn has_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits until the first list has reached the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// One informer per resource type, shared by everyone who asks.
#[derive(Clone)]
pub struct Factory {
    client: Client,
    informers: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Factory {
    pub fn new(client: Client) -> Self {
        Factory {
            client,
            informers: Arc::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The informer of `K` across all namespaces (created on first use, not started).
    pub fn informer<K: Object>(&self) -> Informer<K> {
        self.informer_with::<K>(ListParams::default())
    }

    /// The informer of `K` with a selector; the first caller's parameters win.
    pub fn informer_with<K: Object>(&self, params: ListParams) -> Informer<K> {
        let mut map = self.informers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(TypeId::of::<K>())
            .or_insert_with(|| Box::new(Informer::new(Api::<K>::all(self.client.clone()), params)))
            .downcast_ref::<Informer<K>>()
            .expect("informers are keyed by their type")
            .clone()
    }
}

/// Lets a component start and wait on informers of different types together.
pub trait Startable {
    fn start_informer(&self);
    fn wait_synced_boxed(&self) -> futures::future::BoxFuture<'_, ()>;
}

impl<K: Object> Startable for Informer<K> {
    fn start_informer(&self) {
        self.start();
    }
    fn wait_synced_boxed(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(self.wait_synced())
    }
}

/// Starts the informers and waits until every one has synced.
pub async fn start_and_sync(informers: &[&dyn Startable]) {
    for i in informers {
        i.start_informer();
    }
    futures::future::join_all(informers.iter().map(|i| i.wait_synced_boxed())).await;
}
