//! The embedded store's live leases, in memory: deadlines, attached keys, and a queue that
//! finds the expired ones without scanning every lease. Keepalives only move a deadline here;
//! the disk sees leases at grant, revoke, expiry and the periodic checkpoint.

use crate::{LeaseId, Result, StoreError};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LeaseEntry {
    pub deadline: Instant,
    ttl_ms: u64,
    pub keys: LeaseKeys,
    /// Renewed since the last checkpoint wrote it.
    pub renewed: bool,
}

impl LeaseEntry {
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// The keys on a lease. Almost always exactly one (an instance's record), kept inline so a
/// registry with many instances does not pay an allocation per lease for it.
#[derive(Debug, Default)]
pub enum LeaseKeys {
    #[default]
    None,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl LeaseKeys {
    fn insert(&mut self, key: Bytes) {
        match self {
            LeaseKeys::None => *self = LeaseKeys::One(key),
            LeaseKeys::One(existing) if *existing == key => {}
            LeaseKeys::One(existing) => {
                *self = LeaseKeys::Many(vec![existing.clone(), key]);
            }
            LeaseKeys::Many(keys) => {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        match self {
            LeaseKeys::One(existing) if existing.as_ref() == key => *self = LeaseKeys::None,
            LeaseKeys::Many(keys) => keys.retain(|k| k.as_ref() != key),
            _ => {}
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Bytes> {
        match self {
            LeaseKeys::None => [].iter(),
            LeaseKeys::One(key) => std::slice::from_ref(key).iter(),
            LeaseKeys::Many(keys) => keys.iter(),
        }
    }
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    entries: HashMap<LeaseId, LeaseEntry>,
    /// Each lease's deadline as of when it was queued. Keepalives never touch the queue: a
    /// lease found here with a later real deadline is queued again at that deadline, so every
    /// lease is looked at about once per TTL whatever its keepalive rate.
    queue: BinaryHeap<Reverse<(Instant, LeaseId)>>,
}

impl LeaseTable {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn insert(&mut self, id: LeaseId, ttl: Duration, now: Instant) {
        let deadline = now + ttl;
        self.entries.insert(
            id,
            LeaseEntry {
                deadline,
                ttl_ms: ttl.as_millis().min(u128::from(u64::MAX)) as u64,
                keys: LeaseKeys::None,
                renewed: false,
            },
        );
        self.queue.push(Reverse((deadline, id)));
    }

    pub fn remove(&mut self, id: LeaseId) -> Option<LeaseEntry> {
        self.entries.remove(&id)
    }

    pub fn get(&self, id: LeaseId) -> Option<&LeaseEntry> {
        self.entries.get(&id)
    }

    /// A lease past its deadline is dead even before the reaper has deleted its keys: it can
    /// neither be renewed nor take new keys.
    pub fn is_live(&self, id: LeaseId, now: Instant) -> bool {
        self.entries.get(&id).is_some_and(|e| e.deadline > now)
    }

    pub fn keepalive(&mut self, id: LeaseId, now: Instant) -> Result<Duration> {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.deadline > now => {
                let ttl = entry.ttl();
                entry.deadline = now + ttl;
                entry.renewed = true;
                Ok(ttl)
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    pub fn attach(&mut self, id: LeaseId, key: Bytes) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.keys.insert(key);
        }
    }

    pub fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.keys.remove(key);
        }
    }

    /// The leases whose deadline has passed. Each is returned once; `requeue` puts one back
    /// when its deletion could not be committed.
    pub fn take_expired(&mut self, now: Instant) -> Vec<LeaseId> {
        let mut expired = Vec::new();
        while let Some(Reverse((queued_deadline, id))) = self.queue.peek().copied() {
            if queued_deadline > now {
                break;
            }
            self.queue.pop();
            let Some(entry) = self.entries.get(&id) else {
                continue; // revoked since it was queued
            };
            if entry.deadline > now {
                self.queue.push(Reverse((entry.deadline, id)));
            } else {
                expired.push(id);
            }
        }
        expired
    }

    pub fn requeue(&mut self, id: LeaseId, at: Instant) {
        if self.entries.contains_key(&id) {
            self.queue.push(Reverse((at, id)));
        }
    }

    /// The renewed leases with the time they have left, clearing their renewed mark.
    pub fn take_renewed(&mut self, now: Instant) -> Vec<(LeaseId, Duration, Duration)> {
        self.entries
            .iter_mut()
            .filter(|(_, e)| e.renewed)
            .map(|(id, e)| {
                e.renewed = false;
                (*id, e.ttl(), e.deadline.saturating_duration_since(now))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a starting instant; the tests move time by hand from there"
)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_extends_and_expiry_is_found_once() {
        let start = Instant::now();
        let mut table = LeaseTable::default();
        table.insert(LeaseId(1), Duration::from_secs(2), start);
        table.insert(LeaseId(2), Duration::from_secs(2), start);

        let later = start + Duration::from_millis(1500);
        assert_eq!(
            table.keepalive(LeaseId(1), later).unwrap(),
            Duration::from_secs(2)
        );

        let past_first_deadline = start + Duration::from_millis(2100);
        assert_eq!(table.take_expired(past_first_deadline), vec![LeaseId(2)]);
        assert!(table.take_expired(past_first_deadline).is_empty());
        assert!(matches!(
            table.keepalive(LeaseId(2), past_first_deadline),
            Err(StoreError::LeaseNotFound(_))
        ));

        let past_renewed_deadline = start + Duration::from_millis(3600);
        assert_eq!(table.take_expired(past_renewed_deadline), vec![LeaseId(1)]);
    }

    #[test]
    fn keys_attach_and_detach() {
        let now = Instant::now();
        let mut table = LeaseTable::default();
        table.insert(LeaseId(1), Duration::from_secs(5), now);
        let keys = |table: &LeaseTable| -> Vec<Bytes> {
            table
                .get(LeaseId(1))
                .unwrap()
                .keys
                .iter()
                .cloned()
                .collect()
        };
        table.attach(LeaseId(1), Bytes::from_static(b"a"));
        table.attach(LeaseId(1), Bytes::from_static(b"a"));
        assert_eq!(keys(&table), vec![Bytes::from_static(b"a")]);
        table.attach(LeaseId(1), Bytes::from_static(b"b"));
        table.detach(LeaseId(1), b"a");
        assert_eq!(keys(&table), vec![Bytes::from_static(b"b")]);
        table.detach(LeaseId(1), b"b");
        assert!(keys(&table).is_empty());
    }

    #[test]
    fn revoked_leases_are_not_reported() {
        let start = Instant::now();
        let mut table = LeaseTable::default();
        table.insert(LeaseId(7), Duration::from_secs(1), start);
        table.remove(LeaseId(7));
        assert!(
            table
                .take_expired(start + Duration::from_secs(5))
                .is_empty()
        );
    }
}
