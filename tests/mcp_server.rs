//! The hub as an MCP server at `/mcp`, driven by the official Python MCP
//! client (`tests/fixtures/mcp_client.py`, the `mcp` package that
//! scripts/test installs into tests/fixtures/.venv): it lists a spoke's
//! operations as tools, calls them, sees only what its token may call, and
//! hears `tools/list_changed` when spokes come and go.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use alkhub::peer::{handler_error, spec, Peer};
use alkhub::protocol::{AccessLevel, OperationSpec, OperationType, PrincipalKind};
use common::{hub, TestHub};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// The Python client, spoken to over its stdin and stdout.
struct McpClient {
    /// How many `tools/list` pages the last listing took.
    pages: u64,
    /// The protocol revision the client and the hub agreed on.
    version: String,
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl McpClient {
    async fn start(hub: &TestHub, token: &str, mode: &str) -> McpClient {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: scripts/test creates it from tests/fixtures/requirements.txt",
            python.display()
        );
        let mut child = tokio::process::Command::new(python)
            .arg(root.join("mcp_client.py"))
            .arg(format!("http://{}/mcp", hub.addr))
            .arg(token)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        McpClient {
            version: String::new(),
            pages: 0,
            stdin: child.stdin.take().unwrap(),
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            _child: child,
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("the MCP client said nothing for 30 s")
            .unwrap()
            .expect("the MCP client exited (its stderr is above)");
        serde_json::from_str(&line).unwrap()
    }

    /// The next tool listing, as a map from name to tool.
    async fn tools(&mut self) -> serde_json::Map<String, Value> {
        let event = self.next().await;
        assert_eq!(event["event"], "tools", "{event}");
        self.version = event["version"].as_str().unwrap_or_default().to_owned();
        self.pages = event["pages"].as_u64().unwrap_or_default();
        event["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
            .collect()
    }

    async fn call(&mut self, name: &str, arguments: Value) -> Value {
        let command = json!({"call": name, "arguments": arguments}).to_string() + "\n";
        self.stdin.write_all(command.as_bytes()).await.unwrap();
        let event = self.next().await;
        assert_ne!(event["event"], "tools", "{event}");
        event
    }
}

fn with_access(mut s: OperationSpec, level: AccessLevel, scopes: &[&str]) -> OperationSpec {
    s.access_level = level;
    s.required_scopes = scopes.iter().map(|s| s.to_string()).collect();
    s
}

/// A spoke with an echo query, a string-input mutation, a failing query, a
/// scoped and an internal operation.
async fn alpha(hub: &TestHub) -> Peer {
    let mut echo = spec("alpha", "echo", OperationType::Query);
    echo.description = Some("Echoes its text.".into());
    echo.input_schema = Some(json!({
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }));
    echo.output_schema = Some(json!({
        "type": "object",
        "properties": {"echo": {"type": "string"}},
    }));
    let mut shout = spec("alpha", "shout", OperationType::Mutation);
    shout.input_schema = Some(json!({"type": "string"}));
    hub.spoke("alpha")
        .await
        .operation(
            echo,
            |req| async move { Ok(json!({"echo": req.input["text"]})) },
        )
        .operation(shout, |req| async move {
            Ok(json!(req.input.as_str().unwrap_or_default().to_uppercase()))
        })
        .operation(spec("alpha", "fail", OperationType::Query), |_| async {
            Err(handler_error("TEAPOT", "I am a teapot"))
        })
        .operation(
            with_access(
                spec("alpha", "secret", OperationType::Query),
                AccessLevel::Scoped,
                &["admin"],
            ),
            |_| async { Ok(json!("the secret")) },
        )
        .operation(
            with_access(
                spec("alpha", "internal", OperationType::Query),
                AccessLevel::Internal,
                &[],
            ),
            |_| async { Ok(json!("spokes only")) },
        )
        .connect()
        .await
        .unwrap()
}

async fn beta(hub: &TestHub) -> Peer {
    hub.spoke("beta")
        .await
        .operation(spec("beta", "ping", OperationType::Query), |_| async {
            Ok(json!("pong"))
        })
        .connect()
        .await
        .unwrap()
}

fn names(tools: &serde_json::Map<String, Value>) -> Vec<&str> {
    tools.keys().map(String::as_str).collect()
}

fn text(result: &Value, block: usize) -> &str {
    result["content"][block]["text"]
        .as_str()
        .unwrap_or_default()
}

/// Lists, calls, access and list changes, for one connection mode of the
/// Python client.
async fn serves_tools_and_follows_spokes(mode: &str, version: &str) {
    // Two tools a page: the client follows `nextCursor` (limits.max_list_page).
    let mut hub = common::hub_with(|c| c.limits.max_list_page = 2).await;
    let _alpha = alpha(&hub).await;
    let token = hub.token(PrincipalKind::Client, "agent", &[]).await;
    let mut client = McpClient::start(&hub, &token, mode).await;

    let tools = client.tools().await;
    assert_eq!(client.version, version);
    assert_eq!(
        names(&tools),
        [
            "alpha.echo",
            "alpha.fail",
            "alpha.shout",
            "hub.operations.get",
            "hub.operations.list"
        ],
        "the scoped and the internal operation stay hidden"
    );
    assert_eq!(client.pages, 3, "five tools, two a page");
    let echo = &tools["alpha.echo"];
    assert_eq!(echo["description"], "Echoes its text.");
    assert_eq!(echo["inputSchema"]["properties"]["text"]["type"], "string");
    assert_eq!(echo["outputSchema"]["properties"]["echo"]["type"], "string");
    assert_eq!(echo["annotations"]["readOnlyHint"], true);
    assert_eq!(tools["alpha.shout"]["annotations"]["readOnlyHint"], false);
    assert_eq!(
        tools["alpha.shout"]["inputSchema"]["properties"]["input"],
        json!({"type": "string"})
    );

    let result = client.call("alpha.echo", json!({"text": "hi"})).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structured"], json!({"echo": "hi"}));

    let result = client.call("alpha.shout", json!({"input": "hey"})).await;
    assert_eq!(
        (result["isError"].clone(), text(&result, 0)),
        (json!(false), "HEY")
    );

    let result = client.call("alpha.echo", json!({})).await;
    assert_eq!(result["isError"], true, "{result}");
    assert!(text(&result, 0).starts_with("VALIDATION_ERROR"), "{result}");

    let result = client.call("alpha.fail", json!({})).await;
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(text(&result, 0), "TEAPOT: I am a teapot");

    for hidden in ["alpha.secret", "alpha.internal", "nothing.here"] {
        let result = client.call(hidden, json!({})).await;
        assert_eq!(result["event"], "error", "{result}");
        assert_eq!(result["code"], -32602, "{result}");
        assert!(
            result["message"].as_str().unwrap().contains(hidden),
            "{result}"
        );
    }

    // A spoke connecting adds its tools; leaving removes them.
    let beta = beta(&hub).await;
    let tools = client.tools().await;
    assert!(tools.contains_key("beta.ping"), "{:?}", names(&tools));
    let result = client.call("beta.ping", json!({})).await;
    assert_eq!(text(&result, 0), "pong", "{result}");
    beta.close();
    let tools = client.tools().await;
    assert!(!tools.contains_key("beta.ping"), "{:?}", names(&tools));
    assert!(tools.contains_key("alpha.echo"));

    // An open MCP stream does not hold the hub's shutdown up.
    tokio::time::timeout(Duration::from_secs(15), hub.shutdown())
        .await
        .expect("the hub shuts down with an MCP client connected");
}

#[tokio::test]
async fn a_session_client_lists_calls_and_hears_list_changes() {
    serves_tools_and_follows_spokes("legacy", "2025-11-25").await;
}

#[tokio::test]
async fn a_sessionless_client_lists_calls_and_hears_list_changes_on_listen() {
    serves_tools_and_follows_spokes("auto", "2026-07-28").await;
}

#[tokio::test]
async fn scopes_show_more_and_a_token_is_required() {
    let hub = hub().await;
    let _alpha = alpha(&hub).await;
    let token = hub.token(PrincipalKind::Client, "admin", &["admin"]).await;
    let mut client = McpClient::start(&hub, &token, "auto").await;
    let tools = client.tools().await;
    assert!(tools.contains_key("alpha.secret"), "{:?}", names(&tools));
    assert!(!tools.contains_key("alpha.internal"));
    let result = client.call("alpha.secret", json!({})).await;
    assert_eq!(text(&result, 0), "the secret", "{result}");

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}
    })
    .to_string();
    for bad in [None, Some("not-a-token")] {
        let r = hub.http("POST", "/mcp", bad, Some(&initialize)).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["code"], "UNAUTHENTICATED", "{}", r.body);
        let headers = r.headers.to_ascii_lowercase();
        assert!(
            headers.contains("www-authenticate: bearer realm=\"alkhub\""),
            "{headers}"
        );
        // RFC 6750: a wrong token is an invalid_token; a missing one is not.
        assert_eq!(
            headers.contains("error=\"invalid_token\""),
            bad.is_some(),
            "{headers}"
        );
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("alkhub client add"),
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn oauth_discovery_is_answered_so_clients_start_no_oauth_flow() {
    let hub = hub().await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/mcp",
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/mcp",
        "/mcp/.well-known/openid-configuration",
        "/register",
        "/authorize?response_type=code&client_id=x",
        "/token",
    ] {
        for method in ["GET", "POST"] {
            // No token: discovery is what a client does before it has one.
            let r = hub.http(method, path, None, Some("{}")).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
            let body = r.json();
            assert_eq!(body["error"], "invalid_request", "{method} {path}: {body}");
            let description = body["error_description"].as_str().unwrap();
            assert!(
                description.contains("not an OAuth authorization server"),
                "{method} {path}: {description}"
            );
        }
    }
    // Other unknown paths stay plain 404s.
    let r = hub
        .http("GET", "/.well-known/security.txt", None, None)
        .await;
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("OAuth"), "{}", r.body);

    let off = common::hub_with(|c| c.mcp.enabled = false).await;
    let r = off
        .http("GET", "/.well-known/oauth-protected-resource", None, None)
        .await;
    assert_eq!(r.status, 404);
    assert!(
        !r.body.contains("OAuth"),
        "without /mcp nothing is said: {}",
        r.body
    );
}

