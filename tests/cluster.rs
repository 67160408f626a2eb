//! Three real hub processes on one PostgreSQL database (a new one per test)
//! and one NATS server the test starts on a free port (docs/cluster.md).

#[path = "../benches/hub_process/mod.rs"]
mod hub_process;

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alkhub::connection::now_ms;
use alkhub::peer::{spec, Backoff, CallOptions, HttpCaller, Peer, PeerBuilder};
use alkhub::protocol::OperationType;
use common::{eventually, recv_within, Raw};
use hub_process::{HubFiles, HubProcess, NatsServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// `cluster.lease_ms` of the test nodes.
const LEASE_MS: u64 = 2_000;
/// `cluster.heartbeat_ms` of the test nodes.
const NODE_HEARTBEAT_MS: u64 = 250;
/// `imports.poll_ms` of the test nodes.
const IMPORTS_POLL_MS: u64 = 250;
/// How soon an operation registered on one node is callable on the others
/// (docs/cluster.md).
const PROPAGATION: Duration = Duration::from_secs(2);

/// A cluster of hub processes and what they share.
struct Nodes {
    db: common::TestDb,
    nats: NatsServer,
    cache: tempfile::TempDir,
    files: Vec<HubFiles>,
    nodes: Vec<Option<HubProcess>>,
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Nodes {
    /// `count` nodes on a new database and a new NATS server, started one
    /// after the other (they share the plugin cache).
    async fn start(count: usize) -> Nodes {
        let db = common::postgres().await;
        let nats = NatsServer::start();
        let cache = tempfile::tempdir().unwrap();
        let config = format!(
            "[server]\nshutdown_grace_ms = 1000\n\n\
             [plugins]\ncache_dir = {:?}\n\n\
             [imports]\npoll_ms = {IMPORTS_POLL_MS}\n\n\
             [cluster]\nnats_url = {:?}\nlease_ms = {LEASE_MS}\nheartbeat_ms = {NODE_HEARTBEAT_MS}\n",
            cache.path().display().to_string(),
            nats.url(),
        );
        let files: Vec<HubFiles> = (0..count)
            .map(|_| HubFiles::with_database(tempfile::tempdir().unwrap(), db.url.clone(), &config))
            .collect();
        let mut nodes = Nodes {
            db,
            nats,
            cache,
            files,
            nodes: Vec::new(),
            tokens: Default::default(),
        };
        for i in 0..count {
            let node = nodes.serve(i).await;
            nodes.nodes.push(Some(node));
        }
        nodes
    }

    async fn serve(&self, i: usize) -> HubProcess {
        // `serve` blocks while it waits for the log line.
        tokio::task::block_in_place(|| self.files[i].serve())
    }

    fn node(&self, i: usize) -> &HubProcess {
        self.nodes[i].as_ref().expect("the node runs")
    }

    /// The token of a principal, created on first use.
    fn token(&self, kind: &str, id: &str) -> String {
        let mut tokens = self.tokens.lock().unwrap();
        tokens
            .entry(format!("{kind}/{id}"))
            .or_insert_with(|| self.files[0].token(kind, id))
            .clone()
    }

    async fn client(&self, i: usize, id: &str) -> Peer {
        let token = self.token("client", id);
        PeerBuilder::new(self.node(i).clients_url(), token)
            .connect()
            .await
            .unwrap()
    }

    /// The statuses of the registrations of `operation_id`, from the database.
    async fn statuses(&self, operation_id: &str) -> Vec<String> {
        self.db
            .store
            .registrations_of_operation(operation_id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.status.as_str().to_owned())
            .collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            if let Some(crash) = node.crash().filter(|c| c.contains("panicked")) {
                eprintln!("{crash}: {:#?}", node.log_tail());
            }
        }
        let _ = (&self.nats, &self.cache);
    }
}

/// Calls `operation_id` until it stops answering `NO_PROVIDER` or
/// `OPERATION_NOT_FOUND` (the registration travelling to this node) or
/// `PROVIDER_GONE` (the end of a session it replaces still travelling), at
/// most for [`PROPAGATION`]; returns the first other answer and how long it
/// took.
async fn once_callable(
    client: &Peer,
    operation_id: &str,
    input: Value,
) -> (Result<Value, alkhub::peer::PeerError>, Duration) {
    let started = Instant::now();
    loop {
        let answer = client.call(operation_id, input.clone()).await;
        match &answer {
            Err(e)
                if matches!(
                    e.code.as_str(),
                    "NO_PROVIDER" | "OPERATION_NOT_FOUND" | "PROVIDER_GONE"
                ) && started.elapsed() < PROPAGATION =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return (answer, started.elapsed()),
        }
    }
}

/// A spoke serving `work.*`, and how many `work.hang` calls reached it.
struct Worker {
    peer: Peer,
    hangs: Arc<AtomicUsize>,
}

/// A spoke serving `work.*`; its handlers report their ends (including
/// aborts) on `ends`.
async fn worker(url: String, token: String, ends: mpsc::UnboundedSender<String>) -> Worker {
    let hangs = Arc::new(AtomicUsize::new(0));
    let peer = worker_builder(url, token, ends, hangs.clone())
        .connect()
        .await
        .unwrap();
    Worker { peer, hangs }
}

/// The builder of [`worker`]'s spoke, counting `work.hang` calls in `hangs`.
fn worker_builder(
    url: String,
    token: String,
    ends: mpsc::UnboundedSender<String>,
    hangs: Arc<AtomicUsize>,
) -> PeerBuilder {
    let hang_ends = ends.clone();
    let tick_ends = ends;
    PeerBuilder::new(url, token)
        .operation(spec("work", "echo", OperationType::Query), |req| async move {
            Ok(json!({"echo": req.input, "caller": req.identity.map(|i| i.id)}))
        })
        .operation(spec("work", "hang", OperationType::Query), move |req| {
            let ends = hang_ends.clone();
            hangs.fetch_add(1, Ordering::SeqCst);
            async move {
                let _guard = common::OnDrop::new(ends, format!("hang {}", req.request_id));
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(json!("too late"))
            }
        })
        .subscription(
            spec("work", "ticks", OperationType::Subscription),
            move |req, emitter| {
                let ends = tick_ends.clone();
                async move {
                    let _guard = common::OnDrop::new(ends, format!("ticks {}", req.request_id));
                    let count = req.input["count"].as_u64();
                    for i in 0.. {
                        if count.is_some_and(|c| i >= c) {
                            break;
                        }
                        emitter.emit(json!(i));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(())
                }
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cross_nodes_with_every_event_abort_deadline_and_cascade() {
    let nodes = Nodes::start(3).await;
    let (ends_tx, mut ends) = mpsc::unbounded_channel();
    let worker_on_a = worker(
        nodes.node(0).spokes_url(),
        nodes.token("spoke", "worker"),
        ends_tx,
    )
    .await;
    let client = nodes.client(2, "app").await;

    // A query, answered through node A, with the caller's identity.
    let (answer, took) = once_callable(&client, "work.echo", json!({"n": 1})).await;
    let answer = answer.unwrap();
    assert_eq!(answer["data"], json!({"echo": {"n": 1}, "caller": "app"}));
    eprintln!("work.echo callable on node C {took:?} after the spoke's welcome on node A");

    // Node C's metrics name it and count the spoke on A as a remote session.
    let token = nodes.token("client", "app");
    let request = hub_process::get("/metrics", Some(&token));
    let (status, body) = hub_process::http_raw(
        nodes.node(2).addr,
        &request,
        1 << 20,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alkhub_cluster_node{node=\""), "{body}");
    assert!(
        body.contains("alkhub_cluster_remote_sessions 1\n"),
        "{body}"
    );

    // Over HTTP on node B too: a call, and a subscription as SSE.
    let http = HttpCaller::new(
        format!("http://{}", nodes.node(1).addr),
        Some(token.clone()),
    );
    let answer = http.call("work.echo", json!({"n": 2}), None).await.unwrap();
    assert_eq!(answer["data"]["echo"], json!({"n": 2}));
    let mut events = http
        .subscribe("work.ticks", json!({"count": 3}), None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event.unwrap()["data"].clone());
    }
    assert_eq!(seen, vec![json!(0), json!(1), json!(2)]);
    assert!(recv_within(&mut ends).await.starts_with("ticks"));

    // A subscription with several events, then its completion.
    let mut ticks = client.subscribe("work.ticks", json!({"count": 5}), CallOptions::default());
    let mut seen = Vec::new();
    while let Some(event) = ticks.next().await {
        seen.push(event.unwrap()["data"].clone());
    }
    assert_eq!(seen, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(recv_within(&mut ends).await.starts_with("ticks"));

    // The caller aborts: the provider on A is told.
    let mut ticks = client.subscribe("work.ticks", json!({}), CallOptions::default());
    assert_eq!(ticks.next().await.unwrap().unwrap()["data"], 0);
    ticks.abort();
    assert!(recv_within(&mut ends).await.starts_with("ticks"));

    // A deadline, then an idle timeout: the caller gets TIMEOUT, the
    // provider an abort.
    for options in [
        CallOptions {
            deadline: Some(now_ms() + 300),
            ..Default::default()
        },
        CallOptions {
            idle_timeout: Some(200),
            ..Default::default()
        },
    ] {
        let err = client
            .call_with("work.hang", Value::Null, options)
            .await
            .unwrap_err();
        assert_eq!(err.code, "TIMEOUT", "{err:?}");
        assert!(recv_within(&mut ends).await.starts_with("hang"));
    }

    // The provider aborts: a raw spoke on node B answers with call.aborted.
    let mut raw = Raw::connect(&nodes.node(1).spokes_url()).await;
    raw.send_json(json!({"type": "hello", "payload": {
        "token": nodes.token("spoke", "quitter"),
        "operations": [{"namespace": "quit", "name": "q", "type": "query"}]
    }}))
    .await;
    assert_eq!(raw.recv().await["type"], "welcome");
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { once_callable(&client, "quit.q", Value::Null).await.0 })
    };
    let call = raw.recv().await;
    assert_eq!(call["type"], "call.requested");
    assert_eq!(call["payload"]["identity"]["id"], "app");
    raw.send_json(
        json!({"type": "call.aborted", "payload": {"requestId": call["payload"]["requestId"]}}),
    )
    .await;
    assert_eq!(pending.await.unwrap().unwrap_err().code, "ABORTED");

    // A parent cascade across all three nodes: the client on C calls
    // relay.ticks on B, whose handler calls work.ticks (on A) as its child;
    // aborting the parent aborts the child at A.
    let (child_tx, mut child_end) = mpsc::unbounded_channel::<String>();
    let _relay = PeerBuilder::new(nodes.node(1).spokes_url(), nodes.token("spoke", "relay"))
        .subscription(
            spec("relay", "ticks", OperationType::Subscription),
            move |req, emitter| {
                let child_tx = child_tx.clone();
                async move {
                    let options = CallOptions {
                        parent_request_id: Some(req.request_id.clone()),
                        ..Default::default()
                    };
                    let mut child = req.peer.subscribe("work.ticks", json!({}), options);
                    // Only the hub's cascade may end the child: it runs in a task of its own.
                    tokio::spawn(async move {
                        while let Some(event) = child.next().await {
                            match event {
                                Ok(out) => {
                                    emitter.emit(out["data"].clone());
                                }
                                Err(e) => {
                                    let _ = child_tx.send(e.code);
                                    break;
                                }
                            }
                        }
                    });
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
            },
        )
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let mut relay = loop {
        let mut relay = client.subscribe("relay.ticks", Value::Null, CallOptions::default());
        match relay.next().await.unwrap() {
            Ok(first) => {
                assert_eq!(first["data"], 0);
                break relay;
            }
            Err(e) if e.code == "OPERATION_NOT_FOUND" || e.code == "NO_PROVIDER" => {
                assert!(
                    started.elapsed() < PROPAGATION,
                    "relay.ticks never became callable on C"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("relay.ticks: {e:?}"),
        }
    };
    assert_eq!(relay.next().await.unwrap().unwrap()["data"], 1);
    relay.abort();
    assert!(
        recv_within(&mut ends).await.starts_with("ticks"),
        "the child's provider on A is told"
    );
    assert_eq!(
        recv_within(&mut child_end).await,
        "ABORTED",
        "the child's caller on B is told"
    );

    // The provider on A leaves with a call in flight: PROVIDER_GONE on C.
    let hangs = worker_on_a.hangs.load(Ordering::SeqCst);
    let pending = common::spawn_call(&client, "work.hang", Value::Null);
    eventually("the call reached the provider", || async {
        worker_on_a.hangs.load(Ordering::SeqCst) > hangs
    })
    .await;
    worker_on_a.peer.close();
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(err.code, "PROVIDER_GONE", "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_registered_on_one_node_is_listed_and_callable_on_the_others() {
    let nodes = Nodes::start(3).await;
    let clients = [nodes.client(0, "a").await, nodes.client(2, "c").await];
    let spoke = PeerBuilder::new(nodes.node(1).spokes_url(), nodes.token("spoke", "late"))
        .connect()
        .await
        .unwrap();
    let registered_at = Instant::now();
    spoke.add_operation(
        "late.hello",
        |req| async move { Ok(json!({"hi": req.input})) },
    );
    let result = spoke
        .register(vec![spec("late", "hello", OperationType::Query)])
        .await
        .unwrap();
    assert!(result.rejected.is_empty(), "{:?}", result.rejected);
    for client in &clients {
        let (answer, _) = once_callable(client, "late.hello", json!(7)).await;
        assert_eq!(answer.unwrap()["data"], json!({"hi": 7}));
        let listed = client
            .call("hub.operations.get", json!({"operationId": "late.hello"}))
            .await
            .unwrap();
        assert_eq!(
            (
                listed["data"]["id"].clone(),
                listed["data"]["activeRegistrations"].clone()
            ),
            (json!("late.hello"), json!(1)),
            "{listed}"
        );
    }
    let took = registered_at.elapsed();
    assert!(took < PROPAGATION, "took {took:?}");
    eprintln!("late.hello callable on nodes A and C {took:?} after it was registered on B");

    // A second provider of late.hello on node C: the routing on node A
    // sees both, and its choice is served wherever the provider lives.
    let second = PeerBuilder::new(nodes.node(2).spokes_url(), nodes.token("spoke", "late2"))
        .operation(spec("late", "hello", OperationType::Query), |_| async {
            Ok(json!("from C"))
        })
        .connect()
        .await
        .unwrap();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let answer = clients[0].call("late.hello", json!(1)).await.unwrap();
        served.insert(answer["data"].to_string());
        if served.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(served.len(), 2, "only {served:?} answered");
    second.close();

    // Unregistered on B: gone from the others' catalogs too.
    spoke.unregister(&["late.hello"]).await.unwrap();
    for client in &clients {
        eventually("late.hello has no provider", || async {
            client
                .call("late.hello", json!(1))
                .await
                .is_err_and(|e| e.code == "NO_PROVIDER")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_calls_in_flight_fails_them_and_its_spoke_moves() {
    let mut nodes = Nodes::start(3).await;
    let (ends_tx, _ends) = mpsc::unbounded_channel();
    let token = nodes.token("spoke", "worker");
    // The worker knows node B too, and moves there once A is gone; the
    // bystander does not come back.
    let hangs = Arc::new(AtomicUsize::new(0));
    let spoke = worker_builder(nodes.node(0).spokes_url(), token, ends_tx, hangs.clone())
        .other_url(nodes.node(1).spokes_url())
        .keep_connected(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        });
    let on_a = spoke.connected().await.unwrap();
    let _bystander = PeerBuilder::new(
        nodes.node(0).spokes_url(),
        nodes.token("spoke", "bystander"),
    )
    .operation(spec("idle", "op", OperationType::Query), |_| async {
        Ok(Value::Null)
    })
    .connect()
    .await
    .unwrap();
    let client = nodes.client(2, "app").await;
    once_callable(&client, "work.echo", json!(1))
        .await
        .0
        .unwrap();
    once_callable(&client, "idle.op", Value::Null)
        .await
        .0
        .unwrap();
    let pending: Vec<_> = (0..20)
        .map(|_| common::spawn_call(&client, "work.hang", Value::Null))
        .collect();
    eventually("20 calls at the provider", || async {
        hangs.load(Ordering::SeqCst) == 20
    })
    .await;
    let killed_at = Instant::now();
    nodes.nodes[0].as_mut().unwrap().kill9();
    for call in pending {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code, "PROVIDER_GONE", "{err:?}");
    }
    let answered = killed_at.elapsed();

    // A's registrations are inactive within the lease (and a heartbeat).
    let bound = Duration::from_millis(LEASE_MS + 2 * NODE_HEARTBEAT_MS + 500);
    loop {
        let statuses = nodes.statuses("idle.op").await;
        if statuses.iter().all(|s| s == "inactive") {
            break;
        }
        assert!(
            killed_at.elapsed() < bound,
            "still {statuses:?} after {:?}",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "callers answered {answered:?} and registrations inactive {:?} after the kill",
        killed_at.elapsed()
    );

    // The worker came back on B by itself and is served again; nothing
    // defined is lost.
    eventually("the worker connected again", || async {
        spoke.current().is_some_and(|p| p.close_code().is_none())
    })
    .await;
    assert_eq!(
        on_a.close_code().map(|_| ()),
        Some(()),
        "the session on A ended"
    );
    let (answer, _) = once_callable(&client, "work.echo", json!("again")).await;
    assert_eq!(answer.unwrap()["data"]["echo"], "again");
    for id in ["work.echo", "work.hang", "idle.op"] {
        assert!(
            nodes.db.store.get_operation(id).await.unwrap().is_some(),
            "{id} was lost"
        );
    }
    assert_eq!(nodes.statuses("work.echo").await, vec!["active"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoke_connecting_to_another_node_supersedes_its_session() {
    let nodes = Nodes::start(3).await;
    let token = nodes.token("spoke", "mover");
    let (ends_tx, _ends) = mpsc::unbounded_channel();
    let first = worker(nodes.node(0).spokes_url(), token.clone(), ends_tx.clone())
        .await
        .peer;
    let client = nodes.client(2, "app").await;
    once_callable(&client, "work.echo", json!(1))
        .await
        .0
        .unwrap();

    let _second = worker(nodes.node(1).spokes_url(), token, ends_tx).await;
    let code = tokio::time::timeout(Duration::from_secs(5), first.closed())
        .await
        .expect("the session on node A ends");
    assert_eq!(code, 4409);
    // Calls reach the new session on B; exactly one registration is active.
    let (answer, _) = once_callable(&client, "work.echo", json!(2)).await;
    let answer = answer.unwrap();
    assert_eq!(answer["data"]["echo"], 2);
    eventually("one active registration", || async {
        nodes
            .statuses("work.echo")
            .await
            .iter()
            .filter(|s| *s == "active")
            .count()
            == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_node_leaves_the_others_registrations_active() {
    let mut nodes = Nodes::start(3).await;
    let (ends_tx, _ends) = mpsc::unbounded_channel();
    let _on_a = worker(
        nodes.node(0).spokes_url(),
        nodes.token("spoke", "worker"),
        ends_tx,
    )
    .await;
    let on_b = PeerBuilder::new(nodes.node(1).spokes_url(), nodes.token("spoke", "other"))
        .operation(spec("other", "ping", OperationType::Query), |_| async {
            Ok(json!("pong"))
        })
        .connect()
        .await
        .unwrap();
    let client = nodes.client(2, "app").await;
    once_callable(&client, "work.echo", json!(1))
        .await
        .0
        .unwrap();
    once_callable(&client, "other.ping", Value::Null)
        .await
        .0
        .unwrap();

    // Node C restarts, gracefully and then after a kill -9.
    for graceful in [true, false] {
        let node = nodes.nodes[2].as_mut().unwrap();
        if graceful {
            assert!(node.terminate(Duration::from_secs(10)), "node C stops");
        } else {
            node.kill9();
        }
        nodes.nodes[2] = Some(nodes.serve(2).await);
        for id in ["work.echo", "other.ping"] {
            assert_eq!(nodes.statuses(id).await, vec!["active"], "{id}");
        }
        // The restarted node learns the others' sessions and serves them.
        let client = nodes.client(2, "app").await;
        let (answer, _) = once_callable(&client, "other.ping", Value::Null).await;
        assert_eq!(answer.unwrap()["data"], "pong");
        let (answer, _) = once_callable(&client, "work.echo", json!(3)).await;
        assert_eq!(answer.unwrap()["data"]["echo"], 3);
    }
    // Past a lease, nothing of A's or B's was taken for a dead node's.
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 2 * NODE_HEARTBEAT_MS)).await;
    for id in ["work.echo", "other.ping"] {
        assert_eq!(nodes.statuses(id).await, vec!["active"], "{id}");
    }

    // Node B stops: only its own registration becomes inactive.
    drop(on_b);
    let node = nodes.nodes[1].as_mut().unwrap();
    assert!(node.terminate(Duration::from_secs(10)), "node B stops");
    assert_eq!(nodes.statuses("work.echo").await, vec!["active"]);
    assert_eq!(nodes.statuses("other.ping").await, vec!["inactive"]);
    let client = nodes.client(0, "app").await;
    assert_eq!(
        client.call("work.echo", json!(4)).await.unwrap()["data"]["echo"],
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_refuses_sqlite_and_a_bad_subject_prefix_with_the_reason() {
    let db = common::postgres().await;
    let nats = NatsServer::start();
    // Each configuration fails to start, and the error says why.
    let cases = [
        (
            "[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\n".to_owned(),
            "sqlite://hub.db",
            "cluster mode needs PostgreSQL".to_owned(),
        ),
        (
            format!(
                "[cluster]\nnats_url = {:?}\nsubject_prefix = \"a..b\"\n",
                nats.url()
            ),
            db.url.as_str(),
            "cluster.subject_prefix \"a..b\"".to_owned(),
        ),
    ];
    for (config, database_url, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alkhub.toml"), config).unwrap();
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ];
        let (ok, _, stderr) = common::alkhub(dir.path(), &args);
        assert!(!ok && stderr.contains(&reason), "{stderr}");
    }
}

/// A loopback HTTP server answering every request with 200 and `{"pong":true}`.
async fn pong_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                let body = r#"{"pong":true}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// The id of the node that answers `node`'s `/metrics`.
async fn node_id(nodes: &Nodes, node: usize) -> String {
    let token = nodes.token("client", "prometheus");
    let request = hub_process::get("/metrics", Some(&token));
    let (_, body) = hub_process::http_raw(
        nodes.node(node).addr,
        &request,
        1 << 20,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let start = body
        .find("alkhub_cluster_node{node=\"")
        .expect("a cluster node metric")
        + 26;
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_an_import_and_another_takes_over_when_it_dies() {
    let mut nodes = Nodes::start(3).await;
    let upstream = pong_server().await;
    let spec = nodes.files[0].dir.path().join("pong.json");
    std::fs::write(
        &spec,
        json!({
            "openapi": "3.0.3",
            "info": {"title": "pong", "version": "1"},
            "paths": {"/ping": {"get": {"operationId": "ping", "responses": {"200": {"description": "ok"}}}}}
        })
        .to_string(),
    )
    .unwrap();
    nodes.files[0].cli(&[
        "import",
        "openapi",
        spec.to_str().unwrap(),
        "--namespace",
        "pong",
        "--base-url",
        &upstream,
    ]);
    let ids = [
        node_id(&nodes, 0).await,
        node_id(&nodes, 1).await,
        node_id(&nodes, 2).await,
    ];

    // Every node answers through the one that claimed the import.
    let owner = || async {
        nodes
            .db
            .store
            .fetch_raw_strings("SELECT node FROM cluster_import_owners WHERE name = 'pong'")
            .await
            .unwrap()
    };
    let mut served = None;
    for i in 0..3 {
        let client = nodes.client(i, &format!("app{i}")).await;
        let started = Instant::now();
        loop {
            match client.call("pong.ping", json!({})).await {
                Ok(answer) => {
                    assert_eq!(answer["data"], json!({"pong": true}));
                    break;
                }
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "pong.ping on node {i}: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let claimed = owner().await;
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        assert!(
            served.get_or_insert(claimed[0].clone()) == &claimed[0],
            "the import changed hands"
        );
    }
    let served = served.unwrap();
    assert_eq!(nodes.statuses("pong.ping").await, vec!["active"]);
    let dying = ids
        .iter()
        .position(|id| *id == served)
        .expect("the owner is a node");

    // The owner dies: another node claims the import once the lease lapses.
    nodes.nodes[dying].as_mut().unwrap().kill9();
    let survivor = (dying + 1) % 3;
    let client = nodes.client(survivor, "after").await;
    let killed = Instant::now();
    let bound =
        Duration::from_millis(LEASE_MS + 2 * NODE_HEARTBEAT_MS + 2 * IMPORTS_POLL_MS + 2_000);
    loop {
        if let Ok(answer) = client.call("pong.ping", json!({})).await {
            assert_eq!(answer["data"], json!({"pong": true}));
            break;
        }
        assert!(killed.elapsed() < bound, "nobody took the import over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the import served again {:?} after its node was killed",
        killed.elapsed()
    );
    let claimed = owner().await;
    assert!(claimed.len() == 1 && claimed[0] != served, "{claimed:?}");
    assert_eq!(nodes.statuses("pong.ping").await, vec!["active"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_rejoins_and_its_peers_register_again() {
    let nodes = Nodes::start(3).await;
    let (ends_tx, _ends) = mpsc::unbounded_channel();
    let hangs = Arc::new(AtomicUsize::new(0));
    let spoke = worker_builder(
        nodes.node(0).spokes_url(),
        nodes.token("spoke", "worker"),
        ends_tx,
        hangs,
    )
    .keep_connected(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    });
    let first = spoke.connected().await.unwrap();
    let client = nodes.client(2, "app").await;
    once_callable(&client, "work.echo", json!(1))
        .await
        .0
        .unwrap();

    // Node A stops running for longer than its lease: the others sweep it.
    let pid = nodes.node(0).pid().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 4 * NODE_HEARTBEAT_MS)).await;
    let err = client.call("work.echo", json!(2)).await.unwrap_err();
    assert_eq!(err.code, "NO_PROVIDER", "{err:?}");
    assert_eq!(nodes.statuses("work.echo").await, vec!["inactive"]);

    // It resumes, finds its lease gone, joins again and closes its sessions
    // with 1001; the spoke comes back and is served through C again.
    signal("-CONT");
    let code = tokio::time::timeout(Duration::from_secs(10), first.closed())
        .await
        .expect("the session on A is closed");
    assert_eq!(code, 1001);
    let (answer, _) = once_callable(&client, "work.echo", json!(3)).await;
    assert_eq!(answer.unwrap()["data"]["echo"], 3);
    assert_eq!(nodes.statuses("work.echo").await, vec!["active"]);
}
