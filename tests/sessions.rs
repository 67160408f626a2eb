//! Sessions, registration and remap, over real sockets against a real hub.

mod common;

use std::time::Duration;

use alkhub::peer::{spec, PeerBuilder};
use alkhub::protocol::{OperationType, PrincipalKind};
use common::{eventually, hub, hub_with, Raw};
use serde_json::{json, Value};

#[tokio::test]
async fn hello_with_a_bad_token_is_unauthenticated_and_closed_4401() {
    let hub = hub().await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": "alk_spoke_nope"}}))
        .await;
    let error = raw.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"]["code"], "UNAUTHENTICATED");
    assert_eq!(raw.close_code().await, 4401);

    // A client token is not a spoke token.
    let client_token = hub.token(PrincipalKind::Client, "app", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": client_token}}))
        .await;
    assert_eq!(raw.recv().await["payload"]["code"], "UNAUTHENTICATED");
    assert_eq!(raw.close_code().await, 4401);
}

#[tokio::test]
async fn the_token_may_come_in_the_authorization_header() {
    let hub = hub().await;
    let peer = hub
        .spoke("devbox")
        .await
        .token_in_header()
        .connect()
        .await
        .unwrap();
    assert_eq!(peer.welcome().principal.id, "devbox");
}

#[tokio::test]
async fn no_hello_within_the_deadline_closes_4408() {
    let hub = hub_with(|c| c.limits.hello_timeout_ms = 200).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    assert_eq!(raw.close_code().await, 4408);
}

#[tokio::test]
async fn a_second_session_supersedes_the_first_and_its_calls_end_provider_gone() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "worker", &[]).await;
    let url = hub.ws_url(PrincipalKind::Spoke);
    let slow = || spec("jobs", "run", OperationType::Query);
    let first = PeerBuilder::new(&url, &token)
        .operation(slow(), |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(json!("late"))
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.call("jobs.run", json!({})).await }
    });
    eventually("the call reaches the first session", || async {
        hub.running
            .as_ref()
            .unwrap()
            .hub()
            .dispatcher()
            .open_calls()
            == 1
    })
    .await;

    let second = PeerBuilder::new(&url, &token)
        .operation(slow(), |_| async { Ok(json!("fresh")) })
        .connect()
        .await
        .unwrap();
    assert!(
        second.welcome().rejected.is_empty(),
        "{:?}",
        second.welcome().rejected
    );
    assert_eq!(first.closed().await, 4409);
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(err.code, "PROVIDER_GONE");

    let output = client.call("jobs.run", json!({})).await.unwrap();
    assert_eq!(output["data"], "fresh");
    assert_eq!(hub.statuses("jobs.run").await, ["active"]);
    drop(second);
}

#[tokio::test]
async fn per_spoke_namespaces_give_each_spoke_its_own_definition() {
    let hub = hub_with(|c| c.remap.per_spoke_namespaces = vec!["dev".into()]).await;
    let a = hub
        .spoke("devbox")
        .await
        .operation(
            spec("dev.fs", "read", OperationType::Query),
            |req| async move { Ok(json!({"from": "devbox", "asked": req.operation_id})) },
        )
        .connect()
        .await
        .unwrap();
    let b = hub
        .spoke("laptop")
        .await
        .operation(spec("dev.fs", "read", OperationType::Query), |_| async {
            Ok(json!({"from": "laptop"}))
        })
        .connect()
        .await
        .unwrap();
    let reg = &a.welcome().registrations[0];
    assert_eq!(reg.operation_id, "dev.devbox.fs.read");
    assert_eq!(reg.pre_remap_id, "dev.fs.read");
    assert_eq!(
        b.welcome().registrations[0].operation_id,
        "dev.laptop.fs.read"
    );

    let client = hub.client("app", &[]).await;
    let out = client.call("dev.devbox.fs.read", json!({})).await.unwrap();
    // The provider receives its own, pre-remap id.
    assert_eq!(
        out["data"],
        json!({"from": "devbox", "asked": "dev.fs.read"})
    );
    assert_eq!(
        client.call("dev.laptop.fs.read", json!({})).await.unwrap()["data"]["from"],
        "laptop"
    );
    let stored = hub
        .db
        .store
        .get_operation("dev.devbox.fs.read")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.spec.namespace, "dev.devbox.fs");
    let regs = hub
        .db
        .store
        .registrations_of_operation("dev.devbox.fs.read")
        .await
        .unwrap();
    assert_eq!(
        (
            regs[0].pre_remap_namespace.as_str(),
            regs[0].pre_remap_name.as_str()
        ),
        ("dev.fs", "read")
    );
}