#[tokio::test]
async fn a_session_is_closed_by_delete_only_by_its_own_principal() {
    let hub = hub().await;
    let a = hub.token(PrincipalKind::Client, "a", &[]).await;
    let b = hub.token(PrincipalKind::Client, "b", &[]).await;
    let (status, session, _) = initialize(&hub, &a).await;
    assert_eq!(status, 200);
    let session = session.expect("a session id");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();

    // Another principal naming the session is told it does not exist.
    for method in ["POST", "DELETE"] {
        let body = if method == "POST" { list.as_str() } else { "" };
        let (status, _, answer) = mcp_request(&hub, method, &b, Some(&session), body).await;
        assert_eq!(status, 404, "{method}: {answer}");
        assert!(answer.contains("Mcp-Session-Id"), "{answer}");
    }
    // It still is a's: the DELETE above closed nothing.
    let (status, _, answer) = mcp_request(&hub, "DELETE", &a, Some(&session), "").await;
    assert_eq!(status, 202, "{answer}");
    // Once closed, it is gone for its owner too (MCP: 404 for an ended session).
    let (status, _, answer) = mcp_request(&hub, "DELETE", &a, Some(&session), "").await;
    assert_eq!(status, 404, "{answer}");
    let (status, _, answer) = mcp_request(&hub, "POST", &a, Some(&session), &list).await;
    assert_eq!(status, 404, "{answer}");
    // A DELETE naming no session cannot say which to end.
    let (status, _, answer) = mcp_request(&hub, "DELETE", &a, None, "").await;
    assert!(status == 400 || status == 405, "{status} {answer}");
}

