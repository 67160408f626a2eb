//! MCP import: an MCP server's tools become operations, and the hub, as an
//! MCP client (`rmcp`), serves them while the server is reachable.
//!
//! `alkhub import mcp NAME --command CMD [--arg A]... | --url URL` connects
//! once, lists the tools and stores one definition per tool. The running hub
//! keeps a connection per import: it registers as the provider of the tools
//! while the connection is up, reconnects with backoff when it drops
//! (registrations inactive meanwhile), and re-reads the tools when the
//! server sends `notifications/tools/list_changed`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion, Tool};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::provider::{self, Answer, Call, Responder};
use crate::connection::now_ms;
use crate::protocol::{AccessLevel, OperationType};
use crate::server::Hub;
use crate::store::{Import, ImportChanges, ImportKind, NewDefinition, Source, Store};

/// Where the MCP server is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpConfig {
    /// A command started with stdio as the transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Variables set in the command's environment, over the hub's own
    /// (which it inherits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A streamable HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// CA certificates (PEM text) trusted besides the system's, for an
    /// https `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Operation name → tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
}

/// One `--env KEY=VALUE` of a stdio MCP import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSetting {
    /// The variable's name.
    pub key: String,
    /// Its value, stored with the import.
    pub value: String,
}

impl std::str::FromStr for EnvSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("invalid --env {text:?}: use KEY=VALUE"));
        };
        if !super::is_env_name(key) {
            return Err(format!(
                "invalid --env {text:?}: the name {key:?} must be letters, digits and '_', not starting with a digit"
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "invalid --env {key}=...: the value holds a NUL byte"
            ));
        }
        Ok(EnvSetting {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Receives the server's notifications.
#[derive(Clone, Default)]
struct Listener {
    tools_changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        // The initialize handshake, which every server of the 2025 revisions speaks.
        ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

type Session = RunningService<RoleClient, Listener>;

async fn connect(config: &McpConfig, listener: Listener) -> anyhow::Result<Session> {
    if let Some(url) = &config.url {
        // As rmcp's own client: no idle pooling, redirects within the origin.
        let client = super::tls::client(config.ca_cert.as_deref())?
            .pool_max_idle_per_host(0)
            .redirect(super::http_provider::same_origin_redirects())
            .build()?;
        let transport = StreamableHttpClientTransport::with_client(
            client,
            StreamableHttpClientTransportConfig::with_uri(url.as_str()),
        );
        return listener
            .serve(transport)
            .await
            .with_context(|| format!("cannot initialize an MCP session with {url}"));
    }
    let Some(command) = &config.command else {
        bail!("an MCP import needs --command or --url");
    };
    let cmd = tokio::process::Command::new(command).configure(|c| {
        c.args(&config.args).envs(&config.env);
    });
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {command}"))?;
    listener
        .serve(transport)
        .await
        .with_context(|| format!("cannot initialize an MCP session with {command}"))
}

/// The definitions of `tools` under `namespace`, with the name map.
fn definitions(
    namespace: &str,
    tools: &[Tool],
) -> anyhow::Result<(Vec<NewDefinition>, BTreeMap<String, String>)> {
    let mut defs = Vec::new();
    let mut names = BTreeMap::new();
    for tool in tools {
        let name = super::openapi::sanitize(&tool.name);
        if names.insert(name.clone(), tool.name.to_string()).is_some() {
            bail!("two tools map to the operation name {name}; MCP tool names must differ in more than punctuation");
        }
        let read_only = tool
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false);
        defs.push(NewDefinition {
            namespace: namespace.to_owned(),
            name,
            op_type: if read_only {
                OperationType::Query
            } else {
                OperationType::Mutation
            },
            input_schema: Some(Value::Object((*tool.input_schema).clone())),
            output_schema: tool
                .output_schema
                .as_ref()
                .map(|s| Value::Object((**s).clone())),
            access_level: AccessLevel::Authenticated,
            required_scopes: Vec::new(),
            description: tool.description.as_ref().map(|d| d.to_string()),
            source: Source::Mcp,
        });
    }
    Ok((defs, names))
}

async fn save(
    store: &Store,
    name: &str,
    config: &McpConfig,
    tools: &[Tool],
) -> anyhow::Result<(ImportChanges, McpConfig)> {
    let (defs, names) = definitions(name, tools)?;
    let config = McpConfig {
        tools: names,
        ..config.clone()
    };
    let changes = store
        .save_import(
            name,
            ImportKind::Mcp,
            name,
            &serde_json::to_value(&config)?,
            &defs,
        )
        .await?;
    Ok((changes, config))
}

/// Connects to the server, lists its tools and stores them as import `name`.
pub async fn import_mcp(
    store: &Store,
    name: &str,
    config: McpConfig,
) -> anyhow::Result<ImportChanges> {
    crate::names::check_namespace(name).map_err(anyhow::Error::msg)?;
    let session = connect(&config, Listener::default()).await?;
    let tools = session.peer().list_all_tools().await?;
    let saved = save(store, name, &config, &tools).await;
    let _ = session.cancel().await;
    Ok(saved?.0)
}

/// Keeps import `import` served until `stop` is cancelled or the hub shuts
/// down: connect, register, serve, and on a drop reconnect with backoff
/// (1 s doubling to 30 s).
pub fn start(hub: Hub, import: Import, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            if hub.is_shutting_down() || stop.is_cancelled() {
                return;
            }
            match run_once(&hub, &import, &stop).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(import = %import.name, error = format!("{e:#}"), retry_in = ?backoff, "MCP server unreachable");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    })
}

