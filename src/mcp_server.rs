//! The hub as an MCP server: `/mcp` (streamable HTTP, `rmcp`) lists every
//! operation the caller may call as an MCP tool and runs `tools/call`
//! through the normal call path (access, validation, routing plugin).
//!
//! Every request needs a bearer token; the caller's identity rides in the
//! request's extensions to the handler. A client learns that its tools
//! changed through `notifications/tools/list_changed`: on its session's
//! standalone stream (protocol revisions up to 2025-11-25) or on a
//! `subscriptions/listen` stream (2026-07-28). The mapping is in
//! `docs/imports.md`.
//!
//! Sessions (revisions up to 2025-11-25) are counted by [`Sessions`]: at
//! most `[mcp] max_sessions` at once, and `max_sessions_per_principal` for
//! one principal; an `initialize` past either is refused with a JSON body
//! naming the key.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Extensions,
    Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use rmcp::transport::streamable_http_server::{
    RestoreOutcome, SessionId, SessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, Entry};
use crate::connection::{budgeted, now_ms};
use crate::dispatch::{check_access, Access, CallError, CallEvent, CallRequest, Caller};
use crate::http::{identify, AbortOnDrop};
use crate::limits::{self, Permit, Quota};
use crate::protocol::{ErrorCode, Identity, OperationType, PrincipalKind};
use crate::server::Hub;
use crate::store::Source;

mod oauth;

/// The longest tool name MCP allows.
const MAX_TOOL_NAME: usize = 128;

/// What separates the kept start of a long operation id from its hash in
/// a tool name. No operation id contains it (every segment of an id starts
/// with a letter), so no operation is ever named like a hashed tool name.
const HASH_MARK: &str = "._";

/// Hex digits of the id's SHA-256 in a hashed tool name (128 bits).
const HASH_DIGITS: usize = 32;

/// How long a burst of catalog changes (a spoke registering fifty
/// operations) may take to settle into one notification.
const SETTLE: Duration = Duration::from_millis(50);

/// The `/mcp` route. `stop` ends every MCP session when the hub shuts down.
pub fn router(hub: Hub, stop: CancellationToken) -> Router {
    let settings = &hub.config().mcp;
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop)
        .with_max_request_body_bytes(hub.config().limits.max_frame_bytes);
    config = if settings.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(settings.allowed_hosts.clone())
    };
    let for_sessions = hub.clone();
    let sessions = Arc::new(Sessions::new(
        settings.max_sessions,
        settings.max_sessions_per_principal,
    ));
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(for_sessions.clone())),
        sessions.clone(),
        config,
    );
    let guard = Guard { hub, sessions };
    Router::new()
        .route_service("/mcp", service)
        // route_layer: the bearer check guards `/mcp` only, not the merged
        // router's fallback (an unknown path is a 404, not a 401).
        .route_layer(middleware::from_fn_with_state(guard, authenticate))
        .merge(oauth::router())
}

/// What [`authenticate`] checks requests against.
#[derive(Clone)]
struct Guard {
    hub: Hub,
    sessions: Arc<Sessions>,
}

/// Lets through requests with a valid bearer token, their identity attached,
/// that name no session or one of their own principal's; answers an
/// `initialize` that [`Sessions`] refused.
async fn authenticate(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let hub = &guard.hub;
    if hub.is_shutting_down() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the hub is shutting down");
    }
    let identity = match identify(hub, request.headers()).await {
        Ok(Some(identity)) => identity,
        Ok(None) => return oauth::unauthenticated(None),
        Err(e) => return oauth::unauthenticated(Some(&e.message)),
    };
    let principal = principal_key(&identity);
    // A session is its opener's: another principal naming it is told it
    // does not exist, as for an id never issued (the MCP spec's 404).
    let session = request.headers().get(SESSION_HEADER);
    if let Some(id) = session.and_then(|v| v.to_str().ok()) {
        let owner = guard.sessions.owner(id);
        // rmcp would accept a DELETE of a session it does not have.
        let unknown = owner.is_none() && request.method() == axum::http::Method::DELETE;
        if unknown || owner.is_some_and(|owner| owner != principal) {
            return oauth::json_error(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownError,
                "no MCP session with that Mcp-Session-Id: it ended, or it was never opened \
                 with this token; initialize a new one",
            );
        }
    }
    let opener = Opener {
        principal,
        refused: Arc::default(),
    };
    let refused = opener.refused.clone();
    request.extensions_mut().insert(identity);
    let response = OPENER.scope(opener, next.run(request)).await;
    // rmcp answers a session manager's error with a 500 of its own; a
    // refusal gets the status and body that say which limit it was.
    let refusal = refused.lock().unwrap().take();
    match refusal {
        Some(refusal) => refusal.response(),
        None => response,
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    oauth::json_error(status, ErrorCode::UnknownError, message)
}

