//! Serialized responses kept while their data is unchanged: a service's instance list is
//! serialized once per change (or heartbeat) and then served as shared bytes, however many
//! clients poll it.

use crate::native::instances::service_body;
use berth_domain::{InstanceFilter, ServiceName};
use berth_registry::{Revision, ServiceView};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// The cache's memory budget: past it the cache starts over, so it holds the hot services
/// without growing with the registry.
const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
pub struct ResponseCache {
    services: Mutex<Services>,
}

#[derive(Default)]
struct Services {
    bodies: HashMap<ServiceName, Cached>,
    bytes: usize,
}

struct Cached {
    index: Revision,
    heartbeat_epoch: u64,
    body: Bytes,
}

impl ResponseCache {
    /// The unfiltered instance list of `view`, from the cache when nothing changed since.
    pub fn service_body(&self, view: &ServiceView) -> Bytes {
        let fresh = |cached: &Cached| {
            cached.index == view.index && cached.heartbeat_epoch == view.heartbeat_epoch
        };
        if let Some(cached) = self.lock().bodies.get(&view.service)
            && fresh(cached)
        {
            return cached.body.clone();
        }
        let body = Bytes::from(service_body(view, &InstanceFilter::default()));
        let mut services = self.lock();
        if services.bytes + body.len() > MAX_BYTES {
            services.bodies.clear();
            services.bytes = 0;
        }
        services.bytes += body.len();
        let replaced = services.bodies.insert(
            view.service.clone(),
            Cached {
                index: view.index,
                heartbeat_epoch: view.heartbeat_epoch,
                body: body.clone(),
            },
        );
        if let Some(old) = replaced {
            services.bytes -= old.body.len();
        }
        body
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Services> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }
}
