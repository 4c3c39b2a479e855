//! `berth token`: create, list and revoke access tokens (an administrator's token is needed),
//! and show the token the client itself sends.

use crate::cli::{ClientArgs, print_json, print_table, say};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never again
    ///
    /// Example: berth token create --owner payments --grant 'write:payments-*' --grant 'read:*'
    Create {
        /// The team the token belongs to: instances it registers are that team's
        #[arg(long)]
        owner: String,
        /// A grant (repeatable): read:PREFIX*, write:PREFIX*, catalog:read, catalog:write, admin
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// What the token is for
        #[arg(long)]
        description: Option<String>,
        /// Write the secret to this file (mode 0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
    },
    /// List the tokens (never their secrets)
    List,
    /// Revoke a token: every request with it is refused from now on, on every node
    Revoke { id: String },
    /// Show the token this client sends
    #[command(name = "self")]
    Whoami,
}

pub async fn token(client_args: &ClientArgs, command: TokenCommand) -> anyhow::Result<()> {
    let client = client_args.client()?;
    match command {
        TokenCommand::Create {
            owner,
            grants,
            description,
            secret_file,
        } => {
            let mut token = client
                .create_token(&owner, &grants, description.as_deref().unwrap_or(""))
                .await?;
            if let Some(path) = &secret_file {
                let secret = token.secret.take().unwrap_or_default();
                write_secret(path, &secret)?;
            }
            if client_args.json {
                return print_json(&token);
            }
            say(format!(
                "created token {} of {} with {}",
                token.id,
                token.owner,
                token.grants.join(" ")
            ));
            match (&token.secret, &secret_file) {
                (Some(secret), _) => say(format!("secret (shown once): {secret}")),
                (None, Some(path)) => say(format!("secret written to {}", path.display())),
                (None, None) => {}
            }
            Ok(())
        }
        TokenCommand::List => {
            let tokens = client.tokens().await?;
            if client_args.json {
                return print_json(&tokens);
            }
            print_table(
                &["ID", "OWNER", "GRANTS", "CREATED", "DESCRIPTION"],
                tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.owner.clone(),
                            t.grants.join(" "),
                            t.created_at.clone(),
                            t.description.clone(),
                        ]
                    })
                    .collect(),
            );
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(&id).await?;
            if client_args.json {
                print_json(&serde_json::json!({ "revoked": id }))
            } else {
                say(format!("revoked token {id}"));
                Ok(())
            }
        }
        TokenCommand::Whoami => {
            let token = client.token_self().await?;
            if client_args.json || token.get("id").is_none() {
                return print_json(&token);
            }
            say(format!(
                "token {} of {}: {}",
                token["id"].as_str().unwrap_or(""),
                token["owner"].as_str().unwrap_or(""),
                token["grants"]
                    .as_array()
                    .map(|grants| {
                        grants
                            .iter()
                            .filter_map(|g| g.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            ));
            Ok(())
        }
    }
}

/// Writes a secret readable by its owner only, refusing to overwrite a file.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))
}
