//! One WebSocket peer, from upgrade to close: the `hello` deadline,
//! authentication, `welcome`, the frame loop, heartbeats, and the teardown
//! that leaves nothing behind.
//!
//! This module owns the socket and the parsing of each frame's envelope; what
//! a frame means for calls is [`crate::dispatch`]'s business, and what it
//! means for registrations is [`crate::registration`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::connection::{Connection, Outbound};
use crate::crypto::Token;
use crate::dispatch::{event_frame, CallError, CallEvent, CallRequest, Caller};
use crate::protocol::{
    self, close, CallEventIn, CallRequested, Envelope, ErrorCode, Hello, Identity, PrincipalKind,
    Register, RegisterResult, Rejected, Unregister, Welcome,
};
use crate::registration::SessionRegistrations;
use crate::server::Hub;

type Sink = SplitSink<WebSocket, Message>;

/// Runs a session to its end.
pub async fn run(hub: Hub, socket: WebSocket, kind: PrincipalKind, header_token: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let limits = &hub.config().limits;

    let Some(hello) = await_hello(
        &mut sink,
        &mut stream,
        Duration::from_millis(limits.hello_timeout_ms),
    )
    .await
    else {
        return;
    };
    let token = hello.token.clone().or(header_token).map(Token::new);
    let principal = match token {
        Some(token) => hub.authenticate(kind, &token).await,
        None => None,
    };
    let Some(principal) = principal else {
        let _ = sink
            .send(text(protocol::error_frame(
                ErrorCode::Unauthenticated,
                &format!("a valid {kind} token is required on this endpoint"),
            )))
            .await;
        let _ = sink
            .send(close_frame(close::UNAUTHENTICATED, "unauthenticated"))
            .await;
        return;
    };

    let mut labels = principal.labels.clone();
    labels.extend(hello.labels.clone());
    let identity = Identity {
        kind,
        id: principal.id.clone(),
        scopes: principal.scopes.clone(),
    };
    let (connection, outbound) = Connection::new(
        hub.next_session_id(),
        identity,
        labels,
        principal.provides.clone(),
    );
    hub.attach(&connection).await;
    let heartbeat = Duration::from_millis(limits.heartbeat_ms.max(10));
    let writer = tokio::spawn(write_frames(sink, outbound, heartbeat));

    let mut mine = SessionRegistrations::new();
    let name = hello.name.clone().or(principal.name.clone());
    let result = register_limited(
        &hub,
        &connection,
        name.as_deref(),
        hello.operations,
        &mut mine,
    )
    .await;
    connection.send(protocol::frame(
        "welcome",
        &Welcome {
            session_id: connection.session_id.to_string(),
            principal: connection.identity.clone(),
            heartbeat_ms: heartbeat.as_millis() as u64,
            registrations: result.registrations,
            rejected: result.rejected,
        },
    ));
    tracing::info!(session = connection.session_id, %kind, id = %connection.identity.id, "session started");
    let _ = hub
        .store()
        .touch_principal(kind, &connection.identity.id, true)
        .await;

    let mut session = Session {
        hub: hub.clone(),
        connection: connection.clone(),
        mine,
        name,
    };
    let mut closing = connection.closing();
    let mut ticker = tokio::time::interval(heartbeat);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            message = stream.next() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(frame))) => session.on_text(frame.as_str()).await,
                    Some(Ok(Message::Binary(_))) => session.protocol_error("binary frames are not part of the protocol; send JSON text frames"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            connection.close(close::TOO_BIG, "frame larger than limits.max_frame_bytes");
                        }
                        break;
                    }
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * 2 {
                    tracing::info!(session = connection.session_id, "peer missed two heartbeats; dropping it");
                    connection.close(1011, "heartbeat timeout");
                    break;
                }
            }
            _ = closing.changed() => break,
        }
    }

    session.end().await;
    drop(session);
    // The writer ends once every handle to the connection's queue is gone
    // or it has sent a close frame; don't let a stuck peer hold it forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Waits for `hello`, answering anything else with `PROTOCOL_ERROR`.
