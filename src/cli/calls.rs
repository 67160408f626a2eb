//! `alkhub call` and `alkhub ops`: calling a running hub as a peer.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use alkhub::config::Config;
use alkhub::protocol::{AccessLevel, OperationType};

use super::Output;

/// How CLI commands reach a running hub.
#[derive(Args)]
pub struct HubConnection {
    /// A client (or spoke) token.
    #[arg(long, env = "ALKHUB_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The hub's base URL (default: ws:// and the configured listen address).
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Subcommand)]
pub enum OpsCommand {
    /// List the operations the token may call.
    List {
        #[command(flatten)]
        connection: HubConnection,
        /// text (a line each) or json.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// A failed call as an error, with its details when it has any.
pub fn call_failed(e: alkhub::peer::PeerError) -> anyhow::Error {
    match &e.details {
        Some(details) => anyhow::anyhow!("{e}\ndetails: {details}"),
        None => anyhow::anyhow!("{e}"),
    }
}

impl HubConnection {
    /// Connects to the hub's endpoint for the token's kind.
    pub async fn connect(&self, config: &Config) -> anyhow::Result<alkhub::peer::Peer> {
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

/// `alkhub call`: one call, or a subscription's events, printed as JSON.
pub async fn call(
    config: &Config,
    operation_id: String,
    input: String,
    subscribe: bool,
    connection: HubConnection,
) -> anyhow::Result<()> {
    let input: serde_json::Value = serde_json::from_str(&input)
        .with_context(|| format!("--input is not valid JSON: {input}"))?;
    let peer = connection.connect(config).await?;
    if subscribe {
        let mut events = peer.subscribe(&operation_id, input, Default::default());
        while let Some(event) = events.next().await {
            println!("{}", event.map_err(call_failed)?);
        }
    } else {
        let output = peer.call(&operation_id, input).await.map_err(call_failed)?;
        println!("{}", serde_json::to_string_pretty(&output)?);
    }
    Ok(())
}

/// One operation as `hub.operations.list` describes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationSummary {
    id: String,
    #[serde(rename = "type")]
    op_type: OperationType,
    access_level: AccessLevel,
    active_registrations: u64,
    #[serde(default)]
    description: Option<String>,
}

/// One page of `hub.operations.list`.
#[derive(Debug, Deserialize)]
struct Page {
    operations: Vec<OperationSummary>,
    #[serde(default)]
    next: Option<String>,
}

/// `alkhub ops`: every page of `hub.operations.list`.
pub async fn ops(config: &Config, command: OpsCommand) -> anyhow::Result<()> {
    let OpsCommand::List { connection, output } = command;
    let peer = connection.connect(config).await?;
    let mut operations = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let input = match &after {
            Some(after) => serde_json::json!({ "after": after }),
            None => serde_json::Value::Null,
        };
        let answer = peer
            .call("hub.operations.list", input)
            .await
            .map_err(call_failed)?;
        let page: Page = serde_json::from_value(answer["data"].clone())
            .context("hub.operations.list answered in an unexpected shape")?;
        operations.extend(page.operations);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    output.print(&operations, |op| {
        format!(
            "{}\t{}\t{}\tproviders={}\t{}",
            op.id,
            op.op_type.as_str(),
            op.access_level.as_str(),
            op.active_registrations,
            op.description.as_deref().unwrap_or_default()
        )
    })
}
