//! Several hub nodes on one PostgreSQL database and one NATS server
//! (`docs/cluster.md`, `docs/adr/0001-cluster.md`).
//!
//! - **Leases.** Each node has a row in `cluster_nodes` that it renews every
//!   `cluster.heartbeat_ms`; a node whose lease lapses is dead, and whichever
//!   node notices first deletes its row and deactivates the registrations it
//!   activated (their session ids start with its id).
//! - **One catalog.** A node announces on `<prefix>.catalog` what its own
//!   peers do: a session's registrations, their removal, the session's end, a
//!   spoke's new session (which supersedes its sessions elsewhere), a deleted
//!   definition. The other nodes put a remote provider in their catalog for
//!   each registration: a [`Connection`] whose frames travel over NATS. A node
//!   that starts (or whose NATS connection comes back) asks the others to
//!   announce their sessions again.
//! - **Calls across nodes.** The dispatcher of the node a call arrives at
//!   routes it as usual; when the chosen provider is remote, the frames it
//!   sends that provider go to `<prefix>.n.<node>.p.<session>.<from>`, and
//!   the provider's node starts the call on its own provider under the
//!   caller's node's id ([`Dispatcher::start_forwarded`]). Answers come back
//!   on `<prefix>.n.<from>.c.<node>` as a provider's events. Aborts, timeouts
//!   and departures use the same paths, so the call path is the same for a
//!   local and a remote provider.
//!
//! Nodes trust each other: anyone who may publish on the cluster's subjects
//! is a node. NATS's own accounts and credentials keep others out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use crate::catalog::{CatalogHooks, Provider};
use crate::connection::{now_ms, Connection, Outbound, OutboundQueue, Remote};
use crate::dispatch::{event_frame, CallError, CallEvent, CallRequest, Caller};
use crate::protocol::{self, Envelope, ErrorCode, Identity, PrincipalKind};
use crate::server::Hub;

/// Registrations one announcement carries at most (a session with more is
/// announced in several), which keeps each message far below NATS's
/// default `max_payload` of 1 MiB.
const REGISTRATIONS_PER_MESSAGE: usize = 1_000;

/// How long a stopping node waits for NATS (to say it leaves, to close).
const LEAVE_NATS_WAIT: Duration = Duration::from_secs(2);

/// What a node announces to the others on `<prefix>.catalog`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Announcement {
    /// A node started or reconnected: the others announce their sessions.
    NodeUp { node: String },
    /// A node is shutting down; its sessions are gone.
    NodeDown { node: String },
    /// Registrations of one session (added to what was announced before).
    #[serde(rename_all = "camelCase")]
    Session {
        node: String,
        session: u64,
        identity: Identity,
        labels: BTreeMap<String, String>,
        connected_at: u64,
        registrations: Vec<Announced>,
    },
    /// Some registrations of a session ended.
    Unregistered {
        node: String,
        session: u64,
        registrations: Vec<String>,
    },
    /// A session ended.
    SessionEnded { node: String, session: u64 },
    /// A spoke's session started: its older sessions elsewhere end (4409).
    #[serde(rename_all = "camelCase")]
    SpokeAttached {
        node: String,
        spoke: String,
        connected_at: u64,
    },
    /// A definition was deleted.
    DefinitionRemoved { node: String, id: String },
}

/// One registration in an announcement.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Announced {
    operation_id: String,
    registration_id: String,
    pre_remap_id: String,
    /// The definition is new or changed: read it again from the database.
    #[serde(default)]
    changed: bool,
}

/// A forwarded `call.requested`, with the identity the first node checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Forwarded<'a> {
    #[serde(borrow)]
    request_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    operation_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parent_request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    deadline: Option<u64>,
    #[serde(default)]
    idle_timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    identity: Identity,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIdOnly<'a> {
    #[serde(borrow)]
    request_id: std::borrow::Cow<'a, str>,
}

/// This node in its cluster; cloning shares it.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

