//! Hostile input and faults, each a recipe of the review (`defects.md`) turned into a test:
//! a YAML alias bomb, free-form JSON nested past what berth reads back, an explicit port that
//! used to leave no block for new families, a disk that fills up, connections that never send
//! a request, and more.

use crate::support::{Berth, Body, data_dir, send};
use serde_json::{Value, json};

/// F2: nested aliases multiply (a few megabytes stand for ~10¹⁰ values); berth refuses anchors
/// and aliases before building anything, and stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_alias_bomb_is_refused_without_building_it() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let pad = vec!["0"; 1_100_000].join(", ");
    let level = |anchor: &str, item: &str| format!("{anchor}[{}]", vec![item; 100].join(", "));
    let bomb = [
        "kinds: []".to_string(),
        "applications: []".into(),
        "backends:".into(),
        "- name: b1".into(),
        "  app: web".into(),
        "  version: '1'".into(),
        format!("  pad: [{pad}]"),
        format!("  l1: {}", level("&a ", "x")),
        format!("  l2: {}", level("&b ", "*a")),
        format!("  l3: {}", level("&c ", "*b")),
        format!("  l4: {}", level("&d ", "*c")),
        format!("  l5: {}", level("", "*d")),
    ]
    .join("\n");
    let started = std::time::Instant::now();
    let refused = crate::support::http()
        .post(format!("{}/v1/catalog/import", berth.base))
        .header("content-type", "application/yaml")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anchors and aliases"),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // A plain YAML export still imports.
    let plain = "kinds: []\napplications: []\nbackends:\n- name: b1\n  app: web\n  version: '1'\n";
    let imported = crate::support::http()
        .post(format!("{}/v1/catalog/import", berth.base))
        .header("content-type", "application/yaml")
        .body(plain)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 200, "{}", imported.text().await.unwrap());
}

/// F9: free-form fields nested past the bound are refused with the field named; nothing is
/// stored that berth could not read back, so the name stays free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_extras_are_refused_and_leave_the_name_free() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let deep = format!(
        r#"{{"name":"ghost","app":"web","version":"1","x":{}{}}}"#,
        "[".repeat(126),
        "]".repeat(126)
    );
    for path in ["/v1/backends", "/backends"] {
        let reply = crate::support::http()
            .post(format!("{}{path}", berth.base))
            .header("content-type", "application/json")
            .body(deep.clone())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        assert!(status == 422 || status == 400, "{path}: {status} {text}");
        assert!(
            text.contains("nests") || text.contains("levels"),
            "{path}: {text}"
        );
    }
    let missing = send(&berth.base, "GET", "/v1/backends/ghost", Body::Empty, &[]).await;
    assert_eq!(missing.status, 404);
    let fine = send(
        &berth.base,
        "POST",
        "/v1/backends",
        Body::Json(json!({"name": "ghost", "app": "web", "version": "1", "x": [[[1]]]})),
        &[],
    )
    .await;
    assert_eq!(fine.status, 201, "{}", fine.text);
    let read = send(&berth.base, "GET", "/v1/backends/ghost", Body::Empty, &[]).await;
    assert_eq!(read.json()["x"], json!([[[1]]]));
}

/// F6: an explicit port near the ceiling used to move the high-water mark there, leaving no
/// block for any new family, for good. Now it moves nothing; and an operator can see the
/// allocator and repair a mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_port_never_exhausts_the_allocator() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let post = |body: Value| send(&berth.base, "POST", "/v1/apps", Body::Json(body), &[]);
    let squatter = post(json!({"id": "squatter", "kind": "play", "external": 64991})).await;
    assert_eq!(squatter.status, 201, "{}", squatter.text);
    let fresh = post(json!({"id": "newfamily", "kind": "play"})).await;
    assert_eq!(fresh.status, 201, "{}", fresh.text);
    assert_eq!(fresh.json()["ports"][0]["external"], 6011);
    // An explicit port inside a fresh block keeps the block to itself.
    let inside = post(json!({"id": "pinned", "kind": "play", "external": 6025})).await;
    assert_eq!(inside.status, 201);
    let next = post(json!({"id": "another", "kind": "play"})).await;
    assert_eq!(next.json()["ports"][0]["external"], 6031, "{}", next.text);
    // flow's door: the same.
    let flow = send(
        &berth.base,
        "POST",
        "/applications",
        Body::Form(&[
            ("id", "flowsquat"),
            ("service", "play"),
            ("external", "64981"),
        ]),
        &[],
    )
    .await;
    assert_eq!(flow.status, 201, "{}", flow.text);
    let third = post(json!({"id": "third", "kind": "play"})).await;
    assert_eq!(third.json()["ports"][0]["external"], 6041);

    let allocator = send(
        &berth.base,
        "GET",
        "/v1/catalog/allocator",
        Body::Empty,
        &[],
    )
    .await;
    let status = allocator.json();
    assert_eq!(status["high_water"], 6041);
    assert_eq!(status["highest_claimed"], 64991);
    assert_eq!(status["next_new_family_port"], 6052);
    // A repair: an operator moves the mark (say, a store poisoned before this fix).
    let repaired = send(
        &berth.base,
        "PUT",
        "/v1/catalog/allocator",
        Body::Json(json!({"high_water": 6500})),
        &[],
    )
    .await;
    assert_eq!(repaired.status, 200, "{}", repaired.text);
    assert_eq!(repaired.json()["next_new_family_port"], 6512);
    let outside = send(
        &berth.base,
        "PUT",
        "/v1/catalog/allocator",
        Body::Json(json!({"high_water": 70})),
        &[],
    )
    .await;
    assert_eq!(outside.status, 422);
    assert_eq!(outside.json()["error"]["field"], "high_water");
}

