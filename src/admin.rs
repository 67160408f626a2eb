//! The admin API under `/v1/admin`, for principals holding the admin scope
//! (`[admin] scope`, `admin` by default): live sessions, spokes and
//! clients, operations and their registrations, plugins, the effective
//! configuration, and the audit log. Every change is written to the audit log
//! (who, what, when) before it is answered.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::builtins::OperationDetail;
use crate::openapi::AdminError as AdminErrorBody;
use crate::plugins::HostStatus;
use crate::protocol::{Identity, PrincipalKind};
use crate::server::Hub;
use crate::store::{AuditEntry, NewPrincipal, Principal, StoreError};

/// The close code and reason a session closed from the admin API gets.
pub const CLOSED_BY_OPERATOR: (u16, &str) = (1008, "closed by an operator");

/// The routes of `/v1/admin`.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/v1/admin/sessions", get(list_sessions))
        .route("/v1/admin/sessions/{session_id}", delete(close_session))
        .route("/v1/admin/{kind}", get(list_principals).post(add_principal))
        .route("/v1/admin/{kind}/{id}", delete(remove_principal))
        .route("/v1/admin/{kind}/{id}/disable", post(disable_principal))
        .route("/v1/admin/{kind}/{id}/enable", post(enable_principal))
        .route("/v1/admin/{kind}/{id}/rotate-token", post(rotate_token))
        .route("/v1/admin/audit", get(list_audit))
        .route("/v1/admin/plugins", get(list_plugins))
        .route("/v1/admin/plugins/reload", post(reload_plugins))
        .route(
            "/v1/admin/plugins/{name}/lift-quarantine",
            post(lift_quarantine),
        )
        .route("/v1/admin/imports", get(list_imports).post(add_import))
        .route("/v1/admin/imports/{name}", delete(remove_import))
        .route("/v1/admin/imports/{name}/refresh", post(refresh_import))
        .route("/v1/admin/config", get(effective_config))
        .route("/v1/admin/operations", get(list_operations))
        .route("/v1/admin/operations/{operation_id}", get(get_operation))
        .with_state(hub)
}

/// An error of the admin API: `{code, message}` with its HTTP status.
pub(crate) struct AdminError(StatusCode, &'static str, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let AdminError(status, code, message) = self;
        (status, Json(json!({"code": code, "message": message}))).into_response()
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => {
                AdminError(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string())
            }
            StoreError::Duplicate { .. } => {
                AdminError(StatusCode::CONFLICT, "ALREADY_EXISTS", e.to_string())
            }
            StoreError::Invalid(_) => {
                AdminError(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", e.to_string())
            }
            e if e.is_unique_violation() => {
                AdminError(StatusCode::CONFLICT, "ALREADY_EXISTS", e.to_string())
            }
            e => {
                tracing::error!(error = %e, "admin API: database error");
                AdminError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN_ERROR",
                    "the database failed; the hub's log has the reason".into(),
                )
            }
        }
    }
}

type Answer = Result<Response, AdminError>;

/// The caller, when it holds the admin scope.
pub(crate) async fn admin(hub: &Hub, headers: &HeaderMap) -> Result<Identity, AdminError> {
    let scope = &hub.config().admin.scope;
    match crate::http::identify(hub, headers).await {
        Ok(Some(identity)) if identity.scopes.iter().any(|s| s == scope) => Ok(identity),
        Ok(Some(identity)) => Err(AdminError(
            StatusCode::FORBIDDEN,
            "ACCESS_DENIED",
            format!(
                "the admin API needs scope {scope:?}, which {} {} does not hold",
                identity.kind, identity.id
            ),
        )),
        Ok(None) => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "a token is required".into(),
        )),
        Err(e) => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            e.message,
        )),
    }
}

/// Writes `action` on `target` by `who` to the audit log.
async fn audit(
    hub: &Hub,
    who: &Identity,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), AdminError> {
    tracing::info!(actor = %who.id, action, target, "admin change");
    hub.store()
        .audit((who.kind, &who.id), action, target, &detail)
        .await?;
    Ok(())
}

/// `spokes` or `clients`, the first segment of the principals' routes.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // documentation only: `kind_of` reads the segment
enum Principals {
    /// The spokes.
    Spokes,
    /// The clients.
    Clients,
}

/// `spokes` or `clients` in a path.
fn kind_of(segment: &str) -> Result<PrincipalKind, AdminError> {
    match segment {
        "spokes" => Ok(PrincipalKind::Spoke),
        "clients" => Ok(PrincipalKind::Client),
        other => Err(AdminError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no admin resource {other:?}: use sessions, spokes, clients or audit"),
        )),
    }
}

