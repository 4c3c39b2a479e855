//! The one copy of every xDS resource, built by one task from the registry's live feed and
//! shared by every stream: each resource is encoded once per change, whatever the number of
//! streams. Changes are coalesced over a short quiet period with a hard cap, so a burst of
//! registrations is one push. A resource's version is the store revision that last changed
//! it (the same on every node of an etcd cluster, so a client may reconnect to any node).

use crate::resources::{self, ClientLocality, Kind};
use berth_domain::{InstanceId, InstanceSpec};
use berth_registry::{FeedEvent, FeedStart, InstanceEventKind, Registry};
use envoy_types::pb::google::protobuf::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One encoded resource and the revision that last changed it.
#[derive(Debug)]
pub struct Resource {
    pub name: String,
    pub version: i64,
    pub body: Any,
}

impl Resource {
    pub fn version_text(&self) -> String {
        self.version.to_string()
    }
}

/// Every resource as of one revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    /// Clusters and their load assignments, by service.
    pub clusters: BTreeMap<String, Arc<Resource>>,
    pub endpoints: BTreeMap<String, Arc<Resource>>,
    /// The instances behind each load assignment, for the variants that put a client's own
    /// zone first.
    pub instances: BTreeMap<String, Arc<Vec<InstanceSpec>>>,
    /// Each service with live instances and the revision it last appeared at: the version of
    /// its listeners and routes, which only change when it appears or goes.
    pub services: BTreeMap<String, i64>,
}

/// How long a change waits for more before it is pushed, and at most.
#[derive(Clone, Copy, Debug)]
pub struct Coalescing {
    pub quiet: Duration,
    pub cap: Duration,
}

impl Default for Coalescing {
    fn default() -> Self {
        Coalescing {
            quiet: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        }
    }
}

/// How many made-by-name resources (gRPC listeners and routes, zone-first load assignments) are
/// kept: the names and localities come from clients, so the cache is bounded; past it, it starts
/// over and what is asked again is made again.
const NAMED_CACHE: usize = 65_536;

/// The current snapshot, and the listeners and routes made for the names gRPC clients ask
/// (`S`, `S:port`): made once per name and version, shared by every stream.
pub struct Resources {
    current: watch::Receiver<Arc<Snapshot>>,
    named: Mutex<HashMap<(Kind, String), Arc<Resource>>>,
}

impl Resources {
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.current.clone()
    }

    /// The resource of `kind` named `name` in `snapshot` for a client at `client`; `None` when
    /// berth has none. A client with a zone gets load assignments with its zone first, made
    /// once per service, locality and version and shared by every client there.
    pub fn get(
        &self,
        snapshot: &Snapshot,
        kind: Kind,
        name: &str,
        client: Option<&ClientLocality>,
    ) -> Option<Arc<Resource>> {
        match kind {
            Kind::Cluster => snapshot.clusters.get(name).cloned(),
            Kind::Endpoints => {
                let shared = snapshot.endpoints.get(name)?;
                let Some(client) = client.filter(|c| !c.zone.is_empty()) else {
                    return Some(shared.clone());
                };
                let key = (
                    kind,
                    format!("{name}\u{0}{}\u{0}{}", client.region, client.zone),
                );
                let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(made) = named.get(&key).filter(|r| r.version == shared.version) {
                    return Some(made.clone());
                }
                let instances = snapshot.instances.get(name)?;
                let made = Arc::new(Resource {
                    name: name.to_string(),
                    version: shared.version,
                    body: resources::load_assignment(name, instances.iter(), Some(client)),
                });
                keep(&mut named, key, made.clone());
                Some(made)
            }
            Kind::Listener | Kind::Route => {
                let service = match kind {
                    Kind::Listener => resources::service_of_target(name),
                    _ => name,
                };
                let version = *snapshot.services.get(service)?;
                let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
                let key = (kind, name.to_string());
                if let Some(made) = named.get(&key).filter(|r| r.version == version) {
                    return Some(made.clone());
                }
                let body = match kind {
                    Kind::Listener => resources::api_listener(name, service),
                    _ => resources::route_configuration(service),
                };
                let made = Arc::new(Resource {
                    name: name.to_string(),
                    version,
                    body,
                });
                keep(&mut named, key, made.clone());
                Some(made)
            }
        }
    }

    /// The names a wildcard subscription covers: every cluster and load assignment. Listeners
    /// and routes are API listeners for gRPC clients, which always ask by name (and Envoy
    /// refuses API listeners over LDS), so a wildcard covers none of them.
    pub fn wildcard_names(&self, snapshot: &Snapshot, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Cluster => snapshot.clusters.keys().cloned().collect(),
            Kind::Endpoints => snapshot.endpoints.keys().cloned().collect(),
            Kind::Listener | Kind::Route => Vec::new(),
        }
    }
}

