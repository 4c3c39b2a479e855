//! What the agent knows of a container (read from Docker's inspect answer by `docker.rs`) and
//! the rules that turn it into registrations: which ports, the service name, tags, metadata,
//! address and version. Pure: no I/O, so every rule is unit-tested here.
//!
//! The rules are registrator's and service-registrar's, in this order of precedence:
//! `SERVICE_<port>_NAME`, `SERVICE_NAME`, `NAME` / `APP`, else the image's base name; a name
//! that is not port-specific gets `-<port>` when the container has several ports to register.

use berth_domain::{InstanceDefaults, InstanceDraft, InstanceSpec, ServiceName};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Metadata keys the agent writes on every record it owns.
pub const META_HOST: &str = "berth.agent.host";
pub const META_CONTAINER: &str = "berth.agent.container";
pub const META_CONTAINER_ID: &str = "berth.agent.container_id";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopped,
}

/// The container's Docker HEALTHCHECK state; `None` when it has no health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// One port of a container: `8080/tcp`, and where the host publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub port: u16,
    pub proto: Proto,
    pub published: Option<Published>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The host address it is bound to; `None` for every address (0.0.0.0 or ::).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
}

/// A container as the rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFacts {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from it (`registry:5000/team/web:1.2`).
    pub image: String,
    pub hostname: String,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub health: Health,
    /// `--network host`: the ports are the host's own.
    pub host_network: bool,
    pub ports: Vec<ContainerPort>,
    /// Network name → the container's address on it.
    pub networks: BTreeMap<String, IpAddr>,
}

impl ContainerFacts {
    /// Running, not paused, and healthy when it has a health check.
    pub fn serving(&self) -> bool {
        self.state == RunState::Running && matches!(self.health, Health::None | Health::Healthy)
    }

    /// A setting from a label or, failing that, the environment (labels win, as registrator).
    fn setting(&self, key: &str) -> Option<&str> {
        self.labels
            .get(key)
            .or_else(|| self.env.get(key))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every setting, labels over environment.
    fn settings(&self) -> BTreeMap<&str, &str> {
        let mut all: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all
    }

    /// The first 12 characters of the id (Docker's short form), whatever the id holds.
    pub fn short_id(&self) -> &str {
        match self.id.char_indices().nth(12) {
            Some((end, _)) => &self.id[..end],
            None => &self.id,
        }
    }
}

/// Parses `KEY=VALUE` environment entries; the value is everything after the first `=`.
pub fn parse_env(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .filter_map(|entry| {
            let (key, value) = entry.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Where and how this agent registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// This host's id: part of every record's id, and its owner mark.
    pub host_id: String,
    /// The address published ports are reached at.
    pub advertise: IpAddr,
    /// Register containers' own addresses and ports (for user networks) instead of published
    /// ports.
    pub internal: bool,
    /// With `internal`, the network whose address to take (default: the first by name).
    pub internal_network: Option<String>,
    /// Tags added to every record.
    pub extra_tags: Vec<String>,
    /// The TTL records are registered with.
    pub ttl: Duration,
    /// Register only containers with this label (`KEY` or `KEY=VALUE`).
    pub only_label: Option<(String, Option<String>)>,
}

/// One registration the agent wants for a container port, validated by the domain's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub spec: InstanceSpec,
    pub container: Arc<ContainerFacts>,
    pub proto: Proto,
    pub container_port: u16,
    pub host_port: Option<u16>,
}

/// What a container should have registered, and what could not be registered and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub records: Vec<Record>,
    pub problems: Vec<String>,
}

/// `registry:5000/team/web:1.2@sha256:…` → (`web`, `Some("1.2")`); no tag is `latest`. A
/// container created from a bare image id has neither (an empty name).
pub fn image_name_and_tag(image: &str) -> (String, Option<String>) {
    if image.starts_with("sha256:") {
        return (String::new(), None);
    }
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((name, tag)) => (name.to_string(), Some(tag.to_string())),
        None if image.contains('@') => (last.to_string(), None),
        None => (last.to_string(), Some("latest".to_string())),
    }
}