/// One live session.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    /// The hub's number for the session.
    session_id: u64,
    /// `spoke` or `client`.
    pub(crate) kind: PrincipalKind,
    /// The principal's id.
    id: String,
    /// When it connected, in milliseconds since the Unix epoch.
    connected_at_ms: u64,
    /// The principal's labels.
    labels: BTreeMap<String, String>,
    /// Bytes queued for it, not yet written.
    queued_bytes: usize,
    /// Calls it made that are still open.
    calls_open: usize,
    /// Calls it is serving.
    serving: usize,
}

/// `GET /v1/admin/sessions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionList {
    /// The live WebSocket sessions, by session id.
    sessions: Vec<SessionView>,
}

/// The live WebSocket sessions.
#[utoipa::path(
    get,
    path = "/v1/admin/sessions",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The live WebSocket sessions.", body = SessionList),
        crate::openapi::AdminRefusals,
    )
)]
async fn list_sessions(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    admin(&hub, &headers).await?;
    let sessions = session_views(&hub);
    Ok(Json(SessionList { sessions }).into_response())
}

/// The live WebSocket sessions, by session id.
pub(crate) fn session_views(hub: &Hub) -> Vec<SessionView> {
    let mut sessions: Vec<SessionView> = hub
        .sessions()
        .peers()
        .into_iter()
        .map(|(c, _)| {
            let (calls_open, serving) = {
                let calls = c.calls.lock().unwrap();
                (calls.calling.len(), calls.serving.len())
            };
            SessionView {
                session_id: c.session_id,
                kind: c.identity.kind,
                id: c.identity.id.clone(),
                connected_at_ms: c.connected_at_ms,
                labels: c.labels.clone(),
                queued_bytes: c.queued_bytes(),
                calls_open,
                serving,
            }
        })
        .collect();
    sessions.sort_by_key(|s| s.session_id);
    sessions
}

/// Closes a live session (code 1008); its peer may reconnect.
#[utoipa::path(
    delete,
    path = "/v1/admin/sessions/{session_id}",
    tag = "admin",
    params(("session_id" = String, Path, description = "The `sessionId` of `GET /v1/admin/sessions`.",
        example = "1")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Closed with code 1008 `closed by an operator`."),
        (status = 404, description = "`NOT_FOUND`: no live session of that id.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn close_session(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let connection = session_id.parse::<u64>().ok().and_then(|id| {
        hub.sessions()
            .peers()
            .into_iter()
            .map(|(c, _)| c)
            .find(|c| c.session_id == id)
    });
    let Some(connection) = connection else {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no live session {session_id:?}"),
        ));
    };
    let target = format!("session/{}", connection.session_id);
    let detail = json!({"kind": connection.identity.kind, "id": connection.identity.id});
    audit(&hub, &who, "session.close", &target, detail).await?;
    let (code, reason) = CLOSED_BY_OPERATOR;
    hub.sessions().stop(&connection, code, reason);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/admin/{spokes|clients}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrincipalList {
    /// Every spoke or every client.
    pub principals: Vec<Principal>,
}

/// `POST /v1/admin/{spokes|clients}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    /// What was added.
    pub principal: Principal,
    /// Its token, shown this once.
    pub token: String,
}

/// `POST /v1/admin/{spokes|clients}/{id}/rotate-token`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rotated {
    /// The new token, shown this once.
    pub token: String,
}

/// `DELETE /v1/admin/{spokes|clients}/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Its registrations removed with it.
    pub removed_registrations: u64,
}

/// Every spoke or every client.
#[utoipa::path(
    get,
    path = "/v1/admin/{kind}",
    tag = "admin",
    params(("kind" = inline(Principals), Path, description = "`spokes` or `clients`.")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every spoke or every client; never a token or its hash.",
            body = PrincipalList),
        (status = 404, description = "`NOT_FOUND`: not `spokes` or `clients`.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn list_principals(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(kind): Path<String>,
) -> Answer {
    admin(&hub, &headers).await?;
    let kind = kind_of(&kind)?;
    let principals = hub.store().list_principals(kind).await?;
    Ok(Json(PrincipalList { principals }).into_response())
}

/// `POST /v1/admin/{spokes|clients}`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddPrincipal {
    /// A slug: 1 to 63 of `a-z`, `0-9` and `-`, starting with a letter or
    /// digit.
    #[schema(example = "edge-1", pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    id: String,
    /// Display name.
    #[serde(default)]
    name: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    scopes: Vec<String>,
    /// Labels (a spoke's are visible to routing plugins).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Operation-id patterns it may provide (`*` matches any characters);
    /// absent or `null` is the default of its kind.
    #[serde(default)]
    #[schema(schema_with = grant_patterns)]
    provides: Option<Vec<String>>,
}

