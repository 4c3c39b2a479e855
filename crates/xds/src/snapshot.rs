//! The one copy of every xDS resource, built by one task from the registry's live feed and
//! shared by every stream: each resource is encoded once per change, whatever the number of
//! streams. Changes are coalesced over a short quiet period with a hard cap, so a burst of
//! registrations is one push. A resource's version is the store revision that last changed
//! it (the same on every node of an etcd cluster, so a client may reconnect to any node).

use crate::resources::{self, ClientLocality, Kind};
use berth_domain::catalog::{Backend, Frontend};
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
    /// bender's frontends as listeners and routes (`frontend/NAME`); their backends are in
    /// `clusters`, `endpoints` and `instances` as `backend/NAME`.
    pub listeners: BTreeMap<String, Arc<Resource>>,
    pub routes: BTreeMap<String, Arc<Resource>>,
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
            Kind::Listener if name.starts_with(resources::FRONTEND) => {
                snapshot.listeners.get(name).cloned()
            }
            Kind::Route if name.starts_with(resources::FRONTEND) => {
                snapshot.routes.get(name).cloned()
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
                    _ => resources::route_configuration(service, service),
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

    /// The names a wildcard subscription covers: every cluster and load assignment, and the
    /// listeners and routes of bender's frontends. gRPC's API listeners are made for the names
    /// gRPC clients ask (and Envoy refuses API listeners over LDS), so a wildcard covers none.
    pub fn wildcard_names(&self, snapshot: &Snapshot, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Cluster => snapshot.clusters.keys().cloned().collect(),
            Kind::Endpoints => snapshot.endpoints.keys().cloned().collect(),
            Kind::Listener => snapshot.listeners.keys().cloned().collect(),
            Kind::Route => snapshot.routes.keys().cloned().collect(),
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
    tokio::spawn(follow(registry.clone(), feed, sender, coalescing));
    Arc::new(Resources {
        current,
        named: Mutex::new(HashMap::new()),
    })
}

/// bender's routing as xDS needs it.
#[derive(Debug, Default, PartialEq)]
struct Routing {
    /// Backend name → (its app, its version).
    backends: BTreeMap<String, (String, String)>,
    /// Frontend name → (its backend, the port it listens on). A frontend without both is not
    /// served.
    frontends: BTreeMap<String, (String, u16)>,
}

/// The port a frontend listens on: its `port` field, a number or a string of one.
fn frontend_port(frontend: &Frontend) -> Option<u16> {
    let raw = &frontend.extra().get("port")?.0;
    raw.trim()
        .trim_matches('"')
        .parse()
        .ok()
        .filter(|port| *port > 0)
}

/// The registry's backends and frontends now; `None` (and a warning) when it cannot say.
async fn load_routing(registry: &Registry) -> Option<Routing> {
    let backends = registry.routing_entities::<Backend>().await;
    let frontends = registry.routing_entities::<Frontend>().await;
    match (backends, frontends) {
        (Ok(backends), Ok(frontends)) => Some(Routing {
            backends: backends
                .iter()
                .map(|b| {
                    (
                        b.name().to_string(),
                        (b.app().to_string(), b.version().to_string()),
                    )
                })
                .collect(),
            frontends: frontends
                .iter()
                .filter_map(|f| {
                    Some((
                        f.name().to_string(),
                        (f.backend()?.to_string(), frontend_port(f)?),
                    ))
                })
                .collect(),
        }),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "xDS could not read bender's backends and frontends");
            None
        }
    }
}

/// The resource `name` with `body`: the previous one when its body is the same (so its version,
/// and what clients hold, stay as they are), else a new one at `version`.
fn kept(previous: Option<&Arc<Resource>>, name: &str, version: i64, body: Any) -> Arc<Resource> {
    match previous {
        Some(previous) if previous.body == body => previous.clone(),
        _ => Arc::new(Resource {
            name: name.to_string(),
            version,
            body,
        }),
    }
}

