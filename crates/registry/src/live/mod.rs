//! The live half of the registry: instance records as the store keeps them (`records`), the
//! in-memory view of every live instance (`view`), the writes (`commands`: register, renew,
//! update, heartbeat, deregister) and the events read from the store's watch (`events`).

pub(crate) mod commands;
pub(crate) mod events;
pub(crate) mod records;
pub(crate) mod view;
