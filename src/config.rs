//! The hub's configuration: one `alkhub.toml`, every key optional with a
//! documented default, command-line flags layered on top.
//!
//! This module owns parsing and defaults only; it does not open sockets or
//! databases. [`DEFAULT_CONFIG`] is the commented file that
//! `alkhub config defaults` prints, and a test keeps it equal to
//! [`Config::default`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the hub listens and how it shuts down.
    pub server: ServerConfig,
    /// Where definitions, registrations, spokes and clients are stored.
    pub database: DatabaseConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Limits that protect the hub from its peers.
    pub limits: LimitsConfig,
    /// The namespace remap the hub applies to declared operations.
    pub remap: RemapConfig,
    /// The hub's own MCP server at `/mcp`.
    pub mcp: McpServerConfig,
    /// Where WebAssembly plugins are loaded from.
    pub plugins: PluginsConfig,
    /// What `GET /metrics` reports.
    pub metrics: MetricsConfig,
    /// Who may use the admin API.
    pub admin: AdminConfig,
    /// How a running hub follows the imports table.
    pub imports: ImportsConfig,
    /// Several hub nodes on one PostgreSQL database and one NATS server.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: off while `nats_url` is empty. See `docs/cluster.md`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server the nodes talk through (`nats://host:port`, with
    /// `user:password@` when the server asks for it); empty: one node.
    pub nats_url: String,
    /// The first token of every NATS subject the nodes use; nodes of one
    /// cluster share it, clusters on one NATS server differ in it.
    pub subject_prefix: String,
    /// A name for this node in logs and metrics; empty: its random id.
    pub node_name: String,
    /// How long a node's lease lasts (ms): a node silent for longer is
    /// dead, and the others deactivate its registrations and end the calls
    /// it carried.
    pub lease_ms: u64,
    /// How often (ms) a node renews its lease and looks for dead nodes.
    pub heartbeat_ms: u64,
    /// Bytes of frames one link to another node may hold unsent; past it
    /// the link is dropped and the calls on it end with `PROVIDER_GONE`.
    pub max_queued_bytes: usize,
    /// Remote providers one node keeps at most (sessions on other nodes,
    /// each with its registrations); announcements past it are ignored.
    pub max_remote_sessions: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            subject_prefix: "alkhub".to_owned(),
            node_name: String::new(),
            lease_ms: 5_000,
            heartbeat_ms: 1_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_remote_sessions: 100_000,
        }
    }
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.nats_url.trim().is_empty()
    }
}

/// `[imports]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportsConfig {
    /// How often a running hub reads the imports table to serve imports
    /// that the CLI (or another hub) added, changed or removed; 0 never.
    pub poll_ms: u64,
    /// How often the hub asks an MCP server it imports over HTTP whether it
    /// still answers (and how long it waits): a server that restarted or
    /// forgot the session is then connected to again.
    pub mcp_health_ms: u64,
}

impl Default for ImportsConfig {
    fn default() -> Self {
        Self {
            poll_ms: 2_000,
            mcp_health_ms: 5_000,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The scope a principal needs to use `/v1/admin`.
    pub scope: String,
    /// At most this many sessions and this many operations go into one
    /// snapshot of the dashboard's event stream (the counts stay whole).
    pub dashboard_rows: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            scope: "admin".into(),
            dashboard_rows: 500,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Count calls and serve `GET /metrics` (any valid token may read it).
    pub enabled: bool,
    /// Namespaces that get a label of their own in the call metrics; the
    /// calls of any further namespace are counted under `_other`.
    pub max_namespaces: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_namespaces: 200,
        }
    }
}

