//! flowcommerce/registry's API on berth's catalog: `/applications` (ports from berth's
//! allocator, which reproduces flow's numbers), `/services` (berth's kinds), their journals
//! (`/versions`) and the YAML listing. Bodies are JSON as legacy, or form-encoded as the README
//! shows. Errors are flow's 422 `generic_error` with its messages. Deviations are listed in
//! `docs/compat/flow.md`.

use super::{Fields, read_fields};
use crate::cache::Freshness;
use crate::extract::{ApiPath, Params};
use crate::format::rfc3339;
use crate::{ApiState, Routes, Surface};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_domain::ValidationErrors;
use berth_domain::catalog::{
    AppId, Application, ApplicationDraft, CatalogError, Kind, KindDraft, KindName,
};
use berth_registry::RegistryError;
use berth_registry::Revision;
use berth_registry::catalog::{AppQuery, AppSort, JournalWindow};
use serde::Serialize;
use serde_json::{Value, json};

pub(crate) fn routes(routes: Routes) -> Routes {
    use crate::Access::*;
    use Surface::Flow;
    routes
        .add(
            Flow,
            Method::GET,
            "/applications",
            CatalogRead,
            list_applications,
        )
        .add(
            Flow,
            Method::POST,
            "/applications",
            CatalogWrite,
            create_application,
        )
        .add(
            Flow,
            Method::GET,
            "/applications/versions",
            CatalogRead,
            application_versions,
        )
        .add(
            Flow,
            Method::GET,
            "/applications/yaml",
            CatalogRead,
            applications_yaml,
        )
        .add(
            Flow,
            Method::GET,
            "/applications/{id}",
            CatalogRead,
            get_application,
        )
        .add(
            Flow,
            Method::PUT,
            "/applications/{id}",
            CatalogWrite,
            put_application,
        )
        .add(
            Flow,
            Method::DELETE,
            "/applications/{id}",
            CatalogWrite,
            delete_application,
        )
        .add(
            Flow,
            Method::PUT,
            "/applications/{id}/dependencies/{dependency}",
            CatalogWrite,
            put_dependency,
        )
        .add(
            Flow,
            Method::DELETE,
            "/applications/{id}/dependencies/{dependency}",
            CatalogWrite,
            delete_dependency,
        )
        .add(Flow, Method::GET, "/services", CatalogRead, list_services)
        .add(
            Flow,
            Method::POST,
            "/services",
            CatalogWrite,
            create_service,
        )
        .add(
            Flow,
            Method::GET,
            "/services/versions",
            CatalogRead,
            service_versions,
        )
        .add(
            Flow,
            Method::GET,
            "/services/{id}",
            CatalogRead,
            get_service,
        )
        .add(
            Flow,
            Method::PUT,
            "/services/{id}",
            CatalogWrite,
            put_service,
        )
        .add(
            Flow,
            Method::DELETE,
            "/services/{id}",
            CatalogWrite,
            delete_service,
        )
        .add(Flow, Method::GET, "/_internal_/startup", Open, kube_health)
        .add(Flow, Method::GET, "/_internal_/live", Open, kube_health)
        .add(Flow, Method::GET, "/_internal_/ready", Open, kube_health)
}

/// flow's answers: 422 `generic_error` with messages, an empty 404, or (ours) a 503.
enum FlowError {
    Messages(Vec<String>),
    NotFound,
    TooLarge(String),
    Unavailable(String),
    Denied(StatusCode, String),
}

impl FlowError {
    fn message(text: impl Into<String>) -> Self {
        FlowError::Messages(vec![text.into()])
    }

    /// A body berth could not read: too large keeps its 413, anything else is a 422.
    fn unreadable(error: crate::error::ApiError) -> Self {
        if error.status == StatusCode::PAYLOAD_TOO_LARGE {
            FlowError::TooLarge(error.message)
        } else {
            FlowError::message(error.message)
        }
    }
}

impl IntoResponse for FlowError {
    fn into_response(self) -> Response {
        match self {
            FlowError::Messages(messages) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"code": "generic_error", "messages": messages})),
            )
                .into_response(),
            FlowError::NotFound => StatusCode::NOT_FOUND.into_response(),
            FlowError::TooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"code": "generic_error", "messages": [message]})),
            )
                .into_response(),
            FlowError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"code": "generic_error", "messages": [message]})),
            )
                .into_response(),
            FlowError::Denied(status, message) => denied(status, &message),
        }
    }
}

