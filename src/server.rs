//! Starting and stopping the hub: open the store, reset registrations, load
//! the catalog, serve HTTP and WebSocket until shutdown, then answer or abort
//! every open call and leave every registration inactive.
//!
//! [`Hub`] is the shared handle every handler and session receives; it owns
//! the registry of live sessions but nothing about any single one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::builtins::{self, HubBuiltins};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::connection::Connection;
use crate::crypto::Token;
use crate::dispatch::Dispatcher;
use crate::plugins::PluginHost;
use crate::protocol::{close, PrincipalKind};
use crate::registration::Registrar;
use crate::store::{ImportKind, Principal, Store};

/// The hub's shared state, cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    store: Store,
    dispatcher: Dispatcher,
    registrar: Registrar,
    plugins: PluginHost,
    sessions: Mutex<Sessions>,
    next_session: AtomicU64,
    // HTTP callers authenticate per request; a short-lived cache keeps the
    // database off that path. WebSocket sessions authenticate once, uncached.
    auth_cache: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct Sessions {
    all: HashMap<u64, Arc<Connection>>,
    spokes: HashMap<String, Arc<Connection>>,
}

const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);

impl Hub {
    /// The storage handle.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The configuration the hub was started with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The call path.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.shared.dispatcher
    }

    /// The plugin host.
    pub fn plugins(&self) -> &PluginHost {
        &self.shared.plugins
    }

    /// The registration path.
    pub fn registrar(&self) -> &Registrar {
        &self.shared.registrar
    }

    /// True once shutdown has begun: new sessions and calls are refused.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.shared.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The enabled principal of `kind` holding `token`, if any.
    pub async fn authenticate(&self, kind: PrincipalKind, token: &Token) -> Option<Principal> {
        match self.store().find_principal_by_token(kind, token).await {
            Ok(found) => found.filter(|p| p.enabled),
            Err(e) => {
                tracing::warn!(error = %e, "token lookup failed");
                None
            }
        }
    }

    /// Like [`Hub::authenticate`] for either kind, cached for a few seconds.
    pub async fn authenticate_cached(&self, token: &Token) -> Option<Principal> {
        let kind = match token.kind()? {
            crate::crypto::TokenKind::Spoke => PrincipalKind::Spoke,
            crate::crypto::TokenKind::Client => PrincipalKind::Client,
        };
        let key = token.hash().0;
        if let Some((found, at)) = self.shared.auth_cache.lock().unwrap().get(&key) {
            if at.elapsed() < AUTH_CACHE_TTL {
                return found.clone();
            }
        }
        let found = self.authenticate(kind, token).await;
        let mut cache = self.shared.auth_cache.lock().unwrap();
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
        }
        cache.insert(key, (found.clone(), Instant::now()));
        found
    }

    /// Adds a session to the registry. A spoke's older session is superseded:
    /// its calls end with `PROVIDER_GONE` and it closes with 4409.
    pub async fn attach(&self, connection: &Arc<Connection>) {
        let old = {
            let mut sessions = self.shared.sessions.lock().unwrap();
            sessions
                .all
                .insert(connection.session_id, connection.clone());
            match connection.identity.kind {
                PrincipalKind::Spoke => sessions
                    .spokes
                    .insert(connection.identity.id.clone(), connection.clone()),
                PrincipalKind::Client => None,
            }
        };
        if let Some(old) = old {
            tracing::info!(spoke = %old.identity.id, old = old.session_id, new = connection.session_id, "session superseded");
            old.mark_superseded();
            self.dispatcher()
                .catalog()
                .remove_session(old.session_id, None);
            self.dispatcher().connection_gone(&old);
            old.close(
                close::SUPERSEDED,
                "superseded by a newer session of this spoke",
            );
            // Its registrations become inactive when its own session ends
            // (`Registrar::session_ended`), except those this session
            // re-activates first.
        }
    }

    /// Removes a session from the registry.
    pub fn detach(&self, connection: &Connection) {
        let mut sessions = self.shared.sessions.lock().unwrap();
        sessions.all.remove(&connection.session_id);
        if connection.identity.kind == PrincipalKind::Spoke
            && sessions
                .spokes
                .get(&connection.identity.id)
                .is_some_and(|c| c.session_id == connection.session_id)
        {
            sessions.spokes.remove(&connection.identity.id);
        }
    }

    fn live_sessions(&self) -> Vec<Arc<Connection>> {
        self.shared
            .sessions
            .lock()
            .unwrap()
            .all
            .values()
            .cloned()
            .collect()
    }
}

