//! The `berth` binary: `berth serve` runs the registry, `berth agent` the Docker registrar;
//! the other commands are the registry's client.
//! Thin wiring only: everything real lives in the crates under `crates/`.

mod agent;
mod catalog_cli;
mod cli;
mod logging;
mod ops_cli;
mod progress;
mod serve;
mod token_cli;
mod xds_cli;

use berth::{config, settings};
use clap::{CommandFactory, Parser, Subcommand};
use std::collections::BTreeMap;
use std::process::ExitCode;

// A registry allocates many small, short-lived objects per request; mimalloc does that with
// less CPU than glibc's allocator (measured: registrations/s and heartbeats/s, see
// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A service registry in one binary: port blocks, live instances, start order",
    long_about = "berth answers three questions for a platform: which port does my application \
own, where are the live instances of service X right now, and what must start before what.\n\n\
Run `berth serve` for a server on the embedded store (no configuration needed); the other \
commands talk to a running server (see --server / BERTH_ADDR)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the berth server
    Serve(settings::ServeArgs),
    /// Run the Docker registrar: register every published container port
    ///
    /// Registers every published port of the containers the Docker engine runs, and removes
    /// them when the containers stop. Follows the engine's event stream and resyncs in full on
    /// an interval (both ways: registers what runs and is missing, removes what this host
    /// registered and no longer runs). Records of other hosts are never touched.
    ///
    /// Naming, per port: SERVICE_<port>_NAME, SERVICE_NAME, NAME or APP (environment or
    /// label), else the image's base name; `-<port>` is added when the container has several
    /// ports and the name is not port-specific. Tags: SERVICE_<port>_TAGS, SERVICE_TAGS or TAGS
    /// (comma separated), plus ENVIRONMENT. Metadata: SERVICE_<port>_<KEY> and SERVICE_<KEY>.
    /// SERVICE_IGNORE skips a container, SERVICE_<port>_IGNORE a port. Containers with a
    /// HEALTHCHECK are registered only while healthy. Version: the image's tag.
    Agent(agent::AgentArgs),
    /// Register an instance of a service (with --heartbeat, keep it alive until Ctrl-C)
    Register {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(flatten)]
        args: cli::RegisterArgs,
    },
    /// Remove an instance now
    Deregister {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(flatten)]
        args: cli::DeregisterArgs,
    },
    /// List the services that have live instances
    Services {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// List a service's live instances
    Instances {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(flatten)]
        args: cli::InstancesArgs,
    },
    /// Stream online / updated / offline events as they happen
    Watch {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(flatten)]
        args: cli::WatchArgs,
    },
    /// Kinds: technologies with a default internal port and a slot in each port block
    Kinds {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: catalog_cli::KindsCommand,
    },
    /// Applications and the external ports they own
    Apps {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: catalog_cli::AppsCommand,
    },
    /// Dependencies between applications (never a cycle)
    Deps {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: catalog_cli::DepsCommand,
    },
    /// What must start before what: every application in waves, or one app's chain
    StartOrder {
        #[command(flatten)]
        client: cli::ClientArgs,
        app: Option<String>,
    },
    /// KEY=VALUE lines with the ports of an app and of everything it depends on
    Env {
        #[command(flatten)]
        client: cli::ClientArgs,
        app: String,
    },
    /// Export or import the whole catalog
    Catalog {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: catalog_cli::CatalogCommand,
    },
    /// bender's backends: the live instances of a service at a version
    Backends {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: catalog_cli::RoutingCommand,
    },
    /// Access tokens: create (the secret is shown once), list, revoke, self
    Token {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: token_cli::TokenCommand,
    },
    /// bender's frontends: what serves a backend
    Frontends {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: catalog_cli::RoutingCommand,
    },
    /// One glance at a server: version, health, store and revision, live instances
    Status {
        #[command(flatten)]
        client: cli::ClientArgs,
    },
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell
    ///
    /// bash: `source <(berth completions bash)`, or save it as
    /// /etc/bash_completion.d/berth. zsh: save it as `_berth` on $fpath. fish: save it as
    /// ~/.config/fish/completions/berth.fish.
    Completions(ops_cli::CompletionsArgs),
    /// Print the man page (roff), or write one page per command with --dir
    Man(ops_cli::ManArgs),
    /// xDS for Envoy and proxyless gRPC: print a bootstrap pointing at this berth
    Xds {
        #[command(subcommand)]
        command: xds_cli::XdsCommand,
    },
}

impl Command {
    /// The server a client command talks to (named in its errors).
    fn server(&self) -> Option<&str> {
        let client = match self {
            Command::Register { client, .. }
            | Command::Deregister { client, .. }
            | Command::Services { client }
            | Command::Instances { client, .. }
            | Command::Watch { client, .. }
            | Command::Kinds { client, .. }
            | Command::Apps { client, .. }
            | Command::Deps { client, .. }
            | Command::StartOrder { client, .. }
            | Command::Env { client, .. }
            | Command::Catalog { client, .. }
            | Command::Backends { client, .. }
            | Command::Token { client, .. }
            | Command::Frontends { client, .. }
            | Command::Status { client } => client,
            Command::Serve(_)
            | Command::Agent(_)
            | Command::Completions(_)
            | Command::Man(_)
            | Command::Xds { .. } => {
                return None;
            }
        };
        Some(&client.server)
    }
}

