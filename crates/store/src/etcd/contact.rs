//! Whether this node reaches an etcd quorum: a linearizable read once a second (it needs a
//! leader and a quorum to answer). While the last probe failed, writes, keepalives and status
//! checks fail at once instead of each waiting out its own timeout, so a client moves to another
//! node well before its TTL; reads from the views go on, and say how stale they may be.

use crate::StoreContact;
use std::sync::{Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often the quorum is probed while it answers.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often after a failure: loss is confirmed, and recovery noticed, sooner.
const PROBE_INTERVAL_WHILE_LOST: Duration = Duration::from_millis(250);
/// How long one probe may take; etcd without a leader answers only after its own timeout (7 s).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// A probe or call that only ran out of time (a loaded machine, an election) means a lost
/// quorum once nothing succeeded for this long; an error etcd or the connection gave (no
/// leader, refused) means it at once.
const LOST_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Contact {
    state: Mutex<State>,
    /// Moves each time the quorum is found lost: calls in flight then give up at once.
    losses: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    /// When a linearizable read last succeeded.
    last_success: Instant,
    /// Why the quorum is lost, until a probe succeeds.
    lost: Option<String>,
    /// A probe or call failed since the last success: probe often.
    suspect: bool,
}

impl Contact {
    pub(super) fn new() -> Contact {
        Contact {
            state: Mutex::new(State {
                last_success: Instant::now(),
                lost: None,
                suspect: false,
            }),
            losses: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Runs `call`, unless the quorum is found lost first: then the call is dropped (its outcome
    /// unknown, as after a timeout) and the caller answered at once.
    pub(super) async fn unless_lost<T>(
        &self,
        call: impl std::future::Future<Output = crate::Result<T>>,
    ) -> crate::Result<T> {
        let mut losses = self.losses.subscribe();
        tokio::select! {
            result = call => result,
            _ = losses.changed() => Err(crate::StoreError::Unavailable(
                self.refuse().unwrap_or_else(|| "etcd quorum lost".into()),
            )),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn succeeded(&self) {
        let mut state = self.state();
        state.suspect = false;
        if state.lost.take().is_some() {
            tracing::info!("etcd quorum reached again; taking writes");
            metrics::gauge!("berth_store_quorum").set(1.0);
        }
        state.last_success = Instant::now();
    }

    /// A failure; `certain` when etcd or the connection said so, not when time ran out.
    pub(super) fn failed(&self, why: &str, certain: bool) {
        let mut state = self.state();
        state.suspect = true;
        if !certain && state.last_success.elapsed() < LOST_AFTER {
            return;
        }
        let newly = state.lost.is_none();
        state.lost = Some(why.to_string());
        drop(state);
        if newly {
            tracing::warn!(
                error = why,
                "no etcd quorum; refusing writes until it answers"
            );
            metrics::gauge!("berth_store_quorum").set(0.0);
            self.losses.send_modify(|count| *count += 1);
        }
    }

    /// The error a write gets while the quorum is lost.
    pub(super) fn refuse(&self) -> Option<String> {
        let state = self.state();
        state.lost.as_ref().map(|why| {
            format!(
                "this node has had no answer from an etcd quorum for {} ms ({why}); another berth node may take the request",
                state.last_success.elapsed().as_millis()
            )
        })
    }

    pub(super) fn report(&self) -> StoreContact {
        let state = self.state();
        StoreContact {
            last_contact: Some(state.last_success.elapsed()),
            lost: state.lost.clone(),
        }
    }
}

/// Probes the quorum until the store is dropped or closed. `probe` is one linearizable read.
pub(super) async fn probe_now_and_then<F, Fut>(contact: Weak<Contact>, probe: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Result<(), (String, bool)>>>,
{
    metrics::gauge!("berth_store_quorum").set(1.0);
    loop {
        let Some(current) = contact.upgrade() else {
            return;
        };
        let pause = if current.state().suspect {
            PROBE_INTERVAL_WHILE_LOST
        } else {
            PROBE_INTERVAL
        };
        drop(current);
        tokio::time::sleep(pause).await;
        // `None`: the store is gone.
        let Some(outcome) = probe().await else {
            return;
        };
        let Some(current) = contact.upgrade() else {
            return;
        };
        match outcome {
            Ok(()) => current.succeeded(),
            Err((why, certain)) => current.failed(&why, certain),
        }
    }
}
