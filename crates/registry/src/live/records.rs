//! How the registry's records are encoded in the store (JSON). These are storage types, not
//! wire types: the HTTP surfaces have their own DTOs. Decoding goes back through the domain's
//! validation, so a record that does not satisfy today's rules is reported, not served.

use crate::keys;
use berth_domain::auth::Owner;
use berth_domain::{Instance, InstanceDefaults, InstanceDraft, Origin, Timestamp};
use berth_store::{KeyValue, LeaseId, Revision};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct InstanceRecord {
    address: String,
    port: u16,
    ttl_ms: u64,
    /// The TTL the store actually granted (etcd rounds up to whole seconds).
    lease_ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_ref: Option<String>,
    weight: u8,
    canary: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    meta: BTreeMap<String, String>,
    registered_at_ms: u64,
    /// The team that owns the instance (see `berth_domain::auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// The API it was registered through; absent for the native API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
}

/// An instance as read back from the store, with the store's bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredInstance {
    pub instance: Instance,
    pub lease: Option<LeaseId>,
    pub lease_ttl: Duration,
    /// The revision that last wrote the record.
    pub revision_index: Revision,
}

pub fn encode_instance(instance: &Instance, lease_ttl: Duration) -> Vec<u8> {
    let spec = &instance.spec;
    let record = InstanceRecord {
        address: spec.address().to_string(),
        port: spec.port(),
        ttl_ms: spec.ttl().as_millis() as u64,
        lease_ttl_ms: lease_ttl.as_millis() as u64,
        version: spec.version().map(String::from),
        revision: spec.revision().map(String::from),
        repo: spec.repo().map(String::from),
        zone: spec.zone().map(String::from),
        region: spec.region().map(String::from),
        instance_ref: spec.instance_ref().map(String::from),
        weight: spec.weight(),
        canary: spec.canary(),
        tags: spec.tags().to_vec(),
        meta: spec.meta().clone(),
        registered_at_ms: instance.registered_at.millis(),
        owner: instance.owner.as_ref().map(|o| o.to_string()),
        origin: (spec.origin() != Origin::Native).then(|| spec.origin().as_str().to_string()),
    };
    serde_json::to_vec(&record).expect("an instance record always serializes")
}

pub fn decode_instance(kv: &KeyValue) -> Result<StoredInstance, String> {
    let (service, id) = keys::parse_instance_key(&kv.key).ok_or_else(|| {
        format!(
            "{} is not an instance key",
            String::from_utf8_lossy(&kv.key)
        )
    })?;
    let record: InstanceRecord = serde_json::from_slice(&kv.value)
        .map_err(|e| format!("instance record {service}/{id}: {e}"))?;
    let draft = InstanceDraft {
        id: None,
        address: Some(record.address),
        port: Some(i64::from(record.port)),
        ttl_ms: Some(record.ttl_ms as i64),
        version: record.version,
        revision: record.revision,
        repo: record.repo,
        zone: record.zone,
        region: record.region,
        instance_ref: record.instance_ref,
        weight: Some(i64::from(record.weight)),
        canary: Some(record.canary),
        tags: record.tags,
        meta: record.meta,
        origin: match record.origin.as_deref() {
            None => Origin::Native,
            Some(text) => Origin::parse(text).ok_or_else(|| {
                format!("instance record {service}/{id}: unknown origin {text:?}")
            })?,
        },
    };
    // Records are checked against the widest bounds any surface writes with.
    let bounds = InstanceDefaults {
        min_ttl: berth_domain::LOWEST_TTL,
        ..InstanceDefaults::default()
    };
    let spec = draft
        .validate(service, Some(id), &bounds)
        .map_err(|e| format!("instance record {service}/{id}: {e}"))?;
    Ok(StoredInstance {
        instance: Instance {
            spec,
            registered_at: Timestamp::from_millis(record.registered_at_ms),
            owner: match record.owner {
                Some(owner) => Some(
                    Owner::parse("owner", &owner)
                        .map_err(|e| format!("instance record {service}/{id}: {e}"))?,
                ),
                None => None,
            },
        },
        lease: kv.lease,
        lease_ttl: Duration::from_millis(record.lease_ttl_ms),
        revision_index: kv.mod_revision,
    })
}
