//! The axum router: WebSocket upgrades, the HTTP call and subscribe
//! endpoints of protocol section 5, the operation listing and health.
//!
//! Handlers translate HTTP to and from the hub's types and hold no state of
//! their own; calls go through [`crate::dispatch`] like any other.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::builtins;
use crate::connection::now_ms;
use crate::crypto::Token;
use crate::dispatch::{CallError, CallEvent, CallRequest, Caller, Dispatcher};
use crate::protocol::{ErrorCode, Identity, OperationType, PrincipalKind};
use crate::server::Hub;

/// Builds the router over a hub handle.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/spokes/connect", get(connect_spoke))
        .route("/v1/clients/connect", get(connect_client))
        .route("/v1/operations", get(list_operations))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/operations/{operation_id}/call", post(call))
        .route("/v1/operations/{operation_id}/subscribe", post(subscribe))
        .with_state(hub)
}

/// `GET /healthz`: 200 while the hub serves and the database answers.
///
/// Anyone may ask, so a failure is described in general words: the
/// database's own error (host names, user names, file paths) goes to the
/// log only.
async fn healthz(State(hub): State<Hub>) -> (StatusCode, Json<serde_json::Value>) {
    if hub.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        );
    }
    match hub.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => {
            tracing::error!(error = %e, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "message": "the database does not answer; the hub's log has the reason",
                })),
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

async fn connect_spoke(
    State(hub): State<Hub>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(hub, headers, ws, PrincipalKind::Spoke)
}

async fn connect_client(
    State(hub): State<Hub>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(hub, headers, ws, PrincipalKind::Client)
}

fn upgrade(hub: Hub, headers: HeaderMap, ws: WebSocketUpgrade, kind: PrincipalKind) -> Response {
    if hub.is_shutting_down() {
        return error_response(CallError::new(
            ErrorCode::UnknownError,
            "the hub is shutting down",
        ));
    }
    let limit = hub.config().limits.max_frame_bytes;
    let token = bearer(&headers);
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| crate::session::run(hub, socket, kind, token))
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
    match hub.authenticate_cached(&Token::new(token)).await {
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

async fn list_operations(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match identify(&hub, &headers).await {
        Ok(identity) => Json(builtins::listing(
            hub.dispatcher().catalog(),
            identity.as_ref(),
        ))
        .into_response(),
        Err(e) => error_response(e),
    }
}

/// `GET /v1/plugins`: every plugin with its world, version, status and
/// counters. Needs a valid token.
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

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpCall {
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
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

/// Starts an HTTP call; its events arrive on the returned receiver.
async fn start_http_call(
    hub: &Hub,
    headers: &HeaderMap,
    operation_id: &str,
    body: Body,
) -> Result<
    (
        mpsc::UnboundedReceiver<CallEvent>,
        AbortOnDrop,
        OperationType,
    ),
    CallError,
> {
    if hub.is_shutting_down() {
        return Err(CallError::new(
            ErrorCode::UnknownError,
            "the hub is shutting down",
        ));
    }
    let identity = identify(hub, headers).await?;
    let limit = hub.config().limits.max_frame_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        CallError::new(
            ErrorCode::ProtocolError,
            format!("the request body is larger than limits.max_frame_bytes ({limit} bytes)"),
        )
    })?;
    let request: HttpCall = if body.iter().all(u8::is_ascii_whitespace) {
        HttpCall::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            CallError::new(
                ErrorCode::ProtocolError,
                format!("invalid request body: {e}"),
            )
        })?
    };
    let timeout = request
        .timeout_ms
        .unwrap_or(hub.config().limits.default_http_timeout_ms);
    let (tx, rx) = mpsc::unbounded_channel();
    let dispatcher = hub.dispatcher();
    let id = dispatcher.start(
        Caller::Channel(tx),
        identity.as_ref(),
        CallRequest {
            operation_id,
            input: request.input.as_deref(),
            parent_request_id: None,
            deadline_ms: Some(now_ms() + timeout),
            idle_timeout_ms: None,
            metadata: request.metadata,
        },
    )?;
    let op_type = dispatcher
        .catalog()
        .get(operation_id)
        .map(|e| e.definition.spec.op_type)
        .unwrap_or(OperationType::Query);
    Ok((rx, AbortOnDrop(dispatcher.clone(), id), op_type))
}

/// `POST /v1/operations/{id}/call`: the first result, as JSON.
async fn call(
    State(hub): State<Hub>,
    Path(operation_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (mut events, _guard, _) = match start_http_call(&hub, &headers, &operation_id, body).await {
        Ok(started) => started,
        Err(e) => return error_response(e),
    };
    match events.recv().await {
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
async fn subscribe(
    State(hub): State<Hub>,
    Path(operation_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match start_http_call(&hub, &headers, &operation_id, body).await {
        Ok((events, guard, op_type)) => {
            Sse::new(event_stream(events, guard, op_type)).into_response()
        }
        Err(e) => error_response(e),
    }
}

fn event_stream(
    events: mpsc::UnboundedReceiver<CallEvent>,
    guard: AbortOnDrop,
    op_type: OperationType,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // State: the receiver, the guard (dropped with the stream, aborting the
    // call if it is still open), and what comes next.
    #[derive(Clone, Copy, PartialEq)]
    enum Next {
        Event,
        Completed,
        End,
    }
    futures_util::stream::unfold(
        (events, guard, Next::Event),
        move |(mut events, guard, next)| async move {
            let (event, next) = match next {
                Next::End => return None,
                Next::Completed => (Event::default().event("completed").data("{}"), Next::End),
                Next::Event => match events.recv().await {
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
                        Event::default()
                            .event("error")
                            .data(error_body(&e).to_string()),
                        Next::End,
                    ),
                    None => return None,
                },
            };
            Some((Ok(event), (events, guard, next)))
        },
    )
}
