//! Starting and stopping the hub: open the store, reset registrations, run
//! the cleanup task, serve HTTP until shutdown.
//!
//! [`Hub`] is the shared handle every handler receives; it owns nothing that
//! lives on a single connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::store::Store;

/// The hub's shared state, cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    store: Store,
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
}

/// A hub that is listening; dropping it does not stop it, [`RunningHub::shutdown`] does.
pub struct RunningHub {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    hub: Hub,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningHub {
    /// The shared handle.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Stops accepting, ends sessions and waits for the server to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(())
    }

    /// Waits until the server stops by itself (it does so on shutdown).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
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
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let hub = Hub {
        shared: Arc::new(Shared { config, store }),
    };
    let (stop, stopped) = watch::channel(false);
    spawn_cleanup(hub.clone(), stopped.clone());
    let app = crate::http::router(hub.clone());
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
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(count = ids.len(), ?ids, "removed orphaned definitions")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "definition cleanup failed"),
            }
        }
    });
}
