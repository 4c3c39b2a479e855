//! The catalog end to end over HTTP, on each store backend: flow's worked example, conflicts
//! and cycles as JSON errors, start order, history, export/import, backends with live members,
//! the CLI's `env`; and 200 simultaneous allocations through two nodes on one etcd.

use crate::support::{Berth, data_dir, on_both_stores, run_berth};
use berth_client::{Client, Method};
use berth_testkit::EtcdServer;
use serde_json::{Value, json};
use std::collections::BTreeSet;

on_both_stores!(
    worked_example_and_errors_over_http,
    start_order_history_and_env,
    export_and_import_round_trip,
    backends_show_their_live_members,
    an_export_over_the_usual_body_limit_goes_back_in,
);

async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> Value {
    client
        .call(method, path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The error of a call that must fail: (status, body's error object).
async fn refused(berth: &Berth, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let response = crate::support::http()
        .request(method, format!("{}{path}", berth.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let error: Value = response.json().await.unwrap();
    (status, error["error"].clone())
}

async fn create(client: &Client, id: &str, kind: &str) -> u64 {
    let app = call(
        client,
        Method::POST,
        "/v1/apps",
        Some(json!({"id": id, "kind": kind})),
    )
    .await;
    app["ports"][0]["external"].as_u64().unwrap()
}

async fn worked_example_and_errors_over_http(berth: &Berth) {
    let client = berth.client();
    assert_eq!(create(&client, "registry", "play").await, 6011);
    assert_eq!(
        create(&client, "registry-postgresql", "postgresql").await,
        6019
    );
    assert_eq!(create(&client, "www", "nodejs").await, 6020);
    assert_eq!(create(&client, "user", "play").await, 6031);
    let added = call(&client, Method::PUT, "/v1/apps/registry/ports/nodejs", None).await;
    assert_eq!(added["port"]["external"], 6010);
    assert_eq!(create(&client, "registry-api2", "play").await, 6041);
    call(
        &client,
        Method::POST,
        "/v1/kinds",
        Some(json!({"name": "redis", "default_port": 6379})),
    )
    .await;
    let redis = call(&client, Method::PUT, "/v1/apps/www/ports/redis", None).await;
    assert_eq!(redis["port"]["external"], 6022);

    let (status, error) = refused(
        berth,
        reqwest::Method::POST,
        "/v1/apps",
        json!({"id": "taken", "kind": "play", "external": 6011}),
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (409, Some("external")));
    assert!(
        error["message"].as_str().unwrap().contains("registry"),
        "{error}"
    );
    let (status, error) = refused(
        berth,
        reqwest::Method::POST,
        "/v1/apps",
        json!({"id": "x", "kind": "play"}),
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("id")));
    let (status, error) = refused(
        berth,
        reqwest::Method::POST,
        "/v1/apps",
        json!({"id": "nokind", "kind": "cobol"}),
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("kind")));
    let (status, _) = refused(
        berth,
        reqwest::Method::POST,
        "/v1/apps",
        json!({"id": "registry", "kind": "play"}),
    )
    .await;
    assert_eq!(status, 409);

    call(
        &client,
        Method::PUT,
        "/v1/apps/www/dependencies/registry",
        None,
    )
    .await;
    call(
        &client,
        Method::PUT,
        "/v1/apps/registry/dependencies/registry-postgresql",
        None,
    )
    .await;
    let (status, error) = refused(
        berth,
        reqwest::Method::PUT,
        "/v1/apps/registry-postgresql/dependencies/www",
        json!(null),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        error["message"],
        "dependency cycle: registry-postgresql -> www -> registry -> registry-postgresql"
    );
    let (status, error) = refused(
        berth,
        reqwest::Method::DELETE,
        "/v1/apps/registry",
        json!(null),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        error["message"].as_str().unwrap().contains("www"),
        "{error}"
    );
    let (status, _) = refused(
        berth,
        reqwest::Method::DELETE,
        "/v1/kinds/play",
        json!(null),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = refused(berth, reqwest::Method::GET, "/v1/apps/nobody", json!(null)).await;
    assert_eq!(status, 404);

    // -port really descends.
    let descending = call(&client, Method::GET, "/v1/apps?sort=-port", None).await;
    let lowest: Vec<u64> = descending
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["external"].as_u64().unwrap())
                .min()
                .unwrap()
        })
        .collect();
    let mut sorted = lowest.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(lowest, sorted);
}

async fn start_order_history_and_env(berth: &Berth) {
    let client = berth.client();
    create(&client, "db1", "postgresql").await;
    create(&client, "db2", "postgresql").await;
    create(&client, "api", "play").await;
    create(&client, "www", "nodejs").await;
    call(
        &client,
        Method::PUT,
        "/v1/apps/api/dependencies",
        Some(json!({"dependencies": ["db1", "db2"]})),
    )
    .await;
    call(&client, Method::PUT, "/v1/apps/www/dependencies/api", None).await;
    let waves = call(&client, Method::GET, "/v1/start-order", None).await;
    assert_eq!(waves, json!({"waves": [["db1", "db2"], ["api"], ["www"]]}));
    let order = call(&client, Method::GET, "/v1/apps/www/start-order", None).await;
    assert_eq!(order["order"], json!(["db1", "db2", "api", "www"]));

    let history = call(&client, Method::GET, "/v1/apps/www/history", None).await;
    let types: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["insert", "update"]);

    let (code, stdout, stderr) = run_berth(&["env", "www", "--server", &berth.base]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: BTreeSet<&str> = stdout.lines().collect();
    let db1 =
        call(&client, Method::GET, "/v1/apps/db1", None).await["ports"][0]["external"].clone();
    assert!(
        lines.contains(format!("DB1_POSTGRESQL_PORT={db1}").as_str()),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("WWW_NODEJS_PORT=")),
        "{stdout}"
    );
    assert_eq!(lines.len(), 4);
}

