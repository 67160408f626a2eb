//! The operator's dashboard: `/ui` serves a page, its script and its style,
//! all compiled into the binary (no CDN: it works offline), and
//! `GET /v1/admin/events` streams what the page shows as server-sent events,
//! one `snapshot` a second, to holders of the admin scope.
//!
//! The page keeps the token it signs in with in the tab's `sessionStorage`
//! only, and sends it as a bearer token: the event stream is read with
//! `fetch`, not `EventSource` (which cannot send headers), so no token ever
//! appears in a URL or a cookie.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::admin::{admin, import_views, session_views, ImportView, SessionView};
use crate::limits::Refusal;
use crate::metrics::CallTotals;
use crate::plugins::HostStatus;
use crate::protocol::PrincipalKind;
use crate::server::Hub;

/// How often the event stream sends a snapshot.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// The window calls per second, the error rate and p99 are measured over.
pub const FIGURES_WINDOW: Duration = Duration::from_secs(10);

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// The routes of `/ui` and `/v1/admin/events`.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index_slash))
        .route("/ui/{asset}", get(asset))
        .route("/v1/admin/events", get(events))
        .with_state(hub)
}

/// Headers every dashboard file is served with: nothing loads from
/// elsewhere, no inline script runs, no other site may frame the page.
fn served(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The dashboard's page.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "dashboard",
    responses((status = 200, description = "The page (protocol 5.9); it signs in with an admin token.",
        body = String, content_type = "text/html"))
)]
pub(crate) async fn index() -> Response {
    served("text/html; charset=utf-8", INDEX)
}

/// The dashboard's page, at `/ui/` too.
#[utoipa::path(
    get,
    path = "/ui/",
    tag = "dashboard",
    responses((status = 200, description = "The page, as `GET /ui`.", body = String,
        content_type = "text/html"))
)]
pub(crate) async fn index_slash() -> Response {
    index().await
}

/// One of the page's files.
#[utoipa::path(
    get,
    path = "/ui/{asset}",
    tag = "dashboard",
    params(("asset" = String, Path, description = "`app.js` or `app.css`.", example = "app.js")),
    responses(
        (status = 200, description = "The script or the style.", body = String,
            content_type = "text/javascript"),
        (status = 404, description = "`NOT_FOUND`: no such file.", body = crate::openapi::AdminError),
    )
)]
pub(crate) async fn asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "app.js" => served("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => served("text/css; charset=utf-8", STYLE),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "NOT_FOUND", "message": format!("no dashboard file {asset:?}")})),
        )
            .into_response(),
    }
}

/// One `snapshot` event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    at_ms: u64,
    counts: Counts,
    calls: CallFigures,
    sessions: Vec<SessionView>,
    operations: Vec<OperationRow>,
    plugins: HostStatus,
    imports: Vec<ImportView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    spokes: usize,
    clients: usize,
    operations: usize,
    /// Operations with at least one live provider.
    served_operations: usize,
    registrations: usize,
    calls_in_flight: usize,
}

/// Calls over the last [`FIGURES_WINDOW`] (or since the stream began).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallFigures {
    /// False when `[metrics] enabled = false`: nothing is counted.
    counted: bool,
    /// Calls ended since the hub started.
    total: u64,
    /// Of which failed.
    errors: u64,
    per_second: f64,
    /// Failed calls over calls ended, in the window.
    error_rate: f64,
    /// The 99th percentile latency in the window (a bucket's upper bound).
    p99_ms: Option<f64>,
    window_seconds: f64,
}

/// An operation with live providers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OperationRow {
    id: String,
    providers: Vec<String>,
    /// Calls routed to it since the hub loaded it.
    calls: u64,
    in_flight: u64,
}

