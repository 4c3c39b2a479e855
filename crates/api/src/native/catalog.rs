//! The native catalog routes: kinds, applications with their ports and dependencies, start
//! order, history, export and import. DTOs live here; the rules are the domain's.

use crate::ApiState;
use crate::error::internal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, IMPORT_BODY_LIMIT, JsonBody, Params, read_body, read_body_up_to};
use crate::format::rfc3339;
use crate::native::instances::InstanceDto;
use crate::reply::{json, with_location};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_domain::catalog::{
    AppId, Application, ApplicationDraft, Backend, BackendDraft, CatalogError, EntityName,
    Frontend, FrontendDraft, KindDraft, KindName, PortAssignment, PortChoice, PortDraft, RawJson,
    WholeApplicationDraft, validate_dependency_list,
};
use berth_domain::{Timestamp, ValidationError, ValidationErrors};
use berth_registry::catalog::{
    AppQuery, AppSort, CatalogSnapshot, HistoryEntry, StoredKind, extras_as_json,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn invalid(error: ValidationError) -> ApiError {
    ApiError::invalid(&error.into())
}

fn parse_app(text: &str) -> ApiResult<AppId> {
    AppId::parse("id", text).map_err(invalid)
}

fn parse_kind(text: &str) -> ApiResult<KindName> {
    KindName::parse("kind", text).map_err(invalid)
}

fn parse_entity(text: &str) -> ApiResult<EntityName> {
    EntityName::parse("name", text).map_err(invalid)
}

/// A missing kind named in a request body is the body's fault, not a missing resource.
fn kind_in_body(error: ApiError) -> ApiError {
    if error.status == StatusCode::NOT_FOUND && error.message.starts_with("kind ") {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            field: Some("kind".into()),
            ..error
        }
    } else {
        error
    }
}

#[derive(Serialize, Deserialize)]
pub struct KindDto {
    name: String,
    default_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

impl KindDto {
    fn new(kind: &StoredKind) -> Self {
        KindDto {
            created_at: Some(rfc3339(kind.created_at)),
            ..Self::plain(&kind.kind)
        }
    }

