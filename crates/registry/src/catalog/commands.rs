//! Writes to the catalog. Each is planned against the catalog view and applied as one
//! transaction that compares the revisions of everything the plan read; a plan made from a
//! view that fell behind fails its compare and is made again, so two nodes can never hand out
//! one port, close a cycle together, or delete what the other just used.

use super::records::{
    ChangeType, StoredKind, encode_app, encode_claim, encode_journal, encode_kind,
};
use super::view::CatalogState;
use crate::error::{RegistryError, Result};
use crate::{Consistency, Registry, keys};
use berth_domain::Timestamp;
use berth_domain::ValidationErrors;
use berth_domain::catalog::allocator::{AllocationRequest, PortRange, allocate};
use berth_domain::catalog::graph::cycle_if;
use berth_domain::catalog::{
    AppId, Application, ApplicationPut, CatalogError, Kind, KindName, NewApplication,
    PortAssignment, PortChoice, seed_kinds,
};
use berth_store::{Compare, Revision, Store, Txn, TxnOp};
use bytes::Bytes;
use std::collections::{BTreeSet, hash_map::RandomState};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How long a write keeps planning again while other nodes' writes make its plan stale.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// A kind marked for deletion longer ago than this was left by a node that died mid-delete;
/// the mark is ignored (and cleared by the next write that uses the kind).
const STALE_DELETE_MARK: Duration = Duration::from_secs(30);

/// How an update changes an application's dependencies. Adding or removing one is decided
/// on the list as it is at commit time, so concurrent edits of one app never undo each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DependencyChange {
    Replace(BTreeSet<AppId>),
    Add(AppId),
    Remove(AppId),
}

/// One planned write: what must still hold, what to do, and what to answer.
pub(super) struct Plan<T> {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
    pub value: T,
}

impl<T> Plan<T> {
    fn nothing(value: T) -> Self {
        Plan {
            compares: Vec::new(),
            ops: Vec::new(),
            value,
        }
    }

    /// The same writes, answering `f(value)`.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Plan<U> {
        Plan {
            compares: self.compares,
            ops: self.ops,
            value: f(self.value),
        }
    }
}

pub(super) fn catalog(error: CatalogError) -> RegistryError {
    RegistryError::Catalog(error)
}

pub(super) fn kind_key(name: &KindName) -> Bytes {
    keys::kind_key(name.as_str())
}

pub(super) fn app_key(id: &AppId) -> Bytes {
    keys::app_key(id.as_str())
}

pub(super) fn journal_app(change: ChangeType, app: &Application, at: Timestamp) -> TxnOp {
    TxnOp::put(
        keys::journal_key("apps", app.id().as_str(), at.millis()),
        encode_journal(change, at, &encode_app(app)),
        None,
    )
}

pub(super) fn journal_kind(change: ChangeType, kind: &StoredKind, at: Timestamp) -> TxnOp {
    TxnOp::put(
        keys::journal_key("kinds", kind.kind.name().as_str(), at.millis()),
        encode_journal(change, at, &encode_kind(kind)),
        None,
    )
}

pub(super) fn put_app(app: &Application) -> TxnOp {
    TxnOp::put(app_key(app.id()), encode_app(app), None)
}

pub(super) fn bump_graph() -> TxnOp {
    TxnOp::put(keys::GRAPH, "edges changed", None)
}

/// Claims `external` for `app`: only if nobody holds it at commit, so ports are unique by the
/// store.
pub(super) fn claim_port(external: u16, app: &AppId, kind: &KindName) -> (Compare, TxnOp) {
    (
        Compare::absent(keys::port_key(external)),
        TxnOp::put(keys::port_key(external), encode_claim(app, kind), None),
    )
}

/// Raises the high-water mark to `external` if that is higher; it never goes down.
pub(super) fn raise_high_water(state: &CatalogState, external: u16) -> Option<(Compare, TxnOp)> {
    let current = state.high_water.as_ref();
    if current.is_some_and(|h| h.value >= external) {
        return None;
    }
    Some((
        Compare::unchanged_since(
            keys::HIGH_WATER,
            current.map_or(Revision(0), |h| h.revision),
        ),
        TxnOp::put(keys::HIGH_WATER, external.to_string(), None),
    ))
}

pub(super) fn graph_unchanged(state: &CatalogState) -> Compare {
    Compare::unchanged_since(keys::GRAPH, state.graph)
}

