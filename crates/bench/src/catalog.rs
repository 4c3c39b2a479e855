//! The catalog benchmarks against a real `berth serve` (embedded store) pinned to core 0:
//! allocations per second with 10,000 applications already in the catalog, and the start
//! order of 10,000 applications with 30,000 dependency edges (over HTTP, and the domain's
//! computation alone).

use crate::report::{at_least, at_most, figure, heading, millis, percentile, rate};
use anyhow::Context;
use berth_client::{Client, Method};
use berth_domain::catalog::AppId;
use berth_domain::catalog::graph::start_waves;
use berth_testkit::BerthServer;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const APPS: usize = 10_000;
const EDGES_PER_APP: usize = 3;

fn app_id(i: usize) -> String {
    format!("fam{}-svc{}", i / 3, i % 3)
}

/// Application `i` depends on three of the fifty before it: acyclic, and deep enough that a
/// start order has many waves.
fn dependencies(i: usize) -> Vec<usize> {
    if i == 0 {
        return Vec::new();
    }
    let window = i.min(50);
    (1..=EDGES_PER_APP.min(window))
        .map(|k| i - 1 - (k * 17 + i) % window)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The catalog as imports of 2,000 applications each: explicit ports, one block per family.
fn import_parts() -> Vec<Value> {
    let kinds = ["nodejs", "play", "postgresql"];
    (0..APPS)
        .collect::<Vec<_>>()
        .chunks(2_000)
        .map(|chunk| {
            let applications: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    let family = i / 3;
                    // Blocks from 6010 on, skipping the multiples of 100 the allocator skips.
                    let block = 6_010 + (family / 9) * 100 + (family % 9) * 10;
                    let offset = [0, 1, 9][i % 3];
                    json!({
                        "id": app_id(i),
                        "ports": [{"kind": kinds[i % 3], "external": block + offset, "internal": 8000}],
                        "dependencies": dependencies(i).into_iter().map(app_id).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"kinds": [], "applications": applications})
        })
        .collect()
}

pub async fn run(berth: &Path) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let args = vec![
        format!("--data-dir={}", scratch.path().join("data").display()),
        "--log-level=berth=info,warn".into(),
    ];
    let prefix = ["taskset", "-c", "0"].map(String::from);
    let mut server = BerthServer::start(berth, &prefix, &args)
        .map_err(|log| anyhow::anyhow!("berth did not start:\n{}", log.join("\n")))?;
    let client = Client::new(&server.base)?;

    heading("catalog: berth (embedded store) pinned to core 0");
    let loading = Instant::now();
    for part in import_parts() {
        client
            .call(Method::POST, "/v1/catalog/import", Some(&part))
            .await
            .context("importing the catalog")?;
    }
    figure(
        &format!(
            "loaded {APPS} applications with {} edges (imports)",
            (0..APPS).map(|i| dependencies(i).len()).sum::<usize>()
        ),
        format!("{:.1}s", loading.elapsed().as_secs_f64()),
        None,
    );

    // New applications through the allocator: two in three in new families, one in an
    // existing family (which looks for a free slot in its block first).
    // 1,000 more: each takes a fresh block of ten, and the range ends at 65,000.
    let count = 1_000;
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let id = if i % 3 == 0 {
                    format!("fam{}-extra{i}", i % 3000)
                } else {
                    format!("new{i}")
                };
                let kind = ["nodejs", "play", "postgresql"][i % 3];
                client
                    .call(
                        Method::POST,
                        "/v1/apps",
                        Some(&json!({"id": id, "kind": kind})),
                    )
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let per_second = count as f64 / elapsed.as_secs_f64();
    figure(
        "allocations with 10,000 apps in the catalog (16 clients)",
        rate(per_second),
        at_least(per_second, 1_000.0),
    );
    if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
        figure(
            "allocations refused",
            failed.to_string(),
            Some((false, "0".into())),
        );
        println!("    first refusal: {error}");
    }

    let mut samples = Vec::new();
    let mut waves = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let order = client.call(Method::GET, "/v1/start-order", None).await?;
        samples.push(started.elapsed());
        waves = order["waves"].as_array().map_or(0, Vec::len);
    }
    figure(
        &format!("start order over HTTP ({waves} waves): p50"),
        millis(percentile(&mut samples, 50.0)),
        None,
    );
    let p99 = percentile(&mut samples, 99.0);
    figure(
        "start order over HTTP: worst of 20",
        millis(p99),
        at_most(p99, Duration::from_millis(50)),
    );

    // The computation alone, on the same graph.
    let graph: BTreeMap<AppId, BTreeSet<AppId>> = (0..APPS)
        .map(|i| {
            (
                AppId::parse("id", &app_id(i)).expect("valid id"),
                dependencies(i)
                    .into_iter()
                    .map(|d| AppId::parse("id", &app_id(d)).expect("valid id"))
                    .collect(),
            )
        })
        .collect();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let waves =
            start_waves(&graph).map_err(|_| anyhow::anyhow!("the benchmark graph has a cycle"))?;
        samples.push(started.elapsed());
        std::hint::black_box(waves);
    }
    let p50 = percentile(&mut samples, 50.0);
    figure(
        "start order computed in process (10,000 apps, 30,000 edges): p50",
        millis(p50),
        at_most(p50, Duration::from_millis(50)),
    );
    server.terminate(Duration::from_secs(30));
    Ok(())
}
