//! The hub's OpenAPI 3.1 document, served at `GET /v1/openapi.json`.
//!
//! The document is generated from the code: every handler carries a
//! `#[utoipa::path(...)]` attribute beside it (in `http.rs`, `admin.rs`, …)
//! with its method, path, parameters, body and every status it answers;
//! the request and response types derive `utoipa::ToSchema`. [`ApiDoc`]
//! lists those handlers and adds what belongs to no single one: the bearer
//! security scheme, the error bodies, the answers of the body-reading
//! middleware every route sits behind, and `/mcp`, which is served by
//! `rmcp` rather than a handler of ours. [`document`] then fits it to the
//! configuration (routes switched off, page sizes), so that it describes
//! the running hub.
//!
//! To add a route: annotate its handler with `#[utoipa::path(...)]` (copy
//! one of `admin.rs`) and list the handler in `paths(...)` of [`ApiDoc`];
//! `tests/openapi.rs` checks the list against the routers and runs
//! schemathesis against the result.

use serde_json::Value;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::config::Config;

/// The name of the security scheme every `security(...)` refers to.
pub const BEARER: &str = "bearer";

/// The document's parts that the macros gather from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "alkhub",
        description = "The HTTP side of an alkhub hub: health, metrics, the WebSocket \
            endpoints of spokes and clients, HTTP calls of operations, listings, and the admin \
            API. The wire protocol is docs/protocol.md; this document is generated from the \
            hub's code and describes the routes the running hub serves.",
    ),
    paths(
        crate::http::openapi_json,
        crate::http::healthz,
        crate::http::metrics,
        crate::http::connect_spoke,
        crate::http::connect_client,
        crate::http::list_operations,
        crate::http::list_plugins,
        crate::http::call,
        crate::http::subscribe,
        crate::admin::list_sessions,
        crate::admin::close_session,
        crate::admin::list_principals,
        crate::admin::add_principal,
        crate::admin::remove_principal,
        crate::admin::disable_principal,
        crate::admin::enable_principal,
        crate::admin::rotate_token,
        crate::admin::list_audit,
        crate::admin::list_plugins,
        crate::admin::reload_plugins,
        crate::admin::lift_quarantine,
        crate::admin::effective_config,
        crate::admin::list_imports,
        crate::admin::add_import,
        crate::admin::refresh_import,
        crate::admin::remove_import,
        crate::admin::list_operations,
        crate::admin::get_operation,
        crate::dashboard::events,
        crate::dashboard::index,
        crate::dashboard::index_slash,
        crate::dashboard::asset,
    ),
    components(schemas(CallError, AdminError)),
    modifiers(&Security, &Mcp, &BodyAnswers, &OptionalBodies),
    tags(
        (name = "health", description = "Whether the hub serves."),
        (name = "metrics", description = "OpenMetrics for scrapers (protocol 5.7)."),
        (name = "connect", description = "WebSocket endpoints of spokes and clients (protocol 1, 2)."),
        (name = "operations", description = "Listing and calling operations over HTTP (protocol 5.2 to 5.4)."),
        (name = "plugins", description = "WebAssembly plugins and their counters (protocol 5.6)."),
        (name = "admin", description = "The admin API; every route needs the admin scope (protocol 5.8)."),
        (name = "mcp", description = "The hub as an MCP server (streamable HTTP)."),
        (name = "openapi", description = "This document."),
        (name = "dashboard", description = "The operator's page (protocol 5.9)."),
    )
)]
pub struct ApiDoc;

/// The document for a hub running with `config`: routes the configuration
/// switched off (`[metrics] enabled`, `[mcp] enabled`) are left out, and
/// the listings' `limit` gets its configured maximum.
pub fn document(config: &Config) -> Document {
    let mut doc = ApiDoc::openapi();
    // utoipa copies Cargo.toml's `license`, which the package does not set.
    doc.info.license = None;
    if !config.metrics.enabled {
        doc.paths.paths.remove("/metrics");
    }
    if !config.mcp.enabled {
        doc.paths.paths.remove("/mcp");
    }
    // A page holds at most `limits.max_list_page` entries; the audit log's
    // `limit` is read as a u32 besides (see `admin::list_audit`).
    let max_page = config.limits.max_list_page;
    set_maximum(&mut doc, "/v1/operations", "limit", max_page);
    set_maximum(&mut doc, "/v1/admin/operations", "limit", max_page);
    let max_audit = max_page.min(u32::MAX as usize);
    set_maximum(&mut doc, "/v1/admin/audit", "limit", max_audit);
    doc
}