/// A tmpfs of `megabytes`, mounted for the test and unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a small tmpfs needs root (the suite runs as root in CI)"
        );
        SmallDisk { path, _dir: dir }
    }

    /// Writes zeros until the filesystem is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join("fill")).unwrap();
        let block = vec![0u8; 1 << 20];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }

    fn make_room(&self) {
        std::fs::remove_file(self.path.join("fill")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.path)
            .status();
    }
}

/// F3: when the disk fills, the first failed commit makes the store refuse writes (503 naming
/// the cause), `/health` answers 503, and berth exits non-zero so its supervisor restarts it;
/// restarted with room on the disk, it takes writes again and has lost nothing it
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_health_red_and_berth_exits_to_be_restarted_losing_nothing() {
    let disk = SmallDisk::mount(24);
    let data = disk.path.join("data");
    let mut berth = Berth::embedded(&data);
    let meta: serde_json::Map<String, Value> = (0..60)
        .map(|i| (format!("k{i}"), json!("v".repeat(1000))))
        .collect();
    let register = |i: usize| {
        let base = berth.base.clone();
        let meta = meta.clone();
        async move {
            send(
                &base,
                "PUT",
                &format!("/v1/services/big/instances/i{i}"),
                Body::Json(json!({"address": "10.0.0.1", "port": 1 + (i % 60000), "ttl_ms": 3_600_000, "meta": meta})),
                &[],
            )
            .await
        }
    };
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        assert_eq!(register(i).await.status, 201);
        acknowledged.push(i);
    }
    disk.fill();
    let mut refused = None;
    for i in 20..5_000 {
        let reply = register(i).await;
        match reply.status {
            201 => acknowledged.push(i),
            _ => {
                refused = Some(reply);
                break;
            }
        }
    }
    let refused = refused.expect("a write failed once the disk was full");
    let failed_at = std::time::Instant::now();
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.text.contains("failed to write"), "{}", refused.text);
    let health = send(&berth.base, "GET", "/health", Body::Empty, &[]).await;
    let to_red = failed_at.elapsed();
    assert_eq!(health.status, 503, "{}", health.text);
    assert!(
        health.json()["error"]
            .as_str()
            .unwrap()
            .contains("failed to write")
    );
    let heartbeat = send(
        &berth.base,
        "PUT",
        "/v1/services/big/instances/i0/heartbeat",
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!(heartbeat.status, 503, "a failed store renews nothing");
    let exited = berth_testkit::wait_until(std::time::Duration::from_secs(10), || {
        berth.exited().is_some()
    });
    assert!(exited, "berth did not exit after its store failed");
    let to_exit = failed_at.elapsed();
    let status = berth.exited().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(berth.log().iter().any(|l| l.contains("the store failed")));
    eprintln!("disk full: /health 503 after {to_red:?}, exit after {to_exit:?}");

    disk.make_room();
    let restarted = berth.restart();
    let started = std::time::Instant::now();
    let written = send(
        &restarted.base,
        "PUT",
        "/v1/services/after/instances/x",
        Body::Json(json!({"address": "10.0.0.2", "port": 80})),
        &[],
    )
    .await;
    assert_eq!(written.status, 201, "{}", written.text);
    eprintln!(
        "room again: a write succeeded {:?} after the restart",
        started.elapsed()
    );
    let listed = restarted
        .client()
        .instances("big", &[])
        .await
        .unwrap()
        .instances;
    let present: std::collections::BTreeSet<String> = listed.into_iter().map(|i| i.id).collect();
    for i in acknowledged {
        assert!(
            present.contains(&format!("i{i}")),
            "acknowledged i{i} was lost"
        );
    }
}

