//! The client commands for live instances: register (optionally staying in the foreground to
//! heartbeat), deregister, services, instances, watch. Each prints a readable table or, with
//! `--json`, the API's JSON.

use anyhow::Context;
use berth_client::{Client, ClientError, ClientOptions, Registration};
use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the server is and how to print.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// berth's address (https:// with TLS; see --ca-file); several separated by commas fail
    /// over to each other on connection errors and 503s
    #[arg(
        long,
        env = "BERTH_ADDR",
        default_value = "http://127.0.0.1:7420",
        global = true
    )]
    pub server: String,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// How a client (a command or the agent) proves who it is and checks whom it talks to.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// A file holding the token to send (its secret)
    #[arg(long, env = "BERTH_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The token to send (prefer --token-file: a variable can leak into logs and ps output)
    #[arg(
        long = "token",
        env = "BERTH_TOKEN",
        value_name = "SECRET",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// https: the PEM certificates of the authorities to trust instead of the system's
    #[arg(long, env = "BERTH_CA_FILE", value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// https with a server that asks for client certificates: this certificate (PEM)
    #[arg(
        long,
        env = "BERTH_CLIENT_CERT_FILE",
        value_name = "FILE",
        requires = "key_file",
        global = true
    )]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of --cert-file
    #[arg(
        long,
        env = "BERTH_CLIENT_KEY_FILE",
        value_name = "FILE",
        requires = "cert_file",
        global = true
    )]
    pub key_file: Option<PathBuf>,
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

impl ConnectionArgs {
    /// The token, TLS trust and client certificate, read from their files.
    pub fn options(&self) -> anyhow::Result<ClientOptions> {
        let token = match &self.token_file {
            Some(path) => {
                let text = String::from_utf8(read_file(path, "token file")?)
                    .with_context(|| format!("the token file {} is not text", path.display()))?;
                Some(text.trim().to_string())
            }
            None => self.token.clone(),
        };
        let ca_pem = self
            .ca_file
            .as_deref()
            .map(|path| read_file(path, "CA file"))
            .transpose()?;
        let identity_pem = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file(cert, "client certificate")?;
                pem.push(b'\n');
                pem.extend(read_file(key, "client key")?);
                Some(pem)
            }
            _ => None,
        };
        Ok(ClientOptions {
            token,
            ca_pem,
            identity_pem,
        })
    }
}

impl ClientArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_options(
            &self.server,
            &self.connection.options()?,
        )?)
    }
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The service the instance belongs to
    pub service: String,
    /// The instance's address (IPv4, IPv6 or DNS name)
    #[arg(long)]
    pub address: String,
    #[arg(long)]
    pub port: u16,
    /// The instance id [default: ADDRESS:PORT]
    #[arg(long)]
    pub id: Option<String>,
    /// How long the instance lives without a heartbeat, e.g. 30s
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// A tag (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Metadata as KEY=VALUE (repeatable)
    #[arg(long = "meta", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long)]
    pub zone: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Load-balancing weight, 1 to 100
    #[arg(long)]
    pub weight: Option<u8>,
    #[arg(long)]
    pub canary: bool,
    /// Stay in the foreground renewing the instance every TTL/3 until Ctrl-C, then deregister
    #[arg(long)]
    pub heartbeat: bool,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

#[derive(Args, Debug)]
pub struct DeregisterArgs {
    pub service: String,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct InstancesArgs {
    pub service: String,
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long)]
    pub zone: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Only instances with this tag (repeatable: all must match)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub canary: Option<bool>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this service's events
    pub service: Option<String>,
    /// Start after this revision (replays what happened since)
    #[arg(long)]
    pub after: Option<i64>,
}

