//! Every metric berth and its agent export, described once: the HELP text and unit Prometheus
//! shows (`promtool check metrics` wants both), and the table `docs/metrics.md` is checked
//! against.

use metrics::Unit;

/// What a metric is.
#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, unit and what it counts.
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, unit: Option<Unit>, help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        unit,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

pub const METRICS: &[Metric] = &[
    metric(
        "berth_http_requests_total",
        Counter,
        None,
        "HTTP requests answered, by route, method and status class",
    ),
    metric(
        "berth_http_request_duration_seconds",
        Histogram,
        Some(Unit::Seconds),
        "Time to answer an HTTP request, by route",
    ),
    metric(
        "berth_http_connections",
        Gauge,
        None,
        "Open HTTP connections",
    ),
    metric(
        "berth_http_connections_refused_total",
        Counter,
        None,
        "HTTP connections refused past http.max_connections",
    ),
    metric(
        "berth_http_heavy_refusals_total",
        Counter,
        None,
        "Event streams, blocking queries and imports refused past their caps",
    ),
    metric(
        "berth_http_event_streams",
        Gauge,
        None,
        "Open event streams (/v1/events), capped by http.max_event_streams",
    ),
    metric(
        "berth_http_blocking_queries",
        Gauge,
        None,
        "Waiting blocking queries, capped by http.max_blocking_queries",
    ),
    metric(
        "berth_http_imports",
        Gauge,
        None,
        "Catalog imports running, capped by http.max_concurrent_imports",
    ),
    metric(
        "berth_http_auth_refusals_total",
        Counter,
        None,
        "Requests refused by the auth check (401 or 403)",
    ),
    metric(
        "berth_http_tls_handshake_failures_total",
        Counter,
        None,
        "TLS handshakes that failed or timed out",
    ),
    metric(
        "berth_dns_queries_total",
        Counter,
        None,
        "DNS questions, by outcome (answered, nodata, nxdomain, refused, truncated, failed)",
    ),
    metric(
        "berth_instances",
        Gauge,
        None,
        "Live instances in this node's view",
    ),
    metric(
        "berth_xds_streams",
        Gauge,
        None,
        "Open xDS streams (ADS, state of the world and delta)",
    ),
    metric(
        "berth_xds_responses_total",
        Counter,
        None,
        "xDS responses sent, by type (cds, eds, lds, rds)",
    ),
    metric(
        "berth_xds_nacks_total",
        Counter,
        None,
        "xDS responses a client rejected, by type; a rejected response is not sent again",
    ),
    metric(
        "berth_xds_tls_handshake_failures_total",
        Counter,
        None,
        "TLS handshakes on the xDS listener that failed or timed out",
    ),
    metric(
        "berth_xds_snapshots_total",
        Counter,
        None,
        "xDS resource snapshots built from the live feed (one per coalesced change)",
    ),
    metric(
        "berth_service_instances",
        Gauge,
        None,
        "Live instances of one service (label service); a service that empties stays at 0",
    ),
    metric(
        "berth_view_revision",
        Gauge,
        None,
        "The store revision this node's registry has applied; berth_store_revision minus this is how far its answers and events lag",
    ),
    metric(
        "berth_store_quorum",
        Gauge,
        None,
        "etcd: 1 while this node reaches a quorum (probed once a second), 0 while it refuses writes for lack of one",
    ),
    metric(
        "berth_registrations_total",
        Counter,
        None,
        "Registrations, by outcome (created, updated, renewed)",
    ),
    metric("berth_heartbeats_total", Counter, None, "Heartbeats taken"),
    metric(
        "berth_deregistrations_total",
        Counter,
        None,
        "Instances removed by a client",
    ),
    metric(
        "berth_feed_subscribers",
        Gauge,
        None,
        "Subscribers of the live feed (event streams and blocking queries)",
    ),
    metric(
        "berth_registry_undecodable_records_total",
        Counter,
        None,
        "Stored records this node could not decode (also on /health)",
    ),
    metric(
        "berth_catalog_applications",
        Gauge,
        None,
        "Applications in the catalog",
    ),
    metric(
        "berth_catalog_journal_pruned_total",
        Counter,
        None,
        "Catalog journal entries pruned past their retention",
    ),
    metric(
        "berth_store_commits_total",
        Counter,
        None,
        "Durable commits of the embedded store",
    ),
    metric(
        "berth_store_commit_duration_seconds",
        Histogram,
        Some(Unit::Seconds),
        "Time of a durable commit of the embedded store, fsync included",
    ),
    metric(
        "berth_store_commit_batch_size",
        Histogram,
        Some(Unit::Count),
        "Writes carried by one commit of the embedded store",
    ),
    metric(
        "berth_store_commit_failures_total",
        Counter,
        None,
        "Commits of the embedded store that failed (the store then takes no more writes)",
    ),
    metric(
        "berth_store_lease_expirations_total",
        Counter,
        None,
        "Leases the embedded store ended at their deadline",
    ),
    metric(
        "berth_store_history_byte_compactions_total",
        Counter,
        None,
        "Compactions of the embedded store's history past embedded.history_mb",
    ),
    metric(
        "berth_store_leases",
        Gauge,
        None,
        "Leases the embedded store holds",
    ),
    metric(
        "berth_store_revision",
        Gauge,
        None,
        "The embedded store's revision",
    ),
    metric(
        "berth_store_watchers",
        Gauge,
        None,
        "Watches open on the embedded store",
    ),
    metric(
        "berth_agent_containers",
        Gauge,
        None,
        "Running containers the agent sees",
    ),
    metric(
        "berth_agent_records",
        Gauge,
        None,
        "Records the agent keeps in its target",
    ),
    metric(
        "berth_agent_registrations_total",
        Counter,
        None,
        "Records the agent wrote",
    ),
    metric(
        "berth_agent_renewals_total",
        Counter,
        None,
        "Renewals of the agent's records",
    ),
    metric(
        "berth_agent_deregistrations_total",
        Counter,
        None,
        "Records the agent removed",
    ),
    metric(
        "berth_agent_docker_events_total",
        Counter,
        None,
        "Docker events the agent handled",
    ),
    metric(
        "berth_agent_docker_errors_total",
        Counter,
        None,
        "Errors talking to the Docker engine",
    ),
    metric(
        "berth_agent_inspect_failures_total",
        Counter,
        None,
        "Containers the engine could not describe (skipped)",
    ),
    metric(
        "berth_agent_target_errors_total",
        Counter,
        None,
        "Errors writing to the agent's target",
    ),
    metric(
        "berth_agent_resync_duration_seconds",
        Histogram,
        Some(Unit::Seconds),
        "Time of a full resync of the agent",
    ),
];

