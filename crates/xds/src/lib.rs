//! xDS v3 for Envoy and proxyless gRPC: aggregated discovery (ADS), state of the world and
//! incremental, over gRPC, and EDS and CDS as services of their own. Clusters, load assignments,
//! API listeners and routes are made from the registry's live feed once per change (`snapshot.rs`)
//! and shared by every stream (`sotw.rs`, `delta.rs`); a stream authenticates with the registry's
//! one check (`authorization: Bearer …` metadata) and may only ask for services its token may read.

mod clients;
mod delta;
pub mod resources;
pub mod snapshot;
mod sotw;

pub use clients::Clients;
pub use snapshot::Coalescing;

use berth_domain::auth::Action;
use berth_registry::Registry;
use berth_registry::auth::{Caller, Credentials};
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use resources::Kind;
use snapshot::Snapshot;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Where xDS is served unless configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7421";

/// The largest message berth takes from or sends to a client (Kuma's value): a first delta
/// request echoes every resource the client has.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Responses queued for one stream: a slow client holds up only its own stream.
const STREAM_QUEUE: usize = 16;

/// The most resource bytes one response carries where the protocol lets a push be split (SotW
/// EDS and RDS, every delta response): a stream's encoder keeps a buffer as large as the
/// largest message it sent, so small responses keep idle streams small.
const RESPONSE_BYTES: usize = 8 * 1024;

/// `items` in groups of at most [`RESPONSE_BYTES`] (by `size`), one item at least per group.
pub(crate) fn in_responses<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        match groups.last_mut() {
            Some(group) if bytes + item_bytes <= RESPONSE_BYTES => {
                group.push(item);
                bytes += item_bytes;
            }
            _ => {
                groups.push(vec![item]);
                bytes = item_bytes;
            }
        }
    }
    groups
}

/// What every stream shares.
pub(crate) struct Shared {
    registry: Registry,
    resources: Arc<snapshot::Resources>,
    clients: Arc<Clients>,
    shutdown: CancellationToken,
}

impl Shared {
    /// Whether `caller` may have the resources named `name`: a service's need a read grant on
    /// it; bender's frontends and backends (`frontend/…`, `backend/…`) are the catalog's and
    /// need `catalog:read`.
    fn may_read(&self, caller: &Caller, name: &str) -> bool {
        let action =
            if name.starts_with(resources::FRONTEND) || name.starts_with(resources::BACKEND) {
                Action::CatalogRead
            } else {
                Action::ReadService(name)
            };
        self.registry.authorize(caller, &action).is_ok()
    }
}

/// One stream of either protocol: who it is, its entry in [`Clients`], and per resource type
/// the protocol's state.
pub(crate) struct Stream<P> {
    shared: Arc<Shared>,
    caller: Caller,
    entry: clients::ClientEntry,
    types: HashMap<Kind, P>,
    nonces: u64,
    /// The client's locality, from its node: its zone first in load assignments.
    locality: Option<resources::ClientLocality>,
}

impl<P> Stream<P> {
    /// Takes the node a request names: shown in `/v1/xds/clients`, its locality used.
    fn identify(&mut self, node: &envoy_types::pb::envoy::config::core::v3::Node) {
        self.entry.identify(node);
        self.locality = node
            .locality
            .as_ref()
            .map(|locality| resources::ClientLocality {
                region: locality.region.clone(),
                zone: locality.zone.clone(),
            });
    }
}

/// What differs between state of the world and delta: a protocol's per-type state, how it
/// takes a request, and what it answers for a type at a snapshot.
pub(crate) trait Protocol: Default + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// As `/v1/xds/clients` shows it.
    const NAME: &'static str;
    /// Takes a request (its ACK or NACK and its subscription); the type to answer for, if any.
    fn on_request(
        stream: &mut Stream<Self>,
        request: Self::Request,
    ) -> Result<Option<Kind>, Status>;
    /// What the stream needs sent for `kind` now.
    fn respond(stream: &mut Stream<Self>, kind: Kind, snapshot: &Snapshot) -> Vec<Self::Response>;
}

