//! The life of a call, top to bottom: lookup, access, validation, routing,
//! forwarding under the hub's own request id, correlation of the provider's
//! events back to the caller, timeouts, aborts and their cascade.
//!
//! [`Dispatcher::start`] is the entry point; every way a call can end goes
//! through [`Dispatcher::finish`], which is where "no call is ever left
//! without an answer" is kept. Nothing here reads the database, awaits while
//! holding a lock, or knows about WebSockets or HTTP.
//!
//! Calls form a graph: a provider may start child calls of a call it serves
//! (`parentRequestId`). Only the connection a call was delivered to may name
//! it as parent, chains are at most `limits.max_call_depth` long, and a
//! parent that ends early ends its children through a work list, never by
//! recursion, so a chain of any length is torn down in constant stack.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::catalog::{Catalog, Entry};
use crate::config::LimitsConfig;
use crate::connection::{now_ms, BudgetedSender, Connection};
use crate::metrics::{outcome_of, Metrics, NamespaceStats};
use crate::policy::{Candidate, Decision, RouteCall, RoutingPolicy};
use crate::protocol::{
    self, AccessLevel, ErrorCode, ForwardedCall, Identity, OperationType, PrincipalKind,
};
use crate::store::Source;

/// A call's failure as the caller receives it.
#[derive(Debug, Clone)]
pub struct CallError {
    /// A protocol code or a provider's own domain code.
    pub code: Cow<'static, str>,
    /// What went wrong, naming the thing.
    pub message: String,
    /// Structured details (schema errors, provider data).
    pub details: Option<Box<RawValue>>,
}

impl CallError {
    /// An error with a protocol code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CallError {
            code: Cow::Borrowed(code.as_str()),
            message: message.into(),
            details: None,
        }
    }

    /// The protocol code, if the code is one.
    pub fn protocol_code(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }
}

/// What a channel caller (HTTP, the hub itself) receives.
#[derive(Debug)]
pub enum CallEvent {
    /// One result envelope.
    Responded(Box<RawValue>),
    /// A subscription ended normally.
    Completed,
    /// The call failed; nothing follows.
    Error(CallError),
}

/// Where a call's answers go.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A WebSocket peer, under its own request id.
    Connection {
        /// The caller's connection.
        connection: Arc<Connection>,
        /// The caller's id for the call.
        request_id: Arc<str>,
    },
    /// A channel (HTTP requests, MCP tool calls), bounded in bytes.
    Channel(BudgetedSender<CallEvent>),
}

/// A call as the caller asked for it; `input` stays raw JSON.
#[derive(Debug)]
pub struct CallRequest<'a> {
    /// Post-remap id.
    pub operation_id: &'a str,
    /// The input, unparsed.
    pub input: Option<&'a RawValue>,
    /// The hub request id of the call this one serves.
    pub parent_request_id: Option<&'a str>,
    /// Absolute deadline, ms since the Unix epoch.
    pub deadline_ms: Option<u64>,
    /// Longest gap between events, ms.
    pub idle_timeout_ms: Option<u64>,
    /// Routing metadata.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// How a call ended.
#[derive(Debug)]
enum End {
    Responded(Box<RawValue>),
    Completed,
    Error(CallError),
    CallerAborted,
    CallerGone,
    ProviderGone,
    ProviderAborted,
    Timeout(&'static str),
    ParentEnded,
    /// The parent ended between the child's checks and its forwarding: the
    /// child never reached its provider.
    ParentAlreadyEnded,
    Shutdown,
}

impl End {
    /// The outcome label of `/metrics`: `ok` or an error code.
    fn outcome(&self) -> &'static str {
        match self {
            End::Responded(_) | End::Completed => "ok",
            End::Error(e) => outcome_of(e),
            End::Timeout(_) => ErrorCode::Timeout.as_str(),
            End::ProviderGone => ErrorCode::ProviderGone.as_str(),
            End::CallerAborted
            | End::CallerGone
            | End::ProviderAborted
            | End::ParentEnded
            | End::ParentAlreadyEnded
            | End::Shutdown => ErrorCode::Aborted.as_str(),
        }
    }

    /// Ends that stop the provider's work and the call's children.
    fn is_early(&self) -> bool {
        !matches!(self, End::Responded(_) | End::Completed | End::Error(_))
    }
}

struct Call {
    caller: Caller,
    provider: Arc<Connection>,
    in_flight: Arc<AtomicU32>,
    op_type: OperationType,
    operation_id: Arc<str>,
    /// The call this one serves, if any; the child leaves its parent's
    /// `children` when it ends, so a long-lived parent does not grow.
    parent: Option<u64>,
    /// Links in the chain ending here (a call without a parent is 1).
    depth: u32,
    /// Open children. Bounded without a limit of its own: every child of a
    /// call is a call of the one connection serving it, so
    /// `limits.max_open_calls_per_connection` caps them.
    children: HashSet<u64>,
    timer: Option<tokio::task::AbortHandle>,
    deadline: Option<Instant>,
    idle: Option<Duration>,
    last_event: Instant,
    /// When the hub received it, and its namespace's counters.
    started: Instant,
    stats: Arc<NamespaceStats>,
}

const SHARDS: usize = 64;

