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

/// The most free-form fields one backend or frontend keeps.
pub const MAX_EXTRA_FIELDS: usize = 64;
/// The most bytes of free-form JSON one backend or frontend keeps (names and values).
pub const MAX_EXTRA_BYTES: usize = 16 * 1024;
/// How deep a free-form value may nest: far below any parser's own limit, so whatever is
/// accepted is also read back, wrapped in the stored record.
pub const MAX_EXTRA_DEPTH: usize = 32;

impl RawJson {
    /// How deep arrays and objects nest in the text (0 for a scalar).
    pub fn depth(&self) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for byte in self.0.bytes() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }
}

/// Names the APIs show themselves next to the free-form fields (bender's `id` and `resource`,
/// a backend's live `members`): a field of that name would be shown twice.
pub const SERVER_KEPT_NAMES: &[&str] = &["id", "resource", "members"];

/// Checks the free-form fields of a backend or frontend against the bounds above.
fn check_extra(errors: &mut Collector, extra: &BTreeMap<String, RawJson>) {
    for name in SERVER_KEPT_NAMES {
        if extra.contains_key(*name) {
            errors.push(
                *name,
                format!("{name} is kept by the server; leave it out of the request"),
            );
        }
    }
    if extra.len() > MAX_EXTRA_FIELDS {
        errors.push(
            "extra",
            format!("{} extra fields; at most {MAX_EXTRA_FIELDS}", extra.len()),
        );
    }
    let bytes: usize = extra.iter().map(|(k, v)| k.len() + v.0.len()).sum();
    if bytes > MAX_EXTRA_BYTES {
        errors.push(
            "extra",
            format!("{bytes} bytes of extra fields; at most {MAX_EXTRA_BYTES}"),
        );
    }
    for (name, value) in extra {
        if value.depth() > MAX_EXTRA_DEPTH {
            errors.push(
                name.clone(),
                format!(
                    "nests {} levels deep; at most {MAX_EXTRA_DEPTH}",
                    value.depth()
                ),
            );
        }
    }
}

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
        check_extra(&mut errors, &self.extra);
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
        check_extra(&mut errors, &self.extra);
        errors.finish(|| Frontend {
            name: name.expect("checked"),
            backend: self.backend,
            extra: self.extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(extra: &[(&str, &str)]) -> BackendDraft {
        BackendDraft {
            name: Some("hw".into()),
            app: Some("web".into()),
            version: Some("1".into()),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), RawJson(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(RawJson("1".into()).depth(), 0);
        assert_eq!(RawJson(r#"{"a":[1,{"b":[]}]}"#.into()).depth(), 4);
        assert_eq!(RawJson(r#""[[[[\"[[""#.into()).depth(), 0);
        assert_eq!(RawJson(r#"["\\",[]]"#.into()).depth(), 2);
    }

    #[test]
    fn extras_deeper_bigger_or_more_than_the_bounds_are_refused() {
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let errors = draft(&[("x", &deep)]).validate().unwrap_err();
        assert!(errors.to_string().contains("nests 33 levels"), "{errors}");
        let fine = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(draft(&[("x", &fine)]).validate().is_ok());
        let big = format!("\"{}\"", "a".repeat(MAX_EXTRA_BYTES));
        let errors = draft(&[("x", &big)]).validate().unwrap_err();
        assert!(
            errors.to_string().contains("bytes of extra fields"),
            "{errors}"
        );
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "1".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let errors = draft(&many).validate().unwrap_err();
        assert!(errors.to_string().contains("65 extra fields"), "{errors}");
    }
}
