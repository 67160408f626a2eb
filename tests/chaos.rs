//! Chaos: real processes killed with SIGKILL (or frozen with SIGSTOP) while
//! they work. The hub is the real binary on a temporary database; a spoke
//! that must die is this test binary re-executed as a separate process
//! (`chaos_spoke_process`, ignored unless another test starts it).

#[path = "../benches/hub_process/mod.rs"]
mod hub_process;

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alkhub::peer::{handler_error, spec, Peer, PeerBuilder, PeerError};
use alkhub::protocol::OperationType;
use hub_process::{HubFiles, HubProcess};
use serde_json::{json, Value};

const HEARTBEAT_MS: u64 = 1_000;
const IN_FLIGHT: usize = 200;

/// Set in the environment of a re-executed test binary that plays a spoke.
const SPOKE_URL: &str = "ALKHUB_CHAOS_SPOKE_URL";
const SPOKE_TOKEN: &str = "ALKHUB_CHAOS_SPOKE_TOKEN";
const SPOKE_CALLS: &str = "ALKHUB_CHAOS_SPOKE_CALLS";

fn config() -> String {
    format!("[server]\nshutdown_grace_ms = 2000\n\n[limits]\nheartbeat_ms = {HEARTBEAT_MS}\n")
}

/// The spoke half of the process tests: connects, serves `chaos.hang`
/// (which never answers), prints `ready`, prints `received N` once it holds
/// N calls, then waits to be killed (two minutes at most).
#[tokio::test]
#[ignore = "a spoke process that other tests start and kill"]
async fn chaos_spoke_process() {
    let (Ok(url), Ok(token)) = (std::env::var(SPOKE_URL), std::env::var(SPOKE_TOKEN)) else {
        return;
    };
    let expect: usize = std::env::var(SPOKE_CALLS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(IN_FLIGHT);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _spoke = PeerBuilder::new(url, token)
        .name("victim")
        .operation(spec("chaos", "hang", OperationType::Query), move |_| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                std::future::pending::<Result<Value, PeerError>>().await
            }
        })
        .connect()
        .await
        .expect("the spoke process connects");
    println!("ready");
    let _ = tokio::time::timeout(Duration::from_secs(120), async {
        let mut received = 0;
        while rx.recv().await.is_some() {
            received += 1;
            if received == expect {
                println!("received {received}");
            }
        }
    })
    .await;
}

/// A spoke in a process of its own, and its stdout lines.
struct SpokeProcess {
    child: Child,
    lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl SpokeProcess {
    fn start(hub: &HubProcess, token: &str, calls: usize) -> SpokeProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "chaos_spoke_process",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(SPOKE_URL, hub.spokes_url())
            .env(SPOKE_TOKEN, token)
            .env(SPOKE_CALLS, calls.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test binary starts again as a spoke");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SpokeProcess {
            child,
            lines: std::sync::Mutex::new(lines),
        }
    }

