//! The live feed and the legacy doors: with 1,000 hosts in 10 services (registered through
//! bender, so every door shows them), the same data asked through the native API, lyft and
//! bender side by side in one run (server pinned to core 0, wrk with 32 connections on core 1),
//! renewals through each door against native heartbeats, then 1,000 event streams on one node:
//! how long a change takes to reach all of them, the memory an idle stream costs, and (on etcd)
//! whether etcd's watchers grow with the streams.

use crate::http::{start, write_script, wrk};
use crate::report::{at_most, figure, heading, millis, percentile, rate};
use anyhow::Context;
use berth_client::{Client, Registration};
use berth_testkit::EtcdServer;
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOSTS: usize = 1_000;
const SERVICES: usize = 10;
const CONNECTIONS: usize = 32;

fn host(i: usize) -> (String, u16) {
    (format!("10.60.{}.{}", i / 250, i % 250 + 1), 8000)
}

/// The figure and how it compares with `native`: `ratio >= goal`.
fn versus(name: &str, value: f64, native: f64, goal: f64) {
    let ratio = value / native;
    figure(
        name,
        format!("{} ({ratio:.2}x)", rate(value)),
        Some((ratio >= goal, format!(">= {goal:.1}x"))),
    );
}

async fn doors(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut server = start(
        berth,
        &[
            format!("--data-dir={}", scratch.path().join("data").display()),
            "--compat-bender-ttl-ms=3600000".into(),
            "--compat-lyft-host-ttl=3600".into(),
        ],
        true,
    )?;
    heading(&format!(
        "doors: {HOSTS} hosts in {SERVICES} services, the same data through each door \
         (berth on core 0, wrk -c{CONNECTIONS} on core 1)"
    ));
    let http = http_client();
    futures::stream::iter(0..HOSTS)
        .map(|i| {
            let http = http.clone();
            let base = server.base.clone();
            async move {
                let (address, port) = host(i);
                let url = format!(
                    "{base}/registrations/svc-{}/1.0.0/{address}/{port}",
                    i % SERVICES
                );
                let status = http.post(url).send().await?.status();
                anyhow::ensure!(status.is_success(), "bender registration: {status}");
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;

    let run = |path: &str, script: Option<&Path>| {
        wrk(
            &format!("{}{path}", server.base),
            CONNECTIONS,
            seconds,
            script,
        )
    };
    let native = run("/v1/services/svc-0/instances", None)?;
    let lyft = run("/v1/registration/svc-0", None)?;
    let bender = run("/registrations/svc-0/1.0.0", None)?;
    figure(
        "native query of a 100-host service",
        rate(native.requests_per_second),
        None,
    );
    versus(
        "lyft query of the same service",
        lyft.requests_per_second,
        native.requests_per_second,
        0.8,
    );
    versus(
        "bender query of the same service",
        bender.requests_per_second,
        native.requests_per_second,
        0.8,
    );

    let pick = format!(
        "counter = 0\nfunction pick()\n  counter = counter + 1\n  local i = counter % {HOSTS}\n  \
         local third = math.floor(i / 250)\n  local fourth = i % 250 + 1\n  \
         return i % {SERVICES}, \"10.60.\" .. third .. \".\" .. fourth\nend\n"
    );
    let heartbeat = write_script(
        scratch.path(),
        "heartbeat.lua",
        &format!(
            "{pick}request = function()\n  local service, address = pick()\n  \
             return wrk.format(\"PUT\", \"/v1/services/svc-\" .. service .. \"/instances/\" .. address .. \":8000/heartbeat\")\nend\n"
        ),
    )?;
    let bender_renew = write_script(
        scratch.path(),
        "bender.lua",
        &format!(
            "{pick}request = function()\n  local service, address = pick()\n  \
             return wrk.format(\"POST\", \"/registrations/svc-\" .. service .. \"/1.0.0/\" .. address .. \"/8000\")\nend\n"
        ),
    )?;
    let lyft_renew = write_script(
        scratch.path(),
        "lyft.lua",
        &format!(
            "{pick}wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
             request = function()\n  local service, address = pick()\n  \
             local body = \"ip=\" .. address .. \"&port=8001&revision=r1&tags=%7B%22az%22%3A%22a%22%2C%22region%22%3A%22r%22%2C%22instance_id%22%3A%22i%22%7D\"\n  \
             return wrk.format(\"POST\", \"/v1/registration/svc-\" .. service, nil, body)\nend\n"
        ),
    )?;
    let heartbeats = run("", Some(&heartbeat))?;
    let bender_renewals = run("", Some(&bender_renew))?;
    // lyft's hosts are its own (port 8001: one API cannot change another's registration): the
    // first pass registers them, every later one renews.
    let lyft_renewals = run("", Some(&lyft_renew))?;
    figure(
        "native heartbeats",
        rate(heartbeats.requests_per_second),
        None,
    );
    versus(
        "bender renewals (re-POST)",
        bender_renewals.requests_per_second,
        heartbeats.requests_per_second,
        0.7,
    );
    versus(
        "lyft renewals (re-POST)",
        lyft_renewals.requests_per_second,
        heartbeats.requests_per_second,
        0.7,
    );
    for (name, result) in [
        ("native query", &native),
        ("lyft query", &lyft),
        ("bender query", &bender),
        ("native heartbeat", &heartbeats),
        ("bender renewal", &bender_renewals),
        ("lyft renewal", &lyft_renewals),
    ] {
        figure(&format!("{name}: p99"), millis(result.p99), None);
        if result.errors > 0 {
            figure(
                &format!("{name}: non-2xx answers"),
                result.errors.to_string(),
                Some((false, "0".into())),
            );
        }
    }
    server.terminate(Duration::from_secs(30));
    Ok(())
}

/// Opens `count` event streams of the service `fanout` on `base` (with berth's client).
async fn streams(base: &str, count: usize) -> anyhow::Result<Vec<berth_client::EventStream>> {
    let client = Client::new(base)?;
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(client.events(Some("fanout"), None).await?);
    }
    Ok(streams)
}

async fn fan_out(berth: &Path) -> anyhow::Result<()> {
    heading("fan-out: 1,000 event streams on one node, a registration reaches every one");
    let scratch = tempfile::tempdir()?;
    let mut server = start(
        berth,
        &[format!(
            "--data-dir={}",
            scratch.path().join("data").display()
        )],
        false,
    )?;
    let before = server.resident_bytes();
    // Plain sockets: the figure is berth's delivery, not an HTTP client's parsing.
    let mut streams = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let mut socket = tokio::net::TcpStream::connect(&server.address).await?;
        socket
            .write_all(b"GET /v1/events?service=fanout HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        streams.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.resident_bytes().saturating_sub(before) as f64 / 1_000.0;
    figure(
        "memory per idle event stream",
        format!("{:.1}KiB", idle / 1024.0),
        Some((idle <= 16.0 * 1024.0, "<= 16KiB".into())),
    );

    // Each reader notes when the event of a registration arrives, by the port in its id
    // (found in the raw bytes: this measures delivery, not a client's JSON parser).
    let (sender, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(u16, Instant)>();
    for mut socket in streams {
        let sender = sender.clone();
        tokio::spawn(async move {
            let marker = b"\"id\":\"10.61.0.1:";
            let mut buffer = vec![0u8; 16 * 1024];
            while let Ok(read) = socket.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                let chunk = &buffer[..read];
                let mut at = 0;
                while let Some(found) = chunk[at..].windows(marker.len()).position(|w| w == marker)
                {
                    let start = at + found + marker.len();
                    let digits = chunk[start..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    if let Some(port) = std::str::from_utf8(&chunk[start..start + digits])
                        .ok()
                        .and_then(|p| p.parse().ok())
                    {
                        let _ = sender.send((port, Instant::now()));
                    }
                    at = start + digits;
                }
            }
        });
    }
    drop(sender);
    let client = Client::new(&server.base)?;
    let mut samples = Vec::new();
    // Seconds of CPU a process used, from /proc (utime + stime, in clock ticks of 10 ms).
    let cpu = |pid: i32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    };
    let cpu_before = cpu(server.pid());
    let own_before = cpu(std::process::id() as i32);
    for round in 0..50u16 {
        let port = 1000 + round;
        let registration = Registration {
            address: "10.61.0.1".into(),
            port,
            ttl_ms: Some(600_000),
            ..Registration::default()
        };
        let sent = Instant::now();
        client.register("fanout", &registration).await?;
        let mut seen = 0;
        while seen < 1_000 {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .context("event streams stopped delivering")?
                .context("every stream ended")?;
            if got == port {
                seen += 1;
                samples.push(at.duration_since(sent));
            }
        }
    }
    // Where the time goes: CPU per delivered event, in berth and in the readers.
    figure(
        "berth's CPU per delivered event (kernel included)",
        format!("{:.1}us", (cpu(server.pid()) - cpu_before) / 50_000.0 * 1e6),
        None,
    );
    figure(
        "the readers' CPU per delivered event",
        format!(
            "{:.1}us",
            (cpu(std::process::id() as i32) - own_before) / 50_000.0 * 1e6
        ),
        None,
    );
    figure(
        "registration → event on all 1,000 streams: p50",
        millis(percentile(&mut samples, 50.0)),
        None,
    );
    let p99 = percentile(&mut samples, 99.0);
    figure(
        "registration → event on all 1,000 streams: p99",
        millis(p99),
        at_most(p99, Duration::from_millis(10)),
    );
    server.terminate(Duration::from_secs(30));
    Ok(())
}

async fn etcd_watchers(etcd: &EtcdServer) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{}/metrics", etcd.endpoint()))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|value| value.trim().parse().ok())
        .context("etcd reports no watcher count")
}

async fn watchers_on_etcd(berth: &Path) -> anyhow::Result<()> {
    heading("etcd: the watchers a berth node holds, with 0 and with 1,000 event streams");
    let etcd = EtcdServer::start();
    let mut server = start(berth, &[format!("--store={}", etcd.store_url())], false)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = etcd_watchers(&etcd).await?;
    let open = streams(&server.base, 1_000).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = etcd_watchers(&etcd).await?;
    figure("etcd watchers, no stream", format!("{before:.0}"), None);
    figure(
        "etcd watchers, 1,000 streams",
        format!("{after:.0}"),
        Some((after == before, format!("= {before:.0}"))),
    );
    drop(open);
    server.terminate(Duration::from_secs(30));
    Ok(())
}

pub async fn run(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    crate::http::check_tools(berth)?;
    doors(berth, seconds).await?;
    fan_out(berth).await?;
    watchers_on_etcd(berth).await?;
    Ok(())
}

/// An HTTP client for raw requests (reqwest needs the process's TLS provider installed).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