/// `provides` as `registration::check_grant_pattern` accepts it.
fn grant_patterns() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let pattern = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_.*-]{1,256}$"));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(pattern)
        .description(Some(
            "Operation-id patterns it may provide (`*` matches any characters); absent or \
             `null` is the default of its kind.",
        ))
        .build()
}

/// Adds a spoke or client; its token is in the answer, once.
#[utoipa::path(
    post,
    path = "/v1/admin/{kind}",
    tag = "admin",
    params(("kind" = inline(Principals), Path, description = "`spokes` or `clients`.")),
    request_body = AddPrincipal,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Added; its token is shown this once.", body = Created),
        (status = 400, description = "`VALIDATION_ERROR`: a body that does not parse, a bad id or \
            grant; `PROTOCOL_ERROR`: a body past `limits.max_frame_bytes`.", body = AdminErrorBody),
        (status = 404, description = "`NOT_FOUND`: not `spokes` or `clients`.", body = AdminErrorBody),
        (status = 409, description = "`ALREADY_EXISTS`: the id is taken.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn add_principal(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let kind = kind_of(&kind)?;
    let add: AddPrincipal = crate::http::object_body(&body).map_err(|e| {
        AdminError(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("the body must be {{\"id\", \"name\"?, \"scopes\"?, \"labels\"?, \"provides\"?}}: {e}"),
        )
    })?;
    let new = NewPrincipal {
        id: add.id,
        name: add.name,
        scopes: add.scopes,
        labels: add.labels,
        provides: add.provides,
    };
    let (principal, token) = hub.store().create_principal(kind, &new).await?;
    let target = format!("{kind}/{}", principal.id);
    let detail = json!({"scopes": principal.scopes, "labels": principal.labels, "provides": principal.provides});
    audit(&hub, &who, &format!("{kind}.add"), &target, detail).await?;
    let body = Created {
        principal,
        // Shown once: only its hash is stored.
        token: token.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Removes a spoke or client with its registrations.
#[utoipa::path(
    delete,
    path = "/v1/admin/{kind}/{id}",
    tag = "admin",
    params(("kind" = inline(Principals), Path, description = "`spokes` or `clients`."), ("id" = String, Path, description = "The spoke's or client's id.", example = "edge-1")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Removed, with its registrations; its live sessions close \
            (4401) within `limits.revocation_check_ms`.", body = Removed),
        (status = 404, description = "`NOT_FOUND`: no such spoke or client.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn remove_principal(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let kind = kind_of(&kind)?;
    let removed = hub.store().remove_principal(kind, &id).await?;
    let target = format!("{kind}/{id}");
    audit(
        &hub,
        &who,
        &format!("{kind}.remove"),
        &target,
        json!({"registrations": removed}),
    )
    .await?;
    Ok(Json(Removed {
        removed_registrations: removed,
    })
    .into_response())
}

/// Disables a spoke or client: its token stops authenticating.
#[utoipa::path(
    post,
    path = "/v1/admin/{kind}/{id}/disable",
    tag = "admin",
    params(("kind" = inline(Principals), Path, description = "`spokes` or `clients`."), ("id" = String, Path, description = "The spoke's or client's id.", example = "edge-1")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Disabled: it cannot authenticate, and its live sessions \
            close (4401)."),
        (status = 404, description = "`NOT_FOUND`: no such spoke or client.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn disable_principal(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Answer {
    set_enabled(&hub, &headers, &kind, &id, false).await
}

/// Enables a disabled spoke or client.
#[utoipa::path(
    post,
    path = "/v1/admin/{kind}/{id}/enable",
    tag = "admin",
    params(("kind" = inline(Principals), Path, description = "`spokes` or `clients`."), ("id" = String, Path, description = "The spoke's or client's id.", example = "edge-1")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Enabled: its token authenticates again."),
        (status = 404, description = "`NOT_FOUND`: no such spoke or client.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn enable_principal(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Answer {
    set_enabled(&hub, &headers, &kind, &id, true).await
}

/// Disables or enables a principal, audited as `{kind}.disable` or
/// `{kind}.enable`.
async fn set_enabled(
    hub: &Hub,
    headers: &HeaderMap,
    kind: &str,
    id: &str,
    enabled: bool,
) -> Answer {
    let who = admin(hub, headers).await?;
    let kind = kind_of(kind)?;
    hub.store().set_principal_enabled(kind, id, enabled).await?;
    let action = if enabled { "enable" } else { "disable" };
    audit(
        hub,
        &who,
        &format!("{kind}.{action}"),
        &format!("{kind}/{id}"),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Gives a spoke or client a new token; the old one stops working.
#[utoipa::path(
    post,
    path = "/v1/admin/{kind}/{id}/rotate-token",
    tag = "admin",
    params(("kind" = inline(Principals), Path, description = "`spokes` or `clients`."), ("id" = String, Path, description = "The spoke's or client's id.", example = "edge-1")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A new token, shown this once; the old one stops working \
            and its sessions close (4401).", body = Rotated),
        (status = 404, description = "`NOT_FOUND`: no such spoke or client.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn rotate_token(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let kind = kind_of(&kind)?;
    let token = hub.store().rotate_token(kind, &id).await?;
    let target = format!("{kind}/{id}");
    audit(
        &hub,
        &who,
        &format!("{kind}.rotate-token"),
        &target,
        json!({}),
    )
    .await?;
    Ok(Json(Rotated {
        token: token.expose().to_owned(),
    })
    .into_response())
}

/// `GET /v1/admin/audit?limit=&before=`; no other parameter is accepted.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Entries older than this `id`: the next page.
    before: Option<i64>,
    /// Entries on the page: 1 to `limits.max_list_page` (1000); 100 without it.
    #[param(minimum = 1)]
    limit: Option<u32>,
}

/// `GET /v1/admin/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// The audit log, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the audit log.", body = AuditPage),
        (status = 400, description = "`VALIDATION_ERROR`: a `limit` out of range or another query \
            parameter.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn list_audit(
    State(hub): State<Hub>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Answer {
    admin(&hub, &headers).await?;
    let query = query_of(query, "the query accepts `limit` and `before`")?;
    // A page holds at most `limits.max_list_page` entries, as listings do.
    let max = u32::try_from(hub.config().limits.max_list_page).unwrap_or(u32::MAX);
    let limit = query.limit.unwrap_or(100.min(max));
    if limit == 0 || limit > max {
        return Err(AdminError(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("limit must be 1 to {max} (limits.max_list_page)"),
        ));
    }
    let entries = hub.store().list_audit(query.before, limit).await?;
    Ok(Json(AuditPage { entries }).into_response())
}

/// Every plugin, as `GET /v1/plugins`.
#[utoipa::path(
    get,
    path = "/v1/admin/plugins",
    operation_id = "admin_list_plugins",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "As `GET /v1/plugins`.", body = HostStatus),
        crate::openapi::AdminRefusals,
    )
)]
async fn list_plugins(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    admin(&hub, &headers).await?;
    Ok(Json(hub.plugins().status()).into_response())
}

/// `POST /v1/admin/plugins/reload`.
#[derive(Serialize, ToSchema)]
pub struct Reloaded {
    /// New versions loaded.
    pub loaded: usize,
    /// Every plugin after the reload, as `GET /v1/plugins`.
    pub status: HostStatus,
}

/// Loads every changed file of the plugins folder now.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/reload",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every changed file of the plugins folder loaded now.",
            body = Reloaded),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn reload_plugins(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    let who = admin(&hub, &headers).await?;
    audit(&hub, &who, "plugins.reload", "plugins", json!({})).await?;
    let plugins = hub.plugins().clone();
    let namespaces = hub.config().remap.per_spoke_namespaces.clone();
    // Compiling a new component takes up to seconds: off the async workers.
    let loaded = tokio::task::spawn_blocking(move || plugins.rescan(&namespaces))
        .await
        .unwrap_or(0);
    let status = hub.plugins().status();
    Ok(Json(Reloaded { loaded, status }).into_response())
}

/// `POST /v1/admin/plugins/{name}/lift-quarantine`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifted {
    /// Whether it was quarantined.
    pub was_quarantined: bool,
}

/// Lets a quarantined plugin decide again.
#[utoipa::path(
    post,
    path = "/v1/admin/plugins/{name}/lift-quarantine",
    tag = "admin",
    params(("name" = String, Path, description = "The plugin's name.",
        example = "least-in-flight")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "It decides again from the next call, its failure count at \
            zero.", body = Lifted),
        (status = 404, description = "`NOT_FOUND`: no version of it is loaded.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn lift_quarantine(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let Some(was) = hub.plugins().lift_quarantine(&name) else {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no plugin {name:?} is loaded"),
        ));
    };
    let target = format!("plugin/{name}");
    audit(
        &hub,
        &who,
        "plugin.lift-quarantine",
        &target,
        json!({"wasQuarantined": was}),
    )
    .await?;
    Ok(Json(Lifted {
        was_quarantined: was,
    })
    .into_response())
}

