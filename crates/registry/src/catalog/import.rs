//! Restoring an export: all or nothing. Every problem (an unknown kind, a taken or duplicated
//! port, a missing dependency, a cycle, a name already in use) is reported together, and
//! nothing is written unless everything is valid.
//!
//! An import bigger than one transaction (etcd's limits: 128 operations, 1.5 MiB) is written
//! in parts, each complete records only (an application with its port claims and journal
//! entry). The first part carries every compare on the catalog as a whole (the graph marker,
//! the high-water mark, unchanged kinds); every part compares the absence of what it creates.
//! If a later part finds something taken meanwhile (another node's write), the parts already
//! written are deleted again, each key only if it is still as the import wrote it, and the
//! import fails with a conflict. Readers may see a big import land part by part.

use super::commands::{
    Plan, app_key, bump_graph, claim_port, graph_unchanged, journal_app, journal_kind, kind_key,
    put_app, raise_high_water,
};
use super::queries::CatalogSnapshot;
use super::records::{ChangeType, StoredKind, encode_backend, encode_frontend, encode_kind};
use super::view::CatalogState;
use crate::error::{RegistryError, Result};
use crate::{Registry, keys};
use berth_domain::Timestamp;
use berth_domain::catalog::graph::start_waves;
use berth_domain::catalog::{AppId, CatalogError, KindName};
use berth_domain::{ValidationError, ValidationErrors};
use berth_store::{
    Compare, KeyRange, MAX_REQUEST_BYTES, MAX_TXN_OPS, Revision, Store, StoreError, Txn, TxnOp,
};
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

/// Compares and writes that go in one transaction.
#[derive(Default)]
struct Part {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
}

impl Part {
    fn request_bytes(&self) -> usize {
        self.compares
            .iter()
            .map(Compare::request_bytes)
            .sum::<usize>()
            + self.ops.iter().map(TxnOp::request_bytes).sum::<usize>()
    }

    /// Whether `other` can join this part, leaving room for the graph marker's compare and
    /// bump that [`pack`] and the commit of a later part add.
    fn fits_with(&self, other: &Part) -> bool {
        self.compares.len() + other.compares.len() < MAX_TXN_OPS
            && self.ops.len() + other.ops.len() < MAX_TXN_OPS
            && self.request_bytes() + other.request_bytes() <= MAX_REQUEST_BYTES
    }

    fn absorb(&mut self, other: Part) {
        self.compares.extend(other.compares);
        self.ops.extend(other.ops);
    }

