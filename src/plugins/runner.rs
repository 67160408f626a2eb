//! One loaded plugin version: its warm instances, the three limits of each
//! decision, and its counters.
//!
//! Limits per decision: the epoch deadline interrupts a guest that runs too
//! long (hard stop); the [`Limiter`] caps its linear memories and tables and
//! how many core instances, memories and tables it creates; the wall-clock
//! check after the call rejects an answer that came too late. An instance
//! that trapped is dropped; one that answered goes back to the pool until it
//! reaches `max_uses`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store};

use super::bindings::{
    one_line, remap, remap_v1, remap_v2, routing, routing_v1, routing_v2, PluginState,
    MAX_CAPTURED, MAX_MESSAGE,
};
use super::loader::{engine, World, EPOCH_TICK};
use super::PluginStatus;
use crate::config::PluginLimits;
use crate::policy::{Candidate, Decision, Declared, RemapProvider, RemapResult, RouteCall};
use crate::protocol::{OperationType, PrincipalKind};

/// The resource limiter of one instance's store: the caps of
/// [`PluginLimits`], and a note of the growth it refused, so that a failed
/// decision is known to have hit a limit from what the limiter did rather
/// than from the wording of the guest's trap (a guest whose `memory.grow`
/// fails usually traps on its own, with `unreachable` or an abort).
pub struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    /// The growth refused since the flag was last cleared.
    pub refused: Option<Refused>,
}

/// A growth the [`Limiter`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A linear memory asked for this many bytes.
    Memory(usize),
    /// A table asked for this many elements.
    Table(usize),
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: &PluginLimits) -> Self {
        Limiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances,
            tables: limits.tables,
            memories: limits.memories,
            refused: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused = Some(Refused::Memory(desired));
            return Ok(false);
        }
        // A module's own maximum is its business, not a limit of ours.
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.refused = Some(Refused::Table(desired));
            return Ok(false);
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

/// A component checked against its world, ready to instantiate.
pub enum Prepared {
    /// A routing plugin; true when it imports `call-details`.
    Routing(routing::RoutingPluginPre<PluginState>, bool),
    /// A remap plugin.
    Remap(remap::RemapPluginPre<PluginState>),
    /// A routing plugin built against 0.2.0; true when it imports `call-details`.
    RoutingV2(routing_v2::RoutingPluginPre<PluginState>, bool),
    /// A remap plugin built against 0.2.0.
    RemapV2(remap_v2::RemapPluginPre<PluginState>),
    /// A routing plugin built against 0.1.0.
    RoutingV1(routing_v1::RoutingPluginPre<PluginState>),
    /// A remap plugin built against 0.1.0.
    RemapV1(remap_v1::RemapPluginPre<PluginState>),
}

impl Prepared {
    /// The world.
    pub fn world(&self) -> World {
        match self {
            Prepared::Routing(..) | Prepared::RoutingV2(..) | Prepared::RoutingV1(_) => {
                World::Routing
            }
            Prepared::Remap(_) | Prepared::RemapV2(_) | Prepared::RemapV1(_) => World::Remap,
        }
    }

    /// The version of `alkdev:hub` the component was built against.
    pub fn wit_version(&self) -> &'static str {
        match self {
            Prepared::Routing(..) | Prepared::Remap(_) => "0.3.0",
            Prepared::RoutingV2(..) | Prepared::RemapV2(_) => "0.2.0",
            Prepared::RoutingV1(_) | Prepared::RemapV1(_) => "0.1.0",
        }
    }
}

enum Bound {
    Routing(routing::RoutingPlugin),
    Remap(remap::RemapPlugin),
    RoutingV2(routing_v2::RoutingPlugin),
    RemapV2(remap_v2::RemapPlugin),
    RoutingV1(routing_v1::RoutingPlugin),
    RemapV1(remap_v1::RemapPlugin),
}

struct Warm {
    store: Store<PluginState>,
    bound: Bound,
    uses: u64,
}

#[derive(Default)]
struct Health {
    consecutive_failures: u32,
    quarantined_until: Option<Instant>,
    last_error: Option<String>,
}

