//! `berth serve`: wires the store, the registry and the HTTP surfaces together, and stops them
//! in order on SIGTERM or SIGINT (stop accepting, drain, flush the store, exit 0).

use anyhow::Context;
use berth::config::ServeConfig;
use berth_api::tls::TlsSettings;
use berth_api::{ApiState, MetricsRenderer};
use berth_registry::{Registry, RegistryConfig, SystemWallClock};
use berth_store::embedded::EmbeddedOptions;
use berth_store::{StoreLocation, open_store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long berth keeps answering (503) after its store failed, before it exits.
const STORE_FAILURE_GRACE: Duration = Duration::from_secs(2);

/// How long requests in flight may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs the Prometheus recorder (histograms with explicit buckets) and returns what renders
/// `/metrics`.
pub(crate) fn install_metrics() -> anyhow::Result<MetricsRenderer> {
    let latency = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .set_buckets_for_metric(
            Matcher::Full("berth_store_commit_batch_size".into()),
            &sizes,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is already installed")?;
    berth::metrics_help::describe_all();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one ends the process at once.
pub(crate) fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down: no new connections, draining"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutting down: no new connections, draining"),
        }
        shutdown.cancel();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    Ok(())
}

/// Reads the TLS certificate and key again on every SIGHUP: new connections get them, open ones
/// keep theirs; files that do not load are logged and the old ones stay.
fn spawn_certificate_reloader(tls: TlsSettings) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert_file = %tls.files().cert_file.display(),
                    "TLS certificates reloaded"
                ),
                Err(error) => {
                    tracing::error!(%error, "TLS certificates not reloaded; keeping the old ones")
                }
            }
        }
    });
    Ok(())
}

/// One listener of the server: its name (for logs), where it listens, and what serves it
/// until the shutdown token is cancelled. A new protocol is one more of these.
struct Surface {
    name: &'static str,
    address: std::net::SocketAddr,
    serve: futures::future::BoxFuture<'static, std::io::Result<()>>,
}

/// Binds `address` for `name`, with the address in the error.
async fn bind(name: &str, address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("{name}: cannot listen on {address}"))
}

/// Binds DNS's UDP socket and TCP listener on one address (with port 0, one free port for
/// both).
async fn bind_dns(
    address: &str,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let context = || format!("dns: cannot listen on {address} (--dns-listen off turns DNS off)");
    for _ in 0..10 {
        let udp = tokio::net::UdpSocket::bind(address)
            .await
            .with_context(context)?;
        match tokio::net::TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The free UDP port may be taken on TCP: try another.
            Err(_) if udp.local_addr()?.port() != 0 && address.ends_with(":0") => continue,
            Err(error) => return Err(error).with_context(context),
        }
    }
    anyhow::bail!("dns: no port free on both UDP and TCP for {address}")
}

