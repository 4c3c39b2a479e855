//! Reads of the catalog: kinds, applications with flow's filters and sorts, start order,
//! history, backends and frontends with their live members, and the environment of an app.

use super::records::{ChangeType, StoredKind, decode_app, decode_kind};
use super::view::Versioned;
use crate::error::Result;
use crate::live::view::LiveInstance;
use crate::{Consistency, Registry};
use berth_domain::catalog::graph::{start_order_of, start_waves};
use berth_domain::catalog::{AppId, Application, Backend, Frontend, KindName};
use berth_domain::{ServiceName, Timestamp};
use berth_store::Revision;
use std::sync::Arc;

/// How applications are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppSort {
    #[default]
    Id,
    IdDescending,
    /// By lowest external port.
    Port,
    PortDescending,
    Created,
    CreatedDescending,
}

impl AppSort {
    pub fn parse(text: &str) -> Option<AppSort> {
        Some(match text {
            "id" => AppSort::Id,
            "-id" => AppSort::IdDescending,
            "port" => AppSort::Port,
            "-port" => AppSort::PortDescending,
            "created" | "created_at" => AppSort::Created,
            "-created" | "-created_at" => AppSort::CreatedDescending,
            _ => return None,
        })
    }
}

/// Which applications to list: every given criterion must match.
#[derive(Clone, Debug, Default)]
pub struct AppQuery {
    /// Any of these ids.
    pub ids: Vec<AppId>,
    /// Owning any of these external ports.
    pub ports: Vec<u16>,
    /// With a port of any of these kinds.
    pub kinds: Vec<KindName>,
    /// The id is this, or starts with it and a `-` (a family).
    pub prefix: Option<String>,
    /// The id contains this (trimmed, lowercase).
    pub q: Option<String>,
    pub sort: AppSort,
    pub offset: usize,
    pub limit: Option<usize>,
}

impl AppQuery {
    fn matches(&self, app: &Application) -> bool {
        (self.ids.is_empty() || self.ids.contains(app.id()))
            && (self.ports.is_empty()
                || app.ports().iter().any(|p| self.ports.contains(&p.external)))
            && (self.kinds.is_empty() || app.ports().iter().any(|p| self.kinds.contains(&p.kind)))
            && self
                .prefix
                .as_deref()
                .is_none_or(|prefix| app.id().in_family(prefix))
            && self
                .q
                .as_deref()
                .is_none_or(|q| app.id().as_str().contains(q.trim().to_lowercase().as_str()))
    }
}

/// One journal entry of a kind or an application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry<T> {
    /// The revision of the change (it is also the entry's id).
    pub revision: Revision,
    pub timestamp: Timestamp,
    pub change: ChangeType,
    pub record: T,
}

/// Everything in the catalog, for export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogSnapshot {
    pub kinds: Vec<berth_domain::catalog::Kind>,
    pub applications: Vec<Application>,
    pub backends: Vec<Backend>,
    pub frontends: Vec<Frontend>,
    pub high_water: Option<u16>,
}

impl Registry {
    pub async fn kinds(&self) -> Result<Vec<StoredKind>> {
        self.sync(Consistency::Local).await?;
        Ok(self
            .inner
            .catalog
            .read()
            .kinds
            .values()
            .map(|k| k.value.clone())
            .collect())
    }

    pub async fn kind(&self, name: &KindName) -> Result<Option<StoredKind>> {
        self.sync(Consistency::Local).await?;
        Ok(self
            .inner
            .catalog
            .read()
            .kinds
            .get(name)
            .map(|k| k.value.clone()))
    }

    pub async fn app(&self, id: &AppId) -> Result<Option<Application>> {
        self.sync(Consistency::Local).await?;
        Ok(self
            .inner
            .catalog
            .read()
            .apps
            .get(id)
            .map(|a| a.value.clone()))
    }

