//! The wire types of the alkhub protocol (`docs/protocol.md`), with serde.
//!
//! Nothing but the format lives here: no I/O, no state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What kind of operation a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Error codes of the protocol (section 4). Providers may send their own
/// domain codes too; those travel as plain strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No definition with that id visible to the caller.
    OperationNotFound,
    /// The definition exists but has no active registration.
    NoProvider,
    /// Bad or missing token.
    Unauthenticated,
    /// The caller lacks the access the operation requires.
    AccessDenied,
    /// Input does not match the schema, or a bad spec.
    ValidationError,
    /// `deadline` or `idleTimeout` passed.
    Timeout,
    /// The call was aborted.
    Aborted,
    /// The provider disconnected before it answered.
    ProviderGone,
    /// A configured limit was hit.
    Overloaded,
    /// The routing policy refused the call or failed with no fallback.
    RoutingError,
    /// Another live session of the same principal provides the operation.
    AlreadyRegistered,
    /// The provider failed without a more specific code.
    ExecutionError,
    /// A malformed or out-of-order frame.
    ProtocolError,
    /// Anything else.
    UnknownError,
}

text_enum!(ErrorCode {
    OperationNotFound => "OPERATION_NOT_FOUND",
    NoProvider => "NO_PROVIDER",
    Unauthenticated => "UNAUTHENTICATED",
    AccessDenied => "ACCESS_DENIED",
    ValidationError => "VALIDATION_ERROR",
    Timeout => "TIMEOUT",
    Aborted => "ABORTED",
    ProviderGone => "PROVIDER_GONE",
    Overloaded => "OVERLOADED",
    RoutingError => "ROUTING_ERROR",
    AlreadyRegistered => "ALREADY_REGISTERED",
    ExecutionError => "EXECUTION_ERROR",
    ProtocolError => "PROTOCOL_ERROR",
    UnknownError => "UNKNOWN_ERROR",
});

impl ErrorCode {
    /// The HTTP status of section 5 for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::OperationNotFound => 404,
            ErrorCode::NoProvider => 503,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::AccessDenied => 403,
            ErrorCode::ValidationError | ErrorCode::ProtocolError => 400,
            ErrorCode::Timeout => 504,
            ErrorCode::ProviderGone | ErrorCode::ExecutionError => 502,
            ErrorCode::Overloaded => 429,
            _ => 500,
        }
    }
}

/// WebSocket close codes the hub uses.
pub mod close {
    /// The hub is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame exceeded the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The socket failed (never sent: a local marker for a lost peer).
    pub const ABNORMAL: u16 = 1006;
    /// The peer did not answer pings for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 1011;
    /// Bad or missing token.
    pub const UNAUTHENTICATED: u16 = 4401;
    /// No `hello` within the deadline.
    pub const HELLO_TIMEOUT: u16 = 4408;
    /// A newer session of the same spoke took over.
    pub const SUPERSEDED: u16 = 4409;
    /// The peer let more than `limits.max_outbound_bytes` pile up unread.
    pub const SLOW_CONSUMER: u16 = 4413;
    /// A cap on sessions was reached (`limits.max_sessions_per_client`,
    /// `limits.max_connections`).
    pub const TOO_MANY_SESSIONS: u16 = 4429;
}

/// The envelope of every frame: `{"type": ..., "payload": {...}}`. The
/// payload is kept raw and parsed once its type is known.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    /// The event type.
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    /// The event's fields, unparsed.
    #[serde(borrow, default)]
    pub payload: Option<&'a RawValue>,
}

/// An operation as a provider declares it (section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSpec {
    /// Dot-separated namespace.
    pub namespace: String,
    /// One segment.
    pub name: String,
    /// Query, mutation or subscription.
    #[serde(rename = "type")]
    pub op_type: OperationType,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of `output.data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
    /// Who may call it.
    #[serde(default)]
    pub access_level: AccessLevel,
    /// Scopes required with `scoped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl OperationSpec {
    /// `namespace.name`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// `hello`, the first frame of a session.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Bearer token, unless sent in the `Authorization` header.
    #[serde(default)]
    pub token: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Labels, string values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Operations offered, each parsed on its own so one bad spec is
    /// rejected without refusing the rest.
    #[serde(default)]
    pub operations: Vec<serde_json::Value>,
}

/// `register`.
#[derive(Debug, Deserialize)]
pub struct Register {
    /// Operations offered.
    pub operations: Vec<serde_json::Value>,
}

/// `unregister` and `unregistered`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unregister {
    /// Pre-remap ids.
    pub operation_ids: Vec<String>,
}

/// Who an authenticated peer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Spoke or client.
    pub kind: PrincipalKind,
    /// The slug id.
    pub id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

/// One accepted operation in `welcome` or `registered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    /// Post-remap id under which callers see it.
    pub operation_id: String,
    /// The id as declared.
    pub pre_remap_id: String,
    /// The registration's id.
    pub registration_id: String,
}

/// One refused operation in `welcome` or `registered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// The id as declared (or as far as it could be read).
    pub operation_id: String,
    /// Why, as a code.
    pub code: ErrorCode,
    /// Why, in words.
    pub message: String,
}