fn truthy(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"))
}

fn split_tags(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
}

/// Settings that are rules, not metadata.
const RESERVED: &[&str] = &["NAME", "TAGS", "IGNORE", "ID"];

/// The records a container should have. Empty when it is not serving (stopped, paused,
/// starting or unhealthy) or ignored.
pub fn plan(container: &Arc<ContainerFacts>, placement: &Placement) -> Plan {
    let mut plan = Plan::default();
    let selected = match &placement.only_label {
        None => true,
        Some((key, value)) => match (container.labels.get(key), value) {
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
            (None, _) => false,
        },
    };
    if !selected || !container.serving() || truthy(container.setting("SERVICE_IGNORE")) {
        return plan;
    }
    // (container port, proto, address, port)
    let mut targets: Vec<(&ContainerPort, IpAddr, u16)> = Vec::new();
    for port in &container.ports {
        if truthy(container.setting(&format!("SERVICE_{}_IGNORE", port.port))) {
            continue;
        }
        if placement.internal && !container.host_network {
            let network = match &placement.internal_network {
                Some(name) => container.networks.get(name),
                None => container.networks.values().next(),
            };
            match network {
                Some(ip) => targets.push((port, *ip, port.port)),
                None => plan.problems.push(format!(
                    "container {}: port {}/{}: no address on {}",
                    container.name,
                    port.port,
                    port.proto.as_str(),
                    placement
                        .internal_network
                        .as_deref()
                        .unwrap_or("any network")
                )),
            }
        } else if container.host_network {
            targets.push((port, placement.advertise, port.port));
        } else if let Some(published) = port.published {
            let address = published.host_ip.unwrap_or(placement.advertise);
            targets.push((port, address, published.host_port));
        }
    }
    let several = targets.len() > 1;
    let settings = container.settings();
    let (image_name, image_tag) = image_name_and_tag(&container.image);
    for (port, address, published_port) in targets {
        let port_prefix = format!("SERVICE_{}_", port.port);
        let name = match container.setting(&format!("{port_prefix}NAME")) {
            Some(name) => name.to_string(),
            None => {
                let base = container
                    .setting("SERVICE_NAME")
                    .or_else(|| container.setting("NAME"))
                    .or_else(|| container.setting("APP"))
                    .unwrap_or(if image_name.is_empty() {
                        &container.name
                    } else {
                        &image_name
                    });
                if several {
                    format!("{base}-{}", port.port)
                } else {
                    base.to_string()
                }
            }
        };
        // The domain sorts tags and drops repeats.
        let tag_source = container
            .setting(&format!("{port_prefix}TAGS"))
            .or_else(|| container.setting("SERVICE_TAGS"))
            .or_else(|| container.setting("TAGS"));
        let environment = container.setting("ENVIRONMENT").map(String::from);
        let tags: Vec<String> = tag_source
            .into_iter()
            .flat_map(split_tags)
            .chain(environment)
            .chain(placement.extra_tags.iter().cloned())
            .collect();
        let mut meta: BTreeMap<String, String> = BTreeMap::new();
        // General settings first, so the port's own override them.
        for (key, value) in &settings {
            let Some(rest) = key.strip_prefix("SERVICE_") else {
                continue;
            };
            let general = !rest.starts_with(|c: char| c.is_ascii_digit());
            if general && !RESERVED.contains(&rest) && !value.is_empty() {
                meta.insert(rest.to_ascii_lowercase(), value.to_string());
            }
        }
        for (key, value) in &settings {
            if let Some(rest) = key.strip_prefix(&port_prefix)
                && !RESERVED.contains(&rest)
                && !value.is_empty()
            {
                meta.insert(rest.to_ascii_lowercase(), value.to_string());
            }
        }
        meta.insert(META_HOST.into(), placement.host_id.clone());
        meta.insert(META_CONTAINER.into(), container.name.clone());
        meta.insert(META_CONTAINER_ID.into(), container.short_id().to_string());
        let udp = if port.proto == Proto::Udp { ":udp" } else { "" };
        let id = format!(
            "{}:{}:{}{udp}",
            placement.host_id, container.name, port.port
        );
        let draft = InstanceDraft {
            id: Some(id.clone()),
            address: Some(address.to_string()),
            port: Some(i64::from(published_port)),
            ttl_ms: Some(placement.ttl.as_millis() as i64),
            version: image_tag.clone(),
            tags,
            meta,
            ..InstanceDraft::default()
        };
        let problem = |why: String| {
            format!(
                "container {}: port {}/{}: {why}",
                container.name,
                port.port,
                port.proto.as_str()
            )
        };
        if let Err(error) = ServiceName::parse("service", &name) {
            plan.problems
                .push(problem(format!("service name {name:?} {}", error.message)));
            continue;
        }
        match draft.validate(&name, Some(&id), &InstanceDefaults::default()) {
            Ok(spec) => plan.records.push(Record {
                spec,
                container: container.clone(),
                proto: port.proto,
                container_port: port.port,
                host_port: port.published.map(|p| p.host_port),
            }),
            Err(errors) => plan.problems.push(problem(errors.to_string())),
        }
    }
    plan
}

