//! A scale benchmark: the hub with thousands of spokes and a hundred thousand
//! operations, measured row by row.
//!
//! The real `alkhub` binary runs as a child process on a temporary SQLite
//! file; every spoke is a real WebSocket connection from this process,
//! speaking the wire protocol directly (one task per spoke). Spoke and client
//! principals are written once into a template database with the library's
//! `Store` (the CLI would take minutes for 10,000 of them), and each group of
//! rows starts a fresh hub on a copy of it.
//!
//! ```sh
//! ulimit -n 20000
//! cargo bench --bench scale
//! SCALE_ROWS=idle,register SCALE_SPOKES=200 SCALE_OPS=2000 SCALE_OP_SPOKES=10 cargo bench --bench scale
//! ```
//!
//! Environment: `SCALE_ROWS` (comma-separated rows, default all), `SCALE_SPOKES`
//! (default 10000), `SCALE_OPS` (default 100000), `SCALE_OP_SPOKES` (spokes
//! that carry the operations, default 100), `SCALE_RECONNECT` (default
//! spokes / 10), `SCALE_FANIN` (default spokes / 2), `SCALE_CHURN_SPOKES`
//! (default `SCALE_OP_SPOKES`), `SCALE_CHURN_OPS` (operations per churning
//! spoke, default 100), `SCALE_SECS` (seconds per load phase, default 5),
//! `SCALE_TIMEOUT` (seconds any one wait may take, default 300),
//! `SCALE_LIST_LIMIT` (sent as `limit=` on `GET /v1/operations`; default none),
//! `SCALE_HUB_BIN` (the hub binary; default `CARGO_BIN_EXE_alkhub`, pinned
//! at start), `SCALE_WAVE` (`idle` and `full` connect their spokes without operations
//! in waves of this many, each welcomed before the next; default 0, all at
//! once).
//!
//! Rows: `idle`, `full`, `list`, `register`, `restart-health`,
//! `restart-callable`, `leave`, `reconnect`, `churn`, `fanin`. Each prints as
//! it finishes; a summary table follows. A wait that runs out prints "did not
//! finish in N s" with how far it got, and the next row goes on.

mod hub_process;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use alkhub::protocol::PrincipalKind;
use alkhub::store::{NewPrincipal, Store};
use futures_util::{SinkExt, StreamExt};
use hub_process::{env_num, get, http_raw, HubFiles, HubProcess};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const ROWS: [&str; 10] = [
    "idle",
    "full",
    "list",
    "register",
    "restart-health",
    "restart-callable",
    "leave",
    "reconnect",
    "churn",
    "fanin",
];

/// Sizes of the run, from the environment.
struct Sizes {
    spokes: usize,
    ops: usize,
    op_spokes: usize,
    reconnect: usize,
    fanin: usize,
    churn_spokes: usize,
    churn_ops: usize,
    secs: u64,
    timeout: Duration,
    list_limit: usize,
    wave: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let spokes: usize = env_num("SCALE_SPOKES", 10_000usize).max(2);
        let ops: usize = env_num("SCALE_OPS", 100_000usize).max(1);
        let op_spokes: usize = env_num("SCALE_OP_SPOKES", 100usize).clamp(1, spokes);
        Sizes {
            spokes,
            ops,
            op_spokes,
            reconnect: env_num("SCALE_RECONNECT", spokes / 10).clamp(1, spokes),
            fanin: env_num("SCALE_FANIN", spokes / 2).clamp(2, spokes),
            churn_spokes: env_num("SCALE_CHURN_SPOKES", op_spokes).clamp(1, spokes - 2),
            churn_ops: env_num("SCALE_CHURN_OPS", 100usize).max(1),
            secs: env_num("SCALE_SECS", 5u64).max(1),
            timeout: Duration::from_secs(env_num("SCALE_TIMEOUT", 300u64).max(1)),
            list_limit: env_num("SCALE_LIST_LIMIT", 0usize),
            wave: env_num("SCALE_WAVE", 0usize),
        }
    }

    /// Operations per spoke in the rows with `op_spokes` operation spokes.
    fn ops_per_spoke(&self) -> usize {
        (self.ops / self.op_spokes).max(1)
    }
}

// ---------------------------------------------------------------------------
// Report

struct Row {
    name: String,
    figure: String,
    unit: &'static str,
    notes: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, name: &str, figure: String, unit: &'static str, notes: String) {
        println!("scale: {name:<28} {figure:>12} {unit:<8} {notes}");
        self.rows.push(Row {
            name: name.to_owned(),
            figure,
            unit,
            notes,
        });
    }

    fn failed(&mut self, name: &str, notes: String) {
        self.add(name, "-".to_owned(), "", notes);
    }

    fn print(&self) {
        println!();
        println!("{:<28} {:>12} {:<8} notes", "row", "figure", "unit");
        println!("{}", "-".repeat(100));
        for row in &self.rows {
            println!(
                "{:<28} {:>12} {:<8} {}",
                row.name, row.figure, row.unit, row.notes
            );
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------
// Principals and hub files

/// Spoke principals `s0`, `s1`, ... and one client `bench`, in a template
/// database that every group copies.
struct Principals {
    _dir: tempfile::TempDir,
    db: PathBuf,
    spokes: Vec<String>,
    client: String,
}

async fn make_principals(count: usize) -> Principals {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("alkhub.db");
    let url = format!("sqlite://{}", db.display());
    let store = Store::open(&url, 4).await.expect("template database");
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in (w..count).step_by(workers) {
                let new = NewPrincipal {
                    id: format!("s{i}"),
                    ..Default::default()
                };
                let token = store
                    .create_principal(PrincipalKind::Spoke, &new)
                    .await
                    .expect("spoke principal")
                    .1;
                made.push((i, token.expose().to_owned()));
            }
            made
        }));
    }
    let mut spokes = vec![String::new(); count];
    for task in tasks {
        for (i, token) in task.await.expect("principal task") {
            spokes[i] = token;
        }
    }
    let new = NewPrincipal {
        id: "bench".into(),
        ..Default::default()
    };
    let client = store
        .create_principal(PrincipalKind::Client, &new)
        .await
        .expect("client principal")
        .1
        .expose()
        .to_owned();
    let _ = store.execute_raw("PRAGMA wal_checkpoint(TRUNCATE)").await;
    store.close().await;
    Principals {
        _dir: dir,
        db,
        spokes,
        client,
    }
}

/// The hub's configuration: limits raised so that thousands of loopback
/// connections may authenticate at once and one client may call freely.
fn config(ops_per_spoke: usize) -> String {
    let per_session = ops_per_spoke.max(4096);
    format!(
        "[server]\nshutdown_grace_ms = 2000\n\n\
         [limits]\n\
         hello_timeout_ms = 600000\n\
         max_connections = 30000\n\
         max_unauthenticated = 20000\n\
         max_unauthenticated_per_address = 20000\n\
         calls_per_second_per_principal = 0\n\
         max_frame_bytes = {}\n\
         max_operations_per_register = {}\n\
         max_operations_per_session = {per_session}\n\
         max_operations_per_principal = {}\n",
        (1usize << 20).max(ops_per_spoke * 512),
        ops_per_spoke.max(1024),
        per_session.max(16384),
    )
}

/// A fresh folder with a copy of the template database.
fn hub_files(principals: &Principals, ops_per_spoke: usize) -> Arc<HubFiles> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("alkhub.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", principals.db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", db.display())).expect("database copied");
        }
    }
    let url = format!("sqlite://{}", db.display());
    Arc::new(HubFiles::with_database(dir, url, &config(ops_per_spoke)))
}

