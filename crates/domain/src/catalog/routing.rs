//! bender's routing entities. A backend is the set of live instances of one service at one
//! version; a frontend serves a backend. Both keep any other field a client gives, as given.

use crate::error::Collector;
use crate::{ServiceName, ValidationError, ValidationErrors};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A backend's or frontend's name: 1 to 128 printable characters without `/`, `?`, `#`, `%`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityName(Arc<str>);

impl EntityName {
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.len() > 128 {
            return Err(ValidationError::new(
                field,
                "must be 1 to 128 characters long",
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '?' | '#' | '%'))
        {
            return Err(ValidationError::new(
                field,
                format!("may not contain {bad:?} (printable ASCII without '/', '?', '#', '%')"),
            ));
        }
        Ok(EntityName(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value kept exactly as the client sent it (JSON text). The domain does not read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawJson(pub String);

/// Only [`BackendDraft::validate`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    name: EntityName,
    app: ServiceName,
    version: String,
    extra: BTreeMap<String, RawJson>,
}

impl Backend {
    pub fn name(&self) -> &EntityName {
        &self.name
    }

    /// The service whose instances make the backend.
    pub fn app(&self) -> &ServiceName {
        &self.app
    }

    /// The instances' version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every other field the client gave, as given.
    pub fn extra(&self) -> &BTreeMap<String, RawJson> {
        &self.extra
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendDraft {
    pub name: Option<String>,
    pub app: Option<String>,
    pub version: Option<String>,
    pub extra: BTreeMap<String, RawJson>,
}

impl BackendDraft {
    pub fn validate(self) -> Result<Backend, ValidationErrors> {
        // An empty field is a missing one (bender's rule).
        let mut errors = Collector::default();
        let name = match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => errors.check(EntityName::parse("name", name)),
            None => {
                errors.push("name", "Backend name is required");
                None
            }
        };
        let app = match self.app.as_deref().filter(|a| !a.is_empty()) {
            Some(app) => errors.check(ServiceName::parse("app", app)),
            None => {
                errors.push("app", "Application name and version are required");
                None
            }
        };
        let version = match self.version.filter(|v| !v.is_empty()) {
            Some(version) if version.len() <= 256 => Some(version),
            Some(_) => {
                errors.push("version", "must be 1 to 256 characters long");
                None
            }
            None => {
                errors.push("version", "Application name and version are required");
                None
            }
        };
        errors.finish(|| Backend {
            name: name.expect("checked"),
            app: app.expect("checked"),
            version: version.expect("checked"),
            extra: self.extra,
        })
    }
}

/// Only [`FrontendDraft::validate`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    name: EntityName,
    backend: Option<String>,
    extra: BTreeMap<String, RawJson>,
}

impl Frontend {
    pub fn name(&self) -> &EntityName {
        &self.name
    }

    /// The backend it serves, when given.
    pub fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// Every other field the client gave, as given.
    pub fn extra(&self) -> &BTreeMap<String, RawJson> {
        &self.extra
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendDraft {
    pub name: Option<String>,
    pub backend: Option<String>,
    pub extra: BTreeMap<String, RawJson>,
}

impl FrontendDraft {
    pub fn validate(self) -> Result<Frontend, ValidationErrors> {
        let mut errors = Collector::default();
        let name = match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => errors.check(EntityName::parse("name", name)),
            None => {
                errors.push("name", "Frontend name is required");
                None
            }
        };
        errors.finish(|| Frontend {
            name: name.expect("checked"),
            backend: self.backend,
            extra: self.extra,
        })
    }
}
