//! The registry's key layout in the store. Everything berth writes lives under `/berth/`;
//! live data (leased) and the catalog (durable) have separate prefixes so each view watches
//! only its own.

use bytes::Bytes;

/// Everything berth writes; one watch of it feeds both views.
pub const ROOT: &str = "/berth/";

/// `/berth/live/instances/{service}/{id}`: one record per instance, attached to its lease.
pub const INSTANCES: &str = "/berth/live/instances/";
/// `/berth/live/deregistered/{service}/{id}`: written in the same transaction that deletes an
/// instance on purpose, so every node's watch can tell a deregistration from an expiry.
pub const DEREGISTERED: &str = "/berth/live/deregistered/";

/// Access tokens (digests of their secrets, never the secrets).
pub const AUTH: &str = "/berth/auth/";
/// `/berth/auth/tokens/{id}`.
pub const TOKENS: &str = "/berth/auth/tokens/";

/// The durable catalog.
pub const CATALOG: &str = "/berth/catalog/";
/// `/berth/catalog/kinds/{name}`.
pub const KINDS: &str = "/berth/catalog/kinds/";
/// `/berth/catalog/apps/{id}`: the application with its ports and dependencies.
pub const APPS: &str = "/berth/catalog/apps/";
/// `/berth/catalog/ports/{external:05}`: who owns an external port. Created with
/// compare-absent, which is what makes ports unique across nodes.
pub const PORTS: &str = "/berth/catalog/ports/";
/// The highest external port ever allocated (never goes down, even when its app is deleted).
pub const HIGH_WATER: &str = "/berth/catalog/meta/high-water";
/// Bumped by every change of the dependency graph's edges, so two concurrent edits can
/// never together close a cycle, or orphan a dependency.
pub const GRAPH: &str = "/berth/catalog/meta/graph";
/// Written once, with the seed kinds, on an empty catalog.
pub const SEEDED: &str = "/berth/catalog/meta/seeded";
pub const BACKENDS: &str = "/berth/catalog/backends/";
pub const FRONTENDS: &str = "/berth/catalog/frontends/";
/// `/berth/journal/{apps|kinds}/{name}/{unique}`: one entry per change, written in the
/// change's own transaction.
pub const JOURNAL: &str = "/berth/journal/";

pub fn port_key(port: u16) -> Bytes {
    Bytes::from(format!("{PORTS}{port:05}"))
}

pub fn token_key(id: &str) -> Bytes {
    Bytes::from(format!("{TOKENS}{id}"))
}

pub fn kind_key(name: &str) -> Bytes {
    Bytes::from(format!("{KINDS}{name}"))
}

pub fn app_key(id: &str) -> Bytes {
    Bytes::from(format!("{APPS}{id}"))
}

/// A backend's (`BACKENDS`) or frontend's (`FRONTENDS`) key.
pub fn entity_key(collection: &str, name: &str) -> Bytes {
    Bytes::from(format!("{collection}{name}"))
}

/// `/berth/journal/{collection}/`: every entry of every record of a collection.
pub fn journal_collection(collection: &str) -> String {
    format!("{JOURNAL}{collection}/")
}

/// `/berth/journal/{collection}/{name}/`: every entry of one record.
pub fn journal_prefix(collection: &str, name: &str) -> String {
    format!("{JOURNAL}{collection}/{name}/")
}

/// One journal entry's key: the record's prefix, then the wall time, a per-process random
/// number and a counter, so keys are unique across nodes and sort by time.
pub fn journal_key(collection: &str, name: &str, at_millis: u64) -> Bytes {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NODE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let node = *NODE.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    Bytes::from(format!(
        "{}{at_millis:013}-{node:016x}-{count:08x}",
        journal_prefix(collection, name)
    ))
}

/// Every instance of `service`, or of every service.
pub fn instances_of(service: Option<&str>) -> String {
    match service {
        Some(service) => format!("{INSTANCES}{service}/"),
        None => INSTANCES.to_string(),
    }
}

pub fn instance_key(service: &str, id: &str) -> Bytes {
    Bytes::from(format!("{INSTANCES}{service}/{id}"))
}

pub fn deregistered_key(service: &str, id: &str) -> Bytes {
    Bytes::from(format!("{DEREGISTERED}{service}/{id}"))
}

/// `(service, id)` of an instance key.
pub fn parse_instance_key(key: &[u8]) -> Option<(&str, &str)> {
    split_under(key, INSTANCES)
}

/// `(service, id)` of a deregistration marker key.
pub fn parse_deregistered_key(key: &[u8]) -> Option<(&str, &str)> {
    split_under(key, DEREGISTERED)
}

fn split_under<'k>(key: &'k [u8], prefix: &str) -> Option<(&'k str, &'k str)> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(prefix)?
        .split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_keys_round_trip() {
        let key = instance_key("web", "[::1]:80");
        assert_eq!(parse_instance_key(&key), Some(("web", "[::1]:80")));
        assert_eq!(parse_deregistered_key(&key), None);
        let marker = deregistered_key("web", "a:1");
        assert_eq!(parse_deregistered_key(&marker), Some(("web", "a:1")));
    }
}
