//! One incremental (delta) ADS stream: subscriptions change by names added and removed, the
//! client says what it already has when it reconnects (`initial_resource_versions`), and a
//! response carries only the resources that changed plus the names that are gone or do not
//! exist (`removed_resources`, so a client never waits for a timeout). Subscription changes
//! apply even with a stale nonce, as the protocol says; a NACK is recorded and the rejected
//! versions are not sent again until they change.

use crate::resources::Kind;
use crate::snapshot::Snapshot;
use crate::{Protocol, Stream};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use std::collections::{BTreeSet, HashMap};
use tonic::Status;

#[derive(Default)]
pub(crate) struct TypeState {
    asked: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client has: name → version.
    sent: HashMap<String, String>,
    /// Named resources the client was told do not exist.
    told_missing: BTreeSet<String>,
    last_sent: Option<(String, String)>,
    /// The first request of a type is always answered (empty if need be), so a client that
    /// waits for it to finish initialising (Envoy's LDS and CDS) never waits for a timeout.
    must_answer: bool,
}

impl Protocol for TypeState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn on_request(
        stream: &mut Stream<Self>,
        request: DeltaDiscoveryRequest,
    ) -> Result<Option<Kind>, Status> {
        if let Some(node) = &request.node {
            stream.identify(node);
        }
        let Some(kind) = Kind::of_type_url(&request.type_url) else {
            return Ok(None);
        };
        let state = stream.types.entry(kind).or_default();
        if let Some(error) = &request.error_detail {
            let version = state
                .last_sent
                .as_ref()
                .filter(|(nonce, _)| *nonce == request.response_nonce)
                .map_or("", |(_, version)| version.as_str());
            stream.entry.nacked(kind, version, &error.message);
        } else if let Some((nonce, version)) = &state.last_sent
            && *nonce == request.response_nonce
        {
            stream.entry.acked(kind, version);
        }
        if !state.asked {
            state.asked = true;
            state.must_answer = true;
            state.sent.extend(request.initial_resource_versions);
            // The first request of LDS/CDS naming nothing is a wildcard subscription.
            if request.resource_names_subscribe.is_empty() && kind.full_state_in_sotw() {
                state.wildcard = true;
            }
        }
        for name in request.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                let service = crate::service_of(kind, &name);
                if !stream.shared.may_read(&stream.caller, service) {
                    return Err(Status::permission_denied(format!(
                        "the token may not read service {service} (resource {name}): it needs \
                         a read grant for it"
                    )));
                }
                state.told_missing.remove(&name);
                state.names.insert(name);
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(&name);
                state.sent.remove(&name);
                state.told_missing.remove(&name);
            }
        }
        Ok(Some(kind))
    }

    /// The responses `kind` needs now: none, or one per 8 KiB of changed resources (the
    /// removed names ride in the first).
    fn respond(
        stream: &mut Stream<Self>,
        kind: Kind,
        snapshot: &Snapshot,
    ) -> Vec<DeltaDiscoveryResponse> {
        let resources = &stream.shared.resources;
        let Some(state) = stream.types.get_mut(&kind) else {
            return Vec::new();
        };
        if !state.asked {
            return Vec::new();
        }
        let mut scope: BTreeSet<String> = state.names.clone();
        if state.wildcard {
            scope.extend(
                resources
                    .wildcard_names(snapshot, kind)
                    .into_iter()
                    .filter(|name| {
                        stream
                            .shared
                            .may_read(&stream.caller, crate::service_of(kind, name))
                    }),
            );
        }
        let mut to_send = Vec::new();
        let mut removed = Vec::new();
        for name in &scope {
            match resources.get(snapshot, kind, name, stream.locality.as_ref()) {
                Some(resource) => {
                    let version = resource.version_text();
                    if state.sent.get(name) != Some(&version) {
                        state.sent.insert(name.clone(), version.clone());
                        to_send.push(Resource {
                            name: name.clone(),
                            version,
                            resource: Some(resource.body.clone()),
                            ..Resource::default()
                        });
                    }
                }
                None => {
                    if state.sent.remove(name).is_some()
                        || (state.names.contains(name) && state.told_missing.insert(name.clone()))
                    {
                        removed.push(name.clone());
                    }
                }
            }
        }
        // Resources the client has that left the wildcard's scope (a service that went).
        let gone: Vec<String> = state
            .sent
            .keys()
            .filter(|name| !scope.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            state.sent.remove(&name);
            removed.push(name);
        }
        if to_send.is_empty() && removed.is_empty() && !std::mem::take(&mut state.must_answer) {
            return Vec::new();
        }
        state.must_answer = false;
        let changed_clusters: Vec<String> = match kind {
            Kind::Cluster => to_send.iter().map(|r| r.name.clone()).collect(),
            _ => Vec::new(),
        };
        let version = snapshot.revision.to_string();
        let mut groups = crate::in_responses(to_send, |r| {
            r.resource.as_ref().map_or(0, |body| body.value.len())
        });
        if groups.is_empty() {
            groups.push(Vec::new());
        }
        let mut removed = Some(removed);
        let mut responses = Vec::with_capacity(groups.len());
        for group in groups {
            stream.nonces += 1;
            let nonce = stream.nonces.to_string();
            state.last_sent = Some((nonce.clone(), version.clone()));
            metrics::counter!("berth_xds_responses_total", "type" => kind.short()).increment(1);
            responses.push(DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                resources: group,
                type_url: kind.type_url().to_string(),
                removed_resources: removed.take().unwrap_or_default(),
                nonce,
                ..DeltaDiscoveryResponse::default()
            });
        }
        if let Some(endpoints) = stream.types.get_mut(&Kind::Endpoints) {
            // Envoy finishes warming a changed cluster only with a new load assignment.
            for cluster in &changed_clusters {
                endpoints.sent.remove(cluster);
            }
        }
        responses
    }
}
