//! End-to-end throughput and latency of the hub over loopback WebSocket.
//!
//! P echo providers and C concurrent callers (C calls in flight at all
//! times, spread over a few client connections) call `bench.echo` with a
//! ~100-byte JSON input. Prints calls per second and p50/p99 latency in
//! microseconds for each C. Run with:
//!
//! ```sh
//! cargo bench --bench throughput
//! ```
//! Environment: `BENCH_SECS` (per run, default 3), `BENCH_PROVIDERS` (default 2).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alkhub::config::Config;
use alkhub::protocol::PrincipalKind;
use alkhub::store::NewPrincipal;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    #[serde(borrow)]
    request_id: &'a str,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str, operations: serde_json::Value) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello =
        serde_json::json!({"type": "hello", "payload": {"token": token, "operations": operations}});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            if t.contains("\"welcome\"") {
                return ws;
            }
            panic!("unexpected answer to hello: {t}");
        }
    }
}

/// An echo provider that answers every call with its input as `data`.
async fn provider(url: String, token: String) {
    let ops = serde_json::json!([{"namespace": "bench", "name": "echo", "type": "query"}]);
    let ws = connect(&url, &token, ops).await;
    let (mut sink, mut stream) = ws.split();
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
            continue;
        };
        if frame.kind != "call.requested" {
            continue;
        }
        let p: Payload<'_> = serde_json::from_str(frame.payload.get()).unwrap();
        let input = p.input.map(|i| i.get()).unwrap_or("null");
        let reply = format!(
            r#"{{"type":"call.responded","payload":{{"requestId":"{}","output":{{"data":{input}}}}}}}"#,
            p.request_id
        );
        if sink.send(Message::text(reply)).await.is_err() {
            return;
        }
    }
}

/// Keeps `depth` calls in flight on one connection until `stop`; returns latencies.
async fn caller(url: String, token: String, depth: usize, stop: Arc<AtomicBool>) -> Vec<u32> {
    let ws = connect(&url, &token, serde_json::json!([])).await;
    let (mut sink, mut stream) = ws.split();
    let input = r#"{"user":"user-42","path":"/srv/data/report.txt","offset":1024,"length":4096,"flags":["a","b"]}"#;
    let mut started = std::collections::HashMap::with_capacity(depth * 2);
    let mut next = 0u64;
    let mut latencies = Vec::with_capacity(1 << 20);
    let request = |id: u64| {
        format!(
            r#"{{"type":"call.requested","payload":{{"requestId":"r{id}","operationId":"bench.echo","input":{input}}}}}"#
        )
    };
    for _ in 0..depth {
        started.insert(next, Instant::now());
        sink.feed(Message::text(request(next))).await.unwrap();
        next += 1;
    }
    sink.flush().await.unwrap();
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Frame<'_> = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(frame.kind, "call.responded", "{text}");
        let p: Payload<'_> = serde_json::from_str(frame.payload.get()).unwrap();
        let id: u64 = p.request_id[1..].parse().unwrap();
        if let Some(at) = started.remove(&id) {
            latencies.push(at.elapsed().as_micros() as u32);
        }
        if stop.load(Ordering::Relaxed) {
            if started.is_empty() {
                break;
            }
            continue;
        }
        started.insert(next, Instant::now());
        sink.send(Message::text(request(next))).await.unwrap();
        next += 1;
    }
    latencies
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let providers: usize = std::env::var("BENCH_PROVIDERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.log.level = "warn".into();
    alkhub::telemetry::init(&config.log);
    let running = alkhub::server::start(config).await.unwrap();
    let store = running.hub().store().clone();
    let spoke_url = format!("ws://{}/v1/spokes/connect", running.addr);
    let client_url = format!("ws://{}/v1/clients/connect", running.addr);
    for i in 0..providers {
        let new = NewPrincipal {
            id: format!("echo-{i}"),
            ..Default::default()
        };
        let token = store
            .create_principal(PrincipalKind::Spoke, &new)
            .await
            .unwrap()
            .1;
        tokio::spawn(provider(spoke_url.clone(), token.expose().to_owned()));
    }
    let new = NewPrincipal {
        id: "bench".into(),
        ..Default::default()
    };
    let client_token = store
        .create_principal(PrincipalKind::Client, &new)
        .await
        .unwrap()
        .1
        .expose()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;

    println!("alkhub end-to-end: {providers} echo providers, ~100-byte input, {secs} s per run");
    println!(
        "{:>4} {:>12} {:>10} {:>10}",
        "C", "calls/s", "p50 µs", "p99 µs"
    );
    for concurrency in [1usize, 16, 64] {
        let connections = concurrency.min(4);
        let stop = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|i| {
                let depth = concurrency / connections + usize::from(i < concurrency % connections);
                tokio::spawn(caller(
                    client_url.clone(),
                    client_token.clone(),
                    depth,
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = began.elapsed().as_secs_f64();
        all.sort_unstable();
        println!(
            "{concurrency:>4} {:>12.0} {:>10} {:>10}",
            all.len() as f64 / elapsed,
            percentile(&all, 0.50),
            percentile(&all, 0.99)
        );
    }
    running.shutdown().await.unwrap();
}
