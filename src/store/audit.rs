//! The `audit_log` table: every change made through the admin API, who
//! made it and when. Rows are only added.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::{now, on_pool, Result, Store};
use crate::protocol::PrincipalKind;

/// One audited change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increases with every entry.
    pub id: i64,
    /// When the change was made.
    pub at: DateTime<Utc>,
    /// Who made it: `spoke` or `client`.
    pub actor_kind: String,
    /// Who made it: the principal's id.
    pub actor_id: String,
    /// What was done, e.g. `client.add`, `session.close`.
    pub action: String,
    /// What it was done to, e.g. `client/ci-bot`, `session/42`.
    pub target: String,
    /// Anything else worth keeping (never a secret).
    pub detail: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor_kind: String,
    actor_id: String,
    action: String,
    target: String,
    detail: Json<serde_json::Value>,
}

impl Store {
    /// Records that principal `actor` did `action` to `target`.
    pub async fn audit(
        &self,
        actor: (PrincipalKind, &str),
        action: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let sql = "INSERT INTO audit_log (at, actor_kind, actor_id, action, target, detail) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(now())
            .bind(actor.0.as_str())
            .bind(actor.1)
            .bind(action)
            .bind(target)
            .bind(Json(detail))
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The newest `limit` entries with an id below `before` (all when
    /// `None`), newest first.
    pub async fn list_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        let sql = "SELECT id, at, actor_kind, actor_id, action, target, detail FROM audit_log \
                   WHERE id < $1 ORDER BY id DESC LIMIT $2";
        let rows: Vec<AuditRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor_kind: r.actor_kind,
                actor_id: r.actor_id,
                action: r.action,
                target: r.target,
                detail: r.detail.0,
            })
            .collect())
    }
}
