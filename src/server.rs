//! Starting and stopping the hub: open the store, reset registrations, load
//! the catalog, serve HTTP and WebSocket until shutdown, then answer or abort
//! every open call and leave every registration inactive.
//!
//! [`Hub`] is the shared handle every handler and session receives; the
//! sessions themselves belong to [`crate::sessions`], token lookups to
//! [`crate::auth`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::builtins::{self, HubBuiltins};
use crate::catalog::Catalog;
use crate::config::{Config, LimitsConfig};
use crate::dispatch::Dispatcher;
use crate::imports::live::LiveImports;
use crate::limits::Quota;
use crate::metrics::{Metrics, PluginFigures, Snapshot};
use crate::plugins::PluginHost;
use crate::protocol::{close, PrincipalKind};
use crate::registration::Registrar;
use crate::sessions::SessionRegistry;
use crate::store::Store;

/// The hub's shared state, cheap to clone: a bundle of the handles each
/// part owns (store, call path, registrations, plugins, sessions, auth, the
/// concurrency caps), so that handlers and sessions receive one value.
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
    sessions: SessionRegistry,
    auth: Auth,
    quotas: Quotas,
    metrics: Arc<Metrics>,
    imports: LiveImports,
    shutting_down: AtomicBool,
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
}

/// The caps on what peers may hold open at once (see `[limits]`).
pub struct Quotas {
    /// WebSocket connections, authenticated or not (one key).
    pub connections: Quota,
    /// Connections that have not authenticated yet, per remote address.
    pub unauthenticated: Quota,
    /// HTTP calls, per principal.
    pub http_calls: Quota,
    /// SSE streams, per principal.
    pub sse_streams: Quota,
}

