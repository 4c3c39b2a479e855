//! Lease grants are answered without an fsync (the next durable commit carries them to disk).
//! This checks what that must never cost: after a crash, a lease with a key survives, and no
//! lease id handed out before the crash is handed out again. The test runs itself as a child
//! process that grants, writes, grants again and aborts; the parent then reopens the store.
#![allow(
    clippy::disallowed_methods,
    reason = "the child learns its role from a variable its parent sets"
)]

use berth_store::embedded::{EmbeddedOptions, EmbeddedStore};
use berth_store::{LeaseId, Store, get, put};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

const CHILD: &str = "BERTH_TEST_CRASH_CHILD_DIR";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(CHILD) {
        Ok(dir) => runtime.block_on(child(&dir)),
        Err(_) => {
            runtime.block_on(parent());
            println!("test lease_ids_after_crash ... ok");
        }
    }
}

async fn child(dir: &str) {
    let store = EmbeddedStore::open(EmbeddedOptions::new(dir))
        .await
        .unwrap();
    let kept = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    put(&store, "/crash/kept", "v", Some(kept.id))
        .await
        .unwrap();
    let loose_a = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let loose_b = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    println!("{} {} {}", kept.id.0, loose_a.id.0, loose_b.id.0);
    std::io::stdout().flush().unwrap();
    // A crash: no destructor, no final checkpoint, no close.
    std::process::abort();
}

async fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child was meant to abort");
    let ids: Vec<i64> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "child output: {output:?}");

    let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path()))
        .await
        .unwrap();
    // The lease that carried a durable write is there, with its key.
    let kept = get(&store, "/crash/kept")
        .await
        .unwrap()
        .expect("the acknowledged put");
    assert_eq!(kept.lease, Some(LeaseId(ids[0])));
    let status = store.lease_time_to_live(LeaseId(ids[0])).await.unwrap();
    assert_eq!(status.keys.len(), 1);
    // Whatever survived, a new lease never reuses an id handed out before the crash.
    let fresh = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert!(
        ids.iter().all(|old| fresh.id.0 > *old),
        "lease id {} was handed out again (before the crash: {ids:?})",
        fresh.id.0
    );
    store.close().await.unwrap();
}
