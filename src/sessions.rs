//! The registry of live sessions: the one place where a session is attached,
//! superseded and ended.
//!
//! A WebSocket peer ([`crate::session`]) and an in-process provider
//! ([`crate::imports::provider`]) both attach here and both end through
//! [`SessionRegistry::end`], so "a session leaves nothing behind" is written
//! once: its providers leave the catalog, its calls end, the registrations it
//! activated become inactive. The registry does not read frames or own
//! sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::connection::Connection;
use crate::dispatch::Dispatcher;
use crate::presence::Presence;
use crate::protocol::{close, PrincipalKind};
use crate::registration::{Registrar, SessionRegistrations};
use crate::store::Store;

/// Where a session comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A peer that authenticated as the principal created at this time.
    /// Revocation compares it with the stored principal: a principal removed
    /// (or removed and added again under the same id) no longer matches.
    Peer(DateTime<Utc>),
    /// The hub serving something itself (an import); never revoked.
    Internal,
}

/// Why a session could not attach.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// `limits.max_sessions_per_client` sessions of this client are open.
    #[error("client {id} already has {limit} open sessions (limits.max_sessions_per_client)")]
    TooManySessions {
        /// The client.
        id: String,
        /// The limit.
        limit: usize,
    },
}

/// Handle to the registry; cloning shares it.
#[derive(Clone)]
pub struct SessionRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    // A std lock: held for map updates only, never across an await.
    sessions: Mutex<Sessions>,
    next_session: AtomicU64,
    dispatcher: Dispatcher,
    registrar: Registrar,
    store: Store,
    presence: Presence,
    max_sessions_per_client: usize,
}

#[derive(Default)]
struct Sessions {
    all: HashMap<u64, (Arc<Connection>, Origin)>,
    // The live session of each spoke (protocol §2.3: at most one).
    spokes: HashMap<String, Arc<Connection>>,
    // Open sessions per client id.
    clients: HashMap<String, usize>,
}

impl SessionRegistry {
    /// An empty registry ending sessions through these handles.
    pub fn new(
        dispatcher: Dispatcher,
        registrar: Registrar,
        store: Store,
        max_sessions_per_client: usize,
    ) -> Self {
        SessionRegistry {
            shared: Arc::new(Shared {
                sessions: Mutex::default(),
                next_session: AtomicU64::new(1),
                dispatcher,
                registrar,
                store,
                presence: Presence::default(),
                max_sessions_per_client,
            }),
        }
    }

    /// A fresh session id, unique for the hub's lifetime.
    /// When principals' sessions last started and ended.
    pub fn presence(&self) -> &Presence {
        &self.shared.presence
    }

    /// Writes the pending session starts and ends to the store.
    pub async fn flush_presence(&self) {
        self.shared.presence.flush(&self.shared.store).await;
    }