/// Handle to the dispatcher; cloning shares it.
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    catalog: Catalog,
    routing: RwLock<Arc<dyn RoutingPolicy>>,
    // Open calls by hub id, sharded so that concurrent calls rarely meet on
    // one lock; each critical section is a map insert, remove or probe.
    calls: Box<[Mutex<HashMap<u64, Call>>]>,
    next_id: AtomicU64,
    limits: CallLimits,
    rate: RateLimiter,
    builtins: Arc<dyn Builtins>,
    draining: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
}

/// The limits of `[limits]` that the call path enforces.
struct CallLimits {
    max_open_calls: usize,
    max_call_depth: u32,
    max_input_depth: u32,
    inline_validation_bytes: usize,
    max_routing_candidates: usize,
}

/// What a call brings to forwarding besides its request.
struct Arrival {
    parent: Option<Parent>,
    deadline: Option<Instant>,
    started: Instant,
}

/// A parent named by a call, checked: open and served by the caller.
#[derive(Clone, Copy)]
struct Parent {
    id: u64,
    depth: u32,
}

/// Operations the hub serves itself (`hub.*`). Implemented by the server,
/// which may read the store: built-ins are not on the relay path.
pub trait Builtins: Send + Sync {
    /// Runs built-in `operation_id` and delivers its answer to `caller`.
    fn run(
        &self,
        operation_id: &str,
        input: serde_json::Value,
        caller: Option<Identity>,
        reply: Reply,
    );
}

/// Delivers the one answer of a call that has no provider (built-ins), and
/// counts it.
pub struct Reply {
    caller: Caller,
    metrics: Arc<Metrics>,
    stats: Arc<NamespaceStats>,
    started: Instant,
}

impl Reply {
    /// Sends a result: `data` wrapped in an envelope from `local`.
    pub fn data(self, operation_id: &str, data: serde_json::Value) {
        let envelope = serde_json::json!({
            "data": data,
            "meta": {"source": "local", "operationId": operation_id, "timestamp": now_ms()}
        });
        let raw = serde_json::value::to_raw_value(&envelope).expect("json value serializes");
        self.metrics
            .ended(&self.stats, "ok", self.started.elapsed());
        deliver(&self.caller, End::Responded(raw));
    }

    /// Sends a failure.
    pub fn error(self, error: CallError) {
        self.metrics
            .ended(&self.stats, outcome_of(&error), self.started.elapsed());
        deliver(&self.caller, End::Error(error));
    }
}

impl Dispatcher {
    /// A dispatcher over `catalog`, routing with `routing`, counting calls
    /// in `metrics`.
    pub fn new(
        catalog: Catalog,
        routing: Arc<dyn RoutingPolicy>,
        limits: &LimitsConfig,
        builtins: Arc<dyn Builtins>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dispatcher {
            shared: Arc::new(Shared {
                catalog,
                routing: RwLock::new(routing),
                calls: (0..SHARDS).map(|_| Mutex::default()).collect(),
                next_id: AtomicU64::new(1),
                limits: CallLimits {
                    max_open_calls: limits.max_open_calls_per_connection,
                    max_call_depth: limits.max_call_depth,
                    max_input_depth: limits.max_input_depth,
                    inline_validation_bytes: limits.inline_validation_bytes,
                    max_routing_candidates: limits.max_routing_candidates,
                },
                rate: RateLimiter::new(
                    limits.calls_per_second_per_principal,
                    limits.call_burst_per_principal,
                ),
                builtins,
                draining: Default::default(),
                metrics,
            }),
        }
    }

    /// Refuses new calls from now on (shutdown); open calls go on.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// The catalog the dispatcher reads.
    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    /// Replaces the routing policy for calls that start from now on.
    pub fn set_routing(&self, routing: Arc<dyn RoutingPolicy>) {
        *self.shared.routing.write().unwrap() = routing;
    }

    /// Calls open right now.
    pub fn open_calls(&self) -> usize {
        self.shared
            .calls
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum()
    }

