//! Ends the leases this node granted or renewed at their deadline, instead of whenever etcd's
//! own expiry pass gets to them. etcd checks for expired leases every 500 ms, so on its own a
//! lease ends up to half a second after its deadline; the embedded store ends it within 20 ms.
//!
//! Another node may have renewed the lease since (a client's heartbeats can go to any node),
//! and etcd's `TimeToLive` answers in whole seconds only (truncated). So a node asks twice:
//!
//! * **early**, one second (less a slack) before its deadline: an answer of 0 means etcd's
//!   expiry is less than a second away, that is, nobody renewed the lease more than the slack
//!   after this node did; 1 or more means another node did (that node now tracks it);
//! * **at the deadline**: a renewal elsewhere since the early check would show as 1 or more
//!   (the TTL is at least two seconds); 0 means the lease is past its deadline everywhere, and
//!   this node revokes it: its keys are deleted with delete events, exactly as on expiry.
//!
//! Leases of one second are left to etcd (both checks would fall at the same moment). When
//! etcd does not answer a check, the lease is left to etcd too.

use super::CALL_TIMEOUT;
use crate::LeaseId;
use etcd_client as etcd;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use std::time::Instant;

/// A renewal elsewhere this soon after this node's may go unseen; the lease then ends at most
/// this much before that node's deadline (less than the clocks of two machines disagree).
const RENEWAL_SLACK: Duration = Duration::from_millis(20);
/// How often due checks are looked for.
const TICK: Duration = Duration::from_millis(10);
/// The shortest TTL tracked (see the module's comment).
const SHORTEST_TRACKED: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Early,
    AtDeadline,
}

struct Tracked {
    renewed_at: Instant,
    ttl: Duration,
    /// Bumped by every renewal on this node: a check planned before it no longer applies.
    renewal: u64,
}

impl Tracked {
    fn due(&self, stage: Stage) -> Instant {
        match stage {
            Stage::Early => self.renewed_at + self.ttl - Duration::from_secs(1) + RENEWAL_SLACK,
            Stage::AtDeadline => self.renewed_at + self.ttl,
        }
    }
}

#[derive(Default)]
struct State {
    leases: HashMap<i64, Tracked>,
    /// At most one entry per tracked lease (or one check in flight): renewals only move
    /// `renewed_at`, and an entry found stale when it comes due is planned again.
    queue: BinaryHeap<Reverse<(Instant, i64, Stage, u64)>>,
    next_renewal: u64,
}

impl State {
    /// Plans the early check of `id` from its latest renewal here.
    fn plan_early(&mut self, id: i64) {
        if let Some(tracked) = self.leases.get(&id) {
            let check = (tracked.due(Stage::Early), id, Stage::Early, tracked.renewal);
            self.queue.push(Reverse(check));
        }
    }
}

/// What a check found.
enum Verdict {
    Revoke,
    Done,
}

#[derive(Default)]
pub(super) struct Deadlines {
    state: Mutex<State>,
    closed: AtomicBool,
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node granted or renewed `id` at `now` (when etcd's answer came); etcd gave it `ttl`.
    pub(super) fn renewed(&self, id: LeaseId, ttl: Duration, now: Instant) {
        if ttl < SHORTEST_TRACKED {
            return;
        }
        let mut state = self.lock();
        state.next_renewal += 1;
        let tracked = Tracked {
            renewed_at: now,
            ttl,
            renewal: state.next_renewal,
        };
        if state.leases.insert(id.0, tracked).is_none() {
            state.plan_early(id.0);
        }
    }

    /// `id` was revoked or is gone.
    pub(super) fn forget(&self, id: LeaseId) {
        self.lock().leases.remove(&id.0);
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Takes the checks that are due, planning again those a renewal made stale.
    fn take_due(&self, now: Instant) -> Vec<(i64, Stage, u64)> {
        let mut state = self.lock();
        let mut due = Vec::new();
        while let Some(&Reverse((at, id, stage, renewal))) = state.queue.peek() {
            if at > now {
                break;
            }
            state.queue.pop();
            let Some(tracked) = state.leases.get(&id) else {
                continue;
            };
            if tracked.renewal == renewal {
                due.push((id, stage, renewal));
            } else {
                state.plan_early(id);
            }
        }
        due
    }

    /// Records what a check of `renewal` found: `remaining` is etcd's answer in whole seconds
    /// (negative: no such lease), `None` when etcd did not answer.
    fn checked(&self, id: i64, stage: Stage, renewal: u64, remaining: Option<i64>) -> Verdict {
        let mut state = self.lock();
        let Some(tracked) = state.leases.get(&id) else {
            return Verdict::Done;
        };
        if tracked.renewal != renewal {
            state.plan_early(id);
            return Verdict::Done;
        }
        match (remaining, stage) {
            (Some(0), Stage::Early) => {
                let next = (
                    tracked.due(Stage::AtDeadline),
                    id,
                    Stage::AtDeadline,
                    renewal,
                );
                state.queue.push(Reverse(next));
                Verdict::Done
            }
            (Some(0), Stage::AtDeadline) => Verdict::Revoke,
            // Renewed by another node, gone, or etcd did not answer: etcd decides.
            _ => {
                state.leases.remove(&id);
                Verdict::Done
            }
        }
    }

    /// The revocation of `renewal` is over: forget the lease, unless this node renewed it
    /// meanwhile (then it is checked again from that renewal).
    fn revoked(&self, id: i64, renewal: u64) {
        let mut state = self.lock();
        let Some(tracked) = state.leases.get(&id) else {
            return;
        };
        if tracked.renewal == renewal {
            state.leases.remove(&id);
        } else {
            state.plan_early(id);
        }
    }
}

/// Runs the checks until the store is closed or dropped.
pub(super) fn spawn_reaper(deadlines: Weak<Deadlines>, client: Arc<etcd::Client>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(deadlines) = deadlines.upgrade() else {
                return;
            };
            if deadlines.closed.load(Ordering::Acquire) {
                return;
            }
            for (id, stage, renewal) in deadlines.take_due(crate::clock::monotonic_now()) {
                tokio::spawn(check(deadlines.clone(), client.clone(), id, stage, renewal));
            }
        }
    });
}

