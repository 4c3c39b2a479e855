//! The request handler: a question parsed from the name, answered from the registry's view,
//! sized before it is sent (TC and nothing partial when it does not fit), in shuffled order.

use crate::DnsConfig;
use crate::names::{self, Filter, Question};
use berth_domain::auth::Action;
use berth_domain::catalog::{AppId, Backend, EntityName, KindName};
use berth_domain::{Address, ServiceName};
use berth_registry::auth::Credentials;
use berth_registry::{Consistency, LiveInstance, Registry};
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::seq::SliceRandom;
use std::net::IpAddr;
use std::sync::Arc;

/// The UDP answer size without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_LIMIT: usize = 512;
/// The most berth puts in a UDP answer whatever the client advertises: DNS Flag Day 2020's
/// value, which avoids IP fragmentation.
const EDNS_UDP_LIMIT: u16 = 1232;
/// A DNS message over TCP.
const TCP_LIMIT: usize = 65_535;
/// The SOA's negative-answer TTL: how long a resolver may remember "no such name".
const NEGATIVE_TTL: u32 = 1;

/// Answers DNS questions from one registry.
pub struct DnsHandler {
    registry: Registry,
    config: DnsConfig,
    domain: LowerName,
    domain_labels: usize,
    soa: Record,
    counters: Counters,
}

struct Counters {
    answered: metrics::Counter,
    nodata: metrics::Counter,
    nxdomain: metrics::Counter,
    refused: metrics::Counter,
    truncated: metrics::Counter,
    failed: metrics::Counter,
}

impl Counters {
    fn new() -> Self {
        let outcome = |outcome: &'static str| metrics::counter!("berth_dns_queries_total", "outcome" => outcome);
        Counters {
            answered: outcome("answered"),
            nodata: outcome("nodata"),
            nxdomain: outcome("nxdomain"),
            refused: outcome("refused"),
            truncated: outcome("truncated"),
            failed: outcome("failed"),
        }
    }
}

/// What a question gets before it is sized.
struct Answer {
    code: ResponseCode,
    /// Authoritative: a name under berth's domain.
    authoritative: bool,
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode, authoritative: bool) -> Self {
        Answer {
            code,
            authoritative,
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            additionals,
        }
    }

    fn nxdomain() -> Self {
        Answer::code(ResponseCode::NXDomain, true)
    }

    fn nodata() -> Self {
        Answer::code(ResponseCode::NoError, true)
    }
}

impl DnsHandler {
    pub fn new(registry: Registry, config: DnsConfig) -> Self {
        let domain = LowerName::from(&config.domain);
        let soa_name = config.domain.clone();
        let label = |prefix: &str| {
            Name::from_ascii(prefix)
                .and_then(|name| name.append_domain(&config.domain))
                .expect("a valid name under the domain")
        };
        let soa = Record::from_rdata(
            soa_name,
            NEGATIVE_TTL,
            RData::SOA(SOA::new(
                label("ns"),
                label("hostmaster"),
                0,
                3600,
                600,
                86_400,
                NEGATIVE_TTL,
            )),
        );
        DnsHandler {
            registry,
            domain_labels: config.domain.num_labels() as usize,
            config,
            domain,
            soa,
            counters: Counters::new(),
        }
    }

