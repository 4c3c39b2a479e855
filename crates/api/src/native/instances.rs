//! The native instance routes: register, heartbeat, deregister, and the queries (with
//! Consul-style blocking). Their DTOs live here; conversion into the domain's draft is the
//! only thing this module decides.

use crate::ApiState;
use crate::cache::Freshness;
use crate::error::{ApiError, ApiResult, internal};
use crate::extract::{ApiPath, JsonBody, Params, encode_segment};
use crate::format::rfc3339;
use crate::heavy::Heavy;
use crate::reply::{json_bytes, with_location};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use berth_domain::{Address, InstanceDraft, InstanceFilter, InstanceId, ServiceName};
use berth_registry::auth::Caller;
use berth_registry::{Consistency, InstanceRef, RegistrationOutcome, Revision, ServiceView};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A blocking query waits this long when `wait` is not given (Consul's default)...
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// ...and never longer than this.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// The header carrying a result's index, for the next blocking query.
pub const INDEX_HEADER: &str = "x-berth-index";

/// An instance as a client registers it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceBody {
    id: Option<String>,
    service: Option<String>,
    address: Option<String>,
    port: Option<i64>,
    ttl_ms: Option<i64>,
    version: Option<String>,
    revision: Option<String>,
    repo: Option<String>,
    zone: Option<String>,
    region: Option<String>,
    instance_ref: Option<String>,
    weight: Option<i64>,
    canary: Option<bool>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    // Kept by the server: named here only to refuse them with a clear message.
    registered_at: Option<serde::de::IgnoredAny>,
    last_heartbeat: Option<serde::de::IgnoredAny>,
    expires_at: Option<serde::de::IgnoredAny>,
    revision_index: Option<serde::de::IgnoredAny>,
    owner: Option<serde::de::IgnoredAny>,
}

impl InstanceBody {
    fn into_draft(self, service: &str) -> ApiResult<InstanceDraft> {
        for (field, present) in [
            ("registered_at", self.registered_at.is_some()),
            ("last_heartbeat", self.last_heartbeat.is_some()),
            ("expires_at", self.expires_at.is_some()),
            ("revision_index", self.revision_index.is_some()),
            ("owner", self.owner.is_some()),
        ] {
            if present {
                return Err(ApiError::bad_request(format!(
                    "{field} is kept by the server; leave it out of the request"
                ))
                .with_field(field));
            }
        }
        if let Some(body_service) = &self.service
            && body_service != service
        {
            return Err(ApiError::bad_request(format!(
                "the body's service {body_service:?} differs from the path's {service:?}"
            ))
            .with_field("service"));
        }
        Ok(InstanceDraft {
            id: self.id,
            address: self.address,
            port: self.port,
            ttl_ms: self.ttl_ms,
            version: self.version,
            revision: self.revision,
            repo: self.repo,
            zone: self.zone,
            region: self.region,
            instance_ref: self.instance_ref,
            weight: self.weight,
            canary: self.canary,
            tags: self.tags,
            meta: self.meta,
            origin: berth_domain::Origin::Native,
        })
    }
}

/// An instance as the API shows it.
#[derive(Serialize)]
pub struct InstanceDto<'a> {
    service: &'a str,
    id: &'a str,
    address: String,
    port: u16,
    ttl_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repo: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_ref: Option<&'a str>,
    weight: u8,
    canary: bool,
    tags: &'a [String],
    meta: &'a BTreeMap<String, String>,
    /// The team whose token registered it (with auth on).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    registered_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_heartbeat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    revision_index: i64,
}

impl<'a> InstanceDto<'a> {
    pub fn new(instance: InstanceRef<'a>) -> Self {
        let mut dto = Self::without_liveness(instance.instance, instance.revision_index);
        dto.last_heartbeat = Some(rfc3339(instance.last_heartbeat));
        dto.expires_at = Some(rfc3339(instance.expires_at));
        dto
    }

    /// For events: the record as written, without this node's heartbeat bookkeeping.
    pub fn without_liveness(
        instance: &'a berth_domain::Instance,
        revision_index: Revision,
    ) -> Self {
        let spec = &instance.spec;
        InstanceDto {
            service: spec.service().as_str(),
            id: spec.id().as_str(),
            address: spec.address().to_string(),
            port: spec.port(),
            ttl_ms: spec.ttl().as_millis() as u64,
            version: spec.version(),
            revision: spec.revision(),
            repo: spec.repo(),
            zone: spec.zone(),
            region: spec.region(),
            instance_ref: spec.instance_ref(),
            weight: spec.weight(),
            canary: spec.canary(),
            tags: spec.tags(),
            meta: spec.meta(),
            owner: instance.owner.as_ref().map(|owner| owner.as_str()),
            registered_at: rfc3339(instance.registered_at),
            last_heartbeat: None,
            expires_at: None,
            revision_index: revision_index.0,
        }
    }
}

