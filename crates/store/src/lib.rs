//! The store contract: an etcd-shaped key-value store with one global revision, compare-and-swap
//! transactions, leases and prefix watches, plus its two backends (embedded redb, etcd v3).
//!
//! Everything above this crate (the registry service and the surfaces) talks to a store only
//! through [`Store`]; the conformance suite in `tests/conformance.rs` runs the same bodies against
//! every backend, so the backends stay interchangeable.

mod any;
mod clock;
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
mod types;

pub use any::{AnyStore, EtcdSecurity, StoreLocation, open_store};
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use types::*;

use std::future::Future;
use std::time::Duration;

/// The limit on one request (a transaction's keys and values together), the same as etcd's
/// default `--max-request-bytes`, so a client sees the same limit on every backend.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// The most compares, and the most operations in each branch, of one transaction: etcd's
/// default `--max-txn-ops`, enforced on every backend for the same reason.
pub const MAX_TXN_OPS: usize = 128;

/// The contract both backends implement. Methods are async and cheap to call concurrently:
/// writes from many tasks are batched by the backend (group commit on the embedded store, the
/// gRPC connection on etcd).
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for `/health` and logs.
    fn kind(&self) -> StoreKind;

    /// Reads one key or every key under a prefix, at the current revision or at `revision`.
    fn range(&self, request: RangeRequest) -> impl Future<Output = Result<RangeResponse>> + Send;

    /// Applies `success` when every compare holds, `failure` otherwise, atomically. A
    /// transaction that writes gets exactly one new revision; one that writes nothing leaves
    /// the revision where it was.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnResponse>> + Send;

    /// Creates a lease. The backend may round the TTL up (etcd has a minimum and whole
    /// seconds); the granted TTL is returned.
    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseGrant>> + Send;

    /// Renews a lease for one more TTL and returns that TTL. `LeaseNotFound` when it is
    /// unknown, revoked or already expired.
    fn lease_keepalive(&self, id: LeaseId) -> impl Future<Output = Result<Duration>> + Send;

    /// Revokes a lease, deleting every key attached to it at one revision.
    fn lease_revoke(&self, id: LeaseId) -> impl Future<Output = Result<()>> + Send;

    /// The lease's granted TTL, the time it has left and its keys.
    fn lease_time_to_live(&self, id: LeaseId) -> impl Future<Output = Result<LeaseStatus>> + Send;

    /// Every put and delete under `prefix` from `start_revision` on (or from the next revision
    /// when `None`), grouped by revision, in order, with no gaps. A start revision that has been
    /// compacted yields one `Err(Compacted)` item and ends the stream.
    fn watch(
        &self,
        prefix: bytes::Bytes,
        start_revision: Option<Revision>,
    ) -> impl Future<Output = Result<WatchStream>> + Send;

    /// Forgets the history before `revision`: ranges and watches below it fail with
    /// `Compacted` afterwards.
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<()>> + Send;

    /// The current revision and the oldest one still readable.
    fn status(&self) -> impl Future<Output = Result<StoreStatus>> + Send;

    /// Every key under `prefix`, read in pages of `page` keys at one revision (`at`, or the
    /// first page's), so no single answer is large (etcd refuses answers over its message
    /// limit) and the whole is one consistent snapshot.
    fn range_all(
        &self,
        prefix: bytes::Bytes,
        page: usize,
        at: Option<Revision>,
    ) -> impl Future<Output = Result<RangeResponse>> + Send {
        async move {
            let mut kvs = Vec::new();
            let revision = self
                .for_each_page(prefix, page, at, |found| kvs.extend(found))
                .await?;
            Ok(RangeResponse {
                kvs,
                revision,
                more: false,
            })
        }
    }

    /// Like [`Store::range_all`], handing each page to `each` as it comes instead of keeping
    /// them all (for reads that keep only part of what they see); returns the revision read at.
    fn for_each_page(
        &self,
        prefix: bytes::Bytes,
        page: usize,
        at: Option<Revision>,
        mut each: impl FnMut(Vec<KeyValue>) + Send,
    ) -> impl Future<Output = Result<Revision>> + Send {
        async move {
            let mut request = RangeRequest::prefix(prefix.clone()).with_limit(page);
            request.revision = at;
            loop {
                let found = self.range(request).await?;
                let last = found.kvs.last().map(|kv| kv.key.clone());
                each(found.kvs);
                match last {
                    Some(last) if found.more => {
                        request = RangeRequest::prefix(prefix.clone())
                            .with_limit(page)
                            .at_revision(found.revision)
                            .after(last);
                    }
                    _ => return Ok(found.revision),
                }
            }
        }
    }
}

/// Reads one key; `None` when absent.
pub async fn get<S: Store + ?Sized>(
    store: &S,
    key: impl Into<bytes::Bytes>,
) -> Result<Option<KeyValue>> {
    let response = store
        .range(RangeRequest::new(KeyRange::Key(key.into())))
        .await?;
    Ok(response.kvs.into_iter().next())
}

/// Writes one key unconditionally and returns the new revision.
pub async fn put<S: Store + ?Sized>(
    store: &S,
    key: impl Into<bytes::Bytes>,
    value: impl Into<bytes::Bytes>,
    lease: Option<LeaseId>,
) -> Result<Revision> {
    let txn = Txn::new().and_then(vec![TxnOp::put(key, value, lease)]);
    Ok(store.txn(txn).await?.revision)
}

/// Deletes one key unconditionally and returns the revision after the call.
pub async fn delete<S: Store + ?Sized>(
    store: &S,
    key: impl Into<bytes::Bytes>,
) -> Result<Revision> {
    let txn = Txn::new().and_then(vec![TxnOp::Delete(KeyRange::Key(key.into()))]);
    Ok(store.txn(txn).await?.revision)
}

/// The first key after every key that starts with `prefix`; `None` when there is none (an
/// empty prefix, or one made only of 0xff bytes).
pub(crate) fn prefix_end_key(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
