//! The hub's metrics, served at `GET /metrics` in the OpenMetrics text
//! format (which Prometheus scrapes natively), encoded by
//! `prometheus-client`.
//!
//! Two kinds:
//! - **counted as they happen**: calls by namespace and outcome, call
//!   latency, slow-consumer disconnects. The call path holds the handles of
//!   its namespace, so counting a call takes no lock once its namespace has
//!   been seen.
//! - **read at each scrape** from the hub's own state: calls in flight,
//!   sessions, operations and registrations, outbound queue bytes, plugins,
//!   the database pool and import providers ([`Snapshot`]).
//!
//! Cardinality is bounded whatever the number of operations: calls are
//! labelled by namespace (the operation id up to its last `.`), and only the
//! first `metrics.max_namespaces` namespaces that a call reached get a label
//! of their own; the rest share `namespace="_other"`. Calls that fail before
//! their operation is known never claim a namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::dispatch::CallError;

/// The label shared by namespaces past `metrics.max_namespaces`.
pub const OTHER_NAMESPACE: &str = "_other";

/// The outcome of a call whose provider answered with a code of its own.
pub const PROVIDER_CODE: &str = "PROVIDER_CODE";

/// Call latency buckets, in seconds: 100 µs to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    15.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    namespace: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabel {
    namespace: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    name: String,
}

/// The counters of one namespace that every call of it touches.
#[derive(Debug)]
pub struct NamespaceStats {
    namespace: Arc<str>,
    ok: Counter,
    latency: Histogram,
}

/// A hub's metrics counted as they happen.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<NamespaceLabel, Histogram>,
    slow_consumers: Family<KindLabel, Counter>,
    namespaces: RwLock<HashMap<Arc<str>, Arc<NamespaceStats>>>,
    other: Arc<NamespaceStats>,
    max_namespaces: usize,
    /// False: nothing is counted (`[metrics] enabled = false`).
    enabled: bool,
    totals: Totals,
}

/// Every call counted once more, whatever its namespace, for the
/// dashboard's overview (rates and a percentile over a recent window).
#[derive(Debug, Default)]
struct Totals {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Calls per latency bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// [`Metrics::totals`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTotals {
    /// Calls that ended.
    pub calls: u64,
    /// Calls that ended with an error.
    pub errors: u64,
    /// Calls per latency bucket (see [`CallTotals::quantile_since`]).
    pub buckets: Vec<u64>,
}

impl CallTotals {
    /// The latency under which a fraction `q` of the calls that ended
    /// between `earlier` and `self` fell, in milliseconds: the upper bound
    /// of the bucket where that fraction is reached (the largest finite
    /// bound for the +Inf bucket). `None` when no call ended.
    pub fn quantile_since(&self, earlier: &CallTotals, q: f64) -> Option<f64> {
        let deltas: Vec<u64> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        let total: u64 = deltas.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in deltas.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = LATENCY_BUCKETS
                    .get(i)
                    .or(LATENCY_BUCKETS.last())
                    .copied()
                    .unwrap_or_default();
                return Some(bound * 1000.0);
            }
        }
        None
    }
}

