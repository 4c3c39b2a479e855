//! The etcd backend: the store contract (the conformance suite), and what only it does. It
//! ends leases at their deadline itself (instead of at etcd's next expiry pass), so it must
//! never end one early: not before the deadline, and not when another node (another
//! connection) renewed it since. Two `EtcdStore`s on one real etcd stand for two berth nodes.
#![allow(
    clippy::disallowed_methods,
    reason = "a real etcd's lease expiry is timed against the real clock"
)]

mod conformance;

use berth_store::etcd::EtcdStore;
use berth_store::{EventKind, LeaseGrant, Store, WatchStream, get, put};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The store contract, on a real etcd started for the test.
async fn open_for_the_contract() -> (Arc<EtcdStore>, berth_testkit::EtcdServer) {
    let server = berth_testkit::EtcdServer::start();
    let store = EtcdStore::connect(&[server.endpoint()], &Default::default())
        .await
        .unwrap();
    (Arc::new(store), server)
}

conformance::suite!(super::open_for_the_contract);

/// Waits for the next watch batch and tells when it came.
async fn next_deletion(watch: &mut WatchStream) -> Instant {
    let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event in time")
        .expect("the watch is open")
        .expect("no watch error");
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    Instant::now()
}

async fn leased_key(store: &EtcdStore, key: &'static str, ttl: Duration) -> (LeaseGrant, Instant) {
    let asked = Instant::now();
    let lease = store.lease_grant(ttl).await.unwrap();
    put(store, key, "v", Some(lease.id)).await.unwrap();
    (lease, asked)
}

async fn is_there(store: &EtcdStore, key: &'static str) -> bool {
    get(store, key).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_nobody_renews_ends_after_its_deadline_and_within_a_second() {
    let server = berth_testkit::EtcdServer::start();
    let node = EtcdStore::connect(&[server.endpoint()], &Default::default())
        .await
        .unwrap();
    let mut watch = node.watch(Bytes::from_static(b"/d/"), None).await.unwrap();
    let (lease, asked) = leased_key(&node, "/d/alone", Duration::from_secs(2)).await;
    watch.next().await.unwrap().unwrap();

    let deleted = next_deletion(&mut watch).await;
    let after = deleted - asked;
    assert!(after >= lease.ttl, "ended {after:?} after the grant");
    assert!(
        after < lease.ttl + Duration::from_secs(1),
        "ended {after:?} after the grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_another_node_renewed_lives_to_that_nodes_deadline() {
    let server = berth_testkit::EtcdServer::start();
    let first = EtcdStore::connect(&[server.endpoint()], &Default::default())
        .await
        .unwrap();
    let second = EtcdStore::connect(&[server.endpoint()], &Default::default())
        .await
        .unwrap();
    let mut watch = first.watch(Bytes::from_static(b"/d/"), None).await.unwrap();
    let (lease, _) = leased_key(&first, "/d/shared", Duration::from_secs(3)).await;
    watch.next().await.unwrap().unwrap();

    // The client's next heartbeat goes to the other node, 600 ms later; then it stops.
    let first_deadline = Instant::now() + lease.ttl;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let renewed = Instant::now();
    second.lease_keepalive(lease.id).await.unwrap();

    // Past the first node's deadline and both its checks, the key is still there.
    tokio::time::sleep_until(first_deadline + Duration::from_millis(100)).await;
    assert!(is_there(&first, "/d/shared").await);

    let deleted = next_deletion(&mut watch).await;
    assert!(
        deleted >= renewed + lease.ttl,
        "ended before the second node's deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_alternating_between_nodes_keep_a_lease_alive() {
    let server = berth_testkit::EtcdServer::start();
    let first = EtcdStore::connect(&[server.endpoint()], &Default::default())
        .await
        .unwrap();
    let second = EtcdStore::connect(&[server.endpoint()], &Default::default())
        .await
        .unwrap();
    let (lease, _) = leased_key(&first, "/d/busy", Duration::from_secs(2)).await;
    // A heartbeat every third of the TTL, to either node in turn, for three TTLs.
    for round in 0..9 {
        tokio::time::sleep(Duration::from_millis(660)).await;
        let node = if round % 2 == 0 { &second } else { &first };
        node.lease_keepalive(lease.id).await.unwrap();
        assert!(is_there(&first, "/d/busy").await, "gone in round {round}");
    }
}
