//! Who may provide what: provider grants, ownership of definitions,
//! validation that no declaration removes, per-spoke remap by provider kind,
//! registrations tied to their session, and the declaration-time limits.
//! Real hubs on ephemeral ports, real sockets, a real SQLite file.

mod common;

use std::time::Duration;

use alkhub::peer::{spec, Peer, PeerBuilder};
use alkhub::protocol::{AccessLevel, OperationType, PrincipalKind};
use alkhub::store::{NewDefinition, Source};
use common::{eventually, hub, hub_with, Raw, TestHub};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// A token for `id` of `kind` with these provider grants (`None`: the default).
async fn token_with_grants(
    hub: &TestHub,
    kind: PrincipalKind,
    id: &str,
    provides: Option<&[&str]>,
) -> String {
    let token = hub.token(kind, id, &[]).await;
    let provides: Option<Vec<String>> = provides.map(|p| p.iter().map(|s| s.to_string()).collect());
    hub.db
        .store
        .set_provides(kind, id, provides.as_deref())
        .await
        .unwrap();
    token
}

/// A peer of `kind` that serves `operations` (each answering its own name and
/// provider id) with the given grants.
async fn provider(
    hub: &TestHub,
    kind: PrincipalKind,
    id: &str,
    provides: Option<&[&str]>,
    operations: &[(&str, &str)],
) -> Peer {
    let token = token_with_grants(hub, kind, id, provides).await;
    let mut builder = PeerBuilder::new(hub.ws_url(kind), token);
    for (namespace, name) in operations {
        let who = id.to_owned();
        builder = builder.operation(spec(namespace, name, OperationType::Query), move |_| {
            let who = who.clone();
            async move { Ok(json!(who)) }
        });
    }
    builder.connect().await.unwrap()
}

fn rejected_codes(peer: &Peer) -> Vec<(String, String)> {
    peer.welcome()
        .rejected
        .iter()
        .map(|r| (r.operation_id.clone(), r.code.as_str().to_owned()))
        .collect()
}

