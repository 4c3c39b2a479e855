//! berth's registry service: it turns validated domain commands into store transactions, keeps
//! an in-memory view of every live instance and of the catalog, fed by one follower of the
//! store's watch, serves queries and blocking queries from those views, and publishes every
//! change once on the live feed that every surface subscribes to. Every surface (native HTTP,
//! compat APIs, CLI, agent, and later xDS and DNS) goes through it; none of them touches the
//! store.

pub mod auth;
pub mod catalog;
mod clock;
mod error;
mod faults;
mod keys;
mod live;

pub use clock::{SystemWallClock, WallClock};
pub use error::{RegistryError, Result};
pub use faults::UndecodableRecords;
pub use live::commands::{HeartbeatAck, InstanceRef, Registered, RegistrationOutcome};
pub use live::events::{
    EventBatch, EventItem, EventSubscription, InstanceEvent, InstanceEventKind,
};
pub use live::feed::{FeedBatch, FeedEvent, FeedStart, FeedSubscription};
pub use live::records::StoredInstance;
pub use live::view::{LiveInstance, ServiceSummary, ServiceView};

use berth_domain::catalog::allocator::PortRange;
use berth_domain::{Instance, InstanceDefaults, InstanceId, ServiceName, Timestamp};
use berth_store::{AnyStore, Store, StoreError};

/// How many records one read of a large range carries: big records (an instance may be ~90 KiB)
/// keep each answer far below etcd's message limit.
pub(crate) const PAGE: usize = 256;

/// What surfaces need of the store's vocabulary, so none of them depends on the store.
pub use berth_store::{Revision, StoreContact, StoreKind, StoreStatus};
use bytes::Bytes;
use faults::RecordFaults;
use live::events;
use live::feed::{FeedBatch as Batch, FeedHub};
use live::records::decode_instance;
use live::view::InstanceView;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

use catalog::view::CatalogView;

/// How long a read waits for this node's view to catch up with a write before giving up.
const VIEW_CATCH_UP: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub instance_defaults: InstanceDefaults,
    /// The range the port allocator hands external ports out of.
    pub ports: PortRange,
    /// How many revisions the live feed keeps in memory, which is also how far a subscriber
    /// may fall behind before it is reset.
    pub feed_ring: usize,
    pub auth: auth::AuthConfig,
    /// Caps on what clients can make the registry hold.
    pub caps: Caps,
    /// How much of the catalog journal is kept.
    pub journal: catalog::JournalRetention,
}

/// How much clients may store, so that one cannot take the memory every other needs. Each
/// refusal names its setting. Checked against this node's view, so concurrent registrations
/// through several nodes may pass a cap by a few.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub instances_per_service: usize,
    pub instances: usize,
    /// Backends, and frontends (each).
    pub routing_entities: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            instances_per_service: 10_000,
            instances: 1_000_000,
            routing_entities: 10_000,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            instance_defaults: InstanceDefaults::default(),
            ports: PortRange::default(),
            feed_ring: live::feed::RING,
            auth: auth::AuthConfig::default(),
            caps: Caps::default(),
            journal: catalog::JournalRetention::default(),
        }
    }
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
    auth: Arc<auth::AuthView>,
    /// Lookups of tokens this node did not know, waiting for the store (see `authenticate`).
    unknown_token_lookups: tokio::sync::Semaphore,
    /// Every change, once, for every subscriber.
    feed: Arc<FeedHub>,
    /// Stored records that did not decode.
    faults: Arc<RecordFaults>,
    /// The store revision both views reflect.
    revision: watch::Sender<Revision>,
    /// This node's catalog writes take turns (see `catalog_write`).
    catalog_writes: tokio::sync::Mutex<()>,
    /// The highest revision this node wrote; reads wait until the view has it.
    last_local_write: AtomicI64,
    /// Moves with every heartbeat this node takes: with the view's revision it tells whether
    /// an answer that shows heartbeat times is still current.
    heartbeat_epoch: std::sync::atomic::AtomicU64,
    /// The last revision that changed the catalog.
    catalog_revision: Arc<AtomicI64>,
    follower: tokio::task::JoinHandle<()>,
    /// Prunes the catalog journal now and then (see `prune_journal`).
    journal_pruner: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
    /// When this node first saw each kind's deletion mark (by the mark's revision), on its own
    /// clock: a mark's age never depends on the clock of the node that wrote it.
    delete_marks_seen: std::sync::Mutex<
        std::collections::HashMap<berth_domain::catalog::KindName, (Revision, Timestamp)>,
    >,
    counters: Counters,
}

