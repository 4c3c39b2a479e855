//! The etcd v3 backend: the same contract on an etcd cluster, so several berth nodes can share
//! one store with no master among them. Keepalives of every lease share one gRPC stream, and
//! watches that lose their connection resume from the next revision by themselves. Leases
//! this node renewed end at their deadline (`deadlines.rs`), not up to 500 ms later.

mod contact;
mod deadlines;

use crate::{
    Compare, CompareOp, CompareTarget, EtcdSecurity, Event, EventKind, KeyRange, KeyValue,
    LeaseGrant, LeaseId, LeaseStatus, RangeRequest, RangeResponse, Result, Revision, Store,
    StoreContact, StoreError, StoreKind, StoreStatus, Txn, TxnOp, TxnResponse, WatchBatch,
    WatchStream,
};
use bytes::Bytes;
use deadlines::Deadlines;
use etcd_client as etcd;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The largest answer berth takes from etcd: far above etcd's 4 MiB default, since a watch
/// that catches up carries many revisions in one message, and ranges are read in pages
/// (`Store::range_all`) to stay well below it.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

fn kv_client(client: &etcd::Client) -> etcd::KvClient {
    client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

/// How long one unary call may take before the store reports etcd unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EtcdStore {
    // Boxed behind an Arc: the client is a few kilobytes of channels and clones share it.
    client: Arc<etcd::Client>,
    endpoints: Arc<Vec<String>>,
    keepalive: Arc<KeepaliveMux>,
    deadlines: Arc<Deadlines>,
    /// Whether the last probe reached a quorum (`contact.rs`).
    contact: Arc<contact::Contact>,
}

impl EtcdSecurity {
    /// The client options these add to `options` (the agent's etcd target uses them too).
    pub fn apply(&self, mut options: etcd::ConnectOptions) -> etcd::ConnectOptions {
        if self.ca_pem.is_some() || self.identity_pem.is_some() {
            let mut tls = etcd::TlsOptions::new();
            if let Some(ca) = &self.ca_pem {
                tls = tls.ca_certificate(etcd::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.identity_pem {
                tls = tls.identity(etcd::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user, password);
        }
        options
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers, so a wrong address fails at start-up with one
    /// clear message instead of at the first request.
    pub async fn connect(endpoints: &[String], security: &EtcdSecurity) -> Result<EtcdStore> {
        let options = security.apply(
            etcd::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(3))
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
                .with_keep_alive_while_idle(true),
        );
        let unreachable = |detail: String| {
            StoreError::Unavailable(format!(
                "cannot reach etcd at {}: {detail}",
                endpoints.join(",")
            ))
        };
        let client = tokio::time::timeout(
            CALL_TIMEOUT,
            etcd::Client::connect(endpoints, Some(options)),
        )
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let store = EtcdStore {
            client: Arc::new(client),
            endpoints: Arc::new(endpoints.to_vec()),
            keepalive: Arc::new(KeepaliveMux::default()),
            deadlines: Arc::default(),
            contact: Arc::new(contact::Contact::new()),
        };
        store
            .status()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        deadlines::spawn_reaper(Arc::downgrade(&store.deadlines), store.client.clone());
        let client = Arc::downgrade(&store.client);
        tokio::spawn(contact::probe_now_and_then(
            Arc::downgrade(&store.contact),
            move || {
                let client = client.clone();
                async move {
                    let client = client.upgrade()?;
                    let mut kv = kv_client(&client);
                    let read = kv.get(vec![0], Some(etcd::GetOptions::new().with_count_only()));
                    Some(
                        match tokio::time::timeout(contact::PROBE_TIMEOUT, read).await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(error)) => Err((classify(error).to_string(), true)),
                            Err(_) => Err((
                                format!(
                                    "a quorum read took over {} ms",
                                    contact::PROBE_TIMEOUT.as_millis()
                                ),
                                false,
                            )),
                        },
                    )
                }
            },
        ));
        Ok(store)
    }

    /// How recently this node reached an etcd quorum, and why not now when it cannot.
    pub fn contact(&self) -> StoreContact {
        self.contact.report()
    }

    /// Runs a call that needs the quorum (see `contact.rs`): refused at once while the quorum
    /// is known to be lost, dropped when it is found lost meanwhile, and noted when it could not
    /// reach etcd (a lost quorum if nothing succeeded for a while).
    async fn with_quorum<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if let Some(why) = self.contact.refuse() {
            return Err(StoreError::Unavailable(why));
        }
        let result = self.contact.unless_lost(call).await;
        if let Err(StoreError::Unavailable(why)) = &result {
            self.contact.failed(why, false);
        }
        result
    }