#[tokio::test]
async fn shared_ids_make_one_definition_with_two_registrations() {
    let hub = hub_with(|c| c.remap.per_spoke_namespaces = vec!["dev".into()]).await;
    let mut peers = Vec::new();
    for id in ["oc1", "oc2"] {
        let peer = hub
            .spoke(id)
            .await
            .operation(
                spec("chat", "complete", OperationType::Mutation),
                |_| async { Ok(json!("ok")) },
            )
            .connect()
            .await
            .unwrap();
        assert_eq!(
            peer.welcome().registrations[0].operation_id,
            "chat.complete"
        );
        peers.push(peer);
    }
    let definitions = hub.db.store.list_operations().await.unwrap();
    assert_eq!(
        definitions
            .iter()
            .filter(|d| d.id == "chat.complete")
            .count(),
        1
    );
    assert_eq!(hub.statuses("chat.complete").await, ["active", "active"]);
}

#[tokio::test]
async fn a_conflicting_redeclaration_is_rejected_and_the_hub_namespace_is_reserved() {
    let hub = hub().await;
    let _first = hub
        .spoke("a")
        .await
        .operation(
            spec("chat", "complete", OperationType::Mutation),
            |_| async { Ok(json!(1)) },
        )
        .connect()
        .await
        .unwrap();
    let second = hub
        .spoke("b")
        .await
        .operation(spec("chat", "complete", OperationType::Query), |_| async {
            Ok(json!(2))
        })
        .operation(spec("hub", "x", OperationType::Query), |_| async {
            Ok(json!(3))
        })
        .operation(
            spec("hub.operations", "list", OperationType::Query),
            |_| async { Ok(json!(3)) },
        )
        .connect()
        .await
        .unwrap();
    let welcome = second.welcome();
    assert!(
        welcome.registrations.is_empty(),
        "{:?}",
        welcome.registrations
    );
    let rejected: Vec<(String, String)> = welcome
        .rejected
        .iter()
        .map(|r| (r.operation_id.clone(), r.code.as_str().to_owned()))
        .collect();
    assert_eq!(
        rejected,
        [
            ("chat.complete".to_owned(), "VALIDATION_ERROR".to_owned()),
            ("hub.x".to_owned(), "VALIDATION_ERROR".to_owned()),
            (
                "hub.operations.list".to_owned(),
                "VALIDATION_ERROR".to_owned()
            ),
        ]
    );
    assert!(
        welcome.rejected[0].message.contains("type"),
        "{}",
        welcome.rejected[0].message
    );
    assert!(welcome.rejected[1].message.contains("reserved"));
    let stored = hub
        .db
        .store
        .get_operation("chat.complete")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.spec.op_type,
        OperationType::Mutation,
        "the definition was overwritten"
    );
}

#[tokio::test]
async fn bad_specs_are_rejected_one_by_one_with_reasons() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "s", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(
        json!({"type": "hello", "payload": {"token": token, "operations": [
            {"namespace": "ok", "name": "fine", "type": "query"},
            {"namespace": "1bad", "name": "x", "type": "query"},
            {"namespace": "ok", "name": "noschema", "type": "query", "inputSchema": {"type": 12}},
            {"namespace": "ok", "name": "notype"},
        ]}}),
    )
    .await;
    let welcome = raw.recv().await;
    assert_eq!(welcome["type"], "welcome");
    let payload = &welcome["payload"];
    assert_eq!(payload["registrations"].as_array().unwrap().len(), 1);
    let rejected = payload["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3);
    assert!(rejected[0]["message"].as_str().unwrap().contains("1bad"));
    assert!(rejected[1]["message"]
        .as_str()
        .unwrap()
        .contains("inputSchema"));
    assert!(rejected[2]["message"].as_str().unwrap().contains("type"));
}

