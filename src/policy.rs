//! The two decisions the hub delegates: which id a declared operation gets
//! (remap) and which provider serves a call (routing).
//!
//! The traits are small and free of any WebAssembly type, so native policies
//! (the defaults here) and plugin-backed ones are interchangeable. This module
//! decides nothing about access, validation or delivery.

use std::collections::BTreeMap;

use crate::protocol::{Identity, OperationType, PrincipalKind};

/// The provider whose declaration is being remapped.
#[derive(Debug, Clone, Copy)]
pub struct RemapProvider<'a> {
    /// Spoke or client.
    pub kind: PrincipalKind,
    /// Its id.
    pub id: &'a str,
    /// Its display name.
    pub name: Option<&'a str>,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// A declared operation, as the provider named it.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// Declared namespace.
    pub namespace: &'a str,
    /// Declared name.
    pub name: &'a str,
    /// Declared type.
    pub op_type: OperationType,
}

/// The post-remap namespace and name, or a refusal with its reason.
pub type RemapResult = Result<(String, String), String>;

/// Maps declared ids to catalog ids.
pub trait RemapPolicy: Send + Sync {
    /// Decides the post-remap namespace and name of one declared operation.
    fn remap(&self, provider: &RemapProvider<'_>, op: &Declared<'_>) -> RemapResult;

    /// [`RemapPolicy::remap`], with a note for the provider when the policy
    /// did not decide as configured (a failed plugin's fallback decided).
    fn remap_noted(
        &self,
        provider: &RemapProvider<'_>,
        op: &Declared<'_>,
    ) -> (RemapResult, Option<String>) {
        (self.remap(provider, op), None)
    }
}

/// The built-in remap: ids stay as declared, except in namespaces configured
/// as per-provider, where the spoke's id is inserted after the first segment
/// (`dev.fs.read` from `devbox` → `dev.devbox.fs.read`). Those namespaces
/// belong to spokes: a client's declaration there is refused, so a client
/// named like a spoke never lands in that spoke's namespace.
#[derive(Debug, Clone, Default)]
pub struct NativeRemap {
    per_provider: Vec<String>,
}

impl NativeRemap {
    /// A remap with these per-provider namespaces (first segments).
    pub fn new(per_provider_namespaces: Vec<String>) -> Self {
        Self {
            per_provider: per_provider_namespaces,
        }
    }
}

impl RemapPolicy for NativeRemap {
    fn remap(&self, provider: &RemapProvider<'_>, op: &Declared<'_>) -> RemapResult {
        let (first, rest) = match op.namespace.split_once('.') {
            Some((first, rest)) => (first, Some(rest)),
            None => (op.namespace, None),
        };
        if !self.per_provider.iter().any(|ns| ns == first) {
            return Ok((op.namespace.to_owned(), op.name.to_owned()));
        }
        if provider.kind != PrincipalKind::Spoke {
            return Err(format!(
                "{first} is a per-spoke namespace; only spokes provide operations in it"
            ));
        }
        let namespace = match rest {
            Some(rest) => format!("{first}.{}.{rest}", provider.id),
            None => format!("{first}.{}", provider.id),
        };
        Ok((namespace, op.name.to_owned()))
    }
}

/// The call a routing decision is about.
#[derive(Debug, Clone, Copy)]
pub struct RouteCall<'a> {
    /// Post-remap operation id.
    pub operation_id: &'a str,
    /// Its type.
    pub op_type: OperationType,
    /// Who calls; `None` for an anonymous HTTP call of a public operation.
    pub caller: Option<&'a Identity>,
    /// The call's metadata.
    pub metadata: Option<&'a BTreeMap<String, String>>,
    /// Counts the calls of this operation, so round robin needs no state.
    pub sequence: u64,
}

/// One provider that could serve the call.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The registration's id.
    pub registration_id: &'a str,
    /// The provider's id.
    pub provider_id: &'a str,
    /// The provider's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Calls this registration is serving right now.
    pub in_flight: u32,
    /// When the provider's session started, ms since the Unix epoch.
    pub connected_at_ms: u64,
}

