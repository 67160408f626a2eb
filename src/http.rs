//! The axum router: WebSocket upgrades, the HTTP call and subscribe
//! endpoints of protocol section 5, the operation listing and health.
//!
//! Handlers translate HTTP to and from the hub's types and hold no state of
//! their own; calls go through [`crate::dispatch`] like any other.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Duration;

use crate::builtins;
use crate::connection::{budgeted, now_ms, BudgetedReceiver};
use crate::crypto::Token;
use crate::dispatch::{CallError, CallEvent, CallRequest, Caller, Dispatcher};
use crate::limits::{Permit, Refusal};
use crate::metrics::Metrics;
use crate::protocol::{self, ErrorCode, Identity, OperationType, PrincipalKind};
use crate::server::Hub;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::openapi::{CallError as ErrorBody, Envelope};

/// Builds the router over a hub handle.
pub fn router(hub: Hub) -> Router {
    let mut router = Router::new();
    if hub.config().metrics.enabled {
        router = router.route("/metrics", get(metrics));
    }
    router
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/spokes/connect", get(connect_spoke))
        .route("/v1/clients/connect", get(connect_client))
        .route("/v1/operations", get(list_operations))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/operations/{operation_id}/call", post(call))
        .route("/v1/operations/{operation_id}/subscribe", post(subscribe))
        .with_state(hub)
}

/// `GET /v1/openapi.json`: the OpenAPI document of the routes this hub
/// serves (see [`crate::openapi`]).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "openapi",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1).", body = Object),
    )
)]
async fn openapi_json(State(hub): State<Hub>) -> Response {
    Json(crate::openapi::document(hub.config())).into_response()
}

/// The answer of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Whether the hub serves.
    pub status: HealthStatus,
    /// Why not, in general words (the reason is in the hub's log).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    pub message: Option<&'static str>,
}

/// The `status` of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub enum HealthStatus {
    /// The hub serves and its database answers.
    #[serde(rename = "ok")]
    Ok,
    /// The database does not answer.
    #[serde(rename = "unavailable")]
    Unavailable,
    /// The hub is shutting down.
    #[serde(rename = "shutting down")]
    ShuttingDown,
}

/// `GET /healthz`: 200 while the hub serves and the database answers.
///
/// Anyone may ask, so a failure is described in general words: the
/// database's own error (host names, user names, file paths) goes to the
/// log only.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The hub serves and its database answers.", body = Health,
            example = json!({"status": "ok"})),
        (status = 503, description = "The database does not answer, or the hub is shutting down.",
            body = Health, example = json!({"status": "shutting down"})),
    )
)]
async fn healthz(State(hub): State<Hub>) -> (StatusCode, Json<Health>) {
    let health = |status, message| Json(Health { status, message });
    if hub.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            health(HealthStatus::ShuttingDown, None),
        );
    }
    match hub.store().ping().await {
        Ok(()) => (StatusCode::OK, health(HealthStatus::Ok, None)),
        Err(e) => {
            tracing::error!(error = %e, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                health(
                    HealthStatus::Unavailable,
                    Some("the database does not answer; the hub's log has the reason"),
                ),
            )
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// `GET /v1/spokes/connect`: a spoke's WebSocket (spoke tokens only).
#[utoipa::path(
    get,
    path = "/v1/spokes/connect",
    tag = "connect",
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket of protocol sections 1 \
            and 2. The token goes in `hello` or in this request's `Authorization: Bearer`; a bad \
            one closes the socket with 4401."),
        (status = 400, description = "Not a WebSocket upgrade (the text names the header that is \
            missing or wrong), or `PROTOCOL_ERROR`: a request body past `limits.max_frame_bytes`.",
            content((String = "text/plain"), (ErrorBody = "application/json"))),
        (status = 426, description = "The connection cannot be upgraded.", body = String,
            content_type = "text/plain"),
        (status = 429, description = "`OVERLOADED`: `limits.max_unauthenticated_per_address`.",
            body = ErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the hub is shutting down.", body = ErrorBody),
        (status = 503, description = "`OVERLOADED`: `limits.max_connections` or \
            `limits.max_unauthenticated`.", body = ErrorBody),
    )
)]
async fn connect_spoke(
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(hub, remote, headers, ws, PrincipalKind::Spoke)
}

