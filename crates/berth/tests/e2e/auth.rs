//! Auth end to end: every route of the route table refused without a token (401) and with a
//! token lacking the grant (403), and served with the right grant, in the shape of its API, on
//! both stores; ownership between two teams; tokens shared and revoked across two nodes of one
//! etcd; the browser guards (415 for JSON sent as text, foreign `Host`); protected mode.

use crate::support::{Berth, data_dir, send};
use berth_api::Access;
use berth_testkit::EtcdServer;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The first administrator's secret, as an operator would put it in a file.
pub const BOOTSTRAP: &str = "berth_bootstrap_secret_for_the_tests_0123456789abcdef";

/// The arguments of a berth with auth on, bootstrapped from a token file in `dir`.
pub fn auth_args(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("bootstrap-token");
    std::fs::write(&file, format!("{BOOTSTRAP}\n")).unwrap();
    vec![
        "--auth".into(),
        format!("--bootstrap-token-file={}", file.display()),
    ]
}

/// A client of `berth` with the bootstrap (admin) token.
pub fn admin(berth: &Berth) -> berth_client::Client {
    berth.client().with_token(BOOTSTRAP)
}

/// A request body, owned.
#[derive(Clone, Debug)]
enum Payload {
    Empty,
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// One request to one route, and what the right grant gets.
#[derive(Clone, Debug)]
struct Probe {
    method: &'static str,
    /// The route's path template, as in the route table.
    route: &'static str,
    /// The concrete path (with query).
    path: String,
    payload: Payload,
    success: u16,
}

fn probe(
    method: &'static str,
    route: &'static str,
    path: &str,
    payload: Payload,
    success: u16,
) -> Probe {
    Probe {
        method,
        route,
        path: path.to_string(),
        payload,
        success,
    }
}

/// A request to every route, ordered so that what a request needs was made by one before it.
/// `{token}` in a path stands for a token made for the probe.
fn probes() -> Vec<Probe> {
    use Payload::{Empty, Form, Json};
    let lyft_host = || {
        Form(vec![
            ("ip", "10.0.0.2".into()),
            ("port", "80".into()),
            ("revision", "r1".into()),
            ("service_repo_name", "payments-repo".into()),
            (
                "tags",
                r#"{"az":"a","region":"r","instance_id":"i"}"#.into(),
            ),
        ])
    };
    let weight = || Form(vec![("load_balancing_weight", "5".into())]);
    vec![
        // Operations and the document.
        probe("GET", "/health", "/health", Empty, 200),
        probe("GET", "/metrics", "/metrics", Empty, 200),
        probe("GET", "/v1/openapi.json", "/v1/openapi.json", Empty, 200),
        // Live instances, native.
        probe(
            "POST",
            "/v1/services/{service}/instances",
            "/v1/services/payments-web/instances",
            Json(json!({"id": "i1", "address": "10.0.0.1", "port": 80})),
            201,
        ),
        probe("GET", "/v1/services", "/v1/services", Empty, 200),
        probe(
            "GET",
            "/v1/services/{service}/instances",
            "/v1/services/payments-web/instances",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/v1/services/{service}/instances/{id}",
            "/v1/services/payments-web/instances/i1",
            Empty,
            200,
        ),
        probe(
            "PUT",
            "/v1/services/{service}/instances/{id}",
            "/v1/services/payments-web/instances/i1",
            Json(json!({"address": "10.0.0.1", "port": 80, "version": "2"})),
            200,
        ),
        probe(
            "PUT",
            "/v1/services/{service}/instances/{id}/heartbeat",
            "/v1/services/payments-web/instances/i1/heartbeat",
            Empty,
            200,
        ),
        probe("GET", "/v1/instances", "/v1/instances", Empty, 200),
        probe("GET", "/v1/xds/clients", "/v1/xds/clients", Empty, 200),
        probe(
            "GET",
            "/v1/sd/prometheus",
            "/v1/sd/prometheus?service=payments-web",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/v1/events",
            "/v1/events?service=payments-web",
            Empty,
            200,
        ),
        probe(
            "DELETE",
            "/v1/services/{service}/instances/{id}",
            "/v1/services/payments-web/instances/i1",
            Empty,
            204,
        ),
        // Tokens.
        probe("GET", "/v1/tokens", "/v1/tokens", Empty, 200),
        probe(
            "POST",
            "/v1/tokens",
            "/v1/tokens",
            Json(json!({"owner": "ops", "grants": ["read:*"]})),
            201,
        ),
        probe("GET", "/v1/tokens/self", "/v1/tokens/self", Empty, 200),
        probe(
            "DELETE",
            "/v1/tokens/{id}",
            "/v1/tokens/{token}",
            Empty,
            204,
        ),
        // The catalog, native.
        probe(
            "POST",
            "/v1/kinds",
            "/v1/kinds",
            Json(json!({"name": "redis", "default_port": 6379})),
            201,
        ),
        probe("GET", "/v1/kinds", "/v1/kinds", Empty, 200),
        probe("GET", "/v1/kinds/{kind}", "/v1/kinds/redis", Empty, 200),
        probe(
            "PUT",
            "/v1/kinds/{kind}",
            "/v1/kinds/redis",
            Json(json!({"default_port": 6380})),
            200,
        ),
        probe(
            "GET",
            "/v1/kinds/{kind}/history",
            "/v1/kinds/redis/history",
            Empty,
            200,
        ),
        probe(
            "POST",
            "/v1/apps",
            "/v1/apps",
            Json(json!({"id": "cache", "kind": "redis"})),
            201,
        ),
        probe(
            "POST",
            "/v1/apps",
            "/v1/apps",
            Json(json!({"id": "shop", "kind": "redis"})),
            201,
        ),
        probe("GET", "/v1/apps", "/v1/apps", Empty, 200),
        probe("GET", "/v1/apps/{id}", "/v1/apps/shop", Empty, 200),
        probe(
            "DELETE",
            "/v1/apps/{id}/ports/{kind}",
            "/v1/apps/shop/ports/redis",
            Empty,
            200,
        ),
        probe(
            "PUT",
            "/v1/apps/{id}/ports/{kind}",
            "/v1/apps/shop/ports/redis",
            Empty,
            201,
        ),
        probe(
            "PUT",
            "/v1/apps/{id}/dependencies",
            "/v1/apps/shop/dependencies",
            Json(json!({"dependencies": ["cache"]})),
            200,
        ),
        probe(
            "DELETE",
            "/v1/apps/{id}/dependencies/{dependency}",
            "/v1/apps/shop/dependencies/cache",
            Empty,
            200,
        ),
        probe(
            "PUT",
            "/v1/apps/{id}/dependencies/{dependency}",
            "/v1/apps/shop/dependencies/cache",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/v1/apps/{id}/dependencies",
            "/v1/apps/shop/dependencies",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/v1/apps/{id}/start-order",
            "/v1/apps/shop/start-order",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/v1/apps/{id}/history",
            "/v1/apps/shop/history",
            Empty,
            200,
        ),
        probe("GET", "/v1/apps/{id}/env", "/v1/apps/shop/env", Empty, 200),
        probe("GET", "/v1/start-order", "/v1/start-order", Empty, 200),
        probe("GET", "/v1/catalog", "/v1/catalog", Empty, 200),
        probe(
            "POST",
            "/v1/catalog/import",
            "/v1/catalog/import",
            Json(json!({"kinds": [], "applications": []})),
            200,
        ),
        probe(
            "GET",
            "/v1/catalog/allocator",
            "/v1/catalog/allocator",
            Empty,
            200,
        ),
        probe(
            "PUT",
            "/v1/catalog/allocator",
            "/v1/catalog/allocator",
            Json(json!({"high_water": 6100})),
            200,
        ),
        probe(
            "POST",
            "/v1/backends",
            "/v1/backends",
            Json(json!({"name": "shop-v1", "app": "shop", "version": "1"})),
            201,
        ),
        probe("GET", "/v1/backends", "/v1/backends", Empty, 200),
        probe(
            "GET",
            "/v1/backends/{name}",
            "/v1/backends/shop-v1",
            Empty,
            200,
        ),
        probe(
            "POST",
            "/v1/frontends",
            "/v1/frontends",
            Json(json!({"name": "www", "backend": "shop-v1", "port": 80})),
            201,
        ),
        probe("GET", "/v1/frontends", "/v1/frontends", Empty, 200),
        probe(
            "GET",
            "/v1/frontends/{name}",
            "/v1/frontends/www",
            Empty,
            200,
        ),
        probe(
            "DELETE",
            "/v1/frontends/{name}",
            "/v1/frontends/www",
            Empty,
            204,
        ),
        probe(
            "DELETE",
            "/v1/backends/{name}",
            "/v1/backends/shop-v1",
            Empty,
            204,
        ),
        probe("DELETE", "/v1/apps/{id}", "/v1/apps/shop", Empty, 204),
        probe("DELETE", "/v1/apps/{id}", "/v1/apps/cache", Empty, 204),
        probe("DELETE", "/v1/kinds/{kind}", "/v1/kinds/redis", Empty, 204),
        // lyft/discovery.
        probe("GET", "/healthcheck", "/healthcheck", Empty, 200),
        probe(
            "POST",
            "/v1/registration/{service}",
            "/v1/registration/payments-lyft",
            lyft_host(),
            200,
        ),
        probe(
            "GET",
            "/v1/registration/{service}",
            "/v1/registration/payments-lyft",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/v1/registration/repo/{repo}",
            "/v1/registration/repo/payments-repo",
            Empty,
            200,
        ),
        probe(
            "POST",
            "/v1/loadbalancing/{service}/{ip}",
            "/v1/loadbalancing/payments-lyft/10.0.0.2",
            weight(),
            204,
        ),
        probe(
            "POST",
            "/v1/loadbalancing/{service}",
            "/v1/loadbalancing/payments-lyft",
            weight(),
            204,
        ),
        probe(
            "DELETE",
            "/v1/registration/{service}/{ip}",
            "/v1/registration/payments-lyft/10.0.0.2",
            Empty,
            200,
        ),
        // bender.
        probe(
            "POST",
            "/registrations/{app}/{version}/{host}/{port}",
            "/registrations/payments-app/1.0/10.0.0.3/8000",
            Empty,
            200,
        ),
        probe("GET", "/registrations", "/registrations", Empty, 200),
        probe(
            "GET",
            "/registrations/{app}",
            "/registrations/payments-app",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/registrations/{app}/{version}",
            "/registrations/payments-app/1.0",
            Empty,
            200,
        ),
        probe(
            "POST",
            "/backends",
            "/backends",
            Json(json!({"name": "hw", "app": "payments-app", "version": "1.0"})),
            201,
        ),
        probe("GET", "/backends", "/backends", Empty, 200),
        probe("GET", "/backends/{name}", "/backends/hw", Empty, 200),
        probe(
            "POST",
            "/frontends",
            "/frontends",
            Json(json!({"name": "site", "backend": "hw", "port": 80})),
            201,
        ),
        probe("GET", "/frontends", "/frontends", Empty, 200),
        probe("GET", "/frontends/{name}", "/frontends/site", Empty, 200),
        probe("DELETE", "/frontends/{name}", "/frontends/site", Empty, 204),
        probe("DELETE", "/backends/{name}", "/backends/hw", Empty, 204),
        // flowcommerce/registry.
        probe(
            "POST",
            "/services",
            "/services",
            Json(json!({"id": "flowsvc", "default_port": 7000})),
            201,
        ),
        probe("GET", "/services", "/services", Empty, 200),
        probe(
            "GET",
            "/services/versions",
            "/services/versions",
            Empty,
            200,
        ),
        probe("GET", "/services/{id}", "/services/flowsvc", Empty, 200),
        probe(
            "PUT",
            "/services/{id}",
            "/services/flowsvc",
            Json(json!({"default_port": 7001})),
            200,
        ),
        probe(
            "POST",
            "/applications",
            "/applications",
            Json(json!({"id": "flow-a", "service": "flowsvc"})),
            201,
        ),
        probe(
            "POST",
            "/applications",
            "/applications",
            Json(json!({"id": "flow-b", "service": "flowsvc"})),
            201,
        ),
        probe("GET", "/applications", "/applications", Empty, 200),
        probe(
            "GET",
            "/applications/versions",
            "/applications/versions",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/applications/yaml",
            "/applications/yaml",
            Empty,
            200,
        ),
        probe(
            "GET",
            "/applications/{id}",
            "/applications/flow-a",
            Empty,
            200,
        ),
        probe(
            "PUT",
            "/applications/{id}",
            "/applications/flow-a",
            Json(json!({"service": "flowsvc"})),
            200,
        ),
        probe(
            "PUT",
            "/applications/{id}/dependencies/{dependency}",
            "/applications/flow-a/dependencies/flow-b",
            Empty,
            200,
        ),
        probe(
            "DELETE",
            "/applications/{id}/dependencies/{dependency}",
            "/applications/flow-a/dependencies/flow-b",
            Empty,
            200,
        ),
        probe(
            "DELETE",
            "/applications/{id}",
            "/applications/flow-a",
            Empty,
            204,
        ),
        probe(
            "DELETE",
            "/applications/{id}",
            "/applications/flow-b",
            Empty,
            204,
        ),
        probe("DELETE", "/services/{id}", "/services/flowsvc", Empty, 204),
        probe(
            "GET",
            "/_internal_/startup",
            "/_internal_/startup",
            Empty,
            200,
        ),
        probe("GET", "/_internal_/live", "/_internal_/live", Empty, 200),
        probe("GET", "/_internal_/ready", "/_internal_/ready", Empty, 200),
    ]
}

/// The grant a route needs (for its probe's path), and grants that are not enough.
fn grants_for(access: Access) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
    Some(match access {
        Access::Open | Access::AnyToken => return None,
        Access::ReadService(_) | Access::ReadServiceInQuery(_) => (
            vec!["read:payments-*"],
            vec!["read:other-*", "write:other-*", "catalog:write"],
        ),
        Access::WriteService(_) => (
            vec!["write:payments-*"],
            vec!["read:*", "write:other-*", "catalog:write"],
        ),
        Access::ReadAll => (vec!["read:*"], vec!["read:payments-*", "catalog:write"]),
        Access::CatalogRead => (vec!["catalog:read"], vec!["write:*"]),
        Access::CatalogWrite => (vec!["catalog:write"], vec!["catalog:read", "write:*"]),
        Access::Admin => (vec!["admin"], vec!["catalog:write", "write:*"]),
    })
}

