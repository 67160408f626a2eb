//! The `alkhub` command line: serve the hub, migrate, manage spokes and
//! clients, print the default configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use alkhub::config::{Config, LogFormat, DEFAULT_CONFIG};
use alkhub::plugins::World;
use alkhub::protocol::PrincipalKind;
use alkhub::scaffold::Lang;
use alkhub::store::{NewPrincipal, Principal, Store};

mod remote;

/// mimalloc instead of glibc's allocator: registering 100,000 operations
/// spent a quarter of the hub's CPU in glibc's malloc and free, most of it
/// consolidating freed chunks. [`tune_allocator`] makes it give memory back.
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
    /// Import operation definitions from an OpenAPI document; list and remove imports.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
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
enum AdminCommand {
    /// The live sessions.
    Sessions,
    /// Close a live session (code 1008); its peer may reconnect.
    CloseSession {
        /// The session id, as `sessions` shows it.
        session_id: u64,
    },
    /// Every operation, or one with its providers and registrations.
    Operations {
        /// One operation id.
        operation_id: Option<String>,
    },
    /// The plugins and their health.
    Plugins,
    /// Load every changed file of the plugins folder now.
    ReloadPlugins,
    /// End a plugin's quarantine now.
    LiftQuarantine {
        /// The plugin's name.
        name: String,
    },
    /// The configuration the hub runs with, secrets masked.
    Config,
    /// The audit log, newest first.
    Audit {
        /// Entries to show (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Where a management command acts: the database (the default), or a
/// running hub's admin API.
#[derive(Args)]
struct RemoteArgs {
    /// Act through the admin API of the hub at this URL
    /// (http://localhost:7700) instead of the database; the change is
    /// audited. Needs a token with the admin scope.
    #[arg(long, global = true)]
    hub: Option<String>,
    /// The admin token for --hub.
    #[arg(long, global = true, env = "ALKHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Say which world a component implements and what it imports, or exactly what is wrong.
    Check {
        /// The component file.
        file: PathBuf,
    },
    /// Make one decision with a component, without a hub: print the decision, what the plugin logged and the time taken.
    Run {
        /// The component file.
        file: PathBuf,
        /// The call (routing) or declaration (remap) as a JSON file, `-` for
        /// standard input; see docs/plugins/authoring.md. Default: `{}`.
        #[arg(long, conflicts_with = "json")]
        input: Option<PathBuf>,
        /// The same, inline.
        #[arg(long)]
        json: Option<String>,
        /// Warm decisions to time after the first.
        #[arg(long, default_value_t = 1000)]
        repeat: u32,
    },
    /// Write a plugin project that builds as is (source, build script, WIT, README).
    New {
        /// The plugin's name: lowercase letters, digits and hyphens.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: LangArg,
        /// The policy it implements.
        #[arg(long, value_enum)]
        world: WorldArg,
        /// Where to write it (default: a new folder named after the plugin).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    Js,
    Python,
    C,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorldArg {
    Remap,
    Routing,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Define one operation per path and method of an OpenAPI 3.0 or 3.1 document
    /// (JSON or YAML); importing it again updates them and says what changed.
    Openapi {
        /// A file or an http:// URL.
        source: String,
        /// The namespace of the operations; it also names the import.
        #[arg(long)]
        namespace: String,
        /// Where the hub sends the requests (default: the document's first absolute server).
        #[arg(long)]
        base_url: Option<String>,
        /// bearer:ENV_VAR, header:NAME:ENV_VAR or basic:ENV_VAR (the variable holds the secret).
        #[arg(long)]
        auth: Option<alkhub::imports::Auth>,
    },
    /// Define one operation per tool of an MCP server, which the hub then
    /// serves while it can reach the server.
    Mcp {
        /// The import's name, which is also the namespace of its operations.
        name: String,
        /// Start the server with this command and talk to it over stdio.
        #[arg(long, conflicts_with = "url", required_unless_present = "url")]
        command: Option<String>,
        /// An argument of the command (repeat for several).
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        /// The server's streamable HTTP endpoint.
        #[arg(long)]
        url: Option<String>,
    },
    /// List the imports.
    List,
    /// Remove an import with its definitions and their registrations.
    Remove {
        /// The import's name.
        name: String,
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
        /// Comma-separated operation-id patterns it may provide (`*` matches
        /// any characters), e.g. 'chat.*,dev.*'. Without it a spoke may
        /// provide in every namespace except `hub` and those of imports, a
        /// client nothing. An import's operations need a pattern naming them.
        #[arg(long, value_delimiter = ',')]
        provides: Option<Vec<String>>,
    },
    /// List them (never their tokens).
    List,
    /// Remove one and its registrations.
    Remove {
        /// The id to remove.
        id: String,
    },
    /// Disable one: its token stops working and a running hub closes its
    /// sessions within seconds.
    Disable {
        /// The id to disable.
        id: String,
    },
    /// Enable one again.
    Enable {
        /// The id to enable.
        id: String,
    },
    /// Give one a new token, printed on the last line (shown only once);
    /// the old token stops working and its sessions close.
    RotateToken {
        /// The id whose token to replace.
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

fn main() -> std::process::ExitCode {
    // Before the runtime's threads allocate anything.
    tune_allocator();
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
        Command::Serve => serve(config, || cli.global.load_config()).await?,
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Admin { command, remote } => admin(command, remote).await?,
        Command::Spoke { command, remote } => {
            principal(&config, PrincipalKind::Spoke, command, remote).await?
        }
        Command::Client { command, remote } => {
            principal(&config, PrincipalKind::Client, command, remote).await?
        }
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
            // The operator's own tool: unlike `GET /v1/plugins`, it shows the whole path.
            let path = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
            let report =
                tokio::task::spawn_blocking(move || alkhub::plugins::check_file(&file)).await??;
            println!("file: {}", path.display());
            println!(
                "world: {}",
                serde_json::to_value(report.world)?
                    .as_str()
                    .unwrap_or_default()
            );
            println!("wit: alkdev:hub@{}", report.wit_version);
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
        Command::Plugin {
            command:
                PluginCommand::Run {
                    file,
                    input,
                    json,
                    repeat,
                },
        } => {
            let text = match (input, json) {
                (_, Some(text)) => text,
                (Some(path), None) if path.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin())
                        .context("cannot read standard input")?
                }
                (Some(path), None) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => "{}".to_owned(),
            };
            let input: alkhub::plugins::TrialInput =
                serde_json::from_str(&text).context("invalid input")?;
            let trial = tokio::task::spawn_blocking(move || {
                alkhub::plugins::run_file(&file, &input, repeat)
            })
            .await??;
            println!("world: {}", trial.world.as_str());
            println!("wit: alkdev:hub@{}", trial.wit_version);
            println!("compile: {:.1} ms", trial.compile.as_secs_f64() * 1e3);
            match &trial.decision {
                Ok(decision) => println!("decision: {decision}"),
                Err(reason) => println!("failed: {reason}"),
            }
            println!(
                "first decision: {:.1} µs (new instance)",
                trial.first.as_secs_f64() * 1e6
            );
            if let Some(warm) = trial.warm {
                println!(
                    "warm decision: {:.2} µs (mean of {repeat})",
                    warm.as_secs_f64() * 1e6
                );
            }
            println!("log:");
            for line in &trial.log {
                println!("  {line}");
            }
            if trial.decision.is_err() {
                std::process::exit(1);
            }
        }
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    world,
                    dir,
                },
        } => {
            let lang = match lang {
                LangArg::Rust => Lang::Rust,
                LangArg::Js => Lang::Js,
                LangArg::Python => Lang::Python,
                LangArg::C => Lang::C,
            };
            let world = match world {
                WorldArg::Remap => World::Remap,
                WorldArg::Routing => World::Routing,
            };
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let written = alkhub::scaffold::create(&dir, &name, lang, world)?;
            println!(
                "wrote {} {} plugin {name} in {}:",
                lang.as_str(),
                world.as_str(),
                dir.display()
            );
            for path in written {
                println!("  {}", path.display());
            }
            println!("build it with: bash {}", dir.join("build.sh").display());
        }
        Command::Import { command } => import(&config, command).await?,
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

async fn import(config: &Config, command: ImportCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        ImportCommand::Openapi {
            source,
            namespace,
            base_url,
            auth,
        } => {
            let done = alkhub::imports::import_openapi(
                &store,
                &source,
                &namespace,
                base_url.as_deref(),
                auth,
            )
            .await?;
            print_changes(&done.name, &done.changes);
            match &done.base_url {
                Some(url) => println!("requests go to {url}"),
                None => println!(
                    "no base URL: the operations are definitions only until a spoke registers them \
                     (give --base-url to have the hub call the API)"
                ),
            }
        }
        ImportCommand::Mcp {
            name,
            command,
            args,
            url,
        } => {
            let config = alkhub::imports::mcp::McpConfig {
                command,
                args,
                url,
                tools: Default::default(),
            };
            let changes = alkhub::imports::mcp::import_mcp(&store, &name, config).await?;
            print_changes(&name, &changes);
        }
        ImportCommand::List => {
            for i in store.list_imports().await? {
                let target = i.config["base_url"]
                    .as_str()
                    .or(i.config["url"].as_str())
                    .unwrap_or("-");
                println!(
                    "{}\t{}\t{}\toperations={}\t{}\t{}",
                    i.name,
                    i.kind.as_str(),
                    i.namespace,
                    i.operations.len(),
                    target,
                    i.config["source"].as_str().unwrap_or("-")
                );
            }
        }
        ImportCommand::Remove { name } => {
            let removed = store.remove_import(&name).await?;
            println!("removed import {name} and its {} operations", removed.len());
        }
    }
    store.close().await;
    Ok(())
}

fn print_changes(name: &str, c: &alkhub::store::ImportChanges) {
    println!(
        "import {name}: {} added, {} updated, {} unchanged, {} removed",
        c.added.len(),
        c.updated.len(),
        c.unchanged.len(),
        c.removed.len()
    );
    for (what, ids) in [
        ("added", &c.added),
        ("updated", &c.updated),
        ("removed", &c.removed),
    ] {
        for id in ids {
            println!("  {what} {id}");
        }
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

/// Makes the allocators give freed memory back to the system at once.
///
/// mimalloc (Rust's allocations) by default keeps freed pages for a while
/// and commits its arenas eagerly: under the fuzzer (hostile peers sending
/// frames of every size) the hub's RSS reached 330 MiB in a minute against
/// 100 MiB with glibc. Purging at once, decommitting, and committing arenas
/// on demand brings it to ~170 MiB, and the idle 10,000-spoke hub to within
/// 20% of glibc's figure (212 MiB against 228-255 MiB in the scale bench).
///
/// glibc (SQLite's allocations): by default it raises its mmap threshold
/// each time a large buffer is freed, after which buffers of up to a
/// megabyte come from heaps it keeps; fixed at 64 KiB, they go back.
fn tune_allocator() {
    // The option numbers of mimalloc 3's `mi_option_e` (mimalloc.h); the
    // crate exports names for only some of them. Check them against that
    // header when libmimalloc-sys is updated.
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    const PURGE_DECOMMITS: std::ffi::c_int = 5;
    const PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: mi_option_set and mallopt only change allocator settings;
    // both are called before the hub starts a thread or allocates much.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DECOMMITS, 1);
        mi_option_set(PURGE_DELAY, 0);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

async fn serve(config: Config, reload: impl Fn() -> anyhow::Result<Config>) -> anyhow::Result<()> {
    let server = config.server.clone();
    // SIGHUP reads the configuration again and applies what can change
    // without a restart (the `[plugins]` section). It is caught from the
    // start: one that arrives while the hub starts is applied once it runs.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = alkhub::server::start(config).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            signalled = &mut shutdown => {
                signalled?;
                break;
            }
            _ = hangup.recv() => match reload() {
                Ok(config) => {
                    running.reload(&config);
                }
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "SIGHUP: the configuration is not valid; keeping the one in force"
                ),
            },
        }
    }
    tracing::info!("shutting down");
    // Shutdown keeps its own hard deadline; this one is the last resort, for
    // anything (a blocked database call) that keeps even that from returning.
    let hard = Duration::from_millis(server.shutdown_grace_ms + server.shutdown_hard_ms)
        + Duration::from_secs(2);
    match tokio::time::timeout(hard, running.shutdown()).await {
        Ok(done) => done,
        Err(_) => {
            tracing::error!("shutdown passed its hard deadline; exiting");
            std::process::exit(1);
        }
    }
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
    remote: RemoteArgs,
) -> anyhow::Result<()> {
    if let Some(hub) = &remote.hub {
        let token = remote
            .token
            .as_deref()
            .context("--hub needs an admin token: --token or ALKHUB_TOKEN")?;
        return remote_principal(&remote::AdminClient::new(hub, token)?, kind, command).await;
    }
    let store = open_store(config).await?;
    match command {
        PrincipalCommand::Add {
            id,
            name,
            labels,
            scopes,
            provides,
        } => {
            alkhub::names::check_slug(&id).map_err(anyhow::Error::msg)?;
            let provides = provides.map(non_empty);
            for pattern in provides.iter().flatten() {
                alkhub::registration::check_grant_pattern(pattern).map_err(anyhow::Error::msg)?;
            }
            let new = NewPrincipal {
                id,
                name,
                scopes: non_empty(scopes),
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                provides,
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
        PrincipalCommand::Disable { id } => {
            store.set_principal_enabled(kind, &id, false).await?;
            println!("disabled {kind} {id}");
        }
        PrincipalCommand::Enable { id } => {
            store.set_principal_enabled(kind, &id, true).await?;
            println!("enabled {kind} {id}");
        }
        PrincipalCommand::RotateToken { id } => {
            let token = store.rotate_token(kind, &id).await?;
            println!("new token for {kind} {id} (shown only this once):");
            println!("{}", token.expose());
        }
    }
    store.close().await;
    Ok(())
}

/// `alkhub admin …`: one request to the admin API, its answer printed.
async fn admin(command: AdminCommand, remote: RemoteArgs) -> anyhow::Result<()> {
    let (Some(hub), Some(token)) = (&remote.hub, &remote.token) else {
        anyhow::bail!("alkhub admin needs --hub URL and an admin token (--token or ALKHUB_TOKEN)");
    };
    let client = remote::AdminClient::new(hub, token)?;
    let (method, path) = match command {
        AdminCommand::Sessions => ("GET", "/v1/admin/sessions".to_owned()),
        AdminCommand::CloseSession { session_id } => {
            ("DELETE", format!("/v1/admin/sessions/{session_id}"))
        }
        AdminCommand::Operations { operation_id: None } => {
            ("GET", "/v1/admin/operations".to_owned())
        }
        AdminCommand::Operations {
            operation_id: Some(id),
        } => ("GET", format!("/v1/admin/operations/{id}")),
        AdminCommand::Plugins => ("GET", "/v1/admin/plugins".to_owned()),
        AdminCommand::ReloadPlugins => ("POST", "/v1/admin/plugins/reload".to_owned()),
        AdminCommand::LiftQuarantine { name } => {
            ("POST", format!("/v1/admin/plugins/{name}/lift-quarantine"))
        }
        AdminCommand::Config => ("GET", "/v1/admin/config".to_owned()),
        AdminCommand::Audit { limit } => ("GET", format!("/v1/admin/audit?limit={limit}")),
    };
    let answer = client.send(method, &path, None).await?;
    if answer.is_null() {
        println!("done");
    } else {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}

/// The items of a comma-separated list, trimmed, without empty ones.
fn non_empty(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// [`principal`] through a running hub's admin API.
async fn remote_principal(
    admin: &remote::AdminClient,
    kind: PrincipalKind,
    command: PrincipalCommand,
) -> anyhow::Result<()> {
    let plural = format!("/v1/admin/{kind}s");
    match command {
        PrincipalCommand::Add {
            id,
            name,
            labels,
            scopes,
            provides,
        } => {
            let body = serde_json::json!({
                "id": id,
                "name": name,
                "scopes": non_empty(scopes),
                "labels": labels.into_iter().collect::<BTreeMap<_, _>>(),
                "provides": provides.map(non_empty),
            });
            let created = admin.send("POST", &plural, Some(&body)).await?;
            println!("created {kind} {id}");
            println!("token (shown only this once):");
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        PrincipalCommand::List => {
            let listed = admin.send("GET", &plural, None).await?;
            let all = listed["principals"].as_array().cloned().unwrap_or_default();
            if all.is_empty() {
                println!("no {kind}s");
            }
            for p in all {
                let text = |key: &str| p[key].as_str().unwrap_or("-").to_owned();
                let list = |key: &str| {
                    p[key]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                let labels: Vec<String> = p["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}\tname={}\tscopes={}\tlabels={}\tprovides={}\tenabled={}\tlast_connected={}",
                    text("id"),
                    text("name"),
                    list("scopes"),
                    labels.join(","),
                    if p["provides"].is_null() {
                        "(default)".to_owned()
                    } else {
                        list("provides")
                    },
                    p["enabled"],
                    p["lastConnectedAt"].as_str().unwrap_or("never"),
                );
            }
        }
        PrincipalCommand::Remove { id } => {
            let removed = admin
                .send("DELETE", &format!("{plural}/{id}"), None)
                .await?;
            println!(
                "removed {kind} {id} and {} registration(s)",
                removed["removedRegistrations"]
            );
        }
        PrincipalCommand::Disable { id } => {
            admin
                .send("POST", &format!("{plural}/{id}/disable"), None)
                .await?;
            println!("disabled {kind} {id}");
        }
        PrincipalCommand::Enable { id } => {
            admin
                .send("POST", &format!("{plural}/{id}/enable"), None)
                .await?;
            println!("enabled {kind} {id}");
        }
        PrincipalCommand::RotateToken { id } => {
            let rotated = admin
                .send("POST", &format!("{plural}/{id}/rotate-token"), None)
                .await?;
            println!("new token for {kind} {id} (shown only this once):");
            println!("{}", rotated["token"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

fn describe(p: &Principal) -> String {
    let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let last = p
        .last_connected_at
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "never".to_owned());
    let provides = match &p.provides {
        Some(patterns) => patterns.join(","),
        None => match p.kind {
            PrincipalKind::Spoke => "(default: any namespace not reserved or imported)".to_owned(),
            PrincipalKind::Client => "(default: nothing)".to_owned(),
        },
    };
    format!(
        "{}\tname={}\tscopes={}\tlabels={}\tprovides={provides}\tenabled={}\tlast_connected={last}",
        p.id,
        p.name.as_deref().unwrap_or("-"),
        p.scopes.join(","),
        labels.join(","),
        p.enabled
    )
}
