//! Slow consumers: peers that send but never read. Each test binary is its
//! own process, so the resident memory measured here is the hub's (and this
//! test's) alone.

mod common;

use std::time::Duration;

use alkhub::peer::spec;
use alkhub::protocol::{OperationType, PrincipalKind};
use common::hub_with;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

const BUDGET: usize = 256 * 1024;
/// Frames the flooding peer sends at most.
const FLOOD_FRAMES: usize = 1_000_000;
/// The documented bound (docs/security.md): a peer that never reads costs
/// the hub its outbound budget and socket buffers, not what it asks for.
const RSS_GROWTH_BOUND: u64 = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_reads_is_disconnected_4413_and_memory_stays_bounded() {
    let hub = hub_with(|c| c.limits.max_outbound_bytes = BUDGET).await;
    let echo = hub
        .spoke("echo")
        .await
        .operation(
            spec("demo", "echo", OperationType::Query),
            |req| async move { Ok(req.input) },
        )
        .connect()
        .await
        .unwrap();
    let token = hub.token(PrincipalKind::Client, "flood", &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url(PrincipalKind::Client))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "hello", "payload": {"token": token}}).to_string(),
    ))
    .await
    .unwrap();

    let before = rss_bytes();
    // Each junk frame earns a PROTOCOL_ERROR of about 150 bytes: unread,
    // a million of them would be 150 MB queued in the hub.
    let junk = Message::text(r#"{"type":"no.such.type","payload":{}}"#);
    let mut sent = 0;
    for _ in 0..FLOOD_FRAMES {
        let write = tokio::time::timeout(Duration::from_secs(10), ws.feed(junk.clone())).await;
        match write {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
        if sent % 1_000 == 0
            && !matches!(
                tokio::time::timeout(Duration::from_secs(10), ws.flush()).await,
                Ok(Ok(()))
            )
        {
            break;
        }
    }
    let growth = rss_bytes().saturating_sub(before);
    eprintln!(
        "sent {sent} junk frames without reading; RSS grew {} KiB",
        growth / 1024
    );
    assert!(
        sent < FLOOD_FRAMES,
        "the hub kept accepting calls from a peer that never reads"
    );
    assert!(
        growth < RSS_GROWTH_BOUND,
        "RSS grew {growth} bytes for a peer that never reads"
    );

    // Whatever is left in the socket, the hub closed it as a slow consumer.
    let mut code = None;
    while let Ok(Some(message)) = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        match message {
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The close frame may be lost with the unread data when the hub drops
    // the socket; when it arrives, it says why.
    if let Some(code) = code {
        assert_eq!(code, 4413);
    }
    hub.until("the flooding session is gone", |running| {
        running.sessions().len() == 1
    })
    .await;

    // The hub and the provider still serve everyone else.
    let client = hub.client("calm", &[]).await;
    let answer = client.call("demo.echo", json!({"ok": 1})).await.unwrap();
    assert_eq!(answer["data"], json!({"ok": 1}));
    drop(echo);
}
