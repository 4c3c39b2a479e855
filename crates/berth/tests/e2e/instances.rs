//! Live instances end to end, against a real `berth serve` on each store backend (the embedded
//! store in a temporary directory, and a real etcd): register, query, heartbeat, expiry with a
//! timely offline event, blocking queries, event resume, concurrency, and bad input.

use crate::support::{Berth, health_revision, on_both_stores, wait_for_metric};
use berth_client::{Client, EventStream, Registration};
use futures::StreamExt;
use std::time::{Duration, SystemTime};

on_both_stores!(
    register_heartbeat_expire_with_a_timely_offline_event,
    blocking_query_wakes_on_change,
    event_stream_resumes_without_loss,
    two_hundred_concurrent_registrations_land,
    bad_bodies_get_json_errors_and_change_nothing,
);

const WAIT: Duration = Duration::from_secs(15);

pub fn registration(address: &str, port: u16, ttl_ms: u64) -> Registration {
    Registration {
        address: address.into(),
        port,
        ttl_ms: Some(ttl_ms),
        ..Registration::default()
    }
}

pub async fn next_event(events: &mut EventStream) -> berth_client::Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("a well-formed event")
}

fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).expect("an RFC 3339 time")
}

async fn register_heartbeat_expire_with_a_timely_offline_event(berth: &Berth) {
    let client = berth.client();
    let mut events = client.events(Some("life"), None).await.unwrap();
    let (instance, created) = client
        .register("life", &registration("10.9.0.1", 80, 2_000))
        .await
        .unwrap();
    assert!(created);
    let online = next_event(&mut events).await;
    assert_eq!(online.kind, "online");
    assert_eq!(online.data["instance"]["id"], "10.9.0.1:80");
    assert_eq!(
        client.instances("life", &[]).await.unwrap().instances.len(),
        1
    );

    // Heartbeats keep it well past its TTL.
    let mut expires_at = parse_time(instance.expires_at.as_deref().unwrap());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ack = client.heartbeat("life", &instance.id).await.unwrap();
        expires_at = parse_time(&ack.expires_at);
    }
    assert_eq!(
        client.instances("life", &[]).await.unwrap().instances.len(),
        1
    );

    // Then silence: the offline event says `expired` and comes at most 1 s after expiry.
    let offline = next_event(&mut events).await;
    let arrived = SystemTime::now();
    assert_eq!(offline.kind, "offline");
    assert_eq!(offline.data["reason"], "expired");
    let late = arrived
        .duration_since(expires_at)
        .unwrap_or_else(|early| panic!("offline {:?} before expires_at", early.duration()));
    assert!(
        late <= Duration::from_secs(1),
        "offline event {late:?} after expiry"
    );

    assert!(
        client
            .instances("life", &[])
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    let gone = client.heartbeat("life", &instance.id).await.unwrap_err();
    assert_eq!(gone.status(), Some(404));
}

async fn blocking_query_wakes_on_change(berth: &Berth) {
    let client = berth.client();
    client
        .register("blocking", &registration("10.9.1.1", 80, 30_000))
        .await
        .unwrap();
    let first = client.instances("blocking", &[]).await.unwrap();

    let waiting = {
        let client: Client = client.clone();
        let index = first.index;
        tokio::spawn(async move {
            client
                .instances(
                    "blocking",
                    &[("index", index.to_string()), ("wait", "30s".into())],
                )
                .await
        })
    };
    wait_for_metric(&berth.base, "berth_http_blocking_queries", 1.0).await;
    assert!(
        !waiting.is_finished(),
        "a blocking query returned without a change"
    );
    client
        .register("blocking", &registration("10.9.1.2", 80, 30_000))
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the blocking query woke up")
        .unwrap()
        .unwrap();
    assert!(woken.index > first.index);
    assert_eq!(woken.instances.len(), 2);

    // Without a change it returns after `wait` with the same index.
    let started = std::time::Instant::now();
    let quiet = client
        .instances(
            "blocking",
            &[("index", woken.index.to_string()), ("wait", "400ms".into())],
        )
        .await
        .unwrap();
    assert_eq!(quiet.index, woken.index);
    assert!(started.elapsed() >= Duration::from_millis(350));
}

