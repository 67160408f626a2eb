//! A soak benchmark: sustained calls while spokes churn.
//!
//! The real `alkhub` binary runs as a child process on a temporary SQLite
//! file. Several spokes serve `soak.echo` and `soak.work`; each session
//! lives a few seconds and ends one of three ways: a close frame, a dropped
//! socket, or a freeze (it stops reading, so the hub's heartbeat must drop
//! it). Clients keep a fixed number of calls in flight, each with a deadline.
//!
//! ```sh
//! SOAK_SECONDS=600 cargo bench --bench soak
//! ```
//! Environment: `SOAK_SECONDS` (default 60), `SOAK_SPOKES` (default 4),
//! `SOAK_CLIENTS` (default 4), `SOAK_IN_FLIGHT` (calls in flight over all
//! clients, default 64), `SOAK_SESSION_MS` (mean spoke session, default
//! 3000), `SOAK_HEARTBEAT_MS` (the hub's, default 2000), `SOAK_SEED`.
//!
//! Prints resident memory (start, max, end), calls answered and unanswered
//! (no answer within deadline + 5 s), error codes by count (`PROVIDER_GONE`
//! is expected while spokes churn), calls per second, latency, and the
//! registrations left active once every spoke has gone. Exit code 1 when
//! the hub dies or panics, a call goes unanswered, or a registration stays
//! active.

mod hub_process;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alkhub::peer::{CallOptions, PeerBuilder};
use futures_util::{SinkExt, StreamExt};
use hub_process::{env_num, get, http_raw, now_ms, HubFiles};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const DEADLINE_MS: u64 = 10_000;
const MARGIN_MS: u64 = 5_000;

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    wrong: AtomicU64,
    unanswered: AtomicU64,
    codes: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<Vec<u32>>,
    sessions: AtomicU64,
    ended: Mutex<BTreeMap<&'static str, u64>>,
    served: AtomicU64,
}

impl Stats {
    fn count<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
        *map.lock().unwrap().entry(key).or_default() += 1;
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = env_num("SOAK_SECONDS", 60);
    let spokes: usize = env_num("SOAK_SPOKES", 4);
    let clients: usize = env_num("SOAK_CLIENTS", 4).max(1);
    let in_flight: usize = env_num("SOAK_IN_FLIGHT", 64).max(1);
    let session_ms: u64 = env_num("SOAK_SESSION_MS", 3_000).max(200);
    let heartbeat_ms: u64 = env_num("SOAK_HEARTBEAT_MS", 2_000);
    let seed: u64 = env_num("SOAK_SEED", fastrand::u64(..));
    println!(
        "soak: {seconds} s, {spokes} churning spokes (sessions ~{session_ms} ms), \
         {clients} clients, {in_flight} calls in flight, heartbeat {heartbeat_ms} ms, seed {seed}"
    );

