//! The imports the hub serves, by name. They start with the hub and when
//! the admin API adds one; refreshing an import stops it and starts it
//! again with its new definitions, removing one stops it for good.
//!
//! Each served import is a task that owns its in-process provider: an
//! OpenAPI import's task holds the provider until it is stopped, an MCP
//! import's task connects, serves and reconnects (see [`super::mcp::start`]).
//!
//! Imports written to the store by someone else (the CLI without `--hub`,
//! another hub on the same database) are found by [`LiveImports::sync`],
//! which the hub runs every `imports.poll_ms`: an import is known by its
//! `updated_at`, so a re-import, however small, is served anew.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server::Hub;
use crate::store::{Import, ImportChanges, ImportKind};

/// The served imports.
#[derive(Default)]
pub struct LiveImports {
    running: Mutex<HashMap<String, Running>>,
    /// Each import as last served: when it was saved, whether enabled, and
    /// its operation ids.
    seen: Mutex<HashMap<String, Seen>>,
    /// Held by whoever changes which imports are served (the admin API,
    /// [`LiveImports::sync`]), so that they do not interleave.
    changing: tokio::sync::Mutex<()>,
}

#[derive(Clone, PartialEq)]
struct Seen {
    updated_at: DateTime<Utc>,
    enabled: bool,
    operations: Vec<String>,
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
        self.saw(&import);
        if !import.enabled {
            return;
        }
        // In a cluster one node serves each import (docs/cluster.md).
        if let Some(cluster) = hub.cluster() {
            if cluster.claim_import(&import.name).await != Some(true) {
                return;
            }
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

    /// Records `import` as served as it is, when its own task saved it.
    pub fn saw(&self, import: &Import) {
        self.seen.lock().unwrap().insert(
            import.name.clone(),
            Seen {
                updated_at: import.updated_at,
                enabled: import.enabled,
                operations: import.operations.clone(),
            },
        );
    }

    /// Stops serving import `name` for good (it was removed).
    pub async fn remove(&self, name: &str) {
        self.stop(name).await;
        self.seen.lock().unwrap().remove(name);
    }

    /// Holds off [`LiveImports::sync`] while an admin change is saved and
    /// served.
    pub async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Serves what the imports table holds now: imports added or saved
    /// again since they were last served start (anew), removed ones stop,
    /// and the catalog follows their definitions.
    pub async fn sync(&self, hub: &Hub) -> anyhow::Result<()> {
        let _changing = self.changing.lock().await;
        let imports = hub.store().list_imports().await?;
        let present: HashSet<&str> = imports.iter().map(|i| i.name.as_str()).collect();
        let gone: Vec<(String, Seen)> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| !present.contains(name.as_str()))
            .map(|(name, seen)| (name.clone(), seen.clone()))
            .collect();
        for (name, seen) in gone {
            tracing::info!(import = %name, "import removed from the store: no longer served");
            self.remove(&name).await;
            for id in &seen.operations {
                hub.dispatcher().catalog().remove_definition(id);
            }
        }
        for import in &imports {
            let before = self.seen.lock().unwrap().get(&import.name).cloned();
            if before
                .as_ref()
                .is_some_and(|b| b.updated_at == import.updated_at && b.enabled == import.enabled)
            {
                continue;
            }
            let previous = before.map(|b| b.operations).unwrap_or_default();
            let changes = ImportChanges {
                removed: previous
                    .into_iter()
                    .filter(|id| !import.operations.contains(id))
                    .collect(),
                updated: import.operations.clone(),
                ..ImportChanges::default()
            };
            tracing::info!(import = %import.name, operations = import.operations.len(), "import saved in the store: serving it anew");
            apply_changes(hub, &changes).await?;
            self.start(hub, import.clone()).await;
        }
        if let Some(cluster) = hub.cluster() {
            self.follow_claims(hub, cluster, &imports).await;
        }
        Ok(())
    }

    /// In a cluster: serves the enabled imports this node can claim (their
    /// server left or died) and stops those another node claimed meanwhile.
    async fn follow_claims(
        &self,
        hub: &Hub,
        cluster: &crate::cluster::Cluster,
        imports: &[Import],
    ) {
        for import in imports.iter().filter(|i| i.enabled) {
            let running = self.is_running(&import.name);
            match (cluster.claim_import(&import.name).await, running) {
                (Some(true), false) => {
                    tracing::info!(import = %import.name, "serving the import (its server left)");
                    self.start(hub, import.clone()).await;
                }
                (Some(false), true) => {
                    tracing::warn!(import = %import.name, "another node serves the import now; stopping");
                    self.stop(&import.name).await;
                }
                _ => {}
            }
        }
    }

    /// The imports the hub runs a task for.
    pub fn running(&self) -> Vec<String> {
        self.running.lock().unwrap().keys().cloned().collect()
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
