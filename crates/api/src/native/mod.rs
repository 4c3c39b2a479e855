//! The native `/v1` API.

pub mod catalog;
pub mod events;
pub mod instances;