    /// The applications `query` selects, sorted and paged.
    pub async fn apps(&self, query: &AppQuery) -> Result<Vec<Application>> {
        self.sync(Consistency::Local).await?;
        let state = self.inner.catalog.read();
        let mut apps: Vec<&Versioned<Application>> = state
            .apps
            .values()
            .filter(|app| query.matches(&app.value))
            .collect();
        let port = |app: &Versioned<Application>| app.value.lowest_port().unwrap_or(u16::MAX);
        let created = |app: &Versioned<Application>| (app.value.created_at(), app.created);
        match query.sort {
            AppSort::Id => {}
            AppSort::IdDescending => apps.reverse(),
            AppSort::Port => apps.sort_by_key(|a| (port(a), a.value.id().clone())),
            AppSort::PortDescending => {
                apps.sort_by_key(|a| (std::cmp::Reverse(port(a)), a.value.id().clone()));
            }
            AppSort::Created => apps.sort_by_key(|a| created(a)),
            AppSort::CreatedDescending => apps.sort_by_key(|a| std::cmp::Reverse(created(a))),
        }
        Ok(apps
            .into_iter()
            .skip(query.offset)
            .take(query.limit.unwrap_or(usize::MAX))
            .map(|a| a.value.clone())
            .collect())
    }

    /// Every application in start waves.
    pub async fn start_waves(&self) -> Result<Vec<Vec<AppId>>> {
        self.sync(Consistency::Local).await?;
        let graph = self.inner.catalog.read().graph();
        start_waves(&graph).map_err(|stuck| {
            crate::RegistryError::conflict(format!(
                "the catalog holds a dependency cycle among: {}",
                stuck
                    .iter()
                    .map(AppId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// `id`'s transitive dependencies in start order, `id` last; `None` when it does not exist.
    pub async fn start_order_of(&self, id: &AppId) -> Result<Option<Vec<AppId>>> {
        self.sync(Consistency::Local).await?;
        let state = self.inner.catalog.read();
        if !state.apps.contains_key(id) {
            return Ok(None);
        }
        Ok(Some(start_order_of(id, &state.graph())))
    }

    /// The application and its transitive dependencies, in start order, each with its ports
    /// (what `berth env` prints).
    pub async fn environment(&self, id: &AppId) -> Result<Option<Vec<Application>>> {
        let Some(order) = self.start_order_of(id).await? else {
            return Ok(None);
        };
        let state = self.inner.catalog.read();
        Ok(Some(
            order
                .iter()
                .filter_map(|app| state.apps.get(app).map(|a| a.value.clone()))
                .collect(),
        ))
    }

    pub async fn app_history(&self, id: &AppId) -> Result<Vec<HistoryEntry<Application>>> {
        self.history("apps", id.as_str(), decode_app).await
    }

    pub async fn kind_history(&self, name: &KindName) -> Result<Vec<HistoryEntry<StoredKind>>> {
        self.history("kinds", name.as_str(), decode_kind).await
    }

    /// The journal of one record of `collection`, oldest first (bounded by the journal's
    /// retention per record).
    async fn history<T>(
        &self,
        collection: &str,
        name: &str,
        decode: impl Fn(&str, &[u8]) -> std::result::Result<T, String>,
    ) -> Result<Vec<HistoryEntry<T>>> {
        let window = super::JournalWindow {
            records: vec![name.to_string()],
            limit: usize::MAX,
            ..Default::default()
        };
        self.journal_window(collection, &window, decode).await
    }

    pub async fn export(&self) -> Result<CatalogSnapshot> {
        self.sync(Consistency::Local).await?;
        let state = self.inner.catalog.read();
        Ok(CatalogSnapshot {
            kinds: state.kinds.values().map(|k| k.value.kind.clone()).collect(),
            applications: state.apps.values().map(|a| a.value.clone()).collect(),
            backends: state.backends.values().map(|b| b.value.clone()).collect(),
            frontends: state.frontends.values().map(|f| f.value.clone()).collect(),
            high_water: state.high_water.as_ref().map(|h| h.value),
        })
    }

    /// The live instances of a backend: its service's instances at its version.
    pub async fn backend_members(&self, backend: &Backend) -> Result<Vec<Arc<LiveInstance>>> {
        let view = self.service(backend.app(), Consistency::Local).await?;
        Ok(view
            .instances
            .iter()
            .filter(|live| live.instance.spec.version() == Some(backend.version()))
            .cloned()
            .collect())
    }

    /// The live instances of the service named like an application (if that name is a valid
    /// service name): "which ports, which dependencies, what runs" on one page.
    pub async fn app_instances(&self, id: &AppId) -> Result<Vec<Arc<LiveInstance>>> {
        match ServiceName::parse("service", id.as_str()) {
            Ok(service) => Ok(self
                .service(&service, Consistency::Local)
                .await?
                .instances
                .to_vec()),
            Err(_) => Ok(Vec::new()),
        }
    }
}
