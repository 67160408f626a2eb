//! A Rust peer for writing spokes and clients: connect with a token, serve
//! operations with async handlers (subscriptions included), call, subscribe
//! and abort.
//!
//! It speaks the wire protocol of [`crate::protocol`] over
//! `tokio-tungstenite`, and shares nothing with the hub's internals, so it is
//! also what the tests use to play spokes and clients.
//!
//! ```no_run
//! # async fn demo() -> Result<(), alkhub::peer::PeerError> {
//! use alkhub::peer::{PeerBuilder, spec};
//! use alkhub::protocol::OperationType;
//! let spoke = PeerBuilder::new("ws://127.0.0.1:7700/v1/spokes/connect", "alk_spoke_...")
//!     .operation(spec("demo", "echo", OperationType::Query), |req| async move { Ok(req.input) })
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{Identity, OperationSpec, OperationType, RegisterResult, Welcome};

/// A failure of the connection or of a call, with the protocol code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PeerError {
    /// Protocol or domain code (`CONNECTION_CLOSED` when the socket ended).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Details, if the hub or provider sent any.
    pub details: Option<Value>,
}

impl PeerError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        PeerError {
            code: code.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    fn closed() -> Self {
        Self::new("CONNECTION_CLOSED", "the connection to the hub is closed")
    }
}

/// A minimal operation spec: namespace, name and type; set the other public
/// fields as needed.
pub fn spec(namespace: &str, name: &str, op_type: OperationType) -> OperationSpec {
    OperationSpec {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        op_type,
        description: None,
        input_schema: None,
        output_schema: None,
        access_level: Default::default(),
        required_scopes: Vec::new(),
        version: None,
        tags: None,
        title: None,
    }
}

/// A call delivered to one of this peer's handlers.
#[derive(Debug, Clone)]
pub struct Request {
    /// The hub's request id; pass it as `parent_request_id` in child calls.
    pub request_id: String,
    /// The operation id as this peer declared it.
    pub operation_id: String,
    /// The input.
    pub input: Value,
    /// Who calls.
    pub identity: Option<Identity>,
    /// The call's metadata.
    pub metadata: BTreeMap<String, String>,
    /// This peer, to make calls while serving.
    pub peer: Peer,
}

/// Sends the results of a subscription.
pub struct Emitter {
    peer: Peer,
    request_id: String,
}

impl Emitter {
    /// Sends one result (`data` of the envelope); false once the connection is gone.
    pub fn emit(&self, data: Value) -> bool {
        self.peer.send(frame(
            "call.responded",
            json!({"requestId": self.request_id, "output": {"data": data}}),
        ))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type QueryHandler = Arc<dyn Fn(Request) -> BoxFuture<Result<Value, PeerError>> + Send + Sync>;
type StreamHandler =
    Arc<dyn Fn(Request, Emitter) -> BoxFuture<Result<(), PeerError>> + Send + Sync>;

#[derive(Clone)]
enum Handler {
    Query(QueryHandler),
    Stream(StreamHandler),
}

/// Configures a peer before it connects.
#[derive(Clone)]
pub struct PeerBuilder {
    url: String,
    // More nodes of a cluster, which `keep_connected` tries in turn.
    other_urls: Vec<String>,
    token: String,
    token_in_header: bool,
    name: Option<String>,
    labels: BTreeMap<String, String>,
    specs: Vec<OperationSpec>,
    handlers: HashMap<String, Handler>,
}

impl PeerBuilder {
    /// A peer for `url` (`ws://HOST:PORT/v1/spokes/connect` or
    /// `.../v1/clients/connect`) with `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        PeerBuilder {
            url: url.into(),
            other_urls: Vec::new(),
            token: token.into(),
            token_in_header: false,
            name: None,
            labels: BTreeMap::new(),
            specs: Vec::new(),
            handlers: HashMap::new(),
        }
    }

    /// Another node of the same cluster (docs/cluster.md), at the same
    /// path: [`PeerBuilder::keep_connected`] moves on to the next address
    /// whenever connecting fails, and goes round them all.
    pub fn other_url(mut self, url: impl Into<String>) -> Self {
        self.other_urls.push(url.into());
        self
    }

    /// Sends the token as `Authorization: Bearer` instead of in `hello`.
    pub fn token_in_header(mut self) -> Self {
        self.token_in_header = true;
        self
    }