/// The configuration the hub runs with, secrets masked: the database URL's
/// password, and every value of `[plugins.settings]` (plugins may keep keys
/// there).
#[utoipa::path(
    get,
    path = "/v1/admin/config",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`alkhub.toml` as the hub runs it, every key present (see \
            `alkhub config defaults`), with the database URL's password and every value of \
            `[plugins.settings]` masked.", body = Object),
        crate::openapi::AdminRefusals,
    )
)]
async fn effective_config(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    admin(&hub, &headers).await?;
    let mut config = hub.config().clone();
    // Plugin selections, routes and settings reload with the file (SIGHUP).
    config.plugins = (*hub.plugins().config()).clone();
    config.database.url = crate::telemetry::redact_url(&config.database.url);
    let mut value = serde_json::to_value(&config).unwrap_or_default();
    if let Some(settings) = value
        .pointer_mut("/plugins/settings")
        .and_then(|s| s.as_object_mut())
    {
        for plugin in settings.values_mut() {
            if let Some(keys) = plugin.as_object_mut() {
                for v in keys.values_mut() {
                    *v = json!("[masked]");
                }
            }
        }
    }
    Ok(Json(value).into_response())
}

/// Every definition, whoever may call it, a page at a time (as
/// `GET /v1/operations` pages).
#[utoipa::path(
    get,
    path = "/v1/admin/operations",
    operation_id = "admin_list_operations",
    tag = "admin",
    params(crate::http::ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of every definition, whoever may call it, shaped \
            as `GET /v1/operations`.", body = crate::builtins::OperationPage),
        (status = 400, description = "`VALIDATION_ERROR`: a `limit` out of range or another query \
            parameter.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn list_operations(
    State(hub): State<Hub>,
    headers: HeaderMap,
    query: Result<Query<crate::http::ListQuery>, QueryRejection>,
) -> Answer {
    admin(&hub, &headers).await?;
    let query = query_of(query, "the query accepts `limit` and `after`")?;
    let catalog = hub.dispatcher().catalog();
    catalog.wait_loaded().await;
    let page = crate::builtins::PageRequest {
        after: query.after,
        limit: query.limit,
        namespace: query.namespace,
    };
    let max_page = hub.config().limits.max_list_page;
    match crate::builtins::page_of(catalog, &page, max_page, |_| true) {
        Ok(listing) => Ok(Json(listing).into_response()),
        Err(e) => Err(AdminError(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            e.message,
        )),
    }
}

/// A live provider of an operation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView<'a> {
    /// The registration it serves the operation under.
    pub registration_id: &'a str,
    /// `spoke` or `client`.
    pub kind: PrincipalKind,
    /// The provider's id.
    pub provider_id: &'a str,
    /// Its session (see `GET /v1/admin/sessions`).
    pub session_id: u64,
    /// The id it declared, before the remap.
    pub pre_remap_id: &'a str,
    /// Calls it is serving now.
    pub in_flight: u32,
}