    /// Waits (blocking, at most 60 s) for a line ending with `expected`.
    fn wait_for(&self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let lines = self.lines.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                // libtest may print its "test ... " prefix on the same line.
                Ok(line) if line.trim_end().ends_with(expected) => return,
                Ok(_) => {}
                Err(e) => panic!("the spoke process never printed {expected:?} ({e})"),
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for SpokeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `n` calls of `operation_id`; each task returns its result and
/// when it arrived.
fn start_calls(
    client: &Peer,
    operation_id: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Result<Value, PeerError>, Instant)>> {
    (0..n)
        .map(|i| {
            let client = client.clone();
            let operation_id = operation_id.to_owned();
            tokio::spawn(async move {
                let result = client.call(&operation_id, json!({"n": i})).await;
                (result, Instant::now())
            })
        })
        .collect()
}

/// Blocking waits (spoke stdout) run on a worker thread of their own.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoke_killed_with_200_calls_in_flight_every_caller_gets_provider_gone_within_a_heartbeat()
{
    let files = HubFiles::sqlite(&config());
    let spoke_token = files.token("spoke", "victim");
    let client_token = files.token("client", "caller");
    let hub = files.serve();

    let spoke = Arc::new(SpokeProcess::start(&hub, &spoke_token, IN_FLIGHT));
    let waiting = spoke.clone();
    blocking(move || waiting.wait_for("ready")).await;
    let client = PeerBuilder::new(hub.clients_url(), client_token)
        .connect()
        .await
        .unwrap();
    let calls = start_calls(&client, "chaos.hang", IN_FLIGHT);
    let waiting = spoke.clone();
    blocking(move || waiting.wait_for(&format!("received {IN_FLIGHT}"))).await;

    let killed = Instant::now();
    spoke.signal("-KILL");
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (result, at) = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a caller was not answered within 10 s of the kill")
            .unwrap();
        let error = result.expect_err("a call to a killed spoke cannot succeed");
        assert_eq!(error.code, "PROVIDER_GONE", "{error:?}");
        slowest = slowest.max(at.saturating_duration_since(killed));
    }
    assert!(
        slowest < Duration::from_millis(HEARTBEAT_MS),
        "the last caller was answered {slowest:?} after the kill; heartbeat is {HEARTBEAT_MS} ms"
    );
    assert_eq!(hub.panics(), 0, "{:#?}", hub.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_spoke_process_is_dropped_by_the_heartbeat_and_its_callers_get_provider_gone() {
    let files = HubFiles::sqlite(&config());
    let spoke_token = files.token("spoke", "victim");
    let client_token = files.token("client", "caller");
    let hub = files.serve();

    let calls_in_flight = 20;
    let spoke = Arc::new(SpokeProcess::start(&hub, &spoke_token, calls_in_flight));
    let waiting = spoke.clone();
    blocking(move || waiting.wait_for("ready")).await;
    let client = PeerBuilder::new(hub.clients_url(), client_token)
        .connect()
        .await
        .unwrap();
    let calls = start_calls(&client, "chaos.hang", calls_in_flight);
    let waiting = spoke.clone();
    blocking(move || waiting.wait_for(&format!("received {calls_in_flight}"))).await;

    // Stopped, the process keeps its socket open but answers no ping.
    let frozen = Instant::now();
    spoke.signal("-STOP");
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (result, at) = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .expect("a caller of a frozen spoke was not answered within 15 s")
            .unwrap();
        let error = result.expect_err("a call to a frozen spoke cannot succeed");
        assert_eq!(error.code, "PROVIDER_GONE", "{error:?}");
        slowest = slowest.max(at.saturating_duration_since(frozen));
    }
    // Two missed intervals, plus the interval in which the last ping was sent.
    let bound = Duration::from_millis(3 * HEARTBEAT_MS + 500);
    assert!(
        slowest < bound,
        "the last caller was answered {slowest:?} after the freeze; bound {bound:?}"
    );
    spoke.signal("-KILL");
    assert_eq!(hub.panics(), 0, "{:#?}", hub.log_tail());
}

// ---------------------------------------------------------------------------
// The hub killed under load and restarted on the same database.

const OPERATIONS: [&str; 3] = ["keep.echo", "keep.add", "keep.ticks"];

/// A spoke serving three operations with input schemas.
async fn keeper(hub: &HubProcess, token: &str) -> Peer {
    let mut echo = spec("keep", "echo", OperationType::Query);
    echo.input_schema = Some(json!({
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"]
    }));
    let mut add = spec("keep", "add", OperationType::Mutation);
    add.input_schema = Some(json!({
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"]
    }));
    let mut ticks = spec("keep", "ticks", OperationType::Subscription);
    ticks.input_schema = Some(json!({
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 10}}
    }));
    PeerBuilder::new(hub.spokes_url(), token)
        .operation(echo, |req| async move { Ok(req.input) })
        .operation(add, |req| async move {
            match (req.input["a"].as_f64(), req.input["b"].as_f64()) {
                (Some(a), Some(b)) => Ok(json!(a + b)),
                _ => Err(handler_error("EXECUTION_ERROR", "a and b must be numbers")),
            }
        })
        .subscription(ticks, |req, emit| async move {
            for i in 0..req.input["count"].as_u64().unwrap_or(3) {
                emit.emit(json!(i));
            }
            Ok(())
        })
        .connect()
        .await
        .unwrap()
}