    /// Open children of the call the hub delivered as `request_id` (for
    /// observing that children leave their parent when they end).
    pub fn open_children(&self, request_id: &str) -> Option<usize> {
        let id = parse_hub_id(request_id)?;
        self.shard(id)
            .lock()
            .unwrap()
            .get(&id)
            .map(|c| c.children.len())
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Call>> {
        &self.shared.calls[(id as usize) % SHARDS]
    }

    /// Starts a call and returns the hub's id for it (`None` for built-ins,
    /// which answer without an open call). An error means the call never
    /// reached a provider; the caller still has to be told (the session and
    /// HTTP layers do that).
    pub fn start(
        &self,
        caller: Caller,
        identity: Option<&Identity>,
        request: CallRequest<'_>,
    ) -> Result<Option<u64>, CallError> {
        let operation_id = request.operation_id;
        let started = self.begin(caller, identity, request);
        if let Err(error) = &started {
            self.shared.metrics.refused(operation_id, error);
        }
        started
    }

    /// [`Dispatcher::start`] before the refusal is counted.
    fn begin(
        &self,
        caller: Caller,
        identity: Option<&Identity>,
        request: CallRequest<'_>,
    ) -> Result<Option<u64>, CallError> {
        let started = Instant::now();
        if self.shared.draining.load(Ordering::Acquire) {
            return Err(CallError::new(
                ErrorCode::UnknownError,
                "the hub is shutting down",
            ));
        }
        if let Caller::Connection {
            connection,
            request_id,
        } = &caller
        {
            let calls = connection.calls.lock().unwrap();
            if calls.calling.contains_key(request_id) {
                return Err(CallError::new(
                    ErrorCode::ProtocolError,
                    format!(
                        "requestId {:?} is already in use by an open call",
                        protocol::clip(request_id)
                    ),
                ));
            }
            if calls.calling.len() >= self.shared.limits.max_open_calls {
                return Err(CallError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "this connection already has {} open calls (limits.max_open_calls_per_connection)",
                        calls.calling.len()
                    ),
                ));
            }
        }
        self.shared.rate.admit(identity)?;
        let parent = self.parent(&caller, request.parent_request_id)?;
        let entry = self.lookup(request.operation_id, identity)?;
        let judged = self.validate(&entry, request.input)?;
        if entry.definition.spec.source == Source::Builtin {
            let input = match judged {
                Some(value) => value,
                None => read_input(request.input, self.shared.limits.max_input_depth)?,
            };
            let reply = Reply {
                caller,
                metrics: self.shared.metrics.clone(),
                stats: self.shared.metrics.namespace_of(&entry.definition.id),
                started,
            };
            self.shared
                .builtins
                .run(&entry.definition.id, input, identity.cloned(), reply);
            return Ok(None);
        }
        if entry.providers.is_empty() {
            return Err(CallError::new(
                ErrorCode::NoProvider,
                format!(
                    "operation {} has no connected provider",
                    entry.definition.id
                ),
            ));
        }
        let deadline = deadline_of(request.deadline_ms)?;
        // The provider receives exactly what the validator judged: the
        // parsed input written out again, not the caller's text (which may
        // hold duplicate keys or numbers the parser read differently).
        let judged_input = match (&judged, request.input) {
            (Some(value), Some(_)) => {
                Some(serde_json::value::to_raw_value(value).expect("a parsed input serializes"))
            }
            _ => None,
        };
        let input = judged_input.as_deref().or(request.input);
        let provider = self.route(&entry, identity, request.metadata.as_ref())?;
        let arrival = Arrival {
            parent,
            deadline,
            started,
        };
        self.forward(caller, identity, &entry, provider, &request, input, arrival)
            .map(Some)
    }

    /// Starts a call that another node of the cluster checked and routed
    /// to `entry.providers[chosen]`, a provider of this node: no access
    /// check, validation, rate limit or routing again; the caller is that
    /// node's link, under the other node's id for the call.
    pub fn start_forwarded(
        &self,
        caller: Caller,
        identity: &Identity,
        entry: &Entry,
        chosen: usize,
        request: CallRequest<'_>,
    ) -> Result<u64, CallError> {
        let started = Instant::now();
        if self.shared.draining.load(Ordering::Acquire) {
            return Err(CallError::new(
                ErrorCode::ProviderGone,
                "the provider's node is shutting down",
            ));
        }
        if let Caller::Connection {
            connection,
            request_id,
        } = &caller
        {
            if connection
                .calls
                .lock()
                .unwrap()
                .calling
                .contains_key(request_id)
            {
                return Err(CallError::new(
                    ErrorCode::ProtocolError,
                    format!(
                        "the other node's call {} is already open here",
                        protocol::clip(request_id)
                    ),
                ));
            }
        }
        let deadline = deadline_of(request.deadline_ms)?;
        let arrival = Arrival {
            parent: None,
            deadline,
            started,
        };
        let input = request.input;
        self.forward(
            caller,
            Some(identity),
            entry,
            chosen,
            &request,
            input,
            arrival,
        )
    }

    /// The connection serving the open call the hub sent as `request_id`.
    pub fn provider_of_call(&self, request_id: &str) -> Option<Arc<Connection>> {
        let id = parse_hub_id(request_id)?;
        self.shard(id)
            .lock()
            .unwrap()
            .get(&id)
            .map(|c| c.provider.clone())
    }

    /// Checks the call's `parentRequestId`: the parent must be open and
    /// delivered to the very connection that names it, and the chain must
    /// stay within `limits.max_call_depth`.
    fn parent(&self, caller: &Caller, named: Option<&str>) -> Result<Option<Parent>, CallError> {
        let Some(named) = named else {
            return Ok(None);
        };
        let not_served_here = || {
            CallError::new(
                ErrorCode::ProtocolError,
                format!(
                    "parentRequestId {:?} is not a call this connection is serving",
                    protocol::clip(named)
                ),
            )
        };
        // Channel callers (HTTP, MCP) serve nothing, so they have no parent.
        let Caller::Connection { connection, .. } = caller else {
            return Err(not_served_here());
        };
        let Some(id) = parse_hub_id(named) else {
            return Err(not_served_here());
        };
        let depth = match self.shard(id).lock().unwrap().get(&id) {
            Some(call) if call.provider.session_id == connection.session_id => call.depth + 1,
            Some(_) => return Err(not_served_here()),
            // A parent that already ended: had the child come a moment
            // earlier, the parent's end would have aborted it.
            None if id < self.shared.next_id.load(Ordering::Relaxed) => {
                return Err(CallError::new(
                    ErrorCode::Aborted,
                    format!(
                        "the parent call {} has already ended",
                        protocol::clip(named)
                    ),
                ))
            }
            None => return Err(not_served_here()),
        };
        let max = self.shared.limits.max_call_depth;
        if depth > max {
            return Err(CallError::new(
                ErrorCode::Overloaded,
                format!(
                    "the call would be link {depth} of a chain of calls, \
                     more than limits.max_call_depth ({max})"
                ),
            ));
        }
        Ok(Some(Parent { id, depth }))
    }

    /// Finds the definition and checks that `identity` may call it.
    fn lookup(
        &self,
        operation_id: &str,
        identity: Option<&Identity>,
    ) -> Result<Arc<Entry>, CallError> {
        let not_found = || {
            CallError::new(
                ErrorCode::OperationNotFound,
                format!("operation {operation_id} not found"),
            )
        };
        let catalog = &self.shared.catalog;
        let Some(entry) = catalog.get(operation_id) else {
            // Start-up lists the stored definitions after it listens: until
            // then an id it has not loaded yet may well exist, and none can
            // have a provider yet.
            if catalog.is_loading() {
                return Err(CallError::new(
                    ErrorCode::NoProvider,
                    format!(
                        "operation {} has no connected provider (the hub is starting)",
                        protocol::clip(operation_id)
                    ),
                ));
            }
            return Err(not_found());
        };
        match check_access(&entry, identity) {
            Access::Allowed => Ok(entry),
            Access::Hidden => Err(not_found()),
            Access::Unauthenticated => Err(CallError::new(
                ErrorCode::Unauthenticated,
                format!("operation {operation_id} needs a valid token"),
            )),
            Access::Denied(missing) => Err(CallError::new(
                ErrorCode::AccessDenied,
                format!(
                    "operation {operation_id} requires scopes the caller lacks: {}",
                    missing.join(", ")
                ),
            )),
        }
    }

    /// Asks the routing policy which provider serves the call.
    fn route(
        &self,
        entry: &Entry,
        identity: Option<&Identity>,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<usize, CallError> {
        let sequence = entry.sequence.fetch_add(1, Ordering::Relaxed);
        let routing = self.shared.routing.read().unwrap().clone();
        if entry.providers.len() == 1 && !routing.wants_single_candidate(&entry.definition.id) {
            return Ok(0);
        }
        // With many registrations the policy sees a window of them, which
        // moves on by its width with every call: over a round every
        // provider is seen, and a decision costs the same at 5 or 5,000.
        let all = entry.providers.len();
        let max = self.shared.limits.max_routing_candidates;
        let (start, width) = if max == 0 || all <= max {
            (0, all)
        } else {
            ((sequence as usize % all).wrapping_mul(max) % all, max)
        };
        let provider_at = |i: usize| (start + i) % all;
        let candidates: Vec<Candidate<'_>> = (0..width)
            .map(|i| {
                let p = &entry.providers[provider_at(i)];
                Candidate {
                    registration_id: &p.registration_id,
                    provider_id: &p.connection.identity.id,
                    labels: &p.connection.labels,
                    in_flight: p.in_flight.load(Ordering::Relaxed),
                    connected_at_ms: p.connection.connected_at_ms,
                }
            })
            .collect();
        let call = RouteCall {
            operation_id: &entry.definition.id,
            op_type: entry.definition.spec.op_type,
            caller: identity,
            metadata,
            sequence,
        };
        let chosen = match routing.choose(&call, &candidates) {
            Decision::Choose(i) => Some(i),
            Decision::Ordered(order) => order.into_iter().find(|&i| {
                i < width
                    && !entry.providers[provider_at(i)]
                        .connection
                        .calls
                        .lock()
                        .unwrap()
                        .gone
            }),
            Decision::Refuse(reason) => {
                return Err(CallError::new(
                    ErrorCode::RoutingError,
                    format!("routing refused the call: {reason}"),
                ))
            }
        };
        chosen
            .filter(|&i| i < width)
            .map(provider_at)
            .ok_or_else(|| {
                CallError::new(
                    ErrorCode::RoutingError,
                    format!("the routing policy chose no valid candidate among {width}"),
                )
            })
    }

    /// Records the call and sends it to the chosen provider.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        caller: Caller,
        identity: Option<&Identity>,
        entry: &Entry,
        chosen: usize,
        request: &CallRequest<'_>,
        input: Option<&RawValue>,
        arrival: Arrival,
    ) -> Result<u64, CallError> {
        let Arrival {
            parent,
            deadline,
            started,
        } = arrival;
        let provider = &entry.providers[chosen];
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let hub_request_id = format!("h{id}");
        let idle = request.idle_timeout_ms.map(Duration::from_millis);
        let anonymous = anonymous_identity();
        let frame = protocol::frame(
            "call.requested",
            &ForwardedCall {
                request_id: &hub_request_id,
                operation_id: &provider.pre_remap_id,
                input,
                parent_request_id: request.parent_request_id,
                deadline: request.deadline_ms,
                idle_timeout: request.idle_timeout_ms,
                metadata: request.metadata.as_ref(),
                identity: identity.unwrap_or(&anonymous),
            },
        );
        // Order matters: the call is in the caller's and the provider's
        // books before it is in the shard, so that whoever ends it (a
        // departure, a parent's cascade, shutdown) finds every trace of it.
        let caller_calls = match &caller {
            Caller::Connection {
                connection,
                request_id,
            } => {
                connection
                    .calls
                    .lock()
                    .unwrap()
                    .calling
                    .insert(request_id.clone(), id);
                Some((connection.clone(), request_id.clone()))
            }
            Caller::Channel(_) => None,
        };
        let accepted = {
            let mut calls = provider.connection.calls.lock().unwrap();
            if !calls.gone {
                calls.serving.insert(id);
            }
            !calls.gone
        };
        if !accepted {
            if let Some((connection, request_id)) = caller_calls {
                connection.calls.lock().unwrap().calling.remove(&request_id);
            }
            return Err(CallError::new(
                ErrorCode::ProviderGone,
                "the provider disconnected before it answered",
            ));
        }
        provider.in_flight.fetch_add(1, Ordering::Relaxed);
        self.shard(id).lock().unwrap().insert(
            id,
            Call {
                caller,
                provider: provider.connection.clone(),
                in_flight: provider.in_flight.clone(),
                op_type: entry.definition.spec.op_type,
                operation_id: entry.definition.id.as_str().into(),
                parent: parent.map(|p| p.id),
                depth: parent.map_or(1, |p| p.depth),
                children: HashSet::new(),
                timer: None,
                deadline,
                idle,
                last_event: Instant::now(),
                started,
                stats: self.shared.metrics.namespace_of(&entry.definition.id),
            },
        );
        if let Some(parent) = parent {
            // Under the parent's shard lock, so that either the parent's end
            // sees this child or this sees the parent gone.
            let linked = self
                .shard(parent.id)
                .lock()
                .unwrap()
                .get_mut(&parent.id)
                .map(|p| p.children.insert(id))
                .is_some();
            if !linked {
                self.finish(id, End::ParentAlreadyEnded);
                return Ok(id);
            }
        }
        if !provider.connection.send(frame) {
            self.finish(id, End::ProviderGone);
        } else if deadline.is_some() || idle.is_some() {
            self.arm_timer(id);
        }
        Ok(id)
    }

    /// Watches a call's deadline and idle timeout.
    fn arm_timer(&self, id: u64) {
        let dispatcher = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let wake = {
                    let shard = dispatcher.shard(id).lock().unwrap();
                    let Some(call) = shard.get(&id) else { return };
                    let idle_at = call.idle.map(|d| call.last_event + d);
                    match (call.deadline, idle_at) {
                        (Some(a), Some(b)) => a.min(b),
                        (Some(a), None) | (None, Some(a)) => a,
                        (None, None) => return,
                    }
                };
                tokio::time::sleep_until(wake.into()).await;
                let now = Instant::now();
                let expired = {
                    let shard = dispatcher.shard(id).lock().unwrap();
                    let Some(call) = shard.get(&id) else { return };
                    if call.deadline.is_some_and(|d| d <= now) {
                        Some("the call's deadline passed")
                    } else if call.idle.is_some_and(|d| call.last_event + d <= now) {
                        Some("no event within the call's idleTimeout")
                    } else {
                        None
                    }
                };
                if let Some(why) = expired {
                    dispatcher.finish(id, End::Timeout(why));
                    return;
                }
            }
        });
        if let Some(call) = self.shard(id).lock().unwrap().get_mut(&id) {
            call.timer = Some(task.abort_handle());
        } else {
            task.abort();
        }
    }

    /// An event from the provider of a call: `call.responded`,
    /// `call.completed`, `call.error` or `call.aborted`.
    pub fn provider_event(
        &self,
        from: &Connection,
        kind: &str,
        event: protocol::CallEventIn<'_>,
    ) -> Result<(), CallError> {
        let Some(id) = parse_hub_id(&event.request_id) else {
            return Err(CallError::new(
                ErrorCode::ProtocolError,
                format!(
                    "{kind} names requestId {:?}, which is not a call the hub sent",
                    event.request_id
                ),
            ));
        };
        // One look at the call: its operation (for the envelope), and for a
        // streamed result the caller it goes to.
        let (operation_id, streaming) = {
            let mut shard = self.shard(id).lock().unwrap();
            match shard.get_mut(&id) {
                // Late events of calls that already ended (timed out, aborted) are dropped.
                None => return Ok(()),
                Some(call) if call.provider.session_id != from.session_id => return Ok(()),
                Some(call)
                    if kind == "call.responded" && call.op_type == OperationType::Subscription =>
                {
                    call.last_event = Instant::now();
                    (call.operation_id.clone(), Some(call.caller.clone()))
                }
                Some(call) => (call.operation_id.clone(), None),
            }
        };
        let end = match kind {
            "call.responded" => {
                let Some(output) = event.output else {
                    return Err(CallError::new(
                        ErrorCode::ProtocolError,
                        "call.responded needs an output",
                    ));
                };
                let output = normalize_output(output, &operation_id);
                if let Some(caller) = streaming {
                    deliver(&caller, End::Responded(output));
                    return Ok(());
                }
                End::Responded(output)
            }
            "call.completed" if self.op_type_of(id) == Some(OperationType::Subscription) => {
                End::Completed
            }
            "call.completed" => End::Error(CallError::new(
                ErrorCode::ExecutionError,
                "the provider completed the call without a result",
            )),
            "call.error" => End::Error(CallError {
                code: event
                    .code
                    .map(|c| Cow::Owned(c.into_owned()))
                    .unwrap_or(Cow::Borrowed(ErrorCode::ExecutionError.as_str())),
                message: event
                    .message
                    .map(Cow::into_owned)
                    .unwrap_or_else(|| "the provider reported an error".to_owned()),
                details: event.details.map(|d| d.to_owned()),
            }),
            _ => End::ProviderAborted,
        };
        self.finish(id, end);
        Ok(())
    }

    fn op_type_of(&self, id: u64) -> Option<OperationType> {
        self.shard(id).lock().unwrap().get(&id).map(|c| c.op_type)
    }

    /// The caller's `call.aborted`: stops the call and tells its provider.
    pub fn caller_abort(&self, from: &Connection, request_id: &str) {
        let id = from.calls.lock().unwrap().calling.get(request_id).copied();
        if let Some(id) = id {
            self.finish(id, End::CallerAborted);
        }
    }

    /// Aborts an open call of a channel caller (an HTTP client that left).
    pub fn abort_by_hub_id(&self, id: u64) {
        self.finish(id, End::CallerAborted);
    }

    /// A peer left: its calls as caller are aborted at their providers, the
    /// calls it served end with `PROVIDER_GONE`.
    pub fn connection_gone(&self, connection: &Connection) {
        let (calling, serving) = {
            let mut calls = connection.calls.lock().unwrap();
            calls.gone = true;
            (
                std::mem::take(&mut calls.calling),
                std::mem::take(&mut calls.serving),
            )
        };
        for id in calling.into_values() {
            self.finish(id, End::CallerGone);
        }
        for id in serving {
            self.finish(id, End::ProviderGone);
        }
    }

    /// Ends every open call (hub shutdown): callers get `ABORTED`, providers `call.aborted`.
    pub fn abort_all(&self) {
        let ids: Vec<u64> = self
            .shared
            .calls
            .iter()
            .flat_map(|s| s.lock().unwrap().keys().copied().collect::<Vec<_>>())
            .collect();
        for id in ids {
            self.finish(id, End::Shutdown);
        }
    }

    /// Ends a call exactly once: tells the caller and, when the call stops
    /// early, the provider; then ends the call's children, and theirs, from
    /// a work list (a chain may be as deep as `limits.max_call_depth`).
    fn finish(&self, id: u64, end: End) {
        let mut work = vec![(id, end)];
        while let Some((id, end)) = work.pop() {
            if let Some(children) = self.finish_one(id, end) {
                work.extend(children.into_iter().map(|c| (c, End::ParentEnded)));
            }
        }
    }

    /// Ends one call; returns its children when they must end too.
    fn finish_one(&self, id: u64, end: End) -> Option<HashSet<u64>> {
        let call = self.shard(id).lock().unwrap().remove(&id)?;
        if let Some(parent) = call.parent {
            if let Some(parent) = self.shard(parent).lock().unwrap().get_mut(&parent) {
                parent.children.remove(&id);
            }
        }
        call.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(timer) = &call.timer {
            timer.abort();
        }
        if !matches!(end, End::ProviderGone) {
            call.provider.calls.lock().unwrap().serving.remove(&id);
        }
        if let Caller::Connection {
            connection,
            request_id,
        } = &call.caller
        {
            if !matches!(end, End::CallerGone) {
                connection.calls.lock().unwrap().calling.remove(request_id);
            }
        }
        if matches!(
            end,
            End::Timeout(_)
                | End::CallerAborted
                | End::CallerGone
                | End::ParentEnded
                | End::Shutdown
        ) {
            call.provider.send(protocol::frame(
                "call.aborted",
                &RequestIdOnly {
                    request_id: &format!("h{id}"),
                },
            ));
        }
        let early = end.is_early();
        self.shared
            .metrics
            .ended(&call.stats, end.outcome(), call.started.elapsed());
        deliver(&call.caller, end);
        early.then_some(call.children)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestIdOnly<'a> {
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RespondedOut<'a> {
    request_id: &'a str,
    output: &'a RawValue,
}

