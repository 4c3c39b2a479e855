//! The embedded backend: one redb file in the data directory, one writer thread that batches
//! concurrent writes into one durable commit (group commit), leases in memory with a periodic
//! checkpoint, and watches fed from each commit.
//!
//! Tables: `meta` (format version, revision, compaction point, next lease id), `kv` (the
//! current value of every key), `log` (the events of every revision since the compaction
//! point, with each key's previous value: watches replay it and reads at an older revision
//! undo it), `leases` (every lease's TTL and last checkpoint).

mod codec;
mod committer;
mod leases;
mod watch;

use crate::clock::unix_millis_now;
use crate::{
    Clock, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseStatus, MonotonicClock, RangeRequest,
    RangeResponse, Result, Revision, Store, StoreError, StoreKind, StoreStatus, Txn, TxnResponse,
    WatchStream,
};
use bytes::Bytes;
use committer::{WriteOp, WriteOutcome, WriteRequest};
use leases::LeaseTable;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use watch::{RevisionBatch, WatchHub};

pub use codec::FORMAT_VERSION;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// How long a key whose lease record is missing at open lives unless its lease is renewed.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);

const META_FORMAT: &str = "format_version";
const META_REVISION: &str = "revision";
const META_COMPACT: &str = "compact_revision";
const META_NEXT_LEASE: &str = "next_lease_id";

/// The data file's name inside the data directory.
pub const DATA_FILE: &str = "berth.redb";
/// The lock file that keeps a second berth away from a data directory in use.
pub const LOCK_FILE: &str = "berth.lock";

#[derive(Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// redb's page cache.
    pub cache_bytes: usize,
    /// Automatic compaction keeps this many revisions of history (0: never compact).
    pub retained_revisions: i64,
    /// ...and at most about this many bytes of it (0: no limit): when the history grows past
    /// it, the oldest revisions are compacted away until a quarter of it is free.
    pub retained_bytes: u64,
    pub compaction_interval: Duration,
    pub checkpoint_interval: Duration,
    /// How often expired leases are looked for; bounds how late an expiry is noticed.
    pub expiry_check_interval: Duration,
}

impl EmbeddedOptions {
    /// redb's page cache unless configured: small, since the OS caches the file too.
    pub const DEFAULT_CACHE_BYTES: usize = 8 * 1024 * 1024;
    /// History kept for watches and event resumes unless configured.
    pub const DEFAULT_RETAINED_REVISIONS: i64 = 100_000;
    /// History bytes kept unless configured.
    pub const DEFAULT_RETAINED_BYTES: u64 = 256 * 1024 * 1024;

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            data_dir: data_dir.into(),
            clock: Arc::new(MonotonicClock),
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
            retained_revisions: Self::DEFAULT_RETAINED_REVISIONS,
            retained_bytes: Self::DEFAULT_RETAINED_BYTES,
            compaction_interval: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(1),
            expiry_check_interval: Duration::from_millis(20),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Durable commits (fsyncs) since open.
    pub commits: u64,
    /// Writes (transactions, grants, revokes, expiries, checkpoints) those commits carried.
    pub writes: u64,
    pub leases: usize,
}

