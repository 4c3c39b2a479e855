//! `berth xds bootstrap`: a ready bootstrap for an Envoy (JSON, for `envoy -c`) or a
//! proxyless gRPC client (`GRPC_XDS_BOOTSTRAP`) that points it at this berth's xDS listener.

use crate::cli::print_json;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum XdsCommand {
    /// Print a bootstrap for Envoy (default) or, with --grpc, for proxyless gRPC clients
    Bootstrap(BootstrapArgs),
}

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// berth's xDS addresses (host:port, comma separated: the nodes of one cluster), as
    /// `berth serve --xds-listen` serves them. Envoy balances its stream over them and moves to
    /// another when one goes; gRPC clients take them in order, as fallbacks
    #[arg(
        long,
        default_value = berth_xds::DEFAULT_LISTEN,
        value_name = "HOST:PORT,…",
        value_delimiter = ','
    )]
    pub xds_server: Vec<String>,
    /// A bootstrap for gRPC's xDS client (GRPC_XDS_BOOTSTRAP) instead of Envoy's
    #[arg(long)]
    pub grpc: bool,
    /// The node's id, shown in `/v1/xds/clients`
    #[arg(long, default_value = "berth-client", value_name = "ID")]
    pub node_id: String,
    /// The node's cluster (its own service)
    #[arg(long, default_value = "berth", value_name = "NAME")]
    pub cluster: String,
    /// The node's zone (its locality)
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// The node's region (its locality)
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Envoy: incremental (delta) xDS instead of state of the world
    #[arg(long, conflicts_with = "grpc")]
    pub delta: bool,
    /// Envoy: its admin interface (host:port)
    #[arg(long, default_value = "127.0.0.1:9901", value_name = "HOST:PORT")]
    pub admin: String,
    /// Envoy: an HTTP listener that sends every request to a service's cluster, as
    /// `HOST:PORT=SERVICE` (repeatable; an outbound sidecar, or an edge proxy)
    #[arg(
        long = "listener",
        value_name = "HOST:PORT=SERVICE",
        conflicts_with = "grpc"
    )]
    pub listeners: Vec<String>,
    /// berth's xDS listener speaks TLS (berth serve with --tls-cert-file): trust the
    /// certificates of the authorities in this PEM file
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Envoy: send this file's token to berth (`authorization: Bearer …`). gRPC clients
    /// cannot send one from a bootstrap: give them anonymous read or mutual TLS
    #[arg(long, value_name = "FILE", conflicts_with = "grpc")]
    pub token_file: Option<PathBuf>,
}

fn host_and_port(text: &str, what: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{what}: {text:?} is not HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| anyhow::anyhow!("{what}: {port:?} in {text:?} is not a port"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

fn socket_address(host: &str, port: u16) -> Value {
    json!({"socket_address": {"address": host, "port_value": port}})
}

fn node(args: &BootstrapArgs) -> Value {
    let mut locality = serde_json::Map::new();
    if let Some(zone) = &args.zone {
        locality.insert("zone".into(), json!(zone));
    }
    if let Some(region) = &args.region {
        locality.insert("region".into(), json!(region));
    }
    json!({"id": args.node_id, "cluster": args.cluster, "locality": locality})
}

/// An HTTP listener on `host:port` that routes everything to the cluster `service`.
fn envoy_listener(host: &str, port: u16, service: &str) -> Value {
    let name = format!("to-{service}-{port}");
    json!({
        "name": name,
        "address": socket_address(host, port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {
                    "name": name,
                    // The cluster comes by CDS, after the listener loads.
                    "validate_clusters": false,
                    "virtual_hosts": [{
                        "name": service,
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": service}}],
                    }],
                },
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    })
}

/// The bootstrap `args` describe.
pub fn bootstrap(args: &BootstrapArgs) -> anyhow::Result<Value> {
    let servers = args
        .xds_server
        .iter()
        .map(|server| host_and_port(server, "--xds-server"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.grpc {
        let servers: Vec<Value> = servers
            .iter()
            .map(|(host, port)| {
                json!({
                    "server_uri": format!("{host}:{port}"),
                    "channel_creds": [match &args.ca_file {
                        Some(ca) => json!({"type": "tls", "config": {"ca_certificate_file": ca.display().to_string()}}),
                        None => json!({"type": "insecure"}),
                    }],
                    "server_features": ["xds_v3", "ignore_resource_deletion"],
                })
            })
            .collect();
        return Ok(json!({"xds_servers": servers, "node": node(args)}));
    }
    let transport_socket = args.ca_file.as_ref().map(|ca| {
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": servers[0].0,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {"trusted_ca": {"filename": ca.display().to_string()}},
                },
            },
        })
    });
    let endpoints: Vec<Value> = servers
        .iter()
        .map(|(host, port)| json!({"endpoint": {"address": socket_address(host, *port)}}))
        .collect();
    let mut grpc_service = json!({"envoy_grpc": {"cluster_name": "berth_xds"}});
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
        grpc_service["initial_metadata"] =
            json!([{"key": "authorization", "value": format!("Bearer {}", token.trim())}]);
    }
    let mut listeners = Vec::new();
    for listener in &args.listeners {
        let (address, service) = listener
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--listener: {listener:?} is not HOST:PORT=SERVICE"))?;
        let (listen_host, listen_port) = host_and_port(address, "--listener")?;
        listeners.push(envoy_listener(&listen_host, listen_port, service));
    }
    // Addresses given by name are resolved by Envoy (a STATIC cluster takes IPs only).
    let by_name = servers
        .iter()
        .any(|(host, _)| host.parse::<std::net::IpAddr>().is_err());
    let mut cluster = json!({
        "name": "berth_xds",
        "type": if by_name { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": "berth_xds",
            "endpoints": [{"lb_endpoints": endpoints}],
        },
    });
    if by_name {
        // `localhost` is ::1 first on many systems; berth listens on IPv4 unless told otherwise.
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if let Some(transport_socket) = transport_socket {
        cluster["transport_socket"] = transport_socket;
    }
    let (admin_host, admin_port) = host_and_port(&args.admin, "--admin")?;
    Ok(json!({
        "node": node(args),
        "admin": {"address": socket_address(&admin_host, admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": if args.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
                "set_node_on_first_message_only": true,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "listeners": listeners,
            "clusters": [cluster],
        },
    }))
}

pub fn xds(command: XdsCommand) -> anyhow::Result<()> {
    match command {
        XdsCommand::Bootstrap(args) => print_json(&bootstrap(&args)?),
    }
}
