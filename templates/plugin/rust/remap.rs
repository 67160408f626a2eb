//! alkhub remap plugin "{{name}}".
//!
//! `remap` is called once per operation a provider declares and returns the
//! id (namespace and name) callers will see, or a reason to refuse it. This
//! skeleton keeps every declared id unchanged. Replace the body with your
//! rules; `docs/plugins/authoring.md` in the hub describes every field.

wit_bindgen::generate!({ world: "remap-plugin", path: "wit" });

use exports::alkdev::hub::remap::{Declared, Guest, Mapped, Provider};

struct Plugin;

impl Guest for Plugin {
    fn remap(_provider: Provider, op: Declared) -> Result<Mapped, String> {
        // To refuse a declaration: `return Err("why".into());` — the
        // provider sees the reason in the `rejected` list of its answer.
        Ok(Mapped {
            namespace: op.namespace,
            name: op.name,
        })
    }
}

export!(Plugin);
