//! The compatibility APIs of the systems berth replaces, one module each, on the native API's
//! listener (their paths do not collide). Each module owns its DTOs and its error shapes and
//! only translates: every request becomes a domain command or a registry query.
//!
//! Also here: what the server answers for a path no route knows, and for a known path with a
//! method it does not take, each in the shape of the API the path belongs to.

pub mod bender;
pub mod flow;
pub mod lyft;

use crate::Surface;
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Settings of the compatibility APIs, one part per API (each module owns its defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompatConfig {
    pub lyft: lyft::Config,
    pub bender: bender::Config,
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The answer for a path no route knows.
pub async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    match Surface::of_path(&path) {
        Surface::Native | Surface::Operations => {
            ApiError::not_found(format!("no route for {path}")).into_response()
        }
        Surface::Lyft => json_response(
            StatusCode::NOT_FOUND,
            json!({"message": "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."}),
        ),
        // Play answered a miss with an empty 404.
        Surface::Flow => StatusCode::NOT_FOUND.into_response(),
        Surface::Bender => json_response(
            StatusCode::NOT_FOUND,
            json!({"code": "ResourceNotFound", "message": format!("{path} does not exist")}),
        ),
    }
}

/// Gives the router's bare 405 (a known path, another method) the body of the path's API,
/// keeping its `Allow` header.
pub async fn method_not_allowed(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let body = match Surface::of_path(&path) {
        Surface::Native | Surface::Operations => {
            json!({"error": {"code": "method_not_allowed", "message": format!("{method} is not allowed on {path}")}})
        }
        Surface::Lyft => json!({"message": "The method is not allowed for the requested URL."}),
        Surface::Flow => {
            json!({"code": "generic_error", "messages": [format!("{method} is not allowed on {path}")]})
        }
        Surface::Bender => {
            json!({"code": "MethodNotAllowedError", "message": format!("{method} is not allowed")})
        }
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// The fields of a legacy request body: form-encoded (repeatable keys) or a JSON object.
#[derive(Debug, Default)]
pub struct Fields(BTreeMap<String, Vec<Value>>);

impl Fields {
    /// Reads the body as JSON when the content type says so, as a form otherwise.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Fields, String> {
        let is_json = content_type.is_some_and(|t| t.contains("json"));
        if is_json {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Fields::default());
            }
            let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let Value::Object(object) = value else {
                return Err("the body must be a JSON object".into());
            };
            return Ok(Fields(
                object
                    .into_iter()
                    .map(|(key, value)| match value {
                        Value::Array(items) => (key, items),
                        other => (key, vec![other]),
                    })
                    .collect(),
            ));
        }
        let mut fields: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (key, value) in form_urlencoded::parse(body) {
            fields
                .entry(key.into_owned())
                .or_default()
                .push(Value::String(value.into_owned()));
        }
        Ok(Fields(fields))
    }

    /// The field's last value as it was given.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name).and_then(|values| values.last())
    }

    /// The field as text (numbers and booleans as written); `None` when absent or null.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Every value of a repeated field, as text.
    pub fn texts(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|value| match value {
                Value::Null => None,
                Value::String(text) => Some(text.clone()),
                other => Some(other.to_string()),
            })
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Reads and parses a legacy body; the error is the body-reading error of the native API's
/// kind, which each module turns into its own shape.
pub async fn read_fields(request: Request) -> ApiResult<Fields> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = crate::extract::read_body(request).await?;
    Fields::parse(content_type.as_deref(), &body).map_err(ApiError::bad_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_forms_and_json_alike() {
        let form = Fields::parse(
            Some("application/x-www-form-urlencoded"),
            b"id=a&dependency=x&dependency=y&port=80",
        )
        .unwrap();
        assert_eq!(form.text("id").as_deref(), Some("a"));
        assert_eq!(form.texts("dependency"), vec!["x", "y"]);
        let json = Fields::parse(
            Some("application/json"),
            br#"{"id":"a","dependency":["x","y"],"port":80}"#,
        )
        .unwrap();
        assert_eq!(json.text("port").as_deref(), Some("80"));
        assert_eq!(json.texts("dependency"), vec!["x", "y"]);
        assert!(Fields::parse(Some("application/json"), b"[1]").is_err());
    }

    #[test]
    fn paths_belong_to_their_api() {
        assert_eq!(Surface::of_path("/v1/registration/x"), Surface::Lyft);
        assert_eq!(Surface::of_path("/v1/services"), Surface::Native);
        assert_eq!(Surface::of_path("/health"), Surface::Operations);
        assert_eq!(Surface::of_path("/applications/x"), Surface::Flow);
        assert_eq!(Surface::of_path("/nope"), Surface::Bender);
        assert_eq!(Surface::of_path("/registrations"), Surface::Bender);
        assert_eq!(Surface::of_path("/v1x"), Surface::Bender);
    }
}
