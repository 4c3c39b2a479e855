//! berth's DNS surface: live services (A/AAAA/SRV, by tag, protocol and zone), single
//! instances, and the port catalog (SRV/TXT), answered from the registry's in-memory view on
//! UDP and TCP. Authoritative for its domain only: anything else is refused, so berth is never
//! an open resolver. An answer that does not fit is never cut: it sets TC and carries nothing,
//! and the TCP answer carries every record.

mod answer;
mod names;

use berth_registry::Registry;
use hickory_proto::rr::Name;
use hickory_server::Server;
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

pub use answer::DnsHandler;
/// A domain name, as the configuration gives it.
pub use hickory_proto::rr::Name as DomainName;

/// What the DNS surface answers and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// The domain berth is authoritative for (`berth.`).
    pub domain: Name,
    /// TTL of live answers (`.service.`, `.instance.`, `.addr.`) by service-name prefix: the
    /// longest matching prefix wins (`""` matches every service). Unlisted services get 0.
    pub service_ttl: Vec<(String, u32)>,
    /// TTL of catalog answers (`.app.`).
    pub catalog_ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: Name::from_ascii("berth.").expect("a valid name"),
            service_ttl: Vec::new(),
            catalog_ttl: 60,
        }
    }
}

/// The default address of the DNS listener (Consul's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8600";

/// How long a TCP connection may stay without sending a query.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Serves DNS on the bound UDP socket and TCP listener until `shutdown` resolves.
pub async fn serve(
    registry: Registry,
    config: DnsConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut server = Server::new(DnsHandler::new(registry, config));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64 * 1024);
    shutdown.await;
    server
        .shutdown_gracefully()
        .await
        .map_err(|error| std::io::Error::other(error.to_string()))
}
