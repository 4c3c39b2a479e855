//! The store benchmarks, embedded and etcd 3.4 side by side in one run on the same machine:
//! durable puts with 1, 16 and 64 writers, lease keepalives, and put-to-event latency with
//! 1,000 watchers on one prefix.

use crate::report::{at_least, at_most, figure, heading, millis, percentile, rate};
use berth_store::embedded::{EmbeddedOptions, EmbeddedStore};
use berth_store::etcd::EtcdStore;
use berth_store::{Store, put};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Durable puts per second with `writers` concurrent writers for `duration`.
async fn puts_per_second<S: Store>(store: Arc<S>, writers: usize, duration: Duration) -> f64 {
    let value = Bytes::from(vec![b'v'; 300]);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut count = 0u64;
                while Instant::now() < deadline {
                    put(
                        &*store,
                        format!("/bench/puts/{writer}/{}", count % 1000),
                        value.clone(),
                        None,
                    )
                    .await
                    .expect("put");
                    count += 1;
                }
                count
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Keepalives per second over 10,000 leases from `tasks` concurrent callers.
async fn keepalives_per_second<S: Store>(store: Arc<S>, tasks: usize, duration: Duration) -> f64 {
    let mut leases = Vec::new();
    for _ in 0..10_000 {
        leases.push(
            store
                .lease_grant(Duration::from_secs(600))
                .await
                .expect("grant")
                .id,
        );
    }
    let leases = Arc::new(leases);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            let leases = leases.clone();
            tokio::spawn(async move {
                let mut count = 0usize;
                while Instant::now() < deadline {
                    for _ in 0..256 {
                        let lease = leases[(count * 7 + task) % leases.len()];
                        store.lease_keepalive(lease).await.expect("keepalive");
                        count += 1;
                    }
                }
                count
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("worker");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Put-to-event latencies seen by `watchers` watchers of one prefix, over `puts` puts spaced
/// `gap` apart.
async fn watch_latencies<S: Store>(
    store: Arc<S>,
    watchers: usize,
    puts: usize,
    gap: Duration,
) -> Vec<Duration> {
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..puts).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut stream = store
            .watch(Bytes::from_static(b"/bench/watch/"), None)
            .await
            .expect("watch");
        let sent_at = sent_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(puts);
            while latencies.len() < puts {
                let Some(Ok(batch)) = stream.next().await else {
                    break;
                };
                let arrived = base.elapsed();
                for event in batch.events {
                    let key = String::from_utf8_lossy(&event.kv.key);
                    let index: usize = key.rsplit('/').next().unwrap_or("0").parse().unwrap_or(0);
                    let sent = Duration::from_nanos(sent_at[index].load(Ordering::Acquire));
                    latencies.push(arrived.saturating_sub(sent));
                }
            }
            latencies
        }));
    }
    // Let every watch task reach its first wait before the first put.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for index in 0..puts {
        sent_at[index].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        put(
            &*store,
            format!("/bench/watch/{index}"),
            vec![b'w'; 300],
            None,
        )
        .await
        .expect("put");
        tokio::time::sleep(gap).await;
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("watchers finish")
                .expect("watcher"),
        );
    }
    all
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir()?;
    let embedded = Arc::new(EmbeddedStore::open(EmbeddedOptions::new(dir.path())).await?);
    let etcd_server = berth_testkit::EtcdServer::start();
    let etcd = Arc::new(EtcdStore::connect(&[etcd_server.endpoint()], &Default::default()).await?);

    heading(
        "store: durable puts of 300-byte values (embedded vs etcd 3.4, same machine, same run)",
    );
    for writers in [1, 16, 64] {
        let before = embedded.stats();
        let ours = puts_per_second(embedded.clone(), writers, duration).await;
        let after = embedded.stats();
        let batch =
            (after.writes - before.writes) as f64 / (after.commits - before.commits).max(1) as f64;
        let theirs = puts_per_second(etcd.clone(), writers, duration).await;
        let ratio = ours / theirs;
        figure(
            &format!("{writers:>2} writers: embedded (avg {batch:.1} writes per fsync)"),
            rate(ours),
            (writers == 64).then(|| at_least(ours, 20_000.0)).flatten(),
        );
        figure(&format!("{writers:>2} writers: etcd"), rate(theirs), None);
        figure(
            &format!("{writers:>2} writers: embedded / etcd"),
            format!("{ratio:.2}x"),
            (writers == 64).then_some((ratio >= 2.0, ">= 2.00x".to_string())),
        );
    }

    heading("store: lease keepalives over 10,000 leases (in process)");
    let ours = keepalives_per_second(embedded.clone(), 2, duration).await;
    figure("embedded keepalives", rate(ours), at_least(ours, 300_000.0));
    let theirs = keepalives_per_second(etcd.clone(), 64, duration).await;
    figure(
        "etcd keepalives (64 callers, one shared stream)",
        rate(theirs),
        None,
    );

    heading("store: put-to-event latency, 1,000 watchers on one prefix, 200 puts 10 ms apart");
    for (name, mut samples) in [
        (
            "embedded",
            watch_latencies(embedded.clone(), 1000, 200, Duration::from_millis(10)).await,
        ),
        (
            "etcd",
            watch_latencies(etcd.clone(), 1000, 200, Duration::from_millis(10)).await,
        ),
    ] {
        let count = samples.len();
        let p50 = percentile(&mut samples, 50.0);
        let p99 = percentile(&mut samples, 99.0);
        figure(
            &format!("{name}: p50 over {count} deliveries"),
            millis(p50),
            None,
        );
        figure(
            &format!("{name}: p99"),
            millis(p99),
            (name == "embedded")
                .then(|| at_most(p99, Duration::from_millis(10)))
                .flatten(),
        );
    }
    embedded.close().await?;
    Ok(())
}
