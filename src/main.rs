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
    }
    Ok(())
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
