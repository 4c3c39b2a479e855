//! `/v1/apps` and `/v1/start-order`: applications, their ports and dependencies, the order
//! they start in, their history and their environment.

use super::{history, invalid, parse_app, parse_kind};
use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, JsonBody, Params, read_body};
use crate::format::rfc3339;
use crate::native::instances::InstanceDto;
use crate::reply::{json, with_location};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_domain::catalog::{
    AppId, Application, ApplicationDraft, CatalogError, KindName, PortAssignment, PortChoice,
    validate_dependency_list,
};
use berth_registry::RegistryError;
use berth_registry::catalog::{AppQuery, AppSort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A missing kind named in a request body is the body's fault, not a missing resource.
fn kind_in_body(error: RegistryError) -> ApiError {
    match error {
        RegistryError::Catalog(error @ CatalogError::KindNotFound(_)) => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            field: Some("kind".into()),
            ..ApiError::catalog(error)
        },
        other => other.into(),
    }
}

#[derive(Serialize, Deserialize)]
pub struct PortDto {
    pub(crate) kind: String,
    pub(crate) external: u16,
    pub(crate) internal: u16,
}

impl PortDto {
    pub(crate) fn new(port: &PortAssignment) -> Self {
        PortDto {
            kind: port.kind.to_string(),
            external: port.external,
            internal: port.internal,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct AppDto<'a> {
    pub(crate) id: String,
    pub(crate) ports: Vec<PortDto>,
    pub(crate) dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub(crate) instances: Option<Vec<InstanceDto<'a>>>,
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
    let app = state.registry.create_app(new).await.map_err(kind_in_body)?;
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
    let said_json = crate::extract::require_json(request.headers());
    let body = read_body(request).await?;
    let choice: PortBody = if body.iter().all(u8::is_ascii_whitespace) {
        PortBody::default()
    } else {
        said_json?;
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
