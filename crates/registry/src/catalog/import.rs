//! Restoring an export: all or nothing. Every problem (an unknown kind, a taken or duplicated
//! port, a missing dependency, a cycle, a name already in use) is reported together, and
//! nothing is written unless the whole import fits one transaction.

use super::commands::{
    Plan, app_key, bump_graph, graph_unchanged, journal_app, journal_kind, kind_key, put_app,
};
use super::queries::CatalogSnapshot;
use super::records::{
    ChangeType, StoredKind, encode_backend, encode_claim, encode_frontend, encode_kind,
};
use crate::error::{RegistryError, Result};
use crate::{Registry, keys};
use berth_domain::catalog::graph::start_waves;
use berth_domain::catalog::{AppId, KindName};
use berth_domain::{ValidationError, ValidationErrors};
use berth_store::{Compare, MAX_REQUEST_BYTES, Revision, StoreError, TxnOp};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub kinds: usize,
    /// Kinds already there with the same definition (left as they are).
    pub kinds_unchanged: usize,
    pub applications: usize,
    pub backends: usize,
    pub frontends: usize,
}

impl Registry {
    /// Imports `snapshot` into the catalog in one transaction, or changes nothing.
    pub async fn import(&self, snapshot: CatalogSnapshot) -> Result<ImportSummary> {
        self.catalog_write(|state, now| {
            let mut problems: Vec<ValidationError> = Vec::new();
            let mut problem = |field: String, message: String| {
                problems.push(ValidationError::new(field, message))
            };
            let mut compares = vec![graph_unchanged(state)];
            let mut ops = Vec::new();
            let mut summary = ImportSummary::default();

            let mut kinds: BTreeMap<KindName, u16> = state
                .kinds
                .iter()
                .map(|(name, kind)| (name.clone(), kind.value.kind.default_port))
                .collect();
            for (index, kind) in snapshot.kinds.iter().enumerate() {
                match state.kinds.get(&kind.name) {
                    Some(existing) if existing.value.kind == *kind => {
                        summary.kinds_unchanged += 1;
                        compares.push(Compare::unchanged_since(
                            kind_key(&kind.name),
                            existing.revision,
                        ));
                    }
                    Some(_) => problem(
                        format!("kinds[{index}]"),
                        format!(
                            "kind {} already exists with a different definition",
                            kind.name
                        ),
                    ),
                    None => {
                        let stored = StoredKind {
                            kind: kind.clone(),
                            created_at: now,
                            deleting_since: None,
                        };
                        compares.push(Compare::absent(kind_key(&kind.name)));
                        ops.push(TxnOp::put(kind_key(&kind.name), encode_kind(&stored), None));
                        ops.push(journal_kind(ChangeType::Insert, &stored, now));
                        kinds.insert(kind.name.clone(), kind.default_port);
                        summary.kinds += 1;
                    }
                }
            }

            let imported: BTreeSet<&AppId> = snapshot.applications.iter().map(|a| &a.id).collect();
            let mut claimed: BTreeMap<u16, &AppId> = BTreeMap::new();
            let mut graph: BTreeMap<AppId, BTreeSet<AppId>> = state.graph();
            let mut highest = state.high_water.as_ref().map(|h| h.value);
            for (index, app) in snapshot.applications.iter().enumerate() {
                let field = format!("applications[{index}]");
                if state.apps.contains_key(&app.id) {
                    problem(
                        format!("{field}.id"),
                        format!("application {} already exists", app.id),
                    );
                }
                for (port_index, port) in app.ports.iter().enumerate() {
                    let port_field = format!("{field}.ports[{port_index}]");
                    if !kinds.contains_key(&port.kind) {
                        problem(
                            format!("{port_field}.kind"),
                            format!("kind {} does not exist", port.kind),
                        );
                    }
                    if let Some(owner) = state.ports.get(&port.external) {
                        problem(
                            format!("{port_field}.external"),
                            format!(
                                "external port {} is already assigned to the application {}",
                                port.external, owner.app
                            ),
                        );
                    } else if let Some(other) = claimed.insert(port.external, &app.id) {
                        problem(
                            format!("{port_field}.external"),
                            format!(
                                "external port {} is in the import twice ({other} and {})",
                                port.external, app.id
                            ),
                        );
                    }
                    compares.push(Compare::absent(keys::port_key(port.external)));
                    ops.push(TxnOp::put(
                        keys::port_key(port.external),
                        encode_claim(&app.id, &port.kind),
                        None,
                    ));
                    if port.external <= self.inner.config.ports.ceiling {
                        highest = highest.max(Some(port.external));
                    }
                }
                for dependency in &app.dependencies {
                    if !imported.contains(dependency) && !state.apps.contains_key(dependency) {
                        problem(
                            format!("{field}.dependencies"),
                            format!(
                                "dependency {dependency} references a non existing application"
                            ),
                        );
                    }
                }
                graph.insert(app.id.clone(), app.dependencies.clone());
                compares.push(Compare::absent(app_key(&app.id)));
                ops.push(put_app(app));
                ops.push(journal_app(ChangeType::Insert, app, now));
                summary.applications += 1;
            }
            if let Err(stuck) = start_waves(&graph) {
                problem(
                    "applications".into(),
                    format!(
                        "the dependencies would form a cycle among: {}",
                        stuck
                            .iter()
                            .map(AppId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if snapshot
                .applications
                .iter()
                .any(|a| !a.dependencies.is_empty())
            {
                ops.push(bump_graph());
            }
            if highest > state.high_water.as_ref().map(|h| h.value) {
                compares.push(Compare::unchanged_since(
                    keys::HIGH_WATER,
                    state
                        .high_water
                        .as_ref()
                        .map_or(Revision(0), |h| h.revision),
                ));
                ops.push(TxnOp::put(
                    keys::HIGH_WATER,
                    highest.unwrap_or_default().to_string(),
                    None,
                ));
            }

            for (index, backend) in snapshot.backends.iter().enumerate() {
                if state.backends.contains_key(&backend.name) {
                    problem(
                        format!("backends[{index}].name"),
                        format!("backend {} already exists", backend.name),
                    );
                }
                let key = Bytes::from(format!("{}{}", keys::BACKENDS, backend.name));
                compares.push(Compare::absent(key.clone()));
                ops.push(TxnOp::put(key, encode_backend(backend), None));
                summary.backends += 1;
            }
            for (index, frontend) in snapshot.frontends.iter().enumerate() {
                if state.frontends.contains_key(&frontend.name) {
                    problem(
                        format!("frontends[{index}].name"),
                        format!("frontend {} already exists", frontend.name),
                    );
                }
                let key = Bytes::from(format!("{}{}", keys::FRONTENDS, frontend.name));
                compares.push(Compare::absent(key.clone()));
                ops.push(TxnOp::put(key, encode_frontend(frontend), None));
                summary.frontends += 1;
            }

            if let Some(errors) = ValidationErrors::new(problems) {
                return Err(RegistryError::Invalid(errors));
            }
            let size: usize = ops
                .iter()
                .map(|op| match op {
                    TxnOp::Put { key, value, .. } => key.len() + value.len(),
                    TxnOp::Delete(_) => 0,
                })
                .sum();
            if size > MAX_REQUEST_BYTES {
                // All or nothing means one transaction; a bigger catalog is imported in parts.
                return Err(RegistryError::Store(StoreError::RequestTooLarge {
                    size,
                    limit: MAX_REQUEST_BYTES,
                }));
            }
            Ok(Plan {
                compares,
                ops,
                value: summary,
            })
        })
        .await
    }
}