/// A declaration that was registered, but not as the hub is configured to
/// register it: its remap plugin failed and the built-in remap decided (the
/// plugin's `on_failure = "fallback"`). Sent in `warnings` of `welcome` and
/// `registered`, a field that is absent when there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// The id as declared.
    pub operation_id: String,
    /// What happened, in words.
    pub message: String,
}

/// `welcome`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// This session's id.
    pub session_id: String,
    /// Who the peer authenticated as.
    pub principal: Identity,
    /// Interval of the hub's pings.
    pub heartbeat_ms: u64,
    /// What was registered.
    pub registrations: Vec<Registered>,
    /// What was refused.
    pub rejected: Vec<Rejected>,
    /// What was registered differently than configured (rare; absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// `registered`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResult {
    /// What was registered.
    pub registrations: Vec<Registered>,
    /// What was refused.
    pub rejected: Vec<Rejected>,
    /// What was registered differently than configured (rare; absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// `call.requested` as a caller sends it; `input` stays raw.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRequested<'a> {
    /// The caller's id for the call.
    #[serde(borrow)]
    pub request_id: std::borrow::Cow<'a, str>,
    /// The post-remap operation id.
    #[serde(borrow)]
    pub operation_id: std::borrow::Cow<'a, str>,
    /// The input, unparsed.
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
    /// The call this one serves (a hub request id).
    #[serde(borrow, default)]
    pub parent_request_id: Option<std::borrow::Cow<'a, str>>,
    /// Absolute deadline, ms since the Unix epoch.
    #[serde(default)]
    pub deadline: Option<u64>,
    /// Subscriptions: ms allowed between events.
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// String metadata for routing.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `call.requested` as the hub sends it to a provider.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedCall<'a> {
    /// The hub's request id.
    pub request_id: &'a str,
    /// The provider's pre-remap id.
    pub operation_id: &'a str,
    /// The input, as the caller sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<&'a RawValue>,
    /// Unchanged from the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_request_id: Option<&'a str>,
    /// Unchanged from the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// Unchanged from the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Unchanged from the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a BTreeMap<String, String>>,
    /// Who calls.
    pub identity: &'a Identity,
}

/// `call.responded`, `call.completed`, `call.error` and `call.aborted` as
/// they arrive from any peer; fields a type does not use are absent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEventIn<'a> {
    /// Whose call.
    #[serde(borrow)]
    pub request_id: std::borrow::Cow<'a, str>,
    /// `call.responded`: the envelope.
    #[serde(borrow, default)]
    pub output: Option<&'a RawValue>,
    /// `call.error`: the code.
    #[serde(borrow, default)]
    pub code: Option<std::borrow::Cow<'a, str>>,
    /// `call.error`: the message.
    #[serde(borrow, default)]
    pub message: Option<std::borrow::Cow<'a, str>>,
    /// `call.error`: details.
    #[serde(borrow, default)]
    pub details: Option<&'a RawValue>,
}

/// `call.error` payload going out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallErrorOut<'a> {
    /// Whose call.
    pub request_id: &'a str,
    /// The code (protocol or provider domain code).
    pub code: &'a str,
    /// The message.
    pub message: &'a str,
    /// Details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a RawValue>,
}

/// Serializes `{"type": kind, "payload": payload}` into one string.
pub fn frame<T: Serialize + ?Sized>(kind: &str, payload: &T) -> String {
    #[derive(Serialize)]
    struct Out<'a, T: ?Sized> {
        #[serde(rename = "type")]
        kind: &'a str,
        payload: &'a T,
    }
    serde_json::to_string(&Out { kind, payload }).expect("wire types always serialize")
}

/// An `error` frame about the connection rather than a call.
pub fn error_frame(code: ErrorCode, message: &str) -> String {
    frame(
        "error",
        &serde_json::json!({"code": code.as_str(), "message": message}),
    )
}

/// Longest piece of peer input an error message quotes, in characters.
pub const MAX_ECHO_CHARS: usize = 128;

/// Longest error message about a frame, in characters: it may quote
/// serde's description of the peer's input.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// `text` cut to [`MAX_ECHO_CHARS`] characters (with `…` when cut), for
/// quoting peer input in an error without echoing it unbounded.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    clip_to(text, MAX_ECHO_CHARS)
}

/// A whole error message cut to [`MAX_MESSAGE_CHARS`] characters.
pub fn clip_message(text: &str) -> std::borrow::Cow<'_, str> {
    clip_to(text, MAX_MESSAGE_CHARS)
}

fn clip_to(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_absent_from_a_welcome_that_has_none() {
        let mut welcome = Welcome {
            session_id: "s".into(),
            principal: Identity {
                kind: PrincipalKind::Spoke,
                id: "devbox".into(),
                scopes: Vec::new(),
            },
            heartbeat_ms: 15_000,
            registrations: Vec::new(),
            rejected: Vec::new(),
            warnings: Vec::new(),
        };
        let text = serde_json::to_string(&welcome).unwrap();
        assert!(!text.contains("warnings"), "{text}");
        welcome.warnings.push(Warning {
            operation_id: "tools.upper".into(),
            message: "the remap plugin failed".into(),
        });
        let value = serde_json::to_value(&welcome).unwrap();
        assert_eq!(value["warnings"][0]["operationId"], "tools.upper");
    }
}
