//! WebAssembly plugins through a real hub: the shipped policies, misbehaving
//! components built here from WAT, hot reload and the compile cache.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alkhub::config::{OnFailure, RouteRule};
use alkhub::peer::{spec, CallOptions, Peer};
use alkhub::protocol::{OperationType, PrincipalKind};
use common::{eventually, hub_with, TestHub};
use serde_json::{json, Value};

/// A shipped component built from `plugins/<name>/` into `plugins/dist/`.
fn shipped(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (bash plugins/build-others.sh; scripts/test does)",
        path.display()
    );
    path
}

fn install(hub_plugins: &Path, component: &Path, as_name: &str) {
    std::fs::copy(component, hub_plugins.join(format!("{as_name}.wasm"))).unwrap();
}

/// A hub whose plugins folder holds `files` before it starts, and whose
/// operations matching `work.*` route through `router`.
async fn hub_routing(router: &str, files: &[(&str, PathBuf)], settings: Value) -> TestHub {
    let router = router.to_owned();
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in files {
        install(dir.path(), path, name);
    }
    let hub = hub_with(move |c| {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), c.plugins.dir.join(entry.file_name())).unwrap();
        }
        c.plugins.route.push(RouteRule {
            pattern: "work.*".into(),
            plugin: router.clone(),
        });
        if !settings.is_null() {
            c.plugins
                .settings
                .insert(router.clone(), serde_json::from_value(settings).unwrap());
        }
    })
    .await;
    hub
}

/// A spoke `id` (with `labels`) serving `work.job`, recording who served each call.
async fn worker(
    hub: &TestHub,
    id: &str,
    labels: &[(&str, &str)],
    log: Arc<Mutex<Vec<String>>>,
    delay_ms: u64,
) -> Peer {
    let who = id.to_owned();
    let mut builder = hub.spoke(id).await;
    for (k, v) in labels {
        builder = builder.label(*k, *v);
    }
    builder
        .operation(spec("work", "job", OperationType::Query), move |_| {
            log.lock().unwrap().push(who.clone());
            let who = who.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(json!(who))
            }
        })
        .connect()
        .await
        .unwrap()
}

