//! `alkhub import`: OpenAPI documents and MCP servers into definitions.

use clap::Subcommand;

use alkhub::config::Config;

use super::{open_store, Output};

/// One import as `alkhub import list` shows it.
#[derive(Debug, serde::Serialize)]
struct ImportSummary {
    name: String,
    kind: &'static str,
    namespace: String,
    /// How many operations it defined.
    operations: usize,
    /// The base URL it calls, or the MCP server's URL.
    target: Option<String>,
    /// Where its document came from.
    source: Option<String>,
    enabled: bool,
}

#[derive(Subcommand)]
pub enum ImportCommand {
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
        /// Fail, saving nothing, when an operation cannot be mapped (by
        /// default it is skipped with a warning and the rest import).
        #[arg(long)]
        strict: bool,
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
    List {
        /// text (a line each) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Remove an import with its definitions and their registrations.
    Remove {
        /// The import's name.
        name: String,
    },
}

pub async fn import(config: &Config, command: ImportCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        ImportCommand::Openapi {
            source,
            namespace,
            base_url,
            auth,
            strict,
        } => {
            let done = alkhub::imports::import_openapi_checked(
                &store,
                &source,
                &namespace,
                base_url.as_deref(),
                auth,
                strict,
            )
            .await?;
            for (operation, why) in &done.skipped {
                eprintln!("warning: skipped {operation}: {why}");
            }
            print_changes(&done.name, &done.changes);
            if !done.skipped.is_empty() {
                println!(
                    "{} operation(s) skipped (see the warnings; --strict fails instead)",
                    done.skipped.len()
                );
            }
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
        ImportCommand::List { output } => {
            let imports: Vec<ImportSummary> = store
                .list_imports()
                .await?
                .into_iter()
                .map(|i| ImportSummary {
                    target: i.config["base_url"]
                        .as_str()
                        .or(i.config["url"].as_str())
                        .map(str::to_owned),
                    source: i.config["source"].as_str().map(str::to_owned),
                    kind: i.kind.as_str(),
                    operations: i.operations.len(),
                    enabled: i.enabled,
                    namespace: i.namespace,
                    name: i.name,
                })
                .collect();
            output.print(&imports, |i| {
                format!(
                    "{}\t{}\t{}\toperations={}\t{}\t{}",
                    i.name,
                    i.kind,
                    i.namespace,
                    i.operations,
                    i.target.as_deref().unwrap_or("-"),
                    i.source.as_deref().unwrap_or("-")
                )
            })?;
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
