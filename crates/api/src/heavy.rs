//! Caps on the requests that hold server resources for long: open event streams, waiting
//! blocking queries, catalog imports in progress. Past a cap a request is answered 503 with
//! `Retry-After`, naming the setting, so one client cannot take what every other needs.

use crate::error::{ApiError, ApiResult};
use crate::metrics::InFlight;
use axum::http::StatusCode;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many of each at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeavyLimits {
    pub event_streams: usize,
    pub blocking_queries: usize,
    pub imports: usize,
}

impl Default for HeavyLimits {
    fn default() -> Self {
        HeavyLimits {
            event_streams: 10_000,
            blocking_queries: 10_000,
            imports: 2,
        }
    }
}

/// What a heavy request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Heavy {
    EventStream,
    BlockingQuery,
    Import,
}

impl Heavy {
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Heavy::EventStream => (
                "event streams open",
                "http.max_event_streams",
                "berth_http_event_streams",
            ),
            Heavy::BlockingQuery => (
                "blocking queries waiting",
                "http.max_blocking_queries",
                "berth_http_blocking_queries",
            ),
            Heavy::Import => (
                "catalog imports running",
                "http.max_concurrent_imports",
                "berth_http_imports",
            ),
        }
    }
}

/// The caps, shared by every request.
pub(crate) struct HeavySlots {
    limits: HeavyLimits,
    event_streams: Arc<Semaphore>,
    blocking_queries: Arc<Semaphore>,
    imports: Arc<Semaphore>,
}

/// One heavy request's place, held for as long as it lasts (its gauge counts it).
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _open: InFlight,
}

impl HeavySlots {
    pub(crate) fn new(limits: HeavyLimits) -> Self {
        HeavySlots {
            limits,
            event_streams: Arc::new(Semaphore::new(limits.event_streams)),
            blocking_queries: Arc::new(Semaphore::new(limits.blocking_queries)),
            imports: Arc::new(Semaphore::new(limits.imports)),
        }
    }

    /// A place for one more, or 503 naming the cap.
    pub(crate) fn take(&self, heavy: Heavy) -> ApiResult<Slot> {
        let (semaphore, limit) = match heavy {
            Heavy::EventStream => (&self.event_streams, self.limits.event_streams),
            Heavy::BlockingQuery => (&self.blocking_queries, self.limits.blocking_queries),
            Heavy::Import => (&self.imports, self.limits.imports),
        };
        let (what, setting, gauge) = heavy.describe();
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                _permit: permit,
                _open: InFlight::new(metrics::gauge!(gauge)),
            }),
            Err(_) => {
                metrics::counter!("berth_http_heavy_refusals_total", "cap" => setting).increment(1);
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("too many {what} (limit: {setting} = {limit}); retry later"),
                ))
            }
        }
    }
}