/// Returns `None` when the peer left or missed the deadline (closed with 4408).
async fn await_hello(
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    limit: Duration,
) -> Option<Hello> {
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            _ = &mut deadline => {
                let _ = sink.send(close_frame(close::HELLO_TIMEOUT, "no hello within the deadline")).await;
                return None;
            }
            m = stream.next() => m,
        };
        let problem = match message {
            Some(Ok(Message::Text(frame))) => {
                match serde_json::from_str::<Envelope<'_>>(frame.as_str()) {
                    Ok(env) if env.kind == "hello" => {
                        match serde_json::from_str::<Hello>(
                            env.payload.map(|p| p.get()).unwrap_or("{}"),
                        ) {
                            Ok(hello) => return Some(hello),
                            Err(e) => format!("invalid hello: {e}"),
                        }
                    }
                    Ok(env) => format!("expected hello first, got {:?}", env.kind),
                    Err(e) => format!("frame is not a JSON object with a type: {e}"),
                }
            }
            Some(Ok(Message::Binary(_))) => "binary frames are not part of the protocol".to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) if is_too_big(&e) => {
                let _ = sink
                    .send(close_frame(
                        close::TOO_BIG,
                        "frame larger than limits.max_frame_bytes",
                    ))
                    .await;
                return None;
            }
            _ => return None,
        };
        let _ = sink
            .send(text(protocol::error_frame(
                ErrorCode::ProtocolError,
                &problem,
            )))
            .await;
    }
}

