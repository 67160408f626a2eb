//! The load generator shared by the benchmarks: echo providers and callers
//! over loopback WebSocket, speaking the wire protocol directly so that the
//! generator costs as little as possible.
#![allow(dead_code)]

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

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str, operations: serde_json::Value) -> Ws {
    // TCP_NODELAY, as the peer library and the hub set it: small frames go
    // out at once instead of waiting for Nagle's algorithm.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap();
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

/// The input of every benchmark call: about 100 bytes of JSON.
pub const INPUT: &str = r#"{"user":"user-42","path":"/srv/data/report.txt","offset":1024,"length":4096,"flags":["a","b"]}"#;

/// An echo provider that answers every call with its input as `data`.
pub async fn provider(url: String, token: String) {
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
pub async fn caller(url: String, token: String, depth: usize, stop: Arc<AtomicBool>) -> Vec<u32> {
    let mut ws = client(&url, &token).await;
    caller_on(&mut ws, depth, stop).await
}

/// A client connection that has sent `hello` and received `welcome`.
pub async fn client(url: &str, token: &str) -> Ws {
    connect(url, token, serde_json::json!([])).await
}

/// Keeps `depth` calls in flight on `ws` until `stop`, then waits for the
/// calls still open; returns their latencies. The connection is left with
/// no call open, ready for the next run.
pub async fn caller_on(ws: &mut Ws, depth: usize, stop: Arc<AtomicBool>) -> Vec<u32> {
    let (mut sink, mut stream) = ws.split();
    let input = INPUT;
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

pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A hub on a temporary SQLite file with `providers` echo spokes; returns
/// the hub, the client URL and a client token.
pub async fn echo_hub(
    mut config: Config,
    providers: usize,
) -> (
    alkhub::server::RunningHub,
    String,
    String,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.plugins.dir = dir.path().join("plugins");
    config.plugins.cache_dir = dir.path().join("cache");
    config.log.level = "warn".into();
    // One client principal makes every call: measure the relay, not the rate limit.
    config.limits.calls_per_second_per_principal = 0;
    alkhub::telemetry::init(&config.log);
    let running = alkhub::server::start(config).await.unwrap();
    let store = running.hub().store().clone();
    let spoke_url = format!("ws://{}/v1/spokes/connect", running.addr);
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
    let client_url = format!("ws://{}/v1/clients/connect", running.addr);
    (running, client_url, client_token, dir)
}

/// Keeps `concurrency` calls in flight for `secs`; returns calls/s, p50 and p99 in µs.
pub async fn measure(
    client_url: &str,
    token: &str,
    concurrency: usize,
    secs: u64,
) -> (f64, u32, u32) {
    let connections = concurrency.min(4);
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let depth = concurrency / connections + usize::from(i < concurrency % connections);
            tokio::spawn(caller(
                client_url.to_owned(),
                token.to_owned(),
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
    (
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    )
}
