//! The catalog: kinds (what flowcommerce/registry called "services": a technology with a
//! default internal port and an offset inside a port block), applications with one port per
//! kind and their dependencies, and bender's backends and frontends. Durable data. Every rule
//! about one value lives here (valid names, ports, kinds, applications, the allocator, the
//! graph); rules about the catalog as a whole (a name taken, a port owned, a kind in use) are
//! checked by the registry's planners against what the catalog holds, and reported as
//! [`CatalogError`]s defined here.

pub mod allocator;
pub mod graph;
mod routing;

pub use routing::{Backend, BackendDraft, EntityName, Frontend, FrontendDraft, RawJson};

use crate::error::Collector;
use crate::{Timestamp, ValidationError, ValidationErrors};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// Checks a URL-friendly key the way flowcommerce's `UrlKey` does (lowercase; letters, digits,
/// `-`, `_`, `.`), with its messages, which name a valid alternative.
fn url_key(field: &str, text: &str, min_len: usize, max_len: usize) -> Result<(), ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::new(field, "Id cannot be empty"));
    }
    if text.len() < min_len {
        return Err(ValidationError::new(
            field,
            format!("Key must be at least {min_len} characters"),
        ));
    }
    let formatted = format_url_key(text);
    if formatted != text {
        return Err(ValidationError::new(
            field,
            format!(
                "Key must be in all lower case and contain alphanumerics only (-, _, and . are supported). A valid key would be: {formatted}"
            ),
        ));
    }
    if text.len() > max_len {
        return Err(ValidationError::new(
            field,
            format!("Key must be at most {max_len} characters"),
        ));
    }
    // `..` and `...` pass flow's rule, but URL normalisation turns them into other paths: no
    // client could address them afterwards.
    if text.chars().all(|c| c == '.') {
        return Err(ValidationError::new(
            field,
            "Key must contain a letter or a digit (a key of dots only cannot be addressed in a URL)",
        ));
    }
    Ok(())
}

/// Lowercase and trim; anything but `[0-9a-z._-]` becomes `-`; runs of `-` and of `_` become
/// one; no leading or trailing `-`.
pub fn format_url_key(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') {
            c
        } else {
            '-'
        };
        if (c == '-' || c == '_') && out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out.trim_matches('-').to_string()
}

