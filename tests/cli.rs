//! The `alkhub` binary as an operator uses it: admin commands, config errors,
//! and `serve` answering `/healthz`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn alkhub(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("ALKHUB_CONFIG")
        .env_remove("ALKHUB_DATABASE_URL")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn spoke_add_prints_the_token_last_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let out = alkhub(
        dir.path(),
        &[
            "spoke",
            "add",
            "devbox",
            "--label",
            "region=eu",
            "--scopes",
            "fs,chat",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let token = text.lines().last().unwrap().trim().to_owned();
    assert!(
        token.starts_with("alk_spoke_") && token.len() > 40,
        "{text}"
    );

    let list = alkhub(dir.path(), &["spoke", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let listed = stdout(&list);
    assert!(
        listed.contains("devbox") && listed.contains("region=eu") && listed.contains("fs,chat"),
        "{listed}"
    );
    assert!(!listed.contains(&token));
    let json = alkhub(dir.path(), &["spoke", "list", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json[0]["id"], "devbox");
    assert_eq!(json[0]["labels"]["region"], "eu");
    assert_eq!(json[0]["scopes"], serde_json::json!(["fs", "chat"]));
    let imports = alkhub(dir.path(), &["import", "list", "--output", "json"]);
    assert_eq!(stdout(&imports).trim(), "[]", "{}", stderr(&imports));

    // The database (and its WAL, if any) holds the hash, never the token.
    let mut found_hash = false;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let haystack = String::from_utf8_lossy(&bytes);
        assert!(
            !haystack.contains(&token[10..]),
            "the token leaked into a file"
        );
        found_hash |= haystack.contains("sha256:");
    }
    assert!(found_hash, "the hash was not stored");

    let client = alkhub(dir.path(), &["client", "add", "ci-bot", "--scopes", "fs"]);
    assert!(stdout(&client)
        .lines()
        .last()
        .unwrap()
        .starts_with("alk_client_"));
    let removed = alkhub(dir.path(), &["spoke", "remove", "devbox"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(!stdout(&alkhub(dir.path(), &["spoke", "list"])).contains("devbox"));
}

#[test]
fn bad_ids_and_duplicates_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = alkhub(dir.path(), &["spoke", "add", "Dev_Box"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid id \"Dev_Box\""),
        "{}",
        stderr(&bad)
    );

    assert!(alkhub(dir.path(), &["client", "add", "app"])
        .status
        .success());
    let dup = alkhub(dir.path(), &["client", "add", "app"]);
    assert!(!dup.status.success());
    assert!(
        stderr(&dup).contains("client \"app\" already exists"),
        "{}",
        stderr(&dup)
    );

    let missing = alkhub(dir.path(), &["client", "remove", "nobody"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("\"nobody\" not found"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad-key.toml"),
        "[limits]\nmax_frames = 1\n",
    )
    .unwrap();
    let out = alkhub(dir.path(), &["--config", "bad-key.toml", "spoke", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad-key.toml") && err.contains("max_frames"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("bad-type.toml"),
        "[database]\nmax_connections = \"many\"\n",
    )
    .unwrap();
    let out = alkhub(dir.path(), &["--config", "bad-type.toml", "spoke", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad-type.toml") && err.contains("database.max_connections"),
        "{err}"
    );

    let out = alkhub(dir.path(), &["--config", "absent.toml", "spoke", "list"]);
    assert!(stderr(&out).contains("absent.toml"), "{}", stderr(&out));
}

#[test]
fn config_defaults_prints_a_file_the_hub_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = alkhub(dir.path(), &["config", "defaults"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("listen = \"127.0.0.1:7700\"") && text.contains("# "),
        "{text}"
    );
    std::fs::write(dir.path().join("alkhub.toml"), &text).unwrap();
    let show = alkhub(
        dir.path(),
        &["config", "show", "--database-url", "sqlite://other.db"],
    );
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(stdout(&show).contains("sqlite://other.db"));
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response)
}

#[test]
fn serve_with_no_configuration_creates_its_database_and_answers_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            if line.contains("listening") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        }
    };
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(dir.path().join("alkhub.db").exists());

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "serve did not exit cleanly on SIGTERM: {status}"
    );
}

#[tokio::test]
async fn call_and_ops_list_reach_a_running_hub() {
    use alkhub::peer::{spec, PeerBuilder};
    use alkhub::protocol::{OperationType, PrincipalKind};
    use alkhub::store::NewPrincipal;

    let dir = tempfile::tempdir().unwrap();
    let mut config = alkhub::config::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let running = alkhub::server::start(config).await.unwrap();
    let store = running.hub().store().clone();
    let token = |kind, id: &str| {
        let store = store.clone();
        let new = NewPrincipal {
            id: id.to_owned(),
            ..Default::default()
        };
        async move {
            store
                .create_principal(kind, &new)
                .await
                .unwrap()
                .1
                .expose()
                .to_owned()
        }
    };
    let spoke_token = token(PrincipalKind::Spoke, "devbox").await;
    let client_token = token(PrincipalKind::Client, "cli").await;
    let _spoke = PeerBuilder::new(
        format!("ws://{}/v1/spokes/connect", running.addr),
        spoke_token,
    )
    .operation(
        spec("demo", "echo", OperationType::Query),
        |req| async move { Ok(req.input) },
    )
    .connect()
    .await
    .unwrap();
    let url = format!("http://{}", running.addr);
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            alkhub(&dir, &args)
        })
    };
    let out = run(vec![
        "call".into(),
        "demo.echo".into(),
        "--input".into(),
        r#"{"hello":"world"}"#.into(),
        "--token".into(),
        client_token.clone(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let output: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(output["data"]["hello"], "world");

    let out = run(vec![
        "ops".into(),
        "list".into(),
        "--token".into(),
        client_token.clone(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(
        stdout(&out).contains("demo.echo\tquery"),
        "{}",
        stdout(&out)
    );
    let out = run(vec![
        "ops".into(),
        "list".into(),
        "--output".into(),
        "json".into(),
        "--token".into(),
        client_token.clone(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let echo = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "demo.echo")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        (echo["type"].as_str(), echo["activeRegistrations"].as_u64()),
        (Some("query"), Some(1))
    );

    let out = run(vec![
        "call".into(),
        "demo.missing".into(),
        "--token".into(),
        client_token,
        "--url".into(),
        url,
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("OPERATION_NOT_FOUND"),
        "{}",
        stderr(&out)
    );
    running.shutdown().await.unwrap();
}