async fn call_with_meta(client: &Peer, meta: &[(&str, &str)]) -> Result<String, String> {
    let options = CallOptions {
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    client
        .call_with("work.job", Value::Null, options)
        .await
        .map(|out| out["data"].as_str().unwrap().to_owned())
        .map_err(|e| format!("{}: {}", e.code, e.message))
}

async fn plugins_status(hub: &TestHub, token: &str) -> Value {
    let r = hub.http("GET", "/v1/plugins", Some(token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn plugin<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {status}"))
}

#[tokio::test]
async fn the_default_wasm_router_avoids_a_busy_provider() {
    let hub = hub_routing("least-in-flight", &[], Value::Null).await;
    let log = Arc::<Mutex<Vec<String>>>::default();
    let _slow = worker(&hub, "slow", &[], log.clone(), 2_000).await;
    let _fast = worker(&hub, "fast", &[], log.clone(), 0).await;
    let client = hub.client("app", &[]).await;
    // Occupy one provider with a long call, whichever it is.
    let first = tokio::spawn({
        let client = client.clone();
        async move { call_with_meta(&client, &[]).await }
    });
    eventually("a call in flight", || async {
        !log.lock().unwrap().is_empty()
    })
    .await;
    let busy = log.lock().unwrap()[0].clone();
    for _ in 0..6 {
        call_with_meta(&client, &[]).await.unwrap_or_default();
    }
    {
        let log = log.lock().unwrap();
        assert!(
            log[1..].iter().all(|who| *who != busy),
            "calls went to the busy provider {busy}: {log:?}"
        );
    }
    assert_eq!(first.await.unwrap().unwrap(), busy);
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let router = plugin(&status, "least-in-flight");
    assert_eq!(
        (router["world"].clone(), router["source"].clone()),
        (json!("routing"), json!("embedded"))
    );
    assert!(router["decisions"].as_u64().unwrap() >= 6, "{router}");
    assert_eq!(router["failures"], 0);
}

#[tokio::test]
async fn the_remap_rules_yield_the_configured_ids_and_refusals_carry_their_reason() {
    let hub = hub_with(|c| {
        c.plugins.settings.insert(
            "rule-remap".into(),
            toml::from_str(
                r#"
                per_spoke_namespaces = ["dev"]
                deny = ["legacy"]
                rename = { "tools.old" = "tools.current" }
                prefixes = [{ from = "acme.v1", to = "acme" }]
                "#,
            )
            .unwrap(),
        );
    })
    .await;
    let peer = hub
        .spoke("devbox")
        .await
        .operation(spec("dev.fs", "read", OperationType::Query), |_| async {
            Ok(json!(1))
        })
        .operation(spec("tools", "old", OperationType::Query), |_| async {
            Ok(json!(2))
        })
        .operation(
            spec("acme.v1.billing", "charge", OperationType::Mutation),
            |_| async { Ok(json!(3)) },
        )
        .operation(spec("chat", "complete", OperationType::Query), |_| async {
            Ok(json!(4))
        })
        .operation(spec("legacy.x", "y", OperationType::Query), |_| async {
            Ok(json!(5))
        })
        .connect()
        .await
        .unwrap();
    let welcome = peer.welcome();
    let ids: Vec<(String, String)> = welcome
        .registrations
        .iter()
        .map(|r| (r.pre_remap_id.clone(), r.operation_id.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            ("dev.fs.read".to_owned(), "dev.devbox.fs.read".to_owned()),
            ("tools.old".to_owned(), "tools.current".to_owned()),
            (
                "acme.v1.billing.charge".to_owned(),
                "acme.billing.charge".to_owned()
            ),
            ("chat.complete".to_owned(), "chat.complete".to_owned()),
        ]
    );
    assert_eq!(welcome.rejected.len(), 1);
    assert_eq!(welcome.rejected[0].operation_id, "legacy.x.y");
    assert!(
        welcome.rejected[0]
            .message
            .contains("legacy is not accepted"),
        "{}",
        welcome.rejected[0].message
    );
    let client = hub.client("app", &[]).await;
    assert_eq!(
        client
            .call("acme.billing.charge", Value::Null)
            .await
            .unwrap()["data"],
        3
    );
}

#[tokio::test]
async fn affinity_follows_labels() {
    let hub = hub_routing(
        "label-affinity",
        &[("label-affinity", shipped("label-affinity"))],
        json!({"keys": ["region"]}),
    )
    .await;
    let log = Arc::<Mutex<Vec<String>>>::default();
    let _eu = worker(&hub, "eu-1", &[("region", "eu")], log.clone(), 0).await;
    let _us = worker(&hub, "us-1", &[("region", "us")], log.clone(), 0).await;
    let client = hub.client("app", &[]).await;
    for _ in 0..5 {
        assert_eq!(
            call_with_meta(&client, &[("region", "us")]).await.unwrap(),
            "us-1"
        );
        assert_eq!(
            call_with_meta(&client, &[("region", "eu")]).await.unwrap(),
            "eu-1"
        );
    }
}

/// A 0.3.0 routing component (from `wit/hub.wit`) with `imports`, whose
/// `choose` runs `body`. Data: "region" at 512, "no region" at 520, "no
/// match" at 532.
fn wat_router_v3(imports: &str, body: &str) -> Vec<u8> {
    let allocator = common::wat::BUMP_ALLOCATOR;
    let wat = format!(
        r#"(module
          {imports}
          {allocator}
          (data (i32.const 512) "region")
          (data (i32.const 520) "no region")
          (data (i32.const 532) "no match")
          (func (export "alkdev:hub/routing@0.3.0#choose")
            (param i32 i32 i32 i64 i32 i32) (result i32)
            (local $i i32)
            {body})
          (func (export "cabi_post_alkdev:hub/routing@0.3.0#choose") (param i32)
            (global.set $heap (i32.const 1024)))
        )"#
    );
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/hub.wit"))
        .unwrap();
    common::wat::componentize(&wat, &resolve, package, "routing-plugin")
}

/// `refuse(reason)`, the reason's bytes at `ptr`.
fn refuse(ptr: u32, len: u32) -> String {
    format!(
        "(i32.store8 (i32.const 16) (i32.const 2)) (i32.store (i32.const 20) (i32.const {ptr})) \
         (i32.store (i32.const 24) (i32.const {len})) (return (i32.const 16))"
    )
}

#[tokio::test]
async fn batch_reads_of_0_3_0_answer_for_every_candidate_in_one_call() {
    // Pins each call to the candidates whose `region` label equals the
    // call's `region` metadata, compared on the hub's side.
    let pin = wat_router_v3(
        r#"(import "alkdev:hub/call-details@0.3.0" "metadata" (func $metadata (param i32 i32 i32)))
           (import "alkdev:hub/call-details@0.3.0" "candidates-with-label" (func $with_label (param i32 i32 i32 i32 i32)))"#,
        &format!(
            "(call $metadata (i32.const 512) (i32.const 6) (i32.const 64))
             (if (i32.eqz (i32.load8_u (i32.const 64))) (then {no_region}))
             (call $with_label (i32.const 512) (i32.const 6)
                   (i32.load (i32.const 68)) (i32.load (i32.const 72)) (i32.const 80))
             (if (i32.eqz (i32.load (i32.const 84))) (then {no_match}))
             (i32.store8 (i32.const 16) (i32.const 0))
             (i32.store (i32.const 20) (i32.load (i32.load (i32.const 80))))
             (i32.const 16)",
            no_region = refuse(520, 9),
            no_match = refuse(532, 8),
        ),
    );
    let hub = routed_hub(pin, Default::default()).await;
    let log = Arc::<Mutex<Vec<String>>>::default();
    let _eu = worker(&hub, "eu-1", &[("region", "eu")], log.clone(), 0).await;
    let _none = worker(&hub, "plain", &[], log.clone(), 0).await;
    let _us = worker(
        &hub,
        "us-1",
        &[("region", "us"), ("zone", "b")],
        log.clone(),
        0,
    )
    .await;
    let client = hub.client("app", &[]).await;
    for _ in 0..3 {
        assert_eq!(
            call_with_meta(&client, &[("region", "us")]).await.unwrap(),
            "us-1"
        );
        assert_eq!(
            call_with_meta(&client, &[("region", "eu")]).await.unwrap(),
            "eu-1"
        );
    }
    let refused = call_with_meta(&client, &[("region", "ap")])
        .await
        .unwrap_err();
    assert!(
        refused.starts_with("ROUTING_ERROR") && refused.contains("no match"),
        "{refused}"
    );
    let refused = call_with_meta(&client, &[]).await.unwrap_err();
    assert!(refused.contains("no region"), "{refused}");

    // Chooses the last candidate that has a `region` label, from one
    // `provider-label-all` read (entries of 12 bytes: tag, pointer, length).
    let last_labelled = wat_router_v3(
        r#"(import "alkdev:hub/call-details@0.3.0" "provider-label-all" (func $label_all (param i32 i32 i32)))"#,
        &format!(
            "(call $label_all (i32.const 512) (i32.const 6) (i32.const 80))
             (if (i32.ne (i32.load (i32.const 84)) (local.get 5)) (then (unreachable)))
             (local.set $i (local.get 5))
             (block $found (loop $back
               (if (i32.eqz (local.get $i)) (then {no_match}))
               (local.set $i (i32.sub (local.get $i) (i32.const 1)))
               (br_if $found (i32.load8_u (i32.add (i32.load (i32.const 80))
                                                   (i32.mul (local.get $i) (i32.const 12)))))
               (br $back)))
             (i32.store8 (i32.const 16) (i32.const 0))
             (i32.store (i32.const 20) (local.get $i))
             (i32.const 16)",
            no_match = refuse(532, 8),
        ),
    );
    let hub = routed_hub(last_labelled, Default::default()).await;
    let _eu = worker(&hub, "eu-1", &[("region", "eu")], log.clone(), 0).await;
    let _none = worker(&hub, "plain", &[], log.clone(), 0).await;
    let client = hub.client("app", &[]).await;
    for _ in 0..3 {
        assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "eu-1");
    }
    let status = plugins_status(&hub, &hub.token(PrincipalKind::Client, "ops", &[]).await).await;
    assert_eq!(plugin(&status, "bad")["witVersion"], "0.3.0");
}

#[tokio::test]
async fn sticky_keeps_keys_on_their_provider_and_moves_only_the_departed_ones() {
    let hub = hub_routing(
        "sticky",
        &[("sticky", shipped("sticky"))],
        json!({"key": "user"}),
    )
    .await;
    let log = Arc::<Mutex<Vec<String>>>::default();
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(worker(&hub, id, &[], log.clone(), 0).await);
    }
    let client = hub.client("app", &[]).await;
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let mut before = std::collections::BTreeMap::new();
    for user in &users {
        let first = call_with_meta(&client, &[("user", user)]).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                call_with_meta(&client, &[("user", user)]).await.unwrap(),
                first,
                "{user} moved"
            );
        }
        before.insert(user.clone(), first);
    }
    let used: std::collections::BTreeSet<_> = before.values().cloned().collect();
    assert_eq!(
        used.len(),
        3,
        "30 keys should spread over 3 providers: {before:?}"
    );

    // w2 leaves: only its keys move.
    let w2 = workers.remove(1);
    w2.close();
    eventually("w2 gone", || async {
        hub.statuses("work.job")
            .await
            .iter()
            .filter(|s| *s == "active")
            .count()
            == 2
    })
    .await;
    for user in &users {
        let now = call_with_meta(&client, &[("user", user)]).await.unwrap();
        if before[user] == "w2" {
            assert_ne!(now, "w2");
        } else {
            assert_eq!(
                now, before[user],
                "{user} moved although its provider stayed"
            );
        }
    }
}

