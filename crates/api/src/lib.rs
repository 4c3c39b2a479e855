//! berth's HTTP surfaces on one listener: operations (`/health`, `/metrics`), the native `/v1`
//! API and the compatibility APIs. Every route is registered through one table, so the set of
//! routes the server has can be listed (the OpenAPI test compares it with the document).

mod cache;
pub mod compat;
pub mod error;
mod extract;
mod format;
mod metrics;
pub mod native;
mod ops;
mod reply;
pub mod server;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use berth_registry::Registry;
use std::sync::Arc;
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

impl Surface {
    /// The paths each API owns, whether or not a route matches them (so a miss is answered in
    /// that API's shape). bender's restify server answered every other path.
    const PREFIXES: &[(Surface, &[&str])] = &[
        (
            Surface::Lyft,
            &["/v1/registration", "/v1/loadbalancing", "/healthcheck"],
        ),
        (Surface::Operations, &["/health", "/metrics"]),
        (Surface::Native, &["/v1"]),
        (Surface::Flow, &["/applications", "/services"]),
    ];

    /// The API `path` belongs to.
    pub fn of_path(path: &str) -> Surface {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        Self::PREFIXES
            .iter()
            .find(|(_, prefixes)| prefixes.iter().any(|p| under(p)))
            .map_or(Surface::Bender, |(surface, _)| *surface)
    }
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
    use berth_domain::catalog::{Backend, Frontend};
    use native::{apps, events, instances, kinds, routing, transfer};
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
    .add(Native, Method::GET, "/v1/kinds", kinds::list_kinds)
    .add(Native, Method::POST, "/v1/kinds", kinds::create_kind)
    .add(Native, Method::GET, "/v1/kinds/{kind}", kinds::get_kind)
    .add(Native, Method::PUT, "/v1/kinds/{kind}", kinds::put_kind)
    .add(
        Native,
        Method::DELETE,
        "/v1/kinds/{kind}",
        kinds::delete_kind,
    )
    .add(
        Native,
        Method::GET,
        "/v1/kinds/{kind}/history",
        kinds::kind_history,
    )
    .add(Native, Method::GET, "/v1/apps", apps::list_apps)
    .add(Native, Method::POST, "/v1/apps", apps::create_app)
    .add(Native, Method::GET, "/v1/apps/{id}", apps::get_app)
    .add(Native, Method::DELETE, "/v1/apps/{id}", apps::delete_app)
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/ports/{kind}",
        apps::put_port,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}/ports/{kind}",
        apps::delete_port,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/dependencies",
        apps::get_dependencies,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/dependencies",
        apps::put_dependencies,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/dependencies/{dependency}",
        apps::put_dependency,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}/dependencies/{dependency}",
        apps::delete_dependency,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/start-order",
        apps::app_start_order,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/history",
        apps::app_history,
    )
    .add(Native, Method::GET, "/v1/apps/{id}/env", apps::app_env)
    .add(Native, Method::GET, "/v1/start-order", apps::start_order)
    .add(Native, Method::GET, "/v1/catalog", transfer::export)
    .add(Native, Method::POST, "/v1/catalog/import", transfer::import)
    .add(
        Native,
        Method::GET,
        "/v1/backends",
        routing::list::<Backend>,
    )
    .add(
        Native,
        Method::POST,
        "/v1/backends",
        routing::create::<Backend>,
    )
    .add(
        Native,
        Method::GET,
        "/v1/backends/{name}",
        routing::get::<Backend>,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/backends/{name}",
        routing::delete::<Backend>,
    )
    .add(
        Native,
        Method::GET,
        "/v1/frontends",
        routing::list::<Frontend>,
    )
    .add(
        Native,
        Method::POST,
        "/v1/frontends",
        routing::create::<Frontend>,
    )
    .add(
        Native,
        Method::GET,
        "/v1/frontends/{name}",
        routing::get::<Frontend>,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/frontends/{name}",
        routing::delete::<Frontend>,
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
    let metrics = Arc::new(metrics::RequestMetrics::new(&routes.table));
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

/// Serves until `state.shutdown` is cancelled (see [`server::serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: server::Limits,
) -> std::io::Result<()> {
    server::serve(listener, state, limits).await
}
