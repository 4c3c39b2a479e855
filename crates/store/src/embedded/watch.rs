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

/// How many recent revisions stay in memory for watchers that keep up...
const RECENT_REVISIONS: usize = 1024;
/// ...in at most about this many bytes of keys and values (the newest revision always stays),
/// so a run of large revisions (import parts, big backends) cannot pin a gigabyte.
const RECENT_BYTES: usize = 64 * 1024 * 1024;
/// How many revisions a lagging watcher reads from disk at a time.
const DISK_CHUNK: i64 = 256;

#[derive(Debug)]
pub struct RevisionBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// The ring of recent revisions and the bytes it holds.
#[derive(Default)]
struct Recent {
    batches: VecDeque<Arc<RevisionBatch>>,
    bytes: usize,
}

impl Recent {
    fn push(&mut self, batch: Arc<RevisionBatch>) {
        self.bytes += batch_bytes(&batch);
        self.batches.push_back(batch);
        while self.batches.len() > 1
            && (self.batches.len() > RECENT_REVISIONS || self.bytes > RECENT_BYTES)
        {
            if let Some(oldest) = self.batches.pop_front() {
                self.bytes -= batch_bytes(&oldest);
            }
        }
    }
}

/// The keys and values a revision holds, its previous values included.
fn batch_bytes(batch: &RevisionBatch) -> usize {
    batch
        .events
        .iter()
        .map(|event| {
            let previous = event
                .prev_kv
                .as_ref()
                .map_or(0, |kv| kv.key.len() + kv.value.len());
            event.kv.key.len() + event.kv.value.len() + previous
        })
        .sum()
}

pub struct WatchHub {
    committed: watch::Sender<Revision>,
    recent: RwLock<Recent>,
    compact_revision: AtomicI64,
    closed: AtomicBool,
    watchers: AtomicI64,
}

impl WatchHub {
    pub fn new(revision: Revision, compact_revision: Revision) -> Self {
        WatchHub {
            committed: watch::Sender::new(revision),
            recent: RwLock::new(Recent::default()),
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
                recent.push(Arc::new(batch));
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
        let recent = &recent.batches;
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
                    // Reading the log from disk can take long: off the async workers.
                    let reader = shared.clone();
                    let read = tokio::task::spawn_blocking(move || reader.read_log(next, to))
                        .await
                        .unwrap_or_else(|e| {
                            Err(StoreError::Storage(format!("a log read failed: {e}")))
                        });
                    match read {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, KeyValue};
    use bytes::Bytes;

    fn batch(revision: i64, value: &Bytes) -> Arc<RevisionBatch> {
        Arc::new(RevisionBatch {
            revision: Revision(revision),
            events: vec![Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: Bytes::from_static(b"/k"),
                    value: value.clone(),
                    create_revision: Revision(revision),
                    mod_revision: Revision(revision),
                    version: 1,
                    lease: None,
                },
                prev_kv: None,
            }],
        })
    }

    #[test]
    fn the_ring_keeps_its_revision_count_and_its_bytes() {
        let small = Bytes::from_static(b"v");
        let mut recent = Recent::default();
        for revision in 1..=2_000 {
            recent.push(batch(revision, &small));
        }
        assert_eq!(recent.batches.len(), RECENT_REVISIONS);
        assert_eq!(recent.batches.front().unwrap().revision, Revision(977));

        // Revisions of 1 MiB each (one shared buffer): about 64 stay.
        let big = Bytes::from(vec![0u8; 1024 * 1024]);
        for revision in 2_001..=2_200 {
            recent.push(batch(revision, &big));
        }
        assert!(recent.bytes <= RECENT_BYTES, "{}", recent.bytes);
        assert!((60..=64).contains(&recent.batches.len()));
        assert_eq!(recent.batches.back().unwrap().revision, Revision(2_200));

        // One revision over the whole budget still stays: watchers need the newest.
        let huge = Bytes::from(vec![0u8; RECENT_BYTES + 1]);
        recent.push(batch(2_201, &huge));
        assert_eq!(recent.batches.len(), 1);
    }
}
