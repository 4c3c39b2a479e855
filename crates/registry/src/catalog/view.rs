//! The catalog view: every kind, application, port claim, backend and frontend in memory with
//! the revision that last wrote it, fed by the store's watch like the instance view. Writes
//! read it to plan a transaction and compare those revisions, so a plan made from a stale view
//! fails its compare instead of applying.

use super::records::{
    StoredKind, decode_app, decode_backend, decode_claim, decode_frontend, decode_kind,
};
use crate::keys;
use berth_domain::catalog::{AppId, Application, Backend, EntityName, Frontend, KindName};
use berth_store::{EventKind, KeyValue, Revision, TxnOp, WatchBatch};
use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard};

/// A value, the revision that last wrote it and the one that created it (which orders
/// records created in the same millisecond).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
    pub created: Revision,
}

/// Who owns an external port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub app: AppId,
    pub kind: KindName,
}

#[derive(Debug, Default)]
pub struct CatalogState {
    pub kinds: BTreeMap<KindName, Versioned<StoredKind>>,
    pub apps: BTreeMap<AppId, Versioned<Application>>,
    pub ports: BTreeMap<u16, Claim>,
    pub high_water: Option<Versioned<u16>>,
    /// The last revision that changed any dependency edge (0: none yet).
    pub graph: Revision,
    pub seeded: bool,
    pub backends: BTreeMap<EntityName, Versioned<Backend>>,
    pub frontends: BTreeMap<EntityName, Versioned<Frontend>>,
}

/// One record of a keyed collection: a put (`stamp`: its revisions) decodes and stores it, a
/// delete removes it.
fn apply_record<K: Ord, V>(
    records: &mut BTreeMap<K, Versioned<V>>,
    key: K,
    stamp: Option<(Revision, Revision)>,
    decode: impl FnOnce() -> Result<V, String>,
) -> Result<(), String> {
    match stamp {
        Some((revision, created)) => {
            let value = decode()?;
            records.insert(
                key,
                Versioned {
                    value,
                    revision,
                    created,
                },
            );
        }
        None => {
            records.remove(&key);
        }
    }
    Ok(())
}

impl CatalogState {
    /// Applies one change; a record that does not decode is left out (and the error returned).
    fn apply(&mut self, kind: EventKind, kv: &KeyValue) -> Result<(), String> {
        let Ok(key) = std::str::from_utf8(&kv.key) else {
            return Err(format!("catalog key {:?} is not UTF-8", kv.key));
        };
        let revision = kv.mod_revision;
        let created = kv.create_revision;
        let put = kind == EventKind::Put;
        // `Some((revision, created))` for a put, `None` for a delete.
        let stamp = put.then_some((revision, created));
        let result: Result<(), String> = (|| {
            if let Some(name) = key.strip_prefix(keys::KINDS) {
                let name_key = KindName::parse("name", name).map_err(|e| e.to_string())?;
                apply_record(&mut self.kinds, name_key, stamp, || {
                    decode_kind(name, &kv.value)
                })?;
            } else if let Some(id) = key.strip_prefix(keys::APPS) {
                let id_key = AppId::parse("id", id).map_err(|e| e.to_string())?;
                apply_record(&mut self.apps, id_key, stamp, || decode_app(id, &kv.value))?;
            } else if let Some(port) = key.strip_prefix(keys::PORTS) {
                let port: u16 = port.parse().map_err(|_| format!("bad port key {key}"))?;
                if put {
                    let claim = decode_claim(&kv.value)?;
                    self.ports.insert(
                        port,
                        Claim {
                            app: AppId::parse("app", &claim.app).map_err(|e| e.to_string())?,
                            kind: KindName::parse("kind", &claim.kind)
                                .map_err(|e| e.to_string())?,
                        },
                    );
                } else {
                    self.ports.remove(&port);
                }
            } else if key == keys::HIGH_WATER {
                self.high_water = if put {
                    let text = std::str::from_utf8(&kv.value).map_err(|e| e.to_string())?;
                    let value = text
                        .parse()
                        .map_err(|_| format!("bad high-water mark {text:?}"))?;
                    Some(Versioned {
                        value,
                        revision,
                        created,
                    })
                } else {
                    None
                };
            } else if key == keys::GRAPH {
                self.graph = if put { revision } else { Revision(0) };
            } else if key == keys::SEEDED {
                self.seeded = put;
            } else if let Some(name) = key.strip_prefix(keys::BACKENDS) {
                let name_key = EntityName::parse("name", name).map_err(|e| e.to_string())?;
                apply_record(&mut self.backends, name_key, stamp, || {
                    decode_backend(name, &kv.value)
                })?;
            } else if let Some(name) = key.strip_prefix(keys::FRONTENDS) {
                let name_key = EntityName::parse("name", name).map_err(|e| e.to_string())?;
                apply_record(&mut self.frontends, name_key, stamp, || {
                    decode_frontend(name, &kv.value)
                })?;
            }
            Ok(())
        })();
        if result.is_err() {
            // What the record was is gone: never serve the version before it.
            self.forget(key);
        }
        result
    }

