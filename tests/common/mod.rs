//! Fixtures shared by the integration tests: stores on a temporary SQLite
//! file or a fresh PostgreSQL database, in one line each.
#![allow(dead_code)]

pub mod wat;

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

// ---------------------------------------------------------------------------
// Hubs, peers and raw sockets.

use std::time::Duration;

use alkhub::config::Config;
use alkhub::peer::{Peer, PeerBuilder};
use alkhub::protocol::PrincipalKind;
use alkhub::server::RunningHub;
use alkhub::store::NewPrincipal;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A hub on an ephemeral port over a temporary SQLite file.
pub struct TestHub {
    pub running: Option<RunningHub>,
    /// Holds `plugins/` (the watched plugins folder) and `cache/`.
    pub files: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub db: TestDb,
    pub config: Config,
}

/// Starts a hub with the default configuration.
pub async fn hub() -> TestHub {
    hub_with(|_| {}).await
}

/// Starts a hub after `configure` has adjusted its configuration.
pub async fn hub_with(configure: impl FnOnce(&mut Config)) -> TestHub {
    let db = sqlite().await;
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = db.url.clone();
    config.server.shutdown_grace_ms = 2_000;
    let files = tempfile::tempdir().unwrap();
    config.plugins.dir = files.path().join("plugins");
    config.plugins.cache_dir = files.path().join("cache");
    std::fs::create_dir_all(&config.plugins.dir).unwrap();
    configure(&mut config);
    let running = alkhub::server::start(config.clone()).await.unwrap();
    TestHub {
        addr: running.addr,
        running: Some(running),
        files,
        db,
        config,
    }
}

impl TestHub {
    /// The WebSocket URL of an endpoint.
    pub fn ws_url(&self, kind: PrincipalKind) -> String {
        let path = match kind {
            PrincipalKind::Spoke => "spokes",
            PrincipalKind::Client => "clients",
        };
        format!("ws://{}/v1/{path}/connect", self.addr)
    }

    /// Adds a principal and returns its token.
    pub async fn token(&self, kind: PrincipalKind, id: &str, scopes: &[&str]) -> String {
        let existing = self.db.store.get_principal(kind, id).await.unwrap();
        assert!(existing.is_none(), "{id} already exists");
        let new = NewPrincipal {
            id: id.to_owned(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let (_, token) = self.db.store.create_principal(kind, &new).await.unwrap();
        token.expose().to_owned()
    }

    /// A peer builder for a new spoke `id`.
    pub async fn spoke(&self, id: &str) -> PeerBuilder {
        let token = self.token(PrincipalKind::Spoke, id, &[]).await;
        PeerBuilder::new(self.ws_url(PrincipalKind::Spoke), token)
    }

    /// A connected client `id` with `scopes`.
    pub async fn client(&self, id: &str, scopes: &[&str]) -> Peer {
        let token = self.token(PrincipalKind::Client, id, scopes).await;
        PeerBuilder::new(self.ws_url(PrincipalKind::Client), token)
            .connect()
            .await
            .unwrap()
    }

    /// Status of every registration of `operation_id`, as the database has it.
    pub async fn statuses(&self, operation_id: &str) -> Vec<String> {
        self.db
            .store
            .registrations_of_operation(operation_id)
            .await
            .unwrap()
            .iter()
            .map(|r| r.status.as_str().to_owned())
            .collect()
    }

    /// The running hub's handle, to look inside it.
    pub fn handle(&self) -> alkhub::server::Hub {
        self.running
            .as_ref()
            .expect("the hub is running")
            .hub()
            .clone()
    }

    /// Waits until `check` holds of the running hub.
    pub async fn until(&self, what: &str, check: impl Fn(&alkhub::server::Hub) -> bool) {
        let hub = self.handle();
        eventually(what, || {
            let holds = check(&hub);
            async move { holds }
        })
        .await;
    }

    /// Shuts the hub down gracefully.
    pub async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
    }

    /// Shuts down and starts again on the same database (new port).
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let running = alkhub::server::start(self.config.clone()).await.unwrap();
        self.addr = running.addr;
        self.running = Some(running);
    }

    /// The actions of the admin audit log, newest first (read with `admin`).
    pub async fn audit_actions(&self, admin: &str) -> Vec<String> {
        let audit = self
            .http("GET", "/v1/admin/audit", Some(admin), None)
            .await
            .json();
        audit["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("not an audit page: {audit}"))
            .iter()
            .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// An HTTP request to the hub; returns status, headers and body text.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> HttpResponse {
        http(self.addr, method, path, token, body).await
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 client (Connection: close, chunked bodies decoded).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    HttpResponse {
        status,
        headers: head.to_owned(),
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// A WebSocket peer with no library: frames in, frames out.
pub struct Raw {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Raw { ws }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    /// The next text frame as JSON (pings skipped); panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no frame within 10 s")
                .expect("connection ended")
                .expect("socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no close within 10 s")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| u16::from(f.code)).unwrap_or(1005)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error before close: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// Polls `check` until it holds (for effects that land asynchronously).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Sends `value` on `tx` when dropped: put one in a handler to learn that
/// its task ended, including by being aborted.
pub struct OnDrop<T: Clone>(tokio::sync::mpsc::UnboundedSender<T>, T);

impl<T: Clone> OnDrop<T> {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<T>, value: T) -> Self {
        OnDrop(tx, value)
    }
}

impl<T: Clone> Drop for OnDrop<T> {
    fn drop(&mut self) {
        let _ = self.0.send(self.1.clone());
    }
}

/// Starts `client.call(operation_id, input)` in a task, to be awaited later.
pub fn spawn_call(
    client: &Peer,
    operation_id: &str,
    input: Value,
) -> tokio::task::JoinHandle<Result<Value, alkhub::peer::PeerError>> {
    let client = client.clone();
    let operation_id = operation_id.to_owned();
    tokio::spawn(async move { client.call(&operation_id, input).await })
}

/// The next message on `rx`, failing the test if none comes within 5 s.
pub async fn recv_within<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("nothing arrived within 5 s")
        .expect("the sender is gone")
}

/// Runs `alkhub ARGS` in `dir`, without the caller's logging, configuration
/// or database environment: (success, standard output, standard error).
pub fn alkhub(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("ALKHUB_CONFIG")
        .env_remove("ALKHUB_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
