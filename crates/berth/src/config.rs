//! `berth serve`'s configuration: every value of the settings table (`settings.rs`) checked
//! and turned into what the server runs with. Each error names where the value came from.

use crate::settings::{ServeArgs, Values};
use anyhow::bail;
use berth_api::BrowserGuard;
use berth_api::compat::{CompatConfig, bender, lyft};
use berth_api::heavy::HeavyLimits;
use berth_api::server::Limits;
use berth_api::tls::TlsFiles;
use berth_domain::auth::{Grant, Grants};
use berth_domain::catalog::allocator::PortRange;
use berth_registry::Caps;
use berth_registry::auth::{Anonymous, AuthConfig};
use berth_registry::catalog::JournalRetention;
use berth_store::{EtcdSecurity, StoreLocation};
use clap::ValueEnum;
use serde::Deserialize;
use std::collections::BTreeMap;
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
    pub history_bytes: u64,
    pub cache_bytes: usize,
    pub ports: PortRange,
    pub compat: CompatConfig,
    /// lyft's CACHE_TTL was given: worth a note in the log.
    pub lyft_cache_ttl_given: bool,
    pub auth: AuthConfig,
    /// The first administrator's token secret, read from the bootstrap file.
    pub bootstrap_token: Option<String>,
    pub browsers: BrowserGuard,
    /// HTTPS on the listener, when configured.
    pub tls: Option<TlsFiles>,
    /// TLS and credentials for etcd.
    pub etcd: EtcdSecurity,
    pub connection_limits: Limits,
    pub heavy: HeavyLimits,
    pub caps: Caps,
    pub journal: JournalRetention,
    /// Where xDS is served (`None`: off).
    pub xds_listen: Option<String>,
    /// Where DNS is answered (`None`: off) and how.
    pub dns_listen: Option<String>,
    pub dns: berth_dns::DnsConfig,
}

/// Reads a file a setting names, with the setting in the error.
fn read_named(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|error| anyhow::anyhow!("{what}: cannot read {}: {error}", path.display()))
}

/// berth's (or the agent's) way into a secured etcd, from the files the settings name.
pub fn etcd_security(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    user: Option<&str>,
    password_file: Option<&Path>,
) -> anyhow::Result<EtcdSecurity> {
    let identity_pem = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some((
            read_named(cert, "etcd.cert_file")?,
            read_named(key, "etcd.key_file")?,
        )),
        (None, None) => None,
        _ => bail!("etcd.cert_file and etcd.key_file go together: give both or neither"),
    };
    let user = match (user, password_file) {
        (Some(user), Some(file)) => {
            let password =
                String::from_utf8(read_named(file, "etcd.password_file")?).map_err(|_| {
                    anyhow::anyhow!("etcd.password_file: {} is not text", file.display())
                })?;
            Some((
                user.to_string(),
                password.trim_end_matches(['\r', '\n']).to_string(),
            ))
        }
        (None, None) => None,
        _ => bail!("etcd.user and etcd.password_file go together: give both or neither"),
    };
    Ok(EtcdSecurity {
        ca_pem: ca_file
            .map(|path| read_named(path, "etcd.ca_file"))
            .transpose()?,
        identity_pem,
        user,
    })
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

/// The DNS surface's domain and TTLs.
fn dns_config(values: &Values) -> anyhow::Result<berth_dns::DnsConfig> {
    let domain_given = values.required("dns.domain");
    let domain = hickory_name(domain_given.text.trim()).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: `{}` is not a domain name",
            domain_given.source,
            domain_given.text
        )
    })?;
    let seconds = |duration: Duration| u32::try_from(duration.as_secs()).unwrap_or(u32::MAX);
    let mut service_ttl = Vec::new();
    let ttl_given = values.get("dns.service_ttl");
    for entry in ttl_given
        .map(|given| {
            given
                .text
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
        })
        .into_iter()
        .flatten()
    {
        let parsed = entry.split_once('=').and_then(|(prefix, ttl)| {
            let prefix = prefix.trim().strip_suffix('*').unwrap_or(prefix.trim());
            let ttl = humantime::parse_duration(ttl.trim()).ok()?;
            Some((prefix.to_string(), seconds(ttl)))
        });
        let Some(parsed) = parsed else {
            bail!(
                "{}: `{entry}` is not PREFIX=DURATION (e.g. web-*=5s)",
                ttl_given
                    .map(|given| given.source.to_string())
                    .unwrap_or_default()
            );
        };
        service_ttl.push(parsed);
    }
    Ok(berth_dns::DnsConfig {
        domain,
        service_ttl,
        catalog_ttl: seconds(duration(values, "dns.catalog_ttl")?),
    })
}