/// `GET /v1/admin/operations/{operationId}`.
#[derive(Serialize, ToSchema)]
pub struct AdminOperation<'a> {
    /// The definition and its stored registrations, as `hub.operations.get`.
    #[serde(flatten)]
    pub detail: OperationDetail<'a>,
    /// Its live providers.
    pub providers: Vec<ProviderView<'a>>,
}

/// One definition with its live providers (sessions, calls in flight) and
/// every stored registration, active or not.
#[utoipa::path(
    get,
    path = "/v1/admin/operations/{operation_id}",
    tag = "admin",
    params(("operation_id" = String, Path, description = "The operation's id.",
        example = "hub.operations.list")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The definition, its stored registrations and its live \
            providers.", body = AdminOperation),
        (status = 404, description = "`NOT_FOUND`: no such operation.", body = AdminErrorBody),
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
    )
)]
async fn get_operation(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(operation_id): Path<String>,
) -> Answer {
    admin(&hub, &headers).await?;
    let Some(entry) = hub.dispatcher().catalog().get(&operation_id) else {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no operation {operation_id:?}"),
        ));
    };
    let registrations = hub
        .store()
        .registrations_of_operation(&operation_id)
        .await?;
    let out = AdminOperation {
        detail: OperationDetail {
            operation: crate::builtins::view(&entry),
            registrations: crate::builtins::registration_views(&registrations),
        },
        providers: entry
            .providers
            .iter()
            .map(|p| ProviderView {
                registration_id: &p.registration_id,
                kind: p.connection.identity.kind,
                provider_id: &p.connection.identity.id,
                session_id: p.connection.session_id,
                pre_remap_id: &p.pre_remap_id,
                in_flight: p.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect(),
    };
    Ok(Json(out).into_response())
}

/// One import in `GET /v1/admin/imports`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    /// Its name, which is also its namespace.
    pub name: String,
    /// `openapi` or `mcp`.
    pub kind: String,
    /// The namespace of its operations.
    pub namespace: String,
    /// How many operations it defines.
    pub operations: usize,
    /// Where its document came from (OpenAPI).
    pub source: Option<String>,
    /// The base URL it calls, or the MCP server's URL.
    pub target: Option<String>,
    /// Whether the hub serves it.
    pub enabled: bool,
    /// Whether a provider for it is connected now.
    pub serving: bool,
}