/// An OpenAPI-like import without a base URL: definitions the hub owns for
/// the import, served by nobody.
async fn definition_only_import(hub: &TestHub, namespace: &str, names: &[&str]) {
    let definitions: Vec<NewDefinition> = names
        .iter()
        .map(|name| NewDefinition {
            namespace: namespace.to_owned(),
            name: (*name).to_owned(),
            op_type: OperationType::Query,
            input_schema: Some(json!({"type": "object", "required": ["id"]})),
            output_schema: None,
            access_level: AccessLevel::Authenticated,
            required_scopes: vec![],
            description: Some("imported".into()),
            source: Source::Openapi,
        })
        .collect();
    hub.db
        .store
        .save_import(
            namespace,
            alkhub::store::ImportKind::Openapi,
            namespace,
            &json!({}),
            &definitions,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_and_a_foreign_spoke_cannot_serve_another_spokes_operation_or_an_imports() {
    let mut hub = hub().await;
    definition_only_import(&hub, "pets", &["getPet"]).await;
    hub.restart().await;

    let _alpha = provider(
        &hub,
        PrincipalKind::Spoke,
        "alpha",
        Some(&["alpha.*"]),
        &[("alpha", "secret")],
    )
    .await;
    let mallory = provider(
        &hub,
        PrincipalKind::Spoke,
        "mallory",
        Some(&["mallory.*"]),
        &[("alpha", "secret"), ("pets", "getPet")],
    )
    .await;
    // Default grants: any namespace, but not one an import owns.
    let eve = provider(
        &hub,
        PrincipalKind::Spoke,
        "eve",
        None,
        &[("pets", "getPet"), ("pets", "newOne")],
    )
    .await;
    let app = provider(
        &hub,
        PrincipalKind::Client,
        "app",
        None,
        &[("alpha", "secret"), ("pets", "getPet"), ("app", "own")],
    )
    .await;

    assert!(mallory.welcome().registrations.is_empty());
    assert_eq!(
        rejected_codes(&mallory),
        [
            ("alpha.secret".to_owned(), "ACCESS_DENIED".to_owned()),
            ("pets.getPet".to_owned(), "ACCESS_DENIED".to_owned()),
        ]
    );
    assert!(eve.welcome().registrations.is_empty());
    assert_eq!(
        rejected_codes(&eve),
        [
            ("pets.getPet".to_owned(), "ACCESS_DENIED".to_owned()),
            ("pets.newOne".to_owned(), "ACCESS_DENIED".to_owned()),
        ]
    );
    assert!(app.welcome().registrations.is_empty());
    assert_eq!(app.welcome().rejected.len(), 3);
    assert!(app
        .welcome()
        .rejected
        .iter()
        .all(|r| r.code.as_str() == "ACCESS_DENIED"));
    // The reason names only what was declared: nothing about the existing
    // definition, its owner or the import.
    let reasons: Vec<String> = eve
        .welcome()
        .rejected
        .iter()
        .chain(app.welcome().rejected.iter())
        .map(|r| r.message.clone())
        .collect();
    assert_eq!(
        reasons,
        [
            "spoke eve is not granted to provide pets.getPet",
            "spoke eve is not granted to provide pets.newOne",
            "client app is not granted to provide alpha.secret",
            "client app is not granted to provide pets.getPet",
            "client app is not granted to provide app.own",
        ]
    );

    let caller = hub.client("caller", &[]).await;
    for _ in 0..10 {
        let out = caller.call("alpha.secret", Value::Null).await.unwrap();
        assert_eq!(out["data"], "alpha");
    }
    let err = caller
        .call("pets.getPet", json!({"id": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "NO_PROVIDER", "{}", err.message);
    assert_eq!(hub.statuses("alpha.secret").await, ["active"]);
    assert!(hub.statuses("pets.getPet").await.is_empty());
}

#[tokio::test]
async fn granted_providers_serve_in_their_namespaces_and_imports_only_when_named() {
    let mut hub = hub().await;
    definition_only_import(&hub, "pets", &["getPet"]).await;
    hub.restart().await;

    let petstore = provider(
        &hub,
        PrincipalKind::Spoke,
        "petstore",
        Some(&["pets.*"]),
        &[("pets", "getPet"), ("chat", "complete")],
    )
    .await;
    assert_eq!(petstore.welcome().registrations.len(), 1);
    assert_eq!(
        rejected_codes(&petstore),
        [("chat.complete".to_owned(), "ACCESS_DENIED".to_owned())]
    );
    let tools = provider(
        &hub,
        PrincipalKind::Client,
        "tools",
        Some(&["tools.*"]),
        &[("tools", "ping")],
    )
    .await;
    assert_eq!(
        tools.welcome().registrations.len(),
        1,
        "{:?}",
        tools.welcome().rejected
    );

    let caller = hub.client("caller", &[]).await;
    let out = caller.call("pets.getPet", json!({"id": 7})).await.unwrap();
    assert_eq!(out["data"], "petstore");
    // The imported schema still applies to the spoke that serves it.
    let err = caller.call("pets.getPet", json!({})).await.unwrap_err();
    assert_eq!(err.code, "VALIDATION_ERROR", "{}", err.message);
    let out = caller.call("tools.ping", Value::Null).await.unwrap();
    assert_eq!(out["data"], "tools");
    // The import still owns its definition.
    let stored = hub
        .db
        .store
        .get_operation("pets.getPet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.spec.description.as_deref(), Some("imported"));
    assert_eq!(stored.spec.source, Source::Openapi);
}

#[tokio::test]
async fn only_the_owner_changes_a_definitions_description_and_access_level() {
    let hub = hub().await;
    let mut original = spec("chat", "complete", OperationType::Mutation);
    original.description = Some("by the owner".into());
    let _owner = hub
        .spoke("owner")
        .await
        .operation(original.clone(), |_| async { Ok(json!("owner")) })
        .connect()
        .await
        .unwrap();

    let mut described = original.clone();
    described.description = Some("hijacked".into());
    let second = hub
        .spoke("second")
        .await
        .operation(described, |_| async { Ok(json!("second")) })
        .connect()
        .await
        .unwrap();
    assert_eq!(second.welcome().registrations.len(), 1);

    let mut opened = original.clone();
    opened.access_level = AccessLevel::Public;
    let third = hub
        .spoke("third")
        .await
        .operation(opened, |_| async { Ok(json!("third")) })
        .connect()
        .await
        .unwrap();
    assert_eq!(
        rejected_codes(&third),
        [("chat.complete".to_owned(), "VALIDATION_ERROR".to_owned())]
    );
    assert!(third.welcome().rejected[0].message.contains("accessLevel"));

    let stored = hub
        .db
        .store
        .get_operation("chat.complete")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.spec.description.as_deref(), Some("by the owner"));
    assert_eq!(stored.spec.access_level, AccessLevel::Authenticated);
    // Anonymous HTTP callers still may not call it.
    let anonymous = hub
        .http(
            "POST",
            "/v1/operations/chat.complete/call",
            None,
            Some("{}"),
        )
        .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(hub.statuses("chat.complete").await, ["active", "active"]);
}

#[tokio::test]
async fn a_declaration_without_a_schema_never_removes_validation() {
    let hub = hub().await;
    let mut strict = spec("files", "read", OperationType::Query);
    strict.input_schema = Some(json!({
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"]
    }));
    let owner = hub
        .spoke("owner")
        .await
        .operation(strict, |_| async { Ok(json!("owner")) })
        .connect()
        .await
        .unwrap();
    let lax = hub
        .spoke("lax")
        .await
        .operation(
            spec("files", "read", OperationType::Query),
            |req| async move { Ok(json!({"lax": req.input})) },
        )
        .connect()
        .await
        .unwrap();
    assert_eq!(
        lax.welcome().registrations.len(),
        1,
        "{:?}",
        lax.welcome().rejected
    );
    owner.close();
    eventually("the owner's registration inactive", || async {
        hub.statuses("files.read")
            .await
            .contains(&"inactive".to_owned())
    })
    .await;

    let caller = hub.client("caller", &[]).await;
    let err = caller
        .call("files.read", json!({"path": 3}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "VALIDATION_ERROR", "{}", err.message);
    let out = caller
        .call("files.read", json!({"path": "/etc/hostname"}))
        .await
        .unwrap();
    assert_eq!(out["data"]["lax"]["path"], "/etc/hostname");
    let stored = hub
        .db
        .store
        .get_operation("files.read")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.spec.input_schema.is_some());
}

async fn a_client_named_like_a_spoke_never_lands_in_its_namespace(hub: TestHub) {
    let _spoke = provider(
        &hub,
        PrincipalKind::Spoke,
        "devbox",
        None,
        &[("dev.fs", "read")],
    )
    .await;
    let client = provider(
        &hub,
        PrincipalKind::Client,
        "devbox",
        Some(&["*"]),
        &[("dev.fs", "read"), ("dev", "write")],
    )
    .await;
    assert!(client.welcome().registrations.is_empty());
    let rejected = &client.welcome().rejected;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|r| r.code.as_str() == "VALIDATION_ERROR" && r.message.contains("per-spoke")),
        "{rejected:?}"
    );
    assert_eq!(hub.statuses("dev.devbox.fs.read").await, ["active"]);
    let caller = hub.client("caller", &[]).await;
    for _ in 0..5 {
        let out = caller
            .call("dev.devbox.fs.read", Value::Null)
            .await
            .unwrap();
        assert_eq!(out["data"], "devbox");
    }
}

#[tokio::test]
async fn per_spoke_remap_looks_at_the_provider_kind_natively() {
    let hub = hub_with(|c| {
        c.remap.per_spoke_namespaces = vec!["dev".into()];
        c.plugins.remap = "native".into();
    })
    .await;
    a_client_named_like_a_spoke_never_lands_in_its_namespace(hub).await;
}

#[tokio::test]
async fn per_spoke_remap_looks_at_the_provider_kind_in_the_default_plugin() {
    let hub = hub_with(|c| c.remap.per_spoke_namespaces = vec!["dev".into()]).await;
    a_client_named_like_a_spoke_never_lands_in_its_namespace(hub).await;
}

#[tokio::test]
async fn a_spoke_reconnecting_20_times_in_2_seconds_keeps_its_live_registration_active() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "flappy", &[]).await;
    let connect = || {
        let mut builder = PeerBuilder::new(hub.ws_url(PrincipalKind::Spoke), token.clone());
        for i in 0..20 {
            builder = builder.operation(
                spec("flap", &format!("op{i}"), OperationType::Query),
                |_| async { Ok(json!("live")) },
            );
        }
        builder.connect()
    };
    let mut sessions = Vec::new();
    for _ in 0..20 {
        // Each new session supersedes the previous one while it may still
        // be registering or ending.
        let peer = tokio::spawn(connect());
        tokio::time::sleep(Duration::from_millis(100)).await;
        sessions.push(peer);
    }
    let mut peers = Vec::new();
    for session in sessions {
        if let Ok(Ok(peer)) = session.await {
            peers.push(peer);
        }
    }
    // Whatever the order the sessions started and the superseded ones ended
    // in, exactly one is live, and it holds every registration, in the
    // database and for callers.
    eventually("every session but one superseded", || async {
        peers.iter().filter(|p| p.close_code().is_none()).count() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peers.iter().filter(|p| p.close_code().is_none()).count(), 1);
    let caller = hub.client("caller", &[]).await;
    for i in 0..20 {
        let op = format!("flap.op{i}");
        assert_eq!(hub.statuses(&op).await, ["active"], "{op}");
        let out = caller.call(&op, Value::Null).await.unwrap();
        assert_eq!(out["data"], "live");
    }
}

#[tokio::test]
async fn a_thousand_spokes_leaving_at_once_leave_no_registration_active() {
    const SPOKES: usize = 1000;
    let hub = hub().await;
    let mut tokens = Vec::with_capacity(SPOKES);
    for i in 0..SPOKES {
        tokens.push(hub.token(PrincipalKind::Spoke, &format!("s{i}"), &[]).await);
    }
    let url = hub.ws_url(PrincipalKind::Spoke);
    let connected = futures_util::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let url = url.clone();
            async move {
                let mut raw = Raw::connect(&url).await;
                raw.send_json(
                    json!({"type": "hello", "payload": {"token": token, "operations": [
                        {"namespace": "fleet", "name": "ping", "type": "query"},
                        {"namespace": "fleet", "name": format!("own{i}"), "type": "query"},
                    ]}}),
                )
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
                raw
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<Raw>>()
        .await;
    assert_eq!(connected.len(), SPOKES);
    let active = |hub: &TestHub| {
        let store = hub.db.store.clone();
        async move {
            store
                .list_registrations()
                .await
                .unwrap()
                .iter()
                .filter(|r| r.status == alkhub::store::RegistrationStatus::Active)
                .count()
        }
    };
    assert_eq!(active(&hub).await, 2 * SPOKES);

    // Every socket goes at once, without a close handshake.
    drop(connected);
    let mut left = usize::MAX;
    for _ in 0..600 {
        left = active(&hub).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "registrations still active after every spoke left");
}

#[tokio::test]
async fn a_large_hello_is_registered_in_one_transaction() {
    let hub = hub().await;
    let token = hub.token(PrincipalKind::Spoke, "big", &[]).await;
    let operations: Vec<Value> = (0..1000)
        .map(|i| json!({"namespace": "big", "name": format!("op{i}"), "type": "query"}))
        .collect();
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token, "operations": operations}}))
        .await;
    let welcome = raw.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(
        welcome["payload"]["registrations"]
            .as_array()
            .unwrap()
            .len(),
        1000
    );
    assert!(welcome["payload"]["rejected"]
        .as_array()
        .unwrap()
        .is_empty());
    let registrations = hub.db.store.list_registrations().await.unwrap();
    assert_eq!(registrations.len(), 1000);
    // One transaction stamps every row with the same time and session.
    let first = &registrations[0];
    assert!(registrations
        .iter()
        .all(|r| r.registered_at == first.registered_at
            && r.session_id == first.session_id
            && r.session_id.is_some()));
}