pub fn parse_service(text: &str) -> ApiResult<ServiceName> {
    ServiceName::parse("service", text).map_err(|e| ApiError::invalid(&e.into()))
}

pub fn parse_id(text: &str) -> ApiResult<InstanceId> {
    InstanceId::parse("id", text).map_err(|e| ApiError::invalid(&e.into()))
}

async fn register(
    state: &ApiState,
    service: &str,
    path_id: Option<&str>,
    body: InstanceBody,
    by: &Caller,
) -> ApiResult<Response> {
    let draft = body.into_draft(service)?;
    let spec = draft
        .validate(service, path_id, &state.registry.instance_defaults())
        .map_err(|e| ApiError::invalid(&e))?;
    let registered = state.registry.register(spec, by).await?;
    let status = match registered.outcome {
        RegistrationOutcome::Created => StatusCode::CREATED,
        RegistrationOutcome::Updated | RegistrationOutcome::Renewed => StatusCode::OK,
    };
    let body =
        serde_json::to_vec(&InstanceDto::new(registered.as_instance_ref())).map_err(internal)?;
    let response = json_bytes(status, body);
    if status != StatusCode::CREATED {
        return Ok(response);
    }
    let spec = &registered.instance.spec;
    let location = format!(
        "/v1/services/{}/instances/{}",
        spec.service(),
        encode_segment(spec.id().as_str())
    );
    Ok(with_location(response, &location))
}

pub async fn put_instance(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath((service, id)): ApiPath<(String, String)>,
    JsonBody(body): JsonBody<InstanceBody>,
) -> ApiResult<Response> {
    register(&state, &service, Some(&id), body, &by).await
}

pub async fn post_instance(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath(service): ApiPath<String>,
    JsonBody(body): JsonBody<InstanceBody>,
) -> ApiResult<Response> {
    register(&state, &service, None, body, &by).await
}

#[derive(Serialize)]
struct HeartbeatDto<'a> {
    service: &'a str,
    id: &'a str,
    expires_at: String,
    ttl_ms: u64,
}

pub async fn heartbeat(
    State(state): State<ApiState>,
    ApiPath((service, id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let (service, id) = (parse_service(&service)?, parse_id(&id)?);
    let ack = state.registry.heartbeat(&service, &id).await?;
    let body = serde_json::to_vec(&HeartbeatDto {
        service: service.as_str(),
        id: id.as_str(),
        expires_at: rfc3339(ack.expires_at),
        ttl_ms: ack.ttl.as_millis() as u64,
    })
    .map_err(internal)?;
    Ok(json_bytes(StatusCode::OK, body))
}

pub async fn delete_instance(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath((service, id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (service, id) = (parse_service(&service)?, parse_id(&id)?);
    state.registry.deregister(&service, &id, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_instance(
    State(state): State<ApiState>,
    ApiPath((service, id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let (service, id) = (parse_service(&service)?, parse_id(&id)?);
    let live = state
        .registry
        .instance(&service, &id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "instance {id} of service {service} is not registered"
            ))
        })?;
    let body = serde_json::to_vec(&InstanceDto::new(live.as_instance_ref())).map_err(internal)?;
    Ok(json_bytes(StatusCode::OK, body))
}

/// `{"service","index","instances":[…]}` for a view, keeping what `filter` accepts.
pub fn service_body(view: &ServiceView, filter: &InstanceFilter) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        service: &'a str,
        index: i64,
        instances: Vec<InstanceDto<'a>>,
    }
    let body = Body {
        service: view.service.as_str(),
        index: view.index.0,
        instances: view
            .instances
            .iter()
            .filter(|live| filter.matches(&live.instance.spec))
            .map(|live| InstanceDto::new(live.as_instance_ref()))
            .collect(),
    };
    serde_json::to_vec(&body).expect("instances always serialize")
}

pub async fn list_instances(
    State(state): State<ApiState>,
    Extension(by): Extension<Caller>,
    ApiPath(service): ApiPath<String>,
    params: Params,
) -> ApiResult<Response> {
    params.only(&[
        "version",
        "zone",
        "region",
        "tag",
        "canary",
        "index",
        "wait",
        "consistent",
    ])?;
    let service = parse_service(&service)?;
    let filter = InstanceFilter {
        version: params.one("version").map(String::from),
        zone: params.one("zone").map(String::from),
        region: params.one("region").map(String::from),
        tags: params.all("tag"),
        canary: params.boolean("canary")?,
    };
    let consistency = match params.boolean("consistent")? {
        Some(true) => Consistency::Consistent,
        _ => Consistency::Local,
    };
    let view = match params.parsed::<i64>("index", "a revision number")? {
        // An index beyond anything this node has seen comes from another store (restored, or
        // reset): answer now, so the client takes the index it gets and starts over, as
        // Consul's clients do when the index goes backwards.
        Some(index) if index > 0 && Revision(index) <= state.registry.view_revision() => {
            let wait = params
                .duration("wait")?
                .unwrap_or(DEFAULT_WAIT)
                .min(MAX_WAIT);
            let _waiting = state.heavy.take(Heavy::BlockingQuery)?;
            tokio::select! {
                view = state.registry.wait_for_service(&service, Revision(index), wait) => view?,
                () = state.shutdown.cancelled() => state.registry.service(&service, Consistency::Local).await?,
                () = state.registry.revoked(&by) => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the token was revoked while the query waited",
                    ));
                }
            }
        }
        _ => state.registry.service(&service, consistency).await?,
    };
    let body = if filter.is_empty() {
        state.cache.get_or_make(
            ("native", view.service.to_string()),
            Freshness::of_service(&view),
            || service_body(&view, &InstanceFilter::default()),
        )
    } else {
        Bytes::from(service_body(&view, &filter))
    };
    let mut response = json_bytes(StatusCode::OK, Vec::new());
    *response.body_mut() = axum::body::Body::from(body);
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(view.index.0));
    Ok(response)
}

