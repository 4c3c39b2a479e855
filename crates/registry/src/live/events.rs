//! Online / updated / offline events: what one revision of the live prefix means, decided once
//! by the follower (`classify`) and published on the live feed, and the subscription every
//! event stream reads: the feed filtered to one service (or all), with an explicit reset and a
//! fresh snapshot whenever the subscriber cannot be given every change since its place.

use super::feed::{FeedBatch, FeedEvent, FeedSubscription};
use super::records::{StoredInstance, decode_instance};
use super::view::LiveInstance;
use crate::keys;
use berth_domain::{InstanceId, OfflineReason, ServiceName};
use berth_store::{EventKind, Revision, WatchBatch};
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceEventKind {
    Online,
    Updated,
    Offline(OfflineReason),
}

impl InstanceEventKind {
    pub fn name(self) -> &'static str {
        match self {
            InstanceEventKind::Online => "online",
            InstanceEventKind::Updated => "updated",
            InstanceEventKind::Offline(_) => "offline",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceEvent {
    pub kind: InstanceEventKind,
    /// The instance as it is now (online, updated) or as it was last (offline).
    pub instance: StoredInstance,
}

/// One revision of the live prefix, classified.
pub(crate) struct Classified {
    pub events: Vec<InstanceEvent>,
    /// Instances whose new record does not decode: they leave the view (a record today's
    /// rules refuse is reported, not served).
    pub undecodable: Vec<(ServiceName, InstanceId)>,
    /// Why records did not decode.
    pub failures: Vec<String>,
}

/// What one revision of the live prefix means. An instance deleted in the same revision as its
/// deregistration marker was deregistered; any other deletion is an expiry.
pub(crate) fn classify(batch: &WatchBatch) -> Classified {
    let deregistered: HashSet<(&str, &str)> = batch
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Put)
        .filter_map(|e| keys::parse_deregistered_key(&e.kv.key))
        .collect();
    let mut classified = Classified {
        events: Vec::new(),
        undecodable: Vec::new(),
        failures: Vec::new(),
    };
    for event in &batch.events {
        let Some((service, id)) = keys::parse_instance_key(&event.kv.key) else {
            continue;
        };
        let decoded = match event.kind {
            EventKind::Put => decode_instance(&event.kv).map(|instance| InstanceEvent {
                kind: if event.prev_kv.is_some() {
                    InstanceEventKind::Updated
                } else {
                    InstanceEventKind::Online
                },
                instance,
            }),
            EventKind::Delete => {
                let Some(prev) = &event.prev_kv else { continue };
                let reason = if deregistered.contains(&(service, id)) {
                    OfflineReason::Deregistered
                } else {
                    OfflineReason::Expired
                };
                decode_instance(prev).map(|instance| InstanceEvent {
                    kind: InstanceEventKind::Offline(reason),
                    instance,
                })
            }
        };
        match decoded {
            Ok(event) => classified.events.push(event),
            Err(error) => {
                if let (Ok(service), Ok(id)) = (
                    ServiceName::parse("service", service),
                    InstanceId::parse("id", id),
                ) {
                    classified.undecodable.push((service, id));
                }
                classified.failures.push(error);
            }
        }
    }
    classified
}

/// The events of one revision that a subscription wants.
#[derive(Clone, Debug)]
pub struct EventBatch {
    pub batch: Arc<FeedBatch>,
    /// Which of `batch.events` the subscriber wants, in order.
    pub wanted: Vec<usize>,
}

impl EventBatch {
    pub fn revision(&self) -> Revision {
        self.batch.revision
    }

    pub fn events(&self) -> impl Iterator<Item = &InstanceEvent> {
        self.wanted.iter().map(|&index| &self.batch.events[index])
    }
}

#[derive(Debug)]
pub enum EventItem {
    Batch(EventBatch),
    /// The subscriber cannot be given every change since its place: here is everything as of
    /// `revision`; events continue after it.
    Reset {
        revision: Revision,
        instances: Vec<Arc<LiveInstance>>,
    },
}

/// A live subscription to instance events: the feed, filtered.
pub struct EventSubscription {
    feed: FeedSubscription,
    service: Option<ServiceName>,
}

impl EventSubscription {
    pub(crate) fn new(feed: FeedSubscription, service: Option<ServiceName>) -> Self {
        EventSubscription { feed, service }
    }

    /// The service this subscription keeps (`None`: every service).
    pub fn service(&self) -> Option<&ServiceName> {
        self.service.as_ref()
    }

    fn wants(&self, service: &ServiceName) -> bool {
        self.service.as_ref().is_none_or(|s| s == service)
    }

    /// The next item; `None` when the registry shut down.
    pub async fn next(&mut self) -> Option<EventItem> {
        loop {
            match self.feed.next().await? {
                FeedEvent::Batch(batch) => {
                    let wanted: Vec<usize> = batch
                        .events
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| self.wants(e.instance.instance.spec.service()))
                        .map(|(index, _)| index)
                        .collect();
                    if !wanted.is_empty() {
                        return Some(EventItem::Batch(EventBatch { batch, wanted }));
                    }
                }
                FeedEvent::Snapshot {
                    revision,
                    instances,
                    ..
                } => {
                    let instances = instances
                        .into_iter()
                        .filter(|live| self.wants(live.instance.spec.service()))
                        .collect();
                    return Some(EventItem::Reset {
                        revision,
                        instances,
                    });
                }
            }
        }
    }
}
