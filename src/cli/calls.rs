//! `alkhub call` and `alkhub ops`: calling a running hub as a peer.

use anyhow::Context;
use clap::{Args, Subcommand};

use alkhub::config::Config;

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

/// `alkhub ops`.
pub async fn ops(config: &Config, command: OpsCommand) -> anyhow::Result<()> {
    let OpsCommand::List { connection } = command;
    let peer = connection.connect(config).await?;
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
    Ok(())
}