/// Serves one stream until the client or the server ends it: answers each request, pushes
/// each new snapshot in make-before-break order, and ends on shutdown or when the stream's
/// token is revoked. A stream of a one-type service (EDS, CDS) is `only` that type: a request
/// for another ends it.
async fn drive<P: Protocol>(
    shared: Arc<Shared>,
    caller: Caller,
    only: Option<Kind>,
    mut requests: tonic::Streaming<P::Request>,
    responses: mpsc::Sender<Answer<P::Response>>,
) {
    let mut snapshots = shared.resources.subscribe();
    let mut stream: Stream<P> = Stream {
        entry: shared.clients.open(P::NAME),
        shared: shared.clone(),
        caller,
        types: HashMap::new(),
        nonces: 0,
        locality: None,
    };
    loop {
        let (snapshot, kinds) = tokio::select! {
            request = requests.message() => {
                let request = match request {
                    Ok(Some(request)) => request,
                    Ok(None) | Err(_) => return,
                };
                match P::on_request(&mut stream, request) {
                    Ok(Some(kind)) if only.is_some_and(|only| only != kind) => {
                        let only = only.map_or("", Kind::type_url);
                        let status = Status::invalid_argument(format!(
                            "this service serves only {only}; ask for {} on its own service \
                             or on ADS",
                            kind.type_url()
                        ));
                        let _ = responses.send(Box::new(Err(status))).await;
                        return;
                    }
                    Ok(Some(kind)) => (snapshots.borrow_and_update().clone(), vec![kind]),
                    Ok(None) => continue,
                    Err(status) => {
                        let _ = responses.send(Box::new(Err(status))).await;
                        return;
                    }
                }
            }
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                (snapshots.borrow_and_update().clone(), Kind::ALL.to_vec())
            }
            () = shared.shutdown.cancelled() => return,
            () = shared.registry.revoked(&stream.caller) => {
                let _ = responses
                    .send(Box::new(Err(Status::unauthenticated(
                        "the stream's token was revoked",
                    ))))
                    .await;
                return;
            }
        };
        for kind in kinds {
            for response in P::respond(&mut stream, kind, &snapshot) {
                if responses.send(Box::new(Ok(response))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The service a resource of `kind` named `name` belongs to (a gRPC listener may carry a
/// port: `S:50051`).
pub(crate) fn service_of(kind: Kind, name: &str) -> &str {
    match kind {
        Kind::Listener => resources::service_of_target(name),
        _ => name,
    }
}

/// The xDS surface: its resources follow the registry from the moment it is made.
pub struct Xds {
    shared: Arc<Shared>,
}

impl Xds {
    pub fn new(registry: Registry, coalescing: Coalescing) -> Xds {
        let resources = snapshot::start(&registry, coalescing);
        Xds {
            shared: Arc::new(Shared {
                registry,
                resources,
                clients: Arc::default(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The connected streams (for `GET /v1/xds/clients`).
    pub fn clients(&self) -> Arc<Clients> {
        self.shared.clients.clone()
    }

    /// Serves ADS on `listener` until `shutdown` resolves; open streams end then too. With
    /// `tls`, every connection is a TLS one, handshaken with the acceptor it returns at that
    /// moment (so reloaded certificates apply to new connections).
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<XdsTls>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let streams_end = self.shared.shutdown.clone();
        let server = Server {
            shared: self.shared,
            subject_of: tls.as_ref().map(|tls| tls.subject_of),
        };
        let aggregated = AggregatedDiscoveryServiceServer::new(server.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let endpoints = EndpointDiscoveryServiceServer::new(server.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let clusters = ClusterDiscoveryServiceServer::new(server)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let shutdown = async move {
            shutdown.await;
            streams_end.cancel();
        };
        let mut server = tonic::transport::Server::builder();
        let router = server
            .add_service(aggregated)
            .add_service(endpoints)
            .add_service(clusters);
        match tls {
            None => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                    .await
            }
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls_incoming(listener, tls.acceptors), shutdown)
                    .await
            }
        }
        .map_err(std::io::Error::other)
    }
}

/// The acceptor for a new TLS connection, with the certificates of the moment.
pub type TlsAcceptors = Arc<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>;

/// The name a verified client certificate gives its holder (the HTTP listener's rule, so one
/// certificate is the same caller on both).
pub type CertificateSubject =
    fn(&tokio_rustls::rustls::pki_types::CertificateDer<'_>) -> Option<String>;

/// TLS on the xDS listener: the acceptor of the moment (with a client CA configured, it asks
/// for client certificates), and how a certificate it verified names the caller.
pub struct XdsTls {
    pub acceptors: TlsAcceptors,
    pub subject_of: CertificateSubject,
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The TLS connections of `listener`: each handshake runs on its own, so a slow client holds
/// up nobody; one that fails or takes too long is dropped and counted.
fn tls_incoming(
    listener: TcpListener,
    acceptors: TlsAcceptors,
) -> ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "xds: accepting a connection failed");
                        continue;
                    }
                },
                () = sender.closed() => return,
            };
            let (acceptor, sender) = (acceptors(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    _ => metrics::counter!("berth_xds_tls_handshake_failures_total").increment(1),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

#[derive(Clone)]
struct Server {
    shared: Arc<Shared>,
    /// With TLS: a verified client certificate stands in for a token, as on HTTP.
    subject_of: Option<CertificateSubject>,
}

/// A stream's queued answers, boxed: the queue's slots stay small (a `Status` is large), which
/// keeps an idle stream small.
type Answer<R> = Box<Result<R, Status>>;

/// A stream's answers as tonic's encoder takes them: one at a time. The encoder packs every
/// answer that is ready at once into one buffer (until 32 KiB) and keeps that buffer's capacity
/// for the stream's life, so a burst of responses (a client's first load assignments) would
/// leave every idle stream holding tens of KiB; handed one at a time, the buffer stays the size
/// of one response.
pub(crate) struct Answers<R> {
    queue: mpsc::Receiver<Answer<R>>,
    just_answered: bool,
}

fn answers<R>(queue: mpsc::Receiver<Answer<R>>) -> Answers<R> {
    Answers {
        queue,
        just_answered: false,
    }
}

impl<R> futures::Stream for Answers<R> {
    type Item = Result<R, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if std::mem::take(&mut self.just_answered) {
            // Pending once after each answer: the encoder sends what it holds, and the wake
            // brings it straight back for the next.
            context.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let answer = std::task::ready!(self.queue.poll_recv(context));
        self.just_answered = answer.is_some();
        std::task::Poll::Ready(answer.map(|answer| *answer))
    }
}

impl Server {
    /// The one auth check: the stream's token (`authorization: Bearer …`), its connection's
    /// verified client certificate, or none.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let secret = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let subject = self.subject_of.and_then(|subject_of| {
            let certificates = request.peer_certs()?;
            subject_of(certificates.first()?)
        });
        let credentials = match (subject.as_deref(), secret) {
            (Some(subject), secret) => Credentials::Certificate { subject, secret },
            (None, Some(secret)) => Credentials::Secret(secret),
            (None, None) => Credentials::None,
        };
        self.shared
            .registry
            .authenticate(credentials)
            .await
            .map_err(|error| Status::unauthenticated(error.to_string()))
    }

    /// Opens a stream of protocol `P` (of every type on ADS, `only` one on EDS and CDS).
    async fn open<P: Protocol>(
        &self,
        request: Request<tonic::Streaming<P::Request>>,
        only: Option<Kind>,
    ) -> Result<Response<Answers<P::Response>>, Status> {
        let caller = self.caller(&request).await?;
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(drive::<P>(
            self.shared.clone(),
            caller,
            only,
            request.into_inner(),
            sender,
        ));
        Ok(Response::new(answers(receiver)))
    }
}

/// The one-shot fetch of the REST-era API: berth serves xDS as streams only.
fn no_fetch() -> Status {
    Status::unimplemented("berth serves xDS as streams: use the Stream or Delta method (or ADS)")
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Server {
    type StreamAggregatedResourcesStream = Answers<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Answers<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open::<sotw::TypeState>(request, None).await
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open::<delta::TypeState>(request, None).await
    }
}

/// EDS on its own (a data plane with static clusters of type EDS, as lyft's SDS clients had).
#[tonic::async_trait]
impl EndpointDiscoveryService for Server {
    type StreamEndpointsStream = Answers<DiscoveryResponse>;
    type DeltaEndpointsStream = Answers<DeltaDiscoveryResponse>;

    async fn stream_endpoints(
        &self,
        request: Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamEndpointsStream>, Status> {
        self.open::<sotw::TypeState>(request, Some(Kind::Endpoints))
            .await
    }

    async fn delta_endpoints(
        &self,
        request: Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaEndpointsStream>, Status> {
        self.open::<delta::TypeState>(request, Some(Kind::Endpoints))
            .await
    }

    async fn fetch_endpoints(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(no_fetch())
    }
}

/// CDS on its own. Its clusters name ADS for their endpoints, as on ADS.
#[tonic::async_trait]
impl ClusterDiscoveryService for Server {
    type StreamClustersStream = Answers<DiscoveryResponse>;
    type DeltaClustersStream = Answers<DeltaDiscoveryResponse>;

    async fn stream_clusters(
        &self,
        request: Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        self.open::<sotw::TypeState>(request, Some(Kind::Cluster))
            .await
    }

    async fn delta_clusters(
        &self,
        request: Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaClustersStream>, Status> {
        self.open::<delta::TypeState>(request, Some(Kind::Cluster))
            .await
    }

    async fn fetch_clusters(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(no_fetch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_split_by_bytes_with_one_item_at_least() {
        let sizes = vec![5_000, 3_000, 1_000, 20_000, 5];
        let groups = in_responses(sizes, |size| *size);
        assert_eq!(
            groups,
            vec![vec![5_000, 3_000], vec![1_000], vec![20_000], vec![5]]
        );
        assert!(in_responses(Vec::<usize>::new(), |size| *size).is_empty());
    }

    #[test]
    fn answers_reach_the_encoder_one_at_a_time() {
        use futures::Stream;
        use std::task::{Context, Poll};
        let (sender, receiver) = mpsc::channel(4);
        for n in 0..2 {
            sender.try_send(Box::new(Ok(n))).unwrap();
        }
        drop(sender);
        let mut answers = answers::<i32>(receiver);
        let mut context = Context::from_waker(std::task::Waker::noop());
        let mut next = || std::pin::Pin::new(&mut answers).poll_next(&mut context);
        assert!(matches!(next(), Poll::Ready(Some(Ok(0)))));
        assert!(next().is_pending(), "a pending turn after each answer");
        assert!(matches!(next(), Poll::Ready(Some(Ok(1)))));
        assert!(next().is_pending());
        assert!(matches!(next(), Poll::Ready(None)));
    }
}