/// At most `admin.dashboard_rows` sessions and operations go into a
/// snapshot (the first by session id and by operation id); the counts are
/// always whole.
fn snapshot_of(hub: &Hub, window: &VecDeque<(Instant, CallTotals)>) -> Snapshot {
    let rows = hub.config().admin.dashboard_rows;
    let sessions = session_views(hub);
    let count = |kind| sessions.iter().filter(|s| s.kind == kind).count();
    let counts_spokes = count(PrincipalKind::Spoke);
    let counts_clients = count(PrincipalKind::Client);
    let entries = hub.dispatcher().catalog().list();
    let mut served: Vec<_> = entries.iter().filter(|e| !e.providers.is_empty()).collect();
    served.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
    let counts = Counts {
        spokes: counts_spokes,
        clients: counts_clients,
        operations: entries.len(),
        served_operations: served.len(),
        registrations: entries.iter().map(|e| e.providers.len()).sum(),
        calls_in_flight: hub.dispatcher().open_calls(),
    };
    let operations = served
        .into_iter()
        .take(rows)
        .map(|e| OperationRow {
            id: e.definition.id.clone(),
            providers: e
                .providers
                .iter()
                .map(|p| p.connection.identity.id.clone())
                .collect(),
            calls: e.sequence.load(Ordering::Relaxed),
            in_flight: e
                .providers
                .iter()
                .map(|p| p.in_flight.load(Ordering::Relaxed) as u64)
                .sum(),
        })
        .collect();
    let (first_at, first) = window.front().expect("the window holds the newest reading");
    let (last_at, last) = window.back().expect("the window holds the newest reading");
    let seconds = last_at.duration_since(*first_at).as_secs_f64();
    let calls = last.calls - first.calls;
    let errors = last.errors - first.errors;
    Snapshot {
        at_ms: crate::connection::now_ms(),
        counts,
        calls: CallFigures {
            counted: hub.metrics().enabled(),
            total: last.calls,
            errors: last.errors,
            per_second: if seconds > 0.0 {
                calls as f64 / seconds
            } else {
                0.0
            },
            error_rate: if calls > 0 {
                errors as f64 / calls as f64
            } else {
                0.0
            },
            p99_ms: last.quantile_since(first, 0.99),
            window_seconds: seconds,
        },
        sessions: sessions.into_iter().take(rows).collect(),
        operations,
        plugins: hub.plugins().status(),
        imports: Vec::new(),
    }
}

/// `GET /v1/admin/events`: a `snapshot` event now and every
/// [`SNAPSHOT_INTERVAL`], while the token still holds the admin scope. A
/// stream counts against `limits.max_sse_streams` like a subscription's.
/// A snapshot is made only when the previous one has been written, so a
/// reader that falls behind holds no backlog.
/// One event of `GET /v1/admin/events`.
#[derive(utoipa::ToSchema)]
pub struct SnapshotEvent {
    /// Always `snapshot`.
    pub event: String,
    /// JSON: the snapshot of protocol 5.9 (counts, call figures, sessions,
    /// operations, plugins, imports).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/events",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A `snapshot` event now and every second (protocol 5.9).",
            body = SnapshotEvent, content_type = "text/event-stream"),
        crate::openapi::AdminRefusals,
        (status = 429, description = "`OVERLOADED`: limits.max_sse_streams or its per-principal share.",
            body = crate::openapi::AdminError),
    )
)]
pub(crate) async fn events(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    let who = match admin(&hub, &headers).await {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let limits = &hub.config().limits;
    let key = format!("{}:{}", who.kind, who.id);
    let permit = match hub.quotas().sse_streams.try_acquire(&key) {
        Ok(permit) => permit,
        Err(refusal) => {
            let message = match refusal {
                Refusal::Total => format!(
                    "the hub already has {} streams open (limits.max_sse_streams)",
                    limits.max_sse_streams
                ),
                Refusal::PerKey => format!(
                    "this caller already has {} streams open (limits.max_sse_streams_per_principal)",
                    limits.max_sse_streams_per_principal
                ),
            };
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"code": "OVERLOADED", "message": message})),
            )
                .into_response();
        }
    };
    let state = (hub, headers, VecDeque::new(), permit, true);
    let stream = futures_util::stream::unfold(
        state,
        |(hub, headers, mut window, permit, first)| async move {
            if !first {
                tokio::time::sleep(SNAPSHOT_INTERVAL).await;
                // A token disabled or stripped of the scope ends the stream.
                if admin(&hub, &headers).await.is_err() || hub.is_shutting_down() {
                    return None;
                }
            }
            let now = Instant::now();
            window.push_back((now, hub.metrics().totals()));
            while window
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > FIGURES_WINDOW)
            {
                window.pop_front();
            }
            let mut snapshot = snapshot_of(&hub, &window);
            match import_views(&hub).await {
                Ok(imports) => snapshot.imports = imports,
                Err(e) => tracing::warn!(error = %e, "dashboard: cannot list the imports"),
            }
            let data = serde_json::to_string(&snapshot).unwrap_or_default();
            let event = Event::default().event("snapshot").data(data);
            Some((
                Ok::<_, Infallible>(event),
                (hub, headers, window, permit, false),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
