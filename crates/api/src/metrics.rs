//! Request metrics: counts by route, method and status class, and durations by route, with
//! every handle resolved once when the router is built.

use crate::RouteInfo;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Request counts (by route, method and status class) and durations (by route), with every
/// handle resolved when the router is built: recording a request is a map lookup and two
/// atomic updates, not a label set built per request.
pub(crate) struct RequestMetrics {
    routes: std::collections::HashMap<&'static str, Vec<(Method, RouteMetrics)>>,
    unmatched: RouteMetrics,
}

struct RouteMetrics {
    /// 1xx/2xx, 3xx, 4xx, 5xx.
    requests: [metrics::Counter; 4],
    duration: metrics::Histogram,
}

impl RouteMetrics {
    fn new(method: &str, route: &'static str) -> Self {
        let counter = |status: &'static str| metrics::counter!("berth_http_requests_total", "route" => route, "method" => method.to_string(), "status" => status);
        RouteMetrics {
            requests: [
                counter("2xx"),
                counter("3xx"),
                counter("4xx"),
                counter("5xx"),
            ],
            duration: metrics::histogram!("berth_http_request_duration_seconds", "route" => route),
        }
    }
}

impl RequestMetrics {
    pub(crate) fn new(table: &[RouteInfo]) -> Self {
        let mut routes: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
        for route in table {
            routes.entry(route.path).or_default().push((
                route.method.clone(),
                RouteMetrics::new(route.method.as_str(), route.path),
            ));
        }
        RequestMetrics {
            routes,
            unmatched: RouteMetrics::new("any", "unmatched"),
        }
    }

    pub(crate) async fn record(&self, request: Request, next: Next) -> Response {
        let started = tokio::time::Instant::now();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|path| self.routes.get(path.as_str()))
            .and_then(|methods| methods.iter().find(|(m, _)| m == request.method()))
            .map_or(&self.unmatched, |(_, metrics)| metrics);
        let response = next.run(request).await;
        let class = match response.status().as_u16() {
            ..300 => 0,
            300..400 => 1,
            400..500 => 2,
            _ => 3,
        };
        route.requests[class].increment(1);
        route.duration.record(started.elapsed().as_secs_f64());
        response
    }
}

/// Counts something while it lasts (a blocking query waiting, an event stream open): up when
/// made, down when dropped, so the gauge is right however the request ends.
pub(crate) struct InFlight(metrics::Gauge);

impl InFlight {
    pub(crate) fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
