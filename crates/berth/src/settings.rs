//! Every setting of `berth serve`, declared once in [`SETTINGS`]: the command-line flags, the
//! TOML file's keys, the `BERTH_*` variables, `--help` and `docs/settings.md` are all made from
//! that table. A value comes from its flag, else its variable (then a legacy tool's variable
//! where one exists), else the file, else the default; the environment is passed in, never read
//! here, so what a test resolves does not depend on the runner's environment.

use berth_api::compat::CompatConfig;
use berth_api::heavy::HeavyLimits;
use berth_api::server::Limits;
use berth_domain::InstanceDefaults;
use berth_domain::catalog::allocator::PortRange;
use berth_registry::Caps;
use berth_registry::catalog::JournalRetention;
use berth_store::StoreLocation;
use berth_store::embedded::EmbeddedOptions;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Whether a setting takes a value, or is a switch (`--auth`, `auth.enabled = true`,
/// `BERTH_AUTH=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Value,
    Switch,
}

pub struct Setting {
    /// The setting's name and its key in the TOML file, dotted for sections
    /// (`compat.lyft.host_ttl`).
    pub key: &'static str,
    /// False for the one setting that cannot be in the file: the file's own path.
    pub in_file: bool,
    /// The command-line flag, without its dashes.
    pub flag: &'static str,
    pub env: &'static str,
    pub value_name: &'static str,
    pub shape: Shape,
    /// The default, shown in `--help` and the docs; empty when there is none. It comes from
    /// the crate that owns the setting.
    pub default: fn() -> String,
    pub help: &'static str,
    /// A variable of the tool berth replaces, read after berth's own (lyft's `HOST_TTL`).
    pub legacy_env: Option<&'static str>,
}

fn none() -> String {
    String::new()
}

fn ports() -> PortRange {
    PortRange::default()
}

fn compat() -> CompatConfig {
    CompatConfig::default()
}

/// The listen address unless configured: loopback only, so a default `berth serve` is never
/// reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
pub const DEFAULT_DATA_DIR: &str = "./berth-data";

pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "config",
        in_file: false,
        flag: "config",
        env: "BERTH_CONFIG",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "TOML configuration file with the keys below (e.g. `listen = \"0.0.0.0:7420\"`)",
        legacy_env: None,
    },
    Setting {
        key: "listen",
        in_file: true,
        flag: "listen",
        env: "BERTH_LISTEN",
        value_name: "ADDR",
        shape: Shape::Value,
        default: || DEFAULT_LISTEN.into(),
        help: "Address to listen on for HTTP (port 0 picks a free port)",
        legacy_env: None,
    },
    Setting {
        key: "xds.listen",
        in_file: true,
        flag: "xds-listen",
        env: "BERTH_XDS_LISTEN",
        value_name: "ADDR",
        shape: Shape::Value,
        default: || berth_xds::DEFAULT_LISTEN.into(),
        help: "Address to serve xDS (ADS over gRPC) on for Envoy and proxyless gRPC (port 0 \
               picks a free port; `off` turns xDS off). A non-loopback address needs auth, as \
               the HTTP listener does",
        legacy_env: None,
    },
    Setting {
        key: "dns.listen",
        in_file: true,
        flag: "dns-listen",
        env: "BERTH_DNS_LISTEN",
        value_name: "ADDR",
        shape: Shape::Value,
        default: || berth_dns::DEFAULT_LISTEN.into(),
        help: "Address to answer DNS on, UDP and TCP (port 0 picks a free port; `off` turns \
               DNS off)",
        legacy_env: None,
    },
    Setting {
        key: "dns.domain",
        in_file: true,
        flag: "dns-domain",
        env: "BERTH_DNS_DOMAIN",
        value_name: "DOMAIN",
        shape: Shape::Value,
        default: || "berth".into(),
        help: "The DNS domain berth answers for; other names are refused",
        legacy_env: None,
    },
    Setting {
        key: "dns.service_ttl",
        in_file: true,
        flag: "dns-service-ttl",
        env: "BERTH_DNS_SERVICE_TTL",
        value_name: "PREFIX=DURATION,…",
        shape: Shape::Value,
        default: String::new,
        help: "TTL of live DNS answers by service-name prefix, e.g. `web-*=5s,*=1s` (the \
               longest prefix wins; unlisted services get 0)",
        legacy_env: None,
    },
    Setting {
        key: "dns.catalog_ttl",
        in_file: true,
        flag: "dns-catalog-ttl",
        env: "BERTH_DNS_CATALOG_TTL",
        value_name: "DURATION",
        shape: Shape::Value,
        default: || "60s".into(),
        help: "TTL of DNS answers from the port catalog (`.app.` names)",
        legacy_env: None,
    },
    Setting {
        key: "data_dir",
        in_file: true,
        flag: "data-dir",
        env: "BERTH_DATA_DIR",
        value_name: "DIR",
        shape: Shape::Value,
        default: || DEFAULT_DATA_DIR.into(),
        help: "Where the embedded store keeps its file",
        legacy_env: None,
    },
    Setting {
        key: "store",
        in_file: true,
        flag: "store",
        env: "BERTH_STORE",
        value_name: "STORE",
        shape: Shape::Value,
        default: || StoreLocation::Embedded.to_string(),
        help: "`embedded` (one file in the data directory) or `etcd://host:port[,host:port…]` \
               (several berth nodes sharing an etcd cluster)",
        legacy_env: None,
    },
    Setting {
        key: "log_format",
        in_file: true,
        flag: "log-format",
        env: "BERTH_LOG_FORMAT",
        value_name: "FORMAT",
        shape: Shape::Value,
        default: || "text".into(),
        help: "Log as human-readable `text` or as one `json` object per line",
        legacy_env: None,
    },
    Setting {
        key: "log_level",
        in_file: true,
        flag: "log-level",
        env: "BERTH_LOG_LEVEL",
        value_name: "FILTER",
        shape: Shape::Value,
        default: || "info".into(),
        help: "Log filter, e.g. `info` or `berth_registry=debug,info`",
        legacy_env: None,
    },
    Setting {
        key: "instances.default_ttl",
        in_file: true,
        flag: "default-ttl",
        env: "BERTH_DEFAULT_TTL",
        value_name: "DURATION",
        shape: Shape::Value,
        default: || humantime::format_duration(InstanceDefaults::default().ttl).to_string(),
        help: "TTL of an instance that registers without one, e.g. `30s`",
        legacy_env: None,
    },
    Setting {
        key: "embedded.history_revisions",
        in_file: true,
        flag: "history-revisions",
        env: "BERTH_HISTORY_REVISIONS",
        value_name: "N",
        shape: Shape::Value,
        default: || EmbeddedOptions::DEFAULT_RETAINED_REVISIONS.to_string(),
        help: "Revisions of history the embedded store keeps for watches and event resumes \
               (0 keeps everything)",
        legacy_env: None,
    },
    Setting {
        key: "embedded.history_mb",
        in_file: true,
        flag: "history-mb",
        env: "BERTH_HISTORY_MB",
        value_name: "MIB",
        shape: Shape::Value,
        default: || (EmbeddedOptions::DEFAULT_RETAINED_BYTES / (1024 * 1024)).to_string(),
        help: "MiB of history the embedded store keeps at most; past it the oldest revisions \
               are compacted away at once (0: no limit)",
        legacy_env: None,
    },
    Setting {
        key: "embedded.cache_mb",
        in_file: true,
        flag: "cache-mb",
        env: "BERTH_CACHE_MB",
        value_name: "MIB",
        shape: Shape::Value,
        default: || (EmbeddedOptions::DEFAULT_CACHE_BYTES / (1024 * 1024)).to_string(),
        help: "The embedded store's page cache in MiB (the OS caches the file too)",
        legacy_env: None,
    },
    Setting {
        key: "http.max_connections",
        in_file: true,
        flag: "max-connections",
        env: "BERTH_MAX_CONNECTIONS",
        value_name: "N",
        shape: Shape::Value,
        default: || Limits::default().max_connections.to_string(),
        help: "Open HTTP connections at most; past it a connection is answered 503 and closed",
        legacy_env: None,
    },
    Setting {
        key: "http.header_read_timeout",
        in_file: true,
        flag: "header-read-timeout",
        env: "BERTH_HEADER_READ_TIMEOUT",
        value_name: "DURATION",
        shape: Shape::Value,
        default: || humantime::format_duration(Limits::default().header_read_timeout).to_string(),
        help: "How long a client may take to send a request's head, and how long an idle \
               keep-alive connection stays open",
        legacy_env: None,
    },
    Setting {
        key: "http.max_event_streams",
        in_file: true,
        flag: "max-event-streams",
        env: "BERTH_MAX_EVENT_STREAMS",
        value_name: "N",
        shape: Shape::Value,
        default: || HeavyLimits::default().event_streams.to_string(),
        help: "Open event streams (/v1/events) at most; past it 503 with Retry-After",
        legacy_env: None,
    },
    Setting {
        key: "http.max_blocking_queries",
        in_file: true,
        flag: "max-blocking-queries",
        env: "BERTH_MAX_BLOCKING_QUERIES",
        value_name: "N",
        shape: Shape::Value,
        default: || HeavyLimits::default().blocking_queries.to_string(),
        help: "Blocking queries (?index=) waiting at once at most; past it 503 with Retry-After",
        legacy_env: None,
    },
    Setting {
        key: "http.max_concurrent_imports",
        in_file: true,
        flag: "max-concurrent-imports",
        env: "BERTH_MAX_CONCURRENT_IMPORTS",
        value_name: "N",
        shape: Shape::Value,
        default: || HeavyLimits::default().imports.to_string(),
        help: "Catalog imports running at once at most (each may carry 64 MiB); past it 503",
        legacy_env: None,
    },
    Setting {
        key: "instances.max_per_service",
        in_file: true,
        flag: "max-instances-per-service",
        env: "BERTH_MAX_INSTANCES_PER_SERVICE",
        value_name: "N",
        shape: Shape::Value,
        default: || Caps::default().instances_per_service.to_string(),
        help: "Live instances one service may have; past it a new one is refused (409)",
        legacy_env: None,
    },
    Setting {
        key: "instances.max_total",
        in_file: true,
        flag: "max-instances",
        env: "BERTH_MAX_INSTANCES",
        value_name: "N",
        shape: Shape::Value,
        default: || Caps::default().instances.to_string(),
        help: "Live instances the registry holds at most; past it a new one is refused (409)",
        legacy_env: None,
    },
    Setting {
        key: "catalog.max_routing_entities",
        in_file: true,
        flag: "max-routing-entities",
        env: "BERTH_MAX_ROUTING_ENTITIES",
        value_name: "N",
        shape: Shape::Value,
        default: || Caps::default().routing_entities.to_string(),
        help: "Backends the catalog keeps at most, and frontends (each); past it 409",
        legacy_env: None,
    },
    Setting {
        key: "catalog.journal_per_record",
        in_file: true,
        flag: "journal-per-record",
        env: "BERTH_JOURNAL_PER_RECORD",
        value_name: "N",
        shape: Shape::Value,
        default: || JournalRetention::default().per_record.to_string(),
        help: "Journal entries kept per application and per kind, the newest (0: no limit); \
               pruned every minute",
        legacy_env: None,
    },
    Setting {
        key: "catalog.journal_max_age",
        in_file: true,
        flag: "journal-max-age",
        env: "BERTH_JOURNAL_MAX_AGE",
        value_name: "DURATION",
        shape: Shape::Value,
        default: || "0s".to_string(),
        help: "Journal entries older than this are pruned, each record's newest excepted, \
               e.g. `90d` (0s: no limit)",
        legacy_env: None,
    },
    Setting {
        key: "ports.start",
        in_file: true,
        flag: "ports-start",
        env: "BERTH_PORTS_START",
        value_name: "PORT",
        shape: Shape::Value,
        default: || ports().start.to_string(),
        help: "The first port block the allocator uses",
        legacy_env: None,
    },
    Setting {
        key: "ports.block_size",
        in_file: true,
        flag: "ports-block-size",
        env: "BERTH_PORTS_BLOCK_SIZE",
        value_name: "N",
        shape: Shape::Value,
        default: || ports().block_size.to_string(),
        help: "Ports per block (an application family shares a block), 4 to 100",
        legacy_env: None,
    },
    Setting {
        key: "ports.ceiling",
        in_file: true,
        flag: "ports-ceiling",
        env: "BERTH_PORTS_CEILING",
        value_name: "PORT",
        shape: Shape::Value,
        default: || ports().ceiling.to_string(),
        help: "No port above this is allocated",
        legacy_env: None,
    },
    Setting {
        key: "ports.denied",
        in_file: true,
        flag: "ports-denied",
        env: "BERTH_PORTS_DENIED",
        value_name: "PORTS",
        shape: Shape::Value,
        default: || join_ports(&ports().denied),
        help: "Ports never allocated, comma separated (a list in the file); their blocks are \
               skipped",
        legacy_env: None,
    },
    Setting {
        key: "compat.lyft.host_ttl",
        in_file: true,
        flag: "compat-lyft-host-ttl",
        env: "BERTH_COMPAT_LYFT_HOST_TTL",
        value_name: "SECONDS",
        shape: Shape::Value,
        default: || compat().lyft.host_ttl.as_secs().to_string(),
        help: "lyft/discovery API: seconds a host stays registered without a re-POST",
        legacy_env: Some("HOST_TTL"),
    },
    Setting {
        key: "compat.lyft.env",
        in_file: true,
        flag: "compat-lyft-env",
        env: "BERTH_COMPAT_LYFT_ENV",
        value_name: "ENV",
        shape: Shape::Value,
        default: || compat().lyft.env,
        help: "lyft/discovery API: the `env` it reports",
        legacy_env: Some("APPLICATION_ENV"),
    },
    Setting {
        key: "compat.lyft.trusted_proxies",
        in_file: true,
        flag: "compat-lyft-trusted-proxies",
        env: "BERTH_COMPAT_LYFT_TRUSTED_PROXIES",
        value_name: "IPS",
        shape: Shape::Value,
        default: none,
        help: "lyft/discovery API: the proxies in front of berth (comma separated IPs) whose \
               X-Forwarded-For names the client for `auto_ip`; from others it is ignored",
        legacy_env: None,
    },
    Setting {
        key: "compat.lyft.cache_ttl",
        in_file: true,
        flag: "compat-lyft-cache-ttl",
        env: "BERTH_COMPAT_LYFT_CACHE_TTL",
        value_name: "SECONDS",
        shape: Shape::Value,
        default: none,
        help: "lyft/discovery API: accepted for old configurations and not needed (berth never \
               serves a stale read)",
        legacy_env: Some("CACHE_TTL"),
    },
    Setting {
        key: "compat.bender.ttl_ms",
        in_file: true,
        flag: "compat-bender-ttl-ms",
        env: "BERTH_COMPAT_BENDER_TTL_MS",
        value_name: "MS",
        shape: Shape::Value,
        default: || compat().bender.ttl.as_millis().to_string(),
        help: "bender API: milliseconds a registration lives without being renewed (500 or \
               more)",
        legacy_env: None,
    },
    Setting {
        key: "auth.enabled",
        in_file: true,
        flag: "auth",
        env: "BERTH_AUTH",
        value_name: "",
        shape: Shape::Switch,
        default: || "false".into(),
        help: "Require a token on every request (see docs/security.md); needed to listen on \
               anything but loopback",
        legacy_env: None,
    },
    Setting {
        key: "auth.bootstrap_token_file",
        in_file: true,
        flag: "bootstrap-token-file",
        env: "BERTH_AUTH_BOOTSTRAP_TOKEN_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "A file holding the first administrator's token secret (at least 16 characters, \
               e.g. from `openssl rand -hex 32`); berth stores only its hash",
        legacy_env: None,
    },
    Setting {
        key: "auth.anonymous",
        in_file: true,
        flag: "anonymous",
        env: "BERTH_AUTH_ANONYMOUS",
        value_name: "ACCESS",
        shape: Shape::Value,
        default: || "none".into(),
        help: "What a request without a token may do with auth on: `none`, or `read` (for old \
               pollers that cannot send a header)",
        legacy_env: None,
    },
    Setting {
        key: "http.allow_unauthenticated",
        in_file: true,
        flag: "allow-unauthenticated",
        env: "BERTH_ALLOW_UNAUTHENTICATED",
        value_name: "",
        shape: Shape::Switch,
        default: || "false".into(),
        help: "Listen on a non-loopback address with auth off, accepting that anyone who \
               reaches it can change everything",
        legacy_env: None,
    },
    Setting {
        key: "http.allowed_hosts",
        in_file: true,
        flag: "allowed-hosts",
        env: "BERTH_ALLOWED_HOSTS",
        value_name: "NAMES",
        shape: Shape::Value,
        default: none,
        help: "Host names a loopback listener answers besides loopback ones (comma separated; \
               against DNS rebinding, any other name is refused)",
        legacy_env: None,
    },
    Setting {
        key: "http.cors_allowed_origins",
        in_file: true,
        flag: "cors-allowed-origins",
        env: "BERTH_CORS_ALLOWED_ORIGINS",
        value_name: "ORIGINS",
        shape: Shape::Value,
        default: none,
        help: "Web origins allowed to call the API from a browser (comma separated, e.g. \
               `https://ops.example.com`); none unless given",
        legacy_env: None,
    },
    Setting {
        key: "tls.cert_file",
        in_file: true,
        flag: "tls-cert-file",
        env: "BERTH_TLS_CERT_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "Serve HTTPS with this certificate chain (PEM); re-read with the key on SIGHUP",
        legacy_env: None,
    },
    Setting {
        key: "tls.key_file",
        in_file: true,
        flag: "tls-key-file",
        env: "BERTH_TLS_KEY_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "The private key (PEM) of the certificate",
        legacy_env: None,
    },
    Setting {
        key: "tls.client_ca_file",
        in_file: true,
        flag: "tls-client-ca-file",
        env: "BERTH_TLS_CLIENT_CA_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "Require client certificates signed by these authorities (PEM): mutual TLS",
        legacy_env: None,
    },
    Setting {
        key: "tls.client_cert_grants",
        in_file: true,
        flag: "tls-client-cert-grants",
        env: "BERTH_TLS_CLIENT_CERT_GRANTS",
        value_name: "GRANTS",
        shape: Shape::Value,
        default: none,
        help: "With auth and mutual TLS: what a client certificate may do without a token \
               (comma separated grants, e.g. `read:*`); owned by the certificate's subject name",
        legacy_env: None,
    },
    Setting {
        key: "etcd.ca_file",
        in_file: true,
        flag: "etcd-ca-file",
        env: "BERTH_ETCD_CA_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "TLS to etcd: the authorities (PEM) that signed etcd's certificate (etcd's \
               `--cert-file`)",
        legacy_env: None,
    },
    Setting {
        key: "etcd.cert_file",
        in_file: true,
        flag: "etcd-cert-file",
        env: "BERTH_ETCD_CERT_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "berth's client certificate (PEM) for an etcd started with `--client-cert-auth`",
        legacy_env: None,
    },
    Setting {
        key: "etcd.key_file",
        in_file: true,
        flag: "etcd-key-file",
        env: "BERTH_ETCD_KEY_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "The private key (PEM) of --etcd-cert-file",
        legacy_env: None,
    },
    Setting {
        key: "etcd.user",
        in_file: true,
        flag: "etcd-user",
        env: "BERTH_ETCD_USER",
        value_name: "USER",
        shape: Shape::Value,
        default: none,
        help: "An etcd user, for an etcd with `etcdctl auth enable`",
        legacy_env: None,
    },
    Setting {
        key: "etcd.password_file",
        in_file: true,
        flag: "etcd-password-file",
        env: "BERTH_ETCD_PASSWORD_FILE",
        value_name: "FILE",
        shape: Shape::Value,
        default: none,
        help: "A file holding the etcd user's password",
        legacy_env: None,
    },
];

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key}"))
}

