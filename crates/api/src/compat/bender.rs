//! bender's API on berth: expiring registrations renewed by re-POSTing, and backends and
//! frontends. A registration is a berth instance of the service `app`, with the id
//! `host:port` and the version as its version, kept for bender's TTL. Deviations are listed
//! in `docs/compat/bender.md`.

use crate::extract::ApiPath;
use crate::native::catalog::{backend_draft, frontend_draft};
use crate::reply::with_location;
use crate::{ApiState, Routes, Surface};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_domain::catalog::{Backend, CatalogError, EntityName, Frontend, RawJson};
use berth_domain::{Address, InstanceDefaults, InstanceDraft, InstanceId, ServiceName};
use berth_registry::{Consistency, LiveInstance, RegistryError};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn routes(routes: Routes) -> Routes {
    use Surface::Bender;
    routes
        .add(
            Bender,
            Method::POST,
            "/registrations/{app}/{version}/{host}/{port}",
            register,
        )
        .add(Bender, Method::GET, "/registrations", all_registrations)
        .add(
            Bender,
            Method::GET,
            "/registrations/{app}",
            app_registrations,
        )
        .add(
            Bender,
            Method::GET,
            "/registrations/{app}/{version}",
            version_registrations,
        )
        .add(Bender, Method::GET, "/backends", list_backends)
        .add(Bender, Method::POST, "/backends", create_backend)
        .add(Bender, Method::GET, "/backends/{name}", get_backend)
        .add(Bender, Method::DELETE, "/backends/{name}", delete_backend)
        .add(Bender, Method::GET, "/frontends", list_frontends)
        .add(Bender, Method::POST, "/frontends", create_frontend)
        .add(Bender, Method::GET, "/frontends/{name}", get_frontend)
        .add(Bender, Method::DELETE, "/frontends/{name}", delete_frontend)
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
            other => BenderError(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                other.to_string(),
            ),
        }
    }
}

type BenderResult<T> = Result<T, BenderError>;

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
        ttl: state.compat.bender_ttl,
        min_ttl: berth_domain::LOWEST_TTL,
    };
    let spec = InstanceDraft {
        id: Some(id.to_string()),
        address: Some(address.to_string()),
        port: Some(i64::from(port)),
        ttl_ms: Some(defaults.ttl.as_millis() as i64),
        version: Some(version),
        ..InstanceDraft::default()
    }
    .validate(service.as_str(), Some(id.as_str()), &defaults)
    .map_err(|e| BenderError::invalid(e.to_string()))?;
    state.registry.register(spec).await?;
    Ok(StatusCode::OK.into_response())
}

fn rows(instances: &[Arc<LiveInstance>]) -> Response {
    axum::Json(Value::Array(instances.iter().map(|l| row(l)).collect())).into_response()
}

async fn all_registrations(State(state): State<ApiState>) -> BenderResult<Response> {
    Ok(rows(&state.registry.select(|_| true).await?))
}

/// The instances of `app` (none for a name berth cannot hold, as bender had none).
async fn instances_of(state: &ApiState, app: &str) -> BenderResult<Vec<Arc<LiveInstance>>> {
    match ServiceName::parse("app", app) {
        Ok(service) => Ok(state
            .registry
            .service(&service, Consistency::Local)
            .await?
            .instances
            .to_vec()),
        Err(_) => Ok(Vec::new()),
    }
}

async fn app_registrations(
    State(state): State<ApiState>,
    ApiPath(app): ApiPath<String>,
) -> BenderResult<Response> {
    Ok(rows(&instances_of(&state, &app).await?))
}

async fn version_registrations(
    State(state): State<ApiState>,
    ApiPath((app, version)): ApiPath<(String, String)>,
) -> BenderResult<Response> {
    let instances: Vec<Arc<LiveInstance>> = instances_of(&state, &app)
        .await?
        .into_iter()
        .filter(|l| l.instance.spec.version() == Some(version.as_str()))
        .collect();
    Ok(rows(&instances))
}

fn extras(extra: &BTreeMap<String, RawJson>, row: &mut Map<String, Value>) {
    for (key, value) in extra {
        row.insert(
            key.clone(),
            serde_json::from_str(&value.0).unwrap_or(Value::Null),
        );
    }
}

fn backend_row(backend: &Backend) -> Value {
    let mut row = Map::new();
    extras(backend.extra(), &mut row);
    row.insert("id".into(), json!(format!("backend/{}", backend.name())));
    row.insert("name".into(), json!(backend.name().as_str()));
    row.insert("app".into(), json!(backend.app().as_str()));
    row.insert("version".into(), json!(backend.version()));
    row.insert("resource".into(), json!("Backend"));
    Value::Object(row)
}