/// What the builder knows: every live instance by service, and bender's routing.
#[derive(Default)]
struct Live {
    services: BTreeMap<String, BTreeMap<InstanceId, InstanceSpec>>,
    revision: i64,
    changed: BTreeSet<String>,
    routing: Routing,
    /// The catalog changed since the routing was read.
    catalog_changed: bool,
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
                self.catalog_changed = true;
            }
            FeedEvent::Batch(batch) => {
                self.catalog_changed |= batch.catalog_changed;
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

    /// The next snapshot: the previous one with the changed services made again, and the
    /// routing resources those services (or a changed routing) touch.
    fn next(&mut self, previous: &Snapshot, routing_changed: bool) -> Snapshot {
        let mut next = Snapshot {
            revision: self.revision,
            clusters: previous.clusters.clone(),
            endpoints: previous.endpoints.clone(),
            instances: previous.instances.clone(),
            services: previous.services.clone(),
            listeners: previous.listeners.clone(),
            routes: previous.routes.clone(),
        };
        let changed = std::mem::take(&mut self.changed);
        self.next_routing(previous, &mut next, &changed, routing_changed);
        for service in changed {
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

    /// Backends whose app changed (or all, when the routing did) get their cluster and load
    /// assignment made again; frontends their listener and route. What is gone is removed.
    fn next_routing(
        &self,
        previous: &Snapshot,
        next: &mut Snapshot,
        changed: &BTreeSet<String>,
        routing_changed: bool,
    ) {
        let version = self.revision;
        if routing_changed {
            let backend_names: BTreeSet<String> = self
                .routing
                .backends
                .keys()
                .map(|name| format!("{}{name}", resources::BACKEND))
                .collect();
            for map in [&mut next.clusters, &mut next.endpoints] {
                map.retain(|name, _| {
                    !name.starts_with(resources::BACKEND) || backend_names.contains(name)
                });
            }
            next.instances.retain(|name, _| {
                !name.starts_with(resources::BACKEND) || backend_names.contains(name)
            });
            next.listeners.clear();
            next.routes.clear();
            for (name, (backend, port)) in &self.routing.frontends {
                let key = format!("{}{name}", resources::FRONTEND);
                let cluster = format!("{}{backend}", resources::BACKEND);
                let listener = resources::frontend_listener(&key, *port);
                let route = resources::route_configuration(&key, &cluster);
                next.listeners.insert(
                    key.clone(),
                    kept(previous.listeners.get(&key), &key, version, listener),
                );
                next.routes.insert(
                    key.clone(),
                    kept(previous.routes.get(&key), &key, version, route),
                );
            }
        }
        for (name, (app, app_version)) in &self.routing.backends {
            if !routing_changed && !changed.contains(app) {
                continue;
            }
            let key = format!("{}{name}", resources::BACKEND);
            let members: Vec<InstanceSpec> = self
                .services
                .get(app)
                .into_iter()
                .flat_map(|instances| instances.values())
                .filter(|spec| spec.version() == Some(app_version.as_str()))
                .cloned()
                .collect();
            let cluster = resources::cluster(&key);
            let assignment = resources::load_assignment(&key, members.iter(), None);
            next.clusters.insert(
                key.clone(),
                kept(previous.clusters.get(&key), &key, version, cluster),
            );
            next.endpoints.insert(
                key.clone(),
                kept(previous.endpoints.get(&key), &key, version, assignment),
            );
            next.instances.insert(key, Arc::new(members));
        }
    }
}

async fn follow(
    registry: Registry,
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
        let mut routing_changed = false;
        if std::mem::take(&mut live.catalog_changed)
            && let Some(routing) = load_routing(&registry).await
            && routing != live.routing
        {
            live.routing = routing;
            routing_changed = true;
        }
        if live.changed.is_empty() && !routing_changed {
            continue;
        }
        let next = live.next(&sender.borrow(), routing_changed);
        builds.increment(1);
        sender.send_replace(Arc::new(next));
        if sender.is_closed() {
            return;
        }
    }
}
