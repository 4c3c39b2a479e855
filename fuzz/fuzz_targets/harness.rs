//! The one in-process berth every HTTP fuzz target sends its requests to: the real router on
//! the real registry and an embedded store in a temporary directory, with auth off. A request
//! may get any answer but a 500, and must never panic.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use berth_api::compat::CompatConfig;
use berth_api::heavy::HeavyLimits;
use berth_api::{ApiState, BrowserGuard};
use berth_registry::{Registry, RegistryConfig, SystemWallClock};
use berth_store::AnyStore;
use berth_store::embedded::{EmbeddedOptions, EmbeddedStore};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower::ServiceExt;

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub router: axum::Router,
    _dir: tempfile::TempDir,
}

pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let router = runtime.block_on(async {
            let store = EmbeddedStore::open(EmbeddedOptions::new(dir.path().join("data")))
                .await
                .unwrap();
            let registry = Registry::start(
                AnyStore::Embedded(store),
                RegistryConfig::default(),
                Arc::new(SystemWallClock),
            )
            .await
            .unwrap();
            let state = ApiState::new(
                registry,
                tokio_util::sync::CancellationToken::new(),
                None,
                "fuzz",
                CompatConfig::default(),
                BrowserGuard {
                    allowed_hosts: Vec::new(),
                    loopback_only: true,
                    cors_allowed_origins: Vec::new(),
                },
                HeavyLimits::default(),
            );
            berth_api::build(state)
        });
        Harness {
            runtime,
            router,
            _dir: dir,
        }
    })
}

/// Sends one request; panics on a 500 (the finding), gives up quietly on requests that wait
/// (blocking queries, event streams).
pub fn send(method: &str, uri: &str, content_type: &str, body: Vec<u8>) {
    let harness = harness();
    let Ok(mut request) = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", content_type)
        .body(Body::from(body))
    else {
        return; // not a request a client could send
    };
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
    harness.runtime.block_on(async {
        let answer = tokio::time::timeout(Duration::from_millis(200), async {
            let response = harness.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
                .await
                .unwrap_or_default();
            (status, body)
        })
        .await;
        if let Ok((status, body)) = answer {
            assert_ne!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{method} {uri}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    });
}