/// One connection's life; returns when it drops.
async fn run_once(hub: &Hub, import: &Import, stop: &CancellationToken) -> anyhow::Result<()> {
    let health = Duration::from_millis(hub.config().imports.mcp_health_ms.max(100));
    let mut config: McpConfig = serde_json::from_value(import.config.clone())?;
    let listener = Listener::default();
    let changed = listener.tools_changed.clone();
    let session = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        session = connect(&config, listener) => session?,
    };
    let peer = session.peer().clone();
    let mut operations = import.operations.clone();
    loop {
        let tools_by_name = Arc::new(config.tools.clone());
        let call_peer = peer.clone();
        let handler: provider::Handler = Arc::new(move |call, out| {
            let peer = call_peer.clone();
            let tools = tools_by_name.clone();
            Box::pin(async move { call_tool(&peer, &tools, call, out).await })
        });
        let serving = provider::serve(
            hub,
            &super::http_provider::provider_id(&import.name),
            &operations,
            json!({ "import": import.name }),
            handler,
        )
        .await?;
        tracing::info!(import = %import.name, tools = operations.len(), "serving MCP tools");
        // Serve until the session drops or the tool list really changes.
        let changes = loop {
            tokio::select! {
                _ = wait_closed(&peer) => {
                    serving.stop().await;
                    return Ok(());
                }
                _ = stop.cancelled() => {
                    serving.stop().await;
                    let _ = session.cancel().await;
                    return Ok(());
                }
                _ = changed.notified() => {}
                // A server over HTTP that restarted (or forgot the session)
                // does not close anything: ask it something now and then.
                _ = tokio::time::sleep(health) => {
                    let answer = tokio::time::timeout(health, peer.list_all_tools()).await;
                    if matches!(answer, Ok(Ok(_))) {
                        continue;
                    }
                    serving.stop().await;
                    let _ = session.cancel().await;
                    let why = match answer {
                        Ok(Err(e)) => describe(&e),
                        _ => format!("no answer within {} ms", health.as_millis()),
                    };
                    bail!("the MCP server stopped answering ({why}); its operations are inactive until it is back");
                }
            }
            let listed = match peer.list_all_tools().await {
                Ok(tools) => save(hub.store(), &import.name, &config, &tools).await,
                Err(e) => Err(e.into()),
            };
            let (changes, saved) = match listed {
                Ok(done) => done,
                Err(e) => {
                    serving.stop().await;
                    return Err(e);
                }
            };
            config = saved;
            if !(changes.added.is_empty()
                && changes.updated.is_empty()
                && changes.removed.is_empty())
            {
                break changes;
            }
        };
        // Calls in flight on the old set end with PROVIDER_GONE; the new set
        // is registered at once.
        serving.stop().await;
        for id in &changes.removed {
            hub.dispatcher().catalog().remove_definition(id);
        }
        for id in changes.added.iter().chain(&changes.updated) {
            if let Some(def) = hub.store().get_operation(id).await? {
                hub.dispatcher().catalog().put_definition(def);
            }
        }
        tracing::info!(import = %import.name, added = changes.added.len(), updated = changes.updated.len(), removed = changes.removed.len(), "MCP tools changed");
        let stored = hub.store().get_import(&import.name).await?;
        // This task serves the new set itself: the imports table's watcher
        // must not serve it anew.
        if let Some(stored) = &stored {
            hub.imports().saw(stored);
        }
        operations = stored.map(|i| i.operations).unwrap_or_default();
    }
}

