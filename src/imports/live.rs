//! The imports the hub serves, by name. They start with the hub and when
//! the admin API adds one; refreshing an import stops it and starts it
//! again with its new definitions, removing one stops it for good.
//!
//! Each served import is a task that owns its in-process provider: an
//! OpenAPI import's task holds the provider until it is stopped, an MCP
//! import's task connects, serves and reconnects (see [`super::mcp::start`]).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::Hub;
use crate::store::{Import, ImportChanges, ImportKind};

/// The served imports.
#[derive(Default)]
pub struct LiveImports {
    running: Mutex<HashMap<String, Running>>,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl LiveImports {
    /// Serves `import` (when it is enabled), replacing a previous task of
    /// the same name. An OpenAPI import is registered when this returns.
    pub async fn start(&self, hub: &Hub, import: Import) {
        self.stop(&import.name).await;
        if !import.enabled {
            return;
        }
        let name = import.name.clone();
        let stop = CancellationToken::new();
        let task = match import.kind {
            ImportKind::Openapi => {
                let serving = match super::http_provider::start(hub.clone(), import).await {
                    Ok(Some(serving)) => serving,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(import = %name, error = %e, "cannot serve the imported API");
                        return;
                    }
                };
                let stopped = stop.clone();
                tokio::spawn(async move {
                    stopped.cancelled().await;
                    serving.stop().await;
                })
            }
            ImportKind::Mcp => super::mcp::start(hub.clone(), import, stop.clone()),
        };
        self.running
            .lock()
            .unwrap()
            .insert(name, Running { stop, task });
    }

    /// Stops serving import `name`: its open calls end with
    /// `PROVIDER_GONE` and its registrations become inactive. Returns once
    /// they have.
    pub async fn stop(&self, name: &str) {
        let running = self.running.lock().unwrap().remove(name);
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.task.await;
        }
    }

    /// Whether the hub runs a task for import `name`. An MCP import's task
    /// runs while it waits to reconnect; whether the import serves now is
    /// whether its provider is connected (see [`Hub::metrics_snapshot`]).
    pub fn is_running(&self, name: &str) -> bool {
        self.running
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|r| !r.task.is_finished())
    }
}

/// Brings the catalog in line with what saving an import changed.
pub async fn apply_changes(hub: &Hub, changes: &ImportChanges) -> anyhow::Result<()> {
    let catalog = hub.dispatcher().catalog();
    for id in &changes.removed {
        catalog.remove_definition(id);
    }
    for id in changes.added.iter().chain(&changes.updated) {
        if let Some(definition) = hub.store().get_operation(id).await? {
            catalog.put_definition(definition);
        }
    }
    Ok(())
}