async fn check(
    deadlines: Arc<Deadlines>,
    client: Arc<etcd::Client>,
    id: i64,
    stage: Stage,
    renewal: u64,
) {
    let mut lease = client.lease_client();
    let remaining = tokio::time::timeout(CALL_TIMEOUT, lease.time_to_live(id, None))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|answer| answer.ttl());
    if let Verdict::Revoke = deadlines.checked(id, stage, renewal, remaining) {
        if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, lease.revoke(id)).await {
            metrics::counter!("berth_store_lease_expirations_total").increment(1);
        }
        deadlines.revoked(id, renewal);
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a starting instant; the tests move time by hand from there"
)]
mod tests {
    use super::*;

    fn only_due(deadlines: &Deadlines, at: Instant) -> Option<(i64, Stage, u64)> {
        let due = deadlines.take_due(at);
        assert!(due.len() <= 1, "{due:?}");
        due.into_iter().next()
    }

    #[test]
    fn a_lease_nobody_renews_is_checked_early_then_revoked_at_its_deadline() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        deadlines.renewed(LeaseId(7), Duration::from_secs(3), start);
        assert_eq!(
            only_due(&deadlines, start + Duration::from_millis(2000)),
            None
        );
        let early = start + Duration::from_millis(2020);
        let (id, stage, renewal) = only_due(&deadlines, early).unwrap();
        assert_eq!((id, stage), (7, Stage::Early));
        assert!(matches!(
            deadlines.checked(id, stage, renewal, Some(0)),
            Verdict::Done
        ));
        let deadline = start + Duration::from_secs(3);
        assert_eq!(
            only_due(&deadlines, deadline - Duration::from_millis(1)),
            None
        );
        let (id, stage, renewal) = only_due(&deadlines, deadline).unwrap();
        assert_eq!(stage, Stage::AtDeadline);
        assert!(matches!(
            deadlines.checked(id, stage, renewal, Some(0)),
            Verdict::Revoke
        ));
        deadlines.revoked(id, renewal);
        assert!(deadlines.lock().leases.is_empty());
    }

    #[test]
    fn a_lease_another_node_renewed_is_left_to_that_node() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        deadlines.renewed(LeaseId(7), Duration::from_secs(3), start);
        let (id, stage, renewal) = only_due(&deadlines, start + Duration::from_secs(3)).unwrap();
        assert!(matches!(
            deadlines.checked(id, stage, renewal, Some(1)),
            Verdict::Done
        ));
        assert!(deadlines.lock().leases.is_empty());
        assert_eq!(only_due(&deadlines, start + Duration::from_secs(60)), None);
    }

    #[test]
    fn renewals_here_move_the_checks_and_stale_checks_act_on_nothing() {
        let deadlines = Deadlines::default();
        let start = Instant::now();
        deadlines.renewed(LeaseId(7), Duration::from_secs(3), start);
        deadlines.renewed(
            LeaseId(7),
            Duration::from_secs(3),
            start + Duration::from_secs(1),
        );
        // The first renewal's early check is planned again from the second renewal.
        assert_eq!(
            only_due(&deadlines, start + Duration::from_millis(2020)),
            None
        );
        let (id, stage, renewal) =
            only_due(&deadlines, start + Duration::from_millis(3020)).unwrap();
        assert_eq!(stage, Stage::Early);
        // A renewal while the check is in flight: its answer no longer counts.
        let late = start + Duration::from_millis(3030);
        deadlines.renewed(LeaseId(7), Duration::from_secs(3), late);
        assert!(matches!(
            deadlines.checked(id, stage, renewal, Some(0)),
            Verdict::Done
        ));
        assert!(deadlines.lock().leases.contains_key(&7));
        assert!(only_due(&deadlines, start + Duration::from_secs(60)).is_some());
    }

    #[test]
    fn one_second_leases_are_left_to_etcd() {
        let deadlines = Deadlines::default();
        deadlines.renewed(LeaseId(7), Duration::from_secs(1), Instant::now());
        assert!(deadlines.lock().leases.is_empty());
    }
}