async fn export_and_import_round_trip(berth: &Berth) {
    let client = berth.client();
    create(&client, "base", "postgresql").await;
    call(
        &client,
        Method::POST,
        "/v1/apps",
        Some(json!({"id": "web", "kind": "play", "dependencies": ["base"]})),
    )
    .await;
    call(
        &client,
        Method::POST,
        "/v1/backends",
        Some(json!({"name": "hw", "app": "web", "version": "1.0", "weight": 3})),
    )
    .await;
    let exported = call(&client, Method::GET, "/v1/catalog", None).await;

    // Into a fresh berth (embedded), from the YAML form.
    let (_keep, dir) = data_dir();
    let target = Berth::embedded(&dir);
    let yaml = client
        .call_text(
            Method::GET,
            "/v1/catalog?format=yaml",
            "application/json",
            None,
        )
        .await
        .unwrap();
    let summary = target
        .client()
        .call_text(
            Method::POST,
            "/v1/catalog/import",
            "application/yaml",
            Some(yaml),
        )
        .await
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["applications"], 2);
    assert_eq!(summary["backends"], 1);
    let mut imported = call(&target.client(), Method::GET, "/v1/catalog", None).await;
    let mut original = exported.clone();
    for catalog in [&mut imported, &mut original] {
        for app in catalog["applications"].as_array_mut().unwrap() {
            app.as_object_mut().unwrap().remove("created_at");
        }
    }
    assert_eq!(imported, original);

    // A second import clashes everywhere; all problems come back together, nothing changes.
    let (status, error) = refused(
        &target,
        reqwest::Method::POST,
        "/v1/catalog/import",
        exported,
    )
    .await;
    assert_eq!(status, 422);
    assert!(error["details"].as_array().unwrap().len() >= 3, "{error}");
    let after = call(&target.client(), Method::GET, "/v1/apps", None).await;
    assert_eq!(after.as_array().unwrap().len(), 2);
}

