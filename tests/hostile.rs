//! Peers that try to exhaust the hub: connections that never authenticate,
//! too many sessions, calls and streams, slow request bodies, and tokens
//! revoked while in use. Real hub, real sockets.

mod common;

use std::time::Duration;

use alkhub::peer::{spec, PeerBuilder};
use alkhub::protocol::{OperationType, PrincipalKind};
use common::{hub_with, Raw};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// Opens a WebSocket without sending anything; the HTTP status when the
/// upgrade is refused.
async fn open(url: &str) -> Result<Raw, u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(Raw { ws }),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connecting failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_unauthenticated_connections_are_capped_and_closed_at_the_deadline() {
    let hub = hub_with(|c| {
        c.limits.hello_timeout_ms = 2_000;
        c.limits.max_unauthenticated = 5_000;
        c.limits.max_unauthenticated_per_address = 1_500;
    })
    .await;
    let url = hub.ws_url(PrincipalKind::Spoke);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for batch in 0..20 {
        let opened = futures_util::future::join_all((0..100).map(|_| open(&url))).await;
        for (i, result) in opened.into_iter().enumerate() {
            match result {
                Ok(mut raw) => {
                    // Some say nothing, some send junk; none says hello.
                    if (batch + i) % 2 == 0 {
                        raw.send(Message::text("{\"type\":\"call.requested\"}"))
                            .await;
                        raw.send(Message::binary(vec![0u8; 512])).await;
                    }
                    accepted.push(raw);
                }
                Err(status) => refused.push(status),
            }
        }
    }
    assert_eq!(
        accepted.len(),
        1_500,
        "the per-address cap admits exactly its number"
    );
    assert_eq!(refused.len(), 500);
    assert!(
        refused.iter().all(|s| *s == 429),
        "refused with 429: {refused:?}"
    );

    // Every accepted connection is closed with 4408 at the deadline,
    // whatever it sent.
    let codes = futures_util::future::join_all(accepted.iter_mut().map(|raw| async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(20), raw.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map(|f| u16::from(f.code)).unwrap_or(1005)
                }
                Ok(Some(Ok(_))) => {}
                _ => return 0,
            }
        }
    }))
    .await;
    let mut counts = std::collections::BTreeMap::new();
    for code in &codes {
        *counts.entry(*code).or_insert(0) += 1;
    }
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        vec![&4408],
        "close codes: {counts:?}"
    );
    drop(accepted);

    // The slots came back: a real spoke connects.
    hub.until("the unauthenticated slots are free", |running| {
        running.quotas().unauthenticated.in_use() == 0
    })
    .await;
    let spoke = hub.spoke("real").await.connect().await.unwrap();
    assert_eq!(spoke.welcome().principal.id, "real");
}

#[tokio::test]
async fn connections_past_the_total_cap_are_refused_503() {
    let hub = hub_with(|c| c.limits.max_connections = 2).await;
    let a = hub.client("a", &[]).await;
    let b = hub.client("b", &[]).await;
    assert_eq!(
        open(&hub.ws_url(PrincipalKind::Client)).await.err(),
        Some(503)
    );
    drop((a, b));
}

#[tokio::test]
async fn a_client_past_its_session_cap_gets_overloaded_and_4429() {
    let hub = hub_with(|c| c.limits.max_sessions_per_client = 2).await;
    let token = hub.token(PrincipalKind::Client, "app", &[]).await;
    let url = hub.ws_url(PrincipalKind::Client);
    let first = PeerBuilder::new(&url, &token).connect().await.unwrap();
    let second = PeerBuilder::new(&url, &token).connect().await.unwrap();
    let mut third = Raw::connect(&url).await;
    third
        .send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    let error = third.recv().await;
    assert_eq!(error["payload"]["code"], "OVERLOADED");
    assert!(error["payload"]["message"]
        .as_str()
        .unwrap()
        .contains("limits.max_sessions_per_client"));
    assert_eq!(third.close_code().await, 4429);

    // A slot frees when a session ends.
    first.close();
    first.closed().await;
    hub.until("the first session ended", |running| {
        running.sessions().len() == 1
    })
    .await;
    PeerBuilder::new(&url, &token).connect().await.unwrap();
    drop(second);
}

/// A spoke whose `hold.call` and `hold.stream` never answer.
async fn holding_spoke(hub: &common::TestHub) -> alkhub::peer::Peer {
    hub.spoke("holder")
        .await
        .operation(spec("hold", "call", OperationType::Query), |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(json!(null))
        })
        .subscription(
            spec("hold", "stream", OperationType::Subscription),
            |_, _| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .connect()
        .await
        .unwrap()
}