/// Tells the caller how its call ended (or sends one streamed result).
fn deliver(caller: &Caller, end: End) {
    let event = match end {
        End::Responded(output) => CallEvent::Responded(output),
        End::Completed => CallEvent::Completed,
        End::Error(e) => CallEvent::Error(e),
        End::Timeout(why) => CallEvent::Error(CallError::new(ErrorCode::Timeout, why)),
        End::ProviderGone => CallEvent::Error(CallError::new(
            ErrorCode::ProviderGone,
            "the provider disconnected before it answered",
        )),
        End::ParentEnded => CallEvent::Error(CallError::new(
            ErrorCode::Aborted,
            "the parent call ended early",
        )),
        End::ParentAlreadyEnded => CallEvent::Error(CallError::new(
            ErrorCode::Aborted,
            "the parent call has already ended",
        )),
        End::ProviderAborted => CallEvent::Error(CallError::new(
            ErrorCode::Aborted,
            "the provider aborted the call",
        )),
        End::Shutdown => CallEvent::Error(CallError::new(
            ErrorCode::Aborted,
            "the hub is shutting down",
        )),
        End::CallerAborted | End::CallerGone => return,
    };
    match caller {
        Caller::Channel(tx) => {
            let bytes = match &event {
                CallEvent::Responded(output) => output.get().len(),
                CallEvent::Error(e) => {
                    e.message.len() + e.details.as_ref().map_or(0, |d| d.get().len())
                }
                CallEvent::Completed => 0,
            };
            tx.send(event, bytes);
        }
        Caller::Connection {
            connection,
            request_id,
        } => {
            connection.send(event_frame(request_id, &event));
        }
    }
}

