//! One WebSocket peer, from upgrade to close: the `hello` deadline,
//! authentication, `welcome`, the frame loop, heartbeats, and the teardown
//! that leaves nothing behind.
//!
//! This module owns the socket and the parsing of each frame's envelope; what
//! a frame means for calls is [`crate::dispatch`]'s business, and what it
//! means for registrations is [`crate::registration`]'s.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::connection::{Connection, Outbound, OutboundQueue};
use crate::crypto::Token;
use crate::dispatch::{event_frame, CallError, CallEvent, CallRequest, Caller};
use crate::limits::Permit;
use crate::protocol::{
    self, close, CallEventIn, CallRequested, Envelope, ErrorCode, Hello, Identity, PrincipalKind,
    Register, RegisterResult, Rejected, Unregister, Welcome,
};
use crate::registration::SessionRegistrations;
use crate::server::Hub;
use crate::sessions::Origin;
use crate::store::Principal;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

type Sink = SplitSink<WebSocket, Message>;

/// Runs a session to its end. `unauthenticated` is the connection's slot
/// among those that have not authenticated yet; it is given back once the
/// peer has.
pub async fn run(
    hub: Hub,
    socket: WebSocket,
    kind: PrincipalKind,
    header_token: Option<String>,
    unauthenticated: Permit,
) {
    let (mut sink, mut stream) = socket.split();
    let limits = &hub.config().limits;

    // The hello deadline covers every await before `welcome`: reading,
    // answering bad frames, the token lookup, and the refusal.
    let opening = tokio::time::timeout(
        Duration::from_millis(limits.hello_timeout_ms),
        open(&hub, &mut sink, &mut stream, kind, header_token),
    )
    .await;
    let (hello, principal) = match opening {
        Ok(Some(opened)) => opened,
        Ok(None) => return,
        Err(_) => {
            let close = sink.send(close_frame(
                close::HELLO_TIMEOUT,
                "no hello within the deadline",
            ));
            let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, close).await;
            return;
        }
    };
    drop(unauthenticated);

    let mut labels = principal.labels.clone();
    labels.extend(hello.labels.clone());
    let identity = Identity {
        kind,
        id: principal.id.clone(),
        scopes: principal.scopes.clone(),
    };
    let sessions = hub.sessions();
    let (connection, outbound) = Connection::new(
        sessions.next_session_id(),
        identity,
        labels,
        limits.max_outbound_bytes,
        principal.provides.clone(),
    );
    if let Err(refused) = sessions.attach(&connection, Origin::Peer(principal.created_at)) {
        let refusal = async {
            sink.send(text(protocol::error_frame(
                ErrorCode::Overloaded,
                &refused.to_string(),
            )))
            .await?;
            sink.send(close_frame(close::TOO_MANY_SESSIONS, "too many sessions"))
                .await
        };
        let _ = tokio::time::timeout(CLOSE_WRITE_LIMIT, refusal).await;
        return;
    }
    let heartbeat = Duration::from_millis(limits.heartbeat_ms.max(10));
    let writer = tokio::spawn(write_frames(
        sink,
        outbound,
        heartbeat,
        Arc::downgrade(&connection),
    ));

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
            warnings: result.warnings,
        },
    ));
    tracing::info!(session = connection.session_id, %kind, id = %connection.identity.id, "session started");
    hub.sessions()
        .presence()
        .connected(kind, &connection.identity.id);

    let mut session = Session {
        hub: hub.clone(),
        connection: connection.clone(),
        mine,
        name,
    };
    let mut closing = connection.closing();
    let mut ticker = tokio::time::interval(heartbeat);
    let mut last_heard = Instant::now();
    while !connection.is_closing() {
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
                    connection.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    break;
                }
            }
            _ = closing.changed() => break,
        }
    }

    if *connection.closing().borrow() == Some(close::SLOW_CONSUMER) {
        hub.metrics().slow_consumer("session");
    }
    sessions.end(&connection, &session.mine).await;
    drop(session);
    // The writer ends once it has sent the close frame; a peer that does not
    // read (a slow consumer) must not hold it, and the socket, any longer.
    let mut writer = writer;
    if tokio::time::timeout(CLOSE_WRITE_LIMIT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// How long the hub keeps writing a farewell (a close frame, a refusal) to
/// a peer that may not be reading.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// Reads `hello` and authenticates it. Returns `None` when the peer left or
/// was refused (already answered and closed).
async fn open(
    hub: &Hub,
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    kind: PrincipalKind,
    header_token: Option<String>,
) -> Option<(Hello, Principal)> {
    let hello = await_hello(sink, stream).await?;
    let token = hello.token.clone().or(header_token).map(Token::new);
    let principal = match token {
        Some(token) => hub.auth().authenticate(kind, &token).await,
        None => None,
    };
    match principal {
        Some(principal) => Some((hello, principal)),
        None => {
            let _ = sink
                .send(text(protocol::error_frame(
                    ErrorCode::Unauthenticated,
                    &format!("a valid {kind} token is required on this endpoint"),
                )))
                .await;
            let _ = sink
                .send(close_frame(close::UNAUTHENTICATED, "unauthenticated"))
                .await;
            None
        }
    }
}

/// Waits for `hello`, answering anything else with `PROTOCOL_ERROR`.
/// Returns `None` when the peer left or sent a frame over the size limit.
async fn await_hello(
    sink: &mut Sink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Option<Hello> {
    loop {
        let problem = match stream.next().await {
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
                    Ok(env) => format!("expected hello first, got {:?}", protocol::clip(&env.kind)),
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
/// A socket that fails closes the connection, so that work on its behalf
/// (a long registration) stops even while its reader is not being polled.
async fn write_frames(
    mut sink: Sink,
    mut outbound: OutboundQueue,
    heartbeat: Duration,
    connection: Weak<Connection>,
) {
    let failed = || {
        if let Some(connection) = connection.upgrade() {
            if !connection.is_closing() {
                connection.close(close::ABNORMAL, "the socket failed");
            }
        }
    };
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    loop {
        let first = tokio::select! {
            next = outbound.recv() => next,
            _ = ticker.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return failed();
                }
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
                        return failed();
                    }
                }
                Outbound::Close(code, reason) => {
                    let _ = sink.send(close_frame(code, &reason)).await;
                    return;
                }
            }
            match outbound.try_recv() {
                Some(next) => item = next,
                None => break,
            }
        }
        if sink.flush().await.is_err() {
            return failed();
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
    /// Reports a bad frame. Messages quote serde's errors, which may quote
    /// the peer's input: they are clipped.
    fn protocol_error(&self, message: &str) {
        self.connection.send(protocol::error_frame(
            ErrorCode::ProtocolError,
            &protocol::clip_message(message),
        ));
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
            other => {
                self.protocol_error(&format!("unknown frame type {:?}", protocol::clip(other)))
            }
        }
    }

    fn on_call(&self, payload: &str) {
        let call: CallRequested<'_> = match serde_json::from_str(payload) {
            Ok(call) => call,
            Err(e) => {
                let message = format!("invalid call.requested: {e}");
                return match request_id_of(payload) {
                    Some(id) => {
                        let message = protocol::clip_message(&message).into_owned();
                        let error =
                            CallEvent::Error(CallError::new(ErrorCode::ProtocolError, message));
                        self.connection.send(event_frame(&id, &error));
                    }
                    None => self.protocol_error(&message),
                };
            }
        };
        if call.request_id.chars().count() > MAX_REQUEST_ID_CHARS {
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
}

/// Longest `requestId` a caller may use (protocol §4).
const MAX_REQUEST_ID_CHARS: usize = 128;

/// The `requestId` of a payload that did not parse as a call, if it has a
/// usable one, so the caller's call can still be answered.
fn request_id_of(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct RequestIdOnly<'a> {
        #[serde(borrow, rename = "requestId")]
        request_id: std::borrow::Cow<'a, str>,
    }
    let probe: RequestIdOnly<'_> = serde_json::from_str(payload).ok()?;
    (probe.request_id.chars().count() <= MAX_REQUEST_ID_CHARS)
        .then(|| probe.request_id.into_owned())
}
