//! The berth target: records are instances registered through berth's native API, marked as
//! this host's by their metadata. Several servers may be given; the client fails over between
//! them (on connection errors and 503s, with back-off) and tries the one that answered first.

use super::{Owned, TargetError};
use crate::container::{META_HOST, Record};
use berth_client::{Client, ClientError, ClientOptions, Instance, Registration};
use futures::{StreamExt, stream};
use serde_json::json;

/// Heartbeats in flight at once while renewing.
const RENEW_CONCURRENCY: usize = 16;

pub struct BerthTarget {
    client: Client,
    host_id: String,
}

pub fn key_of(record: &Record) -> String {
    format!("{}/{}", record.spec.service(), record.spec.id())
}

fn fingerprint_of(
    address: &str,
    port: u16,
    ttl_ms: u64,
    version: Option<&str>,
    tags: &[String],
    meta: &std::collections::BTreeMap<String, String>,
) -> String {
    json!({"address": address, "port": port, "ttl_ms": ttl_ms, "version": version, "tags": tags, "meta": meta})
        .to_string()
}

pub fn fingerprint(record: &Record) -> String {
    let spec = &record.spec;
    fingerprint_of(
        &spec.address().to_string(),
        spec.port(),
        spec.ttl().as_millis() as u64,
        spec.version(),
        spec.tags(),
        spec.meta(),
    )
}

fn instance_fingerprint(instance: &Instance) -> String {
    fingerprint_of(
        &instance.address,
        instance.port,
        instance.ttl_ms,
        instance.version.as_deref(),
        &instance.tags,
        &instance.meta,
    )
}

fn registration(record: &Record) -> Registration {
    let spec = &record.spec;
    Registration {
        id: Some(spec.id().to_string()),
        address: spec.address().to_string(),
        port: spec.port(),
        ttl_ms: Some(spec.ttl().as_millis() as u64),
        version: spec.version().map(String::from),
        tags: spec.tags().to_vec(),
        meta: spec.meta().clone(),
        ..Registration::default()
    }
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((key, ""))
}

impl BerthTarget {
    /// `bases` are `http://host:port` or `https://host:port` URLs; `options` hold the token
    /// and TLS trust.
    pub fn new(
        bases: &[String],
        host_id: &str,
        options: &ClientOptions,
    ) -> Result<BerthTarget, TargetError> {
        let client = Client::with_options(bases.join(","), options)
            .map_err(|e| TargetError::Refused(e.to_string()))?;
        Ok(BerthTarget {
            client,
            host_id: host_id.to_string(),
        })
    }

    pub fn describe(&self) -> String {
        self.client.servers().join(", ")
    }

    pub async fn owned(&self) -> Result<Owned, TargetError> {
        let query = [("meta", format!("{META_HOST}:{}", self.host_id))];
        let found = self
            .client
            .find_instances(&query)
            .await
            .map_err(target_error)?;
        Ok(found
            .instances
            .iter()
            .filter(|i| i.meta.get(META_HOST) == Some(&self.host_id))
            .map(|i| (format!("{}/{}", i.service, i.id), instance_fingerprint(i)))
            .collect())
    }

    pub async fn put(&self, record: &Record) -> Result<(), TargetError> {
        let registration = registration(record);
        let service = record.spec.service().as_str();
        self.client
            .register(service, &registration)
            .await
            .map(|_| ())
            .map_err(target_error)
    }

    pub async fn remove(&self, key: &str) -> Result<(), TargetError> {
        let (service, id) = split_key(key);
        match self.client.deregister(service, id).await {
            Ok(()) => Ok(()),
            Err(error) if error.status() == Some(404) => Ok(()),
            Err(error) => Err(target_error(error)),
        }
    }

    pub async fn renew(&self, records: &[(&String, &Record)]) -> Result<Vec<String>, TargetError> {
        let answers: Vec<(String, Result<(), ClientError>)> = stream::iter(records)
            .map(|(key, record)| async move {
                let service = record.spec.service().as_str();
                let id = record.spec.id().as_str();
                let answer = self.client.heartbeat(service, id).await.map(|_| ());
                (key.to_string(), answer)
            })
            .buffer_unordered(RENEW_CONCURRENCY)
            .collect()
            .await;
        let mut lost = Vec::new();
        for (key, answer) in answers {
            match answer {
                Ok(()) => {}
                Err(error) if error.status() == Some(404) => lost.push(key),
                Err(error) => return Err(target_error(error)),
            }
        }
        Ok(lost)
    }
}

fn target_error(error: ClientError) -> TargetError {
    match &error {
        ClientError::Api { status, .. } if *status < 500 => TargetError::Refused(error.to_string()),
        _ => TargetError::Unreachable(error.to_string()),
    }
}