    /// Removes whatever `key` held (a record that no longer decodes).
    fn forget(&mut self, key: &str) {
        let name = |prefix: &str| {
            key.strip_prefix(prefix)
                .and_then(|n| EntityName::parse("name", n).ok())
        };
        if let Some(name) = key
            .strip_prefix(keys::KINDS)
            .and_then(|n| KindName::parse("name", n).ok())
        {
            self.kinds.remove(&name);
        } else if let Some(id) = key
            .strip_prefix(keys::APPS)
            .and_then(|n| AppId::parse("id", n).ok())
        {
            self.apps.remove(&id);
        } else if let Some(name) = name(keys::BACKENDS) {
            self.backends.remove(&name);
        } else if let Some(name) = name(keys::FRONTENDS) {
            self.frontends.remove(&name);
        }
    }

    /// The applications that depend on `id`.
    pub fn dependents_of(&self, id: &AppId) -> Vec<AppId> {
        self.apps
            .values()
            .filter(|app| app.value.dependencies().contains(id))
            .map(|app| app.value.id().clone())
            .collect()
    }

    /// The applications that have a port of `kind`.
    pub fn apps_using(&self, kind: &KindName) -> Vec<AppId> {
        let mut apps: Vec<AppId> = self
            .ports
            .values()
            .filter(|claim| &claim.kind == kind)
            .map(|claim| claim.app.clone())
            .collect();
        apps.sort();
        apps.dedup();
        apps
    }

    /// Every application's dependencies, for the graph algorithms.
    pub fn graph(&self) -> BTreeMap<AppId, std::collections::BTreeSet<AppId>> {
        self.apps
            .iter()
            .map(|(id, app)| (id.clone(), app.value.dependencies().clone()))
            .collect()
    }
}

impl berth_domain::catalog::graph::Dependencies for CatalogState {
    fn dependencies_of(&self, app: &AppId) -> Option<&std::collections::BTreeSet<AppId>> {
        self.apps.get(app).map(|a| a.value.dependencies())
    }
}

/// Decodes every catalog record `ops` would write, as the view will when it reads them back:
/// a record that would not read back (so be stored but never seen) is refused before it is
/// committed.
pub(crate) fn readable(ops: &[TxnOp]) -> crate::Result<()> {
    let mut scratch = CatalogState::default();
    for op in ops {
        let TxnOp::Put { key, value, .. } = op else {
            continue;
        };
        if !key.starts_with(keys::CATALOG.as_bytes()) {
            continue;
        }
        let kv = KeyValue {
            key: key.clone(),
            value: value.clone(),
            create_revision: Revision(1),
            mod_revision: Revision(1),
            version: 1,
            lease: None,
        };
        if let Err(problem) = scratch.apply(EventKind::Put, &kv) {
            return Err(berth_domain::ValidationErrors::single(
                "body",
                format!("berth could not read this record back, so it is not stored: {problem}"),
            )
            .into());
        }
    }
    Ok(())
}

#[derive(Default)]
pub(crate) struct CatalogView {
    state: RwLock<CatalogState>,
}

impl CatalogView {
    /// Builds the view from a range of the catalog prefix; the records that did not decode.
    pub fn load(kvs: &[KeyValue]) -> (Self, Vec<String>) {
        let view = CatalogView::default();
        let failures = view.reload(kvs);
        (view, failures)
    }

    pub fn read(&self) -> RwLockReadGuard<'_, CatalogState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the catalog's changes in one revision; the records that did not decode.
    pub fn apply(&self, batch: &WatchBatch) -> Vec<String> {
        let mut touched = false;
        let mut failures = Vec::new();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for event in &batch.events {
            if event.kv.key.starts_with(keys::CATALOG.as_bytes()) {
                failures.extend(state.apply(event.kind, &event.kv).err());
                touched = true;
            }
        }
        if touched {
            metrics::gauge!("berth_catalog_applications").set(state.apps.len() as f64);
        }
        failures
    }

    /// Replaces everything with a fresh range of the catalog prefix; the records that did not
    /// decode.
    pub fn reload(&self, kvs: &[KeyValue]) -> Vec<String> {
        let mut fresh = CatalogState::default();
        let failures = kvs
            .iter()
            .filter_map(|kv| fresh.apply(EventKind::Put, kv).err())
            .collect();
        metrics::gauge!("berth_catalog_applications").set(fresh.apps.len() as f64);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        failures
    }
}