macro_rules! key_newtype {
    ($(#[$doc:meta])* $name:ident, min = $min:expr, max = $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            pub const MIN_LEN: usize = $min;
            pub const MAX_LEN: usize = $max;

            pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
                url_key(field, text, $min, $max)?;
                Ok($name(Arc::from(text)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Ordering, equality and hashing are the string's, so maps keyed by the name can be
        // searched by `&str` (a family's range, a path segment).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

key_newtype!(
    /// A kind's name (`play`, `postgresql`): a URL key of at least 3 characters.
    KindName,
    min = 3,
    max = 64
);

key_newtype!(
    /// An application's id (`splashpage-postgresql`): a URL key of at least 2 characters.
    AppId,
    min = 2,
    max = 128
);

impl AppId {
    /// The application's family: the id up to its last `-` (the whole id without one). Apps of
    /// one family share a block of ports: `foo`, `foo-api` and `foo-postgresql` are family
    /// `foo`.
    pub fn family(&self) -> &str {
        family(self.as_str())
    }

    /// Whether this id belongs to `family`: it is `family` or starts with `family-`.
    pub fn in_family(&self, family: &str) -> bool {
        let id = self.as_str();
        id == family
            || id
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('-'))
    }
}

pub fn family(id: &str) -> &str {
    let id = id.trim();
    id.rfind('-').map_or(id, |dash| &id[..dash])
}

/// The largest port block any configuration may use, so the widest bound on a kind's offset:
/// a stored kind is checked against it (a smaller block size configured later must not make
/// kinds vanish).
pub const MAX_BLOCK_SIZE: u16 = 100;

/// A technology with a default internal port and, optionally, a fixed slot in each port block.
/// Only [`KindDraft::validate`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    name: KindName,
    default_port: u16,
    offset: Option<u8>,
}

impl Kind {
    pub fn name(&self) -> &KindName {
        &self.name
    }

    /// The port applications of this kind listen on inside their container.
    pub fn default_port(&self) -> u16 {
        self.default_port
    }

    /// The kind's fixed slot in every port block, if it has one.
    pub fn offset(&self) -> Option<u8> {
        self.offset
    }

    /// This kind with `other`'s slot in the port block (which `other`'s validation checked).
    pub fn with_offset_of(mut self, other: &Kind) -> Kind {
        self.offset = other.offset;
        self
    }
}

/// The kinds an empty catalog starts with (flowcommerce/registry's seed).
pub fn seed_kinds() -> Vec<Kind> {
    [
        ("nodejs", 7050, 0),
        ("play", 9000, 1),
        ("postgresql", 5432, 9),
    ]
    .into_iter()
    .map(|(name, default_port, offset)| {
        KindDraft {
            name: Some(name.into()),
            default_port: Some(default_port),
            offset: Some(offset),
        }
        .validate(None, MAX_BLOCK_SIZE)
        .expect("the seed kinds are valid")
    })
    .collect()
}

/// A kind as a client sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindDraft {
    pub name: Option<String>,
    pub default_port: Option<i64>,
    pub offset: Option<i64>,
}

impl KindDraft {
    /// Validates the draft; `block_size` bounds the offset (0 to block_size - 1).
    pub fn validate(
        self,
        path_name: Option<&str>,
        block_size: u16,
    ) -> Result<Kind, ValidationErrors> {
        let mut errors = Collector::default();
        let name = match (path_name, self.name.as_deref()) {
            (Some(path), Some(body)) if path != body => {
                errors.push(
                    "name",
                    format!("the body's name {body:?} differs from the path's {path:?}"),
                );
                None
            }
            (Some(name), _) | (None, Some(name)) => errors.check(KindName::parse("name", name)),
            (None, None) => {
                errors.push("name", "is required");
                None
            }
        };
        let default_port = match self.default_port {
            Some(port) if (1..=65535).contains(&port) => Some(port as u16),
            Some(port) => {
                errors.push(
                    "default_port",
                    format!("must be between 1 and 65535 (got {port})"),
                );
                None
            }
            None => {
                errors.push("default_port", "is required");
                None
            }
        };
        let offset = match self.offset {
            None => Some(None),
            Some(offset) if (0..i64::from(block_size)).contains(&offset) => {
                Some(Some(offset as u8))
            }
            Some(offset) => {
                errors.push(
                    "offset",
                    format!("must be between 0 and {} (got {offset})", block_size - 1),
                );
                None
            }
        };
        errors.finish(|| Kind {
            name: name.expect("checked"),
            default_port: default_port.expect("checked"),
            offset: offset.expect("checked"),
        })
    }
}

/// One port an application owns: the external port is unique across the catalog; the internal
/// one is what the application listens on inside its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAssignment {
    pub kind: KindName,
    pub external: u16,
    pub internal: u16,
}

/// An application: at most one port per kind, ordered by external port, and dependencies on
/// other applications (never on itself). Made by [`Application::create`] from a validated
/// command, or by [`WholeApplicationDraft::validate`] from an export or a stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    id: AppId,
    ports: Vec<PortAssignment>,
    dependencies: BTreeSet<AppId>,
    created_at: Timestamp,
}

impl Application {
    /// A new application with its first port.
    pub fn create(new: &NewApplication, port: PortAssignment, at: Timestamp) -> Application {
        Application {
            id: new.id.clone(),
            ports: vec![port],
            dependencies: new.dependencies.clone(),
            created_at: at,
        }
    }

    pub fn id(&self) -> &AppId {
        &self.id
    }

    /// Ordered by external port.
    pub fn ports(&self) -> &[PortAssignment] {
        &self.ports
    }

    pub fn dependencies(&self) -> &BTreeSet<AppId> {
        &self.dependencies
    }

    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    pub fn port_of(&self, kind: &KindName) -> Option<&PortAssignment> {
        self.ports.iter().find(|p| &p.kind == kind)
    }

    /// The lowest external port (what flow sorts applications by).
    pub fn lowest_port(&self) -> Option<u16> {
        self.ports.iter().map(|p| p.external).min()
    }

    /// The application with one more port; unchanged when it has a port of that kind.
    pub fn with_port(mut self, port: PortAssignment) -> Application {
        if self.port_of(&port.kind).is_none() {
            self.ports.push(port);
            self.ports.sort_by_key(|p| p.external);
        }
        self
    }

