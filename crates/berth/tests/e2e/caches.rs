//! Every polled answer is served from bytes kept until what it shows changes: each route's
//! answer changes on the first query after a registration, a weight change, a renewal that
//! moves what the legacy shape shows (lyft's `last_check_in`, bender's `registered`, the native
//! `last_heartbeat`) and an expiry.

use crate::support::{Berth, Body, data_dir, send};
use serde_json::Value;
use std::time::Duration;

async fn get(berth: &Berth, path: &str) -> Value {
    let reply = send(&berth.base, "GET", path, Body::Empty, &[]).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    reply.json()
}

/// Sends the same renewal until the field `shown` reads (at `path`, through `pick`) differs
/// from `before`: the clock must move on by a millisecond, whatever the machine's speed.
async fn renew_until_shown(
    berth: &Berth,
    renew: impl AsyncFn(),
    path: &str,
    pick: impl Fn(&Value) -> Value,
    before: &Value,
) {
    for _ in 0..100 {
        renew().await;
        if &pick(&get(berth, path).await) != before {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{path}: a renewal never showed");
}

/// Waits (bounded) until `path` answers with `pick` equal to `expected`.
async fn until_answer(berth: &Berth, path: &str, pick: impl Fn(&Value) -> Value, expected: Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if pick(&get(berth, path).await) == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never showed {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lyft_answers_follow_registrations_weights_renewals_and_expiry() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded_with_env(&dir, &[], &[("HOST_TTL", "1")]);
    let tags = r#"{"az": "a", "region": "r", "instance_id": "i-1"}"#;
    let register = |port: &'static str| {
        let base = berth.base.clone();
        async move {
            let fields = [
                ("ip", "10.5.0.1"),
                ("port", port),
                ("revision", "r1"),
                ("service_repo_name", "shop-repo"),
                ("tags", tags),
            ];
            let reply = send(
                &base,
                "POST",
                "/v1/registration/shop",
                Body::Form(&fields),
                &[],
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    };
    let hosts = |answer: &Value| answer["hosts"].clone();
    for path in ["/v1/registration/shop", "/v1/registration/repo/shop-repo"] {
        assert_eq!(get(&berth, path).await["hosts"], Value::Array(vec![]));
    }
    register("8000").await;
    for path in ["/v1/registration/shop", "/v1/registration/repo/shop-repo"] {
        assert_eq!(get(&berth, path).await["hosts"][0]["port"], 8000, "{path}");
    }
    let weight = send(
        &berth.base,
        "POST",
        "/v1/loadbalancing/shop/10.5.0.1",
        Body::Form(&[("load_balancing_weight", "7")]),
        &[],
    )
    .await;
    assert_eq!(weight.status, 204);
    for path in ["/v1/registration/shop", "/v1/registration/repo/shop-repo"] {
        let answer = get(&berth, path).await;
        assert_eq!(
            answer["hosts"][0]["tags"]["load_balancing_weight"], 7,
            "{path}"
        );
    }
    for path in ["/v1/registration/shop", "/v1/registration/repo/shop-repo"] {
        let check_in = |a: &Value| a["hosts"][0]["last_check_in"].clone();
        let before = check_in(&get(&berth, path).await);
        renew_until_shown(
            &berth,
            async || register("8000").await,
            path,
            check_in,
            &before,
        )
        .await;
    }
    // Nobody renews: after HOST_TTL (1 s) the host is gone from both answers.
    for path in ["/v1/registration/shop", "/v1/registration/repo/shop-repo"] {
        until_answer(&berth, path, hosts, Value::Array(vec![])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bender_answers_follow_registrations_renewals_and_expiry() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded_with_env(&dir, &["--compat-bender-ttl-ms=1000"], &[]);
    let register = |port: u16| {
        let base = berth.base.clone();
        async move {
            let path = format!("/registrations/cart/1.0.0/10.5.1.1/{port}");
            let reply = send(&base, "POST", &path, Body::Empty, &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    };
    let paths = [
        "/registrations",
        "/registrations/cart",
        "/registrations/cart/1.0.0",
    ];
    for path in paths {
        assert_eq!(get(&berth, path).await, Value::Array(vec![]), "{path}");
    }
    register(9000).await;
    for path in paths {
        assert_eq!(get(&berth, path).await[0]["port"], "9000", "{path}");
    }
    register(9001).await;
    for path in paths {
        assert_eq!(
            get(&berth, path).await.as_array().unwrap().len(),
            2,
            "{path}"
        );
    }
    for path in paths {
        let registered = |a: &Value| a[0]["registered"].clone();
        let before = registered(&get(&berth, path).await);
        renew_until_shown(
            &berth,
            async || {
                register(9000).await;
                register(9001).await;
            },
            path,
            registered,
            &before,
        )
        .await;
    }
    for path in paths {
        until_answer(&berth, path, |a| a.clone(), Value::Array(vec![])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_flow_answers_follow_their_changes() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let path = "/v1/services/api/instances";
    assert_eq!(get(&berth, path).await["instances"], Value::Array(vec![]));
    let registration = berth_client::Registration {
        address: "10.5.2.1".into(),
        port: 80,
        ttl_ms: Some(1_000),
        ..Default::default()
    };
    client.register("api", &registration).await.unwrap();
    assert_eq!(get(&berth, path).await["instances"][0]["port"], 80);
    let heartbeat = |a: &Value| a["instances"][0]["last_heartbeat"].clone();
    let before = heartbeat(&get(&berth, path).await);
    renew_until_shown(
        &berth,
        async || {
            client.heartbeat("api", "10.5.2.1:80").await.unwrap();
        },
        path,
        heartbeat,
        &before,
    )
    .await;
    until_answer(
        &berth,
        path,
        |a| a["instances"].clone(),
        Value::Array(vec![]),
    )
    .await;

    let apps = "/applications?limit=100";
    let ids = |a: &Value| {
        Value::Array(
            a.as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].clone())
                .collect(),
        )
    };
    assert_eq!(ids(&get(&berth, apps).await), Value::Array(vec![]));
    let created = send(
        &berth.base,
        "POST",
        "/applications",
        Body::Form(&[("id", "shop"), ("service", "play")]),
        &[],
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(ids(&get(&berth, apps).await), serde_json::json!(["shop"]));
    let deleted = send(
        &berth.base,
        "DELETE",
        "/applications/shop",
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(ids(&get(&berth, apps).await), Value::Array(vec![]));
}
