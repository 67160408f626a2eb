//! Hot reload: watch the plugins folder and load new or changed components
//! in the background, swapping each in atomically when it loads.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{is_component_file, PluginHost};

/// Starts watching `host`'s plugins folder (nothing happens if it is missing).
pub fn spawn(host: PluginHost, per_spoke_namespaces: Vec<String>) {
    let dir = host.inner.config.dir.clone();
    if !dir.is_dir() {
        tracing::info!(dir = %dir.display(), "plugins folder missing; not watching it");
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => return tracing::warn!(error = %e, "cannot watch the plugins folder"),
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the plugins folder");
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _watcher = watcher; // lives as long as this task
        while let Some(first) = rx.recv().await {
            // Editors and copies write in several steps: let them settle.
            let mut changed = BTreeSet::from([first]);
            tokio::time::sleep(Duration::from_millis(150)).await;
            while let Ok(more) = rx.try_recv() {
                changed.insert(more);
            }
            for path in changed
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            {
                let host = host.clone();
                let namespaces = per_spoke_namespaces.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if is_component_file(&path) {
                        if host.load_file(&path, &namespaces) {
                            host.inner.reloads.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if !path.exists() {
                        host.unload_file(&path, &namespaces);
                    }
                })
                .await;
            }
        }
    });
}
