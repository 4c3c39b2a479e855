//! Stored records the registry cannot read. A record today's rules refuse is left out of the
//! views (it is not served), and every such record is counted in a metric and reported by
//! `/health`, never silently skipped.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct RecordFaults {
    count: AtomicU64,
    last: Mutex<Option<String>>,
    counter: metrics::Counter,
}

/// How many stored records did not decode since start, and why the last one did not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UndecodableRecords {
    pub count: u64,
    pub last: Option<String>,
}

impl RecordFaults {
    pub fn new() -> Self {
        RecordFaults {
            count: AtomicU64::new(0),
            last: Mutex::new(None),
            counter: metrics::counter!("berth_registry_undecodable_records_total"),
        }
    }

    pub fn record(&self, error: String) {
        tracing::warn!(%error, "a stored record does not decode; it is left out");
        self.count.fetch_add(1, Ordering::Relaxed);
        self.counter.increment(1);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub fn report(&self) -> UndecodableRecords {
        UndecodableRecords {
            count: self.count.load(Ordering::Relaxed),
            last: self.last.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
