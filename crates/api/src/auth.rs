//! Every HTTP request through the one auth check (`Registry::check`): the route table says what
//! each route does (its [`Access`]), this layer turns that and the request's path and query
//! into an action, reads the credentials (`Authorization: Bearer`, or HTTP Basic with the token
//! as the password for legacy clients that only take URLs, or `X-Berth-Token`; never a query
//! parameter), and either refuses in the shape of the route's API (401 without a valid token,
//! 403 without the grant) or hands the caller to the handler. Also here: the browser guards
//! (a `Host` outside the allowed names is refused on a loopback listener, against DNS
//! rebinding).

use crate::{ApiState, RouteInfo, Surface};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_domain::auth::Action;
use berth_registry::RegistryError;
use berth_registry::auth::{Caller, Credentials};
use std::collections::HashMap;
use std::sync::Arc;

/// What a route does, for the auth check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, metrics, the API document, the legacy health checks.
    Open,
    /// Any valid token (`/v1/tokens/self`).
    AnyToken,
    /// Read the live instances of the service named by this path parameter.
    ReadService(&'static str),
    /// Read the service named by this query parameter, or every service without it.
    ReadServiceInQuery(&'static str),
    /// Register, renew, change or remove instances of the service in this path parameter.
    WriteService(&'static str),
    /// Read live instances of every service.
    ReadAll,
    CatalogRead,
    CatalogWrite,
    Admin,
}

/// The access of every route, by path template and method.
pub(crate) struct AccessTable(HashMap<(&'static str, Method), Access>);

impl AccessTable {
    pub(crate) fn new(routes: &[RouteInfo]) -> Self {
        AccessTable(
            routes
                .iter()
                .map(|r| ((r.path, r.method.clone()), r.access))
                .collect(),
        )
    }
}

/// The subject of the client certificate a TLS connection presented and the handshake
/// verified (mTLS); every request of the connection carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    pub subject: Arc<str>,
}

/// The credentials a request carries, if any: a bearer token, a Basic password or
/// `X-Berth-Token`.
pub fn credentials(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim().to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = decode_base64(rest.trim())?;
            let text = String::from_utf8(decoded).ok()?;
            let (_, password) = text.split_once(':')?;
            return Some(password.to_string());
        }
        return None;
    }
    headers
        .get("x-berth-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | value(c)?;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// A refusal in the shape of the route's API: 401 (with `WWW-Authenticate`) for missing or
/// unknown credentials, 403 for credentials without the grant.
pub(crate) fn refusal(surface: Surface, error: &RegistryError) -> Response {
    let status = match error {
        RegistryError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    let message = &error.to_string();
    let mut response = match surface {
        Surface::Native | Surface::Operations => {
            let code = if status == StatusCode::UNAUTHORIZED {
                "unauthorized"
            } else {
                "forbidden"
            };
            crate::error::ApiError::new(status, code, message).into_response()
        }
        Surface::Lyft => crate::compat::lyft::denied(status, message),
        Surface::Bender => crate::compat::bender::denied(status, message),
        Surface::Flow => crate::compat::flow::denied(status, message),
    };
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"berth\""),
        );
    }
    response
}

/// The auth check of every routed request.
pub(crate) async fn check(
    State((state, table)): State<(ApiState, Arc<AccessTable>)>,
    request: Request,
    next: Next,
) -> Response {
    let Some(path) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await; // no route: the fallback answers
    };
    let Some(access) = table
        .0
        .get(&(path.as_str(), request.method().clone()))
        .copied()
    else {
        return next.run(request).await; // a method the route does not take: 405
    };
    let surface = Surface::of_path(request.uri().path());
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let param = |name: &str| -> Option<String> {
        params
            .as_ref()?
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    };
    let query = |name: &str| -> Option<String> {
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let secret = credentials(&parts.headers);
    let certificate = parts.extensions.get::<ClientCertificate>().cloned();
    let presented = match (&certificate, &secret) {
        (Some(certificate), secret) => Credentials::Certificate {
            subject: &certificate.subject,
            secret: secret.as_deref(),
        },
        (None, Some(secret)) => Credentials::Secret(secret),
        (None, None) => Credentials::None,
    };
    let registry = &state.registry;
    let named = match access {
        Access::ReadService(name) | Access::WriteService(name) => param(name),
        Access::ReadServiceInQuery(name) => query(name),
        _ => None,
    };
    let service = named.as_deref().unwrap_or_default();
    let action = match access {
        Access::Open | Access::AnyToken => None,
        Access::ReadService(_) => Some(Action::ReadService(service)),
        Access::ReadServiceInQuery(_) if named.is_some() => Some(Action::ReadService(service)),
        Access::ReadServiceInQuery(_) | Access::ReadAll => Some(Action::ReadAll),
        Access::WriteService(_) => Some(Action::WriteService(service)),
        Access::CatalogRead => Some(Action::CatalogRead),
        Access::CatalogWrite => Some(Action::CatalogWrite),
        Access::Admin => Some(Action::Admin),
    };
    let checked = match (access, action) {
        (_, Some(action)) => registry.check(presented, &action).await,
        (Access::AnyToken, None) => match registry.authenticate(presented).await {
            Ok(Caller::Anonymous) => Err(RegistryError::Unauthenticated(
                "a token is required (send Authorization: Bearer <token>)".into(),
            )),
            other => other,
        },
        // Open: whoever it is, if anyone.
        (_, None) => Ok(registry
            .authenticate(presented)
            .await
            .unwrap_or(Caller::Anonymous)),
    };
    match checked {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => {
            metrics::counter!("berth_http_auth_refusals_total", "status" => if matches!(error, RegistryError::Unauthenticated(_)) { "401" } else { "403" }).increment(1);
            refusal(surface, &error)
        }
    }
}

/// Names a loopback listener answers to unless configured otherwise.
fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a listener allows browsers: which `Host`s it answers, and which web origins may call it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrowserGuard {
    /// Names allowed besides loopback ones (`[http] allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// On a loopback listener only loopback names and `allowed_hosts` are answered: a web
    /// page whose name resolves to 127.0.0.1 (DNS rebinding) cannot reach berth.
    pub loopback_only: bool,
    /// Origins allowed to call the API from a browser (CORS); none by default, so a page of
    /// another origin can never read an answer.
    pub cors_allowed_origins: Vec<String>,
}

/// Answers CORS for the allowed origins only: a preflight gets what it asks, an answer gets
/// `Access-Control-Allow-Origin`. Any other origin gets no CORS header at all.
pub(crate) async fn cors(
    State(guard): State<Arc<BrowserGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| guard.cors_allowed_origins.iter().any(|a| a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let mut response = if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        preflight
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Refuses requests whose `Host` the listener does not answer.
pub(crate) async fn guard_host(
    State(guard): State<Arc<BrowserGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host {
        let name = host
            .parse::<axum::http::uri::Authority>()
            .map(|authority| authority.host().to_string())
            .unwrap_or(host);
        let allowed = guard
            .allowed_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&name));
        if guard.loopback_only && !allowed && !is_loopback_name(&name) {
            let surface = Surface::of_path(request.uri().path());
            let error = RegistryError::Forbidden(format!(
                "this listener does not answer the name {name:?} (allow it with [http] \
                 allowed_hosts)"
            ));
            return refusal(surface, &error);
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_bearer_basic_or_the_berth_header() {
        let headers = |name: &'static str, value: &str| {
            let mut map = HeaderMap::new();
            map.insert(name, HeaderValue::from_str(value).unwrap());
            map
        };
        assert_eq!(
            credentials(&headers("authorization", "Bearer berth_abc")),
            Some("berth_abc".into())
        );
        // `x:SECRET` in base64, as a URL's userinfo becomes.
        assert_eq!(
            credentials(&headers("authorization", "Basic eDpzM2NyM3Q=")),
            Some("s3cr3t".into())
        );
        assert_eq!(
            credentials(&headers("x-berth-token", "berth_def")),
            Some("berth_def".into())
        );
        assert_eq!(credentials(&HeaderMap::new()), None);
        assert_eq!(credentials(&headers("authorization", "Digest x")), None);
    }

    #[test]
    fn loopback_names() {
        for name in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "app.localhost",
            "127.1.2.3",
        ] {
            assert!(is_loopback_name(name), "{name}");
        }
        for name in ["evil.example", "10.0.0.1", "localhost.evil.example"] {
            assert!(!is_loopback_name(name), "{name}");
        }
    }
}