/// One version of one plugin.
pub struct Plugin {
    /// Its name.
    pub name: Arc<str>,
    /// First 16 hex digits of the component's digest: of its bytes, or of
    /// the source its build recorded ([`super::loader::component_digest`]).
    pub version: String,
    /// The file it came from; `None` for an embedded default.
    pub path: Option<PathBuf>,
    prepared: Prepared,
    settings: Arc<str>,
    /// Its limits and failure policy.
    pub limits: PluginLimits,
    warm: Mutex<Vec<Warm>>,
    health: Mutex<Health>,
    /// False while the plugin has no failure on record: the hot path then
    /// reads this flag instead of locking `health`.
    troubled: AtomicBool,
    decisions: AtomicU64,
    failures: AtomicU64,
    quarantines: AtomicU64,
    latency_ns: AtomicU64,
    /// The last `warn` or `error` message the plugin logged.
    last_message: Mutex<Option<String>>,
    /// When set, every line the plugin logs is kept (`alkhub plugin run`).
    captured: Option<Mutex<Vec<String>>>,
}

/// One remap decision through the bindings of one version (each has its own
/// types, all of the same shape).
macro_rules! remap_through {
    ($plugin:ident, $world:ident, $bound:ident, $provider:ident, $op:ident) => {{
        use $world::exports::alkdev::hub::remap as r;
        let labels: Vec<_> = $provider
            .labels
            .iter()
            .map(|(k, v)| $world::alkdev::hub::types::Label { key: k, value: v })
            .collect();
        let w_provider = r::Provider {
            kind: $provider.kind.into(),
            id: $provider.id,
            name: $provider.name,
            labels: &labels,
        };
        let w_op = r::Declared {
            namespace: $op.namespace,
            name: $op.name,
            type_: $op.op_type.into(),
        };
        let answer = $plugin.run(|warm| match &warm.bound {
            Bound::$bound(plugin) => {
                plugin
                    .alkdev_hub_remap()
                    .call_remap(&mut warm.store, w_provider, w_op)
            }
            _ => Err(wasmtime::Error::msg("the instance is of another world")),
        })?;
        Ok(answer.map(|m| (m.namespace, m.name)))
    }};
}

/// One routing decision through the bindings of a version with
/// `call-details` (0.2.0 and later): numbers in the arguments, strings read
/// on demand.
macro_rules! route_through {
    ($plugin:ident, $world:ident, $bound:ident, $call:ident, $candidates:ident, $reads_details:expr) => {{
        use $world::exports::alkdev::hub::routing as r;
        let reads_details = $reads_details;
        let w_call = r::Call {
            type_: $world::alkdev::hub::types::OperationType::from($call.op_type),
            caller_kind: $call
                .caller
                .map(|c| $world::alkdev::hub::types::PrincipalKind::from(c.kind)),
            sequence: $call.sequence,
        };
        let w_candidates: Vec<r::Candidate> = $candidates
            .iter()
            .map(|c| r::Candidate {
                in_flight: c.in_flight,
                connected_at_ms: c.connected_at_ms,
            })
            .collect();
        let answer = $plugin.run(|warm| {
            let Bound::$bound(plugin) = &warm.bound else {
                return Err(wasmtime::Error::msg("the instance is of another version"));
            };
            if reads_details {
                warm.store.data_mut().details.fill($call, $candidates);
            }
            let answer =
                plugin
                    .alkdev_hub_routing()
                    .call_choose(&mut warm.store, w_call, &w_candidates);
            if reads_details {
                warm.store.data_mut().details.clear();
            }
            answer
        })?;
        use r::Decision as D;
        Ok(match answer {
            D::Choose(i) => Decision::Choose(i as usize),
            D::Ordered(order) => Decision::Ordered(order.into_iter().map(|i| i as usize).collect()),
            D::Refuse(reason) => Decision::Refuse(reason),
        })
    }};
}

impl Plugin {
    /// A plugin ready to make decisions.
    pub fn new(
        name: &str,
        version: String,
        path: Option<PathBuf>,
        prepared: Prepared,
        settings: Arc<str>,
        limits: PluginLimits,
    ) -> Self {
        Plugin {
            name: name.into(),
            version,
            path,
            prepared,
            settings,
            limits,
            warm: Mutex::default(),
            health: Mutex::default(),
            troubled: AtomicBool::new(false),
            decisions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            quarantines: AtomicU64::new(0),
            latency_ns: AtomicU64::new(0),
            last_message: Mutex::default(),
            captured: None,
        }
    }

    /// Keeps every line the plugin logs, for [`Plugin::take_log`].
    pub fn capturing_log(mut self) -> Self {
        self.captured = Some(Mutex::default());
        self
    }

    /// The lines logged since the last call (empty unless capturing).
    pub fn take_log(&self) -> Vec<String> {
        self.captured
            .as_ref()
            .map(|c| std::mem::take(&mut *c.lock().unwrap()))
            .unwrap_or_default()
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.prepared.world()
    }

    /// Its settings, as handed to the `config` import.
    pub fn settings(&self) -> &Arc<str> {
        &self.settings
    }