    /// Display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Offers a query or mutation served by `handler`, which returns `data`.
    pub fn operation<F, Fut>(mut self, spec: OperationSpec, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, PeerError>> + Send + 'static,
    {
        let handler: QueryHandler = Arc::new(move |req| Box::pin(handler(req)));
        self.handlers.insert(spec.id(), Handler::Query(handler));
        self.specs.push(spec);
        self
    }

    /// Offers a subscription served by `handler`, which emits results and
    /// returns when the stream is complete. An abort stops its task.
    pub fn subscription<F, Fut>(mut self, spec: OperationSpec, handler: F) -> Self
    where
        F: Fn(Request, Emitter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PeerError>> + Send + 'static,
    {
        let handler: StreamHandler = Arc::new(move |req, emitter| Box::pin(handler(req, emitter)));
        self.handlers.insert(spec.id(), Handler::Stream(handler));
        self.specs.push(spec);
        self
    }

    /// Connects, sends `hello`, and waits for `welcome`.
    pub async fn connect(self) -> Result<Peer, PeerError> {
        let mut request = self.url.as_str().into_client_request().map_err(|e| {
            PeerError::new(
                "CONNECTION_FAILED",
                format!("invalid url {}: {e}", self.url),
            )
        })?;
        if self.token_in_header {
            let value = format!("Bearer {}", self.token).parse().map_err(|_| {
                PeerError::new("CONNECTION_FAILED", "the token is not a valid header value")
            })?;
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|e| {
                PeerError::new(
                    "CONNECTION_FAILED",
                    format!("cannot connect to {}: {e}", self.url),
                )
            })?;
        let (mut sink, mut stream) = socket.split();
        let (out, mut outbound) = mpsc::unbounded_channel::<Message>();
        let (closed_tx, closed) = watch::channel(None);
        let inner = Arc::new(Inner {
            out,
            next_id: AtomicU64::new(1),
            calls: Mutex::default(),
            serving: Mutex::default(),
            control: Mutex::default(),
            errors: Mutex::default(),
            handlers: Mutex::new(self.handlers),
            welcome: Mutex::new(None),
            closed,
        });
        tokio::spawn(async move {
            while let Some(message) = outbound.recv().await {
                let is_close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || is_close {
                    break;
                }
            }
        });
        let peer = Peer { inner };
        let (welcome_tx, welcome_rx) = oneshot::channel();
        peer.inner
            .control
            .lock()
            .unwrap()
            .push(("welcome", welcome_tx));
        let mut hello = json!({"operations": self.specs, "labels": self.labels});
        if !self.token_in_header {
            hello["token"] = json!(self.token);
        }
        if let Some(name) = &self.name {
            hello["name"] = json!(name);
        }
        peer.send(frame("hello", hello));
        let reader = peer.clone();
        tokio::spawn(async move {
            let mut code = None;
            while let Some(message) = stream.next().await {
                match message {
                    Ok(Message::Text(text)) => reader.on_frame(text.as_str()),
                    Ok(Message::Close(frame)) => {
                        code = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            reader.on_closed(code.unwrap_or(1006), closed_tx);
        });
        let welcome = match welcome_rx.await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(PeerError::closed()),
        };
        let welcome: Welcome = serde_json::from_value(welcome)
            .map_err(|e| PeerError::new("PROTOCOL_ERROR", format!("invalid welcome: {e}")))?;
        *peer.inner.welcome.lock().unwrap() = Some(welcome);
        Ok(peer)
    }
}

/// How [`PeerBuilder::keep_connected`] waits between attempts: `initial`
/// after the first failure, doubled after each further one up to `max`,
/// back to `initial` once a connection has lasted 5 s. Each wait is shortened
/// by up to a quarter at random, so that spokes cut off together (a hub
/// restart) do not all come back in the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 250 ms, doubling up to 30 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row (at least one).
    fn wait(&self, failures: u32) -> Duration {
        let full = self
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max);
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        full - full.mul_f64(f64::from(byte[0]) / 255.0 / 4.0)
    }
}

/// Close codes after which a kept connection stops instead of reconnecting:
/// the token is refused (4401) or a newer session of the same spoke took
/// over (4409); coming back would be refused again, or take over back.
const FINAL_CLOSE_CODES: [u16; 2] = [4401, 4409];

/// How long a connection must last for the next failure to wait only
/// [`Backoff::initial`] again.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);

/// A peer that [`PeerBuilder::keep_connected`] reconnects, declaring its
/// operations again each time, until the hub refuses its token, another
/// session supersedes it, or [`KeptPeer::stop`].
pub struct KeptPeer {
    current: watch::Receiver<Option<Peer>>,
    ended: watch::Receiver<Option<PeerError>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeptPeer {
    /// The connected peer, waiting for a connection when there is none;
    /// the error that ended the peer for good once it has ended.
    pub async fn connected(&self) -> Result<Peer, PeerError> {
        let mut current = self.current.clone();
        let mut ended = self.ended.clone();
        loop {
            if let Some(e) = ended.borrow().clone() {
                return Err(e);
            }
            if let Some(peer) = current.borrow_and_update().clone() {
                if peer.close_code().is_none() {
                    return Ok(peer);
                }
            }
            tokio::select! {
                changed = current.changed() => if changed.is_err() { return Err(PeerError::closed()) },
                _ = ended.changed() => {}
            }
        }
    }

    /// The peer of the current connection, if one is up.
    pub fn current(&self) -> Option<Peer> {
        self.current
            .borrow()
            .clone()
            .filter(|p| p.close_code().is_none())
    }

    /// Waits until the peer has ended for good, and says why: close code
    /// 4401 or 4409 (`CONNECTION_CLOSED`), or the hub's refusal of `hello`.
    pub async fn ended(&self) -> PeerError {
        let mut ended = self.ended.clone();
        let error = match ended.wait_for(Option::is_some).await {
            Ok(e) => e.clone(),
            Err(_) => None,
        };
        error.unwrap_or_else(PeerError::closed)
    }

    /// Closes the connection and stops reconnecting.
    pub fn stop(&self) {
        self.task.abort();
        if let Some(peer) = self.current.borrow().as_ref() {
            peer.close();
        }
    }
}

impl Drop for KeptPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PeerBuilder {
    /// Connects, and connects again whenever the connection ends (a hub
    /// restart, a network failure, a heartbeat timeout), waiting by
    /// `backoff` between attempts and declaring the builder's operations
    /// again each time. A connection that fails moves on to the next of
    /// [`PeerBuilder::other_url`], if any. It stops for good on close code
    /// 4401 or 4409, or when `hello` is refused. Operations added later with
    /// [`Peer::register`] or [`Peer::add_operation`] belong to one
    /// connection and are not declared again.
    pub fn keep_connected(self, backoff: Backoff) -> KeptPeer {
        let (current_tx, current) = watch::channel(None::<Peer>);
        let (ended_tx, ended) = watch::channel(None);
        let urls: Vec<String> = std::iter::once(self.url.clone())
            .chain(self.other_urls.iter().cloned())
            .collect();
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            let mut at = 0;
            loop {
                let mut attempt = self.clone();
                attempt.url = urls[at % urls.len()].clone();
                match attempt.connect().await {
                    Ok(peer) => {
                        let welcomed = std::time::Instant::now();
                        current_tx.send_replace(Some(peer.clone()));
                        let code = peer.closed().await;
                        // A connection that lasted starts the waits over; one
                        // closed at once (a session cap, say) counts as a failure.
                        if welcomed.elapsed() >= STABLE_CONNECTION {
                            failures = 0;
                        }
                        if FINAL_CLOSE_CODES.contains(&code) {
                            let mut e = PeerError::new(
                                "CONNECTION_CLOSED",
                                format!("the hub closed the connection with code {code}"),
                            );
                            e.details = Some(json!({"closeCode": code}));
                            ended_tx.send_replace(Some(e));
                            return;
                        }
                    }
                    Err(e) if e.code == "UNAUTHENTICATED" => {
                        ended_tx.send_replace(Some(e));
                        return;
                    }
                    Err(_) => at += 1,
                }
                failures += 1;
                tokio::time::sleep(backoff.wait(failures)).await;
            }
        });
        KeptPeer {
            current,
            ended,
            task,
        }
    }
}

type Pending = mpsc::UnboundedSender<Result<Value, PeerError>>;
/// A reply awaited by type (`welcome`, `registered`, `unregistered`).
type AwaitedReply = (&'static str, oneshot::Sender<Result<Value, PeerError>>);

struct Inner {
    out: mpsc::UnboundedSender<Message>,
    next_id: AtomicU64,
    /// My open calls: my request id → where their events go.
    calls: Mutex<HashMap<String, Pending>>,
    /// Calls I serve: the hub's request id → the handler's task.
    serving: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Replies awaited in order: `welcome`, `registered`, `unregistered`.
    control: Mutex<Vec<AwaitedReply>>,
    /// Connection-level `error` events received.
    errors: Mutex<Vec<PeerError>>,
    handlers: Mutex<HashMap<String, Handler>>,
    welcome: Mutex<Option<Welcome>>,
    closed: watch::Receiver<Option<u16>>,
}

/// A connected peer; cloning shares the connection.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("closed", &self.close_code())
            .finish()
    }
}

