//! alkhub routing plugin "{{name}}".
//!
//! `choose` is called once per call that has more than one candidate and
//! returns which candidate serves it. This skeleton does round robin: the
//! hub numbers the calls of each operation (`call.sequence`), so call n goes
//! to candidate n % len and the plugin keeps no state. Replace the body with
//! your policy; `docs/plugins/authoring.md` in the hub describes every field.
//! The call's strings (operation id, caller, metadata, the candidates' ids
//! and labels) are not in the arguments: ask `alkdev::hub::call_details`
//! for the ones the policy needs, e.g. `call_details::metadata("user")`;
//! for one label of every candidate ask once, with
//! `call_details::provider_label_all(key)` or
//! `call_details::candidates_with_label(key, value)`.

wit_bindgen::generate!({ world: "routing-plugin", path: "wit" });

use alkdev::hub::host;
use exports::alkdev::hub::routing::{Call, Candidate, Decision, Guest};

struct Plugin;

impl Guest for Plugin {
    fn choose(call: Call, candidates: Vec<Candidate>) -> Decision {
        report_panics();
        // The hub never passes an empty list; refusing keeps `%` safe anyway.
        if candidates.is_empty() {
            host::log(host::Level::Error, "no candidates");
            return Decision::Refuse("{{name}}: no candidates".into());
        }
        Decision::Choose((call.sequence % candidates.len() as u64) as u32)
    }
}

/// Sends a panic's message to the hub's log before the panic ends the
/// decision: the operator sees it in `GET /v1/plugins` (`lastMessage`) and
/// the log, and a caller refused for it gets it as the reason.
fn report_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::log(host::Level::Error, &info.to_string());
        }))
    });
}

export!(Plugin);