/// `[mcp]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// Serve `/mcp`.
    pub enabled: bool,
    /// `Host` header values `/mcp` accepts (`host` or `host:port`); empty
    /// accepts any. Every request needs a bearer token either way.
    pub allowed_hosts: Vec<String>,
    /// Milliseconds a `tools/call` may take before it answers `TIMEOUT`.
    pub call_timeout_ms: u64,
    /// MCP sessions open at once, all principals together; one more
    /// `initialize` is refused with HTTP 503. A session ends on `DELETE`, or
    /// after 5 minutes without a request.
    pub max_sessions: usize,
    /// MCP sessions one principal may have open at once; one more
    /// `initialize` is refused with HTTP 429.
    pub max_sessions_per_principal: usize,
}

impl Default for McpServerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_hosts: Vec::new(),
            call_timeout_ms: 60_000,
            max_sessions: 1024,
            max_sessions_per_principal: 16,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Milliseconds the hub waits for open calls on shutdown before aborting them.
    pub shutdown_grace_ms: u64,
    /// Milliseconds past the grace period after which shutdown stops waiting
    /// for sessions, streams and request bodies and the process exits.
    pub shutdown_hard_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            shutdown_grace_ms: 10_000,
            shutdown_hard_ms: 5_000,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Largest number of pooled database connections.
    pub max_connections: u32,
    /// Seconds a spoke-sourced definition may go without an active
    /// registration before the cleanup task deletes it.
    pub definition_grace_secs: u64,
    /// Seconds between two runs of the cleanup task.
    pub cleanup_interval_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://alkhub.db".to_owned(),
            max_connections: 8,
            definition_grace_secs: 7 * 24 * 3600,
            cleanup_interval_secs: 3600,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `alkhub=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest WebSocket frame or HTTP body accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Milliseconds a new connection has to send `hello`.
    pub hello_timeout_ms: u64,
    /// Milliseconds between WebSocket pings; two missed answers drop the peer.
    pub heartbeat_ms: u64,
    /// Calls one connection may have open at once, as caller.
    pub max_open_calls_per_connection: usize,
    /// Timeout in milliseconds for HTTP calls that do not send `timeoutMs`.
    pub default_http_timeout_ms: u64,
    /// Operations one `hello` or `register` may declare.
    pub max_operations_per_register: usize,
    /// Bytes of frames queued for one peer and not yet written (WebSocket
    /// sessions, in-process providers, SSE streams); past it the peer is a
    /// slow consumer and is disconnected (4413) or its stream ended.
    pub max_outbound_bytes: usize,
    /// WebSocket connections open at once, authenticated or not; past it an
    /// upgrade is refused with 503.
    pub max_connections: usize,
    /// WebSocket connections that have not authenticated yet, in total;
    /// past it an upgrade is refused with 503.
    pub max_unauthenticated: usize,
    /// Connections that have not authenticated yet from one remote address;
    /// past it an upgrade is refused with 429.
    pub max_unauthenticated_per_address: usize,
    /// Sessions one client may hold at once; past it a new one gets
    /// `OVERLOADED` and close code 4429.
    pub max_sessions_per_client: usize,
    /// HTTP calls (`/call`) open at once, in total; past it 429 `OVERLOADED`.
    pub max_http_calls: usize,
    /// HTTP calls open at once per principal (anonymous callers: per
    /// remote address); past it 429 `OVERLOADED`.
    pub max_http_calls_per_principal: usize,
    /// SSE streams (`/subscribe`) open at once, in total; past it 429.
    pub max_sse_streams: usize,
    /// SSE streams open at once per principal (anonymous: per address).
    pub max_sse_streams_per_principal: usize,
    /// Milliseconds an HTTP request may take to send its body; past it 408.
    pub http_body_timeout_ms: u64,
    /// Milliseconds an HTTP token lookup is cached: the longest a removed or
    /// disabled token keeps working over HTTP.
    pub auth_cache_ttl_ms: u64,
    /// Tokens the HTTP lookup cache holds at most.
    pub auth_cache_entries: usize,
    /// Milliseconds between two checks for removed or disabled principals,
    /// whose live sessions are then closed with 4401.
    pub revocation_check_ms: u64,
    /// Links in a chain of calls (a call, its child, the child's child...);
    /// a call that would be deeper is answered `OVERLOADED`.
    pub max_call_depth: u32,
    /// Deepest nesting of arrays and objects in an input that is checked
    /// against an input schema; deeper input is answered `VALIDATION_ERROR`.
    pub max_input_depth: u32,
    /// Inputs larger than this many bytes are validated off the async
    /// workers (the worker hands its other tasks over while it validates).
    pub inline_validation_bytes: usize,
    /// Calls one principal (all its sessions and HTTP requests; anonymous
    /// callers share one) may start per second; 0 is unlimited. Over it, a
    /// call is answered `OVERLOADED` with `retryAfterMs` in its details.
    pub calls_per_second_per_principal: u32,
    /// Calls one principal may start at once above its rate, after a pause.
    pub call_burst_per_principal: u32,
    /// Active registrations one session may hold; declarations past it come
    /// back in `rejected` with `OVERLOADED`.
    pub max_operations_per_session: usize,
    /// Active registrations one principal may hold across all its live
    /// sessions; declarations past it come back with `OVERLOADED`.
    pub max_operations_per_principal: usize,
    /// Largest serialized `inputSchema` or `outputSchema` of one declaration,
    /// in bytes; a larger one is rejected with `VALIDATION_ERROR`.
    pub max_schema_bytes: usize,
    /// Deepest nesting of arrays and objects in one declared schema; a deeper
    /// one is rejected with `VALIDATION_ERROR`.
    pub max_schema_depth: usize,
    /// Definitions one page of `GET /v1/operations` or `hub.operations.list`
    /// holds at most, and when no `limit` is given; a larger `limit` is
    /// answered `VALIDATION_ERROR`.
    pub max_list_page: usize,
    /// Candidates one routing decision sees at most. An operation with more
    /// active registrations shows the policy a window of this many, which
    /// moves on with every call (see `wit/hub.wit`); 0 shows every one.
    pub max_routing_candidates: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1024 * 1024,
            hello_timeout_ms: 5_000,
            heartbeat_ms: 15_000,
            max_open_calls_per_connection: 1024,
            default_http_timeout_ms: 30_000,
            max_operations_per_register: 1024,
            max_outbound_bytes: 4 * 1024 * 1024,
            max_connections: 20_000,
            max_unauthenticated: 1_024,
            max_unauthenticated_per_address: 64,
            max_sessions_per_client: 32,
            max_http_calls: 4_096,
            max_http_calls_per_principal: 256,
            max_sse_streams: 1_024,
            max_sse_streams_per_principal: 32,
            http_body_timeout_ms: 10_000,
            auth_cache_ttl_ms: 5_000,
            auth_cache_entries: 10_000,
            revocation_check_ms: 2_000,
            max_call_depth: 32,
            max_input_depth: 64,
            inline_validation_bytes: 64 * 1024,
            calls_per_second_per_principal: 10_000,
            call_burst_per_principal: 20_000,
            max_operations_per_session: 4096,
            max_operations_per_principal: 16384,
            max_schema_bytes: 64 * 1024,
            max_schema_depth: 32,
            max_list_page: 1000,
            max_routing_candidates: 32,
        }
    }
}

/// `[remap]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemapConfig {
    /// Namespaces whose operations belong to one spoke each: the spoke id is
    /// inserted after the first segment (`dev.fs.read` from `devbox` becomes
    /// `dev.devbox.fs.read`).
    pub per_spoke_namespaces: Vec<String>,
}

