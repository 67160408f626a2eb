//! The `spokes` and `clients` tables: who may connect, with which token hash,
//! scopes and labels. Both tables have the same columns; [`PrincipalKind`]
//! picks the table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{now, on_pool, touched, Result, Store, StoreError};
use crate::crypto::{self, Token, TokenKind};
use crate::protocol::PrincipalKind;

/// What an operator gives when adding a spoke or client.
#[derive(Debug, Clone, Default)]
pub struct NewPrincipal {
    /// A slug such as `devbox` (checked by [`crate::names::check_slug`]).
    pub id: String,
    /// Optional display name.
    pub name: Option<String>,
    /// Scopes granted to the principal.
    pub scopes: Vec<String>,
    /// Labels (spokes: visible to routing plugins).
    pub labels: BTreeMap<String, String>,
    /// Operation-id patterns it may provide (`*` matches any characters);
    /// `None` is the default of its kind (see [`crate::registration::Grants`]).
    pub provides: Option<Vec<String>>,
}

/// A stored spoke or client. The token hash stays inside the store, so
/// this is also what the admin API and `alkhub spoke list` show.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Which table the row lives in.
    pub kind: PrincipalKind,
    /// The slug id.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Provider grants; `None` is the default of its kind.
    pub provides: Option<Vec<String>>,
    /// Disabled principals cannot authenticate.
    pub enabled: bool,
    /// When the last session started.
    pub last_connected_at: Option<DateTime<Utc>>,
    /// When the last session ended or was last seen alive.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    id: String,
    name: Option<String>,
    token_hash: String,
    scopes: Json<Vec<String>>,
    labels: Json<BTreeMap<String, String>>,
    provides: Option<Json<Vec<String>>>,
    enabled: bool,
    last_connected_at: Option<DateTime<Utc>>,
    last_seen_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl PrincipalRow {
    fn into_principal(self, kind: PrincipalKind) -> Principal {
        Principal {
            kind,
            id: self.id,
            name: self.name,
            scopes: self.scopes.0,
            labels: self.labels.0,
            provides: self.provides.map(|p| p.0),
            enabled: self.enabled,
            last_connected_at: self.last_connected_at,
            last_seen_at: self.last_seen_at,
            created_at: self.created_at,
        }
    }
}

fn table(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::Spoke => "spokes",
        PrincipalKind::Client => "clients",
    }
}

fn token_kind(kind: PrincipalKind) -> TokenKind {
    match kind {
        PrincipalKind::Spoke => TokenKind::Spoke,
        PrincipalKind::Client => TokenKind::Client,
    }
}

const COLUMNS: &str = "id, name, token_hash, scopes, labels, provides, enabled, \
                       last_connected_at, last_seen_at, created_at";

