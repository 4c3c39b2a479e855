//! Hostile clients: the memory of `berth serve` while 2,000,000 blocking queries ask for
//! distinct services that do not exist (goal: flat), and heartbeat latency while 1,000 slow
//! connections (half a request line, or nothing) are held open, side by side with none held.

use crate::http::{register_many, start_scratch, write_script, wrk};
use crate::report::{figure, heading, millis, rate};
use berth_client::Client;
use std::path::Path;
use std::time::Duration;

const CONNECTIONS: usize = 64;
const INSTANCES: usize = 1_000;
const SERVICES: usize = 10;

/// Blocking queries (`index` = the current revision, `wait=1ms`) on a fresh name each, in
/// rounds; the resident set after each round.
async fn unknown_names(berth: &Path, total: u64) -> anyhow::Result<()> {
    let (server, scratch) = start_scratch(berth, true)?;
    let client = Client::new(&server.base)?;
    register_many(&client, 10, 1, 3_600_000).await?;
    let index = client.instances("svc-0", &[]).await?.index;
    heading(&format!(
        "blocking queries on {total} distinct unknown service names (64 connections, wait=1ms)"
    ));
    let before = server.resident_bytes();
    figure(
        "resident before",
        format!("{:.1}MiB", before as f64 / 1048576.0),
        None,
    );
    let rounds = 4u64;
    let per_round = total / rounds;
    let mut sent = 0u64;
    let mut last = before;
    let mut run = 0u64;
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        let mut answered = 0u64;
        while answered < per_round {
            // Every wrk run (its warm-up too) asks for names no run asked before: the run's
            // number, the second it started, a counter.
            run += 1;
            let script = write_script(
                scratch.path(),
                "unknown.lua",
                &format!(
                    "prefix = \"/v1/services/unknown-{run}-\" .. os.time() .. \"-\"\n\
                     counter = 0\nrequest = function()\n  counter = counter + 1\n  \
                     return wrk.format(\"GET\", prefix .. counter .. \
                     \"/instances?index={index}&wait=1ms\")\nend\n"
                ),
            )?;
            let result = wrk(&server.base, CONNECTIONS, 5, Some(&script))?;
            answered += (result.requests_per_second * 5.0) as u64;
            if result.errors > 0 {
                anyhow::bail!("{} requests failed", result.errors);
            }
        }
        sent += answered;
        last = server.resident_bytes();
        figure(
            &format!(
                "resident after {sent} queries ({})",
                rate(answered as f64 / started.elapsed().as_secs_f64())
            ),
            format!("{:.1}MiB", last as f64 / 1048576.0),
            None,
        );
    }
    let growth = last.saturating_sub(before) as f64 / 1048576.0;
    figure(
        "growth over the whole run",
        format!("{growth:.1}MiB"),
        Some((growth <= 16.0, "<= 16MiB".into())),
    );
    Ok(())
}

/// Heartbeats/s and p99 with wrk, with no slow connection and with 1,000 held.
async fn slow_connections(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let (server, scratch) = start_scratch(berth, true)?;
    let client = Client::new(&server.base)?;
    register_many(&client, INSTANCES, SERVICES, 3_600_000).await?;
    let heartbeat = write_script(
        scratch.path(),
        "heartbeat.lua",
        &format!(
            "counter = 0\nrequest = function()\n  counter = counter + 1\n  \
             local i = counter % {INSTANCES}\n  \
             return wrk.format(\"PUT\", \"/v1/services/svc-\" .. (i % {SERVICES}) .. \"/instances/n\" .. i .. \"/heartbeat\")\nend\n"
        ),
    )?;
    heading(&format!(
        "heartbeats ({INSTANCES} instances, {CONNECTIONS} connections) with and without 1,000 slow connections held"
    ));
    // The server closes a connection that has not sent its headers within 10 s: the run with
    // slow connections must fit in that window, warm-up included.
    let seconds = seconds.min(7);
    let calm = wrk(&server.base, CONNECTIONS, seconds, Some(&heartbeat))?;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::with_capacity(1_000);
    for i in 0..1_000 {
        let mut socket = std::net::TcpStream::connect(&address)?;
        if i % 2 == 0 {
            socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")?;
        }
        slow.push(socket);
    }
    let held = wrk(&server.base, CONNECTIONS, seconds, Some(&heartbeat))?;
    drop(slow);
    figure(
        "heartbeats/s, none held",
        rate(calm.requests_per_second),
        None,
    );
    figure(
        "heartbeats/s, 1,000 slow connections held",
        rate(held.requests_per_second),
        None,
    );
    figure("heartbeat p99, none held", millis(calm.p99), None);
    figure(
        "heartbeat p99, 1,000 slow connections held",
        millis(held.p99),
        Some((
            held.p99 <= Duration::from_millis(5),
            format!("<= {}", millis(Duration::from_millis(5))),
        )),
    );
    Ok(())
}

pub async fn run(berth: &Path, seconds: u64, queries: u64) -> anyhow::Result<()> {
    crate::http::check_tools(berth)?;
    slow_connections(berth, seconds).await?;
    unknown_names(berth, queries).await?;
    Ok(())
}