/// Sends a probe with `secret` (or none) and returns the status and the body.
async fn attempt(base: &str, probe: &Probe, path: &str, secret: Option<&str>) -> (u16, String) {
    let bearer = secret.map(|s| format!("Bearer {s}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    let form: Vec<(&str, &str)>;
    let body = match &probe.payload {
        Payload::Empty => crate::support::Body::Empty,
        Payload::Json(value) => crate::support::Body::Json(value.clone()),
        Payload::Form(fields) => {
            form = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::support::Body::Form(&form)
        }
    };
    if probe.route == "/v1/events" {
        // A stream: its status is all there is to see.
        let mut request = crate::support::http().get(format!("{base}{path}"));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            return (status, String::new());
        }
        return (status, response.text().await.unwrap());
    }
    let reply = send(base, probe.method, path, body, &headers).await;
    (reply.status, reply.text)
}

/// The route table's (method, path) pairs.
fn routes() -> HashMap<(String, &'static str), Access> {
    berth_api::route_table()
        .into_iter()
        .map(|r| ((r.method.to_string(), r.path), r.access))
        .collect()
}

#[test]
fn every_route_has_a_probe() {
    let probed: BTreeSet<(String, &str)> = probes()
        .iter()
        .map(|p| (p.method.to_string(), p.route))
        .collect();
    let missing: Vec<_> = routes()
        .into_keys()
        .filter(|route| !probed.contains(route))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an auth probe: {missing:?}"
    );
    let unknown: Vec<_> = probed
        .iter()
        .filter(|route| !routes().contains_key(*route))
        .collect();
    assert!(unknown.is_empty(), "probes of no route: {unknown:?}");
}