/// Prunes the journal every [`catalog::JOURNAL_PRUNE_INTERVAL`] for as long as the registry
/// lives; a failed run is logged and tried again at the next.
async fn prune_journal_now_and_then(registry: std::sync::Weak<Inner>) {
    let period = catalog::JOURNAL_PRUNE_INTERVAL;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = registry.upgrade() else {
            return;
        };
        if let Err(error) = (Registry { inner }).prune_journal().await {
            tracing::warn!(%error, "pruning the catalog journal failed; trying again later");
        }
    }
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
        if let Some(pruner) = self.journal_pruner.get() {
            pruner.abort();
        }
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
        let faults = Arc::new(RecordFaults::new());
        let (live, durable, tokens) = read_all(&store).await?;
        let loaded_at = live.revision;
        let instances = Arc::new(InstanceView::load(
            decode_all(&live.kvs, &faults),
            loaded_at,
            clock.now(),
        ));
        let (catalog, failures) = CatalogView::load(&durable.kvs);
        failures.into_iter().for_each(|f| faults.record(f));
        let catalog = Arc::new(catalog);
        let (auth, failures) = auth::AuthView::load(&tokens.kvs);
        failures.into_iter().for_each(|f| faults.record(f));
        let auth = Arc::new(auth);
        metrics::gauge!("berth_instances").set(instances.instance_count() as f64);
        let revision = watch::Sender::new(loaded_at);
        let catalog_revision = Arc::new(AtomicI64::new(loaded_at.0));
        let feed = Arc::new(FeedHub::new(instances.clone(), loaded_at, config.feed_ring));
        let follower = tokio::spawn(
            Follower {
                store: store.clone(),
                instances: instances.clone(),
                catalog: catalog.clone(),
                auth: auth.clone(),
                feed: feed.clone(),
                faults: faults.clone(),
                revision: revision.clone(),
                catalog_revision: catalog_revision.clone(),
                clock: clock.clone(),
            }
            .run(loaded_at),
        );
        let registry = Registry {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                instances,
                catalog,
                auth,
                unknown_token_lookups: tokio::sync::Semaphore::new(auth::UNKNOWN_TOKEN_LOOKUPS),
                feed,
                faults,
                revision,
                catalog_writes: tokio::sync::Mutex::new(()),
                last_local_write: AtomicI64::new(0),
                heartbeat_epoch: std::sync::atomic::AtomicU64::new(0),
                catalog_revision,
                follower,
                journal_pruner: std::sync::OnceLock::new(),
                delete_marks_seen: std::sync::Mutex::default(),
                counters: Counters::new(),
            }),
        };
        registry.ensure_seeded().await?;
        let pruner = tokio::spawn(prune_journal_now_and_then(Arc::downgrade(&registry.inner)));
        let _ = registry.inner.journal_pruner.set(pruner);
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

    /// How recently this node reached the store's quorum (no round trip).
    pub fn store_contact(&self) -> StoreContact {
        self.inner.store.contact()
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
        // The write is committed whatever the view does: answering failure would make a client
        // that retries trip over its own success (defect M4). Reads on this node still wait
        // for the view to reach it.
        if let Err(error) = self.wait_for_view(revision).await {
            tracing::warn!(%error, %revision, "a committed write is not yet in this node's view");
        }
        Ok(())
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

    /// Notes a heartbeat (or a renewing registration) this node took.
    fn heard_from(&self, live: &LiveInstance, at: Timestamp) {
        live.record_heartbeat(at);
        self.inner.heartbeat_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves with every heartbeat this node took: an answer about many services that shows
    /// heartbeat times is current while this and [`Registry::view_revision`] are unchanged.
    pub fn heartbeat_epoch(&self) -> u64 {
        self.inner.heartbeat_epoch.load(Ordering::Relaxed)
    }

    /// The revision of the last change to the catalog this node's view holds: an answer made
    /// from the catalog is current while it is unchanged.
    pub fn catalog_revision(&self) -> Revision {
        Revision(self.inner.catalog_revision.load(Ordering::Acquire))
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
    /// blocking query: the caller cannot assume it changed). It follows the live feed, so a
    /// name that nothing ever registered leaves nothing behind.
    pub async fn wait_for_service(
        &self,
        service: &ServiceName,
        index: Revision,
        timeout: Duration,
    ) -> Result<ServiceView> {
        // Subscribed before looking, so no change between the look and the wait is missed.
        let mut feed = self.inner.feed.subscribe(FeedStart::Now);
        let current = self.service(service, Consistency::Local).await?;
        if current.index > index {
            return Ok(current);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, feed.next()).await {
                Ok(Some(FeedEvent::Batch(batch))) if !batch.services.contains(service) => {}
                _ => break,
            }
        }
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

    /// Instance events from after `after` (or from now), of `service` (or all). A revision
    /// this node's view has not reached yet but the store has (another node wrote it) is
    /// waited for; one the store never reached (a client of another store's history) starts
    /// with a reset, as does one the feed no longer holds.
    pub async fn subscribe(
        &self,
        service: Option<ServiceName>,
        after: Option<Revision>,
    ) -> EventSubscription {
        let start = match after {
            None => FeedStart::Now,
            Some(after) => {
                if after > self.view_revision()
                    && let Ok(status) = self.inner.store.status().await
                    && after <= status.revision
                {
                    let _ = self.wait_for_view(after).await;
                }
                FeedStart::After(after)
            }
        };
        EventSubscription::new(self.inner.feed.subscribe(start), service)
    }

    /// The live feed itself, for surfaces that keep their own picture of the registry (xDS,
    /// DNS): every change, once, from `start`.
    pub fn feed(&self, start: FeedStart) -> FeedSubscription {
        self.inner.feed.subscribe(start)
    }

    /// Stored records that did not decode since start (for `/health`).
    pub fn undecodable_records(&self) -> UndecodableRecords {
        self.inner.faults.report()
    }
}

/// Reads the live instances, the catalog and the tokens at one revision.
async fn read_all(
    store: &AnyStore,
) -> std::result::Result<
    (
        berth_store::RangeResponse,
        berth_store::RangeResponse,
        berth_store::RangeResponse,
    ),
    StoreError,
> {
    let live = store.range_all(keys::INSTANCES.into(), PAGE, None).await?;
    let at = Some(live.revision);
    let durable = store.range_all(keys::CATALOG.into(), PAGE, at).await?;
    let tokens = store.range_all(keys::AUTH.into(), PAGE, at).await?;
    Ok((live, durable, tokens))
}

/// The instance records that decode; the others are reported.
fn decode_all(kvs: &[berth_store::KeyValue], faults: &RecordFaults) -> Vec<StoredInstance> {
    kvs.iter()
        .filter_map(|kv| {
            decode_instance(kv)
                .map_err(|error| faults.record(error))
                .ok()
        })
        .collect()
}

/// The one follower of the store: applies each revision under `/berth/` to both views and
/// publishes it on the live feed, and reloads everything if the watch ever falls behind
/// compaction.
struct Follower {
    store: AnyStore,
    instances: Arc<InstanceView>,
    catalog: Arc<CatalogView>,
    auth: Arc<auth::AuthView>,
    feed: Arc<FeedHub>,
    faults: Arc<RecordFaults>,
    revision: watch::Sender<Revision>,
    catalog_revision: Arc<AtomicI64>,
    clock: Arc<dyn WallClock>,
}

impl Follower {
    async fn run(self, loaded_at: Revision) {
        let prefix = Bytes::from_static(keys::ROOT.as_bytes());
        let mut next = loaded_at.next();
        loop {
            let mut watch = match self.store.watch(prefix.clone(), Some(next)).await {
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
                        self.apply(&batch);
                        next = batch.revision.next();
                    }
                    Some(Err(
                        error @ (StoreError::Compacted { .. } | StoreError::FutureRevision { .. }),
                    )) => {
                        match self.reload().await {
                            Ok(at) => {
                                let why = match error {
                                    StoreError::Compacted { .. } => {
                                        "the views fell behind compaction"
                                    }
                                    _ => {
                                        "the store is behind this node's views (restored from \
                                         an older backup?)"
                                    }
                                };
                                tracing::warn!(revision = %at, "{why}; reloaded them");
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

    /// One revision: classified once (every record decoded once), applied to both views and
    /// published, as one step for subscribers.
    fn apply(&self, batch: &berth_store::WatchBatch) {
        let classified = events::classify(batch);
        let catalog_changed = batch
            .events
            .iter()
            .any(|e| e.kv.key.starts_with(keys::CATALOG.as_bytes()));
        let now = self.clock.now();
        let undecodable = classified.undecodable;
        for failure in classified.failures {
            self.faults.record(failure);
        }
        let published = Batch::new(batch.revision, classified.events, catalog_changed);
        self.feed.publish(published, |published| {
            self.instances
                .apply(batch.revision, &published.events, &undecodable, now);
            for failure in self
                .catalog
                .apply(batch)
                .into_iter()
                .chain(self.auth.apply(batch))
            {
                self.faults.record(failure);
            }
            if catalog_changed {
                self.catalog_revision
                    .store(batch.revision.0, Ordering::Release);
            }
            self.revision.send_replace(batch.revision);
            metrics::gauge!("berth_view_revision").set(batch.revision.0 as f64);
        });
    }

    /// Reads both halves afresh and replaces the views (every subscriber is reset).
    async fn reload(&self) -> std::result::Result<Revision, StoreError> {
        let (live, durable, tokens) = read_all(&self.store).await?;
        let stored = decode_all(&live.kvs, &self.faults);
        let now = self.clock.now();
        self.feed.reload(|| {
            self.instances.reload(stored, live.revision, now);
            for failure in self
                .catalog
                .reload(&durable.kvs)
                .into_iter()
                .chain(self.auth.reload(&tokens.kvs))
            {
                self.faults.record(failure);
            }
            self.catalog_revision
                .store(live.revision.0, Ordering::Release);
            self.revision.send_replace(live.revision);
            metrics::gauge!("berth_view_revision").set(live.revision.0 as f64);
            live.revision
        });
        Ok(live.revision)
    }
}