/// The frame a WebSocket caller receives for `event`.
pub fn event_frame(request_id: &str, event: &CallEvent) -> String {
    match event {
        CallEvent::Responded(output) => {
            protocol::frame("call.responded", &RespondedOut { request_id, output })
        }
        CallEvent::Completed => protocol::frame("call.completed", &RequestIdOnly { request_id }),
        CallEvent::Error(e) => protocol::frame(
            "call.error",
            &protocol::CallErrorOut {
                request_id,
                code: &e.code,
                message: &e.message,
                details: e.details.as_deref(),
            },
        ),
    }
}

/// A call's absolute deadline (ms since the Unix epoch) as an `Instant`;
/// `TIMEOUT` when it has already passed.
fn deadline_of(deadline_ms: Option<u64>) -> Result<Option<Instant>, CallError> {
    let Some(at) = deadline_ms else {
        return Ok(None);
    };
    let now = now_ms();
    if at <= now {
        return Err(CallError::new(
            ErrorCode::Timeout,
            "the call's deadline has already passed",
        ));
    }
    // A deadline past what an `Instant` can hold is none at all.
    Ok(Instant::now().checked_add(Duration::from_millis(at - now)))
}

fn parse_hub_id(request_id: &str) -> Option<u64> {
    request_id.strip_prefix('h')?.parse().ok()
}

