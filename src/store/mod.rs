//! Durable storage of spokes, clients, operation definitions and their
//! registrations (decision D3), on SQLite or PostgreSQL.
//!
//! [`Store`] is a cheap, cloneable handle around a connection pool. Every
//! query is written once, in SQL both engines accept (`$1` placeholders,
//! partial indexes, `ON CONFLICT`), and runs on whichever pool the URL chose;
//! the [`on_pool!`] macro expands each body once per engine so both are
//! type-checked at build time without needing a running database.
//!
//! The store is written on lifecycle events (connect, register, disconnect,
//! admin changes) and read at start-up and by admin commands. The call path
//! never touches it: that is the catalog's job.

mod audit;
mod declare;
mod imports;
mod nodes;
mod operations;
mod principals;
mod registrations;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use audit::AuditEntry;
pub use declare::{settle, Declaration, Declared, Declarer, Refused, DECLARE_CHUNK};
pub use imports::{Import, ImportChanges, ImportKind};
pub use nodes::LiveNode;
pub use operations::{
    contract_difference, DefineOutcome, Definition, NewDefinition, Owner, OwnerKind, Source,
};
pub use principals::{NewPrincipal, Principal, Seen};
pub use registrations::{NewRegistration, Registration, RegistrationStatus};

use crate::telemetry::redact_url;

/// A storage failure, with the thing that was wrong named in the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL has a scheme the store does not know.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
    /// A row with this id already exists.
    #[error("{kind} {id:?} already exists")]
    Duplicate { kind: &'static str, id: String },
    /// No row with this id exists.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// An id or value given to the store is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A re-declaration differs from the stored definition in its contract.
    #[error("operation {id:?} is already defined with a different {field}")]
    Conflict { id: String, field: &'static str },
    /// A value read from the database does not parse (a corrupted row).
    #[error("invalid stored value: {0}")]
    Corrupt(String),
    /// The migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// `NotFound` for `kind` `id` when a write by id touched no row.
fn touched(rows: u64, kind: &'static str, id: &str) -> Result<()> {
    if rows == 0 {
        return Err(StoreError::NotFound {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(())
}

impl StoreError {
    /// True when the database refused a row because of a unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

/// The result type of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    // SQLite has one writer at a time, and a connection that finds the
    // write lock taken sleeps in SQLite's busy handler (1 ms growing to
    // 100 ms) before it tries again. Declarations queue here instead, so
    // the next one starts the moment the last commits.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    // Queries that failed, for `/metrics` (every query goes through `on_pool!`).
    errors: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever engine it is.
/// The body is compiled once per engine, so it must be valid SQL for both.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {{
        let result = match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        };
        if result.is_err() {
            $store.count_error();
        }
        result
    }};
}
pub(crate) use on_pool;

/// How long a query waits for a pooled connection. Lifecycle writes queue
/// up when many sessions start or end at once; they should wait their turn
/// rather than fail (and what still fails is retried, see
/// [`crate::registration::Registrar::session_ended`]).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// `sql`, whose placeholders `$1, $2, …` each appear once and in order,
    /// written the way this engine binds fastest: PostgreSQL takes it as it
    /// is; SQLite gets anonymous `?`, because its driver looks each
    /// numbered parameter up by name in a list as long as the statement's
    /// parameters (a chunk of declarations binds over a thousand, and the
    /// lookups then cost more than the statement).
    pub(super) fn positional(&self, sql: String) -> String {
        match self.backend {
            Backend::Postgres(_) => sql,
            Backend::Sqlite(_) => anonymous_placeholders(&sql),
        }
    }
}

/// `$1, $2, …` replaced by `?`. Debug builds check that the numbers run
/// from 1 without gaps or repeats, which anonymous parameters need.
fn anonymous_placeholders(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut copied, mut at, mut expected) = (0, 0, 1usize);
    while at < bytes.len() {
        if bytes[at] == b'$' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            let digits = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            debug_assert_eq!(
                sql[at + 1..at + 1 + digits].parse::<usize>().ok(),
                Some(expected),
                "placeholders must each appear once, in order: {sql}"
            );
            expected += 1;
            out.push_str(&sql[copied..at]);
            out.push('?');
            at += 1 + digits;
            copied = at;
        } else {
            at += 1;
        }
    }
    out.push_str(&sql[copied..]);
    out
}

impl Store {
    /// Connects to `url` (creating a SQLite file if it is missing). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let max_connections = max_connections.max(1);
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        Ok(Store {
            backend,
            sqlite_writer: Arc::default(),
            errors: Arc::default(),
        })
    }

    /// Queries the database answered with an error (refused duplicates
    /// included) or that could not get a connection, since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_error(&self) {
        self.errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The connection pool: connections open, idle, and the most it opens.
    pub fn pool_use(&self) -> (u64, u64, u64) {
        match &self.backend {
            Backend::Sqlite(pool) => (
                u64::from(pool.size()),
                pool.num_idle() as u64,
                u64::from(pool.options().get_max_connections()),
            ),
            Backend::Postgres(pool) => (
                u64::from(pool.size()),
                pool.num_idle() as u64,
                u64::from(pool.options().get_max_connections()),
            ),
        }
    }

    /// Connects and applies every pending migration.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let store = Self::connect(url, max_connections).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the pending migrations of this engine (`migrations/<engine>/`).
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// The statement that opens a transaction which will write. SQLite needs
    /// `BEGIN IMMEDIATE`: a deferred transaction that reads first cannot
    /// upgrade to a writer once another connection has committed (WAL mode
    /// answers SQLITE_BUSY_SNAPSHOT at once instead of waiting).
    fn begin_write(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "BEGIN IMMEDIATE",
            Backend::Postgres(_) => "BEGIN",
        }
    }

    /// On SQLite, a turn as the one writer (see `sqlite_writer`); on
    /// PostgreSQL, which has row locks, nothing.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite(_) => Some(self.sqlite_writer.lock().await),
            Backend::Postgres(_) => None,
        }
    }

    /// The engine's name, `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Answers whether the database responds to a trivial query.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(())
    }

    /// Runs raw SQL; for tests and diagnostics only.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64> {
        let done = on_pool!(self, |pool| sqlx::query(sql)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(done)
    }

    /// Reads one text column of the first row of raw SQL; for tests only.
    #[doc(hidden)]
    pub async fn fetch_raw_strings(&self, sql: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// The current time, truncated to microseconds so that both engines store
/// and return exactly the same value.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn parse_text<T: FromStr<Err = String>>(text: &str) -> Result<T> {
    text.parse().map_err(StoreError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::anonymous_placeholders;

    #[test]
    fn numbered_placeholders_become_anonymous_in_order() {
        let list: Vec<String> = (2..=11).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT '$' FROM t WHERE b = $1 AND c IN ({})",
            list.join(", ")
        );
        let expected = format!(
            "SELECT '$' FROM t WHERE b = ? AND c IN ({})",
            ["?"; 10].join(", ")
        );
        assert_eq!(anonymous_placeholders(&sql), expected);
    }

    #[test]
    #[should_panic(expected = "placeholders must each appear once, in order")]
    fn a_repeated_placeholder_is_caught() {
        anonymous_placeholders("UPDATE t SET a = $1, b = $1");
    }
}
