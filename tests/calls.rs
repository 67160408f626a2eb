//! The life of a call over real sockets: round trips, timeouts, aborts,
//! access, validation, routing, malformed frames and HTTP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alkhub::connection::now_ms;
use alkhub::peer::{handler_error, spec, CallOptions, Emitter, Request};
use alkhub::protocol::{AccessLevel, OperationSpec, OperationType, PrincipalKind};
use common::{eventually, hub, hub_with, Raw, TestHub};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

fn with_access(mut s: OperationSpec, level: AccessLevel, scopes: &[&str]) -> OperationSpec {
    s.access_level = level;
    s.required_scopes = scopes.iter().map(|s| s.to_string()).collect();
    s
}

/// A subscription handler that emits a tick every 20 ms until aborted, and
/// reports its abort (its task being dropped) on `stopped`.
fn ticker(
    stopped: mpsc::UnboundedSender<String>,
) -> impl Fn(
    Request,
    Emitter,
) -> futures_util::future::BoxFuture<'static, Result<(), alkhub::peer::PeerError>> {
    move |req, emitter| {
        let stopped = stopped.clone();
        Box::pin(async move {
            let _guard = common::OnDrop::new(stopped, req.request_id.clone());
            for i in 0.. {
                emitter.emit(json!(i));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }
}

async fn echo_spoke(hub: &TestHub, id: &str) -> alkhub::peer::Peer {
    hub.spoke(id)
        .await
        .operation(
            spec("demo", "echo", OperationType::Query),
            |req| async move { Ok(req.input) },
        )
        .operation(
            spec("demo", "store", OperationType::Mutation),
            |req| async move { Ok(json!({"stored": req.input, "by": req.identity.map(|i| i.id)})) },
        )
        .subscription(
            spec("demo", "count", OperationType::Subscription),
            |req, emitter| async move {
                let n = req.input["to"].as_u64().unwrap_or(3);
                for i in 1..=n {
                    emitter.emit(json!(i));
                }
                Ok(())
            },
        )
        .operation(spec("demo", "fail", OperationType::Query), |_| async {
            Err(handler_error("DISK_FULL", "no space left"))
        })
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn query_mutation_and_subscription_round_trips() {
    let hub = hub().await;
    let _spoke = echo_spoke(&hub, "demo").await;
    let client = hub.client("app", &[]).await;

    let out = client
        .call("demo.echo", json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(out["data"], json!({"text": "hi"}));
    assert_eq!(out["meta"]["source"], "local");
    assert_eq!(out["meta"]["operationId"], "demo.echo");

    let out = client.call("demo.store", json!(42)).await.unwrap();
    assert_eq!(out["data"], json!({"stored": 42, "by": "app"}));

    let mut sub = client.subscribe("demo.count", json!({"to": 4}), CallOptions::default());
    let mut got = Vec::new();
    while let Some(event) = sub.next().await {
        got.push(event.unwrap()["data"].clone());
    }
    assert_eq!(got, [json!(1), json!(2), json!(3), json!(4)]);

    let err = client.call("demo.fail", Value::Null).await.unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("DISK_FULL", "no space left")
    );
    assert_eq!(
        client
            .call("demo.nope", Value::Null)
            .await
            .unwrap_err()
            .code,
        "OPERATION_NOT_FOUND"
    );
}

#[tokio::test]
async fn subscription_abort_reaches_the_provider() {
    let hub = hub().await;
    let (stopped, mut stops) = mpsc::unbounded_channel();
    let _spoke = hub
        .spoke("ticks")
        .await
        .subscription(
            spec("clock", "ticks", OperationType::Subscription),
            ticker(stopped),
        )
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let mut sub = client.subscribe("clock.ticks", Value::Null, CallOptions::default());
    assert_eq!(sub.next().await.unwrap().unwrap()["data"], 0);
    assert_eq!(sub.next().await.unwrap().unwrap()["data"], 1);
    sub.abort();
    let stopped_id = common::recv_within(&mut stops).await;
    assert!(stopped_id.starts_with('h'), "{stopped_id}");
    eventually("no open call", || async {
        hub.running
            .as_ref()
            .unwrap()
            .hub()
            .dispatcher()
            .open_calls()
            == 0
    })
    .await;
}

#[tokio::test]
async fn deadline_and_idle_timeout_give_timeout_and_abort_the_provider() {
    let hub = hub().await;
    let (stopped, mut stops) = mpsc::unbounded_channel::<String>();
    let slow_stopped = stopped.clone();
    let _spoke = hub
        .spoke("slow")
        .await
        .operation(spec("slow", "query", OperationType::Query), move |req| {
            let stopped = slow_stopped.clone();
            async move {
                let _guard = common::OnDrop::new(stopped, req.request_id.clone());
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(json!("too late"))
            }
        })
        .subscription(
            spec("slow", "silent", OperationType::Subscription),
            move |req, emitter| {
                let stopped = stopped.clone();
                async move {
                    let _guard = common::OnDrop::new(stopped, req.request_id.clone());
                    emitter.emit(json!("first"));
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
            },
        )
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;

    let options = CallOptions {
        deadline: Some(now_ms() + 150),
        ..Default::default()
    };
    let err = client
        .call_with("slow.query", Value::Null, options)
        .await
        .unwrap_err();
    assert_eq!(err.code, "TIMEOUT");
    assert!(err.message.contains("deadline"), "{}", err.message);
    common::recv_within(&mut stops).await;

    let options = CallOptions {
        idle_timeout: Some(150),
        ..Default::default()
    };
    let mut sub = client.subscribe("slow.silent", Value::Null, options);
    assert_eq!(sub.next().await.unwrap().unwrap()["data"], "first");
    let err = sub.next().await.unwrap().unwrap_err();
    assert_eq!(err.code, "TIMEOUT");
    assert!(err.message.contains("idleTimeout"), "{}", err.message);
    common::recv_within(&mut stops).await;

    let past = CallOptions {
        deadline: Some(now_ms() - 1),
        ..Default::default()
    };
    assert_eq!(
        client
            .call_with("slow.query", Value::Null, past)
            .await
            .unwrap_err()
            .code,
        "TIMEOUT"
    );
}

#[tokio::test]
async fn input_breaking_the_schema_gives_validation_error_without_reaching_the_provider() {
    let hub = hub().await;
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let mut read = spec("fs", "read", OperationType::Query);
    read.input_schema = Some(json!({
        "type": "object",
        "required": ["path"],
        "properties": {"path": {"type": "string"}},
        "additionalProperties": false
    }));
    let _spoke = hub
        .spoke("fs")
        .await
        .operation(read, move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req.input) }
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let err = client
        .call("fs.read", json!({"path": 7, "extra": true}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "VALIDATION_ERROR");
    let errors = err.details.unwrap()["errors"].as_array().unwrap().clone();
    assert!(
        errors.iter().any(|e| e["instancePath"] == "/path"),
        "{errors:?}"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    assert_eq!(
        client
            .call("fs.read", json!({"path": "/tmp/x"}))
            .await
            .unwrap()["data"]["path"],
        "/tmp/x"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn access_levels_hold_over_websocket_and_http() {
    let hub = hub().await;
    let _spoke = hub
        .spoke("vault")
        .await
        .operation(
            with_access(
                spec("vault", "open", OperationType::Query),
                AccessLevel::Public,
                &[],
            ),
            |_| async { Ok(json!("open")) },
        )
        .operation(
            with_access(
                spec("vault", "secret", OperationType::Query),
                AccessLevel::Scoped,
                &["vault:read"],
            ),
            |_| async { Ok(json!("secret")) },
        )
        .operation(
            with_access(
                spec("vault", "inner", OperationType::Query),
                AccessLevel::Internal,
                &[],
            ),
            |_| async { Ok(json!("inner")) },
        )
        .operation(spec("vault", "plain", OperationType::Query), |_| async {
            Ok(json!("plain"))
        })
        .connect()
        .await
        .unwrap();
    let nobody = hub.client("nobody", &[]).await;
    let reader = hub.client("reader", &["vault:read"]).await;

    assert_eq!(
        nobody
            .call("vault.secret", Value::Null)
            .await
            .unwrap_err()
            .code,
        "ACCESS_DENIED"
    );
    assert_eq!(
        reader.call("vault.secret", Value::Null).await.unwrap()["data"],
        "secret"
    );
    assert_eq!(
        nobody
            .call("vault.inner", Value::Null)
            .await
            .unwrap_err()
            .code,
        "OPERATION_NOT_FOUND"
    );

    let ids = |listing: &Value| -> Vec<String> {
        listing["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let seen = ids(&nobody
        .call("hub.operations.list", Value::Null)
        .await
        .unwrap()["data"]);
    assert!(seen.contains(&"vault.plain".to_owned()) && seen.contains(&"vault.open".to_owned()));
    assert!(
        !seen.contains(&"vault.secret".to_owned()) && !seen.contains(&"vault.inner".to_owned()),
        "{seen:?}"
    );
    let seen = ids(&reader
        .call("hub.operations.list", Value::Null)
        .await
        .unwrap()["data"]);
    assert!(seen.contains(&"vault.secret".to_owned()));

    // A spoke may call internal operations.
    let other = hub.spoke("other").await.connect().await.unwrap();
    assert_eq!(
        other.call("vault.inner", Value::Null).await.unwrap()["data"],
        "inner"
    );

    // HTTP: public without a token, others need one.
    let open = hub
        .http("POST", "/v1/operations/vault.open/call", None, Some("{}"))
        .await;
    assert_eq!(open.status, 200, "{}", open.body);
    assert_eq!(open.json()["data"], "open");
    let plain = hub
        .http("POST", "/v1/operations/vault.plain/call", None, Some("{}"))
        .await;
    assert_eq!(
        (plain.status, plain.json()["code"].clone()),
        (401, json!("UNAUTHENTICATED"))
    );
    let listing = hub.http("GET", "/v1/operations", None, None).await;
    assert_eq!(ids(&listing.json()), ["vault.open"]);
    let bad = hub
        .http("GET", "/v1/operations", Some("alk_client_bogus"), None)
        .await;
    assert_eq!(bad.status, 401);
}

#[tokio::test]
async fn a_provider_killed_mid_call_gives_provider_gone() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "fragile", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(
        json!({"type": "hello", "payload": {"token": token, "operations": [
            {"namespace": "fragile", "name": "work", "type": "query"}
        ]}}),
    )
    .await;
    assert_eq!(raw.recv().await["type"], "welcome");
    let client = hub.client("app", &[]).await;
    let pending = common::spawn_call(&client, "fragile.work", Value::Null);
    let forwarded = raw.recv().await;
    assert_eq!(forwarded["type"], "call.requested");
    assert_eq!(forwarded["payload"]["identity"]["id"], "app");
    drop(raw); // the TCP connection ends without a close frame
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(err.code, "PROVIDER_GONE");
}

#[tokio::test]
async fn a_caller_leaving_mid_subscription_aborts_at_the_provider() {
    let hub = hub().await;
    let (stopped, mut stops) = mpsc::unbounded_channel();
    let _spoke = hub
        .spoke("ticks")
        .await
        .subscription(
            spec("clock", "ticks", OperationType::Subscription),
            ticker(stopped),
        )
        .connect()
        .await
        .unwrap();
    let token = hub.token(PrincipalKind::Client, "leaver", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    assert_eq!(raw.recv().await["type"], "welcome");
    raw.send_json(json!({"type": "call.requested", "payload": {"requestId": "s1", "operationId": "clock.ticks"}}))
        .await;
    assert_eq!(raw.recv().await["type"], "call.responded");
    drop(raw);
    common::recv_within(&mut stops).await;
}

#[tokio::test]
async fn aborting_a_parent_aborts_its_children() {
    let hub = hub().await;
    let (stopped, mut stops) = mpsc::unbounded_channel();
    let _leaf = hub
        .spoke("leaf")
        .await
        .subscription(
            spec("leaf", "ticks", OperationType::Subscription),
            ticker(stopped.clone()),
        )
        .connect()
        .await
        .unwrap();
    let child_result = Arc::new(Mutex::new(None));
    let seen = child_result.clone();
    let _middle = hub
        .spoke("middle")
        .await
        .subscription(
            spec("middle", "relay", OperationType::Subscription),
            move |req, emitter| {
                let seen = seen.clone();
                async move {
                    let options = CallOptions {
                        parent_request_id: Some(req.request_id.clone()),
                        ..Default::default()
                    };
                    // The child lives in a task of its own, so that only the hub's
                    // cascade (not this handler being dropped) can end it.
                    let mut child = req.peer.subscribe("leaf.ticks", Value::Null, options);
                    tokio::spawn(async move {
                        while let Some(event) = child.next().await {
                            match event {
                                Ok(out) => {
                                    emitter.emit(out["data"].clone());
                                }
                                Err(e) => {
                                    *seen.lock().unwrap() = Some(e.code);
                                    break;
                                }
                            }
                        }
                    });
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
            },
        )
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let mut sub = client.subscribe("middle.relay", Value::Null, CallOptions::default());
    assert_eq!(sub.next().await.unwrap().unwrap()["data"], 0);
    assert_eq!(
        hub.running
            .as_ref()
            .unwrap()
            .hub()
            .dispatcher()
            .open_calls(),
        2
    );
    sub.abort();
    // The leaf (the child's provider) is told to stop.
    common::recv_within(&mut stops).await;
    eventually("both calls ended", || async {
        hub.running
            .as_ref()
            .unwrap()
            .hub()
            .dispatcher()
            .open_calls()
            == 0
    })
    .await;
    // The child's caller, still waiting, is told its call was aborted.
    eventually("the child's caller sees ABORTED", || async {
        child_result.lock().unwrap().as_deref() == Some("ABORTED")
    })
    .await;
}

#[tokio::test]
async fn load_spreads_to_the_less_busy_provider() {
    let hub = hub().await;
    let served: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut spokes = Vec::new();
    for id in ["busy", "idle"] {
        let served = served.clone();
        let who = id.to_owned();
        spokes.push(
            hub.spoke(id)
                .await
                .operation(spec("work", "slow", OperationType::Query), move |_| {
                    served.lock().unwrap().push(who.clone());
                    async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(json!("done"))
                    }
                })
                .connect()
                .await
                .unwrap(),
        );
    }
    let client = hub.client("app", &[]).await;
    // Eight concurrent slow calls: with least-in-flight they split evenly,
    // never piling more than one extra call on either provider.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("work.slow", Value::Null).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let served = served.lock().unwrap();
    let busy = served.iter().filter(|s| *s == "busy").count();
    assert_eq!(busy, 4, "{served:?}");
}

#[tokio::test]
async fn malformed_frames_get_protocol_errors_and_never_crash_the_hub() {
    let hub = hub_with(|c| c.limits.max_frame_bytes = 64 * 1024).await;
    let token = hub.token(PrincipalKind::Client, "fuzzy", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    assert_eq!(raw.recv().await["type"], "welcome");

    let cases: Vec<Message> = vec![
        Message::text("not json at all"),
        Message::text("[1, 2, 3]"),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(json!({"type": "no.such.type", "payload": {}}).to_string()),
        Message::text(json!({"payload": {}}).to_string()),
        Message::text(
            json!({"type": "call.requested", "payload": {"operationId": "a.b"}}).to_string(),
        ),
        Message::text(json!({"type": "register", "payload": {}}).to_string()),
        Message::text(
            json!({"type": "call.responded", "payload": {"requestId": "x1"}}).to_string(),
        ),
    ];
    for case in cases {
        let shown = format!("{case:?}");
        raw.send(case).await;
        let answer = raw.recv().await;
        assert_eq!(answer["type"], "error", "{shown}: {answer}");
        assert_eq!(
            answer["payload"]["code"], "PROTOCOL_ERROR",
            "{shown}: {answer}"
        );
        assert!(!answer["payload"]["message"].as_str().unwrap().is_empty());
    }
    // A call with a bad field is answered on its request id.
    raw.send_json(
        json!({"type": "call.requested", "payload": {"requestId": "r1", "operationId": 5}}),
    )
    .await;
    let answer = raw.recv().await;
    assert_eq!(
        (
            answer["type"].clone(),
            answer["payload"]["requestId"].clone()
        ),
        (json!("call.error"), json!("r1"))
    );

    // The session still works.
    raw.send_json(json!({"type": "call.requested", "payload": {"requestId": "ok", "operationId": "hub.operations.list"}}))
        .await;
    assert_eq!(raw.recv().await["type"], "call.responded");

    // Oversized: close 1009.
    raw.send(Message::text("x".repeat(100 * 1024))).await;
    assert_eq!(raw.close_code().await, 1009);
    let health = hub.http("GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn open_calls_per_connection_are_limited_with_overloaded() {
    let hub = hub_with(|c| c.limits.max_open_calls_per_connection = 2).await;
    let _spoke = hub
        .spoke("slow")
        .await
        .operation(spec("slow", "op", OperationType::Query), |_| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(json!(1))
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("slow.op", Value::Null).await })
        })
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        codes.push(match call.await.unwrap() {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code,
        });
    }
    codes.sort();
    assert_eq!(codes, ["OVERLOADED", "ok", "ok"]);
}

#[tokio::test]
async fn http_call_subscribe_listing_healthz_and_builtins() {
    let hub = hub().await;
    let _spoke = echo_spoke(&hub, "demo").await;
    let token = hub.token(PrincipalKind::Client, "web", &[]).await;

    let ok = hub
        .http(
            "POST",
            "/v1/operations/demo.echo/call",
            Some(&token),
            Some(r#"{"input": {"a": 1}}"#),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["data"], json!({"a": 1}));

    let failed = hub
        .http(
            "POST",
            "/v1/operations/demo.fail/call",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (failed.status, failed.json()["code"].clone()),
        (502, json!("DISK_FULL"))
    );
    let missing = hub
        .http(
            "POST",
            "/v1/operations/demo.none/call",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (missing.status, missing.json()["code"].clone()),
        (404, json!("OPERATION_NOT_FOUND"))
    );
    let bad_body = hub
        .http(
            "POST",
            "/v1/operations/demo.echo/call",
            Some(&token),
            Some("{nope"),
        )
        .await;
    assert_eq!(
        (bad_body.status, bad_body.json()["code"].clone()),
        (400, json!("PROTOCOL_ERROR"))
    );

    let sse = hub
        .http(
            "POST",
            "/v1/operations/demo.count/subscribe",
            Some(&token),
            Some(r#"{"input": {"to": 3}}"#),
        )
        .await;
    assert_eq!(sse.status, 200);
    assert!(
        sse.headers
            .to_ascii_lowercase()
            .contains("text/event-stream"),
        "{}",
        sse.headers
    );
    let events: Vec<&str> = sse
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        ["responded", "responded", "responded", "completed"],
        "{}",
        sse.body
    );
    assert!(sse.body.contains(r#""data":3"#), "{}", sse.body);
    let early = hub
        .http(
            "POST",
            "/v1/operations/demo.none/subscribe",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(early.status, 404);

    let listing = hub.http("GET", "/v1/operations", Some(&token), None).await;
    let ops = listing.json()["operations"].as_array().unwrap().clone();
    let echo = ops.iter().find(|o| o["id"] == "demo.echo").unwrap();
    assert_eq!(echo["activeRegistrations"], 1);
    assert!(ops.iter().any(|o| o["id"] == "hub.operations.get"));

    let got = hub
        .http(
            "POST",
            "/v1/operations/hub.operations.get/call",
            Some(&token),
            Some(r#"{"input": {"operationId": "demo.echo"}}"#),
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let regs = got.json()["data"]["registrations"].clone();
    assert_eq!(regs[0]["providerId"], "demo");
    assert_eq!(regs[0]["status"], "active");
    let no_input = hub
        .http(
            "POST",
            "/v1/operations/hub.operations.get/call",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(no_input.status, 400);

    assert_eq!(hub.http("GET", "/healthz", None, None).await.status, 200);
}

#[tokio::test]
async fn a_call_without_providers_is_no_provider_and_unknown_is_not_found_over_http() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Client, "web", &[]).await;
    let spoke = echo_spoke(&hub, "demo").await;
    spoke.close();
    eventually("inactive", || async {
        hub.statuses("demo.echo").await == ["inactive"]
    })
    .await;
    let r = hub
        .http(
            "POST",
            "/v1/operations/demo.echo/call",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (503, json!("NO_PROVIDER"))
    );
}

#[tokio::test]
async fn provider_mistakes_still_answer_the_caller() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "sloppy", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(
        json!({"type": "hello", "payload": {"token": token, "operations": [
            {"namespace": "sloppy", "name": "q", "type": "query"}
        ]}}),
    )
    .await;
    assert_eq!(raw.recv().await["type"], "welcome");
    let client = hub.client("app", &[]).await;

    // A query "completed" without a result.
    let pending = common::spawn_call(&client, "sloppy.q", Value::Null);
    let id = raw.recv().await["payload"]["requestId"].clone();
    raw.send_json(json!({"type": "call.completed", "payload": {"requestId": id}}))
        .await;
    assert_eq!(pending.await.unwrap().unwrap_err().code, "EXECUTION_ERROR");

    // An output that is a bare value (no envelope) becomes the data.
    let pending = common::spawn_call(&client, "sloppy.q", Value::Null);
    let id = raw.recv().await["payload"]["requestId"].clone();
    raw.send_json(
        json!({"type": "call.responded", "payload": {"requestId": id, "output": {"rows": 3}}}),
    )
    .await;
    let out = pending.await.unwrap().unwrap();
    assert_eq!(out["data"], json!({"rows": 3}));
    assert_eq!(out["meta"]["operationId"], "sloppy.q");

    // The provider aborting its own call.
    let pending = common::spawn_call(&client, "sloppy.q", Value::Null);
    let id = raw.recv().await["payload"]["requestId"].clone();
    raw.send_json(json!({"type": "call.aborted", "payload": {"requestId": id}}))
        .await;
    assert_eq!(pending.await.unwrap().unwrap_err().code, "ABORTED");
}

#[tokio::test]
async fn oversized_http_bodies_get_a_json_error() {
    let hub = hub_with(|c| c.limits.max_frame_bytes = 1024).await;
    let _spoke = echo_spoke(&hub, "demo").await;
    let token = hub.token(PrincipalKind::Client, "web", &[]).await;
    let body = json!({"input": "x".repeat(4096)}).to_string();
    let r = hub
        .http(
            "POST",
            "/v1/operations/demo.echo/call",
            Some(&token),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["code"], "PROTOCOL_ERROR");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_frame_bytes"));
    assert!(r.json().get("details").is_none());
}

#[tokio::test]
async fn a_principal_over_its_call_rate_is_told_when_to_retry() {
    let hub = hub_with(|config| {
        config.limits.calls_per_second_per_principal = 5;
        config.limits.call_burst_per_principal = 5;
    })
    .await;
    let _spoke = echo_spoke(&hub, "demo").await;
    let client = hub.client("eager", &[]).await;
    let calls: Vec<_> = (0..20)
        .map(|i| common::spawn_call(&client, "demo.echo", json!(i)))
        .collect();
    let (mut answered, mut refused) = (0, Vec::new());
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(e) => refused.push(e),
        }
    }
    // The burst passes (plus what refilled meanwhile); the rest is refused.
    assert!((5..20).contains(&answered), "{answered} answered");
    let retry_after = refused
        .iter()
        .map(|e| {
            assert_eq!(e.code, "OVERLOADED", "{}", e.message);
            assert!(e
                .message
                .contains("limits.calls_per_second_per_principal (5)"));
            e.details.as_ref().unwrap()["retryAfterMs"]
                .as_u64()
                .unwrap()
        })
        .max()
        .unwrap();
    assert!((1..=200).contains(&retry_after), "{retry_after}");

    // Another principal has a bucket of its own.
    let other = hub.client("patient", &[]).await;
    other.call("demo.echo", json!("mine")).await.unwrap();
    // Over HTTP the same principal's bucket answers 429 with the same details.
    let token = hub.token(PrincipalKind::Client, "http-eager", &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let response = hub
            .http(
                "POST",
                "/v1/operations/demo.echo/call",
                Some(&token),
                Some(r#"{"input": 1}"#),
            )
            .await;
        if response.status == 429 {
            assert!(response.json()["details"]["retryAfterMs"].as_u64().unwrap() >= 1);
        }
        statuses.push(response.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // After waiting as told, calls pass again.
    tokio::time::sleep(Duration::from_millis(retry_after)).await;
    client.call("demo.echo", json!("again")).await.unwrap();
}
