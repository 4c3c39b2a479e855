//! The embedded backend: the store contract (the conformance suite), and what only it promises: durability across restarts, leases that survive a
//! restart with a full TTL, keepalives that never touch the disk, group commit, the data
//! directory lock, the format version, and refusing a damaged file.

mod conformance;

use berth_store::embedded::{DATA_FILE, EmbeddedOptions, EmbeddedStore, OpenError};
use berth_store::{EventKind, ManualClock, RangeRequest, Store, StoreError, get, put};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The store contract, on a redb file in a temporary directory.
async fn open_for_the_contract() -> (Arc<EmbeddedStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

conformance::suite!(super::open_for_the_contract);

const WAIT: Duration = Duration::from_secs(10);

/// The first answer of a watch of `prefix` from revision `from`.
async fn first_of_watch(
    store: &EmbeddedStore,
    prefix: &'static [u8],
    from: berth_store::Revision,
) -> Result<berth_store::WatchBatch, StoreError> {
    let mut watch = store
        .watch(Bytes::from_static(prefix), Some(from))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
}

fn options(dir: &std::path::Path, clock: &ManualClock) -> EmbeddedOptions {
    EmbeddedOptions::new(dir).with_clock(Arc::new(clock.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_revision_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    for i in 0..100 {
        put(&store, format!("/d/{i:03}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let revision = store.status().await.unwrap().revision;
    store.close().await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(store.status().await.unwrap().revision, revision);
    let all = store.range(RangeRequest::prefix("/d/")).await.unwrap();
    assert_eq!(all.kvs.len(), 100);
    assert_eq!(all.kvs[42].value, Bytes::from("v42"));
    // History is still there to watch from.
    let batch = first_of_watch(&store, b"/d/", revision).await.unwrap();
    assert_eq!(batch.revision, revision);
    assert_eq!(
        put(&store, "/d/next", "x", None).await.unwrap(),
        revision.next()
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_get_a_full_ttl_after_restart_then_expire_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let store = EmbeddedStore::open(options(dir.path(), &clock))
        .await
        .unwrap();
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    put(&store, "/l/k", "v", Some(lease.id)).await.unwrap();
    clock.advance(Duration::from_secs(8));
    store.close().await.unwrap();
    drop(store);

    // Down for a while: on restart the lease still has its full 10 s.
    clock.advance(Duration::from_secs(60));
    let store = EmbeddedStore::open(options(dir.path(), &clock))
        .await
        .unwrap();
    let status = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(status.remaining, Duration::from_secs(10));
    assert_eq!(status.keys, vec![Bytes::from_static(b"/l/k")]);
    let mut watch = store.watch(Bytes::from_static(b"/l/"), None).await.unwrap();
    clock.advance(Duration::from_millis(9_900));
    assert!(get(&store, "/l/k").await.unwrap().is_some());
    store.lease_keepalive(lease.id).await.unwrap();

    clock.advance(Duration::from_millis(10_001));
    let batch = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.events[0].kind, EventKind::Delete);
    assert!(get(&store, "/l/k").await.unwrap().is_none());
    assert!(matches!(
        store.lease_keepalive(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.close().await.unwrap();
}

/// A key whose lease record is missing at open (a damaged or hand-edited file) gets its lease
/// back for a grace period and then expires with its event, instead of living for ever
/// (defect M16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_lease_record_is_gone_expires_after_a_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let store = EmbeddedStore::open(options(dir.path(), &clock))
        .await
        .unwrap();
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    put(&store, "/o/k", "v", Some(lease.id)).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    {
        let leases: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("leases");
        let db = redb::Database::open(dir.path().join("berth.redb")).unwrap();
        let write = db.begin_write().unwrap();
        write
            .open_table(leases)
            .unwrap()
            .remove(lease.id.0 as u64)
            .unwrap()
            .expect("the lease record was there");
        write.commit().unwrap();
    }

    let store = EmbeddedStore::open(options(dir.path(), &clock))
        .await
        .unwrap();
    let status = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(status.remaining, Duration::from_secs(60));
    assert_eq!(status.keys, vec![Bytes::from_static(b"/o/k")]);
    assert!(store.lease_grant(Duration::from_secs(5)).await.unwrap().id > lease.id);
    let mut watch = store.watch(Bytes::from_static(b"/o/"), None).await.unwrap();
    clock.advance(Duration::from_millis(60_001));
    let batch = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.events[0].kind, EventKind::Delete);
    assert!(get(&store, "/o/k").await.unwrap().is_none());
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_cannot_be_renewed_or_take_keys_before_the_reaper_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let mut opts = options(dir.path(), &clock);
    // A reaper that never gets to run in this test.
    opts.expiry_check_interval = Duration::from_secs(3600);
    let store = EmbeddedStore::open(opts).await.unwrap();
    let lease = store.lease_grant(Duration::from_secs(2)).await.unwrap();
    clock.advance(Duration::from_secs(3));
    assert!(matches!(
        store.lease_keepalive(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        put(&store, "/late", "v", Some(lease.id)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_never_write_and_checkpoints_write_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = EmbeddedOptions::new(dir.path());
    opts.checkpoint_interval = Duration::from_secs(3600);
    let store = EmbeddedStore::open(opts).await.unwrap();
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let before = store.stats();
    for _ in 0..10_000 {
        store.lease_keepalive(lease.id).await.unwrap();
    }
    assert_eq!(
        store.stats().commits,
        before.commits,
        "keepalives touched the disk"
    );
    // The final checkpoint at close persists the renewed deadline: one commit.
    store.close().await.unwrap();
    assert_eq!(store.stats().commits, before.commits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
            .await
            .unwrap(),
    );
    let before = store.stats();
    let mut tasks = Vec::new();
    for writer in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                put(&*store, format!("/gc/{writer}/{i}"), vec![b'x'; 300], None)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.stats();
    let writes = after.writes - before.writes;
    let commits = after.commits - before.commits;
    assert!(writes >= 3200);
    assert!(
        commits * 4 < writes,
        "{writes} writes took {commits} commits: concurrent writers were not batched"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    let second = EmbeddedStore::open(EmbeddedOptions::new(dir.path())).await;
    match second {
        Err(
            error @ OpenError::Locked {
                holder: Some(pid), ..
            },
        ) => {
            assert_eq!(pid, std::process::id());
            assert!(
                error
                    .to_string()
                    .contains("in use by another berth process")
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("the directory was opened twice"),
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(DATA_FILE)).unwrap();
        let write = db.begin_write().unwrap();
        {
            let definition: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut meta = write.open_table(definition).unwrap();
            meta.insert("format_version", 99).unwrap();
        }
        write.commit().unwrap();
    }
    match EmbeddedStore::open(EmbeddedOptions::new(dir.path())).await {
        Err(error @ OpenError::UnknownFormat { found: 99, .. }) => {
            assert!(error.to_string().contains("format version 99"), "{error}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a file of format 99 was opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    match EmbeddedStore::open(EmbeddedOptions::new(file.join("data"))).await {
        Err(error @ OpenError::DataDir { .. }) => {
            assert!(
                error.to_string().contains("cannot use data directory"),
                "{error}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened under a file"),
    }
}

/// Writes a store with some data and returns the data file's path.
async fn written_store(dir: &std::path::Path) -> std::path::PathBuf {
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir))
        .await
        .unwrap();
    for i in 0..2000 {
        put(&store, format!("/corrupt/{i:05}"), vec![b'v'; 200], None)
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    dir.join(DATA_FILE)
}

/// A damaged file either opens with every key intact (redb repaired it) or is refused with
/// `Corrupt`; it never panics and never serves wrong data.
async fn opens_intact_or_refuses(dir: &std::path::Path) {
    match EmbeddedStore::open(EmbeddedOptions::new(dir)).await {
        Ok(store) => {
            let all = store
                .range(RangeRequest::prefix("/corrupt/"))
                .await
                .unwrap();
            assert_eq!(all.kvs.len(), 2000);
            assert!(all.kvs.iter().all(|kv| kv.value.as_ref() == [b'v'; 200]));
            store.close().await.unwrap();
        }
        Err(OpenError::Corrupt { detail, .. }) => assert!(!detail.is_empty()),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_refused_or_recovered_never_served_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    opens_intact_or_refuses(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_are_refused_or_recovered_never_served_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_store(dir.path()).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for offset in (len / 3..len).step_by(997) {
        bytes[offset] ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    opens_intact_or_refuses(dir.path()).await;
}

/// F3: history is bounded by bytes as well as by revisions. With a 256 KiB budget, 100
/// revisions of 16 KiB (1.6 MiB) leave at most the budget on disk: the oldest are compacted
/// away by the writer itself (no timed compaction runs here), the newest are kept, and the
/// budget holds again after a restart (the sizes are read back from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_compacted_when_it_outgrows_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let opened = || {
        let mut options = EmbeddedOptions::new(dir.path());
        options.retained_bytes = 256 * 1024;
        options.compaction_interval = Duration::from_secs(3600);
        EmbeddedStore::open(options)
    };
    let value = "x".repeat(16 * 1024);
    let store = opened().await.unwrap();
    let first = put(&store, "/big/0", value.clone(), None).await.unwrap();
    let mut last = first;
    for i in 1..100 {
        last = put(&store, format!("/big/{i}"), value.clone(), None)
            .await
            .unwrap();
    }
    let compacted = store.status().await.unwrap().compact_revision.unwrap();
    assert!(compacted > first, "nothing was compacted: {compacted}");
    // About 16 revisions fit in the budget; at least three quarters of it are kept.
    let kept = last.0 - compacted.0 + 1;
    assert!((10..=17).contains(&kept), "{kept} revisions kept");
    let answer = first_of_watch(&store, b"/big/", first).await;
    assert!(
        matches!(answer, Err(StoreError::Compacted { .. })),
        "{answer:?}"
    );
    // The newest revisions are there to watch from.
    let batch = first_of_watch(&store, b"/big/", compacted).await.unwrap();
    assert_eq!(batch.revision, compacted);
    store.close().await.unwrap();
    drop(store);

    let store = opened().await.unwrap();
    for i in 100..120 {
        last = put(&store, format!("/big/{i}"), value.clone(), None)
            .await
            .unwrap();
    }
    let after_restart = store.status().await.unwrap().compact_revision.unwrap();
    let kept = last.0 - after_restart.0 + 1;
    assert!(after_restart > compacted, "the budget was lost at restart");
    assert!(
        (10..=17).contains(&kept),
        "{kept} revisions kept after restart"
    );
    store.close().await.unwrap();
}
