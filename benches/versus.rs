//! The hub against NATS and against a bare WebSocket relay, in one run.
//!
//! Three systems carry the same echo call: a ~100-byte JSON input from one
//! client connection, answered by R = 2 echo responders, with C calls in
//! flight (C = 1, 16, 64), all over that one connection:
//!
//! - **nats**: a `nats-server` of our own on a free loopback port; two
//!   responders in a queue group, each on its own connection, publish the
//!   payload back as the reply; the requester is one async-nats client
//!   shared by C tasks, each looping on `client.request`.
//! - **hub**: the in-process hub of `support::echo_hub` with two raw-protocol
//!   echo spokes; the caller of `support::caller_on` on one connection.
//! - **relay**: a minimal WebSocket relay written here, in process like the
//!   hub, with the same echo spokes and caller. It answers `hello` with
//!   `welcome`, picks a provider of the operation round robin, rewrites the
//!   request id to one of its own and routes `call.responded` back with the
//!   caller's id restored; nothing else (no auth, no validation, no limits).
//!
//! At each C the systems take turns (nats, hub, relay), each warmed up
//! first. Prints calls/s and p50, p99 and max latency in microseconds for
//! each, then the ratios hub/NATS and hub/relay. Run with:
//!
//! ```sh
//! cargo bench --bench versus
//! ```
//! Environment: `VERSUS_SECS` (per measured run, default 5), `VERSUS_ROUNDS`
//! (repetitions of the whole alternation, default 1), `VERSUS_WARMUP_MS`
//! (before each measured run, default 1000), `VERSUS_NATS_SERVER` (the
//! binary, default `/usr/sbin/nats-server` if present, else `nats-server`).

#[path = "hub_process/mod.rs"]
mod hub_process;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alkhub::config::Config;
use hub_process::NatsServer;

/// The allocator the `alkhub` binary runs with, so that the in-process hub
/// (and the relay beside it) measure as the shipped hub does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

/// Echo responders (spokes) per system.
const PROVIDERS: usize = 2;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
const SUBJECT: &str = "bench.echo";
const SYSTEMS: [&str; 3] = ["nats", "hub", "relay"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The latencies of one run and how long it took, draining included.
struct Sample {
    latencies: Vec<u32>,
    secs: f64,
}

struct Stats {
    rate: f64,
    p50: u32,
    p99: u32,
    max: u32,
}

fn stats<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
    let mut all = Vec::new();
    let mut secs = 0.0;
    for s in samples {
        all.extend_from_slice(&s.latencies);
        secs += s.secs;
    }
    all.sort_unstable();
    Stats {
        rate: all.len() as f64 / secs,
        p50: support::percentile(&all, 0.50),
        p99: support::percentile(&all, 0.99),
        max: all.last().copied().unwrap_or(0),
    }
}

/// One system's client connection. A WebSocket one is opened afresh for
/// each C: the hub drops a peer that sends nothing for two heartbeats, and
/// nothing reads it while the other systems run.
enum Target {
    Nats(async_nats::Client),
    Ws {
        url: String,
        token: String,
        ws: Option<Box<support::Ws>>,
    },
}

impl Target {
    async fn connect(&mut self) {
        if let Target::Ws { url, token, ws } = self {
            *ws = None;
            *ws = Some(Box::new(support::client(url, token).await));
        }
    }

