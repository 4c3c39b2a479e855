//! The live view: every instance in memory, kept up to date by the follower from the store's
//! watch (so a change made through any berth node shows here), indexed by service, with a
//! per-service change index and shared snapshots: a snapshot is built when a reader first asks
//! after a change, so a burst of writes to one large service costs one rebuild, not one per
//! write. Names that were only asked about (a blocking query on an unknown service) leave
//! nothing behind.

use super::events::{InstanceEvent, InstanceEventKind};
use crate::live::records::StoredInstance;
use berth_domain::{Instance, InstanceId, ServiceName, Timestamp};
use berth_store::{LeaseId, Revision};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// One live instance as this node knows it.
#[derive(Debug)]
pub struct LiveInstance {
    pub instance: Instance,
    pub lease: LeaseId,
    /// The TTL the store granted: a heartbeat keeps the instance for this long.
    pub lease_ttl: Duration,
    /// The revision that last wrote the instance's record.
    pub revision_index: Revision,
    /// Wall-clock milliseconds of the last heartbeat or registration this node saw.
    last_heartbeat: AtomicU64,
    /// The service's heartbeat counter, bumped with every heartbeat so cached responses that
    /// show heartbeat times know to refresh.
    service_heartbeats: Arc<AtomicU64>,
}

impl LiveInstance {
    pub fn last_heartbeat(&self) -> Timestamp {
        Timestamp::from_millis(self.last_heartbeat.load(Ordering::Relaxed))
    }

    pub fn expires_at(&self) -> Timestamp {
        self.last_heartbeat().plus(self.lease_ttl)
    }

    pub(crate) fn record_heartbeat(&self, at: Timestamp) {
        self.last_heartbeat.store(at.millis(), Ordering::Relaxed);
        self.service_heartbeats.fetch_add(1, Ordering::Relaxed);
    }
}

/// A consistent picture of one service.
#[derive(Clone, Debug)]
pub struct ServiceView {
    pub service: ServiceName,
    /// The revision of the last change to this service's instances (never goes back).
    pub index: Revision,
    /// The instances, ordered by id.
    pub instances: Arc<[Arc<LiveInstance>]>,
    /// Moves with every heartbeat; with `index` it tells whether heartbeat times changed.
    pub heartbeat_epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSummary {
    pub service: ServiceName,
    pub instances: usize,
    pub zones: BTreeSet<String>,
    pub index: Revision,
}

/// A service that has had instances (kept when its last one goes, so its index never goes
/// back).
struct ServiceState {
    name: ServiceName,
    instances: BTreeMap<InstanceId, Arc<LiveInstance>>,
    /// The instances as a shared list; `None` after a change until a reader rebuilds it.
    snapshot: Mutex<Option<Arc<[Arc<LiveInstance>]>>>,
    index: Revision,
    heartbeats: Arc<AtomicU64>,
}

impl ServiceState {
    fn snapshot(&self) -> Arc<[Arc<LiveInstance>]> {
        let mut snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        snapshot
            .get_or_insert_with(|| self.instances.values().cloned().collect())
            .clone()
    }