/// The header naming a streamable HTTP session.
const SESSION_HEADER: &str = "mcp-session-id";

/// `spoke:ID` or `client:ID`: whose sessions are counted together.
fn principal_key(identity: &Identity) -> String {
    let kind = match identity.kind {
        PrincipalKind::Spoke => "spoke",
        PrincipalKind::Client => "client",
    };
    format!("{kind}:{}", identity.id)
}

tokio::task_local! {
    /// Who sent the HTTP request being served, for [`Sessions`] to count
    /// the session it may open: rmcp creates the session while it serves
    /// the request, in the request's task, and passes nothing else along.
    static OPENER: Opener;
}

#[derive(Clone)]
struct Opener {
    principal: String,
    /// Set by [`Sessions`] when it refuses to open a session.
    refused: Arc<Mutex<Option<Refusal>>>,
}

/// A session [`Sessions`] would not open, and the limit it would have passed.
#[derive(Debug, Clone, thiserror::Error)]
enum Refusal {
    #[error(
        "the hub has {0} MCP sessions open, its limit ([mcp] max_sessions = {0}); \
         close one (DELETE /mcp) or retry later"
    )]
    Total(usize),
    #[error(
        "{principal} has {limit} MCP sessions open, its limit \
         ([mcp] max_sessions_per_principal = {limit}); close one (DELETE /mcp) first"
    )]
    PerPrincipal { principal: String, limit: usize },
}