/// `GET /v1/clients/connect`: a client's WebSocket (client tokens only).
#[utoipa::path(
    get,
    path = "/v1/clients/connect",
    tag = "connect",
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket of protocol sections 1 \
            and 2. The token goes in `hello` or in this request's `Authorization: Bearer`; a bad \
            one closes the socket with 4401."),
        (status = 400, description = "Not a WebSocket upgrade (the text names the header that is \
            missing or wrong), or `PROTOCOL_ERROR`: a request body past `limits.max_frame_bytes`.",
            content((String = "text/plain"), (ErrorBody = "application/json"))),
        (status = 426, description = "The connection cannot be upgraded.", body = String,
            content_type = "text/plain"),
        (status = 429, description = "`OVERLOADED`: `limits.max_unauthenticated_per_address`.",
            body = ErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the hub is shutting down.", body = ErrorBody),
        (status = 503, description = "`OVERLOADED`: `limits.max_connections` or \
            `limits.max_unauthenticated`.", body = ErrorBody),
    )
)]
async fn connect_client(
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(hub, remote, headers, ws, PrincipalKind::Client)
}

/// Bytes the WebSocket library reads from the socket at once. Small, because
/// every connection holds this much even when idle (10,000 idle spokes hold
/// 40 MB); a larger frame gets a buffer of its own size while it is read.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Bytes the WebSocket library gathers before it writes to the socket (the
/// session's writer flushes after each batch of queued frames anyway).
const WS_WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Accepts a WebSocket peer if the connection caps allow: a connection
/// holds a slot of `limits.max_connections` for its whole life and one of
/// the unauthenticated caps until it has authenticated.
fn upgrade(
    hub: Hub,
    remote: SocketAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
    kind: PrincipalKind,
) -> Response {
    if hub.is_shutting_down() {
        return error_response(CallError::new(
            ErrorCode::UnknownError,
            "the hub is shutting down",
        ));
    }
    let limits = &hub.config().limits;
    let quotas = hub.quotas();
    let Ok(connection) = quotas.connections.try_acquire("") else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the hub already holds {} WebSocket connections (limits.max_connections)",
                limits.max_connections
            ),
        );
    };
    let unauthenticated = match quotas.unauthenticated.try_acquire(&remote.ip().to_string()) {
        Ok(permit) => permit,
        Err(Refusal::Total) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} connections are waiting to authenticate (limits.max_unauthenticated)",
                    limits.max_unauthenticated
                ),
            )
        }
        Err(Refusal::PerKey) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} connections from {} are waiting to authenticate (limits.max_unauthenticated_per_address)",
                    limits.max_unauthenticated_per_address,
                    remote.ip()
                ),
            )
        }
    };
    let frame_limit = limits.max_frame_bytes;
    let token = bearer(&headers);
    ws.max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        // Room for one largest frame past the write buffer; the outbound
        // queue in front of it has its own budget.
        .max_write_buffer_size(WS_WRITE_BUFFER_BYTES + frame_limit.max(limits.max_outbound_bytes))
        .on_upgrade(move |socket| async move {
            crate::session::run(hub, socket, kind, token, unauthenticated).await;
            drop(connection);
        })
}

/// An `OVERLOADED` refusal with `status` and a message naming the limit.
fn refuse(status: StatusCode, message: String) -> Response {
    let error = CallError::new(ErrorCode::Overloaded, message);
    (status, Json(error_body(&error))).into_response()
}