    /// [`EtcdStore::with_quorum`] for a write: refused up front the same way (nothing was
    /// sent), but once sent, a failure to hear back — cut when the loss is found, out of time,
    /// the connection gone — leaves it unknown whether etcd committed it, and says so.
    async fn write_with_quorum<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if let Some(why) = self.contact.refuse() {
            return Err(StoreError::Unavailable(why));
        }
        match self.with_quorum(call).await {
            Err(StoreError::Unavailable(why)) => Err(StoreError::OutcomeUnknown(why)),
            other => other,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Stops the shared keepalive stream and the deadline checks.
    pub fn close(&self) {
        self.keepalive.close();
        self.deadlines.close();
    }
}

async fn call<T>(future: impl Future<Output = std::result::Result<T, etcd::Error>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(result) => result.map_err(classify),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// Maps etcd's errors to the contract's. Callers refine the ones that need context (which
/// revision, which lease).
fn classify(error: etcd::Error) -> StoreError {
    match &error {
        etcd::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("requested lease not found") {
                StoreError::LeaseNotFound(LeaseId(0))
            } else if message.contains("required revision has been compacted") {
                StoreError::Compacted {
                    requested: Revision(0),
                    oldest_available: None,
                }
            } else if message.contains("required revision is a future revision") {
                StoreError::FutureRevision {
                    requested: Revision(0),
                    current: Revision(0),
                }
            } else if message.contains("too many operations in txn request") {
                StoreError::TooManyOperations {
                    count: 0,
                    limit: crate::MAX_TXN_OPS,
                }
            } else if message.contains("request is too large") {
                StoreError::RequestTooLarge {
                    size: 0,
                    limit: crate::MAX_REQUEST_BYTES,
                }
            } else if matches!(
                i32::from(status.code()),
                GRPC_CANCELLED | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE
            ) {
                StoreError::Unavailable(message.to_string())
            } else {
                StoreError::Storage(format!("etcd: {message}"))
            }
        }
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Storage(format!("etcd: {error}")),
    }
}

// The gRPC status codes that mean "try again later" (grpc/grpc doc/statuscodes.md).
const GRPC_CANCELLED: i32 = 1;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

fn with_lease(error: StoreError, id: LeaseId) -> StoreError {
    match error {
        StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(id),
        other => other,
    }
}

fn with_revision(error: StoreError, requested: Revision, current: Option<Revision>) -> StoreError {
    match error {
        StoreError::Compacted {
            oldest_available, ..
        } => StoreError::Compacted {
            requested,
            oldest_available,
        },
        StoreError::FutureRevision { .. } => StoreError::FutureRevision {
            requested,
            current: current.unwrap_or_default(),
        },
        other => other,
    }
}

fn convert_kv(kv: &etcd::KeyValue) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(kv.key()),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: Revision(kv.create_revision()),
        mod_revision: Revision(kv.mod_revision()),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn convert_op(op: CompareOp) -> etcd::CompareOp {
    match op {
        CompareOp::Equal => etcd::CompareOp::Equal,
        CompareOp::NotEqual => etcd::CompareOp::NotEqual,
        CompareOp::Greater => etcd::CompareOp::Greater,
        CompareOp::Less => etcd::CompareOp::Less,
    }
}

fn convert_compare(compare: &Compare) -> etcd::Compare {
    let key = compare.key.to_vec();
    let op = convert_op(compare.op);
    match &compare.target {
        CompareTarget::Value(value) => etcd::Compare::value(key, op, value.to_vec()),
        CompareTarget::Version(version) => etcd::Compare::version(key, op, *version),
        CompareTarget::CreateRevision(revision) => {
            etcd::Compare::create_revision(key, op, revision.0)
        }
        CompareTarget::ModRevision(revision) => etcd::Compare::mod_revision(key, op, revision.0),
    }
}

fn convert_txn_op(op: &TxnOp) -> etcd::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => etcd::TxnOp::put(
            key.to_vec(),
            value.to_vec(),
            lease.map(|l| etcd::PutOptions::new().with_lease(l.0)),
        ),
        TxnOp::Delete(KeyRange::Key(key)) => etcd::TxnOp::delete(key.to_vec(), None),
        TxnOp::Delete(KeyRange::Prefix(prefix)) => {
            etcd::TxnOp::delete(prefix.to_vec(), Some(delete_prefix_options(prefix)))
        }
    }
}

fn delete_prefix_options(prefix: &[u8]) -> etcd::DeleteOptions {
    if prefix.is_empty() {
        etcd::DeleteOptions::new().with_all_keys()
    } else {
        etcd::DeleteOptions::new().with_prefix()
    }
}

