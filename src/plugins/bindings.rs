//! Host bindings generated from `wit/` for the two plugin worlds, and the
//! imports the hub offers plugins.
//!
//! Each world of each published version gets its own module: the shared
//! interfaces are generated once per module, which costs a few lines of
//! conversion and keeps each world's types whole. `wit/hub.wit` is the
//! newest version; `wit/<version>/` keeps the older ones, whose components
//! the hub still runs.

use std::ops::Range;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::runner::Limiter;
use crate::policy::{Candidate, RouteCall};

/// The routing world, 0.3.0.
pub mod routing {
    wasmtime::component::bindgen!({
        world: "routing-plugin",
        path: "wit",
        // Arguments borrow the hub's values instead of copying them for
        // every decision.
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The remap world, 0.3.0.
pub mod remap {
    wasmtime::component::bindgen!({
        world: "remap-plugin",
        path: "wit",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The routing world, 0.2.0: `call-details` without the batch reads.
pub mod routing_v2 {
    wasmtime::component::bindgen!({
        world: "routing-plugin",
        path: "wit/0.2.0",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The remap world, 0.2.0.
pub mod remap_v2 {
    wasmtime::component::bindgen!({
        world: "remap-plugin",
        path: "wit/0.2.0",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The routing world, 0.1.0: every string of the call in the arguments.
pub mod routing_v1 {
    wasmtime::component::bindgen!({
        world: "routing-plugin",
        path: "wit/0.1.0",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The remap world, 0.1.0.
pub mod remap_v1 {
    wasmtime::component::bindgen!({
        world: "remap-plugin",
        path: "wit/0.1.0",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// What one plugin instance's store holds.
pub struct PluginState {
    /// The plugin's name, for log lines.
    pub name: Arc<str>,
    /// Its settings as JSON, for the `config` import.
    pub settings: Arc<str>,
    /// Its resource limits.
    pub limits: Limiter,
    /// The call being routed, for the `call-details` import.
    pub details: Details,
    /// The last `warn` or `error` message the plugin logged during the
    /// current decision (at most [`MAX_MESSAGE`] bytes): a failure names it.
    pub last_message: Option<String>,
    /// Every line the plugin logs, when capturing (`alkhub plugin run`).
    pub captured: Option<Vec<String>>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl PluginState {
    /// A state granting nothing: WASI is linked for guests whose toolchains
    /// import it, but there are no preopened directories, no environment,
    /// no arguments, no network and no standard input.
    pub fn new(name: Arc<str>, settings: Arc<str>, limits: Limiter) -> Self {
        PluginState {
            name,
            settings,
            limits,
            details: Details::default(),
            last_message: None,
            captured: None,
            wasi: WasiCtx::builder()
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
        }
    }

    fn log(&mut self, level: tracing::Level, message: &str) {
        if level <= tracing::Level::WARN {
            self.last_message = Some(one_line(message, MAX_MESSAGE));
        }
        if let Some(lines) = self.captured.as_mut().filter(|l| l.len() < MAX_CAPTURED) {
            lines.push(format!(
                "{:<5} {}",
                level.as_str().to_ascii_lowercase(),
                one_line(message, MAX_MESSAGE)
            ));
        }
        let plugin = &*self.name;
        match level {
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
        }
    }
}

/// Lines a capture keeps (`alkhub plugin run`).
pub const MAX_CAPTURED: usize = 1000;

/// The longest plugin message a failure quotes; longer ones are cut.
pub const MAX_MESSAGE: usize = 1024;

/// `text` on one line (line breaks and tabs become spaces, runs of blanks
/// one space) and at most `max` bytes, cut at a character boundary with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > max {
            break;
        }
    }
    if out.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

macro_rules! impl_host {
    ($world:ident) => {
        impl $world::alkdev::hub::host::Host for PluginState {
            fn log(&mut self, level: $world::alkdev::hub::host::Level, message: String) {
                use $world::alkdev::hub::host::Level as L;
                let level = match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                };
                PluginState::log(self, level, &message);
            }

            fn config(&mut self) -> String {
                self.settings.to_string()
            }

            fn now_ms(&mut self) -> u64 {
                crate::connection::now_ms()
            }
        }
        impl $world::alkdev::hub::types::Host for PluginState {}
    };
}

impl_host!(routing);
impl_host!(remap);
impl_host!(routing_v2);
impl_host!(remap_v2);
impl_host!(routing_v1);
impl_host!(remap_v1);

/// The strings of the call being routed, copied for the `call-details`
/// import (routing 0.2.0 and later). The buffers keep their capacity from one decision
/// to the next, so a warm instance copies without allocating; plugins that
/// do not import `call-details` skip the copy.
#[derive(Debug, Default)]
pub struct Details {
    text: String,
    operation_id: Range<usize>,
    caller_id: Option<Range<usize>>,
    scopes: Vec<Range<usize>>,
    metadata: Vec<(Range<usize>, Range<usize>)>,
    candidates: Vec<CandidateDetails>,
    labels: Vec<(Range<usize>, Range<usize>)>,
}

#[derive(Debug)]
struct CandidateDetails {
    registration_id: Range<usize>,
    provider_id: Range<usize>,
    labels: Range<usize>,
}

impl Details {
    fn push(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    /// Holds the strings of `call` and `candidates` until the next
    /// [`Details::clear`].
    pub fn fill(&mut self, call: &RouteCall<'_>, candidates: &[Candidate<'_>]) {
        self.clear();
        self.operation_id = self.push(call.operation_id);
        if let Some(caller) = call.caller {
            self.caller_id = Some(self.push(&caller.id));
            for scope in &caller.scopes {
                let scope = self.push(scope);
                self.scopes.push(scope);
            }
        }
        for (k, v) in call.metadata.into_iter().flatten() {
            let pair = (self.push(k), self.push(v));
            self.metadata.push(pair);
        }
        for c in candidates {
            let registration_id = self.push(c.registration_id);
            let provider_id = self.push(c.provider_id);
            let first = self.labels.len();
            for (k, v) in c.labels {
                let pair = (self.push(k), self.push(v));
                self.labels.push(pair);
            }
            self.candidates.push(CandidateDetails {
                registration_id,
                provider_id,
                labels: first..self.labels.len(),
            });
        }
    }

    /// Forgets the call.
    pub fn clear(&mut self) {
        self.text.clear();
        self.operation_id = 0..0;
        self.caller_id = None;
        self.scopes.clear();
        self.metadata.clear();
        self.candidates.clear();
        self.labels.clear();
    }

    fn text(&self, range: &Range<usize>) -> String {
        self.text[range.clone()].to_owned()
    }

    fn find(&self, pairs: &[(Range<usize>, Range<usize>)], key: &str) -> Option<String> {
        pairs
            .iter()
            .find(|(k, _)| self.text[k.clone()] == *key)
            .map(|(_, v)| self.text(v))
    }

    fn candidate(&self, index: u32) -> Option<&CandidateDetails> {
        self.candidates.get(index as usize)
    }

    fn labels(&self, c: &CandidateDetails) -> &[(Range<usize>, Range<usize>)] {
        &self.labels[c.labels.clone()]
    }

    /// Label `key` of every candidate, in candidate order.
    fn label_of_each(&self, key: &str) -> Vec<Option<String>> {
        self.candidates
            .iter()
            .map(|c| self.find(self.labels(c), key))
            .collect()
    }

    /// The candidates whose label `key` is `value`, ascending.
    fn with_label(&self, key: &str, value: &str) -> Vec<u32> {
        (0..self.candidates.len() as u32)
            .filter(|&i| {
                self.labels(&self.candidates[i as usize])
                    .iter()
                    .any(|(k, v)| self.text[k.clone()] == *key && self.text[v.clone()] == *value)
            })
            .collect()
    }
}

/// The `call-details` functions every version since 0.2.0 has, for the
/// bindings module `$world`; a block after it adds a version's newer ones.
macro_rules! impl_call_details {
    ($world:ident $({ $($extra:tt)* })?) => {
        impl $world::alkdev::hub::call_details::Host for PluginState {
            fn operation_id(&mut self) -> String {
                self.details.text(&self.details.operation_id)
            }

            fn caller_id(&mut self) -> Option<String> {
                self.details
                    .caller_id
                    .as_ref()
                    .map(|r| self.details.text(r))
            }

            fn caller_scopes(&mut self) -> Vec<String> {
                self.details
                    .scopes
                    .iter()
                    .map(|r| self.details.text(r))
                    .collect()
            }

            fn metadata(&mut self, key: String) -> Option<String> {
                self.details.find(&self.details.metadata, &key)
            }

            fn all_metadata(&mut self) -> Vec<$world::alkdev::hub::types::Label> {
                let d = &self.details;
                d.metadata
                    .iter()
                    .map(|(k, v)| $world::alkdev::hub::types::Label {
                        key: d.text(k),
                        value: d.text(v),
                    })
                    .collect()
            }

            fn registration_id(&mut self, index: u32) -> String {
                self.details
                    .candidate(index)
                    .map(|c| self.details.text(&c.registration_id))
                    .unwrap_or_default()
            }

            fn provider_id(&mut self, index: u32) -> String {
                self.details
                    .candidate(index)
                    .map(|c| self.details.text(&c.provider_id))
                    .unwrap_or_default()
            }

            fn provider_label(&mut self, index: u32, key: String) -> Option<String> {
                let c = self.details.candidate(index)?;
                self.details.find(self.details.labels(c), &key)
            }

            fn provider_labels(&mut self, index: u32) -> Vec<$world::alkdev::hub::types::Label> {
                let d = &self.details;
                d.candidate(index)
                    .map(|c| {
                        d.labels(c)
                            .iter()
                            .map(|(k, v)| $world::alkdev::hub::types::Label {
                                key: d.text(k),
                                value: d.text(v),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }

            $($($extra)*)?
        }
    };
}

impl_call_details! {
    routing {
        fn provider_label_all(&mut self, key: String) -> Vec<Option<String>> {
            self.details.label_of_each(&key)
        }

        fn candidates_with_label(&mut self, key: String, value: String) -> Vec<u32> {
            self.details.with_label(&key, &value)
        }
    }
}
impl_call_details!(routing_v2);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::routing::alkdev::hub::call_details::Host;
    use super::*;
    use crate::protocol::{Identity, OperationType, PrincipalKind};

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn call_details_answer_for_the_call_being_routed_and_nothing_after() {
        let caller = Identity {
            kind: PrincipalKind::Client,
            id: "app".into(),
            scopes: vec!["read".into(), "write".into()],
        };
        let metadata = map(&[("region", "eu"), ("user", "42")]);
        let (a_labels, b_labels) = (map(&[("zone", "a")]), map(&[]));
        let call = RouteCall {
            operation_id: "files.read",
            op_type: OperationType::Query,
            caller: Some(&caller),
            metadata: Some(&metadata),
            sequence: 7,
        };
        let candidate = |registration_id, provider_id, labels| Candidate {
            registration_id,
            provider_id,
            labels,
            in_flight: 0,
            connected_at_ms: 0,
        };
        let candidates = [
            candidate("reg-a", "spoke-a", &a_labels),
            candidate("reg-b", "spoke-b", &b_labels),
        ];
        let limits = Limiter::new(&crate::config::PluginLimits::default());
        let mut state = PluginState::new("test".into(), "{}".into(), limits);
        state.details.fill(&call, &candidates);

        assert_eq!(state.operation_id(), "files.read");
        assert_eq!(state.caller_id().as_deref(), Some("app"));
        assert_eq!(state.caller_scopes(), ["read", "write"]);
        assert_eq!(state.metadata("user".into()).as_deref(), Some("42"));
        assert_eq!(state.metadata("missing".into()), None);
        let all: Vec<_> = state
            .all_metadata()
            .into_iter()
            .map(|l| (l.key, l.value))
            .collect();
        assert_eq!(
            all,
            [("region".into(), "eu".into()), ("user".into(), "42".into())]
        );
        assert_eq!(state.registration_id(1), "reg-b");
        assert_eq!(state.provider_id(0), "spoke-a");
        assert_eq!(state.provider_label(0, "zone".into()).as_deref(), Some("a"));
        assert_eq!(state.provider_label(1, "zone".into()), None);
        assert_eq!(state.provider_labels(0).len(), 1);
        assert_eq!(state.provider_id(2), "", "out of range");
        assert!(state.provider_labels(9).is_empty());
        assert_eq!(
            state.provider_label_all("zone".into()),
            [Some("a".to_owned()), None]
        );
        assert_eq!(state.candidates_with_label("zone".into(), "a".into()), [0]);
        assert!(state
            .candidates_with_label("zone".into(), "b".into())
            .is_empty());

        state.details.clear();
        assert_eq!(state.operation_id(), "");
        assert_eq!(state.caller_id(), None);
        assert!(state.all_metadata().is_empty());
        assert_eq!(state.registration_id(0), "");
        assert!(state.provider_label_all("zone".into()).is_empty());
    }

    #[test]
    fn a_message_is_put_on_one_line_and_cut_at_a_character_boundary() {
        assert_eq!(
            one_line("panicked at src/lib.rs:9:5:\n\tno region  label\n", 100),
            "panicked at src/lib.rs:9:5: no region label"
        );
        let cut = one_line(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut, "éééé…");
    }
}
