//! `alkhub spoke` and `alkhub client`: in the database, or with `--hub`
//! through a running hub's admin API.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};

use alkhub::admin::{Created, PrincipalList, Removed, Rotated};
use alkhub::config::Config;
use alkhub::protocol::PrincipalKind;
use alkhub::store::{NewPrincipal, Principal};

use super::{open_store, remote, Output};

/// Where a management command acts: the database (the default), or a
/// running hub's admin API.
#[derive(Args)]
pub struct RemoteArgs {
    /// Act through the admin API of the hub at this URL
    /// (http://localhost:7700) instead of the database; the change is
    /// audited. Needs a token with the admin scope.
    #[arg(long, global = true)]
    pub hub: Option<String>,
    /// The admin token for --hub.
    #[arg(long, global = true, env = "ALKHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl RemoteArgs {
    /// The admin API client `--hub` asks for, if it does.
    pub fn client(&self) -> anyhow::Result<Option<remote::AdminClient>> {
        let Some(hub) = &self.hub else {
            return Ok(None);
        };
        let token = self
            .token
            .as_deref()
            .context("--hub needs an admin token: --token or ALKHUB_TOKEN")?;
        remote::AdminClient::new(hub, token).map(Some)
    }
}

#[derive(Subcommand)]
pub enum PrincipalCommand {
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
    List {
        /// text (a line each) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
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

pub async fn principal(
    config: &Config,
    kind: PrincipalKind,
    command: PrincipalCommand,
    remote: RemoteArgs,
) -> anyhow::Result<()> {
    if let Some(hub) = remote.client()? {
        return remote_principal(&hub, kind, command).await;
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
        PrincipalCommand::List { output } => {
            let all = store.list_principals(kind).await?;
            print_principals(kind, &all, output)?;
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
            let created: Created = admin.request("POST", &plural, Some(&body)).await?;
            println!("created {kind} {}", created.principal.id);
            println!("token (shown only this once):");
            println!("{}", created.token);
        }
        PrincipalCommand::List { output } => {
            let listed: PrincipalList = admin.request("GET", &plural, None).await?;
            print_principals(kind, &listed.principals, output)?;
        }
        PrincipalCommand::Remove { id } => {
            let removed: Removed = admin
                .request("DELETE", &format!("{plural}/{id}"), None)
                .await?;
            println!(
                "removed {kind} {id} and {} registration(s)",
                removed.removed_registrations
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
            let rotated: Rotated = admin
                .request("POST", &format!("{plural}/{id}/rotate-token"), None)
                .await?;
            println!("new token for {kind} {id} (shown only this once):");
            println!("{}", rotated.token);
        }
    }
    Ok(())
}

/// Prints a list of spokes or clients.
fn print_principals(kind: PrincipalKind, all: &[Principal], output: Output) -> anyhow::Result<()> {
    if all.is_empty() && output == Output::Text {
        println!("no {kind}s");
    }
    output.print(all, describe)
}

/// One spoke or client on one line.
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