async fn event_stream_resumes_without_loss(berth: &Berth) {
    let client = berth.client();
    let mut events = client.events(Some("resume"), None).await.unwrap();
    client
        .register("resume", &registration("10.9.2.1", 80, 30_000))
        .await
        .unwrap();
    let first = next_event(&mut events).await;
    let last_seen: i64 = first.id.as_deref().unwrap().parse().unwrap();
    drop(events); // the client goes away

    // While it is away: two registrations, an update, a deregistration.
    client
        .register("resume", &registration("10.9.2.2", 80, 30_000))
        .await
        .unwrap();
    client
        .register("resume", &registration("10.9.2.3", 80, 30_000))
        .await
        .unwrap();
    let mut heavier = registration("10.9.2.2", 80, 30_000);
    heavier.weight = Some(9);
    client.register("resume", &heavier).await.unwrap();
    client.deregister("resume", "10.9.2.1:80").await.unwrap();

    let mut resumed = client
        .events(Some("resume"), Some(last_seen))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = next_event(&mut resumed).await;
        seen.push(format!(
            "{} {}",
            event.kind,
            event.data["instance"]["id"].as_str().unwrap()
        ));
    }
    assert_eq!(
        seen,
        vec![
            "online 10.9.2.2:80",
            "online 10.9.2.3:80",
            "updated 10.9.2.2:80",
            "offline 10.9.2.1:80"
        ]
    );
}

async fn two_hundred_concurrent_registrations_land(berth: &Berth) {
    let client = berth.client();
    let mut tasks = Vec::new();
    for i in 0..200u16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .register(
                    "crowd",
                    &registration(
                        &format!("10.8.{}.{}", i / 200, i % 200 + 1),
                        7000 + i,
                        60_000,
                    ),
                )
                .await
        }));
    }
    for task in tasks {
        let (_, created) = task.await.unwrap().unwrap();
        assert!(created);
    }
    let list = client.instances("crowd", &[]).await.unwrap();
    assert_eq!(list.instances.len(), 200);
}

async fn bad_bodies_get_json_errors_and_change_nothing(berth: &Berth) {
    let http = crate::support::http();
    let url = format!("{}/v1/services/bad/instances/x", berth.base);
    let before = health_revision(&berth.base).await;
    let ten_megabytes = format!(
        "{{\"address\":\"10.0.0.1\",\"port\":80,\"version\":\"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (
            "bad address",
            r#"{"address":"10.0.0.999","port":80}"#.into(),
            422,
            Some("address"),
        ),
        (
            "port 0",
            r#"{"address":"10.0.0.1","port":0}"#.into(),
            422,
            Some("port"),
        ),
        (
            "port 70000",
            r#"{"address":"10.0.0.1","port":70000}"#.into(),
            422,
            Some("port"),
        ),
        (
            "ttl 0",
            r#"{"address":"10.0.0.1","port":80,"ttl_ms":0}"#.into(),
            422,
            Some("ttl_ms"),
        ),
        (
            "unknown field",
            r#"{"address":"10.0.0.1","port":80,"colour":"red"}"#.into(),
            400,
            Some("colour"),
        ),
        (
            "wrong type",
            r#"{"address":"10.0.0.1","port":"eighty"}"#.into(),
            400,
            Some("port"),
        ),
        (
            "server-kept field",
            r#"{"address":"10.0.0.1","port":80,"expires_at":"x"}"#.into(),
            400,
            Some("expires_at"),
        ),
        ("not JSON", "address=10.0.0.1&port=80".into(), 400, None),
        ("empty", String::new(), 400, None),
        ("10 MB", ten_megabytes, 413, None),
    ];
    for (name, body, status, field) in cases {
        let response = http
            .put(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let error: serde_json::Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(error["error"]["code"].is_string(), "{name}: {error}");
        assert!(error["error"]["message"].is_string(), "{name}: {error}");
        if let Some(field) = field {
            assert_eq!(error["error"]["field"], field, "{name}: {error}");
        }
    }
    // A bad query parameter and a bad name are errors too.
    let typo = http
        .get(format!("{}/v1/services/bad/instances?zones=a", berth.base))
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status().as_u16(), 400);
    let bad_name = http
        .get(format!("{}/v1/services/Bad!/instances", berth.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_name.status().as_u16(), 422);

    assert_eq!(
        health_revision(&berth.base).await,
        before,
        "a refused request wrote"
    );
    assert!(
        berth
            .client()
            .instances("bad", &[])
            .await
            .unwrap()
            .instances
            .is_empty()
    );
}
