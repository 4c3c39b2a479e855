//! The Docker side, through bollard: connecting (negotiating the engine's API version, so an
//! older engine works), reading a container into `ContainerFacts`, listing the running ones,
//! and the engine's event stream, resumed from the last event seen after a disconnection.

use crate::container::{
    ContainerFacts, ContainerPort, Health, Proto, Published, RunState, parse_env,
};
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessageTypeEnum, HealthStatusEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures::{Stream, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Seconds a request to the engine may take before it counts as failed (not the event
/// stream, which stays open).
const REQUEST_TIMEOUT_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the Docker engine answered an error: {0}")]
    Api(String),
}

fn api_error(error: BollardError) -> DockerError {
    DockerError::Api(error.to_string())
}

/// Connects to `url` (`unix:///var/run/docker.sock`, a socket path, or `tcp://host:port`) and
/// agrees on the API version with the engine.
pub async fn connect(url: &str) -> Result<Docker, DockerError> {
    let unreachable = |detail: String| DockerError::Unreachable {
        url: url.to_string(),
        detail,
    };
    let docker = if let Some(address) = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("http://"))
    {
        Docker::connect_with_http(
            &format!("http://{address}"),
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
    } else {
        let path = url.strip_prefix("unix://").unwrap_or(url);
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    }
    .map_err(|e| unreachable(e.to_string()))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// The ids of the running containers.
pub async fn running_ids(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let containers = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await
        .map_err(api_error)?;
    Ok(containers.into_iter().filter_map(|c| c.id).collect())
}

/// The container as the rules need it; `None` when it no longer exists. An answer without the
/// container's id is an error of the engine (skipped and reported like a failed inspect), not
/// a sign that the container is gone: that would remove its records (defect M13).
pub async fn inspect(docker: &Docker, id: &str) -> Result<Option<ContainerFacts>, DockerError> {
    match docker.inspect_container(id, None).await {
        Ok(answer) => facts(answer).map(Some).ok_or_else(|| {
            DockerError::Api(format!("the inspect answer for container {id} has no id"))
        }),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(error) => Err(api_error(error)),
    }
}

fn specific_ip(text: Option<&str>) -> Option<IpAddr> {
    text.and_then(|t| t.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
}

/// `8080/tcp` → (8080, Tcp); other protocols (sctp) are not registered.
fn port_key(key: &str) -> Option<(u16, Proto)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, proto))
}

fn facts(answer: ContainerInspectResponse) -> Option<ContainerFacts> {
    let config = answer.config.unwrap_or_default();
    let state = answer.state.unwrap_or_default();
    let network = answer.network_settings.unwrap_or_default();
    let run_state = if state.paused == Some(true) {
        RunState::Paused
    } else if state.running == Some(true) && state.restarting != Some(true) {
        RunState::Running
    } else {
        RunState::Stopped
    };
    let health = match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    // Published ports, plus exposed ones that are not (for --internal and host networking).
    let mut ports: BTreeMap<(u16, Proto), Option<Published>> = BTreeMap::new();
    for key in config.exposed_ports.iter().flatten() {
        if let Some(port) = port_key(key) {
            ports.entry(port).or_insert(None);
        }
    }
    for (key, bindings) in network.ports.unwrap_or_default() {
        let Some(port) = port_key(&key) else { continue };
        // Docker lists one binding per address family; an IPv4 one is preferred.
        let mut bindings: Vec<Published> = bindings
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| {
                Some(Published {
                    host_ip: specific_ip(b.host_ip.as_deref()),
                    host_port: b.host_port?.parse().ok()?,
                })
            })
            .collect();
        bindings.sort_by_key(|b| !matches!(b.host_ip, None | Some(IpAddr::V4(_))));
        let published = bindings.into_iter().next();
        let entry = ports.entry(port).or_insert(None);
        if published.is_some() {
            *entry = published;
        }
    }
    let networks: BTreeMap<String, IpAddr> = network
        .networks
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, endpoint)| Some((name, specific_ip(endpoint.ip_address.as_deref())?)))
        .collect();
    let labels: HashMap<String, String> = config.labels.unwrap_or_default();
    Some(ContainerFacts {
        id: answer.id?,
        name: answer
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        hostname: config.hostname.unwrap_or_default(),
        env: parse_env(&config.env.unwrap_or_default()),
        labels: labels.into_iter().collect(),
        state: run_state,
        health,
        host_network: answer
            .host_config
            .and_then(|h| h.network_mode)
            .is_some_and(|mode| mode == "host"),
        ports: ports
            .into_iter()
            .map(|((port, proto), published)| ContainerPort {
                port,
                proto,
                published,
            })
            .collect(),
        networks,
    })
}

/// A container event that may change what it should have registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    pub action: String,
    /// Nanoseconds since the epoch, to resume the stream after it.
    pub time_nano: i64,
}

/// The actions that can change a container's registrations.
fn relevant(action: &str) -> bool {
    matches!(
        action,
        "start" | "die" | "stop" | "kill" | "pause" | "unpause" | "destroy" | "restart"
    ) || action.starts_with("health_status")
}

/// The engine's container events from `since_nano` on (the engine replays the ones already
/// past, so a reconnection loses none).
pub fn events(
    docker: &Docker,
    since_nano: i64,
) -> impl Stream<Item = Result<ContainerEvent, DockerError>> + use<> {
    let since = format!(
        "{}.{:09}",
        since_nano / 1_000_000_000,
        since_nano % 1_000_000_000
    );
    let options = EventsOptions {
        since: Some(since),
        until: None,
        filters: Some(HashMap::from([(
            "type".to_string(),
            vec!["container".to_string()],
        )])),
    };
    docker.events(Some(options)).filter_map(|item| async move {
        match item {
            Err(error) => Some(Err(api_error(error))),
            Ok(message) => {
                if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
                    return None;
                }
                let action = message.action?;
                if !relevant(&action) {
                    return None;
                }
                Some(Ok(ContainerEvent {
                    id: message.actor?.id?,
                    action,
                    time_nano: message.time_nano.unwrap_or_default(),
                }))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_keys() {
        assert_eq!(port_key("8080/tcp"), Some((8080, Proto::Tcp)));
        assert_eq!(port_key("53/udp"), Some((53, Proto::Udp)));
        assert_eq!(port_key("80"), Some((80, Proto::Tcp)));
        assert_eq!(port_key("9/sctp"), None);
    }

    #[test]
    fn only_state_changing_actions_matter() {
        for action in ["start", "die", "health_status: healthy", "pause", "destroy"] {
            assert!(relevant(action), "{action}");
        }
        for action in ["create", "attach", "exec_start: sh", "resize", "top"] {
            assert!(!relevant(action), "{action}");
        }
    }
}
