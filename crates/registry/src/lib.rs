//! berth's registry service: it turns validated domain commands into store transactions, keeps
//! an in-memory view of every live instance fed by the store's watch, serves queries and
//! blocking queries from that view, and streams instance events. Every surface (native HTTP,
//! compat APIs, CLI, agent) goes through it; none of them touches the store.

pub mod catalog;
mod clock;
mod error;
mod keys;
mod live;

pub use clock::{SystemWallClock, WallClock};
pub use error::{RegistryError, Result};
pub use live::commands::{HeartbeatAck, InstanceRef, Registered, RegistrationOutcome};
pub use live::events::{
    EventBatch, EventItem, EventSubscription, InstanceEvent, InstanceEventKind,
};
pub use live::records::StoredInstance;
pub use live::view::{LiveInstance, ServiceSummary, ServiceView};

use berth_domain::catalog::allocator::PortRange;
use berth_domain::{Instance, InstanceDefaults, InstanceId, ServiceName, Timestamp};
use berth_store::{AnyStore, RangeRequest, Store, StoreError};

/// What surfaces need of the store's vocabulary, so none of them depends on the store.
pub use berth_store::{Revision, StoreKind, StoreStatus};
use bytes::Bytes;
use live::events;
use live::view::InstanceView;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

use catalog::view::CatalogView;

/// How long a read waits for this node's view to catch up with a write before giving up.
const VIEW_CATCH_UP: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    pub instance_defaults: InstanceDefaults,
    /// The range the port allocator hands external ports out of.
    pub ports: PortRange,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write this node acknowledged (the default).
    #[default]
    Local,
    /// Sees every write any node acknowledged before the read started: asks the store for its
    /// revision first (one round trip on etcd).
    Consistent,
}

struct Inner {
    store: AnyStore,
    clock: Arc<dyn WallClock>,
    config: RegistryConfig,
    instances: Arc<InstanceView>,
    catalog: Arc<CatalogView>,
    /// The store revision both views reflect.
    revision: watch::Sender<Revision>,
    /// This node's catalog writes take turns (see `catalog_write`).
    catalog_writes: tokio::sync::Mutex<()>,
    /// The highest revision this node wrote; reads wait until the view has it.
    last_local_write: AtomicI64,
    follower: tokio::task::JoinHandle<()>,
    counters: Counters,
}

/// Metric handles taken once at start (the heartbeat path should not look them up by name).
struct Counters {
    heartbeats: metrics::Counter,
    deregistrations: metrics::Counter,
    /// Created, updated, renewed.
    registrations: [metrics::Counter; 3],
}

impl Counters {
    fn new() -> Self {
        let registrations = |outcome: &'static str| metrics::counter!("berth_registrations_total", "outcome" => outcome);
        Counters {
            heartbeats: metrics::counter!("berth_heartbeats_total"),
            deregistrations: metrics::counter!("berth_deregistrations_total"),
            registrations: [
                registrations("created"),
                registrations("updated"),
                registrations("renewed"),
            ],
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The registry. Clones share one state.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// Loads both views from the store (at one revision), starts following its changes and
    /// seeds the catalog's kinds when it is empty.
    pub async fn start(
        store: AnyStore,
        config: RegistryConfig,
        clock: Arc<dyn WallClock>,
    ) -> Result<Registry> {
        let instances = store.range(RangeRequest::prefix(keys::INSTANCES)).await?;
        let loaded_at = instances.revision;
        let catalog = store
            .range(RangeRequest::prefix(keys::CATALOG).at_revision(loaded_at))
            .await?;
        let instances = Arc::new(InstanceView::load(&instances.kvs, loaded_at, clock.now()));
        let catalog = Arc::new(CatalogView::load(&catalog.kvs));
        metrics::gauge!("berth_instances").set(instances.instance_count() as f64);
        let revision = watch::Sender::new(loaded_at);
        let follower = tokio::spawn(follow_store(
            store.clone(),
            instances.clone(),
            catalog.clone(),
            revision.clone(),
            clock.clone(),
            loaded_at,
        ));
        let registry = Registry {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                instances,
                catalog,
                revision,
                catalog_writes: tokio::sync::Mutex::new(()),
                last_local_write: AtomicI64::new(0),
                follower,
                counters: Counters::new(),
            }),
        };
        registry.ensure_seeded().await?;
        Ok(registry)
    }

    pub(crate) fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    /// The store's own revision (one round trip on etcd): `Unavailable` when it does not
    /// answer.
    pub async fn store_status(&self) -> Result<StoreStatus> {
        Ok(self.inner.store.status().await?)
    }

    pub fn store_kind(&self) -> StoreKind {
        self.inner.store.kind()
    }

