//! The `alkhub` command line: serve the hub, migrate, manage spokes and
//! clients, print the default configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use alkhub::config::{Config, LogFormat, DEFAULT_CONFIG};
use alkhub::protocol::PrincipalKind;
use alkhub::store::{NewPrincipal, Principal, Store};

#[derive(Parser)]
#[command(name = "alkhub", version, about = "A hub for operations")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command accepts; each overrides the configuration file.
#[derive(Args)]
struct GlobalArgs {
    /// Configuration file (default: ./alkhub.toml when it exists).
    #[arg(long, global = true, env = "ALKHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL, e.g. sqlite://alkhub.db or postgres://USER@localhost/DB.
    #[arg(long, global = true, env = "ALKHUB_DATABASE_URL")]
    database_url: Option<String>,
    /// Listen address, e.g. 127.0.0.1:7700.
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Folder of WebAssembly plugins.
    #[arg(long, global = true)]
    plugins_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage spokes (providers).
    Spoke {
        #[command(subcommand)]
        command: PrincipalCommand,
    },
    /// Manage clients (callers).
    Client {
        #[command(subcommand)]
        command: PrincipalCommand,
    },
    /// Call an operation through a running hub.
    Call {
        /// The operation id, e.g. demo.echo.
        operation_id: String,
        /// The input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// Stream a subscription's results, one JSON line each.
        #[arg(long)]
        subscribe: bool,
        #[command(flatten)]
        connection: HubConnection,
    },
    /// Check WebAssembly plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Inspect the operations of a running hub.
    Ops {
        #[command(subcommand)]
        command: OpsCommand,
    },
}