    /// The version of `alkdev:hub` it was built against.
    pub fn wit_version(&self) -> &'static str {
        self.prepared.wit_version()
    }

    /// A new instance, or why it could not be made within the limits.
    fn instantiate(&self) -> Result<Warm, String> {
        let mut store = Store::new(
            engine(),
            PluginState::new(
                self.name.clone(),
                self.settings.clone(),
                Limiter::new(&self.limits),
            ),
        );
        if self.captured.is_some() {
            store.data_mut().captured = Some(Vec::new());
        }
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let bound = match &self.prepared {
            Prepared::Routing(pre, _) => pre.instantiate(&mut store).map(Bound::Routing),
            Prepared::Remap(pre) => pre.instantiate(&mut store).map(Bound::Remap),
            Prepared::RoutingV2(pre, _) => pre.instantiate(&mut store).map(Bound::RoutingV2),
            Prepared::RemapV2(pre) => pre.instantiate(&mut store).map(Bound::RemapV2),
            Prepared::RoutingV1(pre) => pre.instantiate(&mut store).map(Bound::RoutingV1),
            Prepared::RemapV1(pre) => pre.instantiate(&mut store).map(Bound::RemapV1),
        };
        match bound {
            Ok(bound) => Ok(Warm {
                store,
                bound,
                uses: 0,
            }),
            Err(e) => {
                let refused = store.data().limits.refused;
                Err(match describe_limit(refused, &self.limits) {
                    Some(limit) => format!("cannot instantiate: {limit}"),
                    None => format!(
                        "cannot instantiate within instances = {}, tables = {}, memories = {}: {e:#}",
                        self.limits.instances, self.limits.tables, self.limits.memories
                    ),
                })
            }
        }
    }

    fn deadline_ticks(&self) -> u64 {
        (Duration::from_millis(self.limits.epoch_deadline_ms).as_nanos() / EPOCH_TICK.as_nanos())
            .max(1) as u64
    }

    /// Runs `decide` on a warm instance (or a new one) within the limits.
    fn run<R>(&self, decide: impl FnOnce(&mut Warm) -> wasmtime::Result<R>) -> Result<R, String> {
        let started = Instant::now();
        let pooled = self.warm.lock().unwrap().pop();
        let mut warm = match pooled {
            Some(w) => w,
            None => self.instantiate()?,
        };
        warm.store.set_epoch_deadline(self.deadline_ticks());
        warm.store.data_mut().limits.refused = None;
        let result = decide(&mut warm);
        let elapsed = started.elapsed();
        let message = warm.store.data_mut().last_message.take();
        if let Some(captured) = &self.captured {
            let lines = warm.store.data_mut().captured.as_mut().map(std::mem::take);
            let mut captured = captured.lock().unwrap();
            let room = MAX_CAPTURED.saturating_sub(captured.len());
            captured.extend(lines.unwrap_or_default().into_iter().take(room));
        }
        if let Some(message) = &message {
            *self.last_message.lock().unwrap() = Some(message.clone());
        }
        self.decisions.fetch_add(1, Ordering::Relaxed);
        self.latency_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(answer) => {
                warm.uses += 1;
                if warm.uses < self.limits.max_uses {
                    self.warm.lock().unwrap().push(warm);
                }
                if elapsed > Duration::from_micros(self.limits.timeout_us) {
                    return Err(format!(
                        "the decision took {} µs, over timeout_us = {}",
                        elapsed.as_micros(),
                        self.limits.timeout_us
                    ));
                }
                Ok(answer)
            }
            // A trapped instance is dropped: its state cannot be trusted.
            Err(trap) => {
                tracing::debug!(plugin = %self.name, trap = ?trap, "plugin trapped");
                let refused = warm.store.data().limits.refused;
                Err(describe_trap(&trap, refused, &self.limits, message))
            }
        }
    }

    /// Asks a routing plugin for a decision.
    pub fn route(
        &self,
        call: &RouteCall<'_>,
        candidates: &[Candidate<'_>],
    ) -> Result<Decision, String> {
        match &self.prepared {
            Prepared::Routing(_, reads_details) => {
                route_through!(self, routing, Routing, call, candidates, *reads_details)
            }
            Prepared::RoutingV2(_, reads_details) => {
                route_through!(
                    self,
                    routing_v2,
                    RoutingV2,
                    call,
                    candidates,
                    *reads_details
                )
            }
            Prepared::RoutingV1(_) => self.route_v1(call, candidates),
            Prepared::Remap(_) | Prepared::RemapV2(_) | Prepared::RemapV1(_) => {
                Err("a remap plugin cannot route".into())
            }
        }
    }

    /// 0.1.0: every string of the call in the arguments.
    fn route_v1<'a>(
        &self,
        call: &RouteCall<'a>,
        candidates: &[Candidate<'a>],
    ) -> Result<Decision, String> {
        use routing_v1::alkdev::hub::types::Label;
        use routing_v1::exports::alkdev::hub::routing as r;
        let label = |(k, v): (&'a String, &'a String)| Label { key: k, value: v };
        let metadata: Vec<Label<'_>> = call
            .metadata
            .map(|m| m.iter().map(label).collect())
            .unwrap_or_default();
        let scopes: Vec<&str> = call
            .caller
            .map(|c| c.scopes.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let w_call = r::Call {
            operation_id: call.operation_id,
            type_: call.op_type.into(),
            caller: call.caller.map(|c| r::Caller {
                kind: c.kind.into(),
                id: &c.id,
                scopes: &scopes,
            }),
            metadata: &metadata,
            sequence: call.sequence,
        };
        // Every candidate's labels in one buffer, each candidate a slice of it.
        let mut labels: Vec<Label<'_>> = Vec::new();
        let mut ends = Vec::with_capacity(candidates.len());
        for c in candidates {
            labels.extend(c.labels.iter().map(label));
            ends.push(labels.len());
        }
        let w_candidates: Vec<r::Candidate<'_>> = candidates
            .iter()
            .zip(&ends)
            .scan(0, |start, (c, &end)| {
                let own = &labels[*start..end];
                *start = end;
                Some(r::Candidate {
                    registration_id: c.registration_id,
                    provider_id: c.provider_id,
                    labels: own,
                    in_flight: c.in_flight,
                    connected_at_ms: c.connected_at_ms,
                })
            })
            .collect();
        let answer = self.run(|warm| match &warm.bound {
            Bound::RoutingV1(plugin) => {
                plugin
                    .alkdev_hub_routing()
                    .call_choose(&mut warm.store, w_call, &w_candidates)
            }
            _ => Err(wasmtime::Error::msg("not a 0.1.0 routing plugin")),
        })?;
        use r::Decision as D;
        Ok(match answer {
            D::Choose(i) => Decision::Choose(i as usize),
            D::Ordered(order) => Decision::Ordered(order.into_iter().map(|i| i as usize).collect()),
            D::Refuse(reason) => Decision::Refuse(reason),
        })
    }

    /// Asks a remap plugin for a declaration's post-remap id.
    pub fn remap(
        &self,
        provider: &RemapProvider<'_>,
        op: &Declared<'_>,
    ) -> Result<RemapResult, String> {
        match &self.prepared {
            Prepared::Remap(_) => {
                remap_through!(self, remap, Remap, provider, op)
            }
            Prepared::RemapV1(_) => remap_through!(self, remap_v1, RemapV1, provider, op),
            Prepared::RemapV2(_) => remap_through!(self, remap_v2, RemapV2, provider, op),
            Prepared::Routing(..) | Prepared::RoutingV2(..) | Prepared::RoutingV1(_) => {
                Err("a routing plugin cannot remap".into())
            }
        }
    }

    /// The reason the plugin is bypassed right now, if it is quarantined.
    pub fn quarantined(&self) -> Option<String> {
        if !self.troubled.load(Ordering::Acquire) {
            return None;
        }
        let mut health = self.health.lock().unwrap();
        match health.quarantined_until {
            Some(until) if Instant::now() < until => Some(format!(
                "plugin {} is quarantined after repeated failures (last: {})",
                self.name,
                health.last_error.as_deref().unwrap_or("unknown")
            )),
            Some(_) => {
                // The cool-down is over: give it another chance.
                health.quarantined_until = None;
                health.consecutive_failures = 0;
                None
            }
            None => None,
        }
    }

    /// Ends a quarantine at once (an operator's decision); true when the
    /// plugin was quarantined.
    pub fn lift_quarantine(&self) -> bool {
        let mut health = self.health.lock().unwrap();
        let was = health.quarantined_until.take().is_some();
        health.consecutive_failures = 0;
        self.troubled.store(false, Ordering::Release);
        was
    }

    /// Records a successful decision.
    pub fn succeeded(&self) {
        if !self.troubled.load(Ordering::Acquire) {
            return;
        }
        let mut health = self.health.lock().unwrap();
        health.consecutive_failures = 0;
        if health.quarantined_until.is_none() {
            self.troubled.store(false, Ordering::Release);
        }
    }

    /// Records a failed decision, quarantining the plugin after too many in a row.
    pub fn failed(&self, error: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health.lock().unwrap();
        self.troubled.store(true, Ordering::Release);
        health.consecutive_failures += 1;
        health.last_error = Some(error.to_owned());
        tracing::warn!(plugin = %self.name, error, "plugin decision failed");
        if health.consecutive_failures >= self.limits.quarantine_after
            && health.quarantined_until.is_none()
        {
            health.quarantined_until =
                Some(Instant::now() + Duration::from_secs(self.limits.quarantine_secs));
            self.quarantines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                plugin = %self.name,
                failures = health.consecutive_failures,
                seconds = self.limits.quarantine_secs,
                "plugin quarantined"
            );
        }
    }

    /// What `GET /v1/plugins` shows.
    pub fn status(&self) -> PluginStatus {
        let decisions = self.decisions.load(Ordering::Relaxed);
        let quarantine = self.quarantined();
        PluginStatus {
            name: self.name.to_string(),
            world: Some(self.world()),
            version: Some(self.version.clone()),
            wit_version: Some(self.prepared.wit_version()),
            status: if quarantine.is_some() {
                "quarantined"
            } else {
                "active"
            },
            error: quarantine,
            loading: false,
            roles: Vec::new(),
            source: if self.path.is_some() {
                "file"
            } else {
                "embedded"
            },
            file: self.path.as_deref().and_then(super::file_name),
            last_message: self.last_message.lock().unwrap().clone(),
            decisions,
            failures: self.failures.load(Ordering::Relaxed),
            fallbacks: 0,
            quarantines: self.quarantines.load(Ordering::Relaxed),
            mean_latency_us: if decisions == 0 {
                0.0
            } else {
                self.latency_ns.load(Ordering::Relaxed) as f64 / decisions as f64 / 1000.0
            },
        }
    }
}