/// `GET /v1/admin/imports`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportList {
    /// Every import, by name.
    pub imports: Vec<ImportView>,
}

/// An operation an import left out.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Skipped {
    /// `METHOD /path`.
    pub operation: String,
    /// Why it cannot be mapped.
    pub reason: String,
}

/// What adding or refreshing an import changed, by operation id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportDone {
    /// The import's name.
    pub name: String,
    /// Definitions created.
    pub added: Vec<String>,
    /// Definitions changed.
    pub updated: Vec<String>,
    /// Definitions kept as they were.
    pub unchanged: Vec<String>,
    /// Definitions the source no longer has, deleted.
    pub removed: Vec<String>,
    /// Operations of the document that cannot be mapped.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Where requests go (OpenAPI), if anywhere.
    pub base_url: Option<String>,
}

impl ImportDone {
    fn of_changes(name: String, changes: crate::store::ImportChanges) -> Self {
        ImportDone {
            name,
            added: changes.added,
            updated: changes.updated,
            unchanged: changes.unchanged,
            removed: changes.removed,
            skipped: Vec::new(),
            base_url: None,
        }
    }

    fn of_openapi(imported: crate::imports::Imported) -> Self {
        ImportDone {
            skipped: imported
                .skipped
                .into_iter()
                .map(|(operation, reason)| Skipped { operation, reason })
                .collect(),
            base_url: imported.base_url,
            ..ImportDone::of_changes(imported.name, imported.changes)
        }
    }

    fn changes(&self) -> crate::store::ImportChanges {
        crate::store::ImportChanges {
            added: self.added.clone(),
            updated: self.updated.clone(),
            unchanged: self.unchanged.clone(),
            removed: self.removed.clone(),
        }
    }
}

/// `POST /v1/admin/imports`: an OpenAPI document (by URL, or its text in
/// `document`) or an MCP server reached over streamable HTTP.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddImport {
    /// `openapi` or `mcp`.
    pub kind: String,
    /// The import's name and namespace.
    pub name: String,
    /// OpenAPI: the document's http(s) URL, which the hub fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// OpenAPI: the document itself (JSON or YAML), instead of `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// OpenAPI: where requests go (default: the document's server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// OpenAPI: definitions only, no requests (instead of `baseUrl`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_base_url: bool,
    /// OpenAPI: credentials as `--auth` takes them: `SCHEME=ENV` per
    /// security scheme of the document, or one `bearer:ENV`,
    /// `header:NAME:ENV` or `basic:ENV` for every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<String>,
    /// OpenAPI: fail when an operation cannot be mapped.
    #[serde(default)]
    pub strict: bool,
    /// CA certificates (PEM text) trusted besides the system's roots, for
    /// the import's HTTPS requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// MCP: the server's streamable HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

use crate::imports::INLINE_SOURCE as INLINE;

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message.into())
}

/// A listing's query, read once the caller is known to be an admin: one
/// that does not parse is a `VALIDATION_ERROR` like any other bad value.
fn query_of<T>(query: Result<Query<T>, QueryRejection>, accepts: &str) -> Result<T, AdminError> {
    query.map(|Query(query)| query).map_err(|e| {
        invalid(format!(
            "{accepts}: {}",
            crate::protocol::clip_message(&e.body_text())
        ))
    })
}

/// An import that failed: a store conflict keeps its status, anything else
/// (a document that cannot be fetched, parsed or mapped) is the request's.
fn import_failed(e: anyhow::Error) -> AdminError {
    match e.downcast::<StoreError>() {
        Ok(store) => store.into(),
        Err(e) => invalid(format!("{e:#}")),
    }
}

fn no_import(name: &str) -> AdminError {
    AdminError(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no import {name:?}"),
    )
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Every import, with whether its provider is serving.
#[utoipa::path(
    get,
    path = "/v1/admin/imports",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every import, by name.", body = ImportList),
        crate::openapi::AdminRefusals,
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
    )
)]
async fn list_imports(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    admin(&hub, &headers).await?;
    let imports = import_views(&hub).await?;
    Ok(Json(ImportList { imports }).into_response())
}

