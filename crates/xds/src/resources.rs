//! The xDS resources berth serves, made from the registry: a Cluster and a
//! ClusterLoadAssignment per service with live instances, and for proxyless gRPC an API
//! Listener and a RouteConfiguration per service (`xds:///S`, `xds:///S:port`); for bender's
//! routing, a Listener and RouteConfiguration per frontend (`frontend/NAME`) and a Cluster and
//! ClusterLoadAssignment per backend (`backend/NAME`: its app's instances at its version). Pure
//! functions of their inputs; encoding happens once per change in `snapshot.rs`.

use berth_domain::{Address, InstanceSpec};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus,
    Locality, Metadata, SocketAddress, address, config_source::ConfigSourceSpecifier,
    socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, Listener, filter::ConfigType as FilterConfigType,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType,
};
use envoy_types::pb::google::protobuf::{
    Any, Struct, UInt32Value, Value, value::Kind as ValueKind,
};
use prost::{Message, Name};
use std::collections::BTreeMap;

/// The resource types berth serves, in the order a change is pushed (make before break:
/// clusters before their endpoints, listeners before their routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cluster,
    Endpoints,
    Listener,
    Route,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cluster, Kind::Endpoints, Kind::Listener, Kind::Route];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn of_type_url(type_url: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.type_url() == type_url)
    }

    /// The short name used in metrics and `/v1/xds/clients`.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Cluster => "cds",
            Kind::Endpoints => "eds",
            Kind::Listener => "lds",
            Kind::Route => "rds",
        }
    }

    /// SotW responses of these types carry every subscribed resource (absence is deletion).
    pub fn full_state_in_sotw(self) -> bool {
        matches!(self, Kind::Cluster | Kind::Listener)
    }
}

fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..ConfigSource::default()
    }
}

/// The Cluster of `service`: endpoints by EDS over the same ADS stream, round robin (the one
/// policy every gRPC client supports), hosts removed at once when they leave the registry.
pub fn cluster(service: &str) -> Any {
    any(&Cluster {
        name: service.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: service.to_string(),
        }),
        lb_policy: LbPolicy::RoundRobin as i32,
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ignore_health_on_host_removal: true,
        ..Cluster::default()
    })
}

fn string_value(text: &str) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(text.to_string())),
    }
}

/// `envoy.lb` metadata for subset load balancing: `canary`, `version` and each tag.
fn endpoint_metadata(spec: &InstanceSpec) -> Metadata {
    let mut fields = BTreeMap::new();
    fields.insert(
        "canary".to_string(),
        Value {
            kind: Some(ValueKind::BoolValue(spec.canary())),
        },
    );
    if let Some(version) = spec.version() {
        fields.insert("version".to_string(), string_value(version));
    }
    for tag in spec.tags() {
        fields.insert(
            format!("tag:{tag}"),
            Value {
                kind: Some(ValueKind::BoolValue(true)),
            },
        );
    }
    Metadata {
        filter_metadata: [(
            "envoy.lb".to_string(),
            Struct {
                fields: fields.into_iter().collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Metadata::default()
    }
}

/// Where a client runs (its node's locality), for a load assignment that puts its own zone
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientLocality {
    pub region: String,
    pub zone: String,
}

/// The priority of a locality for a client: its own zone 0, its region 1, the rest 2.
fn nearness(region: &str, zone: &str, client: &ClientLocality) -> u32 {
    if zone == client.zone && region == client.region {
        0
    } else if !region.is_empty() && region == client.region {
        1
    } else {
        2
    }
}

/// The endpoints of `service`: one locality per (region, zone), each weighted by the sum of
/// its endpoints' weights (gRPC skips a locality without a weight). For a client with a zone,
/// its own zone comes at priority 0, its region next, the rest last, so traffic stays in the
/// zone while it is healthy; otherwise everything is at priority 0. Priorities are contiguous
/// from 0 (gRPC refuses sparse ones). Endpoint weights are instance weights, clamped to
/// [1, 128] as Consul does. Instances addressed by a DNS name are left out: EDS carries IP
/// addresses.
pub fn load_assignment<'a>(
    service: &str,
    instances: impl Iterator<Item = &'a InstanceSpec>,
    client: Option<&ClientLocality>,
) -> Any {
    let mut localities: BTreeMap<(String, String), Vec<LbEndpoint>> = BTreeMap::new();
    for spec in instances {
        let ip = match spec.address() {
            Address::V4(ip) => ip.to_string(),
            Address::V6(ip) => ip.to_string(),
            Address::Name(_) => continue,
        };
        let endpoint = LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip,
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(spec.port()))),
                        ..SocketAddress::default()
                    })),
                }),
                hostname: spec.id().to_string(),
                ..Endpoint::default()
            })),
            health_status: HealthStatus::Healthy as i32,
            metadata: Some(endpoint_metadata(spec)),
            load_balancing_weight: Some(UInt32Value {
                value: u32::from(spec.weight()).clamp(1, 128),
            }),
        };
        localities
            .entry((
                spec.region().unwrap_or_default().to_string(),
                spec.zone().unwrap_or_default().to_string(),
            ))
            .or_default()
            .push(endpoint);
    }
    let priority_of = |region: &str, zone: &str| client.map_or(0, |c| nearness(region, zone, c));
    let used: std::collections::BTreeSet<u32> = localities
        .keys()
        .map(|(region, zone)| priority_of(region, zone))
        .collect();
    let contiguous = |priority: u32| used.iter().take_while(|p| **p < priority).count() as u32;
    any(&ClusterLoadAssignment {
        cluster_name: service.to_string(),
        endpoints: localities
            .into_iter()
            .map(|((region, zone), lb_endpoints)| LocalityLbEndpoints {
                priority: contiguous(priority_of(&region, &zone)),
                locality: Some(Locality {
                    region,
                    zone,
                    ..Locality::default()
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: lb_endpoints
                        .iter()
                        .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                        .sum(),
                }),
                lb_endpoints,
                ..LocalityLbEndpoints::default()
            })
            .collect(),
        ..ClusterLoadAssignment::default()
    })
}

