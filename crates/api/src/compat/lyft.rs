//! lyft/discovery's API (Envoy's SDS v1) on berth: registration (a POST registers or renews
//! a host for `HOST_TTL`), lookups by service and by repository, deletion by IP, load-balancing
//! weights. A host is a berth instance of the same service with the id `ip:port`, so an IP may
//! carry several ports (lyft's issue #22). Deviations from the legacy service are listed in
//! `docs/compat/lyft.md`.

use super::{Fields, read_fields};
use crate::cache::Freshness;
use crate::extract::ApiPath;
use crate::{ApiState, Routes, Surface};
use axum::Extension;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_domain::{
    Address, Instance, InstanceDefaults, InstanceDraft, InstanceId, InstanceSpec, Origin,
    ServiceName,
};
use berth_registry::auth::Caller;
use berth_registry::{InstanceRef, LiveInstance, RegistryError};
use serde_json::{Map, Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// lyft/discovery's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// lyft's `HOST_TTL`: a registration (re-POST) keeps a host this long.
    pub host_ttl: Duration,
    /// lyft's `APPLICATION_ENV`, echoed as `env`.
    pub env: String,
    /// Peers whose `X-Forwarded-For` names the client for `auto_ip` (the proxies in front of
    /// berth). From anyone else the header is ignored: it would let a client register any
    /// address as its own.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host_ttl: Duration::from_secs(600),
            env: "development".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Tags other than lyft's own are kept in the instance's metadata under this prefix.
const TAG_META_PREFIX: &str = "lyft.tag.";

pub(crate) fn routes(routes: Routes) -> Routes {
    use crate::Access::*;
    use Surface::Lyft;
    routes
        .add(Lyft, Method::GET, "/healthcheck", Open, healthcheck)
        .add(
            Lyft,
            Method::GET,
            "/v1/registration/{service}",
            ReadService("service"),
            get_service,
        )
        .add(
            Lyft,
            Method::POST,
            "/v1/registration/{service}",
            WriteService("service"),
            register,
        )
        .add(
            Lyft,
            Method::GET,
            "/v1/registration/repo/{repo}",
            ReadAll,
            get_repo,
        )
        .add(
            Lyft,
            Method::DELETE,
            "/v1/registration/{service}/{ip}",
            WriteService("service"),
            delete_host,
        )
        .add(
            Lyft,
            Method::POST,
            "/v1/loadbalancing/{service}/{ip}",
            WriteService("service"),
            set_weight,
        )
        .add(
            Lyft,
            Method::POST,
            "/v1/loadbalancing/{service}",
            WriteService("service"),
            set_weight_everywhere,
        )
}

/// lyft's answers: `{}` for any invalid registration, `{"error": …}` for the rest.
enum LyftError {
    Invalid,
    Error(StatusCode, &'static str),
    TooLarge(String),
    Unavailable(String),
    Denied(StatusCode, String),
}

impl LyftError {
    /// A body berth could not read: too large keeps its 413, anything else is lyft's 400.
    fn unreadable(error: crate::error::ApiError) -> Self {
        if error.status == StatusCode::PAYLOAD_TOO_LARGE {
            LyftError::TooLarge(error.message)
        } else {
            LyftError::Invalid
        }
    }
}

impl IntoResponse for LyftError {
    fn into_response(self) -> Response {
        match self {
            LyftError::Invalid => (StatusCode::BAD_REQUEST, axum::Json(json!({}))).into_response(),
            LyftError::Error(status, message) => {
                (status, axum::Json(json!({"error": message}))).into_response()
            }
            LyftError::TooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"message": message})),
            )
                .into_response(),
            LyftError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": message})),
            )
                .into_response(),
            LyftError::Denied(status, message) => denied(status, &message),
        }
    }
}

impl From<RegistryError> for LyftError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Invalid(_) | RegistryError::NotFound(_) => LyftError::Invalid,
            RegistryError::Unauthenticated(message) => {
                LyftError::Denied(StatusCode::UNAUTHORIZED, message)
            }
            RegistryError::Forbidden(message) => LyftError::Denied(StatusCode::FORBIDDEN, message),
            // A host registered through another API: retrying cannot help, so never a 503.
            RegistryError::Conflict { message, .. } => {
                LyftError::Denied(StatusCode::CONFLICT, message)
            }
            other => LyftError::Unavailable(other.to_string()),
        }
    }
}