#[tokio::test]
async fn round_robin_cycles() {
    let hub = hub_routing(
        "round-robin",
        &[("round-robin", shipped("round-robin"))],
        Value::Null,
    )
    .await;
    assert_cycles_through_three(&three_workers_serve(&hub, 9).await, "round-robin");
}

/// Three spokes serving `work.job`, then `calls` calls: who served each.
async fn three_workers_serve(hub: &TestHub, calls: usize) -> Vec<String> {
    let log = Arc::<Mutex<Vec<String>>>::default();
    let _a = worker(hub, "a", &[], log.clone(), 0).await;
    let _b = worker(hub, "b", &[], log.clone(), 0).await;
    let _c = worker(hub, "c", &[], log.clone(), 0).await;
    let client = hub.client("app", &[]).await;
    let mut served = Vec::new();
    for _ in 0..calls {
        served.push(call_with_meta(&client, &[]).await.unwrap());
    }
    served
}

/// Every window of three consecutive calls covers all three providers.
fn assert_cycles_through_three(served: &[String], router: &str) {
    for window in served.windows(3) {
        let distinct: std::collections::BTreeSet<_> = window.iter().collect();
        assert_eq!(distinct.len(), 3, "{router}: {served:?}");
    }
}

// ---------------------------------------------------------------------------
// Misbehaving components, built from WAT against the real WIT package. They
// target alkdev:hub@0.1.0 (wit/0.1.0), so they also show that the hub keeps
// running components built against an older version.

/// A routing component (0.1.0) whose `choose` runs `body` (which must leave
/// an i32 pointer to the result on the stack, or never return). The module
/// has a function table `$t` for bodies that grow it.
fn wat_router(body: &str) -> Vec<u8> {
    wat_router_with("", body)
}

/// [`wat_router`] with `imports` (and data segments) before its definitions.
fn wat_router_with(imports: &str, body: &str) -> Vec<u8> {
    let allocator = common::wat::BUMP_ALLOCATOR;
    let wat = format!(
        r#"(module
          {imports}
          {allocator}
          (table $t 1 funcref)
          (func (export "alkdev:hub/routing@0.1.0#choose")
            (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32) (result i32)
            {body})
          (func (export "cabi_post_alkdev:hub/routing@0.1.0#choose") (param i32)
            (global.set $heap (i32.const 1024)))
        )"#
    );
    componentize(&wat, "routing-plugin", None)
}

/// Encodes a WAT core module as a component of `world` (from `wit/0.1.0`,
/// or from `extra_wit` when given).
fn componentize(wat: &str, world: &str, extra_wit: Option<&str>) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let package = match extra_wit {
        Some(text) => resolve.push_str("extra.wit", text).unwrap(),
        None => {
            resolve
                .push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/0.1.0"))
                .unwrap()
                .0
        }
    };
    common::wat::componentize(wat, &resolve, package, world)
}

/// `choose(0)`: the decision variant (tag 0, payload 0) written at address 16.
const CHOOSE_FIRST: &str = "(i32.store8 (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const 0)) (i32.const 16)";
/// Logs `no region label` at `error` through the host, then traps: what a
/// starter's panic hook does before the panic aborts.
const LOGS_THEN_TRAPS: (&str, &str) = (
    r#"(import "alkdev:hub/host@0.1.0" "log" (func $log (param i32 i32 i32)))"#,
    "(call $log (i32.const 4) (i32.const 512) (i32.const 15)) (unreachable)",
);
const INFINITE_LOOP: &str = "(loop $forever (br $forever)) (unreachable)";
const TRAP: &str = "(unreachable)";
/// Grows memory until the limit refuses, then traps as an allocator would.
const MEMORY_HOG: &str = "(block $full (loop $grow (br_if $full (i32.eq (memory.grow (i32.const 64)) (i32.const -1))) (br $grow))) (unreachable)";
/// Grows its table until the limit refuses, then traps.
const TABLE_HOG: &str = "(block $full (loop $grow (br_if $full (i32.eq (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))) (br $grow))) (unreachable)";

async fn misbehaving_hub(body: &str, on_failure: OnFailure) -> TestHub {
    routed_hub(
        wat_router(body),
        alkhub::config::PluginOverrides {
            epoch_deadline_ms: Some(20),
            memory_bytes: Some(4 * 1024 * 1024),
            table_elements: Some(10_000),
            on_failure: Some(on_failure),
            quarantine_after: Some(3),
            quarantine_secs: Some(60),
            ..Default::default()
        },
    )
    .await
}

/// A hub routing `work.*` through `component`, installed as `bad.wasm`
/// with `overrides`.
async fn routed_hub(component: Vec<u8>, overrides: alkhub::config::PluginOverrides) -> TestHub {
    hub_with(move |c| {
        std::fs::write(c.plugins.dir.join("bad.wasm"), &component).unwrap();
        c.plugins.route.push(RouteRule {
            pattern: "work.*".into(),
            plugin: "bad".into(),
        });
        c.plugins.overrides.insert("bad".into(), overrides);
    })
    .await
}

