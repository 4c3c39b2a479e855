//! The client commands for the catalog: kinds, applications and their ports, dependencies,
//! start order, environment files, export and import, backends and frontends.

use crate::cli::{ClientArgs, print_json, print_table, say};
use crate::progress::Progress;
use anyhow::Context;
use berth_client::{Client, ClientError, Method, Transfer, segment};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn ports(app: &Value) -> String {
    app["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| format!("{}:{}->{}", text(&p["kind"]), p["external"], p["internal"]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn names(list: &Value) -> String {
    list.as_array()
        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn print_apps(apps: &Value) {
    let rows = apps
        .as_array()
        .map(|apps| {
            apps.iter()
                .map(|app| vec![text(&app["id"]), ports(app), names(&app["dependencies"])])
                .collect()
        })
        .unwrap_or_default();
    print_table(
        &["APP", "PORTS (kind:external->internal)", "DEPENDS ON"],
        rows,
    );
}

/// Prints JSON with `--json`, else runs `human`.
fn show(client_args: &ClientArgs, value: &Value, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if client_args.json {
        print_json(value)
    } else {
        human(value);
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum KindsCommand {
    /// List kinds
    Ls,
    /// Show one kind
    Show { name: String },
    /// Create a kind (fails if it exists)
    Create(KindArgs),
    /// Create or update a kind
    Set(KindArgs),
    /// Delete a kind no application uses
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct KindArgs {
    pub name: String,
    /// The internal port applications of this kind listen on
    #[arg(long)]
    pub default_port: u16,
    /// The kind's fixed slot inside a port block (0-9); without one, the first free slot
    #[arg(long)]
    pub offset: Option<u8>,
}

pub async fn kinds(client_args: &ClientArgs, command: KindsCommand) -> anyhow::Result<()> {
    let client = client_args.client()?;
    let print_kinds = |kinds: &Value| {
        let rows = kinds
            .as_array()
            .map(|kinds| {
                kinds
                    .iter()
                    .map(|k| {
                        vec![
                            text(&k["name"]),
                            text(&k["default_port"]),
                            text(&k["offset"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        print_table(&["KIND", "DEFAULT PORT", "OFFSET"], rows);
    };
    match command {
        KindsCommand::Ls => {
            let kinds = client.call(Method::GET, "/v1/kinds", None).await?;
            show(client_args, &kinds, print_kinds)
        }
        KindsCommand::Show { name } => {
            let kind = client
                .call(Method::GET, &format!("/v1/kinds/{}", segment(&name)), None)
                .await?;
            show(client_args, &kind, |k| print_kinds(&json!([k])))
        }
        KindsCommand::Create(args) => {
            let body = json!({"name": args.name, "default_port": args.default_port, "offset": args.offset});
            let kind = client.call(Method::POST, "/v1/kinds", Some(&body)).await?;
            show(client_args, &kind, |k| {
                say(format!("created kind {}", text(&k["name"])))
            })
        }
        KindsCommand::Set(args) => {
            let body = json!({"default_port": args.default_port, "offset": args.offset});
            let path = format!("/v1/kinds/{}", segment(&args.name));
            let kind = client.call(Method::PUT, &path, Some(&body)).await?;
            show(client_args, &kind, |k| {
                say(format!("kind {} saved", text(&k["name"])))
            })
        }
        KindsCommand::Rm { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/kinds/{}", segment(&name)),
                    None,
                )
                .await?;
            show(client_args, &json!({"deleted": name}), |_| {
                say(format!("deleted kind {name}"))
            })
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// Create an application with a first port of a kind
    Create {
        id: String,
        #[arg(long)]
        kind: String,
        /// Choose the external port instead of letting berth allocate one
        #[arg(long)]
        external: Option<u16>,
        #[arg(long)]
        internal: Option<u16>,
        /// A dependency (repeatable)
        #[arg(long = "dep")]
        dependencies: Vec<String>,
    },
    /// List applications
    Ls {
        /// The family: this id and ids starting with it and a '-'
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Ids containing this
        #[arg(long)]
        q: Option<String>,
        /// Owning this external port
        #[arg(long)]
        port: Option<u16>,
        /// id, -id, port, -port, created, -created
        #[arg(long, allow_hyphen_values = true)]
        sort: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        offset: Option<usize>,
    },
    /// Show an application, its ports, dependencies and live instances
    Show { id: String },
    /// Delete an application (refused while others depend on it)
    Rm { id: String },
    /// Give an application a port of another kind
    AddKind {
        id: String,
        kind: String,
        #[arg(long)]
        external: Option<u16>,
        #[arg(long)]
        internal: Option<u16>,
    },
    /// Free an application's port of a kind
    RmKind { id: String, kind: String },
}

pub async fn apps(client_args: &ClientArgs, command: AppsCommand) -> anyhow::Result<()> {
    let client = client_args.client()?;
    match command {
        AppsCommand::Create {
            id,
            kind,
            external,
            internal,
            dependencies,
        } => {
            let body = json!({"id": id, "kind": kind, "external": external, "internal": internal, "dependencies": dependencies});
            let app = client.call(Method::POST, "/v1/apps", Some(&body)).await?;
            show(client_args, &app, |app| {
                say(format!("created {} with {}", text(&app["id"]), ports(app)))
            })
        }
        AppsCommand::Ls {
            prefix,
            kind,
            q,
            port,
            sort,
            limit,
            offset,
        } => {
            let mut query: Vec<String> = Vec::new();
            let mut add = |name: &str, value: Option<String>| {
                if let Some(value) = value {
                    query.push(format!("{name}={}", segment(&value)));
                }
            };
            add("prefix", prefix);
            add("kind", kind);
            add("q", q);
            add("port", port.map(|p| p.to_string()));
            add("sort", sort);
            add("limit", limit.map(|l| l.to_string()));
            add("offset", offset.map(|o| o.to_string()));
            let path = format!("/v1/apps?{}", query.join("&"));
            let apps = client.call(Method::GET, &path, None).await?;
            show(client_args, &apps, print_apps)
        }
        AppsCommand::Show { id } => {
            let app = client
                .call(Method::GET, &format!("/v1/apps/{}", segment(&id)), None)
                .await?;
            show(client_args, &app, |app| {
                print_apps(&json!([app]));
                let instances = app["instances"].as_array().cloned().unwrap_or_default();
                say(format!("live instances: {}", instances.len()));
                for instance in instances {
                    say(format!(
                        "  {} {}:{}",
                        text(&instance["id"]),
                        text(&instance["address"]),
                        instance["port"]
                    ));
                }
            })
        }
        AppsCommand::Rm { id } => {
            client
                .call(Method::DELETE, &format!("/v1/apps/{}", segment(&id)), None)
                .await?;
            show(client_args, &json!({"deleted": id}), |_| {
                say(format!("deleted {id}"))
            })
        }
        AppsCommand::AddKind {
            id,
            kind,
            external,
            internal,
        } => {
            let path = format!("/v1/apps/{}/ports/{}", segment(&id), segment(&kind));
            let body = json!({"external": external, "internal": internal});
            let answer = client.call(Method::PUT, &path, Some(&body)).await?;
            show(client_args, &answer, |a| {
                say(format!(
                    "{} has {} port {}",
                    id,
                    kind,
                    text(&a["port"]["external"])
                ))
            })
        }
        AppsCommand::RmKind { id, kind } => {
            let path = format!("/v1/apps/{}/ports/{}", segment(&id), segment(&kind));
            let app = client.call(Method::DELETE, &path, None).await?;
            show(client_args, &app, |app| {
                say(format!("{} now has {}", id, ports(app)))
            })
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum DepsCommand {
    /// APP depends on DEP (refused if that closes a cycle)
    Add { app: String, dep: String },
    /// APP no longer depends on DEP
    Rm { app: String, dep: String },
    /// APP's direct dependencies
    Ls { app: String },
}

pub async fn deps(client_args: &ClientArgs, command: DepsCommand) -> anyhow::Result<()> {
    let client = client_args.client()?;
    let (method, path) = match &command {
        DepsCommand::Add { app, dep } => (
            Method::PUT,
            format!("/v1/apps/{}/dependencies/{}", segment(app), segment(dep)),
        ),
        DepsCommand::Rm { app, dep } => (
            Method::DELETE,
            format!("/v1/apps/{}/dependencies/{}", segment(app), segment(dep)),
        ),
        DepsCommand::Ls { app } => (
            Method::GET,
            format!("/v1/apps/{}/dependencies", segment(app)),
        ),
    };
    let answer = client.call(method, &path, None).await?;
    show(client_args, &answer, |a| say(names(&a["dependencies"])))
}

pub async fn start_order(client_args: &ClientArgs, app: Option<String>) -> anyhow::Result<()> {
    let client = client_args.client()?;
    match app {
        None => {
            let answer = client.call(Method::GET, "/v1/start-order", None).await?;
            show(client_args, &answer, |a| {
                for (index, wave) in a["waves"].as_array().into_iter().flatten().enumerate() {
                    say(format!("{}: {}", index + 1, names(wave).replace(',', " ")));
                }
            })
        }
        Some(app) => {
            let path = format!("/v1/apps/{}/start-order", segment(&app));
            let answer = client.call(Method::GET, &path, None).await?;
            show(client_args, &answer, |a| {
                say(names(&a["order"]).replace(',', " "))
            })
        }
    }
}

/// `KEY=VALUE` lines for the app's ports and its dependencies' ports.
pub async fn env(client_args: &ClientArgs, app: String) -> anyhow::Result<()> {
    let client = client_args.client()?;
    let answer = client
        .call(
            Method::GET,
            &format!("/v1/apps/{}/env", segment(&app)),
            None,
        )
        .await?;
    show(client_args, &answer, |a| {
        for (name, value) in a["variables"].as_object().into_iter().flatten() {
            say(format!("{name}={value}"));
        }
    })
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Print the whole catalog (JSON, or YAML with --format yaml)
    Export {
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Restore an export (all or nothing); a .yaml/.yml file is read as YAML
    Import { file: std::path::PathBuf },
    /// Where the port allocator stands (its range, high-water mark, the next new family's
    /// port), and repair the mark
    Allocator {
        /// Set the high-water mark: new families get blocks above it
        #[arg(long, value_name = "PORT")]
        set_high_water: Option<u16>,
    },
}

/// Runs one reporting request with `progress` drawn while it lasts, and erased after.
async fn with_progress<F>(
    progress: &Progress,
    request: impl FnOnce(Box<dyn Fn(Transfer) + Send + Sync>) -> F,
) -> Result<String, ClientError>
where
    F: std::future::Future<Output = Result<String, ClientError>>,
{
    let reporter = progress.clone();
    let ticker = progress.tick();
    let answer = request(Box::new(move |transfer| reporter.transferred(transfer))).await;
    progress.finish(ticker);
    answer
}

pub async fn catalog(client_args: &ClientArgs, command: CatalogCommand) -> anyhow::Result<()> {
    let client: Client = client_args.client()?;
    match command {
        CatalogCommand::Export { format } => {
            let path = format!("/v1/catalog?format={}", segment(&format));
            let progress = Progress::on_terminal(
                "exporting the catalog".into(),
                "the server is exporting",
                client_args.json,
            );
            let text = with_progress(&progress, |report| {
                client.call_text_reporting(Method::GET, &path, "application/json", None, report)
            })
            .await?;
            say(text.trim_end());
            Ok(())
        }
        CatalogCommand::Import { file } => {
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
            let content_type = if yaml {
                "application/yaml"
            } else {
                "application/json"
            };
            let progress = Progress::on_terminal(
                format!("importing {}", file.display()),
                "the server is importing",
                client_args.json,
            );
            let answer = with_progress(&progress, |report| {
                client.call_text_reporting(
                    Method::POST,
                    "/v1/catalog/import",
                    content_type,
                    Some(body),
                    report,
                )
            })
            .await?;
            let answer: Value = serde_json::from_str(&answer)?;
            show(client_args, &answer, |a| {
                say(format!(
                    "imported {} kinds ({} already there), {} applications, {} backends, {} frontends",
                    a["kinds"],
                    a["kinds_unchanged"],
                    a["applications"],
                    a["backends"],
                    a["frontends"]
                ))
            })
        }
        CatalogCommand::Allocator { set_high_water } => {
            let answer = match set_high_water {
                Some(mark) => {
                    let body = serde_json::json!({ "high_water": mark }).to_string();
                    client
                        .call_text(
                            Method::PUT,
                            "/v1/catalog/allocator",
                            "application/json",
                            Some(body),
                        )
                        .await?
                }
                None => {
                    client
                        .call_text(
                            Method::GET,
                            "/v1/catalog/allocator",
                            "application/json",
                            None,
                        )
                        .await?
                }
            };
            let answer: Value = serde_json::from_str(&answer)?;
            let port = |v: &Value| v.as_u64().map_or("-".to_string(), |p| p.to_string());
            show(client_args, &answer, |a| {
                say(format!(
                    "range {}-{} in blocks of {}; high-water mark {}; highest claimed {}; a new family gets {}",
                    a["start"],
                    a["ceiling"],
                    a["block_size"],
                    port(&a["high_water"]),
                    port(&a["highest_claimed"]),
                    a["next_new_family_port"]
                        .as_u64()
                        .map_or("nothing (no block left)".to_string(), |p| p.to_string())
                ))
            })
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum RoutingCommand {
    /// List them
    Ls,
    /// Show one (a backend with its live members)
    Show { name: String },
    /// Create one; extra fields as KEY=VALUE (VALUE is JSON when it parses as JSON)
    Create {
        name: String,
        /// Backends: the service whose instances serve it
        #[arg(long)]
        app: Option<String>,
        /// Backends: the version of the service
        #[arg(long)]
        version: Option<String>,
        /// Frontends: the backend it serves
        #[arg(long)]
        backend: Option<String>,
        #[arg(long = "field", value_parser = parse_field)]
        fields: Vec<(String, Value)>,
    },
    /// Delete one
    Rm { name: String },
}

fn parse_field(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// `berth backends …` and `berth frontends …` (`collection` is `backends` or `frontends`).
pub async fn routing(
    client_args: &ClientArgs,
    collection: &str,
    command: RoutingCommand,
) -> anyhow::Result<()> {
    let client = client_args.client()?;
    let base = format!("/v1/{collection}");
    match command {
        RoutingCommand::Ls => {
            let list = client.call(Method::GET, &base, None).await?;
            show(client_args, &list, |list| {
                let rows = list
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|i| vec![text(&i["name"]), i.to_string()])
                            .collect()
                    })
                    .unwrap_or_default();
                print_table(&["NAME", "DEFINITION"], rows);
            })
        }
        RoutingCommand::Show { name } => {
            let item = client
                .call(Method::GET, &format!("{base}/{}", segment(&name)), None)
                .await?;
            print_json(&item)
        }
        RoutingCommand::Create {
            name,
            app,
            version,
            backend,
            fields,
        } => {
            let mut body = serde_json::Map::new();
            body.insert("name".into(), Value::String(name));
            for (key, value) in [("app", app), ("version", version), ("backend", backend)] {
                if let Some(value) = value {
                    body.insert(key.into(), Value::String(value));
                }
            }
            body.extend(fields);
            let created = client
                .call(Method::POST, &base, Some(&Value::Object(body)))
                .await?;
            show(client_args, &created, |c| {
                say(format!("created {}", text(&c["name"])))
            })
        }
        RoutingCommand::Rm { name } => {
            client
                .call(Method::DELETE, &format!("{base}/{}", segment(&name)), None)
                .await?;
            show(client_args, &json!({"deleted": name}), |_| {
                say(format!("deleted {name}"))
            })
        }
    }
}
