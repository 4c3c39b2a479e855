//! Live instances: what a client may register (the draft), what it becomes once validated (the
//! spec), what the registry keeps (the instance), and the query filter. The rules live here
//! once; the native API, every compat API, the CLI and the agent all go through them.

use crate::error::Collector;
use crate::{InstanceId, ServiceName, Timestamp, ValidationError, ValidationErrors};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// The shortest TTL a client may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The shortest TTL any surface uses: bender's expiry can be configured down to 500 ms.
pub const LOWEST_TTL: Duration = Duration::from_millis(500);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

const MAX_TEXT: usize = 256;
const MAX_TAGS: usize = 64;
/// Metadata entries an instance may carry.
pub const MAX_META: usize = 64;
const MAX_META_KEY: usize = 128;
const MAX_META_VALUE: usize = 1024;

/// Where an instance listens: an IPv4 or IPv6 address, or a DNS name (kept lowercase).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Name(String),
}

impl Address {
    pub fn parse(field: &str, text: &str) -> Result<Address, ValidationError> {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(match ip {
                IpAddr::V4(v4) => Address::V4(v4),
                IpAddr::V6(v6) => Address::V6(v6),
            });
        }
        let invalid = |why: &str| {
            ValidationError::new(
                field,
                format!("{text:?} is not an IPv4 address, an IPv6 address or a DNS name: {why}"),
            )
        };
        if text.is_empty() || text.len() > 253 {
            return Err(invalid("a name is 1 to 253 characters long"));
        }
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        // A name whose last label is all digits looks like an IPv4 address that failed to
        // parse (e.g. 999.1.1.1): refuse it rather than take it as a host name.
        if labels
            .last()
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid("it looks like an IPv4 address but is not one"));
        }
        for label in &labels {
            let valid = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(invalid(
                    "each label is 1 to 63 letters, digits, '-' or '_', not starting or ending with '-'",
                ));
            }
        }
        Ok(Address::Name(name))
    }

    pub fn is_ipv6(&self) -> bool {
        matches!(self, Address::V6(_))
    }

    /// `address:port`, with brackets around an IPv6 address.
    pub fn with_port(&self, port: u16) -> String {
        match self {
            Address::V6(v6) => format!("[{v6}]:{port}"),
            other => format!("{other}:{port}"),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::V4(v4) => v4.fmt(f),
            Address::V6(v6) => v6.fmt(f),
            Address::Name(name) => f.write_str(name),
        }
    }
}

/// The server's defaults for what a client leaves out, and the shortest TTL it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceDefaults {
    pub ttl: Duration,
    pub min_ttl: Duration,
}

impl Default for InstanceDefaults {
    fn default() -> Self {
        InstanceDefaults {
            ttl: Duration::from_secs(30),
            min_ttl: MIN_TTL,
        }
    }
}

/// The API an instance was registered through. A registration through one may not change an
/// instance another registered: their fields and TTLs mean different things (bender's 4 s TTL
/// would replace a native 30 s one, lyft's tags would overwrite metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Origin {
    #[default]
    Native,
    Bender,
    Lyft,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Native => "native",
            Origin::Bender => "bender",
            Origin::Lyft => "lyft",
        }
    }

    pub fn parse(text: &str) -> Option<Origin> {
        [Origin::Native, Origin::Bender, Origin::Lyft]
            .into_iter()
            .find(|origin| origin.as_str() == text)
    }
}

/// An instance as a client sends it, before validation. Numbers are wide so an out-of-range
/// value is reported as such instead of failing to parse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceDraft {
    pub id: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub ttl_ms: Option<i64>,
    pub version: Option<String>,
    pub revision: Option<String>,
    pub repo: Option<String>,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub instance_ref: Option<String>,
    pub weight: Option<i64>,
    pub canary: Option<bool>,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub origin: Origin,
}

/// A validated registration: everything the client decides about an instance. Only
/// [`InstanceDraft::validate`] makes one, and its fields can only be read, so whatever holds an
/// `InstanceSpec` holds one that obeys every rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    service: ServiceName,
    id: InstanceId,
    address: Address,
    port: u16,
    ttl: Duration,
    // Boxed strings: a registry keeps many instances in memory, and most of these are short
    // or absent.
    version: Option<Box<str>>,
    revision: Option<Box<str>>,
    repo: Option<Box<str>>,
    zone: Option<Box<str>>,
    region: Option<Box<str>>,
    instance_ref: Option<Box<str>>,
    weight: u8,
    canary: bool,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    origin: Origin,
}

