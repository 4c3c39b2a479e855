//! `berth agent`: the Docker registrar's command line, metrics endpoint and signals, around
//! `berth_agent::run`.

use crate::cli::ConnectionArgs;
use crate::serve::{install_metrics, spawn_signal_handler};
use anyhow::{Context, bail};
use berth::config::LogFormat;
use berth_agent::targets::{BerthTarget, Target};
#[cfg(feature = "etcd")]
use berth_agent::targets::{EtcdConnectOptions, EtcdLayout, EtcdTarget};
use berth_agent::{AgentConfig, Mode, Placement};
use clap::{Args, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Records carry a TTL, renewed every TTL/3: they expire by themselves when the host or
    /// the agent dies
    #[default]
    Ttl,
    /// Records do not expire; each resync removes what stopped (service-registrar's default)
    Prune,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The Docker engine: unix:///path/to/docker.sock or tcp://host:port
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker: String,
    /// Where to register: berth://host:port[,host:port…] (several servers: failover), or
    /// etcd://host:port[,host:port…] for service-registrar's key layout. Repeatable for more
    /// berth servers
    #[arg(
        long = "target",
        env = "BERTH_AGENT_TARGET",
        default_value = "berth://127.0.0.1:7420",
        value_name = "URL"
    )]
    pub targets: Vec<String>,
    /// berth servers as the CLI names them: http(s)://host:port, several separated by commas
    /// (failover on connection errors and 503s); takes the place of --target
    #[arg(long, env = "BERTH_ADDR", value_name = "URL[,URL…]")]
    pub server: Option<String>,
    /// How records stay alive
    #[arg(long, value_enum, env = "BERTH_AGENT_MODE", default_value_t)]
    pub mode: ModeArg,
    /// ttl mode: the records' TTL (renewed every third of it)
    #[arg(long, env = "BERTH_AGENT_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// How often the full resync runs
    #[arg(long, env = "BERTH_AGENT_RESYNC", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// The address published ports are reached at [default: this host's primary address]
    #[arg(long, env = "BERTH_AGENT_ADVERTISE")]
    pub advertise: Option<IpAddr>,
    /// This host's id, in every record's id and metadata [default: the host name]
    #[arg(long, env = "BERTH_AGENT_HOST_ID")]
    pub host_id: Option<String>,
    /// Register containers' own addresses and container ports (for user-defined networks)
    /// instead of published ports
    #[arg(long, env = "BERTH_AGENT_INTERNAL")]
    pub internal: bool,
    /// With --internal: the network whose address to register [default: the first by name]
    #[arg(long, env = "BERTH_AGENT_INTERNAL_NETWORK", requires = "internal")]
    pub internal_network: Option<String>,
    /// Tags added to every record (comma separated)
    #[arg(long, env = "BERTH_AGENT_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Register only containers with this label (KEY or KEY=VALUE)
    #[arg(long, env = "BERTH_AGENT_ONLY_LABEL", value_name = "LABEL")]
    pub only_label: Option<String>,
    /// Leave the records in place when the agent stops (default: deregister them)
    #[arg(long, env = "BERTH_AGENT_KEEP_ON_EXIT")]
    pub keep_on_exit: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, env = "BERTH_AGENT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// etcd target: the key prefix
    #[arg(long, env = "BERTH_AGENT_ETCD_PREFIX", default_value = "/services")]
    pub etcd_prefix: String,
    /// etcd target: the key path, comma-separated TYPE:NAME elements (environment:X, string:X,
    /// service:PORT, service:HOST_PORT, service:HOSTNAME or service:<document field>)
    #[arg(long, env = "BERTH_AGENT_ETCD_PATH", default_value = berth_agent::targets::DEFAULT_PATH)]
    pub etcd_path: String,
    /// etcd target: copy each container's whole environment into its document (`env`), as
    /// service-registrar did. Off by default: environments hold secrets
    #[arg(long, env = "BERTH_AGENT_PUBLISH_ENV")]
    pub publish_env: bool,
    /// berth target: the token, and TLS (https:// or berths:// targets)
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Log format
    #[arg(long, value_enum, env = "BERTH_LOG_FORMAT", default_value_t)]
    pub log_format: LogFormat,
    /// Log filter (error, warn, info, debug, or a tracing filter)
    #[arg(long, env = "BERTH_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// How the agent reaches an etcd with TLS or authentication on (the same settings as
/// `berth serve`'s).
#[derive(Args, Debug, Default)]
pub struct EtcdArgs {
    /// etcd target over TLS: the authorities (PEM) that signed etcd's certificate
    #[arg(long, env = "BERTH_ETCD_CA_FILE", value_name = "FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// etcd target: a client certificate (PEM), for an etcd with --client-cert-auth
    #[arg(
        long,
        env = "BERTH_ETCD_CERT_FILE",
        value_name = "FILE",
        requires = "etcd_key_file"
    )]
    pub etcd_cert_file: Option<PathBuf>,
    /// etcd target: the private key (PEM) of --etcd-cert-file
    #[arg(
        long,
        env = "BERTH_ETCD_KEY_FILE",
        value_name = "FILE",
        requires = "etcd_cert_file"
    )]
    pub etcd_key_file: Option<PathBuf>,
    /// etcd target: a user, for an etcd with authentication enabled
    #[arg(long, env = "BERTH_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// etcd target: a file holding the user's password
    #[arg(
        long,
        env = "BERTH_ETCD_PASSWORD_FILE",
        value_name = "FILE",
        requires = "etcd_user"
    )]
    pub etcd_password_file: Option<PathBuf>,
}

