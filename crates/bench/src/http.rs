//! The HTTP benchmarks against a real `berth serve` pinned to core 0, with Debian's `wrk` as the
//! load generator pinned to core 1: heartbeats and queries with 10,000 instances registered,
//! durable registrations, resident memory per instance at 100,000 instances, and how late
//! offline events come after expiry (embedded and etcd).

use crate::report::{at_least, at_most, figure, heading, millis, percentile, rate};
use anyhow::{Context, bail};
use berth_client::{Client, Registration};
use berth_testkit::{BerthServer, EtcdServer};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

pub(crate) const SERVER_CPU: &str = "0";
pub(crate) const LOAD_CPU: &str = "1";

pub(crate) struct Wrk {
    pub(crate) requests_per_second: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) errors: u64,
}

fn parse_latency(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Runs wrk (one thread, `connections` connections) on the load core and reads its figures,
/// after a one-second warm-up run whose figures are dropped.
pub(crate) fn wrk(
    url: &str,
    connections: usize,
    seconds: u64,
    script: Option<&Path>,
) -> anyhow::Result<Wrk> {
    run_wrk(url, connections, 1, script)?;
    run_wrk(url, connections, seconds, script)
}

fn run_wrk(
    url: &str,
    connections: usize,
    seconds: u64,
    script: Option<&Path>,
) -> anyhow::Result<Wrk> {
    let mut command = Command::new("taskset");
    command.args(["-c", LOAD_CPU, "wrk", "-t1"]);
    command.arg(format!("-c{connections}"));
    command.arg(format!("-d{seconds}s"));
    command.arg("--latency");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    command.arg(url);
    let output = command
        .output()
        .context("running wrk (install it with ./scripts/install-bench-deps)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line_value = |prefix: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)
                .map(|rest| rest.trim().to_string())
        })
    };
    let requests_per_second = line_value("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("wrk printed no Requests/sec")?;
    let p50 = line_value("50%")
        .and_then(|v| parse_latency(&v))
        .unwrap_or_default();
    let p99 = line_value("99%")
        .and_then(|v| parse_latency(&v))
        .unwrap_or_default();
    let errors = line_value("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Wrk {
        requests_per_second,
        p50,
        p99,
        errors,
    })
}

pub(crate) fn start(berth: &Path, args: &[String], pinned: bool) -> anyhow::Result<BerthServer> {
    let prefix: Vec<String> = if pinned {
        vec!["taskset".into(), "-c".into(), SERVER_CPU.into()]
    } else {
        Vec::new()
    };
    let mut args = args.to_vec();
    args.push("--log-level=berth=info,warn".into());
    BerthServer::start(berth, &prefix, &args)
        .map_err(|log| anyhow::anyhow!("berth did not start:\n{}", log.join("\n")))
}

/// A berth on the embedded store in a fresh scratch directory (kept alive with the server).
pub(crate) fn start_scratch(
    berth: &Path,
    pinned: bool,
) -> anyhow::Result<(BerthServer, tempfile::TempDir)> {
    let scratch = tempfile::tempdir()?;
    let data_dir = format!("--data-dir={}", scratch.path().join("data").display());
    Ok((start(berth, &[data_dir], pinned)?, scratch))
}

fn registration(id: String, address: String, port: u16, ttl_ms: u64) -> Registration {
    Registration {
        id: Some(id),
        address,
        port,
        ttl_ms: Some(ttl_ms),
        ..Registration::default()
    }
}

/// Registers `count` instances named `n{i}` in services `svc-{i % services}`, 64 at a time.
pub(crate) async fn register_many(
    client: &Client,
    count: usize,
    services: usize,
    ttl_ms: u64,
) -> anyhow::Result<()> {
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let address = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                client
                    .register(
                        &format!("svc-{}", i % services),
                        &registration(format!("n{i}"), address, 8000, ttl_ms),
                    )
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

pub(crate) fn write_script(dir: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, body)?;
    Ok(path)
}

fn report_wrk(name: &str, result: &Wrk, rate_target: f64, p99_target: Option<Duration>) {
    figure(
        &format!("{name}: throughput"),
        rate(result.requests_per_second),
        at_least(result.requests_per_second, rate_target),
    );
    figure(&format!("{name}: p50"), millis(result.p50), None);
    figure(
        &format!("{name}: p99"),
        millis(result.p99),
        p99_target.and_then(|target| at_most(result.p99, target)),
    );
    if result.errors > 0 {
        figure(
            &format!("{name}: non-2xx answers"),
            result.errors.to_string(),
            Some((false, "0".into())),
        );
    }
}

