//! How the catalog is encoded in the store (JSON). Storage types only: decoding goes back
//! through the domain's validation, and the HTTP surfaces have their own DTOs.

use berth_domain::catalog::{
    Application, Backend, BackendDraft, Frontend, FrontendDraft, Kind, KindDraft, MAX_BLOCK_SIZE,
    PortDraft, RawJson, WholeApplicationDraft,
};
use berth_domain::{Timestamp, ValidationErrors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
pub(crate) struct KindRecord {
    default_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u8>,
    created_at_ms: u64,
    /// Set while a deletion checks that no application uses the kind (see `delete_kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleting_since_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct PortRecord {
    kind: String,
    external: u16,
    internal: u16,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct AppRecord {
    ports: Vec<PortRecord>,
    dependencies: Vec<String>,
    created_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PortClaim {
    pub app: String,
    pub kind: String,
}

#[derive(Serialize, Deserialize)]
struct BackendRecord {
    app: String,
    version: String,
    #[serde(default)]
    extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct FrontendRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(default)]
    extra: BTreeMap<String, serde_json::Value>,
}

/// A kind as stored, with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKind {
    pub kind: Kind,
    pub created_at: Timestamp,
    pub deleting_since: Option<Timestamp>,
}

pub(crate) fn encode_kind(kind: &StoredKind) -> Vec<u8> {
    json(&KindRecord {
        default_port: kind.kind.default_port(),
        offset: kind.kind.offset(),
        created_at_ms: kind.created_at.millis(),
        deleting_since_ms: kind.deleting_since.map(Timestamp::millis),
    })
}

pub(crate) fn decode_kind(name: &str, bytes: &[u8]) -> Result<StoredKind, String> {
    let record: KindRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("kind {name}: {e}"))?;
    let kind: Kind = KindDraft {
        name: Some(name.into()),
        default_port: Some(i64::from(record.default_port)),
        offset: record.offset.map(i64::from),
    }
    .validate(None, MAX_BLOCK_SIZE)
    .map_err(|e| invalid_record("kind", name, &e))?;
    Ok(StoredKind {
        kind,
        created_at: Timestamp::from_millis(record.created_at_ms),
        deleting_since: record.deleting_since_ms.map(Timestamp::from_millis),
    })
}

pub(crate) fn encode_app(app: &Application) -> Vec<u8> {
    json(&AppRecord {
        ports: app
            .ports()
            .iter()
            .map(|p| PortRecord {
                kind: p.kind.to_string(),
                external: p.external,
                internal: p.internal,
            })
            .collect(),
        dependencies: app.dependencies().iter().map(|d| d.to_string()).collect(),
        created_at_ms: app.created_at().millis(),
    })
}

pub(crate) fn decode_app(id: &str, bytes: &[u8]) -> Result<Application, String> {
    let record: AppRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("application {id}: {e}"))?;
    WholeApplicationDraft {
        id: Some(id.into()),
        ports: record
            .ports
            .into_iter()
            .map(|port| PortDraft::assigned(port.kind, port.external, port.internal))
            .collect(),
        dependencies: record.dependencies,
        created_at: Timestamp::from_millis(record.created_at_ms),
    }
    .validate()
    .map_err(|e| invalid_record("application", id, &e))
}

/// A stored record that today's rules refuse.
fn invalid_record(what: &str, name: &str, errors: &ValidationErrors) -> String {
    format!("{what} {name}: {errors}")
}

pub(crate) fn encode_claim(
    app: &berth_domain::catalog::AppId,
    kind: &berth_domain::catalog::KindName,
) -> Vec<u8> {
    json(&PortClaim {
        app: app.to_string(),
        kind: kind.to_string(),
    })
}

pub(crate) fn decode_claim(bytes: &[u8]) -> Result<PortClaim, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("port claim: {e}"))
}

/// Kept-as-sent extra fields as JSON values, for the store's records and every surface's DTOs
/// (text that is not JSON, which validation never lets in, becomes `null`).
pub fn extras_as_json(extra: &BTreeMap<String, RawJson>) -> BTreeMap<String, serde_json::Value> {
    extra
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(&v.0).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

fn cooked_extras(extra: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, RawJson> {
    extra
        .into_iter()
        .map(|(k, v)| (k, RawJson(v.to_string())))
        .collect()
}

pub(crate) fn encode_backend(backend: &Backend) -> Vec<u8> {
    json(&BackendRecord {
        app: backend.app().to_string(),
        version: backend.version().to_string(),
        extra: extras_as_json(backend.extra()),
    })
}

pub(crate) fn decode_backend(name: &str, bytes: &[u8]) -> Result<Backend, String> {
    let context = |e: &dyn std::fmt::Display| format!("backend {name}: {e}");
    let record: BackendRecord = serde_json::from_slice(bytes).map_err(|e| context(&e))?;
    BackendDraft {
        name: Some(name.into()),
        app: Some(record.app),
        version: Some(record.version),
        extra: cooked_extras(record.extra),
    }
    .validate()
    .map_err(|e| invalid_record("backend", name, &e))
}

pub(crate) fn encode_frontend(frontend: &Frontend) -> Vec<u8> {
    json(&FrontendRecord {
        backend: frontend.backend().map(String::from),
        extra: extras_as_json(frontend.extra()),
    })
}

pub(crate) fn decode_frontend(name: &str, bytes: &[u8]) -> Result<Frontend, String> {
    let context = |e: &dyn std::fmt::Display| format!("frontend {name}: {e}");
    let record: FrontendRecord = serde_json::from_slice(bytes).map_err(|e| context(&e))?;
    FrontendDraft {
        name: Some(name.into()),
        backend: record.backend,
        extra: cooked_extras(record.extra),
    }
    .validate()
    .map_err(|e| invalid_record("frontend", name, &e))
}

/// What a journal entry says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    Insert,
    Update,
    Delete,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Insert => "insert",
            ChangeType::Update => "update",
            ChangeType::Delete => "delete",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct JournalRecord {
    r#type: ChangeType,
    timestamp_ms: u64,
    /// The record's storage encoding (a kind or an application) after the change, or before
    /// a deletion.
    record: serde_json::Value,
}

pub(crate) fn encode_journal(change: ChangeType, at: Timestamp, record: &[u8]) -> Vec<u8> {
    json(&JournalRecord {
        r#type: change,
        timestamp_ms: at.millis(),
        record: serde_json::from_slice(record).unwrap_or(serde_json::Value::Null),
    })
}

/// A journal entry: the change, when, and the record's encoding (decode it with the kind's
/// or application's decoder).
pub(crate) fn decode_journal(bytes: &[u8]) -> Result<(ChangeType, Timestamp, Vec<u8>), String> {
    let record: JournalRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("journal entry: {e}"))?;
    Ok((
        record.r#type,
        Timestamp::from_millis(record.timestamp_ms),
        serde_json::to_vec(&record.record).map_err(|e| e.to_string())?,
    ))
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("catalog records always serialize")
}
