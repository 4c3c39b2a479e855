//! flowcommerce/registry's API, black-box, written from the reference (legacy-apis.md §1) and
//! the expectations of flow's `ApplicationsSpec`, `ServicesSpec` and `ApplicationsDaoSpec`:
//! the allocator's worked example, every route, every legacy message, and the documented
//! deviations (every cycle refused with a 422, `-port` descending, no 401).

use crate::support::{Berth, Body, Reply, data_dir, send, send_oversized};
use serde_json::{Value, json};

async fn call(berth: &Berth, method: &str, path: &str, body: Body<'_>) -> Reply {
    send(&berth.base, method, path, body, &[]).await
}

/// A request that must succeed with `status`; its JSON body.
async fn ok(berth: &Berth, method: &str, path: &str, body: Body<'_>, status: u16) -> Value {
    let reply = call(berth, method, path, body).await;
    assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
    if reply.text.is_empty() {
        Value::Null
    } else {
        reply.json()
    }
}

/// A request that flow refuses with a 422 `generic_error`: its messages.
async fn refused(berth: &Berth, method: &str, path: &str, body: Body<'_>) -> Vec<String> {
    let reply = call(berth, method, path, body).await;
    assert_eq!(reply.status, 422, "{method} {path}: {}", reply.text);
    let body = reply.json();
    assert_eq!(body["code"], "generic_error", "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

fn external(app: &Value, service: &str) -> u64 {
    app["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["service"]["id"] == service)
        .unwrap_or_else(|| panic!("no {service} port in {app}"))["external"]
        .as_u64()
        .unwrap()
}

fn ids(apps: &Value) -> Vec<&str> {
    apps.as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect()
}

/// The worked example of the reference, on an empty catalog; JSON bodies as flow's clients
/// send them, and the README's form-encoded `curl -d` for one.
async fn worked_example(berth: &Berth) {
    let registry = ok(
        berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "registry", "service": "play"})),
        201,
    )
    .await;
    assert_eq!(
        registry,
        json!({"id": "registry", "ports": [{"service": {"id": "play"}, "external": 6011, "internal": 9000}], "dependencies": []})
    );
    let postgresql = ok(
        berth,
        "POST",
        "/applications",
        Body::Form(&[("id", "registry-postgresql"), ("service", "postgresql")]),
        201,
    )
    .await;
    assert_eq!(
        postgresql["ports"],
        json!([{"service": {"id": "postgresql"}, "external": 6019, "internal": 5432}])
    );
    let www = ok(
        berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "www", "service": "nodejs"})),
        201,
    )
    .await;
    assert_eq!(
        www["ports"],
        json!([{"service": {"id": "nodejs"}, "external": 6020, "internal": 7050}])
    );
    let user = ok(
        berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "user", "service": "play"})),
        201,
    )
    .await;
    assert_eq!(external(&user, "play"), 6031);
    // PUT of an existing app with a new service adds a port (200), ordered by external port.
    let registry = ok(
        berth,
        "PUT",
        "/applications/registry",
        Body::Json(json!({"service": "nodejs"})),
        200,
    )
    .await;
    assert_eq!(
        registry["ports"],
        json!([
            {"service": {"id": "nodejs"}, "external": 6010, "internal": 7050},
            {"service": {"id": "play"}, "external": 6011, "internal": 9000}
        ])
    );
    // The same service again is a no-op: an app has one port per service.
    let again = ok(
        berth,
        "PUT",
        "/applications/registry",
        Body::Json(json!({"service": "nodejs"})),
        200,
    )
    .await;
    assert_eq!(again, registry);
    let api2 = ok(
        berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "registry-api2", "service": "play"})),
        201,
    )
    .await;
    assert_eq!(external(&api2, "play"), 6041);
    ok(
        berth,
        "POST",
        "/services",
        Body::Json(json!({"id": "redis", "default_port": 6379})),
        201,
    )
    .await;
    let www = ok(
        berth,
        "PUT",
        "/applications/www",
        Body::Json(json!({"service": "redis"})),
        200,
    )
    .await;
    assert_eq!(external(&www, "redis"), 6022);
    assert_eq!(
        www["ports"][1],
        json!({"service": {"id": "redis"}, "external": 6022, "internal": 6379})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_allocate_flows_ports_and_list_filter_sort_and_page() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    worked_example(&berth).await;

    assert_eq!(
        ok(&berth, "GET", "/applications/registry", Body::Empty, 200).await["id"],
        "registry"
    );
    let missing = call(&berth, "GET", "/applications/nobody", Body::Empty).await;
    assert_eq!(
        (missing.status, missing.text.as_str()),
        (404, ""),
        "Play's empty 404"
    );

    let list = |query: &'static str| {
        let berth = &berth;
        async move {
            ok(
                berth,
                "GET",
                &format!("/applications{query}"),
                Body::Empty,
                200,
            )
            .await
        }
    };
    // Newest first by default.
    assert_eq!(
        ids(&list("").await),
        vec![
            "registry-api2",
            "user",
            "www",
            "registry-postgresql",
            "registry"
        ]
    );
    assert_eq!(
        ids(&list("?sort=created_at").await),
        vec![
            "registry",
            "registry-postgresql",
            "www",
            "user",
            "registry-api2"
        ]
    );
    assert_eq!(
        ids(&list("?sort=port").await),
        vec![
            "registry",
            "registry-postgresql",
            "www",
            "user",
            "registry-api2"
        ]
    );
    // Deviation: flow's `-port` sorted ascending too.
    assert_eq!(
        ids(&list("?sort=-port").await),
        vec![
            "registry-api2",
            "user",
            "www",
            "registry-postgresql",
            "registry"
        ]
    );
    assert_eq!(
        ids(&list("?sort=created_at&limit=2&offset=1").await),
        vec!["registry-postgresql", "www"]
    );
    assert_eq!(
        ids(&list("?id=www&id=user&sort=created_at").await),
        vec!["www", "user"]
    );
    assert_eq!(ids(&list("?port=6019").await), vec!["registry-postgresql"]);
    assert_eq!(
        ids(&list("?port=6010&port=6022&sort=created_at").await),
        vec!["registry", "www"]
    );
    assert_eq!(ids(&list("?port=-100").await), Vec::<&str>::new());
    assert_eq!(
        ids(&list("?service=postgresql").await),
        vec!["registry-postgresql"]
    );
    assert_eq!(
        ids(&list("?service=nodejs&sort=created_at").await),
        vec!["registry", "www"]
    );
    assert_eq!(
        ids(&list("?prefix=registry&sort=created_at").await),
        vec!["registry", "registry-postgresql", "registry-api2"]
    );
    assert_eq!(
        ids(&list("?prefix=registry-api2").await),
        vec!["registry-api2"]
    );
    assert_eq!(
        ids(&list("?q=%20POSTGRES%20").await),
        vec!["registry-postgresql"]
    );
    assert_eq!(ids(&list("?q=zzz").await), Vec::<&str>::new());
    assert_eq!(
        refused(&berth, "GET", "/applications?sort=name", Body::Empty).await,
        vec!["Invalid sort[name]. Valid values are: created_at, -created_at, port, -port"]
    );
    assert_eq!(list("?limit=1").await.as_array().unwrap().len(), 1);

    // A flow application is a berth application, and a flow service a berth kind.
    let native: Value = berth
        .client()
        .call(reqwest::Method::GET, "/v1/apps/www", None)
        .await
        .unwrap();
    assert_eq!(native["ports"].as_array().unwrap().len(), 2);
    let kind: Value = berth
        .client()
        .call(reqwest::Method::GET, "/v1/kinds/redis", None)
        .await
        .unwrap();
    assert_eq!(kind["default_port"], 6379);
    // And the reverse.
    berth
        .client()
        .call(
            reqwest::Method::POST,
            "/v1/apps",
            Some(&json!({"id": "native-app", "kind": "play"})),
        )
        .await
        .unwrap();
    assert_eq!(
        external(
            &ok(&berth, "GET", "/applications/native-app", Body::Empty, 200).await,
            "play"
        ),
        6051
    );

    // YAML listing: flow's health checks for the services it knew, none for others.
    let yaml = call(&berth, "GET", "/applications/yaml", Body::Empty).await;
    assert_eq!(yaml.status, 200);
    assert!(yaml.header("content-type").unwrap().contains("yaml"));
    let listing: Value = serde_norway::from_str(&yaml.text).unwrap();
    let by_id = |id: &str| {
        listing
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_id("registry-postgresql")["ports"][0],
        json!({"healthcheck": {"dbname": "registry-postgresql", "host": "ws", "port": 6019, "user": "api"}, "external": 6019, "internal": 5432})
    );
    let www = by_id("www");
    assert_eq!(
        www["ports"][0]["healthcheck"],
        json!({"host": "ws", "port": 6020})
    );
    assert_eq!(
        www["ports"][1],
        json!({"external": 6022, "internal": 6379}),
        "deviation: no 500 for a custom service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legacy_application_message() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let post = |body: Value| {
        let berth = &berth;
        async move { refused(berth, "POST", "/applications", Body::Json(body)).await }
    };
    ok(
        &berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "taken", "service": "play"})),
        201,
    )
    .await;

    assert_eq!(
        post(json!({"id": "", "service": "play"})).await,
        vec!["Id cannot be empty"]
    );
    assert_eq!(
        post(json!({"id": "x", "service": "play"})).await,
        vec!["Key must be at least 2 characters"]
    );
    assert_eq!(
        post(json!({"id": " a bad id ", "service": "play"})).await,
        vec![
            "Key must be in all lower case and contain alphanumerics only (-, _, and . are supported). A valid key would be: a-bad-id"
        ]
    );
    assert_eq!(
        post(json!({"id": "taken", "service": "play"})).await,
        vec!["Application with this id already exists"]
    );
    assert_eq!(
        post(json!({"id": "fresh", "service": "cobol"})).await,
        vec!["Service not found"]
    );
    assert_eq!(
        post(json!({"id": "fresh"})).await,
        vec!["Must specify service when creating application"]
    );
    assert_eq!(
        post(json!({"id": "fresh", "service": "play", "dependency": ["fresh"]})).await,
        vec!["Cannot declare dependency[fresh] on self"]
    );
    assert_eq!(
        post(json!({"id": "fresh", "service": "play", "dependency": ["ghost"]})).await,
        vec!["Dependency[ghost] references a non existing application"]
    );
    assert_eq!(
        post(json!({"id": "fresh", "service": "play", "external": 6011})).await,
        vec!["External port 6011 is already assigned to the application taken"]
    );
    // Every problem at once, as flow's validation listed them.
    assert_eq!(
        post(json!({"id": "fresh", "service": "play", "external": 1024, "internal": 0})).await,
        vec!["External port must be > 1024", "Internal port must be > 0"]
    );
    // An unknown service next to bad ports, a taken id next to a bad port: all reported.
    assert_eq!(
        post(json!({"id": "fresh", "service": "cobol", "external": 1024})).await,
        vec!["Service not found", "External port must be > 1024"]
    );
    assert_eq!(
        post(json!({"id": "taken", "service": "cobol", "internal": 0})).await,
        vec![
            "Application with this id already exists",
            "Service not found",
            "Internal port must be > 0"
        ]
    );
    // Deviation: flow had no upper bound (a port it could never bind).
    assert_eq!(
        post(json!({"id": "fresh", "service": "play", "external": 70000, "internal": 70000})).await,
        vec![
            "External port must be <= 65535",
            "Internal port must be <= 65535"
        ]
    );
    // PUT creates only with a service; the same messages apply.
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/fresh",
            Body::Json(json!({"external": 7000}))
        )
        .await,
        vec!["Must specify service when creating application"]
    );
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/fresh",
            Body::Json(json!({"service": "play", "internal": -5}))
        )
        .await,
        vec!["Internal port must be > 0"]
    );
    // A body that is not JSON is a 422 with a message, not a 500.
    let broken = send(
        &berth.base,
        "POST",
        "/applications",
        Body::Empty,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(broken.status, 422);
    let reply = crate::support::http()
        .post(format!("{}/applications", berth.base))
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let oversized = send_oversized(&berth.base, "POST", "/applications", "application/json").await;
    assert_eq!(
        (oversized.status, &oversized.json()["code"]),
        (413, &json!("generic_error"))
    );

    // Nothing refused left a trace.
    assert_eq!(
        ids(&ok(&berth, "GET", "/applications", Body::Empty, 200).await),
        vec!["taken"]
    );
    // PUT with a valid service creates (201) at a chosen port.
    let created = ok(
        &berth,
        "PUT",
        "/applications/fresh",
        Body::Json(json!({"service": "play", "external": 7001, "internal": 9001})),
        201,
    )
    .await;
    assert_eq!(
        created["ports"],
        json!([{"service": {"id": "play"}, "external": 7001, "internal": 9001}])
    );

    // Deviation: writes need no X-Flow-Auth (berth has no Flow users); one sent is ignored.
    let with_token = send(
        &berth.base,
        "DELETE",
        "/applications/fresh",
        Body::Empty,
        &[("x-flow-auth", "not-a-jwt")],
    )
    .await;
    assert_eq!((with_token.status, with_token.text.as_str()), (204, ""));
    let twice = call(&berth, "DELETE", "/applications/fresh", Body::Empty).await;
    assert_eq!(twice.status, 404);
    // An id can be used again after its deletion, with a fresh port: above the highest port
    // the allocator ever chose (taken's 6011), not above the explicit 7001
    // (docs/compat/flow.md, deviation 8).
    let reused = ok(
        &berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "fresh", "service": "play"})),
        201,
    )
    .await;
    assert_eq!(
        external(&reused, "play"),
        6021,
        "a new family goes above the highest port the allocator chose"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_replace_add_remove_and_every_cycle_is_refused() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    for id in ["a", "b", "c", "d"] {
        let id = format!("app-{id}");
        ok(
            &berth,
            "POST",
            "/applications",
            Body::Json(json!({"id": id, "service": "nodejs"})),
            201,
        )
        .await;
    }
    // Dependencies are listed alphabetically; a PUT's list replaces the whole list.
    let a = ok(
        &berth,
        "PUT",
        "/applications/app-a",
        Body::Json(json!({"dependency": ["app-c", "app-b"]})),
        200,
    )
    .await;
    assert_eq!(a["dependencies"], json!(["app-b", "app-c"]));
    let a = ok(
        &berth,
        "PUT",
        "/applications/app-a",
        Body::Form(&[("dependency", "app-b")]),
        200,
    )
    .await;
    assert_eq!(a["dependencies"], json!(["app-b"]));
    // Without `dependency` the list stays.
    let a = ok(
        &berth,
        "PUT",
        "/applications/app-a",
        Body::Json(json!({})),
        200,
    )
    .await;
    assert_eq!(a["dependencies"], json!(["app-b"]));

    // The dependency routes: add (idempotent), remove (idempotent).
    let b = ok(
        &berth,
        "PUT",
        "/applications/app-b/dependencies/app-c",
        Body::Empty,
        200,
    )
    .await;
    assert_eq!(b["dependencies"], json!(["app-c"]));
    let b = ok(
        &berth,
        "PUT",
        "/applications/app-b/dependencies/app-c",
        Body::Empty,
        200,
    )
    .await;
    assert_eq!(b["dependencies"], json!(["app-c"]));
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/app-b/dependencies/ghost",
            Body::Empty
        )
        .await,
        vec!["Application named[ghost] not found"]
    );
    assert_eq!(
        refused(
            &berth,
            "DELETE",
            "/applications/app-b/dependencies/ghost",
            Body::Empty
        )
        .await,
        vec!["Application named[ghost] not found"]
    );
    assert_eq!(
        call(
            &berth,
            "PUT",
            "/applications/ghost/dependencies/app-b",
            Body::Empty
        )
        .await
        .status,
        404
    );
    assert_eq!(
        call(
            &berth,
            "DELETE",
            "/applications/ghost/dependencies/app-b",
            Body::Empty
        )
        .await
        .status,
        404
    );
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/app-b/dependencies/app-b",
            Body::Empty
        )
        .await,
        vec!["Cannot declare dependency[app-b] on self"]
    );

    // Now app-a → app-b → app-c. A 2-cycle through the route (deviation: flow answered 500).
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/app-c/dependencies/app-b",
            Body::Empty
        )
        .await,
        vec!["Application[app-c] Cannot declare a circular dependency on[app-b]"]
    );
    // A 3-cycle (deviation: flow detected only 2-cycles and accepted this), by route and by PUT.
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/app-c/dependencies/app-a",
            Body::Empty
        )
        .await,
        vec!["Application[app-c] Cannot declare a circular dependency on[app-a]"]
    );
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/app-c",
            Body::Json(json!({"dependency": ["app-d", "app-a"]}))
        )
        .await,
        vec!["Application[app-c] Cannot declare a circular dependency on[app-a]"]
    );
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/applications/app-c",
            Body::Json(json!({"dependency": ["ghost"]}))
        )
        .await,
        vec!["Dependency[ghost] references a non existing application"]
    );
    // Nothing of the refused writes landed.
    let c = ok(&berth, "GET", "/applications/app-c", Body::Empty, 200).await;
    assert_eq!(c["dependencies"], json!([]));

    // Deviation: deleting an application others depend on is a 422 naming them (flow: 500).
    assert_eq!(
        refused(&berth, "DELETE", "/applications/app-c", Body::Empty).await,
        vec!["Application[app-c] cannot be deleted: it is a dependency of[app-b]"]
    );
    let b = ok(
        &berth,
        "DELETE",
        "/applications/app-b/dependencies/app-c",
        Body::Empty,
        200,
    )
    .await;
    assert_eq!(b["dependencies"], json!([]));
    let b = ok(
        &berth,
        "DELETE",
        "/applications/app-b/dependencies/app-c",
        Body::Empty,
        200,
    )
    .await;
    assert_eq!(b["dependencies"], json!([]));
    assert_eq!(
        call(&berth, "DELETE", "/applications/app-c", Body::Empty)
            .await
            .status,
        204
    );

    // The start order flow only promised, through the native API.
    let order: Value = berth
        .client()
        .call(reqwest::Method::GET, "/v1/apps/app-a/start-order", None)
        .await
        .unwrap();
    assert_eq!(order["order"], json!(["app-b", "app-a"]), "{order}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_kinds_with_flows_rules() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let seeded = ok(&berth, "GET", "/services?sort=id", Body::Empty, 200).await;
    assert_eq!(
        seeded,
        json!([
            {"id": "nodejs", "default_port": 7050},
            {"id": "play", "default_port": 9000},
            {"id": "postgresql", "default_port": 5432}
        ])
    );
    assert_eq!(
        ok(&berth, "GET", "/services/play", Body::Empty, 200).await,
        json!({"id": "play", "default_port": 9000})
    );
    assert_eq!(
        call(&berth, "GET", "/services/cobol", Body::Empty)
            .await
            .status,
        404
    );

    let created = ok(
        &berth,
        "POST",
        "/services",
        Body::Form(&[("id", "redis"), ("default_port", "6379")]),
        201,
    )
    .await;
    assert_eq!(created, json!({"id": "redis", "default_port": 6379}));
    assert_eq!(
        refused(
            &berth,
            "POST",
            "/services",
            Body::Json(json!({"id": "redis", "default_port": 6380}))
        )
        .await,
        vec!["Service with this id already exists"]
    );
    assert_eq!(
        refused(
            &berth,
            "POST",
            "/services",
            Body::Json(json!({"id": "memcached", "default_port": 1024}))
        )
        .await,
        vec!["Default port must be > 1024"]
    );
    assert_eq!(
        refused(
            &berth,
            "POST",
            "/services",
            Body::Json(json!({"id": "mc", "default_port": 11211}))
        )
        .await,
        vec!["Key must be at least 3 characters"]
    );
    assert_eq!(
        refused(
            &berth,
            "POST",
            "/services",
            Body::Json(json!({"id": "Mem Cached"}))
        )
        .await,
        vec![
            "Key must be in all lower case and contain alphanumerics only (-, _, and . are supported). A valid key would be: mem-cached",
            "Default port must be > 1024"
        ]
    );
    // PUT upserts: 201 when created, 200 when updated.
    assert_eq!(
        ok(
            &berth,
            "PUT",
            "/services/memcached",
            Body::Json(json!({"default_port": 11211})),
            201
        )
        .await,
        json!({"id": "memcached", "default_port": 11211})
    );
    assert_eq!(
        ok(
            &berth,
            "PUT",
            "/services/memcached",
            Body::Json(json!({"default_port": 11212})),
            200
        )
        .await,
        json!({"id": "memcached", "default_port": 11212})
    );
    assert_eq!(
        refused(
            &berth,
            "PUT",
            "/services/memcached",
            Body::Json(json!({"default_port": 80}))
        )
        .await,
        vec!["Default port must be > 1024"]
    );
    assert_eq!(
        ids(&ok(
            &berth,
            "GET",
            "/services?id=redis&id=memcached&sort=id",
            Body::Empty,
            200
        )
        .await),
        vec!["memcached", "redis"]
    );
    assert_eq!(
        ok(&berth, "GET", "/services?limit=2", Body::Empty, 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Newest first by default.
    assert_eq!(
        ids(&ok(&berth, "GET", "/services?limit=1", Body::Empty, 200).await),
        vec!["memcached"]
    );

    // A service in use cannot go; an unused one can.
    ok(
        &berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "cache", "service": "memcached"})),
        201,
    )
    .await;
    assert_eq!(
        refused(&berth, "DELETE", "/services/memcached", Body::Empty).await,
        vec!["1 or more applications is using this service"]
    );
    assert_eq!(
        call(&berth, "DELETE", "/services/redis", Body::Empty)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&berth, "DELETE", "/services/redis", Body::Empty)
            .await
            .status,
        404
    );
    // A custom service gets the first free slot of base+2..base+8, with its default port inside.
    let cache = ok(&berth, "GET", "/applications/cache", Body::Empty, 200).await;
    assert_eq!(
        cache["ports"],
        json!([{"service": {"id": "memcached"}, "external": 6012, "internal": 11212}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_journal_every_change() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    ok(
        &berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "journal", "service": "play"})),
        201,
    )
    .await;
    ok(
        &berth,
        "PUT",
        "/applications/journal",
        Body::Json(json!({"service": "postgresql"})),
        200,
    )
    .await;
    ok(
        &berth,
        "POST",
        "/applications",
        Body::Json(json!({"id": "other", "service": "play"})),
        201,
    )
    .await;
    assert_eq!(
        call(&berth, "DELETE", "/applications/journal", Body::Empty)
            .await
            .status,
        204
    );

    let versions = ok(
        &berth,
        "GET",
        "/applications/versions?application=journal",
        Body::Empty,
        200,
    )
    .await;
    let types: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["insert", "update", "delete"]);
    let first = &versions[0];
    assert_eq!(first["application"]["id"], "journal");
    assert_eq!(first["application"]["ports"].as_array().unwrap().len(), 1);
    assert_eq!(
        versions[1]["application"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        humantime::parse_rfc3339(first["timestamp"].as_str().unwrap()).is_ok(),
        "{first}"
    );

    let newest_first = ok(
        &berth,
        "GET",
        "/applications/versions?application=journal&sort=-journal_timestamp",
        Body::Empty,
        200,
    )
    .await;
    assert_eq!(newest_first[0]["type"], "delete");
    let by_id = ok(
        &berth,
        "GET",
        &format!(
            "/applications/versions?id={}",
            first["id"].as_str().unwrap()
        ),
        Body::Empty,
        200,
    )
    .await;
    assert_eq!(by_id.as_array().unwrap().len(), 1);
    assert_eq!(by_id[0]["type"], "insert");
    assert_eq!(
        ok(
            &berth,
            "GET",
            "/applications/versions?limit=2&offset=3",
            Body::Empty,
            200
        )
        .await
        .as_array()
        .unwrap()
        .len(),
        1
    );
    assert_eq!(
        refused(
            &berth,
            "GET",
            "/applications/versions?sort=sideways",
            Body::Empty
        )
        .await,
        vec!["Invalid sort[sideways]. Valid values are: journal_timestamp, -journal_timestamp"]
    );

    ok(
        &berth,
        "PUT",
        "/services/redis",
        Body::Json(json!({"default_port": 6379})),
        201,
    )
    .await;
    ok(
        &berth,
        "PUT",
        "/services/redis",
        Body::Json(json!({"default_port": 6380})),
        200,
    )
    .await;
    assert_eq!(
        call(&berth, "DELETE", "/services/redis", Body::Empty)
            .await
            .status,
        204
    );
    let services = ok(
        &berth,
        "GET",
        "/services/versions?service=redis",
        Body::Empty,
        200,
    )
    .await;
    let changes: Vec<(&str, u64)> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap(),
                v["service"]["default_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![("insert", 6379), ("update", 6380), ("delete", 6380)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_and_health() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let unknown = call(&berth, "GET", "/applications/a/b", Body::Empty).await;
    assert_eq!((unknown.status, unknown.text.as_str()), (404, ""));
    let wrong = call(&berth, "PATCH", "/applications/a", Body::Empty).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json()["code"], "generic_error");
    assert!(wrong.header("allow").unwrap().contains("PUT"));
    for probe in ["startup", "live", "ready"] {
        assert_eq!(
            ok(
                &berth,
                "GET",
                &format!("/_internal_/{probe}"),
                Body::Empty,
                200
            )
            .await["status"],
            "healthy"
        );
    }
}