fn anonymous_identity() -> Identity {
    Identity {
        kind: PrincipalKind::Client,
        id: String::new(),
        scopes: Vec::new(),
    }
}

/// Whether a caller may call (and see) an operation.
pub enum Access {
    /// It may.
    Allowed,
    /// It may not and must not learn that the operation exists.
    Hidden,
    /// It needs a token.
    Unauthenticated,
    /// It lacks these scopes.
    Denied(Vec<String>),
}

/// The access rules of protocol section 3.
pub fn check_access(entry: &Entry, identity: Option<&Identity>) -> Access {
    let spec = &entry.definition.spec;
    match (spec.access_level, identity) {
        (AccessLevel::Public, _) => Access::Allowed,
        (AccessLevel::Internal, Some(who)) if who.kind == PrincipalKind::Spoke => Access::Allowed,
        (AccessLevel::Internal, _) => Access::Hidden,
        (_, None) => Access::Unauthenticated,
        (AccessLevel::Authenticated, Some(_)) => Access::Allowed,
        (AccessLevel::Scoped, Some(who)) => {
            let missing: Vec<String> = spec
                .required_scopes
                .iter()
                .filter(|s| !who.scopes.contains(s))
                .cloned()
                .collect();
            if missing.is_empty() {
                Access::Allowed
            } else {
                Access::Denied(missing)
            }
        }
    }
}

