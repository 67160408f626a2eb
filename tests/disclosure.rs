//! What the hub tells callers about itself, through a real hub: nothing of
//! its database's errors to anonymous callers, and nothing of where its
//! plugin files live. (Database URLs in the log are masked by
//! `telemetry::redact_url`, whose unit tests cover the password forms.)

mod common;

use std::path::Path;

use alkhub::protocol::PrincipalKind;
use common::hub_with;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_a_database_failure_without_the_database_error() {
    let hub = common::hub().await;
    let ok = hub.http("GET", "/healthz", None, None).await;
    assert_eq!((ok.status, ok.json()["status"].clone()), (200, "ok".into()));

    // Closing the hub's own pool makes every query fail with sqlx's error.
    let store = hub.handle().store().clone();
    store.close().await;
    let raw = store.ping().await.unwrap_err().to_string();
    assert!(!raw.is_empty());

    let r = hub.http("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let body = r.json();
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(
        body["message"],
        "the database does not answer; the hub's log has the reason"
    );
    assert!(!r.body.contains(&raw), "{} shows {raw}", r.body);
    for leak in ["pool", "sqlite", "alkhub.db", "closed"] {
        assert!(!r.body.to_lowercase().contains(leak), "{}", r.body);
    }
}

#[tokio::test]
async fn the_plugin_listing_names_plugin_files_but_not_the_folder_they_are_in() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/least-in-flight.wasm");
    let hub = hub_with(move |c| {
        std::fs::copy(&shipped, c.plugins.dir.join("mine.wasm")).unwrap();
        std::fs::write(c.plugins.dir.join("broken.wasm"), b"not a component").unwrap();
    })
    .await;
    let folder = hub.files.path().to_str().unwrap().to_owned();
    let token = hub.token(PrincipalKind::Client, "app", &[]).await;
    let r = hub.http("GET", "/v1/plugins", Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(&folder), "{} shows {folder}", r.body);
    let body = r.json();
    let file_of = |name: &str| -> Value {
        body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {body}"))["file"]
            .clone()
    };
    assert_eq!(file_of("mine"), "mine.wasm");
    assert_eq!(file_of("broken"), "broken.wasm");
    assert_eq!(file_of("least-in-flight"), Value::Null, "embedded");

    // The operator's CLI shows the whole path.
    let file = hub.files.path().join("plugins/mine.wasm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alkhub"))
        .args(["plugin", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("file: {}", file.display())),
        "{stdout}"
    );
}
