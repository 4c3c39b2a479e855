//! Validated names. Each is a newtype so a service name can never be passed where an instance
//! id is expected, and each can only be built through its validation.

use crate::ValidationError;
use std::fmt;
use std::sync::Arc;

/// A discovery service's name: lowercase letters, digits, `-`, `_` and `.`, 1 to 128
/// characters. Safe in store keys, URL paths and DNS labels' neighbourhood. Shared, not
/// copied: every instance of a service points at one string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(Arc<str>);

impl ServiceName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {} characters long", Self::MAX_LEN),
            ));
        }
        if let Some(bad) = text.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        }) {
            return Err(ValidationError::new(
                field,
                format!(
                    "may contain only lowercase letters, digits, '-', '_' and '.' (found {bad:?})"
                ),
            ));
        }
        if text == "." || text == ".." {
            return Err(ValidationError::new(field, "cannot be '.' or '..'"));
        }
        Ok(ServiceName(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An instance's id within its service: by default `address:port`. 1 to 256 printable
/// characters without `/`, whitespace, `?`, `#` or `%`, so it is one path segment as is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    pub const MAX_LEN: usize = 256;

    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {} characters long", Self::MAX_LEN),
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
        if text == "." || text == ".." {
            return Err(ValidationError::new(field, "cannot be '.' or '..'"));
        }
        Ok(InstanceId(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert!(ServiceName::parse("service", "web-api_v2.internal").is_ok());
        assert!(ServiceName::parse("service", "").is_err());
        assert!(ServiceName::parse("service", "Web").is_err());
        assert!(ServiceName::parse("service", "a/b").is_err());
        assert!(ServiceName::parse("service", "..").is_err());
        assert!(ServiceName::parse("service", &"a".repeat(128)).is_ok());
        assert!(ServiceName::parse("service", &"a".repeat(129)).is_err());
    }

    #[test]
    fn instance_ids() {
        assert!(InstanceId::parse("id", "10.0.0.1:8080").is_ok());
        assert!(InstanceId::parse("id", "[::1]:8080").is_ok());
        assert!(InstanceId::parse("id", "a b").is_err());
        assert!(InstanceId::parse("id", "a/b").is_err());
        assert!(InstanceId::parse("id", "").is_err());
    }
}