struct Shared {
    node: Arc<str>,
    name: String,
    prefix: String,
    nats: async_nats::Client,
    hub: Hub,
    lease_ms: u64,
    max_queued_bytes: usize,
    max_remote_sessions: usize,
    announcements: mpsc::UnboundedSender<Announcement>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Sessions of this node that were announced, with what they provide.
    local: HashMap<u64, Local>,
    /// Sessions on other nodes, as remote providers.
    remote: HashMap<(Arc<str>, u64), Arc<Connection>>,
    /// Per other node, the link its calls to this node's providers use.
    links: HashMap<Arc<str>, Arc<Connection>>,
    /// Other nodes heard of, and when first.
    nodes: HashMap<Arc<str>, Instant>,
}

struct Local {
    connection: Arc<Connection>,
    /// Registration id → (operation id, pre-remap id).
    registrations: HashMap<Arc<str>, (Arc<str>, Arc<str>)>,
}

impl Cluster {
    /// Connects to NATS, joins the cluster (a lease row), subscribes, hooks
    /// into the catalog, asks the other nodes for their sessions and starts
    /// the lease and announcement tasks, which stop with `stopped`.
    pub async fn start(hub: &Hub, stopped: watch::Receiver<bool>) -> anyhow::Result<Cluster> {
        let config = &hub.config().cluster;
        let node: Arc<str> = hub.registrar().instance().into();
        let name = if config.node_name.is_empty() {
            node.to_string()
        } else {
            config.node_name.clone()
        };
        let prefix = config.subject_prefix.clone();
        if prefix.is_empty()
            || prefix.split('.').any(|t| {
                t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        {
            anyhow::bail!(
                "cluster.subject_prefix {prefix:?} is not a NATS subject prefix (tokens of letters, digits, - or _, separated by dots)"
            );
        }
        let (reconnected_tx, mut reconnected) = mpsc::unbounded_channel::<()>();
        let nats = async_nats::ConnectOptions::new()
            .name(format!("alkhub {name}"))
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let reconnected = reconnected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            let _ = reconnected.send(());
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(
                                "NATS connection lost; calls to other nodes fail until it is back"
                            )
                        }
                        other => tracing::info!(event = %other, "NATS"),
                    }
                }
            })
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to NATS at {}: {e}",
                    crate::telemetry::redact_url(&config.nats_url)
                )
            })?;
        let max_payload = nats.server_info().max_payload;
        let max_frame = hub.config().limits.max_frame_bytes;
        if max_payload > 0 && max_payload < max_frame {
            tracing::warn!(
                max_payload,
                max_frame,
                "NATS max_payload is below limits.max_frame_bytes: a call larger than it cannot cross nodes (it fails with OVERLOADED)"
            );
        }
        hub.store()
            .join_cluster(&node, &name, config.lease_ms)
            .await
            .map_err(|e| anyhow::anyhow!("cannot join the cluster: {e}"))?;
        let (announcements, outgoing) = mpsc::unbounded_channel();
        let cluster = Cluster {
            shared: Arc::new(Shared {
                node: node.clone(),
                name,
                prefix: prefix.clone(),
                nats: nats.clone(),
                hub: hub.clone(),
                lease_ms: config.lease_ms,
                max_queued_bytes: config.max_queued_bytes,
                max_remote_sessions: config.max_remote_sessions,
                announcements,
                state: Mutex::default(),
            }),
        };
        let catalog_subject = format!("{prefix}.catalog");
        let mut catalog_in = nats.subscribe(catalog_subject.clone()).await?;
        let mut frames_in = nats.subscribe(format!("{prefix}.n.{node}.>")).await?;
        hub.dispatcher()
            .catalog()
            .set_hooks(Arc::new(cluster.clone()));

        // Announcements go out in order, from one task.
        let publisher = nats.clone();
        tokio::spawn(async move {
            let mut outgoing = outgoing;
            while let Some(announcement) = outgoing.recv().await {
                let body = serde_json::to_vec(&announcement).expect("announcements serialize");
                if let Err(e) = publisher
                    .publish(catalog_subject.clone(), body.into())
                    .await
                {
                    tracing::warn!(error = %e, "cannot announce to the cluster");
                }
            }
        });
        let receiver = cluster.clone();
        tokio::spawn(async move {
            receiver
                .shared
                .hub
                .dispatcher()
                .catalog()
                .wait_loaded()
                .await;
            while let Some(message) = catalog_in.next().await {
                match serde_json::from_slice::<Announcement>(&message.payload) {
                    Ok(announcement) => receiver.heard(announcement).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring an announcement that does not parse")
                    }
                }
            }
        });
        let carrier = cluster.clone();
        tokio::spawn(async move {
            while let Some(message) = frames_in.next().await {
                carrier.frame_in(message.subject.as_str(), &message.payload);
            }
        });
        let resync = cluster.clone();
        tokio::spawn(async move {
            // The first `Connected` is the initial connection.
            while reconnected.recv().await.is_some() {
                resync.announce(Announcement::NodeUp {
                    node: resync.shared.node.to_string(),
                });
            }
        });
        cluster.announce(Announcement::NodeUp {
            node: node.to_string(),
        });
        cluster.spawn_lease(stopped);
        tracing::info!(node = %node, name = %cluster.shared.name, "joined the cluster");
        Ok(cluster)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether this node serves import `name`, claiming it when nobody
    /// live does (one node serves each import; the others reach it through
    /// this node's announcement). `None` when the database did not answer.
    pub async fn claim_import(&self, name: &str) -> Option<bool> {
        match self
            .shared
            .hub
            .store()
            .claim_import(name, &self.shared.node)
            .await
        {
            Ok(mine) => Some(mine),
            Err(e) => {
                tracing::warn!(import = %name, error = %e, "cannot claim the import");
                None
            }
        }
    }

    /// Other nodes' sessions this node holds as remote providers.
    pub fn remote_sessions(&self) -> usize {
        self.shared.state.lock().unwrap().remote.len()
    }

    /// Leaves the cluster: the others forget this node's sessions, and the
    /// registrations it activated become inactive.
    pub async fn leave(&self) -> anyhow::Result<u64> {
        let nats = &self.shared.nats;
        // Published directly: the announcement queue may still hold the
        // ends of this node's sessions, which the others no longer need.
        // NATS may be unreachable: the others then find the lease lapsed.
        let down = Announcement::NodeDown {
            node: self.shared.node.to_string(),
        };
        let body = serde_json::to_vec(&down).expect("announcements serialize");
        let subject = format!("{}.catalog", self.shared.prefix);
        let told = tokio::time::timeout(LEAVE_NATS_WAIT, async {
            nats.publish(subject, body.into()).await?;
            nats.flush().await?;
            anyhow::Ok(())
        })
        .await;
        if !matches!(told, Ok(Ok(()))) {
            tracing::warn!(
                "cannot tell the other nodes that this one stops; they will find its lease lapsed"
            );
        }
        let left = self
            .shared
            .hub
            .store()
            .leave_cluster(&self.shared.node)
            .await?;
        // Nothing crosses nodes any more: close the NATS connection.
        let _ = tokio::time::timeout(LEAVE_NATS_WAIT, nats.drain()).await;
        Ok(left)
    }

    fn announce(&self, announcement: Announcement) {
        let _ = self.shared.announcements.send(announcement);
    }

    /// Renews the lease and looks for dead nodes every heartbeat.
    fn spawn_lease(&self, mut stopped: watch::Receiver<bool>) {
        let cluster = self.clone();
        let config = &self.shared.hub.config().cluster;
        let every = Duration::from_millis(config.heartbeat_ms.max(50));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                cluster.lease_tick().await;
            }
        });
    }

    async fn lease_tick(&self) {
        let shared = &self.shared;
        let store = shared.hub.store();
        match store.renew_lease(&shared.node, shared.lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                // The others found this node's lease lapsed (a long pause, or
                // the database was out of reach) and deactivated its
                // registrations: its peers reconnect and register again, and
                // its imports are served anew at the next poll.
                tracing::error!(node = %shared.node, "this node's lease lapsed; rejoining and closing every session so that peers register again");
                if let Err(e) = store
                    .join_cluster(&shared.node, &shared.name, shared.lease_ms)
                    .await
                {
                    tracing::warn!(error = %e, "cannot rejoin the cluster");
                    return;
                }
                for (connection, _) in shared.hub.sessions().peers() {
                    connection.close(
                        protocol::close::GOING_AWAY,
                        "this hub node lost its cluster lease; connect again",
                    );
                }
                let imports = shared.hub.imports();
                for name in imports.running() {
                    imports.stop(&name).await;
                }
                self.announce(Announcement::NodeUp {
                    node: shared.node.to_string(),
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew this node's cluster lease"),
        }
        match store.reap_dead_nodes().await {
            Ok((dead, swept)) if !dead.is_empty() => {
                tracing::warn!(
                    ?dead,
                    deactivated = swept,
                    "nodes whose lease lapsed removed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for dead nodes"),
        }
        let asked = Instant::now();
        match store.live_nodes().await {
            Ok(live) => {
                let gone: Vec<Arc<str>> = {
                    let state = shared.state.lock().unwrap();
                    state
                        .nodes
                        .iter()
                        .filter(|(node, first)| {
                            **first < asked && !live.iter().any(|l| l.id == ***node)
                        })
                        .map(|(node, _)| node.clone())
                        .collect()
                };
                for node in gone {
                    tracing::warn!(%node, "node gone (its lease lapsed): its providers and calls end");
                    self.forget_node(&node);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the live nodes"),
        }
    }

    /// Ends everything of `node`: its providers leave the catalog (their
    /// calls answer `PROVIDER_GONE`), and the calls it forwarded here end.
    fn forget_node(&self, node: &str) {
        let (sessions, link) = {
            let mut state = self.shared.state.lock().unwrap();
            state.nodes.remove(node);
            let sessions: Vec<Arc<Connection>> = state
                .remote
                .extract_if(|(n, _), _| &**n == node)
                .map(|(_, proxy)| proxy)
                .collect();
            (sessions, state.links.remove(node))
        };
        for proxy in sessions {
            self.drop_remote(&proxy);
        }
        if let Some(link) = link {
            link.close(protocol::close::GOING_AWAY, "node gone");
            self.shared.hub.dispatcher().connection_gone(&link);
        }
    }

    fn drop_remote(&self, proxy: &Connection) {
        proxy.close(protocol::close::GOING_AWAY, "remote session ended");
        let dispatcher = self.shared.hub.dispatcher();
        dispatcher.catalog().remove_session(proxy.session_id, None);
        dispatcher.connection_gone(proxy);
    }

    /// Applies another node's announcement.
    async fn heard(&self, announcement: Announcement) {
        let me = &*self.shared.node;
        match announcement {
            Announcement::NodeUp { node } if node != me => {
                self.saw(&node);
                self.announce_all_sessions();
            }
            Announcement::NodeDown { node } if node != me => self.forget_node(&node),
            Announcement::Session {
                node,
                session,
                identity,
                labels,
                connected_at,
                registrations,
            } if node != me => {
                self.add_remote(
                    &node,
                    session,
                    identity,
                    labels,
                    connected_at,
                    registrations,
                )
                .await
            }
            Announcement::Unregistered {
                node,
                session,
                registrations,
            } if node != me => {
                if let Some(proxy) = self.remote_session(&node, session, false) {
                    let ids: Vec<Arc<str>> = registrations
                        .iter()
                        .map(|r| Arc::from(r.as_str()))
                        .collect();
                    self.shared
                        .hub
                        .dispatcher()
                        .catalog()
                        .remove_session(proxy.session_id, Some(&ids));
                }
            }
            Announcement::SessionEnded { node, session } if node != me => {
                if let Some(proxy) = self.remote_session(&node, session, true) {
                    self.drop_remote(&proxy);
                }
            }
            Announcement::SpokeAttached {
                node,
                spoke,
                connected_at,
            } if node != me => {
                // On a tie, the node with the greater id keeps its session.
                let newer_wins_tie = *node > *me;
                self.shared.hub.sessions().superseded_elsewhere(
                    &spoke,
                    connected_at,
                    newer_wins_tie,
                );
            }
            Announcement::DefinitionRemoved { node, id } if node != me => {
                self.shared
                    .hub
                    .dispatcher()
                    .catalog()
                    .forget_definition(&id);
            }
            _ => {}
        }
    }

    /// The remote provider of `session` on `node`; taken out of the map
    /// with `remove`.
    fn remote_session(&self, node: &str, session: u64, remove: bool) -> Option<Arc<Connection>> {
        let mut state = self.shared.state.lock().unwrap();
        let key = (Arc::from(node), session);
        if remove {
            state.remote.remove(&key)
        } else {
            state.remote.get(&key).cloned()
        }
    }

    fn saw(&self, node: &str) -> Arc<str> {
        let mut state = self.shared.state.lock().unwrap();
        if let Some((known, _)) = state.nodes.get_key_value(node) {
            return known.clone();
        }
        let node: Arc<str> = node.into();
        state.nodes.insert(node.clone(), Instant::now());
        node
    }

    async fn add_remote(
        &self,
        node: &str,
        session: u64,
        identity: Identity,
        labels: BTreeMap<String, String>,
        connected_at: u64,
        registrations: Vec<Announced>,
    ) {
        let shared = &self.shared;
        let hub = &shared.hub;
        let catalog = hub.dispatcher().catalog();
        let node = self.saw(node);
        let proxy = {
            let mut state = shared.state.lock().unwrap();
            let key = (node.clone(), session);
            // A closed one (its link overflowed) is replaced.
            let open = state.remote.get(&key).filter(|p| !p.is_closing()).cloned();
            match open {
                Some(proxy) => proxy,
                None if state.remote.len() >= shared.max_remote_sessions
                    && !state.remote.contains_key(&key) =>
                {
                    tracing::warn!(%node, session, limit = shared.max_remote_sessions, "remote session ignored: cluster.max_remote_sessions reached");
                    return;
                }
                None => {
                    let (proxy, queue) = Connection::new_remote(
                        hub.sessions().next_session_id(),
                        identity,
                        labels,
                        shared.max_queued_bytes,
                        connected_at,
                        Remote {
                            node: node.clone(),
                            session,
                        },
                    );
                    state.remote.insert(key, proxy.clone());
                    let subject = format!("{}.n.{node}.p.{session}.{}", shared.prefix, shared.node);
                    self.spawn_forwarder(proxy.clone(), queue, subject);
                    proxy
                }
            }
        };
        for registration in registrations {
            let id = registration.operation_id.as_str();
            if registration.changed || catalog.get(id).is_none() {
                match hub.store().get_operation(id).await {
                    Ok(Some(definition)) => catalog.put_definition(definition),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(operation = %id, error = %e, "cannot read a definition another node registered");
                        continue;
                    }
                }
            }
            catalog.add_provider(
                id,
                Provider::new(
                    registration.registration_id.as_str().into(),
                    registration.pre_remap_id.as_str().into(),
                    proxy.clone(),
                ),
            );
        }
    }

    /// Announces every session of this node again (another node started).
    fn announce_all_sessions(&self) {
        let sessions: Vec<(Arc<Connection>, Vec<Announced>)> = {
            let state = self.shared.state.lock().unwrap();
            state
                .local
                .values()
                .map(|local| {
                    let registrations = local
                        .registrations
                        .iter()
                        .map(|(reg, (op, pre))| Announced {
                            operation_id: op.to_string(),
                            registration_id: reg.to_string(),
                            pre_remap_id: pre.to_string(),
                            changed: false,
                        })
                        .collect();
                    (local.connection.clone(), registrations)
                })
                .collect()
        };
        for (connection, registrations) in sessions {
            self.announce_session(&connection, registrations);
        }
    }

    fn announce_session(&self, connection: &Connection, mut registrations: Vec<Announced>) {
        while !registrations.is_empty() {
            let rest = registrations.split_off(registrations.len().min(REGISTRATIONS_PER_MESSAGE));
            self.announce(Announcement::Session {
                node: self.shared.node.to_string(),
                session: connection.session_id,
                identity: connection.identity.clone(),
                labels: connection.labels.clone(),
                connected_at: connection.connected_at_ms,
                registrations,
            });
            registrations = rest;
        }
    }

    /// Sends what this node queues for `connection` (a remote provider or
    /// another node's link) to `subject`, until it closes; then it leaves
    /// the call path.
    fn spawn_forwarder(
        &self,
        connection: Arc<Connection>,
        mut queue: OutboundQueue,
        subject: String,
    ) {
        let cluster = self.clone();
        let subject = async_nats::Subject::from(subject);
        tokio::spawn(async move {
            let nats = cluster.shared.nats.clone();
            while let Some(Outbound::Text(frame)) = queue.recv().await {
                let payload = bytes::Bytes::from(frame);
                if let Err(e) = nats.publish(subject.clone(), payload.clone()).await {
                    let frame = String::from_utf8_lossy(&payload);
                    cluster.undeliverable(&connection, &frame, payload.len(), &e.to_string());
                }
            }
            // Closed: a remote provider that overflowed its queue, or one
            // that ended; ending twice is harmless.
            let dispatcher = cluster.shared.hub.dispatcher();
            if connection.remote.as_ref().is_some_and(|r| r.session != 0) {
                if let Some(remote) = &connection.remote {
                    let mut state = cluster.shared.state.lock().unwrap();
                    let key = (remote.node.clone(), remote.session);
                    if state
                        .remote
                        .get(&key)
                        .is_some_and(|c| c.session_id == connection.session_id)
                    {
                        state.remote.remove(&key);
                    }
                }
                dispatcher
                    .catalog()
                    .remove_session(connection.session_id, None);
            }
            dispatcher.connection_gone(&connection);
        });
    }

    /// A frame that NATS refused (too big, or the connection is closed): the
    /// call it belongs to must still end.
    fn undeliverable(&self, connection: &Connection, frame: &str, bytes: usize, why: &str) {
        let Some((kind, payload)) = split_frame(frame) else {
            return;
        };
        let Ok(RequestIdOnly { request_id }) = serde_json::from_str(payload) else {
            return;
        };
        let message = format!(
            "the call could not reach the other hub node ({bytes} bytes; {why}); raise max_payload of the NATS server if the call is large"
        );
        tracing::warn!(request = %request_id, bytes, error = why, "frame not forwarded to another node");
        let dispatcher = self.shared.hub.dispatcher();
        let is_link = connection.remote.as_ref().is_some_and(|r| r.session == 0);
        if is_link {
            // An answer for the other node's caller: end the call here, and
            // tell the caller why if a small frame still gets through.
            let error = CallEvent::Error(CallError::new(ErrorCode::Overloaded, message));
            let small = event_frame(&request_id, &error);
            if small.len() < bytes {
                connection.send(small);
            }
            dispatcher.caller_abort(connection, &request_id);
        } else if kind == "call.requested" {
            let event = protocol::CallEventIn {
                request_id,
                output: None,
                code: Some(ErrorCode::Overloaded.as_str().into()),
                message: Some(message.into()),
                details: None,
            };
            let _ = dispatcher.provider_event(connection, "call.error", event);
        }
    }

    /// A frame from another node: a call (or its abort) for a provider of
    /// this node, or an answer for a call this node forwarded.
    fn frame_in(&self, subject: &str, payload: &[u8]) {
        let prefix_len = self.shared.prefix.len() + 3 + self.shared.node.len() + 1;
        let Some(rest) = subject.get(prefix_len..) else {
            return;
        };
        let Ok(frame) = std::str::from_utf8(payload) else {
            tracing::warn!(subject, "frame from another node is not UTF-8");
            return;
        };
        let mut tokens = rest.split('.');
        match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
            (Some("p"), Some(session), Some(from), None) => match session.parse::<u64>() {
                Ok(session) => self.call_in(session, from, frame),
                Err(_) => tracing::warn!(subject, "bad session in a subject"),
            },
            (Some("c"), Some(from), None, None) => self.answer_in(from, frame),
            _ => tracing::warn!(subject, "frame on an unknown subject"),
        }
    }

    /// The link that carries `node`'s calls to this node's providers.
    fn link(&self, node: &str) -> Arc<Connection> {
        let node = self.saw(node);
        let mut state = self.shared.state.lock().unwrap();
        if let Some(link) = state.links.get(&node) {
            if !link.is_closing() {
                return link.clone();
            }
        }
        let (link, queue) = Connection::new_remote(
            self.shared.hub.sessions().next_session_id(),
            Identity {
                kind: PrincipalKind::Client,
                id: format!("node:{node}"),
                scopes: Vec::new(),
            },
            BTreeMap::new(),
            self.shared.max_queued_bytes,
            now_ms(),
            Remote {
                node: node.clone(),
                session: 0,
            },
        );
        state.links.insert(node.clone(), link.clone());
        let subject = format!("{}.n.{node}.c.{}", self.shared.prefix, self.shared.node);
        drop(state);
        self.spawn_forwarder(link.clone(), queue, subject);
        link
    }

    fn call_in(&self, session: u64, from: &str, frame: &str) {
        let Some((kind, payload)) = split_frame(frame) else {
            tracing::warn!(from, "frame from another node does not parse");
            return;
        };
        let link = self.link(from);
        let dispatcher = self.shared.hub.dispatcher();
        match kind.as_ref() {
            "call.requested" => {
                let call: Forwarded<'_> = match serde_json::from_str(payload) {
                    Ok(call) => call,
                    Err(e) => {
                        tracing::warn!(from, error = %e, "forwarded call does not parse");
                        return;
                    }
                };
                let request_id: Arc<str> = call.request_id.as_ref().into();
                let refuse = |error: CallError| {
                    link.send(event_frame(&request_id, &CallEvent::Error(error)));
                };
                let Some((entry, chosen)) = dispatcher
                    .catalog()
                    .provider_of(session, &call.operation_id)
                else {
                    return refuse(CallError::new(
                        ErrorCode::ProviderGone,
                        "the provider disconnected before it answered",
                    ));
                };
                let request = CallRequest {
                    operation_id: &entry.definition.id,
                    input: call.input,
                    parent_request_id: call.parent_request_id.as_deref(),
                    deadline_ms: call.deadline,
                    idle_timeout_ms: call.idle_timeout,
                    metadata: call.metadata,
                };
                let caller = Caller::Connection {
                    connection: link.clone(),
                    request_id: request_id.clone(),
                };
                if let Err(error) =
                    dispatcher.start_forwarded(caller, &call.identity, &entry, chosen, request)
                {
                    refuse(error);
                }
            }
            "call.aborted" => {
                if let Ok(RequestIdOnly { request_id }) = serde_json::from_str(payload) {
                    dispatcher.caller_abort(&link, &request_id);
                }
            }
            other => {
                tracing::warn!(from, kind = %protocol::clip(other), "unexpected frame for a provider")
            }
        }
    }

    fn answer_in(&self, from: &str, frame: &str) {
        let Some((kind, payload)) = split_frame(frame) else {
            tracing::warn!(from, "answer from another node does not parse");
            return;
        };
        let kind = kind.as_ref();
        if !matches!(
            kind,
            "call.responded" | "call.completed" | "call.error" | "call.aborted"
        ) {
            return;
        }
        let Ok(event) = serde_json::from_str::<protocol::CallEventIn<'_>>(payload) else {
            tracing::warn!(from, "answer from another node does not parse");
            return;
        };
        let dispatcher = self.shared.hub.dispatcher();
        // Late answers of calls that already ended are dropped.
        let Some(provider) = dispatcher.provider_of_call(&event.request_id) else {
            return;
        };
        if provider.remote.as_ref().is_none_or(|r| &*r.node != from) {
            return;
        }
        if let Err(e) = dispatcher.provider_event(&provider, kind, event) {
            tracing::warn!(from, error = %e.message, "answer from another node refused");
        }
    }
}

