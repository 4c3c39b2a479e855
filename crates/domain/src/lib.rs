//! berth's pure domain: the names, records and rules every surface shares. Nothing here does
//! I/O or reads a clock (time comes in as a value), and nothing here knows a wire format: each
//! surface owns its DTOs and converts them into the validated commands defined here.

pub mod auth;
pub mod catalog;
mod error;
mod instance;
mod names;
mod time;

pub use error::{ValidationError, ValidationErrors};
pub use instance::{
    Address, Instance, InstanceDefaults, InstanceDraft, InstanceFilter, InstanceSpec, LOWEST_TTL,
    MAX_META, MAX_TTL, MIN_TTL, OfflineReason, Origin,
};
pub use names::{InstanceId, ServiceName};
pub use time::Timestamp;
