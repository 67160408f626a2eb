//! The nodes of a cluster (`cluster_nodes`) and their leases. Cluster mode
//! runs on PostgreSQL only; every time here is the database's own clock, so
//! the nodes' clocks need not agree.

use sqlx::PgPool;

use super::{Backend, Result, Store, StoreError};

/// A node whose lease has not lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    /// Its id, the prefix of its registrations' session ids.
    pub id: String,
    /// Its configured name (or its id).
    pub name: String,
}

impl Store {
    fn cluster_pool(&self) -> Result<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Ok(pool),
            Backend::Sqlite(_) => Err(StoreError::Invalid(
                "cluster mode needs PostgreSQL ([database] url = \"postgres://...\")".to_owned(),
            )),
        }
    }

    fn counted<T>(&self, result: std::result::Result<T, sqlx::Error>) -> Result<T> {
        if result.is_err() {
            self.count_error();
        }
        Ok(result?)
    }

    /// Adds this node with a lease of `lease_ms`.
    pub async fn join_cluster(&self, id: &str, name: &str, lease_ms: u64) -> Result<()> {
        let pool = self.cluster_pool()?;
        let done = sqlx::query(
            "INSERT INTO cluster_nodes (id, name, started_at, lease_until) \
             VALUES ($1, $2, now(), now() + make_interval(secs => $3::float8 / 1000))",
        )
        .bind(id)
        .bind(name)
        .bind(lease_ms as f64)
        .execute(pool)
        .await;
        self.counted(done)?;
        Ok(())
    }

    /// Renews this node's lease; false when its row is gone (the others
    /// found the lease lapsed and deactivated its registrations).
    pub async fn renew_lease(&self, id: &str, lease_ms: u64) -> Result<bool> {
        let pool = self.cluster_pool()?;
        let done = sqlx::query(
            "UPDATE cluster_nodes SET lease_until = now() + make_interval(secs => $2::float8 / 1000) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(lease_ms as f64)
        .execute(pool)
        .await;
        Ok(self.counted(done)?.rows_affected() == 1)
    }

    /// Removes the nodes whose lease lapsed and, when there were any,
    /// deactivates every active registration that no live node activated.
    /// Returns the ids of the nodes removed here (another node may have
    /// removed some first) and how many registrations became inactive.
    pub async fn reap_dead_nodes(&self) -> Result<(Vec<String>, u64)> {
        let pool = self.cluster_pool()?;
        let dead: Vec<(String,)> = self.counted(
            sqlx::query_as("DELETE FROM cluster_nodes WHERE lease_until < now() RETURNING id")
                .fetch_all(pool)
                .await,
        )?;
        if dead.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let swept = self.deactivate_dead_nodes_registrations().await?;
        Ok((dead.into_iter().map(|(id,)| id).collect(), swept))
    }

    /// Deactivates every active registration whose session's node is not
    /// in `cluster_nodes` (dead, gone, or from before cluster mode).
    pub async fn deactivate_dead_nodes_registrations(&self) -> Result<u64> {
        let pool = self.cluster_pool()?;
        let done = sqlx::query(
            "UPDATE operation_registrations SET status = 'inactive', updated_at = now() \
             WHERE status = 'active' AND (session_id IS NULL \
               OR split_part(session_id, '-', 1) NOT IN (SELECT id FROM cluster_nodes))",
        )
        .execute(pool)
        .await;
        Ok(self.counted(done)?.rows_affected())
    }

    /// The nodes whose lease has not lapsed.
    pub async fn live_nodes(&self) -> Result<Vec<LiveNode>> {
        let pool = self.cluster_pool()?;
        let rows: Vec<(String, String)> = self.counted(
            sqlx::query_as(
                "SELECT id, name FROM cluster_nodes WHERE lease_until >= now() ORDER BY id",
            )
            .fetch_all(pool)
            .await,
        )?;
        Ok(rows
            .into_iter()
            .map(|(id, name)| LiveNode { id, name })
            .collect())
    }

    /// Claims import `name` for node `id`: true when `id` serves it now
    /// (it did already, or nobody did, or its server is no longer live).
    pub async fn claim_import(&self, name: &str, id: &str) -> Result<bool> {
        let pool = self.cluster_pool()?;
        let claimed: Option<(String,)> = self.counted(
            sqlx::query_as(
                "INSERT INTO cluster_import_owners (name, node, since) VALUES ($1, $2, now()) \
                 ON CONFLICT (name) DO UPDATE SET node = EXCLUDED.node, since = now() \
                 WHERE cluster_import_owners.node = EXCLUDED.node \
                    OR cluster_import_owners.node NOT IN \
                       (SELECT id FROM cluster_nodes WHERE lease_until >= now()) \
                 RETURNING node",
            )
            .bind(name)
            .bind(id)
            .fetch_optional(pool)
            .await,
        )?;
        Ok(claimed.is_some())
    }

    /// This node leaves: the registrations it activated become inactive,
    /// its claims on imports and its row go. Returns how many registrations
    /// changed.
    pub async fn leave_cluster(&self, id: &str) -> Result<u64> {
        let pool = self.cluster_pool()?;
        let done = sqlx::query(
            "UPDATE operation_registrations SET status = 'inactive', updated_at = now() \
             WHERE status = 'active' AND session_id LIKE $1",
        )
        .bind(format!("{id}-%"))
        .execute(pool)
        .await;
        let changed = self.counted(done)?.rows_affected();
        let unclaimed = sqlx::query("DELETE FROM cluster_import_owners WHERE node = $1")
            .bind(id)
            .execute(pool)
            .await;
        self.counted(unclaimed)?;
        let gone = sqlx::query("DELETE FROM cluster_nodes WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await;
        self.counted(gone)?;
        Ok(changed)
    }
}