fn header_revision(header: Option<&etcd::ResponseHeader>) -> Revision {
    Revision(header.map_or(0, |h| h.revision()))
}

impl Store for EtcdStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Etcd
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let (key, mut options) = match (&request.range, &request.after) {
            (KeyRange::Key(key), _) => (key.to_vec(), etcd::GetOptions::new()),
            // The next page: from just after the last key, to the prefix's end.
            (KeyRange::Prefix(prefix), Some(after)) => {
                let mut start = after.to_vec();
                start.push(0);
                let start = start.max(prefix.to_vec());
                let end = crate::prefix_end_key(prefix).unwrap_or_else(|| vec![0]);
                (start, etcd::GetOptions::new().with_range(end))
            }
            (KeyRange::Prefix(prefix), None) if prefix.is_empty() => {
                (vec![0], etcd::GetOptions::new().with_from_key())
            }
            (KeyRange::Prefix(prefix), None) => {
                (prefix.to_vec(), etcd::GetOptions::new().with_prefix())
            }
        };
        if let Some(revision) = request.revision {
            if revision.0 <= 0 {
                return Err(StoreError::InvalidRequest(format!(
                    "revision {revision} is not a revision"
                )));
            }
            options = options.with_revision(revision.0);
        }
        if let Some(limit) = request.limit {
            options = options.with_limit(limit as i64);
        }
        let mut kv = kv_client(&self.client);
        let response = self
            .with_quorum(call(kv.get(key, Some(options))))
            .await
            .map_err(|e| match request.revision {
                Some(requested) => with_revision(e, requested, None),
                None => e,
            })?;
        Ok(RangeResponse {
            kvs: response.kvs().iter().map(convert_kv).collect(),
            revision: request
                .revision
                .unwrap_or_else(|| header_revision(response.header())),
            more: response.more(),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate()?;
        let request = etcd::Txn::new()
            .when(txn.compares.iter().map(convert_compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(convert_txn_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(convert_txn_op).collect::<Vec<_>>());
        let mut kv = kv_client(&self.client);
        let response = self
            .write_with_quorum(call(kv.txn(request)))
            .await
            .map_err(|e| {
                // etcd names no lease; report the one the transaction used.
                let lease = txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .find_map(|op| match op {
                        TxnOp::Put { lease, .. } => *lease,
                        TxnOp::Delete(_) => None,
                    });
                with_lease(e, lease.unwrap_or(LeaseId(0)))
            })?;
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision: header_revision(response.header()),
        })
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidRequest(
                "a lease needs a TTL above zero".into(),
            ));
        }
        // etcd counts whole seconds; round up so a lease never lives shorter than asked.
        let seconds = ttl.as_millis().div_ceil(1000).max(1) as i64;
        let mut lease = self.client.lease_client();
        let response = self.with_quorum(call(lease.grant(seconds, None))).await?;
        if !response.error().is_empty() {
            return Err(StoreError::Storage(format!("etcd: {}", response.error())));
        }
        let grant = LeaseGrant {
            id: LeaseId(response.id()),
            ttl: Duration::from_secs(response.ttl().max(0) as u64),
        };
        self.deadlines
            .renewed(grant.id, grant.ttl, crate::clock::monotonic_now());
        Ok(grant)
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<Duration> {
        let result = self
            .with_quorum(self.keepalive.keepalive(&self.client, id))
            .await;
        match &result {
            Ok(ttl) => self
                .deadlines
                .renewed(id, *ttl, crate::clock::monotonic_now()),
            Err(StoreError::LeaseNotFound(_)) => self.deadlines.forget(id),
            Err(_) => {}
        }
        result
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let mut lease = self.client.lease_client();
        let result = self.with_quorum(call(lease.revoke(id.0))).await;
        if !matches!(result, Err(StoreError::Unavailable(_))) {
            self.deadlines.forget(id);
        }
        result.map_err(|e| with_lease(e, id))?;
        Ok(())
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseStatus> {
        let mut lease = self.client.lease_client();
        let response =
            call(lease.time_to_live(id.0, Some(etcd::LeaseTimeToLiveOptions::new().with_keys())))
                .await
                .map_err(|e| with_lease(e, id))?;
        if response.ttl() <= 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        let mut keys: Vec<Bytes> = response
            .keys()
            .iter()
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        keys.sort();
        Ok(LeaseStatus {
            id,
            granted_ttl: Duration::from_secs(response.granted_ttl().max(0) as u64),
            remaining: Duration::from_secs(response.ttl() as u64),
            keys,
        })
    }

    async fn watch(&self, prefix: Bytes, start_revision: Option<Revision>) -> Result<WatchStream> {
        if let Some(revision) = start_revision
            && revision.0 <= 0
        {
            return Err(StoreError::InvalidRequest(format!(
                "watch start revision {revision} is not a revision"
            )));
        }
        // "From now" is from the revision after the current one, fixed here: the watch itself
        // is created a moment later, and must not miss what commits meanwhile.
        let start = match start_revision {
            Some(revision) => revision,
            None => self.status().await?.revision.next(),
        };
        let (sender, stream) = WatchStream::channel();
        tokio::spawn(run_watch(
            self.client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            prefix,
            start,
            sender,
        ));
        Ok(stream)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = kv_client(&self.client);
        call(kv.compact(
            revision.0,
            Some(etcd::CompactionOptions::new().with_physical()),
        ))
        .await
        .map_err(|e| with_revision(e, revision, None))?;
        Ok(())
    }

    async fn status(&self) -> Result<StoreStatus> {
        let mut kv = kv_client(&self.client);
        let response = self
            .with_quorum(call(
                kv.get(vec![0], Some(etcd::GetOptions::new().with_count_only())),
            ))
            .await?;
        Ok(StoreStatus {
            revision: header_revision(response.header()),
            compact_revision: None,
        })
    }
}