/// `[plugins]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder holding remap and routing components (`*.wasm`); a plugin is
    /// named after its file (`sticky.wasm` is `sticky`).
    pub dir: PathBuf,
    /// Folder of compiled components, keyed by content and engine.
    pub cache_dir: PathBuf,
    /// Watch the folder and load new or changed components without a restart.
    pub watch: bool,
    /// The active remap plugin; `native` uses the built-in remap of `[remap]`.
    pub remap: String,
    /// The default routing plugin; `native` uses the built-in least-in-flight.
    pub routing: String,
    /// Routing plugins for operations matching a pattern (`*` matches any
    /// characters), first match wins: `[[plugins.route]] pattern = "chat.*"
    /// plugin = "sticky"`.
    pub route: Vec<RouteRule>,
    /// Limits and failure policy of every plugin.
    pub defaults: PluginLimits,
    /// Per-plugin changes to `defaults`: `[plugins.overrides.sticky]`.
    pub overrides: BTreeMap<String, PluginOverrides>,
    /// Per-plugin settings, handed to the plugin as JSON through the host's
    /// `config` import: `[plugins.settings.sticky] key = "user"`.
    pub settings: BTreeMap<String, toml::Value>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins"),
            cache_dir: PathBuf::from(".alkhub-cache"),
            watch: true,
            remap: "rule-remap".to_owned(),
            routing: "least-in-flight".to_owned(),
            route: Vec::new(),
            defaults: PluginLimits::default(),
            overrides: BTreeMap::new(),
            settings: BTreeMap::new(),
        }
    }
}