/// A hub that is listening; [`RunningHub::shutdown`] stops it.
pub struct RunningHub {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    hub: Hub,
    stop: watch::Sender<bool>,
    // Ends the MCP server's sessions and streams, which would otherwise hold
    // the HTTP server's graceful shutdown open.
    stop_mcp: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningHub {
    /// The shared handle.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Graceful shutdown: stop accepting, give open calls the grace period,
    /// abort the rest, close every session with 1001, and leave every
    /// registration inactive in the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let hub = &self.hub;
        hub.shared.shutting_down.store(true, Ordering::Release);
        hub.dispatcher().drain();
        let _ = self.stop.send(true);
        self.stop_mcp.cancel();
        let grace = Duration::from_millis(hub.config().server.shutdown_grace_ms);
        let started = Instant::now();
        while hub.dispatcher().open_calls() > 0 && started.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub.dispatcher().abort_all();
        for connection in hub.live_sessions() {
            connection.close(close::GOING_AWAY, "the hub is shutting down");
        }
        let closing = Instant::now();
        while !hub.live_sessions().is_empty() && closing.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = hub.store().deactivate_all_registrations().await?;
        tracing::info!(deactivated = left, "registrations left inactive");
        self.task.await??;
        hub.store().close().await;
        Ok(())
    }
}

/// Opens the store, prepares it for a fresh start and begins listening.
pub async fn start(config: Config) -> anyhow::Result<RunningHub> {
    let store = Store::open(&config.database.url, config.database.max_connections).await?;
    let reset = store.deactivate_all_registrations().await?;
    tracing::info!(
        engine = store.engine(),
        url = %crate::telemetry::redact_url(&config.database.url),
        deactivated = reset,
        "database ready"
    );
    for definition in builtins::definitions() {
        if let Err(e) = store.define_operation(&definition).await {
            // An older hub's built-in with another contract: replace it.
            tracing::info!(operation = %definition.id(), reason = %e, "updating built-in definition");
            store.delete_operation(&definition.id()).await?;
            store.define_operation(&definition).await?;
        }
    }
    let catalog = Catalog::default();
    for definition in store.list_operations().await? {
        catalog.put_definition(definition);
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;

    let builtins = Arc::new(HubBuiltins {
        catalog: catalog.clone(),
        store: store.clone(),
    });
    let plugins = {
        let plugins_config = config.plugins.clone();
        let namespaces = config.remap.per_spoke_namespaces.clone();
        tokio::task::spawn_blocking(move || PluginHost::start(&plugins_config, namespaces))
            .await??
    };
    let dispatcher = Dispatcher::new(
        catalog.clone(),
        plugins.routing_policy(),
        config.limits.max_open_calls_per_connection,
        builtins,
    );
    let registrar = Registrar::new(
        store.clone(),
        catalog,
        plugins.remap_policy(),
        &config.limits,
    );
    let hub = Hub {
        shared: Arc::new(Shared {
            config,
            store,
            dispatcher,
            registrar,
            plugins,
            sessions: Mutex::default(),
            next_session: AtomicU64::new(1),
            auth_cache: Mutex::default(),
            shutting_down: AtomicBool::new(false),
        }),
    };
    let (stop, stopped) = watch::channel(false);
    spawn_cleanup(hub.clone(), stopped.clone());
    for import in hub.store().list_imports().await? {
        if !import.enabled {
            continue;
        }
        match import.kind {
            ImportKind::Openapi => {
                let name = import.name.clone();
                if let Err(e) = crate::imports::http_provider::start(hub.clone(), import).await {
                    tracing::warn!(import = %name, error = %e, "cannot serve the imported API");
                }
            }
            ImportKind::Mcp => crate::imports::mcp::start(hub.clone(), import),
        }
    }
    let stop_mcp = CancellationToken::new();
    let mut app = crate::http::router(hub.clone());
    if hub.config().mcp.enabled {
        app = app.merge(crate::mcp_server::router(hub.clone(), stop_mcp.clone()));
    }
    let mut stopped_http = stopped;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped_http.wait_for(|s| *s).await;
            })
            .await?;
        Ok(())
    });
    tracing::info!(%addr, "alkhub listening");
    Ok(RunningHub {
        addr,
        hub,
        stop,
        stop_mcp,
        task,
    })
}

/// Deletes spoke-sourced definitions left without active registrations
/// longer than the configured grace period, every cleanup interval.
fn spawn_cleanup(hub: Hub, mut stopped: watch::Receiver<bool>) {
    let db = &hub.config().database;
    let interval = Duration::from_secs(db.cleanup_interval_secs.max(1));
    let grace = Duration::from_secs(db.definition_grace_secs);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            match hub.store().cleanup_orphaned_operations(grace).await {
                Ok(ids) => {
                    for id in &ids {
                        hub.dispatcher().catalog().remove_definition(id);
                    }
                    if !ids.is_empty() {
                        tracing::info!(count = ids.len(), ?ids, "removed orphaned definitions");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "definition cleanup failed"),
            }
        }
    });
}