/// The service a gRPC target names: `S` or `S:port`.
pub fn service_of_target(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((service, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            service
        }
        _ => name,
    }
}

/// The names of the resources made for bender's routing. Service names cannot hold `/`, so
/// they never collide with a service's resources.
pub const FRONTEND: &str = "frontend/";
pub const BACKEND: &str = "backend/";

/// An HttpConnectionManager taking its routes by RDS (`route_config_name`) over ADS, with the
/// router filter last (gRPC fails every RPC without it).
fn http_manager(stat_prefix: &str, route_config_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_config_name.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
            ..HttpFilter::default()
        }],
        ..HttpConnectionManager::default()
    }
}

/// The API listener a gRPC client asks for as `name` (`S` or `S:port`), its routes the
/// RouteConfiguration named `service`.
pub fn api_listener(name: &str, service: &str) -> Any {
    any(&Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&http_manager(service, service))),
        }),
        ..Listener::default()
    })
}

/// A bender frontend as an Envoy listener (`name` is `frontend/NAME`): HTTP on `port` of every
/// address, routed by the RouteConfiguration of the same name.
pub fn frontend_listener(name: &str, port: u16) -> Any {
    let manager = http_manager(&name.replace('/', "_"), name);
    any(&Listener {
        name: name.to_string(),
        address: Some(EnvoyAddress {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".to_string(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(FilterConfigType::TypedConfig(any(&manager))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    })
}

/// The RouteConfiguration `name`: every request to the cluster `cluster`.
pub fn route_configuration(name: &str, cluster: &str) -> Any {
    any(&RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.replace('/', "_"),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix(String::new())),
                    ..RouteMatch::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_service_with_or_without_a_port() {
        assert_eq!(service_of_target("orders"), "orders");
        assert_eq!(service_of_target("orders:50051"), "orders");
        assert_eq!(service_of_target("orders:"), "orders:");
        assert_eq!(service_of_target("a:b"), "a:b");
    }

    fn spec(address: &str, region: &str, zone: &str) -> InstanceSpec {
        berth_domain::InstanceDraft {
            address: Some(address.into()),
            port: Some(80),
            region: Some(region.into()),
            zone: Some(zone.into()),
            ..Default::default()
        }
        .validate("web", None, &berth_domain::InstanceDefaults::default())
        .unwrap()
    }

    fn priorities(body: &Any) -> Vec<(String, u32)> {
        let assignment = ClusterLoadAssignment::decode(body.value.as_slice()).unwrap();
        assignment
            .endpoints
            .iter()
            .map(|l| (l.locality.clone().unwrap().zone, l.priority))
            .collect()
    }

    #[test]
    fn a_clients_own_zone_comes_first_and_priorities_stay_contiguous() {
        let specs = [
            spec("10.0.0.1", "eu", "a"),
            spec("10.0.0.2", "eu", "b"),
            spec("10.0.0.3", "us", "c"),
        ];
        let anyone = load_assignment("web", specs.iter(), None);
        assert_eq!(
            priorities(&anyone),
            [("a".into(), 0), ("b".into(), 0), ("c".into(), 0)]
        );
        let in_a = ClientLocality {
            region: "eu".into(),
            zone: "a".into(),
        };
        let near = load_assignment("web", specs.iter(), Some(&in_a));
        assert_eq!(
            priorities(&near),
            [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]
        );
        // No instance in the client's zone: the region is priority 0, not a gap.
        let in_z = ClientLocality {
            region: "eu".into(),
            zone: "z".into(),
        };
        let far = load_assignment("web", specs.iter(), Some(&in_z));
        assert_eq!(
            priorities(&far),
            [("a".into(), 0), ("b".into(), 0), ("c".into(), 1)]
        );
    }

    #[test]
    fn every_type_url_maps_back_to_its_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::of_type_url(kind.type_url()), Some(kind));
        }
        assert_eq!(
            Kind::of_type_url(&<Cluster as Name>::type_url()),
            Some(Kind::Cluster)
        );
    }
}