fn messages(errors: &ValidationErrors) -> FlowError {
    FlowError::Messages(
        errors
            .all()
            .iter()
            .map(|e| flow_message(&e.field, &e.message))
            .collect(),
    )
}

/// A domain rule's message in flow's words (most already are).
fn flow_message(field: &str, message: &str) -> String {
    match (field, message) {
        ("kind", "is required") => "Must specify service when creating application".into(),
        ("kind", _) => "Service not found".into(),
        _ => message.to_string(),
    }
}

/// A catalog rule's refusal, in flow's words. `adding` is the dependency being added, for the
/// cycle message.
fn catalog_message(error: CatalogError, app: Option<&AppId>, adding: Option<&AppId>) -> FlowError {
    FlowError::message(match error {
        CatalogError::AppExists(_) => "Application with this id already exists".to_string(),
        CatalogError::KindNotFound(_) => "Service not found".into(),
        CatalogError::KindExists(_) => "Service with this id already exists".into(),
        CatalogError::KindInUse { .. } => "1 or more applications is using this service".into(),
        CatalogError::DependencyMissing(dependency) => {
            format!("Dependency[{dependency}] references a non existing application")
        }
        CatalogError::PortTaken { port, owner } => {
            format!("External port {port} is already assigned to the application {owner}")
        }
        CatalogError::Cycle(path) => {
            let from = app
                .or(path.first())
                .map(AppId::to_string)
                .unwrap_or_default();
            let on = adding
                .or(path.get(1))
                .map(AppId::to_string)
                .unwrap_or_default();
            format!("Application[{from}] Cannot declare a circular dependency on[{on}]")
        }
        CatalogError::HasDependents { app, dependents } => format!(
            "Application[{app}] cannot be deleted: it is a dependency of[{}]",
            dependents
                .iter()
                .map(AppId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    })
}

fn registry_error(error: RegistryError) -> FlowError {
    match error {
        RegistryError::Invalid(errors) => messages(&errors),
        RegistryError::Catalog(CatalogError::AppNotFound(_)) | RegistryError::NotFound(_) => {
            FlowError::NotFound
        }
        RegistryError::Catalog(error) => catalog_message(error, None, None),
        RegistryError::Conflict { message, .. } => FlowError::message(message),
        RegistryError::Unauthenticated(message) => {
            FlowError::Denied(StatusCode::UNAUTHORIZED, message)
        }
        RegistryError::Forbidden(message) => FlowError::Denied(StatusCode::FORBIDDEN, message),
        other => FlowError::Unavailable(other.to_string()),
    }
}

impl From<RegistryError> for FlowError {
    fn from(error: RegistryError) -> Self {
        registry_error(error)
    }
}

type FlowResult<T> = Result<T, FlowError>;

/// A request the auth check refused, in flow's error shape.
pub(crate) fn denied(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": "generic_error", "messages": [message]})),
    )
        .into_response()
}

#[derive(Serialize)]
struct ServiceRef<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct PortDto<'a> {
    service: ServiceRef<'a>,
    external: u16,
    internal: u16,
}

#[derive(Serialize)]
struct ApplicationDto<'a> {
    id: &'a str,
    ports: Vec<PortDto<'a>>,
    dependencies: Vec<&'a str>,
}

fn application(app: &Application) -> ApplicationDto<'_> {
    ApplicationDto {
        id: app.id().as_str(),
        ports: app
            .ports()
            .iter()
            .map(|p| PortDto {
                service: ServiceRef {
                    id: p.kind.as_str(),
                },
                external: p.external,
                internal: p.internal,
            })
            .collect(),
        dependencies: app.dependencies().iter().map(AppId::as_str).collect(),
    }
}

fn service(kind: &Kind) -> Value {
    json!({"id": kind.name().as_str(), "default_port": kind.default_port()})
}

fn ok<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

