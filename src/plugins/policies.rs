//! The policy objects the hub uses: a Wasm plugin looked up by name at each
//! decision, with its failure policy, and the table of routing plugins per
//! operation pattern.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::runner::Plugin;
use super::{PluginHost, World};
use crate::config::OnFailure;
use crate::policy::{
    Candidate, Decision, Declared, LeastInFlight, RemapPolicy, RemapProvider, RemapResult,
    RouteCall, RoutingPolicy,
};

/// Routing through the plugin named `name`.
pub struct WasmRouting {
    host: PluginHost,
    name: String,
    fallbacks: Arc<AtomicU64>,
}

impl WasmRouting {
    /// A policy for plugin `name` of `host`.
    pub fn new(host: PluginHost, name: &str) -> Self {
        WasmRouting {
            fallbacks: host.fallback_counter(name),
            host,
            name: name.to_owned(),
        }
    }

    fn on_failure(
        &self,
        policy: OnFailure,
        reason: String,
        call: &RouteCall<'_>,
        candidates: &[Candidate<'_>],
    ) -> Decision {
        match policy {
            OnFailure::Fallback => LeastInFlight.choose(call, candidates),
            OnFailure::Error => Decision::Refuse(reason),
        }
    }
}

/// Whether a routing decision names only candidates that exist.
pub(super) fn valid(decision: &Decision, n: usize) -> Result<(), String> {
    match decision {
        Decision::Choose(i) if *i >= n => Err(format!("it chose candidate {i} of {n}")),
        Decision::Ordered(order) if order.is_empty() => {
            Err("it returned an empty order".to_owned())
        }
        Decision::Ordered(order) => match order.iter().find(|i| **i >= n) {
            Some(i) => Err(format!("its order names candidate {i} of {n}")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// One decision through plugin `name` of `world`, with its failure policy:
/// `run` asks the plugin, `fail` applies `on_failure` with a reason. A
/// missing or quarantined plugin is not asked; a failed decision is counted.
fn through_plugin<T>(
    host: &PluginHost,
    name: &str,
    world: World,
    fallbacks: &AtomicU64,
    run: impl FnOnce(&Plugin) -> Result<T, String>,
    fail: impl FnOnce(OnFailure, String) -> T,
) -> T {
    let fail = |policy: OnFailure, reason: String| {
        if policy == OnFailure::Fallback {
            fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        fail(policy, reason)
    };
    let Some(plugin) = host.get_world(name, world) else {
        let policy = host.config().limits_of(name).on_failure;
        return fail(
            policy,
            format!("{name} is not a loaded {} plugin", world.as_str()),
        );
    };
    if let Some(reason) = plugin.quarantined() {
        return fail(plugin.limits.on_failure, reason);
    }
    match run(&plugin) {
        Ok(answer) => {
            plugin.succeeded();
            answer
        }
        Err(error) => {
            plugin.failed(&error);
            let reason = format!("{} plugin {name} failed: {error}", world.as_str());
            fail(plugin.limits.on_failure, reason)
        }
    }
}

impl RoutingPolicy for WasmRouting {
    fn choose(&self, call: &RouteCall<'_>, candidates: &[Candidate<'_>]) -> Decision {
        through_plugin(
            &self.host,
            &self.name,
            World::Routing,
            &self.fallbacks,
            |plugin| {
                let decision = plugin.route(call, candidates)?;
                valid(&decision, candidates.len()).map_err(|e| format!("invalid decision: {e}"))?;
                Ok(decision)
            },
            |policy, reason| self.on_failure(policy, reason, call, candidates),
        )
    }

    fn wants_single_candidate(&self, _operation_id: &str) -> bool {
        self.host
            .get_world(&self.name, World::Routing)
            .is_some_and(|p| p.limits.see_every_call)
    }
}

/// Remap through the plugin named `name`.
pub struct WasmRemap {
    host: PluginHost,
    name: String,
    fallbacks: Arc<AtomicU64>,
}

impl WasmRemap {
    /// A policy for plugin `name` of `host`.
    pub fn new(host: PluginHost, name: &str) -> Self {
        WasmRemap {
            fallbacks: host.fallback_counter(name),
            host,
            name: name.to_owned(),
        }
    }

    fn on_failure(
        &self,
        policy: OnFailure,
        reason: String,
        provider: &RemapProvider<'_>,
        op: &Declared<'_>,
    ) -> RemapResult {
        match policy {
            OnFailure::Fallback => self.host.inner.native_remap.remap(provider, op),
            OnFailure::Error => Err(reason),
        }
    }
}

impl RemapPolicy for WasmRemap {
    fn remap(&self, provider: &RemapProvider<'_>, op: &Declared<'_>) -> RemapResult {
        self.remap_noted(provider, op).0
    }

    fn remap_noted(
        &self,
        provider: &RemapProvider<'_>,
        op: &Declared<'_>,
    ) -> (RemapResult, Option<String>) {
        let mut note = None;
        let result = through_plugin(
            &self.host,
            &self.name,
            World::Remap,
            &self.fallbacks,
            |plugin| plugin.remap(provider, op),
            |policy, reason| {
                let result = self.on_failure(policy, reason.clone(), provider, op);
                if policy == OnFailure::Fallback {
                    note = Some(match &result {
                        Ok((namespace, name)) => format!(
                            "{reason}; the built-in remap registered it as {namespace}.{name} \
                             (on_failure = \"fallback\")"
                        ),
                        Err(refusal) => {
                            format!("{reason}; the built-in remap refused it: {refusal}")
                        }
                    });
                }
                result
            },
        );
        (result, note)
    }
}

/// Routing plugins per operation pattern, first match wins, over a default.
pub struct RoutingTable {
    routes: Vec<(String, Arc<dyn RoutingPolicy>)>,
    default: Arc<dyn RoutingPolicy>,
}

impl RoutingTable {
    /// A table of `(pattern, policy)` routes over `default`.
    pub fn new(
        routes: Vec<(String, Arc<dyn RoutingPolicy>)>,
        default: Arc<dyn RoutingPolicy>,
    ) -> Self {
        RoutingTable { routes, default }
    }

    fn policy_for(&self, operation_id: &str) -> &Arc<dyn RoutingPolicy> {
        self.routes
            .iter()
            .find(|(pattern, _)| glob(pattern, operation_id))
            .map(|(_, policy)| policy)
            .unwrap_or(&self.default)
    }
}

impl RoutingPolicy for RoutingTable {
    fn choose(&self, call: &RouteCall<'_>, candidates: &[Candidate<'_>]) -> Decision {
        self.policy_for(call.operation_id).choose(call, candidates)
    }

    fn wants_single_candidate(&self, operation_id: &str) -> bool {
        self.policy_for(operation_id)
            .wants_single_candidate(operation_id)
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_patterns() {
        assert!(glob("chat.*", "chat.complete"));
        assert!(!glob("chat.*", "chatter.x"));
        assert!(glob("*", "anything"));
        assert!(glob("dev.*.read", "dev.box.fs.read"));
        assert!(glob("exact.op", "exact.op"));
        assert!(!glob("exact.op", "exact.ops"));
    }
}