impl Dispatcher {
    /// Checks the input against the compiled schema. Returns the parsed
    /// input, which is what the provider receives.
    ///
    /// Small inputs are validated right here; larger ones (over
    /// `limits.inline_validation_bytes`) inside `block_in_place`, which
    /// hands this worker's other tasks to another thread first, so a costly
    /// validation delays only the call (and the session) it belongs to.
    fn validate(
        &self,
        entry: &Entry,
        input: Option<&RawValue>,
    ) -> Result<Option<serde_json::Value>, CallError> {
        let Some(validator) = entry.validator() else {
            return Ok(None);
        };
        let max_depth = self.shared.limits.max_input_depth;
        let judge = || -> Result<serde_json::Value, CallError> {
            let value = read_input(input, max_depth)?;
            let errors: Vec<serde_json::Value> = validator
                .iter_errors(&value)
                .take(32)
                .map(|e| serde_json::json!({"instancePath": protocol::clip(&e.instance_path().to_string()), "message": protocol::clip(&e.to_string())}))
                .collect();
            if errors.is_empty() {
                return Ok(value);
            }
            let mut error = CallError::new(
                ErrorCode::ValidationError,
                format!(
                    "input does not match the input schema of {}",
                    entry.definition.id
                ),
            );
            error.details =
                serde_json::value::to_raw_value(&serde_json::json!({ "errors": errors })).ok();
            Err(error)
        };
        let large =
            input.is_some_and(|raw| raw.get().len() > self.shared.limits.inline_validation_bytes);
        let value = if large && on_multi_thread_runtime() {
            tokio::task::block_in_place(judge)?
        } else {
            judge()?
        };
        Ok(Some(value))
    }
}

fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Reads an input as the value a validator (or a built-in) judges. Input
/// the parser cannot represent (a number out of range such as `1e400`) or
/// nested deeper than `max_depth` is a `VALIDATION_ERROR`: it must never
/// pass as something else, such as `null`.
fn read_input(input: Option<&RawValue>, max_depth: u32) -> Result<serde_json::Value, CallError> {
    let Some(raw) = input else {
        return Ok(serde_json::Value::Null);
    };
    let unreadable = |message: String| {
        let mut error = CallError::new(ErrorCode::ValidationError, message.clone());
        error.details = serde_json::value::to_raw_value(
            &serde_json::json!({"errors": [{"instancePath": "", "message": message}]}),
        )
        .ok();
        error
    };
    if nesting_exceeds(raw.get(), max_depth) {
        return Err(unreadable(format!(
            "input nests arrays and objects deeper than limits.max_input_depth ({max_depth})"
        )));
    }
    serde_json::from_str(raw.get())
        .map_err(|e| unreadable(format!("input cannot be read as a JSON value: {e}")))
}

