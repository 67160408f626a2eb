//! A call through a remote node against the same call on one node, in one
//! run.
//!
//! Two hub nodes run in this process, on a new PostgreSQL database and a
//! `nats-server` of the bench's own (free loopback port). One echo provider
//! (the raw-protocol spoke of `support`) is connected to node A. The
//! **local** runs call it from a client on node A. The **remote** runs call
//! it from a client on node B, so every call goes B → NATS → A → provider
//! and back. At each C (1, 16, 64 calls in flight) the two take turns, each
//! warmed up first. Prints calls/s, p50 and p99 in microseconds, and the
//! ratios remote/local. Run with:
//!
//! ```sh
//! cargo bench --bench cluster
//! ```
//! Environment: `CLUSTER_SECS` (per measured run, default 5),
//! `ALKHUB_TEST_POSTGRES_URL` (the server; a database is created and dropped),
//! `ALKHUB_NATS_SERVER` (the NATS binary).

#[path = "hub_process/mod.rs"]
mod hub_process;
mod support;

use std::str::FromStr;
use std::time::{Duration, Instant};

use alkhub::config::Config;
use alkhub::peer::PeerBuilder;
use alkhub::protocol::PrincipalKind;
use alkhub::store::NewPrincipal;
use sqlx::{ConnectOptions, Connection};

/// The allocator the `alkhub` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn node_config(database_url: &str, nats_url: &str, dir: &std::path::Path, name: &str) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = database_url.to_owned();
    config.plugins.dir = dir.join("plugins");
    config.plugins.cache_dir = dir.join("cache");
    config.log.level = "warn".into();
    // One client principal makes every call: measure the relay, not the rate limit.
    config.limits.calls_per_second_per_principal = 0;
    config.cluster.nats_url = nats_url.to_owned();
    config.cluster.node_name = name.to_owned();
    config
}

#[tokio::main]
async fn main() {
    let secs: u64 = env_or("CLUSTER_SECS", 5);
    let base = std::env::var("ALKHUB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options = sqlx::postgres::PgConnectOptions::from_str(&base).unwrap();
    let mut admin = options.connect().await.expect("PostgreSQL answers");
    let name = alkhub::crypto::random_id("alkhub_bench_");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let database_url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("ALKHUB_TEST_POSTGRES_URL has no database name: {base}"),
    };
    let nats = hub_process::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config_a = node_config(&database_url, &nats.url(), &dir.path().join("a"), "a");
    alkhub::telemetry::init(&config_a.log);
    let a = alkhub::server::start(config_a).await.unwrap();
    let b = alkhub::server::start(node_config(
        &database_url,
        &nats.url(),
        &dir.path().join("b"),
        "b",
    ))
    .await
    .unwrap();

    let store = a.hub().store().clone();
    let principal = |id: &str| NewPrincipal {
        id: id.to_owned(),
        ..Default::default()
    };
    let spoke_token = store
        .create_principal(PrincipalKind::Spoke, &principal("echo"))
        .await
        .unwrap()
        .1;
    let client_token = store
        .create_principal(PrincipalKind::Client, &principal("bench"))
        .await
        .unwrap()
        .1
        .expose()
        .to_owned();
    tokio::spawn(support::provider(
        format!("ws://{}/v1/spokes/connect", a.addr),
        spoke_token.expose().to_owned(),
    ));
    let local_url = format!("ws://{}/v1/clients/connect", a.addr);
    let remote_url = format!("ws://{}/v1/clients/connect", b.addr);
    // Both nodes serve bench.echo before anything is measured.
    for url in [&local_url, &remote_url] {
        let client = PeerBuilder::new(url.as_str(), client_token.as_str())
            .connect()
            .await
            .unwrap();
        let started = Instant::now();
        while client
            .call("bench.echo", serde_json::json!({}))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "bench.echo never became callable through {url}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    println!(
        "cluster: one echo provider on node A, {}-byte JSON input, C calls in flight; local = client on A, remote = client on B ({secs} s per run)",
        support::INPUT.len()
    );
    println!(
        "{:>3} {:>7} {:>10} {:>8} {:>8}",
        "C", "path", "calls/s", "p50 µs", "p99 µs"
    );
    let mut ratios = Vec::new();
    for c in CONCURRENCY {
        let mut results = Vec::new();
        for (path, url) in [("local", &local_url), ("remote", &remote_url)] {
            support::measure(url, &client_token, c, 1).await;
            let (rate, p50, p99) = support::measure(url, &client_token, c, secs).await;
            println!("{c:>3} {path:>7} {rate:>10.0} {p50:>8} {p99:>8}");
            results.push((rate, p50, p99));
        }
        let (local, remote) = (results[0], results[1]);
        ratios.push((
            c,
            remote.0 / local.0,
            f64::from(remote.1) / f64::from(local.1.max(1)),
            f64::from(remote.2) / f64::from(local.2.max(1)),
        ));
    }
    println!("remote/local: calls/s, p50, p99");
    for (c, rate, p50, p99) in ratios {
        println!("C={c:<3} {rate:.2}x {p50:.2}x {p99:.2}x");
    }

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    drop(nats);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}