async fn backends_show_their_live_members(berth: &Berth) {
    let client = berth.client();
    let created = crate::support::http()
        .post(format!("{}/v1/backends", berth.base))
        .json(&json!({"name": "hw", "app": "hello", "version": "1.0.0", "port": 80}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(created.headers()["location"], "/v1/backends/hw");
    let (status, error) = refused(
        berth,
        reqwest::Method::POST,
        "/v1/backends",
        json!({"name": "hw", "app": "hello", "version": "1"}),
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (409, Some("conflict")));
    let (status, _) = refused(
        berth,
        reqwest::Method::POST,
        "/v1/backends",
        json!({"name": "novers", "app": "hello"}),
    )
    .await;
    assert_eq!(status, 422);

    for (port, version) in [(1, "1.0.0"), (2, "1.0.0"), (3, "2.0.0")] {
        let mut registration = crate::instances::registration("10.2.0.1", port, 60_000);
        registration.version = Some(version.into());
        client.register("hello", &registration).await.unwrap();
    }
    let backend = call(&client, Method::GET, "/v1/backends/hw", None).await;
    assert_eq!(backend["port"], 80, "extra fields are kept");
    let members: Vec<&str> = backend["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec!["10.2.0.1:1", "10.2.0.1:2"]);

    call(
        &client,
        Method::POST,
        "/v1/frontends",
        Some(json!({"name": "site", "backend": "hw", "port": 8080})),
    )
    .await;
    let frontend = call(&client, Method::GET, "/v1/frontends/site", None).await;
    assert_eq!(
        frontend,
        json!({"name": "site", "backend": "hw", "port": 8080})
    );
    call(&client, Method::DELETE, "/v1/frontends/site", None).await;
    let (status, _) = refused(
        berth,
        reqwest::Method::GET,
        "/v1/frontends/site",
        json!(null),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_simultaneous_allocations_through_two_nodes_are_all_distinct() {
    let etcd = EtcdServer::start();
    let nodes = [Berth::on_etcd(&etcd), Berth::on_etcd(&etcd)];
    let clients = [nodes[0].client(), nodes[1].client()];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = clients[i % 2].clone();
        let id = if i % 3 == 0 {
            format!("team{}-svc{i}", i % 7)
        } else {
            format!("app{i}")
        };
        let kind = ["nodejs", "play", "postgresql"][i % 3];
        tasks.push(tokio::spawn(async move {
            client
                .call(
                    Method::POST,
                    "/v1/apps",
                    Some(&json!({"id": id, "kind": kind})),
                )
                .await
        }));
    }
    let mut ports = BTreeSet::new();
    for task in tasks {
        let app = task.await.unwrap().unwrap();
        let port = app["ports"][0]["external"].as_u64().unwrap();
        assert!(ports.insert(port), "port {port} handed out twice");
    }
    assert_eq!(ports.len(), 200);
    // Both nodes see the same 200 claims.
    for client in &clients {
        let apps = call(client, Method::GET, "/v1/apps?limit=1000", None).await;
        assert_eq!(apps.as_array().unwrap().len(), 200);
    }
}

/// Imports take bodies far over the 1 MiB of other requests: a catalog of thousands of
/// applications exports to several MiB and must import again as it came out.
async fn an_export_over_the_usual_body_limit_goes_back_in(berth: &Berth) {
    const APPS: usize = 9_000;
    let id = |i: usize| format!("team-with-a-long-name-{:05}-svc{}", i / 3, i % 3);
    let kinds = ["nodejs", "play", "postgresql"];
    let applications: Vec<Value> = (0..APPS)
        .map(|i| {
            // One block per family of three, skipping the multiples of 100 as the allocator does.
            let family = i / 3;
            let block = 6_010 + (family / 9) * 100 + (family % 9) * 10;
            let offset = [0, 1, 9][i % 3];
            let dependencies: Vec<String> = (i > 0).then(|| id(i - 1)).into_iter().collect();
            json!({
                "id": id(i),
                "ports": [{"kind": kinds[i % 3], "external": block + offset, "internal": 8000}],
                "dependencies": dependencies,
            })
        })
        .collect();
    let import = json!({"kinds": [], "applications": applications});
    assert!(import.to_string().len() > berth_api::BODY_LIMIT);
    let summary = call(
        &berth.client(),
        Method::POST,
        "/v1/catalog/import",
        Some(import),
    )
    .await;
    assert_eq!(summary["applications"], APPS);

    let exported = call(&berth.client(), Method::GET, "/v1/catalog", None).await;
    assert!(exported.to_string().len() > berth_api::BODY_LIMIT);
    let (_keep, dir) = data_dir();
    let target = Berth::embedded(&dir);
    let summary = call(
        &target.client(),
        Method::POST,
        "/v1/catalog/import",
        Some(exported),
    )
    .await;
    assert_eq!(summary["applications"], APPS);
    let order = call(&target.client(), Method::GET, "/v1/start-order", None).await;
    assert_eq!(order["waves"].as_array().unwrap().len(), APPS);
}