impl Refusal {
    /// 503 when the hub is full, 429 when the principal is.
    fn response(&self) -> Response {
        let status = match self {
            Refusal::Total(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::PerPrincipal { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        (
            status,
            Json(json!({"code": ErrorCode::Overloaded, "message": self.to_string()})),
        )
            .into_response()
    }
}

/// Why [`Sessions`] did not do what rmcp asked.
#[derive(Debug, thiserror::Error)]
enum SessionsError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// rmcp's in-memory sessions, counted in total and per principal. A session
/// is counted from its creation until rmcp closes it: on `DELETE`, when
/// its handler ends, or after five minutes without a request (rmcp's
/// keep-alive), which is what keeps an abandoned session from holding its
/// place for ever.
struct Sessions {
    inner: LocalSessionManager,
    quota: Quota,
    // Each open session's principal and the slot it holds (dropping the
    // permit gives the slot back). A std lock: held for one map operation,
    // never across an await.
    open: Mutex<HashMap<SessionId, (String, Permit)>>,
}

impl Sessions {
    fn new(max_total: usize, max_per_principal: usize) -> Self {
        Sessions {
            inner: LocalSessionManager::default(),
            quota: Quota::new(max_total, max_per_principal),
            open: Mutex::default(),
        }
    }

    /// Whose the open session `id` is (`spoke:ID` or `client:ID`).
    fn owner(&self, id: &str) -> Option<String> {
        let open = self.open.lock().unwrap();
        open.get(id).map(|(principal, _)| principal.clone())
    }

    /// A slot for a session about to open for `principal`, or which limit
    /// it would pass.
    fn reserve(&self, principal: &str) -> Result<Permit, Refusal> {
        self.quota
            .try_acquire(principal)
            .map_err(|refusal| match refusal {
                limits::Refusal::Total => Refusal::Total(self.quota.total_limit()),
                limits::Refusal::PerKey => Refusal::PerPrincipal {
                    principal: principal.to_owned(),
                    limit: self.quota.per_key_limit(),
                },
            })
    }
}

impl SessionManager for Sessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let opener = OPENER.try_with(Opener::clone).ok();
        let principal = opener
            .as_ref()
            .map(|o| o.principal.clone())
            .unwrap_or_default();
        let permit = match self.reserve(&principal) {
            Ok(permit) => permit,
            Err(refusal) => {
                tracing::warn!(%principal, reason = %refusal, "MCP session refused");
                if let Some(opener) = opener {
                    *opener.refused.lock().unwrap() = Some(refusal.clone());
                }
                return Err(refusal.into());
            }
        };
        let (id, transport) = self.inner.create_session().await?;
        self.open
            .lock()
            .unwrap()
            .insert(id.clone(), (principal, permit));
        Ok((id, transport))
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.inner.close_session(id).await;
        // rmcp may close a session twice (DELETE, then its worker ending);
        // the second finds no slot to give back.
        self.open.lock().unwrap().remove(id);
        Ok(closed?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    // No session store is configured, so rmcp never restores a session
    // (which would bypass the count): the default answers NotSupported.
    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(RestoreOutcome::NotSupported)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

/// One MCP session's handler (one request's, for sessionless clients).
struct Tools {
    hub: Hub,
    // Dropped with the handler: the session's change follower stops.
    alive: watch::Sender<()>,
}

impl Tools {
    fn new(hub: Hub) -> Self {
        Tools {
            hub,
            alive: watch::Sender::new(()),
        }
    }

    fn catalog(&self) -> &Catalog {
        self.hub.dispatcher().catalog()
    }
}

/// The caller, as [`authenticate`] attached it to the HTTP request.
fn identity(extensions: &Extensions) -> Result<Identity, McpError> {
    extensions
        .get::<Parts>()
        .and_then(|parts| parts.extensions.get::<Identity>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the request carries no identity", None))
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("alkhub", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each tool is an operation of the hub, served by whichever provider its routing \
             policy picks. Tool names are operation ids.",
        )
    }

    /// The tools in name order, `limits.max_list_page` a page; the cursor
    /// is the last name of the previous page.
    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let identity = identity(&cx.extensions)?;
        let entries = callable(self.catalog(), &identity);
        let mut named = unambiguous(&entries);
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let after = request.and_then(|r| r.cursor);
        let page = self.hub.config().limits.max_list_page.max(1);
        let mut rest = named
            .into_iter()
            .filter(|(name, _)| after.as_deref().is_none_or(|a| name.as_ref() > a));
        let tools: Vec<Tool> = rest
            .by_ref()
            .take(page)
            .map(|(name, e)| tool(e, name))
            .collect();
        let mut result = ListToolsResult::with_all_items(Vec::new());
        if rest.next().is_some() {
            result.next_cursor = tools.last().map(|t| t.name.to_string());
        }
        result.tools = tools;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let identity = identity(&cx.extensions)?;
        let Some(entry) = find(self.catalog(), &request.name, &identity) else {
            return Err(McpError::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        };
        let id = entry.definition.id.as_str();
        if entry.definition.spec.op_type == OperationType::Subscription {
            return Err(McpError::invalid_params(
                format!(
                    "{id} is a subscription, which an MCP tool cannot stream; \
                     use POST /v1/operations/{id}/subscribe"
                ),
                None,
            ));
        }
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let input = match input_schema(entry.definition.spec.input_schema.as_ref()) {
            (_, Shape::Arguments) => arguments,
            (_, Shape::Wrapped) => arguments.get("input").cloned().unwrap_or(Value::Null),
        };
        let input = serde_json::value::to_raw_value(&input)
            .map_err(|e| McpError::invalid_params(format!("unusable arguments: {e}"), None))?;
        let (tx, mut events) = budgeted(self.hub.config().limits.max_outbound_bytes);
        let dispatcher = self.hub.dispatcher();
        let started = dispatcher.start(
            Caller::Channel(tx),
            Some(&identity),
            CallRequest {
                operation_id: id,
                input: Some(&input),
                parent_request_id: None,
                deadline_ms: Some(now_ms() + self.hub.config().mcp.call_timeout_ms),
                idle_timeout_ms: None,
                metadata: None,
            },
        );
        let _abort_if_dropped = match started {
            Ok(hub_id) => AbortOnDrop(dispatcher.clone(), hub_id),
            Err(e) => return Ok(failure(&e).into()),
        };
        let event = tokio::select! {
            event = events.recv() => event,
            _ = cx.ct.cancelled() => {
                return Err(McpError::internal_error("the call was cancelled", None));
            }
        };
        let result = match event {
            Some(CallEvent::Responded(output)) => success(output.get()),
            Some(CallEvent::Error(e)) => failure(&e),
            Some(CallEvent::Completed) => failure(&CallError::new(
                ErrorCode::ExecutionError,
                format!("operation {id} completed without a result"),
            )),
            None => failure(&CallError::new(
                ErrorCode::UnknownError,
                "the call ended without an answer",
            )),
        };
        Ok(result.into())
    }

    async fn on_initialized(&self, cx: NotificationContext<RoleServer>) {
        let Ok(identity) = identity(&cx.extensions) else {
            return;
        };
        let peer = cx.peer;
        let mut alive = self.alive.subscribe();
        let session_over = async move {
            // Err once the handler, and with it the session, is gone.
            let _ = alive.changed().await;
        };
        tokio::spawn(follow(
            self.catalog().clone(),
            identity,
            session_over,
            move || {
                let peer = peer.clone();
                async move { peer.notify_tool_list_changed().await.is_ok() }
            },
        ));
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), McpError> {
        if subscription.accepted().tools_list_changed != Some(true) {
            subscription.cancelled().await;
            return Ok(());
        }
        let identity = identity(&subscription.request_context().extensions)?;
        let sink = subscription.sink().clone();
        follow(
            self.catalog().clone(),
            identity,
            subscription.cancelled(),
            move || {
                let sink = sink.clone();
                async move { sink.notify_tool_list_changed().await.is_ok() }
            },
        )
        .await;
        Ok(())
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [rmcp::model::ProtocolVersion]> {
        Cow::Borrowed(rmcp::model::ProtocolVersion::KNOWN_VERSIONS)
    }
}

/// Calls `notify` each time the tools `identity` may call change, until
/// `until` resolves or `notify` reports the client gone.
async fn follow<F, Fut>(
    catalog: Catalog,
    identity: Identity,
    until: impl Future<Output = ()>,
    mut notify: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut changes = catalog.changes();
    let mut seen = callable(&catalog, &identity);
    let watching = async move {
        while changes.changed().await.is_ok() {
            tokio::time::sleep(SETTLE).await;
            changes.borrow_and_update();
            let now = callable(&catalog, &identity);
            if !same_tools(&now, &seen) {
                seen = now;
                if !notify().await {
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = until => {}
        _ = watching => {}
    }
}

/// The operations `identity` may call right now, as tools, ordered by id:
/// visible to it, not subscriptions, and served (a built-in, or an active
/// registration).
fn callable(catalog: &Catalog, identity: &Identity) -> Vec<Arc<Entry>> {
    catalog
        .page(None, usize::MAX, |e| {
            let spec = &e.definition.spec;
            spec.op_type != OperationType::Subscription
                && (spec.source == Source::Builtin || !e.providers.is_empty())
                && matches!(check_access(e, Some(identity)), Access::Allowed)
        })
        .entries
}

/// The same definitions, in the same versions.
fn same_tools(a: &[Arc<Entry>], b: &[Arc<Entry>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(&x.definition, &y.definition))
}

/// The tool name of an operation: its id when MCP allows it as a name (up
/// to 128 of `A-Z a-z 0-9 _ - .`), and otherwise the id's first 94
/// characters, [`HASH_MARK`] and 128 bits of the id's SHA-256.
///
/// No two operations share a name: an id that is its own name contains no
/// `._` (every segment of an id starts with a letter) and a hashed name
/// always does, so an operation can never be named like another's hashed
/// name; two hashed names differ unless SHA-256 collides, and
/// [`unambiguous`] drops such a pair anyway.
pub fn tool_name(operation_id: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if operation_id.len() <= MAX_TOOL_NAME
        && !operation_id.is_empty()
        && !operation_id.contains(HASH_MARK)
        && operation_id.chars().all(allowed)
    {
        return Cow::Borrowed(operation_id);
    }
    let keep = MAX_TOOL_NAME - HASH_MARK.len() - HASH_DIGITS;
    let start: String = operation_id
        .chars()
        .take(keep)
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    let hash = crate::crypto::sha256_hex(operation_id.as_bytes());
    Cow::Owned(format!("{start}{HASH_MARK}{}", &hash[..HASH_DIGITS]))
}

/// Each entry with its tool name, leaving out any name two entries share
/// (which takes a SHA-256 collision): a name stands for one operation or
/// for none.
fn unambiguous(entries: &[Arc<Entry>]) -> Vec<(Cow<'_, str>, &Arc<Entry>)> {
    let named: Vec<_> = entries
        .iter()
        .map(|e| (tool_name(&e.definition.id), e))
        .collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (name, _) in &named {
        *uses.entry(name.as_ref()).or_default() += 1;
    }
    let shared: Vec<String> = uses
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_owned())
        .collect();
    if shared.is_empty() {
        return named;
    }
    tracing::error!(
        ?shared,
        "MCP tool names shared by several operations are left out"
    );
    named
        .into_iter()
        .filter(|(name, _)| !shared.iter().any(|s| s == name))
        .collect()
}

/// The operation behind a tool name, when `identity` may see it: the one
/// operation [`tool_name`] gives that name, the mapping the listing used.
fn find(catalog: &Catalog, name: &str, identity: &Identity) -> Option<Arc<Entry>> {
    let visible = |e: &Arc<Entry>| matches!(check_access(e, Some(identity)), Access::Allowed);
    if !name.contains(HASH_MARK) {
        // A name without the mark is an operation id, looked up directly.
        return catalog
            .get(name)
            .filter(|e| visible(e) && tool_name(&e.definition.id) == name);
    }
    let mut named = catalog
        .list()
        .into_iter()
        .filter(|e| visible(e) && tool_name(&e.definition.id) == name);
    match (named.next(), named.next()) {
        (Some(entry), None) => Some(entry),
        _ => None,
    }
}

/// How a tool's arguments become the operation's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The arguments object is the input.
    Arguments,
    /// The input is the `input` argument (its schema is not an object's).
    Wrapped,
}

/// The tool's input schema (MCP wants an object's) and how to read it.
fn input_schema(schema: Option<&Value>) -> (JsonObject, Shape) {
    match schema {
        None => (object(json!({"type": "object"})), Shape::Arguments),
        Some(Value::Object(s)) if s.get("type").is_none_or(|t| t == "object") => {
            let mut s = s.clone();
            s.entry("type").or_insert_with(|| json!("object"));
            (s, Shape::Arguments)
        }
        Some(other) => (
            object(json!({
                "type": "object",
                "properties": {"input": other},
                "required": ["input"],
                "additionalProperties": false,
            })),
            Shape::Wrapped,
        ),
    }
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// An operation as an MCP tool named `name`.
fn tool(entry: &Entry, name: Cow<'_, str>) -> Tool {
    let definition = &entry.definition;
    let spec = &definition.spec;
    let description = spec
        .description
        .clone()
        .unwrap_or_else(|| format!("Operation {} ({}).", definition.id, spec.op_type.as_str()));
    let (schema, _) = input_schema(spec.input_schema.as_ref());
    let mut tool = Tool::new(name.into_owned(), description, Arc::new(schema))
        .with_annotations(ToolAnnotations::new().read_only(spec.op_type == OperationType::Query));
    // Structured results are objects; other output schemas stay unsaid.
    if let Some(Value::Object(out)) = &spec.output_schema {
        if out.get("type").is_some_and(|t| t == "object") {
            tool = tool.with_raw_output_schema(Arc::new(out.clone()));
        }
    }
    tool
}

/// A result envelope as a tool result. The envelope of an MCP import keeps
/// the tool's own content, which goes back as it came.
fn success(output: &str) -> CallToolResult {
    let output: Value = serde_json::from_str(output).unwrap_or(Value::Null);
    let data = output.get("data").cloned().unwrap_or(Value::Null);
    if output["meta"]["source"] == "mcp" {
        if let Some(content) = blocks(&output["meta"]["content"]) {
            let mut result = CallToolResult::success(content);
            let only_content = data.as_object().is_some_and(|d| {
                d.len() == 1 && d.get("content") == Some(&output["meta"]["content"])
            });
            if !only_content {
                result.structured_content = Some(data);
            }
            return result;
        }
    }
    let text = match &data {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if data.is_object() {
        result.structured_content = Some(data);
    }
    result
}

/// A call error as a tool result with `isError`, so the model reads it.
fn failure(error: &CallError) -> CallToolResult {
    let mut content = vec![ContentBlock::text(format!(
        "{}: {}",
        error.code, error.message
    ))];
    if let Some(details) = &error.details {
        let details: Value = serde_json::from_str(details.get()).unwrap_or(Value::Null);
        match blocks(&details["content"]) {
            Some(tool_content) => content.extend(tool_content),
            None => content.push(ContentBlock::text(details.to_string())),
        }
    }
    CallToolResult::error(content)
}

/// MCP content blocks, when `value` is a list of them.
fn blocks(value: &Value) -> Option<Vec<ContentBlock>> {
    value
        .is_array()
        .then(|| serde_json::from_value(value.clone()).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_operation_ids_up_to_128_characters() {
        assert_eq!(tool_name("files.read"), "files.read");
        let longest = format!("ns.{}", "a".repeat(125));
        assert_eq!(tool_name(&longest), longest.as_str());
        let long = format!("ns.{}", "a".repeat(200));
        let name = tool_name(&long);
        assert_eq!(name.len(), MAX_TOOL_NAME);
        assert!(name.starts_with("ns.aaa"));
        let other = format!("ns.{}b", "a".repeat(199));
        assert_ne!(tool_name(&other), name, "a hash tells long ids apart");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
    }

    #[test]
    fn no_operation_id_is_named_like_a_hashed_tool_name() {
        let long = format!("ns.{}.op", "a".repeat(200));
        let hashed = tool_name(&long).into_owned();
        // The hashed name is not a valid operation id, so no operation can
        // take it; and the name the hub used to give (a dash and 8 hex
        // digits) is an ordinary id now, distinct from the hashed name.
        assert!(
            crate::names::split_operation_id(&hashed).is_none(),
            "{hashed}"
        );
        let old_style = format!("{}-{}", &long[..119], "0123abcd");
        assert!(crate::names::split_operation_id(&old_style).is_some());
        assert_eq!(tool_name(&old_style), old_style.as_str());
        assert_ne!(tool_name(&old_style), hashed);
        // An id that is not valid (as one could only be by mistake) is
        // hashed rather than taken as its own name.
        assert_ne!(tool_name(&hashed), hashed.as_str());
        assert!(tool_name("bad id").contains(HASH_MARK));
        assert_eq!(tool_name(&"é".repeat(100)).len(), MAX_TOOL_NAME);
    }

    #[test]
    fn non_object_inputs_become_the_input_argument() {
        let (schema, shape) = input_schema(Some(&json!({"type": "string"})));
        assert_eq!(shape, Shape::Wrapped);
        assert_eq!(schema["properties"]["input"], json!({"type": "string"}));
        assert_eq!(schema["required"], json!(["input"]));

        let (schema, shape) = input_schema(Some(&json!({"properties": {"a": {}}})));
        assert_eq!(shape, Shape::Arguments);
        assert_eq!(schema["type"], "object");

        let (schema, shape) = input_schema(None);
        assert_eq!(
            (schema["type"].clone(), shape),
            (json!("object"), Shape::Arguments)
        );
    }

    #[test]
    fn results_keep_structure_and_an_mcp_tool_keeps_its_content() {
        let plain = success(r#"{"data":{"sum":3},"meta":{"source":"local"}}"#);
        assert_eq!(plain.structured_content, Some(json!({"sum": 3})));
        assert_eq!(plain.is_error, Some(false));

        let text = success(r#"{"data":"hello","meta":{}}"#);
        assert_eq!(text.structured_content, None);
        assert_eq!(
            serde_json::to_value(&text.content).unwrap()[0]["text"],
            "hello"
        );

        let content = json!([{"type": "text", "text": "from the tool"}]);
        let mcp = success(
            &json!({"data": {"content": content}, "meta": {"source": "mcp", "content": content}})
                .to_string(),
        );
        assert_eq!(serde_json::to_value(&mcp.content).unwrap(), content);
        assert_eq!(mcp.structured_content, None);
    }

    #[test]
    fn errors_name_their_code_and_carry_details() {
        let mut error = CallError::new(ErrorCode::ValidationError, "input is invalid");
        error.details = serde_json::value::to_raw_value(&json!([{"path": "/a"}])).ok();
        let result = failure(&error);
        assert_eq!(result.is_error, Some(true));
        let content = serde_json::to_value(&result.content).unwrap();
        assert_eq!(content[0]["text"], "VALIDATION_ERROR: input is invalid");
        assert!(content[1]["text"].as_str().unwrap().contains("/a"));
    }
}
