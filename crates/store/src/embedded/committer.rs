//! The embedded store's single writer: a thread that takes every write waiting in its queue,
//! applies them in order inside one redb transaction, commits once (one fsync for the whole
//! batch), and only then answers each writer and publishes the events. Throughput therefore
//! grows with the number of concurrent writers instead of being one fsync per write.

use super::codec::{self, LeaseRecord};
use super::watch::RevisionBatch;
use super::{
    KV, LEASES, LOG, META, META_COMPACT, META_NEXT_LEASE, META_REVISION, Shared, prefix_end,
    storage,
};
use crate::clock::unix_millis_now;
use crate::{
    Event, EventKind, KeyRange, KeyValue, LeaseGrant, LeaseId, Result, Revision, StoreError, Txn,
    TxnOp, TxnResponse,
};
use bytes::Bytes;
use redb::{ReadableTable, Table};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// At most this many writes share one commit, so one commit's latency stays bounded.
const MAX_BATCH: usize = 4096;

pub enum WriteOp {
    Txn(Txn),
    Grant(Duration),
    Revoke(LeaseId),
    /// From the reaper: these leases were past their deadline when it looked.
    Expire(Vec<LeaseId>),
    Compact(Revision),
    /// Persist the time left on every lease renewed since the last checkpoint.
    Checkpoint,
    /// Checkpoint, answer, and stop taking writes.
    Shutdown,
}

pub enum WriteOutcome {
    Txn(TxnResponse),
    Grant(LeaseGrant),
    Done,
}

pub struct WriteRequest {
    pub op: WriteOp,
    pub reply: Option<oneshot::Sender<Result<WriteOutcome>>>,
}

/// The sizes of the revisions in the on-disk log, oldest first, to bound the history by
/// bytes as well as by revisions.
pub struct HistorySize {
    revisions: VecDeque<(Revision, u64)>,
    bytes: u64,
    /// 0: no limit.
    budget: u64,
}

