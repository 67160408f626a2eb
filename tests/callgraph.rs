//! The call graph over real sockets: who may name a call as parent, how deep
//! a chain may grow, and how a chain of any length ends when its root does.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use alkhub::dispatch::Dispatcher;
use alkhub::peer::{spec, CallOptions};
use alkhub::protocol::{OperationType, PrincipalKind};
use common::{eventually, hub, hub_with, Raw, TestHub};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

fn dispatcher(hub: &TestHub) -> Dispatcher {
    hub.handle().dispatcher().clone()
}

/// A raw peer of `kind` that said hello with `operations` and was welcomed.
async fn raw_peer(hub: &TestHub, kind: PrincipalKind, id: &str, operations: Value) -> Raw {
    let token = hub.token(kind, id, &[]).await;
    let mut raw = Raw::connect(&hub.ws_url(kind)).await;
    raw.send_json(json!({"type": "hello", "payload": {"token": token, "operations": operations}}))
        .await;
    let welcome = raw.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    raw
}

fn call(request_id: &str, operation_id: &str, parent: Option<&str>) -> Value {
    let mut payload = json!({"requestId": request_id, "operationId": operation_id});
    if let Some(parent) = parent {
        payload["parentRequestId"] = json!(parent);
    }
    json!({"type": "call.requested", "payload": payload})
}

#[tokio::test]
async fn a_ten_thousand_link_chain_aborted_at_its_root_is_answered_everywhere() {
    const LINKS: usize = 10_000;
    let hub = hub_with(|config| {
        config.limits.max_call_depth = 20_000;
        config.limits.max_open_calls_per_connection = 20_000;
    })
    .await;
    // One spoke serves `chain.link` by calling it again as a child of the
    // call it was delivered, until the chain is LINKS long.
    let mut spoke = raw_peer(
        &hub,
        PrincipalKind::Spoke,
        "chain",
        json!([{"namespace": "chain", "name": "link", "type": "query"}]),
    )
    .await;
    let mut client = raw_peer(&hub, PrincipalKind::Client, "app", json!([])).await;
    client.send_json(call("root", "chain.link", None)).await;
    let mut delivered = HashSet::new();
    for k in 1..=LINKS {
        let frame = spoke.recv().await;
        assert_eq!(frame["type"], "call.requested", "link {k}: {frame}");
        let hub_id = frame["payload"]["requestId"].as_str().unwrap().to_owned();
        if k < LINKS {
            spoke
                .send_json(call(&format!("c{k}"), "chain.link", Some(&hub_id)))
                .await;
        }
        delivered.insert(hub_id);
    }
    assert_eq!(dispatcher(&hub).open_calls(), LINKS);

    client
        .send_json(json!({"type": "call.aborted", "payload": {"requestId": "root"}}))
        .await;
    // Every link's provider is told to stop, and every waiting caller (the
    // spoke, for each child it started) is answered ABORTED.
    let mut aborted = HashSet::new();
    let mut answered = HashSet::new();
    while aborted.len() < LINKS || answered.len() < LINKS - 1 {
        let frame = spoke.recv().await;
        let request_id = frame["payload"]["requestId"].as_str().unwrap().to_owned();
        match frame["type"].as_str().unwrap() {
            "call.aborted" => assert!(aborted.insert(request_id)),
            "call.error" => {
                assert_eq!(frame["payload"]["code"], "ABORTED", "{frame}");
                assert!(answered.insert(request_id));
            }
            other => panic!("unexpected {other}: {frame}"),
        }
    }
    assert_eq!(aborted, delivered);
    assert_eq!(dispatcher(&hub).open_calls(), 0);

    // The hub goes on serving.
    client.send_json(call("after", "chain.link", None)).await;
    let frame = spoke.recv().await;
    assert_eq!(frame["type"], "call.requested");
    let hub_id = frame["payload"]["requestId"].clone();
    spoke
        .send_json(json!({"type": "call.responded", "payload": {"requestId": hub_id, "output": {"data": "ok"}}}))
        .await;
    let answer = client.recv().await;
    assert_eq!(answer["type"], "call.responded", "{answer}");
    assert_eq!(answer["payload"]["requestId"], "after");
    assert_eq!(answer["payload"]["output"]["data"], "ok");
}

