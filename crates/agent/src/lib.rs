//! `berth agent`: registers every published port of the containers a Docker engine runs, and
//! removes them when the containers stop. It follows the engine's event stream and also
//! resyncs in full on an interval, reconciling both ways (what runs and is missing is put,
//! what this host put earlier and no longer runs is removed), and never touches records of
//! another host.
//!
//! Three tasks: the event follower and the resync timer ask the Docker worker for work; the
//! worker inspects containers one at a time (so what it reports for a container is always in
//! order) and hands what it saw to the reconciler, which alone talks to the target. A target
//! that cannot be reached loses nothing: the reconciler keeps what Docker runs, retries with
//! backoff, and resyncs in full when the target answers again.

pub mod container;
mod docker;
mod reconcile;
pub mod targets;

pub use container::Placement;
pub use docker::DockerError;
pub use reconcile::Mode;

use bollard::Docker;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use targets::Target;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How the agent runs, beyond where it registers.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub placement: Placement,
    pub mode: Mode,
    /// How often the full resync runs.
    pub resync: Duration,
    /// Leave the records in place on shutdown.
    pub keep_on_exit: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{0}")]
    Target(#[from] targets::TargetError),
}

/// Connects to the Docker engine at `url`, agreeing on the API version.
pub async fn connect_docker(url: &str) -> Result<Docker, AgentError> {
    Ok(docker::connect(url).await?)
}

/// What the Docker worker is asked to do.
#[derive(Debug)]
enum Work {
    /// Look at one container again.
    Container(String),
    /// List every running container and report them all.
    Resync,
}

/// What the Docker worker saw.
#[derive(Debug)]
enum Seen {
    /// One container as it is now (`None`: it no longer exists).
    Container(String, Option<Arc<container::ContainerFacts>>),
    /// Every running container, as of one resync, and the ones the engine could not
    /// describe (kept as they were, not renewed).
    Everything(
        BTreeMap<String, Arc<container::ContainerFacts>>,
        BTreeSet<String>,
        Duration,
    ),
    /// A container the engine could not describe: skipped and reported; its records are
    /// left as they are and no longer renewed until it is described again.
    Undescribed(String),
}

/// Wall time, as the engine's event filter (`since`) takes it: the agent's one clock read.
#[allow(
    clippy::disallowed_methods,
    reason = "Docker's `since` filter is wall time"
)]
fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Runs until `shutdown`, then removes what it registered (unless `keep_on_exit`).
pub async fn run(
    config: AgentConfig,
    docker: Docker,
    target: Target,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    tracing::info!(
        target = %target.describe(),
        host = %config.placement.host_id,
        advertise = %config.placement.advertise,
        mode = ?config.mode,
        "agent started"
    );
    let (work_sender, work_receiver) = mpsc::unbounded_channel();
    let (seen_sender, seen_receiver) = mpsc::channel(1024);
    let tasks = CancellationToken::new();
    // Events first, from now: whatever happens from here on is either in the first resync or
    // replayed by the stream.
    let follower = tokio::spawn(follow_events(
        docker.clone(),
        now_nanos(),
        work_sender.clone(),
        tasks.clone(),
    ));
    let worker = tokio::spawn(docker_worker(docker, work_receiver, seen_sender));
    let _ = work_sender.send(Work::Resync);
    let ticker = tokio::spawn(resync_timer(config.resync, work_sender, tasks.clone()));
    let result = reconcile::run(&config, &target, seen_receiver, shutdown).await;
    tasks.cancel();
    follower.abort();
    ticker.abort();
    worker.abort();
    result
}

async fn resync_timer(every: Duration, work: mpsc::UnboundedSender<Work>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first resync is asked for at start
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        if work.send(Work::Resync).is_err() {
            return;
        }
    }
}