/// Sets the `maximum` of query parameter `name` of `GET path`.
fn set_maximum(doc: &mut Document, path: &str, name: &str, maximum: usize) {
    let parameters = doc
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| item.get.as_mut())
        .and_then(|operation| operation.parameters.as_mut());
    for parameter in parameters.into_iter().flatten() {
        if let RefOr::T(parameter) = parameter {
            if parameter.name == name {
                if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
                    schema.maximum = Some(maximum.into());
                }
            }
        }
    }
}

// The schemas below describe bodies the hub writes without a Rust type of
// their own (`http::error_body`, `admin::AdminError`, a provider's
// envelope, the events of `http::event_stream`); nothing constructs them.

/// How HTTP calls, listings and refusals fail (protocol 5.2): `code` is a
/// code of protocol section 4.9, or a provider's own code (answered 502).
#[derive(ToSchema)]
pub struct CallError {
    /// `VALIDATION_ERROR`, `OPERATION_NOT_FOUND`, …, or a provider's code.
    #[schema(example = "OPERATION_NOT_FOUND")]
    pub code: String,
    /// For people: names the thing that was wrong.
    pub message: String,
    /// More about the error (e.g. `{"errors": [...]}` of a
    /// `VALIDATION_ERROR`, `{"retryAfterMs": n}` of an `OVERLOADED`);
    /// absent when there is none.
    #[schema(required = false)]
    pub details: Value,
}

/// How the admin API fails (protocol 5.8).
#[derive(ToSchema)]
pub struct AdminError {
    /// What went wrong.
    pub code: AdminErrorCode,
    /// For people: names the thing that was wrong.
    pub message: String,
}

/// What every admin route answers a caller without the admin scope.
#[derive(utoipa::IntoResponses)]
pub enum AdminRefusals {
    /// `UNAUTHENTICATED`: no token, or one that is not valid.
    #[response(status = 401)]
    Unauthenticated(AdminError),
    /// `ACCESS_DENIED`: the principal lacks the admin scope.
    #[response(status = 403)]
    Denied(AdminError),
}

/// The codes of the admin API's errors.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdminErrorCode {
    /// No valid bearer token (401).
    Unauthenticated,
    /// The token's principal lacks the admin scope (403).
    AccessDenied,
    /// No such session, spoke, client, plugin, import or operation (404).
    NotFound,
    /// The id or a definition is taken (409).
    AlreadyExists,
    /// A bad body, id, query or document (400).
    ValidationError,
    /// A body larger than `limits.max_frame_bytes`, or one that came too slowly (400, 408).
    ProtocolError,
    /// The database failed (500).
    UnknownError,
}

/// The response envelope of a call (protocol 4.4): what a provider sent as
/// `output`, with `meta` filled in by the hub when the provider left it out.
#[derive(ToSchema)]
pub struct Envelope {
    /// The result.
    #[schema(required = false)]
    pub data: Value,
    /// `{"source", "operationId", "timestamp"}` when the hub fills it in;
    /// a provider's own `meta` is passed on unchecked.
    pub meta: Value,
}

/// One server-sent event of `POST /v1/operations/{operationId}/subscribe`
/// (protocol 5.3). The stream is `responded` events, then one `completed`
/// or `error`.
#[derive(ToSchema)]
pub struct CallEvent {
    /// The event's kind.
    pub event: CallEventKind,
    /// JSON: an [`Envelope`] (`responded`), `{}` (`completed`), or
    /// `{code, message, details?}` (`error`).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// The kinds of event of a subscription stream.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CallEventKind {
    /// One result.
    Responded,
    /// The last event of a call that ended normally.
    Completed,
    /// The last event of a call that failed.
    Error,
}

/// The bearer scheme: a client or spoke token (`alk_client_…`,
/// `alk_spoke_…`) in `Authorization: Bearer`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("alkhub token")
            .description(Some(
                "A client or spoke token (`alk_client_…`, `alk_spoke_…`). The admin API needs \
                 a principal holding the admin scope (`[admin] scope`, `admin` by default).",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// Every route reads its request body whole before its handler runs
/// (`http::bounded_body`): a body past `limits.max_frame_bytes` is answered
/// 400, one that has not arrived within `limits.http_body_timeout_ms` 408.
/// Both are added to every operation here rather than to each handler.
struct BodyAnswers;

impl Modify for BodyAnswers {
    fn modify(&self, openapi: &mut Document) {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(schema_ref("CallError"))),
                )
                .build()
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.responses.insert(
            "BodyTooLarge".into(),
            RefOr::T(error(
                "`PROTOCOL_ERROR`: the request body is larger than `limits.max_frame_bytes`.",
            )),
        );
        components.responses.insert(
            "BodyTooSlow".into(),
            RefOr::T(error(
                "`PROTOCOL_ERROR`: the request body did not arrive within \
                 `limits.http_body_timeout_ms`.",
            )),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("400".into())
                    .or_insert_with(|| Ref::from_response_name("BodyTooLarge").into());
                responses
                    .entry("408".into())
                    .or_insert_with(|| Ref::from_response_name("BodyTooSlow").into());
            }
        }
    }
}