/// How CLI commands reach a running hub.
#[derive(Args)]
struct HubConnection {
    /// A client (or spoke) token.
    #[arg(long, env = "ALKHUB_TOKEN", hide_env_values = true)]
    token: String,
    /// The hub's base URL (default: ws:// and the configured listen address).
    #[arg(long)]
    url: Option<String>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Say which world a component implements and what it imports, or exactly what is wrong.
    Check {
        /// The component file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum OpsCommand {
    /// List the operations the token may call.
    List {
        #[command(flatten)]
        connection: HubConnection,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the complete default configuration, with comments.
    Defaults,
    /// Print the effective configuration (file and flags applied).
    Show,
}

#[derive(Subcommand)]
enum PrincipalCommand {
    /// Create one and print its token on the last line (shown only once).
    Add {
        /// A slug: [a-z0-9][a-z0-9-]{0,62}.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A label, KEY=VALUE; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Comma-separated scopes.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// List them (never their tokens).
    List,
    /// Remove one and its registrations.
    Remove {
        /// The id to remove.
        id: String,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("invalid label {text:?}: expected KEY=VALUE")),
    }
}

impl GlobalArgs {
    fn load_config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(url) = &self.database_url {
            config.database.url = url.clone();
        }
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &self.plugins_dir {
            config.plugins.dir = dir.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config {
        command: ConfigCommand::Defaults,
    } = cli.command
    {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let config = cli.global.load_config()?;
    alkhub::telemetry::init(&config.log);
    match cli.command {
        Command::Config { command } => match command {
            ConfigCommand::Defaults => unreachable!("handled before loading the configuration"),
            ConfigCommand::Show => print!("{}", toml::to_string_pretty(&config)?),
        },
        Command::Serve => serve(config).await?,
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Spoke { command } => principal(&config, PrincipalKind::Spoke, command).await?,
        Command::Client { command } => principal(&config, PrincipalKind::Client, command).await?,
        Command::Call {
            operation_id,
            input,
            subscribe,
            connection,
        } => {
            let input: serde_json::Value = serde_json::from_str(&input)
                .with_context(|| format!("--input is not valid JSON: {input}"))?;
            let peer = connection.connect(&config).await?;
            if subscribe {
                let mut events = peer.subscribe(&operation_id, input, Default::default());
                while let Some(event) = events.next().await {
                    println!("{}", event.map_err(call_failed)?);
                }
            } else {
                let output = peer.call(&operation_id, input).await.map_err(call_failed)?;
                println!("{}", serde_json::to_string_pretty(&output)?);
            }
        }
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => {
            let report =
                tokio::task::spawn_blocking(move || alkhub::plugins::check_file(&file)).await??;
            println!(
                "world: {}",
                serde_json::to_value(report.world)?
                    .as_str()
                    .unwrap_or_default()
            );
            println!("size: {} bytes", report.size);
            println!("imports:");
            for i in &report.imports {
                println!("  {i}");
            }
            println!("exports:");
            for e in &report.exports {
                println!("  {e}");
            }
        }
        Command::Ops {
            command: OpsCommand::List { connection },
        } => {
            let peer = connection.connect(&config).await?;
            let output = peer
                .call("hub.operations.list", serde_json::Value::Null)
                .await
                .map_err(call_failed)?;
            let operations = output["data"]["operations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for op in operations {
                println!(
                    "{}\t{}\t{}\tproviders={}\t{}",
                    op["id"].as_str().unwrap_or_default(),
                    op["type"].as_str().unwrap_or_default(),
                    op["accessLevel"].as_str().unwrap_or_default(),
                    op["activeRegistrations"],
                    op["description"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn call_failed(e: alkhub::peer::PeerError) -> anyhow::Error {
    match &e.details {
        Some(details) => anyhow::anyhow!("{e}\ndetails: {details}"),
        None => anyhow::anyhow!("{e}"),
    }
}

impl HubConnection {
    /// Connects to the hub's endpoint for the token's kind.
    async fn connect(&self, config: &Config) -> anyhow::Result<alkhub::peer::Peer> {
        let endpoint = if self
            .token
            .starts_with(alkhub::crypto::TokenKind::Spoke.prefix())
        {
            "/v1/spokes/connect"
        } else {
            "/v1/clients/connect"
        };
        let base = self
            .url
            .clone()
            .unwrap_or_else(|| format!("ws://{}", config.server.listen));
        let base = base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let url = if base.trim_end_matches('/').matches('/').count() > 2 {
            base
        } else {
            format!("{}{endpoint}", base.trim_end_matches('/'))
        };
        alkhub::peer::PeerBuilder::new(&url, &self.token)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                alkhub::telemetry::redact_url(&config.database.url)
            )
        })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = alkhub::server::start(config).await?;
    shutdown_signal().await?;
    tracing::info!("shutting down");
    running.shutdown().await
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn principal(
    config: &Config,
    kind: PrincipalKind,
    command: PrincipalCommand,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        PrincipalCommand::Add {
            id,
            name,
            labels,
            scopes,
        } => {
            alkhub::names::check_slug(&id).map_err(anyhow::Error::msg)?;
            let new = NewPrincipal {
                id,
                name,
                scopes: scopes.into_iter().filter(|s| !s.is_empty()).collect(),
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let (created, token) = store.create_principal(kind, &new).await?;
            println!("created {} {}", kind, created.id);
            println!("token (shown only this once):");
            println!("{}", token.expose());
        }
        PrincipalCommand::List => {
            let all = store.list_principals(kind).await?;
            if all.is_empty() {
                println!("no {kind}s");
            }
            for p in all {
                println!("{}", describe(&p));
            }
        }
        PrincipalCommand::Remove { id } => {
            let removed = store.remove_principal(kind, &id).await?;
            println!("removed {kind} {id} and {removed} registration(s)");
        }
    }
    store.close().await;
    Ok(())
}

fn describe(p: &Principal) -> String {
    let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let last = p
        .last_connected_at
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "never".to_owned());
    format!(
        "{}\tname={}\tscopes={}\tlabels={}\tenabled={}\tlast_connected={last}",
        p.id,
        p.name.as_deref().unwrap_or("-"),
        p.scopes.join(","),
        labels.join(","),
        p.enabled
    )
}