async fn two_workers(hub: &TestHub) -> (Peer, Peer, Peer) {
    let log = Arc::<Mutex<Vec<String>>>::default();
    let a = worker(hub, "a", &[], log.clone(), 0).await;
    let b = worker(hub, "b", &[], log, 0).await;
    (a, b, hub.client("app", &[]).await)
}

#[tokio::test]
async fn a_well_behaved_wat_router_is_used() {
    let hub = misbehaving_hub(CHOOSE_FIRST, OnFailure::Error).await;
    let (_a, _b, client) = two_workers(&hub).await;
    for _ in 0..4 {
        assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "a");
    }
}

#[tokio::test]
async fn misbehaving_routers_cost_their_budget_answer_the_call_and_get_quarantined() {
    for (what, body) in [
        ("infinite loop", INFINITE_LOOP),
        ("trap", TRAP),
        ("memory hog", MEMORY_HOG),
        ("table hog", TABLE_HOG),
    ] {
        // Fail closed: the caller gets ROUTING_ERROR naming the failure.
        let hub = misbehaving_hub(body, OnFailure::Error).await;
        let (_a, _b, client) = two_workers(&hub).await;
        let started = std::time::Instant::now();
        let err = call_with_meta(&client, &[]).await.unwrap_err();
        assert!(err.starts_with("ROUTING_ERROR"), "{what}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} took {:?}",
            started.elapsed()
        );
        for _ in 0..3 {
            call_with_meta(&client, &[]).await.unwrap_err();
        }
        let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
        let status = plugins_status(&hub, &token).await;
        let bad = plugin(&status, "bad");
        assert_eq!(bad["status"], "quarantined", "{what}: {bad}");
        assert_eq!(bad["quarantines"], 1, "{what}: {bad}");
        assert_eq!(
            bad["failures"], 3,
            "{what}: quarantined after 3, then bypassed: {bad}"
        );
        assert_eq!(hub.http("GET", "/healthz", None, None).await.status, 200);

        // Fail open: the call is served by the built-in policy.
        let hub = misbehaving_hub(body, OnFailure::Fallback).await;
        let (_a, _b, client) = two_workers(&hub).await;
        let served = call_with_meta(&client, &[]).await.unwrap();
        assert!(served == "a" || served == "b", "{what}: {served}");
    }
}

#[tokio::test]
async fn the_error_names_why_a_decision_failed() {
    let hub = misbehaving_hub(INFINITE_LOOP, OnFailure::Error).await;
    let (_a, _b, client) = two_workers(&hub).await;
    let err = call_with_meta(&client, &[]).await.unwrap_err();
    assert!(err.contains("epoch_deadline_ms"), "{err}");
    let hub = misbehaving_hub(TRAP, OnFailure::Error).await;
    let (_a, _b, client) = two_workers(&hub).await;
    let err = call_with_meta(&client, &[]).await.unwrap_err();
    assert!(err.contains("trapped (unreachable)"), "{err}");
    assert!(!err.contains("limit"), "{err}");
}

