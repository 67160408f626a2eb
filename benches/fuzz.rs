//! A fuzzer for the hub's frames and HTTP bodies, over real sockets.
//!
//! It starts the real `alkhub` binary on a temporary SQLite file and an
//! ephemeral port, connects a well-behaved spoke (`fz.*`: schemas, a
//! subscription, a call that makes a child call) and a canary client that
//! calls it every second, then lets hostile peers loose: mutated and random
//! frames, binary and oversize frames, frames before `hello`, guessed and
//! duplicate request ids, answers to calls they do not serve, register
//! storms, misbehaving providers, random HTTP requests to `/call`,
//! `/subscribe` and `/mcp`, raw bytes, abrupt disconnects.
//!
//! ```sh
//! FUZZ_SECONDS=600 cargo bench --bench fuzz
//! ```
//! Environment: `FUZZ_SECONDS` (default 30), `FUZZ_SEED` (replay a run;
//! each peer's random stream is derived from it), `FUZZ_PEERS` (hostile
//! peers at once, default 12).
//!
//! It fails (exit code 1) when the hub process exits or prints `panicked`,
//! when a canary call is not answered correctly, when the well-behaved spoke
//! receives input its schema forbids (or a frame it cannot read), or when a
//! well-formed probe call on a connection that stays open gets no answer by
//! its deadline plus a margin.

mod hub_process;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hub_process::{env_num, http_raw, now_ms, post_json, HubFiles, HubProcess};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::Mutex as AsyncMutex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = Arc<AsyncMutex<SplitSink<Ws, Message>>>;

/// The hub's default `limits.max_frame_bytes`.
const FRAME_LIMIT: usize = 1024 * 1024;
const HEARTBEAT_MS: u64 = 5_000;
/// Operations of the well-behaved spoke.
const GOOD_OPS: [&str; 5] = ["fz.echo", "fz.add", "fz.ticks", "fz.chain", "fz.slow"];
/// Operations the hostile spokes declare and serve (badly).
const BAD_OPS: [&str; 4] = ["fuzz.a", "fuzz.b", "fuzz.c", "fuzz.d"];

/// Counters printed at the end.
#[derive(Default)]
struct Stats {
    frames: AtomicU64,
    frames_received: AtomicU64,
    ws_sessions: AtomicU64,
    ws_refused: AtomicU64,
    http: AtomicU64,
    http_no_answer: AtomicU64,
    raw_tcp: AtomicU64,
    canary_ok: AtomicU64,
    canary_failed: AtomicU64,
    bypass: AtomicU64,
    probes_sent: AtomicU64,
    probes_answered: AtomicU64,
    probes_unanswered: AtomicU64,
    good_calls: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What every hostile peer knows.
struct Ctx {
    addr: SocketAddr,
    spoke_tokens: Vec<String>,
    client_token: String,
    /// Hub request ids seen by hostile providers, for parent and answer guesses.
    seen_ids: Mutex<Vec<String>>,
    stats: Stats,
    stop: AtomicBool,
    /// First lines describing failures.
    failures: Mutex<Vec<String>>,
    started: Instant,
}

impl Ctx {
    fn fail(&self, what: String) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 30 {
            let t = self.started.elapsed().as_secs_f64();
            eprintln!("fuzz: at {t:.1} s: {what}");
            failures.push(format!("{t:.1} s: {what}"));
        }
    }

    fn remember(&self, request_id: &str) {
        let mut seen = self.seen_ids.lock().unwrap();
        if seen.len() >= 256 {
            seen.remove(0);
        }
        seen.push(request_id.to_owned());
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = env_num("FUZZ_SECONDS", 30);
    let seed: u64 = env_num("FUZZ_SEED", fastrand::u64(..));
    let peers: usize = env_num("FUZZ_PEERS", 12);
    println!(
        "fuzz: seed {seed} (replay with FUZZ_SEED={seed}), {seconds} s, {peers} hostile peers"
    );

    let files = HubFiles::sqlite(&format!(
        "[server]\nshutdown_grace_ms = 2000\n\n[limits]\nheartbeat_ms = {HEARTBEAT_MS}\n"
    ));
    let good_token = files.token("spoke", "good");
    let canary_token = files.token("client", "canary");
    let spoke_tokens: Vec<String> = ["fuzz-a", "fuzz-b", "fuzz-c"]
        .iter()
        .map(|id| files.token("spoke", id))
        .collect();
    let client_token = files.token("client", "fuzz-client");
    let mut hub = files.serve();
    println!("fuzz: hub pid {} at {}", hub.pid(), hub.addr);

    let ctx = Arc::new(Ctx {
        addr: hub.addr,
        spoke_tokens,
        client_token,
        seen_ids: Mutex::new(Vec::new()),
        stats: Stats::default(),
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        started: Instant::now(),
    });

    let good = tokio::spawn(good_spoke(ctx.clone(), hub.spokes_url(), good_token));
    // Let the good spoke register before the canary starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = hub.rss_kib().unwrap_or(0);
    let canary = tokio::spawn(canary(ctx.clone(), hub.clients_url(), canary_token));

    let workers: Vec<_> = (0..peers)
        .map(|i| {
            let ctx = ctx.clone();
            let seed = seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tokio::spawn(async move { hostile_peer(ctx, seed).await })
        })
        .collect();

    // Watch the hub: alive, no panic, resident memory.
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut rss_max = rss_start;
    let mut crashed = None;
    let mut last_report = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        crashed = hub.crash();
        if crashed.is_some() {
            break;
        }
        if let Some(rss) = hub.rss_kib() {
            rss_max = rss_max.max(rss);
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let s = &ctx.stats;
            println!(
                "fuzz: {:>4} s  frames {}  http {}  canary {}/{}  rss {} KiB",
                ctx.started.elapsed().as_secs(),
                Stats::get(&s.frames),
                Stats::get(&s.http),
                Stats::get(&s.canary_ok),
                Stats::get(&s.canary_failed),
                hub.rss_kib().unwrap_or(0)
            );
        }
    }
    ctx.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        if tokio::time::timeout(Duration::from_secs(15), worker)
            .await
            .is_err()
        {
            ctx.fail("a hostile peer did not stop within 15 s".to_owned());
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), canary).await;
    if crashed.is_none() {
        crashed = hub.crash();
    }
    // Memory once the hostile peers are gone and the hub has settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = hub.rss_kib().unwrap_or(0);
    rss_max = rss_max.max(rss_end);
    good.abort();
    // Definitions outlive their sessions, so they are part of what RSS holds.
    let definitions = definitions(&ctx).await;
    println!("fuzz: definitions listed   {definitions:?}");

    let shutdown = shut_down(&mut hub);
    report(
        &ctx, &hub, seed, crashed, rss_start, rss_max, rss_end, shutdown,
    );
}

/// How many definitions the fuzzing client sees at the end.
async fn definitions(ctx: &Ctx) -> Option<usize> {
    let request = hub_process::get("/v1/operations", Some(&ctx.client_token));
    let (_, body) = http_raw(ctx.addr, &request, 64 << 20, Duration::from_secs(10))
        .await
        .ok()?;
    let listing: Value = serde_json::from_str(&body).ok()?;
    Some(listing["operations"].as_array()?.len())
}

