//! DNS with dnsperf (Debian's), side by side with Debian's dnsmasq answering the same records
//! from a hosts file and `srv-host` lines: 1,000 services of 3 instances, A and SRV questions
//! spread over every service, each server pinned to core 0 and dnsperf to core 1. Then the
//! p99 at a fixed 20,000 queries/s (from dnsperf's per-query lines) and TCP. Goals: ≥ 40,000
//! queries/s on one core, ≥ 1.5× dnsmasq, p99 ≤ 2 ms at 20,000/s, TCP ≥ 10,000/s.

use crate::http::{LOAD_CPU, SERVER_CPU, register_many, start};
use crate::report::{at_least, figure, heading, millis, rate};
use berth_client::Client;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SERVICES: usize = 1_000;
const INSTANCES: usize = 3_000;

/// dnsperf's figures for one run.
struct Perf {
    per_second: f64,
    lost: u64,
    /// Per-query latencies, when asked for (`-v`).
    latencies: Vec<Duration>,
}

fn dnsperf(port: u16, queries: &Path, seconds: u64, extra: &[&str]) -> anyhow::Result<Perf> {
    let output = Command::new("taskset")
        .args(["-c", LOAD_CPU, "dnsperf", "-s", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "16", "-T", "1"])
        .args(extra)
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let per_second = field("Queries per second:")
        .ok_or_else(|| anyhow::anyhow!("dnsperf printed no figures:\n{text}"))?;
    let latencies = text
        .lines()
        .filter_map(|line| line.strip_prefix("> "))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .collect();
    Ok(Perf {
        per_second,
        lost: field("Queries lost:").unwrap_or(0.0) as u64,
        latencies,
    })
}

/// The questions: an A and an SRV of every service, in turn.
fn write_queries(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let mut queries = String::new();
    for service in 0..SERVICES {
        queries.push_str(&format!("svc-{service}.service.berth A\n"));
        queries.push_str(&format!("_svc-{service}._tcp.service.berth SRV\n"));
    }
    let path = dir.join("queries.txt");
    std::fs::write(&path, queries)?;
    Ok(path)
}

/// The instances `register_many` makes, as dnsmasq's hosts file and `srv-host` lines.
fn dnsmasq_files(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let mut hosts = String::new();
    let mut config = String::new();
    for i in 0..INSTANCES {
        let address = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let service = i % SERVICES;
        let target = format!(
            "{:02x}{:02x}{:02x}{:02x}.addr.berth",
            10,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        hosts.push_str(&format!("{address} svc-{service}.service.berth {target}\n"));
        config.push_str(&format!(
            "srv-host=_svc-{service}._tcp.service.berth,{target},8000,1,1\n"
        ));
    }
    std::fs::write(dir.join("hosts"), hosts)?;
    let path = dir.join("dnsmasq.conf");
    std::fs::write(&path, config)?;
    Ok(path)
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    crate::report::percentile(latencies, p)
}

pub async fn run(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    for tool in ["dnsperf", "dnsmasq"] {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !found {
            anyhow::bail!("{tool} is not installed: run ./scripts/install-bench-deps");
        }
    }
    let scratch = tempfile::tempdir()?;
    let dns_port = berth_testkit::free_port();
    let server = start(
        berth,
        &[
            format!("--data-dir={}", scratch.path().join("data").display()),
            format!("--dns-listen=127.0.0.1:{dns_port}"),
        ],
        true,
    )?;
    let client = Client::new(&server.base)?;
    register_many(&client, INSTANCES, SERVICES, 3_600_000).await?;
    let queries = write_queries(scratch.path())?;

    let masq_port = berth_testkit::free_port();
    let masq_config = dnsmasq_files(scratch.path())?;
    let _dnsmasq = berth_testkit::ChildGuard::spawn(
        Command::new("taskset")
            .args([
                "-c",
                SERVER_CPU,
                "/usr/sbin/dnsmasq",
                "--no-daemon",
                "--no-resolv",
            ])
            .args(["--no-hosts", "--cache-size=0", "--listen-address=127.0.0.1"])
            .arg("--bind-interfaces")
            .arg(format!("--port={masq_port}"))
            .arg(format!(
                "--addn-hosts={}",
                scratch.path().join("hosts").display()
            ))
            .arg(format!("--conf-file={}", masq_config.display()))
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    heading(&format!(
        "DNS: {SERVICES} services of 3 instances, A and SRV in turn, UDP, 16 clients; server on core 0, dnsperf on core 1"
    ));
    // Warm-up, then the same run on each, twice, alternating; the better of each is kept.
    dnsperf(dns_port, &queries, 1, &[])?;
    dnsperf(masq_port, &queries, 1, &[])?;
    let mut berth_rate: f64 = 0.0;
    let mut masq_rate: f64 = 0.0;
    for _ in 0..2 {
        berth_rate = berth_rate.max(dnsperf(dns_port, &queries, seconds, &[])?.per_second);
        masq_rate = masq_rate.max(dnsperf(masq_port, &queries, seconds, &[])?.per_second);
    }
    figure(
        "berth queries/s",
        rate(berth_rate),
        at_least(berth_rate, 40_000.0),
    );
    figure("dnsmasq queries/s (same records)", rate(masq_rate), None);
    figure(
        "berth / dnsmasq",
        format!("{:.2}x", berth_rate / masq_rate),
        Some((berth_rate >= 1.5 * masq_rate, ">= 1.50x".into())),
    );

    let mut fixed = dnsperf(dns_port, &queries, seconds, &["-Q", "20000", "-v"])?;
    let p50 = percentile(&mut fixed.latencies, 50.0);
    let p99 = percentile(&mut fixed.latencies, 99.0);
    figure("berth at 20,000 queries/s: p50", millis(p50), None);
    figure(
        "berth at 20,000 queries/s: p99",
        millis(p99),
        crate::report::at_most(p99, Duration::from_millis(2)),
    );
    figure(
        "berth at 20,000 queries/s: lost",
        fixed.lost.to_string(),
        None,
    );

    let tcp = dnsperf(dns_port, &queries, seconds, &["-m", "tcp"])?;
    figure(
        "berth queries/s over TCP",
        rate(tcp.per_second),
        at_least(tcp.per_second, 10_000.0),
    );
    drop(server);
    Ok(())
}
