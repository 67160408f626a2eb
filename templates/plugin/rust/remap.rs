//! alkhub remap plugin "{{name}}".
//!
//! `remap` is called once per operation a provider declares and returns the
//! id (namespace and name) callers will see, or a reason to refuse it. This
//! skeleton keeps every declared id unchanged. Replace the body with your
//! rules; `docs/plugins/authoring.md` in the hub describes every field.

wit_bindgen::generate!({ world: "remap-plugin", path: "wit" });

use alkdev::hub::host;
use exports::alkdev::hub::remap::{Declared, Guest, Mapped, Provider};

struct Plugin;

impl Guest for Plugin {
    fn remap(_provider: Provider, op: Declared) -> Result<Mapped, String> {
        report_panics();
        // To refuse a declaration: `return Err("why".into());` — the
        // provider sees the reason in the `rejected` list of its answer.
        Ok(Mapped {
            namespace: op.namespace,
            name: op.name,
        })
    }
}

/// Sends a panic's message to the hub's log before the panic ends the
/// decision: the operator sees it in `GET /v1/plugins` (`lastMessage`) and
/// the log, and a declaration refused for it carries it as the reason.
fn report_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::log(host::Level::Error, &info.to_string());
        }))
    });
}

export!(Plugin);
