//! `/v1/backends` and `/v1/frontends`: bender's routing entities, free-form records with a
//! name, handled by one set of generic handlers (a backend also shows its live members).

use super::parse_entity;
use crate::ApiState;
use crate::error::{ApiError, ApiResult, internal};
use crate::extract::{ApiPath, JsonBody};
use crate::native::instances::InstanceDto;
use crate::reply::{json, with_location};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_domain::catalog::{
    Backend, BackendDraft, CatalogError, Frontend, FrontendDraft, RawJson,
};
use berth_registry::catalog::{RoutingEntity, extras_as_json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;

/// Free-form: every field besides the known ones is kept (so no `deny_unknown_fields`).
#[derive(Serialize, Deserialize)]
pub struct BackendDto {
    pub(crate) name: String,
    pub(crate) app: String,
    pub(crate) version: String,
    #[serde(flatten)]
    pub(crate) extra: BTreeMap<String, serde_json::Value>,
}

impl BackendDto {
    pub(crate) fn new(backend: &Backend) -> Self {
        BackendDto {
            name: backend.name().to_string(),
            app: backend.app().to_string(),
            version: backend.version().to_string(),
            extra: extras_as_json(backend.extra()),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct FrontendDto {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backend: Option<String>,
    #[serde(flatten)]
    pub(crate) extra: BTreeMap<String, serde_json::Value>,
}

impl FrontendDto {
    pub(crate) fn new(frontend: &Frontend) -> Self {
        FrontendDto {
            name: frontend.name().to_string(),
            backend: frontend.backend().map(String::from),
            extra: extras_as_json(frontend.extra()),
        }
    }
}

pub(crate) fn raw(extra: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, RawJson> {
    extra
        .into_iter()
        .map(|(k, v)| (k, RawJson(v.to_string())))
        .collect()
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

/// A routing entity as the native API reads and shows it.
pub trait NativeRouting: RoutingEntity {
    /// Where the collection is: `/v1/backends`.
    const PATH: &'static str;

    type Dto: Serialize;

    fn dto(&self) -> Self::Dto;

    /// The entity a request body describes, validated.
    fn from_body(body: Map<String, Value>) -> ApiResult<Self>;

    /// What reading one entity shows.
    fn detail(&self, state: &ApiState) -> impl Future<Output = ApiResult<Value>> + Send;
}

impl NativeRouting for Backend {
    const PATH: &'static str = "/v1/backends";

    type Dto = BackendDto;

    fn dto(&self) -> BackendDto {
        BackendDto::new(self)
    }

    fn from_body(body: Map<String, Value>) -> ApiResult<Self> {
        backend_draft(body)?
            .validate()
            .map_err(|e| ApiError::invalid(&e))
    }

    /// The backend with its live members (its service's instances at its version).
    async fn detail(&self, state: &ApiState) -> ApiResult<Value> {
        let members = state.registry.backend_members(self).await?;
        let mut value = serde_json::to_value(self.dto()).map_err(internal)?;
        value["members"] = serde_json::to_value(
            members
                .iter()
                .map(|m| InstanceDto::new(m.as_instance_ref()))
                .collect::<Vec<_>>(),
        )
        .map_err(internal)?;
        Ok(value)
    }
}

impl NativeRouting for Frontend {
    const PATH: &'static str = "/v1/frontends";

    type Dto = FrontendDto;

    fn dto(&self) -> FrontendDto {
        FrontendDto::new(self)
    }

    fn from_body(body: Map<String, Value>) -> ApiResult<Self> {
        frontend_draft(body)?
            .validate()
            .map_err(|e| ApiError::invalid(&e))
    }

    async fn detail(&self, _state: &ApiState) -> ApiResult<Value> {
        serde_json::to_value(self.dto()).map_err(internal)
    }
}

pub async fn list<E: NativeRouting>(State(state): State<ApiState>) -> ApiResult<Response> {
    let all = state.registry.routing_entities::<E>().await?;
    json(StatusCode::OK, &all.iter().map(E::dto).collect::<Vec<_>>())
}

pub async fn create<E: NativeRouting>(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Response> {
    let entity = state.registry.create_routing(E::from_body(body)?).await?;
    let response = json(StatusCode::CREATED, &entity.dto())?;
    Ok(with_location(
        response,
        &format!("{}/{}", E::PATH, entity.entity_name()),
    ))
}

pub async fn get<E: NativeRouting>(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let name = parse_entity(&name)?;
    let entity = state
        .registry
        .routing_entity::<E>(&name)
        .await?
        .ok_or_else(|| {
            ApiError::catalog(CatalogError::EntityNotFound {
                what: E::WHAT,
                name,
            })
        })?;
    json(StatusCode::OK, &entity.detail(&state).await?)
}

pub async fn delete<E: NativeRouting>(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state
        .registry
        .delete_routing::<E>(&parse_entity(&name)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
