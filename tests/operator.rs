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
    assert_eq!(value("alkhub_db_errors_total{}"), 0.0);
    // The embedded default router is listed, if only with zero decisions.
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("alkhub_plugin_decisions_total{plugin=")),
        "{}",
        scraped.body
    );

    // The counters move with more calls, and a query the database refuses
    // (a duplicate id) is a database error.
    client.call("math.add", json!({"a": 1})).await.unwrap();
    let duplicate = alkhub::store::NewPrincipal {
        id: "app".into(),
        ..Default::default()
    };
    let handle = hub.handle();
    assert!(handle
        .store()
        .create_principal(PrincipalKind::Client, &duplicate)
        .await
        .is_err());
    let again = parse_openmetrics(&hub.http("GET", "/metrics", Some(&token), None).await.body);
    assert_eq!(
        again[r#"alkhub_calls_total{namespace="math",outcome="ok"}"#],
        6.0
    );
    assert_eq!(again["alkhub_db_errors_total{}"], 1.0);
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

/// Every admin route, with a body where it takes one.
const ADMIN_ROUTES: [(&str, &str, Option<&str>); 18] = [
    ("GET", "/v1/admin/sessions", None),
    ("DELETE", "/v1/admin/sessions/1", None),
    ("GET", "/v1/admin/spokes", None),
    ("POST", "/v1/admin/clients", Some(r#"{"id":"intruder"}"#)),
    ("DELETE", "/v1/admin/spokes/edge-1", None),
    ("POST", "/v1/admin/spokes/edge-1/disable", None),
    ("POST", "/v1/admin/spokes/edge-1/rotate-token", None),
    ("GET", "/v1/admin/audit", None),
    ("GET", "/v1/admin/plugins", None),
    ("POST", "/v1/admin/plugins/reload", None),
    (
        "POST",
        "/v1/admin/plugins/least-in-flight/lift-quarantine",
        None,
    ),
    ("GET", "/v1/admin/config", None),
    ("GET", "/v1/admin/imports", None),
    (
        "POST",
        "/v1/admin/imports",
        Some(r#"{"kind":"mcp","name":"x","url":"http://127.0.0.1:9/mcp"}"#),
    ),
    ("POST", "/v1/admin/imports/x/refresh", None),
    ("DELETE", "/v1/admin/imports/x", None),
    ("GET", "/v1/admin/operations", None),
    ("GET", "/v1/admin/operations/hub.operations.list", None),
];

#[tokio::test]
async fn the_admin_api_needs_the_admin_scope_and_audits_every_change() {
    let hub = common::hub().await;
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    let plain = hub.token(PrincipalKind::Client, "app", &["read"]).await;
    for (method, path, body) in ADMIN_ROUTES {
        let anonymous = hub.http(method, path, None, body).await;
        assert_eq!(anonymous.status, 401, "{method} {path}: {}", anonymous.body);
        let refused = hub.http(method, path, Some(&plain), body).await;
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.body);
        assert_eq!(refused.json()["code"], "ACCESS_DENIED");
        assert!(refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("\"admin\""));
    }
    let handle = hub.handle();
    let store = handle.store();
    assert!(store
        .get_principal(PrincipalKind::Client, "intruder")
        .await
        .unwrap()
        .is_none());

    // Add a spoke: its token, shown once, connects.
    let added = hub
        .http(
            "POST",
            "/v1/admin/spokes",
            Some(&admin),
            Some(r#"{"id":"edge-1","labels":{"region":"eu"},"scopes":["fs"]}"#),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let added = added.json();
    assert_eq!(added["principal"]["labels"]["region"], "eu");
    let token = added["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("alk_spoke_"), "{token}");
    let spoke = alkhub::peer::PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), token.clone())
        .operation(spec("edge", "ping", OperationType::Query), |_| async {
            Ok(json!("pong"))
        })
        .connect()
        .await
        .unwrap();
    let listed = hub
        .http("GET", "/v1/admin/spokes", Some(&admin), None)
        .await
        .json();
    assert_eq!(listed["principals"][0]["id"], "edge-1");
    assert!(
        !listed.to_string().contains("sha256:"),
        "no token hash is shown"
    );
    let duplicate = hub
        .http(
            "POST",
            "/v1/admin/spokes",
            Some(&admin),
            Some(r#"{"id":"edge-1"}"#),
        )
        .await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    let bad = hub
        .http(
            "POST",
            "/v1/admin/spokes",
            Some(&admin),
            Some(r#"{"id":"Not A Slug"}"#),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Its live session is listed, and closing it ends it.
    let sessions = hub
        .http("GET", "/v1/admin/sessions", Some(&admin), None)
        .await
        .json();
    let session = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "edge-1")
        .unwrap_or_else(|| panic!("{sessions}"))
        .clone();
    assert_eq!(session["kind"], "spoke");
    assert_eq!(session["labels"]["region"], "eu");
    let path = format!("/v1/admin/sessions/{}", session["sessionId"]);
    let closed = hub.http("DELETE", &path, Some(&admin), None).await;
    assert_eq!(closed.status, 204, "{}", closed.body);
    let code = tokio::time::timeout(std::time::Duration::from_secs(10), spoke.closed())
        .await
        .unwrap();
    assert_eq!(code, 1008);
    assert_eq!(
        hub.http("DELETE", &path, Some(&admin), None).await.status,
        404
    );

    // Rotate its token: the old one stops working, the new one works.
    let rotated = hub
        .http(
            "POST",
            "/v1/admin/spokes/edge-1/rotate-token",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_token = rotated.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    let find = |t: &str| {
        let t = alkhub::crypto::Token::new(t);
        async move {
            store
                .find_principal_by_token(PrincipalKind::Spoke, &t)
                .await
                .unwrap()
        }
    };
    assert!(find(&token).await.is_none(), "the old token still works");
    assert!(
        find(&new_token).await.is_some(),
        "the new token does not work"
    );

    // Disable, enable, remove.
    for action in ["disable", "enable"] {
        let path = format!("/v1/admin/spokes/edge-1/{action}");
        assert_eq!(
            hub.http("POST", &path, Some(&admin), None).await.status,
            204
        );
    }
    assert_eq!(
        hub.http(
            "POST",
            "/v1/admin/spokes/edge-1/explode",
            Some(&admin),
            None
        )
        .await
        .status,
        404
    );
    let removed = hub
        .http("DELETE", "/v1/admin/spokes/edge-1", Some(&admin), None)
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(
        hub.http("DELETE", "/v1/admin/spokes/edge-1", Some(&admin), None)
            .await
            .status,
        404
    );

    // Every change is in the audit log, newest first, with who made it.
    let audit = hub
        .http("GET", "/v1/admin/audit", Some(&admin), None)
        .await
        .json();
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(
                (e["actorKind"].as_str(), e["actorId"].as_str()),
                (Some("client"), Some("ops"))
            );
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let session_target = format!("session/{}", session["sessionId"]);
    let expected: Vec<(String, String)> = [
        ("spoke.remove", "spoke/edge-1"),
        ("spoke.enable", "spoke/edge-1"),
        ("spoke.disable", "spoke/edge-1"),
        ("spoke.rotate-token", "spoke/edge-1"),
        ("session.close", session_target.as_str()),
        ("spoke.add", "spoke/edge-1"),
    ]
    .iter()
    .map(|(a, t)| (a.to_string(), t.to_string()))
    .collect();
    assert_eq!(actions, expected);
    assert!(
        !audit.to_string().contains(&new_token),
        "no token in the audit log"
    );
    let page = hub
        .http("GET", "/v1/admin/audit?limit=2", Some(&admin), None)
        .await
        .json();
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    for limit in ["0", "1001"] {
        let path = format!("/v1/admin/audit?limit={limit}");
        let refused = hub.http("GET", &path, Some(&admin), None).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        assert!(
            refused.body.contains("limits.max_list_page"),
            "{}",
            refused.body
        );
    }
}

#[tokio::test]
async fn the_effective_configuration_is_shown_with_its_secrets_masked() {
    let hub = hub_with(|c| {
        c.plugins.settings.insert(
            "billing".into(),
            toml::from_str("api_key = 's3cret-value'\nregion = 'eu'").unwrap(),
        );
    })
    .await;
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    let shown = hub
        .http("GET", "/v1/admin/config", Some(&admin), None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let config = shown.json();
    assert_eq!(
        config["plugins"]["settings"]["billing"]["api_key"],
        "[masked]"
    );
    assert!(!shown.body.contains("s3cret-value"), "{}", shown.body);
    assert_eq!(config["admin"]["scope"], "admin");
    assert!(config["database"]["url"]
        .as_str()
        .unwrap()
        .starts_with("sqlite:"));
}

/// `alkhub ARGS` run off the runtime (the hub it talks to runs on it).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::alkhub(dir.path(), &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_principals_through_a_running_hub_with_hub_url() {
    let hub = common::hub().await;
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    let plain = hub.token(PrincipalKind::Client, "app", &[]).await;
    let url = format!("http://{}", hub.addr);
    let run = |token: &str, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--hub".into(),
            url.clone(),
            "--token".into(),
            token.to_owned(),
        ]);
        cli(all)
    };

    let (ok, out, err) = run(&admin, &["spoke", "add", "edge-2", "--label", "region=eu"]).await;
    assert!(ok, "{out}{err}");
    let token = out.lines().last().unwrap().to_owned();
    assert!(token.starts_with("alk_spoke_"), "{out}");
    let handle = hub.handle();
    let found = handle
        .store()
        .find_principal_by_token(
            PrincipalKind::Spoke,
            &alkhub::crypto::Token::new(token.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(found.map(|p| p.id).as_deref(), Some("edge-2"));

    let (ok, out, err) = run(&admin, &["spoke", "list"]).await;
    assert!(
        ok && out.contains("edge-2") && out.contains("region=eu"),
        "{out}{err}"
    );
    let (ok, out, err) = run(&admin, &["spoke", "rotate-token", "edge-2"]).await;
    assert!(ok, "{out}{err}");
    assert_ne!(out.lines().last().unwrap(), token);
    for action in ["disable", "enable", "remove"] {
        let (ok, out, err) = run(&admin, &["spoke", action, "edge-2"]).await;
        assert!(ok, "{action}: {out}{err}");
    }

    // Without the admin scope it changes nothing and says why.
    let (ok, _, err) = run(&plain, &["client", "add", "sneaky"]).await;
    assert!(!ok);
    assert!(err.contains("403") && err.contains("\"admin\""), "{err}");
    let (ok, _, err) = run(&admin, &["spoke", "remove", "edge-2"]).await;
    assert!(!ok && err.contains("404"), "{err}");

    // `alkhub admin` reads and acts through the same API.
    let (ok, out, err) = run(&admin, &["admin", "config"]).await;
    assert!(ok, "{err}");
    let config: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(config["admin"]["scope"], "admin");
    let (ok, out, err) = run(&admin, &["admin", "audit", "--limit", "2"]).await;
    assert!(ok, "{err}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    let (ok, _, err) = run(&admin, &["admin", "lift-quarantine", "nothing"]).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = cli(vec!["admin".into(), "sessions".into()]).await;
    assert!(!ok && err.contains("--hub"), "{err}");

    // An OpenAPI document in a file is sent as its text; the running hub
    // defines its operations at once.
    let docs = tempfile::tempdir().unwrap();
    let file = docs.path().join("notes.yaml");
    std::fs::write(
        &file,
        "openapi: 3.1.0\ninfo: {title: Notes, version: '1'}\npaths:\n  /notes:\n    get:\n      operationId: listNotes\n      responses: {'200': {description: ok}}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, out, err) = run(&admin, &["import", "openapi", file, "--namespace", "notes"]).await;
    assert!(ok && out.contains("added notes.listNotes"), "{out}{err}");
    assert!(handle
        .dispatcher()
        .catalog()
        .get("notes.listNotes")
        .is_some());
    let (ok, out, err) = run(&admin, &["import", "list", "--output", "json"]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["name"], "notes");
    assert_eq!(listed[0]["source"], "(sent inline)");
    let (ok, _, err) = run(&admin, &["import", "refresh", "notes"]).await;
    assert!(!ok && err.contains("send the document again"), "{err}");
    let (ok, out, err) = run(&admin, &["import", "remove", "notes"]).await;
    assert!(ok && out.contains("its 1 operations"), "{out}{err}");
    assert!(handle
        .dispatcher()
        .catalog()
        .get("notes.listNotes")
        .is_none());

    let actions = hub.audit_actions(&admin).await;
    assert_eq!(
        actions,
        [
            "import.remove",
            "import.add",
            "spoke.remove",
            "spoke.enable",
            "spoke.disable",
            "spoke.rotate-token",
            "spoke.add"
        ]
    );
}
