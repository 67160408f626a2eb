//! The admin API under `/v1/admin`, for principals holding the admin scope
//! (`[admin] scope`, `admin` by default): live sessions, spokes and
//! clients, operations and their registrations, plugins, the effective
//! configuration, and the audit log. Every change is written to the audit log
//! (who, what, when) before it is answered.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::protocol::{Identity, PrincipalKind};
use crate::server::Hub;
use crate::store::{NewPrincipal, Principal, StoreError};

/// The close code and reason a session closed from the admin API gets.
pub const CLOSED_BY_OPERATOR: (u16, &str) = (1008, "closed by an operator");

/// The routes of `/v1/admin`.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/v1/admin/sessions", get(list_sessions))
        .route("/v1/admin/sessions/{session_id}", delete(close_session))
        .route("/v1/admin/{kind}", get(list_principals).post(add_principal))
        .route("/v1/admin/{kind}/{id}", delete(remove_principal))
        .route("/v1/admin/{kind}/{id}/{action}", post(change_principal))
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
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    session_id: u64,
    pub(crate) kind: PrincipalKind,
    id: String,
    connected_at_ms: u64,
    labels: BTreeMap<String, String>,
    queued_bytes: usize,
    calls_open: usize,
    serving: usize,
}

async fn list_sessions(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    admin(&hub, &headers).await?;
    Ok(Json(json!({ "sessions": session_views(&hub) })).into_response())
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
#[derive(Debug, Serialize, Deserialize)]
pub struct PrincipalList {
    /// Every spoke or every client.
    pub principals: Vec<Principal>,
}

/// `POST /v1/admin/{spokes|clients}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    /// What was added.
    pub principal: Principal,
    /// Its token, shown this once.
    pub token: String,
}

/// `POST /v1/admin/{spokes|clients}/{id}/rotate-token`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rotated {
    /// The new token, shown this once.
    pub token: String,
}

/// `DELETE /v1/admin/{spokes|clients}/{id}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Its registrations removed with it.
    pub removed_registrations: u64,
}

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddPrincipal {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    provides: Option<Vec<String>>,
}

async fn add_principal(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let kind = kind_of(&kind)?;
    let add: AddPrincipal = serde_json::from_slice(&body).map_err(|e| {
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

async fn change_principal(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Path((kind, id, action)): Path<(String, String, String)>,
) -> Answer {
    let who = admin(&hub, &headers).await?;
    let kind = kind_of(&kind)?;
    let target = format!("{kind}/{id}");
    let store = hub.store();
    match action.as_str() {
        "disable" | "enable" => {
            store
                .set_principal_enabled(kind, &id, action == "enable")
                .await?;
            audit(&hub, &who, &format!("{kind}.{action}"), &target, json!({})).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "rotate-token" => {
            let token = store.rotate_token(kind, &id).await?;
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
        other => Err(AdminError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no action {other:?}: use disable, enable or rotate-token"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

async fn list_audit(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Answer {
    admin(&hub, &headers).await?;
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
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn list_plugins(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    admin(&hub, &headers).await?;
    Ok(Json(hub.plugins().status()).into_response())
}

async fn reload_plugins(State(hub): State<Hub>, headers: HeaderMap) -> Answer {
    let who = admin(&hub, &headers).await?;
    audit(&hub, &who, "plugins.reload", "plugins", json!({})).await?;
    let plugins = hub.plugins().clone();
    let namespaces = hub.config().remap.per_spoke_namespaces.clone();
    // Compiling a new component takes up to seconds: off the async workers.
    let loaded = tokio::task::spawn_blocking(move || plugins.rescan(&namespaces))
        .await
        .unwrap_or(0);
    Ok(Json(json!({"loaded": loaded, "status": hub.plugins().status()})).into_response())
}

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
    Ok(Json(json!({"wasQuarantined": was})).into_response())
}

/// The configuration the hub runs with, secrets masked: the database URL's
/// password, and every value of `[plugins.settings]` (plugins may keep keys
/// there).
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Every definition, whoever may call it, a page at a time (as
/// `GET /v1/operations` pages).
async fn list_operations(
    State(hub): State<Hub>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Answer {
    admin(&hub, &headers).await?;
    let catalog = hub.dispatcher().catalog();
    catalog.wait_loaded().await;
    let page = crate::builtins::PageRequest {
        after: query.after,
        limit: query.limit,
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

/// One definition with its live providers (sessions, calls in flight) and
/// every stored registration, active or not.
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
    let mut out = crate::builtins::describe(&entry);
    out["registrations"] = crate::builtins::describe_registrations(&registrations);
    out["providers"] = entry
        .providers
        .iter()
        .map(|p| {
            json!({
                "registrationId": &*p.registration_id,
                "kind": p.connection.identity.kind,
                "providerId": p.connection.identity.id,
                "sessionId": p.connection.session_id,
                "preRemapId": &*p.pre_remap_id,
                "inFlight": p.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

/// One import in `GET /v1/admin/imports`.
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportList {
    /// Every import, by name.
    pub imports: Vec<ImportView>,
}

/// An operation an import left out.
#[derive(Debug, Serialize, Deserialize)]
pub struct Skipped {
    /// `METHOD /path`.
    pub operation: String,
    /// Why it cannot be mapped.
    pub reason: String,
}

/// What adding or refreshing an import changed, by operation id.
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Default, Serialize, Deserialize)]
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

async fn add_import(State(hub): State<Hub>, headers: HeaderMap, body: axum::body::Bytes) -> Answer {
    let who = admin(&hub, &headers).await?;
    let add: AddImport = serde_json::from_slice(&body).map_err(|e| {
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
    Ok(Json(json!({"removedOperations": removed})).into_response())
}
