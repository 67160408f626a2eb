//! `alkhub plugin run`: one decision of a component, from the command line,
//! with no hub and no spokes. The input describes the call (routing) or the
//! declaration (remap) in JSON; the report gives the decision, what the
//! plugin logged and what it cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};

use super::loader::{Loader, World};
use crate::config::PluginLimits;
use crate::policy::{Candidate, Decision, Declared, RemapProvider, RouteCall};
use crate::protocol::{Identity, OperationType, PrincipalKind};

/// What `plugin run` decides. Every field has a default, so `{}` is a
/// valid input; a routing plugin reads `call` and `candidates`, a remap
/// plugin `provider` and `operation`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialInput {
    /// The plugin's settings (`[plugins.settings.<name>]`), a JSON object.
    #[serde(default)]
    pub settings: Option<serde_json::Map<String, Value>>,
    /// Routing: the call.
    #[serde(default)]
    pub call: TrialCall,
    /// Routing: the candidates (default: two idle providers `a` and `b`).
    #[serde(default)]
    pub candidates: Option<Vec<TrialCandidate>>,
    /// Remap: the provider declaring.
    #[serde(default)]
    pub provider: TrialProvider,
    /// Remap: the declaration.
    #[serde(default)]
    pub operation: TrialOperation,
}

/// The call being routed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialCall {
    /// Post-remap operation id.
    #[serde(default = "example_operation")]
    pub operation_id: String,
    /// `query`, `mutation` or `subscription`.
    #[serde(default = "query", rename = "type")]
    pub op_type: OperationType,
    /// The caller; absent for an anonymous HTTP call.
    #[serde(default)]
    pub caller: Option<TrialCaller>,
    /// The call's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The call's sequence number for its operation.
    #[serde(default)]
    pub sequence: u64,
}

impl Default for TrialCall {
    fn default() -> Self {
        TrialCall {
            operation_id: example_operation(),
            op_type: OperationType::Query,
            caller: None,
            metadata: BTreeMap::new(),
            sequence: 0,
        }
    }
}

/// Who calls.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialCaller {
    /// `spoke` or `client`.
    #[serde(default = "client")]
    pub kind: PrincipalKind,
    /// Its id.
    pub id: String,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// One candidate registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialCandidate {
    /// The provider's id.
    pub provider_id: String,
    /// The registration's id (default: `reg-` and the provider's id).
    #[serde(default)]
    pub registration_id: Option<String>,
    /// The provider's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Calls it is serving.
    #[serde(default)]
    pub in_flight: u32,
    /// When its session started, ms since the Unix epoch.
    #[serde(default)]
    pub connected_at_ms: u64,
}

/// The provider declaring an operation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialProvider {
    /// `spoke` or `client`.
    #[serde(default = "spoke")]
    pub kind: PrincipalKind,
    /// Its id.
    #[serde(default = "example_provider")]
    pub id: String,
    /// Its display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for TrialProvider {
    fn default() -> Self {
        TrialProvider {
            kind: PrincipalKind::Spoke,
            id: example_provider(),
            name: None,
            labels: BTreeMap::new(),
        }
    }
}

/// The declaration being remapped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialOperation {
    /// Declared namespace.
    pub namespace: String,
    /// Declared name.
    pub name: String,
    /// `query`, `mutation` or `subscription`.
    #[serde(default = "query", rename = "type")]
    pub op_type: OperationType,
}

impl Default for TrialOperation {
    fn default() -> Self {
        TrialOperation {
            namespace: "example".into(),
            name: "op".into(),
            op_type: OperationType::Query,
        }
    }
}

fn example_operation() -> String {
    "example.op".into()
}
fn example_provider() -> String {
    "devbox".into()
}
fn query() -> OperationType {
    OperationType::Query
}
fn client() -> PrincipalKind {
    PrincipalKind::Client
}
fn spoke() -> PrincipalKind {
    PrincipalKind::Spoke
}

/// What one trial found.
#[derive(Debug)]
pub struct Trial {
    /// The component's world.
    pub world: World,
    /// The `alkdev:hub` version it was built against.
    pub wit_version: &'static str,
    /// Compiling and checking it.
    pub compile: Duration,
    /// The decision (`{"choose": 1}`, `{"ok": {...}}`, ...), or why it failed.
    pub decision: Result<Value, String>,
    /// The first decision, on a new instance.
    pub first: Duration,
    /// The mean of the repeated decisions on a warm instance (none when the
    /// first one failed or `repeat` is 0).
    pub warm: Option<Duration>,
    /// What the plugin logged during the first decision.
    pub log: Vec<String>,
}

