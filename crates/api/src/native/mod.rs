//! The native `/v1` API, one module per resource: live instances and their events, and the
//! catalog's kinds, applications, routing entities (backends and frontends) and transfer
//! (export and import). What they share is here.

pub mod apps;
pub mod events;
pub mod instances;
pub mod kinds;
pub mod routing;
pub mod sd;
pub mod tokens;
pub mod transfer;

use crate::error::{ApiError, ApiResult};
use crate::format::rfc3339;
use berth_domain::ValidationError;
use berth_domain::catalog::{AppId, EntityName, KindName};
use berth_registry::catalog::HistoryEntry;
use serde::Serialize;

pub(crate) fn invalid(error: ValidationError) -> ApiError {
    ApiError::invalid(&error.into())
}

pub(crate) fn parse_app(text: &str) -> ApiResult<AppId> {
    AppId::parse("id", text).map_err(invalid)
}

pub(crate) fn parse_kind(text: &str) -> ApiResult<KindName> {
    KindName::parse("kind", text).map_err(invalid)
}

pub(crate) fn parse_entity(text: &str) -> ApiResult<EntityName> {
    EntityName::parse("name", text).map_err(invalid)
}

#[derive(Serialize)]
pub(crate) struct HistoryDto<T> {
    revision: i64,
    timestamp: String,
    r#type: &'static str,
    record: T,
}

pub(crate) fn history<T, D>(
    entries: &[HistoryEntry<T>],
    dto: impl Fn(&T) -> D,
) -> Vec<HistoryDto<D>> {
    entries
        .iter()
        .map(|entry| HistoryDto {
            revision: entry.revision.0,
            timestamp: rfc3339(entry.timestamp),
            r#type: entry.change.as_str(),
            record: dto(&entry.record),
        })
        .collect()
}