/// Keeps `made` under `key`, within [`NAMED_CACHE`].
fn keep(
    named: &mut HashMap<(Kind, String), Arc<Resource>>,
    key: (Kind, String),
    made: Arc<Resource>,
) {
    if named.len() >= NAMED_CACHE {
        named.clear();
    }
    named.insert(key, made);
}

/// Starts the task that follows the registry's feed and keeps the snapshot current.
pub fn start(registry: &Registry, coalescing: Coalescing) -> Arc<Resources> {
    let (sender, current) = watch::channel(Arc::new(Snapshot::default()));
    let feed = registry.feed(FeedStart::Snapshot);
    tokio::spawn(follow(feed, sender, coalescing));
    Arc::new(Resources {
        current,
        named: Mutex::new(HashMap::new()),
    })
}

/// What the builder knows: every live instance by service.
#[derive(Default)]
struct Live {
    services: BTreeMap<String, BTreeMap<InstanceId, InstanceSpec>>,
    revision: i64,
    changed: BTreeSet<String>,
}

impl Live {
    fn apply(&mut self, event: FeedEvent) {
        match event {
            FeedEvent::Snapshot {
                revision,
                instances,
                ..
            } => {
                self.changed.extend(self.services.keys().cloned());
                self.services.clear();
                for live in instances {
                    let spec = &live.instance.spec;
                    self.changed.insert(spec.service().to_string());
                    self.services
                        .entry(spec.service().to_string())
                        .or_default()
                        .insert(spec.id().clone(), spec.clone());
                }
                self.revision = revision.0;
            }
            FeedEvent::Batch(batch) => {
                for event in &batch.events {
                    let spec = &event.instance.instance.spec;
                    let service = spec.service().to_string();
                    match event.kind {
                        InstanceEventKind::Online | InstanceEventKind::Updated => {
                            self.services
                                .entry(service.clone())
                                .or_default()
                                .insert(spec.id().clone(), spec.clone());
                        }
                        InstanceEventKind::Offline(_) => {
                            if let Some(instances) = self.services.get_mut(&service) {
                                instances.remove(spec.id());
                                if instances.is_empty() {
                                    self.services.remove(&service);
                                }
                            }
                        }
                    }
                    self.changed.insert(service);
                }
                self.revision = batch.revision.0;
            }
        }
    }

    /// The next snapshot: the previous one with the changed services made again.
    fn next(&mut self, previous: &Snapshot) -> Snapshot {
        let mut next = Snapshot {
            revision: self.revision,
            clusters: previous.clusters.clone(),
            endpoints: previous.endpoints.clone(),
            instances: previous.instances.clone(),
            services: previous.services.clone(),
        };
        for service in std::mem::take(&mut self.changed) {
            match self.services.get(&service) {
                Some(instances) => {
                    if !next.services.contains_key(&service) {
                        next.services.insert(service.clone(), self.revision);
                        next.clusters.insert(
                            service.clone(),
                            Arc::new(Resource {
                                name: service.clone(),
                                version: self.revision,
                                body: resources::cluster(&service),
                            }),
                        );
                    }
                    next.endpoints.insert(
                        service.clone(),
                        Arc::new(Resource {
                            name: service.clone(),
                            version: self.revision,
                            body: resources::load_assignment(&service, instances.values(), None),
                        }),
                    );
                    next.instances.insert(
                        service.clone(),
                        Arc::new(instances.values().cloned().collect()),
                    );
                }
                None => {
                    next.services.remove(&service);
                    next.clusters.remove(&service);
                    next.endpoints.remove(&service);
                    next.instances.remove(&service);
                }
            }
        }
        next
    }
}

async fn follow(
    mut feed: berth_registry::FeedSubscription,
    sender: watch::Sender<Arc<Snapshot>>,
    coalescing: Coalescing,
) {
    let mut live = Live::default();
    let builds = metrics::counter!("berth_xds_snapshots_total");
    while let Some(first) = feed.next().await {
        live.apply(first);
        let cap = tokio::time::sleep(coalescing.cap);
        tokio::pin!(cap);
        loop {
            tokio::select! {
                event = feed.next() => match event {
                    Some(event) => live.apply(event),
                    None => return,
                },
                () = tokio::time::sleep(coalescing.quiet) => break,
                () = &mut cap => break,
            }
        }
        if live.changed.is_empty() {
            continue;
        }
        let next = live.next(&sender.borrow());
        builds.increment(1);
        sender.send_replace(Arc::new(next));
        if sender.is_closed() {
            return;
        }
    }
}
