//! Where the embedded store reads the time for lease deadlines: the monotonic clock in
//! production, a hand-advanced one in tests of expiry (so no test sleeps through a TTL).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    #[allow(clippy::disallowed_methods, reason = "this is the store's clock")]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The monotonic clock's now, for code that is not given a [`Clock`] (the etcd backend's
/// lease deadlines, whose tests pass instants explicitly).
#[cfg(feature = "etcd")]
pub(crate) fn monotonic_now() -> Instant {
    MonotonicClock.now()
}

/// Wall time in milliseconds since the Unix epoch: when a lease checkpoint was written, so a
/// restart can tell how many leases were overdue.
#[allow(clippy::disallowed_methods, reason = "this is the store's clock")]
pub(crate) fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    start: Instant,
    elapsed: Arc<Mutex<Duration>>,
}

impl Default for ManualClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the manual clock starts at the real now"
    )]
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            elapsed: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}
