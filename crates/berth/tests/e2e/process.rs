//! The berth process itself: clear one-line failures at start-up, a graceful stop on SIGTERM,
//! no acknowledged write lost to `kill -9` (20 rounds), and a damaged data file refused.

use crate::instances::registration;
use crate::support::{Berth, data_dir, health_revision, run_berth, wait_for_metric};
use berth_client::Client;
use futures::StreamExt;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Exactly one error line, and never a panic or a backtrace.
pub fn assert_one_clear_error(stderr: &str, expected: &str) {
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    assert!(
        !stderr.contains("stack backtrace"),
        "a backtrace:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("error") || l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    assert!(
        errors[0].contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn configuration_errors_name_the_problem_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let (code, _, stderr) = run_berth(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert_one_clear_error(&stderr, "unknown field `lisen`");

    let (code, _, stderr) = run_berth(&["serve", "--store", "redis://x:1"]);
    assert_eq!(code, Some(2));
    assert_one_clear_error(&stderr, "not a store");

    let (code, _, stderr) = run_berth(&["serve", "--listen", "nowhere"]);
    assert_eq!(code, Some(2));
    assert_one_clear_error(&stderr, "not an address");
}

#[test]
fn start_up_failures_are_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();

    // An etcd nobody runs.
    let (code, _, stderr) = run_berth(&[
        "serve",
        "--listen=127.0.0.1:0",
        "--store=etcd://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(1));
    assert_one_clear_error(&stderr, "cannot reach etcd at 127.0.0.1:1");

    // A data directory that cannot be created (tests run as root, so a file stands in the
    // way instead of a permission).
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let under_file = blocker.join("data");
    let (code, _, stderr) = run_berth(&[
        "serve",
        "--listen=127.0.0.1:0",
        "--data-dir",
        under_file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert_one_clear_error(&stderr, "cannot use data directory");

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let (code, _, stderr) = run_berth(&[
        "serve",
        "--listen",
        &address,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert_one_clear_error(&stderr, "cannot listen on");
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let (_keep, dir) = data_dir();
    let first = Berth::embedded(&dir);
    let (code, _, stderr) = run_berth(&[
        "serve",
        "--listen=127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert_one_clear_error(
        &stderr,
        &format!("in use by another berth process (pid {})", first.pid()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_and_long_polls_then_exits_0() {
    let (_keep, dir) = data_dir();
    let mut berth = Berth::embedded(&dir);
    let client = berth.client();
    client
        .register("drain", &registration("10.6.0.1", 80, 60_000))
        .await
        .unwrap();
    for _ in 0..3 {
        client.heartbeat("drain", "10.6.0.1:80").await.unwrap();
    }
    let index = client.instances("drain", &[]).await.unwrap().index;
    let mut stream = client.events(None, None).await.unwrap();
    let long_poll = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .instances(
                    "drain",
                    &[("index", index.to_string()), ("wait", "5m".into())],
                )
                .await
        })
    };
    wait_for_metric(&berth.base, "berth_http_blocking_queries", 1.0).await;

    let status = tokio::task::block_in_place(|| berth.terminate(Duration::from_secs(10)));
    assert!(status.success(), "exit status {status:?}");
    let polled = tokio::time::timeout(Duration::from_secs(5), long_poll)
        .await
        .expect("the long poll ended")
        .unwrap();
    assert!(polled.is_ok(), "the long poll got its answer: {polled:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(
        matches!(ended, Ok(None | Some(Err(_)))),
        "the event stream ended"
    );
    let log = berth.log().join("\n");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("\"stopped\""), "{log}");

    let again = berth.restart();
    let list = again.client().instances("drain", &[]).await.unwrap();
    assert_eq!(list.instances.len(), 1);
}

/// What the test knows each instance id should be after a restart.
#[derive(Default)]
struct Ledger {
    present: HashMap<String, bool>,
    in_flight: HashSet<String>,
    max_revision: i64,
}

async fn writer(client: Client, ledger: Arc<Mutex<Ledger>>, round: usize, writer: usize) {
    let mut mine: Vec<String> = Vec::new();
    for n in 0.. {
        let deregister = !mine.is_empty() && rand::rng().random_ratio(1, 4);
        let id = if deregister {
            mine.swap_remove(rand::rng().random_range(0..mine.len()))
        } else {
            format!("r{round}-w{writer}-{n}")
        };
        ledger.lock().unwrap().in_flight.insert(id.clone());
        let result = if deregister {
            client.deregister("crash", &id).await.map(|()| None)
        } else {
            let mut registration = registration("10.5.0.1", 1000 + (n % 60000) as u16, 3_600_000);
            registration.id = Some(id.clone());
            client
                .register("crash", &registration)
                .await
                .map(|(instance, _)| Some(instance.revision_index))
        };
        let Ok(revision) = result else { return };
        let mut ledger = ledger.lock().unwrap();
        ledger.in_flight.remove(&id);
        ledger.present.insert(id.clone(), !deregister);
        if let Some(revision) = revision {
            ledger.max_revision = ledger.max_revision.max(revision);
            mine.push(id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let (_keep, dir) = data_dir();
    let mut berth = Berth::embedded(&dir);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut last_revision = 0;
    for round in 0..20 {
        let client = berth.client();
        let writers: Vec<_> = (0..8)
            .map(|w| tokio::spawn(writer(client.clone(), ledger.clone(), round, w)))
            .collect();
        let pause = rand::rng().random_range(50..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        berth.kill_hard();
        for task in writers {
            let _ = task.await;
        }
        berth = berth.restart();

        let revision = health_revision(&berth.base).await;
        let listed: HashSet<String> = berth
            .client()
            .instances("crash", &[])
            .await
            .unwrap()
            .instances
            .into_iter()
            .map(|i| i.id)
            .collect();
        let mut ledger = ledger.lock().unwrap();
        assert!(
            revision >= ledger.max_revision && revision >= last_revision,
            "round {round}: revision went back to {revision} (acknowledged {}, seen {last_revision})",
            ledger.max_revision
        );
        last_revision = revision;
        for (id, present) in &ledger.present {
            if ledger.in_flight.contains(id) {
                continue;
            }
            assert_eq!(
                listed.contains(id),
                *present,
                "round {round}: acknowledged {} of {id} was lost",
                if *present {
                    "registration"
                } else {
                    "deregistration"
                }
            );
        }
        // Writes that were in flight at the kill may or may not have landed: adopt the outcome.
        let in_flight: Vec<String> = ledger.in_flight.drain().collect();
        for id in in_flight {
            let present = listed.contains(&id);
            ledger.present.insert(id, present);
        }
        assert!(!ledger.present.is_empty());
    }
}

async fn damaged_file_is_refused_or_recovered_whole(damage: impl FnOnce(&std::path::Path)) {
    let (_keep, dir) = data_dir();
    let mut berth = Berth::embedded(&dir);
    let client = berth.client();
    for port in 1..=300 {
        client
            .register("keep", &registration("10.4.0.1", port, 3_600_000))
            .await
            .unwrap();
    }
    assert!(berth.terminate(Duration::from_secs(10)).success());
    damage(&dir.join(berth_store::embedded::DATA_FILE));

    match Berth::try_start(&[format!("--data-dir={}", dir.display())]) {
        Ok(started) => {
            // Recovered: then every record must be intact.
            let list = started.client().instances("keep", &[]).await.unwrap();
            assert_eq!(list.instances.len(), 300);
        }
        Err(log) => {
            let log = log.join("\n");
            assert_one_clear_error(&log, "is damaged and was not opened");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_data_file_is_refused_clearly_or_recovered_whole() {
    damaged_file_is_refused_or_recovered_whole(|path| {
        let len = std::fs::metadata(path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len * 2 / 3).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_data_file_is_refused_clearly_or_recovered_whole() {
    damaged_file_is_refused_or_recovered_whole(|path| {
        let mut bytes = std::fs::read(path).unwrap();
        let len = bytes.len();
        for offset in (len / 4..len).step_by(509) {
            bytes[offset] ^= 0xa5;
        }
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}
