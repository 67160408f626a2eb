//! What `/mcp` tells MCP clients that look for OAuth: the hub takes its own
//! bearer tokens and issues none, so a client whose token is missing or
//! wrong gets a 401 that says so (RFC 6750 `WWW-Authenticate`), and the
//! discovery documents and endpoints a client tries next (RFC 9728, RFC
//! 8414, OpenID discovery, and the `/register`, `/authorize`, `/token`
//! fallbacks of the MCP 2025-03-26 revision) answer 404 with a JSON body
//! that says the same, in the OAuth error shape clients show to their user.
//! No client starts an OAuth flow against the hub.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::json;

use crate::protocol::ErrorCode;

/// What every answer here says, and where a token comes from.
const NO_OAUTH: &str = "this hub is not an OAuth authorization server and issues no tokens: \
     /mcp takes the bearer token of one of its spokes or clients (Authorization: Bearer TOKEN), \
     which its operator creates with `alkhub client add`";

/// The paths OAuth-capable MCP clients probe, each answered by
/// [`not_an_authorization_server`].
const PATHS: &[&str] = &[
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/{*resource}",
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/{*issuer}",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/{*issuer}",
    "/mcp/.well-known/openid-configuration",
    "/mcp/.well-known/oauth-authorization-server",
    "/register",
    "/authorize",
    "/token",
];

/// The discovery paths and endpoint fallbacks, for any method, unauthenticated.
pub(super) fn router() -> Router {
    PATHS.iter().fold(Router::new(), |router, path| {
        router.route(path, any(not_an_authorization_server))
    })
}

async fn not_an_authorization_server() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": "invalid_request", "error_description": NO_OAUTH})),
    )
        .into_response()
}

/// The 401 of a request to `/mcp` without a token (`reason` is `None`) or
/// with one the hub refused (`reason` says why).
pub(super) fn unauthenticated(reason: Option<&str>) -> Response {
    let (challenge, message) = match reason {
        None => (
            r#"Bearer realm="alkhub""#.to_owned(),
            format!("/mcp needs a bearer token; {NO_OAUTH}"),
        ),
        Some(reason) => (
            format!(
                r#"Bearer realm="alkhub", error="invalid_token", error_description="{}""#,
                quoted(reason)
            ),
            format!("{reason}; {NO_OAUTH}"),
        ),
    };
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        &message,
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The protocol's error body with `status`.
pub(super) fn json_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// `text` as the content of an RFC 7230 quoted-string: printable ASCII
/// without `"` and `\` (RFC 6750 allows no more in `error_description`).
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '\'',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn a_reason_becomes_a_quoted_string_rfc_6750_accepts() {
        assert_eq!(quoted(r#"bad "token" \ é"#), "bad 'token' ' '");
    }
}
