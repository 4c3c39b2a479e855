//! The registry's errors. Each surface maps these once to its own status codes and shapes.

use berth_domain::ValidationErrors;
use berth_domain::catalog::CatalogError;
use berth_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The input broke a domain rule; every broken rule is listed.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but conflicts with the current state (a taken port, a name in use,
    /// a cycle). `field` names the input at fault when there is one.
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    /// A catalog rule refused the command (a taken port, a cycle, a missing kind…).
    #[error("{0}")]
    Catalog(CatalogError),
    /// The request needs credentials it did not bring (a token), or brought unknown ones.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credentials do not grant what the request does.
    #[error("{0}")]
    Forbidden(String),
    /// The request is more than the store takes at once: a record over its size limit, or a
    /// change over its operation limit.
    #[error("{0}")]
    TooLarge(String),
    /// A cap on what clients may store was reached (the message names its setting).
    #[error("{0}")]
    LimitReached(String),
    /// The store cannot be reached or is shutting down; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A write reached the store but its answer did not come back: it may or may not have been
    /// applied. Repeating it is safe only where repeating changes nothing more.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A fault of berth or its store, not of the request (a stored record that does not
    /// decode, a storage failure): logged, and answered as a server error.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for RegistryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => RegistryError::Unavailable(message),
            StoreError::OutcomeUnknown(message) => RegistryError::OutcomeUnknown(format!(
                "the change may or may not have been applied ({message}); read it back, or \
                 repeat it if repeating is harmless"
            )),
            StoreError::Closed => {
                RegistryError::Unavailable("the registry is shutting down".into())
            }
            StoreError::RequestTooLarge { size, limit } => RegistryError::TooLarge(format!(
                "the record of {size} bytes exceeds the store's limit of {limit} bytes"
            )),
            StoreError::TooManyOperations { limit, .. } => RegistryError::TooLarge(format!(
                "the change needs more than the store's {limit} operations at once"
            )),
            other => RegistryError::Internal(format!("store: {other}")),
        }
    }
}

impl RegistryError {
    pub fn conflict(message: impl Into<String>) -> Self {
        RegistryError::Conflict {
            message: message.into(),
            field: None,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