/// Reads a request's whole body, at most `limits.max_frame_bytes` and
/// within `limits.http_body_timeout_ms`, before any handler runs: a client
/// that sends its body slowly or endlessly holds no handler, no call slot
/// and no shutdown.
pub async fn bounded_body(State(hub): State<Hub>, request: Request, next: Next) -> Response {
    let limits = &hub.config().limits;
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_frame_bytes);
    let timeout = Duration::from_millis(limits.http_body_timeout_ms);
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return error_response(CallError::new(
                ErrorCode::ProtocolError,
                format!(
                    "the request body is larger than limits.max_frame_bytes ({} bytes)",
                    limits.max_frame_bytes
                ),
            ))
        }
        Err(_) => {
            let error = CallError::new(
                ErrorCode::ProtocolError,
                format!(
                    "the request body did not arrive within limits.http_body_timeout_ms ({} ms)",
                    limits.http_body_timeout_ms
                ),
            );
            return (StatusCode::REQUEST_TIMEOUT, Json(error_body(&error))).into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A JSON error body with the status of protocol section 5.
fn error_response(error: CallError) -> Response {
    let status = error
        .protocol_code()
        .map(ErrorCode::http_status)
        .unwrap_or(502);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, Json(error_body(&error))).into_response()
}

/// `{code, message, details?}`, the error body of protocol section 5.
/// The data of an SSE `error` event: the error body with `details`
/// always present, `null` when there are none (protocol 5.3).
fn sse_error_data(error: &CallError) -> String {
    let mut body = error_body(error);
    if body.get("details").is_none() {
        body["details"] = serde_json::Value::Null;
    }
    body.to_string()
}

fn error_body(error: &CallError) -> serde_json::Value {
    let mut body = json!({"code": error.code, "message": error.message});
    if let Some(details) = &error.details {
        body["details"] = serde_json::from_str(details.get()).unwrap_or_default();
    }
    body
}

/// The caller's identity: `None` without a token, an error for a bad one.
pub(crate) async fn identify(
    hub: &Hub,
    headers: &HeaderMap,
) -> Result<Option<Identity>, CallError> {
    let Some(token) = bearer(headers) else {
        return Ok(None);
    };
    match hub.auth().authenticate_cached(&Token::new(token)).await {
        Some(p) => Ok(Some(Identity {
            kind: p.kind,
            id: p.id,
            scopes: p.scopes,
        })),
        None => Err(CallError::new(
            ErrorCode::Unauthenticated,
            "the bearer token is not valid",
        )),
    }
}

/// `GET /v1/operations`: the definitions the caller may call, a page at a
/// time, each with its active registration count (protocol 5.4).
#[utoipa::path(
    get,
    path = "/v1/operations",
    tag = "operations",
    params(ListQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page, in id order.", body = crate::builtins::OperationPage),
        (status = 400, description = "`VALIDATION_ERROR`: a `limit` out of range or another query \
            parameter; `PROTOCOL_ERROR`: a request body past `limits.max_frame_bytes`.",
            body = ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: a token that is not valid.", body = ErrorBody),
    )
)]
async fn list_operations(
    State(hub): State<Hub>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let identity = match identify(&hub, &headers).await {
        Ok(identity) => identity,
        Err(e) => return error_response(e),
    };
    let Ok(Query(query)) = query else {
        return error_response(CallError::new(
            ErrorCode::ValidationError,
            "the query accepts `limit` (a positive integer), `after` (the `next` of a page) and `namespace`",
        ));
    };
    let page = builtins::PageRequest {
        after: query.after,
        limit: query.limit,
        namespace: query.namespace,
    };
    // At start-up, list once every stored definition is in.
    hub.dispatcher().catalog().wait_loaded().await;
    match builtins::listing(
        hub.dispatcher().catalog(),
        identity.as_ref(),
        &page,
        hub.config().limits.max_list_page,
    ) {
        Ok(listing) => Json(listing).into_response(),
        Err(e) => error_response(e),
    }
}

/// `?limit=&after=&namespace=` of `GET /v1/operations` and
/// `GET /v1/admin/operations`; no other parameter is accepted.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Definitions on the page: 1 to `limits.max_list_page` (1000), which is
    /// also the default.
    #[param(minimum = 1)]
    pub(crate) limit: Option<usize>,
    /// The `next` of the previous page.
    pub(crate) after: Option<String>,
    /// Only this namespace's operations and those of the namespaces below it.
    pub(crate) namespace: Option<String>,
}