/// The hub binary every group runs, pinned at start (see [`pin_hub_binary`]).
static HUB_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Pins the hub binary for the whole run: a hard link (a copy if linking
/// fails) in `scratch` of `CARGO_BIN_EXE_alkhub`, which cargo has just
/// built for this run, or of `SCALE_HUB_BIN`.
///
/// `CARGO_BIN_EXE_alkhub` is `<target>/release/alkhub`: every worktree that
/// shares the target directory replaces it when it builds, so a run of
/// several minutes that spawned it again for each group could start hubs of
/// different sources. Returns the binary and a description of it.
fn pin_hub_binary(scratch: &Path) -> (PathBuf, String) {
    let source = std::env::var("SCALE_HUB_BIN").unwrap_or_else(|_| hub_process::BINARY.into());
    let pinned = scratch.join("alkhub");
    if std::fs::hard_link(&source, &pinned).is_err() {
        std::fs::copy(&source, &pinned).expect("the hub binary copied");
    }
    let built = std::fs::metadata(&pinned)
        .and_then(|m| m.modified())
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
        .unwrap_or_else(|_| "?".into());
    (pinned, format!("{source} (modified {built})"))
}

/// `alkhub serve` on an ephemeral port, as [`HubFiles::serve`] does, but
/// with the pinned binary; waits until it listens.
fn spawn_hub(files: &HubFiles) -> Result<HubProcess, String> {
    let binary = HUB_BINARY.get().expect("the hub binary is pinned");
    let mut child = std::process::Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "alkhub.toml",
        ])
        .arg("--database-url")
        .arg(&files.database_url)
        .current_dir(files.dir.path())
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{} does not start: {e}", binary.display()))?;
    let stderr = Arc::new(hub_process::Stderr::default());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let lines = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let watch = stderr.clone();
    // Read until the process closes stderr, so the pipe never fills.
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut addr_tx = Some(addr_tx);
        for line in lines.lines() {
            let Ok(line) = line else { break };
            watch.lines.fetch_add(1, Ordering::Relaxed);
            if line.contains("panicked") {
                watch.panic_count.fetch_add(1, Ordering::Relaxed);
                let mut panics = watch.panics.lock().unwrap();
                if panics.len() < 20 {
                    panics.push(line.clone());
                }
            }
            if line.contains("listening") {
                if let Some(rest) = line.split("addr=").nth(1) {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                    }
                }
            }
            let mut tail = watch.tail.lock().unwrap();
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(300)) else {
        let _ = child.kill();
        let _ = child.wait();
        let tail = stderr.tail.lock().unwrap().clone();
        return Err(format!(
            "alkhub serve did not start listening in 300 s; its log ends: {:?}",
            tail.back()
        ));
    };
    let addr: String = addr
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    let Ok(addr) = addr.parse() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("no socket address in the log: {addr:?}"));
    };
    Ok(HubProcess {
        child,
        addr,
        database_url: files.database_url.clone(),
        dir: files.dir.path().to_owned(),
        stderr,
    })
}

/// Starts the hub (blocking work, off the async workers).
async fn serve(files: &Arc<HubFiles>) -> Result<HubProcess, String> {
    let files = files.clone();
    tokio::task::spawn_blocking(move || spawn_hub(&files))
        .await
        .map_err(|e| e.to_string())?
}

/// SIGTERM and wait; returns whether it exited in time and how long it took.
/// A hub that did not exit is killed.
async fn terminate(hub: HubProcess, within: Duration) -> (bool, Duration) {
    tokio::task::spawn_blocking(move || {
        let mut hub = hub;
        let started = Instant::now();
        let exited = hub.terminate(within);
        let took = started.elapsed();
        hub.kill9();
        (exited, took)
    })
    .await
    .unwrap_or((false, Duration::ZERO))
}

/// Reports a crash or panic of the hub as a row.
fn check_crash(report: &mut Report, group: &str, hub: &mut HubProcess) {
    if let Some(why) = hub.crash() {
        let tail = hub.log_tail();
        report.failed(
            &format!("!hub ({group})"),
            format!(
                "{why}; last log line: {}",
                tail.last().cloned().unwrap_or_default()
            ),
        );
    }
}

/// Resident memory once the hub has had `settle` to quiet down.
async fn settled_rss(hub: &HubProcess, settle: Duration) -> u64 {
    tokio::time::sleep(settle).await;
    hub.rss_kib().unwrap_or(0)
}

/// A connection to the hub's database for counting rows while it runs.
async fn monitor(files: &HubFiles) -> Option<Store> {
    Store::connect(&files.database_url, 1).await.ok()
}

async fn count(store: &Store, sql: &str) -> Option<u64> {
    store
        .fetch_raw_strings(sql)
        .await
        .ok()?
        .first()?
        .parse()
        .ok()
}

const ACTIVE_SQL: &str =
    "SELECT CAST(COUNT(*) AS TEXT) FROM operation_registrations WHERE status = 'active'";
const DEFINED_SQL: &str = "SELECT CAST(COUNT(*) AS TEXT) FROM operations WHERE source = 'spoke'";

// ---------------------------------------------------------------------------
// Operations and hellos

/// A small realistic input schema; every variant accepts `{"path": "..."}`.
fn input_schema(variant: usize) -> Value {
    match variant % 3 {
        0 => json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "offset": {"type": "integer", "minimum": 0},
            "recursive": {"type": "boolean"}}, "required": ["path"]}),
        1 => json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}, "required": ["path"]}),
        _ => json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "mode": {"type": "string", "enum": ["read", "write"]},
            "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["path"]}),
    }
}

const CALL_INPUT: &str = r#"{"path":"/srv/data/report.txt"}"#;

/// `count` operations `s{spoke}.op{j}` of spoke `spoke`.
fn spoke_ops(spoke: usize, count: usize) -> Value {
    Value::Array(
        (0..count)
            .map(|j| {
                json!({
                    "namespace": format!("s{spoke}"),
                    "name": format!("op{j}"),
                    "type": "query",
                    "description": format!("Operation {j} of spoke {spoke}."),
                    "inputSchema": input_schema(j),
                })
            })
            .collect(),
    )
}

fn echo_op() -> Value {
    json!([{"namespace": "bench", "name": "echo", "type": "query",
            "description": "Answers with its input.", "inputSchema": input_schema(0)}])
}

fn hello(token: &str, operations: Value) -> String {
    json!({"type": "hello", "payload": {"token": token, "operations": operations}}).to_string()
}

// ---------------------------------------------------------------------------
// WebSocket sessions

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Welcome {
    registered: usize,
    rejected: usize,
    sample: Option<String>,
}

/// Connects, sends `hello` and waits for `welcome`.
async fn open_session(url: &str, hello: &str) -> Result<(Ws, Welcome), String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    ws.send(Message::text(hello.to_owned()))
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value =
                    serde_json::from_str(text.as_str()).map_err(|e| format!("bad frame: {e}"))?;
                match frame["type"].as_str() {
                    Some("welcome") => {
                        let p = &frame["payload"];
                        let rejected = p["rejected"].as_array();
                        let welcome = Welcome {
                            registered: p["registrations"].as_array().map_or(0, |a| a.len()),
                            rejected: rejected.map_or(0, |a| a.len()),
                            sample: rejected.and_then(|a| a.first()).map(|r| r.to_string()),
                        };
                        return Ok((ws, welcome));
                    }
                    Some("error") => return Err(format!("error before welcome: {text}")),
                    // The hub may route a call to operations it has just
                    // registered before it writes `welcome`: answer it.
                    Some("call.requested") => {
                        if let Some(reply) = echo_reply(text.as_str()) {
                            ws.send(Message::text(reply))
                                .await
                                .map_err(|e| format!("send before welcome: {e}"))?;
                        }
                    }
                    _ => continue,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed before welcome: {frame:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read before welcome: {e}")),
            None => return Err("the connection ended before welcome".to_owned()),
        }
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallPayload<'a> {
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<String>,
}