/// One watch: follows etcd, splits its responses into per-revision batches, and when the
/// connection drops, watches again from the revision after the last one delivered.
async fn run_watch(
    client: etcd::WatchClient,
    prefix: Bytes,
    mut next: Revision,
    sender: mpsc::Sender<Result<WatchBatch>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut options = etcd::WatchOptions::new().with_prev_key();
        options = if prefix.is_empty() {
            options.with_all_keys()
        } else {
            options.with_prefix()
        };
        options = options.with_start_revision(next.0);
        let mut watch_client = client.clone();
        let opened = tokio::select! {
            opened = watch_client.watch(prefix.to_vec(), Some(options)) => opened,
            () = sender.closed() => return,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "etcd watch could not start; retrying");
                if wait_or_closed(&sender, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = sender.closed() => return,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => break,
            };
            backoff = Duration::from_millis(100);
            // Everything before `next` was delivered, so the store is at least at `next - 1`
            // unless it went back (etcd restored from an older snapshot): watching on would
            // wait for revisions that already meant something else (defect M8).
            // (A cancelled watch's header carries no revision: it is handled below.)
            let current = response
                .header()
                .map(|h| h.revision())
                .filter(|revision| *revision > 0 && !response.canceled())
                .unwrap_or(next.0 - 1);
            if current < next.0 - 1 {
                let _ = sender
                    .send(Err(StoreError::FutureRevision {
                        requested: next,
                        current: Revision(current),
                    }))
                    .await;
                return;
            }
            if response.canceled() {
                let error = if response.compact_revision() > 0 {
                    StoreError::Compacted {
                        requested: next,
                        oldest_available: Some(Revision(response.compact_revision())),
                    }
                } else {
                    StoreError::InvalidRequest(format!(
                        "etcd cancelled the watch: {}",
                        response.cancel_reason()
                    ))
                };
                let _ = sender.send(Err(error)).await;
                return;
            }
            for batch in split_by_revision(response.events()) {
                next = batch.revision.next();
                if sender.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        }
        tracing::warn!("etcd watch stream ended; resuming");
        if wait_or_closed(&sender, &mut backoff).await {
            return;
        }
    }
}

/// Waits out the backoff (doubling it up to 2 s); true when the watcher went away meanwhile.
async fn wait_or_closed(sender: &mpsc::Sender<Result<WatchBatch>>, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = sender.closed() => true,
    }
}

fn split_by_revision(events: &[etcd::Event]) -> Vec<WatchBatch> {
    let mut batches: Vec<WatchBatch> = Vec::new();
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let converted = Event {
            kind: match event.event_type() {
                etcd::EventType::Put => EventKind::Put,
                etcd::EventType::Delete => EventKind::Delete,
            },
            kv: convert_kv(kv),
            prev_kv: event.prev_kv().map(convert_kv),
        };
        let revision = converted.kv.mod_revision;
        match batches.last_mut() {
            Some(batch) if batch.revision == revision => batch.events.push(converted),
            _ => batches.push(WatchBatch {
                revision,
                events: vec![converted],
            }),
        }
    }
    batches
}

type Waiters = Arc<Mutex<HashMap<i64, VecDeque<oneshot::Sender<Result<Duration>>>>>>;