/// Sends an HTTP request and leaves it open; the socket to drop later.
async fn hold_http(addr: std::net::SocketAddr, path: &str, token: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn http_calls_and_streams_past_a_principals_cap_get_429_overloaded() {
    let hub = hub_with(|c| {
        c.limits.max_http_calls_per_principal = 2;
        c.limits.max_sse_streams_per_principal = 1;
    })
    .await;
    let _spoke = holding_spoke(&hub).await;
    let token = hub.token(PrincipalKind::Client, "busy", &[]).await;
    let other = hub.token(PrincipalKind::Client, "other", &[]).await;

    let held = [
        hold_http(hub.addr, "/v1/operations/hold.call/call", &token).await,
        hold_http(hub.addr, "/v1/operations/hold.call/call", &token).await,
        hold_http(hub.addr, "/v1/operations/hold.stream/subscribe", &token).await,
    ];
    hub.until("three HTTP calls are open", |running| {
        running.dispatcher().open_calls() == 3
    })
    .await;
    let third = hub
        .http(
            "POST",
            "/v1/operations/hold.call/call",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(third.status, 429);
    assert_eq!(third.json()["code"], "OVERLOADED");
    assert!(third.body.contains("limits.max_http_calls_per_principal"));
    let second_stream = hub
        .http(
            "POST",
            "/v1/operations/hold.stream/subscribe",
            Some(&token),
            Some("{}"),
        )
        .await;
    assert_eq!(second_stream.status, 429);
    assert!(second_stream
        .body
        .contains("limits.max_sse_streams_per_principal"));

    // Another principal is not affected; the slots come back when the
    // held requests go away.
    let mut other_call = hold_http(hub.addr, "/v1/operations/hold.call/call", &other).await;
    hub.until("the other principal's call is open", |running| {
        running.dispatcher().open_calls() == 4
    })
    .await;
    drop(held);
    hub.until("the held calls were aborted", |running| {
        running.dispatcher().open_calls() == 1
    })
    .await;
    let _again = hold_http(hub.addr, "/v1/operations/hold.call/call", &token).await;
    hub.until("a new call of the first principal is open", |running| {
        running.dispatcher().open_calls() == 2
    })
    .await;
    other_call.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_gets_408() {
    let hub = hub_with(|c| c.limits.http_body_timeout_ms = 300).await;
    let token = hub.token(PrincipalKind::Client, "slow", &[]).await;
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "POST /v1/operations/hub.operations.list/call HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n{{\"input\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    response.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("limits.http_body_timeout_ms"),
        "{response}"
    );
}

#[tokio::test]
async fn shutdown_ends_by_its_hard_deadline_with_a_body_still_arriving() {
    let mut hub = hub_with(|c| {
        c.server.shutdown_grace_ms = 200;
        c.server.shutdown_hard_ms = 500;
        c.limits.http_body_timeout_ms = 600_000;
    })
    .await;
    let token = hub.token(PrincipalKind::Client, "trickle", &[]).await;
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "POST /v1/operations/hub.operations.list/call HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A trickle: one byte every 100 ms, far longer than the shutdown takes.
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if stream.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(30), hub.shutdown())
        .await
        .expect("shutdown never returned while a request body was still arriving");
    trickle.abort();
}

#[tokio::test]
async fn removing_a_principal_closes_its_sessions_4401_and_its_http_token_expires() {
    let hub = hub_with(|c| {
        c.limits.revocation_check_ms = 100;
        c.limits.auth_cache_ttl_ms = 200;
    })
    .await;
    let spoke = hub.spoke("gone").await.connect().await.unwrap();
    let token = hub.token(PrincipalKind::Client, "leaver", &[]).await;
    let client = PeerBuilder::new(hub.ws_url(PrincipalKind::Client), &token)
        .connect()
        .await
        .unwrap();
    let keeper = hub.client("keeper", &[]).await;
    assert_eq!(
        hub.http("GET", "/v1/operations", Some(&token), None)
            .await
            .status,
        200
    );

    let store = &hub.db.store;
    store
        .remove_principal(PrincipalKind::Spoke, "gone")
        .await
        .unwrap();
    store
        .remove_principal(PrincipalKind::Client, "leaver")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), spoke.closed())
        .await
        .expect("a removed spoke's session stays open");
    assert_eq!(closed, 4401);
    assert_eq!(client.closed().await, 4401);
    let mut status = 0;
    for _ in 0..100 {
        status = hub
            .http("GET", "/v1/operations", Some(&token), None)
            .await
            .status;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, 401,
        "a removed token keeps working past the cache TTL"
    );
    // Others keep their sessions.
    assert_eq!(keeper.close_code(), None);
}

