//! bender's API on berth: expiring registrations renewed by re-POSTing, and backends and
//! frontends. A registration is a berth instance of the service `app`, with the id
//! `host:port` and the version as its version, kept for bender's TTL. Deviations are listed
//! in `docs/compat/bender.md`.

use crate::cache::Freshness;
use crate::extract::ApiPath;
use crate::native::routing::{backend_draft, frontend_draft};
use crate::reply::with_location;
use crate::{ApiState, Routes, Surface};
use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_domain::catalog::{Backend, CatalogError, EntityName, Frontend, RawJson};
use berth_domain::{Address, InstanceDefaults, InstanceDraft, InstanceId, Origin, ServiceName};
use berth_registry::auth::Caller;
use berth_registry::catalog::{RoutingEntity, extras_as_json};
use berth_registry::{Consistency, LiveInstance, RegistryError};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// bender's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A registration not renewed within this goes offline.
    pub ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: Duration::from_millis(4000),
        }
    }
}

pub(crate) fn routes(routes: Routes) -> Routes {
    use crate::Access::*;
    use Surface::Bender;
    routes
        .add(
            Bender,
            Method::POST,
            "/registrations/{app}/{version}/{host}/{port}",
            WriteService("app"),
            register,
        )
        .add(
            Bender,
            Method::GET,
            "/registrations",
            ReadAll,
            all_registrations,
        )
        .add(
            Bender,
            Method::GET,
            "/registrations/{app}",
            ReadService("app"),
            app_registrations,
        )
        .add(
            Bender,
            Method::GET,
            "/registrations/{app}/{version}",
            ReadService("app"),
            version_registrations,
        )
        .add(
            Bender,
            Method::GET,
            "/backends",
            CatalogRead,
            list_entities::<Backend>,
        )
        .add(
            Bender,
            Method::POST,
            "/backends",
            CatalogWrite,
            create_entity::<Backend>,
        )
        .add(
            Bender,
            Method::GET,
            "/backends/{name}",
            CatalogRead,
            get_entity::<Backend>,
        )
        .add(
            Bender,
            Method::DELETE,
            "/backends/{name}",
            CatalogWrite,
            delete_entity::<Backend>,
        )
        .add(
            Bender,
            Method::GET,
            "/frontends",
            CatalogRead,
            list_entities::<Frontend>,
        )
        .add(
            Bender,
            Method::POST,
            "/frontends",
            CatalogWrite,
            create_entity::<Frontend>,
        )
        .add(
            Bender,
            Method::GET,
            "/frontends/{name}",
            CatalogRead,
            get_entity::<Frontend>,
        )
        .add(
            Bender,
            Method::DELETE,
            "/frontends/{name}",
            CatalogWrite,
            delete_entity::<Frontend>,
        )
}

/// restify's error body: `{"message", "code"}`.
struct BenderError(StatusCode, &'static str, String);

impl BenderError {
    fn invalid(message: impl Into<String>) -> Self {
        BenderError(StatusCode::BAD_REQUEST, "INVALID", message.into())
    }
}

impl IntoResponse for BenderError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(json!({"message": self.2, "code": self.1})),
        )
            .into_response()
    }
}

impl From<RegistryError> for BenderError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Invalid(errors) => BenderError::invalid(errors.to_string()),
            RegistryError::NotFound(message) => {
                BenderError(StatusCode::NOT_FOUND, "NOT_FOUND", message)
            }
            RegistryError::Catalog(error) => {
                BenderError(StatusCode::CONFLICT, "CONFLICT", error.to_string())
            }
            RegistryError::Unauthenticated(message) => {
                BenderError(StatusCode::UNAUTHORIZED, "Unauthorized", message)
            }
            RegistryError::Forbidden(message) => {
                BenderError(StatusCode::FORBIDDEN, "Forbidden", message)
            }
            other => BenderError(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                other.to_string(),
            ),
        }
    }
}

type BenderResult<T> = Result<T, BenderError>;

/// A request the auth check refused, in restify's error shape.
pub(crate) fn denied(status: StatusCode, message: &str) -> Response {
    let code = if status == StatusCode::UNAUTHORIZED {
        "Unauthorized"
    } else {
        "Forbidden"
    };
    BenderError(status, code, message.to_string()).into_response()
}

/// A registration row: `{"id": "registration/app/version/host/port", …}`. `port` is a string,
/// as HTTP registrations had it; `registered` is the last renewal this node saw (ms).
fn row(live: &LiveInstance) -> Value {
    let spec = &live.instance.spec;
    let version = spec.version().unwrap_or("");
    let host = spec.address().to_string();
    json!({
        "id": format!("registration/{}/{version}/{host}/{}", spec.service(), spec.port()),
        "app": spec.service().as_str(),
        "version": version,
        "host": host,
        "port": spec.port().to_string(),
        "registered": live.last_heartbeat().millis(),
        "resource": "Registration",
    })
}