#[tokio::test]
async fn naming_a_call_served_elsewhere_as_parent_is_a_protocol_error() {
    let hub = hub().await;
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let echoes = Arc::new(AtomicUsize::new(0));
    let (release2, echoes2) = (release.clone(), echoes.clone());
    let _owner = hub
        .spoke("owner")
        .await
        .operation(spec("work", "slow", OperationType::Query), move |req| {
            let (delivered_tx, release) = (delivered_tx.clone(), release2.clone());
            async move {
                delivered_tx.send(req.request_id.clone()).unwrap();
                release.notified().await;
                Ok(json!("done"))
            }
        })
        .operation(spec("work", "echo", OperationType::Query), move |req| {
            echoes2.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req.input) }
        })
        .connect()
        .await
        .unwrap();
    let owner_client = hub.client("owner-client", &[]).await;
    let parent_call = common::spawn_call(&owner_client, "work.slow", Value::Null);
    let parent_id = common::recv_within(&mut delivered).await;

    // A client and a spoke that were not delivered the parent both try to
    // hang a child under it; so does a caller naming no hub call at all.
    let mut client = raw_peer(&hub, PrincipalKind::Client, "stranger", json!([])).await;
    let mut other_spoke = raw_peer(&hub, PrincipalKind::Spoke, "other", json!([])).await;
    for (from_spoke, request_id, parent) in [
        (false, "x1", parent_id.as_str()),
        (true, "x2", parent_id.as_str()),
        (false, "x3", "not-a-hub-id"),
        (false, "x4", "h999999999"),
    ] {
        let peer = if from_spoke {
            &mut other_spoke
        } else {
            &mut client
        };
        peer.send_json(call(request_id, "work.echo", Some(parent)))
            .await;
        let answer = peer.recv().await;
        assert_eq!(answer["type"], "call.error", "{answer}");
        assert_eq!(answer["payload"]["requestId"], request_id);
        assert_eq!(answer["payload"]["code"], "PROTOCOL_ERROR", "{answer}");
        assert!(answer["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a call this connection is serving"));
    }
    assert_eq!(echoes.load(Ordering::SeqCst), 0);
    assert_eq!(dispatcher(&hub).open_children(&parent_id), Some(0));

    // The parent's provider was not disturbed: its call still completes.
    release.notify_one();
    assert_eq!(parent_call.await.unwrap().unwrap()["data"], "done");
    // Strangers' calls without a parent still work.
    client.send_json(call("x5", "work.echo", None)).await;
    assert_eq!(client.recv().await["type"], "call.responded");
}

#[tokio::test]
async fn a_child_of_a_call_that_already_ended_is_aborted() {
    let hub = hub().await;
    let mut spoke = raw_peer(
        &hub,
        PrincipalKind::Spoke,
        "worker",
        json!([{"namespace": "work", "name": "once", "type": "query"}]),
    )
    .await;
    let mut client = raw_peer(&hub, PrincipalKind::Client, "app", json!([])).await;
    client.send_json(call("p", "work.once", None)).await;
    let delivered = spoke.recv().await;
    let parent_id = delivered["payload"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    spoke
        .send_json(json!({"type": "call.responded", "payload": {"requestId": parent_id, "output": {"data": 1}}}))
        .await;
    assert_eq!(client.recv().await["type"], "call.responded");

    spoke
        .send_json(call("late-child", "work.once", Some(&parent_id)))
        .await;
    let answer = spoke.recv().await;
    assert_eq!(answer["type"], "call.error", "{answer}");
    assert_eq!(answer["payload"]["requestId"], "late-child");
    assert_eq!(answer["payload"]["code"], "ABORTED", "{answer}");
}

#[tokio::test]
async fn a_chain_deeper_than_max_call_depth_is_refused_overloaded() {
    let hub = hub_with(|config| config.limits.max_call_depth = 3).await;
    // Each link calls itself as a child and reports how deep the chain got
    // below it and why it stopped.
    let _spoke = hub
        .spoke("deep")
        .await
        .operation(
            spec("deep", "dive", OperationType::Query),
            |req| async move {
                let options = CallOptions {
                    parent_request_id: Some(req.request_id.clone()),
                    ..Default::default()
                };
                match req.peer.call_with("deep.dive", Value::Null, options).await {
                    Ok(out) => {
                        let below = &out["data"];
                        Ok(json!({
                            "depth": below["depth"].as_u64().unwrap() + 1,
                            "refused": below["refused"],
                            "message": below["message"],
                        }))
                    }
                    Err(e) => Ok(json!({"depth": 1, "refused": e.code, "message": e.message})),
                }
            },
        )
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let out = client.call("deep.dive", Value::Null).await.unwrap();
    assert_eq!(out["data"]["depth"], 3, "{out}");
    assert_eq!(out["data"]["refused"], "OVERLOADED");
    let message = out["data"]["message"].as_str().unwrap();
    assert!(message.contains("limits.max_call_depth (3)"), "{message}");
    assert_eq!(dispatcher(&hub).open_calls(), 0);
}

#[tokio::test]
async fn children_leave_their_parent_when_they_end() {
    const CHILDREN: usize = 500;
    let hub = hub().await;
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let release2 = release.clone();
    let _spoke = hub
        .spoke("parent")
        .await
        .operation(
            spec("leaf", "echo", OperationType::Query),
            |req| async move { Ok(req.input) },
        )
        .operation(spec("long", "run", OperationType::Query), move |req| {
            let (progress_tx, release) = (progress_tx.clone(), release2.clone());
            async move {
                for i in 0..CHILDREN {
                    let options = CallOptions {
                        parent_request_id: Some(req.request_id.clone()),
                        ..Default::default()
                    };
                    req.peer.call_with("leaf.echo", json!(i), options).await?;
                }
                progress_tx.send(req.request_id.clone()).unwrap();
                release.notified().await;
                Ok(json!(CHILDREN))
            }
        })
        .connect()
        .await
        .unwrap();
    let client = hub.client("app", &[]).await;
    let parent_call = common::spawn_call(&client, "long.run", Value::Null);
    let parent_id = common::recv_within(&mut progress).await;
    // The parent is still open, and none of its finished children is kept.
    assert_eq!(dispatcher(&hub).open_children(&parent_id), Some(0));
    release.notify_one();
    assert_eq!(parent_call.await.unwrap().unwrap()["data"], CHILDREN);
    eventually("no call stays open", || async {
        dispatcher(&hub).open_calls() == 0
    })
    .await;
}
