//! The live feed on both stores (a redb file, a real etcd): a subscriber that joins mid-stream
//! gets a snapshot and then every later change, with no gap and no duplicate; one that falls
//! behind the feed's ring, or asks for history the ring no longer holds, gets a reset with a
//! fresh snapshot; two registries on one store feed each other's changes.

use berth_domain::{InstanceDefaults, InstanceDraft, InstanceId, InstanceSpec};
use berth_registry::auth::Caller;
use berth_registry::{
    FeedEvent, FeedStart, FeedSubscription, InstanceEventKind, Registry, RegistryConfig, Revision,
    SystemWallClock,
};
use berth_store::AnyStore;
use berth_store::embedded::{EmbeddedOptions, EmbeddedStore};
use berth_store::etcd::EtcdStore;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Opens a store, embedded (in a temporary directory) or on a real etcd, with what must live
/// as long as it (the directory, the etcd process).
async fn open_store(embedded: bool) -> (Box<dyn std::any::Any>, AnyStore) {
    if embedded {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
            .await
            .unwrap();
        (Box::new(dir), AnyStore::Embedded(store))
    } else {
        let server = berth_testkit::EtcdServer::start();
        let store = EtcdStore::connect(&[server.endpoint()], &Default::default())
            .await
            .unwrap();
        (Box::new(server), AnyStore::Etcd(store))
    }
}

async fn registry(store: &AnyStore, ring: usize) -> Registry {
    Registry::start(
        store.clone(),
        RegistryConfig {
            feed_ring: ring,
            ..RegistryConfig::default()
        },
        Arc::new(SystemWallClock),
    )
    .await
    .unwrap()
}

fn spec(service: &str, port: i64) -> InstanceSpec {
    InstanceDraft {
        address: Some("10.1.0.1".into()),
        port: Some(port),
        ttl_ms: Some(60_000),
        ..InstanceDraft::default()
    }
    .validate(service, None, &InstanceDefaults::default())
    .unwrap()
}

async fn next(feed: &mut FeedSubscription) -> FeedEvent {
    tokio::time::timeout(WAIT, feed.next())
        .await
        .expect("a feed event in time")
        .expect("the feed is open")
}

macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(true).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(false).await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_subscriber_joining_mid_stream_gets_a_snapshot_then_every_change_once,
    a_subscriber_slower_than_the_ring_is_reset_with_a_fresh_snapshot,
    history_the_ring_no_longer_holds_is_a_reset,
    two_registries_on_one_store_feed_each_others_changes,
);

async fn a_subscriber_joining_mid_stream_gets_a_snapshot_then_every_change_once(embedded: bool) {
    let (_keep, store) = open_store(embedded).await;
    let registry = registry(&store, 4096).await;
    let writer = {
        let registry = registry.clone();
        tokio::spawn(async move {
            for port in 1..=200 {
                registry
                    .register(spec("stream", port), &Caller::Unchecked)
                    .await
                    .unwrap();
                if port % 3 == 0 {
                    let id = InstanceId::parse("id", &format!("10.1.0.1:{}", port - 1)).unwrap();
                    registry
                        .deregister(
                            &spec("stream", 1).service().clone(),
                            &id,
                            &Caller::Unchecked,
                        )
                        .await
                        .unwrap();
                }
            }
        })
    };
    // Join while the writer is busy.
    while registry.view_revision() < Revision(50) {
        tokio::task::yield_now().await;
    }
    let mut feed = registry.feed(FeedStart::Snapshot);
    let FeedEvent::Snapshot {
        revision: mut last,
        instances,
        reset,
    } = next(&mut feed).await
    else {
        panic!("a subscription from a snapshot starts with one");
    };
    assert!(!reset);
    let mut live: BTreeSet<String> = instances
        .iter()
        .map(|l| l.instance.spec.id().to_string())
        .collect();
    writer.await.unwrap();
    let end = registry.view_revision();
    while last < end {
        let FeedEvent::Batch(batch) = next(&mut feed).await else {
            panic!("no reset expected");
        };
        assert!(batch.revision > last, "a revision twice or out of order");
        last = batch.revision;
        for event in &batch.events {
            let id = event.instance.instance.spec.id().to_string();
            match event.kind {
                InstanceEventKind::Online => assert!(live.insert(id), "online twice"),
                InstanceEventKind::Updated => assert!(live.contains(&id)),
                InstanceEventKind::Offline(_) => assert!(live.remove(&id), "offline unseen"),
            }
        }
    }
    let expected: BTreeSet<String> = registry
        .select(|i| i.spec.service().as_str() == "stream")
        .await
        .unwrap()
        .iter()
        .map(|l| l.instance.spec.id().to_string())
        .collect();
    assert_eq!(live, expected, "snapshot + deltas = the registry");
    assert_eq!(expected.len(), 200 - 66);
}

