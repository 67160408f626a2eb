//! Validation at call time over real sockets: the provider receives only
//! input the validator judged, exactly as it judged it.

mod common;

use std::sync::{Arc, Mutex};

use alkhub::protocol::PrincipalKind;
use common::{hub, Raw, TestHub};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A schema without a top-level `type`: any value but an object passes it,
/// which is why unreadable input must never be read as `null`.
fn loose_schema() -> Value {
    json!({"properties": {"a": {"type": "string"}}})
}

/// A spoke that records the raw text of every input it is delivered.
struct RecordingSpoke {
    inputs: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn recording_spoke(hub: &TestHub) -> RecordingSpoke {
    let token = hub.token(PrincipalKind::Spoke, "checked", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(
        json!({"type": "hello", "payload": {"token": token, "operations": [
            {"namespace": "checked", "name": "take", "type": "query", "inputSchema": loose_schema()}
        ]}}),
    )
    .await;
    assert_eq!(raw.recv().await["type"], "welcome");
    let inputs: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = inputs.clone();
    let task = tokio::spawn(async move {
        let (mut sink, mut stream) = raw.ws.split();
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            #[derive(serde::Deserialize)]
            struct Frame<'a> {
                #[serde(borrow)]
                payload: Payload<'a>,
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Payload<'a> {
                request_id: String,
                #[serde(borrow)]
                input: Option<&'a serde_json::value::RawValue>,
            }
            let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
                continue;
            };
            let input = frame.payload.input.map(|i| i.get().to_owned());
            seen.lock().unwrap().push(input.clone().unwrap_or_default());
            let answer = json!({"type": "call.responded", "payload": {
                "requestId": frame.payload.request_id,
                "output": {"data": "taken"},
            }});
            use futures_util::SinkExt;
            let _ = sink.send(Message::text(answer.to_string())).await;
        }
    });
    RecordingSpoke {
        inputs,
        _task: task,
    }
}

/// `[[[...]]]`, `depth` arrays deep, inside `{"a": ...}`.
fn nested(depth: usize) -> String {
    format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn unreadable_input_is_a_validation_error_over_websocket_and_never_forwarded() {
    let hub = hub().await;
    let spoke = recording_spoke(&hub).await;
    let token = hub.token(PrincipalKind::Client, "app", &[]).await;
    let mut client = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    client
        .send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    assert_eq!(client.recv().await["type"], "welcome");

    for (request_id, input, problem) in [
        ("big", "1e400".to_owned(), "number out of range"),
        (
            "big-inside",
            r#"{"a": "x", "b": -1e400}"#.to_owned(),
            "number out of range",
        ),
        ("deep", nested(200), "limits.max_input_depth (64)"),
        (
            "deep-enough-to-fail",
            nested(65),
            "limits.max_input_depth (64)",
        ),
    ] {
        let frame = format!(
            r#"{{"type":"call.requested","payload":{{"requestId":"{request_id}","operationId":"checked.take","input":{input}}}}}"#
        );
        client.send(Message::text(frame)).await;
        let answer = client.recv().await;
        assert_eq!(answer["type"], "call.error", "{request_id}: {answer}");
        assert_eq!(answer["payload"]["requestId"], request_id);
        assert_eq!(answer["payload"]["code"], "VALIDATION_ERROR", "{answer}");
        let message = answer["payload"]["message"].as_str().unwrap();
        assert!(message.contains(problem), "{request_id}: {message}");
    }
    assert!(spoke.inputs.lock().unwrap().is_empty());

    // A schema error quotes the offending value at most 128 characters long.
    let long = "x".repeat(10_000);
    client
        .send_json(json!({"type": "call.requested", "payload": {
            "requestId": "long", "operationId": "checked.take", "input": {"a": [long]}}}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["payload"]["code"], "VALIDATION_ERROR", "{answer}");
    let quoted = answer["payload"]["details"]["errors"][0]["message"]
        .as_str()
        .unwrap();
    assert!(quoted.chars().count() <= 129, "{quoted}");

    // Input within the limits still passes.
    let frame = format!(
        r#"{{"type":"call.requested","payload":{{"requestId":"ok","operationId":"checked.take","input":{}}}}}"#,
        nested(60).replace("\"a\"", "\"b\"")
    );
    client.send(Message::text(frame)).await;
    let answer = client.recv().await;
    assert_eq!(answer["type"], "call.responded", "{answer}");
    assert_eq!(spoke.inputs.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unreadable_input_is_a_validation_error_over_http_and_never_forwarded() {
    let hub = hub().await;
    let spoke = recording_spoke(&hub).await;
    let token = hub.token(PrincipalKind::Client, "app", &[]).await;
    for (input, problem) in [
        ("1e400".to_owned(), "number out of range"),
        (nested(200), "limits.max_input_depth (64)"),
    ] {
        let body = format!(r#"{{"input": {input}}}"#);
        let response = hub
            .http(
                "POST",
                "/v1/operations/checked.take/call",
                Some(&token),
                Some(&body),
            )
            .await;
        assert_eq!(response.status, 400, "{}", response.body);
        let error = response.json();
        assert_eq!(error["code"], "VALIDATION_ERROR", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(problem),
            "{error}"
        );
    }
    assert!(spoke.inputs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_provider_receives_the_input_as_the_validator_judged_it() {
    let hub = hub().await;
    let spoke = recording_spoke(&hub).await;
    let token = hub.token(PrincipalKind::Client, "app", &[]).await;
    let mut client = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    client
        .send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    assert_eq!(client.recv().await["type"], "welcome");
    // Duplicate keys: the validator reads the last `a` (a string, valid); a
    // provider reading the first would see a number the schema forbids.
    client
        .send(Message::text(
            r#"{"type":"call.requested","payload":{"requestId":"dup","operationId":"checked.take","input":{"a": 5, "a": "x"}}}"#,
        ))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["type"], "call.responded", "{answer}");
    let inputs = spoke.inputs.lock().unwrap().clone();
    assert_eq!(inputs, [r#"{"a":"x"}"#]);
}