/// A request the auth check refused, in lyft's error shape.
pub(crate) fn denied(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

type LyftResult<T> = Result<T, LyftError>;

/// `2026-11-21 23:08:23.053042`: Python's `str(datetime)`, as lyft wrote `last_check_in`.
fn python_datetime(at: berth_domain::Timestamp) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.millis());
    humantime::format_rfc3339_micros(time)
        .to_string()
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

fn tags(instance: &Instance) -> Map<String, Value> {
    let spec = &instance.spec;
    let mut tags = Map::new();
    tags.insert("az".into(), json!(spec.zone().unwrap_or("")));
    tags.insert("region".into(), json!(spec.region().unwrap_or("")));
    tags.insert(
        "instance_id".into(),
        json!(spec.instance_ref().unwrap_or("")),
    );
    tags.insert("canary".into(), json!(spec.canary()));
    tags.insert("load_balancing_weight".into(), json!(spec.weight()));
    for (key, value) in spec.meta() {
        if let Some(tag) = key.strip_prefix(TAG_META_PREFIX) {
            tags.insert(
                tag.into(),
                serde_json::from_str(value).unwrap_or_else(|_| json!(value)),
            );
        }
    }
    tags
}

fn host(instance: InstanceRef<'_>) -> Value {
    let spec = &instance.instance.spec;
    json!({
        "service": spec.service().as_str(),
        "ip_address": spec.address().to_string(),
        "port": spec.port(),
        "revision": spec.revision().unwrap_or(""),
        "service_repo_name": spec.repo().unwrap_or(""),
        "last_check_in": python_datetime(instance.last_heartbeat),
        "tags": tags(instance.instance),
    })
}

async fn healthcheck() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        "OK",
    )
        .into_response()
}

