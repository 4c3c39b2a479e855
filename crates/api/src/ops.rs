//! Operations routes: `/health`, `/metrics`, the OpenAPI document, and the answer for paths no
//! route knows.

use crate::ApiState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `{"status","version","store","revision",…}`; 503 when the store does not answer. Stored
/// records that do not decode (and are therefore not served) are counted here.
pub async fn health(State(state): State<ApiState>) -> Response {
    let registry = &state.registry;
    let store = registry.store_kind().as_str();
    let undecodable = registry.undecodable_records();
    match registry.store_status().await {
        Ok(status) => axum::Json(json!({
            "status": "ok",
            "version": state.version,
            "store": store,
            "revision": status.revision.0,
            "view_revision": registry.view_revision().0,
            "undecodable_records": {
                "count": undecodable.count,
                "last": undecodable.last,
            },
        }))
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "unavailable",
                "version": state.version,
                "store": store,
                "error": error.to_string(),
            })),
        )
            .into_response(),
    }
}

/// `GET /v1/xds/clients`: every connected xDS stream; 404 when xDS is off.
pub async fn xds_clients(State(state): State<ApiState>) -> Response {
    match &state.xds_clients {
        Some(report) => axum::Json(report()).into_response(),
        None => crate::error::ApiError::not_found("xDS is off (--xds-listen off)").into_response(),
    }
}

/// The Prometheus text exposition.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|render| render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The OpenAPI 3 document of the native API (a test keeps it in step with the routes).
pub const OPENAPI: &str = include_str!("../openapi.json");

pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}
