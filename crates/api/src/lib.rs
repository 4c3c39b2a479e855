//! berth's HTTP surfaces on one listener: operations (`/health`, `/metrics`), the native `/v1`
//! API and the compatibility APIs. Every route is registered through one table, so the set of
//! routes the server has can be listed (the OpenAPI test compares it with the document).

pub mod auth;
mod cache;
pub mod compat;
pub mod error;
mod extract;
mod format;
pub mod heavy;
mod metrics;
pub mod native;
mod ops;
mod reply;
pub mod server;
pub mod tls;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use berth_registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub use auth::{Access, BrowserGuard, ClientCertificate};
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
    pub browsers: Arc<BrowserGuard>,
    cache: cache::ResponseCache,
    heavy: heavy::HeavySlots,
    /// The xDS surface's report of its streams (`GET /v1/xds/clients`), when xDS is on.
    xds_clients: Option<XdsClientsReport>,
}

/// Reports the connected xDS streams as JSON.
pub type XdsClientsReport = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

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
        browsers: BrowserGuard,
        heavy: heavy::HeavyLimits,
    ) -> Self {
        ApiState(Arc::new(SharedState {
            registry,
            shutdown,
            metrics,
            version,
            compat,
            browsers: Arc::new(browsers),
            cache: cache::ResponseCache::default(),
            heavy: heavy::HeavySlots::new(heavy),
            xds_clients: None,
        }))
    }

    /// Serves `GET /v1/xds/clients` from `report` (before the state is shared).
    pub fn with_xds_clients(mut self, report: XdsClientsReport) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("the xDS report is set before the state is shared")
            .xds_clients = Some(report);
        self
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
    /// What the route does, for the auth check.
    pub access: Access,
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
        access: Access,
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
            access,
        });
        self
    }
}