    /// The SOA with the registry's revision as its serial.
    fn soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(data) = &mut soa.data {
            data.serial = self.registry.view_revision().0 as u32;
        }
        soa
    }

    fn live_ttl(&self, service: &str) -> u32 {
        self.config
            .service_ttl
            .iter()
            .filter(|(prefix, _)| service.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(0, |(_, ttl)| *ttl)
    }

    /// A name under the domain.
    fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(relative)
            .ok()?
            .append_domain(&self.config.domain)
            .ok()
    }

    async fn answer(&self, name: &LowerName, kind: RecordType) -> Answer {
        if !self.domain.zone_of(name) {
            return Answer::code(ResponseCode::Refused, false);
        }
        let labels: Vec<String> = name
            .iter()
            .take((name.num_labels() as usize).saturating_sub(self.domain_labels))
            .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let owner = Name::from(name.clone());
        let question = names::parse(&labels);
        // The one auth check, as a caller without credentials (DNS carries none): with auth
        // on, only what anonymous callers may read is answered; the rest is refused.
        let action = match &question {
            Some(Question::Service { service, .. } | Question::Instance { service, .. }) => {
                Some(Action::ReadService(service))
            }
            Some(Question::Backend { .. } | Question::App { .. } | Question::AppPort { .. }) => {
                Some(Action::CatalogRead)
            }
            Some(Question::Apex | Question::Addr(_)) | None => None,
        };
        if let Some(action) = action
            && self
                .registry
                .check(Credentials::None, &action)
                .await
                .is_err()
        {
            return Answer::code(ResponseCode::Refused, true);
        }
        let result = match question {
            None => Ok(Answer::nxdomain()),
            Some(Question::Apex) => Ok(match kind {
                RecordType::SOA => Answer::records(vec![self.soa()], Vec::new()),
                _ => Answer::nodata(),
            }),
            Some(Question::Service {
                service,
                filter,
                zone,
            }) => {
                self.service(owner, kind, &service, &filter, zone.as_deref())
                    .await
            }
            Some(Question::Backend { name: backend }) => self.backend(owner, kind, &backend).await,
            Some(Question::Instance { service, id }) => {
                self.instance(owner, kind, &service, &id).await
            }
            Some(Question::Addr(address)) => Ok(address_answer(owner, kind, address, 0)),
            Some(Question::App { app }) => self.app(owner, kind, &app).await,
            Some(Question::AppPort {
                app,
                kind: port_kind,
            }) => self.app_port(owner, kind, &app, &port_kind).await,
        };
        result.unwrap_or_else(|error| {
            tracing::warn!(%error, %name, "a DNS question could not be answered");
            Answer::code(ResponseCode::ServFail, true)
        })
    }

    async fn service(
        &self,
        owner: Name,
        kind: RecordType,
        service: &str,
        filter: &Filter,
        zone: Option<&str>,
    ) -> Result<Answer, berth_registry::RegistryError> {
        let Ok(name) = ServiceName::parse("service", service) else {
            return Ok(Answer::nxdomain());
        };
        let view = self.registry.service(&name, Consistency::Local).await?;
        let known = !view.instances.is_empty() || self.is_app(service).await?;
        if !known {
            return Ok(Answer::nxdomain());
        }
        let ttl = self.live_ttl(service);
        let selected = view
            .instances
            .iter()
            .filter(|live| matches(live, filter, zone));
        Ok(self.instances_answer(owner, kind, selected, ttl))
    }

    /// A, AAAA or SRV records (with their targets' addresses) of some instances; NODATA when
    /// none has a record of the type asked.
    fn instances_answer<'a>(
        &self,
        owner: Name,
        kind: RecordType,
        instances: impl Iterator<Item = &'a Arc<LiveInstance>>,
        ttl: u32,
    ) -> Answer {
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for live in instances {
            let spec = &live.instance.spec;
            match kind {
                RecordType::SRV => {
                    let (target, glue) = match spec.address() {
                        Address::V4(ip) => self.addr_target(IpAddr::V4(*ip), ttl),
                        Address::V6(ip) => self.addr_target(IpAddr::V6(*ip), ttl),
                        Address::Name(host) => (Name::from_ascii(format!("{host}.")).ok(), None),
                    };
                    let Some(target) = target else { continue };
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::SRV(SRV::new(1, u16::from(spec.weight()), spec.port(), target)),
                    ));
                    additionals.extend(glue);
                }
                RecordType::A | RecordType::AAAA | RecordType::ANY => {
                    answers.extend(address_record(&owner, kind, spec.address(), ttl));
                }
                _ => {}
            }
        }
        if answers.is_empty() {
            Answer::nodata()
        } else {
            Answer::records(answers, additionals)
        }
    }

    async fn backend(
        &self,
        owner: Name,
        kind: RecordType,
        name: &str,
    ) -> Result<Answer, berth_registry::RegistryError> {
        let Ok(name) = EntityName::parse("backend", name) else {
            return Ok(Answer::nxdomain());
        };
        let Some(backend) = self.registry.routing_entity::<Backend>(&name).await? else {
            return Ok(Answer::nxdomain());
        };
        if self
            .registry
            .check(
                Credentials::None,
                &Action::ReadService(backend.app().as_str()),
            )
            .await
            .is_err()
        {
            return Ok(Answer::code(ResponseCode::Refused, true));
        }
        let members = self.registry.backend_members(&backend).await?;
        let ttl = self.live_ttl(backend.app().as_str());
        Ok(self.instances_answer(owner, kind, members.iter(), ttl))
    }

    /// The `.addr` name of an address and its A/AAAA record, for an SRV answer.
    fn addr_target(&self, ip: IpAddr, ttl: u32) -> (Option<Name>, Option<Record>) {
        let Some(target) = self.name(&format!("{}.addr", names::address_label(ip))) else {
            return (None, None);
        };
        let glue = address_answer(target.clone(), RecordType::ANY, ip, ttl)
            .answers
            .into_iter()
            .next();
        (Some(target), glue)
    }

    async fn is_app(&self, name: &str) -> Result<bool, berth_registry::RegistryError> {
        let Ok(id) = AppId::parse("app", name) else {
            return Ok(false);
        };
        Ok(self.registry.app(&id).await?.is_some())
    }

    async fn instance(
        &self,
        owner: Name,
        kind: RecordType,
        service: &str,
        id: &str,
    ) -> Result<Answer, berth_registry::RegistryError> {
        let Ok(name) = ServiceName::parse("service", service) else {
            return Ok(Answer::nxdomain());
        };
        let view = self.registry.service(&name, Consistency::Local).await?;
        let Some(live) = view
            .instances
            .iter()
            .find(|live| live.instance.spec.id().as_str().eq_ignore_ascii_case(id))
        else {
            return Ok(Answer::nxdomain());
        };
        let spec = &live.instance.spec;
        let ttl = self.live_ttl(service);
        let answers: Vec<Record> = match kind {
            RecordType::TXT => {
                let mut strings: Vec<String> = spec
                    .meta()
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                strings.extend(spec.tags().iter().map(|tag| format!("tag={tag}")));
                strings.push(format!("port={}", spec.port()));
                vec![Record::from_rdata(
                    owner,
                    ttl,
                    RData::TXT(TXT::new(strings)),
                )]
            }
            _ => address_record(&owner, kind, spec.address(), ttl)
                .into_iter()
                .collect(),
        };
        Ok(if answers.is_empty() {
            Answer::nodata()
        } else {
            Answer::records(answers, Vec::new())
        })
    }

    async fn app(
        &self,
        owner: Name,
        kind: RecordType,
        app: &str,
    ) -> Result<Answer, berth_registry::RegistryError> {
        let Ok(id) = AppId::parse("app", app) else {
            return Ok(Answer::nxdomain());
        };
        let Some(application) = self.registry.app(&id).await? else {
            return Ok(Answer::nxdomain());
        };
        if kind != RecordType::TXT {
            return Ok(Answer::nodata());
        }
        let strings: Vec<String> = application
            .ports()
            .iter()
            .map(|port| format!("{}={}", port.kind.as_str(), port.external))
            .collect();
        Ok(Answer::records(
            vec![Record::from_rdata(
                owner,
                self.config.catalog_ttl,
                RData::TXT(TXT::new(strings)),
            )],
            Vec::new(),
        ))
    }

    async fn app_port(
        &self,
        owner: Name,
        kind: RecordType,
        app: &str,
        port_kind: &str,
    ) -> Result<Answer, berth_registry::RegistryError> {
        let (Ok(id), Ok(port_kind)) =
            (AppId::parse("app", app), KindName::parse("kind", port_kind))
        else {
            return Ok(Answer::nxdomain());
        };
        let Some(application) = self.registry.app(&id).await? else {
            return Ok(Answer::nxdomain());
        };
        let Some(port) = application.port_of(&port_kind) else {
            return Ok(Answer::nxdomain());
        };
        if kind != RecordType::SRV {
            return Ok(Answer::nodata());
        }
        // The target is the live service named like the application, where it runs.
        let Some(target) = self.name(&format!("{app}.service")) else {
            return Ok(Answer::nxdomain());
        };
        Ok(Answer::records(
            vec![Record::from_rdata(
                owner,
                self.config.catalog_ttl,
                RData::SRV(SRV::new(0, 0, port.external, target)),
            )],
            Vec::new(),
        ))
    }
}

