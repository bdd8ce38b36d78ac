//! `etcdserverpb.Watch`: one bidirectional stream carries many watches. Each watch gets
//! its history replayed (one response) and then live events, in revision order, from the
//! hub; a watch from a compacted revision is refused with `compact_revision`.

use super::{Server, Shared};
use crate::watch::{Batch, Registered, WatchSpec};
use proto::etcd::etcdserverpb::{
    watch_create_request::FilterType, watch_request, watch_server::Watch, WatchRequest,
    WatchResponse,
};
use std::collections::HashMap;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

struct Active {
    hub_id: u64,
    forwarder: tokio::task::JoinHandle<()>,
}

#[tonic::async_trait]
impl Watch for Shared {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.refuse_on_learner()?;
        // etcdctl asks to be told at once when there is no leader.
        let wants_leader = req
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants_leader && self.raft.status().leader_id == 0 {
            return Err(Status::unavailable("etcdserver: no leader"));
        }
        let mut inbound = req.into_inner();
        let (out, rx) = mpsc::channel(256);
        let server = self.clone();
        let mut watches: HashMap<i64, Active> = HashMap::new();
        let mut next_id: i64 = 0;
        let mut progress_wanted: Vec<i64> = Vec::new();
        // The stream opens (response headers go out) only after the first request is
        // handled, as with etcd, whose headers come with the first response: a client
        // whose watch call returned is registered, and sees every later revision.
        let mut keep = match inbound.next().await {
            Some(Ok(msg)) => {
                server
                    .handle_watch_request(
                        msg,
                        &out,
                        &mut watches,
                        &mut next_id,
                        &mut progress_wanted,
                    )
                    .await
            }
            _ => false,
        };
        tokio::spawn(async move {
            let mut progress = tokio::time::interval(server.progress_interval);
            progress.tick().await;
            while keep {
                tokio::select! {
                    msg = inbound.next() => {
                        let Some(Ok(msg)) = msg else { break };
                        keep = server
                            .handle_watch_request(msg, &out, &mut watches, &mut next_id, &mut progress_wanted)
                            .await;
                    }
                    _ = progress.tick() => {
                        for id in &progress_wanted {
                            if watches.contains_key(id) && out.send(Ok(server.progress(*id))).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            for (_, w) in watches {
                server.store.hub().cancel(w.hub_id);
                w.forwarder.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Server {
    /// Answers a create request that cannot be honoured: created and canceled at once.
    async fn refuse(&self, out: &Out, watch_id: i64, reason: &str) -> bool {
        let resp = WatchResponse {
            header: Some(self.header(self.store.current_revision())),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..Default::default()
        };
        out.send(Ok(resp)).await.is_ok()
    }

    fn progress(&self, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.header(self.store.current_revision())),
            watch_id,
            ..Default::default()
        }
    }

    /// Handles one client message; false when the stream should end.
    async fn handle_watch_request(
        &self,
        msg: WatchRequest,
        out: &Out,
        watches: &mut HashMap<i64, Active>,
        next_id: &mut i64,
        progress_wanted: &mut Vec<i64>,
    ) -> bool {
        match msg.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => {
                let watch_id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    *next_id
                };
                if watches.contains_key(&watch_id) {
                    return self
                        .refuse(out, watch_id, "etcdserver: duplicate watch ID")
                        .await;
                }
                *next_id = (*next_id).max(watch_id + 1);
                if !crate::watch::valid(&c.key, &c.range_end) {
                    return self
                        .refuse(out, watch_id, "etcdserver: invalid watch range")
                        .await;
                }
                let spec = WatchSpec {
                    watch_id,
                    key: c.key,
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    prev_kv: c.prev_kv,
                    no_put: c.filters.contains(&(FilterType::Noput as i32)),
                    no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
                };
                let (tx, rx) = mpsc::channel(crate::watch::CHANNEL);
                let registered = match self.store.hub().register(&self.store, spec, tx) {
                    Ok(r) => r,
                    Err(e) => return out.send(Err(e.into())).await.is_ok(),
                };
                match registered {
                    Registered::Compacted { compact_revision } => {
                        // As etcd: acknowledge the watch, then cancel it with the
                        // compaction point (a header without a revision).
                        let created = WatchResponse {
                            header: Some(self.header(self.store.current_revision())),
                            watch_id,
                            created: true,
                            ..Default::default()
                        };
                        let canceled = WatchResponse {
                            header: Some(self.header(0)),
                            watch_id,
                            canceled: true,
                            compact_revision,
                            ..Default::default()
                        };
                        out.send(Ok(created)).await.is_ok() && out.send(Ok(canceled)).await.is_ok()
                    }
                    Registered::Watching { id } => {
                        let created = WatchResponse {
                            header: Some(self.header(self.store.current_revision())),
                            watch_id,
                            created: true,
                            ..Default::default()
                        };
                        if out.send(Ok(created)).await.is_err() {
                            self.store.hub().cancel(id);
                            return false;
                        }
                        if c.progress_notify {
                            progress_wanted.push(watch_id);
                        }
                        let forwarder = tokio::spawn(forward(self.header(0), rx, out.clone()));
                        watches.insert(
                            watch_id,
                            Active {
                                hub_id: id,
                                forwarder,
                            },
                        );
                        true
                    }
                }
            }
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                if let Some(w) = watches.remove(&c.watch_id) {
                    self.store.hub().cancel(w.hub_id);
                    w.forwarder.abort();
                    progress_wanted.retain(|id| *id != c.watch_id);
                    let resp = WatchResponse {
                        header: Some(self.header(self.store.current_revision())),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    return out.send(Ok(resp)).await.is_ok();
                }
                true
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // etcd 3.5 answers a progress request once, with watch id -1.
                out.send(Ok(self.progress(-1))).await.is_ok()
            }
            None => true,
        }
    }
}

/// Moves one watch's batches from the hub to the stream.
async fn forward(
    header: proto::etcd::etcdserverpb::ResponseHeader,
    mut rx: mpsc::Receiver<Batch>,
    out: Out,
) {
    while let Some(batch) = rx.recv().await {
        let mut h = header;
        if batch.compact_revision > 0 {
            // The watcher fell behind a compaction: cancelled as etcd does, with the
            // compaction point (a header without a revision).
            h.revision = 0;
            let resp = WatchResponse {
                header: Some(h),
                watch_id: batch.watch_id,
                canceled: true,
                compact_revision: batch.compact_revision,
                ..Default::default()
            };
            let _ = out.send(Ok(resp)).await; // the client may have gone
            break;
        }
        h.revision = batch.revision;
        let resp = WatchResponse {
            header: Some(h),
            watch_id: batch.watch_id,
            events: batch.events,
            ..Default::default()
        };
        if out.send(Ok(resp)).await.is_err() {
            break;
        }
    }
}