pub async fn run(config: ServeConfig, unknown_env: Vec<String>) -> anyhow::Result<()> {
    for name in unknown_env {
        tracing::warn!(variable = %name, "unknown BERTH_ environment variable ignored (a typo?)");
    }
    let metrics = install_metrics()?;
    let http = bind("http", &config.listen).await?;

    let mut embedded = EmbeddedOptions::new(&config.data_dir);
    embedded.retained_revisions = config.history_revisions;
    embedded.retained_bytes = config.history_bytes;
    embedded.cache_bytes = config.cache_bytes;
    let tls = config
        .tls
        .clone()
        .map(TlsSettings::load)
        .transpose()
        .context("tls")?;
    let store = open_store(&config.store, embedded, &config.etcd).await?;
    let registry = Registry::start(
        store.clone(),
        RegistryConfig {
            instance_defaults: berth_domain::InstanceDefaults {
                ttl: config.default_ttl,
                ..berth_domain::InstanceDefaults::default()
            },
            ports: config.ports.clone(),
            auth: config.auth.clone(),
            caps: config.caps,
            journal: config.journal,
            ..RegistryConfig::default()
        },
        Arc::new(SystemWallClock),
    )
    .await
    .context("cannot load the registry from the store")?;
    if config.auth.enabled {
        if let Some(secret) = &config.bootstrap_token {
            registry
                .ensure_bootstrap_token(secret)
                .await
                .context("auth.bootstrap_token_file")?;
        } else if registry.tokens().await?.is_empty() {
            anyhow::bail!(
                "auth is on and the store holds no token: give the first administrator's token \
                 with --bootstrap-token-file FILE (see docs/security.md)"
            );
        }
    }

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    if let Some(tls) = &tls {
        spawn_certificate_reloader(tls.clone())?;
    }
    if config.lyft_cache_ttl_given {
        tracing::info!(
            "lyft's CACHE_TTL is accepted and not needed: berth never serves a stale read"
        );
    }
    let mut state = ApiState::new(
        registry.clone(),
        shutdown.clone(),
        Some(metrics),
        env!("CARGO_PKG_VERSION"),
        config.compat.clone(),
        config.browsers.clone(),
        config.heavy,
    );
    let mut surfaces = Vec::new();
    if let Some(address) = &config.xds_listen {
        let listener = bind("xds", address).await?;
        let xds = berth_xds::Xds::new(registry.clone(), berth_xds::Coalescing::default());
        let clients = xds.clients();
        state = state.with_xds_clients(Arc::new(move || clients.report()));
        let shutdown = shutdown.clone();
        surfaces.push(Surface {
            name: "xds",
            address: listener.local_addr()?,
            serve: Box::pin(xds.serve(
                listener,
                tls.clone().map(|tls| berth_xds::XdsTls {
                    acceptors: Arc::new(move || tls.acceptor()),
                    subject_of: berth_api::tls::subject_name,
                }),
                async move { shutdown.cancelled().await },
            )),
        });
    }
    // DNS first: its `listening` line comes before HTTP's, which tests wait for.
    if let Some(address) = &config.dns_listen {
        let (udp, tcp) = bind_dns(address).await?;
        let shutdown = shutdown.clone();
        surfaces.push(Surface {
            name: "dns",
            address: udp.local_addr()?,
            serve: Box::pin(berth_dns::serve(
                registry.clone(),
                config.dns.clone(),
                udp,
                tcp,
                async move { shutdown.cancelled().await },
            )),
        });
    }
    surfaces.push(Surface {
        name: "http",
        address: http.local_addr()?,
        serve: Box::pin(berth_api::serve(
            http,
            state,
            config.connection_limits,
            tls.clone(),
        )),
    });
    let data_dir = match &config.store {
        StoreLocation::Embedded => Some(config.data_dir.display().to_string()),
        StoreLocation::Etcd { .. } => None,
    };
    let mutual_tls = config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_file.is_some());
    tracing::info!(
        store = %config.store,
        data_dir = data_dir.as_deref().unwrap_or("-"),
        version = env!("CARGO_PKG_VERSION"),
        auth = config.auth.enabled,
        tls = tls.is_some(),
        mutual_tls,
        "started"
    );
    if !config.auth.enabled && !config.browsers.loopback_only && !mutual_tls {
        tracing::warn!(
            "auth is off on a listener reachable from the network (--allow-unauthenticated): \
             anyone who reaches it can change everything"
        );
    }
    // A store that can no longer write (a full or failing disk) ends the process, non-zero,
    // so a supervisor restarts it: never a server that looks alive while nothing expires.
    let store_failure = std::sync::Arc::new(std::sync::OnceLock::new());
    {
        let (store, shutdown, store_failure) =
            (store.clone(), shutdown.clone(), store_failure.clone());
        tokio::spawn(async move {
            let cause = store.failed().await;
            tracing::error!(
                %cause,
                "the store failed and takes no more writes: berth exits so that its supervisor \
                 restarts it (nothing acknowledged is lost; /health answers 503 meanwhile)"
            );
            let _ = store_failure.set(cause);
            // Time for requests in flight to get their 503 and for a probe to see /health.
            tokio::time::sleep(STORE_FAILURE_GRACE).await;
            shutdown.cancel();
        });
    }
    serve_until_shutdown(surfaces, &shutdown).await;
    if let Some(cause) = store_failure.get() {
        drop(registry);
        let _ = store.close().await;
        anyhow::bail!("the store failed: {cause}");
    }
    drop(registry);
    store
        .close()
        .await
        .context("flushing the store at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs every surface until the shutdown token is cancelled (or one of them fails, which
/// starts the shutdown too), then waits for all of them to drain, at most `DRAIN_TIMEOUT`.
async fn serve_until_shutdown(surfaces: Vec<Surface>, shutdown: &CancellationToken) {
    let mut running = tokio::task::JoinSet::new();
    for surface in surfaces {
        let name = surface.name;
        // With `--listen 127.0.0.1:0`, this line is how a test learns the address it got.
        tracing::info!(surface = name, address = %surface.address, "listening");
        let serve = surface.serve;
        running.spawn(async move { (name, serve.await) });
    }
    let report =
        |finished: Result<(&str, std::io::Result<()>), tokio::task::JoinError>| match finished {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(error))) => tracing::error!(surface = name, %error, "a server failed"),
            Err(error) => tracing::error!(%error, "a server task failed"),
        };
    tokio::select! {
        Some(finished) = running.join_next() => {
            report(finished);
            shutdown.cancel();
        }
        () = shutdown.cancelled() => {}
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(finished) = running.join_next().await {
            report(finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout = ?DRAIN_TIMEOUT,
            "requests still running after the drain timeout; closing anyway"
        );
        running.abort_all();
    }
}
