//! The store contract's conformance suite: every body below is run by each backend's own test
//! file (`tests/embedded.rs` on a redb file in a temporary directory, `tests/etcd.rs` on a real
//! etcd started for the test) through [`suite!`], so the backends cannot drift apart and a new
//! backend runs the whole contract with one line.

use berth_store::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, LeaseId, RangeRequest, Revision, Store,
    StoreError, Txn, TxnOp, WatchBatch, WatchStream, get, put,
};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Runs every contract test on the store `$open().await` gives, as `(Arc<store>, guard)`: the
/// guard keeps what the store needs (a directory, a server) until the test ends.
macro_rules! suite {
    ($open:path) => {
        mod conformance_suite {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn revisions_move_by_one_per_write() {
                let (store, _guard) = $open().await;
                super::conformance::revisions_move_by_one_per_write(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ranges_read_any_retained_revision() {
                let (store, _guard) = $open().await;
                super::conformance::ranges_read_any_retained_revision(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn txn_compares_choose_the_branch() {
                let (store, _guard) = $open().await;
                super::conformance::txn_compares_choose_the_branch(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refused_txns_change_nothing() {
                let (store, _guard) = $open().await;
                super::conformance::refused_txns_change_nothing(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_values_and_many_keys() {
                let (store, _guard) = $open().await;
                super::conformance::large_values_and_many_keys(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_cas_has_exactly_one_winner() {
                let (store, _guard) = $open().await;
                super::conformance::concurrent_cas_has_exactly_one_winner(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lease_expiry_deletes_keys_with_events() {
                let (store, _guard) = $open().await;
                super::conformance::lease_expiry_deletes_keys_with_events(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn keepalive_keeps_keys_and_revoke_deletes_them() {
                let (store, _guard) = $open().await;
                super::conformance::keepalive_keeps_keys_and_revoke_deletes_them(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn puts_on_unknown_leases_are_refused() {
                let (store, _guard) = $open().await;
                super::conformance::puts_on_unknown_leases_are_refused(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lease_time_to_live_lists_keys() {
                let (store, _guard) = $open().await;
                super::conformance::lease_time_to_live_lists_keys(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_resumes_from_a_revision_in_order() {
                let (store, _guard) = $open().await;
                super::conformance::watch_resumes_from_a_revision_in_order(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_of_a_compacted_revision_errors() {
                let (store, _guard) = $open().await;
                super::conformance::watch_of_a_compacted_revision_errors(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn txn_writes_land_at_one_revision() {
                let (store, _guard) = $open().await;
                super::conformance::txn_writes_land_at_one_revision(store).await;
            }
        }
    };
}
pub(crate) use suite;

const WAIT: Duration = Duration::from_secs(10);

async fn current_revision<S: Store>(store: &S) -> Revision {
    store.status().await.unwrap().revision
}

async fn next_batch(stream: &mut WatchStream) -> WatchBatch {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch event in time")
        .expect("the watch is open")
        .expect("no watch error")
}

fn keys_of(kvs: &[berth_store::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

pub async fn revisions_move_by_one_per_write<S: Store>(store: Arc<S>) {
    let start = current_revision(&*store).await;
    assert!(start.0 >= 1);
    let first = put(&*store, "/rev/a", "1", None).await.unwrap();
    assert_eq!(first, start.next());
    let second = put(&*store, "/rev/b", "1", None).await.unwrap();
    assert_eq!(second, first.next());

    let a = get(&*store, "/rev/a").await.unwrap().unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (first, first, 1)
    );
    let third = put(&*store, "/rev/a", "2", None).await.unwrap();
    let a = get(&*store, "/rev/a").await.unwrap().unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (first, third, 2)
    );

    // A failed compare with nothing to do, and a delete of nothing: no new revision.
    let failed = store
        .txn(Txn::new().when(vec![Compare::value_is("/rev/a", "nope")]))
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(failed.revision, third);
    let nothing = store
        .txn(Txn::new().and_then(vec![TxnOp::delete("/rev/missing")]))
        .await
        .unwrap();
    assert_eq!(nothing.revision, third);
    assert_eq!(current_revision(&*store).await, third);
}

pub async fn ranges_read_any_retained_revision<S: Store>(store: Arc<S>) {
    let r1 = put(&*store, "/hist/a", "1", None).await.unwrap();
    let r2 = put(&*store, "/hist/a", "2", None).await.unwrap();
    let r3 = put(&*store, "/hist/b", "x", None).await.unwrap();
    let r4 = berth_store::delete(&*store, "/hist/a").await.unwrap();
    put(&*store, "/other", "y", None).await.unwrap();

    let at = |revision| {
        let store = store.clone();
        async move {
            let response = store
                .range(RangeRequest::prefix("/hist/").at_revision(revision))
                .await
                .unwrap();
            assert_eq!(response.revision, revision);
            response
                .kvs
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(at(r1).await, vec!["/hist/a=1"]);
    assert_eq!(at(r2).await, vec!["/hist/a=2"]);
    assert_eq!(at(r3).await, vec!["/hist/a=2", "/hist/b=x"]);
    assert_eq!(at(r4).await, vec!["/hist/b=x"]);
    let now = store.range(RangeRequest::prefix("/hist/")).await.unwrap();
    assert_eq!(keys_of(&now.kvs), vec!["/hist/b"]);

    let old = store
        .range(RangeRequest::new(KeyRange::Key(Bytes::from_static(b"/hist/a"))).at_revision(r1))
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, Bytes::from_static(b"1"));
    assert_eq!(old.kvs[0].mod_revision, r1);

    let future = store
        .range(RangeRequest::prefix("/hist/").at_revision(Revision(r4.0 + 100)))
        .await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "{future:?}"
    );
}

pub async fn txn_compares_choose_the_branch<S: Store>(store: Arc<S>) {
    let created = put(&*store, "/cmp/k", "v1", None).await.unwrap();
    let check = |compare: Compare| {
        let store = store.clone();
        async move {
            store
                .txn(Txn::new().when(vec![compare]))
                .await
                .unwrap()
                .succeeded
        }
    };
    assert!(check(Compare::value_is("/cmp/k", "v1")).await);
    assert!(!check(Compare::value_is("/cmp/k", "v2")).await);
    assert!(!check(Compare::value_is("/cmp/missing", "")).await);
    assert!(
        check(Compare::new(
            "/cmp/k",
            CompareOp::Equal,
            CompareTarget::Version(1)
        ))
        .await
    );
    assert!(
        check(Compare::new(
            "/cmp/k",
            CompareOp::Greater,
            CompareTarget::Version(0)
        ))
        .await
    );
    assert!(
        check(Compare::new(
            "/cmp/k",
            CompareOp::Less,
            CompareTarget::Version(2)
        ))
        .await
    );
    assert!(
        !check(Compare::new(
            "/cmp/k",
            CompareOp::NotEqual,
            CompareTarget::Version(1)
        ))
        .await
    );
    assert!(
        check(Compare::new(
            "/cmp/k",
            CompareOp::Equal,
            CompareTarget::CreateRevision(created)
        ))
        .await
    );
    assert!(check(Compare::unchanged_since("/cmp/k", created)).await);
    assert!(check(Compare::absent("/cmp/missing")).await);
    assert!(!check(Compare::absent("/cmp/k")).await);

    // The failure branch runs when a compare fails.
    let response = store
        .txn(
            Txn::new()
                .when(vec![Compare::absent("/cmp/k")])
                .and_then(vec![TxnOp::put("/cmp/then", "x", None)])
                .or_else(vec![TxnOp::put("/cmp/else", "y", None)]),
        )
        .await
        .unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.revision, created.next());
    assert!(get(&*store, "/cmp/then").await.unwrap().is_none());
    assert_eq!(get(&*store, "/cmp/else").await.unwrap().unwrap().value, "y");
}

pub async fn refused_txns_change_nothing<S: Store>(store: Arc<S>) {
    let before = put(&*store, "/refuse/k", "v", None).await.unwrap();
    let huge = vec![b'x'; 2 * 1024 * 1024];
    let too_large = put(&*store, "/refuse/huge", huge, None).await;
    assert!(
        matches!(too_large, Err(StoreError::RequestTooLarge { .. })),
        "{too_large:?}"
    );
    let twice = store
        .txn(Txn::new().and_then(vec![
            TxnOp::put("/refuse/a", "1", None),
            TxnOp::put("/refuse/a", "2", None),
        ]))
        .await;
    assert!(
        matches!(twice, Err(StoreError::InvalidRequest(_))),
        "{twice:?}"
    );
    let puts = |count: usize| -> Vec<TxnOp> {
        (0..count)
            .map(|i| TxnOp::put(format!("/refuse/many/{i}"), "v", None))
            .collect()
    };
    let too_many = store.txn(Txn::new().and_then(puts(129))).await;
    assert!(
        matches!(
            too_many,
            Err(StoreError::TooManyOperations { count: 129, .. })
        ),
        "{too_many:?}"
    );
    assert_eq!(current_revision(&*store).await, before);
    let all = store.range(RangeRequest::prefix("/refuse/")).await.unwrap();
    assert_eq!(keys_of(&all.kvs), vec!["/refuse/k"]);

    // The limit itself is allowed.
    let most = store.txn(Txn::new().and_then(puts(128))).await.unwrap();
    assert!(most.succeeded);
    let keys = RangeRequest::prefix("/refuse/many/");
    assert_eq!(store.range(keys).await.unwrap().kvs.len(), 128);
}

pub async fn large_values_and_many_keys<S: Store>(store: Arc<S>) {
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    put(&*store, "/big/value", big.clone(), None).await.unwrap();
    assert_eq!(
        get(&*store, "/big/value").await.unwrap().unwrap().value,
        big
    );

    let mut tasks = Vec::new();
    for task in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let key = format!("/many/{:05}", task * 100 + i);
                put(&*store, key, vec![b'v'; 300], None).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.range(RangeRequest::prefix("/many/")).await.unwrap();
    assert_eq!(all.kvs.len(), 5000);
    assert!(!all.more);
    let keys = keys_of(&all.kvs);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys come back in key order");
    let first = store
        .range(RangeRequest::prefix("/many/").with_limit(10))
        .await
        .unwrap();
    assert_eq!(keys_of(&first.kvs), keys[..10].to_vec());
    assert!(first.more);
    // The next page starts after the last key; pinned at the first page's revision, pages
    // read one snapshot even while writes go on.
    let second = store
        .range(
            RangeRequest::prefix("/many/")
                .with_limit(10)
                .at_revision(first.revision)
                .after(first.kvs.last().unwrap().key.clone()),
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&second.kvs), keys[10..20].to_vec());
    put(&*store, "/many/99999".to_string(), vec![b'v'; 10], None)
        .await
        .unwrap();
    put(&*store, "/many/00000".to_string(), vec![b'x'; 10], None)
        .await
        .unwrap();
    let paged = store
        .range_all(bytes::Bytes::from_static(b"/many/"), 333, None)
        .await
        .unwrap();
    assert_eq!(
        paged.kvs.len(),
        5001,
        "every key once, the new one included"
    );
    assert!(paged.kvs.iter().any(|kv| kv.key.as_ref() == b"/many/99999"));
    let again = store
        .range_all(bytes::Bytes::from_static(b"/many/"), 10_000, None)
        .await
        .unwrap();
    assert_eq!(keys_of(&again.kvs), keys_of(&paged.kvs));
    let last_page = store
        .range(
            RangeRequest::prefix("/many/")
                .with_limit(10)
                .after(bytes::Bytes::from_static(b"/many/99990")),
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&last_page.kvs), vec!["/many/99999".to_string()]);
    assert!(!last_page.more);
}

pub async fn concurrent_cas_has_exactly_one_winner<S: Store>(store: Arc<S>) {
    // Round 1: everyone tries to create the same key.
    let mut tasks = Vec::new();
    for writer in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .txn(
                    Txn::new()
                        .when(vec![Compare::absent("/cas/key")])
                        .and_then(vec![TxnOp::put(
                            "/cas/key",
                            format!("writer-{writer}"),
                            None,
                        )]),
                )
                .await
                .unwrap()
                .succeeded
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);

    // Round 2: everyone read the same revision and tries to replace the value.
    let seen = get(&*store, "/cas/key")
        .await
        .unwrap()
        .unwrap()
        .mod_revision;
    let mut tasks = Vec::new();
    for writer in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let ok = store
                .txn(
                    Txn::new()
                        .when(vec![Compare::unchanged_since("/cas/key", seen)])
                        .and_then(vec![TxnOp::put(
                            "/cas/key",
                            format!("round2-{writer}"),
                            None,
                        )]),
                )
                .await
                .unwrap()
                .succeeded;
            (writer, ok)
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        let (writer, ok) = task.await.unwrap();
        if ok {
            won.push(writer);
        }
    }
    assert_eq!(won.len(), 1);
    let value = get(&*store, "/cas/key").await.unwrap().unwrap().value;
    assert_eq!(value, format!("round2-{}", won[0]));
}

pub async fn lease_expiry_deletes_keys_with_events<S: Store>(store: Arc<S>) {
    let lease = store.lease_grant(Duration::from_secs(1)).await.unwrap();
    assert!(lease.ttl >= Duration::from_secs(1));
    let mut watch = store
        .watch(Bytes::from_static(b"/exp/"), None)
        .await
        .unwrap();
    store
        .txn(Txn::new().and_then(vec![
            TxnOp::put("/exp/a", "1", Some(lease.id)),
            TxnOp::put("/exp/b", "2", Some(lease.id)),
        ]))
        .await
        .unwrap();
    let created = next_batch(&mut watch).await;
    assert_eq!(created.events.len(), 2);

    // Nobody renews it: both keys go, in one revision, with delete events.
    let deleted = next_batch(&mut watch).await;
    assert_eq!(deleted.events.len(), 2);
    assert!(deleted.events.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(deleted.revision, created.revision.next());
    let prev = deleted.events[0].prev_kv.as_ref().expect("previous value");
    assert_eq!(prev.lease, Some(lease.id));
    assert!(
        store
            .range(RangeRequest::prefix("/exp/"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(matches!(
        store.lease_keepalive(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        store.lease_time_to_live(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

pub async fn keepalive_keeps_keys_and_revoke_deletes_them<S: Store>(store: Arc<S>) {
    let lease = store.lease_grant(Duration::from_secs(1)).await.unwrap();
    put(&*store, "/kept/k", "v", Some(lease.id)).await.unwrap();
    for _ in 0..10 {
        let ttl = store.lease_keepalive(lease.id).await.unwrap();
        assert!(ttl >= Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 2.5 s after the grant, more than twice the TTL, the key is still there.
    assert!(get(&*store, "/kept/k").await.unwrap().is_some());

    let mut watch = store
        .watch(Bytes::from_static(b"/kept/"), None)
        .await
        .unwrap();
    store.lease_revoke(lease.id).await.unwrap();
    let deleted = next_batch(&mut watch).await;
    assert_eq!(deleted.events[0].kind, EventKind::Delete);
    assert!(get(&*store, "/kept/k").await.unwrap().is_none());
    assert!(matches!(
        store.lease_revoke(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

pub async fn puts_on_unknown_leases_are_refused<S: Store>(store: Arc<S>) {
    let before = current_revision(&*store).await;
    let refused = put(
        &*store,
        "/unknown-lease",
        "v",
        Some(LeaseId(0x7777_0000_1234)),
    )
    .await;
    assert!(
        matches!(refused, Err(StoreError::LeaseNotFound(_))),
        "{refused:?}"
    );
    assert_eq!(current_revision(&*store).await, before);
    assert!(get(&*store, "/unknown-lease").await.unwrap().is_none());
}

pub async fn lease_time_to_live_lists_keys<S: Store>(store: Arc<S>) {
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    put(&*store, "/ttl/b", "v", Some(lease.id)).await.unwrap();
    put(&*store, "/ttl/a", "v", Some(lease.id)).await.unwrap();
    put(&*store, "/ttl/c", "v", None).await.unwrap();
    let status = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(status.granted_ttl, Duration::from_secs(30));
    assert!(status.remaining <= Duration::from_secs(30));
    assert!(status.remaining >= Duration::from_secs(25));
    assert_eq!(
        status.keys,
        vec![Bytes::from_static(b"/ttl/a"), Bytes::from_static(b"/ttl/b")]
    );
    // Moving a key to no lease detaches it.
    put(&*store, "/ttl/b", "v2", None).await.unwrap();
    let status = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(status.keys, vec![Bytes::from_static(b"/ttl/a")]);
}

pub async fn watch_resumes_from_a_revision_in_order<S: Store>(store: Arc<S>) {
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(
            put(&*store, format!("/w/{i}"), format!("v{i}"), None)
                .await
                .unwrap(),
        );
        put(&*store, format!("/outside/{i}"), "x", None)
            .await
            .unwrap();
    }
    berth_store::delete(&*store, "/w/3").await.unwrap();

    let mut watch = store
        .watch(Bytes::from_static(b"/w/"), Some(revisions[4]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..7 {
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.events.len(), 1);
        seen.push((batch.revision, batch.events[0].clone()));
    }
    let replayed: Vec<Revision> = seen[..6].iter().map(|(r, _)| *r).collect();
    assert_eq!(replayed, revisions[4..].to_vec());
    let (_, delete) = &seen[6];
    assert_eq!(delete.kind, EventKind::Delete);
    assert_eq!(delete.kv.key, Bytes::from_static(b"/w/3"));
    assert_eq!(
        delete.prev_kv.as_ref().unwrap().value,
        Bytes::from_static(b"v3")
    );

    // Then live events, still only under the prefix.
    put(&*store, "/outside/live", "x", None).await.unwrap();
    let live = put(&*store, "/w/live", "v", None).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, live);
    assert_eq!(batch.events[0].prev_kv, None);
}

pub async fn watch_of_a_compacted_revision_errors<S: Store>(store: Arc<S>) {
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(put(&*store, format!("/c/{i}"), "v", None).await.unwrap());
    }
    store.compact(revisions[3]).await.unwrap();

    let mut watch = store
        .watch(Bytes::from_static(b"/c/"), Some(revisions[1]))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("an answer in time")
        .expect("an item");
    assert!(
        matches!(first, Err(StoreError::Compacted { .. })),
        "{first:?}"
    );

    let old_read = store
        .range(RangeRequest::prefix("/c/").at_revision(revisions[1]))
        .await;
    assert!(
        matches!(old_read, Err(StoreError::Compacted { .. })),
        "{old_read:?}"
    );

    // The compaction point itself is still readable and watchable.
    let mut watch = store
        .watch(Bytes::from_static(b"/c/"), Some(revisions[3]))
        .await
        .unwrap();
    assert_eq!(next_batch(&mut watch).await.revision, revisions[3]);
    assert_eq!(next_batch(&mut watch).await.revision, revisions[4]);
    let at = store
        .range(RangeRequest::prefix("/c/").at_revision(revisions[3]))
        .await
        .unwrap();
    assert_eq!(at.kvs.len(), 4);
}

pub async fn txn_writes_land_at_one_revision<S: Store>(store: Arc<S>) {
    put(&*store, "/atomic/old", "x", None).await.unwrap();
    let mut watch = store
        .watch(Bytes::from_static(b"/atomic/"), None)
        .await
        .unwrap();
    let response = store
        .txn(Txn::new().and_then(vec![
            TxnOp::put("/atomic/a", "1", None),
            TxnOp::put("/atomic/b", "2", None),
            TxnOp::Delete(KeyRange::Prefix(Bytes::from_static(b"/atomic/o"))),
        ]))
        .await
        .unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, response.revision);
    let kinds: Vec<(String, EventKind)> = batch
        .events
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.kv.key).into_owned(), e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("/atomic/a".to_string(), EventKind::Put),
            ("/atomic/b".to_string(), EventKind::Put),
            ("/atomic/old".to_string(), EventKind::Delete),
        ]
    );
    for key in ["/atomic/a", "/atomic/b"] {
        assert_eq!(
            get(&*store, key).await.unwrap().unwrap().mod_revision,
            response.revision
        );
    }
}
