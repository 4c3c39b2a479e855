//! Online / updated / offline events, read from the store's watch so every node sees every
//! change, whichever node made it. A subscriber resumes from any revision; one that fell behind
//! the store's compaction gets an explicit reset with a fresh snapshot, never a silent gap.

use crate::error::Result;
use crate::keys;
use crate::live::records::{StoredInstance, decode_instance};
use berth_domain::{OfflineReason, ServiceName};
use berth_store::{AnyStore, EventKind, RangeRequest, Revision, Store, StoreError, WatchBatch};
use bytes::Bytes;
use std::collections::HashSet;
use tokio::sync::{mpsc, watch};

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

/// The instance events of one store revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBatch {
    pub revision: Revision,
    pub events: Vec<InstanceEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventItem {
    Batch(EventBatch),
    /// The requested history is gone: here is everything as of `revision`; events continue
    /// after it.
    Reset {
        revision: Revision,
        instances: Vec<StoredInstance>,
    },
}

/// What one revision of the live prefix means. An instance deleted in the same revision as its
/// deregistration marker was deregistered; any other deletion is an expiry.
pub fn classify(batch: &WatchBatch) -> Vec<InstanceEvent> {
    let deregistered: HashSet<(&str, &str)> = batch
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Put)
        .filter_map(|e| keys::parse_deregistered_key(&e.kv.key))
        .collect();
    let mut events = Vec::new();
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
            Ok(event) => events.push(event),
            Err(error) => tracing::warn!(%error, "skipping an event whose record does not decode"),
        }
    }
    events
}

/// A live subscription to instance events.
pub struct EventSubscription {
    receiver: mpsc::Receiver<Result<EventItem>>,
}

impl EventSubscription {
    /// The next item; `None` when the registry shut down.
    pub async fn next(&mut self) -> Option<Result<EventItem>> {
        self.receiver.recv().await
    }
}

/// Follows the live prefix from after `after` (or from now), keeping the events of `service`
/// (or all).
pub(crate) fn subscribe(
    store: AnyStore,
    service: Option<ServiceName>,
    after: Option<Revision>,
    mut view_revision: watch::Receiver<Revision>,
) -> EventSubscription {
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut start = after.map(Revision::next);
        loop {
            let mut watch = match store
                .watch(Bytes::from_static(keys::LIVE.as_bytes()), start)
                .await
            {
                Ok(watch) => watch,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            loop {
                let item = tokio::select! {
                    item = watch.next() => item,
                    () = sender.closed() => return,
                };
                match item {
                    None => return,
                    Some(Ok(batch)) => {
                        let events: Vec<InstanceEvent> = classify(&batch)
                            .into_iter()
                            .filter(|e| {
                                service
                                    .as_ref()
                                    .is_none_or(|s| e.instance.instance.spec.service() == s)
                            })
                            .collect();
                        if events.is_empty() {
                            continue;
                        }
                        let revision = batch.revision;
                        tokio::select! {
                            () = view_holds(&mut view_revision, revision) => {}
                            () = sender.closed() => return,
                        }
                        let batch = EventBatch { revision, events };
                        if sender.send(Ok(EventItem::Batch(batch))).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(StoreError::Compacted { .. })) => {
                        match snapshot(&store, service.as_ref()).await {
                            Ok((revision, instances)) => {
                                start = Some(revision.next());
                                view_holds(&mut view_revision, revision).await;
                                let reset = EventItem::Reset {
                                    revision,
                                    instances,
                                };
                                if sender.send(Ok(reset)).await.is_err() {
                                    return;
                                }
                            }
                            Err(error) => {
                                let _ = sender.send(Err(error)).await;
                                return;
                            }
                        }
                        break; // watch again after the snapshot
                    }
                    Some(Err(error)) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                }
            }
        }
    });
    EventSubscription { receiver }
}

/// Waits until this node's views hold `revision`, so a subscriber that reads after an event
/// sees what the event announced. Not forever: a stuck view must not silence the stream.
async fn view_holds(view_revision: &mut watch::Receiver<Revision>, revision: Revision) {
    let _ = tokio::time::timeout(
        crate::VIEW_CATCH_UP,
        view_revision.wait_for(|r| *r >= revision),
    )
    .await;
}

/// Every instance (of `service`, or all) and the revision they were read at.
pub(crate) async fn snapshot(
    store: &AnyStore,
    service: Option<&ServiceName>,
) -> Result<(Revision, Vec<StoredInstance>)> {
    let prefix = keys::instances_of(service.map(ServiceName::as_str));
    let response = store.range(RangeRequest::prefix(prefix)).await?;
    let instances = response
        .kvs
        .iter()
        .filter_map(|kv| decode_instance(kv).ok())
        .collect();
    Ok((response.revision, instances))
}
