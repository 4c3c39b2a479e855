//! The registry's key layout in the store. Everything berth writes lives under `/berth/`;
//! live data (leased) and the catalog (durable) have separate prefixes so each view watches
//! only its own.

use bytes::Bytes;

/// Everything leased: instances and deregistration markers.
pub const LIVE: &str = "/berth/live/";
/// `/berth/live/instances/{service}/{id}`: one record per instance, attached to its lease.
pub const INSTANCES: &str = "/berth/live/instances/";
/// `/berth/live/deregistered/{service}/{id}`: written in the same transaction that deletes an
/// instance on purpose, so every node's watch can tell a deregistration from an expiry.
pub const DEREGISTERED: &str = "/berth/live/deregistered/";

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