impl InstanceSpec {
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    pub fn repo(&self) -> Option<&str> {
        self.repo.as_deref()
    }

    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// An external reference to the instance (lyft's `instance_id`, a cloud instance id).
    pub fn instance_ref(&self) -> Option<&str> {
        self.instance_ref.as_deref()
    }

    /// Load-balancing weight, 1 to 100.
    pub fn weight(&self) -> u8 {
        self.weight
    }

    pub fn canary(&self) -> bool {
        self.canary
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Sorted, without duplicates.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn meta(&self) -> &BTreeMap<String, String> {
        &self.meta
    }

    /// Makes the service name share `shared`'s allocation when they are equal (a registry
    /// keeps one copy of the name for every instance of a service).
    pub fn share_service_name(&mut self, shared: &ServiceName) {
        if &self.service == shared {
            self.service = shared.clone();
        }
    }
}

impl InstanceDraft {
    /// Validates the draft for `service`. `path_id` is the id the request named in its path
    /// (PUT …/instances/{id}); without one the id is the body's, or `address:port`.
    pub fn validate(
        self,
        service: &str,
        path_id: Option<&str>,
        defaults: &InstanceDefaults,
    ) -> Result<InstanceSpec, ValidationErrors> {
        let mut errors = Collector::default();
        let service = errors.check(ServiceName::parse("service", service));
        let address = match &self.address {
            Some(text) => errors.check(Address::parse("address", text)),
            None => {
                errors.push("address", "is required");
                None
            }
        };
        let port = match self.port {
            Some(port) if (1..=65535).contains(&port) => Some(port as u16),
            Some(port) => {
                errors.push("port", format!("must be between 1 and 65535 (got {port})"));
                None
            }
            None => {
                errors.push("port", "is required");
                None
            }
        };
        let ttl = match self.ttl_ms {
            None => Some(defaults.ttl),
            Some(ms)
                if ms >= defaults.min_ttl.as_millis() as i64
                    && ms <= MAX_TTL.as_millis() as i64 =>
            {
                Some(Duration::from_millis(ms as u64))
            }
            Some(ms) => {
                errors.push(
                    "ttl_ms",
                    format!(
                        "must be between {} and {} milliseconds (got {ms})",
                        defaults.min_ttl.as_millis(),
                        MAX_TTL.as_millis()
                    ),
                );
                None
            }
        };
        let weight = match self.weight {
            None => Some(1),
            Some(w) if (1..=100).contains(&w) => Some(w as u8),
            Some(w) => {
                errors.push("weight", format!("must be between 1 and 100 (got {w})"));
                None
            }
        };
        let mut text = |field: &str, value: Option<String>| -> Option<Box<str>> {
            let value = value.filter(|v| !v.is_empty())?;
            match check_text(field, &value, MAX_TEXT) {
                Ok(()) => Some(value.into_boxed_str()),
                Err(error) => {
                    errors.check::<()>(Err(error));
                    None
                }
            }
        };
        let version = text("version", self.version);
        let revision = text("revision", self.revision);
        let repo = text("repo", self.repo);
        let zone = text("zone", self.zone);
        let region = text("region", self.region);
        let instance_ref = text("instance_ref", self.instance_ref);

        if self.tags.len() > MAX_TAGS {
            errors.push("tags", format!("at most {MAX_TAGS} tags"));
        }
        for (index, tag) in self.tags.iter().enumerate() {
            let field = format!("tags[{index}]");
            if tag.is_empty() {
                errors.push(field, "cannot be empty");
            } else {
                errors.check(check_text(&field, tag, MAX_TEXT));
            }
        }
        if self.meta.len() > MAX_META {
            errors.push("meta", format!("at most {MAX_META} entries"));
        }
        for (key, value) in &self.meta {
            let key_ok = !key.is_empty()
                && key.len() <= MAX_META_KEY
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            // A refused key is quoted with its escapes: one with a newline (from a container's
            // environment) would otherwise forge lines in logs (defect M13).
            let field = if key_ok {
                format!("meta.{key}")
            } else {
                format!("meta[{key:?}]")
            };
            if !key_ok {
                errors.push(
                    field.clone(),
                    format!("keys are 1 to {MAX_META_KEY} letters, digits, '_', '-' or '.'"),
                );
            }
            errors.check(check_text(&field, value, MAX_META_VALUE));
        }

        let id = match (path_id, self.id.as_deref()) {
            (Some(path), Some(body)) if path != body => {
                errors.push(
                    "id",
                    format!("the body's id {body:?} differs from the path's {path:?}"),
                );
                None
            }
            (Some(id), _) | (None, Some(id)) => errors.check(InstanceId::parse("id", id)),
            (None, None) => match (&address, port) {
                (Some(address), Some(port)) => {
                    errors.check(InstanceId::parse("id", &address.with_port(port)))
                }
                _ => None,
            },
        };

        let mut tags = self.tags;
        // Order does not matter to a filter and duplicates mean nothing: keep one canonical
        // form so an identical re-registration is recognised as a heartbeat.
        tags.sort();
        tags.dedup();
        let meta = self.meta;
        let canary = self.canary.unwrap_or(false);
        let origin = self.origin;
        errors.finish(|| InstanceSpec {
            service: service.expect("checked"),
            id: id.expect("checked"),
            address: address.expect("checked"),
            port: port.expect("checked"),
            ttl: ttl.expect("checked"),
            version,
            revision,
            repo,
            zone,
            region,
            instance_ref,
            weight: weight.expect("checked"),
            canary,
            tags,
            meta,
            origin,
        })
    }
}

impl From<&InstanceSpec> for InstanceDraft {
    /// The draft that validates back into this spec: the start of an edit that changes some
    /// fields and keeps the rest (a lyft re-registration merging tags, a weight change).
    fn from(spec: &InstanceSpec) -> Self {
        InstanceDraft {
            id: Some(spec.id.to_string()),
            address: Some(spec.address.to_string()),
            port: Some(i64::from(spec.port)),
            ttl_ms: Some(spec.ttl.as_millis() as i64),
            version: spec.version.as_deref().map(String::from),
            revision: spec.revision.as_deref().map(String::from),
            repo: spec.repo.as_deref().map(String::from),
            zone: spec.zone.as_deref().map(String::from),
            region: spec.region.as_deref().map(String::from),
            instance_ref: spec.instance_ref.as_deref().map(String::from),
            weight: Some(i64::from(spec.weight)),
            canary: Some(spec.canary),
            tags: spec.tags.clone(),
            meta: spec.meta.clone(),
            origin: spec.origin,
        }
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} bytes (got {})", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "cannot contain control characters",
        ));
    }
    Ok(())
}