/// A routing decision: indexes into the candidate list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve with this candidate.
    Choose(usize),
    /// Try these in order (the first that is still connected serves).
    Ordered(Vec<usize>),
    /// Do not serve; the caller gets `ROUTING_ERROR` with this reason.
    Refuse(String),
}

/// Chooses the provider of each call.
pub trait RoutingPolicy: Send + Sync {
    /// Picks among `candidates` (never empty).
    fn choose(&self, call: &RouteCall<'_>, candidates: &[Candidate<'_>]) -> Decision;

    /// Whether calls of `operation_id` with a single candidate are decided
    /// too (by default the hub serves them without asking).
    fn wants_single_candidate(&self, _operation_id: &str) -> bool {
        false
    }
}

/// The built-in router: the candidate with the fewest calls in flight, ties
/// broken at random.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastInFlight;

impl RoutingPolicy for LeastInFlight {
    fn choose(&self, _call: &RouteCall<'_>, candidates: &[Candidate<'_>]) -> Decision {
        let least = candidates.iter().map(|c| c.in_flight).min().unwrap_or(0);
        let tied = candidates.iter().filter(|c| c.in_flight == least).count();
        let mut pick = fastrand::usize(..tied.max(1));
        for (i, c) in candidates.iter().enumerate() {
            if c.in_flight == least {
                if pick == 0 {
                    return Decision::Choose(i);
                }
                pick -= 1;
            }
        }
        Decision::Choose(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider<'a>(id: &'a str, labels: &'a BTreeMap<String, String>) -> RemapProvider<'a> {
        RemapProvider {
            kind: PrincipalKind::Spoke,
            id,
            name: None,
            labels,
        }
    }

    #[test]
    fn native_remap_inserts_the_provider_in_per_provider_namespaces_only() {
        let remap = NativeRemap::new(vec!["dev".into()]);
        let labels = BTreeMap::new();
        let p = provider("devbox", &labels);
        let decl = |namespace, name| Declared {
            namespace,
            name,
            op_type: OperationType::Query,
        };
        assert_eq!(
            remap.remap(&p, &decl("dev.fs", "read")).unwrap(),
            ("dev.devbox.fs".to_owned(), "read".to_owned())
        );
        assert_eq!(
            remap.remap(&p, &decl("dev", "ping")).unwrap(),
            ("dev.devbox".to_owned(), "ping".to_owned())
        );
        assert_eq!(
            remap.remap(&p, &decl("chat", "complete")).unwrap(),
            ("chat".to_owned(), "complete".to_owned())
        );
        assert_eq!(
            remap.remap(&p, &decl("devices.x", "y")).unwrap().0,
            "devices.x"
        );
        let client = RemapProvider {
            kind: PrincipalKind::Client,
            ..p
        };
        let refused = remap.remap(&client, &decl("dev.fs", "read")).unwrap_err();
        assert!(refused.contains("per-spoke"), "{refused}");
        assert_eq!(
            remap.remap(&client, &decl("chat", "complete")).unwrap().0,
            "chat"
        );
    }

    #[test]
    fn least_in_flight_picks_the_idlest_and_spreads_ties() {
        let labels = BTreeMap::new();
        let cand = |in_flight| Candidate {
            registration_id: "r",
            provider_id: "p",
            labels: &labels,
            in_flight,
            connected_at_ms: 0,
        };
        let call = RouteCall {
            operation_id: "a.b",
            op_type: OperationType::Query,
            caller: None,
            metadata: None,
            sequence: 0,
        };
        assert_eq!(
            LeastInFlight.choose(&call, &[cand(3), cand(1), cand(2)]),
            Decision::Choose(1)
        );
        let mut seen = [0; 2];
        for _ in 0..200 {
            match LeastInFlight.choose(&call, &[cand(0), cand(0)]) {
                Decision::Choose(i) => seen[i] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }
}