    pub fn instance_defaults(&self) -> InstanceDefaults {
        self.inner.config.instance_defaults
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The store revision this node's views reflect.
    pub fn view_revision(&self) -> Revision {
        *self.inner.revision.borrow()
    }

    /// The port range the allocator uses.
    pub fn port_range(&self) -> &PortRange {
        &self.inner.config.ports
    }

    /// Records a write this node acknowledged and waits until the view shows it, so the
    /// writer's next read on this node sees its own write.
    async fn written(&self, revision: Revision) -> Result<()> {
        self.inner
            .last_local_write
            .fetch_max(revision.0, Ordering::AcqRel);
        self.wait_for_view(revision).await
    }

    async fn sync_local_writes(&self) -> Result<()> {
        let revision = Revision(self.inner.last_local_write.load(Ordering::Acquire));
        self.wait_for_view(revision).await
    }

    async fn wait_for_view(&self, revision: Revision) -> Result<()> {
        if self.view_revision() >= revision {
            return Ok(());
        }
        let mut receiver = self.inner.revision.subscribe();
        match tokio::time::timeout(VIEW_CATCH_UP, receiver.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(RegistryError::Unavailable(format!(
                "this node's view did not reach revision {revision} in time"
            ))),
        }
    }

    async fn sync(&self, consistency: Consistency) -> Result<()> {
        match consistency {
            Consistency::Local => self.sync_local_writes().await,
            Consistency::Consistent => {
                let revision = self.inner.store.status().await?.revision;
                self.wait_for_view(revision).await
            }
        }
    }

    fn view_instance(&self, service: &ServiceName, id: &InstanceId) -> Option<Arc<LiveInstance>> {
        self.inner.instances.instance(service, id)
    }

    /// One instance.
    pub async fn instance(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Option<Arc<LiveInstance>>> {
        self.sync_local_writes().await?;
        Ok(self.view_instance(service, id))
    }

    /// One service's instances.
    pub async fn service(
        &self,
        service: &ServiceName,
        consistency: Consistency,
    ) -> Result<ServiceView> {
        self.sync(consistency).await?;
        Ok(self.inner.instances.service(service))
    }

    /// Waits until `service` changes after `index` or `timeout` passes, then returns it (a
    /// blocking query: the caller cannot assume it changed).
    pub async fn wait_for_service(
        &self,
        service: &ServiceName,
        index: Revision,
        timeout: Duration,
    ) -> Result<ServiceView> {
        let mut changed = self.inner.instances.subscribe_service(service);
        let current = self.service(service, Consistency::Local).await?;
        if current.index > index {
            return Ok(current);
        }
        let _ = tokio::time::timeout(timeout, changed.wait_for(|r| *r > index)).await;
        Ok(self.inner.instances.service(service))
    }

    /// Every service with at least one instance.
    pub async fn services(&self) -> Result<Vec<ServiceSummary>> {
        self.sync_local_writes().await?;
        Ok(self.inner.instances.summaries())
    }

    /// Instances across services that `keep` accepts.
    pub async fn select(&self, keep: impl Fn(&Instance) -> bool) -> Result<Vec<Arc<LiveInstance>>> {
        self.sync_local_writes().await?;
        Ok(self.inner.instances.select(keep))
    }

    /// Instance events from after `after` (or from now), of `service` (or all).
    pub fn subscribe(
        &self,
        service: Option<ServiceName>,
        after: Option<Revision>,
    ) -> EventSubscription {
        events::subscribe(
            self.inner.store.clone(),
            service,
            after,
            self.inner.revision.subscribe(),
        )
    }
}

/// Keeps both views in step with the store: applies each revision under `/berth/`, and
/// reloads everything if the watch ever falls behind compaction.
async fn follow_store(
    store: AnyStore,
    instances: Arc<InstanceView>,
    catalog: Arc<CatalogView>,
    revision: watch::Sender<Revision>,
    clock: Arc<dyn WallClock>,
    loaded_at: Revision,
) {
    let prefix = Bytes::from_static(keys::ROOT.as_bytes());
    let mut next = loaded_at.next();
    loop {
        let mut watch = match store.watch(prefix.clone(), Some(next)).await {
            Ok(watch) => watch,
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match watch.next().await {
                None => return, // the store shut down
                Some(Ok(batch)) => {
                    instances.apply(&batch, clock.now());
                    catalog.apply(&batch);
                    revision.send_replace(batch.revision);
                    next = batch.revision.next();
                }
                Some(Err(StoreError::Compacted { .. })) => {
                    match reload(&store, &instances, &catalog, clock.now()).await {
                        Ok(at) => {
                            tracing::warn!(revision = %at, "the views fell behind compaction; reloaded them");
                            revision.send_replace(at);
                            next = at.next();
                        }
                        Err(error) => {
                            tracing::warn!(%error, "reloading the views failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    break;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "the store watch failed; watching again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

/// Reads both halves at one revision and replaces the views with them.
async fn reload(
    store: &AnyStore,
    instances: &InstanceView,
    catalog: &CatalogView,
    now: Timestamp,
) -> std::result::Result<Revision, StoreError> {
    let live = store.range(RangeRequest::prefix(keys::INSTANCES)).await?;
    let durable = store
        .range(RangeRequest::prefix(keys::CATALOG).at_revision(live.revision))
        .await?;
    instances.reload(&live.kvs, live.revision, now);
    catalog.reload(&durable.kvs);
    Ok(live.revision)
}
