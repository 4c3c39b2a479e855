//! What auth costs: heartbeats/s and queries/s on a berth with auth off and on a berth with
//! auth on (a team token with scoped grants, sent as a bearer header), side by side in one run,
//! the server pinned to core 0 and wrk to core 1. Each pair is measured twice, alternating, and
//! the better of each is kept, so a noisy second hurts neither side more. Goal: at most 5 %.

use crate::http::{register_many, start, write_script, wrk};
use crate::report::{figure, heading, rate};
use berth_client::Client;
use std::path::Path;
use std::time::Duration;

const INSTANCES: usize = 1_000;
const SERVICES: usize = 10;
const CONNECTIONS: usize = 32;
const BOOTSTRAP: &str = "berth_benchmark_bootstrap_secret_0123456789abcdef";

/// One server, loaded, and the header its requests carry (empty with auth off).
struct Loaded {
    server: berth_testkit::BerthServer,
    header: String,
    _scratch: tempfile::TempDir,
}

async fn loaded(berth: &Path, auth: bool) -> anyhow::Result<Loaded> {
    let scratch = tempfile::tempdir()?;
    let mut args = vec![format!(
        "--data-dir={}",
        scratch.path().join("data").display()
    )];
    if auth {
        let file = scratch.path().join("bootstrap");
        std::fs::write(&file, BOOTSTRAP)?;
        args.extend([
            "--auth".into(),
            format!("--bootstrap-token-file={}", file.display()),
        ]);
    }
    let server = start(berth, &args, true)?;
    let mut client = Client::new(&server.base)?;
    let mut header = String::new();
    if auth {
        let team = client
            .clone()
            .with_token(BOOTSTRAP)
            .create_token(
                "bench",
                &["write:svc-*".into(), "read:svc-*".into()],
                "benchmark",
            )
            .await?;
        let secret = team.secret.unwrap_or_default();
        header = format!("wrk.headers[\"Authorization\"] = \"Bearer {secret}\"\n");
        client = client.with_token(secret);
    }
    register_many(&client, INSTANCES, SERVICES, 3_600_000).await?;
    Ok(Loaded {
        server,
        header,
        _scratch: scratch,
    })
}

/// Heartbeats/s and queries/s of one server.
fn measure(loaded: &Loaded, dir: &Path, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let heartbeat = write_script(
        dir,
        "heartbeat.lua",
        &format!(
            "{}counter = 0\nrequest = function()\n  counter = counter + 1\n  \
             local i = counter % {INSTANCES}\n  \
             return wrk.format(\"PUT\", \"/v1/services/svc-\" .. (i % {SERVICES}) .. \"/instances/n\" .. i .. \"/heartbeat\")\nend\n",
            loaded.header
        ),
    )?;
    let query = write_script(dir, "query.lua", &loaded.header)?;
    let base = &loaded.server.base;
    let heartbeats = wrk(base, CONNECTIONS, seconds, Some(&heartbeat))?;
    let queries = wrk(
        &format!("{base}/v1/services/svc-0/instances"),
        CONNECTIONS,
        seconds,
        Some(&query),
    )?;
    anyhow::ensure!(
        heartbeats.errors == 0 && queries.errors == 0,
        "non-2xx answers: {} heartbeats, {} queries",
        heartbeats.errors,
        queries.errors
    );
    Ok((heartbeats.requests_per_second, queries.requests_per_second))
}

pub async fn run(berth: &Path, seconds: u64) -> anyhow::Result<()> {
    heading(&format!(
        "auth: {INSTANCES} instances in {SERVICES} services, auth off vs on (a scoped bearer \
         token), berth on core 0, wrk -c{CONNECTIONS} on core 1, best of two alternating runs"
    ));
    let scripts = tempfile::tempdir()?;
    let mut off = loaded(berth, false).await?;
    let mut on = loaded(berth, true).await?;
    let (mut best_off, mut best_on) = ((0f64, 0f64), (0f64, 0f64));
    for _ in 0..2 {
        let (h, q) = measure(&off, scripts.path(), seconds)?;
        best_off = (best_off.0.max(h), best_off.1.max(q));
        let (h, q) = measure(&on, scripts.path(), seconds)?;
        best_on = (best_on.0.max(h), best_on.1.max(q));
    }
    for (name, without, with) in [
        ("heartbeats", best_off.0, best_on.0),
        ("queries of a 100-instance service", best_off.1, best_on.1),
    ] {
        figure(&format!("{name}, auth off"), rate(without), None);
        let cost = (1.0 - with / without) * 100.0;
        figure(
            &format!("{name}, auth on"),
            format!("{} ({cost:+.1} % cost)", rate(with)),
            Some((cost <= 5.0, "<= 5 %".into())),
        );
    }
    off.server.terminate(Duration::from_secs(30));
    on.server.terminate(Duration::from_secs(30));
    Ok(())
}