/// SIGTERM; how long the hub took to exit, if it did within 20 s.
fn shut_down(hub: &mut HubProcess) -> Option<Duration> {
    if hub.exited().is_some() {
        return None;
    }
    let start = Instant::now();
    hub.terminate(Duration::from_secs(20))
        .then(|| start.elapsed())
}

#[allow(clippy::too_many_arguments)]
fn report(
    ctx: &Ctx,
    hub: &HubProcess,
    seed: u64,
    crashed: Option<String>,
    rss_start: u64,
    rss_max: u64,
    rss_end: u64,
    shutdown: Option<Duration>,
) {
    let s = &ctx.stats;
    let g = Stats::get;
    println!("fuzz: seed                 {seed}");
    println!(
        "fuzz: duration             {:.1} s",
        ctx.started.elapsed().as_secs_f64()
    );
    println!("fuzz: frames sent          {}", g(&s.frames));
    println!("fuzz: frames received      {}", g(&s.frames_received));
    println!(
        "fuzz: ws sessions          {} ({} refused at upgrade)",
        g(&s.ws_sessions),
        g(&s.ws_refused)
    );
    println!(
        "fuzz: http requests        {} ({} without a status line)",
        g(&s.http),
        g(&s.http_no_answer)
    );
    println!("fuzz: raw tcp connections  {}", g(&s.raw_tcp));
    println!("fuzz: good spoke calls     {}", g(&s.good_calls));
    println!(
        "fuzz: probe calls          {} sent, {} answered, {} unanswered",
        g(&s.probes_sent),
        g(&s.probes_answered),
        g(&s.probes_unanswered)
    );
    println!("fuzz: forbidden input seen {}", g(&s.bypass));
    println!("fuzz: crashes              {}", u8::from(crashed.is_some()));
    println!(
        "fuzz: canary calls         {} ok, {} failed",
        g(&s.canary_ok),
        g(&s.canary_failed)
    );
    println!("fuzz: rss KiB              start {rss_start}, max {rss_max}, end {rss_end}");
    match shutdown {
        Some(d) => println!(
            "fuzz: shutdown             exited {} ms after SIGTERM",
            d.as_millis()
        ),
        None => println!("fuzz: shutdown             did not exit within 20 s of SIGTERM"),
    }
    let mut failed = false;
    if let Some(why) = &crashed {
        println!("fuzz: CRASH: {why}");
        for line in hub.stderr.panics.lock().unwrap().iter() {
            println!("fuzz:   {line}");
        }
        for line in hub.log_tail() {
            println!("fuzz:   | {line}");
        }
        failed = true;
    }
    if g(&s.canary_failed) > 0 || g(&s.canary_ok) == 0 {
        failed = true;
    }
    if g(&s.bypass) > 0 || g(&s.probes_unanswered) > 0 {
        failed = true;
    }
    let failures = ctx.failures.lock().unwrap();
    if !failures.is_empty() {
        println!("fuzz: failures (first {}):", failures.len());
        for f in failures.iter() {
            println!("fuzz:   {f}");
        }
    }
    if failed {
        println!("fuzz: FAILED (replay with FUZZ_SEED={seed})");
        std::process::exit(1);
    }
    println!("fuzz: ok");
}

// ---------------------------------------------------------------------------
// The well-behaved spoke: raw frames, so that it sees exactly what the hub
// forwards (a frame it cannot parse is a finding, not a silent drop).

fn good_specs() -> Value {
    json!([
        {"namespace": "fz", "name": "echo", "type": "query",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 4096}},
                         "required": ["text"], "additionalProperties": false}},
        {"namespace": "fz", "name": "add", "type": "mutation",
         "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                         "required": ["a", "b"], "additionalProperties": false}},
        {"namespace": "fz", "name": "ticks", "type": "subscription",
         "inputSchema": {"type": "object", "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 20}},
                         "required": ["count"], "additionalProperties": false}},
        {"namespace": "fz", "name": "chain", "type": "query",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 4096}},
                         "required": ["text"], "additionalProperties": false}},
        {"namespace": "fz", "name": "slow", "type": "query",
         "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 1000}},
                         "required": ["ms"], "additionalProperties": false}}
    ])
}

/// Whether `input` is one `schema` of [`good_specs`] accepts (checked by hand).
fn allowed_input(operation_id: &str, input: &Value) -> bool {
    let Some(object) = input.as_object() else {
        return false;
    };
    let only = |key: &str| object.len() == 1 && object.contains_key(key);
    match operation_id {
        "fz.echo" | "fz.chain" => {
            only("text")
                && input["text"]
                    .as_str()
                    .is_some_and(|t| t.chars().count() <= 4096)
        }
        "fz.add" => object.len() == 2 && input["a"].is_number() && input["b"].is_number(),
        "fz.ticks" => only("count") && input["count"].as_u64().is_some_and(|c| c <= 20),
        "fz.slow" => only("ms") && input["ms"].as_u64().is_some_and(|c| c <= 1000),
        _ => false,
    }
}

fn frame(kind: &str, payload: Value) -> Message {
    Message::text(json!({"type": kind, "payload": payload}).to_string())
}

type Pending = Arc<Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<Value>>>>;

async fn good_spoke(ctx: Arc<Ctx>, url: String, token: String) {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the good spoke connects");
    let (mut sink, mut stream) = ws.split();
    sink.send(frame(
        "hello",
        json!({"token": token, "name": "good", "operations": good_specs()}),
    ))
    .await
    .unwrap();
    let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
    });
    let pending: Pending = Default::default();
    let mut next_child = 0u64;
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(close)) => {
                ctx.fail(format!("the hub closed the good spoke: {close:?}"));
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                ctx.fail(format!("the good spoke's socket failed: {e}"));
                return;
            }
        };
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            Stats::add(&ctx.stats.bypass, 1);
            ctx.fail(format!(
                "the good spoke received a frame it cannot parse: {}",
                clip(text.as_str())
            ));
            continue;
        };
        let payload = &value["payload"];
        let request_id = payload["requestId"].as_str().unwrap_or_default().to_owned();
        match value["type"].as_str().unwrap_or_default() {
            "welcome" => {
                let rejected = &payload["rejected"];
                if rejected.as_array().is_some_and(|r| !r.is_empty()) {
                    ctx.fail(format!(
                        "the good spoke's operations were rejected: {rejected}"
                    ));
                }
            }
            "call.requested" => {
                Stats::add(&ctx.stats.good_calls, 1);
                let operation_id = payload["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let input = payload.get("input").cloned().unwrap_or(Value::Null);
                if !allowed_input(&operation_id, &input) {
                    Stats::add(&ctx.stats.bypass, 1);
                    ctx.fail(format!(
                        "{operation_id} was forwarded input its schema forbids: {}",
                        clip(&input.to_string())
                    ));
                    let _ = out.send(frame(
                        "call.error",
                        json!({"requestId": request_id,
                        "code": "EXECUTION_ERROR", "message": "input the schema forbids"}),
                    ));
                    continue;
                }
                next_child += 1;
                tokio::spawn(serve_good(
                    out.clone(),
                    pending.clone(),
                    operation_id,
                    request_id,
                    input,
                    format!("child-{next_child}"),
                ));
            }
            "call.responded" | "call.error" => {
                if let Some(tx) = pending.lock().unwrap().remove(&request_id) {
                    let _ = tx.send(value.clone());
                }
            }
            _ => {}
        }
    }
    ctx.fail("the good spoke's connection ended".to_owned());
}