fn paging(params: &Params) -> FlowResult<(usize, usize)> {
    let number = |name: &str, default: usize| -> FlowResult<usize> {
        match params.one(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                FlowError::message(format!("Invalid {name}[{text}]: must be a number"))
            }),
        }
    };
    Ok((number("limit", 25)?, number("offset", 0)?))
}

/// `GET /applications`: `id`, `port`, `service` (repeatable), `prefix`, `q`, `limit` (25),
/// `offset`, `sort` (`-created_at`).
async fn list_applications(State(state): State<ApiState>, params: Params) -> FlowResult<Response> {
    let sort = match params.one("sort").unwrap_or("-created_at") {
        "created_at" => AppSort::Created,
        "-created_at" => AppSort::CreatedDescending,
        "port" => AppSort::Port,
        "-port" => AppSort::PortDescending,
        other => {
            return Err(FlowError::message(format!(
                "Invalid sort[{other}]. Valid values are: created_at, -created_at, port, -port"
            )));
        }
    };
    let (limit, offset) = paging(&params)?;
    // A value that cannot name anything (a bad id, a negative port) matches nothing.
    let ids = params.all("id");
    let ports = params.all("port");
    let services = params.all("service");
    let query = AppQuery {
        ids: ids
            .iter()
            .filter_map(|i| AppId::parse("id", i).ok())
            .collect(),
        ports: ports.iter().filter_map(|p| p.parse().ok()).collect(),
        kinds: services
            .iter()
            .filter_map(|s| KindName::parse("service", s).ok())
            .collect(),
        prefix: params.one("prefix").map(String::from),
        q: params.one("q").map(String::from),
        sort,
        offset,
        limit: Some(limit),
    };
    let matches_nothing = (!ids.is_empty() && query.ids.is_empty())
        || (!ports.is_empty() && query.ports.is_empty())
        || (!services.is_empty() && query.kinds.is_empty());
    // Listings are polled: kept as bytes until the catalog changes.
    let freshness = Freshness::of_catalog(&state.registry);
    let key = ("flow-applications", params.canonical());
    if let Some(body) = state.cache.get(&key, freshness) {
        return Ok(json_answer(body));
    }
    let apps = if matches_nothing {
        Vec::new()
    } else {
        state.registry.apps(&query).await?
    };
    let body = serde_json::to_vec(&apps.iter().map(application).collect::<Vec<_>>())
        .map_err(|e| FlowError::Unavailable(e.to_string()))?;
    Ok(json_answer(state.cache.keep(key, freshness, body)))
}

/// A 200 JSON response made of already serialized bytes.
fn json_answer(body: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn port_field(fields: &Fields, name: &str) -> FlowResult<Option<i64>> {
    match fields.text(name) {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| FlowError::message(format!("{name} must be a number"))),
    }
}

async fn create_application(
    State(state): State<ApiState>,
    request: Request,
) -> FlowResult<Response> {
    let fields = read_fields(request).await.map_err(FlowError::unreadable)?;
    let draft = ApplicationDraft {
        id: fields.text("id"),
        kind: fields.text("service"),
        external: port_field(&fields, "external")?,
        internal: port_field(&fields, "internal")?,
        dependencies: fields.texts("dependency"),
    };
    let new = match draft.clone().validate() {
        Ok(new) => new,
        Err(errors) => return Err(every_problem(&state, &draft, &errors, true).await),
    };
    let app = state.registry.create_app(new).await?;
    Ok(ok(StatusCode::CREATED, &application(&app)))
}

/// Every problem of an application request at once, in the order flow reported them: the
/// input's own problems, and (as flow's validation also looked) whether the id is taken and
/// the service exists. The existence checks are reads for the report only; the write itself
/// is one command that checks again.
async fn every_problem(
    state: &ApiState,
    draft: &ApplicationDraft,
    errors: &ValidationErrors,
    creating: bool,
) -> FlowError {
    // flow's order: the id, whether it is taken, the service, the ports, the dependencies.
    let rank = |field: &str| match field {
        "id" => 0,
        "kind" => 2,
        "external" | "internal" => 3,
        _ => 4,
    };
    let mut problems: Vec<(u8, String)> = errors
        .all()
        .iter()
        .map(|e| (rank(e.field.as_str()), flow_message(&e.field, &e.message)))
        .collect();
    let id = draft
        .id
        .as_deref()
        .and_then(|id| AppId::parse("id", id).ok());
    if creating
        && let Some(id) = &id
        && matches!(state.registry.app(id).await, Ok(Some(_)))
    {
        problems.push((1, "Application with this id already exists".into()));
    }
    if let Some(service) = draft.kind.as_deref()
        && !problems.iter().any(|(rank, _)| *rank == 2)
    {
        let known = match KindName::parse("service", service) {
            Ok(kind) => matches!(state.registry.kind(&kind).await, Ok(Some(_))),
            Err(_) => false,
        };
        if !known {
            problems.push((2, "Service not found".into()));
        }
    }
    problems.sort_by_key(|(rank, _)| *rank);
    FlowError::Messages(problems.into_iter().map(|(_, message)| message).collect())
}