#[tokio::test]
async fn a_failure_quotes_what_the_plugin_logged_on_one_line_without_a_backtrace() {
    let (imports, body) = LOGS_THEN_TRAPS;
    let component = wat_router_with(
        &format!(r#"{imports} (data (i32.const 512) "no region label")"#),
        body,
    );
    let hub = routed_hub(
        component,
        alkhub::config::PluginOverrides {
            on_failure: Some(OnFailure::Error),
            ..Default::default()
        },
    )
    .await;
    let (_a, _b, client) = two_workers(&hub).await;
    let err = call_with_meta(&client, &[]).await.unwrap_err();
    assert!(
        err.starts_with("ROUTING_ERROR")
            && err.contains(
                "the plugin failed: no region label (then: wasm trap: wasm `unreachable`"
            ),
        "{err}"
    );
    assert!(!err.contains('\n') && !err.contains("backtrace"), "{err}");
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    assert_eq!(plugin(&status, "bad")["lastMessage"], "no region label");
}

/// Both hogs end in `unreachable`, exactly like the plain trap: only the
/// limiter knows they hit a limit, and the failure says which.
#[tokio::test]
async fn a_plugin_past_its_memory_or_table_limit_fails_as_that_limit_and_the_hub_carries_on() {
    for (body, limit, key) in [
        (MEMORY_HOG, "memory limit", "memory_bytes = 4194304"),
        (TABLE_HOG, "table limit", "table_elements = 10000"),
    ] {
        let hub = misbehaving_hub(body, OnFailure::Error).await;
        let (_a, _b, client) = two_workers(&hub).await;
        let err = call_with_meta(&client, &[]).await.unwrap_err();
        assert!(err.starts_with("ROUTING_ERROR"), "{err}");
        assert!(err.contains(limit) && err.contains(key), "{err}");
        // The next decision gets a fresh instance and fails the same way:
        // the failed instance was dropped, not reused.
        let again = call_with_meta(&client, &[]).await.unwrap_err();
        assert!(again.contains(key), "{again}");
        let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
        let status = plugins_status(&hub, &token).await;
        assert_eq!(plugin(&status, "bad")["failures"], 2, "{status}");
        assert_eq!(hub.http("GET", "/healthz", None, None).await.status, 200);
    }
}

/// A module that asks for more tables than `tables` allows cannot be
/// instantiated; the decision fails naming the count limits.
#[tokio::test]
async fn a_plugin_creating_more_tables_than_allowed_fails_to_instantiate() {
    let component = wat_router(CHOOSE_FIRST);
    let hub = routed_hub(
        component,
        alkhub::config::PluginOverrides {
            tables: Some(0),
            on_failure: Some(OnFailure::Error),
            ..Default::default()
        },
    )
    .await;
    let (_a, _b, client) = two_workers(&hub).await;
    let err = call_with_meta(&client, &[]).await.unwrap_err();
    assert!(
        err.starts_with("ROUTING_ERROR")
            && err.contains("cannot instantiate within")
            && err.contains("tables = 0"),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_of_the_wrong_world_is_refused_naming_the_missing_export() {
    let wrong = componentize(
        r#"(module (func (export "hello") (result i32) (i32.const 7)))"#,
        "wrong",
        Some("package test:wrong; world wrong { export hello: func() -> u32; }"),
    );
    let hub =
        hub_with(move |c| std::fs::write(c.plugins.dir.join("wrong.wasm"), &wrong).unwrap()).await;
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let wrong = plugin(&status, "wrong");
    assert_eq!(wrong["status"], "failed");
    let error = wrong["error"].as_str().unwrap();
    assert!(error.contains("alkdev:hub/routing@0.3.0"), "{error}");
    assert!(error.contains("hello"), "{error}");

    let file = hub.files.path().join("plugins/wrong.wasm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["plugin", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alkdev:hub/routing@0.3.0"), "{stderr}");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["plugin", "check"])
        .arg(shipped("least-in-flight"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success()
            && stdout.contains("world: routing")
            && stdout.contains("wit: alkdev:hub@0.2.0")
            && stdout.contains("  alkdev:hub/routing@0.2.0"),
        "{stdout}"
    );
    let remap = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["plugin", "check"])
        .arg(shipped("rule-remap"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&remap.stdout);
    assert!(
        stdout.contains("world: remap") && stdout.contains("  alkdev:hub/host@0.2.0"),
        "{stdout}"
    );
}

#[tokio::test]
async fn replacing_the_routing_plugin_changes_routing_without_a_restart() {
    let hub = misbehaving_hub(CHOOSE_FIRST, OnFailure::Error).await;
    let (_a, _b, client) = two_workers(&hub).await;
    assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "a");

    // Choose the second candidate instead.
    let second = wat_router("(i32.store8 (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const 1)) (i32.const 16)");
    let path = hub.files.path().join("plugins/bad.wasm");
    // Written aside and renamed in, as the operator's guide advises: one
    // event, one reload.
    let aside = hub.files.path().join("plugins/bad.wasm.new");
    std::fs::write(&aside, &second).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let mut served = false;
    for _ in 0..400 {
        if call_with_meta(&client, &[]).await.unwrap() == "b" {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        served,
        "the new version never served: {}",
        plugins_status(&hub, &token).await
    );

    // Reading the file to load it is not a change: the hub does not keep
    // reloading it (which would also reset its counters and quarantine).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = plugins_status(&hub, &token).await;
    assert_eq!(status["reloads"], 1, "{status}");

    // Nor is rewriting the same bytes: the version serving keeps its counters.
    let decisions = plugin(&status, "bad")["decisions"].as_u64().unwrap();
    assert!(decisions > 0, "{status}");
    std::fs::write(&path, &second).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = plugins_status(&hub, &token).await;
    assert_eq!(status["reloads"], 1, "{status}");
    assert_eq!(plugin(&status, "bad")["decisions"], decisions, "{status}");

    // A broken replacement leaves the working one serving, its error visible.
    std::fs::write(&path, b"not a component").unwrap();
    eventually("the error is reported", || async {
        plugin(&plugins_status(&hub, &token).await, "bad")["error"]
            .as_str()
            .is_some()
    })
    .await;
    let status = plugins_status(&hub, &token).await;
    let bad = plugin(&status, "bad");
    assert_eq!(bad["status"], "active");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{bad}"
    );
    for _ in 0..3 {
        assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "b");
    }
}

#[tokio::test]
async fn a_rebuild_recording_the_same_source_is_the_same_version() {
    let source = |component: Vec<u8>, record: &[u8]| {
        common::wat::with_custom_section(&component, "alkhub:source", record)
    };
    let first = source(wat_router(CHOOSE_FIRST), b"sha256:one");
    let hub = routed_hub(first.clone(), Default::default()).await;
    let (_a, _b, client) = two_workers(&hub).await;
    assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "a");
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let version = plugin(&status, "bad")["version"].clone();
    assert_eq!(
        version,
        alkhub::plugins::component_digest(&first)[..16],
        "{status}"
    );
    assert_ne!(
        version,
        alkhub::crypto::sha256_hex(&first)[..16],
        "{status}"
    );

    // Other bytes recording the same source: the build of a toolchain
    // whose output varies. The hub keeps the version it has (here a
    // different router, to show that it did not load it).
    let second = wat_router("(i32.store8 (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const 1)) (i32.const 16)");
    let path = hub.files.path().join("plugins/bad.wasm");
    let aside = hub.files.path().join("plugins/bad.wasm.new");
    std::fs::write(&aside, source(second.clone(), b"sha256:one")).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = plugins_status(&hub, &token).await;
    assert_eq!(
        (
            status["reloads"].clone(),
            plugin(&status, "bad")["version"].clone()
        ),
        (json!(0), version),
        "{status}"
    );
    assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "a");

    // A new record is a new version.
    std::fs::write(&aside, source(second, b"sha256:two")).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    // Up to 20 s: the skeleton tests running alongside load the machine.
    let mut served = false;
    for _ in 0..400 {
        if call_with_meta(&client, &[]).await.unwrap() == "b" {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = plugins_status(&hub, &token).await;
    assert!(served, "the new source never served: {status}");
    assert_eq!(status["reloads"], 1, "{status}");
}

#[tokio::test]
async fn an_operator_lifts_a_quarantine_and_reloads_the_folder_through_the_admin_api() {
    let trap = wat_router(TRAP);
    let hub = hub_with(move |c| {
        std::fs::write(c.plugins.dir.join("bad.wasm"), &trap).unwrap();
        c.plugins.route.push(RouteRule {
            pattern: "work.*".into(),
            plugin: "bad".into(),
        });
        c.plugins.overrides.insert(
            "bad".into(),
            alkhub::config::PluginOverrides {
                on_failure: Some(OnFailure::Error),
                quarantine_after: Some(2),
                quarantine_secs: Some(3600),
                ..Default::default()
            },
        );
        // Only the admin API reloads the folder here.
        c.plugins.watch = false;
    })
    .await;
    let (_a, _b, client) = two_workers(&hub).await;
    for _ in 0..2 {
        call_with_meta(&client, &[]).await.unwrap_err();
    }
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    let status = hub
        .http("GET", "/v1/admin/plugins", Some(&admin), None)
        .await
        .json();
    assert_eq!(plugin(&status, "bad")["status"], "quarantined", "{status}");

    let lift = "/v1/admin/plugins/bad/lift-quarantine";
    let lifted = hub.http("POST", lift, Some(&admin), None).await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert_eq!(lifted.json()["wasQuarantined"], true);
    let status = plugins_status(&hub, &admin).await;
    assert_eq!(plugin(&status, "bad")["status"], "active", "{status}");
    assert_eq!(
        hub.http(
            "POST",
            "/v1/admin/plugins/nothing/lift-quarantine",
            Some(&admin),
            None
        )
        .await
        .status,
        404
    );

    // A fixed version dropped in is loaded when the operator asks.
    std::fs::write(
        hub.files.path().join("plugins/bad.wasm"),
        wat_router(CHOOSE_FIRST),
    )
    .unwrap();
    let reloaded = hub
        .http("POST", "/v1/admin/plugins/reload", Some(&admin), None)
        .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(reloaded.json()["loaded"], 1, "{}", reloaded.body);
    assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "a");

    assert_eq!(
        hub.audit_actions(&admin).await,
        ["plugins.reload", "plugin.lift-quarantine"]
    );
    let plain = hub.token(PrincipalKind::Client, "app2", &[]).await;
    assert_eq!(hub.http("POST", lift, Some(&plain), None).await.status, 403);
}