/// A JSON response made of already serialized bytes.
fn json_answer(body: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn hosts_body(head: (&str, &str), env: &str, hosts: &[Arc<LiveInstance>]) -> Vec<u8> {
    let hosts: Vec<Value> = hosts.iter().map(|l| host(l.as_instance_ref())).collect();
    serde_json::to_vec(&json!({head.0: head.1, "env": env, "hosts": hosts}))
        .expect("hosts always serialize")
}

/// `GET /v1/registration/{service}`: the live hosts, from bytes kept until the service
/// changes or a host checks in. A name berth cannot hold has no hosts, as an unknown service
/// had none in lyft.
async fn get_service(
    State(state): State<ApiState>,
    ApiPath(service): ApiPath<String>,
) -> LyftResult<Response> {
    let env = &state.compat.lyft.env;
    let Ok(name) = ServiceName::parse("service", &service) else {
        return Ok(json_answer(
            hosts_body(("service", &service), env, &[]).into(),
        ));
    };
    let view = state
        .registry
        .service(&name, berth_registry::Consistency::Local)
        .await?;
    let body = state.cache.get_or_make(
        ("lyft-service", service.clone()),
        Freshness::of_service(&view),
        || hosts_body(("service", &service), env, &view.instances),
    );
    Ok(json_answer(body))
}

/// `GET /v1/registration/repo/{repo}`: the live hosts of every service from that repository.
async fn get_repo(
    State(state): State<ApiState>,
    ApiPath(repo): ApiPath<String>,
) -> LyftResult<Response> {
    // Everything the answer shows is as of this freshness: taken before the selection.
    let freshness = Freshness::of_everything(&state.registry);
    let key = ("lyft-repo", repo.clone());
    if let Some(body) = state.cache.get(&key, freshness) {
        return Ok(json_answer(body));
    }
    let found = state
        .registry
        .select(|instance| instance.spec.repo() == Some(repo.as_str()))
        .await?;
    let body = hosts_body(("service_repo_name", &repo), &state.compat.lyft.env, &found);
    Ok(json_answer(state.cache.keep(key, freshness, body)))
}

/// The address `auto_ip` stands for: the peer, or, when the peer is one of the trusted proxies,
/// the last `X-Forwarded-For` entry (the one that proxy added). lyft accepted only
/// 192.168.0.0/16 there.
fn auto_ip(request: &Request, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()?
        .0
        .ip();
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let ip = match forwarded {
        Some(text) if trusted_proxies.contains(&peer) => text.parse::<IpAddr>().ok()?,
        _ => peer,
    };
    match ip {
        IpAddr::V4(v4) if v4.octets()[..2] == [192, 168] => Some(ip),
        _ => None,
    }
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            !s.is_empty() && !matches!(s.to_ascii_lowercase().as_str(), "false" | "0")
        }
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(_) => true,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The `tags` field: a JSON object, or (as lyft's clients send it) a JSON string holding one.
fn parse_tags(fields: &Fields) -> LyftResult<Map<String, Value>> {
    let invalid_json = LyftError::Error(StatusCode::BAD_REQUEST, "Invalid json supplied in tags");
    let value = match fields.value("tags") {
        None | Some(Value::Null) => return Err(LyftError::Invalid),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|_| invalid_json)?,
        Some(other) => other.clone(),
    };
    match value {
        Value::Object(tags) => Ok(tags),
        _ => Err(LyftError::Error(
            StatusCode::BAD_REQUEST,
            "Invalid json supplied in tags",
        )),
    }
}

/// lyft's tags, read once: what maps onto instance fields, and the rest.
struct LyftTags {
    zone: Option<String>,
    region: Option<String>,
    instance_ref: Option<String>,
    canary: Option<bool>,
    weight: Option<i64>,
    other: Vec<(String, String)>,
}

impl LyftTags {
    fn read(tags: &Map<String, Value>) -> LyftResult<LyftTags> {
        let text = |key: &str| tags.get(key).map(text_of);
        Ok(LyftTags {
            zone: text("az"),
            region: text("region"),
            instance_ref: text("instance_id"),
            canary: tags.get("canary").map(|v| truthy(Some(v))),
            weight: match tags.get("load_balancing_weight") {
                None => None,
                Some(value) => Some(text_of(value).parse().map_err(|_| LyftError::Invalid)?),
            },
            other: tags
                .iter()
                .filter(|(k, _)| {
                    ![
                        "az",
                        "region",
                        "instance_id",
                        "canary",
                        "load_balancing_weight",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| (format!("{TAG_META_PREFIX}{k}"), v.to_string()))
                .collect(),
        })
    }

    /// Merges into a draft, as lyft's `dict.update` merged tags into the stored host: the
    /// tags given replace, the others stay.
    fn merge_into(&self, draft: &mut InstanceDraft) {
        let keep = |new: &Option<String>, old: &mut Option<String>| {
            if new.is_some() {
                old.clone_from(new);
            }
        };
        keep(&self.zone, &mut draft.zone);
        keep(&self.region, &mut draft.region);
        keep(&self.instance_ref, &mut draft.instance_ref);
        if self.canary.is_some() {
            draft.canary = self.canary;
        }
        if self.weight.is_some() {
            draft.weight = self.weight;
        }
        // Merged tags could only grow until the metadata cap refused every renewal and the
        // host expired (defect M18): past the cap, the tags given replace the merged ones.
        let added = self
            .other
            .iter()
            .filter(|(key, _)| !draft.meta.contains_key(key))
            .count();
        if draft.meta.len() + added > berth_domain::MAX_META {
            draft
                .meta
                .retain(|key, _| !key.starts_with(TAG_META_PREFIX));
        }
        for (key, value) in &self.other {
            draft.meta.insert(key.clone(), value.clone());
        }
    }
}

fn defaults(state: &ApiState) -> InstanceDefaults {
    InstanceDefaults {
        ttl: state.compat.lyft.host_ttl,
        ..InstanceDefaults::default()
    }
}

/// `POST /v1/registration/{service}`: registers or renews the host `ip:port`.
async fn register(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath(service): ApiPath<String>,
    request: Request,
) -> LyftResult<Response> {
    let auto = auto_ip(&request, &state.compat.lyft.trusted_proxies);
    let fields = read_fields(request).await.map_err(LyftError::unreadable)?;
    let ip = match fields.text("ip").filter(|ip| !ip.is_empty()) {
        Some(ip) => ip.parse::<IpAddr>().map_err(|_| LyftError::Invalid)?,
        None if truthy(fields.value("auto_ip")) => auto.ok_or(LyftError::Invalid)?,
        None => return Err(LyftError::Invalid),
    };
    let port: i64 = fields
        .text("port")
        .and_then(|p| p.trim().parse().ok())
        .filter(|p| *p > 0)
        .ok_or(LyftError::Invalid)?;
    let revision = fields
        .text("revision")
        .filter(|r| !r.is_empty())
        .ok_or(LyftError::Invalid)?;
    let tags = parse_tags(&fields)?;
    if !["az", "instance_id", "region"]
        .iter()
        .all(|k| tags.contains_key(*k))
    {
        return Err(LyftError::Invalid);
    }
    let tags = LyftTags::read(&tags)?;
    let repo = fields.text("service_repo_name").unwrap_or_default();
    let service_name = ServiceName::parse("service", &service).map_err(|_| LyftError::Invalid)?;
    let address = Address::parse("ip", &ip.to_string()).map_err(|_| LyftError::Invalid)?;
    let port = u16::try_from(port).map_err(|_| LyftError::Invalid)?;
    let id = InstanceId::parse("id", &address.with_port(port)).map_err(|_| LyftError::Invalid)?;
    let defaults = defaults(&state);
    state
        .registry
        .register_with(
            &service_name,
            &id,
            |existing| {
                let mut draft = existing
                    .map(|i| InstanceDraft::from(&i.spec))
                    .unwrap_or_default();
                draft.id = Some(id.to_string());
                draft.address = Some(address.to_string());
                draft.port = Some(i64::from(port));
                draft.revision = Some(revision.clone());
                draft.repo = Some(repo.clone());
                draft.ttl_ms = Some(defaults.ttl.as_millis() as i64);
                draft.origin = Origin::Lyft;
                tags.merge_into(&mut draft);
                Ok(draft.validate(service_name.as_str(), Some(id.as_str()), &defaults)?)
            },
            &by,
        )
        .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// What a host path segment names: every port of an IP, or one `ip:port`.
struct HostTarget {
    address: Address,
    port: Option<u16>,
}

impl HostTarget {
    fn parse(target: &str) -> LyftResult<HostTarget> {
        let (ip, port) = match target.parse::<IpAddr>() {
            Ok(ip) => (ip, None),
            Err(_) => {
                let (ip, port) = target.rsplit_once(':').ok_or(LyftError::Invalid)?;
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                (
                    ip.parse().map_err(|_| LyftError::Invalid)?,
                    Some(port.parse::<u16>().map_err(|_| LyftError::Invalid)?),
                )
            }
        };
        let address = Address::parse("ip", &ip.to_string()).map_err(|_| LyftError::Invalid)?;
        Ok(HostTarget { address, port })
    }

    fn matches(&self, spec: &InstanceSpec) -> bool {
        spec.address() == &self.address && self.port.is_none_or(|p| spec.port() == p)
    }
}

/// A refusal of a change too big for one transaction keeps its 413; the rest as lyft words it.
fn write_error(error: RegistryError) -> LyftError {
    match error {
        RegistryError::TooLarge(message) => LyftError::TooLarge(message),
        other => other.into(),
    }
}

/// `DELETE /v1/registration/{service}/{ip}`: every port of the IP (or one `ip:port`), in one
/// command.
async fn delete_host(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath((service, target)): ApiPath<(String, String)>,
) -> LyftResult<Response> {
    let target = HostTarget::parse(&target)?;
    let Ok(service) = ServiceName::parse("service", &service) else {
        return Err(LyftError::Invalid);
    };
    let removed = state
        .registry
        .deregister_where(&service, |spec| target.matches(spec), &by)
        .await
        .map_err(write_error)?;
    if removed == 0 {
        return Err(LyftError::Invalid);
    }
    Ok(axum::Json(json!({})).into_response())
}

/// The `load_balancing_weight` form field, checked as lyft did (an empty one is a missing one).
async fn weight(request: Request) -> LyftResult<u8> {
    let fields = read_fields(request).await.map_err(LyftError::unreadable)?;
    let Some(weight) = fields
        .text("load_balancing_weight")
        .filter(|w| !w.trim().is_empty())
    else {
        return Err(LyftError::Error(
            StatusCode::BAD_REQUEST,
            "Required parameter 'weight' is missing.",
        ));
    };
    weight
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|w| (1..=100).contains(w))
        .ok_or(LyftError::Error(
            StatusCode::BAD_REQUEST,
            "Invalid load_balancing_weight. Supply an integer between 1 and 100.",
        ))
}

/// Sets the weight of the hosts of `service` that `select` picks, in one command; how many
/// hosts it picked (those already at the weight included).
async fn apply_weight(
    state: &ApiState,
    service: &ServiceName,
    select: impl Fn(&InstanceSpec) -> bool,
    weight: u8,
    by: &Caller,
) -> LyftResult<usize> {
    state
        .registry
        .update_where(
            service,
            select,
            |current| {
                let mut draft = InstanceDraft::from(&current.spec);
                draft.weight = Some(i64::from(weight));
                let bounds = InstanceDefaults {
                    min_ttl: berth_domain::LOWEST_TTL,
                    ..InstanceDefaults::default()
                };
                Ok(draft.validate(
                    current.spec.service().as_str(),
                    Some(current.spec.id().as_str()),
                    &bounds,
                )?)
            },
            by,
        )
        .await
        .map_err(write_error)
}

/// `POST /v1/loadbalancing/{service}/{ip}`: the weight of every port of the IP.
async fn set_weight(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath((service, target)): ApiPath<(String, String)>,
    request: Request,
) -> LyftResult<Response> {
    let weight = weight(request).await?;
    let target = HostTarget::parse(&target)?;
    let host_not_found = LyftError::Error(StatusCode::NOT_FOUND, "Host not found");
    let Ok(service) = ServiceName::parse("service", &service) else {
        return Err(host_not_found);
    };
    if apply_weight(&state, &service, |spec| target.matches(spec), weight, &by).await? == 0 {
        return Err(host_not_found);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/loadbalancing/{service}`: the weight of every host of the service.
async fn set_weight_everywhere(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath(service): ApiPath<String>,
    request: Request,
) -> LyftResult<Response> {
    let weight = weight(request).await?;
    if let Ok(service) = ServiceName::parse("service", &service) {
        apply_weight(&state, &service, |_| true, weight, &by).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_check_in_looks_like_pythons_datetime() {
        assert_eq!(
            python_datetime(berth_domain::Timestamp::from_millis(1_795_302_278_949)),
            "2026-11-21 23:04:38.949000"
        );
    }

    /// Defect M18: tags merge as lyft's did, but never past the metadata cap.
    #[test]
    fn merged_tags_never_outgrow_the_metadata_cap() {
        let tags = |range: std::ops::Range<usize>| {
            let map: Map<String, Value> = range
                .map(|i| (format!("t{i}"), json!(i.to_string())))
                .collect();
            let Ok(tags) = LyftTags::read(&map) else {
                panic!("tags that read")
            };
            tags
        };
        let mut draft = InstanceDraft::default();
        draft.meta.insert("owner".into(), "payments".into());
        tags(0..60).merge_into(&mut draft);
        assert_eq!(draft.meta.len(), 61, "merged below the cap");
        tags(0..2).merge_into(&mut draft);
        assert_eq!(draft.meta.len(), 61, "known tags replace");
        tags(100..110).merge_into(&mut draft);
        assert_eq!(
            draft.meta.len(),
            11,
            "past the cap the given tags replace the merged"
        );
        assert!(draft.meta.contains_key("owner"));
        assert!(draft.meta.contains_key("lyft.tag.t105"));
        assert!(!draft.meta.contains_key("lyft.tag.t0"));
    }
}