impl Quotas {
    fn new(limits: &LimitsConfig) -> Self {
        Quotas {
            connections: Quota::new(limits.max_connections, usize::MAX),
            unauthenticated: Quota::new(
                limits.max_unauthenticated,
                limits.max_unauthenticated_per_address,
            ),
            http_calls: Quota::new(limits.max_http_calls, limits.max_http_calls_per_principal),
            sse_streams: Quota::new(limits.max_sse_streams, limits.max_sse_streams_per_principal),
        }
    }
}

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

    /// The live sessions.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.shared.sessions
    }

    /// Token lookups.
    pub fn auth(&self) -> &Auth {
        &self.shared.auth
    }

    /// The imports the hub serves.
    pub fn imports(&self) -> &LiveImports {
        &self.shared.imports
    }

    /// The metrics counted as they happen.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The figures `GET /metrics` reads at each scrape.
    pub async fn metrics_snapshot(&self) -> Snapshot {
        let live = self.sessions().live();
        let peers = self.sessions().peers();
        let count = |kind: PrincipalKind| {
            peers
                .iter()
                .filter(|(c, _)| c.identity.kind == kind)
                .count() as u64
        };
        let catalog = self.dispatcher().catalog();
        let entries = catalog.list();
        let plugins = self.plugins().status().plugins;
        let enabled_imports = match self.store().list_imports().await {
            Ok(imports) => imports.iter().filter(|i| i.enabled).count() as u64,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot list the imports");
                0
            }
        };
        let serving_imports = live.len().saturating_sub(peers.len()) as u64;
        Snapshot {
            calls_in_flight: self.dispatcher().open_calls() as u64,
            sessions: vec![
                ("spoke", count(PrincipalKind::Spoke)),
                ("client", count(PrincipalKind::Client)),
            ],
            operations: entries.len() as u64,
            registrations: entries.iter().map(|e| e.providers.len() as u64).sum(),
            outbound_queue_bytes: live.iter().map(|c| c.queued_bytes() as u64).sum(),
            plugins: plugins
                .into_iter()
                .map(|p| PluginFigures {
                    decision_time: Duration::from_secs_f64(
                        p.mean_latency_us * p.decisions as f64 / 1e6,
                    ),
                    quarantined: p.status == "quarantined",
                    decisions: p.decisions,
                    failures: p.failures,
                    fallbacks: p.fallbacks,
                    quarantines: p.quarantines,
                    name: p.name,
                })
                .collect(),
            db_pool: self.store().pool_use(),
            db_errors: self.store().errors(),
            imports: vec![
                ("serving", serving_imports),
                ("down", enabled_imports.saturating_sub(serving_imports)),
            ],
            cluster: self.cluster().map(|c| {
                (
                    c.node().to_owned(),
                    c.name().to_owned(),
                    c.remote_sessions() as u64,
                )
            }),
        }
    }

    /// The caps on connections, HTTP calls and streams.
    pub fn quotas(&self) -> &Quotas {
        &self.shared.quotas
    }

    /// This node's cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.shared.cluster.get()
    }

    /// True once shutdown has begun: new sessions and calls are refused.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.load(Ordering::Acquire)
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

    /// Applies `config` without a restart (what `SIGHUP` does): the
    /// `[plugins]` section takes effect for the next decision (see
    /// [`PluginHost::reconfigure`]); a change to any other section is
    /// reported as waiting for the next start. [`Hub::config`] keeps the
    /// configuration the hub started with. Returns each change in words.
    pub fn reload(&self, config: &Config) -> Vec<String> {
        let hub = &self.hub;
        let plugins = hub.plugins();
        let mut changes =
            plugins.reconfigure(&config.plugins, &hub.config().remap.per_spoke_namespaces);
        hub.dispatcher().set_routing(plugins.routing_policy());
        hub.registrar().set_remap(plugins.remap_policy());
        let started = hub.config();
        for (section, differs) in [
            ("server", started.server != config.server),
            ("database", started.database != config.database),
            ("log", started.log != config.log),
            ("limits", started.limits != config.limits),
            ("remap", started.remap != config.remap),
            ("mcp", started.mcp != config.mcp),
            ("cluster", started.cluster != config.cluster),
        ] {
            if differs {
                let change = format!("[{section}] changed; it takes effect at the next start");
                tracing::warn!(change = %change, "configuration reloaded");
                changes.push(change);
            }
        }
        if changes.is_empty() {
            tracing::info!("configuration reloaded: nothing changed");
        }
        changes
    }

    /// Graceful shutdown: stop accepting, give open calls the grace period,
    /// abort the rest, close every session with 1001, and leave every
    /// registration inactive in the database (in a cluster, only this
    /// node's, and the other nodes are told). Returns by the hard deadline
    /// (`shutdown_grace_ms + shutdown_hard_ms`) whatever is still open: a
    /// peer that never closes or a request body that never ends cannot hold
    /// it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let hub = &self.hub;
        let server = &hub.config().server;
        let grace = Duration::from_millis(server.shutdown_grace_ms);
        let hard = grace + Duration::from_millis(server.shutdown_hard_ms);
        let started = Instant::now();
        hub.shared.shutting_down.store(true, Ordering::Release);
        hub.dispatcher().drain();
        let _ = self.stop.send(true);
        self.stop_mcp.cancel();
        while hub.dispatcher().open_calls() > 0 && started.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub.dispatcher().abort_all();
        for connection in hub.sessions().live() {
            connection.close(close::GOING_AWAY, "the hub is shutting down");
        }
        while !hub.sessions().is_empty() && started.elapsed() < hard {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hub.sessions().flush_presence().await;
        let left = match hub.cluster() {
            // Other nodes' registrations stay: only this node's go.
            Some(cluster) => cluster.leave().await?,
            None => hub.store().deactivate_all_registrations().await?,
        };
        tracing::info!(deactivated = left, "registrations left inactive");
        let mut task = self.task;
        let remaining = hard.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, &mut task).await {
            Ok(served) => served??,
            Err(_) => {
                tracing::warn!(
                    "connections still open at the hard shutdown deadline (server.shutdown_hard_ms); dropping them"
                );
                task.abort();
            }
        }
        hub.store().close().await;
        Ok(())
    }
}