fn new_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// Metrics giving at most `max_namespaces` namespaces a label of their
    /// own; when not `enabled`, nothing is counted.
    pub fn new(enabled: bool, max_namespaces: usize) -> Self {
        let mut registry = Registry::with_prefix("alkhub");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls that ended, by namespace and outcome (ok, a protocol error code, or PROVIDER_CODE)",
            calls.clone(),
        );
        let latency =
            Family::<NamespaceLabel, Histogram>::new_with_constructor(new_histogram as fn() -> _);
        registry.register_with_unit(
            "call_duration",
            "Time from a call's start to its end (its answer, or its last event for a subscription)",
            Unit::Seconds,
            latency.clone(),
        );
        let slow_consumers = Family::<KindLabel, Counter>::default();
        registry.register(
            "slow_consumer_disconnects",
            "Sessions closed (4413) and streams ended because the peer read too slowly (limits.max_outbound_bytes)",
            slow_consumers.clone(),
        );
        let other = Arc::new(NamespaceStats::of(OTHER_NAMESPACE.into(), &calls, &latency));
        Metrics {
            registry,
            calls,
            latency,
            slow_consumers,
            namespaces: RwLock::default(),
            other,
            max_namespaces,
            enabled,
            totals: Totals::default(),
        }
    }

    /// The calls counted so far, whatever their namespace.
    pub fn totals(&self) -> CallTotals {
        let t = &self.totals;
        CallTotals {
            calls: t.calls.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
            buckets: t
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// Whether calls are counted.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The counters of `operation_id`'s namespace, claiming a label for it
    /// while fewer than `max_namespaces` are claimed. For calls to an
    /// operation that exists.
    pub fn namespace_of(&self, operation_id: &str) -> Arc<NamespaceStats> {
        if !self.enabled {
            return self.other.clone();
        }
        let namespace = namespace(operation_id);
        if let Some(stats) = self.namespaces.read().unwrap().get(namespace) {
            return stats.clone();
        }
        let mut namespaces = self.namespaces.write().unwrap();
        if let Some(stats) = namespaces.get(namespace) {
            return stats.clone();
        }
        if namespaces.len() >= self.max_namespaces {
            return self.other.clone();
        }
        let stats = Arc::new(NamespaceStats::of(
            namespace.into(),
            &self.calls,
            &self.latency,
        ));
        namespaces.insert(stats.namespace.clone(), stats.clone());
        stats
    }

    /// Counts a call refused before it reached a provider. Its namespace is
    /// labelled only if one already has a label: ids that name nothing do
    /// not claim labels.
    pub fn refused(&self, operation_id: &str, error: &CallError) {
        let stats = self
            .namespaces
            .read()
            .unwrap()
            .get(namespace(operation_id))
            .cloned()
            .unwrap_or_else(|| self.other.clone());
        self.ended(&stats, outcome_of(error), Duration::ZERO);
    }

    /// Counts a call that ended with `outcome` (`ok` or an error code; see
    /// [`outcome_of`]) after `elapsed`.
    pub fn ended(&self, stats: &NamespaceStats, outcome: &'static str, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let seconds = elapsed.as_secs_f64();
        stats.latency.observe(seconds);
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.totals.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.totals.calls.fetch_add(1, Ordering::Relaxed);
        if outcome != "ok" {
            self.totals.errors.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == "ok" {
            stats.ok.inc();
        } else {
            self.calls
                .get_or_create(&CallLabels {
                    namespace: stats.namespace.clone(),
                    outcome,
                })
                .inc();
        }
    }

    /// Counts a peer disconnected for reading too slowly: `session` or `stream`.
    pub fn slow_consumer(&self, kind: &'static str) {
        self.slow_consumers.get_or_create(&KindLabel { kind }).inc();
    }

    /// The metrics in the OpenMetrics text format, with `snapshot` read at
    /// this scrape.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &snapshot.registry());
        let _ = text::encode_eof(&mut out);
        out
    }
}

impl NamespaceStats {
    fn of(
        namespace: Arc<str>,
        calls: &Family<CallLabels, Counter>,
        latency: &Family<NamespaceLabel, Histogram>,
    ) -> Self {
        NamespaceStats {
            ok: calls.get_or_create_owned(&CallLabels {
                namespace: namespace.clone(),
                outcome: "ok",
            }),
            latency: latency.get_or_create_owned(&NamespaceLabel {
                namespace: namespace.clone(),
            }),
            namespace,
        }
    }
}

/// An operation id's namespace: everything before its last `.`.
fn namespace(operation_id: &str) -> &str {
    operation_id
        .rsplit_once('.')
        .map_or(operation_id, |(namespace, _)| namespace)
}

/// The outcome label of a failed call: its protocol code, or
/// [`PROVIDER_CODE`] for a provider's own (unbounded) codes.
pub fn outcome_of(error: &CallError) -> &'static str {
    error
        .protocol_code()
        .map_or(PROVIDER_CODE, |code| code.as_str())
}

