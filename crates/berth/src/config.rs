//! `berth serve`'s configuration: flags, then `BERTH_*` environment variables, then the TOML
//! file, then defaults. The file is parsed strictly: an unknown key is an error naming it.

use anyhow::{Context, bail};
use berth_api::compat::CompatConfig;
use berth_domain::catalog::allocator::PortRange;
use berth_store::StoreLocation;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The serve flags. Each one can also come from its environment variable, and from the config
/// file; flags win over the environment, which wins over the file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file (keys as below, e.g. `listen = "0.0.0.0:7420"`)
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for HTTP (port 0 picks a free port) [default: 127.0.0.1:7420]
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Where the embedded store keeps its file [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `embedded` (one file in the data directory) or `etcd://host:port[,host:port…]`
    /// (several berth nodes sharing an etcd cluster) [default: embedded]
    #[arg(long, env = "BERTH_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// Log as human-readable text or as one JSON object per line [default: text]
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `berth_registry=debug,info` [default: info]
    #[arg(long, env = "BERTH_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// TTL of an instance that registers without one, e.g. `30s` [default: 30s]
    #[arg(long, env = "BERTH_DEFAULT_TTL", value_name = "DURATION")]
    pub default_ttl: Option<String>,
    /// Revisions of history the embedded store keeps for watches and event resumes
    /// [default: 100000]
    #[arg(long, env = "BERTH_HISTORY_REVISIONS", value_name = "N")]
    pub history_revisions: Option<i64>,
    /// The first port block the allocator uses [default: 6000]
    #[arg(long, env = "BERTH_PORTS_START", value_name = "PORT")]
    pub ports_start: Option<u16>,
    /// Ports per block (an application family shares a block) [default: 10]
    #[arg(long, env = "BERTH_PORTS_BLOCK_SIZE", value_name = "N")]
    pub ports_block_size: Option<u16>,
    /// No port above this is allocated [default: 65000]
    #[arg(long, env = "BERTH_PORTS_CEILING", value_name = "PORT")]
    pub ports_ceiling: Option<u16>,
    /// Ports never allocated, comma separated; their blocks are skipped [default: 8080]
    #[arg(
        long,
        env = "BERTH_PORTS_DENIED",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub ports_denied: Option<Vec<u16>>,
    /// lyft/discovery API: seconds a host stays registered without a re-POST (lyft's
    /// HOST_TTL, which is read too) [default: 600]
    #[arg(long, env = "BERTH_COMPAT_LYFT_HOST_TTL", value_name = "SECONDS")]
    pub compat_lyft_host_ttl: Option<u64>,
    /// lyft/discovery API: the `env` it reports (lyft's APPLICATION_ENV, which is read too)
    /// [default: development]
    #[arg(long, env = "BERTH_COMPAT_LYFT_ENV", value_name = "ENV")]
    pub compat_lyft_env: Option<String>,
    /// bender API: milliseconds a registration lives without being renewed (500 or more)
    /// [default: 4000]
    #[arg(long, env = "BERTH_COMPAT_BENDER_TTL_MS", value_name = "MS")]
    pub compat_bender_ttl_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    #[serde(default)]
    instances: InstancesSection,
    #[serde(default)]
    embedded: EmbeddedSection,
    #[serde(default)]
    ports: PortsSection,
    #[serde(default)]
    compat: CompatSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompatSection {
    #[serde(default)]
    lyft: LyftSection,
    #[serde(default)]
    bender: BenderSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LyftSection {
    host_ttl: Option<u64>,
    env: Option<String>,
    /// Accepted for old configurations; berth never serves a stale read, so it has no use.
    cache_ttl: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BenderSection {
    ttl_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsSection {
    start: Option<u16>,
    block_size: Option<u16>,
    ceiling: Option<u16>,
    denied: Option<Vec<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancesSection {
    default_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddedSection {
    history_revisions: Option<i64>,
    cache_mb: Option<usize>,
}

/// The configuration `berth serve` runs with, every value resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub store: StoreLocation,
    pub log_format: LogFormat,
    pub log_level: String,
    pub default_ttl: Duration,
    pub history_revisions: i64,
    pub cache_bytes: usize,
    pub ports: PortRange,
    pub compat: CompatConfig,
    /// lyft's CACHE_TTL was set (in the file or the environment): worth a note in the log.
    pub lyft_cache_ttl_given: bool,
}

/// Environment variables `berth` reads; any other `BERTH_*` is reported as unknown.
pub const KNOWN_ENV: &[&str] = &[
    "BERTH_CONFIG",
    "BERTH_LISTEN",
    "BERTH_DATA_DIR",
    "BERTH_STORE",
    "BERTH_LOG_FORMAT",
    "BERTH_LOG_LEVEL",
    "BERTH_DEFAULT_TTL",
    "BERTH_HISTORY_REVISIONS",
    "BERTH_PORTS_START",
    "BERTH_PORTS_BLOCK_SIZE",
    "BERTH_PORTS_CEILING",
    "BERTH_PORTS_DENIED",
    "BERTH_COMPAT_LYFT_HOST_TTL",
    "BERTH_COMPAT_LYFT_ENV",
    "BERTH_COMPAT_BENDER_TTL_MS",
    "BERTH_ADDR",
    "BERTH_AGENT_TARGET",
    "BERTH_AGENT_MODE",
    "BERTH_AGENT_TTL",
    "BERTH_AGENT_RESYNC",
    "BERTH_AGENT_ADVERTISE",
    "BERTH_AGENT_HOST_ID",
    "BERTH_AGENT_INTERNAL",
    "BERTH_AGENT_INTERNAL_NETWORK",
    "BERTH_AGENT_TAGS",
    "BERTH_AGENT_KEEP_ON_EXIT",
    "BERTH_AGENT_ONLY_LABEL",
    "BERTH_AGENT_METRICS_LISTEN",
    "BERTH_AGENT_ETCD_PREFIX",
    "BERTH_AGENT_ETCD_PATH",
];

/// `BERTH_*` variables in the environment that no setting reads (probably typos).
pub fn unknown_env_vars() -> Vec<String> {
    std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("BERTH_") && !KNOWN_ENV.contains(&name.as_str()))
        .collect()
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "config file {}: {}",
            path.display(),
            error.message().trim_end()
        )
    })
}

fn parse_ttl(text: &str, source: &str) -> anyhow::Result<Duration> {
    let ttl = humantime::parse_duration(text)
        .with_context(|| format!("{source}: `{text}` is not a duration such as 30s or 5m"))?;
    if ttl < berth_domain::MIN_TTL || ttl > berth_domain::MAX_TTL {
        bail!("{source}: {text} is outside 1s to 24h");
    }
    Ok(ttl)
}

impl ServeArgs {
    /// Resolves every setting: flag or environment, else file, else default.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7420".into());
        listen.parse::<SocketAddr>().with_context(|| {
            format!("listen: `{listen}` is not an address such as 127.0.0.1:7420")
        })?;
        let store_text = self
            .store
            .or(file.store)
            .unwrap_or_else(|| "embedded".into());
        let store = store_text
            .parse::<StoreLocation>()
            .map_err(|e| anyhow::anyhow!("store: {e}"))?;
        let default_ttl = match self.default_ttl.or(file.instances.default_ttl) {
            Some(text) => parse_ttl(&text, "default TTL")?,
            None => Duration::from_secs(30),
        };
        let history_revisions = self
            .history_revisions
            .or(file.embedded.history_revisions)
            .unwrap_or(100_000);
        if history_revisions < 0 {
            bail!(
                "history revisions: must be 0 (keep everything) or more, not {history_revisions}"
            );
        }
        let defaults = PortRange::default();
        let ports = PortRange {
            start: self
                .ports_start
                .or(file.ports.start)
                .unwrap_or(defaults.start),
            block_size: self
                .ports_block_size
                .or(file.ports.block_size)
                .unwrap_or(defaults.block_size),
            ceiling: self
                .ports_ceiling
                .or(file.ports.ceiling)
                .unwrap_or(defaults.ceiling),
            denied: self
                .ports_denied
                .or(file.ports.denied)
                .unwrap_or(defaults.denied),
        };
        if !(4..=100).contains(&ports.block_size) {
            bail!(
                "ports: the block size must be 4 to 100, not {}",
                ports.block_size
            );
        }
        if !ports.start.is_multiple_of(ports.block_size) || ports.start <= 1024 {
            bail!(
                "ports: the start ({}) must be above 1024 and a multiple of the block size ({})",
                ports.start,
                ports.block_size
            );
        }
        // lyft's own variables (HOST_TTL, APPLICATION_ENV) come after berth's, before the file,
        // so an old deployment's environment works unchanged.
        let legacy = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let host_ttl = match self.compat_lyft_host_ttl {
            Some(seconds) => Some(seconds),
            None => match legacy("HOST_TTL") {
                Some(text) => Some(text.parse().map_err(|_| {
                    anyhow::anyhow!("HOST_TTL: `{text}` is not a number of seconds")
                })?),
                None => file.compat.lyft.host_ttl,
            },
        }
        .unwrap_or(600);
        if !(1..=86_400).contains(&host_ttl) {
            bail!("compat.lyft.host_ttl: {host_ttl} s is outside 1 s to 24 h");
        }
        let bender_ttl = self
            .compat_bender_ttl_ms
            .or(file.compat.bender.ttl_ms)
            .unwrap_or(4_000);
        if !(500..=86_400_000).contains(&bender_ttl) {
            bail!("compat.bender.ttl_ms: {bender_ttl} ms is outside 500 ms to 24 h");
        }
        let compat = CompatConfig {
            lyft_host_ttl: Duration::from_secs(host_ttl),
            lyft_env: self
                .compat_lyft_env
                .or_else(|| legacy("APPLICATION_ENV"))
                .or(file.compat.lyft.env)
                .unwrap_or_else(|| "development".into()),
            bender_ttl: Duration::from_millis(bender_ttl),
        };
        if ports.ceiling < ports.start + ports.block_size {
            bail!(
                "ports: the ceiling ({}) leaves no block above the start ({})",
                ports.ceiling,
                ports.start
            );
        }
        Ok(ServeConfig {
            listen,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./berth-data")),
            store,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            log_level: self
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            default_ttl,
            history_revisions,
            cache_bytes: file.embedded.cache_mb.unwrap_or(8) * 1024 * 1024,
            ports,
            compat,
            lyft_cache_ttl_given: file.compat.lyft.cache_ttl.is_some()
                || std::env::var_os("CACHE_TTL").is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::NamedTempFile, PathBuf) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let path = file.path().to_path_buf();
        (file, path)
    }

    #[test]
    fn defaults_without_anything() {
        let config = ServeArgs::default().resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7420");
        assert_eq!(config.data_dir, PathBuf::from("./berth-data"));
        assert_eq!(config.store, StoreLocation::Embedded);
        assert_eq!(config.default_ttl, Duration::from_secs(30));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let (_keep, path) = file(
            "listen = \"127.0.0.1:9000\"\nstore = \"etcd://127.0.0.1:2379\"\n[instances]\ndefault_ttl = \"10s\"\n",
        );
        let config = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:9100".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100");
        assert_eq!(
            config.store,
            StoreLocation::Etcd {
                endpoints: vec!["127.0.0.1:2379".into()]
            }
        );
        assert_eq!(config.default_ttl, Duration::from_secs(10));
    }

    #[test]
    fn compat_settings_come_from_flags_or_the_file() {
        let (_keep, path) = file(
            "[compat.lyft]\nhost_ttl = 30\nenv = \"prod\"\ncache_ttl = 5\n[compat.bender]\nttl_ms = 500\n",
        );
        let config = ServeArgs {
            config: Some(path),
            compat_lyft_env: Some("staging".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.compat.lyft_host_ttl, Duration::from_secs(30));
        assert_eq!(config.compat.lyft_env, "staging");
        assert_eq!(config.compat.bender_ttl, Duration::from_millis(500));
        assert!(config.lyft_cache_ttl_given);
        let error = ServeArgs {
            compat_bender_ttl_ms: Some(100),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(error.contains("500 ms"), "{error}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let (_keep, path) = file("lisen = \"127.0.0.1:1\"\n");
        let error = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown field `lisen`"), "{error}");

        let (_keep, path) = file("[embedded]\ncache = 3\n");
        let error = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown field `cache`"), "{error}");

        let error = ServeArgs {
            default_ttl: Some("0s".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(error.contains("outside 1s to 24h"), "{error}");

        let error = ServeArgs {
            ports_block_size: Some(3),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(error.contains("block size"), "{error}");

        let error = ServeArgs {
            store: Some("redis://x:1".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(error.contains("store:"), "{error}");
    }
}