#[tokio::test]
async fn disabling_a_spoke_closes_its_session_4401_and_it_cannot_come_back_until_enabled() {
    let hub = hub_with(|c| c.limits.revocation_check_ms = 100).await;
    let token = hub.token(PrincipalKind::Spoke, "paused", &[]).await;
    let url = hub.ws_url(PrincipalKind::Spoke);
    let spoke = PeerBuilder::new(&url, &token).connect().await.unwrap();
    let store = &hub.db.store;
    store
        .set_principal_enabled(PrincipalKind::Spoke, "paused", false)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), spoke.closed())
            .await
            .expect("a disabled spoke's session stays open"),
        4401
    );
    assert!(PeerBuilder::new(&url, &token).connect().await.is_err());
    store
        .set_principal_enabled(PrincipalKind::Spoke, "paused", true)
        .await
        .unwrap();
    let again = PeerBuilder::new(&url, &token).connect().await.unwrap();
    assert_eq!(again.welcome().principal.id, "paused");
}

#[tokio::test]
async fn a_principal_removed_and_added_again_under_the_same_id_revokes_the_old_session() {
    let hub = hub_with(|c| c.limits.revocation_check_ms = 100).await;
    let spoke = hub.spoke("reborn").await.connect().await.unwrap();
    let store = &hub.db.store;
    store
        .remove_principal(PrincipalKind::Spoke, "reborn")
        .await
        .unwrap();
    // Added again at once: the id exists, but not the principal the old
    // token belonged to.
    let _ = hub.token(PrincipalKind::Spoke, "reborn", &[]).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), spoke.closed())
            .await
            .unwrap(),
        4401
    );
}

#[tokio::test]
async fn error_frames_quote_at_most_a_clipped_piece_of_the_peers_input() {
    let hub = hub_with(|_| {}).await;
    let token = hub.token(PrincipalKind::Client, "echoer", &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(PrincipalKind::Client)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token}}))
        .await;
    assert_eq!(raw.recv().await["type"], "welcome");
    let huge = "z".repeat(500_000);
    raw.send_json(json!({"type": huge.clone(), "payload": {}}))
        .await;
    let error = raw.recv().await;
    assert_eq!(error["payload"]["code"], "PROTOCOL_ERROR");
    assert!(error.to_string().len() < 2_048, "an error echoed the input");
    raw.send_json(
        json!({"type": "call.requested", "payload": {"requestId": 5, "operationId": huge}}),
    )
    .await;
    let error = raw.recv().await;
    assert!(error.to_string().len() < 2_048, "an error echoed the input");
    let (mut sink, _) = raw.ws.split();
    let _ = sink.close().await;
}

/// Size of each input the slow provider below never reads.
const INPUT_BYTES: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_reads_is_disconnected_and_its_callers_get_provider_gone() {
    let hub = hub_with(|c| c.limits.max_outbound_bytes = 256 * 1024).await;
    let token = hub.token(PrincipalKind::Spoke, "deaf", &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url(PrincipalKind::Spoke))
        .await
        .unwrap();
    let hello = json!({"type": "hello", "payload": {"token": token, "operations": [
        {"namespace": "deaf", "name": "sink", "type": "mutation"}]}});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    hub.until("the deaf spoke provides deaf.sink", |running| {
        running
            .dispatcher()
            .catalog()
            .get("deaf.sink")
            .is_some_and(|e| !e.providers.is_empty())
    })
    .await;

    // Callers send big inputs the spoke never reads.
    let client = hub.client("sender", &[]).await;
    let input = json!({"blob": "y".repeat(INPUT_BYTES)});
    let calls: Vec<_> = (0..512)
        .map(|_| common::spawn_call(&client, "deaf.sink", input.clone()))
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        let result = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("a call to a slow consumer was never answered")
            .unwrap();
        codes.push(result.map(|_| "OK".to_owned()).unwrap_or_else(|e| e.code));
    }
    // Calls forwarded before the hub gave up on the spoke end PROVIDER_GONE;
    // calls that arrive after it left find no provider.
    assert!(
        codes
            .iter()
            .all(|c| c == "PROVIDER_GONE" || c == "NO_PROVIDER"),
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "PROVIDER_GONE"), "{codes:?}");
    hub.until("the deaf spoke's session ended", |running| {
        running.sessions().len() == 1
    })
    .await;
    let after: Value = client
        .call("deaf.sink", json!({}))
        .await
        .unwrap_or_else(|e| json!(e.code));
    assert_eq!(after, json!("NO_PROVIDER"));
}