impl HistorySize {
    pub fn new(budget: u64) -> Self {
        HistorySize {
            revisions: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    pub fn push(&mut self, revision: Revision, bytes: u64) {
        self.revisions.push_back((revision, bytes));
        self.bytes += bytes;
    }

    /// Forgets the revisions a compaction to `revision` removed (those before it).
    fn compacted(&mut self, revision: Revision) {
        while let Some(&(oldest, bytes)) = self.revisions.front() {
            if oldest >= revision {
                break;
            }
            self.revisions.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Where to compact to when the history is over its budget: the oldest revision to keep
    /// such that at most three quarters of the budget remain (the newest revision is always
    /// kept). `None` within the budget.
    fn compaction_target(&self) -> Option<Revision> {
        if self.budget == 0 || self.bytes <= self.budget {
            return None;
        }
        let keep = self.budget / 4 * 3;
        let mut remaining = self.bytes;
        for (index, &(revision, bytes)) in self.revisions.iter().enumerate() {
            if remaining <= keep || index + 1 == self.revisions.len() {
                return Some(revision);
            }
            remaining -= bytes;
        }
        None
    }
}

/// What the writer owns between batches.
pub struct State {
    pub history: HistorySize,
    pub revision: Revision,
    pub compact_revision: Revision,
    /// The next lease id to hand out...
    pub next_lease_id: i64,
    /// ...and the end of the block of ids whose reservation is on disk. A grant is answered
    /// without an fsync; its id is never handed out again after a crash because a restart
    /// continues after the last durable reservation.
    pub lease_ids_reserved: i64,
}

/// Lease ids are reserved on disk this many at a time.
const LEASE_ID_BLOCK: i64 = 1024;

pub fn spawn(
    shared: Arc<Shared>,
    receiver: mpsc::Receiver<WriteRequest>,
    state: State,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("berth-store-writer".into())
        .spawn(move || {
            // A writer that stopped would leave every write answering `Closed` and nothing
            // expiring: the store fails instead, visibly (`/health`, and berth exits).
            let writer = std::panic::AssertUnwindSafe(|| run(shared.clone(), receiver, state));
            if let Err(panic) = std::panic::catch_unwind(writer) {
                let detail = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                shared.fail(&format!("the store's writer stopped: {detail}"));
                tracing::error!(
                    detail,
                    "the store's writer stopped; the store takes no more writes"
                );
                shared.hub.close();
            }
        })
}

fn run(shared: Arc<Shared>, receiver: mpsc::Receiver<WriteRequest>, mut state: State) {
    // Whatever queued up while the previous commit was syncing goes into the next one.
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        drain(&receiver, &mut batch);
        let shutting_down = batch.iter().any(|r| matches!(r.op, WriteOp::Shutdown));
        commit_batch(&shared, &mut state, batch);
        // A history over its byte budget is compacted at once, by the writer itself, so no
        // burst of large writes can fill the disk between two timed compactions.
        if let Some(target) = state.history.compaction_target()
            && target > state.compact_revision
        {
            let compaction = WriteRequest {
                op: WriteOp::Compact(target),
                reply: None,
            };
            commit_batch(&shared, &mut state, vec![compaction]);
            metrics::counter!("berth_store_history_byte_compactions_total").increment(1);
        }
        if shutting_down {
            break;
        }
    }
    // Anything still queued is answered by the dropped reply senders: `Closed`.
    drop(receiver);
    shared.hub.close();
}

/// Moves whatever is queued into the batch, up to its limit.
fn drain(receiver: &mpsc::Receiver<WriteRequest>, batch: &mut Vec<WriteRequest>) {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// A failure of one request (it changed nothing) or of the whole commit.
enum Failure {
    Request(StoreError),
    Fatal(StoreError),
}

impl From<redb::StorageError> for Failure {
    fn from(error: redb::StorageError) -> Self {
        Failure::Fatal(storage(error))
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Fatal(error)
    }
}

/// A change to the in-memory lease table, applied once the commit is durable.
enum LeaseChange {
    Grant(LeaseId, Duration),
    Remove(LeaseId),
    Attach(LeaseId, Bytes),
    Detach(LeaseId, Bytes),
}

struct Batch<'t> {
    shared: &'t Shared,
    now: Instant,
    kv: Table<'t, &'static [u8], &'static [u8]>,
    log: Table<'t, u64, &'static [u8]>,
    leases: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    revision: Revision,
    compact_revision: Revision,
    next_lease_id: i64,
    lease_ids_reserved: i64,
    lease_changes: Vec<LeaseChange>,
    granted: HashSet<LeaseId>,
    removed: HashSet<LeaseId>,
    published: Vec<RevisionBatch>,
    /// The revisions this batch added to the log, and their sizes.
    logged: Vec<(Revision, u64)>,
    expired: usize,
    /// Something was written: without it the transaction is dropped instead of committed, so
    /// an idle checkpoint costs nothing.
    dirty: bool,
    /// Something was written that a writer waits to have on disk (a revision, a revoke, a
    /// compaction, an id reservation). Batches of only grants and checkpoints commit without
    /// an fsync; the next durable commit carries them to disk.
    durable: bool,
}

/// What a batch leaves behind once its tables are closed.
struct Applied {
    lease_changes: Vec<LeaseChange>,
    published: Vec<RevisionBatch>,
    logged: Vec<(Revision, u64)>,
    expired: usize,
    dirty: bool,
    durable: bool,
}

fn commit_batch(shared: &Shared, state: &mut State, batch: Vec<WriteRequest>) {
    let started = tokio::time::Instant::now();
    let size = batch.len();
    let (replies, outcome) = apply_and_commit(shared, state, batch);
    match outcome {
        Ok(committed) => {
            {
                let mut leases = shared.leases();
                let now = shared.clock.now();
                for change in committed.lease_changes {
                    match change {
                        LeaseChange::Grant(id, ttl) => leases.insert(id, ttl, now),
                        LeaseChange::Remove(id) => {
                            leases.remove(id);
                        }
                        LeaseChange::Attach(id, key) => leases.attach(id, key),
                        LeaseChange::Detach(id, key) => leases.detach(id, &key),
                    }
                }
                metrics::gauge!("berth_store_leases").set(leases.len() as f64);
            }
            shared.hub.publish(committed.published, state.revision);
            if committed.synced {
                metrics::histogram!("berth_store_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("berth_store_commit_batch_size").record(size as f64);
                metrics::counter!("berth_store_commits_total").increment(1);
                metrics::gauge!("berth_store_revision").set(state.revision.0 as f64);
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.writes.fetch_add(size as u64, Ordering::Relaxed);
            }
            if committed.expired > 0 {
                metrics::counter!("berth_store_lease_expirations_total")
                    .increment(committed.expired as u64);
            }
            for (reply, outcome) in replies.into_iter().zip(committed.outcomes) {
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
        }
        Err((error, expiring)) => {
            metrics::counter!("berth_store_commit_failures_total").increment(1);
            // redb refuses every write after a failed one until the file is reopened: the
            // store is failed from here on, and says so (writes, `status`, the owner).
            if shared.fail(&error.to_string()) {
                tracing::error!(%error, writes = size, "store commit failed; the batch was not applied and the store takes no more writes");
            }
            let retry_at = shared.clock.now() + Duration::from_millis(100);
            let mut leases = shared.leases();
            for id in expiring {
                leases.requeue(id, retry_at);
            }
            drop(leases);
            let answer = shared.failed_error().unwrap_or(error);
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err(answer.clone()));
            }
        }
    }
}

/// What a successful batch leaves to do once it is durable.
struct Committed {
    outcomes: Vec<Result<WriteOutcome>>,
    lease_changes: Vec<LeaseChange>,
    published: Vec<RevisionBatch>,
    expired: usize,
    /// The commit was durable (one fsync).
    synced: bool,
}
type Replies = Vec<Option<oneshot::Sender<Result<WriteOutcome>>>>;

/// Applies the batch in one write transaction and commits it. On success the state moves to
/// the new revision; on failure nothing changed, and the leases the reaper handed in are
/// returned to be looked at again.
fn apply_and_commit(
    shared: &Shared,
    state: &mut State,
    batch: Vec<WriteRequest>,
) -> (
    Replies,
    std::result::Result<Committed, (StoreError, Vec<LeaseId>)>,
) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut ops = Vec::with_capacity(batch.len());
    let mut expiring = Vec::new();
    for request in batch {
        if let WriteOp::Expire(ids) = &request.op {
            expiring.extend(ids.iter().copied());
        }
        replies.push(request.reply);
        ops.push(request.op);
    }
    let result = (|| -> std::result::Result<Committed, StoreError> {
        let mut write = shared.db.begin_write().map_err(storage)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut batch = Batch {
            shared,
            now: shared.clock.now(),
            kv: write.open_table(KV).map_err(storage)?,
            log: write.open_table(LOG).map_err(storage)?,
            leases: write.open_table(LEASES).map_err(storage)?,
            meta: write.open_table(META).map_err(storage)?,
            revision: state.revision,
            compact_revision: state.compact_revision,
            next_lease_id: state.next_lease_id,
            lease_ids_reserved: state.lease_ids_reserved,
            lease_changes: Vec::new(),
            granted: HashSet::new(),
            removed: HashSet::new(),
            published: Vec::new(),
            logged: Vec::new(),
            expired: 0,
            dirty: false,
            durable: false,
        };
        for op in ops {
            match batch.apply(op) {
                Ok(outcome) => outcomes.push(Ok(outcome)),
                Err(Failure::Request(error)) => outcomes.push(Err(error)),
                Err(Failure::Fatal(error)) => return Err(error),
            }
        }
        let (revision, compact_revision) = (batch.revision, batch.compact_revision);
        let (next_lease_id, lease_ids_reserved) = (batch.next_lease_id, batch.lease_ids_reserved);
        let applied = batch.close();
        if applied.dirty {
            write
                .set_durability(if applied.durable {
                    redb::Durability::Immediate
                } else {
                    redb::Durability::None
                })
                .map_err(storage)?;
            write.commit().map_err(storage)?;
        } else {
            write.abort().map_err(storage)?;
        }
        state.revision = revision;
        for (logged, bytes) in applied.logged {
            state.history.push(logged, bytes);
        }
        if compact_revision != state.compact_revision {
            shared.hub.set_compact_revision(compact_revision);
            state.history.compacted(compact_revision);
        }
        state.compact_revision = compact_revision;
        state.next_lease_id = next_lease_id;
        state.lease_ids_reserved = lease_ids_reserved;
        Ok(Committed {
            outcomes,
            lease_changes: applied.lease_changes,
            published: applied.published,
            expired: applied.expired,
            synced: applied.dirty && applied.durable,
        })
    })();
    (replies, result.map_err(|error| (error, expiring)))
}

impl Batch<'_> {
    /// Closes the tables (they borrow the transaction) and keeps what the commit needs.
    fn close(self) -> Applied {
        Applied {
            lease_changes: self.lease_changes,
            published: self.published,
            logged: self.logged,
            expired: self.expired,
            dirty: self.dirty,
            durable: self.durable,
        }
    }

    fn apply(&mut self, op: WriteOp) -> std::result::Result<WriteOutcome, Failure> {
        match op {
            WriteOp::Txn(txn) => self.txn(txn).map(WriteOutcome::Txn),
            WriteOp::Grant(ttl) => self.grant(ttl).map(WriteOutcome::Grant),
            WriteOp::Revoke(id) => {
                if !self.lease_exists(id) {
                    return Err(Failure::Request(StoreError::LeaseNotFound(id)));
                }
                self.remove_lease(id)?;
                Ok(WriteOutcome::Done)
            }
            WriteOp::Expire(ids) => {
                for id in ids {
                    let still_expired = !self.removed.contains(&id)
                        && self
                            .shared
                            .leases()
                            .get(id)
                            .is_some_and(|e| e.deadline <= self.now);
                    if still_expired {
                        self.remove_lease(id)?;
                        self.expired += 1;
                    }
                }
                Ok(WriteOutcome::Done)
            }
            WriteOp::Compact(revision) => self.compact(revision).map(|()| WriteOutcome::Done),
            WriteOp::Checkpoint => {
                self.checkpoint()?;
                Ok(WriteOutcome::Done)
            }
            WriteOp::Shutdown => {
                self.checkpoint()?;
                // Everything committed without an fsync reaches the disk now.
                self.dirty = true;
                self.durable = true;
                Ok(WriteOutcome::Done)
            }
        }
    }

    fn read(&self, key: &[u8]) -> std::result::Result<Option<KeyValue>, Failure> {
        match self.kv.get(key)? {
            Some(value) => Ok(Some(codec::decode_record(key, value.value())?)),
            None => Ok(None),
        }
    }

    fn txn(&mut self, txn: Txn) -> std::result::Result<TxnResponse, Failure> {
        txn.validate().map_err(Failure::Request)?;
        let mut succeeded = true;
        for compare in &txn.compares {
            if !compare.holds_for(self.read(&compare.key)?.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        // Everything that can refuse the request is checked before anything is written, so a
        // refused request leaves no trace in the batch.
        for op in &ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
                && !self.lease_live(*lease)
            {
                return Err(Failure::Request(StoreError::LeaseNotFound(*lease)));
            }
        }
        let revision = self.revision.next();
        let mut events = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value, lease } => {
                    events.push(self.put(key, value, lease, revision)?);
                }
                TxnOp::Delete(range) => {
                    let keys = self.keys_in(&range)?;
                    for key in keys {
                        events.extend(self.delete(key, revision)?);
                    }
                }
            }
        }
        self.record(revision, events)?;
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
        })
    }

    /// Makes `events` the next revision (nothing happens for no events: a write that changed
    /// nothing does not move the revision, as on etcd).
    fn record(
        &mut self,
        revision: Revision,
        events: Vec<Event>,
    ) -> std::result::Result<(), Failure> {
        if events.is_empty() {
            return Ok(());
        }
        let encoded = codec::encode_events(&events);
        self.log.insert(revision.0 as u64, encoded.as_slice())?;
        self.logged.push((revision, encoded.len() as u64));
        self.dirty = true;
        self.durable = true;
        self.revision = revision;
        self.published.push(RevisionBatch { revision, events });
        Ok(())
    }

    fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        lease: Option<LeaseId>,
        revision: Revision,
    ) -> std::result::Result<Event, Failure> {
        let prev = self.read(&key)?;
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            lease,
        };
        self.kv
            .insert(key.as_ref(), codec::encode_record(&kv).as_slice())?;
        let prev_lease = prev.as_ref().and_then(|p| p.lease);
        if prev_lease != lease {
            if let Some(old) = prev_lease {
                self.lease_changes
                    .push(LeaseChange::Detach(old, key.clone()));
            }
            if let Some(new) = lease {
                self.lease_changes.push(LeaseChange::Attach(new, key));
            }
        }
        Ok(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        })
    }

    fn delete(
        &mut self,
        key: Bytes,
        revision: Revision,
    ) -> std::result::Result<Option<Event>, Failure> {
        let Some(prev) = self.read(&key)? else {
            return Ok(None);
        };
        self.kv.remove(key.as_ref())?;
        if let Some(lease) = prev.lease {
            self.lease_changes
                .push(LeaseChange::Detach(lease, key.clone()));
        }
        Ok(Some(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                value: Bytes::new(),
                create_revision: Revision(0),
                mod_revision: revision,
                version: 0,
                lease: None,
            },
            prev_kv: Some(prev),
        }))
    }

    fn keys_in(&self, range: &KeyRange) -> std::result::Result<Vec<Bytes>, Failure> {
        match range {
            KeyRange::Key(key) => Ok(vec![key.clone()]),
            KeyRange::Prefix(prefix) => {
                let iter = match prefix_end(prefix) {
                    Some(end) => self.kv.range::<&[u8]>(prefix.as_ref()..end.as_slice())?,
                    None => self.kv.range::<&[u8]>(prefix.as_ref()..)?,
                };
                let mut keys = Vec::new();
                for entry in iter {
                    let (key, _) = entry?;
                    keys.push(Bytes::copy_from_slice(key.value()));
                }
                Ok(keys)
            }
        }
    }

    fn lease_exists(&self, id: LeaseId) -> bool {
        !self.removed.contains(&id)
            && (self.granted.contains(&id) || self.shared.leases().get(id).is_some())
    }

    fn lease_live(&self, id: LeaseId) -> bool {
        !self.removed.contains(&id)
            && (self.granted.contains(&id) || self.shared.leases().is_live(id, self.now))
    }

    fn grant(&mut self, ttl: Duration) -> std::result::Result<LeaseGrant, Failure> {
        if ttl.is_zero() {
            return Err(Failure::Request(StoreError::InvalidRequest(
                "a lease needs a TTL above zero".into(),
            )));
        }
        if self.next_lease_id >= self.lease_ids_reserved {
            self.lease_ids_reserved = self.next_lease_id + LEASE_ID_BLOCK;
            self.meta
                .insert(META_NEXT_LEASE, self.lease_ids_reserved as u64)?;
            self.durable = true;
        }
        let id = LeaseId(self.next_lease_id);
        self.next_lease_id += 1;
        let ttl_ms = ttl.as_millis().min(u128::from(u64::MAX)) as u64;
        let record = LeaseRecord {
            ttl_ms,
            remaining_ms: ttl_ms,
            checkpoint_unix_ms: unix_millis_now(),
        };
        self.leases
            .insert(id.0 as u64, codec::encode_lease(&record).as_slice())?;
        self.dirty = true;
        self.granted.insert(id);
        self.lease_changes.push(LeaseChange::Grant(id, ttl));
        Ok(LeaseGrant { id, ttl })
    }

    /// The keys attached to a lease, counting what this batch attached and detached so far.
    fn lease_keys(&self, id: LeaseId) -> HashSet<Bytes> {
        let mut keys: HashSet<Bytes> = self
            .shared
            .leases()
            .get(id)
            .map(|e| e.keys.iter().cloned().collect())
            .unwrap_or_default();
        for change in &self.lease_changes {
            match change {
                LeaseChange::Attach(lease, key) if *lease == id => {
                    keys.insert(key.clone());
                }
                LeaseChange::Detach(lease, key) if *lease == id => {
                    keys.remove(key);
                }
                _ => {}
            }
        }
        keys
    }

    /// Deletes the lease and every key still attached to it, at one revision.
    fn remove_lease(&mut self, id: LeaseId) -> std::result::Result<(), Failure> {
        let mut keys: Vec<Bytes> = self.lease_keys(id).into_iter().collect();
        keys.sort();
        let revision = self.revision.next();
        let mut events = Vec::new();
        for key in keys {
            // Only keys that are still on this lease: a later put may have moved one.
            if self.read(&key)?.is_some_and(|kv| kv.lease == Some(id))
                && let Some(event) = self.delete(key, revision)?
            {
                events.push(event);
            }
        }
        self.record(revision, events)?;
        self.leases.remove(id.0 as u64)?;
        self.dirty = true;
        self.durable = true;
        self.removed.insert(id);
        self.lease_changes.push(LeaseChange::Remove(id));
        Ok(())
    }

    fn compact(&mut self, revision: Revision) -> std::result::Result<(), Failure> {
        if revision <= self.compact_revision {
            return Err(Failure::Request(StoreError::Compacted {
                requested: revision,
                oldest_available: Some(self.compact_revision),
            }));
        }
        if revision > self.revision {
            return Err(Failure::Request(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            }));
        }
        self.log.retain_in(..(revision.0 as u64), |_, _| false)?;
        self.meta.insert(META_COMPACT, revision.0 as u64)?;
        // The revision comes from `meta` should the log ever hold nothing newer.
        self.meta.insert(META_REVISION, self.revision.0 as u64)?;
        self.dirty = true;
        self.durable = true;
        self.compact_revision = revision;
        Ok(())
    }

    fn checkpoint(&mut self) -> std::result::Result<(), Failure> {
        let renewed = self.shared.leases().take_renewed(self.now);
        let now_unix = unix_millis_now();
        for (id, ttl, remaining) in renewed {
            if self.removed.contains(&id) {
                continue;
            }
            let record = LeaseRecord {
                ttl_ms: ttl.as_millis() as u64,
                remaining_ms: remaining.as_millis() as u64,
                checkpoint_unix_ms: now_unix,
            };
            self.leases
                .insert(id.0 as u64, codec::encode_lease(&record).as_slice())?;
            self.dirty = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::HistorySize;
    use crate::Revision;

    #[test]
    fn history_over_its_budget_is_compacted_to_three_quarters() {
        let mut history = HistorySize::new(1_000);
        for revision in 1..=10 {
            history.push(Revision(revision), 100);
        }
        assert_eq!(history.compaction_target(), None, "exactly at the budget");
        history.push(Revision(11), 100);
        // 1,100 bytes: dropping revisions 1–4 leaves 700 ≤ 750.
        assert_eq!(history.compaction_target(), Some(Revision(5)));
        history.compacted(Revision(5));
        assert_eq!(history.bytes, 700);
        assert_eq!(history.compaction_target(), None);

        // One revision larger than the whole budget: only it is kept.
        history.push(Revision(12), 5_000);
        assert_eq!(history.compaction_target(), Some(Revision(12)));
        assert_eq!(HistorySize::new(0).compaction_target(), None);
    }
}