/// A frame's type and its payload, unparsed (`{}` when it has none).
fn split_frame(frame: &str) -> Option<(std::borrow::Cow<'_, str>, &str)> {
    let envelope = serde_json::from_str::<Envelope<'_>>(frame).ok()?;
    let payload = envelope.payload.map_or("{}", |p| p.get());
    Some((envelope.kind, payload))
}

impl CatalogHooks for Cluster {
    fn published(&self, connection: &Arc<Connection>, items: &[(Arc<str>, Arc<Provider>, bool)]) {
        if connection.remote.is_some() {
            return;
        }
        {
            let mut state = self.shared.state.lock().unwrap();
            let local = state
                .local
                .entry(connection.session_id)
                .or_insert_with(|| Local {
                    connection: connection.clone(),
                    registrations: HashMap::new(),
                });
            for (operation_id, provider, _) in items {
                local.registrations.insert(
                    provider.registration_id.clone(),
                    (operation_id.clone(), provider.pre_remap_id.clone()),
                );
            }
        }
        let registrations = items
            .iter()
            .map(|(operation_id, provider, changed)| Announced {
                operation_id: operation_id.to_string(),
                registration_id: provider.registration_id.to_string(),
                pre_remap_id: provider.pre_remap_id.to_string(),
                changed: *changed,
            })
            .collect();
        self.announce_session(connection, registrations);
    }

