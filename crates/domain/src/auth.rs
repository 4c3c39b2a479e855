//! Who may do what: tokens belong to an owner (a team) and carry grants; every request is one
//! action, and a token allows it when one of its grants covers it. One model for every surface
//! (native, compat, xDS, DNS): no deny rules, no policy language, a token readable in one line
//! (`write:payments-* read:*`).

use crate::error::Collector;
use crate::{ServiceName, ValidationError, ValidationErrors};
use std::fmt;
use std::sync::Arc;

/// A team that owns tokens and, through them, the instances they registered: a URL key of 1 to
/// 64 lowercase letters, digits, `-`, `_` or `.`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(Arc<str>);

impl Owner {
    pub fn parse(field: &str, text: &str) -> Result<Owner, ValidationError> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if !valid {
            return Err(ValidationError::new(
                field,
                "an owner is 1 to 64 lowercase letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(Owner(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which services a live-instance grant covers: those whose name starts with a prefix
/// (`payments-*`; `*` is every service), or one name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Services {
    Prefix(String),
    Exactly(String),
}

impl Services {
    fn covers(&self, service: &str) -> bool {
        match self {
            Services::Prefix(prefix) => service.starts_with(prefix.as_str()),
            Services::Exactly(name) => service == name,
        }
    }

    fn covers_all(&self) -> bool {
        matches!(self, Services::Prefix(prefix) if prefix.is_empty())
    }

    /// Whether everything `other` covers, this covers too.
    fn includes(&self, other: &Services) -> bool {
        match other {
            Services::Prefix(prefix) => {
                matches!(self, Services::Prefix(mine) if prefix.starts_with(mine.as_str()))
            }
            Services::Exactly(name) => self.covers(name),
        }
    }
}

impl fmt::Display for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Services::Prefix(prefix) => write!(f, "{prefix}*"),
            Services::Exactly(name) => f.write_str(name),
        }
    }
}

/// One thing a token may do. Writes imply reads of the same scope; `admin` implies everything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// Read live instances of these services (queries, events, DNS, xDS).
    Read(Services),
    /// Register, renew, change and deregister instances of these services.
    Write(Services),
    /// Read the catalog: kinds, applications, dependencies, backends, frontends, exports.
    CatalogRead,
    /// Change the catalog (imports included).
    CatalogWrite,
    /// Everything, tokens included.
    Admin,
}

impl Grant {
    /// `read:<prefix>*`, `read:<service>`, `write:…`, `catalog:read`, `catalog:write`, `admin`.
    pub fn parse(field: &str, text: &str) -> Result<Grant, ValidationError> {
        let services = |pattern: &str| -> Result<Services, ValidationError> {
            let invalid = || {
                ValidationError::new(
                    field,
                    format!(
                        "{text:?}: services are a name, a prefix ending in '*', or '*' for every service"
                    ),
                )
            };
            match pattern.strip_suffix('*') {
                Some(prefix) => {
                    if prefix.contains('*')
                        || !prefix.bytes().all(|b| {
                            b.is_ascii_lowercase()
                                || b.is_ascii_digit()
                                || matches!(b, b'-' | b'_' | b'.')
                        })
                    {
                        return Err(invalid());
                    }
                    Ok(Services::Prefix(prefix.to_string()))
                }
                None => ServiceName::parse(field, pattern)
                    .map(|name| Services::Exactly(name.as_str().to_string()))
                    .map_err(|_| invalid()),
            }
        };
        match text.split_once(':') {
            Some(("read", pattern)) => Ok(Grant::Read(services(pattern)?)),
            Some(("write", pattern)) => Ok(Grant::Write(services(pattern)?)),
            Some(("catalog", "read")) => Ok(Grant::CatalogRead),
            Some(("catalog", "write")) => Ok(Grant::CatalogWrite),
            None if text == "admin" => Ok(Grant::Admin),
            _ => Err(ValidationError::new(
                field,
                format!(
                    "{text:?} is not a grant: use read:<service-prefix>*, write:<service-prefix>*, \
                     catalog:read, catalog:write or admin"
                ),
            )),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Read(services) => write!(f, "read:{services}"),
            Grant::Write(services) => write!(f, "write:{services}"),
            Grant::CatalogRead => f.write_str("catalog:read"),
            Grant::CatalogWrite => f.write_str("catalog:write"),
            Grant::Admin => f.write_str("admin"),
        }
    }
}

/// What one request does, as the auth check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read the live instances of one service.
    ReadService(&'a str),
    /// Read live instances of every service (listings across services, unfiltered streams).
    ReadAll,
    /// Register, renew, change or deregister instances of one service.
    WriteService(&'a str),
    CatalogRead,
    CatalogWrite,
    /// Tokens and whatever else only an administrator may do.
    Admin,
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::ReadService(service) => write!(f, "read:{service}"),
            Action::ReadAll => f.write_str("read:*"),
            Action::WriteService(service) => write!(f, "write:{service}"),
            Action::CatalogRead => f.write_str("catalog:read"),
            Action::CatalogWrite => f.write_str("catalog:write"),
            Action::Admin => f.write_str("admin"),
        }
    }
}

/// A token's grants, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants(Vec<Grant>);

impl Grants {
    pub fn new(grants: Vec<Grant>) -> Self {
        Grants(grants)
    }

    /// Every grant (for anonymous reads: `read:*` and `catalog:read`).
    pub fn read_everything() -> Self {
        Grants(vec![
            Grant::Read(Services::Prefix(String::new())),
            Grant::CatalogRead,
        ])
    }