/// One LeaseKeepAlive stream shared by every lease, as etcd's own Go client does: a keepalive
/// is one message on an open stream, not a new RPC. Answers come back in order per lease.
#[derive(Default)]
struct KeepaliveMux {
    connection: tokio::sync::Mutex<MuxState>,
    closed: AtomicBool,
}

#[derive(Default)]
struct MuxState {
    open: Option<KeepaliveConnection>,
    /// The last failed attempt to open the stream: callers that queued behind it fail at once
    /// with its error instead of each trying again in turn (defect M2: during an outage, N
    /// heartbeats failed after 5, 10, … 5·N seconds).
    failed: Option<(tokio::time::Instant, StoreError)>,
}

/// How long a failed open of the keepalive stream answers for the callers after it.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

struct KeepaliveConnection {
    keeper: etcd::LeaseKeeper,
    waiters: Waiters,
    alive: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl KeepaliveMux {
    async fn keepalive(&self, client: &etcd::Client, id: LeaseId) -> Result<Duration> {
        let (answer, answered) = oneshot::channel();
        let mut keeper = {
            let mut state = self.connection.lock().await;
            let usable = state
                .open
                .as_ref()
                .is_some_and(|c| c.alive.load(Ordering::Acquire));
            if !usable {
                if self.closed.load(Ordering::Acquire) {
                    return Err(StoreError::Closed);
                }
                if let Some((at, error)) = &state.failed
                    && at.elapsed() < REOPEN_BACKOFF
                {
                    return Err(error.clone());
                }
                // One bound for the whole open, not one per call in it.
                let opened = tokio::time::timeout(CALL_TIMEOUT, open_keepalive_stream(client))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(
                            "etcd did not open a keepalive stream in time".into(),
                        ))
                    });
                match opened {
                    Ok(connection) => {
                        state.open = Some(connection);
                        state.failed = None;
                    }
                    Err(error) => {
                        state.failed = Some((tokio::time::Instant::now(), error.clone()));
                        return Err(error);
                    }
                }
            }
            let Some(connection) = state.open.as_ref() else {
                return Err(StoreError::Closed);
            };
            lock_waiters(&connection.waiters)
                .entry(id.0)
                .or_default()
                .push_back(answer);
            etcd::LeaseKeeper {
                id: id.0,
                sender: connection.keeper.sender.clone(),
            }
        };
        keeper.keep_alive().await.map_err(classify)?;
        match tokio::time::timeout(CALL_TIMEOUT, answered).await {
            Ok(Ok(result)) => result.map_err(|e| with_lease(e, id)),
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "the etcd keepalive stream closed".into(),
            )),
            Err(_) => Err(StoreError::Unavailable(
                "etcd did not answer the keepalive in time".into(),
            )),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut state) = self.connection.try_lock()
            && let Some(connection) = state.open.take()
        {
            connection.reader.abort();
        }
    }
}

fn lock_waiters(
    waiters: &Waiters,
) -> std::sync::MutexGuard<'_, HashMap<i64, VecDeque<oneshot::Sender<Result<Duration>>>>> {
    waiters.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the shared stream. etcd only opens a keepalive stream for an existing lease, so a
/// short-lived anchor lease opens it and is revoked at once; the stream then serves any lease.
async fn open_keepalive_stream(client: &etcd::Client) -> Result<KeepaliveConnection> {
    let mut lease = client.lease_client();
    let anchor = call(lease.grant(60, None)).await?.id();
    let (keeper, mut responses) = call(lease.keep_alive(anchor)).await?;
    // The anchor's revoke need not hold up the heartbeat that opened the stream.
    tokio::spawn(async move {
        let _ = call(lease.revoke(anchor)).await;
    });
    let waiters: Waiters = Arc::default();
    let alive = Arc::new(AtomicBool::new(true));
    let reader = {
        let waiters = waiters.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            while let Ok(Some(response)) = responses.message().await {
                let waiter = lock_waiters(&waiters)
                    .get_mut(&response.id())
                    .and_then(VecDeque::pop_front);
                if let Some(waiter) = waiter {
                    let result = if response.ttl() > 0 {
                        Ok(Duration::from_secs(response.ttl() as u64))
                    } else {
                        Err(StoreError::LeaseNotFound(LeaseId(response.id())))
                    };
                    let _ = waiter.send(result);
                }
            }
            alive.store(false, Ordering::Release);
            // Waiters still queued get `Unavailable` from their dropped senders.
            lock_waiters(&waiters).clear();
        })
    };
    Ok(KeepaliveConnection {
        keeper,
        waiters,
        alive,
        reader,
    })
}