/// A spoke `id` serving one query `namespace.name` that answers `id`.
async fn serving(hub: &TestHub, id: &str, namespace: &str, name: &str) -> Peer {
    let who = id.to_owned();
    hub.spoke(id)
        .await
        .operation(spec(namespace, name, OperationType::Query), move |_| {
            let who = who.clone();
            async move { Ok(json!(who)) }
        })
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_long_operation_id_keeps_its_own_tool_whatever_other_operations_are_named() {
    let hub = hub().await;
    // 208 characters: longer than a tool name may be.
    let long_ns = format!("long.{}", "a".repeat(200));
    let long_id = format!("{long_ns}.op");
    let _long = serving(&hub, "owner", &long_ns, "op").await;
    let hashed = alkhub::mcp_server::tool_name(&long_id).into_owned();
    assert_eq!(hashed.len(), 128);

    // The name the hub gave this tool before (its first 119 characters, a
    // dash, 8 hex digits) is a valid operation id another spoke may take.
    let digest = alkhub::crypto::sha256_hex(long_id.as_bytes());
    let old_name = format!("{}-{}", &long_id[..119], &digest[..8]);
    let (old_ns, old_op) = old_name.rsplit_once('.').unwrap();
    let _squatter = serving(&hub, "squatter", old_ns, old_op).await;

    // Declaring an operation named exactly like the hashed tool name is refused.
    let (hashed_ns, hashed_op) = hashed.rsplit_once('.').unwrap();
    let mimic = hub
        .spoke("mimic")
        .await
        .operation(
            spec(hashed_ns, hashed_op, OperationType::Query),
            |_| async { Ok(json!("mimic")) },
        )
        .connect()
        .await
        .unwrap();
    assert!(mimic.welcome().registrations.is_empty());
    assert_eq!(mimic.welcome().rejected.len(), 1);

    let token = hub.token(PrincipalKind::Client, "agent", &[]).await;
    let mut client = McpClient::start(&hub, &token, "auto").await;
    let tools = client.tools().await;
    assert!(tools.contains_key(&hashed), "{:?}", names(&tools));
    assert!(tools.contains_key(&old_name), "{:?}", names(&tools));
    assert_ne!(hashed, old_name);
    assert!(
        tools[&hashed]["description"]
            .as_str()
            .unwrap()
            .contains(&long_id),
        "{}",
        tools[&hashed]
    );

    // Each name reaches its own operation's spoke.
    let result = client.call(&hashed, json!({})).await;
    assert_eq!(text(&result, 0), "owner", "{result}");
    let result = client.call(&old_name, json!({})).await;
    assert_eq!(text(&result, 0), "squatter", "{result}");
    // A name in the hashed form that no operation has reaches nothing.
    let forged = format!("{}{}", &hashed[..96], "0".repeat(32));
    let result = client.call(&forged, json!({})).await;
    assert_eq!(result["event"], "error", "{result}");
}

/// A raw `initialize` (protocol 2025-11-25, which opens a session): the
/// status, the session id when one opened, and the body when refused.
async fn initialize(hub: &TestHub, token: &str) -> (u16, Option<String>, Value) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}
    })
    .to_string();
    let head = mcp_request(hub, "POST", token, None, &body).await;
    let (status, session, rest) = head;
    let refusal = if status == 200 {
        Value::Null
    } else {
        serde_json::from_str(&rest).unwrap_or(Value::Null)
    };
    (status, session, refusal)
}

