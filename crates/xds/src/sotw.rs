//! One state-of-the-world ADS stream: what the client subscribed to per resource type, what
//! it was sent (name → version), and the nonce of the last response. A response goes out only
//! when a subscribed resource changed or the subscription did; a rejected (NACKed) response is
//! recorded and never sent again, since what was sent stays recorded as sent until the
//! resources change. Types are pushed in make-before-break order (CDS, EDS, LDS, RDS), and a
//! cluster that changed gets its endpoints again so Envoy finishes warming it.

use crate::resources::Kind;
use crate::snapshot::Snapshot;
use crate::{Protocol, Stream};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tonic::Status;

#[derive(Default)]
pub(crate) struct TypeState {
    asked: bool,
    wildcard: bool,
    /// Named once: an empty request no longer means "everything" (legacy wildcard).
    ever_named: bool,
    names: BTreeSet<String>,
    sent: HashMap<String, i64>,
    nonce: Option<String>,
    must_answer: bool,
}

impl Protocol for TypeState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    /// Takes a request: its ACK or NACK, and its subscription. The kind to answer for, if
    /// the request is current (a stale nonce is ignored, as the protocol says).
    fn on_request(
        stream: &mut Stream<Self>,
        request: DiscoveryRequest,
    ) -> Result<Option<Kind>, Status> {
        if let Some(node) = &request.node {
            stream.identify(node);
        }
        let Some(kind) = Kind::of_type_url(&request.type_url) else {
            tracing::debug!(
                type_url = request.type_url,
                "an xDS request for a type berth does not serve"
            );
            return Ok(None);
        };
        let state = stream.types.entry(kind).or_default();
        // A nonce this stream never issued (a client that moved from another node) is a fresh
        // subscription; one older than the latest is stale.
        if !request.response_nonce.is_empty()
            && state
                .nonce
                .as_deref()
                .is_some_and(|latest| latest != request.response_nonce)
        {
            return Ok(None);
        }
        if let Some(error) = &request.error_detail {
            stream
                .entry
                .nacked(kind, &request.version_info, &error.message);
        } else if !request.response_nonce.is_empty() {
            stream.entry.acked(kind, &request.version_info);
        }
        let names: BTreeSet<String> = request.resource_names.into_iter().collect();
        let named: BTreeSet<String> = names.iter().filter(|n| *n != "*").cloned().collect();
        if !named.is_empty() {
            state.ever_named = true;
        }
        let wildcard = names.contains("*")
            || (names.is_empty() && !state.ever_named && kind.full_state_in_sotw());
        let changed = !state.asked || wildcard != state.wildcard || named != state.names;
        state.asked = true;
        state.wildcard = wildcard;
        state.names = named;
        for name in &state.names {
            let service = crate::service_of(kind, name);
            if !stream.shared.may_read(&stream.caller, service) {
                return Err(Status::permission_denied(format!(
                    "the token may not read service {service} (resource {name}): it needs a \
                     read grant for it"
                )));
            }
        }
        if !wildcard {
            let names = &state.names;
            state.sent.retain(|name, _| names.contains(name));
        }
        if changed {
            state.must_answer = true;
        }
        Ok(Some(kind))
    }

    /// The response `kind` needs now, if any.
    /// The responses `kind` needs now: none, one, or (EDS and RDS) one per 8 KiB.
    fn respond(
        stream: &mut Stream<Self>,
        kind: Kind,
        snapshot: &Snapshot,
    ) -> Vec<DiscoveryResponse> {
        let resources = &stream.shared.resources;
        let Some(state) = stream.types.get_mut(&kind) else {
            return Vec::new();
        };
        if !state.asked {
            return Vec::new();
        }
        let scope: Vec<String> = if state.wildcard {
            resources
                .wildcard_names(snapshot, kind)
                .into_iter()
                .filter(|name| {
                    stream
                        .shared
                        .may_read(&stream.caller, crate::service_of(kind, name))
                })
                .collect()
        } else {
            state.names.iter().cloned().collect()
        };
        let current: Vec<_> = scope
            .iter()
            .filter_map(|name| resources.get(snapshot, kind, name, stream.locality.as_ref()))
            .collect();
        let is_new =
            |r: &&Arc<crate::snapshot::Resource>| state.sent.get(&r.name) != Some(&r.version);
        let changed = current.iter().any(|r| is_new(&r));
        let removed = kind.full_state_in_sotw()
            && state
                .sent
                .keys()
                .any(|name| !current.iter().any(|r| &r.name == name));
        let must_answer = std::mem::take(&mut state.must_answer) && kind.full_state_in_sotw();
        if !(changed || removed || must_answer) {
            return Vec::new();
        }
        let to_send: Vec<_> = if kind.full_state_in_sotw() {
            current
        } else {
            current.into_iter().filter(|r| is_new(&r)).collect()
        };
        let mut changed_clusters = Vec::new();
        if kind.full_state_in_sotw() {
            for resource in &to_send {
                if state.sent.get(&resource.name) != Some(&resource.version) {
                    changed_clusters.push(resource.name.clone());
                }
            }
            state.sent = to_send
                .iter()
                .map(|r| (r.name.clone(), r.version))
                .collect();
        } else {
            for resource in &to_send {
                state.sent.insert(resource.name.clone(), resource.version);
            }
        }
        let groups = if kind.full_state_in_sotw() {
            vec![to_send]
        } else {
            crate::in_responses(to_send, |r| r.body.value.len())
        };
        let mut responses = Vec::with_capacity(groups.len());
        for group in groups {
            stream.nonces += 1;
            let nonce = stream.nonces.to_string();
            state.nonce = Some(nonce.clone());
            metrics::counter!("berth_xds_responses_total", "type" => kind.short()).increment(1);
            responses.push(DiscoveryResponse {
                version_info: snapshot.revision.to_string(),
                resources: group.iter().map(|r| r.body.clone()).collect(),
                type_url: kind.type_url().to_string(),
                nonce,
                ..DiscoveryResponse::default()
            });
        }
        if kind == Kind::Cluster
            && let Some(endpoints) = stream.types.get_mut(&Kind::Endpoints)
        {
            // Envoy finishes warming a changed cluster only with a new load assignment.
            for cluster in &changed_clusters {
                endpoints.sent.remove(cluster);
            }
        }
        responses
    }
}