/// Opens the store, prepares it for a fresh start and begins listening.
pub async fn start(config: Config) -> anyhow::Result<RunningHub> {
    crate::imports::tls::install_provider();
    let started = Instant::now();
    // The plugins compile (or load from their cache) while the database opens.
    let plugins = {
        let plugins_config = config.plugins.clone();
        let namespaces = config.remap.per_spoke_namespaces.clone();
        tokio::task::spawn_blocking(move || PluginHost::start(&plugins_config, namespaces))
    };
    if config.cluster.enabled() && !config.database.url.starts_with("postgres") {
        anyhow::bail!(
            "[cluster] nats_url is set, and cluster mode needs PostgreSQL: set [database] url \
             (or --database-url) to a postgres:// URL all nodes share, or leave cluster.nats_url empty"
        );
    }
    let store = Store::open(&config.database.url, config.database.max_connections).await?;
    tracing::info!(
        engine = store.engine(),
        url = %crate::telemetry::redact_url(&config.database.url),
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
    // The stored definitions load after the hub listens (see spawn_load).
    let catalog = Catalog::loading();
    let listener = listen(config.server.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;

    let builtins = Arc::new(HubBuiltins {
        catalog: catalog.clone(),
        store: store.clone(),
        max_page: config.limits.max_list_page,
    });
    let plugins = plugins.await??;
    let metrics = Arc::new(Metrics::new(
        config.metrics.enabled,
        config.metrics.max_namespaces,
    ));
    let dispatcher = Dispatcher::new(
        catalog.clone(),
        plugins.routing_policy(),
        &config.limits,
        builtins,
        metrics.clone(),
    );
    let registrar = Registrar::new(
        store.clone(),
        catalog,
        plugins.remap_policy(),
        &config.limits,
    );
    let limits = &config.limits;
    let sessions = SessionRegistry::new(
        dispatcher.clone(),
        registrar.clone(),
        store.clone(),
        limits.max_sessions_per_client,
    );
    let auth = Auth::new(
        store.clone(),
        Duration::from_millis(limits.auth_cache_ttl_ms),
        limits.auth_cache_entries,
    );
    let quotas = Quotas::new(limits);
    let hub = Hub {
        shared: Arc::new(Shared {
            config,
            store,
            dispatcher,
            registrar,
            plugins,
            sessions,
            auth,
            quotas,
            metrics,
            imports: LiveImports::default(),
            shutting_down: AtomicBool::new(false),
            cluster: std::sync::OnceLock::new(),
        }),
    };
    let (stop, stopped) = watch::channel(false);
    if hub.config().cluster.enabled() {
        let cluster = crate::cluster::Cluster::start(&hub, stopped.clone()).await?;
        let _ = hub.shared.cluster.set(cluster);
    }
    spawn_load(hub.clone());
    spawn_reset(hub.clone());
    spawn_cleanup(hub.clone(), stopped.clone());
    spawn_revocation(hub.clone(), stopped.clone());
    let flushing = hub.clone();
    every(
        crate::presence::FLUSH_INTERVAL,
        stopped.clone(),
        move || {
            let hub = flushing.clone();
            async move { hub.sessions().flush_presence().await }
        },
    );
    for import in hub.store().list_imports().await? {
        hub.imports().start(&hub, import).await;
    }
    if hub.config().imports.poll_ms > 0 {
        let syncing = hub.clone();
        every(
            Duration::from_millis(hub.config().imports.poll_ms),
            stopped.clone(),
            move || {
                let hub = syncing.clone();
                async move {
                    if let Err(e) = hub.imports().sync(&hub).await {
                        tracing::warn!(error = %e, "cannot read the imports table");
                    }
                }
            },
        );
    }
    let stop_mcp = CancellationToken::new();
    let mut app = crate::http::router(hub.clone())
        .merge(crate::admin::router(hub.clone()))
        .merge(crate::dashboard::router(hub.clone()));
    if hub.config().mcp.enabled {
        app = app.merge(crate::mcp_server::router(hub.clone(), stop_mcp.clone()));
    }
    // Every route reads its request body within the size and time limits.
    app = app.layer(axum::middleware::from_fn_with_state(
        hub.clone(),
        crate::http::bounded_body,
    ));
    let mut stopped_http = stopped;
    let task = tokio::spawn(async move {
        // Every frame goes out at once: without TCP_NODELAY a small answer
        // can wait tens of milliseconds for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped_http.wait_for(|s| *s).await;
        })
        .await?;
        Ok(())
    });
    tracing::info!(%addr, ready_ms = started.elapsed().as_millis() as u64, "alkhub listening");
    Ok(RunningHub {
        addr,
        hub,
        stop,
        stop_mcp,
        task,
    })
}

