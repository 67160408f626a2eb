//! The dashboard at `/ui`, driven in real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, through Selenium) by
//! `tests/fixtures/dashboard/drive.py`, while this test runs the hub, a
//! spoke and a caller. Screenshots of every step are saved under the cargo
//! target directory's `tmp/dashboard/` (`CARGO_TARGET_TMPDIR`).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alkhub::peer::{spec, PeerBuilder};
use alkhub::protocol::{OperationType, PrincipalKind};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_spoke_its_calls_and_closes_its_session_in_a_real_browser() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let python = fixtures.join(".venv/bin/python");
    for (path, how) in [
        (
            python.as_path(),
            "scripts/test installs Selenium there (tests/fixtures/requirements.txt)",
        ),
        (
            Path::new("/usr/bin/chromium"),
            ".ci/run installs it: apt-get install chromium chromium-driver",
        ),
        (
            Path::new("/usr/bin/chromedriver"),
            ".ci/run installs it: apt-get install chromium-driver",
        ),
    ] {
        assert!(path.exists(), "{} is missing: {how}", path.display());
    }
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let _ = std::fs::remove_dir_all(&artifacts);

    let hub = common::hub().await;
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    let spoke_token = hub.token(PrincipalKind::Spoke, "edge-1", &[]).await;
    let mut driver = tokio::process::Command::new(&python)
        .arg(fixtures.join("dashboard/drive.py"))
        .arg(format!("http://{}", hub.addr))
        .arg(&admin)
        .arg(&artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the browser driver");
    let mut to_driver = driver.stdin.take().unwrap();
    let mut from_driver = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut driver_errors = BufReader::new(driver.stderr.take().unwrap());
    let stderr = tokio::spawn(async move {
        let mut all = String::new();
        let mut line = String::new();
        while driver_errors.read_line(&mut line).await.unwrap_or(0) > 0 {
            all.push_str(&line);
            line.clear();
        }
        all
    });
    // Waits for the driver to report `step`; on anything else, fails with
    // what it printed.
    macro_rules! expect_step {
        ($step:expr) => {{
            let line = from_driver.next_line().await.unwrap();
            if line.as_deref() != Some($step) {
                let _ = driver.wait().await;
                panic!(
                    "the browser driver said {line:?}, not {:?}:\n{}\n(screenshots in {})",
                    $step,
                    stderr.await.unwrap(),
                    artifacts.display()
                );
            }
        }};
    }
    async fn tell(to: &mut tokio::process::ChildStdin, line: &str) {
        to.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        to.flush().await.unwrap();
    }

    expect_step!("signed-in");
    let spoke = PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), spoke_token)
        .label("region", "eu")
        .operation(
            spec("edge", "echo", OperationType::Query),
            |request| async move { Ok(request.input) },
        )
        .connect()
        .await
        .unwrap();
    tell(&mut to_driver, "spoke-connected").await;
    expect_step!("seen");

    // Calls run until the page has seen them counted.
    let caller = hub.client("app", &[]).await;
    let calling = Arc::new(AtomicBool::new(true));
    let made = {
        let calling = calling.clone();
        tokio::spawn(async move {
            let mut made = 0u64;
            while calling.load(Ordering::Relaxed) {
                let out = caller.call("edge.echo", json!({"n": made})).await.unwrap();
                assert_eq!(out["data"]["n"], made);
                made += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            made
        })
    };
    tell(&mut to_driver, "calling").await;
    expect_step!("counted");
    calling.store(false, Ordering::Relaxed);
    let made = made.await.unwrap();
    assert!(made >= 20, "{made} calls");

    tell(&mut to_driver, "close").await;
    expect_step!("closed");
    // The page's button closed the spoke's session, as an operator, audited.
    assert_eq!(spoke.closed().await, 1008);
    let audit = hub
        .http("GET", "/v1/admin/audit", Some(&admin), None)
        .await
        .json();
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "session.close");
    assert_eq!(entry["actorId"], "ops");
    assert_eq!(entry["detail"]["id"], "edge-1");

    tell(&mut to_driver, "done").await;
    let status = driver.wait().await.unwrap();
    assert!(status.success(), "{}", stderr.await.unwrap());
    for shot in [
        "02-signed-in",
        "04-operation-listed",
        "05-calls-counted",
        "07-session-closed",
    ] {
        let file = artifacts.join(format!("{shot}.png"));
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
    }
}

#[tokio::test]
async fn the_event_stream_needs_the_admin_scope_and_counts_against_the_stream_limit() {
    let hub = common::hub_with(|c| {
        c.limits.max_sse_streams_per_principal = 1;
        c.admin.dashboard_rows = 1;
    })
    .await;
    let admin = hub.token(PrincipalKind::Client, "ops", &["admin"]).await;
    let plain = hub.token(PrincipalKind::Client, "app", &[]).await;
    let _first = hub.client("first", &[]).await;
    let _second = hub.client("second", &[]).await;
    let url = format!("http://{}/v1/admin/events", hub.addr);
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let refused = http.get(&url).bearer_auth(&plain).send().await.unwrap();
    assert_eq!(refused.status(), 403);

    // The first snapshot comes at once, and says what the hub holds.
    let mut stream = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = stream.chunk().await.unwrap().expect("a snapshot");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let event = text.split("\n\n").next().unwrap();
    assert!(event.starts_with("event: snapshot\n"), "{event}");
    let data: serde_json::Value =
        serde_json::from_str(event.split_once("data: ").unwrap().1).unwrap();
    assert_eq!(data["counts"]["spokes"], 0);
    // admin.dashboard_rows bounds the rows, never the counts.
    assert_eq!(data["counts"]["clients"], 2);
    assert_eq!(data["sessions"].as_array().unwrap().len(), 1, "{data}");
    assert_eq!(data["calls"]["counted"], true);
    assert!(data["plugins"]["plugins"].is_array(), "{data}");

    // One stream per principal here: a second is refused while it is open.
    let second = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(second.status(), 429);
    assert!(second
        .text()
        .await
        .unwrap()
        .contains("limits.max_sse_streams_per_principal"));
    drop(stream);
    common::eventually("the closed stream's slot is free again", || {
        let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
        async move {
            http.get(&url)
                .bearer_auth(&admin)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;

    // The page's files carry a policy that loads nothing from elsewhere.
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = hub.http("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        let headers = r.headers.to_lowercase();
        assert!(
            headers.contains(&format!("content-type: {kind}")),
            "{path}: {headers}"
        );
        assert!(
            headers.contains("content-security-policy: default-src 'none'"),
            "{path}: {headers}"
        );
    }
    let missing = hub.http("GET", "/ui/secrets.txt", None, None).await;
    assert_eq!(missing.status, 404);
}