/// Why a decision failed, on one line (a wasm backtrace goes to the debug
/// log, never to a caller). A trap that follows a growth the limiter
/// refused is put down to the limit: the guest's own reaction to a failed
/// `memory.grow` (an abort, `unreachable`) says nothing about the cause.
/// Otherwise the last `warn` or `error` message the plugin logged during
/// the decision (a starter's panic hook or exception handler logs there)
/// is the reason, and the trap what followed it.
fn describe_trap(
    trap: &wasmtime::Error,
    refused: Option<Refused>,
    limits: &PluginLimits,
    message: Option<String>,
) -> String {
    let what = match trap.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => one_line(&trap.root_cause().to_string(), MAX_MESSAGE),
    };
    if let Some(limit) = describe_limit(refused, limits) {
        return format!("{limit} (then: {what})");
    }
    match (trap.downcast_ref::<wasmtime::Trap>(), message) {
        (Some(wasmtime::Trap::Interrupt), _) => format!(
            "the decision ran past epoch_deadline_ms = {} and was interrupted",
            limits.epoch_deadline_ms
        ),
        (_, Some(message)) => format!("the plugin failed: {message} (then: {what})"),
        (Some(wasmtime::Trap::UnreachableCodeReached), None) => {
            format!("the plugin trapped (unreachable): {what}")
        }
        (_, None) => format!("the plugin trapped: {what}"),
    }
}