/// What the hub holds at one scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Calls open (forwarded and not ended).
    pub calls_in_flight: u64,
    /// Live sessions by kind (`spoke`, `client`).
    pub sessions: Vec<(&'static str, u64)>,
    /// Operation definitions in the catalogue.
    pub operations: u64,
    /// Active registrations across all operations.
    pub registrations: u64,
    /// Bytes queued for peers and not yet written.
    pub outbound_queue_bytes: u64,
    /// Per plugin: decisions, failures, fallbacks, total decision time,
    /// and whether it is quarantined now.
    pub plugins: Vec<PluginFigures>,
    /// Database connections: open, idle, and the pool's maximum.
    pub db_pool: (u64, u64, u64),
    /// Database queries that failed since start.
    pub db_errors: u64,
    /// Import providers by state (`up`, `down`).
    pub imports: Vec<(&'static str, u64)>,
    /// In cluster mode: this node's id and name, and the sessions on other
    /// nodes it holds as remote providers.
    pub cluster: Option<(String, String, u64)>,
}

/// One plugin's figures at a scrape (they restart with each new version).
#[derive(Debug, Default)]
pub struct PluginFigures {
    /// The plugin's name.
    pub name: String,
    /// Decisions asked of it.
    pub decisions: u64,
    /// Decisions that failed.
    pub failures: u64,
    /// Decisions its failure policy handed to the built-in policy.
    pub fallbacks: u64,
    /// Times it was quarantined.
    pub quarantines: u64,
    /// Time spent deciding.
    pub decision_time: Duration,
    /// True while it is quarantined.
    pub quarantined: bool,
}

impl Snapshot {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("alkhub");
        let gauge = |value: u64| {
            let g = Gauge::<i64>::default();
            g.set(value as i64);
            g
        };
        r.register(
            "calls_in_flight",
            "Calls forwarded to a provider and not ended",
            gauge(self.calls_in_flight),
        );
        let sessions = Family::<KindLabel, Gauge>::default();
        for (kind, n) in &self.sessions {
            sessions.get_or_create(&KindLabel { kind }).set(*n as i64);
        }
        r.register("sessions", "Live WebSocket sessions by kind", sessions);
        r.register(
            "operations",
            "Operation definitions in the catalogue",
            gauge(self.operations),
        );
        r.register(
            "registrations_active",
            "Active registrations (an operation offered by a live session)",
            gauge(self.registrations),
        );
        r.register_with_unit(
            "outbound_queue",
            "Frames queued for peers and not yet written",
            Unit::Bytes,
            gauge(self.outbound_queue_bytes),
        );
        let decisions = Family::<PluginLabel, Counter>::default();
        let failures = Family::<PluginLabel, Counter>::default();
        let fallbacks = Family::<PluginLabel, Counter>::default();
        let time = Family::<PluginLabel, Counter<f64>>::default();
        let quarantined = Family::<PluginLabel, Gauge>::default();
        let quarantines = Family::<PluginLabel, Counter>::default();
        for p in &self.plugins {
            let label = PluginLabel {
                plugin: p.name.clone(),
            };
            decisions.get_or_create(&label).inc_by(p.decisions);
            failures.get_or_create(&label).inc_by(p.failures);
            fallbacks.get_or_create(&label).inc_by(p.fallbacks);
            time.get_or_create(&label)
                .inc_by(p.decision_time.as_secs_f64());
            quarantined
                .get_or_create(&label)
                .set(i64::from(p.quarantined));
            quarantines.get_or_create(&label).inc_by(p.quarantines);
        }
        r.register(
            "plugin_decisions",
            "Decisions asked of each plugin's serving version",
            decisions,
        );
        r.register(
            "plugin_failures",
            "Decisions that failed (trap, limit, bad answer)",
            failures,
        );
        r.register(
            "plugin_fallbacks",
            "Failed decisions handed to the built-in policy (on_failure = fallback)",
            fallbacks,
        );
        r.register_with_unit(
            "plugin_decision",
            "Time spent in each plugin's decisions",
            Unit::Seconds,
            time,
        );
        r.register(
            "plugin_quarantined",
            "1 while the plugin is quarantined after repeated failures",
            quarantined,
        );
        r.register(
            "plugin_quarantines",
            "Times the plugin's serving version was quarantined",
            quarantines,
        );
        let pool = Family::<StateLabel, Gauge>::default();
        let (open, idle, max) = self.db_pool;
        pool.get_or_create(&StateLabel { state: "idle" })
            .set(idle as i64);
        pool.get_or_create(&StateLabel { state: "busy" })
            .set(open.saturating_sub(idle) as i64);
        r.register("db_pool_connections", "Database connections by state", pool);
        r.register(
            "db_pool_max_connections",
            "The database pool's size limit",
            gauge(max),
        );
        let errors = Counter::<u64>::default();
        errors.inc_by(self.db_errors);
        r.register(
            "db_errors",
            "Database queries that failed (refused duplicates included) or found no connection",
            errors,
        );
        let imports = Family::<StateLabel, Gauge>::default();
        for (state, n) in &self.imports {
            imports.get_or_create(&StateLabel { state }).set(*n as i64);
        }
        r.register(
            "import_providers",
            "Imported providers (OpenAPI, MCP) by state",
            imports,
        );
        if let Some((node, name, remote)) = &self.cluster {
            let info = Family::<NodeLabels, Gauge>::default();
            info.get_or_create(&NodeLabels {
                node: node.clone(),
                name: name.clone(),
            })
            .set(1);
            r.register(
                "cluster_node",
                "1, labelled with the id and name of the node that answers this scrape",
                info,
            );
            r.register(
                "cluster_remote_sessions",
                "Sessions on other nodes this node holds as remote providers",
                gauge(*remote),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn totals_give_a_percentile_of_the_calls_since_an_earlier_reading() {
        let metrics = Metrics::new(true, 10);
        let stats = metrics.namespace_of("a.x");
        metrics.ended(&stats, "ok", Duration::from_secs(30));
        let earlier = metrics.totals();
        for _ in 0..98 {
            metrics.ended(&stats, "ok", Duration::from_micros(700));
        }
        metrics.ended(&stats, "TIMEOUT", Duration::from_millis(40));
        metrics.ended(&stats, "ok", Duration::from_secs(90));
        let now = metrics.totals();
        assert_eq!((now.calls, now.errors), (101, 1));
        // 100 calls since: the 99th is the 40 ms one, in the 50 ms bucket;
        // the 30 s call before `earlier` does not count.
        assert_eq!(now.quantile_since(&earlier, 0.99), Some(50.0));
        assert_eq!(now.quantile_since(&earlier, 0.5), Some(1.0));
        // Past the last bound: the largest finite bound.
        assert_eq!(now.quantile_since(&earlier, 1.0), Some(60_000.0));
        assert_eq!(now.quantile_since(&now, 0.99), None);
        let off = Metrics::new(false, 10);
        off.ended(&off.namespace_of("a.x"), "ok", Duration::ZERO);
        assert_eq!(off.totals().calls, 0);
    }

    #[test]
    fn namespaces_past_the_limit_share_one_label_and_unknown_ids_claim_none() {
        let metrics = Metrics::new(true, 2);
        metrics.refused(
            "nothing.here",
            &CallError::new(ErrorCode::OperationNotFound, "no"),
        );
        for id in ["a.x", "a.y", "b.c.x", "c.x", "d.x"] {
            let stats = metrics.namespace_of(id);
            metrics.ended(&stats, "ok", Duration::from_millis(2));
        }
        let provider_error = CallError {
            code: "CARD_DECLINED".into(),
            ..CallError::new(ErrorCode::ExecutionError, "declined")
        };
        metrics.ended(
            &metrics.namespace_of("a.z"),
            outcome_of(&provider_error),
            Duration::ZERO,
        );
        let text = metrics.render(&Snapshot::default());
        assert!(
            text.contains(r#"alkhub_calls_total{namespace="a",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"alkhub_calls_total{namespace="b.c",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"alkhub_calls_total{namespace="_other",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"alkhub_calls_total{namespace="_other",outcome="OPERATION_NOT_FOUND"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"alkhub_calls_total{namespace="a",outcome="PROVIDER_CODE"} 1"#),
            "{text}"
        );
        assert!(!text.contains("nothing"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
