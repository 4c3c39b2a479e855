//! Serialized responses kept while the data they show is unchanged: each answer is made once
//! per change (or heartbeat, where it shows heartbeat times) and then served as shared bytes,
//! however many clients poll it. Every surface's polled lists use it: the native instance list,
//! lyft's hosts by service and by repository, bender's registrations, flow's listings.

use berth_registry::{Registry, ServiceView};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// The cache's memory budget: past it the cache starts over, so it holds the hot answers
/// without growing with the registry or with the names clients ask about.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// Answers smaller than this are made each time and not kept: making one costs less than
/// keeping it, and a client asking about made-up names (an empty answer each) would otherwise
/// fill the cache with them.
const MIN_KEPT_BYTES: usize = 192;

/// What an entry costs besides its key and body: the map's slot and the two allocations'
/// headers. Counted so that many small answers (one per name a client made up) are held to
/// the budget as well as a few large ones.
const ENTRY_OVERHEAD: usize = 128;

/// What an answer is: the surface's name for it and what it is about (a service, a repo…).
pub(crate) type CacheKey = (&'static str, String);

/// When an answer is current: the revision of what it shows (a service's index, the view's
/// revision, the catalog's) and, where it shows heartbeat times, the heartbeat epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    pub revision: i64,
    pub heartbeats: u64,
}

impl Freshness {
    /// An answer about one service, showing heartbeat times.
    pub(crate) fn of_service(view: &ServiceView) -> Self {
        Freshness {
            revision: view.index.0,
            heartbeats: view.heartbeat_epoch,
        }
    }

    /// An answer about instances of any service, showing heartbeat times.
    pub(crate) fn of_everything(registry: &Registry) -> Self {
        Freshness {
            revision: registry.view_revision().0,
            heartbeats: registry.heartbeat_epoch(),
        }
    }

    /// An answer made from the catalog.
    pub(crate) fn of_catalog(registry: &Registry) -> Self {
        Freshness {
            revision: registry.catalog_revision().0,
            heartbeats: 0,
        }
    }
}

#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    answers: HashMap<CacheKey, (Freshness, Bytes)>,
    bytes: usize,
}

impl ResponseCache {
    /// The answer for `key` as of `freshness`: the kept one when it is current, else a new one
    /// from `make` (kept for the next asker).
    pub(crate) fn get_or_make(
        &self,
        key: CacheKey,
        freshness: Freshness,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Bytes {
        if let Some(body) = self.get(&key, freshness) {
            return body;
        }
        self.keep(key, freshness, make())
    }

    /// The kept answer for `key` if it is current.
    pub(crate) fn get(&self, key: &CacheKey, freshness: Freshness) -> Option<Bytes> {
        self.lock()
            .answers
            .get(key)
            .filter(|(kept, _)| *kept == freshness)
            .map(|(_, body)| body.clone())
    }

    /// Keeps `body` as the answer for `key` as of `freshness`, and returns it.
    pub(crate) fn keep(&self, key: CacheKey, freshness: Freshness, body: Vec<u8>) -> Bytes {
        let body = Bytes::from(body);
        if body.len() < MIN_KEPT_BYTES {
            return body;
        }
        let cost = |key: &CacheKey, body: &Bytes| key.1.len() + body.len() + ENTRY_OVERHEAD;
        let mut entries = self.lock();
        let added = cost(&key, &body);
        if entries.bytes + added > MAX_BYTES {
            // A new map, not `clear()`: that would keep the old one's table allocated.
            entries.answers = HashMap::new();
            entries.bytes = 0;
        }
        entries.bytes += added;
        if let Some((_, old)) = entries.answers.insert(key, (freshness, body.clone())) {
            // The same key: only the body's size differs.
            entries.bytes -= added - body.len() + old.len();
        }
        body
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_made_once_per_freshness() {
        let cache = ResponseCache::default();
        let key = || ("test", "web".to_string());
        let fresh = Freshness {
            revision: 7,
            heartbeats: 0,
        };
        let one = vec![b'1'; MIN_KEPT_BYTES];
        let two = vec![b'2'; MIN_KEPT_BYTES];
        let mut made = 0;
        for _ in 0..3 {
            cache.get_or_make(key(), fresh, || {
                made += 1;
                one.clone()
            });
        }
        assert_eq!(made, 1);
        let later = Freshness {
            heartbeats: 1,
            ..fresh
        };
        assert_eq!(cache.get_or_make(key(), later, || two.clone()), two);
        // A small answer is made every time, and never kept.
        let mut made = 0;
        for _ in 0..3 {
            cache.get_or_make(("test", "empty".into()), fresh, || {
                made += 1;
                b"[]".to_vec()
            });
        }
        assert_eq!(made, 3);
    }

    #[test]
    fn many_small_answers_are_held_to_the_budget() {
        let cache = ResponseCache::default();
        let fresh = Freshness {
            revision: 1,
            heartbeats: 0,
        };
        for i in 0..200_000 {
            cache.keep(
                ("test", format!("unknown-{i}")),
                fresh,
                vec![b'x'; MIN_KEPT_BYTES],
            );
            let entries = cache.lock();
            assert!(entries.bytes <= MAX_BYTES);
            assert!(entries.answers.len() <= MAX_BYTES / ENTRY_OVERHEAD);
        }
    }
}