/// A registered instance: the client's spec, when it first registered, and the team that owns
/// it (the owner of the token that registered it; `None` when auth was off or the request
/// anonymous).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub spec: InstanceSpec,
    pub registered_at: Timestamp,
    pub owner: Option<crate::auth::Owner>,
}

/// Why an instance went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineReason {
    /// Its lease ran out: no heartbeat within its TTL.
    Expired,
    /// Someone removed it.
    Deregistered,
}

impl OfflineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::Expired => "expired",
            OfflineReason::Deregistered => "deregistered",
        }
    }
}

/// What a query keeps: every given criterion must match (all tags must be present).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    pub version: Option<String>,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub tags: Vec<String>,
    pub canary: Option<bool>,
}

impl InstanceFilter {
    pub fn is_empty(&self) -> bool {
        self == &InstanceFilter::default()
    }

    pub fn matches(&self, spec: &InstanceSpec) -> bool {
        let same = |wanted: &Option<String>, actual: &Option<Box<str>>| {
            wanted
                .as_deref()
                .is_none_or(|w| actual.as_deref() == Some(w))
        };
        same(&self.version, &spec.version)
            && same(&self.zone, &spec.zone)
            && same(&self.region, &spec.region)
            && self.canary.is_none_or(|c| c == spec.canary)
            && self
                .tags
                .iter()
                .all(|tag| spec.tags.binary_search(tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(address: &str, port: i64) -> InstanceDraft {
        InstanceDraft {
            address: Some(address.into()),
            port: Some(port),
            ..InstanceDraft::default()
        }
    }

    fn field_of(result: Result<InstanceSpec, ValidationErrors>) -> String {
        result.unwrap_err().first().field.clone()
    }

    #[test]
    fn defaults_and_derived_id() {
        let spec = draft("10.0.0.5", 8080)
            .validate("web", None, &InstanceDefaults::default())
            .unwrap();
        assert_eq!(spec.id.as_str(), "10.0.0.5:8080");
        assert_eq!(spec.ttl, Duration::from_secs(30));
        assert_eq!(spec.weight, 1);
        let v6 = draft("::1", 80)
            .validate("web", None, &InstanceDefaults::default())
            .unwrap();
        assert_eq!(v6.id.as_str(), "[::1]:80");
        let named = draft("Web-1.Example.com", 80)
            .validate("web", None, &InstanceDefaults::default())
            .unwrap();
        assert_eq!(named.address, Address::Name("web-1.example.com".into()));
        let mut versioned = draft("10.0.0.5", 8080);
        versioned.version = Some(String::new());
        let spec = versioned
            .validate("web", None, &InstanceDefaults::default())
            .unwrap();
        assert_eq!(spec.version, None, "an empty label is no label");
    }

    #[test]
    fn bad_inputs_name_their_field() {
        let d = InstanceDefaults::default();
        assert_eq!(
            field_of(draft("999.1.1.1", 80).validate("web", None, &d)),
            "address"
        );
        assert_eq!(
            field_of(draft("bad host", 80).validate("web", None, &d)),
            "address"
        );
        assert_eq!(
            field_of(draft("10.0.0.1", 0).validate("web", None, &d)),
            "port"
        );
        assert_eq!(
            field_of(draft("10.0.0.1", 70000).validate("web", None, &d)),
            "port"
        );
        let mut zero_ttl = draft("10.0.0.1", 80);
        zero_ttl.ttl_ms = Some(0);
        assert_eq!(field_of(zero_ttl.validate("web", None, &d)), "ttl_ms");
        let mut heavy = draft("10.0.0.1", 80);
        heavy.weight = Some(101);
        assert_eq!(field_of(heavy.validate("web", None, &d)), "weight");
        assert_eq!(
            field_of(draft("10.0.0.1", 80).validate("Web", None, &d)),
            "service"
        );
        let mut mismatch = draft("10.0.0.1", 80);
        mismatch.id = Some("other".into());
        assert_eq!(field_of(mismatch.validate("web", Some("mine"), &d)), "id");
    }

    #[test]
    fn a_spec_round_trips_through_its_draft() {
        let mut d = draft("10.0.0.1", 80);
        d.zone = Some("a".into());
        d.weight = Some(5);
        d.meta.insert("k".into(), "v".into());
        let spec = d
            .validate("web", None, &InstanceDefaults::default())
            .unwrap();
        let again = InstanceDraft::from(&spec)
            .validate("web", Some(spec.id.as_str()), &InstanceDefaults::default())
            .unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn a_refused_metadata_key_is_quoted_in_the_error() {
        let mut d = draft("10.0.0.1", 80);
        d.meta.insert("X\nlevel=ERROR forged".into(), "v".into());
        let field = field_of(d.validate("web", None, &InstanceDefaults::default()));
        assert_eq!(field, "meta[\"X\\nlevel=ERROR forged\"]");
        assert!(!field.contains('\n'));
    }

    #[test]
    fn every_error_is_reported() {
        let errors = InstanceDraft::default()
            .validate("web", None, &InstanceDefaults::default())
            .unwrap_err();
        let fields: Vec<&str> = errors.all().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["address", "port"]);
    }

    #[test]
    fn filters_need_every_criterion() {
        let mut d = draft("10.0.0.1", 80);
        d.zone = Some("a".into());
        d.tags = vec!["blue".into(), "api".into()];
        let spec = d
            .validate("web", None, &InstanceDefaults::default())
            .unwrap();
        let filter = InstanceFilter {
            zone: Some("a".into()),
            tags: vec!["api".into(), "blue".into()],
            ..InstanceFilter::default()
        };
        assert!(filter.matches(&spec));
        let other_zone = InstanceFilter {
            zone: Some("b".into()),
            ..InstanceFilter::default()
        };
        assert!(!other_zone.matches(&spec));
        let missing_tag = InstanceFilter {
            tags: vec!["green".into()],
            ..InstanceFilter::default()
        };
        assert!(!missing_tag.matches(&spec));
    }
}