    /// Keeps `depth` calls in flight for `run`, then waits for those open.
    async fn run(&mut self, depth: usize, run: Duration) -> Sample {
        let stop = Arc::new(AtomicBool::new(false));
        match self {
            Target::Nats(client) => {
                let began = Instant::now();
                let tasks: Vec<_> = (0..depth)
                    .map(|_| tokio::spawn(nats_requester(client.clone(), stop.clone())))
                    .collect();
                tokio::time::sleep(run).await;
                stop.store(true, Ordering::Relaxed);
                let mut latencies = Vec::new();
                for t in tasks {
                    latencies.extend(t.await.unwrap());
                }
                Sample {
                    latencies,
                    secs: began.elapsed().as_secs_f64(),
                }
            }
            Target::Ws { ws: slot, .. } => {
                let mut ws = slot.take().unwrap();
                let flag = stop.clone();
                let task = tokio::spawn(async move {
                    let began = Instant::now();
                    let latencies = support::caller_on(&mut ws, depth, flag).await;
                    let secs = began.elapsed().as_secs_f64();
                    (ws, Sample { latencies, secs })
                });
                tokio::time::sleep(run).await;
                stop.store(true, Ordering::Relaxed);
                let (ws, sample) = task.await.unwrap();
                *slot = Some(ws);
                sample
            }
        }
    }
}

// ---------------------------------------------------------------- NATS

/// R responders in one queue group, each on its own connection; returns
/// the requester's client once every subscription is in place.
async fn nats_system(url: &str) -> async_nats::Client {
    for _ in 0..PROVIDERS {
        let client = async_nats::connect(url).await.unwrap();
        let mut sub = client
            .queue_subscribe(SUBJECT, "echo".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                let Some(reply) = message.reply else {
                    continue;
                };
                if client.publish(reply, message.payload).await.is_err() {
                    return;
                }
            }
        });
    }
    async_nats::connect(url).await.unwrap()
}

async fn nats_requester(client: async_nats::Client, stop: Arc<AtomicBool>) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        let reply = client
            .request(SUBJECT, support::INPUT.into())
            .await
            .unwrap();
        latencies.push(at.elapsed().as_micros() as u32);
        assert_eq!(reply.payload, support::INPUT.as_bytes());
    }
    latencies
}

// ---------------------------------------------------------------- relay