/// Containers and placements for the tests of this crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn container(
        env: &[(&str, &str)],
        ports: &[(u16, Proto, Option<u16>)],
    ) -> ContainerFacts {
        ContainerFacts {
            id: "0123456789abcdef0123".into(),
            name: "web1".into(),
            image: "registry.local:5000/team/web:1.2.3".into(),
            hostname: "0123456789ab".into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: BTreeMap::new(),
            state: RunState::Running,
            health: Health::None,
            host_network: false,
            ports: ports
                .iter()
                .map(|(port, proto, host_port)| ContainerPort {
                    port: *port,
                    proto: *proto,
                    published: host_port.map(|host_port| Published {
                        host_ip: None,
                        host_port,
                    }),
                })
                .collect(),
            networks: BTreeMap::from([("bridge".to_string(), "172.17.0.5".parse().unwrap())]),
        }
    }

    pub(crate) fn placement() -> Placement {
        Placement {
            host_id: "node1".into(),
            advertise: "10.0.0.9".parse().unwrap(),
            internal: false,
            internal_network: None,
            extra_tags: vec![],
            ttl: Duration::from_secs(15),
            only_label: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{container, placement};
    use super::*;

    fn records(facts: ContainerFacts, placement: &Placement) -> Vec<Record> {
        let plan = plan(&Arc::new(facts), placement);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        plan.records
    }

    fn names(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| r.spec.service().as_str()).collect()
    }

    #[test]
    fn one_published_port_is_named_after_the_image() {
        let found = records(
            container(&[], &[(8080, Proto::Tcp, Some(49155))]),
            &placement(),
        );
        assert_eq!(found.len(), 1);
        let spec = &found[0].spec;
        assert_eq!(spec.service().as_str(), "web");
        assert_eq!(spec.id().as_str(), "node1:web1:8080");
        assert_eq!(
            (spec.address().to_string(), spec.port()),
            ("10.0.0.9".to_string(), 49155)
        );
        assert_eq!(spec.version(), Some("1.2.3"));
        assert_eq!(spec.ttl(), Duration::from_secs(15));
        assert_eq!(spec.meta()[META_HOST], "node1");
        assert_eq!(spec.meta()[META_CONTAINER], "web1");
        assert_eq!(spec.meta()[META_CONTAINER_ID], "0123456789ab");
    }

    #[test]
    fn several_ports_get_a_suffix_unless_named_per_port() {
        let facts = container(
            &[("SERVICE_9090_NAME", "metrics")],
            &[
                (8080, Proto::Tcp, Some(1)),
                (9090, Proto::Tcp, Some(2)),
                (53, Proto::Udp, Some(3)),
            ],
        );
        let found = records(facts, &placement());
        assert_eq!(names(&found), vec!["web-8080", "metrics", "web-53"]);
        assert_eq!(found[2].spec.id().as_str(), "node1:web1:53:udp");
        // SERVICE_NAME, NAME and APP, in that order, replace the image's name.
        for (key, expected) in [("SERVICE_NAME", "api"), ("NAME", "etc"), ("APP", "shop")] {
            let facts = container(
                &[(key, expected), ("APP", "shop")],
                &[(80, Proto::Tcp, Some(1))],
            );
            assert_eq!(
                names(&records(facts, &placement())),
                vec![expected],
                "{key}"
            );
        }
    }

    #[test]
    fn unpublished_ports_are_skipped_and_internal_mode_takes_the_container_address() {
        let facts = container(
            &[],
            &[(8080, Proto::Tcp, None), (9090, Proto::Tcp, Some(40000))],
        );
        let published = records(facts.clone(), &placement());
        assert_eq!(
            names(&published),
            vec!["web"],
            "one port to register: no suffix"
        );
        let internal = Placement {
            internal: true,
            ..placement()
        };
        let found = records(facts, &internal);
        let addresses: Vec<String> = found
            .iter()
            .map(|r| r.spec.address().with_port(r.spec.port()))
            .collect();
        assert_eq!(addresses, vec!["172.17.0.5:8080", "172.17.0.5:9090"]);
        let missing = Placement {
            internal: true,
            internal_network: Some("backend".into()),
            ..placement()
        };
        let plan = plan(
            &Arc::new(container(&[], &[(8080, Proto::Tcp, None)])),
            &missing,
        );
        assert!(plan.records.is_empty());
        assert!(
            plan.problems[0].contains("no address on backend"),
            "{:?}",
            plan.problems
        );
    }

    #[test]
    fn a_host_bound_port_uses_its_host_address() {
        let mut facts = container(&[], &[(8080, Proto::Tcp, Some(8081))]);
        facts.ports[0].published = Some(Published {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: 8081,
        });
        let found = records(facts, &placement());
        assert_eq!(
            found[0].spec.address().with_port(found[0].spec.port()),
            "127.0.0.1:8081"
        );
    }

    #[test]
    fn tags_metadata_and_environment() {
        let facts = container(
            &[
                ("SERVICE_TAGS", "blue, green,,blue"),
                ("SERVICE_8080_TAGS", "http"),
                ("ENVIRONMENT", "prod"),
                ("SERVICE_REGION", "eu"),
                ("SERVICE_8080_REGION", "us"),
                ("SERVICE_OWNER", "payments"),
                ("UNRELATED", "x"),
            ],
            &[(8080, Proto::Tcp, Some(1)), (9090, Proto::Tcp, Some(2))],
        );
        let placement = Placement {
            extra_tags: vec!["docker".into()],
            ..placement()
        };
        let found = records(facts, &placement);
        // The domain keeps tags sorted and distinct.
        assert_eq!(found[0].spec.tags(), vec!["docker", "http", "prod"]);
        assert_eq!(
            found[1].spec.tags(),
            vec!["blue", "docker", "green", "prod"]
        );
        assert_eq!(
            found[0].spec.meta()["region"],
            "us",
            "the port's own setting wins"
        );
        assert_eq!(found[1].spec.meta()["region"], "eu");
        assert_eq!(found[1].spec.meta()["owner"], "payments");
        assert!(!found[1].spec.meta().contains_key("unrelated"));
        assert!(!found[1].spec.meta().contains_key("tags"));
        // TAGS (service-registrar) when SERVICE_TAGS is absent.
        let facts = container(&[("TAGS", "a,b")], &[(80, Proto::Tcp, Some(1))]);
        assert_eq!(
            records(facts, &placement).remove(0).spec.tags(),
            vec!["a", "b", "docker"]
        );
    }

    #[test]
    fn labels_win_over_the_environment() {
        let mut facts = container(
            &[("SERVICE_NAME", "from-env")],
            &[(80, Proto::Tcp, Some(1))],
        );
        facts
            .labels
            .insert("SERVICE_NAME".into(), "from-label".into());
        assert_eq!(names(&records(facts, &placement())), vec!["from-label"]);
    }

    #[test]
    fn ignored_stopped_paused_and_unhealthy_containers_have_no_records() {
        let ports = [(80, Proto::Tcp, Some(1)), (81, Proto::Tcp, Some(2))];
        let ignored = container(&[("SERVICE_IGNORE", "true")], &ports);
        assert!(records(ignored, &placement()).is_empty());
        let one_port_ignored = container(&[("SERVICE_81_IGNORE", "1")], &ports);
        assert_eq!(names(&records(one_port_ignored, &placement())), vec!["web"]);
        let not_ignored = container(&[("SERVICE_IGNORE", "false")], &ports);
        assert_eq!(records(not_ignored, &placement()).len(), 2);
        for (state, health, serving) in [
            (RunState::Paused, Health::None, false),
            (RunState::Stopped, Health::None, false),
            (RunState::Running, Health::Starting, false),
            (RunState::Running, Health::Unhealthy, false),
            (RunState::Running, Health::Healthy, true),
        ] {
            let mut facts = container(&[], &ports);
            facts.state = state;
            facts.health = health;
            assert_eq!(
                !records(facts, &placement()).is_empty(),
                serving,
                "{state:?} {health:?}"
            );
        }
    }

    #[test]
    fn only_labelled_containers_when_asked() {
        let only = |label: &str| Placement {
            only_label: Some(match label.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (label.to_string(), None),
            }),
            ..placement()
        };
        let mut facts = container(&[], &[(80, Proto::Tcp, Some(1))]);
        facts.labels.insert("team".into(), "payments".into());
        assert_eq!(records(facts.clone(), &only("team")).len(), 1);
        assert_eq!(records(facts.clone(), &only("team=payments")).len(), 1);
        assert!(records(facts.clone(), &only("team=search")).is_empty());
        assert!(records(facts, &only("tier")).is_empty());
    }

    #[test]
    fn names_berth_cannot_hold_are_reported_not_registered() {
        let facts = container(&[("SERVICE_NAME", "My App")], &[(80, Proto::Tcp, Some(1))]);
        let plan = plan(&Arc::new(facts), &placement());
        assert!(plan.records.is_empty());
        assert!(
            plan.problems[0].contains("\"My App\""),
            "{:?}",
            plan.problems
        );
    }

    #[test]
    fn image_names_and_tags() {
        for (image, name, tag) in [
            ("redis", "redis", Some("latest")),
            ("redis:7.2", "redis", Some("7.2")),
            ("docker.io/library/redis:7", "redis", Some("7")),
            ("registry:5000/team/app", "app", Some("latest")),
            ("registry:5000/team/app:1.0@sha256:abc", "app", Some("1.0")),
            ("team/app@sha256:abc", "app", None),
            ("sha256:0123abcd", "", None),
        ] {
            assert_eq!(
                image_name_and_tag(image),
                (name.to_string(), tag.map(String::from)),
                "{image}"
            );
        }
    }

    #[test]
    fn environment_values_keep_their_equals_signs() {
        let env = parse_env(&["A=b=c".into(), "K=".into(), "BARE".into()]);
        assert_eq!(env["A"], "b=c");
        assert_eq!(env["K"], "");
        assert!(!env.contains_key("BARE"));
    }

    /// Found by the `docker_records` fuzz target: a short id cut inside a character panicked.
    #[test]
    fn a_short_id_never_cuts_a_character() {
        let mut facts = container(&[], &[(8080, Proto::Tcp, Some(49155))]);
        facts.id = "ééééééééééééééé".into();
        assert_eq!(facts.short_id(), "éééééééééééé");
        facts.id = "abc".into();
        assert_eq!(facts.short_id(), "abc");
        plan(&Arc::new(facts), &placement());
    }
}