async fn serve_good(
    out: tokio::sync::mpsc::UnboundedSender<Message>,
    pending: Pending,
    operation_id: String,
    request_id: String,
    input: Value,
    child_id: String,
) {
    let respond = |data: Value| {
        frame(
            "call.responded",
            json!({"requestId": request_id, "output": {"data": data}}),
        )
    };
    let reply = match operation_id.as_str() {
        "fz.echo" => respond(input),
        "fz.add" => respond(json!(
            input["a"].as_f64().unwrap_or(0.0) + input["b"].as_f64().unwrap_or(0.0)
        )),
        "fz.slow" => {
            tokio::time::sleep(Duration::from_millis(input["ms"].as_u64().unwrap_or(0))).await;
            respond(json!("slept"))
        }
        "fz.ticks" => {
            for i in 0..input["count"].as_u64().unwrap_or(0) {
                let _ = out.send(respond(json!(i)));
            }
            frame("call.completed", json!({"requestId": request_id}))
        }
        "fz.chain" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            pending.lock().unwrap().insert(child_id.clone(), tx);
            let _ = out.send(frame(
                "call.requested",
                json!({"requestId": child_id, "operationId": "fz.echo", "input": input,
                       "parentRequestId": request_id, "deadline": now_ms() + 5_000}),
            ));
            match tokio::time::timeout(Duration::from_secs(8), rx).await {
                Ok(Ok(answer)) if answer["type"] == "call.responded" => {
                    respond(answer["payload"]["output"]["data"].clone())
                }
                Ok(Ok(answer)) => frame(
                    "call.error",
                    json!({"requestId": request_id, "code": "EXECUTION_ERROR",
                           "message": format!("child call failed: {}", answer["payload"])}),
                ),
                _ => {
                    pending.lock().unwrap().remove(&child_id);
                    frame(
                        "call.error",
                        json!({"requestId": request_id, "code": "EXECUTION_ERROR",
                               "message": "child call unanswered"}),
                    )
                }
            }
        }
        other => frame(
            "call.error",
            json!({"requestId": request_id, "code": "OPERATION_NOT_FOUND",
                   "message": format!("not served here: {other}")}),
        ),
    };
    let _ = out.send(reply);
}