/// The limit a refused growth hit, in words that name its key.
fn describe_limit(refused: Option<Refused>, limits: &PluginLimits) -> Option<String> {
    Some(match refused? {
        Refused::Memory(desired) => format!(
            "the plugin hit its memory limit: a linear memory asked for {desired} bytes, \
             over memory_bytes = {}",
            limits.memory_bytes
        ),
        Refused::Table(desired) => format!(
            "the plugin hit its table limit: a table asked for {desired} elements, \
             over table_elements = {}",
            limits.table_elements
        ),
    })
}

/// The conversions of the shared enums into one version's types.
macro_rules! conversions {
    ($($world:ident),*) => {$(
        impl From<OperationType> for $world::alkdev::hub::types::OperationType {
            fn from(t: OperationType) -> Self {
                match t {
                    OperationType::Query => Self::Query,
                    OperationType::Mutation => Self::Mutation,
                    OperationType::Subscription => Self::Subscription,
                }
            }
        }

        impl From<PrincipalKind> for $world::alkdev::hub::types::PrincipalKind {
            fn from(k: PrincipalKind) -> Self {
                match k {
                    PrincipalKind::Spoke => Self::Spoke,
                    PrincipalKind::Client => Self::Client,
                }
            }
        }
    )*};
}

conversions!(routing, routing_v2, routing_v1, remap, remap_v2, remap_v1);
