//! The reconciler: the only part that talks to the target. It keeps what Docker runs
//! (`desired`, per container) and what it believes the target holds (`applied`, per target
//! key), applies each container's change as it is seen, renews records, and on every resync,
//! or after the target could not be reached, compares with what the target really holds for
//! this host and fixes both ways.

use crate::container::{ContainerFacts, Record, plan};
use crate::targets::{Target, TargetError};
use crate::{AgentConfig, AgentError, Backoff, Seen};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How records stay alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Records carry a TTL and are renewed every TTL/3: when the host or the agent dies, they
    /// expire by themselves.
    Ttl,
    /// Records do not expire (on berth: the longest TTL, renewed at every resync); resync
    /// removes what stopped.
    Prune,
}

struct Applied {
    record: Record,
    fingerprint: String,
}

struct Reconciler<'a> {
    config: &'a AgentConfig,
    target: &'a Target,
    desired: BTreeMap<String, Vec<Record>>,
    applied: BTreeMap<String, Applied>,
    /// The target could not be reached: a full sync is due at `retry_at`.
    dirty: bool,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The last problems logged per container, so they are logged when they change.
    problems: BTreeMap<String, Vec<String>>,
    /// Containers the engine could not describe lately: their records are left as they are
    /// (neither put nor removed) and not renewed, so in ttl mode they lapse unless the
    /// container is seen running again.
    unconfirmed: BTreeSet<String>,
}

pub(crate) async fn run(
    config: &AgentConfig,
    target: &Target,
    mut seen: mpsc::Receiver<Seen>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let mut reconciler = Reconciler {
        config,
        target,
        desired: BTreeMap::new(),
        applied: BTreeMap::new(),
        dirty: false,
        retry_at: None,
        backoff: Backoff::default(),
        problems: BTreeMap::new(),
        unconfirmed: BTreeSet::new(),
    };
    let renew_every = match config.mode {
        Mode::Ttl => config.placement.ttl / 3,
        Mode::Prune => config.resync,
    };
    let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let retry_at = reconciler.retry_at;
        let retry = async move {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            item = seen.recv() => match item {
                Some(Seen::Container(id, facts)) => reconciler.container(id, facts).await,
                Some(Seen::Everything(all, undescribed, took)) => {
                    reconciler.everything(all, undescribed, took).await
                }
                Some(Seen::Undescribed(id)) => {
                    reconciler.unconfirmed.insert(id);
                }
                None => break,
            },
            () = retry => reconciler.full_sync().await,
            _ = renew.tick() => reconciler.renew().await,
        }
    }
    if config.keep_on_exit {
        tracing::info!(
            records = reconciler.applied.len(),
            "leaving the records in place"
        );
    } else {
        reconciler.clear().await;
    }
    Ok(())
}

fn log_put(record: &Record, replaced: bool) {
    metrics::counter!("berth_agent_registrations_total").increment(1);
    let spec = &record.spec;
    tracing::info!(
        service = %spec.service(),
        id = %spec.id(),
        address = %spec.address().with_port(spec.port()),
        container = %record.container.name,
        "{}",
        if replaced { "updated" } else { "registered" }
    );
}

fn log_removed(key: &str, why: &str) {
    metrics::counter!("berth_agent_deregistrations_total").increment(1);
    tracing::info!(record = %key, reason = why, "deregistered");
}

