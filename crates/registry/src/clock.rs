//! The registry's wall clock: a trait so tests can fix the time the registry stamps records with.

use berth_domain::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

pub trait WallClock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    #[allow(clippy::disallowed_methods, reason = "this is the registry's clock")]
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    }
}