/// Loads the stored definitions into the catalog once the hub listens.
/// Until it is done a call of an id not loaded yet gets `NO_PROVIDER` (no
/// provider can be back yet anyway), declarations wait, and listings wait.
/// Retries until the database answers.
fn spawn_load(hub: Hub) {
    tokio::spawn(async move {
        let started = Instant::now();
        let catalog = hub.dispatcher().catalog();
        let mut backoff = Duration::from_millis(100);
        loop {
            match hub.store().list_operations().await {
                Ok(definitions) => {
                    let count = definitions.len();
                    catalog.load_definitions(definitions);
                    catalog.finish_loading();
                    tracing::info!(
                        definitions = count,
                        ms = started.elapsed().as_millis() as u64,
                        "stored definitions loaded"
                    );
                    return;
                }
                Err(e) if hub.is_shutting_down() => {
                    tracing::debug!(error = %e, "definitions not loaded before shutdown");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot load the stored definitions; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// Marks inactive what earlier runs left active (no session survives a
/// restart), in the background: the hub listens meanwhile, and this run's
/// own sessions are never touched. Retries until the database answers.
fn spawn_reset(hub: Hub) {
    tokio::spawn(async move {
        let instance = hub.registrar().instance().to_owned();
        let mut backoff = Duration::from_millis(100);
        loop {
            // In a cluster, the rows of live nodes stay active.
            let reset = match hub.cluster() {
                Some(_) => hub.store().deactivate_dead_nodes_registrations().await,
                None => hub.store().deactivate_other_runs(&instance).await,
            };
            match reset {
                Ok(n) => {
                    tracing::info!(deactivated = n, "registrations of earlier runs inactive");
                    return;
                }
                Err(e) if hub.is_shutting_down() => {
                    tracing::debug!(error = %e, "reset left to the next start-up");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot mark earlier runs' registrations inactive; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// Connections the kernel may hold waiting for `accept` (capped by the
/// kernel's `net.core.somaxconn`): a thousand spokes reconnecting at once
/// must not overflow the queue and wait for SYN retransmissions.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] (the standard library's is 128).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs `tick` every `interval` until the hub stops.
fn every<F, Fut>(interval: Duration, mut stopped: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            tick().await;
        }
    });
}

/// Closes the sessions of removed or disabled principals, every
/// `limits.revocation_check_ms`.
fn spawn_revocation(hub: Hub, stopped: watch::Receiver<bool>) {
    let interval = Duration::from_millis(hub.config().limits.revocation_check_ms.max(100));
    every(interval, stopped, move || {
        let hub = hub.clone();
        async move {
            hub.auth().revoke_stale(hub.sessions()).await;
        }
    });
}

/// Deletes spoke-sourced definitions left without active registrations
/// longer than the configured grace period, every cleanup interval.
fn spawn_cleanup(hub: Hub, stopped: watch::Receiver<bool>) {
    let db = &hub.config().database;
    let interval = Duration::from_secs(db.cleanup_interval_secs.max(1));
    let grace = Duration::from_secs(db.definition_grace_secs);
    every(interval, stopped, move || {
        let hub = hub.clone();
        async move {
            // A definition deleted while start-up still loads could come back.
            hub.dispatcher().catalog().wait_loaded().await;
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