    let files = HubFiles::sqlite(&format!(
        "[server]\nshutdown_grace_ms = 2000\n\n[limits]\nheartbeat_ms = {heartbeat_ms}\n"
    ));
    let spoke_tokens: Vec<String> = (0..spokes)
        .map(|i| files.token("spoke", &format!("soak-{i}")))
        .collect();
    let client_tokens: Vec<String> = (0..clients)
        .map(|i| files.token("client", &format!("caller-{i}")))
        .collect();
    let mut hub = files.serve();
    println!("soak: hub pid {} at {}", hub.pid(), hub.addr);

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let spoke_tasks: Vec<_> = spoke_tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (url, token, stats, stop) =
                (hub.spokes_url(), token.clone(), stats.clone(), stop.clone());
            let seed = seed.wrapping_add(i as u64);
            tokio::spawn(async move {
                churning_spoke(url, token, stats, stop, seed, session_ms, heartbeat_ms).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = hub.rss_kib().unwrap_or(0);

    let started = Instant::now();
    let mut callers = Vec::new();
    for i in 0..in_flight {
        let (url, token, stats, stop) = (
            hub.clients_url(),
            client_tokens[i % clients].clone(),
            stats.clone(),
            stop.clone(),
        );
        callers.push(tokio::spawn(async move {
            caller(url, token, stats, stop, i).await
        }));
    }

    let end = started + Duration::from_secs(seconds);
    let mut rss_max = rss_start;
    let mut crashed = None;
    let mut last_report = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        crashed = hub.crash();
        if crashed.is_some() {
            break;
        }
        let rss = hub.rss_kib().unwrap_or(0);
        rss_max = rss_max.max(rss);
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "soak: {:>4} s  ok {}  errors {:?}  unanswered {}  rss {rss} KiB",
                started.elapsed().as_secs(),
                stats.ok.load(Ordering::Relaxed),
                stats.codes.lock().unwrap(),
                stats.unanswered.load(Ordering::Relaxed),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in callers {
        let _ = tokio::time::timeout(Duration::from_millis(DEADLINE_MS + MARGIN_MS + 1_000), task)
            .await;
    }
    let elapsed = started.elapsed();
    for task in spoke_tasks {
        let _ = tokio::time::timeout(Duration::from_millis(4 * heartbeat_ms + 5_000), task).await;
    }

    // Every spoke has gone: after a heartbeat or two no registration may stay active.
    let mut stale = None;
    if crashed.is_none() {
        tokio::time::sleep(Duration::from_millis(3 * heartbeat_ms)).await;
        stale = active_registrations(&hub, &client_tokens[0]).await;
    }
    let rss_end = hub.rss_kib().unwrap_or(0);
    rss_max = rss_max.max(rss_end);
    if crashed.is_none() {
        crashed = hub.crash();
    }

    let ok = stats.ok.load(Ordering::Relaxed);
    let codes = stats.codes.lock().unwrap().clone();
    let errors: u64 = codes.values().sum();
    let unanswered = stats.unanswered.load(Ordering::Relaxed);
    let wrong = stats.wrong.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *stats.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!("soak: seed                  {seed}");
    println!("soak: duration              {:.1} s", elapsed.as_secs_f64());
    println!(
        "soak: calls answered        {} ({ok} ok, {errors} errors, {wrong} wrong output)",
        ok + errors + wrong
    );
    println!("soak: calls unanswered      {unanswered}");
    println!("soak: error codes           {codes:?}");
    println!(
        "soak: calls/s               {:.0}",
        (ok + errors + wrong) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "soak: latency µs (answered) p50 {} p99 {} max {}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "soak: spoke sessions        {} ({:?}), calls served {}",
        stats.sessions.load(Ordering::Relaxed),
        stats.ended.lock().unwrap(),
        stats.served.load(Ordering::Relaxed)
    );
    match stale {
        Some(n) => println!("soak: active registrations  {n} after every spoke left"),
        None => println!("soak: active registrations  unknown (listing failed)"),
    }
    println!("soak: rss KiB               start {rss_start}, max {rss_max}, end {rss_end}");
    let shutdown_start = Instant::now();
    if hub.exited().is_none() {
        if hub.terminate(Duration::from_secs(20)) {
            println!(
                "soak: shutdown              exited {} ms after SIGTERM",
                shutdown_start.elapsed().as_millis()
            );
        } else {
            println!("soak: shutdown              did not exit within 20 s of SIGTERM");
        }
    }
    let mut failed = false;
    if let Some(why) = crashed {
        println!("soak: CRASH: {why}");
        for line in hub.log_tail() {
            println!("soak:   | {line}");
        }
        failed = true;
    }
    if unanswered > 0 || wrong > 0 || ok == 0 || stale != Some(0) {
        failed = true;
    }
    if failed {
        println!("soak: FAILED");
        std::process::exit(1);
    }
    println!("soak: ok");
}

/// Registrations of `soak.*` still active, summed from the listing (catalog)
/// and from `hub.operations.get` (database), or `None` if they cannot be read.
async fn active_registrations(hub: &hub_process::HubProcess, token: &str) -> Option<u64> {
    let (status, body) = http_raw(
        hub.addr,
        &get("/v1/operations", Some(token)),
        1 << 20,
        Duration::from_secs(10),
    )
    .await
    .ok()?;
    if status != 200 {
        return None;
    }
    let listing: Value = serde_json::from_str(&body).ok()?;
    let mut active = 0;
    for op in listing["operations"].as_array()? {
        if op["namespace"] != "soak" {
            continue;
        }
        active += op["activeRegistrations"].as_u64()?;
    }
    let client = PeerBuilder::new(hub.clients_url(), token)
        .connect()
        .await
        .ok()?;
    for id in ["soak.echo", "soak.work"] {
        let got = client
            .call("hub.operations.get", json!({"operationId": id}))
            .await
            .ok()?;
        active += got["data"]["registrations"]
            .as_array()?
            .iter()
            .filter(|r| r["status"] == "active")
            .count() as u64;
    }
    Some(active)
}

/// One caller slot: one call at a time, forever (until `stop`), reconnecting
/// if its connection ends.
async fn caller(url: String, token: String, stats: Arc<Stats>, stop: Arc<AtomicBool>, slot: usize) {
    let mut peer: Option<alkhub::peer::Peer> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let client = match &peer {
            Some(p) if p.close_code().is_none() => p.clone(),
            _ => match PeerBuilder::new(url.as_str(), token.as_str())
                .connect()
                .await
            {
                Ok(p) => {
                    peer = Some(p.clone());
                    p
                }
                Err(e) => {
                    Stats::count(&stats.codes, format!("connect: {}", e.code));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        n += 1;
        let (operation_id, input, expected) = if n.is_multiple_of(4) {
            ("soak.work", json!({"ms": n % 50}), json!("worked"))
        } else {
            let text = format!("{slot}-{n}");
            ("soak.echo", json!({"text": text}), json!({"text": text}))
        };
        let options = CallOptions {
            deadline: Some(now_ms() + DEADLINE_MS),
            ..Default::default()
        };
        let start = Instant::now();
        let call = client.call_with(operation_id, input, options);
        match tokio::time::timeout(Duration::from_millis(DEADLINE_MS + MARGIN_MS), call).await {
            Ok(Ok(output)) if output["data"] == expected => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
                let mut latencies = stats.latencies_us.lock().unwrap();
                if latencies.len() < 5_000_000 {
                    latencies.push(us);
                }
            }
            Ok(Ok(output)) => {
                stats.wrong.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: {operation_id} answered {output}, expected {expected}");
            }
            Ok(Err(e)) => {
                Stats::count(&stats.codes, e.code);
                // NO_PROVIDER while every spoke is between sessions: do not spin.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => {
                stats.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One spoke id, reconnecting session after session until `stop`.
async fn churning_spoke(
    url: String,
    token: String,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    seed: u64,
    session_ms: u64,
    heartbeat_ms: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let life = Duration::from_millis(rng.u64(session_ms / 3..session_ms * 5 / 3));
        let ending = match rng.u8(..10) {
            0..=3 => Ending::Close,
            4..=7 => Ending::Drop,
            _ => Ending::Freeze,
        };
        let ended = spoke_session(&url, &token, &stats, &stop, life, ending, heartbeat_ms).await;
        Stats::count(&stats.ended, ended);
        tokio::time::sleep(Duration::from_millis(rng.u64(0..500))).await;
    }
}

#[derive(Clone, Copy)]
enum Ending {
    /// A close frame.
    Close,
    /// The socket dropped without a close frame.
    Drop,
    /// Stops reading (no pongs) and holds the socket until the hub gives up.
    Freeze,
}

async fn spoke_session(
    url: &str,
    token: &str,
    stats: &Stats,
    stop: &AtomicBool,
    life: Duration,
    ending: Ending,
    heartbeat_ms: u64,
) -> &'static str {
    let Ok(Ok((ws, _))) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    else {
        return "connect failed";
    };
    let (mut sink, mut stream) = ws.split();
    let hello = json!({"type": "hello", "payload": {"token": token, "operations": [
        {"namespace": "soak", "name": "echo", "type": "query",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"namespace": "soak", "name": "work", "type": "query",
         "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 1000}}}}
    ]}});
    if sink.send(Message::text(hello.to_string())).await.is_err() {
        return "hello failed";
    }
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        sink
    });
    let until = Instant::now() + life;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let next = match tokio::time::timeout_at(until.into(), stream.next()).await {
            Err(_) => break,
            Ok(None) | Ok(Some(Err(_))) => {
                writer.abort();
                return "closed by the hub";
            }
            Ok(Some(Ok(message))) => message,
        };
        let Message::Text(text) = next else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if frame["type"] != "call.requested" {
            continue;
        }
        stats.served.fetch_add(1, Ordering::Relaxed);
        let payload = &frame["payload"];
        let request_id = payload["requestId"].as_str().unwrap_or_default().to_owned();
        let (data, delay) = match payload["operationId"].as_str() {
            Some("soak.work") => (
                json!("worked"),
                payload["input"]["ms"].as_u64().unwrap_or(0),
            ),
            _ => (payload["input"].clone(), 0),
        };
        let out = out.clone();
        tokio::spawn(async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let reply = json!({"type": "call.responded",
                               "payload": {"requestId": request_id, "output": {"data": data}}});
            let _ = out.send(Message::text(reply.to_string()));
        });
    }
    match ending {
        Ending::Close => {
            let _ = out.send(Message::Close(None));
            drop(out);
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
            "close frame"
        }
        Ending::Drop => {
            writer.abort();
            "dropped socket"
        }
        Ending::Freeze => {
            // Not reading: pings go unanswered; the hub must drop us.
            tokio::time::sleep(Duration::from_millis(3 * heartbeat_ms + 500)).await;
            writer.abort();
            "frozen"
        }
    }
}
