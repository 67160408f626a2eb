//! The `alkhub` command line: parses it and hands each command to its
//! group's module in `cli/` (serve, principals, calls, imports, plugins,
//! admin).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use alkhub::config::{Config, LogFormat, DEFAULT_CONFIG};
use alkhub::protocol::PrincipalKind;

mod cli;

use cli::admin::AdminCommand;
use cli::calls::{HubConnection, OpsCommand};
use cli::imports::ImportCommand;
use cli::plugins::PluginCommand;
use cli::principals::{self, PrincipalCommand, RemoteArgs};
use cli::serve::ConfigCommand;

/// mimalloc instead of glibc's allocator: registering 100,000 operations
/// spent a quarter of the hub's CPU in glibc's malloc and free, most of it
/// consolidating freed chunks. [`cli::serve::tune_allocator`] makes it give
/// memory back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Manage clients (callers).
    Client {
        #[command(subcommand)]
        command: PrincipalCommand,
        #[command(flatten)]
        remote: RemoteArgs,
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
    /// Operate a running hub through its admin API (needs --hub and an
    /// admin token); answers are printed as JSON.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Check WebAssembly plugins and start new ones.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Import operation definitions from an OpenAPI document or an MCP
    /// server; list, refresh and remove imports (in the database, or with
    /// --hub through a running hub, which serves them at once).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Inspect the operations of a running hub.
    Ops {
        #[command(subcommand)]
        command: OpsCommand,
    },
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

fn main() -> std::process::ExitCode {
    // Before the runtime's threads allocate anything.
    cli::serve::tune_allocator();
    alkhub::imports::tls::install_provider();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(Cli::parse())));
    match outcome {
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
        Command::Serve => cli::serve::serve(config, || cli.global.load_config()).await?,
        Command::Migrate => {
            cli::open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Admin { command, remote } => cli::admin::admin(command, remote).await?,
        Command::Spoke { command, remote } => {
            principals::principal(&config, PrincipalKind::Spoke, command, remote).await?
        }
        Command::Client { command, remote } => {
            principals::principal(&config, PrincipalKind::Client, command, remote).await?
        }
        Command::Call {
            operation_id,
            input,
            subscribe,
            connection,
        } => cli::calls::call(&config, operation_id, input, subscribe, connection).await?,
        Command::Plugin { command } => cli::plugins::plugin(command).await?,
        Command::Import { command, remote } => {
            cli::imports::import(&config, command, remote).await?
        }
        Command::Ops { command } => cli::calls::ops(&config, command).await?,
    }
    Ok(())
}