    pub fn next_session_id(&self) -> u64 {
        self.shared.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a session. A spoke's older session is superseded at once: it is
    /// closed with 4409, its providers leave the catalog and its calls end
    /// with `PROVIDER_GONE` before the new session registers anything; its
    /// own task then ends it, which deactivates only the rows it activated.
    pub fn attach(&self, connection: &Arc<Connection>, origin: Origin) -> Result<(), AttachError> {
        let identity = &connection.identity;
        let old = {
            let mut sessions = self.shared.sessions.lock().unwrap();
            let old = match identity.kind {
                PrincipalKind::Spoke => sessions
                    .spokes
                    .insert(identity.id.clone(), connection.clone()),
                PrincipalKind::Client => {
                    let open = sessions.clients.entry(identity.id.clone()).or_insert(0);
                    if origin != Origin::Internal && *open >= self.shared.max_sessions_per_client {
                        return Err(AttachError::TooManySessions {
                            id: identity.id.clone(),
                            limit: self.shared.max_sessions_per_client,
                        });
                    }
                    *open += 1;
                    None
                }
            };
            sessions
                .all
                .insert(connection.session_id, (connection.clone(), origin));
            old
        };
        if let (PrincipalKind::Spoke, Origin::Peer(_)) = (identity.kind, origin) {
            if let Some(hooks) = self.shared.dispatcher.catalog().hooks() {
                hooks.spoke_attached(connection);
            }
        }
        if let Some(old) = old {
            tracing::info!(spoke = %old.identity.id, old = old.session_id, new = connection.session_id, "session superseded");
            old.mark_superseded();
            self.stop(
                &old,
                close::SUPERSEDED,
                "superseded by a newer session of this spoke",
            );
        }
        Ok(())
    }

    /// A session of spoke `id` started on another node at `connected_at_ms`:
    /// this node's session of it, if older, is superseded (4409). Equal
    /// times are settled by `newer_wins_tie`. Returns whether one was.
    pub fn superseded_elsewhere(
        &self,
        id: &str,
        connected_at_ms: u64,
        newer_wins_tie: bool,
    ) -> bool {
        let old = {
            let sessions = self.shared.sessions.lock().unwrap();
            match sessions.spokes.get(id) {
                Some(c)
                    if c.connected_at_ms < connected_at_ms
                        || (c.connected_at_ms == connected_at_ms && newer_wins_tie) =>
                {
                    c.clone()
                }
                _ => return false,
            }
        };
        tracing::info!(spoke = %id, old = old.session_id, "session superseded by one on another node");
        old.mark_superseded();
        self.stop(
            &old,
            close::SUPERSEDED,
            "superseded by a newer session of this spoke on another node",
        );
        true
    }

    /// Closes a session and takes it off the call path at once: after this,
    /// no call reaches it and every call it had open is answered. Its own
    /// task finishes the job with [`SessionRegistry::end`].
    pub fn stop(&self, connection: &Connection, code: u16, reason: &str) {
        // Closing first: the catalog refuses providers of a closing
        // connection, so a registration racing with this cannot publish.
        connection.close(code, reason);
        self.shared
            .dispatcher
            .catalog()
            .remove_session(connection.session_id, None);
        self.shared.dispatcher.connection_gone(connection);
    }

    /// Ends a session: the only teardown. Its providers leave the catalog,
    /// its calls end (its callers' calls are aborted at their providers, the
    /// calls it served answer `PROVIDER_GONE`), the registrations it
    /// activated become inactive, and it leaves the registry.
    pub async fn end(&self, connection: &Connection, mine: &SessionRegistrations) {
        if !connection.is_closing() {
            connection.close(1000, "session ended");
        }
        self.shared
            .dispatcher
            .catalog()
            .remove_session(connection.session_id, None);
        self.shared.dispatcher.connection_gone(connection);
        self.detach(connection);
        if let Err(e) = self.shared.registrar.session_ended(connection, mine).await {
            tracing::warn!(session = connection.session_id, error = %e, "could not mark the session's registrations inactive");
        }
        let identity = &connection.identity;
        self.shared.presence.seen(identity.kind, &identity.id);
        tracing::info!(session = connection.session_id, id = %identity.id, "session ended");
    }

    fn detach(&self, connection: &Connection) {
        let mut sessions = self.shared.sessions.lock().unwrap();
        if sessions.all.remove(&connection.session_id).is_none() {
            return;
        }
        let id = &connection.identity.id;
        match connection.identity.kind {
            PrincipalKind::Spoke => {
                if sessions
                    .spokes
                    .get(id)
                    .is_some_and(|c| c.session_id == connection.session_id)
                {
                    sessions.spokes.remove(id);
                }
            }
            PrincipalKind::Client => {
                if let Some(open) = sessions.clients.get_mut(id) {
                    *open -= 1;
                    if *open == 0 {
                        sessions.clients.remove(id);
                    }
                }
            }
        }
    }

    /// Every live session.
    pub fn live(&self) -> Vec<Arc<Connection>> {
        let sessions = self.shared.sessions.lock().unwrap();
        sessions.all.values().map(|(c, _)| c.clone()).collect()
    }

    /// Live peer sessions with the principal version they authenticated
    /// as (for revocation); internal sessions are left out.
    pub fn peers(&self) -> Vec<(Arc<Connection>, DateTime<Utc>)> {
        let sessions = self.shared.sessions.lock().unwrap();
        sessions
            .all
            .values()
            .filter_map(|(c, origin)| match origin {
                Origin::Peer(version) => Some((c.clone(), *version)),
                Origin::Internal => None,
            })
            .collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.shared.sessions.lock().unwrap().all.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