/// Every import, by name, with whether its provider is connected.
pub(crate) async fn import_views(hub: &Hub) -> Result<Vec<ImportView>, StoreError> {
    let live: std::collections::HashSet<String> = hub
        .sessions()
        .live()
        .iter()
        .map(|c| c.identity.id.clone())
        .collect();
    let imports = hub
        .store()
        .list_imports()
        .await?
        .into_iter()
        .map(|i| ImportView {
            serving: live.contains(&crate::imports::http_provider::provider_id(&i.name)),
            target: i.config["base_url"]
                .as_str()
                .or(i.config["url"].as_str())
                .map(str::to_owned),
            source: i.config["source"].as_str().map(str::to_owned),
            kind: i.kind.as_str().to_owned(),
            operations: i.operations.len(),
            enabled: i.enabled,
            namespace: i.namespace,
            name: i.name,
        })
        .collect();
    Ok(imports)
}

/// Saves the import `add` describes and serves it in place of what served
/// it before.
async fn save_and_serve(hub: &Hub, add: AddImport) -> Result<ImportDone, AdminError> {
    let store = hub.store();
    let done = match add.kind.as_str() {
        "openapi" => {
            if add.url.is_some() {
                return Err(invalid(
                    "url is for MCP imports; an OpenAPI document is given by source or document",
                ));
            }
            let auth = add
                .auth
                .iter()
                .map(|spec| spec.parse::<crate::imports::AuthSpec>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            let (source, text) = match (add.source, add.document) {
                (Some(source), None) if is_http_url(&source) => {
                    let text = crate::imports::read_source_trusting(&source, add.ca_cert.as_deref())
                        .await
                        .map_err(import_failed)?;
                    (source, text)
                }
                (Some(source), None) => {
                    return Err(invalid(format!(
                        "source {source:?} is not an http(s) URL: the hub reads no files for the \
                         admin API, so send the document's text as document"
                    )))
                }
                (None, Some(text)) => (INLINE.to_owned(), text),
                _ => return Err(invalid("give the document by exactly one of source (an http(s) URL) or document (its text)")),
            };
            let imported = crate::imports::import_openapi_text(
                store,
                &source,
                &text,
                &add.name,
                crate::imports::Options {
                    base_url: match (add.base_url.as_deref(), add.no_base_url) {
                        (None, true) => crate::imports::BaseUrl::None,
                        (Some(_), true) => {
                            return Err(invalid("give baseUrl or noBaseUrl, not both"))
                        }
                        (Some(url), false) => crate::imports::BaseUrl::Given(url),
                        (None, false) => crate::imports::BaseUrl::FromDocument,
                    },
                    auth,
                    strict: add.strict,
                    ca_cert: add.ca_cert.clone(),
                },
            )
            .await
            .map_err(import_failed)?;
            ImportDone::of_openapi(imported)
        }
        "mcp" => {
            if add.source.is_some()
                || add.document.is_some()
                || add.base_url.is_some()
                || !add.auth.is_empty()
            {
                return Err(invalid("an MCP import takes name and url only"));
            }
            let Some(url) = add.url.filter(|u| is_http_url(u)) else {
                return Err(invalid(
                    "an MCP import needs url, the server's streamable HTTP endpoint (http or https); \
                     a server started by a command is imported with the CLI on the hub's machine",
                ));
            };
            let config = crate::imports::mcp::McpConfig {
                command: None,
                args: Vec::new(),
                env: Default::default(),
                url: Some(url),
                ca_cert: add.ca_cert,
                tools: Default::default(),
            };
            let changes = crate::imports::mcp::import_mcp(store, &add.name, config)
                .await
                .map_err(import_failed)?;
            ImportDone::of_changes(add.name, changes)
        }
        other => {
            return Err(invalid(format!(
                "no import kind {other:?}: use openapi or mcp"
            )))
        }
    };
    serve_again(hub, &done).await?;
    Ok(done)
}

/// Stops what served import `done.name`, brings the catalog in line with
/// its new definitions and serves it again.
async fn serve_again(hub: &Hub, done: &ImportDone) -> Result<(), AdminError> {
    hub.imports().stop(&done.name).await;
    crate::imports::live::apply_changes(hub, &done.changes())
        .await
        .map_err(import_failed)?;
    if let Some(import) = hub.store().get_import(&done.name).await? {
        hub.imports().start(hub, import).await;
    }
    Ok(())
}

/// Saves an import and serves it at once. The hub fetches an OpenAPI
/// `source` URL itself, and connects to an MCP `url`.
#[utoipa::path(
    post,
    path = "/v1/admin/imports",
    tag = "admin",
    request_body = AddImport,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Saved in place of an import of that name.", body = ImportDone),
        (status = 201, description = "Saved and served.", body = ImportDone),
        (status = 400, description = "`VALIDATION_ERROR`: a body that does not parse, an unknown \
            kind, a source that is not an http(s) URL, a document that cannot be fetched, parsed \
            or mapped; `PROTOCOL_ERROR`: a body past `limits.max_frame_bytes`.",
            body = AdminErrorBody),
        (status = 409, description = "`ALREADY_EXISTS`: a definition belongs to a spoke or another \
            import.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
    )
)]
async fn add_import(State(hub): State<Hub>, headers: HeaderMap, body: axum::body::Bytes) -> Answer {
    let who = admin(&hub, &headers).await?;
    let add: AddImport = crate::http::object_body(&body).map_err(|e| {
        invalid(format!(
            "the body must be {{\"kind\": \"openapi\", \"name\", \"source\" | \"document\", \"baseUrl\"?, \"auth\"?, \"strict\"?}} \
             or {{\"kind\": \"mcp\", \"name\", \"url\"}}: {e}"
        ))
    })?;
    let detail = json!({"kind": add.kind, "source": add.source.as_deref().unwrap_or(if add.document.is_some() { INLINE } else { "" }), "url": add.url, "baseUrl": add.base_url});
    let _changing = hub.imports().changing().await;
    let existed = hub.store().get_import(&add.name).await?.is_some();
    let name = add.name.clone();
    let done = save_and_serve(&hub, add).await?;
    audit(&hub, &who, "import.add", &format!("import/{name}"), detail).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(done)).into_response())
}