/// Every route: no token → 401 (in its API's shape, with `WWW-Authenticate`), a token
/// without the grant → 403, the right grant → the route's success.
async fn every_route_checks_its_grant(berth: Berth) {
    let admin = admin(&berth);
    let routes = routes();
    let mut tokens: HashMap<Vec<&str>, String> = HashMap::new();
    let mut secret_of = async |grants: &Vec<&'static str>| -> String {
        if let Some(secret) = tokens.get(grants) {
            return secret.clone();
        }
        let grants_text: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
        let token = admin
            .create_token("payments", &grants_text, "probe")
            .await
            .unwrap();
        let secret = token.secret.unwrap();
        tokens.insert(grants.clone(), secret.clone());
        secret
    };
    for probe in probes() {
        let access = routes[&(probe.method.to_string(), probe.route)];
        let path = if probe.path.contains("{token}") {
            let victim = admin
                .create_token("ops", &["read:*".into()], "to revoke")
                .await
                .unwrap();
            probe.path.replace("{token}", &victim.id)
        } else {
            probe.path.clone()
        };
        let what = format!("{} {}", probe.method, path);
        if access != Access::Open {
            let (status, body) = attempt(&berth.base, &probe, &path, None).await;
            assert_eq!(status, 401, "{what} without a token: {body}");
            let (status, body) =
                attempt(&berth.base, &probe, &path, Some("berth_not_a_token")).await;
            assert_eq!(status, 401, "{what} with an unknown token: {body}");
            assert_refusal_shape(&probe, &body);
        }
        let right = match grants_for(access) {
            Some((right, wrong)) => {
                let secret = secret_of(&wrong).await;
                let (status, body) = attempt(&berth.base, &probe, &path, Some(&secret)).await;
                assert_eq!(status, 403, "{what} with {wrong:?}: {body}");
                assert_refusal_shape(&probe, &body);
                Some(secret_of(&right).await)
            }
            None if access == Access::AnyToken => Some(secret_of(&vec!["read:nothing-*"]).await),
            None => None,
        };
        let (status, body) = attempt(&berth.base, &probe, &path, right.as_deref()).await;
        assert_eq!(status, probe.success, "{what} with the right grant: {body}");
    }
}