/// `POST /registrations/{app}/{version}/{host}/{port}`: registers or renews, empty 200.
async fn register(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath((app, version, host, port)): ApiPath<(String, String, String, String)>,
) -> BenderResult<Response> {
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        BenderError::invalid(format!(
            "Port must be a number between 1 and 65535 (got {port:?})"
        ))
    })?;
    let service =
        ServiceName::parse("app", &app).map_err(|e| BenderError::invalid(e.to_string()))?;
    let address = Address::parse("host", &host).map_err(|e| BenderError::invalid(e.to_string()))?;
    let id = InstanceId::parse("id", &address.with_port(port))
        .map_err(|e| BenderError::invalid(e.to_string()))?;
    let defaults = InstanceDefaults {
        ttl: state.compat.bender.ttl,
        min_ttl: berth_domain::LOWEST_TTL,
    };
    let spec = InstanceDraft {
        id: Some(id.to_string()),
        address: Some(address.to_string()),
        port: Some(i64::from(port)),
        ttl_ms: Some(defaults.ttl.as_millis() as i64),
        version: Some(version),
        origin: Origin::Bender,
        ..InstanceDraft::default()
    }
    .validate(service.as_str(), Some(id.as_str()), &defaults)
    .map_err(|e| BenderError::invalid(e.to_string()))?;
    state.registry.register(spec, &by).await?;
    Ok(StatusCode::OK.into_response())
}

fn rows(instances: &[Arc<LiveInstance>]) -> Vec<u8> {
    serde_json::to_vec(&Value::Array(instances.iter().map(|l| row(l)).collect()))
        .expect("rows always serialize")
}

/// A JSON response made of already serialized bytes.
fn json_answer(body: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn all_registrations(State(state): State<ApiState>) -> BenderResult<Response> {
    let freshness = Freshness::of_everything(&state.registry);
    let key = ("bender-all", String::new());
    if let Some(body) = state.cache.get(&key, freshness) {
        return Ok(json_answer(body));
    }
    let everything = state.registry.select(|_| true).await?;
    Ok(json_answer(state.cache.keep(
        key,
        freshness,
        rows(&everything),
    )))
}

/// The registrations of `app`, optionally at one version, from bytes kept until the service
/// changes or one of them renews (none for a name berth cannot hold, as bender had none).
async fn registrations_of(
    state: &ApiState,
    app: &str,
    version: Option<&str>,
) -> BenderResult<Response> {
    let Ok(service) = ServiceName::parse("app", app) else {
        return Ok(json_answer(rows(&[]).into()));
    };
    let view = state.registry.service(&service, Consistency::Local).await?;
    let key = match version {
        Some(version) => ("bender-version", format!("{app}/{version}")),
        None => ("bender-app", app.to_string()),
    };
    let body = state
        .cache
        .get_or_make(key, Freshness::of_service(&view), || {
            let instances: Vec<Arc<LiveInstance>> = view
                .instances
                .iter()
                .filter(|l| version.is_none_or(|v| l.instance.spec.version() == Some(v)))
                .cloned()
                .collect();
            rows(&instances)
        });
    Ok(json_answer(body))
}

async fn app_registrations(
    State(state): State<ApiState>,
    ApiPath(app): ApiPath<String>,
) -> BenderResult<Response> {
    registrations_of(&state, &app, None).await
}

async fn version_registrations(
    State(state): State<ApiState>,
    ApiPath((app, version)): ApiPath<(String, String)>,
) -> BenderResult<Response> {
    registrations_of(&state, &app, Some(&version)).await
}

/// A backend's or frontend's row: its extra fields, then bender's own.
fn entity_row(
    extra: &BTreeMap<String, RawJson>,
    own: impl IntoIterator<Item = (&'static str, Value)>,
) -> Value {
    let mut row: Map<String, Value> = extras_as_json(extra).into_iter().collect();
    for (key, value) in own {
        row.insert(key.into(), value);
    }
    Value::Object(row)
}

/// A routing entity as bender shows and reads it.
trait BenderRouting: RoutingEntity {
    /// Where the collection is: `/backends`.
    const PATH: &'static str;
    /// bender's words for a name it does not have, and for one taken.
    const NOT_FOUND: &'static str;
    const EXISTS: &'static str;

    fn row(&self) -> Value;

    /// The entity a request body describes, validated; a required field of another type is
    /// reported as a missing one, as bender's checks had it.
    fn from_body(body: Map<String, Value>) -> BenderResult<Self>;
}

impl BenderRouting for Backend {
    const PATH: &'static str = "/backends";
    const NOT_FOUND: &'static str = "Backend not found";
    const EXISTS: &'static str = "Backend with that name already exists";

    fn row(&self) -> Value {
        entity_row(
            self.extra(),
            [
                ("id", json!(format!("backend/{}", self.name()))),
                ("name", json!(self.name().as_str())),
                ("app", json!(self.app().as_str())),
                ("version", json!(self.version())),
                ("resource", json!("Backend")),
            ],
        )
    }

    fn from_body(body: Map<String, Value>) -> BenderResult<Self> {
        let draft = draft_or_missing(backend_draft(body), |field| match field {
            "name" => Some("Backend name is required"),
            _ => Some("Application name and version are required"),
        })?;
        draft.validate().map_err(|e| refused(&e))
    }
}

impl BenderRouting for Frontend {
    const PATH: &'static str = "/frontends";
    const NOT_FOUND: &'static str = "Frontend not found";
    const EXISTS: &'static str = "Frontend with that name already exists";

    fn row(&self) -> Value {
        let backend = self.backend().map(|b| ("backend", json!(b)));
        entity_row(
            self.extra(),
            [
                ("id", json!(format!("frontend/{}", self.name()))),
                ("name", json!(self.name().as_str())),
            ]
            .into_iter()
            .chain(backend)
            .chain([("resource", json!("Frontend"))]),
        )
    }

    fn from_body(body: Map<String, Value>) -> BenderResult<Self> {
        let draft = draft_or_missing(frontend_draft(body), |field| {
            (field == "name").then_some("Frontend name is required")
        })?;
        draft.validate().map_err(|e| refused(&e))
    }
}

/// The JSON object a POST carries (restify only read JSON bodies: a form leaves it empty).
async fn body_object(request: Request) -> BenderResult<Map<String, Value>> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let body = crate::extract::read_body(request).await.map_err(|e| {
        let code = if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestEntityTooLarge"
        } else {
            "InvalidContent"
        };
        BenderError(e.status, code, e.message)
    })?;
    if !is_json || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let mut object: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        BenderError(
            StatusCode::BAD_REQUEST,
            "InvalidContent",
            format!("Invalid JSON: {e}"),
        )
    })?;
    // `id` and `resource` are bender's own; a client's are ignored.
    object.remove("id");
    object.remove("resource");
    Ok(object)
}

