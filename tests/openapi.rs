//! The OpenAPI document at `GET /v1/openapi.json`: it is OpenAPI 3.1, it
//! lists every route the routers serve (and only those), and schemathesis
//! (installed by scripts/test into tests/fixtures/.venv) finds the hub
//! answering as the document says.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use alkhub::peer::spec;
use alkhub::protocol::{OperationType, PrincipalKind};
use serde_json::{json, Value};

/// Every route of `http::router`, `admin::router` and `mcp_server::router`:
/// the document must list exactly these, and each must be served. A new
/// route goes here, and its annotated handler into `openapi::ApiDoc`.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/admin/events"),
    ("get", "/ui"),
    ("get", "/ui/"),
    ("get", "/ui/{asset}"),
    ("get", "/healthz"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/v1/spokes/connect"),
    ("get", "/v1/clients/connect"),
    ("get", "/v1/operations"),
    ("get", "/v1/plugins"),
    ("post", "/v1/operations/{operation_id}/call"),
    ("post", "/v1/operations/{operation_id}/subscribe"),
    ("get", "/v1/admin/sessions"),
    ("delete", "/v1/admin/sessions/{session_id}"),
    ("get", "/v1/admin/{kind}"),
    ("post", "/v1/admin/{kind}"),
    ("delete", "/v1/admin/{kind}/{id}"),
    ("post", "/v1/admin/{kind}/{id}/disable"),
    ("post", "/v1/admin/{kind}/{id}/enable"),
    ("post", "/v1/admin/{kind}/{id}/rotate-token"),
    ("get", "/v1/admin/audit"),
    ("get", "/v1/admin/plugins"),
    ("post", "/v1/admin/plugins/reload"),
    ("post", "/v1/admin/plugins/{name}/lift-quarantine"),
    ("get", "/v1/admin/config"),
    ("get", "/v1/admin/imports"),
    ("post", "/v1/admin/imports"),
    ("post", "/v1/admin/imports/{name}/refresh"),
    ("delete", "/v1/admin/imports/{name}"),
    ("get", "/v1/admin/operations"),
    ("get", "/v1/admin/operations/{operation_id}"),
    ("get", "/mcp"),
    ("post", "/mcp"),
    ("delete", "/mcp"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every `(method, path)` of a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect()
}

async fn document(hub: &common::TestHub) -> Value {
    // No token: the document is public.
    let answer = hub.http("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        answer.headers
    );
    answer.json()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route_of_the_routers() {
    let hub = common::hub().await;
    let doc = document(&hub).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi is {version:?}");

    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = operations(&doc);
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not documented: {missing:?}; documented but not in ROUTES: {extra:?}"
    );

    // Every documented route is served: the router's own fallback (404 or
    // 405 without a body) never answers it.
    let unknown = hub.http("GET", "/v1/no-such-route", None, None).await;
    assert_eq!((unknown.status, unknown.body.as_str()), (404, ""));
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{kind}", "spokes")
            .replace("{operation_id}", "hub.operations.list")
            .replace("{session_id}", "1")
            .replace("{id}", "edge-1")
            .replace("{name}", "petstore")
            .replace("{asset}", "app.js");
        let method = method.to_ascii_uppercase();
        let answer = hub.http(&method, &concrete, None, None).await;
        assert!(
            answer.status != 405 && !(answer.status == 404 && answer.body.is_empty()),
            "{method} {concrete} is not routed: {} {:?}",
            answer.status,
            answer.body
        );
    }

    // Every operation names its statuses, has an id of its own, and says
    // whether it needs the bearer scheme the document declares.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "alkhub token",
               "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    let mut ids = BTreeSet::new();
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method];
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{method} {path}: operationId {id:?} is not unique"
        );
        let statuses = operation["responses"].as_object().unwrap();
        assert!(
            statuses.keys().any(|s| s.starts_with('2') || s == "101"),
            "{method} {path} documents no success: {statuses:?}"
        );
        for status in ["400", "408"] {
            assert!(
                statuses.contains_key(status),
                "{method} {path} lacks {status}"
            );
        }
        let open =
            ["/healthz", "/v1/openapi.json", "/ui", "/ui/", "/ui/{asset}"].contains(&path.as_str());
        assert_eq!(
            operation.get("security").is_none(),
            open,
            "{method} {path}: security {:?}",
            operation.get("security")
        );
    }
    // A body with a field the hub refuses says so.
    for schema in ["HttpCall", "AddPrincipal", "AddImport"] {
        assert_eq!(
            doc["components"]["schemas"][schema]["additionalProperties"],
            json!(false),
            "{schema}"
        );
    }
}

