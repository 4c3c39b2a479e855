//! The embedded store's on-disk encodings: a key's record, a revision's events and a lease.
//! Fixed little-endian layouts; decoding checks every length, so a damaged record is a
//! `Storage` error, never a panic.

use crate::{Event, EventKind, KeyValue, LeaseId, Revision, StoreError};
use bytes::Bytes;

/// Bumped whenever an encoding here or the table layout changes; a file written with another
/// version is refused at open.
pub const FORMAT_VERSION: u64 = 1;

const RECORD_HEADER: usize = 32;

/// A key's record in the `kv` table: its bookkeeping and its value (the key is the table key).
pub fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + kv.value.len());
    put_record(&mut out, kv);
    out
}

fn put_record(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.0.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.0.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.map_or(0, |l| l.0).to_le_bytes());
    out.extend_from_slice(&kv.value);
}

pub fn decode_record(key: &[u8], bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let mut reader = Reader::new(bytes);
    let create_revision = Revision(reader.i64()?);
    let mod_revision = Revision(reader.i64()?);
    let version = reader.i64()?;
    let lease = reader.i64()?;
    Ok(KeyValue {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(reader.rest()),
        create_revision,
        mod_revision,
        version,
        lease: (lease != 0).then_some(LeaseId(lease)),
    })
}

/// The events of one revision, as kept in the `log` table for watches and reads at a revision.
pub fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        put_bytes(&mut out, &event.kv.key);
        let mut record = Vec::new();
        put_record(&mut record, &event.kv);
        put_bytes(&mut out, &record);
        match &event.prev_kv {
            Some(prev) => {
                out.push(1);
                let mut record = Vec::new();
                put_record(&mut record, prev);
                put_bytes(&mut out, &record);
            }
            None => out.push(0),
        }
    }
    out
}

pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, StoreError> {
    let mut reader = Reader::new(bytes);
    let count = reader.u32()? as usize;
    let mut events = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let kind = match reader.u8()? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => return Err(corrupt(&format!("unknown event kind {other}"))),
        };
        let key = reader.bytes()?;
        let kv = decode_record(key, reader.bytes()?)?;
        let prev_kv = match reader.u8()? {
            0 => None,
            1 => Some(decode_record(key, reader.bytes()?)?),
            other => return Err(corrupt(&format!("bad previous-value flag {other}"))),
        };
        events.push(Event { kind, kv, prev_kv });
    }
    Ok(events)
}

/// A lease as kept in the `leases` table: its TTL and, as of the last checkpoint, the time it
/// had left and when that was (unix milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub ttl_ms: u64,
    pub remaining_ms: u64,
    pub checkpoint_unix_ms: u64,
}

pub fn encode_lease(lease: &LeaseRecord) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&lease.ttl_ms.to_le_bytes());
    out[8..16].copy_from_slice(&lease.remaining_ms.to_le_bytes());
    out[16..].copy_from_slice(&lease.checkpoint_unix_ms.to_le_bytes());
    out
}

pub fn decode_lease(bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    let mut reader = Reader::new(bytes);
    Ok(LeaseRecord {
        ttl_ms: reader.u64()?,
        remaining_ms: reader.u64()?,
        checkpoint_unix_ms: reader.u64()?,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Storage(format!("corrupt record in the data file: {what}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(corrupt("record is shorter than its layout"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(buf))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(self.u64()? as i64)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, lease: Option<i64>) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: Revision(3),
            mod_revision: Revision(7),
            version: 2,
            lease: lease.map(LeaseId),
        }
    }

    #[test]
    fn events_round_trip() {
        let events = vec![
            Event {
                kind: EventKind::Put,
                kv: kv("a", "new", Some(9)),
                prev_kv: Some(kv("a", "old", None)),
            },
            Event {
                kind: EventKind::Delete,
                kv: kv("b", "", None),
                prev_kv: None,
            },
        ];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let encoded = encode_events(&[Event {
            kind: EventKind::Put,
            kv: kv("key", "value", None),
            prev_kv: None,
        }]);
        for cut in 0..encoded.len() {
            assert!(decode_events(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_record(b"k", &[1, 2, 3]).is_err());
        assert!(decode_lease(&[0; 23]).is_err());
    }
}