/// Whether an instance passes a name's filter and zone.
fn matches(live: &LiveInstance, filter: &Filter, zone: Option<&str>) -> bool {
    let spec = &live.instance.spec;
    // The Docker agent names a UDP port's instance `host:container:port:udp`.
    let udp = || {
        spec.tags().iter().any(|tag| tag == "udp")
            || spec.meta().get("protocol").is_some_and(|p| p == "udp")
            || spec.id().as_str().ends_with(":udp")
    };
    let passes = match filter {
        Filter::None => true,
        Filter::Tag(tag) => spec.tags().iter().any(|t| t.eq_ignore_ascii_case(tag)),
        Filter::Tcp => !udp(),
        Filter::Udp => udp(),
    };
    passes && zone.is_none_or(|zone| spec.zone().is_some_and(|z| z.eq_ignore_ascii_case(zone)))
}

/// The A or AAAA record of an instance's address, when the question asks for its family.
fn address_record(owner: &Name, kind: RecordType, address: &Address, ttl: u32) -> Option<Record> {
    let ip = match address {
        Address::V4(ip) => IpAddr::V4(*ip),
        Address::V6(ip) => IpAddr::V6(*ip),
        Address::Name(_) => return None,
    };
    address_answer(owner.clone(), kind, ip, ttl)
        .answers
        .into_iter()
        .next()
}