#[tokio::test]
async fn the_compile_cache_keeps_only_the_versions_that_serve() {
    // Bodies no other test uses: each is compiled here, so its entry is
    // written to this hub's cache (not found compiled in the process).
    let first = wat_router(&format!("(drop (i32.const 70101)) {CHOOSE_FIRST}"));
    let second = wat_router(&format!("(drop (i32.const 70102)) {CHOOSE_FIRST}"));
    let version = |bytes: &[u8]| alkhub::crypto::sha256_hex(bytes)[..16].to_owned();
    let stale = format!("{}-0123456789abcdef.cwasm", "ab".repeat(32));
    let (stale_entry, installed) = (stale.clone(), first.clone());
    let hub = hub_with(move |c| {
        std::fs::create_dir_all(&c.plugins.cache_dir).unwrap();
        std::fs::write(c.plugins.cache_dir.join(stale_entry), b"stale").unwrap();
        std::fs::write(c.plugins.dir.join("router.wasm"), &installed).unwrap();
    })
    .await;
    let cache = hub.config.plugins.cache_dir.clone();
    let entries = move || -> Vec<String> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let holds = |entries: &[String], v: &str| entries.iter().any(|e| e.starts_with(v));
    let at_start = entries();
    assert!(!at_start.contains(&stale), "{at_start:?}");
    assert!(holds(&at_start, &version(&first)), "{at_start:?}");

    let path = hub.files.path().join("plugins/router.wasm");
    let aside = hub.files.path().join("plugins/router.wasm.new");
    std::fs::write(&aside, &second).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    eventually("the second version serves", || async {
        plugins_status(&hub, &token).await["reloads"] == 1
    })
    .await;
    let after = entries();
    assert!(
        holds(&after, &version(&second)) && !holds(&after, &version(&first)),
        "{after:?}"
    );
}

/// A hub process serving from `dir` (its default plugins folder and cache
/// live there).
struct Served {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Served {
    fn start(dir: &Path) -> Served {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("serve exited early").unwrap();
            if line.contains("listening") {
                break line
                    .split("addr=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
            }
        };
        Served {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// `(compiled, cacheHits)` of `GET /v1/plugins`.
    async fn counts(&self, token: &str) -> (u64, u64) {
        let status = common::http(self.addr, "GET", "/v1/plugins", Some(token), None)
            .await
            .json();
        (
            status["compiled"].as_u64().unwrap(),
            status["cacheHits"].as_u64().unwrap(),
        )
    }

    /// SIGTERM, and SIGKILL if the hub has not exited 15 s later.
    fn stop(mut self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..150 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }
}

/// Runs `alkhub ARGS` in `dir` and returns the last line it printed (a
/// token, for `spoke add` and `client add`).
fn cli_last_line(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

/// `choose(1)`.
const CHOOSE_SECOND: &str = "(i32.store8 (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const 1)) (i32.const 16)";

#[tokio::test]
async fn routes_selections_and_limits_reload_with_the_configuration() {
    let hub = hub_with(|c| {
        std::fs::write(c.plugins.dir.join("first.wasm"), wat_router(CHOOSE_FIRST)).unwrap();
        std::fs::write(c.plugins.dir.join("second.wasm"), wat_router(CHOOSE_SECOND)).unwrap();
        c.plugins.route.push(RouteRule {
            pattern: "work.*".into(),
            plugin: "first".into(),
        });
    })
    .await;
    let (_a, _b, client) = two_workers(&hub).await;
    assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "a");

    let mut config = hub.config.clone();
    config.plugins.route[0].plugin = "second".into();
    config.plugins.overrides.insert(
        "second".into(),
        alkhub::config::PluginOverrides {
            quarantine_after: Some(9),
            ..Default::default()
        },
    );
    config.plugins.watch = false;
    config.limits.max_connections += 1;
    let changes = hub.running.as_ref().unwrap().reload(&config);
    for expected in [
        "plugins.route: [work.* -> second]",
        "plugin second: new limits",
        "plugins.watch changed; it takes effect at the next start",
        "[limits] changed; it takes effect at the next start",
    ] {
        assert!(
            changes.iter().any(|c| c == expected),
            "{expected}: {changes:?}"
        );
    }
    assert_eq!(changes.len(), 4, "{changes:?}");
    // The next call follows the new route.
    assert_eq!(call_with_meta(&client, &[]).await.unwrap(), "b");
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    assert_eq!(plugin(&status, "second")["roles"], json!(["route work.*"]));
    assert_eq!(plugin(&status, "first")["roles"], json!([]));
    // The same configuration again applies nothing new; what waits for a
    // restart is still said.
    assert_eq!(
        hub.running.as_ref().unwrap().reload(&config),
        [
            "plugins.watch changed; it takes effect at the next start",
            "[limits] changed; it takes effect at the next start"
        ]
    );
}

#[tokio::test]
async fn sighup_reloads_the_configuration_file_and_a_bad_one_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("first.wasm"), wat_router(CHOOSE_FIRST)).unwrap();
    std::fs::write(plugins.join("second.wasm"), wat_router(CHOOSE_SECOND)).unwrap();
    let route_to =
        |plugin: &str| format!("[[plugins.route]]\npattern = \"work.*\"\nplugin = \"{plugin}\"\n");
    let file = dir.path().join("alkhub.toml");
    std::fs::write(&file, route_to("first")).unwrap();
    let token = cli_last_line(dir.path(), &["client", "add", "ops"]);
    let served = Served::start(dir.path());
    let roles = |name: &'static str| {
        let token = token.clone();
        let addr = served.addr;
        async move {
            let status = common::http(addr, "GET", "/v1/plugins", Some(&token), None)
                .await
                .json();
            plugin(&status, name)["roles"].clone()
        }
    };
    assert_eq!(roles("first").await, json!(["route work.*"]));
    // The hub runs with the default relative `plugins` folder: rewriting a
    // file with the same bytes is still no reload.
    std::fs::write(plugins.join("first.wasm"), wat_router(CHOOSE_FIRST)).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = common::http(served.addr, "GET", "/v1/plugins", Some(&token), None)
        .await
        .json();
    assert_eq!(status["reloads"], 0, "{status}");
    let hangup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &served.child.id().to_string()])
            .status()
            .unwrap()
    };

    std::fs::write(&file, route_to("second")).unwrap();
    hangup();
    eventually("the new route is in force", || async {
        roles("second").await == json!(["route work.*"])
    })
    .await;
    assert_eq!(roles("first").await, json!([]));

    // A file with an unknown key is refused as a whole: the route back to
    // `first` in it is not applied, the configuration in force stays.
    std::fs::write(&file, format!("{}bogus = 1\n", route_to("first"))).unwrap();
    hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(roles("second").await, json!(["route work.*"]));
    assert_eq!(roles("first").await, json!([]));
    served.stop();
}