/// Where a value came from, so a message names what the operator must fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File { path: PathBuf, key: &'static str },
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "--{flag}"),
            Source::Env(name) => f.write_str(name),
            Source::File { path, key } => write!(f, "`{key}` in {}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// One setting's value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    pub text: String,
    pub source: Source,
}

impl Given {
    /// The value as a `T`; the error names the source and what was expected.
    pub fn switch(&self) -> anyhow::Result<bool> {
        match self.text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            other => anyhow::bail!("{}: `{other}` is not true or false", self.source),
        }
    }

    /// Comma-separated values (a list in the file).
    pub fn list(&self) -> Vec<String> {
        self.text
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn parse<T: std::str::FromStr>(&self, expected: &str) -> anyhow::Result<T> {
        self.text.trim().parse().map_err(|_| {
            anyhow::anyhow!("{}: `{}` is not {expected}", self.source, self.text.trim())
        })
    }
}

/// What the command line gave, by setting key (`berth serve`'s flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeArgs {
    flags: BTreeMap<&'static str, String>,
}

#[cfg(test)]
impl ServeArgs {
    /// As if `--flag value` had been given.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.flags.insert(setting(key).key, value.to_string());
        self
    }
}

fn help(setting: &Setting) -> String {
    let mut text = format!("{} [env: {}", setting.help, setting.env);
    if let Some(legacy) = setting.legacy_env {
        text.push_str(&format!(", then {legacy}"));
    }
    text.push(']');
    if setting.in_file && setting.key != setting.flag.replace('-', "_") {
        text.push_str(&format!(" [file: {}]", setting.key));
    }
    let default = (setting.default)();
    if !default.is_empty() {
        text.push_str(&format!(" [default: {default}]"));
    }
    text
}

