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
use berth_store::{EventKind, LeaseGrant, Store, StoreError, WatchStream, get, put};
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

/// A TCP relay to etcd that can be cut like a partition (open connections are dropped and new
/// ones are accepted and then left hanging), or switched to another etcd.
struct Relay {
    address: std::net::SocketAddr,
    target: Arc<std::sync::Mutex<String>>,
    cut: Arc<std::sync::atomic::AtomicBool>,
    relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let target = Arc::new(std::sync::Mutex::new(target));
        let (cut_seen, relays_kept, target_seen) = (cut.clone(), relays.clone(), target.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut_seen.load(std::sync::atomic::Ordering::SeqCst) {
                    held.push(inbound);
                    continue;
                }
                let target = target_seen.lock().unwrap().clone();
                relays_kept.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Relay {
            address,
            target,
            cut,
            relays,
        }
    }

    fn drop_connections(&self) {
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.drop_connections();
    }

    fn switch_to(&self, target: String) {
        *self.target.lock().unwrap() = target;
        self.drop_connections();
    }
}

/// An etcd that comes back at an older revision (restored from an older snapshot) is noticed
/// by a watch: it ends with `FutureRevision` (the registry then reloads its views) instead of
/// waiting for revisions that already meant something else (defect M8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_notices_a_store_that_went_back_in_revisions() {
    let ahead = berth_testkit::EtcdServer::start();
    let behind = berth_testkit::EtcdServer::start();
    let relay = Relay::start(ahead.endpoint()).await;
    let node = EtcdStore::connect(&[relay.address.to_string()], &Default::default())
        .await
        .unwrap();
    for index in 0..20 {
        put(&node, format!("/r/{index}"), "v", None).await.unwrap();
    }
    let mut watch = node.watch(Bytes::from_static(b"/r/"), None).await.unwrap();
    put(&node, "/r/last", "v", None).await.unwrap();
    let seen = watch.next().await.unwrap().unwrap().revision;

    relay.switch_to(behind.endpoint());
    let ended = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch ends in time")
        .expect("with an answer");
    match ended {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!(requested, seen.next());
            assert!(current < seen, "{current} < {seen}");
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// With etcd out of reach, heartbeats fail together, after one bounded attempt to reopen the
/// keepalive stream, not one after another (defect M2: N heartbeats took 5, 10, … 5·N s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_during_an_outage_fail_together_not_in_turn() {
    let server = berth_testkit::EtcdServer::start();
    let relay = Relay::start(server.endpoint()).await;
    let node = EtcdStore::connect(&[relay.address.to_string()], &Default::default())
        .await
        .unwrap();
    let mut leases = Vec::new();
    for _ in 0..8 {
        leases.push(node.lease_grant(Duration::from_secs(60)).await.unwrap().id);
    }
    node.lease_keepalive(leases[0]).await.unwrap();

    relay.cut();
    // The first heartbeat after the cut finds the stream gone (or unanswered) and fails.
    assert!(node.lease_keepalive(leases[0]).await.is_err());
    let started = Instant::now();
    let answers =
        futures::future::join_all(leases.iter().map(|id| node.lease_keepalive(*id))).await;
    let took = started.elapsed();
    assert!(answers.iter().all(Result::is_err), "{answers:?}");
    assert!(
        took < Duration::from_secs(8),
        "8 heartbeats took {took:?}: one reopen attempt is bounded by 5 s"
    );
}
