//! `/v1/catalog` and `/v1/catalog/import`: the whole catalog out as JSON or YAML, and back in,
//! all or nothing.

use super::apps::AppDto;
use super::kinds::KindDto;
use super::routing::{BackendDto, FrontendDto, raw};
use crate::ApiState;
use crate::error::{ApiError, ApiResult, internal};
use crate::extract::{IMPORT_BODY_LIMIT, Params, read_body_up_to};
use crate::reply::json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_domain::catalog::{
    BackendDraft, FrontendDraft, KindDraft, PortDraft, WholeApplicationDraft,
};
use berth_domain::{Timestamp, ValidationError, ValidationErrors};
use berth_registry::catalog::CatalogSnapshot;
use serde::{Deserialize, Serialize};

/// The export format: the whole catalog, readable and restorable.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDto<'a> {
    kinds: Vec<KindDto>,
    applications: Vec<AppDto<'a>>,
    #[serde(default)]
    backends: Vec<BackendDto>,
    #[serde(default)]
    frontends: Vec<FrontendDto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_water: Option<u16>,
}

pub async fn export(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&["format"])?;
    let snapshot = state.registry.export().await?;
    let dto = CatalogDto {
        kinds: snapshot.kinds.iter().map(KindDto::plain).collect(),
        applications: snapshot.applications.iter().map(AppDto::new).collect(),
        backends: snapshot.backends.iter().map(BackendDto::new).collect(),
        frontends: snapshot.frontends.iter().map(FrontendDto::new).collect(),
        high_water: snapshot.high_water,
    };
    match params.one("format").unwrap_or("json") {
        "json" => json(StatusCode::OK, &dto),
        "yaml" => {
            let text = serde_norway::to_string(&dto).map_err(internal)?;
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                )],
                text,
            )
                .into_response())
        }
        other => Err(
            ApiError::bad_request(format!("format must be json or yaml (got {other:?})"))
                .with_field("format"),
        ),
    }
}

/// Turns an export back into domain values, collecting every problem.
fn snapshot_from(
    dto: CatalogDto<'_>,
    block_size: u16,
) -> Result<CatalogSnapshot, ValidationErrors> {
    let mut problems: Vec<ValidationError> = Vec::new();
    let mut collect = |prefix: String, errors: ValidationErrors| {
        for error in errors.all() {
            problems.push(ValidationError::new(
                format!("{prefix}.{}", error.field),
                error.message.clone(),
            ));
        }
    };
    let mut snapshot = CatalogSnapshot {
        high_water: dto.high_water,
        ..CatalogSnapshot::default()
    };
    for (index, kind) in dto.kinds.into_iter().enumerate() {
        let draft = KindDraft {
            name: Some(kind.name),
            default_port: Some(i64::from(kind.default_port)),
            offset: kind.offset.map(i64::from),
        };
        match draft.validate(None, block_size) {
            Ok(kind) => snapshot.kinds.push(kind),
            Err(errors) => collect(format!("kinds[{index}]"), errors),
        }
    }
    for (index, app) in dto.applications.into_iter().enumerate() {
        let created_at = app
            .created_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(Timestamp::default(), |d| {
                Timestamp::from_millis(d.as_millis() as u64)
            });
        let draft = WholeApplicationDraft {
            id: Some(app.id),
            ports: app
                .ports
                .into_iter()
                .map(|port| PortDraft::assigned(port.kind, port.external, port.internal))
                .collect(),
            dependencies: app.dependencies,
            created_at,
        };
        match draft.validate() {
            Ok(app) => snapshot.applications.push(app),
            Err(errors) => collect(format!("applications[{index}]"), errors),
        }
    }
    for (index, backend) in dto.backends.into_iter().enumerate() {
        let draft = BackendDraft {
            name: Some(backend.name),
            app: Some(backend.app),
            version: Some(backend.version),
            extra: raw(backend.extra),
        };
        match draft.validate() {
            Ok(backend) => snapshot.backends.push(backend),
            Err(errors) => collect(format!("backends[{index}]"), errors),
        }
    }
    for (index, frontend) in dto.frontends.into_iter().enumerate() {
        let draft = FrontendDraft {
            name: Some(frontend.name),
            backend: frontend.backend,
            extra: raw(frontend.extra),
        };
        match draft.validate() {
            Ok(frontend) => snapshot.frontends.push(frontend),
            Err(errors) => collect(format!("frontends[{index}]"), errors),
        }
    }
    match ValidationErrors::new(problems) {
        Some(errors) => Err(errors),
        None => Ok(snapshot),
    }
}

