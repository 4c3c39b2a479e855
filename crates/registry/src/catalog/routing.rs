//! bender's routing entities, backends and frontends, behind one set of operations: both are
//! named records of the catalog with the same lifecycle (list, read, create once, delete), so
//! every surface handles them with the same code.

use super::commands::{Plan, catalog};
use super::records::{encode_backend, encode_frontend};
use super::view::{CatalogState, Versioned};
use crate::RegistryError;
use crate::error::Result;
use crate::{Consistency, Registry, keys};
use berth_domain::catalog::{Backend, CatalogError, EntityName, Frontend};
use berth_store::Compare;
use berth_store::TxnOp;
use std::collections::BTreeMap;

/// A backend or a frontend.
pub trait RoutingEntity: sealed::Stored + Clone + Send + Sync + 'static {
    /// `backend` or `frontend`, for messages.
    const WHAT: &'static str;

    fn entity_name(&self) -> &EntityName;
}

pub(crate) mod sealed {
    use super::*;

    /// Where the catalog keeps an entity; only the registry implements it.
    pub trait Stored {
        /// `/berth/catalog/backends/` or `/berth/catalog/frontends/`.
        const PREFIX: &'static str;

        fn collection(state: &CatalogState) -> &BTreeMap<EntityName, Versioned<Self>>
        where
            Self: Sized;

        fn encode(&self) -> Vec<u8>;
    }
}

impl sealed::Stored for Backend {
    const PREFIX: &'static str = keys::BACKENDS;

    fn collection(state: &CatalogState) -> &BTreeMap<EntityName, Versioned<Self>> {
        &state.backends
    }

    fn encode(&self) -> Vec<u8> {
        encode_backend(self)
    }
}

impl RoutingEntity for Backend {
    const WHAT: &'static str = "backend";

    fn entity_name(&self) -> &EntityName {
        self.name()
    }
}

impl sealed::Stored for Frontend {
    const PREFIX: &'static str = keys::FRONTENDS;

    fn collection(state: &CatalogState) -> &BTreeMap<EntityName, Versioned<Self>> {
        &state.frontends
    }

    fn encode(&self) -> Vec<u8> {
        encode_frontend(self)
    }
}

impl RoutingEntity for Frontend {
    const WHAT: &'static str = "frontend";

    fn entity_name(&self) -> &EntityName {
        self.name()
    }
}

impl Registry {
    /// Every backend (or frontend), by name.
    pub async fn routing_entities<E: RoutingEntity>(&self) -> Result<Vec<E>> {
        self.sync(Consistency::Local).await?;
        Ok(E::collection(&self.inner.catalog.read())
            .values()
            .map(|e| e.value.clone())
            .collect())
    }

    pub async fn routing_entity<E: RoutingEntity>(&self, name: &EntityName) -> Result<Option<E>> {
        self.sync(Consistency::Local).await?;
        Ok(E::collection(&self.inner.catalog.read())
            .get(name)
            .map(|e| e.value.clone()))
    }

    /// Creates a backend (or frontend); `EntityExists` when the name is taken.
    pub async fn create_routing<E: RoutingEntity>(&self, entity: E) -> Result<E> {
        let key = keys::entity_key(E::PREFIX, entity.entity_name().as_str());
        let record = entity.encode();
        let cap = self.inner.config.caps.routing_entities;
        self.catalog_write(|state, _| {
            if E::collection(state).contains_key(entity.entity_name()) {
                return Err(catalog(CatalogError::EntityExists {
                    what: E::WHAT,
                    name: entity.entity_name().clone(),
                }));
            }
            if E::collection(state).len() >= cap {
                return Err(RegistryError::LimitReached(format!(
                    "there are {cap} {what}s, the most the catalog keeps \
                     (catalog.max_routing_entities)",
                    what = E::WHAT
                )));
            }
            Ok(Plan {
                compares: vec![Compare::absent(key.clone())],
                ops: vec![TxnOp::put(key.clone(), record.clone(), None)],
                value: (),
            })
        })
        .await?;
        Ok(entity)
    }

    /// Deletes a backend (or frontend); `EntityNotFound` when there is none of that name.
    pub async fn delete_routing<E: RoutingEntity>(&self, name: &EntityName) -> Result<()> {
        let key = keys::entity_key(E::PREFIX, name.as_str());
        self.catalog_write(|state, _| {
            let revision = E::collection(state)
                .get(name)
                .ok_or_else(|| {
                    catalog(CatalogError::EntityNotFound {
                        what: E::WHAT,
                        name: name.clone(),
                    })
                })?
                .revision;
            Ok(Plan {
                compares: vec![Compare::unchanged_since(key.clone(), revision)],
                ops: vec![TxnOp::delete(key.clone())],
                value: (),
            })
        })
        .await
    }
}
