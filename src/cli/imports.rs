//! `alkhub import`: OpenAPI documents and MCP servers into definitions.

use clap::Subcommand;

use alkhub::config::Config;

use alkhub::admin::{AddImport, ImportDone, ImportList};
use serde_json::Value;

use super::principals::RemoteArgs;
use super::{open_store, remote, Output};

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
        #[arg(long, conflicts_with = "no_base_url")]
        base_url: Option<String>,
        /// Import definitions only: the hub sends no request, a spoke may
        /// register the operations.
        #[arg(long)]
        no_base_url: bool,
        /// A PEM file of CA certificates the hub trusts besides the
        /// system's, for this import's HTTPS requests (the document's URL,
        /// the base URL, token URLs). The hub reads it when it serves.
        #[arg(long)]
        ca_cert: Option<String>,
        /// SCHEME=ENV_VAR for a security scheme of the document (repeat for
        /// several), or bearer:ENV_VAR, header:NAME:ENV_VAR or basic:ENV_VAR
        /// for every request. The variable holds the secret; the hub reads
        /// it when it calls.
        #[arg(long)]
        auth: Vec<alkhub::imports::AuthSpec>,
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
        /// KEY=VALUE set in the command's environment (repeat for several),
        /// over the hub's own, which it inherits. Values are stored with the
        /// import: leave secrets in the hub's environment.
        #[arg(long = "env", requires = "command")]
        env: Vec<alkhub::imports::mcp::EnvSetting>,
        /// The server's streamable HTTP endpoint.
        #[arg(long)]
        url: Option<String>,
        /// A PEM file of CA certificates trusted besides the system's, for
        /// an https --url.
        #[arg(long)]
        ca_cert: Option<String>,
    },
    /// List the imports.
    List {
        /// text (a line each) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Read an import's source again (its document's file or URL, or its
    /// MCP server) and update its definitions; a running hub serves the new
    /// set within imports.poll_ms, or at once with --hub.
    Refresh {
        /// The import's name.
        name: String,
    },
    /// Remove an import with its definitions and their registrations.
    Remove {
        /// The import's name.
        name: String,
    },
}