/// Follows the engine's container events; after a broken stream it reconnects from the last
/// event seen (the engine replays what was missed) and asks for a resync.
async fn follow_events(
    docker: Docker,
    mut since: i64,
    work: mpsc::UnboundedSender<Work>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        let mut events = std::pin::pin!(docker::events(&docker, since));
        loop {
            let item = tokio::select! {
                item = events.next() => item,
                () = stop.cancelled() => return,
            };
            match item {
                Some(Ok(event)) => {
                    backoff.reset();
                    metrics::counter!("berth_agent_docker_events_total").increment(1);
                    tracing::debug!(container = %event.id, action = %event.action, "docker event");
                    since = since.max(event.time_nano);
                    if work.send(Work::Container(event.id)).is_err() {
                        return;
                    }
                }
                Some(Err(error)) => {
                    metrics::counter!("berth_agent_docker_errors_total").increment(1);
                    tracing::warn!(%error, "the Docker event stream broke; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("the Docker event stream ended; reconnecting");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stop.cancelled() => return,
        }
        if work.send(Work::Resync).is_err() {
            return;
        }
    }
}

/// Inspects containers one request at a time, so what it reports about a container is in
/// the order things happened. Requests queued meanwhile are taken together: a resync among
/// them covers the rest, and a container asked for twice is inspected once.
async fn docker_worker(
    docker: Docker,
    mut work: mpsc::UnboundedReceiver<Work>,
    seen: mpsc::Sender<Seen>,
) {
    let mut backoff = Backoff::default();
    while let Some(first) = work.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = work.try_recv() {
            batch.push(more);
        }
        let result = if batch.iter().any(|w| matches!(w, Work::Resync)) {
            everything(&docker)
                .await
                .map(|(all, undescribed, took)| vec![Seen::Everything(all, undescribed, took)])
        } else {
            let mut ids: Vec<String> = Vec::new();
            for item in batch {
                if let Work::Container(id) = item
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
            let mut reports = Vec::new();
            for id in ids {
                // One container the engine cannot describe never holds up the others.
                match docker::inspect(&docker, &id).await {
                    Ok(facts) => reports.push(Seen::Container(id, facts.map(Arc::new))),
                    Err(error) => {
                        undescribed(&id, &error);
                        reports.push(Seen::Undescribed(id));
                    }
                }
            }
            Ok(reports)
        };
        match result {
            Ok(reports) => {
                backoff.reset();
                for report in reports {
                    if seen.send(report).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                // Whatever was asked, a resync answers it: retry one until the engine is back.
                metrics::counter!("berth_agent_docker_errors_total").increment(1);
                tracing::warn!(%error, "Docker request failed; resyncing after a pause");
                // Work that arrives meanwhile stays queued: it is handled once this is done.
                loop {
                    tokio::time::sleep(backoff.next_delay()).await;
                    match everything(&docker).await {
                        Ok((all, undescribed, took)) => {
                            backoff.reset();
                            if seen
                                .send(Seen::Everything(all, undescribed, took))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            break;
                        }
                        Err(error) => {
                            metrics::counter!("berth_agent_docker_errors_total").increment(1);
                            tracing::warn!(%error, "Docker resync failed; retrying");
                        }
                    }
                }
            }
        }
    }
}

/// A container the engine could not describe: reported, and counted.
fn undescribed(id: &str, error: &DockerError) {
    metrics::counter!("berth_agent_inspect_failures_total").increment(1);
    tracing::warn!(container = %id, %error, "the engine could not describe a container; skipped");
}

type Everything = (
    BTreeMap<String, Arc<container::ContainerFacts>>,
    BTreeSet<String>,
    Duration,
);

/// Every running container, inspected; the ones whose inspection failed are named apart.
/// Only a failed listing fails the whole.
async fn everything(docker: &Docker) -> Result<Everything, DockerError> {
    let started = tokio::time::Instant::now();
    let mut all = BTreeMap::new();
    let mut failed = BTreeSet::new();
    for id in docker::running_ids(docker).await? {
        match docker::inspect(docker, &id).await {
            Ok(Some(facts)) => {
                all.insert(id, Arc::new(facts));
            }
            Ok(None) => {}
            Err(error) => {
                undescribed(&id, &error);
                failed.insert(id);
            }
        }
    }
    Ok((all, failed, started.elapsed()))
}

/// Exponential backoff with jitter, from 100 ms to 10 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(10));
        let jitter = rand::random_range(0.8..1.2);
        delay.mul_f64(jitter)
    }

    pub(crate) fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Time is paused: the test moves it, nothing sleeps for real.
    #[tokio::test(start_paused = true)]
    async fn the_resync_timer_asks_once_per_period_until_stopped() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let timer = tokio::spawn(resync_timer(Duration::from_secs(30), sender, stop.clone()));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(
            receiver.try_recv().is_err(),
            "the first resync is the start's"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(matches!(receiver.try_recv(), Ok(Work::Resync)));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(matches!(receiver.try_recv(), Ok(Work::Resync)));
        assert!(receiver.try_recv().is_err(), "one per period");
        stop.cancel();
        timer.await.unwrap();
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
        assert!(delays[1] >= Duration::from_millis(160) && delays[1] <= Duration::from_millis(240));
        assert!(delays[9] >= Duration::from_secs(8) && delays[9] <= Duration::from_secs(12));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
    }
}