/// Sends queued frames and heartbeat pings until a close frame or the end
/// of the queue. Frames already queued are written together, flushed once.
async fn write_frames(
    mut sink: Sink,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    heartbeat: Duration,
) {
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    loop {
        let first = tokio::select! {
            next = outbound.recv() => next,
            _ = ticker.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() { return; }
                continue;
            }
        };
        let Some(mut item) = first else {
            let _ = sink.close().await;
            return;
        };
        loop {
            match item {
                Outbound::Text(frame) => {
                    if sink.feed(text(frame)).await.is_err() {
                        return;
                    }
                }
                Outbound::Close(code, reason) => {
                    let _ = sink.send(close_frame(code, &reason)).await;
                    return;
                }
            }
            match outbound.try_recv() {
                Ok(next) => item = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

fn text(frame: String) -> Message {
    Message::Text(Utf8Bytes::from(frame))
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(ws) = err.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(ws, tokio_tungstenite::tungstenite::Error::Capacity(_));
        }
        source = err.source();
    }
    false
}

/// Registers at most `limit` declarations; the rest come back in
/// `rejected` with `OVERLOADED`, so nothing is silently dropped.
async fn register_limited(
    hub: &Hub,
    connection: &Arc<Connection>,
    name: Option<&str>,
    mut declared: Vec<serde_json::Value>,
    mine: &mut SessionRegistrations,
) -> RegisterResult {
    let limit = hub.config().limits.max_operations_per_register;
    let excess = if declared.len() > limit {
        declared.split_off(limit)
    } else {
        Vec::new()
    };
    let mut result = hub
        .registrar()
        .register(connection, name, declared, mine)
        .await;
    let total = limit + excess.len();
    result.rejected.extend(excess.iter().map(|value| Rejected {
        operation_id: crate::registration::declared_id(value),
        code: ErrorCode::Overloaded,
        message: format!(
            "{total} operations declared at once; limits.max_operations_per_register is {limit}"
        ),
    }));
    result
}

/// The state of one authenticated session.
struct Session {
    hub: Hub,
    connection: Arc<Connection>,
    mine: SessionRegistrations,
    name: Option<String>,
}

impl Session {
    fn protocol_error(&self, message: &str) {
        self.connection
            .send(protocol::error_frame(ErrorCode::ProtocolError, message));
    }

    async fn on_text(&mut self, frame: &str) {
        let envelope = match serde_json::from_str::<Envelope<'_>>(frame) {
            Ok(e) => e,
            Err(e) => {
                return self.protocol_error(&format!("frame is not a JSON object with a type: {e}"))
            }
        };
        let payload = envelope.payload.map(|p| p.get()).unwrap_or("{}");
        match envelope.kind.as_ref() {
            "call.requested" => self.on_call(payload),
            kind @ ("call.responded" | "call.completed" | "call.error" | "call.aborted") => {
                self.on_call_event(kind, payload)
            }
            "register" => match serde_json::from_str::<Register>(payload) {
                Ok(register) => {
                    let result = register_limited(
                        &self.hub,
                        &self.connection,
                        self.name.as_deref(),
                        register.operations,
                        &mut self.mine,
                    )
                    .await;
                    self.connection.send(protocol::frame("registered", &result));
                }
                Err(e) => self.protocol_error(&format!("invalid register: {e}")),
            },
            "unregister" => match serde_json::from_str::<Unregister>(payload) {
                Ok(unregister) => {
                    if let Err(e) = self
                        .hub
                        .registrar()
                        .unregister(&self.connection, &unregister.operation_ids, &mut self.mine)
                        .await
                    {
                        tracing::warn!(error = %e, "unregister could not update the database");
                    }
                    self.connection
                        .send(protocol::frame("unregistered", &unregister));
                }
                Err(e) => self.protocol_error(&format!("invalid unregister: {e}")),
            },
            "hello" => self.protocol_error("hello was already received on this session"),
            other => self.protocol_error(&format!("unknown frame type {other:?}")),
        }
    }

    fn on_call(&self, payload: &str) {
        let call: CallRequested<'_> = match serde_json::from_str(payload) {
            Ok(call) => call,
            Err(e) => {
                let message = format!("invalid call.requested: {e}");
                return match request_id_of(payload) {
                    Some(id) => {
                        let error =
                            CallEvent::Error(CallError::new(ErrorCode::ProtocolError, message));
                        self.connection.send(event_frame(&id, &error));
                    }
                    None => self.protocol_error(&message),
                };
            }
        };
        if call.request_id.chars().count() > 128 {
            return self.protocol_error("requestId is longer than 128 characters");
        }
        let request_id: Arc<str> = call.request_id.as_ref().into();
        let caller = Caller::Connection {
            connection: self.connection.clone(),
            request_id: request_id.clone(),
        };
        let request = CallRequest {
            operation_id: &call.operation_id,
            input: call.input,
            parent_request_id: call.parent_request_id.as_deref(),
            deadline_ms: call.deadline,
            idle_timeout_ms: call.idle_timeout,
            metadata: call.metadata,
        };
        if let Err(error) =
            self.hub
                .dispatcher()
                .start(caller, Some(&self.connection.identity), request)
        {
            self.connection
                .send(event_frame(&request_id, &CallEvent::Error(error)));
        }
    }

    fn on_call_event(&self, kind: &str, payload: &str) {
        let event: CallEventIn<'_> = match serde_json::from_str(payload) {
            Ok(event) => event,
            Err(e) => return self.protocol_error(&format!("invalid {kind}: {e}")),
        };
        let dispatcher = self.hub.dispatcher();
        if kind == "call.aborted"
            && self
                .connection
                .calls
                .lock()
                .unwrap()
                .calling
                .contains_key(event.request_id.as_ref())
        {
            dispatcher.caller_abort(&self.connection, &event.request_id);
            return;
        }
        if let Err(error) = dispatcher.provider_event(&self.connection, kind, event) {
            self.protocol_error(&error.message);
        }
    }

    /// Leaves nothing behind: calls answered or aborted, providers out of the
    /// catalog, registrations inactive, the session out of the registry.
    async fn end(&mut self) {
        let connection = &self.connection;
        self.hub.detach(connection);
        let dispatcher = self.hub.dispatcher();
        dispatcher
            .catalog()
            .remove_session(connection.session_id, None);
        dispatcher.connection_gone(connection);
        if let Err(e) = self
            .hub
            .registrar()
            .session_ended(connection, &self.mine)
            .await
        {
            tracing::warn!(error = %e, "could not mark the session's registrations inactive");
        }
        let _ = self
            .hub
            .store()
            .touch_principal(connection.identity.kind, &connection.identity.id, false)
            .await;
        tracing::info!(session = connection.session_id, id = %connection.identity.id, "session ended");
    }
}

fn request_id_of(payload: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    value.get("requestId")?.as_str().map(str::to_owned)
}