impl Registry {
    /// Plans against the view and commits, again and again while someone else's write makes
    /// the plan stale.
    ///
    /// This node's catalog writes take turns (each plans on a view that holds the one before),
    /// so they never invalidate each other; only another node's write can, and then the plan is
    /// made again on a view brought up to date with the store, with a short random pause so
    /// two nodes racing for one thing do not keep colliding.
    pub(super) async fn catalog_write<T>(
        &self,
        plan: impl FnMut(&CatalogState, Timestamp) -> Result<Plan<T>>,
    ) -> Result<T> {
        let _turn = self.inner.catalog_writes.lock().await;
        Ok(self.catalog_write_in_turn(plan).await?.0)
    }

    /// [`Registry::catalog_write`] for a caller that holds this node's catalog turn already;
    /// also tells the revision the plan was committed at (`None`: it wrote nothing).
    pub(super) async fn catalog_write_in_turn<T>(
        &self,
        mut plan: impl FnMut(&CatalogState, Timestamp) -> Result<Plan<T>>,
    ) -> Result<(T, Option<Revision>)> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        for attempt in 0u32.. {
            // After a failed compare, catch up with everything committed anywhere first.
            let consistency = if attempt == 0 {
                Consistency::Local
            } else {
                let pause = RandomState::new().build_hasher().finish()
                    % (u64::from(attempt.min(10)) * 2_000);
                tokio::time::sleep(Duration::from_micros(pause)).await;
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                Consistency::Consistent
            };
            self.sync(consistency).await?;
            let now = self.now();
            let plan = plan(&self.inner.catalog.read(), now)?;
            if plan.ops.is_empty() {
                return Ok((plan.value, None));
            }
            super::view::readable(&plan.ops)?;
            let txn = Txn::new().when(plan.compares).and_then(plan.ops);
            let response = self.store().txn(txn).await?;
            if response.succeeded {
                self.written(response.revision).await?;
                return Ok((plan.value, Some(response.revision)));
            }
        }
        Err(RegistryError::conflict(
            "the catalog kept changing under this request; try again",
        ))
    }

    /// Seeds the kinds an empty catalog starts with (once, whichever node gets there first).
    pub(crate) async fn ensure_seeded(&self) -> Result<()> {
        self.catalog_write(|state, now| {
            if state.seeded {
                return Ok(Plan::nothing(()));
            }
            let mut compares = vec![Compare::absent(keys::SEEDED)];
            let mut ops = vec![TxnOp::put(keys::SEEDED, "kinds seeded", None)];
            for kind in seed_kinds() {
                if state.kinds.contains_key(kind.name()) {
                    continue;
                }
                let stored = StoredKind {
                    kind,
                    created_at: now,
                    deleting_since: None,
                };
                compares.push(Compare::absent(kind_key(stored.kind.name())));
                ops.push(TxnOp::put(
                    kind_key(stored.kind.name()),
                    encode_kind(&stored),
                    None,
                ));
                ops.push(journal_kind(ChangeType::Insert, &stored, now));
            }
            Ok(Plan {
                compares,
                ops,
                value: (),
            })
        })
        .await
    }

    /// Creates a kind; `KindExists` when the name is taken.
    pub async fn create_kind(&self, kind: Kind) -> Result<StoredKind> {
        self.catalog_write(|state, now| {
            if state.kinds.contains_key(kind.name()) {
                return Err(catalog(CatalogError::KindExists(kind.name().clone())));
            }
            let stored = StoredKind {
                kind: kind.clone(),
                created_at: now,
                deleting_since: None,
            };
            Ok(Plan {
                compares: vec![Compare::absent(kind_key(kind.name()))],
                ops: vec![
                    TxnOp::put(kind_key(kind.name()), encode_kind(&stored), None),
                    journal_kind(ChangeType::Insert, &stored, now),
                ],
                value: stored,
            })
        })
        .await
    }

    /// Creates or updates a kind; true when it was created. Ports already handed out keep
    /// their numbers. With `keep_offset`, an existing kind keeps its slot in the port block
    /// whatever `kind` says (flow's services have no slot to give).
    pub async fn upsert_kind(&self, kind: Kind, keep_offset: bool) -> Result<(StoredKind, bool)> {
        self.catalog_write(|state, now| {
            let key = kind_key(kind.name());
            let existing = state.kinds.get(kind.name());
            let kind = match existing {
                Some(existing) if keep_offset => kind.clone().with_offset_of(&existing.value.kind),
                _ => kind.clone(),
            };
            match existing {
                None => {
                    let stored = StoredKind {
                        kind: kind.clone(),
                        created_at: now,
                        deleting_since: None,
                    };
                    Ok(Plan {
                        compares: vec![Compare::absent(key.clone())],
                        ops: vec![
                            TxnOp::put(key, encode_kind(&stored), None),
                            journal_kind(ChangeType::Insert, &stored, now),
                        ],
                        value: (stored, true),
                    })
                }
                Some(existing)
                    if existing.value.kind == kind && existing.value.deleting_since.is_none() =>
                {
                    Ok(Plan::nothing((existing.value.clone(), false)))
                }
                Some(existing) => {
                    let stored = StoredKind {
                        kind: kind.clone(),
                        created_at: existing.value.created_at,
                        deleting_since: None,
                    };
                    Ok(Plan {
                        compares: vec![Compare::unchanged_since(key.clone(), existing.revision)],
                        ops: vec![
                            TxnOp::put(key, encode_kind(&stored), None),
                            journal_kind(ChangeType::Update, &stored, now),
                        ],
                        value: (stored, false),
                    })
                }
            }
        })
        .await
    }

    /// Whether the deletion mark on `kind` (written at `revision`) was left by a deletion that
    /// never finished: this node has seen it for longer than [`STALE_DELETE_MARK`]. Judged by
    /// when this node first saw the mark, on its own clock, not by the writer's timestamp: a
    /// node whose clock runs ahead would otherwise block the kind for as long (defect M19).
    /// One entry per kind ever marked here, replaced by its next mark: bounded by the kinds.
    fn delete_mark_is_stale(&self, kind: &KindName, revision: Revision) -> bool {
        let now = self.now();
        let mut seen = self
            .inner
            .delete_marks_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let first_seen = match seen.get(kind) {
            Some((at, first_seen)) if *at == revision => *first_seen,
            _ => {
                seen.insert(kind.clone(), (revision, now));
                now
            }
        };
        now.millis() >= first_seen.millis() + STALE_DELETE_MARK.as_millis() as u64
    }

    /// Deletes a kind no application uses.
    ///
    /// Allocations compare the kind's revision without writing it, so that allocations of one
    /// kind never conflict with each other. A deletion therefore first marks the kind (which
    /// fails every allocation planned before the mark and refuses every one planned after),
    /// then, once this node's view holds everything up to the mark, looks for users: none, and
    /// the kind goes; some, and the mark is lifted and the deletion refused.
    pub async fn delete_kind(&self, name: &KindName) -> Result<()> {
        let marked: Revision = self
            .catalog_write(|state, now| {
                let kind = state
                    .kinds
                    .get(name)
                    .ok_or_else(|| catalog(CatalogError::KindNotFound(name.clone())))?;
                let users = state.apps_using(name);
                if !users.is_empty() {
                    return Err(catalog(CatalogError::KindInUse {
                        kind: name.clone(),
                        apps: users,
                    }));
                }
                let mut marked = kind.value.clone();
                marked.deleting_since = Some(now);
                Ok(Plan {
                    compares: vec![Compare::unchanged_since(kind_key(name), kind.revision)],
                    ops: vec![TxnOp::put(kind_key(name), encode_kind(&marked), None)],
                    value: (),
                })
            })
            .await
            .map(|()| self.view_revision())?;
        self.catalog_write(|state, now| {
            let Some(kind) = state.kinds.get(name) else {
                return Err(catalog(CatalogError::KindNotFound(name.clone())));
            };
            if kind.revision > marked || kind.value.deleting_since.is_none() {
                return Err(RegistryError::conflict(format!(
                    "kind {name} changed while it was being deleted; try again"
                )));
            }
            let users = state.apps_using(name);
            if users.is_empty() {
                return Ok(Plan {
                    compares: vec![Compare::unchanged_since(kind_key(name), kind.revision)],
                    ops: vec![
                        TxnOp::delete(kind_key(name)),
                        journal_kind(ChangeType::Delete, &kind.value, now),
                    ],
                    value: Ok(()),
                });
            }
            let mut unmarked = kind.value.clone();
            unmarked.deleting_since = None;
            Ok(Plan {
                compares: vec![Compare::unchanged_since(kind_key(name), kind.revision)],
                ops: vec![TxnOp::put(kind_key(name), encode_kind(&unmarked), None)],
                value: Err(catalog(CatalogError::KindInUse {
                    kind: name.clone(),
                    apps: users,
                })),
            })
        })
        .await?
    }

    /// Creates an application with its first port.
    pub async fn create_app(&self, new: NewApplication) -> Result<Application> {
        self.catalog_write(|state, now| self.plan_create_app(state, now, &new))
            .await
    }

    /// Creates the application (which then needs a kind) or, when it exists, adds a port of
    /// the kind and replaces the dependencies when they are given: one command, one
    /// transaction (flow's `PUT /applications/{id}`). True when it was created.
    pub async fn put_app(&self, put: ApplicationPut) -> Result<(Application, bool)> {
        self.catalog_write(|state, now| {
            if state.apps.contains_key(&put.id) {
                let dependencies = put.dependencies.clone().map(DependencyChange::Replace);
                let add_kind = put.kind.clone().map(|kind| (kind, put.port));
                let plan = self.plan_update_app(state, now, &put.id, &add_kind, &dependencies)?;
                return Ok(plan.map(|(app, _)| (app, false)));
            }
            let Some(kind) = put.kind.clone() else {
                return Err(ValidationErrors::single("kind", "is required").into());
            };
            let new = NewApplication {
                id: put.id.clone(),
                kind,
                port: put.port,
                dependencies: put.dependencies.clone().unwrap_or_default(),
            };
            Ok(self
                .plan_create_app(state, now, &new)?
                .map(|app| (app, true)))
        })
        .await
    }

    fn plan_create_app(
        &self,
        state: &CatalogState,
        now: Timestamp,
        new: &NewApplication,
    ) -> Result<Plan<Application>> {
        if state.apps.contains_key(&new.id) {
            return Err(catalog(CatalogError::AppExists(new.id.clone())));
        }
        let mut plan = Plan {
            compares: vec![Compare::absent(app_key(&new.id))],
            ops: Vec::new(),
            value: (),
        };
        if !new.dependencies.is_empty() {
            self.plan_dependencies(state, &new.id, &new.dependencies, &mut plan)?;
        }
        let port = self.plan_port(state, &new.id, &new.kind, new.port, &mut plan)?;
        let app = Application::create(new, port, now);
        plan.ops.push(put_app(&app));
        plan.ops.push(journal_app(ChangeType::Insert, &app, now));
        Ok(plan.map(|()| app))
    }

    /// Gives `app` a port of `kind`; idempotent when it has one (false: nothing changed).
    pub async fn add_port(
        &self,
        id: &AppId,
        kind: &KindName,
        choice: PortChoice,
    ) -> Result<(Application, bool)> {
        self.update_app(id, Some((kind.clone(), choice)), None)
            .await
    }

    /// Adds a port of a kind and/or changes the dependencies of an existing application, in
    /// one transaction. True when something changed.
    pub async fn update_app(
        &self,
        id: &AppId,
        add_kind: Option<(KindName, PortChoice)>,
        dependencies: Option<DependencyChange>,
    ) -> Result<(Application, bool)> {
        self.catalog_write(|state, now| {
            self.plan_update_app(state, now, id, &add_kind, &dependencies)
        })
        .await
    }

    fn plan_update_app(
        &self,
        state: &CatalogState,
        now: Timestamp,
        id: &AppId,
        add_kind: &Option<(KindName, PortChoice)>,
        dependencies: &Option<DependencyChange>,
    ) -> Result<Plan<(Application, bool)>> {
        let existing = state
            .apps
            .get(id)
            .ok_or_else(|| catalog(CatalogError::AppNotFound(id.clone())))?;
        let mut app = existing.value.clone();
        let mut plan = Plan {
            compares: vec![Compare::unchanged_since(app_key(id), existing.revision)],
            ops: Vec::new(),
            value: (),
        };
        if let Some((kind, choice)) = add_kind
            && app.port_of(kind).is_none()
        {
            let port = self.plan_port(state, id, kind, *choice, &mut plan)?;
            app = app.with_port(port);
        }
        if let Some(change) = dependencies {
            let mut wanted = app.dependencies().clone();
            match change {
                DependencyChange::Replace(all) => wanted = all.clone(),
                DependencyChange::Add(one) => {
                    wanted.insert(one.clone());
                }
                DependencyChange::Remove(one) => {
                    // A dependency on nothing cannot be there to remove: say so.
                    if !state.apps.contains_key(one) {
                        return Err(catalog(CatalogError::DependencyMissing(one.clone())));
                    }
                    wanted.remove(one);
                }
            }
            if &wanted != app.dependencies() {
                self.plan_dependencies(state, id, &wanted, &mut plan)?;
                app = app.with_dependencies(wanted);
            }
        }
        if app == existing.value {
            return Ok(Plan::nothing((app, false)));
        }
        plan.ops.push(put_app(&app));
        plan.ops.push(journal_app(ChangeType::Update, &app, now));
        Ok(plan.map(|()| (app, true)))
    }

    /// Frees `app`'s port of `kind`.
    pub async fn remove_port(&self, id: &AppId, kind: &KindName) -> Result<Application> {
        self.catalog_write(|state, now| {
            let existing = state
                .apps
                .get(id)
                .ok_or_else(|| catalog(CatalogError::AppNotFound(id.clone())))?;
            let Some((app, port)) = existing.value.clone().without_port(kind) else {
                return Err(RegistryError::NotFound(format!(
                    "application {id} has no port of kind {kind}"
                )));
            };
            Ok(Plan {
                compares: vec![Compare::unchanged_since(app_key(id), existing.revision)],
                ops: vec![
                    put_app(&app),
                    TxnOp::delete(keys::port_key(port.external)),
                    journal_app(ChangeType::Update, &app, now),
                ],
                value: app,
            })
        })
        .await
    }

    /// Replaces `app`'s dependencies (every one must exist; no cycle may result).
    pub async fn set_dependencies(
        &self,
        id: &AppId,
        dependencies: BTreeSet<AppId>,
    ) -> Result<Application> {
        self.update_app(id, None, Some(DependencyChange::Replace(dependencies)))
            .await
            .map(|(app, _)| app)
    }

    /// Adds one dependency (idempotent).
    pub async fn add_dependency(&self, id: &AppId, dependency: &AppId) -> Result<Application> {
        self.update_app(id, None, Some(DependencyChange::Add(dependency.clone())))
            .await
            .map(|(app, _)| app)
    }

    /// Removes one dependency (idempotent).
    pub async fn remove_dependency(&self, id: &AppId, dependency: &AppId) -> Result<Application> {
        self.update_app(id, None, Some(DependencyChange::Remove(dependency.clone())))
            .await
            .map(|(app, _)| app)
    }

    /// Deletes an application and frees its ports; refused while others depend on it.
    pub async fn delete_app(&self, id: &AppId) -> Result<()> {
        self.catalog_write(|state, now| {
            let existing = state
                .apps
                .get(id)
                .ok_or_else(|| catalog(CatalogError::AppNotFound(id.clone())))?;
            let dependents = state.dependents_of(id);
            if !dependents.is_empty() {
                return Err(catalog(CatalogError::HasDependents {
                    app: id.clone(),
                    dependents,
                }));
            }
            let mut ops = vec![
                TxnOp::delete(app_key(id)),
                bump_graph(),
                journal_app(ChangeType::Delete, &existing.value, now),
            ];
            for port in existing.value.ports() {
                ops.push(TxnOp::delete(keys::port_key(port.external)));
            }
            Ok(Plan {
                compares: vec![
                    Compare::unchanged_since(app_key(id), existing.revision),
                    graph_unchanged(state),
                ],
                ops,
                value: (),
            })
        })
        .await
    }

    /// Picks a port for `app` of `kind` and adds its compares and writes to `plan`.
    fn plan_port(
        &self,
        state: &CatalogState,
        app: &AppId,
        kind: &KindName,
        choice: PortChoice,
        plan: &mut Plan<()>,
    ) -> Result<PortAssignment> {
        let stored = state
            .kinds
            .get(kind)
            .ok_or_else(|| catalog(CatalogError::KindNotFound(kind.clone())))?;
        match stored.value.deleting_since {
            Some(_) if !self.delete_mark_is_stale(kind, stored.revision) => {
                return Err(RegistryError::conflict(format!(
                    "kind {kind} is being deleted"
                )));
            }
            Some(_) => {
                // A mark left by a deletion that never finished: clear it, which also fails
                // that deletion should it ever resume.
                let mut cleared = stored.value.clone();
                cleared.deleting_since = None;
                plan.ops
                    .push(TxnOp::put(kind_key(kind), encode_kind(&cleared), None));
            }
            None => {}
        }
        plan.compares
            .push(Compare::unchanged_since(kind_key(kind), stored.revision));
        let range = &self.inner.config.ports;
        let allocated = choice.external.is_none();
        let external = match choice.external {
            Some(port) => {
                if let Some(claim) = state.ports.get(&port) {
                    return Err(catalog(CatalogError::PortTaken {
                        port,
                        owner: claim.app.clone(),
                    }));
                }
                port
            }
            None => {
                let family = app.family();
                let bases: BTreeSet<u16> = state
                    .apps
                    .range::<str, _>((
                        std::ops::Bound::Included(family),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(id, _)| id.as_str().starts_with(family))
                    .filter(|(id, _)| id.in_family(family))
                    .flat_map(|(_, a)| a.value.ports().iter().map(|p| range.base(p.external)))
                    .collect();
                let bases: Vec<u16> = bases.into_iter().collect();
                allocate(
                    range,
                    &AllocationRequest {
                        family_bases: &bases,
                        high_water: state.high_water.as_ref().map(|h| h.value),
                        offset: stored.value.kind.offset(),
                    },
                    |port| state.ports.contains_key(&port),
                )
                .map_err(catalog)?
            }
        };
        let (compare, op) = claim_port(external, app, kind);
        plan.compares.push(compare);
        plan.ops.push(op);
        // Only what the allocator chose moves the mark: an explicit port (say 64991) would
        // otherwise leave no block for any new family, for good.
        if allocated && let Some((compare, op)) = raise_high_water(state, external) {
            plan.compares.push(compare);
            plan.ops.push(op);
        }
        Ok(PortAssignment {
            kind: kind.clone(),
            external,
            internal: choice.internal.unwrap_or(stored.value.kind.default_port()),
        })
    }

    /// Checks a new dependency list and adds the compares that keep it valid at commit.
    fn plan_dependencies(
        &self,
        state: &CatalogState,
        id: &AppId,
        dependencies: &BTreeSet<AppId>,
        plan: &mut Plan<()>,
    ) -> Result<()> {
        for dependency in dependencies {
            let existing = state
                .apps
                .get(dependency)
                .ok_or_else(|| catalog(CatalogError::DependencyMissing(dependency.clone())))?;
            plan.compares.push(Compare::unchanged_since(
                app_key(dependency),
                existing.revision,
            ));
        }
        if let Some(cycle) = cycle_if(id, dependencies, state) {
            return Err(catalog(CatalogError::Cycle(cycle)));
        }
        plan.compares.push(graph_unchanged(state));
        plan.ops.push(bump_graph());
        Ok(())
    }
}

