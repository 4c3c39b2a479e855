//! Commands about the server and the tool themselves: `berth status` (one glance at a server),
//! `berth completions` and `berth man` (generated from the same definitions as `--help`).

use crate::cli::{ClientArgs, print_json, say};
use berth_client::Method;
use clap::Args;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (berth.1, berth-serve.1, …) into this directory instead of
    /// printing berth(1)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script of `shell` for `command` (source it, or install it where the
/// shell looks: `berth completions bash > /etc/bash_completion.d/berth`).
pub fn completions(mut command: clap::Command, args: &CompletionsArgs) {
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
}

/// Prints the man page of `command`, or writes one page per command into `--dir`.
pub fn man(command: clap::Command, args: &ManArgs) -> anyhow::Result<()> {
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(command, dir)?;
            say(format!("wrote the man pages into {}", dir.display()));
        }
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
    }
    Ok(())
}

/// The server's version, store, revisions, health and live instances, in one glance.
pub async fn status(client_args: &ClientArgs) -> anyhow::Result<()> {
    let client = client_args.client()?;
    // /health answers 503 with its JSON when the store does not answer: still worth showing.
    let health = match client.call(Method::GET, "/health", None).await {
        Ok(health) => health,
        Err(berth_client::ClientError::Api {
            status: 503,
            message,
            ..
        }) => serde_json::from_str(&message)
            .unwrap_or_else(|_| json!({"status": "unavailable", "error": message})),
        Err(error) => return Err(error.into()),
    };
    let services = client.services().await?;
    let instances: usize = services.services.iter().map(|s| s.instances).sum();
    let answer = json!({
        "server": client.base(),
        "health": health,
        "services": services.services.len(),
        "instances": instances,
    });
    if client_args.json {
        return print_json(&answer);
    }
    let field = |value: &Value| match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut lines = vec![
        format!("server      {}", client.base()),
        format!("version     {}", field(&health["version"])),
        format!("health      {}", field(&health["status"])),
        format!(
            "store       {} at revision {} (this node's view: {})",
            field(&health["store"]),
            field(&health["revision"]),
            field(&health["view_revision"])
        ),
        format!("services    {}", services.services.len()),
        format!("instances   {instances} live"),
    ];
    if let Some(error) = health.get("error") {
        lines.push(format!("error       {}", field(error)));
    }
    let undecodable = &health["undecodable_records"]["count"];
    if undecodable.as_u64().is_some_and(|count| count > 0) {
        lines.push(format!(
            "undecodable {} stored records are not served (last: {})",
            field(undecodable),
            field(&health["undecodable_records"]["last"])
        ));
    }
    say(lines.join("\n"));
    Ok(())
}
