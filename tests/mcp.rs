//! MCP import against the MCP reference server
//! (`@modelcontextprotocol/server-everything`, installed by scripts/test into
//! tests/fixtures/mcp): its tools become operations the hub serves, over
//! stdio and over streamable HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alkhub::imports::mcp::{import_mcp, McpConfig};
use common::{hub, TestHub};
use serde_json::json;

fn server_script() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    );
    assert!(
        script.exists(),
        "{} is missing: scripts/test installs it (cd tests/fixtures/mcp && npm ci)",
        script.display()
    );
    script
}

/// Polls `check` for up to `secs` seconds.
async fn within<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

async fn active(hub: &TestHub, id: &str) -> bool {
    hub.statuses(id).await.iter().any(|s| s == "active")
}

async fn calls_work(hub: &TestHub) {
    let client = hub.client("agent", &[]).await;
    let out = client
        .call("everything.echo", json!({ "message": "hello hub" }))
        .await
        .unwrap();
    assert_eq!(out["meta"]["source"], "mcp");
    assert_eq!(out["meta"]["tool"], "echo");
    let text = out["data"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("hello hub"), "{out}");

    let out = client
        .call("everything.get-sum", json!({ "a": 2, "b": 40 }))
        .await
        .unwrap();
    assert!(out.to_string().contains("42"), "{out}");

    // A tool result with isError: the tool fetches a URL nothing listens on.
    let err = client
        .call(
            "everything.gzip-file-as-resource",
            json!({ "name": "x.gz", "data": "http://127.0.0.1:9/nothing", "outputType": "resource" }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "EXECUTION_ERROR", "{}", err.message);
    assert!(
        err.details.as_ref().unwrap()["content"][0]["text"].is_string(),
        "{:?}",
        err.details
    );

    // Over HTTP too.
    let token = hub
        .token(alkhub::protocol::PrincipalKind::Client, "curl", &[])
        .await;
    let r = hub
        .http(
            "POST",
            "/v1/operations/everything.echo/call",
            Some(&token),
            Some(&json!({ "input": { "message": "via http" } }).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("via http"), "{}", r.body);
}

#[tokio::test]
async fn an_mcp_server_over_stdio_is_imported_served_and_followed_across_restarts() {
    let script = server_script();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("server.pid");
    // A wrapper that records the server's pid (exec keeps it), so the test
    // can kill it; the pid file's path reaches it through the import's env.
    let config = McpConfig {
        command: Some("bash".into()),
        args: vec![
            "-c".into(),
            format!(
                "echo $$ > \"$PIDFILE\"; exec node {} stdio",
                script.display()
            ),
        ],
        env: [("PIDFILE".to_owned(), pidfile.display().to_string())].into(),
        url: None,
        ca_cert: None,
        tools: Default::default(),
    };
    let mut hub = hub().await;
    let changes = import_mcp(&hub.db.store, "everything", config)
        .await
        .unwrap();
    for id in ["everything.echo", "everything.get-sum"] {
        assert!(changes.added.iter().any(|a| a == id), "{changes:?}");
    }
    let def = hub
        .db
        .store
        .get_operation("everything.get-sum")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(def.spec.source.as_str(), "mcp");
    assert!(def.spec.input_schema.unwrap()["properties"]["a"].is_object());
    assert!(hub.statuses("everything.echo").await.is_empty());

    hub.restart().await;
    // The server adds a tool once a session is initialized and says so with
    // tools/list_changed: the hub lists the tools again and serves the new one.
    within(20, "the changed tool list is served", || async {
        active(&hub, "everything.echo").await
            && active(&hub, "everything.simulate-research-query").await
    })
    .await;
    calls_work(&hub).await;

    // Kill the server: the registrations go inactive, then come back.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    std::fs::remove_file(&pidfile).unwrap();
    std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    within(10, "the registrations go inactive", || async {
        !active(&hub, "everything.echo").await
    })
    .await;
    within(30, "the server is restarted and serves again", || async {
        pidfile.exists()
            && active(&hub, "everything.echo").await
            && active(&hub, "everything.simulate-research-query").await
    })
    .await;
    let client = hub.client("after", &[]).await;
    let out = client
        .call("everything.echo", json!({ "message": "again" }))
        .await
        .unwrap();
    assert!(out.to_string().contains("again"), "{out}");
}

/// The reference server over streamable HTTP on `port`, listening.
async fn http_server(port: u16) -> std::process::Child {
    let server = std::process::Command::new("node")
        .arg(server_script())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    within(20, "the MCP server listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    server
}

#[tokio::test]
async fn an_mcp_server_over_streamable_http_is_imported_and_served() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = http_server(port).await;
    let mut hub = common::hub_with(|c| c.imports.mcp_health_ms = 300).await;
    let config = McpConfig {
        command: None,
        args: Vec::new(),
        env: Default::default(),
        url: Some(format!("http://127.0.0.1:{port}/mcp")),
        ca_cert: None,
        tools: Default::default(),
    };
    let changes = import_mcp(&hub.db.store, "everything", config)
        .await
        .unwrap();
    assert!(changes.added.iter().any(|a| a == "everything.echo"));
    hub.restart().await;
    within(20, "the tools are served", || {
        active(&hub, "everything.echo")
    })
    .await;
    calls_work(&hub).await;

    // Killed mid-session: its operations go NO_PROVIDER; restarted (it
    // knows no session of the hub's any more): they work again, without a
    // restart of the hub.
    let _ = server.kill();
    let _ = server.wait();
    let client = hub.client("agent-2", &[]).await;
    within(20, "the dead server's tools answer NO_PROVIDER", || async {
        client
            .call("everything.echo", json!({ "message": "anyone?" }))
            .await
            .is_err_and(|e| e.code.as_str() == "NO_PROVIDER")
    })
    .await;
    let mut server = http_server(port).await;
    within(
        40,
        "the restarted server's tools are served again",
        || async {
            client
                .call("everything.echo", json!({ "message": "back" }))
                .await
                .is_ok()
        },
    )
    .await;
    let _ = server.kill();
    let _ = server.wait();
}
