//! The live half of the registry: instance records as the store keeps them (`records`), the
//! in-memory view of every live instance (`view`), the writes (`commands`: register, renew,
//! update, heartbeat, deregister), what each revision means (`events`) and the live feed that
//! publishes it to every subscriber (`feed`).

pub(crate) mod commands;
pub(crate) mod events;
pub(crate) mod feed;
pub(crate) mod records;
pub(crate) mod view;