/// F7: every cap refuses with its setting named: live instances per service and in total
/// (409), backends (409), event streams and blocking queries over their caps (503 with
/// `Retry-After`). What was refused leaves room as soon as the holder goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_refuse_and_name_their_setting() {
    let (_keep, dir) = data_dir();
    let berth = Berth::start(&[
        format!("--data-dir={}", dir.display()),
        "--max-instances-per-service=2".into(),
        "--max-instances=3".into(),
        "--max-routing-entities=1".into(),
        "--max-event-streams=2".into(),
        "--max-blocking-queries=1".into(),
    ]);
    let put = |service: &'static str, id: &'static str| {
        let base = berth.base.clone();
        async move {
            send(
                &base,
                "PUT",
                &format!("/v1/services/{service}/instances/{id}"),
                Body::Json(json!({"address": "10.0.0.1", "port": 80})),
                &[],
            )
            .await
        }
    };
    assert_eq!(put("web", "a").await.status, 201);
    assert_eq!(put("web", "b").await.status, 201);
    let third = put("web", "c").await;
    assert_eq!(third.status, 409, "{}", third.text);
    assert_eq!(third.json()["error"]["code"], "limit_reached");
    assert!(
        third.text.contains("instances.max_per_service"),
        "{}",
        third.text
    );
    assert_eq!(
        put("web", "a").await.status,
        200,
        "an existing instance still renews"
    );
    assert_eq!(put("api", "a").await.status, 201);
    let total = put("db", "a").await;
    assert_eq!(total.status, 409);
    assert!(total.text.contains("instances.max_total"), "{}", total.text);

    let backend = |name: &str| Body::Json(json!({"name": name, "app": "web", "version": "1"}));
    assert_eq!(
        send(&berth.base, "POST", "/v1/backends", backend("one"), &[])
            .await
            .status,
        201
    );
    let second = send(&berth.base, "POST", "/v1/backends", backend("two"), &[]).await;
    assert_eq!(second.status, 409);
    assert!(
        second.text.contains("catalog.max_routing_entities"),
        "{}",
        second.text
    );

    let client = berth.client();
    let first = client.events(None, None).await.unwrap();
    let _second = client.events(None, None).await.unwrap();
    let over = crate::support::http()
        .get(format!("{}/v1/events", berth.base))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 503);
    assert_eq!(over.headers()["retry-after"], "1");
    assert!(
        over.text()
            .await
            .unwrap()
            .contains("http.max_event_streams")
    );
    drop(first);
    let reopened = berth_testkit::wait_until(std::time::Duration::from_secs(5), || {
        futures::executor::block_on(client.events(None, None)).is_ok()
    });
    assert!(reopened, "a closed stream frees its place");

    let index = client.instances("web", &[]).await.unwrap().index;
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .instances(
                    "web",
                    &[("index", index.to_string()), ("wait", "5s".into())],
                )
                .await
        })
    };
    let full = berth_testkit::wait_until(std::time::Duration::from_secs(5), || {
        let reply = futures::executor::block_on(
            crate::support::http()
                .get(format!(
                    "{}/v1/services/web/instances?index={index}&wait=5s",
                    berth.base
                ))
                .send(),
        )
        .unwrap();
        reply.status() == 503
    });
    assert!(full, "a second blocking query is refused while one waits");
    waiting.abort();
}