async fn throughput(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    let (mut server, scratch) = start_scratch(berth, true)?;
    let client = Client::new(&server.base)?;
    heading("http: berth pinned to core 0, wrk (1 thread, 64 connections) pinned to core 1");
    register_many(&client, 10_000, 100, 600_000).await?;
    figure("instances registered", "10000".into(), None);

    let heartbeat = write_script(
        scratch.path(),
        "heartbeat.lua",
        "counter = 0\nrequest = function()\n  counter = counter + 1\n  local i = counter % 10000\n  return wrk.format(\"PUT\", \"/v1/services/svc-\" .. (i % 100) .. \"/instances/n\" .. i .. \"/heartbeat\")\nend\n",
    )?;
    let result = wrk(&server.base, 64, seconds, Some(&heartbeat))?;
    report_wrk(
        "heartbeats",
        &result,
        50_000.0,
        Some(Duration::from_millis(5)),
    );

    let result = wrk(
        &format!("{}/v1/services/svc-7/instances", server.base),
        64,
        seconds,
        None,
    )?;
    report_wrk(
        "queries of a 100-instance service",
        &result,
        30_000.0,
        Some(Duration::from_millis(5)),
    );

    let register = write_script(
        scratch.path(),
        "register.lua",
        "counter = 0\nwrk.method = \"PUT\"\nwrk.body = '{\"address\":\"10.200.0.1\",\"port\":9000,\"ttl_ms\":600000}'\nrequest = function()\n  counter = counter + 1\n  return wrk.format(nil, \"/v1/services/fresh/instances/r\" .. counter)\nend\n",
    )?;
    let result = wrk(&server.base, 64, seconds, Some(&register))?;
    report_wrk(
        "registrations of new instances (durable)",
        &result,
        10_000.0,
        None,
    );
    server.terminate(Duration::from_secs(30));
    Ok(())
}

async fn memory(berth: &Path) -> anyhow::Result<()> {
    let (mut server, _scratch) = start_scratch(berth, false)?;
    let client = Client::new(&server.base)?;
    heading("memory: resident set of berth serve (embedded store) at 100,000 instances");
    // Warm up allocator and runtime with a few requests first, so the baseline is fair.
    register_many(&client, 100, 10, 3_600_000).await?;
    let before = server.resident_bytes();
    register_many(&client, 100_000, 1000, 3_600_000).await?;
    // Two reads of every service so response caches are part of the figure.
    for _ in 0..2 {
        for service in 0..1000 {
            client.instances(&format!("svc-{service}"), &[]).await?;
        }
    }
    let after = server.resident_bytes();
    let per_instance = after.saturating_sub(before) as f64 / 100_000.0;
    figure(
        "resident before",
        format!("{:.1}MiB", before as f64 / 1048576.0),
        None,
    );
    figure(
        "resident at 100,000 instances",
        format!("{:.1}MiB", after as f64 / 1048576.0),
        None,
    );
    figure(
        "resident per instance",
        format!("{per_instance:.0}B"),
        Some((per_instance <= 1024.0, "<= 1024B".into())),
    );
    server.terminate(Duration::from_secs(60));
    Ok(())
}

/// Registers `count` instances with a 2 s TTL and no heartbeat, and measures how long after
/// each one's `expires_at` its offline event arrives.
async fn lateness(server: &BerthServer, count: usize) -> anyhow::Result<Vec<Duration>> {
    let client = Client::new(&server.base)?;
    let mut events = client.events(Some("expiring"), None).await?;
    let registered: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                client
                    .register(
                        "expiring",
                        &registration(
                            format!("e{i}"),
                            format!("10.99.{}.{}", i / 256, i % 256),
                            7000,
                            2_000,
                        ),
                    )
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut expires: HashMap<String, SystemTime> = HashMap::new();
    for result in registered {
        let (instance, _) = result?;
        let at = humantime::parse_rfc3339(instance.expires_at.as_deref().unwrap_or_default())?;
        expires.insert(instance.id, at);
    }
    let mut late = Vec::with_capacity(count);
    while late.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .context("offline events stopped coming")?
            .context("the event stream ended")??;
        let arrived = SystemTime::now();
        if event.kind != "offline" {
            continue;
        }
        let id = event.data["instance"]["id"].as_str().unwrap_or_default();
        if let Some(expiry) = expires.get(id) {
            late.push(arrived.duration_since(*expiry).unwrap_or_default());
        }
    }
    Ok(late)
}

async fn expiry(berth: &Path) -> anyhow::Result<()> {
    heading("expiry: offline-event lateness after expires_at, 1,000 instances with a 2 s TTL");
    let (mut embedded, _scratch) = start_scratch(berth, false)?;
    let mut samples = lateness(&embedded, 1000).await?;
    figure(
        "embedded: p50",
        millis(percentile(&mut samples, 50.0)),
        None,
    );
    let p99 = percentile(&mut samples, 99.0);
    figure(
        "embedded: p99",
        millis(p99),
        at_most(p99, Duration::from_millis(250)),
    );
    embedded.terminate(Duration::from_secs(30));

    let etcd = EtcdServer::start();
    let mut on_etcd = start(berth, &[format!("--store={}", etcd.store_url())], false)?;
    let mut samples = lateness(&on_etcd, 1000).await?;
    figure("etcd: p50", millis(percentile(&mut samples, 50.0)), None);
    let p99 = percentile(&mut samples, 99.0);
    figure(
        "etcd: p99",
        millis(p99),
        at_most(p99, Duration::from_millis(250)),
    );
    on_etcd.terminate(Duration::from_secs(30));
    Ok(())
}

/// Fails with what to do when the berth binary or wrk is missing.
pub(crate) fn check_tools(berth: &Path) -> anyhow::Result<()> {
    if !berth.is_file() {
        bail!(
            "{} does not exist: build it first with `cargo build --release`",
            berth.display()
        );
    }
    // taskset runs wrk, and would only say it failed to execute it.
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("wrk is not installed: run ./scripts/install-bench-deps");
    }
    Ok(())
}

pub async fn run(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    check_tools(berth)?;
    throughput(berth, seconds).await?;
    memory(berth).await?;
    expiry(berth).await?;
    Ok(())
}