    /// The application without its port of `kind`, and that port; `None` when it has none.
    pub fn without_port(mut self, kind: &KindName) -> Option<(Application, PortAssignment)> {
        let index = self.ports.iter().position(|p| &p.kind == kind)?;
        let port = self.ports.remove(index);
        Some((self, port))
    }

    /// The application with a new dependency list (validated by
    /// [`validate_dependency_list`]: never itself).
    pub fn with_dependencies(mut self, dependencies: BTreeSet<AppId>) -> Application {
        debug_assert!(!dependencies.contains(&self.id));
        self.dependencies = dependencies;
        self
    }
}

/// One port of a whole application as a client or the store gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortDraft {
    pub kind: Option<String>,
    pub external: Option<i64>,
    pub internal: Option<i64>,
}

impl PortDraft {
    /// A port with every part given (an export's, a stored record's).
    pub fn assigned(kind: String, external: u16, internal: u16) -> Self {
        PortDraft {
            kind: Some(kind),
            external: Some(i64::from(external)),
            internal: Some(i64::from(internal)),
        }
    }
}

/// An application with its ports already assigned, as an export or the store holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WholeApplicationDraft {
    pub id: Option<String>,
    pub ports: Vec<PortDraft>,
    pub dependencies: Vec<String>,
    pub created_at: Timestamp,
}

impl WholeApplicationDraft {
    /// Checks every rule an application obeys: a valid id, ports of valid kinds in range, at
    /// most one per kind and each external port once, dependencies on other valid ids.
    pub fn validate(self) -> Result<Application, ValidationErrors> {
        let mut errors = Collector::default();
        let id = match self.id.as_deref() {
            Some(id) => errors.check(AppId::parse("id", id)),
            None => {
                errors.push("id", "Id cannot be empty");
                None
            }
        };
        let mut ports: Vec<PortAssignment> = Vec::with_capacity(self.ports.len());
        for (index, port) in self.ports.iter().enumerate() {
            let field = format!("ports[{index}]");
            let kind = match port.kind.as_deref() {
                Some(kind) => errors.check(KindName::parse(&format!("{field}.kind"), kind)),
                None => {
                    errors.push(format!("{field}.kind"), "is required");
                    None
                }
            };
            let choice = match (port.external, port.internal) {
                (Some(external), Some(internal)) => {
                    match PortChoice::validate(Some(external), Some(internal)) {
                        Ok(choice) => Some(choice),
                        Err(port_errors) => {
                            for error in port_errors.all() {
                                errors.push(format!("{field}.{}", error.field), &error.message);
                            }
                            None
                        }
                    }
                }
                (external, _) => {
                    let missing = if external.is_none() {
                        "external"
                    } else {
                        "internal"
                    };
                    errors.push(format!("{field}.{missing}"), "is required");
                    None
                }
            };
            let (Some(kind), Some(choice)) = (kind, choice) else {
                continue;
            };
            let (Some(external), Some(internal)) = (choice.external, choice.internal) else {
                continue;
            };
            if ports.iter().any(|p| p.kind == kind) {
                errors.push(
                    format!("{field}.kind"),
                    format!("the application has a port of kind {kind} already"),
                );
                continue;
            }
            if ports.iter().any(|p| p.external == external) {
                errors.push(
                    format!("{field}.external"),
                    format!("external port {external} is in the application twice"),
                );
                continue;
            }
            ports.push(PortAssignment {
                kind,
                external,
                internal,
            });
        }
        ports.sort_by_key(|p| p.external);
        let dependencies = validate_dependencies(&mut errors, id.as_ref(), &self.dependencies);
        errors.finish(|| Application {
            id: id.expect("checked"),
            ports,
            dependencies,
            created_at: self.created_at,
        })
    }
}

/// Explicit port choices for a port request, validated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortChoice {
    pub external: Option<u16>,
    pub internal: Option<u16>,
}

