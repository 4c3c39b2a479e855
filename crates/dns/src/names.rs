//! The names berth answers under its domain, parsed from a query's labels (lowercased, the
//! domain already removed, leftmost first). Pure: no registry, no wire types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a name asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Question {
    /// The domain itself (SOA).
    Apex,
    /// `[<tag>.]<service>.service[.<zone>.zone]`, or RFC 2782's
    /// `_<service>._<protocol or tag>.service[.<zone>.zone]`.
    Service {
        service: String,
        filter: Filter,
        zone: Option<String>,
    },
    /// `_<kind>._tcp.<app>.app`: the external port the catalog gave `app` for `kind`.
    AppPort { app: String, kind: String },
    /// `<app>.app`: every port of `app`, as TXT.
    App { app: String },
    /// `<name>.backend` or RFC 2782's `_<name>._tcp.backend`: the live instances of a backend
    /// (an application at a version, as bender's users routed to).
    Backend { name: String },
    /// `<id>.<service>.instance`: one instance.
    Instance { service: String, id: String },
    /// `<hex>.addr`: an address an SRV answer names as its target (8 hex digits for IPv4, 32
    /// for IPv6).
    Addr(IpAddr),
}

/// How the instances of a service are narrowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    /// Instances carrying this tag.
    Tag(String),
    /// RFC 2782's `_tcp`: instances not marked as UDP.
    Tcp,
    /// RFC 2782's `_udp`: instances marked as UDP (tag `udp`, metadata `protocol=udp`, or the
    /// Docker agent's id ending in `:udp`).
    Udp,
}

/// The question a name under the domain asks, or `None` for a name berth never answers
/// (NXDOMAIN).
pub fn parse(labels: &[&str]) -> Option<Question> {
    match labels {
        [] => Some(Question::Apex),
        [rest @ .., "service", zone, "zone"] => service(rest, Some(zone)),
        [rest @ .., "service"] => service(rest, None),
        [kind, "_tcp", app, "app"] => Some(Question::AppPort {
            app: app.to_string(),
            kind: kind.strip_prefix('_')?.to_string(),
        }),
        [app, "app"] => Some(Question::App {
            app: app.to_string(),
        }),
        [name, "backend"] if !name.starts_with('_') => Some(Question::Backend {
            name: name.to_string(),
        }),
        [name, "_tcp", "backend"] => Some(Question::Backend {
            name: name.strip_prefix('_')?.to_string(),
        }),
        [id, service, "instance"] => Some(Question::Instance {
            service: service.to_string(),
            id: id.to_string(),
        }),
        [hex, "addr"] => address(hex).map(Question::Addr),
        _ => None,
    }
}

fn service(labels: &[&str], zone: Option<&str>) -> Option<Question> {
    let (service, filter) = match labels {
        [service] if !service.starts_with('_') => (service.to_string(), Filter::None),
        [tag, service] if !tag.starts_with('_') && !service.starts_with('_') => {
            (service.to_string(), Filter::Tag(tag.to_string()))
        }
        [service, label] => {
            let service = service.strip_prefix('_')?;
            let filter = match label.strip_prefix('_')? {
                "tcp" => Filter::Tcp,
                "udp" => Filter::Udp,
                tag => Filter::Tag(tag.to_string()),
            };
            (service.to_string(), filter)
        }
        _ => return None,
    };
    Some(Question::Service {
        service,
        filter,
        zone: zone.map(str::to_string),
    })
}

/// An address from its `.addr` label: the address's bytes in hex.
fn address(hex: &str) -> Option<IpAddr> {
    let byte = |index: usize| u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok();
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::new(
            byte(0)?,
            byte(1)?,
            byte(2)?,
            byte(3)?,
        ))),
        32 => {
            let mut octets = [0u8; 16];
            for (index, octet) in octets.iter_mut().enumerate() {
                *octet = byte(index)?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The `.addr` label of an address (the inverse of [`address`]).
pub fn address_label(address: IpAddr) -> String {
    let octets: Vec<u8> = match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    octets.iter().map(|octet| format!("{octet:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_question(service: &str, filter: Filter, zone: Option<&str>) -> Option<Question> {
        Some(Question::Service {
            service: service.into(),
            filter,
            zone: zone.map(Into::into),
        })
    }

    #[test]
    fn service_names() {
        assert_eq!(parse(&[]), Some(Question::Apex));
        assert_eq!(
            parse(&["web", "service"]),
            service_question("web", Filter::None, None)
        );
        assert_eq!(
            parse(&["primary", "web", "service"]),
            service_question("web", Filter::Tag("primary".into()), None)
        );
        assert_eq!(
            parse(&["_web", "_tcp", "service"]),
            service_question("web", Filter::Tcp, None)
        );
        // `_udp` means the protocol, not a tag named udp (Consul's trap).
        assert_eq!(
            parse(&["_web", "_udp", "service"]),
            service_question("web", Filter::Udp, None)
        );
        assert_eq!(
            parse(&["_web", "_primary", "service"]),
            service_question("web", Filter::Tag("primary".into()), None)
        );
        assert_eq!(
            parse(&["web", "service", "eu-1a", "zone"]),
            service_question("web", Filter::None, Some("eu-1a"))
        );
        assert_eq!(parse(&["service"]), None);
        assert_eq!(parse(&["a", "b", "web", "service"]), None);
        assert_eq!(parse(&["_web", "tcp", "service"]), None);
        assert_eq!(parse(&["web", "_tcp", "service"]), None);
    }

    #[test]
    fn catalog_instance_and_address_names() {
        assert_eq!(
            parse(&["_play", "_tcp", "splashpage", "app"]),
            Some(Question::AppPort {
                app: "splashpage".into(),
                kind: "play".into()
            })
        );
        assert_eq!(parse(&["play", "_tcp", "splashpage", "app"]), None);
        assert_eq!(
            parse(&["splashpage", "app"]),
            Some(Question::App {
                app: "splashpage".into()
            })
        );
        assert_eq!(
            parse(&["a1", "web", "instance"]),
            Some(Question::Instance {
                service: "web".into(),
                id: "a1".into()
            })
        );
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(address_label(v4), "0a000007");
        assert_eq!(parse(&["0a000007", "addr"]), Some(Question::Addr(v4)));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(
            parse(&[address_label(v6).as_str(), "addr"]),
            Some(Question::Addr(v6))
        );
        assert_eq!(parse(&["0a0000", "addr"]), None);
        assert_eq!(parse(&["zz000007", "addr"]), None);
        assert_eq!(
            parse(&["web-v2", "backend"]),
            Some(Question::Backend {
                name: "web-v2".into()
            })
        );
        assert_eq!(
            parse(&["_web-v2", "_tcp", "backend"]),
            Some(Question::Backend {
                name: "web-v2".into()
            })
        );
        assert_eq!(parse(&["_web-v2", "backend"]), None);
        assert_eq!(parse(&["nothing"]), None);
    }
}