#[tokio::test]
async fn the_document_leaves_out_the_routes_the_configuration_switches_off() {
    let hub = common::hub_with(|c| {
        c.metrics.enabled = false;
        c.mcp.enabled = false;
    })
    .await;
    let documented = operations(&document(&hub).await);
    let paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    assert!(!paths.contains("/metrics"), "{paths:?}");
    assert!(!paths.contains("/mcp"), "{paths:?}");
    assert!(paths.contains("/healthz"), "{paths:?}");
}

/// Runs schemathesis against the running hub with an admin token: every
/// answer must be documented (status, content type, schema) and none may be
/// a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_answers_as_its_openapi_document_says() {
    let schemathesis =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/.venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: scripts/test installs schemathesis there",
        schemathesis.display()
    );
    let hub = common::hub().await;
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    // A small spoke, so that sessions, listings and operation details have
    // something to show.
    let mut echo = spec("demo", "echo", OperationType::Query);
    echo.input_schema = Some(json!({"type": "object"}));
    let _spoke = hub
        .spoke("demo")
        .await
        .label("region", "eu")
        .operation(echo, |req| async move { Ok(req.input) })
        .subscription(
            spec("demo", "ticks", OperationType::Subscription),
            |_, emitter| async move {
                for n in 0..3 {
                    emitter.emit(json!(n));
                }
                Ok(())
            },
        )
        .connect()
        .await
        .unwrap();

    let url = format!("http://{}/v1/openapi.json", hub.addr);
    let workdir = tempfile::tempdir().unwrap();
    // A call answers 502, 503 and 504 for its provider (gone, not connected,
    // too slow for the call's `timeoutMs`) as protocol 5.2 says, and the run
    // closes sessions and disables principals, the spoke's too: on the call
    // routes those are answers, not server errors. A 500 still is.
    let config = workdir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        r#"
[[operations]]
include-operation-id = ["call", "subscribe"]
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", 502, 503, 504]
"#,
    )
    .unwrap();
    let mut command = Command::new(&schemathesis);
    command
        .current_dir(workdir.path())
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &url])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        // Every check but `positive_data_acceptance`, which expects a 2xx
        // for any input the document admits: a call's `input` is checked
        // against the operation's own `inputSchema`, which the document
        // cannot know, and the WebSocket endpoints answer 400 to a request
        // that is not an upgrade.
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection,\
             missing_required_header,unsupported_method,allow_header_conformance,ignored_auth,\
             use_after_free,ensure_resource_availability",
        ])
        // `POST /v1/admin/imports` makes the hub fetch the URL in its body
        // (an OpenAPI `source`) or connect to it (an MCP `url`): fuzzed, it
        // would send traffic beyond loopback, which tests never do.
        .args(["--exclude-operation-id", "add_import"])
        // `/mcp` speaks MCP's JSON-RPC, which the document describes only
        // loosely; tests/mcp_server.rs drives it with the official client.
        .args(["--exclude-path", "/mcp"])
        // An endless stream: every request would wait out the timeout.
        .args(["--exclude-path", "/v1/admin/events"])
        .args(["--max-examples", "100"])
        // One worker: with two, schemathesis 4.32.5 sometimes fails inside
        // its own test-case generation (a KeyError in a shared cache).
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .arg("--no-color");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A failure names its request (as curl) and the run's seed: `--seed N`
    // replays the run.
    assert!(
        out.status.success(),
        "schemathesis found failures ({}, after {elapsed:?}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("schemathesis passed in {elapsed:?}:\n{stdout}");
}