/// The least a WebSocket relay can do to carry the hub's call frames.
mod relay {
    use super::*;
    use tokio::sync::mpsc;

    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(borrow)]
        payload: &'a RawValue,
    }

    #[derive(Deserialize)]
    struct Hello<'a> {
        #[serde(borrow, default)]
        operations: Vec<Spec<'a>>,
    }

    #[derive(Deserialize)]
    struct Spec<'a> {
        #[serde(borrow)]
        namespace: &'a str,
        #[serde(borrow)]
        name: &'a str,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Call<'a> {
        #[serde(borrow)]
        request_id: &'a str,
        #[serde(borrow, default)]
        operation_id: Option<&'a str>,
    }

    #[derive(Default)]
    struct State {
        /// Operation id to its providers' connections and the round-robin cursor.
        providers: HashMap<String, (Vec<u64>, usize)>,
        /// Every connection's outbound queue.
        peers: HashMap<u64, mpsc::UnboundedSender<String>>,
        /// Relay request id to the caller's connection and request id.
        pending: HashMap<u64, (u64, String)>,
    }

    #[derive(Default)]
    pub struct Relay {
        state: Mutex<State>,
        next_peer: AtomicU64,
        next_call: AtomicU64,
    }

    impl Relay {
        pub fn providers(&self, operation: &str) -> usize {
            let state = self.state.lock().unwrap();
            state.providers.get(operation).map_or(0, |p| p.0.len())
        }
    }

    /// Listens on a loopback port; returns the relay and its address.
    pub async fn start() -> (Arc<Relay>, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Arc::new(Relay::default());
        let r = relay.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(r.clone(), tcp));
            }
        });
        (relay, addr)
    }

    /// `text` with the string `old`, borrowed from it, replaced by `new`.
    fn splice(text: &str, old: &str, new: &str) -> String {
        let at = old.as_ptr() as usize - text.as_ptr() as usize;
        let mut out = String::with_capacity(text.len() + new.len());
        out.push_str(&text[..at]);
        out.push_str(new);
        out.push_str(&text[at + old.len()..]);
        out
    }

    async fn serve(relay: Arc<Relay>, tcp: tokio::net::TcpStream) {
        // Like the hub, the relay sets TCP_NODELAY on what it accepts.
        let _ = tcp.set_nodelay(true);
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let (mut sink, mut stream) = ws.split();
        let hello = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => break t,
                Some(Ok(_)) => continue,
                _ => return,
            }
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(hello.as_str()) else {
            return;
        };
        let Ok(hello) = serde_json::from_str::<Hello<'_>>(frame.payload.get()) else {
            return;
        };
        let me = relay.next_peer.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        {
            let mut state = relay.state.lock().unwrap();
            state.peers.insert(me, tx);
            for op in &hello.operations {
                let id = format!("{}.{}", op.namespace, op.name);
                state.providers.entry(id).or_default().0.push(me);
            }
        }
        if sink
            .send(Message::text(r#"{"type":"welcome","payload":{}}"#))
            .await
            .is_err()
        {
            return leave(&relay, me);
        }
        // Writes queued frames together and flushes once, as the hub does.
        tokio::spawn(async move {
            while let Some(mut frame) = rx.recv().await {
                loop {
                    if sink.feed(Message::text(frame)).await.is_err() {
                        return;
                    }
                    match rx.try_recv() {
                        Ok(next) => frame = next,
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                handle(&relay, me, text.as_str());
            }
        }
        leave(&relay, me);
    }

    fn leave(relay: &Relay, me: u64) {
        let mut state = relay.state.lock().unwrap();
        state.peers.remove(&me);
        for (providers, _) in state.providers.values_mut() {
            providers.retain(|p| *p != me);
        }
    }

    fn handle(relay: &Relay, me: u64, text: &str) {
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
            return;
        };
        let Ok(call) = serde_json::from_str::<Call<'_>>(frame.payload.get()) else {
            return;
        };
        match frame.kind {
            "call.requested" => {
                let operation = call.operation_id.unwrap_or_default();
                let id = relay.next_call.fetch_add(1, Ordering::Relaxed);
                let mut state = relay.state.lock().unwrap();
                let provider = state.providers.get_mut(operation).and_then(|(p, next)| {
                    let pick = *p.get(*next % p.len().max(1))?;
                    *next = next.wrapping_add(1);
                    Some(pick)
                });
                let Some(tx) = provider.and_then(|p| state.peers.get(&p)).cloned() else {
                    let error = format!(
                        r#"{{"type":"call.error","payload":{{"requestId":{},"code":"NO_PROVIDER","message":"no provider"}}}}"#,
                        serde_json::to_string(call.request_id).unwrap()
                    );
                    if let Some(me) = state.peers.get(&me) {
                        let _ = me.send(error);
                    }
                    return;
                };
                state.pending.insert(id, (me, call.request_id.to_owned()));
                drop(state);
                let _ = tx.send(splice(text, call.request_id, &format!("n{id}")));
            }
            "call.responded" | "call.error" => {
                let Some(id) = call
                    .request_id
                    .strip_prefix('n')
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    return;
                };
                let mut state = relay.state.lock().unwrap();
                let Some((caller, original)) = state.pending.remove(&id) else {
                    return;
                };
                let Some(tx) = state.peers.get(&caller).cloned() else {
                    return;
                };
                drop(state);
                let _ = tx.send(splice(text, call.request_id, &original));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() {
    let secs: u64 = env_or("VERSUS_SECS", 5);
    let rounds: usize = env_or("VERSUS_ROUNDS", 1).max(1);
    let warmup = Duration::from_millis(env_or("VERSUS_WARMUP_MS", 1000));
    let run = Duration::from_secs(secs);

    let binary = std::env::var("VERSUS_NATS_SERVER").unwrap_or_else(|_| NatsServer::binary());
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let nats = NatsServer::start_binary(&binary);
    let nats_client = nats_system(&nats.url()).await;

    let (hub, hub_url, hub_token, _dir) = support::echo_hub(Config::default(), PROVIDERS).await;

    let (relay, relay_addr) = relay::start().await;
    let relay_url = format!("ws://{relay_addr}/");
    for _ in 0..PROVIDERS {
        tokio::spawn(support::provider(relay_url.clone(), "relay".into()));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.providers(SUBJECT) < PROVIDERS {
        assert!(
            Instant::now() < deadline,
            "the relay's spokes did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut targets = [
        Target::Nats(nats_client),
        Target::Ws {
            url: hub_url,
            token: hub_token,
            ws: None,
        },
        Target::Ws {
            url: relay_url,
            token: "relay".into(),
            ws: None,
        },
    ];
    // samples[system][c] over the rounds
    let mut samples: Vec<Vec<Vec<Sample>>> = (0..SYSTEMS.len())
        .map(|_| CONCURRENCY.iter().map(|_| Vec::new()).collect())
        .collect();

    println!(
        "versus: {PROVIDERS} echo responders per system, {}-byte JSON input, C calls in flight over one client connection",
        support::INPUT.len()
    );
    println!(
        "        {secs} s per run after {} ms warm-up, {rounds} round(s); nats: {version}",
        warmup.as_millis()
    );
    println!(
        "{:>5} {:>4}  {:<6} {:>10} {:>9} {:>9} {:>9}",
        "round", "C", "system", "calls/s", "p50 µs", "p99 µs", "max µs"
    );
    for round in 1..=rounds {
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            for (si, target) in targets.iter_mut().enumerate() {
                target.connect().await;
                target.run(c, warmup).await;
                let sample = target.run(c, run).await;
                let s = stats([&sample]);
                println!(
                    "{round:>5} {c:>4}  {:<6} {:>10.0} {:>9} {:>9} {:>9}",
                    SYSTEMS[si], s.rate, s.p50, s.p99, s.max
                );
                samples[si][ci].push(sample);
            }
        }
    }

    let summary: Vec<Vec<Stats>> = samples
        .iter()
        .map(|per_c| per_c.iter().map(stats).collect())
        .collect();
    if rounds > 1 {
        println!();
        println!("all {rounds} rounds pooled");
        println!(
            "{:>5} {:>4}  {:<6} {:>10} {:>9} {:>9} {:>9}",
            "", "C", "system", "calls/s", "p50 µs", "p99 µs", "max µs"
        );
        for (ci, &c) in CONCURRENCY.iter().enumerate() {
            for (si, system) in SYSTEMS.iter().enumerate() {
                let s = &summary[si][ci];
                println!(
                    "{:>5} {c:>4}  {system:<6} {:>10.0} {:>9} {:>9} {:>9}",
                    "", s.rate, s.p50, s.p99, s.max
                );
            }
        }
    }

    println!();
    println!(
        "ratios hub/nats and hub/relay (calls/s below 1 and latency above 1: the hub is slower)"
    );
    println!(
        "{:>4}  {:>9} {:>9}  {:>9} {:>9}  {:>9} {:>9}",
        "C", "calls/s", "", "p50", "", "p99", ""
    );
    println!(
        "{:>4}  {:>9} {:>9}  {:>9} {:>9}  {:>9} {:>9}",
        "", "/nats", "/relay", "/nats", "/relay", "/nats", "/relay"
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    for (ci, &c) in CONCURRENCY.iter().enumerate() {
        let (n, h, r) = (&summary[0][ci], &summary[1][ci], &summary[2][ci]);
        println!(
            "{c:>4}  {:>9.2} {:>9.2}  {:>9.2} {:>9.2}  {:>9.2} {:>9.2}",
            ratio(h.rate, n.rate),
            ratio(h.rate, r.rate),
            ratio(h.p50.into(), n.p50.into()),
            ratio(h.p50.into(), r.p50.into()),
            ratio(h.p99.into(), n.p99.into()),
            ratio(h.p99.into(), r.p99.into()),
        );
    }

    drop(targets);
    hub.shutdown().await.unwrap();
    drop(nats);
}
