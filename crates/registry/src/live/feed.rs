//! The live feed: every revision the registry's follower applies, classified once into
//! instance events (each record decoded once) and published to every subscriber in memory: a
//! ring of the last [`RING`] revisions plus a broadcast. A subscriber starts from now, from
//! after a revision (replayed from the ring), or with a snapshot of every live instance; one
//! that falls behind the ring, or asks for history the ring no longer holds, or is following
//! when the store compacted under the follower, gets an explicit reset: a fresh snapshot, and
//! deltas after it. SSE streams, blocking queries, and every later surface (xDS, DNS)
//! subscribe here and only filter; none of them opens a store watch of its own.

use super::events::InstanceEvent;
use super::view::{InstanceView, LiveInstance};
use berth_domain::ServiceName;
use berth_store::Revision;
use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// How many revisions the ring keeps unless configured (and how far a subscriber may fall
/// behind before it is reset).
pub const RING: usize = 4096;

/// One revision, as the feed publishes it.
pub struct FeedBatch {
    pub revision: Revision,
    /// The instance events of this revision, in the order of the store's events.
    pub events: Vec<InstanceEvent>,
    /// The services whose instances changed.
    pub services: BTreeSet<ServiceName>,
    /// Whether the catalog (kinds, applications, backends, frontends) changed.
    pub catalog_changed: bool,
    /// What surfaces made of this batch (their encodings), made once for every subscriber.
    encodings: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for FeedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedBatch")
            .field("revision", &self.revision)
            .field("events", &self.events.len())
            .field("catalog_changed", &self.catalog_changed)
            .finish()
    }
}

impl FeedBatch {
    pub(crate) fn new(
        revision: Revision,
        events: Vec<InstanceEvent>,
        catalog_changed: bool,
    ) -> Self {
        let services = events
            .iter()
            .map(|e| e.instance.instance.spec.service().clone())
            .collect();
        FeedBatch {
            revision,
            events,
            services,
            catalog_changed,
            encodings: Mutex::new(Vec::new()),
        }
    }

    /// A surface's encoding of this batch (its JSON, say), made by the first subscriber that
    /// asks and shared with every other: the work per change does not grow with subscribers.
    pub fn encoded<T: Any + Send + Sync>(&self, make: impl FnOnce(&FeedBatch) -> T) -> Arc<T> {
        let mut encodings = self.encodings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = encodings
            .iter()
            .find_map(|e| e.clone().downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(make(self));
        encodings.push(made.clone());
        made
    }
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum FeedEvent {
    /// Every live instance as of `revision`; what follows is after it. `reset` when it
    /// replaces what the subscriber knew (it fell behind, asked for history the feed no longer
    /// holds, or the store compacted under the follower).
    Snapshot {
        revision: Revision,
        instances: Vec<Arc<LiveInstance>>,
        reset: bool,
    },
    Batch(Arc<FeedBatch>),
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedStart {
    /// With what happens from now on.
    Now,
    /// With every revision after this one (a reset when the feed no longer holds them).
    After(Revision),
    /// With a snapshot of everything live, then what follows it.
    Snapshot,
}

#[derive(Clone)]
enum Message {
    Batch(Arc<FeedBatch>),
    /// The follower reloaded its views from a fresh read of the store.
    Reloaded,
}

struct Ring {
    batches: VecDeque<Arc<FeedBatch>>,
    capacity: usize,
    /// The ring holds every revision after this one.
    complete_after: Revision,
    /// The last revision published.
    revision: Revision,
}

pub(crate) struct FeedHub {
    /// Held while publishing and while subscribing, so a subscriber's snapshot and the
    /// deltas it then receives meet exactly.
    ring: Mutex<Ring>,
    sender: broadcast::Sender<Message>,
    view: Arc<InstanceView>,
    subscribers: metrics::Gauge,
}

impl FeedHub {
    pub fn new(view: Arc<InstanceView>, revision: Revision, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        FeedHub {
            ring: Mutex::new(Ring {
                batches: VecDeque::with_capacity(capacity),
                capacity,
                complete_after: revision,
                revision,
            }),
            sender,
            view,
            subscribers: metrics::gauge!("berth_feed_subscribers"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a revision to the views (`apply`) and publishes it, as one step for
    /// subscribers.
    pub fn publish(&self, batch: FeedBatch, apply: impl FnOnce(&FeedBatch)) {
        let batch = Arc::new(batch);
        let mut ring = self.lock();
        apply(&batch);
        if ring.batches.len() == ring.capacity
            && let Some(dropped) = ring.batches.pop_front()
        {
            ring.complete_after = dropped.revision;
        }
        ring.revision = batch.revision;
        ring.batches.push_back(batch.clone());
        // No receiver is not an error: nobody subscribed yet.
        let _ = self.sender.send(Message::Batch(batch));
    }

    /// Replaces the view (`reload`, which returns the revision it read at) and resets every
    /// subscriber.
    pub fn reload(&self, reload: impl FnOnce() -> Revision) {
        let mut ring = self.lock();
        let revision = reload();
        ring.batches.clear();
        ring.complete_after = revision;
        ring.revision = revision;
        let _ = self.sender.send(Message::Reloaded);
    }

    pub fn subscribe(self: &Arc<Self>, start: FeedStart) -> FeedSubscription {
        let ring = self.lock();
        let mut pending = VecDeque::new();
        match start {
            FeedStart::Now => {}
            FeedStart::After(after) if after >= ring.complete_after && after <= ring.revision => {
                pending.extend(
                    ring.batches
                        .iter()
                        .filter(|b| b.revision > after)
                        .cloned()
                        .map(FeedEvent::Batch),
                );
            }
            FeedStart::After(_) => pending.push_back(self.snapshot(&ring, true)),
            FeedStart::Snapshot => pending.push_back(self.snapshot(&ring, false)),
        }
        let receiver = self.sender.subscribe();
        drop(ring);
        self.subscribers.increment(1.0);
        FeedSubscription {
            hub: self.clone(),
            receiver,
            pending,
        }
    }

    /// Every live instance, at the ring's revision (call with the ring locked).
    fn snapshot(&self, ring: &Ring, reset: bool) -> FeedEvent {
        FeedEvent::Snapshot {
            revision: ring.revision,
            instances: self.view.all(),
            reset,
        }
    }
}

/// One subscriber's place in the feed. Dropping it unsubscribes.
pub struct FeedSubscription {
    hub: Arc<FeedHub>,
    receiver: broadcast::Receiver<Message>,
    pending: VecDeque<FeedEvent>,
}

impl FeedSubscription {
    /// The next event; `None` when the registry is gone.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        match self.receiver.recv().await {
            Ok(Message::Batch(batch)) => Some(FeedEvent::Batch(batch)),
            Ok(Message::Reloaded) | Err(broadcast::error::RecvError::Lagged(_)) => {
                Some(self.reset())
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A fresh snapshot, and deltas after it from a fresh place in the broadcast.
    fn reset(&mut self) -> FeedEvent {
        let ring = self.hub.lock();
        let snapshot = self.hub.snapshot(&ring, true);
        self.receiver = self.hub.sender.subscribe();
        snapshot
    }
}

impl Drop for FeedSubscription {
    fn drop(&mut self) {
        self.hub.subscribers.decrement(1.0);
    }
}