/// Options of a call beyond its id and input.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The hub request id of the call being served, for child calls.
    pub parent_request_id: Option<String>,
    /// Absolute deadline, ms since the Unix epoch.
    pub deadline: Option<u64>,
    /// Subscriptions: longest gap between events, ms.
    pub idle_timeout: Option<u64>,
    /// Routing metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A query or mutation awaiting its answer. Dropped, it forgets the call,
/// and sends `call.aborted` if no answer came (the caller stopped waiting).
struct OpenCall<'a> {
    peer: &'a Peer,
    request_id: String,
    answered: bool,
}

impl Drop for OpenCall<'_> {
    fn drop(&mut self) {
        let inner = &self.peer.inner;
        inner.calls.lock().unwrap().remove(&self.request_id);
        if !self.answered && inner.closed.borrow().is_none() {
            self.peer
                .send(frame("call.aborted", json!({"requestId": self.request_id})));
        }
    }
}

/// The results of a subscription as they arrive.
pub struct Subscription {
    peer: Peer,
    request_id: String,
    events: mpsc::UnboundedReceiver<Result<Value, PeerError>>,
    done: bool,
}

impl Subscription {
    /// The next result envelope; `None` after `call.completed`, an error, or an abort.
    pub async fn next(&mut self) -> Option<Result<Value, PeerError>> {
        if self.done {
            return None;
        }
        match self.events.recv().await {
            Some(Ok(Value::Null)) | None => {
                self.done = true;
                None
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            Some(ok) => Some(ok),
        }
    }

    /// The caller's id of this subscription.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Stops the subscription (`call.aborted`).
    pub fn abort(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if !self.done {
            self.done = true;
            self.peer
                .inner
                .calls
                .lock()
                .unwrap()
                .remove(&self.request_id);
            self.peer
                .send(frame("call.aborted", json!({"requestId": self.request_id})));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Peer {
    /// The hub's `welcome`.
    pub fn welcome(&self) -> Welcome {
        self.inner
            .welcome
            .lock()
            .unwrap()
            .clone()
            .expect("a connected peer has a welcome")
    }

    /// Connection-level `error` events received so far.
    pub fn errors(&self) -> Vec<PeerError> {
        self.inner.errors.lock().unwrap().clone()
    }

    /// Waits until the hub closes the connection; returns the close code.
    pub async fn closed(&self) -> u16 {
        let mut closed = self.inner.closed.clone();
        let code = closed
            .wait_for(|c| c.is_some())
            .await
            .map(|c| c.unwrap_or(1006));
        code.unwrap_or(1006)
    }

    /// The close code, if the connection has ended.
    pub fn close_code(&self) -> Option<u16> {
        *self.inner.closed.borrow()
    }

    /// Closes the connection normally.
    pub fn close(&self) {
        let _ = self.inner.out.send(Message::Close(None));
    }

    /// Sends a raw text frame (for tests of the protocol's error handling).
    pub fn send_raw(&self, text: impl Into<String>) -> bool {
        self.inner.out.send(Message::text(text.into())).is_ok()
    }

    fn send(&self, text: String) -> bool {
        self.send_raw(text)
    }

    /// Calls a query or mutation and returns its output envelope.
    pub async fn call(&self, operation_id: &str, input: Value) -> Result<Value, PeerError> {
        self.call_with(operation_id, input, CallOptions::default())
            .await
    }

    /// [`Peer::call`] with options.
    pub async fn call_with(
        &self,
        operation_id: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<Value, PeerError> {
        let (request_id, mut events) = self.start(operation_id, input, options);
        // Dropping this future before the answer aborts the call.
        let mut open = OpenCall {
            peer: self,
            request_id,
            answered: false,
        };
        let result = match events.recv().await {
            Some(Ok(Value::Null)) => Err(PeerError::new(
                "EXECUTION_ERROR",
                "completed without a result",
            )),
            Some(result) => result,
            None => Err(PeerError::closed()),
        };
        open.answered = true;
        result
    }

    /// Starts a subscription.
    pub fn subscribe(
        &self,
        operation_id: &str,
        input: Value,
        options: CallOptions,
    ) -> Subscription {
        let (request_id, events) = self.start(operation_id, input, options);
        Subscription {
            peer: self.clone(),
            request_id,
            events,
            done: false,
        }
    }

    fn start(
        &self,
        operation_id: &str,
        input: Value,
        options: CallOptions,
    ) -> (String, mpsc::UnboundedReceiver<Result<Value, PeerError>>) {
        let request_id = format!("c-{}", self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .calls
            .lock()
            .unwrap()
            .insert(request_id.clone(), tx.clone());
        let mut payload =
            json!({"requestId": request_id, "operationId": operation_id, "input": input});
        if let Some(parent) = options.parent_request_id {
            payload["parentRequestId"] = json!(parent);
        }
        if let Some(deadline) = options.deadline {
            payload["deadline"] = json!(deadline);
        }
        if let Some(idle) = options.idle_timeout {
            payload["idleTimeout"] = json!(idle);
        }
        if !options.metadata.is_empty() {
            payload["metadata"] = json!(options.metadata);
        }
        // A call started while the connection closes is failed here if the
        // close already drained the open calls (it marks the peer closed
        // before draining).
        if self.inner.closed.borrow().is_some() || !self.send(frame("call.requested", payload)) {
            self.inner.calls.lock().unwrap().remove(&request_id);
            let _ = tx.send(Err(PeerError::closed()));
        }
        (request_id, rx)
    }

    /// Declares more operations (`register`) served by `handler`s added with
    /// [`Peer::add_operation`]; returns the hub's `registered`.
    pub async fn register(&self, specs: Vec<OperationSpec>) -> Result<RegisterResult, PeerError> {
        let value = self
            .control(
                "registered",
                frame("register", json!({"operations": specs})),
            )
            .await?;
        serde_json::from_value(value).map_err(|e| PeerError::new("PROTOCOL_ERROR", e.to_string()))
    }

    /// Adds a query handler for an operation to be declared with [`Peer::register`].
    pub fn add_operation<F, Fut>(&self, operation_id: &str, handler: F)
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, PeerError>> + Send + 'static,
    {
        let handler: QueryHandler = Arc::new(move |req| Box::pin(handler(req)));
        self.inner
            .handlers
            .lock()
            .unwrap()
            .insert(operation_id.to_owned(), Handler::Query(handler));
    }

    /// Withdraws operations by their declared ids (`unregister`).
    pub async fn unregister(&self, operation_ids: &[&str]) -> Result<(), PeerError> {
        self.control(
            "unregistered",
            frame("unregister", json!({"operationIds": operation_ids})),
        )
        .await
        .map(|_| ())
    }

    async fn control(&self, expect: &'static str, text: String) -> Result<Value, PeerError> {
        let (tx, rx) = oneshot::channel();
        self.inner.control.lock().unwrap().push((expect, tx));
        self.send(text);
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(result)) => result,
            _ => Err(PeerError::closed()),
        }
    }

    fn on_frame(&self, text: &str) {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let kind = value["type"].as_str().unwrap_or_default().to_owned();
        let payload = value.get("payload").cloned().unwrap_or(Value::Null);
        match kind.as_str() {
            "welcome" | "registered" | "unregistered" => {
                let mut control = self.inner.control.lock().unwrap();
                if let Some(i) = control.iter().position(|(k, _)| *k == kind) {
                    let (_, tx) = control.remove(i);
                    let _ = tx.send(Ok(payload));
                }
            }
            "error" => {
                let error = error_of(&payload);
                // Before `welcome`, an error (bad token) fails the connect.
                let mut control = self.inner.control.lock().unwrap();
                if let Some(i) = control.iter().position(|(k, _)| *k == "welcome") {
                    let (_, tx) = control.remove(i);
                    let _ = tx.send(Err(error.clone()));
                }
                self.inner.errors.lock().unwrap().push(error);
            }
            "call.requested" => self.serve(payload),
            "call.aborted" => {
                let id = payload["requestId"].as_str().unwrap_or_default();
                if let Some(task) = self.inner.serving.lock().unwrap().remove(id) {
                    task.abort();
                } else if let Some(tx) = self.inner.calls.lock().unwrap().remove(id) {
                    let _ = tx.send(Err(PeerError::new(
                        "ABORTED",
                        "the provider aborted the call",
                    )));
                }
            }
            "call.responded" | "call.completed" | "call.error" => {
                let id = payload["requestId"].as_str().unwrap_or_default();
                let mut calls = self.inner.calls.lock().unwrap();
                let event = match kind.as_str() {
                    "call.responded" => Ok(payload["output"].clone()),
                    "call.completed" => Ok(Value::Null),
                    _ => Err(error_of(&payload)),
                };
                let last = kind != "call.responded";
                let tx = if last {
                    calls.remove(id)
                } else {
                    calls.get(id).cloned()
                };
                if let Some(tx) = tx {
                    let _ = tx.send(event);
                }
            }
            _ => {}
        }
    }

    fn serve(&self, payload: Value) {
        let request_id = payload["requestId"].as_str().unwrap_or_default().to_owned();
        let operation_id = payload["operationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let handler = self
            .inner
            .handlers
            .lock()
            .unwrap()
            .get(&operation_id)
            .cloned();
        let Some(handler) = handler else {
            self.send(frame(
                "call.error",
                json!({"requestId": request_id, "code": "OPERATION_NOT_FOUND",
                       "message": format!("this peer does not serve {operation_id}")}),
            ));
            return;
        };
        let request = Request {
            request_id: request_id.clone(),
            operation_id,
            input: payload.get("input").cloned().unwrap_or(Value::Null),
            identity: serde_json::from_value(payload["identity"].clone()).ok(),
            metadata: serde_json::from_value(payload["metadata"].clone()).unwrap_or_default(),
            peer: self.clone(),
        };
        let peer = self.clone();
        let id = request_id.clone();
        // Hold the lock across the spawn so the task cannot finish (and
        // remove itself) before it is recorded.
        let mut serving = self.inner.serving.lock().unwrap();
        let task = tokio::spawn(async move {
            let reply = match handler {
                Handler::Query(h) => match h(request).await {
                    Ok(data) => frame(
                        "call.responded",
                        json!({"requestId": id, "output": {"data": data}}),
                    ),
                    Err(e) => error_frame(&id, &e),
                },
                Handler::Stream(h) => {
                    let emitter = Emitter {
                        peer: peer.clone(),
                        request_id: id.clone(),
                    };
                    match h(request, emitter).await {
                        Ok(()) => frame("call.completed", json!({"requestId": id})),
                        Err(e) => error_frame(&id, &e),
                    }
                }
            };
            if peer.inner.serving.lock().unwrap().remove(&id).is_some() {
                peer.send(reply);
            }
        });
        serving.insert(request_id, task.abort_handle());
    }

    fn on_closed(&self, code: u16, closed: watch::Sender<Option<u16>>) {
        // Closed first, then drained: a call that starts in between sees the
        // mark (see `start`) instead of waiting for an answer that never comes.
        let _ = closed.send(Some(code));
        for (_, tx) in self.inner.calls.lock().unwrap().drain() {
            let _ = tx.send(Err(PeerError::closed()));
        }
        for (_, task) in self.inner.serving.lock().unwrap().drain() {
            task.abort();
        }
        for (_, tx) in self.inner.control.lock().unwrap().drain(..) {
            let _ = tx.send(Err(PeerError::new(
                "CONNECTION_CLOSED",
                format!("closed with code {code}"),
            )));
        }
    }
}

/// Calls over HTTP (`docs/protocol.md` 5.2 and 5.3), for callers that
/// keep no connection: `POST /v1/operations/{id}/call` and the SSE stream
/// of `/subscribe`, with failures as [`PeerError`]s carrying the
/// protocol's code, as over WebSocket.
#[derive(Clone)]
pub struct HttpCaller {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl HttpCaller {
    /// A caller of the hub at `base` (`http://127.0.0.1:7700`), with a
    /// bearer `token` (`None` calls anonymously, `public` operations only).
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        // reqwest is built without a TLS provider of its own.
        crate::imports::tls::install_provider();
        HttpCaller {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            client: reqwest::Client::new(),
        }
    }

    async fn post(
        &self,
        operation_id: &str,
        verb: &str,
        input: Value,
        timeout_ms: Option<u64>,
    ) -> Result<reqwest::Response, PeerError> {
        let mut body = json!({"input": input});
        if let Some(timeout) = timeout_ms {
            body["timeoutMs"] = json!(timeout);
        }
        let mut request = self
            .client
            .post(format!("{}/v1/operations/{operation_id}/{verb}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            PeerError::new(
                "CONNECTION_FAILED",
                format!("cannot reach {}: {e}", self.base),
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        Err(serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|v| v["code"].is_string())
            .map(|v| error_of(&v))
            .unwrap_or_else(|| {
                PeerError::new(
                    "UNKNOWN_ERROR",
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
                )
            }))
    }

    /// Calls a query or mutation; returns its output envelope. `timeout_ms`
    /// is the call's deadline from now (the hub's default without it).
    pub async fn call(
        &self,
        operation_id: &str,
        input: Value,
        timeout_ms: Option<u64>,
    ) -> Result<Value, PeerError> {
        let response = self.post(operation_id, "call", input, timeout_ms).await?;
        let body = response.bytes().await.map_err(|e| {
            PeerError::new("CONNECTION_CLOSED", format!("the answer was cut off: {e}"))
        })?;
        serde_json::from_slice(&body)
            .map_err(|e| PeerError::new("PROTOCOL_ERROR", format!("the answer is not JSON: {e}")))
    }

    /// Subscribes; the events arrive through [`HttpSubscription::next`].
    /// Dropping it closes the stream, which aborts the call.
    pub async fn subscribe(
        &self,
        operation_id: &str,
        input: Value,
        timeout_ms: Option<u64>,
    ) -> Result<HttpSubscription, PeerError> {
        let response = self
            .post(operation_id, "subscribe", input, timeout_ms)
            .await?;
        Ok(HttpSubscription {
            response,
            buffer: Vec::new(),
            done: false,
        })
    }
}

/// The events of an HTTP subscription (an SSE stream).
pub struct HttpSubscription {
    response: reqwest::Response,
    buffer: Vec<u8>,
    done: bool,
}

impl HttpSubscription {
    /// The next result envelope; `None` after `completed` or an error.
    pub async fn next(&mut self) -> Option<Result<Value, PeerError>> {
        while !self.done {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let (name, data) = sse_event(&String::from_utf8_lossy(&event));
                match name.as_str() {
                    "responded" => {
                        return Some(serde_json::from_str(&data).map_err(|e| {
                            PeerError::new("PROTOCOL_ERROR", format!("an event is not JSON: {e}"))
                        }))
                    }
                    "completed" => self.done = true,
                    "error" => {
                        self.done = true;
                        let error = serde_json::from_str::<Value>(&data)
                            .ok()
                            .filter(|v| v["code"].is_string())
                            .map(|v| error_of(&v))
                            .unwrap_or_else(|| PeerError::new("PROTOCOL_ERROR", data));
                        return Some(Err(error));
                    }
                    _ => {}
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) | Err(_) => {
                    self.done = true;
                    return Some(Err(PeerError::closed()));
                }
            }
        }
        None
    }
}

/// The event name and data of one SSE event (its lines, LF-separated).
fn sse_event(text: &str) -> (String, String) {
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim_start().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (name, data.join("\n"))
}

fn frame(kind: &str, payload: Value) -> String {
    json!({"type": kind, "payload": payload}).to_string()
}

fn error_frame(request_id: &str, e: &PeerError) -> String {
    let mut payload = json!({"requestId": request_id, "message": e.message});
    // No code: the hub reports EXECUTION_ERROR.
    if !e.code.is_empty() {
        payload["code"] = json!(e.code);
    }
    if let Some(details) = &e.details {
        payload["details"] = details.clone();
    }
    frame("call.error", payload)
}

fn error_of(payload: &Value) -> PeerError {
    PeerError {
        code: payload["code"]
            .as_str()
            .unwrap_or("UNKNOWN_ERROR")
            .to_owned(),
        message: payload["message"].as_str().unwrap_or_default().to_owned(),
        details: payload.get("details").filter(|d| !d.is_null()).cloned(),
    }
}

/// A handler error with a code, for providers; an empty `code` sends none
/// (the caller receives `EXECUTION_ERROR`).
pub fn handler_error(code: &str, message: impl Into<String>) -> PeerError {
    PeerError::new(code, message)
}
