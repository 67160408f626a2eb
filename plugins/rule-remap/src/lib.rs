//! The default remap: rules from the plugin's settings, applied in order.
//!
//! Settings (`[plugins.settings.rule-remap]` in alkhub.toml):
//! - `rename`: exact ids to replace, `{"old.id": "new.id"}`;
//! - `prefixes`: namespace prefixes to replace, `[{"from": "a.b", "to": "c"}]`;
//! - `per_spoke_namespaces`: first segments whose operations belong to one
//!   spoke each: the spoke id is inserted after the first segment
//!   (`dev.fs.read` from `devbox` → `dev.devbox.fs.read`); a client's
//!   declaration there is refused, so a client named like a spoke never
//!   lands in that spoke's namespace;
//! - `deny`: namespace prefixes refused outright.
//!
//! Everything else keeps its declared id.

wit_bindgen::generate!({ world: "remap-plugin", path: "../../wit/0.2.0" });

use std::collections::BTreeMap;
use std::sync::OnceLock;

use alkdev::hub::host;
use exports::alkdev::hub::remap::{Declared, Guest, Mapped, PrincipalKind, Provider};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Rules {
    rename: BTreeMap<String, String>,
    prefixes: Vec<Prefix>,
    per_spoke_namespaces: Vec<String>,
    deny: Vec<String>,
}

#[derive(Deserialize)]
struct Prefix {
    from: String,
    to: String,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| match serde_json::from_str(&host::config()) {
        Ok(rules) => rules,
        Err(e) => {
            host::log(host::Level::Error, &format!("invalid settings, using none: {e}"));
            Rules::default()
        }
    })
}

fn under(namespace: &str, prefix: &str) -> bool {
    namespace == prefix
        || (namespace.starts_with(prefix) && namespace.as_bytes().get(prefix.len()) == Some(&b'.'))
}

struct RuleRemap;

impl Guest for RuleRemap {
    fn remap(provider: Provider, op: Declared) -> Result<Mapped, String> {
        let rules = rules();
        if let Some(prefix) = rules.deny.iter().find(|p| under(&op.namespace, p)) {
            return Err(format!("the namespace {prefix} is not accepted on this hub"));
        }
        let id = format!("{}.{}", op.namespace, op.name);
        if let Some(new) = rules.rename.get(&id) {
            return match new.rsplit_once('.') {
                Some((namespace, name)) => Ok(Mapped {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                }),
                None => Err(format!("rename target {new:?} has no namespace")),
            };
        }
        let mut namespace = op.namespace;
        if let Some(p) = rules.prefixes.iter().find(|p| under(&namespace, &p.from)) {
            namespace = format!("{}{}", p.to, &namespace[p.from.len()..]);
        }
        let (first, rest) = match namespace.split_once('.') {
            Some((first, rest)) => (first.to_owned(), Some(rest.to_owned())),
            None => (namespace.clone(), None),
        };
        if rules.per_spoke_namespaces.iter().any(|ns| *ns == first) {
            if !matches!(provider.kind, PrincipalKind::Spoke) {
                return Err(format!(
                    "{first} is a per-spoke namespace; only spokes provide operations in it"
                ));
            }
            namespace = match rest {
                Some(rest) => format!("{first}.{}.{rest}", provider.id),
                None => format!("{first}.{}", provider.id),
            };
        }
        Ok(Mapped {
            namespace,
            name: op.name,
        })
    }
}

export!(RuleRemap);