/// Every operation works through `client`.
async fn assert_served(client: &Peer) {
    let echo = client
        .call("keep.echo", json!({"text": "hello"}))
        .await
        .unwrap();
    assert_eq!(echo["data"], json!({"text": "hello"}));
    let sum = client
        .call("keep.add", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(sum["data"].as_f64(), Some(5.0));
    let mut ticks = client.subscribe("keep.ticks", json!({"count": 2}), Default::default());
    let mut seen = Vec::new();
    while let Some(event) = ticks.next().await {
        seen.push(event.unwrap()["data"].clone());
    }
    assert_eq!(seen, vec![json!(0), json!(1)]);
}

/// `activeRegistrations` of each of [`OPERATIONS`] in `GET /v1/operations`,
/// and the registration statuses `hub.operations.get` reads from the database.
async fn registrations(hub: &HubProcess, client: &Peer, token: &str) -> Vec<(usize, Vec<String>)> {
    let request = hub_process::get("/v1/operations", Some(token));
    let (status, body) =
        hub_process::http_raw(hub.addr, &request, 1 << 20, Duration::from_secs(10))
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let listing: Value = serde_json::from_str(&body).unwrap();
    let mut out = Vec::new();
    for id in OPERATIONS {
        let entry = listing["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == id)
            .unwrap_or_else(|| panic!("{id} is missing from the listing: {body}"));
        let active = entry["activeRegistrations"].as_u64().unwrap() as usize;
        let got = client
            .call("hub.operations.get", json!({"operationId": id}))
            .await
            .unwrap();
        let statuses = got["data"]["registrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap().to_owned())
            .collect();
        out.push((active, statuses));
    }
    out
}

async fn hub_killed_under_load_restarts_intact(files: HubFiles) {
    let spoke_token = files.token("spoke", "keeper");
    let client_token = files.token("client", "caller");
    let mut hub = files.serve();
    let spoke = keeper(&hub, &spoke_token).await;
    let client = PeerBuilder::new(hub.clients_url(), &client_token)
        .connect()
        .await
        .unwrap();
    assert_served(&client).await;
    for (active, statuses) in registrations(&hub, &client, &client_token).await {
        assert_eq!((active, statuses), (1, vec!["active".to_owned()]));
    }

    // Load: 16 callers in a loop until the hub dies (bounded in count).
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..16)
        .map(|i| {
            let (client, ok, stop) = (client.clone(), ok.clone(), stop.clone());
            tokio::spawn(async move {
                for n in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let op = if n % 2 == 0 { "keep.echo" } else { "keep.add" };
                    let input = json!({"text": format!("{i}-{n}"), "a": n, "b": i});
                    match client.call(op, input).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => break,
                    };
                }
            })
        })
        .collect();
    let started = Instant::now();
    while ok.load(Ordering::Relaxed) < 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.kill9();
    for task in load {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a caller hung after the hub died")
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    drop((spoke, client));

    // Restart on the same database: it opens, every definition is there,
    // nothing is active until the spoke comes back.
    let hub = files.serve();
    let client = PeerBuilder::new(hub.clients_url(), &client_token)
        .connect()
        .await
        .unwrap();
    for (active, statuses) in registrations(&hub, &client, &client_token).await {
        assert_eq!(active, 0);
        assert!(
            !statuses.is_empty() && statuses.iter().all(|s| s != "active"),
            "registrations after the restart: {statuses:?}"
        );
    }
    let error = client
        .call("keep.echo", json!({"text": "anyone?"}))
        .await
        .unwrap_err();
    assert_eq!(error.code, "NO_PROVIDER", "{error:?}");

    let _spoke = keeper(&hub, &spoke_token).await;
    assert_served(&client).await;
    for (active, statuses) in registrations(&hub, &client, &client_token).await {
        assert_eq!(active, 1);
        assert_eq!(
            statuses.iter().filter(|s| *s == "active").count(),
            1,
            "{statuses:?}"
        );
    }
    assert_eq!(hub.panics(), 0, "{:#?}", hub.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_under_load_restarts_on_sqlite_with_definitions_kept_and_registrations_inactive_until_the_spoke_returns(
) {
    hub_killed_under_load_restarts_intact(HubFiles::sqlite(&config())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_killed_under_load_restarts_on_postgres_with_definitions_kept_and_registrations_inactive_until_the_spoke_returns(
) {
    let db = common::postgres().await;
    let files = HubFiles::with_database(tempfile::tempdir().unwrap(), db.url.clone(), &config());
    hub_killed_under_load_restarts_intact(files).await;
    drop(db);
}
