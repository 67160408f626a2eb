//! Fixtures shared by the integration tests: stores on a temporary SQLite
//! file or a fresh PostgreSQL database, in one line each.
#![allow(dead_code)]

use std::str::FromStr;

use alkhub::store::Store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The PostgreSQL server the tests use; override with `ALKHUB_TEST_POSTGRES_URL`.
pub fn postgres_base_url() -> String {
    std::env::var("ALKHUB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A migrated store and what keeps its database alive.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

/// A store on a new SQLite file in a temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("alkhub.db").display());
    let store = Store::open(&url, 4).await.unwrap();
    TestDb {
        store,
        url,
        _dir: Some(dir),
        pg_name: None,
    }
}

/// A store on a new, empty PostgreSQL database, dropped when the test ends.
/// Fails, never skips, when the server does not answer.
pub async fn postgres() -> TestDb {
    let base = postgres_base_url();
    let options = PgConnectOptions::from_str(&base).unwrap();
    let mut admin = options.connect().await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {base} does not answer ({e}); start it (scripts/test does) \
             or point ALKHUB_TEST_POSTGRES_URL at a server"
        )
    });
    let name = alkhub::crypto::random_id("alkhub_test_");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let url = database_url(&base, &name);
    let store = Store::open(&url, 4).await.unwrap();
    TestDb {
        store,
        url,
        _dir: None,
        pg_name: Some(name),
    }
}

/// `base` with its database name replaced by `name`.
fn database_url(base: &str, name: &str) -> String {
    let (without_query, query) = match base.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (base, String::new()),
    };
    let scheme_end = without_query.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match without_query[scheme_end..].find('/') {
        Some(i) => &without_query[..scheme_end + i],
        None => without_query,
    };
    format!("{prefix}/{name}{query}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let base = postgres_base_url();
        // The test's runtime may be shutting down: drop the database from a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnectOptions::from_str(&base).unwrap().connect().await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}