    pub fn all(&self) -> &[Grant] {
        &self.0
    }

    /// Each grant as written (`write:payments-*`), as stored and shown.
    pub fn texts(&self) -> Vec<String> {
        self.0.iter().map(Grant::to_string).collect()
    }

    pub fn is_admin(&self) -> bool {
        self.0.contains(&Grant::Admin)
    }

    pub fn allows(&self, action: &Action<'_>) -> bool {
        self.0.iter().any(|grant| match (grant, action) {
            (Grant::Admin, _) => true,
            (Grant::Read(services) | Grant::Write(services), Action::ReadService(service)) => {
                services.covers(service)
            }
            (Grant::Read(services) | Grant::Write(services), Action::ReadAll) => {
                services.covers_all()
            }
            (Grant::Write(services), Action::WriteService(service)) => services.covers(service),
            (Grant::CatalogRead | Grant::CatalogWrite, Action::CatalogRead) => true,
            (Grant::CatalogWrite, Action::CatalogWrite) => true,
            _ => false,
        })
    }

    /// Whether this token may hand out `grant` (a token is created only with grants its
    /// creator holds; in practice admins create tokens).
    pub fn includes(&self, grant: &Grant) -> bool {
        self.0.iter().any(|mine| match (mine, grant) {
            (Grant::Admin, _) => true,
            (Grant::Read(mine) | Grant::Write(mine), Grant::Read(theirs)) => mine.includes(theirs),
            (Grant::Write(mine), Grant::Write(theirs)) => mine.includes(theirs),
            (Grant::CatalogRead | Grant::CatalogWrite, Grant::CatalogRead) => true,
            (Grant::CatalogWrite, Grant::CatalogWrite) => true,
            _ => false,
        })
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.0.iter().map(Grant::to_string).collect();
        f.write_str(&texts.join(" "))
    }
}

/// A token as an administrator asks for it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenDraft {
    pub owner: Option<String>,
    pub grants: Vec<String>,
    pub description: Option<String>,
}

/// A validated token request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    pub owner: Owner,
    pub grants: Grants,
    pub description: String,
}

impl TokenDraft {
    pub fn validate(self) -> Result<TokenSpec, ValidationErrors> {
        let mut errors = Collector::default();
        let owner = match self.owner.as_deref() {
            Some(owner) => errors.check(Owner::parse("owner", owner)),
            None => {
                errors.push("owner", "is required");
                None
            }
        };
        if self.grants.is_empty() {
            errors.push("grants", "a token needs at least one grant");
        }
        let mut grants = Vec::new();
        for (index, grant) in self.grants.iter().enumerate() {
            if let Some(grant) = errors.check(Grant::parse(&format!("grants[{index}]"), grant))
                && !grants.contains(&grant)
            {
                grants.push(grant);
            }
        }
        let description = self.description.unwrap_or_default();
        if description.len() > 256 || description.chars().any(char::is_control) {
            errors.push(
                "description",
                "at most 256 bytes, without control characters",
            );
        }
        errors.finish(|| TokenSpec {
            owner: owner.expect("checked"),
            grants: Grants::new(grants),
            description,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(texts: &[&str]) -> Grants {
        Grants::new(
            texts
                .iter()
                .map(|t| Grant::parse("g", t).unwrap())
                .collect(),
        )
    }

    #[test]
    fn grants_cover_what_they_say() {
        let team = grants(&["write:payments-*", "read:*"]);
        assert!(team.allows(&Action::WriteService("payments-api")));
        assert!(!team.allows(&Action::WriteService("orders")));
        assert!(team.allows(&Action::ReadService("orders")));
        assert!(team.allows(&Action::ReadAll));
        assert!(!team.allows(&Action::CatalogRead));
        assert!(!team.allows(&Action::Admin));
        let narrow = grants(&["read:payments-*"]);
        assert!(!narrow.allows(&Action::ReadAll));
        assert!(!narrow.allows(&Action::WriteService("payments-api")));
        let one = grants(&["write:web"]);
        assert!(
            one.allows(&Action::ReadService("web")),
            "writes imply reads"
        );
        assert!(!one.allows(&Action::ReadService("web2")));
        assert!(grants(&["catalog:write"]).allows(&Action::CatalogRead));
        assert!(!grants(&["catalog:read"]).allows(&Action::CatalogWrite));
        assert!(grants(&["admin"]).allows(&Action::Admin));
        assert!(grants(&["admin"]).allows(&Action::WriteService("anything")));
    }

    #[test]
    fn grants_are_parsed_strictly_and_print_as_given() {
        for text in [
            "read:*",
            "write:payments-*",
            "read:web",
            "catalog:read",
            "admin",
        ] {
            assert_eq!(Grant::parse("g", text).unwrap().to_string(), text);
        }
        for bad in [
            "read",
            "read:Pay*",
            "write:a*b*",
            "catalog:all",
            "root",
            "read:",
        ] {
            assert!(Grant::parse("g", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_includes_only_grants_it_covers() {
        let team = grants(&["write:payments-*"]);
        assert!(team.includes(&Grant::parse("g", "read:payments-api-*").unwrap()));
        assert!(team.includes(&Grant::parse("g", "write:payments-api").unwrap()));
        assert!(!team.includes(&Grant::parse("g", "write:*").unwrap()));
        assert!(!team.includes(&Grant::Admin));
    }

    #[test]
    fn token_drafts_report_every_problem() {
        let errors = TokenDraft {
            owner: Some("Team A".into()),
            grants: vec!["root".into()],
            description: None,
        }
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.all().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["owner", "grants[0]"]);
    }
}
