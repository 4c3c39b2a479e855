//! Every connected xDS stream, for `GET /v1/xds/clients` and the metrics: the node's id,
//! cluster and locality, the protocol, and per resource type the version it acknowledged
//! last and its last rejection (NACK) with the client's message.

use crate::resources::Kind;
use envoy_types::pb::envoy::config::core::v3::Node;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
struct TypeReport {
    acked_version: Option<String>,
    last_nack: Option<(String, String)>,
    nacks: u64,
}

#[derive(Clone, Debug)]
struct Client {
    node_id: String,
    cluster: String,
    zone: String,
    region: String,
    user_agent: String,
    protocol: &'static str,
    types: BTreeMap<&'static str, TypeReport>,
}

/// The streams of one server.
#[derive(Default)]
pub struct Clients {
    streams: Mutex<HashMap<u64, Client>>,
    next_id: AtomicU64,
}

/// One stream's entry; removed when dropped.
pub struct ClientEntry {
    clients: Arc<Clients>,
    id: u64,
}

impl Clients {
    pub fn open(self: &Arc<Self>, protocol: &'static str) -> ClientEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Client {
                node_id: String::new(),
                cluster: String::new(),
                zone: String::new(),
                region: String::new(),
                user_agent: String::new(),
                protocol,
                types: BTreeMap::new(),
            },
        );
        metrics::gauge!("berth_xds_streams").increment(1.0);
        ClientEntry {
            clients: self.clone(),
            id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Client>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every connected stream, by node id.
    pub fn report(&self) -> Value {
        let mut clients: Vec<Client> = self.lock().values().cloned().collect();
        clients.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let clients: Vec<Value> = clients
            .into_iter()
            .map(|client| {
                let types: serde_json::Map<String, Value> = client
                    .types
                    .into_iter()
                    .map(|(kind, report)| {
                        (
                            kind.to_string(),
                            json!({
                                "acked_version": report.acked_version,
                                "nacks": report.nacks,
                                "last_nack": report.last_nack.map(|(version, message)| json!({
                                    "version": version,
                                    "message": message,
                                })),
                            }),
                        )
                    })
                    .collect();
                json!({
                    "node_id": client.node_id,
                    "cluster": client.cluster,
                    "locality": {"region": client.region, "zone": client.zone},
                    "user_agent": client.user_agent,
                    "protocol": client.protocol,
                    "types": types,
                })
            })
            .collect();
        json!({ "clients": clients })
    }
}

impl ClientEntry {
    fn update(&self, change: impl FnOnce(&mut Client)) {
        if let Some(client) = self.clients.lock().get_mut(&self.id) {
            change(client);
        }
    }

    pub fn identify(&self, node: &Node) {
        self.update(|client| {
            client.node_id = node.id.clone();
            client.cluster = node.cluster.clone();
            if let Some(locality) = &node.locality {
                client.zone = locality.zone.clone();
                client.region = locality.region.clone();
            }
            client.user_agent = node.user_agent_name.clone();
        });
    }

    pub fn acked(&self, kind: Kind, version: &str) {
        self.update(|client| {
            client.types.entry(kind.short()).or_default().acked_version = Some(version.to_string());
        });
    }

    pub fn nacked(&self, kind: Kind, version: &str, message: &str) {
        metrics::counter!("berth_xds_nacks_total", "type" => kind.short()).increment(1);
        tracing::warn!(
            r#type = kind.short(),
            version,
            message,
            "an xDS client rejected a response; it is not sent again until the resources change"
        );
        self.update(|client| {
            let report = client.types.entry(kind.short()).or_default();
            report.nacks += 1;
            report.last_nack = Some((version.to_string(), message.to_string()));
        });
    }
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
        metrics::gauge!("berth_xds_streams").decrement(1.0);
    }
}
