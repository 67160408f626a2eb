//! The axum router: health today; WebSocket upgrades, HTTP calls and admin
//! endpoints as they arrive. Handlers translate HTTP to and from the hub's
//! types and hold no state of their own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::server::Hub;

/// Builds the router over a hub handle.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(hub)
}

/// `GET /healthz`: 200 while the database answers, 503 otherwise.
async fn healthz(State(hub): State<Hub>) -> (StatusCode, Json<serde_json::Value>) {
    match hub.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "message": e.to_string()})),
        ),
    }
}