/// One `[[plugins.route]]` rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Operation ids this rule covers, `*` matching any characters.
    pub pattern: String,
    /// The routing plugin for them (`native` for the built-in).
    pub plugin: String,
}

/// What happens to a call or declaration when its plugin fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Decide with the built-in policy instead (fail open).
    #[default]
    Fallback,
    /// Refuse: `ROUTING_ERROR` for calls, `rejected` for declarations (fail closed).
    Error,
}

/// Limits and failure policy of one plugin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Hard stop: the guest is interrupted after this many milliseconds of one decision.
    pub epoch_deadline_ms: u64,
    /// A decision that returns but took longer than this (microseconds) counts as failed.
    pub timeout_us: u64,
    /// Size in bytes each linear memory of an instance may grow to.
    pub memory_bytes: usize,
    /// Elements each table of an instance may grow to (a function table
    /// costs 8 bytes an element).
    pub table_elements: usize,
    /// Core instances one plugin instance may create (a component
    /// instantiates one per core module it contains).
    pub instances: usize,
    /// Tables one plugin instance may create, over all its core instances.
    pub tables: usize,
    /// Linear memories one plugin instance may create, over all its core instances.
    pub memories: usize,
    /// Decisions one warm instance makes before it is replaced by a fresh one.
    pub max_uses: u64,
    /// `fallback` (built-in policy) or `error` (refuse).
    pub on_failure: OnFailure,
    /// Consecutive failures that put the plugin in quarantine.
    pub quarantine_after: u32,
    /// Seconds a quarantined plugin is bypassed (its failure policy applies).
    pub quarantine_secs: u64,
    /// Routing plugins: also decide calls with a single candidate.
    pub see_every_call: bool,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            epoch_deadline_ms: 100,
            timeout_us: 50_000,
            memory_bytes: 64 * 1024 * 1024,
            table_elements: 1_000_000,
            instances: 64,
            tables: 64,
            memories: 16,
            max_uses: 1_000_000,
            on_failure: OnFailure::Fallback,
            quarantine_after: 5,
            quarantine_secs: 30,
            see_every_call: false,
        }
    }
}