/// The answer of an echo provider to a `call.requested` frame, if it is one.
fn echo_reply(text: &str) -> Option<String> {
    let frame: Frame<'_> = serde_json::from_str(text).ok()?;
    if frame.kind != "call.requested" {
        return None;
    }
    let p: CallPayload<'_> = serde_json::from_str(frame.payload?.get()).ok()?;
    let input = p.input.map(|i| i.get()).unwrap_or("null");
    Some(format!(
        r#"{{"type":"call.responded","payload":{{"requestId":{},"output":{{"data":{input}}}}}}}"#,
        serde_json::to_string(&p.request_id).ok()?
    ))
}

// ---------------------------------------------------------------------------
// Spoke fleets

/// Where spokes connect; a restart changes it (the new hub listens on a new
/// ephemeral port) and bumps the epoch.
#[derive(Clone)]
struct Target(Arc<RwLock<(u64, String)>>);

impl Target {
    fn new(url: String) -> Target {
        Target(Arc::new(RwLock::new((0, url))))
    }
    fn get(&self) -> (u64, String) {
        self.0.read().unwrap().clone()
    }
    fn set(&self, url: String) {
        let mut t = self.0.write().unwrap();
        t.0 += 1;
        t.1 = url;
    }
}

#[derive(Clone, Copy)]
enum Mode {
    /// Stay connected until stopped; a session the hub ends is not replaced
    /// (connection failures before `welcome` are retried).
    Once,
    /// Like a real spoke: when the hub closes the session, wait `0` and
    /// connect again, to whatever the target is by then.
    Reconnect(Duration),
    /// Hold each session for a random time in the range (ms), close it and
    /// connect again at once.
    Churn(u64, u64),
}

enum Event {
    Welcomed {
        idx: usize,
        at: Instant,
        welcome: Welcome,
    },
    Failed {
        error: String,
    },
}

enum End {
    Stopped,
    Bounced,
    Closed,
}

/// A set of spoke tasks.
struct Fleet {
    size: usize,
    events: mpsc::UnboundedReceiver<Event>,
    stop: CancellationToken,
    bounce: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
    welcomes: Arc<AtomicU64>,
    /// Listen-queue overflows counted when the current wave of connects began.
    overflows: Option<u64>,
}

/// How far a wait for welcomes got.
#[derive(Default)]
struct Progress {
    welcomed: usize,
    registered: usize,
    rejected: usize,
    reject_sample: Option<String>,
    failures: usize,
    failure_sample: Option<String>,
    last: Option<Instant>,
    done: bool,
    /// When each spoke was welcomed, after `since`.
    times: Vec<Duration>,
    /// Listen-queue overflows on this host during the wave.
    overflows: Option<u64>,
}

impl Progress {
    /// Adds the progress of another wave.
    fn absorb(&mut self, other: Progress) {
        self.welcomed += other.welcomed;
        self.registered += other.registered;
        self.rejected += other.rejected;
        if self.reject_sample.is_none() {
            self.reject_sample = other.reject_sample;
        }
        self.failures += other.failures;
        if self.failure_sample.is_none() {
            self.failure_sample = other.failure_sample;
        }
        self.last = self.last.max(other.last);
        self.done &= other.done;
        self.times.extend(other.times);
        self.overflows = match (self.overflows, other.overflows) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    fn took(&self, since: Instant) -> Duration {
        self.last
            .map(|l| l.duration_since(since))
            .unwrap_or_default()
    }

    /// "did not finish in N s: x/y welcomed ..." or the problems seen.
    fn describe(&self, size: usize, timeout: Duration) -> String {
        let mut s = if self.done {
            format!("{}/{size} welcomed", self.welcomed)
        } else {
            format!(
                "did not finish in {} s: {}/{size} welcomed",
                timeout.as_secs(),
                self.welcomed
            )
        };
        if self.rejected > 0 {
            s += &format!(
                ", {} rejected (e.g. {})",
                self.rejected,
                self.reject_sample.as_deref().unwrap_or("?")
            );
        }
        if !self.times.is_empty() {
            let mut t = self.times.clone();
            t.sort_unstable();
            s += &format!(
                " (half by {} s, 99% by {} s)",
                secs(t[(t.len() - 1) / 2]),
                secs(t[((t.len() - 1) as f64 * 0.99) as usize])
            );
        }
        if self.failures > 0 {
            s += &format!(
                ", {} failed attempts (e.g. {})",
                self.failures,
                self.failure_sample.as_deref().unwrap_or("?")
            );
        }
        if let Some(o) = self.overflows.filter(|o| *o > 0) {
            s += &format!(", {o} listen-queue overflows");
        }
        s
    }
}

impl Fleet {
    /// One task per `(index, hello)`.
    fn launch(target: &Target, hellos: Vec<(usize, String)>, mode: Mode) -> Fleet {
        let (tx, events) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let (bounce, bounced) = watch::channel(0u64);
        let welcomes = Arc::new(AtomicU64::new(0));
        let size = hellos.len();
        let tasks = hellos
            .into_iter()
            .map(|(idx, hello)| {
                tokio::spawn(spoke(
                    idx,
                    hello,
                    target.clone(),
                    mode,
                    stop.clone(),
                    bounced.clone(),
                    tx.clone(),
                    welcomes.clone(),
                ))
            })
            .collect();
        Fleet {
            size,
            events,
            stop,
            bounce,
            tasks,
            welcomes,
            overflows: listen_overflows(),
        }
    }

    /// Starts counting listen-queue overflows for the next wait.
    fn mark(&mut self) {
        self.overflows = listen_overflows();
    }

    /// Waits until every spoke has been welcomed at or after `since`.
    async fn wait(&mut self, since: Instant, timeout: Duration) -> Progress {
        let mut seen: HashMap<usize, ()> = HashMap::with_capacity(self.size);
        let mut progress = Progress::default();
        let deadline = tokio::time::Instant::now() + timeout;
        while seen.len() < self.size {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => event,
                _ => break,
            };
            match event {
                Event::Welcomed { idx, at, welcome } if at >= since => {
                    if seen.insert(idx, ()).is_none() {
                        progress.welcomed += 1;
                        progress.registered += welcome.registered;
                        progress.rejected += welcome.rejected;
                        if progress.reject_sample.is_none() {
                            progress.reject_sample = welcome.sample;
                        }
                        progress.last = Some(at);
                        progress.times.push(at.duration_since(since));
                    }
                }
                Event::Welcomed { .. } => {}
                Event::Failed { error } => {
                    progress.failures += 1;
                    if progress.failure_sample.is_none() {
                        progress.failure_sample = Some(error);
                    }
                }
            }
        }
        progress.done = seen.len() == self.size;
        let now = listen_overflows();
        if let (Some(before), Some(now)) = (self.overflows, now) {
            progress.overflows = Some(now.saturating_sub(before));
        }
        self.overflows = now;
        progress
    }

    /// Every spoke closes its session and connects again at once.
    fn bounce(&mut self) {
        self.mark();
        self.bounce.send_modify(|g| *g += 1);
    }

