//! Watches on the embedded store. The committer publishes each durable commit here; every
//! watch is a task that follows the committed revision and reads what it has not delivered yet
//! from a ring of recent revisions, or from the on-disk log when it is further behind. A slow
//! watcher therefore never loses events and never holds the others back.

use super::Shared;
use crate::{Event, Revision, StoreError, WatchBatch};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, watch};

/// How many recent revisions stay in memory for watchers that keep up.
const RECENT_REVISIONS: usize = 1024;
/// How many revisions a lagging watcher reads from disk at a time.
const DISK_CHUNK: i64 = 256;

#[derive(Debug)]
pub struct RevisionBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

pub struct WatchHub {
    committed: watch::Sender<Revision>,
    recent: RwLock<VecDeque<Arc<RevisionBatch>>>,
    compact_revision: AtomicI64,
    closed: AtomicBool,
    watchers: AtomicI64,
}

impl WatchHub {
    pub fn new(revision: Revision, compact_revision: Revision) -> Self {
        WatchHub {
            committed: watch::Sender::new(revision),
            recent: RwLock::new(VecDeque::with_capacity(RECENT_REVISIONS)),
            compact_revision: AtomicI64::new(compact_revision.0),
            closed: AtomicBool::new(false),
            watchers: AtomicI64::new(0),
        }
    }

    pub fn revision(&self) -> Revision {
        *self.committed.borrow()
    }

    pub fn compact_revision(&self) -> Revision {
        Revision(self.compact_revision.load(Ordering::Acquire))
    }

    pub fn set_compact_revision(&self, revision: Revision) {
        self.compact_revision.store(revision.0, Ordering::Release);
    }

    /// Makes a durable commit visible to watchers. Called by the committer only, in order.
    pub fn publish(&self, batches: Vec<RevisionBatch>, revision: Revision) {
        if !batches.is_empty() {
            let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
            for batch in batches {
                if recent.len() == RECENT_REVISIONS {
                    recent.pop_front();
                }
                recent.push_back(Arc::new(batch));
            }
        }
        self.committed.send_replace(revision);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends every watch (their streams return `None`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.committed.send_modify(|_| {});
    }

    /// The batches from `from` to `to` if the ring still holds `from`.
    fn recent_range(&self, from: Revision, to: Revision) -> Option<Vec<Arc<RevisionBatch>>> {
        let recent = self.recent.read().unwrap_or_else(|e| e.into_inner());
        let first = recent.front()?.revision;
        if from < first {
            return None;
        }
        let skip = (from.0 - first.0) as usize;
        Some(
            recent
                .iter()
                .skip(skip)
                .take_while(|b| b.revision <= to)
                .cloned()
                .collect(),
        )
    }
}

struct WatcherGauge<'a>(&'a WatchHub);

impl<'a> WatcherGauge<'a> {
    fn new(hub: &'a WatchHub) -> Self {
        let count = hub.watchers.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("berth_store_watchers").set(count as f64);
        WatcherGauge(hub)
    }
}

impl Drop for WatcherGauge<'_> {
    fn drop(&mut self) {
        let count = self.0.watchers.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("berth_store_watchers").set(count as f64);
    }
}

/// Follows the store from `next` on, sending the batches under `prefix` until the receiver is
/// dropped or the store closes.
pub async fn run_watcher(
    shared: Arc<Shared>,
    prefix: Bytes,
    mut next: Revision,
    sender: mpsc::Sender<Result<WatchBatch, StoreError>>,
) {
    let hub = &shared.hub;
    let _gauge = WatcherGauge::new(hub);
    let mut committed = hub.committed.subscribe();
    loop {
        let current = *committed.borrow_and_update();
        while next <= current {
            let compacted = hub.compact_revision();
            if next < compacted {
                let _ = sender
                    .send(Err(StoreError::Compacted {
                        requested: next,
                        oldest_available: Some(compacted),
                    }))
                    .await;
                return;
            }
            let batches = match hub.recent_range(next, current) {
                Some(batches) => batches,
                None => {
                    let to = Revision(current.0.min(next.0 + DISK_CHUNK - 1));
                    match shared.read_log(next, to) {
                        Ok(batches) if !batches.is_empty() => {
                            batches.into_iter().map(Arc::new).collect()
                        }
                        // Compacted between the check above and the read: report it.
                        Ok(_) => continue,
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    }
                }
            };
            for batch in batches {
                next = batch.revision.next();
                let events: Vec<Event> = batch
                    .events
                    .iter()
                    .filter(|e| e.kv.key.starts_with(&prefix))
                    .cloned()
                    .collect();
                if events.is_empty() {
                    continue;
                }
                let delivered = WatchBatch {
                    revision: batch.revision,
                    events,
                };
                if sender.send(Ok(delivered)).await.is_err() {
                    return;
                }
            }
        }
        if hub.closed.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            () = sender.closed() => return,
        }
    }
}
