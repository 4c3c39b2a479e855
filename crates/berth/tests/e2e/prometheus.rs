//! Prometheus (Debian's) discovering instances through `/v1/sd/prometheus`: berth registered
//! as an instance of itself is discovered and scraped, an instance without the tag asked for is
//! not, and a deregistered one is dropped.

use crate::support::{Berth, data_dir};
use berth_client::Registration;
use std::time::{Duration, Instant};

/// Prometheus's active targets, as its API lists them.
async fn active_targets(prometheus: &str) -> Vec<serde_json::Value> {
    let Ok(response) = reqwest::get(format!("{prometheus}/api/v1/targets?state=active")).await
    else {
        return Vec::new();
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (at most 30 s) until `done` holds for Prometheus's active targets.
async fn until_targets(
    prometheus: &str,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets = active_targets(prometheus).await;
        if done(&targets) {
            return targets;
        }
        assert!(Instant::now() < deadline, "{what}: targets {targets:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_scrapes_and_drops_instances() {
    let (keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let port: u16 = berth.address.rsplit_once(':').unwrap().1.parse().unwrap();
    let itself = Registration {
        id: Some("self".into()),
        address: "127.0.0.1".into(),
        port,
        tags: vec!["metrics".into()],
        zone: Some("eu-1a".into()),
        meta: [("berth.node".to_string(), "one".to_string())].into(),
        ..Registration::default()
    };
    client.register("berth", &itself).await.unwrap();
    let untagged = Registration {
        id: Some("other".into()),
        address: "127.0.0.1".into(),
        port: 9,
        ..Registration::default()
    };
    client.register("web", &untagged).await.unwrap();

    let listen = format!("127.0.0.1:{}", berth_testkit::free_port());
    let config = keep.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: berth\n    http_sd_configs:\n\
             \x20     - url: {}/v1/sd/prometheus?tag=metrics\n        refresh_interval: 1s\n\
             \x20   relabel_configs:\n      - source_labels: [__meta_berth_service]\n\
             \x20       target_label: service\n      - source_labels: [__meta_berth_zone]\n\
             \x20       target_label: zone\n      - source_labels: [__meta_berth_meta_berth_node]\n\
             \x20       target_label: node\n",
            berth.base
        ),
    )
    .unwrap();
    let _prometheus = berth_testkit::ChildGuard::spawn(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                keep.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .expect("prometheus runs (scripts/install-test-deps installs it)");
    let prometheus = format!("http://{listen}");

    let targets = until_targets(&prometheus, "berth discovered and scraped", |targets| {
        targets.len() == 1 && targets[0]["health"] == "up"
    })
    .await;
    let labels = &targets[0]["labels"];
    assert_eq!(labels["instance"], format!("127.0.0.1:{port}"));
    assert_eq!(
        (&labels["service"], &labels["zone"], &labels["node"]),
        (&"berth".into(), &"eu-1a".into(), &"one".into())
    );
    assert!(
        targets[0]["scrapeUrl"]
            .as_str()
            .unwrap()
            .ends_with("/metrics")
    );

    client.deregister("berth", "self").await.unwrap();
    until_targets(
        &prometheus,
        "the deregistered instance dropped",
        |targets| targets.is_empty(),
    )
    .await;
}
