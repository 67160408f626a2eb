//! The peer conformance scenarios of `sdk/conformance.md`, passed by the
//! Rust peer (`alkhub::peer`) against a real hub; the TypeScript and Python
//! SDKs pass the same list in their own suites (run by `tests/sdks.rs`).
//! Each test is named by its scenario id.

mod common;

use std::time::Duration;

use alkhub::peer::{
    handler_error, spec, Backoff, CallOptions, HttpCaller, Peer, PeerBuilder, PeerError,
};
use alkhub::protocol::{AccessLevel, OperationType, PrincipalKind};
use common::{OnDrop, TestHub};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The conformance spoke's operations under `conf.`; `aborted` hears the
/// name of every handler whose task ended without finishing.
fn conformance_spoke(
    builder: PeerBuilder,
    aborted: mpsc::UnboundedSender<&'static str>,
) -> PeerBuilder {
    let mut echo = spec("conf", "echo", OperationType::Query);
    echo.description = Some("Returns its input.".into());
    echo.input_schema = Some(json!({"type": "object"}));
    echo.output_schema = Some(json!({"type": "object"}));
    let mut strict = spec("conf", "strict", OperationType::Query);
    strict.input_schema = Some(json!({
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"]
    }));
    let mut secret = spec("conf", "secret", OperationType::Query);
    secret.access_level = AccessLevel::Scoped;
    secret.required_scopes = vec!["secret".into()];
    let slow_aborted = aborted.clone();
    let ticks_aborted = aborted.clone();
    builder
        .operation(echo, |req| async move { Ok(req.input) })
        .operation(strict, |req| async move { Ok(req.input) })
        .operation(secret, |_| async move { Ok(json!("the secret")) })
        .operation(
            spec("conf", "write", OperationType::Mutation),
            |req| async move { Ok(json!({"written": req.input})) },
        )
        .operation(spec("conf", "slow", OperationType::Query), move |_| {
            let guard = OnDrop::new(slow_aborted.clone(), "slow");
            async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(guard);
                Ok(json!("never"))
            }
        })
        .operation(spec("conf", "fail", OperationType::Query), |_| async move {
            let mut e = handler_error("CONF_FAILED", "it failed on purpose");
            e.details = Some(json!({"why": "a test"}));
            Err(e)
        })
        .operation(
            spec("conf", "failplain", OperationType::Query),
            |_| async move { Err(handler_error("", "no code given")) },
        )
        .operation(
            spec("conf", "parent", OperationType::Query),
            |req| async move {
                let options = CallOptions {
                    parent_request_id: Some(req.request_id.clone()),
                    ..CallOptions::default()
                };
                req.peer.call_with("conf.slow", json!({}), options).await
            },
        )
        .subscription(
            spec("conf", "ticks", OperationType::Subscription),
            move |req, emitter| {
                let guard = OnDrop::new(ticks_aborted.clone(), "ticks");
                async move {
                    let count = req.input["count"].as_u64().unwrap_or(3);
                    let every = req.input["everyMs"].as_u64().unwrap_or(10);
                    for i in 1..=count {
                        emitter.emit(json!({"tick": i}));
                        tokio::time::sleep(Duration::from_millis(every)).await;
                    }
                    std::mem::forget(guard);
                    Ok(())
                }
            },
        )
        .subscription(
            spec("conf", "failstream", OperationType::Subscription),
            |_, emitter| async move {
                emitter.emit(json!(1));
                emitter.emit(json!(2));
                Err(handler_error("STREAM_BROKE", "after two"))
            },
        )
        .subscription(
            spec("conf", "quiet", OperationType::Subscription),
            |_, emitter| async move {
                emitter.emit(json!("first"));
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            },
        )
}

/// A hub, a connected conformance spoke and a client without scopes.
struct Setup {
    hub: TestHub,
    spoke: Peer,
    client: Peer,
    client_token: String,
    aborted: mpsc::UnboundedReceiver<&'static str>,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(configure: impl FnOnce(&mut alkhub::config::Config)) -> Setup {
    let hub = common::hub_with(configure).await;
    let (tx, aborted) = mpsc::unbounded_channel();
    let spoke = conformance_spoke(hub.spoke("conformance").await, tx)
        .connect()
        .await
        .unwrap();
    assert!(
        spoke.welcome().rejected.is_empty(),
        "{:?}",
        spoke.welcome().rejected
    );
    let client_token = hub.token(PrincipalKind::Client, "caller", &[]).await;
    let client = PeerBuilder::new(hub.ws_url(PrincipalKind::Client), &client_token)
        .connect()
        .await
        .unwrap();
    Setup {
        hub,
        spoke,
        client,
        client_token,
        aborted,
    }
}