/// F4: 1,000 connections that never finish a request are held open against the server, and
/// heartbeats of existing clients keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_working_while_a_thousand_slow_connections_are_held() {
    use std::io::Write;
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    client
        .register(
            "web",
            &berth_client::Registration {
                id: Some("a".into()),
                address: "10.0.0.1".into(),
                port: 80,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut slow = Vec::new();
    for i in 0..1_000 {
        let mut socket = std::net::TcpStream::connect(&berth.address).unwrap();
        // Half a request line, or nothing at all.
        if i % 2 == 0 {
            socket
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        slow.push(socket);
    }
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = std::time::Instant::now();
        client
            .heartbeat("web", "a")
            .await
            .expect("a heartbeat while slow connections are held");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("heartbeat p99 with 1,000 slow connections held: {p99:?}");
    assert!(p99 < std::time::Duration::from_secs(1), "p99 {p99:?}");
    drop(slow);
}

/// F4: a connection that sends half a request line, or nothing, is closed after the header
/// read timeout instead of being kept for ever.
#[test]
fn a_connection_that_never_finishes_its_request_is_closed() {
    use std::io::{Read, Write};
    let (_keep, dir) = data_dir();
    let berth = Berth::start(&[
        format!("--data-dir={}", dir.display()),
        "--header-read-timeout=1s".into(),
    ]);
    for first in [&b"GET /health HTTP/1.1\r\nHost: x\r\n"[..], b""] {
        let mut socket = std::net::TcpStream::connect(&berth.address).unwrap();
        socket.write_all(first).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = socket.read_to_end(&mut rest);
        assert!(read.is_ok(), "not closed within 5 s: {read:?}");
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(900)
                && took < std::time::Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
}

/// F5: with 20,000 instances and 80 instances of the largest metadata (over 4 MiB in one
/// range, etcd's default answer limit), a new node on the same etcd starts, a stream asking
/// for history the feed no longer holds gets a reset with everything, and a node whose watch
/// fell behind (stopped while big records were written) catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_twenty_thousand_instances_and_big_metadata() {
    use futures::StreamExt;
    let etcd = berth_testkit::EtcdServer::start();
    let first = Berth::on_etcd(&etcd);
    let behind = Berth::on_etcd(&etcd);
    let client = first.client();
    let meta: std::collections::BTreeMap<String, String> = (0..64)
        .map(|i| (format!("k{i:02}"), "v".repeat(1000)))
        .collect();
    behind.signal(rustix::process::Signal::STOP);
    futures::stream::iter(0..80)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            let meta = meta.clone();
            async move {
                client
                    .register(
                        "big",
                        &berth_client::Registration {
                            id: Some(format!("b{i}")),
                            address: "10.0.0.1".into(),
                            port: 1000 + i as u16,
                            ttl_ms: Some(3_600_000),
                            meta,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
    behind.signal(rustix::process::Signal::CONT);
    let started = std::time::Instant::now();
    futures::stream::iter(0..20_000u32)
        .for_each_concurrent(128, |i| {
            let client = client.clone();
            async move {
                // Two services: one may hold 10,000 (instances.max_per_service).
                client
                    .register(
                        &format!("many-{}", i % 2),
                        &berth_client::Registration {
                            id: Some(format!("m{i}")),
                            address: format!("10.1.{}.{}", i / 250, i % 250 + 1),
                            port: 80,
                            ttl_ms: Some(3_600_000),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
    eprintln!("20,000 registrations on etcd in {:?}", started.elapsed());

    // The node that was stopped while 5 MB of records went by caught up.
    let caught_up = behind
        .client()
        .instances("big", &[("consistent", "true".into())])
        .await
        .unwrap();
    assert_eq!(caught_up.instances.len(), 80);
    // A new node reads it all at start (over etcd's 4 MiB in one range before paging).
    let fresh = Berth::on_etcd(&etcd);
    let services = fresh.client().services().await.unwrap();
    let count = |name: &str| {
        services
            .services
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.instances)
    };
    assert_eq!(
        (count("big"), count("many-0"), count("many-1")),
        (80, 10_000, 10_000)
    );
    // History the feed no longer holds: a reset with every instance.
    let mut events = fresh.client().events(None, Some(1)).await.unwrap();
    let reset = tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reset.kind, "reset");
    assert_eq!(reset.data["instances"].as_array().unwrap().len(), 20_080);
}

/// M6 and M7: an id twice in one import is a 422 naming both places (not a 500); a revision
/// at the end of the numbers is refused or reset, never wrapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_twice_in_an_import_and_the_largest_revision_are_clear_errors() {
    use futures::StreamExt;
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let import = json!({"kinds": [], "applications": [
        {"id": "dup", "ports": [{"kind": "play", "external": 7001, "internal": 9000}], "dependencies": []},
        {"id": "dup", "ports": [{"kind": "play", "external": 7002, "internal": 9000}], "dependencies": []}]});
    let reply = send(
        &berth.base,
        "POST",
        "/v1/catalog/import",
        Body::Json(import),
        &[],
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.json()["error"]["field"], "applications[1].id");
    let apps = send(&berth.base, "GET", "/v1/apps", Body::Empty, &[]).await;
    assert!(!apps.text.contains("dup"), "nothing was imported");

    let mut events = berth
        .client()
        .events(None, Some(i64::MAX))
        .await
        .expect("a stream that starts with a reset");
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.kind, "reset", "{first:?}");
    let blocking = send(
        &berth.base,
        "GET",
        &format!("/v1/services/web/instances?index={}&wait=1s", i64::MAX),
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!(blocking.status, 200, "{}", blocking.text);
}