/// Reads an import's source again (an OpenAPI URL, or the MCP server) and
/// serves what changed.
#[utoipa::path(
    post,
    path = "/v1/admin/imports/{name}/refresh",
    tag = "admin",
    params(("name" = String, Path, description = "The import's name.", example = "petstore")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What changed.", body = ImportDone),
        (status = 400, description = "`VALIDATION_ERROR`: an import read from a file or sent \
            inline (send it again), or a source that cannot be read or mapped now.",
            body = AdminErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such import.", body = AdminErrorBody),
        (status = 409, description = "`ALREADY_EXISTS`: a definition belongs to a spoke or another \
            import.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
    )
)]
async fn refresh_import(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let _changing = hub.imports().changing().await;
    let Some(import) = hub.store().get_import(&name).await? else {
        return Err(no_import(&name));
    };
    // The hub reads no file for the admin API: a document read from one is
    // refreshed with the CLI on the machine that has it.
    let source = import.config["source"].as_str().unwrap_or_default();
    if import.kind == crate::store::ImportKind::Openapi && !is_http_url(source) {
        return Err(invalid(format!(
            "import {name:?} was read from {source:?}, which the hub cannot read again: \
             send the document again with POST /v1/admin/imports"
        )));
    }
    let done = match crate::imports::refresh(hub.store(), import)
        .await
        .map_err(import_failed)?
    {
        crate::imports::Refreshed::Openapi(imported) => ImportDone::of_openapi(imported),
        crate::imports::Refreshed::Mcp(changes) => ImportDone::of_changes(name, changes),
    };
    serve_again(&hub, &done).await?;
    let detail = json!({"added": done.added.len(), "updated": done.updated.len(), "removed": done.removed.len()});
    audit(
        &hub,
        &who,
        "import.refresh",
        &format!("import/{}", done.name),
        detail,
    )
    .await?;
    Ok(Json(done).into_response())
}

/// `DELETE /v1/admin/imports/{name}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportRemoved {
    /// The ids of its definitions, deleted with their registrations.
    pub removed_operations: Vec<String>,
}

/// Stops an import's provider (open calls end with `PROVIDER_GONE`) and
/// deletes its definitions.
#[utoipa::path(
    delete,
    path = "/v1/admin/imports/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The import's name.", example = "petstore")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Removed.", body = ImportRemoved),
        (status = 404, description = "`NOT_FOUND`: no such import.", body = AdminErrorBody),
        crate::openapi::AdminRefusals,
        (status = 500, description = "`UNKNOWN_ERROR`: the database failed.", body = AdminErrorBody),
    )
)]
async fn remove_import(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let _changing = hub.imports().changing().await;
    if hub.store().get_import(&name).await?.is_none() {
        return Err(no_import(&name));
    }
    hub.imports().remove(&name).await;
    let removed = hub.store().remove_import(&name).await?;
    for id in &removed {
        hub.dispatcher().catalog().remove_definition(id);
    }
    audit(
        &hub,
        &who,
        "import.remove",
        &format!("import/{name}"),
        json!({"operations": removed.len()}),
    )
    .await?;
    Ok(Json(ImportRemoved {
        removed_operations: removed,
    })
    .into_response())
}
