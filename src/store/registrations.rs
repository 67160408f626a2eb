//! The `operation_registrations` table: which provider offers which
//! definition, under which pre-remap id, and whether it does so right now.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{now, on_pool, parse_text, Result, Store, StoreError};
use crate::crypto::random_id;
use crate::protocol::{text_enum, PrincipalKind};

/// Whether a registration currently serves calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RegistrationStatus {
    /// Its provider is connected and offers the operation.
    Active,
    /// Its provider left or unregistered; kept for the next connect.
    Inactive,
}

text_enum!(RegistrationStatus { Active => "active", Inactive => "inactive" });

/// A provider's offer of one definition.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRegistration {
    /// The definition (post-remap id).
    pub operation_id: String,
    /// Spoke or client.
    pub provider_type: PrincipalKind,
    /// The provider's id.
    pub provider_id: String,
    /// The namespace the provider declared.
    pub pre_remap_namespace: String,
    /// The name the provider declared.
    pub pre_remap_name: String,
    /// Provider-specific metadata (JSON object).
    pub metadata: Value,
    /// The session activating it; ending that session deactivates the row
    /// unless a newer session has re-activated it since.
    pub session_id: Option<String>,
}

/// A stored registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Random id (`reg_…`).
    pub id: String,
    /// The definition (post-remap id).
    pub operation_id: String,
    /// Spoke or client.
    pub provider_type: PrincipalKind,
    /// The provider's id.
    pub provider_id: String,
    /// Active or inactive.
    pub status: RegistrationStatus,
    /// The namespace the provider declared.
    pub pre_remap_namespace: String,
    /// The name the provider declared.
    pub pre_remap_name: String,
    /// Provider-specific metadata.
    pub metadata: Value,
    /// The session that last activated it.
    pub session_id: Option<String>,
    /// When it was last activated.
    pub registered_at: DateTime<Utc>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

