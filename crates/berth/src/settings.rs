//! Every setting of `berth serve`, declared once in [`SETTINGS`]: the command-line flags, the
//! TOML file's keys, the `BERTH_*` variables, `--help` and `docs/settings.md` are all made from
//! that table. A value comes from its flag, else its variable (then a legacy tool's variable
//! where one exists), else the file, else the default; the environment is passed in, never read
//! here, so what a test resolves does not depend on the runner's environment.

use berth_api::compat::CompatConfig;
use berth_domain::InstanceDefaults;
use berth_domain::catalog::allocator::PortRange;
use berth_store::StoreLocation;
use berth_store::embedded::EmbeddedOptions;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Whether a setting takes a value or is a switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Value,
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