impl clap::Args for ServeArgs {
    fn augment_args(command: Command) -> Command {
        SETTINGS.iter().fold(command, |command, setting| {
            let arg = Arg::new(setting.key).long(setting.flag).help(help(setting));
            command.arg(match setting.shape {
                Shape::Value => arg.value_name(setting.value_name).action(ArgAction::Set),
                Shape::Switch => arg.action(ArgAction::SetTrue),
            })
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            let value = match setting.shape {
                Shape::Value => matches.get_one::<String>(setting.key).cloned(),
                Shape::Switch => matches.get_flag(setting.key).then(|| "true".to_string()),
            };
            if let Some(value) = value {
                self.flags.insert(setting.key, value);
            }
        }
        Ok(())
    }
}

/// Every setting's value, resolved from the flags, the environment, the file and the
/// defaults.
#[derive(Clone, Debug)]
pub struct Values {
    given: BTreeMap<&'static str, Given>,
}

impl Values {
    pub fn resolve(args: &ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<Values> {
        let from_env = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let config = setting("config");
        let file = match args
            .flags
            .get(config.key)
            .cloned()
            .or_else(|| from_env(config.env))
        {
            Some(path) => {
                let path = PathBuf::from(path);
                let values = read_file(&path)?;
                Some((path, values))
            }
            None => None,
        };
        let mut given = BTreeMap::new();
        for setting in SETTINGS {
            let value = if let Some(text) = args.flags.get(setting.key) {
                Some(Given {
                    text: text.clone(),
                    source: Source::Flag(setting.flag),
                })
            } else if let Some(text) = from_env(setting.env) {
                Some(Given {
                    text,
                    source: Source::Env(setting.env),
                })
            } else if let Some((legacy, text)) = setting
                .legacy_env
                .and_then(|legacy| from_env(legacy).map(|text| (legacy, text)))
            {
                Some(Given {
                    text,
                    source: Source::Env(legacy),
                })
            } else if let Some((path, text)) = file
                .as_ref()
                .and_then(|(path, values)| values.get(setting.key).map(|text| (path, text)))
            {
                Some(Given {
                    text: text.clone(),
                    source: Source::File {
                        path: path.clone(),
                        key: setting.key,
                    },
                })
            } else {
                let default = (setting.default)();
                (!default.is_empty()).then_some(Given {
                    text: default,
                    source: Source::Default,
                })
            };
            if let Some(value) = value {
                given.insert(setting.key, value);
            }
        }
        Ok(Values { given })
    }

    /// The value of `key`, when it has one (given or defaulted).
    pub fn get(&self, key: &str) -> Option<&Given> {
        self.given.get(setting(key).key)
    }

    /// The value of a setting that has a default.
    pub fn required(&self, key: &str) -> &Given {
        self.get(key)
            .unwrap_or_else(|| panic!("setting {key} has a default"))
    }

    /// Whether the value was given rather than defaulted.
    pub fn is_given(&self, key: &str) -> bool {
        self.get(key).is_some_and(|g| g.source != Source::Default)
    }
}

/// The file's settings, flattened to dotted keys, values as text. Unknown keys are errors.
fn read_file(path: &Path) -> anyhow::Result<BTreeMap<&'static str, String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "config file {}: {}",
            path.display(),
            error.message().trim_end()
        )
    })?;
    let mut values = BTreeMap::new();
    flatten(path, "", &table, &mut values)?;
    Ok(values)
}