impl Registration {
    /// The id the provider declared, `pre_remap_namespace.pre_remap_name`.
    pub fn pre_remap_id(&self) -> String {
        format!("{}.{}", self.pre_remap_namespace, self.pre_remap_name)
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RegistrationRow {
    id: String,
    operation_id: String,
    provider_type: String,
    provider_id: String,
    status: String,
    pre_remap_namespace: String,
    pre_remap_name: String,
    metadata: Json<Value>,
    session_id: Option<String>,
    registered_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<RegistrationRow> for Registration {
    type Error = StoreError;
    fn try_from(r: RegistrationRow) -> Result<Self> {
        Ok(Registration {
            id: r.id,
            operation_id: r.operation_id,
            provider_type: parse_text(&r.provider_type)?,
            provider_id: r.provider_id,
            status: parse_text(&r.status)?,
            pre_remap_namespace: r.pre_remap_namespace,
            pre_remap_name: r.pre_remap_name,
            metadata: r.metadata.0,
            session_id: r.session_id,
            registered_at: r.registered_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(super) const COLUMNS: &str =
    "id, operation_id, provider_type, provider_id, status, pre_remap_namespace, \
                       pre_remap_name, metadata, session_id, registered_at, created_at, updated_at";

/// The most values one `IN (...)` list binds: far below the bind limits of
/// both engines, large enough that a batch is a handful of statements.
pub(super) const IN_LIST_CHUNK: usize = 200;

/// `$first, $first+1, ...`: `count` placeholders for an `IN` list.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Makes `new` an active registration: re-activates the provider's most
    /// recent registration of the same definition and pre-remap id, or
    /// creates one. The database refuses a second active registration of the
    /// same (operation, provider type, provider id), which surfaces as a
    /// unique violation ([`StoreError::is_unique_violation`]).
    pub async fn activate_registration(&self, new: &NewRegistration) -> Result<Registration> {
        let at = now();
        let select = format!(
            "SELECT {COLUMNS} FROM operation_registrations \
             WHERE operation_id = $1 AND provider_type = $2 AND provider_id = $3 \
               AND pre_remap_namespace = $4 AND pre_remap_name = $5 \
             ORDER BY status ASC, updated_at DESC LIMIT 1"
        );
        let row: RegistrationRow = on_pool!(self, |pool| {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let existing: Option<RegistrationRow> = sqlx::query_as(&select)
                .bind(&new.operation_id)
                .bind(new.provider_type.as_str())
                .bind(&new.provider_id)
                .bind(&new.pre_remap_namespace)
                .bind(&new.pre_remap_name)
                .fetch_optional(&mut *tx)
                .await?;
            let id = existing.map(|r| r.id).unwrap_or_else(|| random_id("reg_"));
            let row = sqlx::query_as(&format!(
                "INSERT INTO operation_registrations (id, operation_id, provider_type, provider_id, \
                 status, pre_remap_namespace, pre_remap_name, metadata, session_id, registered_at, \
                 created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $9, $8, $8, $8) \
                 ON CONFLICT (id) DO UPDATE SET status = 'active', metadata = excluded.metadata, \
                 session_id = excluded.session_id, registered_at = excluded.registered_at, \
                 updated_at = excluded.updated_at \
                 RETURNING {COLUMNS}"
            ))
            .bind(&id)
            .bind(&new.operation_id)
            .bind(new.provider_type.as_str())
            .bind(&new.provider_id)
            .bind(&new.pre_remap_namespace)
            .bind(&new.pre_remap_name)
            .bind(Json(&new.metadata))
            .bind(at)
            .bind(&new.session_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<RegistrationRow, sqlx::Error>(row)
        })?;
        row.try_into()
    }

    /// Inserts a registration row as given, active or not, without looking
    /// for an existing one. For imports and tests of the schema's rules.
    pub async fn insert_registration(
        &self,
        new: &NewRegistration,
        status: RegistrationStatus,
    ) -> Result<Registration> {
        let sql = format!(
            "INSERT INTO operation_registrations (id, operation_id, provider_type, provider_id, \
             status, pre_remap_namespace, pre_remap_name, metadata, registered_at, created_at, \
             updated_at, session_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $10) RETURNING {COLUMNS}"
        );
        let row: RegistrationRow = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(random_id("reg_"))
            .bind(&new.operation_id)
            .bind(new.provider_type.as_str())
            .bind(&new.provider_id)
            .bind(status.as_str())
            .bind(&new.pre_remap_namespace)
            .bind(&new.pre_remap_name)
            .bind(Json(&new.metadata))
            .bind(now())
            .bind(&new.session_id)
            .fetch_one(pool)
            .await)?;
        row.try_into()
    }

    /// Marks the given registrations of a provider inactive (`unregister`),
    /// in one statement per [`IN_LIST_CHUNK`] ids. Returns how many changed.
    pub async fn deactivate_registrations(
        &self,
        provider_type: PrincipalKind,
        provider_id: &str,
        registration_ids: &[String],
    ) -> Result<u64> {
        let mut changed = 0;
        for ids in registration_ids.chunks(IN_LIST_CHUNK) {
            let sql = self.positional(format!(
                "UPDATE operation_registrations SET status = 'inactive', updated_at = $1 \
                 WHERE provider_type = $2 AND provider_id = $3 AND status = 'active' AND id IN ({})",
                placeholders(4, ids.len())
            ));
            changed += on_pool!(self, |pool| {
                let mut query = sqlx::query(&sql)
                    .bind(now())
                    .bind(provider_type.as_str())
                    .bind(provider_id);
                for id in ids {
                    query = query.bind(id);
                }
                query.execute(pool).await.map(|d| d.rows_affected())
            })?;
        }
        Ok(changed)
    }

    /// Marks inactive every registration still active under one of these
    /// session ids: the sessions ended, and a row a newer session has
    /// re-activated carries that session's id instead. Returns how many
    /// changed.
    pub async fn deactivate_sessions(&self, session_ids: &[String]) -> Result<u64> {
        let _turn = self.write_turn().await;
        let mut changed = 0;
        for ids in session_ids.chunks(IN_LIST_CHUNK) {
            let sql = self.positional(format!(
                "UPDATE operation_registrations SET status = 'inactive', updated_at = $1 \
                 WHERE status = 'active' AND session_id IN ({})",
                placeholders(2, ids.len())
            ));
            changed += on_pool!(self, |pool| {
                let mut query = sqlx::query(&sql).bind(now());
                for id in ids {
                    query = query.bind(id);
                }
                query.execute(pool).await.map(|d| d.rows_affected())
            })?;
        }
        Ok(changed)
    }

    /// Marks every registration of a provider inactive (its session ended).
    pub async fn deactivate_provider(
        &self,
        provider_type: PrincipalKind,
        provider_id: &str,
    ) -> Result<u64> {
        let done = on_pool!(self, |pool| sqlx::query(
            "UPDATE operation_registrations SET status = 'inactive', updated_at = $1 \
             WHERE provider_type = $2 AND provider_id = $3 AND status = 'active'"
        )
        .bind(now())
        .bind(provider_type.as_str())
        .bind(provider_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(done)
    }

    /// Marks every registration inactive: no session survives a restart.
    pub async fn deactivate_all_registrations(&self) -> Result<u64> {
        let done = on_pool!(self, |pool| sqlx::query(
            "UPDATE operation_registrations SET status = 'inactive', updated_at = $1 \
             WHERE status = 'active'"
        )
        .bind(now())
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(done)
    }

    /// Marks inactive every active registration not activated by a session
    /// of the hub run `instance` (see [`crate::registration::Registrar::instance`]):
    /// what earlier runs left active, without touching what this run's
    /// sessions activated meanwhile. Start-up runs it after listening.
    pub async fn deactivate_other_runs(&self, instance: &str) -> Result<u64> {
        let _turn = self.write_turn().await;
        let done = on_pool!(self, |pool| sqlx::query(
            "UPDATE operation_registrations SET status = 'inactive', updated_at = $1 \
             WHERE status = 'active' AND (session_id IS NULL OR session_id NOT LIKE $2)"
        )
        .bind(now())
        .bind(format!("{instance}-%"))
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))?;
        Ok(done)
    }

    /// The registrations of one definition, active first.
    pub async fn registrations_of_operation(
        &self,
        operation_id: &str,
    ) -> Result<Vec<Registration>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM operation_registrations WHERE operation_id = $1 \
             ORDER BY status ASC, provider_type, provider_id, id"
        );
        let rows: Vec<RegistrationRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(operation_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Registration::try_from).collect()
    }

    /// The registrations of one provider, active first.
    pub async fn registrations_of_provider(
        &self,
        provider_type: PrincipalKind,
        provider_id: &str,
    ) -> Result<Vec<Registration>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM operation_registrations \
             WHERE provider_type = $1 AND provider_id = $2 ORDER BY status ASC, operation_id, id"
        );
        let rows: Vec<RegistrationRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(provider_type.as_str())
            .bind(provider_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Registration::try_from).collect()
    }

    /// Every registration, for loading the catalog and for listings.
    pub async fn list_registrations(&self) -> Result<Vec<Registration>> {
        let sql =
            format!("SELECT {COLUMNS} FROM operation_registrations ORDER BY operation_id, id");
        let rows: Vec<RegistrationRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(Registration::try_from).collect()
    }
}