impl PortChoice {
    /// External ports must be 1025–65535 (below is privileged); internal ones 1–65535.
    pub fn validate(
        external: Option<i64>,
        internal: Option<i64>,
    ) -> Result<PortChoice, ValidationErrors> {
        let mut errors = Collector::default();
        let external = match external {
            None => None,
            Some(port) if port <= 1024 => {
                errors.push("external", "External port must be > 1024");
                None
            }
            Some(port) if port > 65535 => {
                errors.push("external", "External port must be <= 65535");
                None
            }
            Some(port) => Some(port as u16),
        };
        let internal = match internal {
            None => None,
            Some(port) if port <= 0 => {
                errors.push("internal", "Internal port must be > 0");
                None
            }
            Some(port) if port > 65535 => {
                errors.push("internal", "Internal port must be <= 65535");
                None
            }
            Some(port) => Some(port as u16),
        };
        errors.finish(|| PortChoice { external, internal })
    }
}

/// A new application: its id, its first kind and port, its dependencies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApplication {
    pub id: AppId,
    pub kind: KindName,
    pub port: PortChoice,
    pub dependencies: BTreeSet<AppId>,
}

/// An application as a client sends it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplicationDraft {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub external: Option<i64>,
    pub internal: Option<i64>,
    pub dependencies: Vec<String>,
}

/// What flow's `PUT /applications/{id}` asks: create the application (it then needs a kind),
/// or add a port of `kind` to it and replace its dependencies when they are given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplicationPut {
    pub id: AppId,
    pub kind: Option<KindName>,
    pub port: PortChoice,
    pub dependencies: Option<BTreeSet<AppId>>,
}

impl ApplicationDraft {
    pub fn validate(self) -> Result<NewApplication, ValidationErrors> {
        let put = self.check(true, true)?;
        Ok(NewApplication {
            id: put.id,
            kind: put.kind.expect("required"),
            port: put.port,
            dependencies: put.dependencies.unwrap_or_default(),
        })
    }

    /// Validates a create-or-update: the kind may be absent (an update), and the dependencies
    /// replace the application's only when `dependencies_given`.
    pub fn validate_put(
        self,
        dependencies_given: bool,
    ) -> Result<ApplicationPut, ValidationErrors> {
        self.check(false, dependencies_given)
    }

    fn check(
        self,
        kind_required: bool,
        dependencies_given: bool,
    ) -> Result<ApplicationPut, ValidationErrors> {
        let mut errors = Collector::default();
        let id = match self.id.as_deref() {
            Some(id) => errors.check(AppId::parse("id", id)),
            None => {
                errors.push("id", "Id cannot be empty");
                None
            }
        };
        let kind = match self.kind.as_deref() {
            Some(kind) => errors.check(KindName::parse("kind", kind)).map(Some),
            None if kind_required => {
                errors.push("kind", "is required");
                None
            }
            None => Some(None),
        };
        let port = match PortChoice::validate(self.external, self.internal) {
            Ok(port) => Some(port),
            Err(port_errors) => {
                for error in port_errors.all() {
                    errors.push(error.field.clone(), error.message.clone());
                }
                None
            }
        };
        let dependencies = validate_dependencies(&mut errors, id.as_ref(), &self.dependencies);
        errors.finish(|| ApplicationPut {
            id: id.expect("checked"),
            kind: kind.expect("checked"),
            port: port.expect("checked"),
            dependencies: dependencies_given.then_some(dependencies),
        })
    }
}

fn validate_dependencies(
    errors: &mut Collector,
    id: Option<&AppId>,
    dependencies: &[String],
) -> BTreeSet<AppId> {
    let mut valid = BTreeSet::new();
    for (index, dependency) in dependencies.iter().enumerate() {
        let field = format!("dependencies[{index}]");
        let Some(dependency) = errors.check(AppId::parse(&field, dependency)) else {
            continue;
        };
        if Some(&dependency) == id {
            errors.push(
                field,
                format!("Cannot declare dependency[{dependency}] on self"),
            );
            continue;
        }
        valid.insert(dependency);
    }
    valid
}

/// A whole new dependency list for `id`.
pub fn validate_dependency_list(
    id: &AppId,
    dependencies: &[String],
) -> Result<BTreeSet<AppId>, ValidationErrors> {
    let mut errors = Collector::default();
    let valid = validate_dependencies(&mut errors, Some(id), dependencies);
    errors.finish(|| valid)
}