/// Prints one line. A reader that went away (`berth watch | head -3`) is not an error to
/// panic over: the line is dropped.
pub(crate) fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    say(serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as aligned columns.
pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        say(padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".into())
}

pub async fn register(client_args: &ClientArgs, args: RegisterArgs) -> anyhow::Result<()> {
    let client = client_args.client()?;
    let registration = Registration {
        id: args.id.clone(),
        address: args.address.clone(),
        port: args.port,
        ttl_ms: args.ttl.map(|t| t.as_millis() as u64),
        version: args.version.clone(),
        zone: args.zone.clone(),
        region: args.region.clone(),
        weight: args.weight,
        canary: args.canary.then_some(true),
        tags: args.tags.clone(),
        meta: args.meta.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..Registration::default()
    };
    let (instance, created) = client.register(&args.service, &registration).await?;
    if client_args.json {
        print_json(&instance)?;
    } else {
        say(format!(
            "{} {} of {} at {}:{} (expires {})",
            if created { "registered" } else { "renewed" },
            instance.id,
            instance.service,
            instance.address,
            instance.port,
            instance.expires_at.as_deref().unwrap_or("-")
        ));
    }
    if !args.heartbeat {
        return Ok(());
    }
    let period = Duration::from_millis(instance.ttl_ms / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(period);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        match client.heartbeat(&args.service, &instance.id).await {
            Ok(_) => {}
            Err(error) if error.status() == Some(404) => {
                // Expired while we could not reach berth: register again.
                eprintln!("instance {} had expired; registering again", instance.id);
                client.register(&args.service, &registration).await?;
            }
            Err(error) => eprintln!("heartbeat failed (will retry): {error}"),
        }
    }
    client
        .deregister(&args.service, &instance.id)
        .await
        .context("deregistering at exit")?;
    if !client_args.json {
        say(format!("deregistered {} of {}", instance.id, args.service));
    }
    Ok(())
}

pub async fn deregister(client_args: &ClientArgs, args: DeregisterArgs) -> anyhow::Result<()> {
    client_args
        .client()?
        .deregister(&args.service, &args.id)
        .await?;
    if client_args.json {
        print_json(&serde_json::json!({"deregistered": {"service": args.service, "id": args.id}}))
    } else {
        say(format!("deregistered {} of {}", args.id, args.service));
        Ok(())
    }
}

pub async fn services(client_args: &ClientArgs) -> anyhow::Result<()> {
    let list = client_args.client()?.services().await?;
    if client_args.json {
        return print_json(&list);
    }
    print_table(
        &["SERVICE", "INSTANCES", "ZONES"],
        list.services
            .iter()
            .map(|s| vec![s.name.clone(), s.instances.to_string(), s.zones.join(",")])
            .collect(),
    );
    Ok(())
}

pub async fn instances(client_args: &ClientArgs, args: InstancesArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("version", &args.version),
        ("zone", &args.zone),
        ("region", &args.region),
    ] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    query.extend(args.tags.iter().map(|t| ("tag", t.clone())));
    if let Some(canary) = args.canary {
        query.push(("canary", canary.to_string()));
    }
    let list = client_args
        .client()?
        .instances(&args.service, &query)
        .await?;
    if client_args.json {
        return print_json(&list);
    }
    print_table(
        &[
            "ID", "ADDRESS", "PORT", "VERSION", "ZONE", "WEIGHT", "TAGS", "EXPIRES",
        ],
        list.instances
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    i.address.clone(),
                    i.port.to_string(),
                    or_dash(&i.version),
                    or_dash(&i.zone),
                    i.weight.to_string(),
                    i.tags.join(","),
                    or_dash(&i.expires_at),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub async fn watch(client_args: &ClientArgs, args: WatchArgs) -> anyhow::Result<()> {
    let mut events = client_args
        .client()?
        .events(args.service.as_deref(), args.after)
        .await?;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else {
            return Err(ClientError::Transport {
                base: client_args.server.clone(),
                detail: "the event stream ended".into(),
            }
            .into());
        };
        let event = event?;
        if client_args.json {
            say(serde_json::to_string(&event)?);
            continue;
        }
        let data = &event.data;
        let revision = data["revision"].as_i64().unwrap_or_default();
        match event.kind.as_str() {
            "reset" => say(format!(
                "{revision} reset: {} instances",
                data["instances"].as_array().map_or(0, Vec::len)
            )),
            "error" => say(format!("error: {}", data["message"].as_str().unwrap_or(""))),
            kind => {
                let instance = &data["instance"];
                let reason = data["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                say(format!(
                    "{revision} {kind}{reason} {} {} {}:{}",
                    instance["service"].as_str().unwrap_or(""),
                    instance["id"].as_str().unwrap_or(""),
                    instance["address"].as_str().unwrap_or(""),
                    instance["port"]
                ));
            }
        }
    }
}
