//! Prometheus's HTTP service discovery (`http_sd_configs`): one target group per live
//! instance, berth's fields as `__meta_berth_*` labels, filtered by service and tags.

use super::instances::parse_service;
use crate::ApiState;
use crate::error::{ApiResult, internal};
use crate::extract::Params;
use crate::reply::json_bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_domain::{Address, InstanceSpec};
use serde::Serialize;
use std::collections::BTreeMap;

/// One target group: Prometheus's format.
#[derive(Serialize)]
struct TargetGroup {
    targets: [String; 1],
    labels: BTreeMap<String, String>,
}

/// `GET /v1/sd/prometheus?service=…&tag=…`: the live instances (of the service, with every
/// tag given), as Prometheus's HTTP service discovery reads them.
pub async fn prometheus(State(state): State<ApiState>, params: Params) -> ApiResult<Response> {
    params.only(&["service", "tag"])?;
    let service = params.one("service").map(parse_service).transpose()?;
    let tags = params.all("tag");
    let found = state
        .registry
        .select(|instance| {
            let spec = &instance.spec;
            service.as_ref().is_none_or(|s| spec.service() == s)
                && tags.iter().all(|tag| spec.tags().contains(tag))
        })
        .await?;
    let groups: Vec<TargetGroup> = found
        .iter()
        .map(|live| target_group(&live.instance.spec))
        .collect();
    Ok(json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&groups).map_err(internal)?,
    ))
}

fn target_group(spec: &InstanceSpec) -> TargetGroup {
    let target = match spec.address() {
        Address::V6(ip) => format!("[{ip}]:{}", spec.port()),
        Address::V4(ip) => format!("{ip}:{}", spec.port()),
        Address::Name(host) => format!("{host}:{}", spec.port()),
    };
    let mut labels = BTreeMap::new();
    let mut label = |name: &str, value: &str| {
        labels.insert(format!("__meta_berth_{name}"), value.to_string());
    };
    label("service", spec.service().as_str());
    label("instance_id", spec.id().as_str());
    for (name, value) in [
        ("zone", spec.zone()),
        ("region", spec.region()),
        ("version", spec.version()),
    ] {
        if let Some(value) = value {
            label(name, value);
        }
    }
    label("canary", if spec.canary() { "true" } else { "false" });
    label("weight", &spec.weight().to_string());
    // Consul's convention: separators at both ends, so a relabel regex can match `,tag,`.
    label("tags", &format!(",{},", spec.tags().join(",")));
    for (key, value) in spec.meta() {
        label(&format!("meta_{}", label_name(key)), value);
    }
    TargetGroup {
        targets: [target],
        labels,
    }
}

/// A metadata key as a label name: what Prometheus does not allow in one becomes `_`.
fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::label_name;

    #[test]
    fn metadata_keys_become_label_names() {
        assert_eq!(label_name("berth.agent.host"), "berth_agent_host");
        assert_eq!(label_name("team-a/owner"), "team_a_owner");
        assert_eq!(label_name("plain_1"), "plain_1");
    }
}