    fn plain(kind: &berth_domain::catalog::Kind) -> Self {
        KindDto {
            name: kind.name().to_string(),
            default_port: kind.default_port(),
            offset: kind.offset(),
            created_at: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindBody {
    name: Option<String>,
    default_port: Option<i64>,
    offset: Option<i64>,
}

impl KindBody {
    fn into_draft(self) -> KindDraft {
        KindDraft {
            name: self.name,
            default_port: self.default_port,
            offset: self.offset,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct PortDto {
    kind: String,
    external: u16,
    internal: u16,
}

impl PortDto {
    fn new(port: &PortAssignment) -> Self {
        PortDto {
            kind: port.kind.to_string(),
            external: port.external,
            internal: port.internal,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct AppDto<'a> {
    id: String,
    ports: Vec<PortDto>,
    dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    instances: Option<Vec<InstanceDto<'a>>>,
}

impl AppDto<'_> {
    pub fn new(app: &Application) -> Self {
        AppDto {
            id: app.id().to_string(),
            ports: app.ports().iter().map(PortDto::new).collect(),
            dependencies: app.dependencies().iter().map(AppId::to_string).collect(),
            created_at: Some(rfc3339(app.created_at())),
            instances: None,
        }
    }
}

pub async fn list_kinds(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&[])?;
    let kinds = state.registry.kinds().await?;
    json(
        StatusCode::OK,
        &kinds.iter().map(KindDto::new).collect::<Vec<_>>(),
    )
}

pub async fn get_kind(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = parse_kind(&name)?;
    let kind = state
        .registry
        .kind(&name)
        .await?
        .ok_or_else(|| ApiError::catalog(CatalogError::KindNotFound(name)))?;
    json(StatusCode::OK, &KindDto::new(&kind))
}

pub async fn create_kind(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<KindBody>,
) -> ApiResult<Response> {
    let kind = body
        .into_draft()
        .validate(None, state.registry.port_range().block_size)
        .map_err(|e| ApiError::invalid(&e))?;
    let created = state.registry.create_kind(kind).await?;
    json(StatusCode::CREATED, &KindDto::new(&created))
}

pub async fn put_kind(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<KindBody>,
) -> ApiResult<Response> {
    let kind = body
        .into_draft()
        .validate(Some(&name), state.registry.port_range().block_size)
        .map_err(|e| ApiError::invalid(&e))?;
    let (stored, created) = state.registry.upsert_kind(kind, false).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &KindDto::new(&stored))
}

pub async fn delete_kind(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.registry.delete_kind(&parse_kind(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct HistoryDto<T> {
    revision: i64,
    timestamp: String,
    r#type: &'static str,
    record: T,
}

fn history<T, D>(entries: &[HistoryEntry<T>], dto: impl Fn(&T) -> D) -> Vec<HistoryDto<D>> {
    entries
        .iter()
        .map(|entry| HistoryDto {
            revision: entry.revision.0,
            timestamp: rfc3339(entry.timestamp),
            r#type: entry.change.as_str(),
            record: dto(&entry.record),
        })
        .collect()
}

pub async fn kind_history(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = parse_kind(&name)?;
    let entries = state.registry.kind_history(&name).await?;
    if entries.is_empty() {
        return Err(ApiError::catalog(CatalogError::KindNotFound(name)));
    }
    json(StatusCode::OK, &history(&entries, KindDto::new))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    id: Option<String>,
    kind: Option<String>,
    external: Option<i64>,
    internal: Option<i64>,
    #[serde(default)]
    dependencies: Vec<String>,
}

pub async fn create_app(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<AppBody>,
) -> ApiResult<Response> {
    let new = ApplicationDraft {
        id: body.id,
        kind: body.kind,
        external: body.external,
        internal: body.internal,
        dependencies: body.dependencies,
    }
    .validate()
    .map_err(|e| ApiError::invalid(&e))?;
    let app = state
        .registry
        .create_app(new)
        .await
        .map_err(|e| kind_in_body(e.into()))?;
    let response = json(StatusCode::CREATED, &AppDto::new(&app))?;
    Ok(with_location(response, &format!("/v1/apps/{}", app.id())))
}

/// `?id=…&port=…&kind=…&prefix=…&q=…&sort=…&limit=…&offset=…`
fn app_query(params: &Params) -> ApiResult<AppQuery> {
    params.only(&[
        "id", "port", "kind", "prefix", "q", "sort", "limit", "offset",
    ])?;
    let mut ids = Vec::new();
    for id in params.all("id") {
        ids.push(AppId::parse("id", &id).map_err(invalid)?);
    }
    let mut ports = Vec::new();
    for port in params.all("port") {
        ports.push(port.parse::<u16>().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter `port` must be a port number (got {port:?})"
            ))
            .with_field("port")
        })?);
    }
    let mut kinds = Vec::new();
    for kind in params.all("kind") {
        kinds.push(KindName::parse("kind", &kind).map_err(invalid)?);
    }
    let sort = match params.one("sort") {
        None => AppSort::Id,
        Some(text) => AppSort::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "sort must be one of id, -id, port, -port, created, -created (got {text:?})"
            ))
            .with_field("sort")
        })?,
    };
    Ok(AppQuery {
        ids,
        ports,
        kinds,
        prefix: params.one("prefix").map(String::from),
        q: params.one("q").map(String::from),
        sort,
        offset: params.parsed("offset", "a number")?.unwrap_or(0),
        limit: params.parsed("limit", "a number")?,
    })
}

pub async fn list_apps(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    let query = app_query(&params)?;
    let apps = state.registry.apps(&query).await?;
    json(
        StatusCode::OK,
        &apps.iter().map(AppDto::new).collect::<Vec<_>>(),
    )
}

pub async fn get_app(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let app = state
        .registry
        .app(&id)
        .await?
        .ok_or_else(|| ApiError::catalog(CatalogError::AppNotFound(id.clone())))?;
    let live = state.registry.app_instances(&id).await?;
    let mut dto = AppDto::new(&app);
    dto.instances = Some(
        live.iter()
            .map(|l| InstanceDto::new(l.as_instance_ref()))
            .collect(),
    );
    json(StatusCode::OK, &dto)
}

pub async fn delete_app(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.registry.delete_app(&parse_app(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PortBody {
    external: Option<i64>,
    internal: Option<i64>,
}

/// `PUT /v1/apps/{id}/ports/{kind}`: allocates (201) or returns the existing port (200). The
/// body, optional, may choose the external and internal ports.
pub async fn put_port(
    State(state): State<ApiState>,
    ApiPath((id, kind)): ApiPath<(String, String)>,
    request: Request,
) -> ApiResult<Response> {
    let (id, kind) = (parse_app(&id)?, parse_kind(&kind)?);
    let body = read_body(request).await?;
    let choice: PortBody = if body.iter().all(u8::is_ascii_whitespace) {
        PortBody::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    let choice = PortChoice::validate(choice.external, choice.internal)
        .map_err(|e| ApiError::invalid(&e))?;
    let (app, created) = state.registry.add_port(&id, &kind, choice).await?;
    let port = app.port_of(&kind).map(PortDto::new);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(
        status,
        &serde_json::json!({ "app": AppDto::new(&app), "port": port }),
    )
}

pub async fn delete_port(
    State(state): State<ApiState>,
    ApiPath((id, kind)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let app = state
        .registry
        .remove_port(&parse_app(&id)?, &parse_kind(&kind)?)
        .await?;
    json(StatusCode::OK, &AppDto::new(&app))
}

pub async fn get_dependencies(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let app = state
        .registry
        .app(&id)
        .await?
        .ok_or_else(|| ApiError::catalog(CatalogError::AppNotFound(id)))?;
    json(
        StatusCode::OK,
        &serde_json::json!({ "dependencies": app.dependencies().iter().map(AppId::as_str).collect::<Vec<_>>() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependenciesBody {
    dependencies: Vec<String>,
}

pub async fn put_dependencies(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<DependenciesBody>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let dependencies =
        validate_dependency_list(&id, &body.dependencies).map_err(|e| ApiError::invalid(&e))?;
    let app = state.registry.set_dependencies(&id, dependencies).await?;
    json(StatusCode::OK, &AppDto::new(&app))
}

fn one_dependency(id: &AppId, dependency: &str) -> ApiResult<AppId> {
    let set = validate_dependency_list(id, &[dependency.to_string()])
        .map_err(|e| ApiError::invalid(&e))?;
    Ok(set.into_iter().next().expect("one valid dependency"))
}

pub async fn put_dependency(
    State(state): State<ApiState>,
    ApiPath((id, dependency)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let dependency = one_dependency(&id, &dependency)?;
    let app = state.registry.add_dependency(&id, &dependency).await?;
    json(StatusCode::OK, &AppDto::new(&app))
}

pub async fn delete_dependency(
    State(state): State<ApiState>,
    ApiPath((id, dependency)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let dependency = parse_app(&dependency)?;
    let app = state.registry.remove_dependency(&id, &dependency).await?;
    json(StatusCode::OK, &AppDto::new(&app))
}

pub async fn start_order(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&[])?;
    let waves = state.registry.start_waves().await?;
    let waves: Vec<Vec<&str>> = waves
        .iter()
        .map(|w| w.iter().map(AppId::as_str).collect())
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "waves": waves }))
}

pub async fn app_start_order(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let order = state
        .registry
        .start_order_of(&id)
        .await?
        .ok_or_else(|| ApiError::catalog(CatalogError::AppNotFound(id.clone())))?;
    json(
        StatusCode::OK,
        &serde_json::json!({ "app": id.as_str(), "order": order.iter().map(AppId::as_str).collect::<Vec<_>>() }),
    )
}

pub async fn app_history(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let entries = state.registry.app_history(&id).await?;
    if entries.is_empty() {
        return Err(ApiError::catalog(CatalogError::AppNotFound(id)));
    }
    json(StatusCode::OK, &history(&entries, AppDto::new))
}

/// `SPLASHPAGE_PLAY_PORT`: an environment variable name for an app's port of a kind.
pub fn env_name(app: &AppId, kind: &KindName) -> String {
    format!("{app}_{kind}_PORT")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `GET /v1/apps/{id}/env`: the external ports of the app and of everything it depends on,
/// as environment variables (for a docker-compose `.env`).
pub async fn app_env(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_app(&id)?;
    let apps = state
        .registry
        .environment(&id)
        .await?
        .ok_or_else(|| ApiError::catalog(CatalogError::AppNotFound(id.clone())))?;
    let variables: BTreeMap<String, u16> = apps
        .iter()
        .flat_map(|app| {
            app.ports()
                .iter()
                .map(move |p| (env_name(app.id(), &p.kind), p.external))
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "app": id.as_str(), "variables": variables }),
    )
}

/// Free-form: every field besides the known ones is kept (so no `deny_unknown_fields`).
#[derive(Serialize, Deserialize)]
pub struct BackendDto {
    name: String,
    app: String,
    version: String,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
pub struct FrontendDto {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

fn raw(extra: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, RawJson> {
    extra
        .into_iter()
        .map(|(k, v)| (k, RawJson(v.to_string())))
        .collect()
}

impl BackendDto {
    fn new(backend: &Backend) -> Self {
        BackendDto {
            name: backend.name().to_string(),
            app: backend.app().to_string(),
            version: backend.version().to_string(),
            extra: extras_as_json(backend.extra()),
        }
    }
}

impl FrontendDto {
    fn new(frontend: &Frontend) -> Self {
        FrontendDto {
            name: frontend.name().to_string(),
            backend: frontend.backend().map(String::from),
            extra: extras_as_json(frontend.extra()),
        }
    }
}

/// Free-form bodies: the known fields must be strings when present; the rest is kept.
fn string_field(
    body: &mut serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> ApiResult<Option<String>> {
    match body.remove(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text)),
        Some(_) => {
            Err(ApiError::bad_request(format!("{field} must be a string")).with_field(field))
        }
    }
}

pub fn backend_draft(
    mut body: serde_json::Map<String, serde_json::Value>,
) -> ApiResult<BackendDraft> {
    Ok(BackendDraft {
        name: string_field(&mut body, "name")?,
        app: string_field(&mut body, "app")?,
        version: string_field(&mut body, "version")?,
        extra: raw(body.into_iter().collect()),
    })
}

pub fn frontend_draft(
    mut body: serde_json::Map<String, serde_json::Value>,
) -> ApiResult<FrontendDraft> {
    Ok(FrontendDraft {
        name: string_field(&mut body, "name")?,
        backend: string_field(&mut body, "backend")?,
        extra: raw(body.into_iter().collect()),
    })
}

pub async fn list_backends(State(state): State<ApiState>) -> ApiResult<Response> {
    let backends = state.registry.backends().await?;
    json(
        StatusCode::OK,
        &backends.iter().map(BackendDto::new).collect::<Vec<_>>(),
    )
}

pub async fn create_backend(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let backend = backend_draft(body)?
        .validate()
        .map_err(|e| ApiError::invalid(&e))?;
    let backend = state.registry.create_backend(backend).await?;
    let response = json(StatusCode::CREATED, &BackendDto::new(&backend))?;
    Ok(with_location(
        response,
        &format!("/v1/backends/{}", backend.name()),
    ))
}

/// A backend with its live members (its service's instances at its version).
pub async fn get_backend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = parse_entity(&name)?;
    let backend = state.registry.backend(&name).await?.ok_or_else(|| {
        ApiError::catalog(CatalogError::EntityNotFound {
            what: "backend",
            name,
        })
    })?;
    let members = state.registry.backend_members(&backend).await?;
    let mut value = serde_json::to_value(BackendDto::new(&backend)).map_err(internal)?;
    value["members"] = serde_json::to_value(
        members
            .iter()
            .map(|m| InstanceDto::new(m.as_instance_ref()))
            .collect::<Vec<_>>(),
    )
    .map_err(internal)?;
    json(StatusCode::OK, &value)
}

pub async fn delete_backend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.registry.delete_backend(&parse_entity(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_frontends(State(state): State<ApiState>) -> ApiResult<Response> {
    let frontends = state.registry.frontends().await?;
    json(
        StatusCode::OK,
        &frontends.iter().map(FrontendDto::new).collect::<Vec<_>>(),
    )
}

pub async fn create_frontend(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let frontend = frontend_draft(body)?
        .validate()
        .map_err(|e| ApiError::invalid(&e))?;
    let frontend = state.registry.create_frontend(frontend).await?;
    let response = json(StatusCode::CREATED, &FrontendDto::new(&frontend))?;
    Ok(with_location(
        response,
        &format!("/v1/frontends/{}", frontend.name()),
    ))
}

pub async fn get_frontend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = parse_entity(&name)?;
    let frontend = state.registry.frontend(&name).await?.ok_or_else(|| {
        ApiError::catalog(CatalogError::EntityNotFound {
            what: "frontend",
            name,
        })
    })?;
    json(StatusCode::OK, &FrontendDto::new(&frontend))
}

pub async fn delete_frontend(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .registry
        .delete_frontend(&parse_entity(&name)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The export format: the whole catalog, readable and restorable.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDto<'a> {
    kinds: Vec<KindDto>,
    applications: Vec<AppDto<'a>>,
    #[serde(default)]
    backends: Vec<BackendDto>,
    #[serde(default)]
    frontends: Vec<FrontendDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_water: Option<u16>,
}

pub async fn export(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&["format"])?;
    let snapshot = state.registry.export().await?;
    let dto = CatalogDto {
        kinds: snapshot.kinds.iter().map(KindDto::plain).collect(),
        applications: snapshot.applications.iter().map(AppDto::new).collect(),
        backends: snapshot.backends.iter().map(BackendDto::new).collect(),
        frontends: snapshot.frontends.iter().map(FrontendDto::new).collect(),
        high_water: snapshot.high_water,
    };
    match params.one("format").unwrap_or("json") {
        "json" => json(StatusCode::OK, &dto),
        "yaml" => {
            let text = serde_norway::to_string(&dto).map_err(internal)?;
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                )],
                text,
            )
                .into_response())
        }
        other => Err(
            ApiError::bad_request(format!("format must be json or yaml (got {other:?})"))
                .with_field("format"),
        ),
    }
}

/// Turns an export back into domain values, collecting every problem.
fn snapshot_from(
    dto: CatalogDto<'_>,
    block_size: u16,
) -> Result<CatalogSnapshot, ValidationErrors> {
    let mut problems: Vec<ValidationError> = Vec::new();
    let mut collect = |prefix: String, errors: ValidationErrors| {
        for error in errors.all() {
            problems.push(ValidationError::new(
                format!("{prefix}.{}", error.field),
                error.message.clone(),
            ));
        }
    };
    let mut snapshot = CatalogSnapshot {
        high_water: dto.high_water,
        ..CatalogSnapshot::default()
    };
    for (index, kind) in dto.kinds.into_iter().enumerate() {
        let draft = KindDraft {
            name: Some(kind.name),
            default_port: Some(i64::from(kind.default_port)),
            offset: kind.offset.map(i64::from),
        };
        match draft.validate(None, block_size) {
            Ok(kind) => snapshot.kinds.push(kind),
            Err(errors) => collect(format!("kinds[{index}]"), errors),
        }
    }
    for (index, app) in dto.applications.into_iter().enumerate() {
        let created_at = app
            .created_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(Timestamp::default(), |d| {
                Timestamp::from_millis(d.as_millis() as u64)
            });
        let draft = WholeApplicationDraft {
            id: Some(app.id),
            ports: app
                .ports
                .into_iter()
                .map(|port| PortDraft {
                    kind: Some(port.kind),
                    external: Some(i64::from(port.external)),
                    internal: Some(i64::from(port.internal)),
                })
                .collect(),
            dependencies: app.dependencies,
            created_at,
        };
        match draft.validate() {
            Ok(app) => snapshot.applications.push(app),
            Err(errors) => collect(format!("applications[{index}]"), errors),
        }
    }
    for (index, backend) in dto.backends.into_iter().enumerate() {
        let draft = BackendDraft {
            name: Some(backend.name),
            app: Some(backend.app),
            version: Some(backend.version),
            extra: raw(backend.extra),
        };
        match draft.validate() {
            Ok(backend) => snapshot.backends.push(backend),
            Err(errors) => collect(format!("backends[{index}]"), errors),
        }
    }
    for (index, frontend) in dto.frontends.into_iter().enumerate() {
        let draft = FrontendDraft {
            name: Some(frontend.name),
            backend: frontend.backend,
            extra: raw(frontend.extra),
        };
        match draft.validate() {
            Ok(frontend) => snapshot.frontends.push(frontend),
            Err(errors) => collect(format!("frontends[{index}]"), errors),
        }
    }
    match ValidationErrors::new(problems) {
        Some(errors) => Err(errors),
        None => Ok(snapshot),
    }
}

/// `POST /v1/catalog/import`: an export (JSON, or YAML with a YAML content type), all or
/// nothing.
pub async fn import(State(state): State<ApiState>, request: Request) -> ApiResult<Response> {
    let yaml = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let body = read_body_up_to(request, IMPORT_BODY_LIMIT).await?;
    let dto: CatalogDto<'_> = if yaml {
        serde_norway::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not a valid YAML export: {e}"))
        })?
    } else {
        crate::extract::parse_json(&body)?
    };
    let snapshot = snapshot_from(dto, state.registry.port_range().block_size)
        .map_err(|e| ApiError::invalid(&e))?;
    let summary = state.registry.import(snapshot).await?;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "kinds": summary.kinds,
            "kinds_unchanged": summary.kinds_unchanged,
            "applications": summary.applications,
            "backends": summary.backends,
            "frontends": summary.frontends,
        }),
    )
}