/// A body bender refuses: its first problem, in the domain's words (which are bender's).
fn refused(errors: &berth_domain::ValidationErrors) -> BenderError {
    BenderError::invalid(errors.first().message.clone())
}

/// Reads a backend or frontend body into its draft; a required field of another type is
/// reported as a missing one would be (`missing` words it; `None`: not a required field).
fn draft_or_missing<T>(
    draft: crate::error::ApiResult<T>,
    missing: impl Fn(&str) -> Option<&'static str>,
) -> BenderResult<T> {
    draft.map_err(|error| {
        let message =
            missing(error.field.as_deref().unwrap_or_default()).map_or(error.message, String::from);
        BenderError::invalid(message)
    })
}

fn not_found<E: BenderRouting>() -> BenderError {
    BenderError(StatusCode::NOT_FOUND, "NOT_FOUND", E::NOT_FOUND.into())
}

async fn list_entities<E: BenderRouting>(State(state): State<ApiState>) -> BenderResult<Response> {
    let all = state.registry.routing_entities::<E>().await?;
    Ok(axum::Json(Value::Array(all.iter().map(E::row).collect())).into_response())
}

async fn create_entity<E: BenderRouting>(
    State(state): State<ApiState>,
    request: Request,
) -> BenderResult<Response> {
    let entity = E::from_body(body_object(request).await?)?;
    let entity = state
        .registry
        .create_routing(entity)
        .await
        .map_err(|error| match error {
            RegistryError::Catalog(CatalogError::EntityExists { .. }) => {
                BenderError(StatusCode::CONFLICT, "CONFLICT", E::EXISTS.into())
            }
            other => other.into(),
        })?;
    Ok(with_location(
        (StatusCode::CREATED, axum::Json(entity.row())).into_response(),
        &format!("{}/{}", E::PATH, entity.entity_name()),
    ))
}

async fn get_entity<E: BenderRouting>(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> BenderResult<Response> {
    let name = EntityName::parse("name", &name).map_err(|_| not_found::<E>())?;
    let entity = state
        .registry
        .routing_entity::<E>(&name)
        .await?
        .ok_or_else(not_found::<E>)?;
    Ok(axum::Json(entity.row()).into_response())
}

async fn delete_entity<E: BenderRouting>(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> BenderResult<Response> {
    let name = EntityName::parse("name", &name).map_err(|_| not_found::<E>())?;
    match state.registry.delete_routing::<E>(&name).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RegistryError::Catalog(CatalogError::EntityNotFound { .. })) => Err(not_found::<E>()),
        Err(error) => Err(error.into()),
    }
}
