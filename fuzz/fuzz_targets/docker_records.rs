//! Docker labels, environment, names, images and ports → the agent's records: every record it
//! makes must be one the registry would take (it is built by the domain's validation), and
//! nothing panics on any name or value a container can carry.
#![no_main]

use arbitrary::Arbitrary;
use berth_agent::container::{
    ContainerFacts, ContainerPort, Health, Placement, Proto, Published, RunState, plan,
};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Arbitrary, Debug)]
struct Input {
    id: String,
    name: String,
    image: String,
    hostname: String,
    env: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    ports: Vec<(u16, bool, Option<(Option<[u8; 4]>, u16)>)>,
    networks: Vec<(String, [u8; 4])>,
    host_network: bool,
    internal: bool,
    only_label: Option<(String, Option<String>)>,
}

fuzz_target!(|input: Input| {
    let facts = ContainerFacts {
        id: input.id,
        name: input.name,
        image: input.image,
        hostname: input.hostname,
        env: input.env.into_iter().collect::<BTreeMap<_, _>>(),
        labels: input.labels.into_iter().collect::<BTreeMap<_, _>>(),
        state: RunState::Running,
        health: Health::None,
        host_network: input.host_network,
        ports: input
            .ports
            .into_iter()
            .map(|(port, udp, published)| ContainerPort {
                port,
                proto: if udp { Proto::Udp } else { Proto::Tcp },
                published: published.map(|(ip, host_port)| Published {
                    host_ip: ip.map(IpAddr::from),
                    host_port,
                }),
            })
            .collect(),
        networks: input
            .networks
            .into_iter()
            .map(|(name, ip)| (name, IpAddr::from(ip)))
            .collect(),
    };
    let placement = Placement {
        host_id: "fuzz-host".into(),
        advertise: IpAddr::from([10, 0, 0, 1]),
        internal: input.internal,
        internal_network: None,
        extra_tags: vec!["docker".into()],
        ttl: Duration::from_secs(15),
        only_label: input.only_label,
    };
    let planned = plan(&Arc::new(facts), &placement);
    for record in planned.records {
        assert!(record.spec.port() > 0 || record.spec.port() == 0);
    }
});