fn flatten(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    values: &mut BTreeMap<&'static str, String>,
) -> anyhow::Result<()> {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        let unknown = || {
            let section = prefix.trim_end_matches('.');
            let place = if section.is_empty() {
                String::new()
            } else {
                format!(" in [{section}]")
            };
            anyhow::anyhow!(
                "config file {}: unknown field `{name}`{place}; the keys are listed in \
                 docs/settings.md",
                path.display()
            )
        };
        if let toml::Value::Table(section) = value {
            if !SETTINGS
                .iter()
                .any(|s| s.in_file && s.key.starts_with(&format!("{key}.")))
            {
                return Err(unknown());
            }
            flatten(path, &format!("{key}."), section, values)?;
            continue;
        }
        let Some(setting) = SETTINGS.iter().find(|s| s.in_file && s.key == key) else {
            return Err(unknown());
        };
        let text = match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        values.insert(setting.key, text);
    }
    Ok(())
}

/// `docs/settings.md`, made from the table (a test keeps the file in step).
#[cfg(test)]
fn markdown() -> String {
    let mut text = String::from(
        "# Settings of `berth serve`\n\n\
         Generated from `crates/berth/src/settings.rs` (the test `settings_doc_is_current` \
         rewrites this file when the table changes).\n\n\
         Every setting is a flag, a `BERTH_*` environment variable and a key in the TOML file \
         given by `--config`. A flag wins over the variable, the variable over the file, the \
         file over the default. Unknown keys in the file are errors, and unknown `BERTH_*` \
         variables are logged at start.\n\n\
         | file key | flag | environment | default | meaning |\n\
         |---|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        let key = if setting.in_file {
            format!("`{}`", setting.key)
        } else {
            "—".into()
        };
        let mut env = format!("`{}`", setting.env);
        if let Some(legacy) = setting.legacy_env {
            env.push_str(&format!(", then `{legacy}`"));
        }
        let flag = match setting.shape {
            Shape::Value => format!("`--{} {}`", setting.flag, setting.value_name),
            Shape::Switch => format!("`--{}`", setting.flag),
        };
        let default = (setting.default)();
        let default = if default.is_empty() {
            "—".to_string()
        } else {
            format!("`{default}`")
        };
        text.push_str(&format!(
            "| {key} | {flag} | {env} | {default} | {} |\n",
            setting.help.replace('|', "\\|")
        ));
    }
    text
}

/// Every variable a setting reads (berth's and the legacy tools').
pub fn setting_env_names() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.env).chain(s.legacy_env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_declared_once() {
        let mut keys = std::collections::BTreeSet::new();
        let mut flags = std::collections::BTreeSet::new();
        let mut envs = std::collections::BTreeSet::new();
        for setting in SETTINGS {
            assert!(keys.insert(setting.key), "{} twice", setting.key);
            assert!(flags.insert(setting.flag), "--{} twice", setting.flag);
            assert!(envs.insert(setting.env), "{} twice", setting.env);
            assert!(setting.env.starts_with("BERTH_"), "{}", setting.env);
        }
    }

    #[test]
    fn settings_doc_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/settings.md");
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = markdown();
        if current != generated {
            std::fs::write(&path, &generated).unwrap();
            panic!(
                "docs/settings.md was out of date and has been regenerated; review and commit it"
            );
        }
    }
}
