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
    /// The store cannot be reached or is shutting down; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => RegistryError::Unavailable(message),
            StoreError::Closed => {
                RegistryError::Unavailable("the registry is shutting down".into())
            }
            other => RegistryError::Store(other),
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