fn clip(text: &str) -> String {
    if text.len() <= 200 {
        return text.to_owned();
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

// ---------------------------------------------------------------------------
// The canary: one correct call a second, each checked.

async fn canary(ctx: Arc<Ctx>, url: String, token: String) {
    use alkhub::peer::{CallOptions, PeerBuilder};
    let mut peer = None;
    let mut n = 0u64;
    while !ctx.stopping() {
        let tick = Instant::now();
        n += 1;
        if peer
            .as_ref()
            .is_none_or(|p: &alkhub::peer::Peer| p.close_code().is_some())
        {
            match PeerBuilder::new(url.as_str(), token.as_str())
                .connect()
                .await
            {
                Ok(p) => peer = Some(p),
                Err(e) => {
                    Stats::add(&ctx.stats.canary_failed, 1);
                    ctx.fail(format!("canary cannot connect: {e}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let client = peer.clone().unwrap();
        let text = format!("canary-{n}");
        let options = || CallOptions {
            deadline: Some(now_ms() + 5_000),
            ..Default::default()
        };
        let check = async {
            match n % 5 {
                0 => {
                    let out = client
                        .call_with("fz.echo", json!({"text": text}), options())
                        .await
                        .map_err(|e| format!("fz.echo: {e}"))?;
                    expect("fz.echo", &out["data"], &json!({"text": text}))
                }
                1 => {
                    let out = client
                        .call_with("fz.chain", json!({"text": text}), options())
                        .await
                        .map_err(|e| format!("fz.chain: {e}"))?;
                    expect("fz.chain", &out["data"], &json!({"text": text}))
                }
                2 => {
                    let mut events = client.subscribe("fz.ticks", json!({"count": 3}), options());
                    let mut seen = Vec::new();
                    while let Some(event) = events.next().await {
                        seen.push(event.map_err(|e| format!("fz.ticks: {e}"))?["data"].clone());
                    }
                    expect("fz.ticks", &json!(seen), &json!([0, 1, 2]))
                }
                3 => {
                    let out = client
                        .call_with("fz.add", json!({"a": n, "b": 1}), options())
                        .await
                        .map_err(|e| format!("fz.add: {e}"))?;
                    expect("fz.add", &out["data"], &json!((n + 1) as f64))
                }
                _ => {
                    let body = json!({"input": {"text": text}, "timeoutMs": 5000}).to_string();
                    let request = post_json("/v1/operations/fz.echo/call", Some(&token), &body);
                    let (status, body) =
                        http_raw(ctx.addr, &request, 1 << 20, Duration::from_secs(8))
                            .await
                            .map_err(|e| format!("HTTP fz.echo: {e}"))?;
                    if status != 200 {
                        return Err(format!("HTTP fz.echo: status {status}: {}", clip(&body)));
                    }
                    let out: Value = serde_json::from_str(&body)
                        .map_err(|e| format!("HTTP fz.echo: {e}: {}", clip(&body)))?;
                    expect("HTTP fz.echo", &out["data"], &json!({"text": text}))
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(8), check).await {
            Ok(Ok(())) => Stats::add(&ctx.stats.canary_ok, 1),
            Ok(Err(e)) => {
                Stats::add(&ctx.stats.canary_failed, 1);
                ctx.fail(format!("canary: {e}"));
            }
            Err(_) => {
                Stats::add(&ctx.stats.canary_failed, 1);
                ctx.fail(format!("canary call {n} unanswered after 8 s"));
            }
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
}

fn expect(what: &str, got: &Value, want: &Value) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {want}, got {}",
            clip(&got.to_string())
        ))
    }
}

// ---------------------------------------------------------------------------
// Hostile peers.

async fn hostile_peer(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !ctx.stopping() {
        let scenario = rng.u8(..100);
        let sub_seed = rng.u64(..);
        let run = async {
            match scenario {
                0..=44 => ws_session(&ctx, sub_seed).await,
                45..=54 => bad_provider(&ctx, sub_seed).await,
                55..=62 => probe_calls(&ctx, sub_seed).await,
                63..=67 => register_storm(&ctx, sub_seed).await,
                68..=92 => http_request(&ctx, sub_seed).await,
                _ => raw_tcp(&ctx, sub_seed).await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), run).await;
    }
}

/// Connects to a WebSocket endpoint with extra headers; `None` if refused.
async fn connect(ctx: &Ctx, path: &str, headers: &[(String, String)]) -> Option<Ws> {
    let mut request = format!("ws://{}{path}", ctx.addr)
        .into_client_request()
        .ok()?;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            name.parse::<tokio_tungstenite::tungstenite::http::HeaderName>(),
            HeaderValue::from_str(value),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Ok(Ok((ws, _))) => {
            Stats::add(&ctx.stats.ws_sessions, 1);
            Some(ws)
        }
        _ => {
            Stats::add(&ctx.stats.ws_refused, 1);
            None
        }
    }
}

/// Sends one message with a bounded wait; false once the socket is unusable.
async fn send(ctx: &Ctx, sink: &Sink, message: Message) -> bool {
    let sent = tokio::time::timeout(Duration::from_secs(3), async {
        sink.lock().await.send(message).await
    })
    .await;
    match sent {
        Ok(Ok(())) => {
            Stats::add(&ctx.stats.frames, 1);
            true
        }
        _ => false,
    }
}

/// What a reader saw on a hostile connection.
#[derive(Default)]
struct Seen {
    closed: AtomicBool,
    /// Request ids (the peer's own) that got a final answer.
    answered: Mutex<HashSet<String>>,
}

/// How a hostile provider treats calls delivered to it.
#[derive(Clone, Copy, PartialEq)]
enum Serving {
    /// It does not read at all (a slow consumer).
    NeverRead,
    /// Reads and ignores.
    Ignore,
    /// Answers at random: right, twice, wrong, never, garbage.
    Badly,
}

/// Reads a hostile connection until it ends, optionally serving calls badly.
fn spawn_reader(
    ctx: Arc<Ctx>,
    mut stream: SplitStream<Ws>,
    sink: Sink,
    serving: Serving,
    seed: u64,
) -> (Arc<Seen>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let out = seen.clone();
    let task = tokio::spawn(async move {
        if serving == Serving::NeverRead {
            std::future::pending::<()>().await;
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        while let Some(message) = stream.next().await {
            let Ok(message) = message else { break };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => break,
                _ => continue,
            };
            Stats::add(&ctx.stats.frames_received, 1);
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let kind = value["type"].as_str().unwrap_or_default();
            let request_id = value["payload"]["requestId"].as_str().unwrap_or_default();
            match kind {
                "call.responded" if value["payload"]["output"].is_null() => {}
                "call.responded" | "call.error" | "call.completed" => {
                    out.answered.lock().unwrap().insert(request_id.to_owned());
                }
                "call.requested" => {
                    ctx.remember(request_id);
                    if serving == Serving::Badly {
                        let answers = bad_answers(&mut rng, &ctx, request_id);
                        for answer in answers {
                            if !send(&ctx, &sink, answer).await {
                                break;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out.closed.store(true, Ordering::Relaxed);
    });
    (seen, task)
}

/// Answers to one delivered call, chosen to break the call protocol.
fn bad_answers(rng: &mut fastrand::Rng, ctx: &Ctx, request_id: &str) -> Vec<Message> {
    let ok = || {
        frame(
            "call.responded",
            json!({"requestId": request_id, "output": {"data": 1}}),
        )
    };
    match rng.u8(..10) {
        0 | 1 => vec![ok()],
        2 => vec![
            ok(),
            ok(),
            frame("call.completed", json!({"requestId": request_id})),
        ],
        3 => vec![frame(
            "call.error",
            json!({"requestId": request_id, "code": random_string(rng), "message": random_string(rng),
                   "details": random_value(rng, 3)}),
        )],
        4 => vec![frame(
            "call.responded",
            json!({"requestId": request_id, "output": random_value(rng, 4)}),
        )],
        5 => {
            let guess = guess_request_id(rng, ctx);
            vec![frame(
                "call.responded",
                json!({"requestId": guess, "output": {"data": "spoofed"}}),
            )]
        }
        6 => vec![frame("call.aborted", json!({"requestId": request_id}))],
        7 => vec![Message::text(mutate_text(
            rng,
            ok().to_text().unwrap_or_default(),
        ))],
        _ => vec![],
    }
}

/// A hub request id: one seen, or a guess near one (the hub numbers them).
fn guess_request_id(rng: &mut fastrand::Rng, ctx: &Ctx) -> String {
    let seen = ctx.seen_ids.lock().unwrap();
    let base = seen
        .get(rng.usize(..seen.len().max(1)))
        .cloned()
        .unwrap_or_else(|| "h1".to_owned());
    drop(seen);
    match rng.u8(..4) {
        0 => base,
        1 => {
            let n: i64 = base.trim_start_matches('h').parse().unwrap_or(1);
            format!("h{}", (n + rng.i64(-50..50)).max(0))
        }
        2 => format!("h{}", rng.u64(0..10_000)),
        _ => random_string(rng),
    }
}

/// A WebSocket session sending fuzzed frames.
async fn ws_session(ctx: &Arc<Ctx>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let spoke = rng.bool();
    let path = match rng.u8(..20) {
        0 => format!("/v1/spokes/connect?{}", random_string(&mut rng)),
        1 => "/v1/clients/connect/".to_owned(),
        _ if spoke => "/v1/spokes/connect".to_owned(),
        _ => "/v1/clients/connect".to_owned(),
    };
    let token = pick_token(&mut rng, ctx, spoke);
    let mut headers = Vec::new();
    match rng.u8(..10) {
        0 => headers.push(("authorization".to_owned(), format!("Bearer {token}"))),
        1 => headers.push(("authorization".to_owned(), random_string(&mut rng))),
        2 => headers.push(("sec-websocket-protocol".to_owned(), random_string(&mut rng))),
        3 => headers.push(("x-fuzz".to_owned(), "x".repeat(rng.usize(1..16_000)))),
        _ => {}
    }
    let Some(ws) = connect(ctx, &path, &headers).await else {
        return;
    };
    let (sink, stream) = ws.split();
    let sink: Sink = Arc::new(AsyncMutex::new(sink));
    let serving = match rng.u8(..10) {
        0 | 1 => Serving::NeverRead,
        2..=4 => Serving::Badly,
        _ => Serving::Ignore,
    };
    let (seen, reader) = spawn_reader(ctx.clone(), stream, sink.clone(), serving, rng.u64(..));

    // hello: proper, fuzzed, or none at all.
    match rng.u8(..10) {
        0..=5 => {
            let hello = hello_frame(&mut rng, &token, spoke);
            send(ctx, &sink, Message::text(hello.to_string())).await;
        }
        6 | 7 => {
            let hello = hello_frame(&mut rng, &token, spoke).to_string();
            let text = mutate_text(&mut rng, &hello);
            send(ctx, &sink, Message::text(text)).await;
        }
        _ => {}
    }
    let frames = match rng.u8(..10) {
        0 => rng.usize(200..2_000),
        _ => rng.usize(1..100),
    };
    let pause = rng.bool();
    for _ in 0..frames {
        if ctx.stopping() || seen.closed.load(Ordering::Relaxed) {
            break;
        }
        let message = fuzz_message(&mut rng, ctx);
        if !send(ctx, &sink, message).await {
            break;
        }
        if pause {
            tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
        }
    }
    finish(&mut rng, ctx, &sink, reader).await;
}

/// Ends a hostile session: a close frame, a wait, or at once; then the
/// socket is dropped (without a close frame unless one was sent).
async fn finish(
    rng: &mut fastrand::Rng,
    ctx: &Ctx,
    sink: &Sink,
    reader: tokio::task::JoinHandle<()>,
) {
    let abort = reader.abort_handle();
    match rng.u8(..4) {
        0 => {
            send(ctx, sink, Message::Close(None)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        1 => tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await,
        _ => {}
    }
    // The reader holds the socket's read half: the socket closes with it.
    abort.abort();
}

fn pick_token(rng: &mut fastrand::Rng, ctx: &Ctx, spoke: bool) -> String {
    match rng.u8(..10) {
        0..=6 if spoke => ctx.spoke_tokens[rng.usize(..ctx.spoke_tokens.len())].clone(),
        0..=6 => ctx.client_token.clone(),
        // The wrong kind of token for the endpoint.
        7 if spoke => ctx.client_token.clone(),
        7 => ctx.spoke_tokens[0].clone(),
        8 => format!("alk_spoke_{}", random_hex(rng, 64)),
        _ => random_string(rng),
    }
}

fn hello_frame(rng: &mut fastrand::Rng, token: &str, spoke: bool) -> Value {
    let operations: Vec<Value> = (0..rng.usize(0..4))
        .map(|_| random_spec(rng, spoke))
        .collect();
    let mut payload = json!({"token": token, "operations": operations});
    if rng.bool() {
        payload["name"] = json!(random_string(rng));
    }
    if rng.u8(..4) == 0 {
        payload["labels"] = random_value(rng, 2);
    }
    json!({"type": "hello", "payload": payload})
}

/// An operation spec in the hostile namespaces (never `fz`), sometimes odd.
fn random_spec(rng: &mut fastrand::Rng, spoke: bool) -> Value {
    let (namespace, name) = match rng.u8(..10) {
        0 => ("hub".to_owned(), "operations.list".to_owned()),
        1 => (random_string(rng), random_string(rng)),
        2 if !spoke => ("fuzz".to_owned(), "a".to_owned()),
        _ => {
            let op = BAD_OPS[rng.usize(..BAD_OPS.len())];
            let (ns, name) = op.split_once('.').unwrap();
            (ns.to_owned(), name.to_owned())
        }
    };
    let op_type = ["query", "mutation", "subscription", "bogus"][rng.usize(..4)];
    let mut spec = json!({"namespace": namespace, "name": name, "type": op_type});
    if rng.bool() {
        spec["inputSchema"] = random_schema(rng);
    }
    if rng.u8(..4) == 0 {
        let levels = ["public", "authenticated", "scoped", "internal", "root"];
        spec["accessLevel"] = json!(levels[rng.usize(..levels.len())]);
    }
    if rng.u8(..5) == 0 {
        spec["description"] = json!(random_string(rng));
    }
    if rng.u8(..8) == 0 {
        spec[random_key(rng)] = random_value(rng, 3);
    }
    spec
}

fn random_schema(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..12) {
        0 => json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}),
        1 => json!({"type": "string", "pattern": "^(a+)+$"}),
        2 => json!({"$ref": "#"}),
        3 => json!({"properties": {"x": {"$ref": "#"}}}),
        4 => json!({"type": "nonsense"}),
        5 => {
            let mut schema = json!({"type": "integer"});
            for _ in 0..rng.usize(1..300) {
                schema = json!({"allOf": [schema]});
            }
            schema
        }
        6 => json!({"maxItems": 2, "items": {"maxLength": 3}}),
        7 => json!({"enum": (0..rng.usize(1..5_000)).collect::<Vec<_>>()}),
        8 => json!({"pattern": "(((((((((((x*)*)*)*)*)*)*)*)*)*)*)*y"}),
        9 => json!(true),
        10 => json!(false),
        _ => random_value(rng, 3),
    }
}

/// One message of the frame fuzzer.
fn fuzz_message(rng: &mut fastrand::Rng, ctx: &Ctx) -> Message {
    match rng.u8(..100) {
        0..=39 => Message::text(valid_frame(rng, ctx).to_string()),
        40..=64 => {
            let mut value = valid_frame(rng, ctx);
            for _ in 0..rng.usize(1..4) {
                mutate(rng, &mut value);
            }
            Message::text(value.to_string())
        }
        65..=74 => {
            let text = valid_frame(rng, ctx).to_string();
            Message::text(mutate_text(rng, &text))
        }
        75..=84 => Message::text(special_frame(rng, ctx)),
        85..=89 => {
            let mut bytes = vec![0u8; rng.usize(0..4096)];
            rng.fill(&mut bytes);
            Message::binary(bytes)
        }
        90..=92 => Message::Ping(random_bytes(rng, 125).into()),
        93 => Message::Pong(random_bytes(rng, 125).into()),
        94 => Message::text(String::new()),
        95 => {
            // Just over the frame limit (the hub closes with 1009), or just under.
            let size = if rng.bool() {
                FRAME_LIMIT + 64
            } else {
                FRAME_LIMIT - 200
            };
            let filler = "x".repeat(size);
            Message::text(format!(
                r#"{{"type":"call.requested","payload":{{"requestId":"big","operationId":"fz.echo","input":{{"text":"{filler}"}}}}}}"#
            ))
        }
        _ => {
            let text = String::from_utf8_lossy(&random_bytes(rng, 512)).into_owned();
            Message::text(text)
        }
    }
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.usize(0..=max)];
    rng.fill(&mut bytes);
    bytes
}

/// A frame that follows the protocol's shapes, with plausible values.
fn valid_frame(rng: &mut fastrand::Rng, ctx: &Ctx) -> Value {
    let kinds = [
        "call.requested",
        "call.requested",
        "call.requested",
        "call.responded",
        "call.completed",
        "call.error",
        "call.aborted",
        "register",
        "unregister",
        "hello",
        "welcome",
        "error",
        "call.bogus",
        "ping",
    ];
    let kind = kinds[rng.usize(..kinds.len())];
    let payload = match kind {
        "call.requested" => call_payload(rng, ctx),
        "call.responded" => {
            json!({"requestId": guess_request_id(rng, ctx), "output": {"data": random_value(rng, 2)}})
        }
        "call.completed" | "call.aborted" => json!({"requestId": request_id_for_answers(rng, ctx)}),
        "call.error" => {
            json!({"requestId": request_id_for_answers(rng, ctx), "code": "EXECUTION_ERROR", "message": "x"})
        }
        "register" => {
            json!({"operations": (0..rng.usize(0..5)).map(|_| random_spec(rng, true)).collect::<Vec<_>>()})
        }
        "unregister" => {
            json!({"operationIds": (0..rng.usize(0..5)).map(|_| any_operation(rng)).collect::<Vec<_>>()})
        }
        "hello" => {
            let token = ctx.spoke_tokens[rng.usize(..ctx.spoke_tokens.len())].clone();
            return hello_frame(rng, &token, true);
        }
        _ => random_value(rng, 2),
    };
    json!({"type": kind, "payload": payload})
}

/// The peer's own request ids (for aborts) or hub ids (for answers).
fn request_id_for_answers(rng: &mut fastrand::Rng, ctx: &Ctx) -> String {
    if rng.bool() {
        format!("c-{}", rng.u8(..20))
    } else {
        guess_request_id(rng, ctx)
    }
}

fn any_operation(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..10) {
        0..=3 => GOOD_OPS[rng.usize(..GOOD_OPS.len())].to_owned(),
        4..=6 => BAD_OPS[rng.usize(..BAD_OPS.len())].to_owned(),
        7 => ["hub.operations.list", "hub.operations.get"][rng.usize(..2)].to_owned(),
        _ => random_string(rng),
    }
}

fn call_payload(rng: &mut fastrand::Rng, ctx: &Ctx) -> Value {
    let operation_id = any_operation(rng);
    let input = match operation_id.as_str() {
        "fz.echo" | "fz.chain" if rng.bool() => json!({"text": random_string(rng)}),
        "fz.add" if rng.bool() => json!({"a": random_number(rng), "b": random_number(rng)}),
        "fz.ticks" if rng.bool() => json!({"count": rng.u64(0..25)}),
        "fz.slow" if rng.bool() => json!({"ms": rng.u64(0..1_200)}),
        "hub.operations.get" => json!({"operationId": any_operation(rng)}),
        _ => random_value(rng, 4),
    };
    let mut payload = json!({
        "requestId": format!("c-{}", rng.u8(..20)),
        "operationId": operation_id,
        "input": input,
    });
    if rng.u8(..3) == 0 {
        payload["parentRequestId"] = json!(guess_request_id(rng, ctx));
    }
    if rng.u8(..4) == 0 {
        let deadline: Value = match rng.u8(..6) {
            0 => json!(0),
            1 => json!(now_ms() - 1_000),
            2 => json!(now_ms() + rng.u64(0..3_000)),
            3 => json!(u64::MAX),
            4 => json!(-1),
            _ => json!(1e300),
        };
        payload["deadline"] = deadline;
    }
    if rng.u8(..6) == 0 {
        payload["idleTimeout"] = json!(rng.u64(0..2_000));
    }
    if rng.u8(..6) == 0 {
        payload["metadata"] = random_value(rng, 2);
    }
    payload
}

fn random_number(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..8) {
        0 => json!(0),
        1 => json!(-0.0),
        2 => json!(i64::MIN),
        3 => json!(u64::MAX),
        4 => json!(f64::MAX),
        5 => json!(f64::MIN_POSITIVE),
        6 => json!(rng.f64() * 1e6),
        _ => json!(rng.i64(..)),
    }
}

fn random_key(rng: &mut fastrand::Rng) -> String {
    let keys = [
        "type",
        "payload",
        "requestId",
        "operationId",
        "input",
        "output",
        "token",
        "operations",
        "parentRequestId",
        "deadline",
        "identity",
        "__proto__",
        "",
    ];
    if rng.bool() {
        keys[rng.usize(..keys.len())].to_owned()
    } else {
        random_string(rng)
    }
}

/// A random string; never one starting with `fz` (the canary's namespace).
fn random_string(rng: &mut fastrand::Rng) -> String {
    let s = match rng.u8(..14) {
        0 => String::new(),
        1 => (0..rng.usize(1..12)).map(|_| rng.alphanumeric()).collect(),
        2 => "\u{0}\u{1}\u{7f}\u{202e}\u{200b}\u{feff}😀𝕏".to_owned(),
        3 => "x".repeat(rng.usize(1_000..200_000)),
        4 => "../../../etc/passwd".to_owned(),
        5 => "'; DROP TABLE operations; --".to_owned(),
        6 => "%s%n%x{}{{}}\\u0000".to_owned(),
        7 => format!("h{}", rng.u64(..1_000)),
        8 => "dev.devbox.fs.read".to_owned(),
        9 => "hub.operations.list".to_owned(),
        10 => (0..rng.usize(1..40))
            .map(|_| char::from_u32(rng.u32(1..0x2_FFFF)).unwrap_or('?'))
            .collect(),
        11 => "a.".repeat(rng.usize(1..500)),
        12 => "Bearer ".to_owned(),
        _ => format!("fuzz-{}", rng.u32(..1000)),
    };
    if s.starts_with("fz") {
        format!("q{s}")
    } else {
        s
    }
}

fn random_hex(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.u32(..16), 16).unwrap())
        .collect()
}

fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    let kinds = if depth == 0 { 5 } else { 7 };
    match rng.u8(..kinds) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => random_number(rng),
        3 | 4 => json!(random_string(rng)),
        5 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.usize(0..4) {
                map.insert(random_key(rng), random_value(rng, depth - 1));
            }
            Value::Object(map)
        }
    }
}

/// Replaces, removes or adds one value somewhere in `value`.
fn mutate(rng: &mut fastrand::Rng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() && rng.u8(..4) != 0 => {
            let key = map.keys().nth(rng.usize(..map.len())).unwrap().clone();
            match rng.u8(..6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(random_key(rng), random_value(rng, 3));
                }
                _ => mutate(rng, map.get_mut(&key).unwrap()),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.u8(..4) != 0 => {
            let i = rng.usize(..items.len());
            mutate(rng, &mut items[i]);
        }
        _ => {
            *value = match rng.u8(..6) {
                0 => json!(value.to_string()),
                1 => json!([value.clone()]),
                _ => random_value(rng, 3),
            }
        }
    }
}

/// Mutations of the text of a frame: cuts, flips, splices of hostile tokens.
fn mutate_text(rng: &mut fastrand::Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    match rng.u8(..6) {
        0 => bytes.truncate(rng.usize(..=bytes.len())),
        1 => {
            for _ in 0..rng.usize(1..8) {
                if bytes.is_empty() {
                    break;
                }
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(0x20..0x7f);
            }
        }
        2 => {
            let splice = [
                "1e400",
                "-1e400",
                "1e-400",
                "123456789012345678901234567890",
                "NaN",
                "Infinity",
                "\"\\ud800\"",
                "\"\\u0000\"",
                "{}",
                "[]",
                "null",
                "\"type\":\"hello\",",
            ];
            let at = rng.usize(..=bytes.len());
            let token = splice[rng.usize(..splice.len())];
            bytes.splice(at..at, token.bytes());
        }
        3 => {
            let copy = bytes.clone();
            bytes.extend_from_slice(&copy);
        }
        4 => bytes.reverse(),
        _ => bytes.insert(rng.usize(..=bytes.len()), rng.u8(..)),
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Frames built as text: deep nesting, numbers out of range, duplicate keys,
/// non-objects.
fn special_frame(rng: &mut fastrand::Rng, ctx: &Ctx) -> String {
    let op = any_operation(rng);
    let n = rng.u8(..10);
    let call = |input: &str| {
        format!(
            r#"{{"type":"call.requested","payload":{{"requestId":"s-{n}","operationId":"{op}","input":{input}}}}}"#
        )
    };
    match rng.u8(..12) {
        0 => {
            let n = [200, 1_000, 10_000, 100_000][rng.usize(..4)];
            call(&format!("{}{}", "[".repeat(n), "]".repeat(n)))
        }
        1 => {
            let n = [200, 1_000, 10_000][rng.usize(..3)];
            call(&format!("{}1{}", r#"{"text":"#.repeat(n), "}".repeat(n)))
        }
        2 => call(r#"{"a":1e400,"b":1}"#),
        3 => call(r#"{"text":1e400}"#),
        4 => call(r#"{"a":123456789012345678901234567890123456789,"b":-1e-400}"#),
        5 => call(r#"{"text":"a","text":"b"}"#),
        6 => r#"{"type":"hello","type":"call.requested","payload":{}}"#.to_owned(),
        7 => ["[]", "1", "\"hello\"", "null", "true", "{}", "{\"type\":null}"][rng.usize(..7)].to_owned(),
        8 => format!(
            r#"{{"type":"call.requested","payload":{{"requestId":"{}","operationId":"fz.echo","input":{{"text":"x"}}}}}}"#,
            "r".repeat(rng.usize(100..100_000))
        ),
        9 => {
            let n = rng.usize(1_000..50_000);
            format!(
                r#"{{"type":"register","payload":{{"operations":[{{"namespace":"fuzz","name":"deep","type":"query","inputSchema":{}true{}}}]}}}}"#,
                r#"{"not":"#.repeat(n),
                "}".repeat(n)
            )
        }
        10 => format!(
            r#"{{"type":"call.requested","payload":{{"requestId":"p","operationId":"fz.chain","input":{{"text":"x"}},"parentRequestId":"{}"}}}}"#,
            guess_request_id(rng, ctx)
        ),
        _ => "{\"type\":\"call.requested\",\"payload\":{\"requestId\":\"\u{0}\",\"input\":\"\\ud800\"}}".to_owned(),
    }
}

/// A spoke that registers the hostile operations and serves them badly, while
/// a client calls them (and the good ones) with well-formed calls.
async fn bad_provider(ctx: &Arc<Ctx>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let token = ctx.spoke_tokens[rng.usize(..ctx.spoke_tokens.len())].clone();
    let Some(ws) = connect(ctx, "/v1/spokes/connect", &[]).await else {
        return;
    };
    let (sink, stream) = ws.split();
    let sink: Sink = Arc::new(AsyncMutex::new(sink));
    let serving = if rng.u8(..4) == 0 {
        Serving::NeverRead
    } else {
        Serving::Badly
    };
    let (seen, reader) = spawn_reader(ctx.clone(), stream, sink.clone(), serving, rng.u64(..));
    let operations: Vec<Value> = BAD_OPS
        .iter()
        .map(|op| {
            let (ns, name) = op.split_once('.').unwrap();
            json!({"namespace": ns, "name": name, "type": if rng.u8(..4) == 0 { "subscription" } else { "query" }})
        })
        .collect();
    send(
        ctx,
        &sink,
        frame("hello", json!({"token": token, "operations": operations})),
    )
    .await;
    // As a provider it also calls, sometimes naming calls it serves as parent.
    for i in 0..rng.usize(0..30) {
        if ctx.stopping() || seen.closed.load(Ordering::Relaxed) {
            break;
        }
        let mut payload = call_payload(&mut rng, ctx);
        payload["requestId"] = json!(format!("b-{i}"));
        send(ctx, &sink, frame("call.requested", payload)).await;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..100))).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.u64(0..4_000))).await;
    finish(&mut rng, ctx, &sink, reader).await;
}

/// A client that sends well-formed calls with deadlines (mixed with junk that
/// does not end the connection) and checks every one is answered.
async fn probe_calls(ctx: &Arc<Ctx>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let Some(ws) = connect(ctx, "/v1/clients/connect", &[]).await else {
        return;
    };
    let (sink, stream) = ws.split();
    let sink: Sink = Arc::new(AsyncMutex::new(sink));
    let (seen, reader) = spawn_reader(ctx.clone(), stream, sink.clone(), Serving::Ignore, 0);
    send(
        ctx,
        &sink,
        frame("hello", json!({"token": ctx.client_token})),
    )
    .await;
    let deadline = now_ms() + 2_000;
    let mut sent = Vec::new();
    for i in 0..rng.usize(1..40) {
        let request_id = format!("probe-{i}");
        let mut payload = call_payload(&mut rng, ctx);
        // Well-formed: only the operation, the input and the parent vary.
        payload["requestId"] = json!(request_id);
        payload["deadline"] = json!(deadline);
        payload["idleTimeout"] = json!(1_000);
        if let Some(map) = payload.as_object_mut() {
            map.remove("metadata");
        }
        if !send(ctx, &sink, frame("call.requested", payload)).await {
            break;
        }
        sent.push(request_id);
        if rng.u8(..3) == 0 {
            // Junk that the protocol answers with an error event, no close.
            let junk = match rng.u8(..3) {
                0 => Message::binary(random_bytes(&mut rng, 64)),
                1 => Message::text("[1,2,3]"),
                _ => frame("call.bogus", json!({})),
            };
            send(ctx, &sink, junk).await;
        }
        if rng.u8(..4) == 0 {
            let victim = format!("probe-{}", rng.usize(..=i));
            send(
                ctx,
                &sink,
                frame("call.aborted", json!({"requestId": victim})),
            )
            .await;
            // An aborted call needs no answer.
            sent.retain(|id| *id != victim);
        }
    }
    Stats::add(&ctx.stats.probes_sent, sent.len() as u64);
    // Deadline, plus a margin for a busy machine.
    let wait_until = Instant::now() + Duration::from_millis(2_000 + 3_000);
    while Instant::now() < wait_until {
        if seen.closed.load(Ordering::Relaxed) {
            break;
        }
        if sent
            .iter()
            .all(|id| seen.answered.lock().unwrap().contains(id))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !seen.closed.load(Ordering::Relaxed) {
        let answered = seen.answered.lock().unwrap();
        let missing: Vec<_> = sent.iter().filter(|id| !answered.contains(*id)).collect();
        Stats::add(
            &ctx.stats.probes_answered,
            (sent.len() - missing.len()) as u64,
        );
        if !missing.is_empty() {
            Stats::add(&ctx.stats.probes_unanswered, missing.len() as u64);
            ctx.fail(format!(
                "{} probe calls unanswered 3 s after their deadline (seed {seed}): {missing:?}",
                missing.len()
            ));
        }
    }
    reader.abort();
}

/// Register and unregister as fast as possible, and reconnect the same
/// spoke over and over (each session supersedes the last).
async fn register_storm(ctx: &Arc<Ctx>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let token = ctx.spoke_tokens[rng.usize(..ctx.spoke_tokens.len())].clone();
    for _ in 0..rng.usize(1..10) {
        let Some(ws) = connect(ctx, "/v1/spokes/connect", &[]).await else {
            continue;
        };
        let (sink, stream) = ws.split();
        let sink: Sink = Arc::new(AsyncMutex::new(sink));
        let (seen, reader) = spawn_reader(ctx.clone(), stream, sink.clone(), Serving::Ignore, 0);
        send(ctx, &sink, frame("hello", json!({"token": token}))).await;
        for _ in 0..rng.usize(1..100) {
            if ctx.stopping() || seen.closed.load(Ordering::Relaxed) {
                break;
            }
            let ops: Vec<Value> = (0..rng.usize(1..20))
                .map(|_| random_spec(&mut rng, true))
                .collect();
            let message = if rng.bool() {
                frame("register", json!({"operations": ops}))
            } else {
                let ids: Vec<String> = (0..rng.usize(1..5))
                    .map(|_| any_operation(&mut rng))
                    .collect();
                frame("unregister", json!({"operationIds": ids}))
            };
            if !send(ctx, &sink, message).await {
                break;
            }
        }
        if rng.bool() {
            drop(sink);
            reader.abort();
        } else {
            finish(&mut rng, ctx, &sink, reader).await;
        }
    }
}

/// One HTTP request with a random method, path, headers and body.
async fn http_request(ctx: &Arc<Ctx>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let op = any_operation(&mut rng);
    let path = match rng.u8(..12) {
        0..=3 => format!("/v1/operations/{op}/call"),
        4 | 5 => format!("/v1/operations/{op}/subscribe"),
        6 | 7 => "/mcp".to_owned(),
        8 => "/v1/operations".to_owned(),
        9 => "/healthz".to_owned(),
        10 => format!(
            "/v1/operations/{}/call",
            "%2e%2e%2f".repeat(rng.usize(1..200))
        ),
        _ => format!(
            "/{}",
            random_string(&mut rng).replace(|c: char| c.is_whitespace() || c.is_control(), "")
        ),
    };
    let method = [
        "POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "BREW",
    ][rng.usize(..8)];
    let body = http_body(&mut rng, ctx, &path);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    match rng.u8(..10) {
        0..=4 => head.push_str(&format!("Authorization: Bearer {}\r\n", ctx.client_token)),
        5 => head.push_str(&format!(
            "Authorization: Bearer {}\r\n",
            ctx.spoke_tokens[0]
        )),
        6 => head.push_str(&format!(
            "Authorization: {}\r\n",
            random_string(&mut rng).replace(['\r', '\n'], "")
        )),
        _ => {}
    }
    match rng.u8(..6) {
        0 => head.push_str("Content-Type: text/plain\r\n"),
        1 => {}
        _ => head.push_str("Content-Type: application/json\r\n"),
    }
    if path == "/mcp" || path.ends_with("/subscribe") || rng.u8(..5) == 0 {
        head.push_str("Accept: application/json, text/event-stream\r\n");
    }
    if path == "/mcp" && rng.bool() {
        head.push_str(&format!("Mcp-Session-Id: {}\r\n", random_hex(&mut rng, 32)));
    }
    for _ in 0..rng.usize(0..3) {
        head.push_str(&format!(
            "X-{}: {}\r\n",
            random_hex(&mut rng, 8),
            "v".repeat(rng.usize(0..2_000))
        ));
    }
    let declared = match rng.u8(..10) {
        0 => format!(
            "Content-Length: {}\r\n",
            body.len() + rng.usize(1..1_000_000)
        ),
        1 => "Content-Length: -1\r\n".to_owned(),
        2 => "Transfer-Encoding: chunked\r\n".to_owned(),
        3 => format!("Content-Length: {}\r\nContent-Length: 1\r\n", body.len()),
        _ => format!("Content-Length: {}\r\n", body.len()),
    };
    head.push_str(&declared);
    head.push_str(if rng.u8(..4) == 0 {
        "\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut request = head.into_bytes();
    if declared.starts_with("Transfer-Encoding") {
        request.extend_from_slice(format!("{:x}\r\n", body.len() + rng.usize(0..3)).as_bytes());
        request.extend_from_slice(&body);
        request.extend_from_slice(b"\r\nzz\r\n");
    } else {
        request.extend_from_slice(&body);
    }
    Stats::add(&ctx.stats.http, 1);
    if rng.u8(..10) == 0 {
        // Slow or abandoned: part of the request, then a wait or a drop.
        use tokio::io::AsyncWriteExt;
        if let Ok(mut stream) = TcpStream::connect(ctx.addr).await {
            let cut = rng.usize(..=request.len());
            let _ = stream.write_all(&request[..cut]).await;
            tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await;
        }
        return;
    }
    let read_limit = if rng.bool() { 64 } else { 1 << 16 };
    match http_raw(ctx.addr, &request, read_limit, Duration::from_secs(5)).await {
        Ok((0, _)) | Err(_) => Stats::add(&ctx.stats.http_no_answer, 1),
        Ok(_) => {}
    }
}

fn http_body(rng: &mut fastrand::Rng, ctx: &Ctx, path: &str) -> Vec<u8> {
    if path == "/mcp" && rng.bool() {
        let methods = [
            "initialize",
            "tools/list",
            "tools/call",
            "notifications/initialized",
            "ping",
            "bogus",
        ];
        let method = methods[rng.usize(..methods.len())];
        let mut message = json!({"jsonrpc": "2.0", "id": rng.u32(..100), "method": method});
        message["params"] = match method {
            "initialize" => json!({"protocolVersion": "2025-03-26", "capabilities": {},
                                   "clientInfo": {"name": "fuzz", "version": "0"}}),
            "tools/call" => json!({"name": any_operation(rng), "arguments": random_value(rng, 3)}),
            _ => random_value(rng, 2),
        };
        if rng.bool() {
            mutate(rng, &mut message);
        }
        return message.to_string().into_bytes();
    }
    match rng.u8(..10) {
        0..=3 => {
            let mut body = json!({"input": call_payload(rng, ctx)["input"].clone()});
            if rng.bool() {
                body["timeoutMs"] = random_number(rng);
            }
            if rng.bool() {
                body["metadata"] = random_value(rng, 2);
            }
            if rng.bool() {
                mutate(rng, &mut body);
            }
            body.to_string().into_bytes()
        }
        4 => {
            let n = [200, 10_000, 100_000][rng.usize(..3)];
            format!(r#"{{"input":{}{}}}"#, "[".repeat(n), "]".repeat(n)).into_bytes()
        }
        5 => br#"{"input":{"a":1e400,"b":1,"text":1e400}}"#.to_vec(),
        6 => vec![b'x'; FRAME_LIMIT + rng.usize(1..1_000)],
        7 => random_bytes(rng, 2_000),
        8 => mutate_text(rng, r#"{"input":{"text":"hello"},"timeoutMs":1000}"#).into_bytes(),
        _ => Vec::new(),
    }
}

/// Raw bytes at the listener: garbage, half an upgrade, an HTTP/0.9 line.
async fn raw_tcp(ctx: &Arc<Ctx>, seed: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut rng = fastrand::Rng::with_seed(seed);
    Stats::add(&ctx.stats.raw_tcp, 1);
    let Ok(mut stream) = TcpStream::connect(ctx.addr).await else {
        return;
    };
    let bytes = match rng.u8(..4) {
        0 => random_bytes(&mut rng, 8_192),
        1 => b"GET /v1/spokes/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: !!!\r\n\r\n".to_vec(),
        2 => b"GET /\r\n".to_vec(),
        _ => {
            let mut head = b"GET /v1/clients/connect HTTP/1.1\r\n".to_vec();
            for i in 0..rng.usize(1..2_000) {
                head.extend_from_slice(format!("X-{i}: {}\r\n", "a".repeat(100)).as_bytes());
            }
            head
        }
    };
    let _ = stream.write_all(&bytes).await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(
        Duration::from_millis(rng.u64(0..2_000)),
        stream.read(&mut buf),
    )
    .await;
}
