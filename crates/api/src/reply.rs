//! Building responses every surface shares: JSON bodies, and the `Location` of what a request
//! created.

use crate::error::ApiResult;
use crate::error::internal;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A response with an already serialized JSON body.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A response with `value` as its JSON body.
pub fn json(status: StatusCode, value: &impl Serialize) -> ApiResult<Response> {
    Ok(json_bytes(
        status,
        serde_json::to_vec(value).map_err(internal)?,
    ))
}

/// Adds `Location: location`; a path that cannot be a header value (it came from validated
/// names, so it never happens) leaves the response without one.
pub fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
