//! berth's HTTP surfaces on one listener: operations (`/health`, `/metrics`), the native `/v1`
//! API and the compatibility APIs. Every route is registered through one table, so the set of
//! routes the server has can be listed (the OpenAPI test compares it with the document).

mod cache;
pub mod compat;
pub mod error;
mod extract;
mod format;
pub mod native;
mod ops;
mod reply;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{MethodFilter, on};
use berth_registry::Registry;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub use extract::BODY_LIMIT;

/// Renders the Prometheus text exposition.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What every handler can reach. Cloned for every request, so it is one `Arc`.
#[derive(Clone)]
pub struct ApiState(Arc<SharedState>);

pub struct SharedState {
    pub registry: Registry,
    /// Cancelled when the server starts shutting down: long polls and event streams end.
    pub shutdown: CancellationToken,
    pub metrics: Option<MetricsRenderer>,
    pub version: &'static str,
    pub compat: compat::CompatConfig,
    cache: cache::ResponseCache,
}

impl std::ops::Deref for ApiState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl ApiState {
    pub fn new(
        registry: Registry,
        shutdown: CancellationToken,
        metrics: Option<MetricsRenderer>,
        version: &'static str,
        compat: compat::CompatConfig,
    ) -> Self {
        ApiState(Arc::new(SharedState {
            registry,
            shutdown,
            metrics,
            version,
            compat,
            cache: cache::ResponseCache::default(),
        }))
    }
}

/// Which API a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Operations,
    Native,
    /// lyft/discovery (Envoy SDS v1).
    Lyft,
    /// bender.
    Bender,
    /// flowcommerce/registry.
    Flow,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub surface: Surface,
    pub method: Method,
    pub path: &'static str,
}

pub(crate) struct Routes {
    router: Router<ApiState>,
    table: Vec<RouteInfo>,
}

impl Routes {
    pub(crate) fn add<H, T>(
        mut self,
        surface: Surface,
        method: Method,
        path: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(RouteInfo {
            surface,
            method,
            path,
        });
        self
    }
}

/// Every route the server has, each registered once.
fn routes() -> Routes {
    use Surface::{Native, Operations};
    use native::{catalog, events, instances};
    Routes {
        router: Router::new(),
        table: Vec::new(),
    }
    .add(Operations, Method::GET, "/health", ops::health)
    .add(Operations, Method::GET, "/metrics", ops::metrics)
    .add(Native, Method::GET, "/v1/openapi.json", ops::openapi)
    .add(
        Native,
        Method::GET,
        "/v1/services",
        instances::list_services,
    )
    .add(
        Native,
        Method::GET,
        "/v1/services/{service}/instances",
        instances::list_instances,
    )
    .add(
        Native,
        Method::POST,
        "/v1/services/{service}/instances",
        instances::post_instance,
    )
    .add(
        Native,
        Method::GET,
        "/v1/services/{service}/instances/{id}",
        instances::get_instance,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/services/{service}/instances/{id}",
        instances::put_instance,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/services/{service}/instances/{id}",
        instances::delete_instance,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/services/{service}/instances/{id}/heartbeat",
        instances::heartbeat,
    )
    .add(
        Native,
        Method::GET,
        "/v1/instances",
        instances::find_instances,
    )
    .add(Native, Method::GET, "/v1/events", events::events)
    .add(Native, Method::GET, "/v1/kinds", catalog::list_kinds)
    .add(Native, Method::POST, "/v1/kinds", catalog::create_kind)
    .add(Native, Method::GET, "/v1/kinds/{kind}", catalog::get_kind)
    .add(Native, Method::PUT, "/v1/kinds/{kind}", catalog::put_kind)
    .add(
        Native,
        Method::DELETE,
        "/v1/kinds/{kind}",
        catalog::delete_kind,
    )
    .add(
        Native,
        Method::GET,
        "/v1/kinds/{kind}/history",
        catalog::kind_history,
    )
    .add(Native, Method::GET, "/v1/apps", catalog::list_apps)
    .add(Native, Method::POST, "/v1/apps", catalog::create_app)
    .add(Native, Method::GET, "/v1/apps/{id}", catalog::get_app)
    .add(Native, Method::DELETE, "/v1/apps/{id}", catalog::delete_app)
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/ports/{kind}",
        catalog::put_port,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}/ports/{kind}",
        catalog::delete_port,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/dependencies",
        catalog::get_dependencies,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/dependencies",
        catalog::put_dependencies,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/dependencies/{dependency}",
        catalog::put_dependency,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}/dependencies/{dependency}",
        catalog::delete_dependency,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/start-order",
        catalog::app_start_order,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/history",
        catalog::app_history,
    )
    .add(Native, Method::GET, "/v1/apps/{id}/env", catalog::app_env)
    .add(Native, Method::GET, "/v1/start-order", catalog::start_order)
    .add(Native, Method::GET, "/v1/catalog", catalog::export)
    .add(Native, Method::POST, "/v1/catalog/import", catalog::import)
    .add(Native, Method::GET, "/v1/backends", catalog::list_backends)
    .add(
        Native,
        Method::POST,
        "/v1/backends",
        catalog::create_backend,
    )
    .add(
        Native,
        Method::GET,
        "/v1/backends/{name}",
        catalog::get_backend,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/backends/{name}",
        catalog::delete_backend,
    )
    .add(
        Native,
        Method::GET,
        "/v1/frontends",
        catalog::list_frontends,
    )
    .add(
        Native,
        Method::POST,
        "/v1/frontends",
        catalog::create_frontend,
    )
    .add(
        Native,
        Method::GET,
        "/v1/frontends/{name}",
        catalog::get_frontend,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/frontends/{name}",
        catalog::delete_frontend,
    )
    .pipe(compat::lyft::routes)
    .pipe(compat::bender::routes)
    .pipe(compat::flow::routes)
}

impl Routes {
    fn pipe(self, add: fn(Routes) -> Routes) -> Routes {
        add(self)
    }
}

/// The method and path of every route, for documentation checks.
pub fn route_table() -> Vec<RouteInfo> {
    routes().table
}

/// The router, ready to serve. Call it after the metrics recorder is installed: the request
/// metrics' handles are taken here, once per route.
pub fn build(state: ApiState) -> Router {
    let routes = routes();
    let metrics = Arc::new(RequestMetrics::new(&routes.table));
    routes
        .router
        .fallback(compat::not_found)
        .layer(axum::middleware::from_fn(compat::method_not_allowed))
        .layer(axum::middleware::from_fn(move |request, next| {
            let metrics = metrics.clone();
            async move { metrics.record(request, next).await }
        }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Request counts (by route, method and status class) and durations (by route), with every
/// handle resolved when the router is built: recording a request is a map lookup and two
/// atomic updates, not a label set built per request.
struct RequestMetrics {
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
    fn new(table: &[RouteInfo]) -> Self {
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

    async fn record(&self, request: Request, next: Next) -> Response {
        let started = Instant::now();
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

/// Serves until `state.shutdown` is cancelled, then stops accepting, lets requests in flight
/// finish (event streams and long polls end at once) and returns.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    // The peer address is lyft's `auto_ip` fallback.
    let service = build(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
