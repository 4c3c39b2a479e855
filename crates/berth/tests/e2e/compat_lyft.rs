//! lyft/discovery's API, black-box, written from the reference (legacy-apis.md §3) and its
//! `flask_test.py` cases: every route, every legacy error body, the documented deviations, and
//! hosts seen through the other surfaces.

use crate::instances::next_event;
use crate::support::{Berth, Body, data_dir, send, send_oversized};
use serde_json::{Value, json};

/// A form's fields.
type Fields<'a> = Vec<(&'a str, &'a str)>;

const TAGS: &str = r#"{"az": "us-east-1a", "region": "us-east-1", "instance_id": "i-1"}"#;

/// A berth with lyft's own environment variables (an old deployment's, unchanged).
fn lyft_berth(dir: &std::path::Path, host_ttl: &str) -> Berth {
    Berth::embedded_with_env(
        dir,
        &[],
        &[
            ("APPLICATION_ENV", "production"),
            ("HOST_TTL", host_ttl),
            ("CACHE_TTL", "30"),
        ],
    )
}

async fn register(
    berth: &Berth,
    service: &str,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let reply = send(
        &berth.base,
        "POST",
        &format!("/v1/registration/{service}"),
        Body::Form(fields),
        headers,
    )
    .await;
    (reply.status, reply.json())
}

async fn hosts(berth: &Berth, service: &str) -> Vec<Value> {
    let reply = send(
        &berth.base,
        "GET",
        &format!("/v1/registration/{service}"),
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["service"], service);
    assert_eq!(body["env"], "production", "APPLICATION_ENV is honoured");
    body["hosts"].as_array().unwrap().clone()
}