/// The data of an output envelope.
fn data(envelope: Result<Value, PeerError>) -> Value {
    envelope.expect("a result")["data"].clone()
}

fn deadline_in(ms: u64) -> u64 {
    alkhub::connection::now_ms() + ms
}

#[tokio::test]
async fn c01_connect() {
    let s = setup().await;
    for peer in [&s.spoke, &s.client] {
        let welcome = peer.welcome();
        assert!(!welcome.session_id.is_empty());
        assert!(welcome.heartbeat_ms > 0);
    }
    let refused = PeerBuilder::new(s.hub.ws_url(PrincipalKind::Client), "alk_client_wrong")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(refused.code, "UNAUTHENTICATED", "{refused}");
    // A kept connection stops at once on a refused token instead of retrying.
    let kept = PeerBuilder::new(s.hub.ws_url(PrincipalKind::Spoke), "alk_spoke_wrong")
        .keep_connected(Backoff::default());
    let ended = tokio::time::timeout(Duration::from_secs(10), kept.ended())
        .await
        .expect("ended");
    assert_eq!(ended.code, "UNAUTHENTICATED", "{ended}");
}

#[tokio::test]
async fn c02_declare() {
    let s = setup().await;
    let got = s
        .client
        .call("hub.operations.get", json!({"operationId": "conf.echo"}))
        .await
        .unwrap();
    let op = &got["data"];
    assert_eq!(op["type"], "query", "{op}");
    assert_eq!(op["description"], "Returns its input.");
    assert_eq!(op["inputSchema"], json!({"type": "object"}));
    assert_eq!(op["outputSchema"], json!({"type": "object"}));
    assert_eq!(op["activeRegistrations"], 1, "{op}");
    for (id, kind) in [("conf.write", "mutation"), ("conf.ticks", "subscription")] {
        let got = s
            .client
            .call("hub.operations.get", json!({"operationId": id}))
            .await
            .unwrap();
        assert_eq!(got["data"]["type"], kind, "{got}");
    }
    let admin = s.hub.client("admin", &["secret"]).await;
    let secret = admin
        .call("hub.operations.get", json!({"operationId": "conf.secret"}))
        .await
        .unwrap();
    assert_eq!(secret["data"]["accessLevel"], "scoped", "{secret}");
    assert_eq!(secret["data"]["requiredScopes"], json!(["secret"]));
}

#[tokio::test]
async fn c03_query() {
    let s = setup().await;
    let input = json!({"hello": "world", "n": [1, 2]});
    assert_eq!(data(s.client.call("conf.echo", input.clone()).await), input);
}

#[tokio::test]
async fn c04_mutation() {
    let s = setup().await;
    let out = data(s.client.call("conf.write", json!({"k": "v"})).await);
    assert_eq!(out, json!({"written": {"k": "v"}}));
}