impl Reconciler<'_> {
    fn plan(&mut self, id: &str, facts: Option<&Arc<ContainerFacts>>) -> Vec<Record> {
        let Some(facts) = facts else {
            self.problems.remove(id);
            return Vec::new();
        };
        let plan = plan(facts, &self.config.placement);
        if plan.problems.is_empty() {
            self.problems.remove(id);
        } else if self.problems.get(id) != Some(&plan.problems) {
            for problem in &plan.problems {
                tracing::warn!(problem = %problem, "not registered");
            }
            self.problems.insert(id.to_string(), plan.problems);
        }
        plan.records
    }

    fn unreachable(&mut self, error: TargetError) {
        metrics::counter!("berth_agent_target_errors_total").increment(1);
        if !self.dirty {
            tracing::warn!(%error, "the target cannot be reached; retrying, then resyncing");
        }
        self.dirty = true;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    fn refused(&self, what: &str, error: TargetError) {
        metrics::counter!("berth_agent_target_errors_total").increment(1);
        tracing::warn!(%error, record = what, "the target refused the record");
    }

    fn gauges(&self) {
        metrics::gauge!("berth_agent_records").set(self.applied.len() as f64);
        metrics::gauge!("berth_agent_containers").set(self.desired.len() as f64);
    }

    /// One container seen again: put what it should have, remove what it no longer has.
    async fn container(&mut self, id: String, facts: Option<Arc<ContainerFacts>>) {
        self.unconfirmed.remove(&id);
        let records = self.plan(&id, facts.as_ref());
        if records.is_empty() {
            self.desired.remove(&id);
        } else {
            self.desired.insert(id.clone(), records.clone());
        }
        self.gauges();
        if self.dirty {
            return; // the pending full sync will apply it
        }
        let wanted: BTreeMap<String, &Record> =
            records.iter().map(|r| (self.target.key_of(r), r)).collect();
        for (key, record) in &wanted {
            let fingerprint = self.target.fingerprint(record);
            let previous = self.applied.get(key).map(|a| a.fingerprint == fingerprint);
            if previous == Some(true) {
                continue;
            }
            match self.target.put(record).await {
                Ok(()) => {
                    log_put(record, previous.is_some());
                    self.applied.insert(
                        key.clone(),
                        Applied {
                            record: (*record).clone(),
                            fingerprint,
                        },
                    );
                }
                Err(error @ TargetError::Unreachable(_)) => return self.unreachable(error),
                Err(error) => self.refused(key, error),
            }
        }
        let stale: Vec<String> = self
            .applied
            .iter()
            .filter(|(key, applied)| {
                applied.record.container.id == id && !wanted.contains_key(*key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            match self.target.remove(&key).await {
                Ok(()) => {
                    self.applied.remove(&key);
                    log_removed(&key, "the container stopped serving it");
                }
                Err(error @ TargetError::Unreachable(_)) => return self.unreachable(error),
                Err(error) => self.refused(&key, error),
            }
        }
        self.gauges();
    }

    /// A resync: every running container, and the ones the engine could not describe
    /// (whose records stay as they were).
    async fn everything(
        &mut self,
        all: BTreeMap<String, Arc<ContainerFacts>>,
        undescribed: BTreeSet<String>,
        took: Duration,
    ) {
        let started = Instant::now();
        let mut desired = BTreeMap::new();
        for (id, facts) in &all {
            let records = self.plan(id, Some(facts));
            if !records.is_empty() {
                desired.insert(id.clone(), records);
            }
        }
        for id in &undescribed {
            if let Some(records) = self.desired.remove(id) {
                desired.insert(id.clone(), records);
            }
        }
        self.desired = desired;
        self.unconfirmed = undescribed;
        self.problems
            .retain(|id, _| all.contains_key(id) || self.unconfirmed.contains(id));
        self.full_sync().await;
        let total = took + started.elapsed();
        metrics::histogram!("berth_agent_resync_duration_seconds").record(total.as_secs_f64());
        tracing::debug!(containers = all.len(), records = self.applied.len(), took = ?total, "resynced");
    }

    /// Compares what runs with what the target holds for this host, and fixes both ways.
    async fn full_sync(&mut self) {
        self.retry_at = None;
        let owned = match self.target.owned().await {
            Ok(owned) => owned,
            Err(error) => return self.unreachable(error),
        };
        let wanted: BTreeMap<String, Record> = self
            .desired
            .values()
            .flatten()
            .map(|r| (self.target.key_of(r), r.clone()))
            .collect();
        let mut applied = BTreeMap::new();
        let mut outcome = Ok(());
        for (key, record) in wanted.iter() {
            let fingerprint = self.target.fingerprint(record);
            let present = owned.get(key);
            if self.unconfirmed.contains(&record.container.id) {
                // Left as it is: neither written again nor removed while undescribed.
                if present.is_some() {
                    applied.insert(
                        key.clone(),
                        Applied {
                            record: record.clone(),
                            fingerprint,
                        },
                    );
                }
                continue;
            }
            if present != Some(&fingerprint) {
                match self.target.put(record).await {
                    Ok(()) => log_put(record, present.is_some()),
                    Err(error @ TargetError::Unreachable(_)) => {
                        outcome = Err(error);
                        break;
                    }
                    Err(error) => {
                        self.refused(key, error);
                        continue;
                    }
                }
            }
            applied.insert(
                key.clone(),
                Applied {
                    record: record.clone(),
                    fingerprint,
                },
            );
        }
        if outcome.is_ok() {
            for key in owned.keys().filter(|key| !wanted.contains_key(*key)) {
                match self.target.remove(key).await {
                    Ok(()) => log_removed(key, "no running container has it"),
                    Err(error @ TargetError::Unreachable(_)) => {
                        outcome = Err(error);
                        break;
                    }
                    Err(error) => self.refused(key, error),
                }
            }
        }
        self.applied = applied;
        self.gauges();
        match outcome {
            Ok(()) => {
                if self.dirty {
                    tracing::info!(target = %self.target.describe(), "the target answers again; in sync");
                }
                self.dirty = false;
                self.backoff.reset();
            }
            Err(error) => self.unreachable(error),
        }
    }

    async fn renew(&mut self) {
        if self.dirty || self.applied.is_empty() {
            return;
        }
        // Only containers confirmed running: a record of one the engine could not describe
        // is not kept alive on faith.
        let records: Vec<(&String, &Record)> = self
            .applied
            .iter()
            .filter(|(_, a)| !self.unconfirmed.contains(&a.record.container.id))
            .map(|(key, a)| (key, &a.record))
            .collect();
        if records.is_empty() {
            return;
        }
        let count = records.len();
        let lost = match self.target.renew(&records).await {
            Ok(lost) => lost,
            Err(error @ TargetError::Unreachable(_)) => return self.unreachable(error),
            Err(error) => return self.refused("renewal", error),
        };
        metrics::counter!("berth_agent_renewals_total").increment(count as u64);
        for key in lost {
            let Some(record) = self.applied.get(&key).map(|a| a.record.clone()) else {
                continue;
            };
            tracing::info!(record = %key, "the target lost the record; putting it again");
            match self.target.put(&record).await {
                Ok(()) => log_put(&record, false),
                Err(error @ TargetError::Unreachable(_)) => return self.unreachable(error),
                Err(error) => self.refused(&key, error),
            }
        }
    }

    /// On shutdown: removes every record this host owns.
    async fn clear(&mut self) {
        let keys: Vec<String> = match self.target.owned().await {
            Ok(owned) => owned.into_keys().collect(),
            Err(_) => self.applied.keys().cloned().collect(),
        };
        for key in keys {
            match self.target.remove(&key).await {
                Ok(()) => log_removed(&key, "the agent is stopping"),
                Err(error) => tracing::warn!(%error, record = %key, "could not deregister"),
            }
        }
    }
}