/// `BERTH_*` variables in `env` that nothing reads (probably typos): every setting's and
/// every command's variables are known.
fn unknown_env_vars(env: &BTreeMap<String, String>) -> Vec<String> {
    fn command_env(command: &clap::Command, known: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env() {
                known.push(name.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            command_env(sub, known);
        }
    }
    let mut known: Vec<String> = settings::setting_env_names().map(String::from).collect();
    command_env(&Cli::command(), &mut known);
    env.keys()
        .filter(|name| name.starts_with("BERTH_") && !known.contains(name))
        .cloned()
        .collect()
}

fn main() -> ExitCode {
    // The allocator asks for transparent huge pages: a 2 MiB page for each touched region
    // (measured: 29 KiB of resident memory per open connection with them, 17 KiB without, and
    // no throughput lost). A registry holds many small things, so berth does without.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    match cli.command {
        Command::Xds { command } => {
            return match xds_cli::xds(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("berth: error: {error:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Completions(ref args) => {
            ops_cli::completions(Cli::command(), args);
            return ExitCode::SUCCESS;
        }
        Command::Man(ref args) => {
            return match ops_cli::man(Cli::command(), args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("berth: error: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // The one place the environment is read: everything else gets it passed in.
    #[allow(clippy::disallowed_methods)]
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("berth: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => match config::resolve(&args, &env) {
            Ok(config) => {
                let (log_format, log_level) = (config.log_format, config.log_level.clone());
                run_daemon(
                    &runtime,
                    log_format,
                    &log_level,
                    serve::run(config, unknown_env_vars(&env)),
                    "berth",
                )
            }
            Err(error) => configuration_error(&error),
        },
        Command::Agent(args) => match agent::validate(&args) {
            Ok(()) => {
                let (log_format, log_level) = (args.log_format, args.log_level.clone());
                run_daemon(
                    &runtime,
                    log_format,
                    &log_level,
                    agent::run(args),
                    "the agent",
                )
            }
            Err(error) => configuration_error(&error),
        },
        command => {
            let server = command.server().unwrap_or_default().to_string();
            let result = runtime.block_on(async move {
                match command {
                    Command::Serve(_)
                    | Command::Agent(_)
                    | Command::Completions(_)
                    | Command::Man(_)
                    | Command::Xds { .. } => unreachable!("handled above"),
                    Command::Register { client, args } => cli::register(&client, args).await,
                    Command::Deregister { client, args } => cli::deregister(&client, args).await,
                    Command::Services { client } => cli::services(&client).await,
                    Command::Instances { client, args } => cli::instances(&client, args).await,
                    Command::Watch { client, args } => cli::watch(&client, args).await,
                    Command::Kinds { client, command } => {
                        catalog_cli::kinds(&client, command).await
                    }
                    Command::Apps { client, command } => catalog_cli::apps(&client, command).await,
                    Command::Deps { client, command } => catalog_cli::deps(&client, command).await,
                    Command::StartOrder { client, app } => {
                        catalog_cli::start_order(&client, app).await
                    }
                    Command::Env { client, app } => catalog_cli::env(&client, app).await,
                    Command::Catalog { client, command } => {
                        catalog_cli::catalog(&client, command).await
                    }
                    Command::Backends { client, command } => {
                        catalog_cli::routing(&client, "backends", command).await
                    }
                    Command::Token { client, command } => token_cli::token(&client, command).await,
                    Command::Frontends { client, command } => {
                        catalog_cli::routing(&client, "frontends", command).await
                    }
                    Command::Status { client } => ops_cli::status(&client).await,
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("berth: error: {error:#}");
                    if let Some(hint) = client_error_hint(&error, &server) {
                        eprintln!("{hint}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What to do about a client command's failure, when the error says: a server that cannot be
/// reached, or a refusal for want of a token.
fn client_error_hint(error: &anyhow::Error, server: &str) -> Option<String> {
    match error.downcast_ref::<berth_client::ClientError>()? {
        berth_client::ClientError::Transport { .. } => Some(format!(
            "  is `berth serve` running at {server}? Name another server with --server or BERTH_ADDR."
        )),
        berth_client::ClientError::Api { status: 401, .. } => Some(format!(
            "  {server} wants a token: pass --token-file FILE (or BERTH_TOKEN_FILE)."
        )),
        berth_client::ClientError::Api { status: 403, .. } => Some(
            "  the token lacks a grant for this: `berth token self` shows what it may do.".into(),
        ),
        _ => None,
    }
}

/// A settings error: one line on stderr (logging is not set up yet), exit 2.
fn configuration_error(error: &anyhow::Error) -> ExitCode {
    eprintln!("berth: configuration error: {error:#}");
    ExitCode::from(2)
}

/// Runs a long-lived command (`serve`, `agent`) with its logging: a bad log setting exits 2,
/// a failure while running is one error log line and exit 1.
fn run_daemon(
    runtime: &tokio::runtime::Runtime,
    log_format: config::LogFormat,
    log_level: &str,
    run: impl std::future::Future<Output = anyhow::Result<()>>,
    who: &str,
) -> ExitCode {
    if let Err(error) = logging::init(log_format, log_level) {
        return configuration_error(&error);
    }
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "{who} could not run");
            ExitCode::FAILURE
        }
    }
}
