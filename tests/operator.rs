//! The operator's surface: `GET /metrics`, scraped after known traffic and
//! parsed with the Prometheus project's own Python parser (installed by
//! scripts/test into tests/fixtures/.venv).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use alkhub::peer::{handler_error, spec};
use alkhub::protocol::{OperationType, PrincipalKind};
use common::hub_with;
use serde_json::{json, Value};

/// Every sample of an OpenMetrics text, as parsed by `prometheus_client`'s
/// OpenMetrics parser (which refuses anything malformed): the sample name
/// and its labels (`name{k="v",...}`, labels sorted) to its value.
fn parse_openmetrics(text: &str) -> BTreeMap<String, f64> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs prometheus_client there",
        python.display()
    );
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn metrics_count_the_calls_made_and_parse_as_openmetrics() {
    // Two namespaces get labels of their own; the third shares `_other`.
    let hub = hub_with(|c| c.metrics.max_namespaces = 2).await;
    let _worker = hub
        .spoke("worker")
        .await
        .operation(
            spec("math", "add", OperationType::Query),
            |req| async move { Ok(json!(req.input["a"].as_i64().unwrap_or(0) + 1)) },
        )
        .operation(spec("math", "fail", OperationType::Query), |_| async {
            Err(handler_error("CARD_DECLINED", "declined"))
        })
        .operation(spec("text", "upper", OperationType::Query), |_| async {
            Ok(json!("UP"))
        })
        .operation(spec("extra", "one", OperationType::Query), |_| async {
            Ok(json!(1))
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    for a in 0..5 {
        client.call("math.add", json!({"a": a})).await.unwrap();
    }
    for _ in 0..2 {
        let e = client.call("math.fail", Value::Null).await.unwrap_err();
        assert_eq!(e.code, "CARD_DECLINED");
    }
    for _ in 0..3 {
        client.call("text.upper", Value::Null).await.unwrap();
    }
    client.call("extra.one", Value::Null).await.unwrap();
    let missing = client.call("no.such", Value::Null).await.unwrap_err();
    assert_eq!(missing.code, "OPERATION_NOT_FOUND");

    let refused = hub.http("GET", "/metrics", None, None).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let token = hub.token(PrincipalKind::Client, "prometheus", &[]).await;
    let scraped = hub.http("GET", "/metrics", Some(&token), None).await;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(
        scraped
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        scraped.headers
    );
    let samples = parse_openmetrics(&scraped.body);
    let value = |key: &str| {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in:\n{}", scraped.body))
    };
    let calls = |namespace: &str, outcome: &str| {
        value(&format!(
            r#"alkhub_calls_total{{namespace="{namespace}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(calls("math", "ok"), 5.0);
    assert_eq!(calls("math", "PROVIDER_CODE"), 2.0);
    assert_eq!(calls("text", "ok"), 3.0);
    assert_eq!(
        calls("_other", "ok"),
        1.0,
        "a third namespace shares _other"
    );
    assert_eq!(
        calls("_other", "OPERATION_NOT_FOUND"),
        1.0,
        "an id that names nothing claims no label"
    );
    assert!(!scraped.body.contains(r#"namespace="no""#));
    // The latency histogram counts every call of its namespace, and every
    // call falls in the +Inf bucket.
    let count = |namespace: &str| {
        value(&format!(
            r#"alkhub_call_duration_seconds_count{{namespace="{namespace}"}}"#
        ))
    };
    assert_eq!(count("math"), 7.0);
    assert_eq!(count("text"), 3.0);
    assert_eq!(count("_other"), 2.0);
    assert_eq!(
        value(r#"alkhub_call_duration_seconds_bucket{le="+Inf",namespace="math"}"#),
        7.0
    );
    assert_eq!(value("alkhub_calls_in_flight{}"), 0.0);
    assert_eq!(value(r#"alkhub_sessions{kind="spoke"}"#), 1.0);
    assert_eq!(value(r#"alkhub_sessions{kind="client"}"#), 1.0);
    assert_eq!(value("alkhub_registrations_active{}"), 4.0);
    assert!(value("alkhub_operations{}") >= 4.0);
    assert!(value("alkhub_db_pool_max_connections{}") >= 1.0);
    // The embedded default router is listed, if only with zero decisions.
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("alkhub_plugin_decisions_total{plugin=")),
        "{}",
        scraped.body
    );

    // The counters move with more calls.
    client.call("math.add", json!({"a": 1})).await.unwrap();
    let again = parse_openmetrics(&hub.http("GET", "/metrics", Some(&token), None).await.body);
    assert_eq!(
        again[r#"alkhub_calls_total{namespace="math",outcome="ok"}"#],
        6.0
    );
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let hub = hub_with(|c| c.metrics.enabled = false).await;
    let token = hub.token(PrincipalKind::Client, "prometheus", &[]).await;
    assert_eq!(
        hub.http("GET", "/metrics", Some(&token), None).await.status,
        404
    );
}