#[tokio::test]
async fn register_and_unregister_later_in_the_session() {
    let hub = hub().await;
    let spoke = hub.spoke("late").await.connect().await.unwrap();
    spoke.add_operation("tools.ping", |_| async { Ok(json!("pong")) });
    let result = spoke
        .register(vec![spec("tools", "ping", OperationType::Query)])
        .await
        .unwrap();
    assert_eq!(result.registrations[0].operation_id, "tools.ping");
    let client = hub.client("app", &[]).await;
    assert_eq!(
        client.call("tools.ping", Value::Null).await.unwrap()["data"],
        "pong"
    );

    spoke.unregister(&["tools.ping"]).await.unwrap();
    assert_eq!(
        client
            .call("tools.ping", Value::Null)
            .await
            .unwrap_err()
            .code,
        "NO_PROVIDER"
    );
    assert_eq!(hub.statuses("tools.ping").await, ["inactive"]);
    assert!(hub
        .db
        .store
        .get_operation("tools.ping")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_client_session_cannot_provide_what_its_other_session_provides() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Client, "cli", &[]).await;
    let grants = ["cli.*".to_owned()];
    hub.db
        .store
        .set_provides(PrincipalKind::Client, "cli", Some(&grants))
        .await
        .unwrap();
    let url = hub.ws_url(PrincipalKind::Client);
    let op = || spec("cli", "status", OperationType::Query);
    let first = PeerBuilder::new(&url, &token)
        .operation(op(), |_| async { Ok(json!(1)) })
        .connect()
        .await
        .unwrap();
    let second = PeerBuilder::new(&url, &token)
        .operation(op(), |_| async { Ok(json!(2)) })
        .connect()
        .await
        .unwrap();
    assert_eq!(first.welcome().registrations.len(), 1);
    assert_eq!(
        second.welcome().rejected[0].code.as_str(),
        "ALREADY_REGISTERED"
    );
    // Both sessions stay usable.
    assert_eq!(
        second.call("cli.status", Value::Null).await.unwrap()["data"],
        1
    );
}

#[tokio::test]
async fn disconnect_marks_registrations_inactive_and_keeps_definitions() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "devbox", &[]).await;
    let connect = || {
        PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), token.clone())
            .operation(spec("files", "read", OperationType::Query), |_| async {
                Ok(json!("content"))
            })
            .connect()
    };
    let spoke = connect().await.unwrap();
    let client = hub.client("app", &[]).await;
    assert_eq!(hub.statuses("files.read").await, ["active"]);

    spoke.close();
    eventually("registration inactive", || async {
        hub.statuses("files.read").await == ["inactive"]
    })
    .await;
    assert_eq!(
        client
            .call("files.read", Value::Null)
            .await
            .unwrap_err()
            .code,
        "NO_PROVIDER"
    );
    let listed = client
        .call("hub.operations.list", Value::Null)
        .await
        .unwrap();
    let entry = listed["data"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "files.read")
        .cloned()
        .expect("definition still listed");
    assert_eq!(entry["activeRegistrations"], 0);

    let again = connect().await.unwrap();
    assert_eq!(hub.statuses("files.read").await, ["active"]);
    assert_eq!(
        client.call("files.read", Value::Null).await.unwrap()["data"],
        "content"
    );
    drop(again);
}