    fn invalidate_snapshot(&mut self) {
        *self.snapshot.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn new(name: ServiceName, index: Revision) -> Self {
        ServiceState {
            name,
            instances: BTreeMap::new(),
            snapshot: Mutex::new(None),
            index,
            heartbeats: Arc::new(AtomicU64::new(0)),
        }
    }
}

pub(crate) struct InstanceView {
    services: RwLock<HashMap<ServiceName, ServiceState>>,
    /// The revision the view was loaded at: the index of a service never seen since.
    loaded_at: Revision,
    /// How many instances the view holds, kept as it changes.
    count: AtomicUsize,
}

fn live_instance(
    stored: StoredInstance,
    heartbeat: Timestamp,
    service_heartbeats: Arc<AtomicU64>,
) -> Option<LiveInstance> {
    Some(LiveInstance {
        lease: stored.lease?,
        instance: stored.instance,
        lease_ttl: stored.lease_ttl,
        revision_index: stored.revision_index,
        last_heartbeat: AtomicU64::new(heartbeat.millis()),
        service_heartbeats,
    })
}

impl InstanceView {
    /// Builds the view from instances read at `revision`.
    pub fn load(stored: Vec<StoredInstance>, revision: Revision, now: Timestamp) -> Self {
        let view = InstanceView {
            services: RwLock::new(HashMap::new()),
            loaded_at: revision,
            count: AtomicUsize::new(0),
        };
        {
            let mut services = view.write();
            for stored in stored {
                view.upsert(&mut services, stored, now, revision);
            }
        }
        view
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ServiceName, ServiceState>> {
        self.services.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ServiceName, ServiceState>> {
        self.services.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces an instance (one that has no lease is not live, and left out).
    fn upsert(
        &self,
        services: &mut HashMap<ServiceName, ServiceState>,
        mut stored: StoredInstance,
        now: Timestamp,
        index: Revision,
    ) {
        let service = stored.instance.spec.service().clone();
        let state = services
            .entry(service.clone())
            .or_insert_with(|| ServiceState::new(service, index));
        // One copy of the name for the whole service.
        stored.instance.spec.share_service_name(&state.name);
        let id = stored.instance.spec.id().clone();
        let Some(live) = live_instance(stored, now, state.heartbeats.clone()) else {
            return;
        };
        if state.instances.insert(id, Arc::new(live)).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(
        &self,
        services: &mut HashMap<ServiceName, ServiceState>,
        service: &ServiceName,
        id: &InstanceId,
    ) -> bool {
        if let Some(state) = services.get_mut(service)
            && state.instances.remove(id).is_some()
        {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Applies one classified revision of the live prefix: its events, and the instances
    /// whose new record does not decode (they leave the view).
    pub fn apply(
        &self,
        revision: Revision,
        events: &[InstanceEvent],
        undecodable: &[(ServiceName, InstanceId)],
        now: Timestamp,
    ) {
        if events.is_empty() && undecodable.is_empty() {
            return;
        }
        let mut changed: BTreeSet<ServiceName> = BTreeSet::new();
        {
            let mut services = self.write();
            for event in events {
                let spec = &event.instance.instance.spec;
                match event.kind {
                    InstanceEventKind::Online | InstanceEventKind::Updated => {
                        self.upsert(&mut services, event.instance.clone(), now, revision);
                        changed.insert(spec.service().clone());
                    }
                    InstanceEventKind::Offline(_) => {
                        if self.remove(&mut services, spec.service(), spec.id()) {
                            changed.insert(spec.service().clone());
                        }
                    }
                }
            }
            for (service, id) in undecodable {
                if self.remove(&mut services, service, id) {
                    changed.insert(service.clone());
                }
            }
            for service in &changed {
                if let Some(state) = services.get_mut(service) {
                    state.invalidate_snapshot();
                    state.index = revision;
                }
                let size = services
                    .get(service)
                    .map_or(0, |state| state.instances.len());
                record_service_size(service, size);
            }
        }
        metrics::gauge!("berth_instances").set(self.instance_count() as f64);
    }

    /// Replaces the whole view with a fresh read (after the watch fell behind compaction).
    /// Services whose instances differ get the new revision as their index.
    pub fn reload(&self, stored: Vec<StoredInstance>, revision: Revision, now: Timestamp) {
        let mut incoming: HashMap<ServiceName, BTreeMap<InstanceId, StoredInstance>> =
            HashMap::new();
        for stored in stored {
            incoming
                .entry(stored.instance.spec.service().clone())
                .or_default()
                .insert(stored.instance.spec.id().clone(), stored);
        }
        {
            let mut services = self.write();
            let names: BTreeSet<ServiceName> =
                services.keys().chain(incoming.keys()).cloned().collect();
            for name in names {
                let fresh = incoming.remove(&name).unwrap_or_default();
                let state = services
                    .entry(name.clone())
                    .or_insert_with(|| ServiceState::new(name, revision));
                let unchanged = state.instances.len() == fresh.len()
                    && state.instances.iter().zip(&fresh).all(|(old, new)| {
                        old.0 == new.0 && old.1.revision_index == new.1.revision_index
                    });
                if unchanged {
                    continue;
                }
                self.count
                    .fetch_sub(state.instances.len(), Ordering::Relaxed);
                state.instances = fresh
                    .into_iter()
                    .filter_map(|(id, mut stored)| {
                        stored.instance.spec.share_service_name(&state.name);
                        live_instance(stored, now, state.heartbeats.clone())
                            .map(|l| (id, Arc::new(l)))
                    })
                    .collect();
                self.count
                    .fetch_add(state.instances.len(), Ordering::Relaxed);
                state.invalidate_snapshot();
                state.index = revision;
                record_service_size(&state.name, state.instances.len());
            }
        }
        metrics::gauge!("berth_instances").set(self.instance_count() as f64);
    }

    pub fn instance(&self, service: &ServiceName, id: &InstanceId) -> Option<Arc<LiveInstance>> {
        self.read().get(service)?.instances.get(id).cloned()
    }

    pub fn service(&self, service: &ServiceName) -> ServiceView {
        match self.read().get(service) {
            Some(state) => ServiceView {
                service: service.clone(),
                index: state.index,
                instances: state.snapshot(),
                heartbeat_epoch: state.heartbeats.load(Ordering::Relaxed),
            },
            None => ServiceView {
                service: service.clone(),
                index: self.loaded_at,
                instances: Arc::from(Vec::new()),
                heartbeat_epoch: 0,
            },
        }
    }

    pub fn summaries(&self) -> Vec<ServiceSummary> {
        let services = self.read();
        let mut summaries: Vec<ServiceSummary> = services
            .iter()
            .filter(|(_, state)| !state.instances.is_empty())
            .map(|(name, state)| ServiceSummary {
                service: name.clone(),
                instances: state.instances.len(),
                zones: state
                    .instances
                    .values()
                    .filter_map(|i| i.instance.spec.zone().map(String::from))
                    .collect(),
                index: state.index,
            })
            .collect();
        summaries.sort_by(|a, b| a.service.cmp(&b.service));
        summaries
    }

    /// Every instance that `keep` accepts, ordered by service then id.
    pub fn select(&self, keep: impl Fn(&Instance) -> bool) -> Vec<Arc<LiveInstance>> {
        let services = self.read();
        let mut names: Vec<&ServiceName> = services.keys().collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|name| services[name].instances.values())
            .filter(|live| keep(&live.instance))
            .cloned()
            .collect()
    }

    /// Every live instance, ordered by service then id.
    pub fn all(&self) -> Vec<Arc<LiveInstance>> {
        self.select(|_| true)
    }

    pub fn instance_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// How many live instances `service` has.
    pub fn service_len(&self, service: &ServiceName) -> usize {
        self.read()
            .get(service)
            .map_or(0, |state| state.instances.len())
    }
}

/// The live instances of one service, for dashboards. A service that empties stays at 0 rather
/// than vanishing: its name was registered, so the series are bounded by the instance caps.
fn record_service_size(service: &ServiceName, size: usize) {
    metrics::gauge!("berth_service_instances", "service" => service.to_string()).set(size as f64);
}
