//! bender's API, black-box, written from the reference (legacy-apis.md §2) and bender's own
//! `expire-test`, `backends-http-test` and `frontends-http-test`: registrations that expire at
//! the TTL with an offline event, the row shapes, backends and frontends with restify's error
//! bodies, and the documented deviations.

use crate::instances::next_event;
use crate::support::{Berth, Body, Reply, data_dir, send, send_oversized};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn bender_berth(dir: &std::path::Path) -> Berth {
    // bender's expire-test runs with a TTL of 500 ms.
    Berth::embedded_with_env(dir, &["--compat-bender-ttl-ms=500"], &[])
}

async fn get(berth: &Berth, path: &str) -> Value {
    let reply = send(&berth.base, "GET", path, Body::Empty, &[]).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
    reply.json()
}

async fn post(berth: &Berth, path: &str, body: Body<'_>) -> Reply {
    send(&berth.base, "POST", path, body, &[]).await
}

fn assert_error(reply: &Reply, status: u16, code: &str, message: &str) {
    assert_eq!(
        (reply.status, reply.json()),
        (status, json!({"message": message, "code": code})),
        "{}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_not_renewed_expires_at_the_ttl_with_an_offline_event() {
    let (_keep, dir) = data_dir();
    let berth = bender_berth(&dir);
    let mut events = berth
        .client()
        .events(Some("hello-world"), None)
        .await
        .unwrap();
    let registered_at = Instant::now();
    let reply = post(
        &berth,
        "/registrations/hello-world/1.0.0/127.0.0.1/8000",
        Body::Empty,
    )
    .await;
    assert_eq!((reply.status, reply.text.as_str()), (200, ""));
    assert_eq!(
        get(&berth, "/registrations")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(next_event(&mut events).await.kind, "online");

    let offline = next_event(&mut events).await;
    let lived = registered_at.elapsed();
    assert_eq!(offline.kind, "offline");
    assert_eq!(offline.data["instance"]["id"], "127.0.0.1:8000");
    // bender's expire-test: present after registering, gone 1000 ms later.
    assert!(
        lived >= Duration::from_millis(500) && lived < Duration::from_millis(1000),
        "{lived:?}"
    );
    assert_eq!(get(&berth, "/registrations").await, json!([]));

    // Registering again brings it back online.
    post(
        &berth,
        "/registrations/hello-world/1.0.0/127.0.0.1/8000",
        Body::Empty,
    )
    .await;
    assert_eq!(next_event(&mut events).await.kind, "online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_a_registration_and_rows_have_benders_shape() {
    let (_keep, dir) = data_dir();
    let berth = bender_berth(&dir);
    let path = "/registrations/hello-world/1.0.0/127.0.0.1/8000";
    post(&berth, path, Body::Empty).await;
    let first = get(&berth, "/registrations/hello-world").await[0].clone();
    assert_eq!(first["id"], "registration/hello-world/1.0.0/127.0.0.1/8000");
    assert_eq!(first["app"], "hello-world");
    assert_eq!(first["version"], "1.0.0");
    assert_eq!(first["host"], "127.0.0.1");
    assert_eq!(
        first["port"], "8000",
        "HTTP registrations carry the port as a string"
    );
    assert_eq!(first["resource"], "Registration");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let registered = first["registered"].as_i64().unwrap();
    assert!(
        (now_ms - registered).abs() < 5_000,
        "{registered} vs {now_ms}"
    );

    // Renewed every 200 ms (inside each 500 ms window) for three TTLs: it stays, and
    // `registered` moves with each renewal.
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(post(&berth, path, Body::Empty).await.status, 200);
        assert_eq!(
            get(&berth, "/registrations/hello-world")
                .await
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    let last = get(&berth, "/registrations/hello-world").await[0]["registered"]
        .as_i64()
        .unwrap();
    assert!(
        last >= registered + 1_000,
        "registered moved from {registered} to {last}"
    );

    // Filters by app and by app and version; none is an empty list.
    post(
        &berth,
        "/registrations/hello-world/2.0.0/127.0.0.2/8000",
        Body::Empty,
    )
    .await;
    post(
        &berth,
        "/registrations/other/1.0.0/127.0.0.1/9000",
        Body::Empty,
    )
    .await;
    assert_eq!(
        get(&berth, "/registrations")
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        get(&berth, "/registrations/hello-world")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let versioned = get(&berth, "/registrations/hello-world/2.0.0").await;
    assert_eq!(versioned.as_array().unwrap().len(), 1);
    assert_eq!(versioned[0]["host"], "127.0.0.2");
    assert_eq!(
        get(&berth, "/registrations/hello-world/9.9.9").await,
        json!([])
    );
    assert_eq!(get(&berth, "/registrations/nobody").await, json!([]));

    // Deviation: a registration is keyed by host and port, so a new version of the same
    // host:port replaces the old one instead of standing next to it.
    post(
        &berth,
        "/registrations/other/1.1.0/127.0.0.1/9000",
        Body::Empty,
    )
    .await;
    let other = get(&berth, "/registrations/other").await;
    assert_eq!(other.as_array().unwrap().len(), 1);
    assert_eq!(other[0]["version"], "1.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_are_400s_and_registrations_are_seen_everywhere() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    // Deviation: bender stored `notaport` as given; berth answers 400.
    for (path, field) in [
        ("/registrations/app/1/127.0.0.1/notaport", "Port"),
        ("/registrations/app/1/127.0.0.1/0", "Port"),
        ("/registrations/app/1/127.0.0.1/70000", "Port"),
        ("/registrations/app/1/not%20a%20host/80", "host"),
        ("/registrations/Not%20An%20App/1/127.0.0.1/80", "app"),
    ] {
        let reply = post(&berth, path, Body::Empty).await;
        assert_eq!(reply.status, 400, "{path}");
        let body = reply.json();
        assert_eq!(body["code"], "INVALID", "{path}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{path}: {body}"
        );
    }
    assert_eq!(get(&berth, "/registrations").await, json!([]));

    // The default TTL is bender's 4 s; the registration is a native instance and a lyft host.
    post(
        &berth,
        "/registrations/web/1.2.3/10.1.1.1/8080",
        Body::Empty,
    )
    .await;
    let native = berth.client().instances("web", &[]).await.unwrap();
    assert_eq!(native.instances.len(), 1);
    let instance = &native.instances[0];
    assert_eq!(
        (instance.id.as_str(), instance.port, instance.ttl_ms),
        ("10.1.1.1:8080", 8080, 4_000)
    );
    assert_eq!(instance.version.as_deref(), Some("1.2.3"));
    let lyft = get(&berth, "/v1/registration/web").await;
    assert_eq!(lyft["hosts"][0]["ip_address"], "10.1.1.1");
    // And a native registration is a bender row.
    berth
        .client()
        .register(
            "web",
            &crate::instances::registration("10.1.1.2", 81, 60_000),
        )
        .await
        .unwrap();
    assert_eq!(
        get(&berth, "/registrations/web")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_as_benders_backends_http_test() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let missing = send(&berth.base, "GET", "/backends/hw", Body::Empty, &[]).await;
    assert_error(&missing, 404, "NOT_FOUND", "Backend not found");
    let no_name = post(
        &berth,
        "/backends",
        Body::Json(json!({"app": "hello-world", "version": "1.0.0"})),
    )
    .await;
    assert_error(&no_name, 400, "INVALID", "Backend name is required");
    let no_version = post(
        &berth,
        "/backends",
        Body::Json(json!({"name": "hw", "app": "hello-world"})),
    )
    .await;
    assert_error(
        &no_version,
        400,
        "INVALID",
        "Application name and version are required",
    );
    let no_app = post(
        &berth,
        "/backends",
        Body::Json(json!({"name": "hw", "version": "1.0.0"})),
    )
    .await;
    assert_error(
        &no_app,
        400,
        "INVALID",
        "Application name and version are required",
    );
    assert_eq!(get(&berth, "/backends").await, json!([]));

    let created = post(
        &berth,
        "/backends",
        Body::Json(json!({"name": "hw", "app": "hello-world", "version": "1.0.0", "balance": "roundrobin"})),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/backends/hw"));
    let row = json!({"id": "backend/hw", "name": "hw", "app": "hello-world", "version": "1.0.0", "balance": "roundrobin", "resource": "Backend"});
    assert_eq!(created.json(), row);
    assert_eq!(get(&berth, "/backends/hw").await, row);
    assert_eq!(get(&berth, "/backends").await, json!([row]));
    let again = post(
        &berth,
        "/backends",
        Body::Json(json!({"name": "hw", "app": "x", "version": "1"})),
    )
    .await;
    assert_error(
        &again,
        409,
        "CONFLICT",
        "Backend with that name already exists",
    );

    // The same backend through the native API.
    let native = get(&berth, "/v1/backends/hw").await;
    assert_eq!(native["app"], "hello-world");

    let deleted = send(&berth.base, "DELETE", "/backends/hw", Body::Empty, &[]).await;
    assert_eq!((deleted.status, deleted.text.as_str()), (204, ""));
    let gone = send(&berth.base, "GET", "/backends/hw", Body::Empty, &[]).await;
    assert_error(&gone, 404, "NOT_FOUND", "Backend not found");
    let twice = send(&berth.base, "DELETE", "/backends/hw", Body::Empty, &[]).await;
    assert_error(&twice, 404, "NOT_FOUND", "Backend not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_as_benders_frontends_http_test() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let missing = send(&berth.base, "GET", "/frontends/www", Body::Empty, &[]).await;
    assert_error(&missing, 404, "NOT_FOUND", "Frontend not found");
    let no_name = post(
        &berth,
        "/frontends",
        Body::Json(json!({"backend": "hw", "port": 80})),
    )
    .await;
    assert_error(&no_name, 400, "INVALID", "Frontend name is required");
    // bender read only JSON bodies: a form's fields were not seen.
    let form = post(&berth, "/frontends", Body::Form(&[("name", "www")])).await;
    assert_error(&form, 400, "INVALID", "Frontend name is required");
    assert_eq!(get(&berth, "/frontends").await, json!([]));

    let created = post(
        &berth,
        "/frontends",
        Body::Json(json!({"name": "www", "backend": "hw", "port": 80})),
    )
    .await;
    // Deviation: bender answered `{"location": …}` as the body and no header.
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/frontends/www"));
    let row = json!({"id": "frontend/www", "name": "www", "backend": "hw", "port": 80, "resource": "Frontend"});
    assert_eq!(created.json(), row);
    assert_eq!(get(&berth, "/frontends/www").await, row);
    assert_eq!(get(&berth, "/frontends").await, json!([row]));
    let again = post(&berth, "/frontends", Body::Json(json!({"name": "www"}))).await;
    assert_error(
        &again,
        409,
        "CONFLICT",
        "Frontend with that name already exists",
    );

    let deleted = send(&berth.base, "DELETE", "/frontends/www", Body::Empty, &[]).await;
    assert_eq!(deleted.status, 204);
    let gone = send(&berth.base, "DELETE", "/frontends/www", Body::Empty, &[]).await;
    assert_error(&gone, 404, "NOT_FOUND", "Frontend not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_wrong_methods_answer_like_restify() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let unknown = send(&berth.base, "GET", "/nope", Body::Empty, &[]).await;
    assert_error(&unknown, 404, "ResourceNotFound", "/nope does not exist");
    // The README's `POST /registrations` and bender-api's `PUT /backends/:name` never had routes.
    for (method, path, allow) in [
        ("POST", "/registrations", "GET"),
        ("PUT", "/backends/hw", "DELETE,GET"),
    ] {
        let reply = send(&berth.base, method, path, Body::Json(json!({})), &[]).await;
        assert_error(
            &reply,
            405,
            "MethodNotAllowedError",
            &format!("{method} is not allowed"),
        );
        let mut allowed: Vec<&str> = reply
            .header("allow")
            .unwrap()
            .split(',')
            .map(str::trim)
            .collect();
        allowed.sort();
        allowed.retain(|m| *m != "HEAD");
        assert_eq!(allowed.join(","), allow, "{method} {path}");
    }
    // A body that is not JSON is refused without a change.
    let broken = send(
        &berth.base,
        "POST",
        "/backends",
        Body::Empty,
        &[("content-type", "application/json")],
    )
    .await;
    assert_error(&broken, 400, "INVALID", "Backend name is required");
    let reply = crate::support::http()
        .post(format!("{}/backends", berth.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "InvalidContent");
    let oversized = send_oversized(&berth.base, "POST", "/backends", "application/json").await;
    assert_eq!(
        (oversized.status, &oversized.json()["code"]),
        (413, &json!("RequestEntityTooLarge"))
    );
    assert_eq!(get(&berth, "/backends").await, json!([]));
}