    /// The keys this part creates (the catalog-wide markers are not undone).
    fn created_keys(&self) -> Vec<Bytes> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Put { key, .. } if key != keys::GRAPH && key != keys::HIGH_WATER => {
                    Some(key.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// Packs `whole` (compares on the catalog as a whole, and its markers) and the records into
/// as few transactions as the store takes, `whole` in the first. When there are several, the
/// first bumps the graph marker and every later one compares it unchanged since (added at
/// commit), so no dependency edit or deletion elsewhere can slip between two parts.
fn pack(whole: Part, records: Vec<Part>) -> Result<Vec<Part>> {
    let mut parts = vec![whole];
    for record in records {
        let last = parts.last_mut().expect("the first part is there");
        if last.fits_with(&record) {
            last.absorb(record);
            continue;
        }
        let alone = Part::default();
        if !alone.fits_with(&record) {
            return Err(StoreError::RequestTooLarge {
                size: record.request_bytes(),
                limit: MAX_REQUEST_BYTES,
            }
            .into());
        }
        parts.push(record);
    }
    let bumps_graph = |part: &Part| {
        part.ops
            .iter()
            .any(|op| matches!(op, TxnOp::Put { key, .. } if key == keys::GRAPH))
    };
    if parts.len() > 1 && !bumps_graph(&parts[0]) {
        parts[0].ops.push(bump_graph());
    }
    Ok(parts)
}

impl Registry {
    /// Imports `snapshot` into the catalog, or changes nothing.
    pub async fn import(&self, snapshot: CatalogSnapshot) -> Result<ImportSummary> {
        let _turn = self.inner.catalog_writes.lock().await;
        let ((summary, first_created, rest), first_revision) = self
            .catalog_write_in_turn(|state, now| {
                let (summary, mut parts) = self.plan_import(&snapshot, state, now)?;
                for part in &parts[1..] {
                    super::view::readable(&part.ops)?;
                }
                let rest = parts.split_off(1);
                let first = parts.pop().expect("the first part is there");
                let created = first.created_keys();
                Ok(Plan {
                    compares: first.compares,
                    ops: first.ops,
                    value: (summary, created, rest),
                })
            })
            .await?;
        let Some(first_revision) = first_revision else {
            return Ok(summary);
        };
        let mut written = vec![(first_revision, first_created)];
        for mut part in rest {
            let created = part.created_keys();
            part.compares
                .push(Compare::unchanged_since(keys::GRAPH, first_revision));
            let txn = Txn::new().when(part.compares).and_then(part.ops);
            match self.store().txn(txn).await {
                Ok(response) if response.succeeded => written.push((response.revision, created)),
                outcome => {
                    if let Some(revision) = self.undo_import(&written).await {
                        self.written(revision).await?;
                    }
                    outcome?;
                    return Err(RegistryError::conflict(
                        "the catalog changed during the import (an id or a port was taken \
                         meanwhile); nothing was imported",
                    ));
                }
            }
        }
        if let Some((revision, _)) = written.last() {
            self.written(*revision).await?;
        }
        Ok(summary)
    }

    /// Deletes what the parts of a failed import wrote, each key only if it is still as the
    /// import left it; returns the revision of the last deletion.
    async fn undo_import(&self, written: &[(Revision, Vec<Bytes>)]) -> Option<Revision> {
        let mut last = None;
        for (revision, keys) in written.iter().rev() {
            for chunk in keys.chunks(MAX_TXN_OPS) {
                let txn = Txn::new()
                    .when(
                        chunk
                            .iter()
                            .map(|key| Compare::unchanged_since(key.clone(), *revision))
                            .collect(),
                    )
                    .and_then(
                        chunk
                            .iter()
                            .map(|key| TxnOp::Delete(KeyRange::Key(key.clone())))
                            .collect(),
                    );
                match self.store().txn(txn).await {
                    Ok(response) if response.succeeded => {
                        last = Some(response.revision);
                        continue;
                    }
                    _ => {}
                }
                // Something in this chunk changed since: undo the rest key by key.
                for key in chunk {
                    let txn = Txn::new()
                        .when(vec![Compare::unchanged_since(key.clone(), *revision)])
                        .and_then(vec![TxnOp::Delete(KeyRange::Key(key.clone()))]);
                    match self.store().txn(txn).await {
                        Ok(response) => last = last.max(Some(response.revision)),
                        Err(error) => tracing::error!(
                            %error,
                            key = %String::from_utf8_lossy(key),
                            "could not undo a part of a failed import"
                        ),
                    }
                }
            }
        }
        last
    }

    /// Validates `snapshot` against the catalog and plans its writes, in parts the store takes.
    fn plan_import(
        &self,
        snapshot: &CatalogSnapshot,
        state: &CatalogState,
        now: Timestamp,
    ) -> Result<(ImportSummary, Vec<Part>)> {
        let mut problems: Vec<ValidationError> = Vec::new();
        let mut problem =
            |field: String, message: String| problems.push(ValidationError::new(field, message));
        let mut whole = Part {
            compares: vec![graph_unchanged(state)],
            ops: Vec::new(),
        };
        let mut records: Vec<Part> = Vec::new();
        let mut summary = ImportSummary::default();
        // A name twice in one import would be one key written twice in one transaction.
        let mut twice = |collection: &str, field: &str, names: Vec<&str>| {
            let mut first_seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (index, name) in names.into_iter().enumerate() {
                if let Some(first) = first_seen.insert(name, index) {
                    problem(
                        format!("{collection}[{index}].{field}"),
                        format!("{name} is in the import twice (also {collection}[{first}])"),
                    );
                }
            }
        };
        twice(
            "kinds",
            "name",
            snapshot.kinds.iter().map(|k| k.name().as_str()).collect(),
        );
        twice(
            "applications",
            "id",
            snapshot
                .applications
                .iter()
                .map(|a| a.id().as_str())
                .collect(),
        );
        twice(
            "backends",
            "name",
            snapshot
                .backends
                .iter()
                .map(|b| b.name().as_str())
                .collect(),
        );
        twice(
            "frontends",
            "name",
            snapshot
                .frontends
                .iter()
                .map(|f| f.name().as_str())
                .collect(),
        );

        let mut kinds: BTreeMap<KindName, u16> = state
            .kinds
            .iter()
            .map(|(name, kind)| (name.clone(), kind.value.kind.default_port()))
            .collect();
        for (index, kind) in snapshot.kinds.iter().enumerate() {
            match state.kinds.get(kind.name()) {
                Some(existing) if existing.value.kind == *kind => {
                    summary.kinds_unchanged += 1;
                    whole.compares.push(Compare::unchanged_since(
                        kind_key(kind.name()),
                        existing.revision,
                    ));
                }
                Some(_) => problem(
                    format!("kinds[{index}]"),
                    format!(
                        "kind {} already exists with a different definition",
                        kind.name()
                    ),
                ),
                None => {
                    let stored = StoredKind {
                        kind: kind.clone(),
                        created_at: now,
                        deleting_since: None,
                    };
                    records.push(Part {
                        compares: vec![Compare::absent(kind_key(kind.name()))],
                        ops: vec![
                            TxnOp::put(kind_key(kind.name()), encode_kind(&stored), None),
                            journal_kind(ChangeType::Insert, &stored, now),
                        ],
                    });
                    kinds.insert(kind.name().clone(), kind.default_port());
                    summary.kinds += 1;
                }
            }
        }

        let imported: BTreeSet<&AppId> = snapshot.applications.iter().map(|a| a.id()).collect();
        let mut claimed: BTreeMap<u16, &AppId> = BTreeMap::new();
        let mut graph: BTreeMap<AppId, BTreeSet<AppId>> = state.graph();
        // The export's own mark (what its allocator had handed out), never its ports: an
        // explicit high port in an import must not leave new families without a block.
        let highest = snapshot
            .high_water
            .filter(|mark| *mark <= self.inner.config.ports.ceiling)
            .max(state.high_water.as_ref().map(|h| h.value));
        for (index, app) in snapshot.applications.iter().enumerate() {
            let field = format!("applications[{index}]");
            let mut record = Part::default();
            if state.apps.contains_key(app.id()) {
                problem(
                    format!("{field}.id"),
                    CatalogError::AppExists(app.id().clone()).to_string(),
                );
            }
            for (port_index, port) in app.ports().iter().enumerate() {
                let port_field = format!("{field}.ports[{port_index}]");
                if !kinds.contains_key(&port.kind) {
                    problem(
                        format!("{port_field}.kind"),
                        CatalogError::KindNotFound(port.kind.clone()).to_string(),
                    );
                }
                if let Some(owner) = state.ports.get(&port.external) {
                    problem(
                        format!("{port_field}.external"),
                        CatalogError::PortTaken {
                            port: port.external,
                            owner: owner.app.clone(),
                        }
                        .to_string(),
                    );
                } else if let Some(other) = claimed.insert(port.external, app.id()) {
                    problem(
                        format!("{port_field}.external"),
                        format!(
                            "external port {} is in the import twice ({other} and {})",
                            port.external,
                            app.id()
                        ),
                    );
                }
                let (compare, op) = claim_port(port.external, app.id(), &port.kind);
                record.compares.push(compare);
                record.ops.push(op);
            }
            for dependency in app.dependencies() {
                if !imported.contains(dependency) && !state.apps.contains_key(dependency) {
                    problem(
                        format!("{field}.dependencies"),
                        CatalogError::DependencyMissing(dependency.clone()).to_string(),
                    );
                }
            }
            graph.insert(app.id().clone(), app.dependencies().clone());
            record.compares.push(Compare::absent(app_key(app.id())));
            record.ops.push(put_app(app));
            record.ops.push(journal_app(ChangeType::Insert, app, now));
            records.push(record);
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
            .any(|a| !a.dependencies().is_empty())
        {
            whole.ops.push(bump_graph());
        }
        if let Some((compare, op)) = highest.and_then(|h| raise_high_water(state, h)) {
            whole.compares.push(compare);
            whole.ops.push(op);
        }

        for (index, backend) in snapshot.backends.iter().enumerate() {
            if state.backends.contains_key(backend.name()) {
                problem(
                    format!("backends[{index}].name"),
                    format!("backend {} already exists", backend.name()),
                );
            }
            let key = keys::entity_key(keys::BACKENDS, backend.name().as_str());
            records.push(Part {
                compares: vec![Compare::absent(key.clone())],
                ops: vec![TxnOp::put(key, encode_backend(backend), None)],
            });
            summary.backends += 1;
        }
        for (index, frontend) in snapshot.frontends.iter().enumerate() {
            if state.frontends.contains_key(frontend.name()) {
                problem(
                    format!("frontends[{index}].name"),
                    format!("frontend {} already exists", frontend.name()),
                );
            }
            let key = keys::entity_key(keys::FRONTENDS, frontend.name().as_str());
            records.push(Part {
                compares: vec![Compare::absent(key.clone())],
                ops: vec![TxnOp::put(key, encode_frontend(frontend), None)],
            });
            summary.frontends += 1;
        }

        if let Some(errors) = ValidationErrors::new(problems) {
            return Err(RegistryError::Invalid(errors));
        }
        Ok((summary, pack(whole, records)?))
    }
}