/// Decides once with the component in `path` (then `repeat` more times,
/// warm, for the time a decision costs), under the default limits.
pub fn run_file(path: &Path, input: &TrialInput, repeat: u32) -> anyhow::Result<Trial> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let settings = Value::Object(input.settings.clone().unwrap_or_default()).to_string();
    let started = Instant::now();
    let loader = Loader::uncached()?;
    let limits = PluginLimits {
        max_uses: u64::MAX,
        ..Default::default()
    };
    let name = super::plugin_name(path).unwrap_or_else(|| "plugin".into());
    let plugin = loader
        .load(&name, &bytes, Some(path), settings.into(), limits)?
        .capturing_log();
    let compile = started.elapsed();
    let world = plugin.world();

    let call = &input.call;
    let caller = call.caller.as_ref().map(|c| Identity {
        kind: c.kind,
        id: c.id.clone(),
        scopes: c.scopes.clone(),
    });
    let default_candidates = || {
        ["a", "b"]
            .map(|id| TrialCandidate {
                provider_id: id.into(),
                registration_id: None,
                labels: BTreeMap::new(),
                in_flight: 0,
                connected_at_ms: 0,
            })
            .into()
    };
    let trial_candidates: Vec<TrialCandidate> =
        input.candidates.clone().unwrap_or_else(default_candidates);
    if world == World::Routing && trial_candidates.is_empty() {
        anyhow::bail!(
            "candidates is empty: the hub never asks a routing plugin to choose among none"
        );
    }
    let registration_ids: Vec<String> = trial_candidates
        .iter()
        .map(|c| {
            c.registration_id
                .clone()
                .unwrap_or_else(|| format!("reg-{}", c.provider_id))
        })
        .collect();
    let candidates: Vec<Candidate<'_>> = trial_candidates
        .iter()
        .zip(&registration_ids)
        .map(|(c, registration_id)| Candidate {
            registration_id,
            provider_id: &c.provider_id,
            labels: &c.labels,
            in_flight: c.in_flight,
            connected_at_ms: c.connected_at_ms,
        })
        .collect();
    let route_call = RouteCall {
        operation_id: &call.operation_id,
        op_type: call.op_type,
        caller: caller.as_ref(),
        metadata: Some(&call.metadata),
        sequence: call.sequence,
    };
    let provider = &input.provider;
    let remap_provider = RemapProvider {
        kind: provider.kind,
        id: &provider.id,
        name: provider.name.as_deref(),
        labels: &provider.labels,
    };
    let op = &input.operation;
    let declared = Declared {
        namespace: &op.namespace,
        name: &op.name,
        op_type: op.op_type,
    };
    let decide = || -> Result<Value, String> {
        match world {
            World::Routing => {
                let decision = plugin.route(&route_call, &candidates)?;
                super::policies::valid(&decision, candidates.len())
                    .map_err(|e| format!("invalid decision: {e}"))?;
                Ok(decision_json(&decision, &trial_candidates))
            }
            World::Remap => plugin.remap(&remap_provider, &declared).map(|r| match r {
                Ok((namespace, name)) => json!({"ok": {"namespace": namespace, "name": name}}),
                Err(reason) => json!({ "err": reason }),
            }),
        }
    };

    let started = Instant::now();
    let decision = decide();
    let first = started.elapsed();
    let log = plugin.take_log();
    let warm = (decision.is_ok() && repeat > 0).then(|| {
        let started = Instant::now();
        for _ in 0..repeat {
            let _ = decide();
        }
        plugin.take_log();
        started.elapsed() / repeat
    });
    Ok(Trial {
        world,
        wit_version: plugin.wit_version(),
        compile,
        decision,
        first,
        warm,
        log,
    })
}

/// A routing decision as JSON, naming the providers it picked.
fn decision_json(decision: &Decision, candidates: &[TrialCandidate]) -> Value {
    let provider = |i: &usize| candidates.get(*i).map(|c| c.provider_id.as_str());
    match decision {
        Decision::Choose(i) => json!({"choose": i, "provider": provider(i)}),
        Decision::Ordered(order) => json!({
            "ordered": order,
            "providers": order.iter().map(provider).collect::<Vec<_>>(),
        }),
        Decision::Refuse(reason) => json!({ "refuse": reason }),
    }
}