async fn a_subscriber_slower_than_the_ring_is_reset_with_a_fresh_snapshot(embedded: bool) {
    let (_keep, store) = open_store(embedded).await;
    let registry = registry(&store, 8).await;
    let mut slow = registry.feed(FeedStart::Now);
    for port in 1..=20 {
        registry
            .register(spec("slow", port), &Caller::Unchecked)
            .await
            .unwrap();
    }
    // It read nothing while 20 revisions went by a ring of 8.
    match next(&mut slow).await {
        FeedEvent::Snapshot {
            instances, reset, ..
        } => {
            assert!(reset);
            assert_eq!(instances.len(), 20);
        }
        FeedEvent::Batch(batch) => panic!("expected a reset, got {batch:?}"),
    }
    let later = registry
        .register(spec("slow", 21), &Caller::Unchecked)
        .await
        .unwrap();
    let FeedEvent::Batch(batch) = next(&mut slow).await else {
        panic!("deltas follow the reset");
    };
    assert_eq!(batch.revision, later.revision_index);
}

async fn history_the_ring_no_longer_holds_is_a_reset(embedded: bool) {
    let (_keep, store) = open_store(embedded).await;
    let registry = registry(&store, 4).await;
    let first = registry
        .register(spec("old", 1), &Caller::Unchecked)
        .await
        .unwrap();
    for port in 2..=10 {
        registry
            .register(spec("old", port), &Caller::Unchecked)
            .await
            .unwrap();
    }
    let mut resumed = registry.feed(FeedStart::After(first.revision_index));
    assert!(matches!(
        next(&mut resumed).await,
        FeedEvent::Snapshot { reset: true, .. }
    ));
    // Within the ring: replayed, no reset.
    let recent = registry.view_revision();
    let last = registry
        .register(spec("old", 11), &Caller::Unchecked)
        .await
        .unwrap();
    let mut replay = registry.feed(FeedStart::After(recent));
    let FeedEvent::Batch(batch) = next(&mut replay).await else {
        panic!("replayed from the ring");
    };
    assert_eq!(batch.revision, last.revision_index);
    // A revision from the future (another store's history): a reset, not a silent wait.
    let mut future = registry
        .subscribe(None, Some(Revision(last.revision_index.0 + 1_000)))
        .await;
    assert!(matches!(
        tokio::time::timeout(WAIT, future.next()).await,
        Ok(Some(berth_registry::EventItem::Reset { .. }))
    ));
}

async fn two_registries_on_one_store_feed_each_others_changes(embedded: bool) {
    let (_keep, store) = open_store(embedded).await;
    let a = registry(&store, 4096).await;
    let b = registry(&store, 4096).await;
    let mut feeds: Vec<FeedSubscription> = (0..100).map(|_| b.feed(FeedStart::Now)).collect();
    let written = a
        .register(spec("shared", 1), &Caller::Unchecked)
        .await
        .unwrap();
    for feed in &mut feeds {
        let FeedEvent::Batch(batch) = next(feed).await else {
            panic!("a change, not a reset");
        };
        assert_eq!(batch.revision, written.revision_index);
        assert_eq!(batch.events[0].kind, InstanceEventKind::Online);
    }
}