/// Why the embedded store could not open. Each message is meant to be the one line an
/// operator reads before fixing it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another berth process{}; stop it or choose another --data-dir",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error(
        "{path} has data format version {found}, and this berth reads version {supported}; run a berth that matches the file, or start on an empty data directory"
    )]
    UnknownFormat {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "{path} is damaged and was not opened ({detail}); restore it from a backup, or move it aside to start empty"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot open {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

/// What the committer thread and the readers share.
pub(crate) struct Shared {
    db: redb::Database,
    clock: Arc<dyn Clock>,
    leases: Mutex<LeaseTable>,
    hub: WatchHub,
    commits: AtomicU64,
    writes: AtomicU64,
    /// Set by the first failed commit (a full disk, an I/O error): redb then refuses every
    /// later write until the database is reopened, so the store stops taking writes and says
    /// why, and its owner restarts (`EmbeddedStore::failed`).
    failure: tokio::sync::watch::Sender<Option<String>>,
    /// Held for as long as the database is open.
    _lock: File,
}

impl Shared {
    /// Marks the store failed (the first cause is kept); true the first time.
    pub(crate) fn fail(&self, cause: &str) -> bool {
        self.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            *failure = Some(cause.to_string());
            true
        })
    }

    /// Why the store no longer takes writes, once it failed.
    pub(crate) fn failed_error(&self) -> Option<StoreError> {
        self.failure.borrow().as_ref().map(|cause| {
            StoreError::Unavailable(format!(
                "the embedded store failed to write its file ({cause}) and takes no more \
                 writes; berth restarts to recover"
            ))
        })
    }

    fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse> {
        let read = self.db.begin_read().map_err(storage)?;
        let meta = read.open_table(META).map_err(storage)?;
        let log = read.open_table(LOG).map_err(storage)?;
        let current = current_revision(&meta, &log)?;
        let compacted = Revision(meta_value(&meta, META_COMPACT)? as i64);
        let at = match request.revision {
            None => current,
            Some(at) if at.0 <= 0 => {
                return Err(StoreError::InvalidRequest(format!(
                    "revision {at} is not a revision"
                )));
            }
            Some(at) if at > current => {
                return Err(StoreError::FutureRevision {
                    requested: at,
                    current,
                });
            }
            Some(at) if at < compacted => {
                return Err(StoreError::Compacted {
                    requested: at,
                    oldest_available: Some(compacted),
                });
            }
            Some(at) => at,
        };
        let kv = read.open_table(KV).map_err(storage)?;
        // At the current revision the limit can stop the scan; at an older one every key in
        // range is needed, since undoing later changes can add keys back.
        let scan_limit = match (at == current, request.limit) {
            (true, Some(limit)) => limit.saturating_add(1),
            _ => usize::MAX,
        };
        let mut found: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
        match &request.range {
            KeyRange::Key(key) => {
                if let Some(value) = kv.get(key.as_ref()).map_err(storage)? {
                    found.insert(key.clone(), codec::decode_record(key, value.value())?);
                }
            }
            KeyRange::Prefix(prefix) => {
                for entry in prefix_range(&kv, prefix, request.after.as_deref())?.take(scan_limit) {
                    let (key, value) = entry.map_err(storage)?;
                    let record = codec::decode_record(key.value(), value.value())?;
                    found.insert(record.key.clone(), record);
                }
            }
        }
        if at < current {
            for entry in log
                .range((at.0 as u64 + 1)..=(current.0 as u64))
                .map_err(storage)?
                .rev()
            {
                let (_, events) = entry.map_err(storage)?;
                for event in codec::decode_events(events.value())?.into_iter().rev() {
                    if !request.range.contains(&event.kv.key) {
                        continue;
                    }
                    match event.prev_kv {
                        Some(prev) => found.insert(prev.key.clone(), prev),
                        None => found.remove(&event.kv.key),
                    };
                }
            }
        }
        if let Some(after) = &request.after {
            found.retain(|key, _| key > after);
        }
        let mut kvs: Vec<KeyValue> = found.into_values().collect();
        let more = request.limit.is_some_and(|limit| kvs.len() > limit);
        if let Some(limit) = request.limit {
            kvs.truncate(limit);
        }
        Ok(RangeResponse {
            kvs,
            revision: at,
            more,
        })
    }

    /// The revisions `from..=to` from the on-disk log, for watchers that fell behind the ring.
    fn read_log(&self, from: Revision, to: Revision) -> Result<Vec<RevisionBatch>> {
        let read = self.db.begin_read().map_err(storage)?;
        let meta = read.open_table(META).map_err(storage)?;
        let compacted = Revision(meta_value(&meta, META_COMPACT)? as i64);
        if from < compacted {
            return Err(StoreError::Compacted {
                requested: from,
                oldest_available: Some(compacted),
            });
        }
        let log = read.open_table(LOG).map_err(storage)?;
        let mut batches = Vec::new();
        for entry in log.range(from.0 as u64..=to.0 as u64).map_err(storage)? {
            let (revision, events) = entry.map_err(storage)?;
            batches.push(RevisionBatch {
                revision: Revision(revision.value() as i64),
                events: codec::decode_events(events.value())?,
            });
        }
        if batches.first().map(|b| b.revision) != Some(from) {
            return Err(StoreError::Storage(format!(
                "revision {from} is missing from the log"
            )));
        }
        Ok(batches)
    }
}

