//! `/v1/tokens`: access tokens (administrators create, list and revoke them; a token's secret
//! is shown once, when it is created) and `/v1/tokens/self` (what the caller's token is).

use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, JsonBody};
use crate::format::rfc3339;
use crate::reply::{json, with_location};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_domain::auth::TokenDraft;
use berth_registry::auth::{Caller, Principal};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    owner: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
    description: Option<String>,
}

#[derive(Serialize)]
struct TokenDto<'a> {
    id: &'a str,
    owner: &'a str,
    grants: Vec<String>,
    description: &'a str,
    created_at: String,
    /// Only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

impl<'a> TokenDto<'a> {
    fn new(principal: &'a Principal, secret: Option<&'a str>) -> Self {
        TokenDto {
            id: &principal.token_id,
            owner: principal.owner.as_str(),
            grants: principal.grants.texts(),
            description: &principal.description,
            created_at: rfc3339(principal.created_at),
            secret,
        }
    }
}

pub async fn create(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    JsonBody(body): JsonBody<TokenBody>,
) -> ApiResult<Response> {
    let spec = TokenDraft {
        owner: body.owner,
        grants: body.grants,
        description: body.description,
    }
    .validate()
    .map_err(|e| ApiError::invalid(&e))?;
    let (principal, secret) = state.registry.create_token(spec, &by).await?;
    tracing::info!(token = %principal.token_id, owner = %principal.owner, grants = %principal.grants, "token created");
    let response = json(
        StatusCode::CREATED,
        &TokenDto::new(&principal, Some(&secret)),
    )?;
    Ok(with_location(
        response,
        &format!("/v1/tokens/{}", principal.token_id),
    ))
}

pub async fn list(State(state): State<ApiState>) -> ApiResult<Response> {
    let tokens = state.registry.tokens().await?;
    json(
        StatusCode::OK,
        &tokens
            .iter()
            .map(|p| TokenDto::new(p, None))
            .collect::<Vec<_>>(),
    )
}

pub async fn revoke(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.registry.revoke_token(&id).await?;
    tracing::info!(token = %id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own token (`{"auth": "off"}` when auth is off).
pub async fn whoami(Extension(by): Extension<Caller>) -> ApiResult<Response> {
    match &by {
        Caller::Token(principal) | Caller::Certificate(principal) => {
            json(StatusCode::OK, &TokenDto::new(principal, None))
        }
        Caller::Unchecked | Caller::Anonymous => {
            json(StatusCode::OK, &serde_json::json!({ "auth": "off" }))
        }
    }
}
