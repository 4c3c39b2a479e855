//! The native `/v1` API.

pub mod events;
pub mod instances;
