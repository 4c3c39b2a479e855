//! The etcd target: gambol99/service-registrar's documents under its key layout, written
//! straight into etcd (v3 API), so consumers of the old layout keep working. The key is
//! `<prefix>/<element>/<element>…` (default `/services/ENVIRONMENT/NAME/PORT/HOST_PORT/HOSTNAME`),
//! the value the JSON document of one container port. In ttl mode every key is attached to one
//! lease of this agent, kept alive while it runs, so the keys vanish when it dies; in prune mode
//! keys have no expiry and the agent removes the ones whose document names its host and that
//! no longer run. Keys of other hosts are never touched.

#[cfg(test)]
use super::DEFAULT_PATH;
use super::{Owned, TargetError};
use crate::container::Record;
use etcd_client::{Client, GetOptions, PutOptions};
use serde_json::{Map, Value, json};
use std::time::Duration;
use tokio::sync::Mutex;

/// One element of the key path, as service-registrar's `prefix_path` spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathElement {
    /// `environment:X`: the container's environment variable X; left out when it is unset.
    Environment(String),
    /// `string:X`: X itself.
    Literal(String),
    /// `service:PORT`, `service:HOST_PORT`, `service:HOSTNAME`, or any field of the document
    /// (`service:HOST`, `service:IPADDRESS`, `service:IMAGE`, …).
    Service(String),
}

impl PathElement {
    pub fn parse(text: &str) -> Result<PathElement, String> {
        let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        let (kind, name) = text
            .split_once(':')
            .filter(|(kind, name)| word(kind) && word(name))
            .ok_or_else(|| format!("path element {text:?} is not TYPE:NAME"))?;
        match kind {
            "environment" => Ok(PathElement::Environment(name.to_string())),
            "string" => Ok(PathElement::Literal(name.to_string())),
            "service" => Ok(PathElement::Service(name.to_string())),
            other => Err(format!(
                "path element {text:?}: unknown type {other:?} (environment, string or service)"
            )),
        }
    }
}

/// Where documents go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdLayout {
    pub prefix: String,
    pub elements: Vec<PathElement>,
    /// Copy the container's whole environment into each document (`env`), as
    /// service-registrar did. Off unless asked for: environments hold secrets.
    pub publish_env: bool,
}

