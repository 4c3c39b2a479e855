//! Operations routes: `/health`, `/metrics`, the OpenAPI document, and the answer for paths no
//! route knows.

use crate::ApiState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Milliseconds since this node last reached its store's quorum (absent on the embedded
/// store, which is always current): how much a read it answers may have missed.
pub const LAST_CONTACT_HEADER: &str = "x-berth-last-contact";
/// `false` while this node cannot reach a quorum and refuses writes.
pub const KNOWN_QUORUM_HEADER: &str = "x-berth-known-quorum";

/// Says on every answer how stale this node's views may be (like Consul's
/// `X-Consul-LastContact`), so a client reading from a node cut off from etcd can tell.
pub async fn contact_headers(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let contact = state.registry.store_contact();
    if let Some(age) = contact.last_contact {
        let headers = response.headers_mut();
        headers.insert(
            LAST_CONTACT_HEADER,
            HeaderValue::from(age.as_millis() as u64),
        );
        headers.insert(
            KNOWN_QUORUM_HEADER,
            HeaderValue::from_static(if contact.lost.is_none() {
                "true"
            } else {
                "false"
            }),
        );
    }
    response
}

/// `{"status","version","store","revision",…}`; 503 when the store does not answer (on etcd:
/// when this node reaches no quorum, said at once). Stored records that do not decode (and are
/// therefore not served) are counted here.
pub async fn health(State(state): State<ApiState>) -> Response {
    let registry = &state.registry;
    let store = registry.store_kind().as_str();
    let undecodable = registry.undecodable_records();
    let last_contact_ms = registry
        .store_contact()
        .last_contact
        .map(|age| age.as_millis() as u64);
    match registry.store_status().await {
        Ok(status) => axum::Json(json!({
            "status": "ok",
            "version": state.version,
            "store": store,
            "revision": status.revision.0,
            "view_revision": registry.view_revision().0,
            "last_contact_ms": last_contact_ms,
            "undecodable_records": {
                "count": undecodable.count,
                "last": undecodable.last,
            },
        }))
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            axum::Json(json!({
                "status": "unavailable",
                "version": state.version,
                "store": store,
                "view_revision": registry.view_revision().0,
                "last_contact_ms": last_contact_ms,
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
