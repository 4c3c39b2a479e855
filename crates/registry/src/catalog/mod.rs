//! The catalog half of the registry: kinds, applications and their ports and dependencies,
//! backends and frontends; planned against an in-memory view, committed as compare-and-swap
//! transactions, journalled in the same transaction.

mod commands;
mod import;
mod journal;
mod queries;
mod records;
mod routing;
pub(crate) mod view;

pub use commands::{AllocatorStatus, DependencyChange};
pub use import::ImportSummary;
pub use journal::{JournalRetention, JournalWindow, PRUNE_INTERVAL as JOURNAL_PRUNE_INTERVAL};
pub use queries::{AppQuery, AppSort, CatalogSnapshot, HistoryEntry};
pub use records::{ChangeType, StoredKind, extras_as_json};
pub use routing::RoutingEntity;