/// `[plugins.overrides.NAME]`: any subset of [`PluginLimits`].
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginOverrides {
    /// See [`PluginLimits::epoch_deadline_ms`].
    pub epoch_deadline_ms: Option<u64>,
    /// See [`PluginLimits::timeout_us`].
    pub timeout_us: Option<u64>,
    /// See [`PluginLimits::memory_bytes`].
    pub memory_bytes: Option<usize>,
    /// See [`PluginLimits::table_elements`].
    pub table_elements: Option<usize>,
    /// See [`PluginLimits::instances`].
    pub instances: Option<usize>,
    /// See [`PluginLimits::tables`].
    pub tables: Option<usize>,
    /// See [`PluginLimits::memories`].
    pub memories: Option<usize>,
    /// See [`PluginLimits::max_uses`].
    pub max_uses: Option<u64>,
    /// See [`PluginLimits::on_failure`].
    pub on_failure: Option<OnFailure>,
    /// See [`PluginLimits::quarantine_after`].
    pub quarantine_after: Option<u32>,
    /// See [`PluginLimits::quarantine_secs`].
    pub quarantine_secs: Option<u64>,
    /// See [`PluginLimits::see_every_call`].
    pub see_every_call: Option<bool>,
}

impl PluginsConfig {
    /// The limits of plugin `name`: the defaults with its overrides applied.
    pub fn limits_of(&self, name: &str) -> PluginLimits {
        let mut limits = self.defaults.clone();
        if let Some(o) = self.overrides.get(name) {
            macro_rules! apply {
                ($($field:ident),*) => { $(if let Some(v) = o.$field { limits.$field = v; })* };
            }
            apply!(
                epoch_deadline_ms,
                timeout_us,
                memory_bytes,
                table_elements,
                instances,
                tables,
                memories,
                max_uses,
                on_failure,
                quarantine_after,
                quarantine_secs,
                see_every_call
            );
        }
        limits
    }
}

/// The commented default configuration printed by `alkhub config defaults`.
pub const DEFAULT_CONFIG: &str = r#"# alkhub.toml: every key is optional; the values below are the defaults.

[server]
# Address and port of the HTTP and WebSocket listener.
listen = "127.0.0.1:7700"
# Milliseconds the hub waits for open calls on shutdown before aborting them.
shutdown_grace_ms = 10000
# Milliseconds past the grace period after which shutdown stops waiting for
# sessions, streams and request bodies and the process exits.
shutdown_hard_ms = 5000

[database]
# sqlite://PATH (created if missing) or postgres://USER@HOST:PORT/DB.
url = "sqlite://alkhub.db"
# Largest number of pooled database connections.
max_connections = 8
# Seconds a spoke-sourced definition may go without an active registration
# before the cleanup task deletes it (7 days).
definition_grace_secs = 604800
# Seconds between two runs of the cleanup task.
cleanup_interval_secs = 3600

[log]
# "text" (human-readable) or "json" (one object per line).
format = "text"
# A tracing filter such as "info" or "alkhub=debug"; RUST_LOG wins when set.
level = "info"