/// The host's primary address: the one its default route leaves from (no packet is sent).
fn primary_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Checks the settings before anything starts, naming the one that is wrong.
pub fn validate(args: &AgentArgs) -> anyhow::Result<()> {
    if args.ttl < berth_domain::MIN_TTL || args.ttl > berth_domain::MAX_TTL {
        bail!("--ttl: {:?} is outside 1s to 24h", args.ttl);
    }
    if args.resync < Duration::from_secs(1) {
        bail!("--resync: {:?} is shorter than 1s", args.resync);
    }
    if let Some(host_id) = &args.host_id
        && (host_id.is_empty() || host_id.contains(['/', ':', ' ']))
    {
        bail!("--host-id: {host_id:?} must be non-empty, without '/', ':' or spaces");
    }
    let schemes: Vec<&str> = args
        .targets
        .iter()
        .map(|t| t.split_once("://").map_or("", |(scheme, _)| scheme))
        .collect();
    if let Some(bad) = schemes.iter().position(|s| !matches!(*s, "berth" | "etcd")) {
        bail!(
            "--target: {:?} is neither berth://host:port nor etcd://host:port",
            args.targets[bad]
        );
    }
    if schemes.contains(&"etcd") && args.targets.len() > 1 {
        bail!("--target: an etcd target is one URL (etcd://host:port,host:port for a cluster)");
    }
    #[cfg(feature = "etcd")]
    EtcdLayout::new(&args.etcd_prefix, &args.etcd_path)
        .map_err(|e| anyhow::anyhow!("--etcd-path: {e}"))?;
    #[cfg(not(feature = "etcd"))]
    if schemes.contains(&"etcd") {
        bail!("--target: this berth was built without etcd support");
    }
    Ok(())
}

/// `scheme://a:1,b:2` → [`a:1`, `b:2`].
fn hosts(url: &str) -> Vec<String> {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

/// The berth servers' base URLs, in failover order: `berths://` and `https://` targets are
/// reached over TLS.
fn berth_bases(targets: &[String]) -> Vec<String> {
    targets
        .iter()
        .flat_map(|target| {
            let scheme = if target.starts_with("berths://") || target.starts_with("https://") {
                "https"
            } else {
                "http"
            };
            hosts(target)
                .into_iter()
                .map(move |host| format!("{scheme}://{host}"))
        })
        .collect()
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let renderer = install_metrics()?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let host_id = args.host_id.clone().unwrap_or_else(host_name);
    let advertise = match args.advertise {
        Some(address) => address,
        None => primary_address().unwrap_or_else(|| {
            tracing::warn!("no default route: advertising 127.0.0.1 (set --advertise)");
            IpAddr::from([127, 0, 0, 1])
        }),
    };
    let mode = match args.mode {
        ModeArg::Ttl => Mode::Ttl,
        ModeArg::Prune => Mode::Prune,
    };
    // --server (or BERTH_ADDR) names berth servers the way the CLI does, and wins over --target.
    let bases = match &args.server {
        Some(servers) => berth_client::split_servers(servers),
        None => berth_bases(&args.targets),
    };
    let is_etcd = args.server.is_none() && args.targets[0].starts_with("etcd://");
    // On berth every instance has a TTL: in prune mode the longest, renewed at each resync.
    let ttl = match (mode, is_etcd) {
        (Mode::Prune, false) => berth_domain::MAX_TTL,
        _ => args.ttl,
    };
    let client_options = args.connection.options()?;
    #[cfg(feature = "etcd")]
    let etcd_security = berth::config::etcd_security(
        args.etcd.etcd_ca_file.as_deref(),
        args.etcd.etcd_cert_file.as_deref(),
        args.etcd.etcd_key_file.as_deref(),
        args.etcd.etcd_user.as_deref(),
        args.etcd.etcd_password_file.as_deref(),
    )?;
    #[cfg(feature = "etcd")]
    let target = if is_etcd {
        let mut layout = EtcdLayout::new(&args.etcd_prefix, &args.etcd_path)
            .map_err(|e| anyhow::anyhow!("--etcd-path: {e}"))?;
        layout.publish_env = args.publish_env;
        let lease = (mode == Mode::Ttl).then_some(args.ttl);
        Target::Etcd(Box::new(
            EtcdTarget::connect(
                &hosts(&args.targets[0]),
                layout,
                &host_id,
                lease,
                Some(
                    etcd_security.apply(
                        EtcdConnectOptions::new()
                            .with_connect_timeout(Duration::from_secs(3))
                            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5)),
                    ),
                ),
            )
            .await
            .context("cannot use the etcd target")?,
        ))
    } else {
        Target::Berth(BerthTarget::new(&bases, &host_id, &client_options)?)
    };
    #[cfg(not(feature = "etcd"))]
    let target = Target::Berth(BerthTarget::new(&bases, &host_id, &client_options)?);
    let docker = berth_agent::connect_docker(&args.docker).await?;
    if let Some(address) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for metrics"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let renderer = renderer.clone();
                async move { renderer() }
            }),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the metrics server failed");
            }
        });
    }
    let config = AgentConfig {
        placement: Placement {
            host_id,
            advertise,
            internal: args.internal,
            internal_network: args.internal_network,
            extra_tags: args.tags,
            ttl,
            only_label: args.only_label.map(|label| match label.split_once('=') {
                Some((key, value)) => (key.to_string(), Some(value.to_string())),
                None => (label, None),
            }),
        },
        mode,
        resync: args.resync,
        keep_on_exit: args.keep_on_exit,
    };
    berth_agent::run(config, docker, target, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
