//! Reading requests: JSON bodies with a size limit and errors that name the offending field,
//! and query strings with repeatable parameters and no silently ignored typos.

use crate::error::{ApiError, ApiResult};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::str::FromStr;
use std::time::Duration;

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// The largest catalog import: an export of tens of thousands of applications must go back in
/// as it came out.
pub const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How much of an oversized body is read and thrown away before the 413 goes out, so the
/// client, still sending, reads the answer instead of a reset connection (nginx's "lingering
/// close"); past this the connection is closed.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// How long a body may pause between two pieces: a slow link (a large import over a VPN)
/// keeps going as long as it moves; a client that stops is let go.
const BODY_IDLE: Duration = Duration::from_secs(10);

/// The body, or 413 with a JSON error when it is over [`BODY_LIMIT`].
pub async fn read_body(request: Request) -> ApiResult<Bytes> {
    read_body_up_to(request, BODY_LIMIT).await
}

/// The body, or 413 with a JSON error when it is over `limit`.
pub async fn read_body_up_to(request: Request, limit: usize) -> ApiResult<Bytes> {
    let mut body = request.into_body().into_data_stream();
    let mut collected = BytesMut::new();
    let mut discarded = 0usize;
    let mut drain_deadline = None;
    loop {
        // While reading: a pause of BODY_IDLE ends it; while draining an oversized body:
        // DRAIN_TIME in all.
        let deadline = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + BODY_IDLE);
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(ApiError::bad_request(format!(
                    "the request body could not be read: {error}"
                )));
            }
            Err(_) if discarded > 0 => break,
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "the request body stopped arriving (nothing for {BODY_IDLE:?})"
                )));
            }
        };
        if discarded > 0 || collected.len() + chunk.len() > limit {
            drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_TIME);
            discarded += chunk.len() + collected.len();
            collected.clear();
            if discarded > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        collected.extend_from_slice(&chunk);
    }
    if discarded > 0 {
        return Err(ApiError::too_large(limit));
    }
    Ok(collected.freeze())
}

/// Parses JSON; a type error or an unknown field is reported with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; send a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let message = inner.to_string();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::bad_request(format!(
                    "the request body is not valid JSON: {message}"
                )));
            }
            if let Some(name) = unknown_field(&message) {
                // The path already ends with the unknown field's name.
                let field = if path == "." { name.to_string() } else { path };
                return Err(
                    ApiError::bad_request(format!("{field}: not a field of this request"))
                        .with_field(field),
                );
            }
            Err(ApiError::bad_request(format!("{path}: {message}")).with_field(path))
        }
    }
}

/// The name in serde's "unknown field `name`, expected …".
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// A JSON request body (see [`parse_json`]).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> ApiResult<Self> {
        require_json(request.headers())?;
        let bytes = read_body(request).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Whether a `Content-Type` says JSON (`application/json`, or a `+json` type).
pub fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || t.ends_with("+json"))
}

/// A JSON body must say so: a browser sends a cross-site `text/plain` or form body without
/// asking first (no CORS preflight), and berth must not take it as JSON (415 otherwise).
pub fn require_json(headers: &axum::http::HeaderMap) -> ApiResult<()> {
    if is_json(headers) {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the request body must be JSON, sent with Content-Type: application/json",
    )
    .with_field("Content-Type"))
}

/// The query string's parameters, in order, repeatable.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    /// Refuses parameters the route does not know, so a typo is an error, not a silent
    /// no-op.
    pub fn only(&self, known: &[&str]) -> ApiResult<&Self> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((name, _)) => Err(ApiError::bad_request(format!(
                "unknown query parameter `{name}` (this route takes: {})",
                known.join(", ")
            ))
            .with_field(name.clone())),
            None => Ok(self),
        }
    }

    /// The parameters as one string, the same for the same parameters in the same order
    /// (what a cached answer to this query is kept under).
    pub fn canonical(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.0.iter())
            .finish()
    }

    pub fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn parsed<T: FromStr>(&self, name: &str, expected: &str) -> ApiResult<Option<T>> {
        match self.one(name) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter `{name}` must be {expected} (got {text:?})"
                ))
                .with_field(name)
            }),
        }
    }

    pub fn boolean(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.one(name) {
            None => Ok(None),
            Some("" | "true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "query parameter `{name}` must be true or false (got {other:?})"
            ))
            .with_field(name)),
        }
    }

    /// A duration such as `30s`, `5m` or `250ms`.
    pub fn duration(&self, name: &str) -> ApiResult<Option<Duration>> {
        match self.one(name) {
            None => Ok(None),
            Some(text) => humantime::parse_duration(text).map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter `{name}` must be a duration such as 30s or 5m (got {text:?})"
                ))
                .with_field(name)
            }),
        }
    }
}

/// Path parameters, with a JSON error when a segment cannot be decoded.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Percent-encodes one path segment (ids hold `:` and `[`, which a path may not carry bare).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        port: u16,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let unknown = parse_json::<Sample>(br#"{"port": 1, "colour": "red"}"#).unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("colour"));
        let wrong_type = parse_json::<Sample>(br#"{"port": "x"}"#).unwrap_err();
        assert_eq!(wrong_type.field.as_deref(), Some("port"));
        let nested = parse_json::<Sample>(br#"{"port": 1, "tags": [1]}"#).unwrap_err();
        assert_eq!(nested.field.as_deref(), Some("tags[0]"));
        let not_json = parse_json::<Sample>(b"port=1").unwrap_err();
        assert_eq!(not_json.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(not_json.message.contains("not valid JSON"));
    }
}