fn host_ports(hosts: &[Value]) -> Vec<u64> {
    let mut ports: Vec<u64> = hosts.iter().map(|h| h["port"].as_u64().unwrap()).collect();
    ports.sort();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_lookup_and_the_host_document() {
    let (_keep, dir) = data_dir();
    let berth = lyft_berth(&dir, "600");
    let healthcheck = send(&berth.base, "GET", "/healthcheck", Body::Empty, &[]).await;
    assert_eq!((healthcheck.status, healthcheck.text.as_str()), (200, "OK"));
    assert!(
        healthcheck
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );

    let tags =
        r#"{"az": "us-east-1a", "region": "us-east-1", "instance_id": "i-1", "canary": false}"#;
    let fields = [
        ("ip", "10.0.0.5"),
        ("port", "8000"),
        ("revision", "abc123"),
        ("service_repo_name", "myrepo"),
        ("tags", tags),
    ];
    assert_eq!(
        register(&berth, "myservice", &fields, &[]).await,
        (200, json!({}))
    );
    let found = hosts(&berth, "myservice").await;
    assert_eq!(found.len(), 1);
    let host = &found[0];
    assert_eq!(host["service"], "myservice");
    assert_eq!(host["ip_address"], "10.0.0.5");
    assert_eq!(host["port"], 8000);
    assert_eq!(host["revision"], "abc123");
    assert_eq!(host["service_repo_name"], "myrepo");
    assert_eq!(
        host["tags"],
        json!({"az": "us-east-1a", "region": "us-east-1", "instance_id": "i-1", "canary": false, "load_balancing_weight": 1})
    );
    // `str(datetime)`: a space, microseconds, no zone.
    let check_in = host["last_check_in"].as_str().unwrap();
    assert_eq!(check_in.len(), 26, "{check_in}");
    assert_eq!(&check_in[10..11], " ");
    assert_eq!(&check_in[19..20], ".");

    // A JSON body works too, with tags as an object.
    let reply = send(
        &berth.base,
        "POST",
        "/v1/registration/myservice",
        Body::Json(json!({"ip": "10.0.0.6", "port": 8000, "revision": "def", "tags": {"az": "b", "region": "r", "instance_id": "i-2", "team": "payments", "build": 42}})),
        &[],
    )
    .await;
    assert_eq!((reply.status, reply.json()), (200, json!({})));
    // Tags lyft did not know are kept as they were given.
    let found = hosts(&berth, "myservice").await;
    let second = found
        .iter()
        .find(|h| h["ip_address"] == "10.0.0.6")
        .unwrap();
    assert_eq!(
        (&second["tags"]["team"], &second["tags"]["build"]),
        (&json!("payments"), &json!(42))
    );

    // By repository, across services.
    register(
        &berth,
        "other",
        &[
            ("ip", "10.0.1.1"),
            ("port", "9"),
            ("revision", "r"),
            ("service_repo_name", "myrepo"),
            ("tags", TAGS),
        ],
        &[],
    )
    .await;
    let by_repo = send(
        &berth.base,
        "GET",
        "/v1/registration/repo/myrepo",
        Body::Empty,
        &[],
    )
    .await
    .json();
    assert_eq!(by_repo["service_repo_name"], "myrepo");
    assert_eq!(by_repo["env"], "production");
    let services: Vec<&str> = by_repo["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, vec!["myservice", "other"]);

    // An unknown service has no hosts.
    assert!(hosts(&berth, "nobody").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registrations_get_legacy_400_bodies_and_change_nothing() {
    let (_keep, dir) = data_dir();
    let berth = lyft_berth(&dir, "600");
    let cases: Vec<(&str, Fields, Value)> = vec![
        (
            "invalid ip",
            vec![
                ("ip", "555.555.555.555"),
                ("port", "80"),
                ("revision", "r"),
                ("tags", TAGS),
            ],
            json!({}),
        ),
        (
            "negative port",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "-1"),
                ("revision", "r"),
                ("tags", TAGS),
            ],
            json!({}),
        ),
        // Deviation: lyft answered 500 here (an unguarded int()).
        (
            "port is not a number",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "test"),
                ("revision", "r"),
                ("tags", TAGS),
            ],
            json!({}),
        ),
        (
            "no revision",
            vec![("ip", "10.0.0.1"), ("port", "80"), ("tags", TAGS)],
            json!({}),
        ),
        (
            "no az",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("revision", "r"),
                ("tags", r#"{"region": "r", "instance_id": "i"}"#),
            ],
            json!({}),
        ),
        (
            "no instance_id",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("revision", "r"),
                ("tags", r#"{"az": "a", "region": "r"}"#),
            ],
            json!({}),
        ),
        (
            "no region",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("revision", "r"),
                ("tags", r#"{"az": "a", "instance_id": "i"}"#),
            ],
            json!({}),
        ),
        (
            "bad tags JSON",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("revision", "r"),
                ("tags", "{nope"),
            ],
            json!({"error": "Invalid json supplied in tags"}),
        ),
        // Deviation: lyft took any weight at registration, and 1..100 only on /v1/loadbalancing.
        (
            "weight out of range",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "80"),
                ("revision", "r"),
                (
                    "tags",
                    r#"{"az": "a", "region": "r", "instance_id": "i", "load_balancing_weight": 500}"#,
                ),
            ],
            json!({}),
        ),
        (
            "port above 65535",
            vec![
                ("ip", "10.0.0.1"),
                ("port", "65536"),
                ("revision", "r"),
                ("tags", TAGS),
            ],
            json!({}),
        ),
        (
            "no ip and no auto_ip",
            vec![("port", "80"), ("revision", "r"), ("tags", TAGS)],
            json!({}),
        ),
    ];
    for (name, fields, body) in cases {
        assert_eq!(
            register(&berth, "svc", &fields, &[]).await,
            (400, body),
            "{name}"
        );
    }
    let oversized = send_oversized(
        &berth.base,
        "POST",
        "/v1/registration/svc",
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(oversized.status, 413);
    assert!(
        oversized.json()["message"]
            .as_str()
            .unwrap()
            .contains("limit")
    );
    assert!(hosts(&berth, "svc").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ip_uses_the_last_forwarded_address_in_192_168_from_a_trusted_proxy() {
    let fields = [
        ("auto_ip", "true"),
        ("port", "80"),
        ("revision", "r"),
        ("tags", TAGS),
    ];
    // Nobody configured as a proxy: the header is ignored and the peer (127.0.0.1, outside
    // 192.168.0.0/16) is what auto_ip stands for.
    let (_keep_open, open_dir) = data_dir();
    let untrusting = lyft_berth(&open_dir, "600");
    assert_eq!(
        register(
            &untrusting,
            "auto",
            &fields,
            &[("x-forwarded-for", "192.168.1.5")]
        )
        .await,
        (400, json!({}))
    );
    assert!(hosts(&untrusting, "auto").await.is_empty());

    let (_keep, dir) = data_dir();
    let berth = Berth::embedded_with_env(
        &dir,
        &[],
        &[
            ("APPLICATION_ENV", "production"),
            ("BERTH_COMPAT_LYFT_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let fields = [
        ("auto_ip", "true"),
        ("port", "80"),
        ("revision", "r"),
        ("tags", TAGS),
    ];
    assert_eq!(
        register(
            &berth,
            "auto",
            &fields,
            &[("x-forwarded-for", "192.168.1.5")]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        register(
            &berth,
            "auto",
            &fields,
            &[("x-forwarded-for", "10.1.1.1, 192.168.2.2")]
        )
        .await
        .0,
        200
    );
    let mut ips: Vec<String> = hosts(&berth, "auto")
        .await
        .iter()
        .map(|h| h["ip_address"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    assert_eq!(ips, vec!["192.168.1.5", "192.168.2.2"]);
    for outside in ["10.0.0.1", "192.169.0.1", "172.16.0.1", "8.8.8.8"] {
        assert_eq!(
            register(&berth, "auto", &fields, &[("x-forwarded-for", outside)]).await,
            (400, json!({})),
            "{outside}"
        );
    }
    // Without a proxy header the peer (127.0.0.1 here) is not in 192.168.0.0/16 either.
    assert_eq!(
        register(&berth, "auto", &fields, &[]).await,
        (400, json!({}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ports_per_ip_weights_survive_reregistration_and_delete_by_ip() {
    let (_keep, dir) = data_dir();
    let berth = lyft_berth(&dir, "600");
    for port in ["8000", "8001"] {
        register(
            &berth,
            "multi",
            &[
                ("ip", "10.0.0.7"),
                ("port", port),
                ("revision", "r"),
                ("tags", TAGS),
            ],
            &[],
        )
        .await;
    }
    register(
        &berth,
        "multi",
        &[
            ("ip", "10.0.0.8"),
            ("port", "8000"),
            ("revision", "r"),
            ("tags", TAGS),
        ],
        &[],
    )
    .await;
    // Deviation (lyft issue #22): one IP, two ports, two hosts.
    assert_eq!(
        host_ports(&hosts(&berth, "multi").await),
        vec![8000, 8000, 8001]
    );

    let weight = |value: &'static str| [("load_balancing_weight", value)];
    let set = send(
        &berth.base,
        "POST",
        "/v1/loadbalancing/multi/10.0.0.8",
        Body::Form(&weight("5")),
        &[],
    )
    .await;
    assert_eq!((set.status, set.text.as_str()), (204, ""));
    // Re-registering (the heartbeat) keeps the weight: tags merge.
    register(
        &berth,
        "multi",
        &[
            ("ip", "10.0.0.8"),
            ("port", "8000"),
            ("revision", "r2"),
            ("tags", TAGS),
        ],
        &[],
    )
    .await;
    let found = hosts(&berth, "multi").await;
    let host = found
        .iter()
        .find(|h| h["ip_address"] == "10.0.0.8")
        .unwrap();
    assert_eq!(host["tags"]["load_balancing_weight"], 5);
    assert_eq!(host["revision"], "r2");

    let errors: Vec<(&str, u16, Value)> = vec![
        (
            "/v1/loadbalancing/multi/10.9.9.9",
            404,
            json!({"error": "Host not found"}),
        ),
        (
            "/v1/loadbalancing/multi/10.0.0.8",
            400,
            json!({"error": "Invalid load_balancing_weight. Supply an integer between 1 and 100."}),
        ),
    ];
    for (path, status, body) in errors {
        let reply = send(
            &berth.base,
            "POST",
            path,
            Body::Form(&weight(if status == 404 { "5" } else { "x" })),
            &[],
        )
        .await;
        assert_eq!((reply.status, reply.json()), (status, body), "{path}");
    }
    for bad in ["0", "101", "9001", "1.5"] {
        let reply = send(
            &berth.base,
            "POST",
            "/v1/loadbalancing/multi/10.0.0.8",
            Body::Form(&weight(bad)),
            &[],
        )
        .await;
        assert_eq!(reply.status, 400, "{bad}");
    }
    // Missing and empty are the same to lyft.
    for body in [&[][..], &weight("")[..]] {
        let missing = send(
            &berth.base,
            "POST",
            "/v1/loadbalancing/multi/10.0.0.8",
            Body::Form(body),
            &[],
        )
        .await;
        assert_eq!(
            (missing.status, missing.json()),
            (
                400,
                json!({"error": "Required parameter 'weight' is missing."})
            ),
            "{body:?}"
        );
    }

    // Every host of the service (deviation: lyft's InMemory backend answered 500).
    let all = send(
        &berth.base,
        "POST",
        "/v1/loadbalancing/multi",
        Body::Form(&weight("20")),
        &[],
    )
    .await;
    assert_eq!(all.status, 204);
    assert!(
        hosts(&berth, "multi")
            .await
            .iter()
            .all(|h| h["tags"]["load_balancing_weight"] == 20)
    );
    // One command: the three hosts changed at one revision.
    let found = hosts(&berth, "multi").await;
    assert_eq!(found.len(), 3);
    let revisions: std::collections::BTreeSet<i64> = berth
        .client()
        .instances("multi", &[])
        .await
        .unwrap()
        .instances
        .iter()
        .map(|i| i.revision_index)
        .collect();
    assert_eq!(revisions.len(), 1, "{revisions:?}");

    // Delete by IP removes every port of it; ip:port removes one; unknown or invalid is 400 {}.
    let one = send(
        &berth.base,
        "DELETE",
        "/v1/registration/multi/10.0.0.7:8001",
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!((one.status, one.json()), (200, json!({})));
    assert_eq!(host_ports(&hosts(&berth, "multi").await), vec![8000, 8000]);
    // Every port of an IP goes in one command: both at one revision.
    for port in ["8001", "8002"] {
        register(
            &berth,
            "multi",
            &[
                ("ip", "10.0.0.8"),
                ("port", port),
                ("revision", "r"),
                ("tags", TAGS),
            ],
            &[],
        )
        .await;
    }
    let mut events = berth.client().events(Some("multi"), None).await.unwrap();
    let by_ip = send(
        &berth.base,
        "DELETE",
        "/v1/registration/multi/10.0.0.8",
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!((by_ip.status, by_ip.json()), (200, json!({})));
    assert_eq!(host_ports(&hosts(&berth, "multi").await), vec![8000]);
    let mut offline = Vec::new();
    while offline.len() < 3 {
        let event = crate::instances::next_event(&mut events).await;
        assert_eq!(event.kind, "offline");
        assert_eq!(event.data["reason"], "deregistered");
        offline.push(event.data["revision"].as_i64().unwrap());
    }
    assert!(offline.windows(2).all(|w| w[0] == w[1]), "{offline:?}");
    for target in ["10.0.0.8", "555.1.1.1"] {
        let reply = send(
            &berth.base,
            "DELETE",
            &format!("/v1/registration/multi/{target}"),
            Body::Empty,
            &[],
        )
        .await;
        assert_eq!((reply.status, reply.json()), (400, json!({})), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_hosts_are_accepted() {
    let (_keep, dir) = data_dir();
    let berth = lyft_berth(&dir, "600");
    // Deviation: lyft took IPv4 only.
    let fields = [
        ("ip", "fd00::5"),
        ("port", "80"),
        ("revision", "r"),
        ("tags", TAGS),
    ];
    assert_eq!(register(&berth, "six", &fields, &[]).await.0, 200);
    assert_eq!(hosts(&berth, "six").await[0]["ip_address"], "fd00::5");
    let deleted = send(
        &berth.base,
        "DELETE",
        "/v1/registration/six/fd00::5",
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!(deleted.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_routes_answer_in_flasks_shape() {
    let (_keep, dir) = data_dir();
    let berth = lyft_berth(&dir, "600");
    let not_allowed = json!({"message": "The method is not allowed for the requested URL."});
    // PUT was a 405; the wrong-arity routes were 500s (deviation): now 405 too.
    for (method, path) in [
        ("PUT", "/v1/registration/svc"),
        ("GET", "/v1/registration/svc/10.0.0.1"),
        ("DELETE", "/v1/registration/svc"),
        ("GET", "/v1/loadbalancing/svc"),
    ] {
        let reply = send(&berth.base, method, path, Body::Empty, &[]).await;
        assert_eq!(
            (reply.status, reply.json()),
            (405, not_allowed.clone()),
            "{method} {path}"
        );
    }
    let unknown = send(
        &berth.base,
        "GET",
        "/v1/registration/a/b/c",
        Body::Empty,
        &[],
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The requested URL was not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_expire_after_host_ttl_never_stale_and_everywhere_visible() {
    let (_keep, dir) = data_dir();
    // HOST_TTL=2 (seconds), CACHE_TTL=30 (ignored: reads are never stale).
    let berth = lyft_berth(&dir, "2");
    let client = berth.client();
    let mut events = client.events(Some("exp"), None).await.unwrap();
    register(
        &berth,
        "exp",
        &[
            ("ip", "10.4.4.4"),
            ("port", "80"),
            ("revision", "r"),
            ("tags", TAGS),
        ],
        &[],
    )
    .await;
    // Seen at once by lyft, by the native API and by bender.
    assert_eq!(hosts(&berth, "exp").await.len(), 1);
    let native = client.instances("exp", &[]).await.unwrap();
    assert_eq!(native.instances[0].id, "10.4.4.4:80");
    assert_eq!(native.instances[0].zone.as_deref(), Some("us-east-1a"));
    assert_eq!(native.instances[0].instance_ref.as_deref(), Some("i-1"));
    let bender = send(&berth.base, "GET", "/registrations/exp", Body::Empty, &[])
        .await
        .json();
    assert_eq!(bender[0]["host"], "10.4.4.4");

    // A native registration shows up in lyft's document.
    client
        .register(
            "exp",
            &crate::instances::registration("10.4.4.5", 81, 60_000),
        )
        .await
        .unwrap();
    assert_eq!(host_ports(&hosts(&berth, "exp").await), vec![80, 81]);

    // No re-POST: gone after HOST_TTL, with an offline event.
    assert_eq!(next_event(&mut events).await.kind, "online");
    assert_eq!(next_event(&mut events).await.kind, "online");
    let offline = next_event(&mut events).await;
    assert_eq!(offline.kind, "offline");
    assert_eq!(offline.data["instance"]["id"], "10.4.4.4:80");
    assert_eq!(host_ports(&hosts(&berth, "exp").await), vec![81]);

    // A deletion is visible at once (lyft's cache served stale hosts for CACHE_TTL).
    send(
        &berth.base,
        "DELETE",
        "/v1/registration/exp/10.4.4.5",
        Body::Empty,
        &[],
    )
    .await;
    assert!(hosts(&berth, "exp").await.is_empty());
}

/// A host registered through the native API is not taken over by a lyft POST for the same
/// `ip:port` (its TTL and tags would be replaced): 409 in lyft's error shape, and the native
/// registration stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lyft_post_does_not_change_a_native_registration() {
    let (_keep, dir) = data_dir();
    let berth = lyft_berth(&dir, "600");
    let native = berth_client::Registration {
        address: "10.9.9.9".into(),
        port: 8080,
        ttl_ms: Some(30_000),
        tags: vec!["blue".into()],
        ..Default::default()
    };
    berth.client().register("shared", &native).await.unwrap();
    let fields = [
        ("ip", "10.9.9.9"),
        ("port", "8080"),
        ("revision", "r"),
        ("tags", TAGS),
    ];
    let (status, body) = register(&berth, "shared", &fields, &[]).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("registered through the native API"),
        "{body}"
    );
    let kept = berth.client().instances("shared", &[]).await.unwrap();
    assert_eq!(kept.instances.len(), 1);
    assert_eq!(kept.instances[0].ttl_ms, 30_000);
    assert_eq!(kept.instances[0].tags, vec!["blue".to_string()]);
}