pub async fn import(
    config: &Config,
    command: ImportCommand,
    remote: RemoteArgs,
) -> anyhow::Result<()> {
    if let Some(hub) = remote.client()? {
        return remote_import(&hub, command).await;
    }
    let store = open_store(config).await?;
    match command {
        ImportCommand::Openapi {
            source,
            namespace,
            base_url,
            no_base_url,
            ca_cert,
            auth,
            strict,
        } => {
            let ca_cert = ca_pem(ca_cert)?;
            let text = alkhub::imports::read_source_trusting(&source, ca_cert.as_deref()).await?;
            let options = alkhub::imports::Options {
                base_url: match (&base_url, no_base_url) {
                    (_, true) => alkhub::imports::BaseUrl::None,
                    (Some(url), false) => alkhub::imports::BaseUrl::Given(url),
                    (None, false) => alkhub::imports::BaseUrl::FromDocument,
                },
                auth,
                strict,
                ca_cert,
            };
            let done =
                alkhub::imports::import_openapi_text(&store, &source, &text, &namespace, options)
                    .await?;
            for (operation, why) in &done.skipped {
                eprintln!("warning: skipped {operation}: {why}");
            }
            for (operation, what) in &done.notes {
                eprintln!("note: {operation}: {what}");
            }
            print_changes(&done.name, &done.changes);
            if !done.skipped.is_empty() {
                println!(
                    "{} operation(s) skipped (see the warnings; --strict fails instead)",
                    done.skipped.len()
                );
            }
            match &done.base_url {
                Some(url) => println!("requests go to {url} (from {})", done.base_url_from),
                None => println!(
                    "no base URL ({}): the operations are definitions only until a spoke registers them \
                     (give --base-url to have the hub call the API)",
                    done.base_url_from
                ),
            }
        }
        ImportCommand::Mcp {
            name,
            command,
            args,
            env,
            url,
            ca_cert,
        } => {
            let config = alkhub::imports::mcp::McpConfig {
                command,
                args,
                env: env.into_iter().map(|e| (e.key, e.value)).collect(),
                url,
                ca_cert: ca_pem(ca_cert)?,
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
        ImportCommand::Refresh { name } => {
            let Some(import) = store.get_import(&name).await? else {
                anyhow::bail!("no import {name:?} (alkhub import list shows them)");
            };
            match alkhub::imports::refresh(&store, import).await? {
                alkhub::imports::Refreshed::Openapi(done) => {
                    for (operation, why) in &done.skipped {
                        eprintln!("warning: skipped {operation}: {why}");
                    }
                    print_changes(&done.name, &done.changes);
                }
                alkhub::imports::Refreshed::Mcp(changes) => print_changes(&name, &changes),
            }
        }
    }
    store.close().await;
    Ok(())
}

/// The PEM text of `--ca-cert`, which the import keeps (CA certificates are
/// public), so the hub that serves it needs no file.
fn ca_pem(path: Option<String>) -> anyhow::Result<Option<String>> {
    path.map(|p| alkhub::imports::tls::read_ca_cert(&p))
        .transpose()
}

/// [`import`] through a running hub's admin API. A document read from a
/// file is sent as its text: the hub reads no file for the admin API.
async fn remote_import(hub: &remote::AdminClient, command: ImportCommand) -> anyhow::Result<()> {
    let done: ImportDone = match command {
        ImportCommand::Openapi {
            source,
            namespace,
            base_url,
            no_base_url,
            ca_cert,
            auth,
            strict,
        } => {
            let remote_source = source.starts_with("http://") || source.starts_with("https://");
            let document = if remote_source {
                None
            } else {
                Some(alkhub::imports::read_source(&source).await?)
            };
            let add = AddImport {
                kind: "openapi".into(),
                name: namespace,
                source: remote_source.then_some(source),
                document,
                base_url,
                no_base_url,
                auth: auth.iter().map(ToString::to_string).collect(),
                strict,
                ca_cert: ca_pem(ca_cert)?,
                url: None,
            };
            hub.request(
                "POST",
                "/v1/admin/imports",
                Some(&serde_json::to_value(&add)?),
            )
            .await?
        }
        ImportCommand::Mcp {
            name,
            command,
            url,
            ca_cert,
            ..
        } => {
            if command.is_some() {
                anyhow::bail!(
                    "a running hub starts no command for the admin API: import an MCP server \
                     started by a command on the hub's machine, without --hub"
                );
            }
            let add = AddImport {
                kind: "mcp".into(),
                name,
                url,
                ca_cert: ca_pem(ca_cert)?,
                ..AddImport::default()
            };
            hub.request(
                "POST",
                "/v1/admin/imports",
                Some(&serde_json::to_value(&add)?),
            )
            .await?
        }
        ImportCommand::Refresh { name } => {
            hub.request("POST", &format!("/v1/admin/imports/{name}/refresh"), None)
                .await?
        }
        ImportCommand::List { output } => {
            let list: ImportList = hub.request("GET", "/v1/admin/imports", None).await?;
            return output.print(&list.imports, |i| {
                format!(
                    "{}\t{}\t{}\toperations={}\t{}\t{}\tserving={}",
                    i.name,
                    i.kind,
                    i.namespace,
                    i.operations,
                    i.target.as_deref().unwrap_or("-"),
                    i.source.as_deref().unwrap_or("-"),
                    i.serving
                )
            });
        }
        ImportCommand::Remove { name } => {
            let removed: Value = hub
                .send("DELETE", &format!("/v1/admin/imports/{name}"), None)
                .await?;
            let count = removed["removedOperations"].as_array().map_or(0, Vec::len);
            println!("removed import {name} and its {count} operations");
            return Ok(());
        }
    };
    for skipped in &done.skipped {
        eprintln!("warning: skipped {}: {}", skipped.operation, skipped.reason);
    }
    let changes = alkhub::store::ImportChanges {
        added: done.added,
        updated: done.updated,
        unchanged: done.unchanged,
        removed: done.removed,
    };
    print_changes(&done.name, &changes);
    if let Some(url) = &done.base_url {
        println!("requests go to {url}");
    }
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