[limits]
# Largest WebSocket frame or HTTP body accepted, in bytes.
max_frame_bytes = 1048576
# Milliseconds a new connection has to send hello.
hello_timeout_ms = 5000
# Milliseconds between WebSocket pings; two missed answers drop the peer.
heartbeat_ms = 15000
# Calls one connection may have open at once, as caller.
max_open_calls_per_connection = 1024
# Timeout in milliseconds for HTTP calls that do not send timeoutMs.
default_http_timeout_ms = 30000
# Operations one hello or register may declare.
max_operations_per_register = 1024
# Bytes queued for one peer and not yet written (WebSocket, in-process
# provider, SSE stream); past it the peer is a slow consumer: a session is
# closed with 4413, an SSE stream ends with an error event.
max_outbound_bytes = 4194304
# WebSocket connections open at once; past it an upgrade gets 503.
max_connections = 20000
# Connections that have not authenticated yet, in total (503 past it) and
# per remote address (429 past it).
max_unauthenticated = 1024
max_unauthenticated_per_address = 64
# Sessions one client may hold at once; past it OVERLOADED and close 4429.
max_sessions_per_client = 32
# HTTP calls open at once, in total and per principal (anonymous callers:
# per remote address); past either, 429 OVERLOADED.
max_http_calls = 4096
max_http_calls_per_principal = 256
# SSE streams open at once, in total and per principal; past either, 429.
max_sse_streams = 1024
max_sse_streams_per_principal = 32
# Milliseconds an HTTP request may take to send its body; past it, 408.
http_body_timeout_ms = 10000
# Milliseconds an HTTP token lookup is cached: the longest a removed or
# disabled token keeps working over HTTP. The cache holds at most
# auth_cache_entries tokens.
auth_cache_ttl_ms = 5000
auth_cache_entries = 10000
# Milliseconds between checks for removed or disabled principals, whose
# live sessions are then closed with 4401.
revocation_check_ms = 2000
# Links in a chain of calls (a call, its child, the child's child...);
# a call that would be deeper is answered OVERLOADED.
max_call_depth = 32
# Deepest nesting of arrays and objects in an input that is checked
# against an input schema; deeper input is answered VALIDATION_ERROR.
max_input_depth = 64
# Inputs larger than this many bytes are validated off the async
# workers (the worker hands its other tasks over while it validates).
inline_validation_bytes = 65536
# Calls one principal (all its sessions and HTTP requests; anonymous
# callers share one) may start per second; 0 is unlimited. Over it, a
# call is answered OVERLOADED with retryAfterMs in its details.
calls_per_second_per_principal = 10000
# Calls one principal may start at once above its rate, after a pause.
call_burst_per_principal = 20000
# Active registrations one session may hold (past it: OVERLOADED in rejected).
max_operations_per_session = 4096
# Active registrations one principal may hold over all its live sessions.
max_operations_per_principal = 16384
# Largest serialized inputSchema or outputSchema of a declaration, in bytes.
max_schema_bytes = 65536
# Deepest nesting of arrays and objects in a declared schema.
max_schema_depth = 32
# Definitions per page of GET /v1/operations and hub.operations.list, at
# most and by default; a larger limit is answered VALIDATION_ERROR.
max_list_page = 1000
# Candidates one routing decision sees at most: with more registrations the
# policy sees a window of this many that moves on with each call; 0 is all.
max_routing_candidates = 32

[mcp]
# Serve the hub's operations as MCP tools at /mcp (streamable HTTP, bearer token).
enabled = true
# Host header values /mcp accepts ("host" or "host:port"); empty accepts any.
# Every request needs a bearer token either way.
allowed_hosts = []
# Milliseconds a tools/call may take before it answers TIMEOUT.
call_timeout_ms = 60000
# MCP sessions open at once, all principals together; one more initialize is
# answered 503. A session ends on DELETE or after 5 minutes without a request.
max_sessions = 1024
# MCP sessions one principal may have open at once; one more is answered 429.
max_sessions_per_principal = 16

[metrics]
# Count calls and serve GET /metrics (OpenMetrics text; any valid token may
# read it). false: nothing is counted and the route is gone.
enabled = true
# Namespaces (an operation id up to its last ".") that get a label of their
# own in the call metrics; calls of further namespaces count as "_other".
max_namespaces = 200

[admin]
# The scope a principal needs to use the admin API (/v1/admin): grant it
# with `alkhub client add NAME --scopes admin`.
scope = "admin"
# Sessions and operations listed in one snapshot of the dashboard's event
# stream (the first by session id and by operation id; counts stay whole).
dashboard_rows = 500

[imports]
# How often (ms) a running hub reads the imports table, to serve at once
# the imports that `alkhub import` (without --hub) or another hub added,
# changed or removed. 0: only at start and through the admin API.
poll_ms = 2000
# How often (ms) the hub checks that an MCP server it serves still answers
# (it lists the tools, waiting as long); one that does not is reconnected to,
# its operations answering NO_PROVIDER meanwhile.
mcp_health_ms = 5000