/// Whether arrays and objects in `json` (valid JSON text) nest deeper than
/// `max`. A scan of the bytes, so that depth is refused before any parser
/// recurses into it.
fn nesting_exceeds(json: &str, max: u32) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// One token bucket per principal (`limits.calls_per_second_per_principal`,
/// `limits.call_burst_per_principal`). Anonymous callers share one bucket:
/// the call path knows no address to tell them apart.
struct RateLimiter {
    per_second: f64,
    burst: f64,
    // Principals are hashed with a per-process random key, so no peer can
    // aim for another's bucket, and the hot path allocates no key.
    hasher: std::hash::RandomState,
    shards: Box<[Mutex<Buckets>]>,
}

#[derive(Default)]
struct Buckets {
    by_principal: HashMap<u64, Bucket>,
    /// Size at which idle buckets are swept next.
    sweep_at: usize,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets one shard holds before it sweeps out full (idle) ones.
const BUCKETS_BEFORE_SWEEP: usize = 256;

impl RateLimiter {
    fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            hasher: std::hash::RandomState::new(),
            shards: (0..16).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes one token of the caller's bucket, or says when to retry.
    fn admit(&self, identity: Option<&Identity>) -> Result<(), CallError> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let key = self
            .hasher
            .hash_one(identity.map(|i| (i.kind, i.id.as_str())));
        let now = Instant::now();
        let tokens = {
            let mut shard = self.shards[(key % 16) as usize].lock().unwrap();
            if shard.by_principal.len() >= shard.sweep_at {
                // A bucket that has refilled is the same as no bucket: drop
                // those, so the map holds only principals active lately.
                let (per_second, burst) = (self.per_second, self.burst);
                shard.by_principal.retain(|_, b| {
                    b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
                });
                shard.sweep_at = (shard.by_principal.len() * 2).max(BUCKETS_BEFORE_SWEEP);
            }
            let bucket = shard.by_principal.entry(key).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            });
            let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return Ok(());
            }
            bucket.tokens
        };
        let retry_after_ms = (((1.0 - tokens) / self.per_second) * 1000.0)
            .ceil()
            .max(1.0) as u64;
        let mut error = CallError::new(
            ErrorCode::Overloaded,
            format!(
                "the caller started calls faster than limits.calls_per_second_per_principal ({}) \
                 with limits.call_burst_per_principal ({}) allows; retry in {retry_after_ms} ms",
                self.per_second, self.burst
            ),
        );
        error.details =
            serde_json::value::to_raw_value(&serde_json::json!({ "retryAfterMs": retry_after_ms }))
                .ok();
        Err(error)
    }
}

/// The top-level members of an output object, unparsed. A member present
/// with the value `null` counts as present.
#[derive(Deserialize)]
struct EnvelopeProbe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Passes an output envelope through, filling in `meta` when the provider
/// left it out (protocol section 4).
fn normalize_output(output: &RawValue, operation_id: &str) -> Box<RawValue> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta<'a> {
        source: &'static str,
        operation_id: &'a str,
        timestamp: u64,
    }
    #[derive(Serialize)]
    struct Envelope<'a> {
        data: &'a RawValue,
        meta: Meta<'a>,
    }
    // Only an object can be an envelope (serde would also read an array
    // positionally into the probe).
    let probe = if output.get().starts_with('{') {
        serde_json::from_str::<EnvelopeProbe<'_>>(output.get()).ok()
    } else {
        None
    };
    let data = match probe {
        // `meta: null` is no meta: the caller always gets one (4.4).
        Some(EnvelopeProbe {
            meta: Some(meta), ..
        }) if meta.get() != "null" => return output.to_owned(),
        Some(EnvelopeProbe {
            data: Some(data), ..
        }) => Some(data),
        // Not an object, or an object with neither member: all of it is the data.
        _ => Some(output),
    };
    let null = RawValue::NULL;
    let envelope = Envelope {
        data: data.unwrap_or(null),
        meta: Meta {
            source: "local",
            operation_id,
            timestamp: now_ms(),
        },
    };
    serde_json::value::to_raw_value(&envelope).expect("envelope serializes")
}

#[cfg(test)]
mod tests {
    use super::normalize_output;
    use serde_json::{json, value::RawValue, Value};

    fn normalized(output: &str) -> Value {
        let raw = RawValue::from_string(output.to_owned()).unwrap();
        serde_json::from_str(normalize_output(&raw, "a.b").get()).unwrap()
    }

    #[test]
    fn outputs_get_an_envelope_only_when_they_lack_meta() {
        let kept = r#"{"data":1,"meta":{"source":"http"}}"#;
        assert_eq!(
            normalized(kept),
            serde_json::from_str::<Value>(kept).unwrap()
        );
        assert_eq!(normalized(r#"{"data":null}"#)["data"], Value::Null);
        assert_eq!(normalized(r#"{"data":null}"#)["meta"]["operationId"], "a.b");
        assert_eq!(normalized(r#"{"rows":3}"#)["data"], json!({"rows": 3}));
        assert_eq!(normalized("[1, 2]")["data"], json!([1, 2]));
        assert_eq!(normalized("7")["data"], json!(7));
        let filled = normalized(r#"{"data":5,"meta":null}"#);
        assert_eq!(
            (filled["data"].clone(), filled["meta"]["source"].clone()),
            (json!(5), json!("local"))
        );
        assert_eq!(
            normalized(r#"{"meta":null}"#)["data"],
            json!({"meta": null})
        );
    }
}
