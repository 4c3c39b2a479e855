//! The values of the store contract: revisions, keys and values, compares, transactions,
//! leases, watch events and the store's error type.

use bytes::Bytes;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A point in the store's history. One global counter, increased by exactly one for every
/// committed write; an empty store is at revision 1, as on etcd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl Revision {
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease: keys attached to it are deleted when it expires or is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Etcd,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Etcd => "etcd",
        }
    }
}

/// One key as stored, with etcd's bookkeeping: the revision that created it, the revision that
/// last changed it, how many times it was written since it was created, and its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub lease: Option<LeaseId>,
}

/// The keys an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    Key(Bytes),
    /// Every key starting with these bytes (all keys for an empty prefix).
    Prefix(Bytes),
}

impl KeyRange {
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_ref() == key,
            KeyRange::Prefix(p) => key.starts_with(p),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// Read the state as of this revision instead of the current one.
    pub revision: Option<Revision>,
    /// At most this many keys, in key order.
    pub limit: Option<usize>,
    /// Only keys after this one (the last key of the page before), for paging.
    pub after: Option<Bytes>,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            revision: None,
            limit: None,
            after: None,
        }
    }

    /// The next page: only keys after `key`.
    pub fn after(mut self, key: Bytes) -> Self {
        self.after = Some(key);
        self
    }

    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        Self::new(KeyRange::Prefix(prefix.into()))
    }

    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }

    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

