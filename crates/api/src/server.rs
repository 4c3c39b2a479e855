//! The HTTP listener: berth's own accept loop on hyper, so that every connection is bounded.
//! A client has [`Limits::header_read_timeout`] to send a request's head (which also ends a
//! keep-alive connection left idle that long), the server holds at most
//! [`Limits::max_connections`] connections (past it, one answers 503 with `Retry-After` and is
//! closed), and an HTTP/2 connection carries at most [`Limits::h2_max_concurrent_streams`]
//! requests at once. HTTP/1.1 and HTTP/2 (prior knowledge) are told apart by the first bytes,
//! and each runs in a task of its own kind, so an HTTP/1 connection carries nothing of
//! HTTP/2's state.

use crate::ApiState;
use crate::auth::ClientCertificate;
use crate::tls::TlsSettings;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// What one client can hold of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and how long a keep-alive
    /// connection may wait for its next request.
    pub header_read_timeout: Duration,
    /// Requests at once on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 8192,
            header_read_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 32,
        }
    }
}

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// What a connection past the cap is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 110\r\n\r\n\
{\"error\":{\"code\":\"unavailable\",\"message\":\"too many open connections (limit: max_connections)\"}}";

/// Serves until `state.shutdown` is cancelled, then stops accepting, asks every connection to
/// finish its requests in flight (event streams and long polls end at once) and returns when
/// they have.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    limits: Limits,
    tls: Option<TlsSettings>,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let router = crate::build(state);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let open = metrics::gauge!("berth_http_connections");
    let refused = metrics::counter!("berth_http_connections_refused_total");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: not fatal.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refused.increment(1);
            tracker.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let open = open.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            open.increment(1.0);
            match tls {
                None => plain(stream, peer, router, limits, shutdown).await,
                Some(tls) => secure(stream, peer, router, &tls, limits, shutdown).await,
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Tells a connection past the cap to come back later, and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(OVER_CAPACITY)).await;
    let _ = stream.shutdown().await;
}

/// The router for one connection: every request carries the peer's address (lyft's `auto_ip`
/// fallback) and, over mutual TLS, the client certificate's subject.
fn connection_service(
    router: axum::Router,
    peer: SocketAddr,
    certificate: Option<ClientCertificate>,
) -> TowerToHyperService<
    tower::util::MapRequest<
        axum::Router,
        impl FnMut(hyper::Request<hyper::body::Incoming>) -> hyper::Request<hyper::body::Incoming>
        + Clone,
    >,
> {
    TowerToHyperService::new(router.map_request(
        move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            request
        },
    ))
}

/// A plain connection: HTTP/2 when it opens with the HTTP/2 preface, HTTP/1.1 otherwise.
async fn plain(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let mut first = [0u8; H2_PREFACE.len()];
    let peeked = tokio::time::timeout(limits.header_read_timeout, async {
        // A client may send its first bytes in pieces: wait until there are enough to tell.
        loop {
            match stream.peek(&mut first).await {
                Ok(0) => return None,
                Ok(n) if n >= first.len() || !H2_PREFACE.starts_with(&first[..n]) => {
                    return Some(n);
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(_) => return None,
            }
        }
    })
    .await;
    let Ok(Some(peeked)) = peeked else {
        return; // nothing, or not in time: close it
    };
    let http2 = first[..peeked] == *H2_PREFACE;
    let service = connection_service(router, peer, None);
    run_connection(stream, http2, service, limits, shutdown).await;
}

/// A TLS connection: the handshake (within the header read timeout), then HTTP/2 when ALPN
/// chose it, HTTP/1.1 otherwise.
async fn secure(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    tls: &TlsSettings,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let handshake = tokio::time::timeout(limits.header_read_timeout, tls.acceptor().accept(stream));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            metrics::counter!("berth_http_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (_, session) = stream.get_ref();
    let http2 = session.alpn_protocol() == Some(b"h2");
    let certificate = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(crate::tls::subject_name)
        .map(|subject| ClientCertificate {
            subject: subject.into(),
        });
    let service = connection_service(router, peer, certificate);
    run_connection(stream, http2, service, limits, shutdown).await;
}

/// Serves one connection's requests until it closes, or until shutdown asks it to finish.
async fn run_connection<I, S>(
    stream: I,
    http2: bool,
    service: S,
    limits: Limits,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(stream);
    if http2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}
