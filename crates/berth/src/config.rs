//! `berth serve`'s configuration: every value of the settings table (`settings.rs`) checked
//! and turned into what the server runs with. Each error names where the value came from.

use crate::settings::{ServeArgs, Values};
use anyhow::bail;
use berth_api::compat::{CompatConfig, bender, lyft};
use berth_domain::catalog::allocator::PortRange;
use berth_store::StoreLocation;
use clap::ValueEnum;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    /// lyft's CACHE_TTL was given: worth a note in the log.
    pub lyft_cache_ttl_given: bool,
}

fn duration(values: &Values, key: &str) -> anyhow::Result<Duration> {
    let given = values.required(key);
    humantime::parse_duration(given.text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{}: `{}` is not a duration such as 30s or 5m",
            given.source,
            given.text
        )
    })
}

/// Resolves every setting: flag, else environment (`env`, passed in), else file, else default.
pub fn resolve(args: &ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<ServeConfig> {
    let values = Values::resolve(args, env)?;
    let listen_given = values.required("listen");
    let listen = listen_given.text.clone();
    listen_given.parse::<SocketAddr>("an address such as 127.0.0.1:7420")?;
    let store_given = values.required("store");
    let store = store_given
        .text
        .parse::<StoreLocation>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", store_given.source))?;
    let default_ttl = duration(&values, "instances.default_ttl")?;
    if default_ttl < berth_domain::MIN_TTL || default_ttl > berth_domain::MAX_TTL {
        bail!(
            "{}: {} is outside 1s to 24h",
            values.required("instances.default_ttl").source,
            values.required("instances.default_ttl").text
        );
    }
    let history = values.required("embedded.history_revisions");
    let history_revisions: i64 = history.parse("a number of revisions")?;
    if history_revisions < 0 {
        bail!(
            "{}: must be 0 (keep everything) or more, not {history_revisions}",
            history.source
        );
    }
    let cache_mb: usize = values
        .required("embedded.cache_mb")
        .parse("a number of MiB")?;
    let denied = values.required("ports.denied");
    let ports = PortRange {
        start: values.required("ports.start").parse("a port")?,
        block_size: values.required("ports.block_size").parse("a number")?,
        ceiling: values.required("ports.ceiling").parse("a port")?,
        denied: denied
            .text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("{}: `{p}` is not a port", denied.source))
            })
            .collect::<anyhow::Result<_>>()?,
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
    if ports.ceiling < ports.start + ports.block_size {
        bail!(
            "ports: the ceiling ({}) leaves no block above the start ({})",
            ports.ceiling,
            ports.start
        );
    }
    let host_ttl_given = values.required("compat.lyft.host_ttl");
    let host_ttl: u64 = host_ttl_given.parse("a number of seconds")?;
    if !(1..=86_400).contains(&host_ttl) {
        bail!(
            "{}: {host_ttl} s is outside 1 s to 24 h",
            host_ttl_given.source
        );
    }
    let bender_given = values.required("compat.bender.ttl_ms");
    let bender_ttl: u64 = bender_given.parse("a number of milliseconds")?;
    if !(500..=86_400_000).contains(&bender_ttl) {
        bail!(
            "{}: {bender_ttl} ms is outside 500 ms to 24 h",
            bender_given.source
        );
    }
    let log_format = values.required("log_format");
    Ok(ServeConfig {
        listen,
        data_dir: PathBuf::from(&values.required("data_dir").text),
        store,
        log_format: LogFormat::from_str(log_format.text.trim(), true).map_err(|_| {
            anyhow::anyhow!(
                "{}: `{}` is not text or json",
                log_format.source,
                log_format.text
            )
        })?,
        log_level: values.required("log_level").text.clone(),
        default_ttl,
        history_revisions,
        cache_bytes: cache_mb * 1024 * 1024,
        ports,
        compat: CompatConfig {
            lyft: lyft::Config {
                host_ttl: Duration::from_secs(host_ttl),
                env: values.required("compat.lyft.env").text.clone(),
            },
            bender: bender::Config {
                ttl: Duration::from_millis(bender_ttl),
            },
        },
        lyft_cache_ttl_given: values.is_given("compat.lyft.cache_ttl"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::NamedTempFile, String) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let path = file.path().display().to_string();
        (file, path)
    }

    fn no_env() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error_of(args: ServeArgs, env: BTreeMap<String, String>) -> String {
        resolve(&args, &env).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_anything() {
        let config = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7420");
        assert_eq!(config.data_dir, PathBuf::from("./berth-data"));
        assert_eq!(config.store, StoreLocation::Embedded);
        assert_eq!(config.default_ttl, Duration::from_secs(30));
        assert_eq!(config.compat, CompatConfig::default());
        assert_eq!(config.ports, PortRange::default());
        assert_eq!(config.cache_bytes, 8 * 1024 * 1024);
        assert!(!config.lyft_cache_ttl_given);
    }

    #[test]
    fn flags_win_over_the_environment_the_environment_over_the_file() {
        let (_keep, path) = file(
            "listen = \"127.0.0.1:9000\"\nstore = \"etcd://127.0.0.1:2379\"\n[instances]\ndefault_ttl = \"10s\"\n[embedded]\ncache_mb = 3\n",
        );
        let args = ServeArgs::default()
            .with("config", &path)
            .with("listen", "127.0.0.1:9100");
        let config = resolve(
            &args,
            &env(&[
                ("BERTH_LISTEN", "127.0.0.1:9200"),
                ("BERTH_DEFAULT_TTL", "20s"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100");
        assert_eq!(config.default_ttl, Duration::from_secs(20));
        assert_eq!(
            config.store,
            StoreLocation::Etcd {
                endpoints: vec!["127.0.0.1:2379".into()]
            }
        );
        assert_eq!(config.cache_bytes, 3 * 1024 * 1024);
        let from_env = resolve(
            &ServeArgs::default(),
            &env(&[("BERTH_CONFIG", &path), ("BERTH_CACHE_MB", "5")]),
        )
        .unwrap();
        assert_eq!(from_env.listen, "127.0.0.1:9000");
        assert_eq!(from_env.cache_bytes, 5 * 1024 * 1024);
    }

    #[test]
    fn compat_settings_come_from_flags_the_legacy_variables_or_the_file() {
        let (_keep, path) = file(
            "[compat.lyft]\nhost_ttl = 30\nenv = \"prod\"\ncache_ttl = 5\n[compat.bender]\nttl_ms = 500\n",
        );
        let args = ServeArgs::default()
            .with("config", &path)
            .with("compat.lyft.env", "staging");
        let config = resolve(&args, &no_env()).unwrap();
        assert_eq!(config.compat.lyft.host_ttl, Duration::from_secs(30));
        assert_eq!(config.compat.lyft.env, "staging");
        assert_eq!(config.compat.bender.ttl, Duration::from_millis(500));
        assert!(config.lyft_cache_ttl_given);
        // lyft's own variables come after berth's, before the file.
        let legacy = resolve(
            &ServeArgs::default().with("config", &path),
            &env(&[("HOST_TTL", "45"), ("APPLICATION_ENV", "qa")]),
        )
        .unwrap();
        assert_eq!(legacy.compat.lyft.host_ttl, Duration::from_secs(45));
        assert_eq!(legacy.compat.lyft.env, "qa");
        let error = error_of(
            ServeArgs::default().with("compat.bender.ttl_ms", "100"),
            no_env(),
        );
        assert!(error.contains("500 ms"), "{error}");
        let error = error_of(ServeArgs::default(), env(&[("HOST_TTL", "soon")]));
        assert!(error.contains("HOST_TTL"), "{error}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let (_keep, path) = file("lisen = \"127.0.0.1:1\"\n");
        let error = error_of(ServeArgs::default().with("config", &path), no_env());
        assert!(error.contains("unknown field `lisen`"), "{error}");

        let (_keep, path) = file("[embedded]\ncache = 3\n");
        let error = error_of(ServeArgs::default().with("config", &path), no_env());
        assert!(error.contains("unknown field `cache`"), "{error}");

        let error = error_of(
            ServeArgs::default().with("instances.default_ttl", "0s"),
            no_env(),
        );
        assert!(error.contains("outside 1s to 24h"), "{error}");

        let error = error_of(ServeArgs::default().with("ports.block_size", "3"), no_env());
        assert!(error.contains("block size"), "{error}");

        let error = error_of(ServeArgs::default(), env(&[("BERTH_STORE", "redis://x:1")]));
        assert!(error.starts_with("BERTH_STORE:"), "{error}");

        let error = error_of(ServeArgs::default().with("ports.denied", "80,x"), no_env());
        assert!(
            error.contains("--ports-denied: `x` is not a port"),
            "{error}"
        );
    }
}