    /// Stops every spoke, dropping its socket, and waits for the tasks.
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// Connects `hellos` (spokes that stay connected) in waves of `wave`, all at
/// once when `wave` is 0, each wave welcomed before the next starts.
async fn launch_waves(
    target: &Target,
    hellos: Vec<(usize, String)>,
    wave: usize,
    since: Instant,
    timeout: Duration,
) -> (Vec<Fleet>, Progress) {
    let wave = if wave == 0 { hellos.len().max(1) } else { wave };
    let deadline = Instant::now() + timeout;
    let mut fleets = Vec::new();
    let mut total = Progress {
        done: true,
        ..Default::default()
    };
    let mut hellos = hellos.into_iter().peekable();
    while hellos.peek().is_some() && total.done {
        let chunk: Vec<_> = hellos.by_ref().take(wave).collect();
        let mut fleet = Fleet::launch(target, chunk, Mode::Once);
        let progress = fleet
            .wait(since, deadline.saturating_duration_since(Instant::now()))
            .await;
        fleets.push(fleet);
        total.absorb(progress);
    }
    (fleets, total)
}

#[allow(clippy::too_many_arguments)]
async fn spoke(
    idx: usize,
    hello: String,
    target: Target,
    mode: Mode,
    stop: CancellationToken,
    mut bounced: watch::Receiver<u64>,
    events: mpsc::UnboundedSender<Event>,
    welcomes: Arc<AtomicU64>,
) {
    let backoff = match mode {
        Mode::Reconnect(backoff) => backoff,
        _ => Duration::from_millis(100),
    };
    loop {
        let (_, url) = target.get();
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = open_session(&url, &hello) => opened,
        };
        let ws = match opened {
            Ok((ws, welcome)) => {
                welcomes.fetch_add(1, Ordering::Relaxed);
                let _ = events.send(Event::Welcomed {
                    idx,
                    at: Instant::now(),
                    welcome,
                });
                ws
            }
            Err(error) => {
                let _ = events.send(Event::Failed { error });
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        bounced.borrow_and_update();
        let hold = match mode {
            Mode::Churn(lo, hi) => Some(Duration::from_millis(fastrand::u64(lo..=hi))),
            _ => None,
        };
        match serve_calls(ws, &stop, &mut bounced, hold).await {
            End::Stopped => return,
            End::Bounced => continue,
            End::Closed => match mode {
                Mode::Once => return,
                _ => tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => continue,
                },
            },
        }
    }
}

/// Answers calls with their input until stopped (the socket is dropped),
/// bounced or the hold time is over (a close frame is sent), or the hub ends
/// the session.
async fn serve_calls(
    ws: Ws,
    stop: &CancellationToken,
    bounced: &mut watch::Receiver<u64>,
    hold: Option<Duration>,
) -> End {
    let (mut sink, mut stream) = ws.split();
    let held = async {
        match hold {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(held);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            changed = bounced.changed() => {
                if changed.is_err() {
                    return End::Stopped;
                }
                let _ = sink.send(Message::Close(None)).await;
                return End::Bounced;
            }
            _ = &mut held => {
                let _ = sink.send(Message::Close(None)).await;
                return End::Bounced;
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = echo_reply(text.as_str()) {
                        if sink.send(Message::text(reply)).await.is_err() {
                            return End::Closed;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Closed,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Hellos of spokes `range` with `ops` operations each (`s{i}.op{j}`).
fn op_hellos(
    principals: &Principals,
    range: std::ops::Range<usize>,
    ops: usize,
) -> Vec<(usize, String)> {
    range
        .map(|i| {
            let operations = if ops == 0 {
                json!([])
            } else {
                spoke_ops(i, ops)
            };
            (i, hello(&principals.spokes[i], operations))
        })
        .collect()
}

fn echo_hellos(principals: &Principals, range: std::ops::Range<usize>) -> Vec<(usize, String)> {
    range
        .map(|i| (i, hello(&principals.spokes[i], echo_op())))
        .collect()
}

// ---------------------------------------------------------------------------
// Callers

#[derive(Default)]
struct CallStats {
    /// (finished, ms since the start of the load; latency, µs)
    samples: Vec<(u32, u32)>,
    errors: BTreeMap<String, u64>,
    unanswered: usize,
    elapsed: Duration,
    failure: Option<String>,
}

impl CallStats {
    fn merge(&mut self, other: CallStats) {
        self.samples.extend(other.samples);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.unanswered += other.unanswered;
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }

    fn latencies(&self) -> Vec<u32> {
        let mut l: Vec<u32> = self.samples.iter().map(|s| s.1).collect();
        l.sort_unstable();
        l
    }

    fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn summary(&self) -> String {
        let l = self.latencies();
        let mut s = format!(
            "{} ok, {:.0} calls/s, p50 {} p99 {} max {} µs",
            l.len(),
            self.rate(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(0)
        );
        if !self.errors.is_empty() {
            s += &format!(", errors {:?}", self.errors);
        }
        if self.unanswered > 0 {
            s += &format!(", {} unanswered", self.unanswered);
        }
        if let Some(f) = &self.failure {
            s += &format!(", failure: {f}");
        }
        s
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn client_session(url: &str, token: &str) -> Result<Ws, String> {
    open_session(url, &hello(token, json!([])))
        .await
        .map(|(ws, _)| ws)
}

/// Keeps `concurrency` calls to `operation` in flight (over up to four
/// connections) for `duration`.
async fn load(
    url: &str,
    token: &str,
    operation: &str,
    concurrency: usize,
    duration: Duration,
) -> CallStats {
    let connections = concurrency.clamp(1, 4);
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let depth = concurrency / connections + usize::from(i < concurrency % connections);
            let (url, token, operation) = (url.to_owned(), token.to_owned(), operation.to_owned());
            tokio::spawn(async move { caller(url, token, operation, depth, started, until).await })
        })
        .collect();
    let mut stats = CallStats::default();
    for task in tasks {
        match task.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.failure = Some(e.to_string()),
        }
    }
    stats.elapsed = started
        .elapsed()
        .min(duration.max(Duration::from_millis(1)));
    stats
}

async fn caller(
    url: String,
    token: String,
    operation: String,
    depth: usize,
    started: Instant,
    until: Instant,
) -> CallStats {
    let mut stats = CallStats::default();
    let ws = match client_session(&url, &token).await {
        Ok(ws) => ws,
        Err(e) => {
            stats.failure = Some(e);
            return stats;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let request = |id: u64| {
        format!(
            r#"{{"type":"call.requested","payload":{{"requestId":"r{id}","operationId":"{operation}","input":{CALL_INPUT}}}}}"#
        )
    };
    let mut open: HashMap<u64, Instant> = HashMap::with_capacity(depth * 2);
    let mut next = 0u64;
    for _ in 0..depth {
        open.insert(next, Instant::now());
        if sink.feed(Message::text(request(next))).await.is_err() {
            stats.failure = Some("send failed".into());
            return stats;
        }
        next += 1;
    }
    let _ = sink.flush().await;
    let drain_until = until + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now >= until && open.is_empty() {
            break;
        }
        if now >= drain_until {
            stats.unanswered = open.len();
            break;
        }
        let message =
            match tokio::time::timeout(drain_until.saturating_duration_since(now), stream.next())
                .await
            {
                Ok(Some(Ok(m))) => m,
                Ok(_) => {
                    stats.failure = Some("the client connection ended".into());
                    stats.unanswered = open.len();
                    break;
                }
                Err(_) => continue,
            };
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
            continue;
        };
        if frame.kind != "call.responded" && frame.kind != "call.error" {
            continue;
        }
        let Some(Ok(p)) = frame
            .payload
            .map(|p| serde_json::from_str::<CallPayload<'_>>(p.get()))
        else {
            continue;
        };
        let Some(id) = p.request_id.strip_prefix('r').and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Some(at) = open.remove(&id) else {
            continue;
        };
        let done = Instant::now();
        if frame.kind == "call.responded" {
            stats.samples.push((
                done.duration_since(started).as_millis() as u32,
                done.duration_since(at).as_micros() as u32,
            ));
        } else {
            *stats
                .errors
                .entry(p.code.unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        }
        if done < until {
            open.insert(next, Instant::now());
            if sink.send(Message::text(request(next))).await.is_err() {
                stats.failure = Some("send failed".into());
                stats.unanswered = open.len();
                break;
            }
            next += 1;
        }
    }
    stats
}

/// After a restart: calls `s{i}.op0` of every spoke in `0..spokes` until
/// each has answered once.
#[derive(Default)]
struct Probe {
    callable: Option<Duration>,
    confirmed: usize,
    no_provider: u64,
    first_no_provider: Option<Duration>,
    last_no_provider: Option<Duration>,
    other: BTreeMap<String, u64>,
    failure: Option<String>,
    /// The longest a probe call waited for its answer.
    slowest_answer: Duration,
    /// Probe calls given up after 10 s without an answer (then asked again).
    unanswered: u64,
}

async fn probe(
    url: String,
    token: String,
    spokes: usize,
    origin: Instant,
    timeout: Duration,
) -> Probe {
    let mut probe = Probe::default();
    let deadline = Instant::now() + timeout;
    let ws = loop {
        match client_session(&url, &token).await {
            Ok(ws) => break ws,
            Err(e) if Instant::now() >= deadline => {
                probe.failure = Some(e);
                return probe;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (mut sink, mut stream) = ws.split();
    let mut pending: BTreeSet<usize> = (0..spokes).collect();
    // Open probe calls by request id: the spoke and when the call was sent.
    let mut open: HashMap<u64, (usize, Instant)> = HashMap::new();
    let mut asking: HashSet<usize> = HashSet::new();
    let mut next = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::from_std(deadline);
    while !pending.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {
                // A call unanswered for 10 s is given up and asked again.
                open.retain(|_, (i, sent)| {
                    let keep = sent.elapsed() < Duration::from_secs(10);
                    if !keep {
                        asking.remove(i);
                        probe.unanswered += 1;
                    }
                    keep
                });
                // Ask every pending spoke that has no call open.
                for &i in &pending {
                    if !asking.insert(i) {
                        continue;
                    }
                    let frame = format!(
                        r#"{{"type":"call.requested","payload":{{"requestId":"p{next}","operationId":"s{i}.op0","input":{CALL_INPUT}}}}}"#
                    );
                    if sink.feed(Message::text(frame)).await.is_err() {
                        probe.failure = Some("send failed".into());
                        return probe;
                    }
                    open.insert(next, (i, Instant::now()));
                    next += 1;
                }
                let _ = sink.flush().await;
            }
            message = stream.next() => {
                let Some(Ok(message)) = message else {
                    probe.failure = Some("the client connection ended".into());
                    return probe;
                };
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
                    continue;
                };
                let Some(Ok(p)) = frame
                    .payload
                    .map(|p| serde_json::from_str::<CallPayload<'_>>(p.get()))
                else {
                    continue;
                };
                let Some((i, sent)) = p
                    .request_id
                    .strip_prefix('p')
                    .and_then(|s| s.parse::<u64>().ok())
                    .and_then(|id| open.remove(&id))
                else {
                    continue;
                };
                asking.remove(&i);
                probe.slowest_answer = probe.slowest_answer.max(sent.elapsed());
                let at = origin.elapsed();
                match (frame.kind.as_ref(), p.code.as_deref()) {
                    ("call.responded", _) => {
                        pending.remove(&i);
                        probe.confirmed += 1;
                        if pending.is_empty() {
                            probe.callable = Some(at);
                        }
                    }
                    (_, Some("NO_PROVIDER")) => {
                        probe.no_provider += 1;
                        probe.first_no_provider.get_or_insert(at);
                        probe.last_no_provider = Some(at);
                    }
                    (kind, code) => {
                        *probe
                            .other
                            .entry(code.unwrap_or(kind).to_owned())
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    probe
}

// ---------------------------------------------------------------------------
// HTTP

/// A GET over a fresh connection: status and body (chunked bodies decoded).
async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&get(path, token)).await?;
        let mut raw = Vec::with_capacity(1 << 20);
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer in {} s", timeout.as_secs()))?
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .strip_prefix("http/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = &raw[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(rest.get(..size).ok_or("short chunk")?);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    Ok((status, out))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct Listing {
    operations: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Default)]
struct Listed {
    pages: usize,
    bytes: usize,
    operations: usize,
    elapsed: Duration,
    first_page: Duration,
}

/// `GET /v1/operations`, following `next` while the hub gives one.
async fn list_all(
    addr: std::net::SocketAddr,
    token: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Listed, String> {
    let mut listed = Listed::default();
    let mut after: Option<String> = None;
    let deadline = Instant::now() + timeout;
    loop {
        let mut query = Vec::new();
        if limit > 0 {
            query.push(format!("limit={limit}"));
        }
        if let Some(a) = &after {
            query.push(format!("after={}", percent_encode(a)));
        }
        let path = if query.is_empty() {
            "/v1/operations".to_owned()
        } else {
            format!("/v1/operations?{}", query.join("&"))
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let started = Instant::now();
        let (status, body) = http_get(addr, &path, Some(token), left).await?;
        let took = started.elapsed();
        listed.elapsed += took;
        if listed.pages == 0 {
            listed.first_page = took;
        }
        listed.pages += 1;
        listed.bytes += body.len();
        if status != 200 {
            return Err(format!(
                "{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let page: Listing =
            serde_json::from_slice(&body).map_err(|e| format!("{path}: bad listing: {e}"))?;
        listed.operations += page.operations.len();
        match page.next {
            Some(n) if !n.is_empty() && listed.pages < 1_000_000 => after = Some(n),
            _ => return Ok(listed),
        }
    }
}

async fn healthz(addr: std::net::SocketAddr) -> u16 {
    http_raw(addr, &get("/healthz", None), 4096, Duration::from_secs(2))
        .await
        .map(|r| r.0)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Groups of rows

struct Bench {
    sizes: Sizes,
    rows: BTreeSet<String>,
    principals: Principals,
    report: Report,
    /// The `idle` figures, for `full`'s difference: RSS with every spoke, KiB.
    idle_rss: Option<u64>,
}

impl Bench {
    fn wants(&self, row: &str) -> bool {
        self.rows.contains(row)
    }

    /// `idle`: RSS before and after `spokes` spokes without operations connect.
    async fn idle(&mut self) {
        let n = self.sizes.spokes;
        let timeout = self.sizes.timeout;
        let files = hub_files(&self.principals, 1);
        let mut hub = match serve(&files).await {
            Ok(hub) => hub,
            Err(e) => {
                return self
                    .report
                    .failed("idle", format!("the hub did not start: {e}"))
            }
        };
        let before = settled_rss(&hub, Duration::from_secs(1)).await;
        let target = Target::new(hub.spokes_url());
        let started = Instant::now();
        let (fleets, progress) = launch_waves(
            &target,
            op_hellos(&self.principals, 0..n, 0),
            self.sizes.wave,
            started,
            timeout,
        )
        .await;
        let after = settled_rss(&hub, Duration::from_secs(2)).await;
        let per_spoke = (after.saturating_sub(before) * 1024) / n as u64;
        if progress.done {
            self.idle_rss = Some(after);
            self.report.add(
                "idle",
                mib(after),
                "MiB",
                format!(
                    "{n} spokes: RSS {} MiB before, {} MiB after, {per_spoke} B/spoke; \
                     all welcomed in {} s: {}",
                    mib(before),
                    mib(after),
                    secs(progress.took(started)),
                    progress.describe(n, timeout)
                ),
            );
        } else {
            self.report.failed(
                "idle",
                format!(
                    "{}; RSS {} MiB before, {} MiB now",
                    progress.describe(n, timeout),
                    mib(before),
                    mib(after)
                ),
            );
        }
        for fleet in fleets {
            fleet.stop().await;
        }
        check_crash(&mut self.report, "idle", &mut hub);
        terminate(hub, Duration::from_secs(60)).await;
    }

    /// `register`, `full`, `list`, `restart-callable`, `restart-health`: one
    /// hub that gets `ops` operations from `op_spokes` spokes, then the other
    /// spokes, then restarts twice.
    async fn operations(&mut self) {
        let s = &self.sizes;
        let (n, p, per, timeout) = (s.spokes, s.op_spokes, s.ops_per_spoke(), s.timeout);
        let total = p * per;
        let files = hub_files(&self.principals, per);
        let mut hub = match serve(&files).await {
            Ok(hub) => hub,
            Err(e) => {
                return self
                    .report
                    .failed("register", format!("the hub did not start: {e}"))
            }
        };
        let db = monitor(&files).await;
        let rss0 = settled_rss(&hub, Duration::from_secs(1)).await;
        let target = Target::new(hub.spokes_url());

        // register: every operation spoke at once, the operations in its hello.
        let hellos = op_hellos(&self.principals, 0..p, per);
        let hello_bytes: usize = hellos.iter().map(|h| h.1.len()).sum();
        let started = Instant::now();
        let mut op_fleet =
            Fleet::launch(&target, hellos, Mode::Reconnect(Duration::from_millis(100)));
        let progress = op_fleet.wait(started, timeout).await;
        let took = progress.took(started);
        let rss_registered = settled_rss(&hub, Duration::from_secs(2)).await;
        let active = match &db {
            Some(db) => count(db, ACTIVE_SQL).await,
            None => None,
        };
        let registered_ok = progress.done && progress.registered == total && progress.rejected == 0;
        if self.wants("register") {
            let notes = format!(
                "{p} spokes x {per} ops ({} KiB of hellos) at once: {} registered, {}; \
                 {} active in the database; RSS {} -> {} MiB",
                hello_bytes / 1024,
                progress.registered,
                progress.describe(p, timeout),
                active.map_or("?".into(), |a| a.to_string()),
                mib(rss0),
                mib(rss_registered),
            );
            if registered_ok {
                self.report.add("register", secs(took), "s", notes);
                self.report.add(
                    "register rate",
                    format!("{:.0}", total as f64 / took.as_secs_f64().max(1e-9)),
                    "ops/s",
                    String::new(),
                );
            } else {
                self.report.failed("register", notes);
            }
        }

        // full: the other spokes, without operations.
        let mut idle_fleets = Vec::new();
        if self.wants("full") {
            let started = Instant::now();
            let (fleets, progress) = launch_waves(
                &target,
                op_hellos(&self.principals, p..n, 0),
                self.sizes.wave,
                started,
                timeout,
            )
            .await;
            let rss = settled_rss(&hub, Duration::from_secs(2)).await;
            let defined = match &db {
                Some(db) => count(db, DEFINED_SQL).await,
                None => None,
            };
            let per_entry = |base: u64| {
                format!(
                    "{:.0}",
                    (rss.saturating_sub(base) * 1024) as f64 / total.max(1) as f64
                )
            };
            let idle = self
                .idle_rss
                .map_or("idle not run".into(), |i| format!("{} MiB", mib(i)));
            let registered_only =
                (rss_registered.saturating_sub(rss0) * 1024) as f64 / total.max(1) as f64;
            let notes = format!(
                "{n} spokes, {} definitions, {} active registrations: {} B per definition+registration \
                 over idle ({idle}), {registered_only:.0} B over the empty hub with {p} spokes; others {}",
                defined.map_or("?".into(), |d| d.to_string()),
                active.map_or("?".into(), |a| a.to_string()),
                self.idle_rss.map_or("?".into(), per_entry),
                progress.describe(n - p, timeout),
            );
            if progress.done && registered_ok {
                self.report.add("full", mib(rss), "MiB", notes);
            } else {
                self.report
                    .failed("full", format!("RSS {} MiB; {notes}", mib(rss)));
            }
            idle_fleets = fleets;
        }

        // list: every definition over HTTP.
        if self.wants("list") {
            let before = settled_rss(&hub, Duration::from_millis(500)).await;
            let pid = hub.pid();
            let sampling = CancellationToken::new();
            let sampler = {
                let sampling = sampling.clone();
                tokio::spawn(async move {
                    let mut peak = 0;
                    while !sampling.is_cancelled() {
                        peak = peak.max(hub_process::rss_kib(pid).unwrap_or(0));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    peak
                })
            };
            let listed = list_all(
                hub.addr,
                &self.principals.client,
                self.sizes.list_limit,
                timeout,
            )
            .await;
            let right_after = hub.rss_kib().unwrap_or(0);
            sampling.cancel();
            let peak = sampler.await.unwrap_or(0).max(right_after);
            let settled = settled_rss(&hub, Duration::from_secs(2)).await;
            match listed {
                Ok(l) => self.report.add(
                    "list",
                    format!("{:.1}", l.elapsed.as_secs_f64() * 1000.0),
                    "ms",
                    format!(
                        "{} operations in {} page(s), {} KiB (first page {:.1} ms); RSS {} MiB \
                         before, {} peak, {} right after, {} after 2 s",
                        l.operations,
                        l.pages,
                        l.bytes / 1024,
                        l.first_page.as_secs_f64() * 1000.0,
                        mib(before),
                        mib(peak),
                        mib(right_after),
                        mib(settled)
                    ),
                ),
                Err(e) => self.report.failed("list", e),
            }
        }
        if !idle_fleets.is_empty() {
            for fleet in idle_fleets {
                fleet.stop().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        check_crash(&mut self.report, "operations", &mut hub);

        // restart-callable: the operation spokes reconnect on their own.
        if self.wants("restart-callable") {
            let (exited, shutdown) = terminate(hub, Duration::from_secs(120)).await;
            op_fleet.mark();
            let started = Instant::now();
            let restarted = serve(&files).await;
            let listening = started.elapsed();
            hub = match restarted {
                Ok(hub) => hub,
                Err(e) => {
                    self.report.failed(
                        "restart-callable",
                        format!("the hub did not start again: {e}"),
                    );
                    op_fleet.stop().await;
                    return;
                }
            };
            target.set(hub.spokes_url());
            let prober = tokio::spawn(probe(
                hub.clients_url(),
                self.principals.client.clone(),
                p,
                started,
                timeout,
            ));
            let progress = op_fleet.wait(started, timeout).await;
            let welcomed = progress.took(started);
            let probe = prober.await.unwrap_or_default();
            let notes = format!(
                "shutdown took {} s{}; listening after {} s; {} (all after {} s, {} registered); \
                 {}/{p} callable{} (slowest probe answer {} s, {} unanswered in 10 s); \
                 NO_PROVIDER answers: {}{}{}{}",
                secs(shutdown),
                if exited { "" } else { " (killed)" },
                secs(listening),
                progress.describe(p, timeout),
                secs(welcomed),
                progress.registered,
                probe.confirmed,
                probe
                    .callable
                    .map_or(String::new(), |c| format!(" after {} s", secs(c))),
                secs(probe.slowest_answer),
                probe.unanswered,
                probe.no_provider,
                match (probe.first_no_provider, probe.last_no_provider) {
                    (Some(f), Some(l)) => format!(" from {} s to {} s", secs(f), secs(l)),
                    _ => String::new(),
                },
                if probe.other.is_empty() {
                    String::new()
                } else {
                    format!("; other answers {:?}", probe.other)
                },
                probe
                    .failure
                    .as_ref()
                    .map_or(String::new(), |f| format!("; probe failed: {f}")),
            );
            match (progress.done, probe.callable) {
                (true, Some(callable)) => {
                    self.report
                        .add("restart-callable", secs(welcomed.max(callable)), "s", notes)
                }
                _ => self.report.failed("restart-callable", notes),
            }
            check_crash(&mut self.report, "restart-callable", &mut hub);
        }
        op_fleet.stop().await;

        // restart-health: nobody reconnects; time until /healthz answers 200.
        if self.wants("restart-health") {
            let defined = match &db {
                Some(db) => count(db, DEFINED_SQL).await,
                None => None,
            };
            let (exited, shutdown) = terminate(hub, Duration::from_secs(120)).await;
            let started = Instant::now();
            let restarted = serve(&files).await;
            let listening = started.elapsed();
            hub = match restarted {
                Ok(hub) => hub,
                Err(e) => {
                    return self.report.failed(
                        "restart-health",
                        format!("the hub did not start again: {e}"),
                    )
                }
            };
            let deadline = started + timeout;
            let mut healthy = None;
            while Instant::now() < deadline {
                if healthz(hub.addr).await == 200 {
                    healthy = Some(started.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let notes = format!(
                "{} definitions stored; shutdown took {} s{}; listening after {} s",
                defined.map_or("?".into(), |d| d.to_string()),
                secs(shutdown),
                if exited { "" } else { " (killed)" },
                secs(listening)
            );
            match healthy {
                Some(h) => self.report.add("restart-health", secs(h), "s", notes),
                None => self.report.failed(
                    "restart-health",
                    format!("/healthz not 200 in {} s; {notes}", timeout.as_secs()),
                ),
            }
            check_crash(&mut self.report, "restart-health", &mut hub);
        }
        if let Some(db) = db {
            db.close().await;
        }
        terminate(hub, Duration::from_secs(60)).await;
    }

    /// `leave`: every spoke (with a share of the operations) drops its socket
    /// at once; time until no registration is active in the database.
    async fn leave(&mut self) {
        let s = &self.sizes;
        let (n, timeout) = (s.spokes, s.timeout);
        let per = (s.ops / n).max(1);
        let files = hub_files(&self.principals, per);
        let mut hub = match serve(&files).await {
            Ok(hub) => hub,
            Err(e) => {
                return self
                    .report
                    .failed("leave", format!("the hub did not start: {e}"))
            }
        };
        let Some(db) = monitor(&files).await else {
            return self
                .report
                .failed("leave", "cannot open the hub's database".into());
        };
        let target = Target::new(hub.spokes_url());
        let started = Instant::now();
        let mut fleet = Fleet::launch(&target, op_hellos(&self.principals, 0..n, per), Mode::Once);
        let progress = fleet.wait(started, timeout).await;
        let connected = progress.took(started);
        let active = count(&db, ACTIVE_SQL).await.unwrap_or(0);
        let setup = format!(
            "{n} spokes x {per} ops: {} in {} s, {active} active",
            progress.describe(n, timeout),
            secs(connected)
        );
        let left = Instant::now();
        fleet.stop().await;
        let deadline = left + timeout;
        let mut at_60 = None;
        let mut remaining = active;
        let mut cleared = None;
        while Instant::now() < deadline {
            remaining = count(&db, ACTIVE_SQL).await.unwrap_or(remaining);
            if remaining == 0 {
                cleared = Some(left.elapsed());
                break;
            }
            if at_60.is_none() && left.elapsed() >= Duration::from_secs(60) {
                at_60 = Some(remaining);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let notes = format!(
            "{setup}{}",
            at_60.map_or(String::new(), |r| format!("; {r} still active after 60 s"))
        );
        match cleared {
            Some(t) if active > 0 => self.report.add("leave", secs(t), "s", notes),
            Some(_) => self
                .report
                .failed("leave", format!("nothing was active; {notes}")),
            None => self.report.failed(
                "leave",
                format!(
                    "did not finish in {} s: {remaining} still active; {notes}",
                    timeout.as_secs()
                ),
            ),
        }
        db.close().await;
        check_crash(&mut self.report, "leave", &mut hub);
        terminate(hub, Duration::from_secs(60)).await;
    }

    /// `reconnect`: `reconnect` spokes close and connect again at once, first
    /// without operations, then carrying `ops` registrations between them.
    async fn reconnect(&mut self) {
        let s = &self.sizes;
        let (r, timeout) = (s.reconnect, s.timeout);
        let per = (s.ops / r).max(1);
        let files = hub_files(&self.principals, per);
        let mut hub = match serve(&files).await {
            Ok(hub) => hub,
            Err(e) => {
                return self
                    .report
                    .failed("reconnect", format!("the hub did not start: {e}"))
            }
        };
        let db = monitor(&files).await;
        let target = Target::new(hub.spokes_url());
        for (name, ops) in [("reconnect (no definitions)", 0), ("reconnect (ops)", per)] {
            let name = if ops > 0 {
                format!("reconnect ({} regs)", r * per)
            } else {
                name.to_owned()
            };
            let started = Instant::now();
            let mut fleet =
                Fleet::launch(&target, op_hellos(&self.principals, 0..r, ops), Mode::Once);
            let first = fleet.wait(started, timeout).await;
            if !first.done {
                self.report.failed(
                    &name,
                    format!("first connect: {}", first.describe(r, timeout)),
                );
                fleet.stop().await;
                continue;
            }
            let connected = first.took(started);
            let active_before = match &db {
                Some(db) => count(db, ACTIVE_SQL).await,
                None => None,
            };
            let bounced = Instant::now();
            fleet.bounce();
            let again = fleet.wait(bounced, timeout).await;
            let active_after = match &db {
                Some(db) => count(db, ACTIVE_SQL).await,
                None => None,
            };
            let notes = format!(
                "{r} spokes x {ops} ops: {} ({} registered, {} welcomes in all); first connect \
                 took {} s: {}; active registrations {} before, {} after",
                again.describe(r, timeout),
                again.registered,
                fleet.welcomes.load(Ordering::Relaxed),
                secs(connected),
                first.describe(r, timeout),
                active_before.map_or("?".into(), |a| a.to_string()),
                active_after.map_or("?".into(), |a| a.to_string()),
            );
            if again.done && again.registered == r * ops && again.rejected == 0 {
                self.report
                    .add(&name, secs(again.took(bounced)), "s", notes);
            } else {
                self.report.failed(&name, notes);
            }
            fleet.stop().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Some(db) = db {
            db.close().await;
        }
        check_crash(&mut self.report, "reconnect", &mut hub);
        terminate(hub, Duration::from_secs(60)).await;
    }

    /// `churn`: latency of calls to two stable spokes, without and with
    /// other spokes disconnecting and reconnecting in a loop.
    async fn churn(&mut self) {
        let s = &self.sizes;
        let (c, ops, phase, timeout) = (
            s.churn_spokes,
            s.churn_ops,
            Duration::from_secs(s.secs),
            s.timeout,
        );
        let files = hub_files(&self.principals, ops);
        let mut hub = match serve(&files).await {
            Ok(hub) => hub,
            Err(e) => {
                return self
                    .report
                    .failed("churn", format!("the hub did not start: {e}"))
            }
        };
        let target = Target::new(hub.spokes_url());
        let started = Instant::now();
        let mut stable = Fleet::launch(&target, echo_hellos(&self.principals, 0..2), Mode::Once);
        let mut churners = Some(Fleet::launch(
            &target,
            op_hellos(&self.principals, 2..2 + c, ops),
            Mode::Once,
        ));
        let a = stable.wait(started, timeout).await;
        let b = match churners.as_mut() {
            Some(fleet) => fleet.wait(started, timeout).await,
            None => Progress::default(),
        };
        if !a.done || !b.done {
            self.report.failed(
                "churn",
                format!(
                    "stable spokes: {}; churning spokes: {}",
                    a.describe(2, timeout),
                    b.describe(c, timeout)
                ),
            );
        } else {
            let client = hub.clients_url();
            let token = self.principals.client.clone();
            let steady = load(&client, &token, "bench.echo", 16, phase).await;
            churners.take().expect("the churning spokes").stop().await;
            let churning = Fleet::launch(
                &target,
                op_hellos(&self.principals, 2..2 + c, ops),
                Mode::Churn(50, 250),
            );
            let during = load(&client, &token, "bench.echo", 16, phase).await;
            let cycles = churning.welcomes.load(Ordering::Relaxed);
            churning.stop().await;
            let (l1, l2) = (steady.latencies(), during.latencies());
            let (p1, p2) = (percentile(&l1, 0.99), percentile(&l2, 0.99));
            self.report
                .add("churn p99 steady", p1.to_string(), "µs", steady.summary());
            self.report.add(
                "churn p99 churning",
                p2.to_string(),
                "µs",
                format!(
                    "{}; {c} spokes x {ops} ops churning (sessions of 50-250 ms), {cycles} sessions",
                    during.summary()
                ),
            );
            if p1 > 0 && !l2.is_empty() {
                self.report.add(
                    "churn ratio",
                    format!("{:.2}", p2 as f64 / p1 as f64),
                    "x",
                    "p99 churning / p99 steady".into(),
                );
            } else {
                self.report
                    .failed("churn ratio", "no calls answered".into());
            }
        }
        if let Some(churners) = churners {
            churners.stop().await;
        }
        stable.stop().await;
        check_crash(&mut self.report, "churn", &mut hub);
        terminate(hub, Duration::from_secs(60)).await;
    }

    /// `fanin`: calls/s to `bench.echo` with 2 registrations, then with
    /// `fanin` registrations.
    async fn fanin(&mut self) {
        let s = &self.sizes;
        let (f, phase, timeout) = (s.fanin, Duration::from_secs(s.secs), s.timeout);
        let files = hub_files(&self.principals, 1);
        let mut hub = match serve(&files).await {
            Ok(hub) => hub,
            Err(e) => {
                return self
                    .report
                    .failed("fanin", format!("the hub did not start: {e}"))
            }
        };
        let db = monitor(&files).await;
        let target = Target::new(hub.spokes_url());
        let client = hub.clients_url();
        let token = self.principals.client.clone();
        let started = Instant::now();
        let mut two = Fleet::launch(&target, echo_hellos(&self.principals, 0..2), Mode::Once);
        let progress = two.wait(started, timeout).await;
        let few = if progress.done {
            let stats = load(&client, &token, "bench.echo", 16, phase).await;
            self.report.add(
                "fanin 2 regs",
                format!("{:.0}", stats.rate()),
                "calls/s",
                stats.summary(),
            );
            Some(stats.rate())
        } else {
            self.report
                .failed("fanin 2 regs", progress.describe(2, timeout));
            None
        };
        let started = Instant::now();
        let mut rest = Fleet::launch(&target, echo_hellos(&self.principals, 2..f), Mode::Once);
        let progress = rest.wait(started, timeout).await;
        let active = match &db {
            Some(db) => count(db, ACTIVE_SQL).await,
            None => None,
        };
        let many = if progress.done {
            let stats = load(&client, &token, "bench.echo", 16, phase).await;
            self.report.add(
                &format!("fanin {f} regs"),
                format!("{:.0}", stats.rate()),
                "calls/s",
                format!(
                    "{}; {} active registrations; {} more spokes welcomed in {} s",
                    stats.summary(),
                    active.map_or("?".into(), |a| a.to_string()),
                    f - 2,
                    secs(progress.took(started))
                ),
            );
            Some(stats.rate())
        } else {
            self.report.failed(
                &format!("fanin {f} regs"),
                progress.describe(f - 2, timeout),
            );
            None
        };
        match (few, many) {
            (Some(a), Some(b)) if a > 0.0 => self.report.add(
                "fanin ratio",
                format!("{:.2}", b / a),
                "x",
                format!("calls/s with {f} registrations / with 2"),
            ),
            _ => self
                .report
                .failed("fanin ratio", "a run did not complete".into()),
        }
        rest.stop().await;
        two.stop().await;
        if let Some(db) = db {
            db.close().await;
        }
        check_crash(&mut self.report, "fanin", &mut hub);
        terminate(hub, Duration::from_secs(60)).await;
    }
}

/// `ListenOverflows` of `/proc/net/netstat`: connections this host's
/// listeners dropped because their accept queue was full (the client then
/// retransmits its SYN after a second or more).
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        if names.starts_with("TcpExt:") {
            let i = names
                .split_whitespace()
                .position(|n| n == "ListenOverflows")?;
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Raises the soft open-file limit to the hard one (the hub inherits it).
fn raise_open_files() -> libc::rlim_t {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
        limit.rlim_cur
    }
}

#[tokio::main]
async fn main() {
    let sizes = Sizes::from_env();
    let rows: BTreeSet<String> = match std::env::var("SCALE_ROWS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect(),
        _ => ROWS.iter().map(|r| r.to_string()).collect(),
    };
    for row in &rows {
        assert!(
            ROWS.contains(&row.as_str()),
            "unknown row {row:?}; rows are {ROWS:?}"
        );
    }
    let open_files = raise_open_files();
    println!(
        "scale: {} CPUs, load average {} (other work on the host skews every figure)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "scale: rows {rows:?}; {} spokes, {} ops over {} spokes ({} each), reconnect {}, \
         fanin {}, churn {} x {} ops, {} s per load phase, waits up to {} s, waves of {}; \
         open files {open_files}",
        sizes.spokes,
        sizes.op_spokes * sizes.ops_per_spoke(),
        sizes.op_spokes,
        sizes.ops_per_spoke(),
        sizes.reconnect,
        sizes.fanin,
        sizes.churn_spokes,
        sizes.churn_ops,
        sizes.secs,
        sizes.timeout.as_secs(),
        if sizes.wave == 0 {
            "all".to_owned()
        } else {
            sizes.wave.to_string()
        }
    );
    if open_files < (sizes.spokes + 1000) as libc::rlim_t {
        println!(
            "scale: warning: {open_files} open files may be too few for {} spokes (ulimit -n)",
            sizes.spokes
        );
    }
    let needed = sizes
        .spokes
        .max(sizes.fanin)
        .max(sizes.reconnect)
        .max(sizes.churn_spokes + 2);
    let scratch = tempfile::tempdir().expect("a temporary folder");
    let (binary, origin) = pin_hub_binary(scratch.path());
    println!("scale: hub binary {origin}");
    HUB_BINARY.set(binary).expect("pinned once");
    let made = Instant::now();
    let principals = make_principals(needed).await;
    println!(
        "scale: {needed} spoke principals and a client made in {} s",
        secs(made.elapsed())
    );
    let mut bench = Bench {
        sizes,
        rows,
        principals,
        report: Report::default(),
        idle_rss: None,
    };
    let began = Instant::now();
    if bench.wants("idle") || bench.wants("full") {
        bench.idle().await;
    }
    if [
        "register",
        "full",
        "list",
        "restart-health",
        "restart-callable",
    ]
    .iter()
    .any(|r| bench.wants(r))
    {
        bench.operations().await;
    }
    if bench.wants("leave") {
        bench.leave().await;
    }
    if bench.wants("reconnect") {
        bench.reconnect().await;
    }
    if bench.wants("churn") {
        bench.churn().await;
    }
    if bench.wants("fanin") {
        bench.fanin().await;
    }
    println!(
        "\nscale: finished in {} s; load average {}",
        secs(began.elapsed()),
        load_average()
    );
    bench.report.print();
}