#[tokio::test]
async fn a_second_start_with_unchanged_plugins_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("extra.wasm"), wat_router(CHOOSE_FIRST)).unwrap();
    let token = cli_last_line(dir.path(), &["client", "add", "ops"]);
    let mut counts = Vec::new();
    for _ in 0..2 {
        let served = Served::start(dir.path());
        counts.push(served.counts(&token).await);
        served.stop();
    }
    // Two embedded defaults and one file: compiled on the first start, all from the cache on the second.
    assert_eq!(counts, [(3, 0), (0, 3)]);
}

#[tokio::test]
async fn a_plugin_of_the_wrong_world_in_a_role_is_bypassed_not_quarantined() {
    // Routing through a remap plugin: every call takes the failure policy
    // (fallback here), and the plugin keeps serving its real role.
    let hub = hub_with(|c| c.plugins.routing = "rule-remap".into()).await;
    let (_a, _b, client) = two_workers(&hub).await;
    for _ in 0..8 {
        call_with_meta(&client, &[]).await.unwrap();
    }
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let remap = plugin(&status, "rule-remap");
    assert_eq!(
        (remap["status"].clone(), remap["failures"].clone()),
        (json!("active"), json!(0))
    );
}

#[tokio::test]
async fn a_swap_in_progress_is_shown_while_the_new_version_compiles() {
    let hub = hub_with(|_| {}).await;
    // A JavaScript component takes seconds to compile. A source record of
    // its own gives it a digest of its own, so nothing has compiled it yet.
    let component = common::wat::with_custom_section(
        &std::fs::read(shipped("label-affinity")).unwrap(),
        "alkhub:source",
        b"swap0123456789",
    );
    let path = hub.files.path().join("plugins/slow.wasm");
    let aside = hub.files.path().join("plugins/slow.wasm.new");
    std::fs::write(&aside, &component).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    eventually("slow is listed as loading", || async {
        let status = plugins_status(&hub, &token).await;
        status["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "slow" && p["status"] == "loading" && p["loading"] == true)
    })
    .await;
    let mut status = json!(null);
    for _ in 0..600 {
        status = plugins_status(&hub, &token).await;
        if plugin(&status, "slow")["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = plugin(&status, "slow");
    assert_eq!(
        (slow["status"].clone(), slow["loading"].clone()),
        (json!("active"), json!(false)),
        "{status}"
    );
}

#[tokio::test]
async fn a_selected_plugin_that_is_missing_is_listed_and_its_fallbacks_are_told() {
    // No `absent.wasm` in the folder: the remap falls back to the built-in
    // one, the spoke is told in `warnings`, and the listing shows why.
    let hub = hub_with(|c| c.plugins.remap = "absent".into()).await;
    let spoke = hub
        .spoke("devbox")
        .await
        .operation(spec("tools", "upper", OperationType::Query), |_| async {
            Ok(json!("ok"))
        })
        .connect()
        .await
        .unwrap();
    let welcome = spoke.welcome();
    assert_eq!(welcome.registrations.len(), 1, "{welcome:?}");
    let warning = &welcome.warnings[..];
    assert!(
        warning.len() == 1
            && warning[0].operation_id == "tools.upper"
            && warning[0]
                .message
                .contains("absent is not a loaded remap plugin")
            && warning[0].message.contains("registered it as tools.upper"),
        "{welcome:?}"
    );
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let absent = plugin(&status, "absent");
    assert_eq!(absent["status"], "missing", "{absent}");
    assert_eq!(absent["roles"], json!(["remap"]), "{absent}");
    assert_eq!(absent["fallbacks"], 1, "{absent}");
    // A plugin serving its role lists the role.
    assert_eq!(
        plugin(&status, "least-in-flight")["roles"],
        json!(["routing"])
    );
}

/// Runs `alkhub plugin run FILE ARGS...`: (success, standard output, standard error).
fn plugin_run(file: &Path, args: &[&str]) -> (bool, String, String) {
    let file = file.to_str().unwrap();
    let all: Vec<&str> = ["plugin", "run", file]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    common::alkhub(Path::new("."), &all)
}

#[test]
fn plugin_run_decides_once_without_a_hub_and_prints_the_log_and_the_time() {
    // Routing: the least busy of two candidates.
    let input = r#"{"candidates": [{"providerId": "a", "inFlight": 3}, {"providerId": "b", "inFlight": 1}]}"#;
    let (ok, out, err) = plugin_run(
        &shipped("least-in-flight"),
        &["--json", input, "--repeat", "10"],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("world: routing")
            && out.contains(r#"decision: {"choose":1,"provider":"b"}"#)
            && out.contains("compile: ")
            && out.contains("warm decision: "),
        "{out}"
    );

    // Remap, with settings, from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("declaration.json");
    std::fs::write(
        &file,
        r#"{"provider": {"id": "devbox"}, "operation": {"namespace": "dev.fs", "name": "read"},
            "settings": {"per_spoke_namespaces": ["dev"]}}"#,
    )
    .unwrap();
    let (ok, out, err) = plugin_run(&shipped("rule-remap"), &["--input", file.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(r#"decision: {"ok":{"name":"read","namespace":"dev.devbox.fs"}}"#),
        "{out}"
    );

    // A failing decision: the reason, the plugin's log, exit status 1.
    let (imports, body) = LOGS_THEN_TRAPS;
    let failing = dir.path().join("failing.wasm");
    std::fs::write(
        &failing,
        wat_router_with(
            &format!(r#"{imports} (data (i32.const 512) "no region label")"#),
            body,
        ),
    )
    .unwrap();
    let (ok, out, _) = plugin_run(&failing, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("failed: the plugin failed: no region label")
            && out.contains("log:\n  error no region label"),
        "{out}"
    );

    // Bad input names the problem.
    let (ok, _, err) = plugin_run(&failing, &["--json", r#"{"candidate": []}"#]);
    assert!(!ok && err.contains("unknown field `candidate`"), "{err}");
}

// ---------------------------------------------------------------------------
// `alkhub plugin new`: every skeleton builds as is and the hub uses it.

/// Runs `alkhub plugin new NAME --lang LANG --world WORLD` in a temporary
/// folder, builds the project with its own `build.sh` and returns the
/// component's path (the folder lives as long as the returned guard).
fn new_plugin(name: &str, lang: &str, world: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["plugin", "new", name, "--lang", lang, "--world", world])
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plugin new failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = parent.path().join(name);
    let build = std::process::Command::new("bash")
        .arg("build.sh")
        .current_dir(&project)
        // Rust skeletons share one target folder, so the standard library
        // for wasm32 is compiled once, not once per test run.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("skeleton-target"),
        )
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{lang} {world} skeleton does not build:\n{}\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    // The policy's own tests, in its own language, without the hub.
    let unit_tests: Option<(&str, &[&str])> = match lang {
        "js" => Some(("npm", &["test", "--silent"])),
        "python" => Some(("python3", &["-m", "unittest", "-q"])),
        _ => None,
    };
    if let Some((program, args)) = unit_tests {
        let tested = std::process::Command::new(program)
            .args(args)
            .current_dir(&project)
            .output()
            .unwrap();
        assert!(
            tested.status.success(),
            "{lang} {world} skeleton's policy tests fail:\n{}\n{}",
            String::from_utf8_lossy(&tested.stdout),
            String::from_utf8_lossy(&tested.stderr)
        );
    }
    let component = project.join(format!("{name}.wasm"));
    if matches!(lang, "js" | "python") && world == "routing" {
        // Their toolchains' output varies from build to build; the source
        // recorded in the component keeps it one version to the hub.
        let first = std::fs::read(&component).unwrap();
        let again = std::process::Command::new("bash")
            .arg("build.sh")
            .current_dir(&project)
            .output()
            .unwrap();
        assert!(again.status.success(), "{lang}: the second build failed");
        let second = std::fs::read(&component).unwrap();
        let digest = alkhub::plugins::component_digest;
        assert_ne!(
            digest(&first),
            alkhub::crypto::sha256_hex(&first),
            "{lang}: the build recorded no source"
        );
        assert_eq!(
            digest(&first),
            digest(&second),
            "{lang}: one source, two versions"
        );
    }
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["plugin", "check"])
        .arg(&component)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && report.contains(&format!("world: {world}")),
        "{lang} {world} skeleton: {report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    (parent, component)
}

/// Builds both skeletons of `lang` and proves the hub uses them: the routing
/// one cycles through three providers, the remap one keeps declared ids.
async fn skeletons_build_and_serve(lang: &str) {
    let (_routing_dir, router) = new_plugin("my-router", lang, "routing");
    let (_remap_dir, remapper) = new_plugin("my-remap", lang, "remap");

    let hub = hub_routing(
        "my-router",
        &[("my-router", router), ("my-remap", remapper.clone())],
        Value::Null,
    )
    .await;
    assert_cycles_through_three(&three_workers_serve(&hub, 6).await, lang);
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let router = plugin(&status, "my-router");
    assert_eq!(router["status"], "active", "{router}");
    assert!(router["decisions"].as_u64().unwrap() >= 6, "{router}");
    assert_eq!(router["failures"], 0, "{router}");
    drop(hub);

    let hub = hub_with(move |c| {
        std::fs::copy(&remapper, c.plugins.dir.join("my-remap.wasm")).unwrap();
        c.plugins.remap = "my-remap".into();
    })
    .await;
    let peer = hub
        .spoke("devbox")
        .await
        .operation(
            spec("tools.text", "upper", OperationType::Query),
            |_| async { Ok(json!(1)) },
        )
        .connect()
        .await
        .unwrap();
    let ids: Vec<_> = peer
        .welcome()
        .registrations
        .iter()
        .map(|r| r.operation_id.clone())
        .collect();
    assert_eq!(ids, ["tools.text.upper"], "{lang} remap");
    let token = hub.token(PrincipalKind::Client, "ops", &[]).await;
    let status = plugins_status(&hub, &token).await;
    let remap = plugin(&status, "my-remap");
    assert_eq!(remap["status"], "active", "{remap}");
    assert_eq!(remap["decisions"], 1, "{remap}");
    assert_eq!(remap["failures"], 0, "{remap}");
}

#[tokio::test]
async fn the_c_skeletons_build_and_serve() {
    skeletons_build_and_serve("c").await;
}

#[tokio::test]
async fn the_rust_skeletons_build_and_serve() {
    skeletons_build_and_serve("rust").await;
}

#[tokio::test]
async fn the_javascript_skeletons_build_and_serve() {
    skeletons_build_and_serve("js").await;
}

#[tokio::test]
async fn the_python_skeletons_build_and_serve() {
    skeletons_build_and_serve("python").await;
}