/// A refusal reads as its API's errors do.
fn assert_refusal_shape(probe: &Probe, body: &str) {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let route = probe.route;
    let native = route.starts_with("/v1/")
        && !route.starts_with("/v1/registration")
        && !route.starts_with("/v1/loadbalancing");
    if native {
        assert!(value["error"]["code"].is_string(), "{route}: {value}");
    } else if route.starts_with("/v1/") {
        assert!(value["error"].is_string(), "lyft {route}: {value}");
    } else if route.starts_with("/registrations")
        || route.starts_with("/backends")
        || route.starts_with("/frontends")
    {
        assert!(
            value["message"].is_string() && value["code"].is_string(),
            "bender {route}: {value}"
        );
    } else {
        assert!(
            value["code"] == "generic_error" && value["messages"][0].is_string(),
            "flow {route}: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_grant_on_the_embedded_store() {
    let (_keep, dir) = data_dir();
    let mut args = vec![format!("--data-dir={}", dir.display())];
    args.extend(auth_args(&dir));
    every_route_checks_its_grant(Berth::start(&args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_grant_on_etcd() {
    let (_keep, dir) = data_dir();
    let etcd = EtcdServer::start();
    let mut args = vec![format!("--store={}", etcd.store_url())];
    args.extend(auth_args(&dir));
    every_route_checks_its_grant(Berth::start(&args)).await;
}

/// Sends `method path` with a JSON body and a bearer token; returns the status and the body.
async fn call(
    berth: &Berth,
    secret: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bearer = format!("Bearer {secret}");
    let body = match body {
        Some(value) => crate::support::Body::Json(value),
        None => crate::support::Body::Empty,
    };
    let reply = send(
        &berth.base,
        method,
        path,
        body,
        &[("authorization", &bearer)],
    )
    .await;
    let value = if reply.text.is_empty() {
        Value::Null
    } else {
        reply.json()
    };
    (reply.status, value)
}

async fn token(berth: &Berth, owner: &str, grants: &[&str]) -> String {
    let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
    admin(berth)
        .create_token(owner, &grants, "test")
        .await
        .unwrap()
        .secret
        .unwrap()
}

/// Two teams with write grants on the same services: neither can move or remove what the
/// other registered (native and legacy doors), each keeps its own working, and a rotated
/// token of the same team keeps the team's instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_team_cannot_take_over_or_remove_another_teams_instances() {
    let (keep, dir) = data_dir();
    let mut args = vec![format!("--data-dir={}", dir.display())];
    args.extend(auth_args(keep.path()));
    let berth = Berth::start(&args);
    let payments = token(&berth, "payments", &["write:*"]).await;
    let search = token(&berth, "search", &["write:*"]).await;
    let instance = "/v1/services/web/instances/a";
    let (status, _) = call(
        &berth,
        &payments,
        "PUT",
        instance,
        Some(json!({"address": "10.0.0.1", "port": 80})),
    )
    .await;
    assert_eq!(status, 201);

    // The takeover of the issue: another address on the same id.
    let (status, body) = call(
        &berth,
        &search,
        "PUT",
        instance,
        Some(json!({"address": "10.6.6.6", "port": 80})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("payments"),
        "{body}"
    );
    let (status, _) = call(&berth, &search, "DELETE", instance, None).await;
    assert_eq!(status, 403);
    // A heartbeat changes nothing: any writer of the service may send one.
    let (status, _) = call(
        &berth,
        &search,
        "PUT",
        &format!("{instance}/heartbeat"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, current) = call(&berth, &payments, "GET", instance, None).await;
    assert_eq!(
        (current["address"].as_str(), current["owner"].as_str()),
        (Some("10.0.0.1"), Some("payments"))
    );

    // lyft's door: the host belongs to payments too.
    let lyft = |secret: &str| format!("Bearer {secret}");
    let form = [
        ("ip", "10.0.0.7"),
        ("port", "80"),
        ("revision", "r"),
        ("tags", r#"{"az":"a","region":"r","instance_id":"i"}"#),
    ];
    let registered = send(
        &berth.base,
        "POST",
        "/v1/registration/web",
        crate::support::Body::Form(&form),
        &[("authorization", &lyft(&payments))],
    )
    .await;
    assert_eq!(registered.status, 200, "{}", registered.text);
    let removed = send(
        &berth.base,
        "DELETE",
        "/v1/registration/web/10.0.0.7",
        crate::support::Body::Empty,
        &[("authorization", &lyft(&search))],
    )
    .await;
    assert_eq!(removed.status, 403, "{}", removed.text);
    assert!(
        removed.json()["error"].is_string(),
        "lyft's error shape: {}",
        removed.text
    );
    let weights = send(
        &berth.base,
        "POST",
        "/v1/loadbalancing/web",
        crate::support::Body::Form(&[("load_balancing_weight", "7")]),
        &[("authorization", &lyft(&search))],
    )
    .await;
    assert_eq!(
        weights.status, 403,
        "a weight change of every host is refused as a whole: {}",
        weights.text
    );

    // A new token of the same team: the team's instances are still its own.
    let rotated = token(&berth, "payments", &["write:web*"]).await;
    let (status, _) = call(
        &berth,
        &rotated,
        "PUT",
        instance,
        Some(json!({"address": "10.0.0.2", "port": 80})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&berth, &rotated, "DELETE", instance, None).await;
    assert_eq!(status, 204);
    // An administrator may remove anything.
    let (status, _) = call(
        &berth,
        BOOTSTRAP,
        "DELETE",
        "/v1/services/web/instances/10.0.0.7:80",
        None,
    )
    .await;
    assert_eq!(status, 204);
}

/// Instances registered while auth was off have no owner: the first write claims them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_from_before_auth_are_claimed_by_the_first_write() {
    let (keep, dir) = data_dir();
    let open = Berth::embedded(&dir);
    open.client()
        .register(
            "legacy",
            &berth_client::Registration {
                id: Some("old".into()),
                address: "10.0.0.1".into(),
                port: 80,
                ttl_ms: Some(3_600_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut open = open;
    open.terminate(std::time::Duration::from_secs(10));
    let mut args = vec![format!("--data-dir={}", dir.display())];
    args.extend(auth_args(keep.path()));
    let berth = Berth::start(&args);
    let first = token(&berth, "first", &["write:legacy"]).await;
    let second = token(&berth, "second", &["write:legacy"]).await;
    let path = "/v1/services/legacy/instances/old";
    let (status, body) = call(&berth, &first, "GET", path, None).await;
    assert_eq!((status, body.get("owner")), (200, None), "{body}");
    let (status, body) = call(
        &berth,
        &first,
        "PUT",
        path,
        Some(json!({"address": "10.0.0.1", "port": 80, "ttl_ms": 3_600_000})),
    )
    .await;
    assert_eq!(
        (status, body["owner"].as_str()),
        (200, Some("first")),
        "{body}"
    );
    let (status, _) = call(&berth, &second, "DELETE", path, None).await;
    assert_eq!(status, 403);
}

/// `anonymous = "read"`: reads without a token, writes still need one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_read_lets_old_pollers_read_and_nothing_more() {
    let (keep, dir) = data_dir();
    let mut args = vec![
        format!("--data-dir={}", dir.display()),
        "--anonymous=read".into(),
    ];
    args.extend(auth_args(keep.path()));
    let berth = Berth::start(&args);
    for path in [
        "/v1/services",
        "/v1/services/web/instances",
        "/v1/registration/web",
        "/registrations",
        "/v1/kinds",
        "/applications",
    ] {
        let reply = send(&berth.base, "GET", path, crate::support::Body::Empty, &[]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    let reply = send(
        &berth.base,
        "POST",
        "/v1/services/web/instances",
        crate::support::Body::Json(json!({"address": "10.0.0.1", "port": 80})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"berth\"")
    );
    let reply = send(
        &berth.base,
        "GET",
        "/v1/tokens",
        crate::support::Body::Empty,
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    // HTTP Basic with the secret as the password, for clients that only take a URL.
    let client = crate::support::http();
    let status = client
        .post(format!("{}/v1/services/web/instances", berth.base))
        .basic_auth("anything", Some(BOOTSTRAP))
        .json(&json!({"address": "10.0.0.1", "port": 80}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201);
    // Never a secret in the log.
    assert!(!berth.log().iter().any(|line| line.contains(BOOTSTRAP)));
}

/// Two nodes on one etcd: a token made through one works on the other at once; revoked on
/// the other, it stops working on the first within a second, and its open stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shared_by_every_node_and_revocation_reaches_them_within_a_second() {
    let (keep, _) = data_dir();
    let etcd = EtcdServer::start();
    let mut args = vec![format!("--store={}", etcd.store_url())];
    args.extend(auth_args(keep.path()));
    let a = Berth::start(&args);
    let b = Berth::start(&args);
    let made = admin(&a)
        .create_token("payments", &["read:*".into()], "shared")
        .await
        .unwrap();
    let secret = made.secret.unwrap();
    let reader = b.client().with_token(&secret);
    reader
        .services()
        .await
        .expect("the token works on the other node at once");

    let on_a = a.client().with_token(&secret);
    let mut stream = on_a.events(None, None).await.unwrap();
    admin(&b).revoke_token(&made.id).await.unwrap();
    let revoked_at = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        use futures::StreamExt;
        while let Some(event) = stream.next().await {
            if event.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream of a revoked token did not end within 1 s"
    );
    let refused = on_a.services().await.unwrap_err();
    assert_eq!(refused.status(), Some(401));
    assert!(revoked_at.elapsed() < std::time::Duration::from_secs(1));
}

/// A web page cannot write to a loopback berth: JSON sent as text is refused (no preflight
/// skipped), a foreign `Host` (DNS rebinding) is refused, and no CORS header is sent unless an
/// origin is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_cannot_write_to_a_loopback_berth() {
    let (keep, dir) = data_dir();
    let _ = keep;
    let berth = Berth::start(&[
        format!("--data-dir={}", dir.display()),
        "--cors-allowed-origins=https://ops.example.com".into(),
    ]);
    let client = crate::support::http();
    let text = client
        .post(format!("{}/v1/services/web/instances", berth.base))
        .header("content-type", "text/plain")
        .body(r#"{"address": "10.0.0.1", "port": 80}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    let body: Value = text.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
    let rebound = client
        .get(format!("{}/v1/services", berth.base))
        .header("host", "attacker.example:7420")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let named = client
        .get(format!("{}/v1/services", berth.base))
        .header("host", "localhost:7420")
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    let foreign = client
        .get(format!("{}/v1/services", berth.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let allowed = client
        .get(format!("{}/v1/services", berth.base))
        .header("origin", "https://ops.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    // A form body stays a form body on the legacy routes that take forms.
    let form = send(
        &berth.base,
        "POST",
        "/v1/loadbalancing/web",
        crate::support::Body::Form(&[("load_balancing_weight", "5")]),
        &[],
    )
    .await;
    assert_eq!(form.status, 204);
}

/// Protected mode: a listener reachable from the network needs auth, client certificates, or
/// the explicit `--allow-unauthenticated`.
#[test]
fn a_network_listener_without_auth_is_refused_unless_the_risk_is_accepted() {
    let (_keep, dir) = data_dir();
    let data = format!("--data-dir={}", dir.display());
    let (code, _, stderr) = crate::support::run_berth(&["serve", "--listen=0.0.0.0:0", &data]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--auth") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
    let berth = Berth::start(&[
        data,
        "--listen=0.0.0.0:0".into(),
        "--allow-unauthenticated".into(),
    ]);
    assert!(
        berth
            .log()
            .iter()
            .any(|line| line.contains("auth is off on a listener reachable"))
    );
}

/// The CLI with token files: an administrator makes a team's token into a file, the team
/// registers and lists with it; without a token the command fails naming the 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uses_token_files() {
    let (keep, dir) = data_dir();
    let mut args = vec![format!("--data-dir={}", dir.display())];
    args.extend(auth_args(keep.path()));
    let berth = Berth::start(&args);
    let admin_file = keep.path().join("bootstrap-token");
    let team_file = keep.path().join("team-token");
    let cli = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--server", &berth.base]);
        crate::support::run_berth(&full)
    };
    let admin_flag = format!("--token-file={}", admin_file.display());
    let team_flag = format!("--token-file={}", team_file.display());
    let secret_flag = format!("--secret-file={}", team_file.display());
    let (code, stdout, stderr) = cli(&[
        "token",
        "create",
        "--owner",
        "payments",
        "--grant",
        "write:payments-*",
        "--grant",
        "read:*",
        "--description",
        "deploys",
        &secret_flag,
        &admin_flag,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("secret written to"), "{stdout}");
    let (code, _, stderr) = cli(&[
        "register",
        "payments-api",
        "--address",
        "10.0.0.1",
        "--port",
        "80",
        &team_flag,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = cli(&["instances", "payments-api", "--json", &team_flag]);
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["instances"][0]["owner"], "payments");
    let (code, _, stderr) = cli(&[
        "register",
        "search-api",
        "--address",
        "10.0.0.1",
        "--port",
        "80",
        &team_flag,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("403") || stderr.contains("does not grant"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&["services"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("401") || stderr.contains("token"),
        "{stderr}"
    );
    let (code, stdout, _) = cli(&["token", "list", "--json", &admin_flag]);
    assert_eq!(code, Some(0));
    let tokens: Value = serde_json::from_str(&stdout).unwrap();
    let team = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["owner"] == "payments")
        .unwrap();
    assert!(
        team.get("secret").is_none(),
        "a listing never shows a secret"
    );
    let id = team["id"].as_str().unwrap();
    let (code, stdout, _) = cli(&["token", "self", &team_flag]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(id), "{stdout}");
    let (code, _, stderr) = cli(&["token", "revoke", id, &admin_flag]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, _) = cli(&["services", &team_flag]);
    assert_eq!(code, Some(1));
}