#[derive(Clone, Debug)]
pub struct RangeResponse {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the read saw (the current revision unless one was asked for).
    pub revision: Revision,
    /// More keys matched than `limit` allowed.
    pub more: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

impl CompareOp {
    pub fn holds<T: Ord>(self, actual: T, expected: T) -> bool {
        match self {
            CompareOp::Equal => actual == expected,
            CompareOp::NotEqual => actual != expected,
            CompareOp::Greater => actual > expected,
            CompareOp::Less => actual < expected,
        }
    }
}

/// What a compare looks at. A missing key has version, create and mod revision 0, and no
/// value: a value compare on a missing key never holds (as on etcd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Bytes),
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Bytes>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }

    /// Holds when the key does not exist.
    pub fn absent(key: impl Into<Bytes>) -> Self {
        Self::new(
            key,
            CompareOp::Equal,
            CompareTarget::CreateRevision(Revision(0)),
        )
    }

    /// Holds when the key was last written at `revision` (0: the key is absent).
    pub fn unchanged_since(key: impl Into<Bytes>, revision: Revision) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::ModRevision(revision))
    }

    /// Holds when the key exists and its value is exactly `value`.
    pub fn value_is(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::Value(value.into()))
    }

    /// What this compare counts toward [`crate::MAX_REQUEST_BYTES`].
    pub fn request_bytes(&self) -> usize {
        self.key.len()
            + match &self.target {
                CompareTarget::Value(value) => value.len(),
                _ => 0,
            }
    }

    /// Evaluates the compare against the key's current state (`None`: absent).
    pub fn holds_for(&self, current: Option<&KeyValue>) -> bool {
        match &self.target {
            CompareTarget::Value(expected) => match current {
                Some(kv) => self.op.holds(&kv.value, expected),
                None => false,
            },
            CompareTarget::Version(expected) => {
                self.op.holds(current.map_or(0, |kv| kv.version), *expected)
            }
            CompareTarget::CreateRevision(expected) => self.op.holds(
                current.map_or(Revision(0), |kv| kv.create_revision),
                *expected,
            ),
            CompareTarget::ModRevision(expected) => self
                .op
                .holds(current.map_or(Revision(0), |kv| kv.mod_revision), *expected),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: Bytes,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete(KeyRange),
}

impl TxnOp {
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>, lease: Option<LeaseId>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    pub fn delete(key: impl Into<Bytes>) -> Self {
        TxnOp::Delete(KeyRange::Key(key.into()))
    }

    /// What this operation counts toward [`crate::MAX_REQUEST_BYTES`].
    pub fn request_bytes(&self) -> usize {
        match self {
            TxnOp::Put { key, value, .. } => key.len() + value.len(),
            TxnOp::Delete(KeyRange::Key(k) | KeyRange::Prefix(k)) => k.len(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    pub fn when(mut self, compares: Vec<Compare>) -> Self {
        self.compares = compares;
        self
    }

    pub fn and_then(mut self, ops: Vec<TxnOp>) -> Self {
        self.success = ops;
        self
    }

    pub fn or_else(mut self, ops: Vec<TxnOp>) -> Self {
        self.failure = ops;
        self
    }

    /// Refuses what etcd refuses, so both backends fail the same requests the same way: a
    /// request over [`crate::MAX_REQUEST_BYTES`], more than [`crate::MAX_TXN_OPS`] compares or
    /// operations in a branch, and a key written twice in one branch.
    pub fn validate(&self) -> Result<()> {
        let count = self
            .compares
            .len()
            .max(self.success.len())
            .max(self.failure.len());
        if count > crate::MAX_TXN_OPS {
            return Err(StoreError::TooManyOperations {
                count,
                limit: crate::MAX_TXN_OPS,
            });
        }
        let size: usize = self
            .compares
            .iter()
            .map(Compare::request_bytes)
            .chain(self.success.iter().map(TxnOp::request_bytes))
            .chain(self.failure.iter().map(TxnOp::request_bytes))
            .sum();
        if size > crate::MAX_REQUEST_BYTES {
            return Err(StoreError::RequestTooLarge {
                size,
                limit: crate::MAX_REQUEST_BYTES,
            });
        }
        for ops in [&self.success, &self.failure] {
            for (index, op) in ops.iter().enumerate() {
                let TxnOp::Put { key, .. } = op else {
                    continue;
                };
                let overlaps = ops.iter().enumerate().any(|(other_index, other)| {
                    other_index != index
                        && match other {
                            TxnOp::Put { key: other_key, .. } => other_key == key,
                            TxnOp::Delete(range) => range.contains(key),
                        }
                });
                if overlaps {
                    return Err(StoreError::InvalidRequest(format!(
                        "key {} is written twice in one transaction",
                        String::from_utf8_lossy(key)
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and so `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction: the transaction's own revision if it wrote.
    pub revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` holds the key and the deleting revision only; `prev_kv` is
/// the key as it was before the change, when it existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// The events of one revision that fall under a watch's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// A watch's events. Dropping it cancels the watch.
pub struct WatchStream {
    receiver: mpsc::Receiver<Result<WatchBatch>>,
}

impl WatchStream {
    /// The sending half, for a backend's watch task, and the stream for the caller.
    pub(crate) fn channel() -> (mpsc::Sender<Result<WatchBatch>>, WatchStream) {
        // Bounded: a slow consumer holds its backend task back instead of growing memory. The
        // task reads what it could not deliver from history later, so nothing is lost.
        let (sender, receiver) = mpsc::channel(64);
        (sender, WatchStream { receiver })
    }

    /// The next batch; `None` when the store shut down.
    pub async fn next(&mut self) -> Option<Result<WatchBatch>> {
        self.receiver.recv().await
    }
}

impl futures::Stream for WatchStream {
    type Item = Result<WatchBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: LeaseId,
    pub ttl: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: LeaseId,
    pub granted_ttl: Duration,
    pub remaining: Duration,
    pub keys: Vec<Bytes>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    pub revision: Revision,
    /// Revisions below this one have been compacted away (where the backend reports it).
    pub compact_revision: Option<Revision>,
}

/// How recently this node heard from the store's quorum: what a read from its views may have
/// missed, and why writes are refused now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreContact {
    /// Since the store last answered a linearizable read; `None` for a store in this process,
    /// which is always current.
    pub last_contact: Option<std::time::Duration>,
    /// Why the store takes no writes now (no quorum), if it does not.
    pub lost: Option<String>,
}

/// Everything a store call can fail with. Cloneable so one failed group commit can answer
/// every writer in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("revision {requested} has been compacted{}", oldest_hint(*.oldest_available))]
    Compacted {
        requested: Revision,
        oldest_available: Option<Revision>,
    },
    #[error("revision {requested} is in the future (the current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {0} not found (unknown, revoked or expired)")]
    LeaseNotFound(LeaseId),
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    RequestTooLarge { size: usize, limit: usize },
    #[error("a transaction of {count} operations exceeds the limit of {limit}")]
    TooManyOperations { count: usize, limit: usize },
    #[error("invalid store request: {0}")]
    InvalidRequest(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write was sent, but no answer came back (time ran out, the connection broke, or the
    /// quorum was found lost while it was in flight): it may or may not have been applied.
    #[error("store outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("store is shut down")]
    Closed,
    #[error("storage failure: {0}")]
    Storage(String),
}

fn oldest_hint(oldest: Option<Revision>) -> String {
    match oldest {
        Some(revision) => format!("; the oldest available revision is {revision}"),
        None => String::new(),
    }
}