#[tokio::test]
async fn a_restart_leaves_everything_inactive_until_spokes_return() {
    let mut hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "devbox", &[]).await;
    let spoke = PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), token.clone())
        .operation(spec("files", "read", OperationType::Query), |_| async {
            Ok(json!("x"))
        })
        .connect()
        .await
        .unwrap();
    hub.restart().await;
    assert_ne!(spoke.closed().await, 0);
    assert_eq!(hub.statuses("files.read").await, ["inactive"]);
    let client = hub.client("app", &[]).await;
    assert_eq!(
        client
            .call("files.read", Value::Null)
            .await
            .unwrap_err()
            .code,
        "NO_PROVIDER"
    );

    let _back = PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), token)
        .operation(spec("files", "read", OperationType::Query), |_| async {
            Ok(json!("x"))
        })
        .connect()
        .await
        .unwrap();
    assert_eq!(hub.statuses("files.read").await, ["active"]);
    assert_eq!(
        client.call("files.read", Value::Null).await.unwrap()["data"],
        "x"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_sessions_1001_and_leaves_no_active_registration() {
    let mut hub = hub().await;
    let spoke = hub
        .spoke("s1")
        .await
        .operation(spec("a", "b", OperationType::Query), |_| async {
            Ok(json!(1))
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("c1", &[]).await;
    hub.shutdown().await;
    assert_eq!(spoke.closed().await, 1001);
    assert_eq!(client.closed().await, 1001);
    let active = hub
        .db
        .store
        .list_registrations()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.status.as_str() == "active")
        .count();
    assert_eq!(active, 0);
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_two_missed_heartbeats() {
    let hub = hub_with(|c| c.limits.heartbeat_ms = 100).await;
    let token = hub.token(PrincipalKind::Client, "quiet", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    let welcome = raw.recv().await;
    assert_eq!(welcome["payload"]["heartbeatMs"], 100);
    // Not reading means not answering the hub's pings.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The hub has ended the session (it records when it last saw the peer);
    // the close frame (1011) may or may not still reach a peer this slow.
    eventually("the session ended", || async {
        let p = hub
            .db
            .store
            .get_principal(PrincipalKind::Client, "quiet")
            .await
            .unwrap()
            .unwrap();
        p.last_seen_at.is_some()
    })
    .await;
    use futures_util::StreamExt;
    loop {
        match raw.ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1011));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let hub = hub_with(|c| c.limits.heartbeat_ms = 100).await;
    let client = hub.client("lively", &[]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(client.close_code(), None);
    assert!(client
        .call("hub.operations.list", Value::Null)
        .await
        .is_ok());
}

#[tokio::test]
async fn shutdown_aborts_calls_still_open_after_the_grace_period() {
    let mut hub = hub_with(|c| c.server.shutdown_grace_ms = 200).await;
    let (aborted_tx, mut aborted) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _spoke = hub
        .spoke("stuck")
        .await
        .operation(spec("stuck", "op", OperationType::Query), move |_| {
            let aborted_tx = aborted_tx.clone();
            async move {
                let _guard = common::OnDrop::new(aborted_tx, ());
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(json!("never"))
            }
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("waiting", &[]).await;
    let pending = common::spawn_call(&client, "stuck.op", Value::Null);
    eventually("the call is open", || async {
        hub.running
            .as_ref()
            .unwrap()
            .hub()
            .dispatcher()
            .open_calls()
            == 1
    })
    .await;
    hub.shutdown().await;
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(err.code, "ABORTED");
    assert!(err.message.contains("shutting down"), "{}", err.message);
    common::recv_within(&mut aborted).await;
}

#[tokio::test]
async fn declarations_beyond_the_limit_and_changed_redeclarations_are_rejected() {
    let hub = hub_with(|c| c.limits.max_operations_per_register = 2).await;
    let token = hub.token(PrincipalKind::Spoke, "many", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    let ops: Vec<Value> = (0..3)
        .map(|i| json!({"namespace": "many", "name": format!("op{i}"), "type": "query"}))
        .collect();
    raw.send_json(json!({"type": "hello", "payload": {"token": token, "operations": ops}}))
        .await;
    let welcome = raw.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(
        welcome["payload"]["registrations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let rejected = &welcome["payload"]["rejected"][0];
    assert_eq!(
        (rejected["operationId"].clone(), rejected["code"].clone()),
        (json!("many.op2"), json!("OVERLOADED"))
    );

    raw.send_json(json!({"type": "register", "payload": {"operations": [
        {"namespace": "many", "name": "op0", "type": "mutation"}
    ]}}))
    .await;
    let registered = raw.recv().await;
    assert_eq!(registered["type"], "registered");
    assert_eq!(
        registered["payload"]["rejected"][0]["code"],
        "VALIDATION_ERROR"
    );
    assert!(registered["payload"]["rejected"][0]["message"]
        .as_str()
        .unwrap()
        .contains("type"));
}
