//! Serialized responses kept while their data is unchanged: a service's instance list is
//! serialized once per change (or heartbeat) and then served as shared bytes, however many
//! clients poll it.

use crate::native::instances::service_body;
use berth_domain::{InstanceFilter, ServiceName};
use berth_registry::ServiceView;
use berth_store::Revision;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// More cached services than this and the cache starts over (names are client-chosen).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct ResponseCache {
    services: Mutex<HashMap<ServiceName, Cached>>,
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
        if let Some(cached) = self.lock().get(&view.service)
            && fresh(cached)
        {
            return cached.body.clone();
        }
        let body = Bytes::from(service_body(view, &InstanceFilter::default()));
        let mut services = self.lock();
        if services.len() >= MAX_ENTRIES {
            services.clear();
        }
        services.insert(
            view.service.clone(),
            Cached {
                index: view.index,
                heartbeat_epoch: view.heartbeat_epoch,
                body: body.clone(),
            },
        );
        body
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, Cached>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }
}
