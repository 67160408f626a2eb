//! What WebAssembly routing costs.
//!
//! 1. One routing decision of each shipped routing plugin among three
//!    candidates, on a warm instance and on a new instance per decision.
//! 2. What one `call-details` read costs the host: a WAT router (no guest
//!    runtime, a bump allocator) reading one metadata key and one label of
//!    each candidate, against the same router reading nothing.
//! 3. End-to-end throughput at 64 concurrent callers with two echo providers
//!    (so every call is routed), the default Wasm router against the native
//!    router, alternated in one run and reported as a ratio.
//!
//! ```sh
//! bash plugins/build-others.sh   # the JS, Python and C plugins
//! cargo bench --bench plugins
//! ```
//! Environment: `BENCH_SECS` (per end-to-end run, default 3) and
//! `BENCH_ROUNDS` (end-to-end rounds, each running both routers, default 4).

mod support;
#[path = "../tests/common/wat.rs"]
mod wat_component;

use std::path::Path;

use alkhub::config::Config;

fn component(name: &str) -> Option<Vec<u8>> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("plugins/dist")
            .join(format!("{name}.wasm")),
    )
    .ok()
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("one routing decision among 3 candidates (mean)");
    println!(
        "{:<16} {:>14} {:>18}",
        "plugin", "warm µs", "new instance µs"
    );
    for (name, settings, n_warm, n_new) in [
        ("least-in-flight", "{}", 200_000, 2_000),
        ("round-robin", "{}", 200_000, 2_000),
        ("label-affinity", r#"{"keys":["region"]}"#, 20_000, 200),
        ("sticky", r#"{"key":"affinity"}"#, 20_000, 50),
    ] {
        let Some(bytes) = component(name) else {
            println!("{name:<16} (not built: run plugins/build-others.sh)");
            continue;
        };
        let warm = alkhub::plugins::measure_routing(&bytes, settings, n_warm, true).unwrap();
        let fresh = alkhub::plugins::measure_routing(&bytes, settings, n_new, false).unwrap();
        println!(
            "{name:<16} {:>14.3} {:>18.1}",
            warm.as_secs_f64() * 1e6,
            fresh.as_secs_f64() * 1e6
        );
    }

    call_details_cost();

    println!();
    println!("end to end, 2 echo providers, 64 calls in flight, {secs} s per run");
    let mut wasm_total = 0.0;
    let mut native_total = 0.0;
    let rounds: u32 = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for round in 0..rounds {
        // Alternate which router runs first, so warm-up and drift cancel out.
        let order = if round % 2 == 0 {
            ["least-in-flight", "native"]
        } else {
            ["native", "least-in-flight"]
        };
        for router in order {
            let mut config = Config::default();
            config.plugins.routing = router.to_owned();
            let (running, url, token, _dir) = support::echo_hub(config, 2).await;
            let (rate, p50, p99) = support::measure(&url, &token, 64, secs).await;
            running.shutdown().await.unwrap();
            println!(
                "round {round} {router:<16} {rate:>10.0} calls/s  p50 {p50:>6} µs  p99 {p99:>6} µs"
            );
            if router == "native" {
                native_total += rate;
            } else {
                wasm_total += rate;
            }
        }
    }
    println!(
        "wasm router / native router throughput: {:.3}",
        wasm_total / native_total
    );
}

/// What reading the call's strings through `call-details` costs the host: a
/// WAT router (no guest language runtime, a bump allocator) that reads one
/// metadata key and one label of each of the 3 candidates, against the same
/// router reading nothing.
fn call_details_cost() {
    let reads = r#"
        (call $metadata (i32.const 512) (i32.const 6) (i32.const 64))
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get 5)))
          (call $label (local.get $i) (i32.const 512) (i32.const 6) (i32.const 80))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))"#;
    println!();
    println!("call-details reads, WAT router, 3 candidates (mean, warm)");
    let mut figures = Vec::new();
    for (what, body) in [("reads nothing", ""), ("1 metadata + 3 labels", reads)] {
        let component = details_router(body);
        let mean = alkhub::plugins::measure_routing(&component, "{}", 200_000, true).unwrap();
        let us = mean.as_secs_f64() * 1e6;
        println!("{what:<24} {us:>8.3} µs");
        figures.push(us);
    }
    println!(
        "each call-details read: {:.3} µs",
        (figures[1] - figures[0]) / 4.0
    );
}

/// A 0.2.0 routing component choosing candidate 0 after running `body`.
fn details_router(body: &str) -> Vec<u8> {
    let allocator = wat_component::BUMP_ALLOCATOR;
    let wat = format!(
        r#"(module
          (import "alkdev:hub/call-details@0.2.0" "metadata" (func $metadata (param i32 i32 i32)))
          (import "alkdev:hub/call-details@0.2.0" "provider-label" (func $label (param i32 i32 i32 i32)))
          {allocator}
          (data (i32.const 512) "region")
          (func (export "alkdev:hub/routing@0.2.0#choose")
            (param i32 i32 i32 i64 i32 i32) (result i32)
            (local $i i32)
            {body}
            (i32.store8 (i32.const 16) (i32.const 0))
            (i32.store (i32.const 20) (i32.const 0))
            (i32.const 16))
          (func (export "cabi_post_alkdev:hub/routing@0.2.0#choose") (param i32)
            (global.set $heap (i32.const 1024)))
        )"#
    );
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/hub.wit"))
        .unwrap();
    wat_component::componentize(&wat, &resolve, package, "routing-plugin")
}