/// A domain as DNS names it (fully qualified).
fn hickory_name(text: &str) -> Option<berth_dns::DomainName> {
    let text = text.trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    berth_dns::DomainName::from_ascii(format!("{text}.")).ok()
}

/// Resolves every setting: flag, else environment (`env`, passed in), else file, else default.
pub fn resolve(args: &ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<ServeConfig> {
    let values = Values::resolve(args, env)?;
    let listen_given = values.required("listen");
    let listen = listen_given.text.clone();
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
    let history_mb: u64 = values
        .required("embedded.history_mb")
        .parse("a number of MiB")?;
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
    let trusted_proxies = match values.get("compat.lyft.trusted_proxies") {
        Some(given) => given
            .list()
            .iter()
            .map(|ip| {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| anyhow::anyhow!("{}: {ip:?} is not an IP address", given.source))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
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
    let auth_enabled = values.required("auth.enabled").switch()?;
    let anonymous_given = values.required("auth.anonymous");
    let anonymous = match anonymous_given.text.trim() {
        "none" => Anonymous::None,
        "read" => Anonymous::Read,
        other => bail!("{}: `{other}` is not none or read", anonymous_given.source),
    };
    let bootstrap_token = match values.get("auth.bootstrap_token_file") {
        Some(given) => {
            let text = std::fs::read_to_string(given.text.trim()).map_err(|error| {
                anyhow::anyhow!(
                    "{}: cannot read the bootstrap token file {}: {error}",
                    given.source,
                    given.text
                )
            })?;
            Some(text.trim().to_string())
        }
        None => None,
    };
    let listen_ip = listen_given
        .parse::<SocketAddr>("an address such as 127.0.0.1:7420")?
        .ip();
    let path = |key: &str| {
        values
            .get(key)
            .map(|given| PathBuf::from(given.text.trim()))
    };
    let tls = match (path("tls.cert_file"), path("tls.key_file")) {
        (Some(cert_file), Some(key_file)) => Some(TlsFiles {
            cert_file,
            key_file,
            client_ca_file: path("tls.client_ca_file"),
        }),
        (None, None) if values.get("tls.client_ca_file").is_none() => None,
        _ => bail!(
            "tls: give both tls.cert_file and tls.key_file (and tls.client_ca_file only with them)"
        ),
    };
    let mutual_tls = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    let allow_unauthenticated = values.required("http.allow_unauthenticated").switch()?;
    // One rule for every listener: reachable from the network only with auth, client
    // certificates, or the operator's explicit acceptance.
    let unprotected = |ip: std::net::IpAddr| {
        !auth_enabled && !mutual_tls && !ip.is_loopback() && !allow_unauthenticated
    };
    if unprotected(listen_ip) {
        bail!(
            "listen: {listen} is reachable from the network, and auth is off: anyone who reaches \
             it could register, deregister and change everything. Turn auth on (--auth with \
             --bootstrap-token-file FILE, see docs/security.md), require client certificates \
             (--tls-client-ca-file), or accept the risk with --allow-unauthenticated"
        );
    }
    let certificate_grants = match values.get("tls.client_cert_grants") {
        Some(given) => {
            if !mutual_tls {
                bail!(
                    "{}: client certificate grants need tls.client_ca_file",
                    given.source
                );
            }
            Grants::new(
                given
                    .list()
                    .iter()
                    .map(|text| {
                        Grant::parse("grant", text)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", given.source))
                    })
                    .collect::<anyhow::Result<_>>()?,
            )
        }
        None => Grants::default(),
    };
    let etcd = etcd_security(
        path("etcd.ca_file").as_deref(),
        path("etcd.cert_file").as_deref(),
        path("etcd.key_file").as_deref(),
        values.get("etcd.user").map(|given| given.text.trim()),
        path("etcd.password_file").as_deref(),
    )?;
    let list = |key: &str| {
        values
            .get(key)
            .map(|given| given.list())
            .unwrap_or_default()
    };
    let count = |key: &str| -> anyhow::Result<usize> {
        let given = values.required(key);
        let value: usize = given.parse("a number")?;
        if value == 0 {
            bail!("{}: must be 1 or more", given.source);
        }
        Ok(value)
    };
    let connection_limits = Limits {
        max_connections: count("http.max_connections")?,
        header_read_timeout: duration(&values, "http.header_read_timeout")?,
        ..Limits::default()
    };
    let heavy = HeavyLimits {
        event_streams: count("http.max_event_streams")?,
        blocking_queries: count("http.max_blocking_queries")?,
        imports: count("http.max_concurrent_imports")?,
    };
    let caps = Caps {
        instances_per_service: count("instances.max_per_service")?,
        instances: count("instances.max_total")?,
        routing_entities: count("catalog.max_routing_entities")?,
    };
    let journal_max_age = duration(&values, "catalog.journal_max_age")?;
    let journal = JournalRetention {
        per_record: values
            .required("catalog.journal_per_record")
            .parse("a number of entries")?,
        max_age: (!journal_max_age.is_zero()).then_some(journal_max_age),
    };
    let xds_listen = match values.required("xds.listen").text.trim() {
        "off" | "" => None,
        address => {
            let ip = address
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    anyhow::anyhow!("xds.listen: {address:?} is not an IP address and port")
                })?
                .ip();
            if unprotected(ip) {
                bail!(
                    "xds.listen: {address} is reachable from the network, and auth is off: \
                     anyone who reaches it could read every instance. Turn auth on (--auth), \
                     or accept the risk with --allow-unauthenticated"
                );
            }
            Some(address.to_string())
        }
    };
    let dns_listen = match values.required("dns.listen").text.trim() {
        "off" | "" => None,
        address => Some(address.to_string()),
    };
    let dns = dns_config(&values)?;
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
        history_bytes: history_mb.saturating_mul(1024 * 1024),
        cache_bytes: cache_mb * 1024 * 1024,
        ports,
        compat: CompatConfig {
            lyft: lyft::Config {
                host_ttl: Duration::from_secs(host_ttl),
                env: values.required("compat.lyft.env").text.clone(),
                trusted_proxies,
            },
            bender: bender::Config {
                ttl: Duration::from_millis(bender_ttl),
            },
        },
        lyft_cache_ttl_given: values.is_given("compat.lyft.cache_ttl"),
        auth: AuthConfig {
            enabled: auth_enabled,
            anonymous,
            certificate_grants,
        },
        bootstrap_token,
        browsers: BrowserGuard {
            allowed_hosts: list("http.allowed_hosts"),
            loopback_only: listen_ip.is_loopback(),
            cors_allowed_origins: list("http.cors_allowed_origins"),
        },
        tls,
        etcd,
        connection_limits,
        heavy,
        caps,
        journal,
        xds_listen,
        dns_listen,
        dns,
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
    fn a_network_listener_needs_auth_or_an_explicit_risk() {
        let error = error_of(
            ServeArgs::default().with("listen", "0.0.0.0:7420"),
            no_env(),
        );
        assert!(error.contains("--allow-unauthenticated"), "{error}");
        let risky = resolve(
            &ServeArgs::default()
                .with("listen", "0.0.0.0:7420")
                .with("http.allow_unauthenticated", "true"),
            &no_env(),
        )
        .unwrap();
        assert!(!risky.browsers.loopback_only);
        let (_keep, path) = file("0123456789abcdef0123456789abcdef\n");
        let secured = resolve(
            &ServeArgs::default().with("listen", "[::]:7420"),
            &env(&[
                ("BERTH_AUTH", "1"),
                ("BERTH_AUTH_BOOTSTRAP_TOKEN_FILE", &path),
                ("BERTH_AUTH_ANONYMOUS", "read"),
            ]),
        )
        .unwrap();
        assert!(secured.auth.enabled);
        assert_eq!(secured.auth.anonymous, Anonymous::Read);
        assert_eq!(
            secured.bootstrap_token.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        let local = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert!(!local.auth.enabled && local.browsers.loopback_only);
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