/// Refuses YAML anchors and aliases before anything is built from the document: aliases of
/// aliases multiply (a few megabytes can stand for billions of values), and an export never
/// needs them. The scan reads events one at a time and keeps none.
fn refuse_yaml_aliases(body: &[u8]) -> ApiResult<()> {
    use yaml_rust2::parser::{Event, Parser};
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the YAML export is not UTF-8"))?;
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            ApiError::bad_request(format!("the request body is not a valid YAML export: {e}"))
        })?;
        let anchored = match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => true,
            Event::Scalar(_, _, anchor, _)
            | Event::SequenceStart(anchor, _)
            | Event::MappingStart(anchor, _) => anchor > 0,
            _ => false,
        };
        if anchored {
            return Err(ApiError::bad_request(format!(
                "YAML anchors and aliases are not accepted in an import (line {}, column {})",
                mark.line(),
                mark.col() + 1
            )));
        }
    }
}

/// `POST /v1/catalog/import`: an export (JSON, or YAML with a YAML content type), all or
/// nothing.
pub async fn import(State(state): State<ApiState>, request: Request) -> ApiResult<Response> {
    let yaml = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    if !yaml {
        crate::extract::require_json(request.headers())?;
    }
    let _importing = state.heavy.take(crate::heavy::Heavy::Import)?;
    let body = read_body_up_to(request, IMPORT_BODY_LIMIT).await?;
    let dto: CatalogDto<'_> = if yaml {
        refuse_yaml_aliases(&body)?;
        serde_norway::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not a valid YAML export: {e}"))
        })?
    } else {
        crate::extract::parse_json(&body)?
    };
    let snapshot = snapshot_from(dto, state.registry.port_range().block_size)
        .map_err(|e| ApiError::invalid(&e))?;
    let summary = state.registry.import(snapshot).await?;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "kinds": summary.kinds,
            "kinds_unchanged": summary.kinds_unchanged,
            "applications": summary.applications,
            "backends": summary.backends,
            "frontends": summary.frontends,
        }),
    )
}

#[derive(Serialize)]
struct AllocatorDto {
    start: u16,
    block_size: u16,
    ceiling: u16,
    denied: Vec<u16>,
    /// The highest port the allocator ever handed out: new families get blocks above it.
    high_water: Option<u16>,
    /// The highest external port claimed now, inside the range.
    highest_claimed: Option<u16>,
    /// The port a new family would get now; `null` when no block is left.
    next_new_family_port: Option<u16>,
}

fn allocator_dto(status: berth_registry::catalog::AllocatorStatus) -> AllocatorDto {
    AllocatorDto {
        start: status.range.start,
        block_size: status.range.block_size,
        ceiling: status.range.ceiling,
        denied: status.range.denied,
        high_water: status.high_water,
        highest_claimed: status.highest_claimed,
        next_new_family_port: status.next_new_family_port,
    }
}

/// `GET /v1/catalog/allocator`: where the port allocator stands.
pub async fn allocator(State(state): State<ApiState>) -> ApiResult<Response> {
    json(
        StatusCode::OK,
        &allocator_dto(state.registry.allocator_status().await?),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighWaterBody {
    high_water: u16,
}

/// `PUT /v1/catalog/allocator`: sets the high-water mark (a repair).
pub async fn set_high_water(
    State(state): State<ApiState>,
    crate::extract::JsonBody(body): crate::extract::JsonBody<HighWaterBody>,
) -> ApiResult<Response> {
    json(
        StatusCode::OK,
        &allocator_dto(state.registry.set_high_water(body.high_water).await?),
    )
}