/// `GET /v1/plugins`: every plugin with its world, version, status and
/// counters. Needs a valid token.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "plugins",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every plugin, by name, and the host's counters.",
            body = crate::plugins::HostStatus),
        (status = 401, description = "`UNAUTHENTICATED`: no token, or one that is not valid.",
            body = ErrorBody),
    )
)]
async fn list_plugins(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match identify(&hub, &headers).await {
        Ok(Some(_)) => Json(hub.plugins().status()).into_response(),
        Ok(None) => error_response(CallError::new(
            ErrorCode::Unauthenticated,
            "a token is required",
        )),
        Err(e) => error_response(e),
    }
}

/// `GET /metrics`: OpenMetrics text, for any valid token (not routed when
/// `[metrics] enabled = false`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The OpenMetrics text format (`version=1.0.0`), ending in \
            `# EOF` (protocol 5.7).", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "`UNAUTHENTICATED`: no token, or one that is not valid.",
            body = ErrorBody),
    )
)]
async fn metrics(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match identify(&hub, &headers).await {
        Ok(Some(_)) => {
            let text = hub.metrics().render(&hub.metrics_snapshot().await);
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Ok(None) => error_response(CallError::new(
            ErrorCode::Unauthenticated,
            "a token is required",
        )),
        Err(e) => error_response(e),
    }
}

/// The body of `/call` and `/subscribe`; an empty body means `{}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpCall {
    /// The operation's input, checked against its `inputSchema`.
    #[serde(default)]
    #[schema(value_type = Value)]
    input: Option<Box<RawValue>>,
    /// Passed to the provider and the routing policy.
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// Milliseconds the call may take; `limits.default_http_timeout_ms`
    /// (30000) without it.
    #[serde(default)]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    timeout_ms: Option<u64>,
}

/// Reads a request body that must be a JSON object into `T`. serde would
/// also read a struct from a JSON array (its fields in order), which no
/// HTTP body of the hub is.
pub(crate) fn object_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("the body must be a JSON object".to_owned());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Aborts the call when the HTTP request goes away before it ends.
pub(crate) struct AbortOnDrop(pub(crate) Dispatcher, pub(crate) Option<u64>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.1 {
            self.0.abort_by_hub_id(id);
        }
    }
}

/// An HTTP call in progress: its events, the guard that aborts it when the
/// request goes away, and its slot among the open calls or streams.
struct HttpCallStarted {
    events: BudgetedReceiver<CallEvent>,
    _guard: AbortOnDrop,
    op_type: OperationType,
    _permit: Permit,
}

/// Which HTTP cap a request counts against.
#[derive(Clone, Copy)]
enum HttpKind {
    Call,
    Stream,
}

/// A slot among the open HTTP calls or SSE streams of `identity` (anonymous
/// callers count per remote address).
fn http_permit(
    hub: &Hub,
    kind: HttpKind,
    identity: Option<&Identity>,
    remote: SocketAddr,
) -> Result<Permit, CallError> {
    let limits = &hub.config().limits;
    let (quota, total_key, per_key, total, per) = match kind {
        HttpKind::Call => (
            &hub.quotas().http_calls,
            "limits.max_http_calls",
            "limits.max_http_calls_per_principal",
            limits.max_http_calls,
            limits.max_http_calls_per_principal,
        ),
        HttpKind::Stream => (
            &hub.quotas().sse_streams,
            "limits.max_sse_streams",
            "limits.max_sse_streams_per_principal",
            limits.max_sse_streams,
            limits.max_sse_streams_per_principal,
        ),
    };
    let key = match identity {
        Some(who) => format!("{}:{}", who.kind, who.id),
        None => format!("address:{}", remote.ip()),
    };
    quota.try_acquire(&key).map_err(|refusal| {
        let message = match refusal {
            Refusal::Total => format!("the hub already has {total} open ({total_key})"),
            Refusal::PerKey => format!("this caller already has {per} open ({per_key})"),
        };
        CallError::new(ErrorCode::Overloaded, message)
    })
}

