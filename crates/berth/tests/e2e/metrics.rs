//! `/metrics` as Prometheus's own tool reads it: after the native API, a legacy API, the
//! catalog, an event stream and DNS were used, `promtool check metrics` (Debian's) finds
//! nothing to say (every metric has HELP text, and names follow its conventions).

use crate::support::{Berth, data_dir};
use futures::StreamExt;
use std::io::Write;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_no_problem_in_a_scrape() {
    let (_keep, dir) = data_dir();
    let berth = Berth::embedded(&dir);
    let client = berth.client();
    let registration = berth_client::Registration {
        id: Some("a".into()),
        address: "10.0.0.1".into(),
        port: 80,
        ..Default::default()
    };
    let mut events = client.events(Some("web"), None).await.unwrap();
    client.register("web", &registration).await.unwrap();
    client.heartbeat("web", "a").await.unwrap();
    client.instances("web", &[]).await.unwrap();
    events.next().await.unwrap().unwrap();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/applications", berth.base))
        .json(&serde_json::json!({"id": "shop", "service": "play"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let dns = berth.surface_address("dns").unwrap();
    let (host, port) = dns.rsplit_once(':').unwrap();
    let dig = Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            "web.service.berth",
            "+short",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.0.0.1");

    let scrape = crate::support::scrape(&berth.base).await;
    for name in [
        "berth_heartbeats_total",
        "berth_http_requests_total",
        "berth_dns_queries_total",
        "berth_store_commit_duration_seconds",
    ] {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "{name}:\n{scrape}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/install-test-deps installs prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

/// The Grafana dashboard in docs/ asks only for metrics berth exports (docs/metrics.md lists
/// them), and every expression is PromQL that Prometheus's own parser takes (`promtool check
/// rules` on the expressions as recording rules).
#[test]
fn the_grafana_dashboard_queries_metrics_berth_exports() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let listed = std::fs::read_to_string(docs.join("metrics.md")).unwrap();
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            expressions.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(expressions.len() >= 10, "{expressions:?}");
    for expression in &expressions {
        let mut rest = expression.as_str();
        while let Some(at) = rest.find("berth_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let metric = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                listed.contains(&format!("`{metric}`")),
                "the dashboard asks for {metric}, which docs/metrics.md does not list"
            );
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    let rules: String = expressions
        .iter()
        .enumerate()
        .map(|(index, expression)| {
            format!(
                "      - record: dashboard:panel_{index}\n        expr: {}\n",
                serde_json::to_string(expression).unwrap()
            )
        })
        .collect();
    let rules_file = scratch.path().join("dashboard-rules.yaml");
    std::fs::write(
        &rules_file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