[cluster]
# Several hub nodes on one PostgreSQL database (docs/cluster.md). Off while
# nats_url is empty; on, every node names the same NATS server and database.
nats_url = ""
# First token of every NATS subject the nodes use; one per cluster.
subject_prefix = "alkhub"
# This node's name in logs and metrics; empty: its random node id.
node_name = ""
# A node that has not renewed its lease for this long (ms) is dead: the
# others deactivate its registrations and end the calls it carried.
lease_ms = 5000
# How often (ms) a node renews its lease and looks for dead nodes.
heartbeat_ms = 1000
# Bytes of frames a link to another node may hold unsent; past it the link
# is dropped and its calls end with PROVIDER_GONE.
max_queued_bytes = 67108864
# Sessions on other nodes this node keeps as remote providers, at most.
max_remote_sessions = 100000

[remap]
# Namespaces whose operations belong to one spoke each: the spoke id is
# inserted after the first segment ("dev.fs.read" from spoke "devbox"
# becomes "dev.devbox.fs.read").
per_spoke_namespaces = []

[plugins]
# Folder holding remap and routing components (*.wasm); a plugin is named
# after its file (sticky.wasm is "sticky"). The defaults "rule-remap" and
# "least-in-flight" are built into the hub; a file of the same name replaces them.
dir = "plugins"
# Folder of compiled components, keyed by content and engine version.
cache_dir = ".alkhub-cache"
# Load new or changed components without a restart.
watch = true
# The active remap plugin; "native" uses the built-in remap of [remap].
remap = "rule-remap"
# The default routing plugin; "native" uses the built-in least-in-flight.
routing = "least-in-flight"
# Routing plugins per operation pattern ("*" matches anything), first match
# wins, as [[plugins.route]] tables placed after this section, e.g.
#   [[plugins.route]]
#   pattern = "chat.*"
#   plugin = "sticky"

# Limits and failure policy of every plugin; [plugins.overrides.NAME] changes
# any of them for one plugin.
[plugins.defaults]
# Hard stop: interrupt a decision after this many milliseconds.
epoch_deadline_ms = 100
# A decision that returns but took longer (microseconds) counts as failed.
timeout_us = 50000
# Size in bytes each linear memory of an instance may grow to.
memory_bytes = 67108864
# Elements each table of an instance may grow to (8 bytes each).
table_elements = 1000000
# Core instances, tables and linear memories one instance may create (a
# component holds several core modules). With the sizes above they bound a
# warm instance's memory: memories x memory_bytes + tables x table_elements x 8.
instances = 64
tables = 64
memories = 16
# Decisions one warm instance makes before it is replaced by a fresh one.
max_uses = 1000000
# "fallback" (decide with the built-in policy) or "error" (refuse).
on_failure = "fallback"
# Consecutive failures that put a plugin in quarantine.
quarantine_after = 5
# Seconds a quarantined plugin is bypassed.
quarantine_secs = 30
# Routing plugins: also decide calls that have a single candidate.
see_every_call = false

[plugins.overrides]

# Settings handed to each plugin as JSON through its `config` import, e.g.
# [plugins.settings.sticky]
# key = "user"
[plugins.settings]
"#;

/// A configuration file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: at key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Parses configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid("(document)".to_owned(), e.to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(key, e.into_inner().to_string().trim_end().to_owned())
        })
    }

    /// Loads `path` if given. Without a path, `alkhub.toml` in the current
    /// directory is read when it exists, and the defaults are used otherwise.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from("alkhub.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_equal_the_built_in_defaults() {
        let parsed = Config::parse(DEFAULT_CONFIG, Path::new("defaults")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = Config::parse("[limits]\nmax_frame_byte = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("max_frame_byte"), "{err}");
    }

    #[test]
    fn wrong_type_is_named_with_the_key_path() {
        let err = Config::parse("[server]\nlisten = 7700\n", Path::new("y.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("y.toml"), "{err}");
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::parse("[database]\nurl = \"sqlite://x.db\"\n", Path::new("z")).unwrap();
        assert_eq!(c.database.url, "sqlite://x.db");
        assert_eq!(c.server, ServerConfig::default());
    }
}