#[tokio::test]
async fn declarations_past_the_schema_and_operation_limits_are_rejected_naming_the_key() {
    let hub = hub_with(|c| {
        c.limits.max_schema_bytes = 1024;
        c.limits.max_schema_depth = 8;
        c.limits.max_operations_per_session = 3;
        c.limits.max_operations_per_principal = 4;
    })
    .await;
    let token = hub.token(PrincipalKind::Spoke, "limited", &[]).await;
    let mut deep = json!({"type": "string"});
    for _ in 0..10 {
        deep = json!({"type": "array", "items": deep});
    }
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Spoke)).await;
    raw.send_json(
        json!({"type": "hello", "payload": {"token": token, "operations": [
            {"namespace": "lim", "name": "big", "type": "query",
             "inputSchema": {"type": "string", "description": "x".repeat(2000)}},
            {"namespace": "lim", "name": "deep", "type": "query", "outputSchema": deep},
            {"namespace": "lim", "name": "a", "type": "query"},
            {"namespace": "lim", "name": "b", "type": "query"},
            {"namespace": "lim", "name": "c", "type": "query"},
            {"namespace": "lim", "name": "d", "type": "query"},
        ]}}),
    )
    .await;
    let welcome = raw.recv().await;
    let rejected = welcome["payload"]["rejected"].as_array().unwrap().clone();
    let registered = welcome["payload"]["registrations"].as_array().unwrap();
    assert_eq!(registered.len(), 3, "{welcome}");
    assert_eq!(rejected.len(), 3, "{welcome}");
    let reason = |i: usize| rejected[i]["message"].as_str().unwrap().to_owned();
    assert_eq!(rejected[0]["code"], "VALIDATION_ERROR");
    assert!(
        reason(0).contains("limits.max_schema_bytes is 1024"),
        "{}",
        reason(0)
    );
    assert_eq!(rejected[1]["code"], "VALIDATION_ERROR");
    assert!(
        reason(1).contains("limits.max_schema_depth is 8"),
        "{}",
        reason(1)
    );
    assert_eq!(rejected[2]["operationId"], "lim.d");
    assert_eq!(rejected[2]["code"], "OVERLOADED");
    assert!(
        reason(2).contains("limits.max_operations_per_session is 3"),
        "{}",
        reason(2)
    );

    // Across the live sessions of one client.
    let client_token =
        token_with_grants(&hub, PrincipalKind::Client, "many", Some(&["many.*"])).await;
    let session = |names: &'static [&'static str]| {
        let mut builder = PeerBuilder::new(hub.ws_url(PrincipalKind::Client), client_token.clone());
        for name in names {
            builder = builder.operation(spec("many", name, OperationType::Query), |_| async {
                Ok(json!(1))
            });
        }
        builder.connect()
    };
    let first = session(&["a", "b", "c"]).await.unwrap();
    assert_eq!(first.welcome().registrations.len(), 3);
    let second = session(&["d", "e", "f"]).await.unwrap();
    assert_eq!(second.welcome().registrations.len(), 1);
    assert_eq!(second.welcome().rejected.len(), 2);
    assert!(second.welcome().rejected[0]
        .message
        .contains("limits.max_operations_per_principal is 4"));
}

#[tokio::test]
async fn a_catastrophic_pattern_is_answered_and_never_forwarded() {
    let hub = hub().await;
    let mut op = spec("text", "check", OperationType::Query);
    // A back-reference forces the backtracking engine; its budget bounds it.
    op.input_schema = Some(json!({"type": "string", "pattern": "^(a+)+\\1$"}));
    let spoke = hub
        .spoke("texts")
        .await
        .operation(op, |_| async { Ok(json!("forwarded")) })
        .connect()
        .await
        .unwrap();
    assert_eq!(
        spoke.welcome().registrations.len(),
        1,
        "{:?}",
        spoke.welcome().rejected
    );
    let caller = hub.client("caller", &[]).await;
    let hostile = format!("{}b", "a".repeat(40));
    let err = caller.call("text.check", json!(hostile)).await.unwrap_err();
    assert_eq!(err.code, "VALIDATION_ERROR", "{}", err.message);
    let out = caller.call("text.check", json!("aa")).await.unwrap();
    assert_eq!(out["data"], "forwarded");
}