/// Starts an HTTP call; its events arrive on the returned receiver.
async fn start_http_call(
    hub: &Hub,
    kind: HttpKind,
    remote: SocketAddr,
    headers: &HeaderMap,
    operation_id: &str,
    body: Bytes,
) -> Result<HttpCallStarted, CallError> {
    if hub.is_shutting_down() {
        return Err(CallError::new(
            ErrorCode::UnknownError,
            "the hub is shutting down",
        ));
    }
    let identity = identify(hub, headers).await?;
    let permit = http_permit(hub, kind, identity.as_ref(), remote)?;
    let request: HttpCall = if body.iter().all(u8::is_ascii_whitespace) {
        HttpCall::default()
    } else {
        object_body(&body).map_err(|e| {
            CallError::new(
                ErrorCode::ProtocolError,
                protocol::clip_message(&format!("invalid request body: {e}")).into_owned(),
            )
        })?
    };
    let timeout = request
        .timeout_ms
        .unwrap_or(hub.config().limits.default_http_timeout_ms);
    // A timeout past the end of time is a deadline at the end of time.
    let deadline_ms = now_ms().saturating_add(timeout);
    let (tx, events) = budgeted(hub.config().limits.max_outbound_bytes);
    let dispatcher = hub.dispatcher();
    let id = dispatcher.start(
        Caller::Channel(tx),
        identity.as_ref(),
        CallRequest {
            operation_id,
            input: request.input.as_deref(),
            parent_request_id: None,
            deadline_ms: Some(deadline_ms),
            idle_timeout_ms: None,
            metadata: request.metadata,
        },
    )?;
    let op_type = dispatcher
        .catalog()
        .get(operation_id)
        .map(|e| e.definition.spec.op_type)
        .unwrap_or(OperationType::Query);
    Ok(HttpCallStarted {
        events,
        _guard: AbortOnDrop(dispatcher.clone(), id),
        op_type,
        _permit: permit,
    })
}