    fn removed(&self, session_id: u64, only: Option<&[Arc<str>]>) {
        let announcement = {
            let mut state = self.shared.state.lock().unwrap();
            match only {
                None => state
                    .local
                    .remove(&session_id)
                    .map(|_| Announcement::SessionEnded {
                        node: self.shared.node.to_string(),
                        session: session_id,
                    }),
                Some(ids) => state.local.get_mut(&session_id).map(|local| {
                    for id in ids {
                        local.registrations.remove(id);
                    }
                    Announcement::Unregistered {
                        node: self.shared.node.to_string(),
                        session: session_id,
                        registrations: ids.iter().map(|id| id.to_string()).collect(),
                    }
                }),
            }
        };
        if let Some(announcement) = announcement {
            self.announce(announcement);
        }
    }

    fn definition_removed(&self, id: &str) {
        self.announce(Announcement::DefinitionRemoved {
            node: self.shared.node.to_string(),
            id: id.to_owned(),
        });
    }

    fn spoke_attached(&self, connection: &Arc<Connection>) {
        // The spoke's sessions elsewhere are older: their nodes end them
        // when they hear of this one, and here they leave the catalog at
        // once, so that this session may register what they provided (a
        // dead node's sessions would otherwise stay until its lease lapses).
        // On a tie, the session on the node with the greater id wins.
        let me = &*self.shared.node;
        let older: Vec<Arc<Connection>> = {
            let mut state = self.shared.state.lock().unwrap();
            state
                .remote
                .extract_if(|(node, _), proxy| {
                    proxy.identity.kind == PrincipalKind::Spoke
                        && proxy.identity.id == connection.identity.id
                        && (proxy.connected_at_ms, &**node) < (connection.connected_at_ms, me)
                })
                .map(|(_, proxy)| proxy)
                .collect()
        };
        for proxy in older {
            self.drop_remote(&proxy);
        }
        self.announce(Announcement::SpokeAttached {
            node: self.shared.node.to_string(),
            spoke: connection.identity.id.clone(),
            connected_at: connection.connected_at_ms,
        });
    }
}