/// The keys under `prefix` (only those after `after`, when given).
fn prefix_range<'t>(
    table: &'t impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    after: Option<&[u8]>,
) -> Result<redb::Range<'t, &'static [u8], &'static [u8]>> {
    use std::ops::Bound;
    let start = match after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    let past = prefix_end(prefix);
    let end = match &past {
        Some(end) => Bound::Excluded(end.as_slice()),
        None => Bound::Unbounded,
    };
    table.range::<&[u8]>((start, end)).map_err(storage)
}

pub(crate) use crate::prefix_end_key as prefix_end;

/// The last committed revision: the log's last key (the `meta` entry covers a store whose
/// log is empty or was compacted down to nothing newer).
fn current_revision(
    meta: &impl ReadableTable<&'static str, u64>,
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Revision> {
    let logged = log
        .last()
        .map_err(storage)?
        .map_or(0, |(revision, _)| revision.value());
    Ok(Revision(meta_value(meta, META_REVISION)?.max(logged) as i64))
}

fn meta_value(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    match table.get(key).map_err(storage)? {
        Some(value) => Ok(value.value()),
        None => Err(StoreError::Storage(format!(
            "the data file has no `{key}` entry"
        ))),
    }
}

pub(crate) fn storage(error: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(error.to_string())
}

struct Inner {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteRequest>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The embedded store. Clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `options.data_dir`. Must be called inside a tokio
    /// runtime: the lease reaper, the checkpoint and compaction run as tasks on it.
    pub async fn open(options: EmbeddedOptions) -> Result<EmbeddedStore, OpenError> {
        let opening = options.clone();
        let (shared, state) = tokio::task::spawn_blocking(move || open_files(&opening))
            .await
            .map_err(|e| OpenError::Io {
                path: options.data_dir.clone(),
                detail: format!("opening thread failed: {e}"),
            })??;
        let shared = Arc::new(shared);
        let (writes, receiver) = mpsc::channel();
        let committer =
            committer::spawn(shared.clone(), receiver, state).map_err(|e| OpenError::Io {
                path: options.data_dir.clone(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        let inner = Arc::new(Inner {
            shared,
            writes,
            committer: Mutex::new(Some(committer)),
        });
        spawn_background_tasks(Arc::downgrade(&inner), &options);
        Ok(EmbeddedStore { inner })
    }

    /// Resolves with the cause when a commit fails (the disk is full or failed): the store
    /// takes no more writes, and the process should exit so that it is restarted.
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.shared.failure.subscribe();
        let cause = match failure.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone(),
            Err(_) => None,
        };
        match cause {
            Some(cause) => cause,
            None => std::future::pending().await,
        }
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome> {
        if let Some(error) = self.inner.shared.failed_error()
            && !matches!(op, WriteOp::Shutdown)
        {
            return Err(error);
        }
        let (reply, response) = oneshot::channel();
        self.inner
            .writes
            .send(WriteRequest {
                op,
                reply: Some(reply),
            })
            .map_err(|_| StoreError::Closed)?;
        response.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes a final lease checkpoint, ends every watch and stops the writer thread. Calls
    /// after this fail with `Closed`. The file itself is released when the last clone drops.
    pub async fn close(&self) -> Result<()> {
        let outcome = self.submit(WriteOp::Shutdown).await;
        let handle = self
            .inner
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        match outcome {
            Ok(_) | Err(StoreError::Closed) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Counters since open: how many durable commits carried how many writes.
    pub fn stats(&self) -> EmbeddedStats {
        let shared = &self.inner.shared;
        EmbeddedStats {
            commits: shared.commits.load(Ordering::Relaxed),
            writes: shared.writes.load(Ordering::Relaxed),
            leases: shared.leases().len(),
        }
    }
}

impl Store for EmbeddedStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Embedded
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        // One current key is a few microseconds: read it here. A prefix, or any read at an
        // older revision (which undoes the log), can take long: off the async workers, so it
        // never holds up heartbeats or the lease reaper.
        if matches!(request.range, KeyRange::Key(_)) && request.revision.is_none() {
            return self.inner.shared.range(&request);
        }
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || shared.range(&request))
            .await
            .map_err(|e| StoreError::Storage(format!("a store read failed: {e}")))?
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        match self.submit(WriteOp::Txn(txn)).await? {
            WriteOutcome::Txn(response) => Ok(response),
            _ => Err(StoreError::Storage("unexpected writer reply".into())),
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        match self.submit(WriteOp::Grant(ttl)).await? {
            WriteOutcome::Grant(grant) => Ok(grant),
            _ => Err(StoreError::Storage("unexpected writer reply".into())),
        }
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<Duration> {
        // A failed store expires nothing: renewing would only hide that.
        if let Some(error) = self.inner.shared.failed_error() {
            return Err(error);
        }
        let now = self.inner.shared.clock.now();
        self.inner.shared.leases().keepalive(id, now)
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.submit(WriteOp::Revoke(id)).await.map(|_| ())
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseStatus> {
        let now = self.inner.shared.clock.now();
        let leases = self.inner.shared.leases();
        match leases.get(id) {
            Some(entry) if entry.deadline > now => {
                let mut keys: Vec<Bytes> = entry.keys.iter().cloned().collect();
                keys.sort();
                Ok(LeaseStatus {
                    id,
                    granted_ttl: entry.ttl(),
                    remaining: entry.deadline - now,
                    keys,
                })
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    async fn watch(&self, prefix: Bytes, start_revision: Option<Revision>) -> Result<WatchStream> {
        let shared = &self.inner.shared;
        let start = match start_revision {
            Some(revision) if revision.0 <= 0 => {
                return Err(StoreError::InvalidRequest(format!(
                    "watch start revision {revision} is not a revision"
                )));
            }
            Some(revision) => revision,
            None => shared.hub.revision().next(),
        };
        let (sender, stream) = WatchStream::channel();
        tokio::spawn(watch::run_watcher(shared.clone(), prefix, start, sender));
        Ok(stream)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(WriteOp::Compact(revision)).await.map(|_| ())
    }

    async fn status(&self) -> Result<StoreStatus> {
        if let Some(error) = self.inner.shared.failed_error() {
            return Err(error);
        }
        let hub = &self.inner.shared.hub;
        Ok(StoreStatus {
            revision: hub.revision(),
            compact_revision: Some(hub.compact_revision()),
        })
    }
}

/// The reaper, the lease checkpoint and automatic compaction. Each holds the store weakly and
/// stops when it is gone.
fn spawn_background_tasks(inner: Weak<Inner>, options: &EmbeddedOptions) {
    let every = |period: Duration, inner: Weak<Inner>, tick: fn(&Inner)| {
        tokio::spawn(async move {
            let mut interval = first_tick_after(period);
            loop {
                interval.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                if inner.shared.hub.is_closed() {
                    return;
                }
                tick(&inner);
            }
        });
    };
    every(options.expiry_check_interval, inner.clone(), |inner| {
        let now = inner.shared.clock.now();
        let expired = inner.shared.leases().take_expired(now);
        if !expired.is_empty() {
            let _ = inner.writes.send(WriteRequest {
                op: WriteOp::Expire(expired),
                reply: None,
            });
        }
    });
    every(options.checkpoint_interval, inner.clone(), |inner| {
        let _ = inner.writes.send(WriteRequest {
            op: WriteOp::Checkpoint,
            reply: None,
        });
    });
    if options.retained_revisions > 0 {
        let retained = options.retained_revisions;
        let period = options.compaction_interval;
        tokio::spawn(async move {
            let mut interval = first_tick_after(period);
            loop {
                interval.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                if inner.shared.hub.is_closed() {
                    return;
                }
                let hub = &inner.shared.hub;
                let target = Revision(hub.revision().0 - retained);
                if target > hub.compact_revision() {
                    let _ = inner.writes.send(WriteRequest {
                        op: WriteOp::Compact(target),
                        reply: None,
                    });
                }
            }
        });
    }
}

/// An interval whose first tick comes after one period, not at once.
fn first_tick_after(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Everything opening does before the writer thread starts: the directory, the lock, the
/// file, its format, and the leases to bring back.
fn open_files(options: &EmbeddedOptions) -> Result<(Shared, committer::State), OpenError> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let lock = lock_data_dir(dir)?;
    let path = dir.join(DATA_FILE);
    let db = open_database(&path, options.cache_bytes)?;
    let corrupt = |detail: String| OpenError::Corrupt {
        path: path.clone(),
        detail,
    };

    let write = db.begin_write().map_err(|e| redb_failure(&path, e))?;
    let mut state;
    let lease_records;
    {
        let mut meta = write.open_table(META).map_err(|e| redb_failure(&path, e))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| redb_failure(&path, e))?
            .map(|v| v.value());
        match format {
            None => {
                // A new file: an empty store is at revision 1, as etcd is.
                for (key, value) in [
                    (META_FORMAT, FORMAT_VERSION),
                    (META_REVISION, 1),
                    (META_COMPACT, 1),
                    (META_NEXT_LEASE, 1),
                ] {
                    meta.insert(key, value)
                        .map_err(|e| redb_failure(&path, e))?;
                }
            }
            Some(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(OpenError::UnknownFormat {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
        let read_meta = |key| meta_value(&meta, key).map_err(|e| corrupt(e.to_string()));
        // Create the other tables so readers never meet a missing one.
        write.open_table(KV).map_err(|e| redb_failure(&path, e))?;
        let log = write.open_table(LOG).map_err(|e| redb_failure(&path, e))?;
        let mut history = committer::HistorySize::new(options.retained_bytes);
        for entry in log.iter().map_err(|e| redb_failure(&path, e))? {
            let (revision, events) = entry.map_err(|e| redb_failure(&path, e))?;
            history.push(
                Revision(revision.value() as i64),
                events.value().len() as u64,
            );
        }
        state = committer::State {
            history,
            revision: current_revision(&meta, &log).map_err(|e| corrupt(e.to_string()))?,
            compact_revision: Revision(read_meta(META_COMPACT)? as i64),
            // Ids up to the last reservation may have been handed out before a crash: go on
            // after it.
            next_lease_id: read_meta(META_NEXT_LEASE)? as i64,
            lease_ids_reserved: read_meta(META_NEXT_LEASE)? as i64,
        };
        drop(log);
        let leases = write
            .open_table(LEASES)
            .map_err(|e| redb_failure(&path, e))?;
        let mut records = Vec::new();
        for entry in leases.iter().map_err(|e| redb_failure(&path, e))? {
            let (id, value) = entry.map_err(|e| redb_failure(&path, e))?;
            let record = codec::decode_lease(value.value()).map_err(|e| corrupt(e.to_string()))?;
            records.push((LeaseId(id.value() as i64), record));
        }
        lease_records = records;
    }
    write.commit().map_err(|e| redb_failure(&path, e))?;

    // Every surviving lease gets a full TTL from now, as etcd gives on restart: its owner had
    // no server to renew against while this one was down.
    let now = options.clock.now();
    let now_unix = unix_millis_now();
    let mut table = LeaseTable::default();
    let mut overdue = 0usize;
    for (id, record) in &lease_records {
        table.insert(*id, Duration::from_millis(record.ttl_ms), now);
        if record.checkpoint_unix_ms + record.remaining_ms < now_unix {
            overdue += 1;
        }
    }
    let read = db.begin_read().map_err(|e| redb_failure(&path, e))?;
    let kv = read.open_table(KV).map_err(|e| redb_failure(&path, e))?;
    let mut orphans: BTreeMap<LeaseId, Vec<Bytes>> = BTreeMap::new();
    for entry in kv.iter().map_err(|e| redb_failure(&path, e))? {
        let (key, value) = entry.map_err(|e| redb_failure(&path, e))?;
        let record =
            codec::decode_record(key.value(), value.value()).map_err(|e| corrupt(e.to_string()))?;
        if let Some(lease) = record.lease {
            if table.get(lease).is_some() {
                table.attach(lease, record.key);
            } else {
                orphans.entry(lease).or_default().push(record.key);
            }
        }
    }
    // A key whose lease record is gone (not something berth writes; a damaged or hand-edited
    // file) would otherwise never expire (defect M16). Its lease comes back for a grace
    // period: renewed, it lives on; not, it expires through the normal path, with its events.
    let orphan_keys: usize = orphans.values().map(Vec::len).sum();
    for (lease, keys) in &orphans {
        table.insert(*lease, ORPHAN_GRACE, now);
        for key in keys {
            table.attach(*lease, key.clone());
        }
        // Never hand this id out again.
        state.next_lease_id = state.next_lease_id.max(lease.0 + 1);
    }
    drop(kv);
    drop(read);
    if !lease_records.is_empty() {
        tracing::info!(
            leases = lease_records.len(),
            overdue,
            "restored leases; each has a full TTL from now to be renewed"
        );
    }
    if orphan_keys > 0 {
        tracing::warn!(
            keys = orphan_keys,
            leases = orphans.len(),
            grace_s = ORPHAN_GRACE.as_secs(),
            "keys refer to leases whose records are missing; the leases are restored for a grace \
             period and expire unless renewed"
        );
    }
    metrics::gauge!("berth_store_leases").set(table.len() as f64);
    metrics::gauge!("berth_store_revision").set(state.revision.0 as f64);
    Ok((
        Shared {
            db,
            clock: options.clock.clone(),
            leases: Mutex::new(table),
            hub: WatchHub::new(state.revision, state.compact_revision),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failure: tokio::sync::watch::Sender::new(None),
            _lock: lock,
        },
        state,
    ))
}

/// A redb error while opening: an I/O error (a full disk, EIO) as such, so nobody moves an
/// intact file aside; anything else as damage.
fn redb_failure(path: &Path, error: impl Into<redb::Error>) -> OpenError {
    match error.into() {
        redb::Error::Io(io) => OpenError::Io {
            path: path.to_path_buf(),
            detail: io.to_string(),
        },
        other => OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

fn lock_data_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| OpenError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(OpenError::Locked {
                path: dir.to_path_buf(),
                holder: holder.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(OpenError::DataDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let record_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()
    };
    record_pid(&mut file).map_err(|source| OpenError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(file)
}

fn open_database(path: &Path, cache_bytes: usize) -> Result<redb::Database, OpenError> {
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(cache_bytes)
        // Verify every page's checksum at open: a damaged file is refused instead of served.
        .set_check_integrity_on_open(true);
    // redb reports damage as errors, but a few checks in it assert; a damaged file must end
    // in a clear message, not a panic trace.
    let created = !path.exists();
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)));
    let to_open_error = |error: redb::DatabaseError| match error {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked {
            path: path.parent().unwrap_or(path).to_path_buf(),
            holder: None,
        },
        redb::DatabaseError::UpgradeRequired(version) => OpenError::UnknownFormat {
            path: path.to_path_buf(),
            found: u64::from(version),
            supported: FORMAT_VERSION,
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => OpenError::Io {
            path: path.to_path_buf(),
            detail: io.to_string(),
        },
        other => OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: other.to_string(),
        },
    };
    match opened {
        Ok(result) => {
            let db = result.map_err(to_open_error)?;
            if created {
                // redb syncs the file, not the directory: without this, a power loss right after
                // the first start could lose the new file's name (defect M20).
                let directory = path.parent().unwrap_or(Path::new("."));
                std::fs::File::open(directory)
                    .and_then(|directory| directory.sync_all())
                    .map_err(|error| OpenError::Io {
                        path: directory.to_path_buf(),
                        detail: error.to_string(),
                    })?;
            }
            Ok(db)
        }
        Err(panic) => Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            detail: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the file could not be read".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    /// Defect M9: an I/O error while opening is reported as one, not as a damaged file (whose
    /// advice, to move the file aside, would lose the catalog).
    #[test]
    fn io_errors_at_open_are_not_called_damage() {
        let path = Path::new("/data/berth.redb");
        let full = redb::StorageError::Io(std::io::Error::other("no space left on device"));
        assert!(matches!(
            redb_failure(path, full),
            OpenError::Io { detail, .. } if detail.contains("no space")
        ));
        let damaged = redb::StorageError::Corrupted("bad page".into());
        assert!(matches!(
            redb_failure(path, damaged),
            OpenError::Corrupt { .. }
        ));
    }
}