impl EtcdLayout {
    /// `path` is comma-separated elements.
    pub fn new(prefix: &str, path: &str) -> Result<EtcdLayout, String> {
        let elements = path
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(PathElement::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if elements.is_empty() {
            return Err("the key path has no elements".into());
        }
        Ok(EtcdLayout {
            prefix: format!("/{}", prefix.trim_matches('/')),
            elements,
            publish_env: false,
        })
    }

    /// The document of a record (without its `path`), as service-registrar wrote it.
    fn document(&self, host_id: &str, record: &Record) -> Map<String, Value> {
        let container = &record.container;
        let mut doc = Map::new();
        doc.insert("id".into(), json!(container.id));
        doc.insert("host".into(), json!(host_id));
        doc.insert("ipaddress".into(), json!(record.spec.address().to_string()));
        if self.publish_env {
            doc.insert("env".into(), json!(container.env));
        }
        doc.insert("tags".into(), json!(record.spec.tags()));
        doc.insert("name".into(), json!(format!("/{}", container.name)));
        doc.insert("image".into(), json!(container.image));
        doc.insert("hostname".into(), json!(container.hostname));
        if let Some(host_port) = record.host_port {
            doc.insert("host_port".into(), json!(host_port.to_string()));
        }
        doc.insert("proto".into(), json!(record.proto.as_str()));
        doc.insert("port".into(), json!(record.container_port.to_string()));
        doc
    }

    fn path(&self, record: &Record, doc: &Map<String, Value>) -> String {
        let container = &record.container;
        let parts: Vec<String> = self
            .elements
            .iter()
            .filter_map(|element| match element {
                PathElement::Environment(name) => container.env.get(name).cloned(),
                PathElement::Literal(text) => Some(text.clone()),
                PathElement::Service(name) => match name.as_str() {
                    "PORT" => Some(
                        container
                            .env
                            .get(&format!("SERVICE_{}_NAME", record.container_port))
                            .cloned()
                            .unwrap_or_else(|| record.container_port.to_string()),
                    ),
                    "HOST_PORT" => record.host_port.map(|p| p.to_string()),
                    "HOSTNAME" => Some(container.hostname.clone()),
                    other => doc
                        .get(&other.to_ascii_lowercase())
                        .and_then(Value::as_str)
                        .map(String::from),
                },
            })
            .filter(|part| !part.is_empty())
            .collect();
        format!("{}/{}", self.prefix.trim_end_matches('/'), parts.join("/"))
    }

    /// (key, document text) of a record.
    pub fn entry(&self, host_id: &str, record: &Record) -> (String, String) {
        let mut doc = self.document(host_id, record);
        let path = self.path(record, &doc);
        doc.insert("path".into(), json!(path));
        (path, Value::Object(doc).to_string())
    }
}

pub struct EtcdTarget {
    client: Client,
    endpoints: Vec<String>,
    layout: EtcdLayout,
    host_id: String,
    /// ttl mode: the lease every key is attached to (granted on first use, again if lost).
    ttl: Option<Duration>,
    lease: Mutex<Option<i64>>,
}

fn unreachable(error: etcd_client::Error) -> TargetError {
    TargetError::Unreachable(format!("etcd: {error}"))
}

/// How long one call to etcd may take: a black-holed etcd must not stop the reconciler until
/// TCP gives up, minutes later.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `call`, or `Unreachable` once it took longer than [`CALL_TIMEOUT`].
async fn within<T>(
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, TargetError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(unreachable),
        Err(_) => Err(TargetError::Unreachable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

impl EtcdTarget {
    /// `ttl`: attach keys to a lease of this TTL (ttl mode), or `None` (prune mode);
    /// `options`: TLS and credentials for etcd.
    pub async fn connect(
        endpoints: &[String],
        layout: EtcdLayout,
        host_id: &str,
        ttl: Option<Duration>,
        options: Option<etcd_client::ConnectOptions>,
    ) -> Result<EtcdTarget, TargetError> {
        let client = within(Client::connect(endpoints, options)).await?;
        Ok(EtcdTarget {
            client,
            endpoints: endpoints.to_vec(),
            layout,
            host_id: host_id.to_string(),
            ttl,
            lease: Mutex::new(None),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "etcd {} under {}",
            self.endpoints.join(","),
            self.layout.prefix
        )
    }

    pub fn key_of(&self, record: &Record) -> String {
        self.layout.entry(&self.host_id, record).0
    }

    pub fn fingerprint(&self, record: &Record) -> String {
        self.layout.entry(&self.host_id, record).1
    }

    pub async fn owned(&self) -> Result<Owned, TargetError> {
        let prefix = format!("{}/", self.layout.prefix.trim_end_matches('/'));
        let answer = within(
            self.client
                .clone()
                .get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut owned = Owned::new();
        for kv in answer.kvs() {
            let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            // Other tools' keys, and documents that are not JSON, are not this agent's.
            let Ok(doc) = serde_json::from_str::<Value>(value) else {
                continue;
            };
            if doc.get("host").and_then(Value::as_str) == Some(self.host_id.as_str()) {
                owned.insert(key.to_string(), value.to_string());
            }
        }
        Ok(owned)
    }

    /// The lease keys go on in ttl mode, granted when there is none.
    async fn lease(&self) -> Result<Option<i64>, TargetError> {
        let Some(ttl) = self.ttl else {
            return Ok(None);
        };
        let mut lease = self.lease.lock().await;
        if let Some(id) = *lease {
            return Ok(Some(id));
        }
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let granted = within(self.client.clone().lease_grant(seconds, None)).await?;
        *lease = Some(granted.id());
        Ok(Some(granted.id()))
    }

    pub async fn put(&self, record: &Record) -> Result<(), TargetError> {
        let (key, value) = self.layout.entry(&self.host_id, record);
        let put = |lease: Option<i64>| {
            let (key, value) = (key.clone(), value.clone());
            let options = lease.map(|id| PutOptions::new().with_lease(id));
            async move { within(self.client.clone().put(key, value, options)).await }
        };
        match put(self.lease().await?).await {
            Ok(_) => Ok(()),
            // The lease expired while no record was on it to renew: a new one, once.
            Err(error) if error.to_string().contains("lease not found") => {
                *self.lease.lock().await = None;
                put(self.lease().await?).await.map(|_| ())
            }
            Err(error) => Err(error),
        }
    }

    pub async fn remove(&self, key: &str) -> Result<(), TargetError> {
        within(self.client.clone().delete(key, None))
            .await
            .map(|_| ())
    }

    /// ttl mode: one keepalive for the lease. A lease that expired took its keys with it; every
    /// record must be put again (on a new lease).
    pub async fn renew(&self, records: &[(&String, &Record)]) -> Result<Vec<String>, TargetError> {
        let Some(id) = *self.lease.lock().await else {
            return Ok(Vec::new());
        };
        let (mut keeper, mut answers) = within(self.client.clone().lease_keep_alive(id)).await?;
        within(keeper.keep_alive()).await?;
        let alive = match within(answers.message()).await? {
            Some(answer) => answer.ttl() > 0,
            None => false,
        };
        if alive {
            return Ok(Vec::new());
        }
        tracing::warn!(
            lease = id,
            "the etcd lease expired; putting every record again"
        );
        *self.lease.lock().await = None;
        Ok(records.iter().map(|(key, _)| key.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerFacts, Proto, fixtures, plan};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn record(env: &[(&str, &str)]) -> Record {
        let facts = ContainerFacts {
            id: "50ccf6e665e0aaaa".into(),
            name: "jovial_albattani".into(),
            image: "etcd:3".into(),
            hostname: "50ccf6e665e0".into(),
            networks: BTreeMap::new(),
            ..fixtures::container(env, &[(4001, Proto::Tcp, Some(49155))])
        };
        plan(&Arc::new(facts), &fixtures::placement())
            .records
            .remove(0)
    }

    #[test]
    fn the_default_layout_is_service_registrars() {
        let mut layout = EtcdLayout::new("/services", DEFAULT_PATH).unwrap();
        let record = record(&[("ENVIRONMENT", "prod"), ("NAME", "etc")]);
        let (_, private) = layout.entry("node1", &record);
        let doc: Value = serde_json::from_str(&private).unwrap();
        assert!(
            doc.get("env").is_none(),
            "the environment stays private by default"
        );
        layout.publish_env = true;
        let (key, value) = layout.entry("node1", &record);
        assert_eq!(key, "/services/prod/etc/4001/49155/50ccf6e665e0");
        let doc: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(
            doc,
            json!({
                "id": "50ccf6e665e0aaaa", "host": "node1", "ipaddress": "10.0.0.9",
                "env": {"ENVIRONMENT": "prod", "NAME": "etc"}, "tags": ["prod"],
                "name": "/jovial_albattani", "image": "etcd:3", "hostname": "50ccf6e665e0",
                "host_port": "49155", "proto": "tcp", "port": "4001", "path": key
            })
        );
    }

    #[test]
    fn elements_drop_when_unset_and_can_name_document_fields() {
        let record = record(&[("SERVICE_4001_NAME", "etcd_clients")]);
        let layout = EtcdLayout::new("services/", DEFAULT_PATH).unwrap();
        assert_eq!(
            layout.entry("node1", &record).0,
            "/services/etcd_clients/49155/50ccf6e665e0"
        );
        let custom = EtcdLayout::new(
            "/x",
            "string:dc1,service:HOST,service:IPADDRESS,service:IMAGE",
        )
        .unwrap();
        assert_eq!(
            custom.entry("node1", &record).0,
            "/x/dc1/node1/10.0.0.9/etcd:3"
        );
    }

    #[test]
    fn bad_elements_are_refused_with_their_text() {
        for (path, needle) in [
            ("environment", "not TYPE:NAME"),
            ("container:HOSTNAME", "unknown type"),
            ("service:HOST-NAME", "not TYPE:NAME"),
            (" , ", "no elements"),
        ] {
            let error = EtcdLayout::new("/services", path).unwrap_err();
            assert!(error.contains(needle), "{path}: {error}");
        }
    }
}
