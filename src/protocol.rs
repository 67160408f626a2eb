//! The wire types of the alkhub protocol (`docs/protocol.md`), with serde.
//!
//! Nothing but the format lives here: no I/O, no state.

use serde::{Deserialize, Serialize};

/// What kind of operation a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationType {
    /// Read-only, safe to retry; one answer.
    Query,
    /// Changes something; one answer.
    Mutation,
    /// A stream of answers ended by `call.completed`.
    Subscription,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Anyone, including HTTP without a token.
    Public,
    /// Any valid token.
    #[default]
    Authenticated,
    /// Principals holding every required scope.
    Scoped,
    /// Spokes and the hub itself, never clients.
    Internal,
}

/// The kind of an authenticated peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A provider of operations.
    Spoke,
    /// A caller of operations.
    Client,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!(
                        concat!("unknown ", stringify!($ty), " {:?}"), other
                    )),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(OperationType { Query => "query", Mutation => "mutation", Subscription => "subscription" });
text_enum!(AccessLevel { Public => "public", Authenticated => "authenticated", Scoped => "scoped", Internal => "internal" });
text_enum!(PrincipalKind { Spoke => "spoke", Client => "client" });