/// Every route the server has, each registered once.
fn routes() -> Routes {
    use Access::*;
    use Surface::{Native, Operations};
    use berth_domain::catalog::{Backend, Frontend};
    use native::{apps, events, instances, kinds, routing, sd, tokens, transfer};
    Routes {
        router: Router::new(),
        table: Vec::new(),
    }
    .add(Operations, Method::GET, "/health", Open, ops::health)
    .add(Operations, Method::GET, "/metrics", Open, ops::metrics)
    .add(Native, Method::GET, "/v1/openapi.json", Open, ops::openapi)
    .add(
        Native,
        Method::GET,
        "/v1/services",
        ReadAll,
        instances::list_services,
    )
    .add(
        Native,
        Method::GET,
        "/v1/services/{service}/instances",
        ReadService("service"),
        instances::list_instances,
    )
    .add(
        Native,
        Method::POST,
        "/v1/services/{service}/instances",
        WriteService("service"),
        instances::post_instance,
    )
    .add(
        Native,
        Method::GET,
        "/v1/services/{service}/instances/{id}",
        ReadService("service"),
        instances::get_instance,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/services/{service}/instances/{id}",
        WriteService("service"),
        instances::put_instance,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/services/{service}/instances/{id}",
        WriteService("service"),
        instances::delete_instance,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/services/{service}/instances/{id}/heartbeat",
        WriteService("service"),
        instances::heartbeat,
    )
    .add(
        Native,
        Method::GET,
        "/v1/instances",
        ReadAll,
        instances::find_instances,
    )
    .add(
        Native,
        Method::GET,
        "/v1/xds/clients",
        ReadAll,
        ops::xds_clients,
    )
    .add(
        Native,
        Method::GET,
        "/v1/sd/prometheus",
        ReadServiceInQuery("service"),
        sd::prometheus,
    )
    .add(
        Native,
        Method::GET,
        "/v1/events",
        ReadServiceInQuery("service"),
        events::events,
    )
    .add(Native, Method::GET, "/v1/tokens", Admin, tokens::list)
    .add(Native, Method::POST, "/v1/tokens", Admin, tokens::create)
    .add(
        Native,
        Method::GET,
        "/v1/tokens/self",
        AnyToken,
        tokens::whoami,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/tokens/{id}",
        Admin,
        tokens::revoke,
    )
    .add(
        Native,
        Method::GET,
        "/v1/kinds",
        CatalogRead,
        kinds::list_kinds,
    )
    .add(
        Native,
        Method::POST,
        "/v1/kinds",
        CatalogWrite,
        kinds::create_kind,
    )
    .add(
        Native,
        Method::GET,
        "/v1/kinds/{kind}",
        CatalogRead,
        kinds::get_kind,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/kinds/{kind}",
        CatalogWrite,
        kinds::put_kind,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/kinds/{kind}",
        CatalogWrite,
        kinds::delete_kind,
    )
    .add(
        Native,
        Method::GET,
        "/v1/kinds/{kind}/history",
        CatalogRead,
        kinds::kind_history,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps",
        CatalogRead,
        apps::list_apps,
    )
    .add(
        Native,
        Method::POST,
        "/v1/apps",
        CatalogWrite,
        apps::create_app,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}",
        CatalogRead,
        apps::get_app,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}",
        CatalogWrite,
        apps::delete_app,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/ports/{kind}",
        CatalogWrite,
        apps::put_port,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}/ports/{kind}",
        CatalogWrite,
        apps::delete_port,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/dependencies",
        CatalogRead,
        apps::get_dependencies,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/dependencies",
        CatalogWrite,
        apps::put_dependencies,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/apps/{id}/dependencies/{dependency}",
        CatalogWrite,
        apps::put_dependency,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/apps/{id}/dependencies/{dependency}",
        CatalogWrite,
        apps::delete_dependency,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/start-order",
        CatalogRead,
        apps::app_start_order,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/history",
        CatalogRead,
        apps::app_history,
    )
    .add(
        Native,
        Method::GET,
        "/v1/apps/{id}/env",
        CatalogRead,
        apps::app_env,
    )
    .add(
        Native,
        Method::GET,
        "/v1/start-order",
        CatalogRead,
        apps::start_order,
    )
    .add(
        Native,
        Method::GET,
        "/v1/catalog",
        CatalogRead,
        transfer::export,
    )
    .add(
        Native,
        Method::POST,
        "/v1/catalog/import",
        CatalogWrite,
        transfer::import,
    )
    .add(
        Native,
        Method::GET,
        "/v1/catalog/allocator",
        CatalogRead,
        transfer::allocator,
    )
    .add(
        Native,
        Method::PUT,
        "/v1/catalog/allocator",
        CatalogWrite,
        transfer::set_high_water,
    )
    .add(
        Native,
        Method::GET,
        "/v1/backends",
        CatalogRead,
        routing::list::<Backend>,
    )
    .add(
        Native,
        Method::POST,
        "/v1/backends",
        CatalogWrite,
        routing::create::<Backend>,
    )
    .add(
        Native,
        Method::GET,
        "/v1/backends/{name}",
        CatalogRead,
        routing::get::<Backend>,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/backends/{name}",
        CatalogWrite,
        routing::delete::<Backend>,
    )
    .add(
        Native,
        Method::GET,
        "/v1/frontends",
        CatalogRead,
        routing::list::<Frontend>,
    )
    .add(
        Native,
        Method::POST,
        "/v1/frontends",
        CatalogWrite,
        routing::create::<Frontend>,
    )
    .add(
        Native,
        Method::GET,
        "/v1/frontends/{name}",
        CatalogRead,
        routing::get::<Frontend>,
    )
    .add(
        Native,
        Method::DELETE,
        "/v1/frontends/{name}",
        CatalogWrite,
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
    let access = Arc::new(auth::AccessTable::new(&routes.table));
    let browsers = state.browsers.clone();
    routes
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), access),
            auth::check,
        ))
        .fallback(compat::not_found)
        .layer(axum::middleware::from_fn(compat::method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            browsers.clone(),
            auth::cors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            browsers,
            auth::guard_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::contact_headers,
        ))
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
    tls: Option<tls::TlsSettings>,
) -> std::io::Result<()> {
    server::serve(listener, state, limits, tls).await
}