/// Where the allocator stands: its range, the high-water mark, and the port a new family
/// would get now (`None`: no block is left).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorStatus {
    pub range: PortRange,
    pub high_water: Option<u16>,
    pub highest_claimed: Option<u16>,
    pub next_new_family_port: Option<u16>,
}

impl Registry {
    /// The allocator's state, for an operator.
    pub async fn allocator_status(&self) -> Result<AllocatorStatus> {
        self.sync(Consistency::Local).await?;
        let state = self.inner.catalog.read();
        Ok(allocator_status(&self.inner.config.ports, &state))
    }

    /// Sets the high-water mark (an operator's repair: a mark raised by mistake, or one to
    /// recompute from the ports claimed now). New families get blocks above it.
    pub async fn set_high_water(&self, mark: u16) -> Result<AllocatorStatus> {
        let range = self.inner.config.ports.clone();
        if mark < range.start || mark > range.ceiling {
            return Err(berth_domain::ValidationErrors::single(
                "high_water",
                format!(
                    "must be within the allocator's range, {} to {}",
                    range.start, range.ceiling
                ),
            )
            .into());
        }
        self.catalog_write(|state, _| {
            let current = state.high_water.as_ref();
            if current.is_some_and(|h| h.value == mark) {
                return Ok(Plan::nothing(()));
            }
            Ok(Plan {
                compares: vec![Compare::unchanged_since(
                    keys::HIGH_WATER,
                    current.map_or(Revision(0), |h| h.revision),
                )],
                ops: vec![TxnOp::put(keys::HIGH_WATER, mark.to_string(), None)],
                value: (),
            })
        })
        .await?;
        tracing::info!(high_water = mark, "the allocator's high-water mark was set");
        self.allocator_status().await
    }
}

fn allocator_status(range: &PortRange, state: &CatalogState) -> AllocatorStatus {
    let high_water = state.high_water.as_ref().map(|h| h.value);
    let highest_claimed = state
        .ports
        .keys()
        .rev()
        .find(|port| **port <= range.ceiling)
        .copied();
    let next_new_family_port = allocate(
        range,
        &AllocationRequest {
            family_bases: &[],
            high_water,
            offset: None,
        },
        |port| state.ports.contains_key(&port),
    )
    .ok();
    AllocatorStatus {
        range: range.clone(),
        high_water,
        highest_claimed,
        next_new_family_port,
    }
}