#[tokio::test]
async fn c05_subscription() {
    let s = setup().await;
    let mut sub = s
        .client
        .subscribe("conf.ticks", json!({"count": 4}), CallOptions::default());
    let mut ticks = Vec::new();
    while let Some(event) = sub.next().await {
        ticks.push(data(event)["tick"].as_u64().unwrap());
    }
    assert_eq!(ticks, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn c06_caller_abort() {
    let mut s = setup().await;
    // A query: the caller stops waiting (drops the call).
    let call = s.client.call("conf.slow", json!({}));
    assert!(tokio::time::timeout(Duration::from_millis(300), call)
        .await
        .is_err());
    assert_eq!(common::recv_within(&mut s.aborted).await, "slow");
    // A subscription: the caller aborts after the first event.
    let mut sub = s.client.subscribe(
        "conf.ticks",
        json!({"count": 1000, "everyMs": 20}),
        CallOptions::default(),
    );
    data(sub.next().await.unwrap());
    sub.abort();
    assert_eq!(common::recv_within(&mut s.aborted).await, "ticks");
}

#[tokio::test]
async fn c07_provider_error() {
    let s = setup().await;
    let e = s.client.call("conf.fail", json!({})).await.unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.message.as_str(), e.details),
        (
            "CONF_FAILED",
            "it failed on purpose",
            Some(json!({"why": "a test"}))
        )
    );
    let e = s
        .client
        .call("conf.failplain", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "EXECUTION_ERROR", "{e}");
    let mut sub = s
        .client
        .subscribe("conf.failstream", json!({}), CallOptions::default());
    assert_eq!(data(sub.next().await.unwrap()), json!(1));
    assert_eq!(data(sub.next().await.unwrap()), json!(2));
    let e = sub.next().await.unwrap().unwrap_err();
    assert_eq!(e.code, "STREAM_BROKE", "{e}");
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn c08_deadline() {
    let mut s = setup().await;
    let options = CallOptions {
        deadline: Some(deadline_in(300)),
        ..CallOptions::default()
    };
    let e = s
        .client
        .call_with("conf.slow", json!({}), options)
        .await
        .unwrap_err();
    assert_eq!(e.code, "TIMEOUT", "{e}");
    assert_eq!(common::recv_within(&mut s.aborted).await, "slow");
}

#[tokio::test]
async fn c09_idle_timeout() {
    let s = setup().await;
    let options = CallOptions {
        idle_timeout: Some(300),
        ..CallOptions::default()
    };
    let mut sub = s.client.subscribe("conf.quiet", json!({}), options);
    assert_eq!(data(sub.next().await.unwrap()), json!("first"));
    let e = sub.next().await.unwrap().unwrap_err();
    assert_eq!(e.code, "TIMEOUT", "{e}");
}

#[tokio::test]
async fn c10_parent_call() {
    let mut s = setup().await;
    // conf.parent calls conf.slow as its child; aborting it ends both.
    let outer = s.client.call("conf.parent", json!({}));
    assert!(tokio::time::timeout(Duration::from_millis(500), outer)
        .await
        .is_err());
    assert_eq!(common::recv_within(&mut s.aborted).await, "slow");
}

#[tokio::test]
async fn c11_reconnect() {
    let mut hub = common::hub().await;
    let token = hub.token(PrincipalKind::Spoke, "kept", &[]).await;
    let (tx, _aborted) = mpsc::unbounded_channel();
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let kept = conformance_spoke(
        PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), &token),
        tx,
    )
    .keep_connected(backoff);
    let first = kept.connected().await.unwrap();
    let first_session = first.welcome().session_id;

    // The hub stops and starts again on the same address and database.
    hub.config.server.listen = hub.addr;
    hub.restart().await;
    let client = hub.client("caller", &[]).await;
    let mut answered = None;
    for _ in 0..200 {
        match client.call("conf.echo", json!({"back": true})).await {
            Ok(envelope) => {
                answered = Some(envelope["data"].clone());
                break;
            }
            Err(e) => assert_eq!(e.code, "NO_PROVIDER", "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, Some(json!({"back": true})));
    let second = kept.connected().await.unwrap();
    assert_ne!(second.welcome().session_id, first_session);
}

#[tokio::test]
async fn c12_supersede() {
    let hub = common::hub().await;
    let token = hub.token(PrincipalKind::Spoke, "twice", &[]).await;
    let (tx, _aborted) = mpsc::unbounded_channel();
    let url = hub.ws_url(PrincipalKind::Spoke);
    let kept = conformance_spoke(PeerBuilder::new(&url, &token), tx.clone())
        .keep_connected(Backoff::default());
    kept.connected().await.unwrap();
    let newer = conformance_spoke(PeerBuilder::new(&url, &token), tx)
        .connect()
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), kept.ended())
        .await
        .expect("the older session ends");
    assert_eq!(ended.details, Some(json!({"closeCode": 4409})), "{ended}");
    // It did not come back to take over: the newer one still serves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(kept.current().is_none());
    assert_eq!(newer.close_code(), None);
}

#[tokio::test]
async fn c13_errors_by_code() {
    let s = setup().await;
    let code = |r: Result<Value, PeerError>| r.unwrap_err().code;
    assert_eq!(
        code(s.client.call("conf.nope", json!({})).await),
        "OPERATION_NOT_FOUND"
    );
    assert_eq!(
        code(s.client.call("conf.secret", json!({})).await),
        "ACCESS_DENIED"
    );
    let invalid = s
        .client
        .call("conf.strict", json!({"n": "x"}))
        .await
        .unwrap_err();
    assert_eq!(invalid.code, "VALIDATION_ERROR");
    let errors = &invalid.details.expect("details")["errors"];
    assert_eq!(errors[0]["instancePath"], "/n", "{errors}");
    // A definition whose provider left.
    let (tx, _aborted) = mpsc::unbounded_channel();
    let mut gone = spec("gone", "away", OperationType::Query);
    gone.description = Some("declared, then left".into());
    let leaving = conformance_spoke(s.hub.spoke("leaving").await, tx)
        .operation(gone, |_| async move { Ok(json!(null)) })
        .connect()
        .await
        .unwrap();
    leaving.close();
    leaving.closed().await;
    common::eventually("gone.away has no provider", || async {
        s.client
            .call("gone.away", json!({}))
            .await
            .err()
            .map(|e| e.code)
            == Some("NO_PROVIDER".into())
    })
    .await;
}