pub async fn list_services(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&[])?;
    #[derive(Serialize)]
    struct Summary<'a> {
        name: &'a str,
        instances: usize,
        zones: Vec<&'a str>,
        index: i64,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        index: i64,
        services: Vec<Summary<'a>>,
    }
    let summaries = state.registry.services().await?;
    let index = state.registry.view_revision();
    let body = serde_json::to_vec(&Body {
        index: index.0,
        services: summaries
            .iter()
            .map(|s| Summary {
                name: s.service.as_str(),
                instances: s.instances,
                zones: s.zones.iter().map(String::as_str).collect(),
                index: s.index.0,
            })
            .collect(),
    })
    .map_err(internal)?;
    let mut response = json_bytes(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index.0));
    Ok(response)
}

pub async fn find_instances(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&["repo", "address", "service", "meta"])?;
    // `meta=key:value` (or `meta=key`: has the key), repeatable; all must match.
    let meta: Vec<(String, Option<String>)> = params
        .all("meta")
        .iter()
        .map(|text| match text.split_once(':') {
            Some((key, value)) => (key.to_string(), Some(value.to_string())),
            None => (text.to_string(), None),
        })
        .collect();
    let repo = params.one("repo").map(String::from);
    let address = match params.one("address") {
        Some(text) => {
            Some(Address::parse("address", text).map_err(|e| ApiError::invalid(&e.into()))?)
        }
        None => None,
    };
    let service = params.one("service").map(parse_service).transpose()?;
    let found = state
        .registry
        .select(|instance| {
            let spec = &instance.spec;
            repo.as_deref().is_none_or(|r| spec.repo() == Some(r))
                && address.as_ref().is_none_or(|a| spec.address() == a)
                && service.as_ref().is_none_or(|s| spec.service() == s)
                && meta
                    .iter()
                    .all(|(key, value)| match (spec.meta().get(key), value) {
                        (Some(have), Some(want)) => have == want,
                        (Some(_), None) => true,
                        (None, _) => false,
                    })
        })
        .await?;
    #[derive(Serialize)]
    struct Body<'a> {
        index: i64,
        instances: Vec<InstanceDto<'a>>,
    }
    let index = state.registry.view_revision();
    let body = serde_json::to_vec(&Body {
        index: index.0,
        instances: found
            .iter()
            .map(|live| InstanceDto::new(live.as_instance_ref()))
            .collect(),
    })
    .map_err(internal)?;
    Ok(json_bytes(StatusCode::OK, body))
}
