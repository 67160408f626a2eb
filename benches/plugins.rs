//! What WebAssembly routing costs.
//!
//! 1. One routing decision of each shipped routing plugin among three
//!    candidates, on a warm instance and on a new instance per decision.
//! 2. What `call-details` reads cost: a router reading one metadata key and
//!    one label of each candidate, one read per candidate (0.2.0) against
//!    the batch reads of 0.3.0, among 3 and 32 candidates. Once as a WAT
//!    router (no guest runtime, a bump allocator: the host's share), once
//!    as a Rust router built from `benches/guests/label-pin` (what an
//!    author's plugin pays; built when Debian's Rust toolchain for wasm is
//!    installed, see `templates/plugin/rust/build.sh`).
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
// Shared with the tests, which use more of it.
#[allow(dead_code)]
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
        let warm = alkhub::plugins::measure_routing(&bytes, settings, n_warm, true, 3).unwrap();
        let fresh = alkhub::plugins::measure_routing(&bytes, settings, n_new, false, 3).unwrap();
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

/// What reading the call's strings through `call-details` costs: a WAT
/// router (no guest language runtime, a bump allocator) that reads the
/// call's `region` metadata and the `region` label of every candidate,
/// in the three ways the versions offer, against the same router reading
/// nothing; among 3 and 32 candidates.
fn call_details_cost() {
    // One `provider-label` read per candidate (0.2.0).
    let per_candidate = |v: &str| {
        (
            format!(
                r#"(import "alkdev:hub/call-details@{v}" "metadata" (func $metadata (param i32 i32 i32)))
                   (import "alkdev:hub/call-details@{v}" "provider-label" (func $label (param i32 i32 i32 i32)))"#
            ),
            r#"(call $metadata (i32.const 512) (i32.const 6) (i32.const 64))
               (block $done (loop $next
                 (br_if $done (i32.ge_u (local.get $i) (local.get 5)))
                 (call $label (local.get $i) (i32.const 512) (i32.const 6) (i32.const 80))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br $next)))"#
                .to_owned(),
        )
    };
    // Every candidate's label in one read (0.3.0).
    let label_all = (
        r#"(import "alkdev:hub/call-details@0.3.0" "metadata" (func $metadata (param i32 i32 i32)))
           (import "alkdev:hub/call-details@0.3.0" "provider-label-all" (func $label_all (param i32 i32 i32)))"#
            .to_owned(),
        r#"(call $metadata (i32.const 512) (i32.const 6) (i32.const 64))
           (call $label_all (i32.const 512) (i32.const 6) (i32.const 80))"#
            .to_owned(),
    );
    // The comparison made by the hub (0.3.0).
    let with_label = (
        r#"(import "alkdev:hub/call-details@0.3.0" "metadata" (func $metadata (param i32 i32 i32)))
           (import "alkdev:hub/call-details@0.3.0" "candidates-with-label" (func $with_label (param i32 i32 i32 i32 i32)))"#
            .to_owned(),
        r#"(call $metadata (i32.const 512) (i32.const 6) (i32.const 64))
           (call $with_label (i32.const 512) (i32.const 6)
                 (i32.load (i32.const 68)) (i32.load (i32.const 72)) (i32.const 80))"#
            .to_owned(),
    );
    let rows = [
        ("reads nothing", "0.3.0", (String::new(), String::new())),
        ("0.2.0 one read each", "0.2.0", per_candidate("0.2.0")),
        ("0.3.0 provider-label-all", "0.3.0", label_all),
        ("0.3.0 candidates-with-label", "0.3.0", with_label),
    ];
    println!();
    println!("call-details: metadata + every candidate's label, WAT router (mean, warm)");
    println!("{:<28} {:>14} {:>14}", "reads", "3 cand. µs", "32 cand. µs");
    for (what, version, (imports, body)) in &rows {
        let component = details_router(version, imports, body);
        print_among_3_and_32(what, &component, 100_000);
    }

    println!();
    println!(
        "call-details: the same policy as a Rust router (benches/guests/label-pin; mean, warm)"
    );
    for (what, feature) in [
        ("0.2.0 one read each", None),
        ("0.3.0 provider-label-all", Some("label-all")),
        ("0.3.0 candidates-with-label", Some("with-label")),
    ] {
        match rust_guest(feature) {
            Some(component) => print_among_3_and_32(what, &component, 50_000),
            None => println!("{what:<28} (not built: Debian's Rust toolchain for wasm is missing)"),
        }
    }
}

/// Prints the mean warm decision of `component` among 3 and among 32
/// candidates, over `n` decisions each.
fn print_among_3_and_32(what: &str, component: &[u8], n: u32) {
    let figures: Vec<f64> = [3, 32]
        .into_iter()
        .map(|among| {
            let mean = alkhub::plugins::measure_routing(component, "{}", n, true, among).unwrap();
            mean.as_secs_f64() * 1e6
        })
        .collect();
    println!("{what:<28} {:>14.3} {:>14.3}", figures[0], figures[1]);
}

/// Builds `benches/guests/label-pin` with Debian's Rust toolchain for wasm
/// (against 0.3.0 with `feature`, else 0.2.0); `None` when it is missing.
fn rust_guest(feature: Option<&str>) -> Option<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/bench-guests");
    let mut cargo = std::process::Command::new("/usr/bin/cargo");
    cargo
        .current_dir(root.join("benches/guests/label-pin"))
        .args(["build", "--release", "--locked", "--quiet"])
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTDOC", "/usr/bin/rustdoc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target)
        .env(
            "RUSTFLAGS",
            "-C link-arg=--wasm-ld-path=/usr/lib/llvm-22/bin/wasm-ld",
        );
    if let Some(feature) = feature {
        cargo.arg(format!("--features={feature}"));
    }
    if !cargo.status().ok()?.success() {
        return None;
    }
    std::fs::read(target.join("wasm32-unknown-unknown/release/label_pin.wasm")).ok()
}

/// A routing component of alkdev:hub@`version` importing `imports` and
/// choosing candidate 0 after running `body`.
fn details_router(version: &str, imports: &str, body: &str) -> Vec<u8> {
    let allocator = wat_component::BUMP_ALLOCATOR;
    let wat = format!(
        r#"(module
          {imports}
          {allocator}
          (data (i32.const 512) "region")
          (func (export "alkdev:hub/routing@{version}#choose")
            (param i32 i32 i32 i64 i32 i32) (result i32)
            (local $i i32)
            {body}
            (i32.store8 (i32.const 16) (i32.const 0))
            (i32.store (i32.const 20) (i32.const 0))
            (i32.const 16))
          (func (export "cabi_post_alkdev:hub/routing@{version}#choose") (param i32)
            (global.set $heap (i32.const 1024)))
        )"#
    );
    let wit = match version {
        "0.3.0" => "wit/hub.wit".to_owned(),
        older => format!("wit/{older}/hub.wit"),
    };
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_file(Path::new(env!("CARGO_MANIFEST_DIR")).join(wit))
        .unwrap();
    wat_component::componentize(&wat, &resolve, package, "routing-plugin")
}