#[tokio::test]
async fn c14_heartbeat() {
    let s = setup_with(|c| c.limits.heartbeat_ms = 100).await;
    assert_eq!(s.client.welcome().heartbeat_ms, 100);
    // Five intervals and more without a frame from either peer's code.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!((s.spoke.close_code(), s.client.close_code()), (None, None));
    assert_eq!(
        data(s.client.call("conf.echo", json!({"still": 1})).await),
        json!({"still": 1})
    );
}

#[tokio::test]
async fn c15_http() {
    let s = setup().await;
    let http = HttpCaller::new(
        format!("http://{}", s.hub.addr),
        Some(s.client_token.clone()),
    );
    assert_eq!(
        data(http.call("conf.echo", json!({"via": "http"}), None).await),
        json!({"via": "http"})
    );
    let mut sub = http
        .subscribe("conf.ticks", json!({"count": 3}), None)
        .await
        .unwrap();
    let mut ticks = Vec::new();
    while let Some(event) = sub.next().await {
        ticks.push(data(event)["tick"].as_u64().unwrap());
    }
    assert_eq!(ticks, vec![1, 2, 3]);
    let e = http.call("conf.fail", json!({}), None).await.unwrap_err();
    assert_eq!(
        (e.code.as_str(), e.details),
        ("CONF_FAILED", Some(json!({"why": "a test"})))
    );
    let e = http.call("conf.nope", json!({}), None).await.unwrap_err();
    assert_eq!(e.code, "OPERATION_NOT_FOUND");
    let e = http
        .call("conf.slow", json!({}), Some(200))
        .await
        .unwrap_err();
    assert_eq!(e.code, "TIMEOUT");
    let mut failing = http
        .subscribe("conf.failstream", json!({}), None)
        .await
        .unwrap();
    assert_eq!(data(failing.next().await.unwrap()), json!(1));
    assert_eq!(data(failing.next().await.unwrap()), json!(2));
    assert_eq!(
        failing.next().await.unwrap().unwrap_err().code,
        "STREAM_BROKE"
    );
    // An error event without details says so: `details` is null (5.3).
    let raw = s
        .hub
        .http(
            "POST",
            "/v1/operations/conf.failplain/subscribe",
            Some(&s.client_token),
            Some("{}"),
        )
        .await;
    let data_line = raw
        .body
        .lines()
        .find(|l| l.starts_with("data: {\"code\""))
        .unwrap();
    let error: Value = serde_json::from_str(&data_line["data: ".len()..]).unwrap();
    assert_eq!(error["code"], "EXECUTION_ERROR", "{}", raw.body);
    assert_eq!(error.get("details"), Some(&Value::Null), "{}", raw.body);
    let anonymous = HttpCaller::new(format!("http://{}", s.hub.addr), None);
    let e = anonymous
        .call("conf.echo", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "UNAUTHENTICATED");
}

/// The scenario ids of `sdk/conformance.md`.
fn scenario_ids() -> Vec<String> {
    let list = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/conformance.md"))
        .unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter_map(|l| l.strip_prefix("| C"))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(digits, _)| format!("C{digits}"))
        .collect();
    assert!(ids.len() >= 15, "{ids:?}");
    ids
}

#[test]
fn every_suite_names_every_scenario() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read_dir = |dir: &str| -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        text
    };
    let suites = [
        ("Rust", read_dir("tests"), "async fn {lower}_"),
        (
            "TypeScript",
            read_dir("sdk/typescript/test"),
            "test(\"{id} ",
        ),
        ("Python", read_dir("sdk/python/tests"), "def test_{lower}_"),
    ];
    for id in scenario_ids() {
        let lower = id.to_lowercase();
        for (suite, text, pattern) in &suites {
            let needle = pattern.replace("{lower}", &lower).replace("{id}", &id);
            assert!(
                text.contains(&needle),
                "the {suite} suite has no test {needle}… for {id}"
            );
        }
    }
}
