//! alkhub routing plugin "{{name}}".
//!
//! `choose` is called once per call that has more than one candidate and
//! returns which candidate serves it. This skeleton does round robin: the
//! hub numbers the calls of each operation (`call.sequence`), so call n goes
//! to candidate n % len and the plugin keeps no state. Replace the body with
//! your policy; `docs/plugins/authoring.md` in the hub describes every field.
//! The call's strings (operation id, caller, metadata, the candidates' ids
//! and labels) are not in the arguments: ask `alkdev::hub::call_details`
//! for the ones the policy needs, e.g. `call_details::metadata("user")`.

wit_bindgen::generate!({ world: "routing-plugin", path: "wit" });

use alkdev::hub::host;
use exports::alkdev::hub::routing::{Call, Candidate, Decision, Guest};

struct Plugin;

impl Guest for Plugin {
    fn choose(call: Call, candidates: Vec<Candidate>) -> Decision {
        // The hub never passes an empty list; refusing keeps `%` safe anyway.
        if candidates.is_empty() {
            host::log(host::Level::Error, "no candidates");
            return Decision::Refuse("{{name}}: no candidates".into());
        }
        Decision::Choose((call.sequence % candidates.len() as u64) as u32)
    }
}

export!(Plugin);
