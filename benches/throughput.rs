//! End-to-end throughput and latency of the hub over loopback WebSocket.
//!
//! P echo providers and C concurrent callers (C calls in flight at all
//! times, spread over a few client connections) call `bench.echo` with a
//! ~100-byte JSON input. Prints calls per second and p50/p99 latency in
//! microseconds for each C, with the default (WebAssembly) router; then the
//! throughput at C=64 with `[metrics]` on against off, as a ratio. Run with:
//!
//! ```sh
//! cargo bench --bench throughput
//! ```
//! Environment: `BENCH_SECS` (per run, default 3), `BENCH_PROVIDERS` (default 2).

mod support;

use alkhub::config::Config;

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
    let (running, client_url, token, _dir) = support::echo_hub(Config::default(), providers).await;
    println!("alkhub end-to-end: {providers} echo providers, ~100-byte input, {secs} s per run");
    println!(
        "{:>4} {:>12} {:>10} {:>10}",
        "C", "calls/s", "p50 µs", "p99 µs"
    );
    for concurrency in [1usize, 16, 64] {
        let (rate, p50, p99) = support::measure(&client_url, &token, concurrency, secs).await;
        println!("{concurrency:>4} {rate:>12.0} {p50:>10} {p99:>10}");
    }
    running.shutdown().await.unwrap();

    // What counting calls for /metrics costs: the same hub with metrics on
    // and off, alternated so that warm-up and drift cancel out.
    println!();
    println!("metrics on vs off, C=64, {secs} s per run");
    let (mut on_total, mut off_total) = (0.0, 0.0);
    for round in 0..4 {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for enabled in order {
            let mut config = Config::default();
            config.metrics.enabled = enabled;
            let (running, url, token, _dir) = support::echo_hub(config, providers).await;
            let (rate, p50, p99) = support::measure(&url, &token, 64, secs).await;
            running.shutdown().await.unwrap();
            let label = if enabled { "on" } else { "off" };
            println!("round {round} metrics {label:<3} {rate:>10.0} calls/s  p50 {p50:>6} µs  p99 {p99:>6} µs");
            if enabled {
                on_total += rate;
            } else {
                off_total += rate;
            }
        }
    }
    println!(
        "throughput with metrics / without: {:.3}",
        on_total / off_total
    );
}