/// An address as the answer to an A, AAAA or ANY question (NODATA for the other family).
fn address_answer(owner: Name, kind: RecordType, ip: IpAddr, ttl: u32) -> Answer {
    let rdata = match (kind, ip) {
        (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => RData::A(A(v4)),
        (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
        _ => return Answer::nodata(),
    };
    Answer::records(vec![Record::from_rdata(owner, ttl, rdata)], Vec::new())
}

/// A name's length on the wire, uncompressed.
fn wire_length(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

fn rdata_length(rdata: &RData) -> usize {
    match rdata {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + wire_length(&srv.target),
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        RData::SOA(soa) => wire_length(&soa.mname) + wire_length(&soa.rname) + 20,
        _ => 512,
    }
}

/// An upper bound of the encoded answer's size. Answers are owned by the question's name, which
/// is always compressed to a pointer; every other name is counted whole.
fn size_bound(question: &Name, answer: &Answer, authority: Option<&Record>, edns: bool) -> usize {
    let header_and_question = 12 + wire_length(question) + 4;
    let answers: usize = answer
        .answers
        .iter()
        .map(|record| 2 + 10 + rdata_length(&record.data))
        .sum();
    let whole = |record: &Record| wire_length(&record.name) + 10 + rdata_length(&record.data);
    let additionals: usize = answer.additionals.iter().map(whole).sum();
    let authority = authority.map_or(0, whole);
    header_and_question + answers + additionals + authority + if edns { 11 } else { 0 }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().clamp(512, EDNS_UDP_LIMIT));
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let queries = request.queries.queries();
        let (answer, question) = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            (Answer::code(ResponseCode::NotImp, false), None)
        } else if queries.len() != 1 {
            (Answer::code(ResponseCode::FormErr, false), None)
        } else {
            let query = &queries[0];
            let answer = self.answer(query.name(), query.query_type()).await;
            (answer, Some(Name::from(query.name().clone())))
        };
        let mut answer = answer;
        let outcome = match answer.code {
            ResponseCode::NoError if answer.answers.is_empty() => &self.counters.nodata,
            ResponseCode::NoError => &self.counters.answered,
            ResponseCode::NXDomain => &self.counters.nxdomain,
            ResponseCode::Refused => &self.counters.refused,
            _ => &self.counters.failed,
        };
        let negative = answer.authoritative && answer.answers.is_empty();
        let authority = negative.then(|| self.soa());
        let limit = match request.protocol() {
            Protocol::Udp => edns
                .as_ref()
                .map_or(PLAIN_UDP_LIMIT, |edns| usize::from(edns.max_payload())),
            _ => TCP_LIMIT,
        };
        let fits = question.as_ref().is_none_or(|question| {
            size_bound(question, &answer, authority.as_ref(), edns.is_some()) <= limit
        });
        if fits {
            outcome.increment(1);
        } else {
            // Never a cut answer: nothing, and TC so the client asks again over TCP.
            self.counters.truncated.increment(1);
            metadata.truncation = true;
            answer.answers.clear();
            answer.additionals.clear();
        }
        answer.answers.shuffle(&mut rand::rng());
        metadata.authoritative = answer.authoritative;
        metadata.response_code = answer.code;
        metadata.recursion_available = false;
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            std::iter::empty(),
            authority.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "a DNS answer could not be sent");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
