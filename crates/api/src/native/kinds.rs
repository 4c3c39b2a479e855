//! `/v1/kinds`: what a port block holds, by technology.

use super::{history, parse_kind};
use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, JsonBody, Params};
use crate::format::rfc3339;
use crate::reply::json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_domain::catalog::{CatalogError, KindDraft};
use berth_registry::catalog::StoredKind;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct KindDto {
    pub(crate) name: String,
    pub(crate) default_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
}

impl KindDto {
    pub(crate) fn new(kind: &StoredKind) -> Self {
        KindDto {
            created_at: Some(rfc3339(kind.created_at)),
            ..Self::plain(&kind.kind)
        }
    }

    pub(crate) fn plain(kind: &berth_domain::catalog::Kind) -> Self {
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