/// The calls take an empty body as `{}`. utoipa marks a body optional only
/// by making its schema nullable, and a `null` body is refused, so the two
/// are marked here.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut Document) {
        for path in [
            "/v1/operations/{operation_id}/call",
            "/v1/operations/{operation_id}/subscribe",
        ] {
            let body = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|operation| operation.request_body.as_mut());
            if let Some(RefOr::T(body)) = body {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}

/// `/mcp`: the hub as an MCP server, served by `rmcp`'s streamable HTTP
/// service behind `mcp_server::authenticate`. The MCP specification
/// governs its messages, so it is described loosely: JSON-RPC in, JSON or
/// server-sent events out.
struct Mcp;

impl Modify for Mcp {
    fn modify(&self, openapi: &mut Document) {
        let json_rpc = || {
            Content::new(Some(RefOr::T(
                utoipa::openapi::schema::ObjectBuilder::new()
                    .description(Some("A JSON-RPC 2.0 message of the MCP protocol."))
                    .build()
                    .into(),
            )))
        };
        let text = || Content::new(Some(text_schema()));
        let refusals = |builder: ResponsesBuilder| {
            builder
                .response(
                    "400",
                    ResponseBuilder::new()
                        .description(
                            "A message, session id or header the transport refuses (text), or \
                             `PROTOCOL_ERROR`: a body past `limits.max_frame_bytes` (JSON).",
                        )
                        .content("text/plain", text())
                        .content("application/json", Content::new(Some(schema_ref("CallError")))),
                )
                .response(
                    "401",
                    ResponseBuilder::new()
                        .description("`UNAUTHENTICATED`: no valid bearer token.")
                        .content("application/json", Content::new(Some(schema_ref("CallError")))),
                )
                .response(
                    "404",
                    ResponseBuilder::new()
                        .description("The `Mcp-Session-Id` names no live session.")
                        .content("text/plain", text()),
                )
                .response(
                    "429",
                    ResponseBuilder::new()
                        .description(
                            "`OVERLOADED`: an `initialize` past `[mcp] max_sessions_per_principal`.",
                        )
                        .content("application/json", Content::new(Some(schema_ref("CallError")))),
                )
                .response(
                    "503",
                    ResponseBuilder::new()
                        .description(
                            "An `initialize` past `[mcp] max_sessions` (`OVERLOADED`), or the hub \
                             is shutting down (`UNKNOWN_ERROR`).",
                        )
                        .content("application/json", Content::new(Some(schema_ref("CallError")))),
                )
        };
        let operation = |id: &str, summary: &str, responses: ResponsesBuilder| -> Operation {
            OperationBuilder::new()
                .operation_id(Some(id))
                .tag("mcp")
                .summary(Some(summary))
                .description(Some(
                    "MCP streamable HTTP (docs/imports.md): every operation the caller may call \
                     is a tool. Routed only with `[mcp] enabled = true`.",
                ))
                .security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
                .responses(refusals(responses).build())
                .build()
        };
        let post = OperationBuilder::from(operation(
            "mcpPost",
            "Send a JSON-RPC message",
            ResponsesBuilder::new()
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("The answer, as JSON or as a stream of events.")
                        .content("application/json", json_rpc())
                        .content("text/event-stream", text()),
                )
                .response(
                    "202",
                    ResponseBuilder::new().description("A notification or response, accepted."),
                ),
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json_rpc())
                .required(Some(utoipa::openapi::Required::True))
                .build(),
        ))
        .build();
        let get = operation(
            "mcpGet",
            "Open the session's stream of server messages",
            ResponsesBuilder::new().response(
                "200",
                ResponseBuilder::new()
                    .description("Server-sent events: notifications such as `tools/list_changed`.")
                    .content("text/event-stream", text()),
            ),
        );
        let delete = operation(
            "mcpDelete",
            "End the session",
            ResponsesBuilder::new().response(
                "200",
                ResponseBuilder::new().description("The session is closed."),
            ),
        );
        let mut item = PathItem::new(HttpMethod::Post, post);
        item.get = Some(get);
        item.delete = Some(delete);
        openapi.paths.paths.insert("/mcp".into(), item);
    }
}

/// A `$ref` to `#/components/schemas/{name}`.
fn schema_ref(name: &str) -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// Every operation of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// A `type: string` schema, for bodies that are text.
fn text_schema() -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::T(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .build()
            .into(),
    )
}