impl Store {
    /// Creates a spoke or client with a fresh token and returns the row and
    /// the token in clear text; only the token's hash is stored.
    pub async fn create_principal(
        &self,
        kind: PrincipalKind,
        new: &NewPrincipal,
    ) -> Result<(Principal, Token)> {
        crate::names::check_slug(&new.id).map_err(StoreError::Invalid)?;
        check_provides(new.provides.as_deref())?;
        let token = Token::generate(token_kind(kind));
        let at = now();
        let sql = format!(
            "INSERT INTO {} (id, name, token_hash, scopes, labels, provides, enabled, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $7)",
            table(kind)
        );
        let inserted = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(&new.id)
            .bind(&new.name)
            .bind(&token.hash().0)
            .bind(Json(&new.scopes))
            .bind(Json(&new.labels))
            .bind(new.provides.as_ref().map(Json))
            .bind(at)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()));
        match inserted.map_err(StoreError::from) {
            Err(e) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate {
                    kind: kind.as_str(),
                    id: new.id.clone(),
                })
            }
            other => other?,
        };
        let principal = Principal {
            kind,
            id: new.id.clone(),
            name: new.name.clone(),
            scopes: new.scopes.clone(),
            labels: new.labels.clone(),
            provides: new.provides.clone(),
            enabled: true,
            last_connected_at: None,
            last_seen_at: None,
            created_at: at,
        };
        Ok((principal, token))
    }

    /// Finds the principal of `kind` that holds `token`, if any. The row is
    /// found by its hash and the hash is then compared in constant time.
    pub async fn find_principal_by_token(
        &self,
        kind: PrincipalKind,
        token: &Token,
    ) -> Result<Option<Principal>> {
        if token.kind() != Some(token_kind(kind)) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE token_hash = $1",
            table(kind)
        );
        let hash = token.hash().0;
        let row: Option<PrincipalRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(&hash)
            .fetch_optional(pool)
            .await)?;
        Ok(row
            .filter(|r| crypto::verify(token, &r.token_hash))
            .map(|r| r.into_principal(kind)))
    }

    /// One principal by id.
    pub async fn get_principal(&self, kind: PrincipalKind, id: &str) -> Result<Option<Principal>> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE id = $1", table(kind));
        let row: Option<PrincipalRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(|r| r.into_principal(kind)))
    }

    /// Every principal of `kind`, ordered by id.
    pub async fn list_principals(&self, kind: PrincipalKind) -> Result<Vec<Principal>> {
        let sql = format!("SELECT {COLUMNS} FROM {} ORDER BY id", table(kind));
        let rows: Vec<PrincipalRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|r| r.into_principal(kind)).collect())
    }

    /// Removes a principal and, in the same transaction, every registration
    /// it provides (the polymorphic `provider_id` cannot carry a foreign key).
    /// Returns how many registrations were removed.
    pub async fn remove_principal(&self, kind: PrincipalKind, id: &str) -> Result<u64> {
        let sql = format!("DELETE FROM {} WHERE id = $1", table(kind));
        let (principals, registrations) = on_pool!(self, |pool| {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let registrations = sqlx::query(
                "DELETE FROM operation_registrations WHERE provider_type = $1 AND provider_id = $2",
            )
            .bind(kind.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let principals = sqlx::query(&sql)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if principals == 1 {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>((principals, registrations))
        })?;
        if principals == 0 {
            return Err(StoreError::NotFound {
                kind: kind.as_str(),
                id: id.to_owned(),
            });
        }
        Ok(registrations)
    }

    /// Enables or disables a principal. A disabled one cannot authenticate,
    /// and a running hub closes its live sessions (4401) within
    /// `limits.revocation_check_ms`.
    pub async fn set_principal_enabled(
        &self,
        kind: PrincipalKind,
        id: &str,
        enabled: bool,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET enabled = $1, updated_at = $2 WHERE id = $3",
            table(kind)
        );
        let changed = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(enabled)
            .bind(now())
            .bind(id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        touched(changed, kind.as_str(), id)
    }

    /// Gives a principal a new token and returns it in clear text; the old
    /// one stops working, and a running hub closes the sessions that
    /// authenticated with it (4401) within `limits.revocation_check_ms`.
    pub async fn rotate_token(&self, kind: PrincipalKind, id: &str) -> Result<Token> {
        let token = Token::generate(token_kind(kind));
        let sql = format!(
            "UPDATE {} SET token_hash = $1, updated_at = $2 WHERE id = $3",
            table(kind)
        );
        let changed = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(&token.hash().0)
            .bind(now())
            .bind(id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        touched(changed, kind.as_str(), id)?;
        Ok(token)
    }

    /// Replaces the provider grants of a principal (`None`: the default of
    /// its kind). Live sessions keep the grants they authenticated with.
    pub async fn set_provides(
        &self,
        kind: PrincipalKind,
        id: &str,
        provides: Option<&[String]>,
    ) -> Result<()> {
        check_provides(provides)?;
        let sql = format!(
            "UPDATE {} SET provides = $1, updated_at = $2 WHERE id = $3",
            table(kind)
        );
        let done = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(provides.map(Json))
            .bind(now())
            .bind(id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        touched(done, kind.as_str(), id)
    }

    /// Records many principals' session starts and ends in one transaction
    /// ([`crate::presence`] gathers them): for each, the time its latest
    /// session started and the time one was last seen, when known.
    pub async fn touch_principals(&self, seen: &[Seen]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for s in seen {
                let sql = format!(
                    "UPDATE {} SET last_connected_at = COALESCE($1, last_connected_at), \
                     last_seen_at = COALESCE($2, last_seen_at) WHERE id = $3",
                    table(s.kind)
                );
                sqlx::query(&sql)
                    .bind(s.connected_at)
                    .bind(s.seen_at)
                    .bind(&s.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }
}

fn check_provides(provides: Option<&[String]>) -> Result<()> {
    for pattern in provides.unwrap_or_default() {
        crate::registration::check_grant_pattern(pattern).map_err(StoreError::Invalid)?;
    }
    Ok(())
}

/// When a principal's latest session started and when one was last seen.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Spoke or client.
    pub kind: PrincipalKind,
    /// The principal.
    pub id: String,
    /// When its latest session started, if one did.
    pub connected_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When a session of it was last seen (ended), if one was.
    pub seen_at: Option<chrono::DateTime<chrono::Utc>>,
}
