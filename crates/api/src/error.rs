//! The native API's error: `{"error":{"code","message","field"?,"details"?}}` with a 4xx/5xx
//! status. Registry errors map to it here, once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_domain::ValidationErrors;
use berth_domain::catalog::CatalogError;
use berth_registry::RegistryError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub details: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            details: Vec::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A request the server could not read (malformed JSON, a bad query parameter).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn invalid(errors: &ValidationErrors) -> Self {
        let first = errors.first();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: errors.to_string(),
            field: Some(first.field.clone()),
            details: errors
                .all()
                .iter()
                .map(|e| (e.field.clone(), e.message.clone()))
                .collect(),
        }
    }
}

impl ApiError {
    /// A catalog rule's refusal: 404 for what does not exist, 422 for a dependency on nothing,
    /// 409 for a conflict with what the catalog holds.
    pub fn catalog(error: CatalogError) -> Self {
        let message = error.to_string();
        let (status, code, field) = match &error {
            CatalogError::AppNotFound(_)
            | CatalogError::KindNotFound(_)
            | CatalogError::EntityNotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
            CatalogError::DependencyMissing(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some("dependencies"),
            ),
            CatalogError::AppExists(_) => (StatusCode::CONFLICT, "conflict", Some("id")),
            CatalogError::KindExists(_) | CatalogError::EntityExists { .. } => {
                (StatusCode::CONFLICT, "conflict", Some("name"))
            }
            CatalogError::PortTaken { .. } => (StatusCode::CONFLICT, "conflict", Some("external")),
            CatalogError::Cycle(_) => (StatusCode::CONFLICT, "cycle", Some("dependencies")),
            CatalogError::KindInUse { .. }
            | CatalogError::HasDependents { .. }
            | CatalogError::RangeExhausted { .. } => (StatusCode::CONFLICT, "conflict", None),
        };
        ApiError {
            field: field.map(String::from),
            ..ApiError::new(status, code, message)
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Invalid(errors) => ApiError::invalid(&errors),
            RegistryError::NotFound(message) => ApiError::not_found(message),
            RegistryError::Conflict { message, field } => ApiError {
                field,
                ..ApiError::new(StatusCode::CONFLICT, "conflict", message)
            },
            RegistryError::Catalog(error) => ApiError::catalog(error),
            RegistryError::Unavailable(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            // Not a 503: a client that fails over must not repeat a POST it may have made.
            RegistryError::OutcomeUnknown(message) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", message)
            }
            RegistryError::Unauthenticated(message) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            RegistryError::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            RegistryError::TooLarge(message) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            RegistryError::LimitReached(message) => {
                ApiError::new(StatusCode::CONFLICT, "limit_reached", message)
            }
            RegistryError::Internal(message) => {
                tracing::error!(error = %message, "internal failure while serving a request");
                internal(message)
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail<'a>>,
}

#[derive(Serialize)]
struct Detail<'a> {
    field: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                details: self
                    .details
                    .iter()
                    .map(|(field, message)| Detail { field, message })
                    .collect(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Whatever the reason (a cap, the store), a client should come back, not hammer.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A fault of the server, not of the request.
pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        error.to_string(),
    )
}