/// Why a catalog command cannot be carried out, given what the catalog holds. Each variant is
/// a rule of the catalog; surfaces word them their own way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("application {0} already exists")]
    AppExists(AppId),
    #[error("application {0} does not exist")]
    AppNotFound(AppId),
    #[error("kind {0} already exists")]
    KindExists(KindName),
    #[error("kind {0} does not exist")]
    KindNotFound(KindName),
    #[error("kind {kind} is used by {}", list(apps))]
    KindInUse { kind: KindName, apps: Vec<AppId> },
    #[error("external port {port} is already assigned to the application {owner}")]
    PortTaken { port: u16, owner: AppId },
    #[error("no free port block is left below {ceiling}")]
    RangeExhausted { ceiling: u16 },
    #[error("dependency {0} references a non existing application")]
    DependencyMissing(AppId),
    #[error("dependency cycle: {}", path(.0))]
    Cycle(Vec<AppId>),
    #[error("{app} is a dependency of {}", list(dependents))]
    HasDependents { app: AppId, dependents: Vec<AppId> },
    #[error("{what} {name} already exists")]
    EntityExists {
        what: &'static str,
        name: EntityName,
    },
    #[error("{what} {name} does not exist")]
    EntityNotFound {
        what: &'static str,
        name: EntityName,
    },
}

fn list(apps: &[AppId]) -> String {
    apps.iter()
        .map(AppId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn path(apps: &[AppId]) -> String {
    apps.iter()
        .map(AppId::as_str)
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keys_follow_flows_rules_and_messages() {
        assert!(AppId::parse("id", "splashpage-postgresql").is_ok());
        assert!(AppId::parse("id", "a.b_c-9").is_ok());
        let short = AppId::parse("id", "a").unwrap_err();
        assert_eq!(short.message, "Key must be at least 2 characters");
        let bad = AppId::parse("id", " a bad id ").unwrap_err();
        assert_eq!(
            bad.message,
            "Key must be in all lower case and contain alphanumerics only (-, _, and . are supported). A valid key would be: a-bad-id"
        );
        assert_eq!(
            AppId::parse("id", "").unwrap_err().message,
            "Id cannot be empty"
        );
        assert_eq!(format_url_key("--Foo__Bar  baz--"), "foo_bar-baz");
        assert!(KindName::parse("kind", "pg").is_err());
        // Defect M15: keys of dots only cannot be addressed in a URL.
        for dots in ["..", "...", "....."] {
            assert!(AppId::parse("id", dots).is_err(), "{dots}");
            assert!(KindName::parse("kind", dots).is_err(), "{dots}");
        }
        assert!(AppId::parse("id", "a..").is_ok());
    }

    #[test]
    fn families() {
        assert_eq!(family("registry-postgresql"), "registry");
        assert_eq!(family("foo-bar-baz"), "foo-bar");
        assert_eq!(family("www"), "www");
        let id = AppId::parse("id", "foo-bar-baz").unwrap();
        assert!(id.in_family("foo"));
        assert!(id.in_family("foo-bar"));
        assert!(!id.in_family("fo"));
        assert!(!AppId::parse("id", "foobar").unwrap().in_family("foo"));
    }

    #[test]
    fn application_drafts_report_every_problem() {
        let errors = ApplicationDraft {
            id: Some("x".into()),
            kind: None,
            external: Some(80),
            internal: Some(0),
            dependencies: vec!["x".into()],
        }
        .validate()
        .unwrap_err();
        let messages: Vec<&str> = errors.all().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "Key must be at least 2 characters",
                "is required",
                "External port must be > 1024",
                "Internal port must be > 0",
                "Key must be at least 2 characters",
            ]
        );
        let self_dependency = ApplicationDraft {
            id: Some("app".into()),
            kind: Some("play".into()),
            dependencies: vec!["app".into()],
            ..ApplicationDraft::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            self_dependency.first().message,
            "Cannot declare dependency[app] on self"
        );
    }

    #[test]
    fn kinds_are_validated() {
        let kind = KindDraft {
            name: Some("redis".into()),
            default_port: Some(6379),
            offset: None,
        }
        .validate(None, 10)
        .unwrap();
        assert_eq!(kind.offset(), None);
        let bad = KindDraft {
            name: Some("redis".into()),
            default_port: Some(0),
            offset: Some(10),
        }
        .validate(None, 10)
        .unwrap_err();
        assert_eq!(bad.all().len(), 2);
        assert_eq!(seed_kinds().len(), 3);
    }
}