fn frontend_row(frontend: &Frontend) -> Value {
    let mut row = Map::new();
    extras(frontend.extra(), &mut row);
    row.insert("id".into(), json!(format!("frontend/{}", frontend.name())));
    row.insert("name".into(), json!(frontend.name().as_str()));
    if let Some(backend) = &frontend.backend() {
        row.insert("backend".into(), json!(backend));
    }
    row.insert("resource".into(), json!("Frontend"));
    Value::Object(row)
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

fn created(row: Value, location: String) -> Response {
    with_location(
        (StatusCode::CREATED, axum::Json(row)).into_response(),
        &location,
    )
}

fn entity_name(name: &str, missing: &'static str) -> BenderResult<EntityName> {
    EntityName::parse("name", name)
        .map_err(|_| BenderError(StatusCode::NOT_FOUND, "NOT_FOUND", missing.into()))
}

async fn list_backends(State(state): State<ApiState>) -> BenderResult<Response> {
    let backends = state.registry.backends().await?;
    Ok(axum::Json(Value::Array(backends.iter().map(backend_row).collect())).into_response())
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

async fn create_backend(State(state): State<ApiState>, request: Request) -> BenderResult<Response> {
    let body = body_object(request).await?;
    let draft = draft_or_missing(backend_draft(body), |field| match field {
        "name" => Some("Backend name is required"),
        _ => Some("Application name and version are required"),
    })?;
    let backend = draft.validate().map_err(|e| refused(&e))?;
    let backend = state
        .registry
        .create_backend(backend)
        .await
        .map_err(|error| match error {
            RegistryError::Catalog(CatalogError::EntityExists { .. }) => BenderError(
                StatusCode::CONFLICT,
                "CONFLICT",
                "Backend with that name already exists".into(),
            ),
            other => other.into(),
        })?;
    Ok(created(
        backend_row(&backend),
        format!("/backends/{}", backend.name()),
    ))
}

async fn get_backend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> BenderResult<Response> {
    let name = entity_name(&name, "Backend not found")?;
    let backend = state.registry.backend(&name).await?.ok_or_else(|| {
        BenderError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Backend not found".into(),
        )
    })?;
    Ok(axum::Json(backend_row(&backend)).into_response())
}

async fn delete_backend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> BenderResult<Response> {
    let name = entity_name(&name, "Backend not found")?;
    match state.registry.delete_backend(&name).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RegistryError::Catalog(CatalogError::EntityNotFound { .. })) => Err(BenderError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Backend not found".into(),
        )),
        Err(error) => Err(error.into()),
    }
}

async fn list_frontends(State(state): State<ApiState>) -> BenderResult<Response> {
    let frontends = state.registry.frontends().await?;
    Ok(axum::Json(Value::Array(frontends.iter().map(frontend_row).collect())).into_response())
}

async fn create_frontend(
    State(state): State<ApiState>,
    request: Request,
) -> BenderResult<Response> {
    let body = body_object(request).await?;
    let draft = draft_or_missing(frontend_draft(body), |field| {
        (field == "name").then_some("Frontend name is required")
    })?;
    let frontend = draft.validate().map_err(|e| refused(&e))?;
    let frontend = state
        .registry
        .create_frontend(frontend)
        .await
        .map_err(|error| match error {
            RegistryError::Catalog(CatalogError::EntityExists { .. }) => BenderError(
                StatusCode::CONFLICT,
                "CONFLICT",
                "Frontend with that name already exists".into(),
            ),
            other => other.into(),
        })?;
    Ok(created(
        frontend_row(&frontend),
        format!("/frontends/{}", frontend.name()),
    ))
}

async fn get_frontend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> BenderResult<Response> {
    let name = entity_name(&name, "Frontend not found")?;
    let frontend = state.registry.frontend(&name).await?.ok_or_else(|| {
        BenderError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Frontend not found".into(),
        )
    })?;
    Ok(axum::Json(frontend_row(&frontend)).into_response())
}

async fn delete_frontend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> BenderResult<Response> {
    let name = entity_name(&name, "Frontend not found")?;
    match state.registry.delete_frontend(&name).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RegistryError::Catalog(CatalogError::EntityNotFound { .. })) => Err(BenderError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Frontend not found".into(),
        )),
        Err(error) => Err(error.into()),
    }
}