async fn get_application(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> FlowResult<Response> {
    let Ok(id) = AppId::parse("id", &id) else {
        return Err(FlowError::NotFound);
    };
    let app = state.registry.app(&id).await?.ok_or(FlowError::NotFound)?;
    Ok(ok(StatusCode::OK, &application(&app)))
}

/// `PUT /applications/{id}`: creates (201, `service` required) or updates (200): a port of a
/// new service, and the whole dependency list when given. One command, one transaction.
async fn put_application(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> FlowResult<Response> {
    let fields = read_fields(request).await.map_err(FlowError::unreadable)?;
    let draft = ApplicationDraft {
        id: Some(id),
        kind: fields.text("service"),
        external: port_field(&fields, "external")?,
        internal: port_field(&fields, "internal")?,
        dependencies: fields.texts("dependency"),
    };
    let put = match draft.clone().validate_put(fields.contains("dependency")) {
        Ok(put) => put,
        Err(errors) => return Err(every_problem(&state, &draft, &errors, false).await),
    };
    let app_id = put.id.clone();
    let (app, created) = state
        .registry
        .put_app(put)
        .await
        .map_err(|error| match error {
            RegistryError::Catalog(error @ CatalogError::Cycle(_)) => {
                catalog_message(error, Some(&app_id), None)
            }
            other => registry_error(other),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(ok(status, &application(&app)))
}

async fn delete_application(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> FlowResult<Response> {
    let Ok(id) = AppId::parse("id", &id) else {
        return Err(FlowError::NotFound);
    };
    state.registry.delete_app(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The app and the dependency named in the path: a name that cannot be an application is a
/// missing one (404 for the app, flow's 422 for the dependency).
fn app_and_dependency(id: &str, dependency: &str) -> FlowResult<(AppId, AppId)> {
    let id = AppId::parse("id", id).map_err(|_| FlowError::NotFound)?;
    let dependency = AppId::parse("dependency", dependency).map_err(|_| missing(dependency))?;
    Ok((id, dependency))
}

fn missing(dependency: &str) -> FlowError {
    FlowError::message(format!("Application named[{dependency}] not found"))
}

/// A dependency edit's refusal in flow's words.
fn dependency_error(error: RegistryError, id: &AppId, dependency: &AppId) -> FlowError {
    match error {
        RegistryError::Catalog(error @ CatalogError::Cycle(_)) => {
            catalog_message(error, Some(id), Some(dependency))
        }
        RegistryError::Catalog(CatalogError::DependencyMissing(_)) => missing(dependency.as_str()),
        other => registry_error(other),
    }
}

async fn put_dependency(
    State(state): State<ApiState>,
    ApiPath((id, dependency)): ApiPath<(String, String)>,
) -> FlowResult<Response> {
    let (id, dependency) = app_and_dependency(&id, &dependency)?;
    if id == dependency {
        return Err(FlowError::message(format!(
            "Cannot declare dependency[{id}] on self"
        )));
    }
    let app = state
        .registry
        .add_dependency(&id, &dependency)
        .await
        .map_err(|error| dependency_error(error, &id, &dependency))?;
    Ok(ok(StatusCode::OK, &application(&app)))
}

async fn delete_dependency(
    State(state): State<ApiState>,
    ApiPath((id, dependency)): ApiPath<(String, String)>,
) -> FlowResult<Response> {
    let (id, dependency) = app_and_dependency(&id, &dependency)?;
    let app = state
        .registry
        .remove_dependency(&id, &dependency)
        .await
        .map_err(|error| dependency_error(error, &id, &dependency))?;
    Ok(ok(StatusCode::OK, &application(&app)))
}

/// The journal listings' common query: `id` (entry ids), the records' ids, `limit`, `offset`,
/// `sort` (`journal_timestamp` or `-journal_timestamp`), as the window the registry reads.
fn journal_window(params: &Params, record_param: &str) -> FlowResult<JournalWindow> {
    let newest_first = match params.one("sort").unwrap_or("journal_timestamp") {
        "journal_timestamp" => false,
        "-journal_timestamp" => true,
        other => {
            return Err(FlowError::message(format!(
                "Invalid sort[{other}]. Valid values are: journal_timestamp, -journal_timestamp"
            )));
        }
    };
    let (limit, offset) = paging(params)?;
    // Entry ids are revisions: one that is not a number matches no entry.
    let given = params.all("id");
    let ids: Vec<Revision> = given
        .iter()
        .filter_map(|id| id.parse::<i64>().ok().map(Revision))
        .collect();
    let limit = if !given.is_empty() && ids.is_empty() {
        0
    } else {
        limit
    };
    Ok(JournalWindow {
        records: params.all(record_param),
        ids,
        newest_first,
        offset,
        limit,
    })
}

async fn application_versions(
    State(state): State<ApiState>,
    params: Params,
) -> FlowResult<Response> {
    let selected = state
        .registry
        .app_journal(&journal_window(&params, "application")?)
        .await?;
    let body: Vec<Value> = selected
        .iter()
        .map(|entry| {
            json!({
                "id": entry.revision.0.to_string(),
                "timestamp": rfc3339(entry.timestamp),
                "type": entry.change.as_str(),
                "application": application(&entry.record),
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, &body))
}

async fn service_versions(State(state): State<ApiState>, params: Params) -> FlowResult<Response> {
    let selected = state
        .registry
        .kind_journal(&journal_window(&params, "service")?)
        .await?;
    let body: Vec<Value> = selected
        .iter()
        .map(|entry| {
            json!({
                "id": entry.revision.0.to_string(),
                "timestamp": rfc3339(entry.timestamp),
                "type": entry.change.as_str(),
                "service": service(&entry.record.kind),
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, &body))
}

#[derive(Serialize)]
#[serde(untagged)]
enum Healthcheck<'a> {
    Http {
        host: &'a str,
        port: u16,
    },
    Postgresql {
        dbname: &'a str,
        host: &'a str,
        port: u16,
        user: &'a str,
    },
}

#[derive(Serialize)]
struct YamlPort<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Healthcheck<'a>>,
    external: u16,
    internal: u16,
}

#[derive(Serialize)]
struct YamlApplication<'a> {
    id: &'a str,
    ports: Vec<YamlPort<'a>>,
    dependencies: Vec<&'a str>,
}

/// `GET /applications/yaml`: every application as YAML, with flow's health checks for the
/// services it knew (a port of any other service has none).
async fn applications_yaml(State(state): State<ApiState>) -> FlowResult<Response> {
    let apps = state.registry.apps(&AppQuery::default()).await?;
    let listing: Vec<YamlApplication<'_>> = apps
        .iter()
        .map(|app| YamlApplication {
            id: app.id().as_str(),
            ports: app
                .ports()
                .iter()
                .map(|port| YamlPort {
                    healthcheck: match port.kind.as_str() {
                        "play" | "nodejs" => Some(Healthcheck::Http {
                            host: "ws",
                            port: port.external,
                        }),
                        "postgresql" => Some(Healthcheck::Postgresql {
                            dbname: app.id().as_str(),
                            host: "ws",
                            port: port.external,
                            user: "api",
                        }),
                        _ => None,
                    },
                    external: port.external,
                    internal: port.internal,
                })
                .collect(),
            dependencies: app.dependencies().iter().map(AppId::as_str).collect(),
        })
        .collect();
    let text =
        serde_norway::to_string(&listing).map_err(|e| FlowError::Unavailable(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/yaml; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// `GET /services`: `id` (repeatable), `limit` (25), `offset`, `sort` (`-created_at`).
async fn list_services(State(state): State<ApiState>, params: Params) -> FlowResult<Response> {
    let (limit, offset) = paging(&params)?;
    let mut kinds = state.registry.kinds().await?;
    match params.one("sort").unwrap_or("-created_at") {
        "created_at" => kinds.sort_by_key(|k| (k.created_at, k.kind.name().clone())),
        "-created_at" => {
            kinds.sort_by_key(|k| std::cmp::Reverse((k.created_at, k.kind.name().clone())))
        }
        "id" => kinds.sort_by(|a, b| a.kind.name().cmp(b.kind.name())),
        "-id" => kinds.sort_by(|a, b| b.kind.name().cmp(a.kind.name())),
        other => {
            return Err(FlowError::message(format!(
                "Invalid sort[{other}]. Valid values are: created_at, -created_at, id, -id"
            )));
        }
    }
    let ids = params.all("id");
    let body: Vec<Value> = kinds
        .iter()
        .filter(|k| ids.is_empty() || ids.iter().any(|id| id == k.kind.name().as_str()))
        .skip(offset)
        .take(limit)
        .map(|k| service(&k.kind))
        .collect();
    Ok(ok(StatusCode::OK, &body))
}

/// flow's service rule first (a default port above 1024, stricter than a kind's), then
/// berth's kind rules; every problem reported at once.
fn service_kind(state: &ApiState, name: &str, default_port: Option<String>) -> FlowResult<Kind> {
    let mut problems: Vec<String> = Vec::new();
    let port = match default_port.as_deref().map(str::parse::<i64>) {
        Some(Ok(port)) if port > 1024 && port <= 65535 => Some(port),
        Some(Ok(port)) if port > 65535 => {
            problems.push("Default port must be <= 65535".into());
            None
        }
        _ => {
            problems.push("Default port must be > 1024".into());
            None
        }
    };
    let draft = KindDraft {
        name: Some(name.into()),
        default_port: port,
        offset: None,
    };
    match draft.validate(None, state.registry.port_range().block_size) {
        Ok(kind) if problems.is_empty() => Ok(kind),
        Ok(_) => Err(FlowError::Messages(problems)),
        Err(errors) => {
            // The port's problem is already in flow's words.
            let mut all: Vec<String> = errors
                .all()
                .iter()
                .filter(|e| e.field != "default_port")
                .map(|e| e.message.clone())
                .collect();
            all.extend(problems);
            Err(FlowError::Messages(all))
        }
    }
}

async fn create_service(State(state): State<ApiState>, request: Request) -> FlowResult<Response> {
    let fields = read_fields(request).await.map_err(FlowError::unreadable)?;
    let id = fields.text("id").unwrap_or_default();
    let kind = service_kind(&state, &id, fields.text("default_port"))?;
    let created = state.registry.create_kind(kind).await?;
    Ok(ok(StatusCode::CREATED, &service(&created.kind)))
}

async fn get_service(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> FlowResult<Response> {
    let Ok(name) = KindName::parse("id", &id) else {
        return Err(FlowError::NotFound);
    };
    let kind = state
        .registry
        .kind(&name)
        .await?
        .ok_or(FlowError::NotFound)?;
    Ok(ok(StatusCode::OK, &service(&kind.kind)))
}

/// `PUT /services/{id}`: creates (201) or updates (200) the default port; a service's slot in
/// the port block stays as it was.
async fn put_service(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> FlowResult<Response> {
    let fields = read_fields(request).await.map_err(FlowError::unreadable)?;
    let kind = service_kind(&state, &id, fields.text("default_port"))?;
    let (stored, created) = state.registry.upsert_kind(kind, true).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(ok(status, &service(&stored.kind)))
}

async fn delete_service(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> FlowResult<Response> {
    let Ok(name) = KindName::parse("id", &id) else {
        return Err(FlowError::NotFound);
    };
    match state.registry.delete_kind(&name).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(RegistryError::Catalog(CatalogError::KindNotFound(_))) => Err(FlowError::NotFound),
        Err(error) => Err(error.into()),
    }
}

async fn kube_health() -> Response {
    axum::Json(json!({"status": "healthy"})).into_response()
}
