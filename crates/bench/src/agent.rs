//! The Docker agent with the real engine: from `docker start` returning to the instance being
//! queryable, and from `docker stop` returning to the `offline` event, over 100 containers of
//! a local busybox-static image, one at a time. Target: p99 ≤ 1 s for both.

use crate::report::{at_most, figure, heading, millis, percentile};
use anyhow::Context;
use berth_client::Client;
use berth_testkit::docker::{DockerScope, IDLE, docker};
use berth_testkit::{BerthAgent, BerthServer};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONTAINERS: usize = 100;
const TARGET: Duration = Duration::from_secs(1);

/// When each (event kind, instance id) was first seen on the event stream.
type Arrivals = Arc<Mutex<HashMap<(String, String), Instant>>>;

/// Waits until `kind` for `id` has arrived; how long after `since` it did (zero when it came
/// before `since`, e.g. an offline event that beat `docker stop`'s return).
async fn arrival(
    arrivals: &Arrivals,
    kind: &str,
    id: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = (kind.to_string(), id.to_string());
    loop {
        if let Some(at) = arrivals.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(at.saturating_duration_since(since));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {kind} event for {id} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn run(berth: &Path) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let args = vec![
        format!("--data-dir={}", scratch.path().join("data").display()),
        // The `listening` line is how the harness finds the address.
        "--log-level=berth=info,warn".into(),
    ];
    let server = BerthServer::start(berth, &[], &args)
        .map_err(|log| anyhow::anyhow!("berth did not start:\n{}", log.join("\n")))?;
    let client = Client::new(&server.base)?;
    let scope = DockerScope::new();
    let image = scope.image("bench:1");
    let agent_args = vec![
        format!("--target=berth://{}", server.address),
        "--host-id=bench".to_string(),
        format!("--only-label={}", scope.label),
        "--log-level=berth=info,warn".to_string(),
    ];
    let _agent = BerthAgent::start(berth, &agent_args)
        .map_err(|log| anyhow::anyhow!("the agent did not start:\n{}", log.join("\n")))?;

    let arrivals: Arrivals = Arc::default();
    let mut events = client.events(Some("bench"), None).await?;
    {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if let Some(id) = event.data["instance"]["id"].as_str() {
                    arrivals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry((event.kind.clone(), id.to_string()))
                        .or_insert_with(Instant::now);
                }
            }
        });
    }

    heading(&format!(
        "agent: {CONTAINERS} containers, real Docker engine, one at a time"
    ));
    let names: Vec<String> = (0..CONTAINERS)
        .map(|i| format!("bench-{}-{i}", scope.id))
        .collect();
    for name in &names {
        docker(&[
            "create",
            "--name",
            name,
            "--label",
            &scope.label,
            "-p",
            "127.0.0.1::80",
            &image,
            IDLE[0],
            IDLE[1],
            IDLE[2],
        ]);
    }
    let mut started = Vec::new();
    for name in &names {
        docker(&["start", name]);
        let returned = Instant::now();
        let id = format!("bench:{name}:80");
        arrival(&arrivals, "online", &id, returned).await?;
        // Queryable: the online event precedes the query, so this answers at once.
        let found = client.instances("bench", &[]).await?;
        anyhow::ensure!(
            found.instances.iter().any(|i| i.id == id),
            "{id} is not queryable"
        );
        started.push(returned.elapsed());
    }
    let mut stopped = Vec::new();
    for name in &names {
        docker(&["stop", "-t", "1", name]);
        let returned = Instant::now();
        stopped.push(arrival(&arrivals, "offline", &format!("bench:{name}:80"), returned).await?);
    }
    for (label, samples) in [
        ("docker start returned → instance queryable", &mut started),
        ("docker stop returned → offline event", &mut stopped),
    ] {
        let p50 = percentile(samples, 50.0);
        let p99 = percentile(samples, 99.0);
        figure(&format!("{label}: p50"), millis(p50), None);
        figure(&format!("{label}: p99"), millis(p99), at_most(p99, TARGET));
        figure(
            &format!("{label}: max"),
            millis(*samples.last().context("samples")?),
            None,
        );
    }
    for name in &names {
        docker(&["rm", "-f", name]);
    }
    Ok(())
}