/// An rmcp error as a sentence about the server, without Rust type names.
fn describe(error: &rmcp::ServiceError) -> String {
    match error {
        rmcp::ServiceError::McpError(e) => {
            format!("the server answered error {}: {}", e.code.0, e.message)
        }
        rmcp::ServiceError::TransportClosed => "the connection to the server closed".into(),
        rmcp::ServiceError::Timeout { timeout } => {
            format!("no answer within {} ms", timeout.as_millis())
        }
        rmcp::ServiceError::Cancelled { .. } => "the request was cancelled".into(),
        other => {
            // Transport errors say what failed after their kind.
            let text = other.to_string();
            text.split_once(": ")
                .map_or(text.clone(), |(_, why)| why.to_owned())
        }
    }
}

async fn wait_closed(peer: &rmcp::Peer<RoleClient>) {
    while !peer.is_transport_closed() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn call_tool(
    peer: &rmcp::Peer<RoleClient>,
    tools: &BTreeMap<String, String>,
    call: Call,
    out: Responder,
) {
    let name = crate::names::split_operation_id(&call.operation_id)
        .map(|(_, n)| n)
        .unwrap_or_default();
    let Some(tool) = tools.get(name) else {
        out.send(Answer::Error(
            "EXECUTION_ERROR",
            format!("the import has no tool for {}", call.operation_id),
            None,
        ));
        return;
    };
    let mut params = CallToolRequestParams::new(tool.clone());
    if let Value::Object(args) = call.input {
        params = params.with_arguments(args);
    }
    let request = peer.call_tool(params);
    let result = match call.deadline {
        Some(at) => {
            let left = Duration::from_millis(at.saturating_sub(now_ms()).max(1));
            match tokio::time::timeout(left, request).await {
                Ok(r) => r,
                Err(_) => {
                    out.send(Answer::Error(
                        "TIMEOUT",
                        format!("tool {tool} did not answer before the deadline"),
                        None,
                    ));
                    return;
                }
            }
        }
        None => request.await,
    };
    match result {
        Ok(result) => {
            let result = serde_json::to_value(&result).unwrap_or(Value::Null);
            if result["isError"] == json!(true) {
                out.send(Answer::Error(
                    "EXECUTION_ERROR",
                    format!("tool {tool} reported an error"),
                    Some(json!({ "content": result["content"] })),
                ));
                return;
            }
            let data = match result.get("structuredContent") {
                Some(structured) if !structured.is_null() => structured.clone(),
                _ => json!({ "content": result["content"] }),
            };
            out.send(Answer::Output(json!({
                "data": data,
                "meta": {
                    "source": "mcp",
                    "operationId": call.operation_id,
                    "timestamp": now_ms(),
                    "tool": tool,
                    "content": result["content"],
                }
            })));
        }
        Err(e) => out.send(Answer::Error(
            "EXECUTION_ERROR",
            format!("tool {tool}: {}", describe(&e)),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::EnvSetting;

    #[test]
    fn env_settings_name_a_variable_and_keep_the_value_as_given() {
        let e: EnvSetting = "API_BASE=http://localhost:1/a=b".parse().unwrap();
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("API_BASE", "http://localhost:1/a=b")
        );
        let empty: EnvSetting = "QUIET=".parse().unwrap();
        assert_eq!(empty.value, "");
        for bad in ["NOVALUE", "=x", "1ST=x", "A-B=x", "A B=x", "A=\0"] {
            let err = bad.parse::<EnvSetting>().unwrap_err();
            assert!(err.starts_with("invalid --env"), "{bad:?}: {err}");
        }
    }
}