/// One request to `/mcp`: status, `Mcp-Session-Id` and, unless the answer
/// is a 200 (an event stream, left unread), the body.
async fn mcp_request(
    hub: &TestHub,
    method: &str,
    token: &str,
    session: Option<&str>,
    body: &str,
) -> (u16, Option<String>, String) {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\nMCP-Protocol-Version: 2025-11-25\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} /mcp HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n{session}\
         Accept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no answer from /mcp")
            .unwrap();
        assert!(n > 0, "closed before the headers");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let session = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("mcp-session-id")
            .then(|| value.trim().to_owned())
    });
    if status == 200 {
        return (status, session, String::new());
    }
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the body did not end")
        .unwrap();
    let body = String::from_utf8_lossy(&raw[head_end + 4..]).into_owned();
    (status, session, body)
}

#[tokio::test]
async fn mcp_sessions_are_capped_in_total_and_per_principal() {
    let hub = common::hub_with(|c| {
        c.mcp.max_sessions = 2;
        c.mcp.max_sessions_per_principal = 1;
    })
    .await;
    let a = hub.token(PrincipalKind::Client, "a", &[]).await;
    let b = hub.token(PrincipalKind::Client, "b", &[]).await;
    let c = hub.token(PrincipalKind::Client, "c", &[]).await;

    let (status, a_session, _) = initialize(&hub, &a).await;
    assert_eq!(status, 200);
    let a_session = a_session.expect("a session id");

    // A second session of the same principal: 429, naming the key.
    let (status, session, body) = initialize(&hub, &a).await;
    assert_eq!((status, session), (429, None), "{body}");
    assert_eq!(body["code"], "OVERLOADED", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("[mcp] max_sessions_per_principal = 1") && message.contains("client:a"),
        "{message}"
    );

    let (status, _, _) = initialize(&hub, &b).await;
    assert_eq!(status, 200);

    // The hub is full: 503, naming the key.
    let (status, session, body) = initialize(&hub, &c).await;
    assert_eq!((status, session), (503, None), "{body}");
    assert_eq!(body["code"], "OVERLOADED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("[mcp] max_sessions = 2"),
        "{body}"
    );

    // Closing a session frees its place.
    let (status, _, body) = mcp_request(&hub, "DELETE", &a, Some(&a_session), "").await;
    assert!(status < 300, "{status} {body}");
    let (status, session, body) = initialize(&hub, &c).await;
    assert_eq!(status, 200, "{body}");
    assert!(session.is_some());

    // The sessionless protocol opens no session and is not refused.
    let mut client = McpClient::start(&hub, &a, "auto").await;
    let tools = client.tools().await;
    assert!(
        tools.contains_key("hub.operations.list"),
        "{:?}",
        names(&tools)
    );
}