/// `POST /v1/operations/{id}/call`: the first result, as JSON.
#[utoipa::path(
    post,
    path = "/v1/operations/{operation_id}/call",
    tag = "operations",
    params(("operation_id" = String, Path, description = "The operation's id.",
        example = "hub.operations.list")),
    request_body(content = HttpCall, description = "Optional: an empty body means `{}`."),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The response envelope, as a WebSocket caller receives it \
            in `output`; on a subscription its first result.", body = Envelope),
        (status = 400, description = "`VALIDATION_ERROR` (the input), `PROTOCOL_ERROR` (the body).",
            body = ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`.", body = ErrorBody),
        (status = 403, description = "`ACCESS_DENIED`.", body = ErrorBody),
        (status = 404, description = "`OPERATION_NOT_FOUND`.", body = ErrorBody),
        (status = 429, description = "`OVERLOADED`: `limits.max_http_calls`, \
            `limits.max_http_calls_per_principal` or the principal's call rate.", body = ErrorBody),
        (status = 500, description = "`ABORTED`, `ROUTING_ERROR`, `UNKNOWN_ERROR` (also: the hub \
            is shutting down), `ALREADY_REGISTERED`.", body = ErrorBody),
        (status = 502, description = "`PROVIDER_GONE`, `EXECUTION_ERROR`, or a provider's own code.",
            body = ErrorBody),
        (status = 503, description = "`NO_PROVIDER`.", body = ErrorBody),
        (status = 504, description = "`TIMEOUT`.", body = ErrorBody),
    )
)]
async fn call(
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(operation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started =
        start_http_call(&hub, HttpKind::Call, remote, &headers, &operation_id, body).await;
    let mut started = match started {
        Ok(started) => started,
        Err(e) => return error_response(e),
    };
    match started.events.recv().await {
        Some(CallEvent::Responded(output)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            output.get().to_owned(),
        )
            .into_response(),
        Some(CallEvent::Error(e)) => error_response(e),
        Some(CallEvent::Completed) => error_response(CallError::new(
            ErrorCode::ExecutionError,
            format!("operation {operation_id} completed without a result"),
        )),
        None => error_response(CallError::new(
            ErrorCode::UnknownError,
            "the call ended without an answer",
        )),
    }
}

/// `POST /v1/operations/{id}/subscribe`: results as server-sent events.
#[utoipa::path(
    post,
    path = "/v1/operations/{operation_id}/subscribe",
    tag = "operations",
    params(("operation_id" = String, Path, description = "The operation's id.",
        example = "hub.operations.list")),
    request_body(content = HttpCall, description = "Optional: an empty body means `{}`."),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Server-sent events, each described by the schema: \
            `responded` (data: an envelope) for each result, then `completed` (data: `{}`) or \
            `error` (data: `{code, message, details?}`). Failures after the call was forwarded, \
            `TIMEOUT` included, arrive as `error`.",
            body = crate::openapi::CallEvent, content_type = "text/event-stream"),
        (status = 400, description = "`VALIDATION_ERROR` (the input), `PROTOCOL_ERROR` (the body).",
            body = ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`.", body = ErrorBody),
        (status = 403, description = "`ACCESS_DENIED`.", body = ErrorBody),
        (status = 404, description = "`OPERATION_NOT_FOUND`.", body = ErrorBody),
        (status = 429, description = "`OVERLOADED`: `limits.max_sse_streams`, \
            `limits.max_sse_streams_per_principal` or the principal's call rate.", body = ErrorBody),
        (status = 500, description = "`ROUTING_ERROR`, `UNKNOWN_ERROR` (also: the hub is shutting \
            down).", body = ErrorBody),
        (status = 502, description = "`PROVIDER_GONE`: the provider left as the call was forwarded.",
            body = ErrorBody),
        (status = 503, description = "`NO_PROVIDER`.", body = ErrorBody),
        (status = 504, description = "`TIMEOUT`: the deadline passed before the call was forwarded.",
            body = ErrorBody),
    )
)]
async fn subscribe(
    State(hub): State<Hub>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(operation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match start_http_call(
        &hub,
        HttpKind::Stream,
        remote,
        &headers,
        &operation_id,
        body,
    )
    .await
    {
        Ok(started) => Sse::new(event_stream(started, hub.metrics().clone())).into_response(),
        Err(e) => error_response(e),
    }
}

fn event_stream(
    started: HttpCallStarted,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let op_type = started.op_type;
    // State: the receiver, the guard (dropped with the stream, aborting the
    // call if it is still open), and what comes next.
    #[derive(Clone, Copy, PartialEq)]
    enum Next {
        Event,
        Completed,
        End,
    }
    futures_util::stream::unfold((started, Next::Event), move |(mut started, next)| {
        let metrics = metrics.clone();
        async move {
            let (event, next) = match next {
                Next::End => return None,
                Next::Completed => (Event::default().event("completed").data("{}"), Next::End),
                Next::Event => match started.events.recv().await {
                    Some(CallEvent::Responded(output)) => {
                        // A query or mutation has one result; completed follows it.
                        let after = if op_type == OperationType::Subscription {
                            Next::Event
                        } else {
                            Next::Completed
                        };
                        (
                            Event::default().event("responded").data(output.get()),
                            after,
                        )
                    }
                    Some(CallEvent::Completed) => {
                        (Event::default().event("completed").data("{}"), Next::End)
                    }
                    Some(CallEvent::Error(e)) => (
                        Event::default().event("error").data(sse_error_data(&e)),
                        Next::End,
                    ),
                    // The reader fell more than limits.max_outbound_bytes
                    // behind: say so and end the stream (dropping the
                    // guard aborts the call at its provider).
                    None if started.events.overflowed() => {
                        metrics.slow_consumer("stream");
                        let error = CallError::new(
                            ErrorCode::Overloaded,
                            "slow consumer: the stream fell more than limits.max_outbound_bytes behind",
                        );
                        (
                            Event::default().event("error").data(sse_error_data(&error)),
                            Next::End,
                        )
                    }
                    None => return None,
                },
            };
            Some((Ok(event), (started, next)))
        }
    })
}