/// Gives the installed recorder every metric's HELP text and unit.
pub fn describe_all() {
    for metric in METRICS {
        let (name, help) = (metric.name, metric.help);
        match (metric.kind, metric.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// `docs/metrics.md`'s table.
pub fn markdown_table() -> String {
    let mut table = String::from("| metric | type | what it counts |\n|---|---|---|\n");
    for metric in METRICS {
        let kind = match metric.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        table.push_str(&format!(
            "| `{}` | {kind} | {} |\n",
            metric.name, metric.help
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// Every metric the code records is described here (and so has HELP text and a line in
    /// the docs); every one described here is still recorded somewhere.
    #[test]
    fn every_recorded_metric_is_described() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for krate in ["api", "dns", "xds", "registry", "store", "agent", "berth"] {
            rust_files(&crates.join(krate).join("src"), &mut files);
        }
        let mut recorded = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    if let Some(name) = rest
                        .strip_prefix('"')
                        .and_then(|r| r.split('"').next())
                        .filter(|name| name.starts_with("berth_"))
                    {
                        recorded.insert(name.to_string());
                    }
                }
            }
        }
        // The heavy-request gauges are named in a table and recorded through a variable.
        recorded.extend(
            [
                "berth_http_event_streams",
                "berth_http_blocking_queries",
                "berth_http_imports",
            ]
            .map(String::from),
        );
        let described: std::collections::BTreeSet<String> =
            METRICS.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(recorded, described);
    }

    /// `docs/metrics.md` lists every metric; run the test again after it rewrote the file.
    #[test]
    fn metrics_doc_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
        let expected = format!(
            "# Metrics\n\n`GET /metrics` (and the agent's `--metrics-listen`) in Prometheus's text \
             format; every metric has HELP text (`promtool check metrics` passes). Generated from \
             `crates/berth/src/metrics_help.rs`.\n\n{}",
            markdown_table()
        );
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != expected {
            std::fs::write(&path, &expected).unwrap();
            panic!("docs/metrics.md was out of date and has been rewritten; run the tests again");
        }
    }
}
