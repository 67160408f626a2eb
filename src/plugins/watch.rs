//! Hot reload: watch the plugins folder and load new or changed components
//! in the background, swapping each in atomically when it loads.
//!
//! The folder is watched with inotify; when the kernel refuses a watcher
//! (`fs.inotify.max_user_instances` reached, say) it is polled instead, so
//! hot reload never silently stops working. The watcher stops when the
//! [`PluginHost`] it serves is dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::{is_component_file, PluginHost};

/// How often the folder is polled when inotify is not available.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a burst of events may take to settle before the files load:
/// editors and copies write in several steps.
const SETTLE: Duration = Duration::from_millis(150);

/// Starts watching `host`'s plugins folder (nothing happens if it is missing).
pub fn spawn(host: PluginHost, per_spoke_namespaces: Vec<String>) {
    let dir = host.config().dir.clone();
    if !dir.is_dir() {
        tracing::info!(dir = %dir.display(), "plugins folder missing; not watching it");
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let Some(watcher) = watch_folder(&dir, tx) else {
        return;
    };
    let weak = Arc::downgrade(&host.inner);
    let stopped = host.inner.watch_stop.clone();
    drop(host);
    runtime.spawn(async move {
        let _watcher = watcher; // lives as long as this task
        loop {
            let first = tokio::select! {
                _ = stopped.cancelled() => return,
                path = rx.recv() => match path {
                    Some(path) => path,
                    None => return,
                },
            };
            let mut changed = BTreeSet::from([first]);
            tokio::time::sleep(SETTLE).await;
            while let Ok(more) = rx.try_recv() {
                changed.insert(more);
            }
            if changed.remove(&dir) {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                changed.extend(every_file(&PluginHost { inner }, &dir));
            }
            for path in changed
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let host = PluginHost { inner };
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

/// Every component file in `dir` and every file a plugin was loaded from
/// (which may be gone): what a rescan looks at.
pub(super) fn every_file(host: &PluginHost, dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let plugins = host.inner.plugins.read().unwrap();
    files.extend(plugins.values().filter_map(|p| p.path.clone()));
    files
}

/// A watcher sending the path of every changed file in `dir` to `tx`:
/// inotify, or polling when inotify is refused. `None` (logged) when
/// neither can watch it.
fn watch_folder(dir: &Path, tx: UnboundedSender<PathBuf>) -> Option<Box<dyn Watcher + Send>> {
    let folder = dir.to_owned();
    let handler = move |event: notify::Result<notify::Event>| {
        match event {
            // Events were lost (the kernel's queue overflowed): look at
            // every file again.
            Ok(event) if event.need_rescan() => {
                let _ = tx.send(folder.clone());
            }
            Ok(event) if is_change(&event.kind) => {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
            _ => {}
        }
    };
    let native = notify::recommended_watcher(handler.clone()).and_then(|mut w| {
        w.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(Box::new(w) as Box<dyn Watcher + Send>)
    });
    let refused = match native {
        Ok(watcher) => return Some(watcher),
        Err(e) => e,
    };
    // Modification times, not contents: hashing every component (tens of
    // MB for JavaScript or Python) each second would cost more than it saves.
    let config = notify::Config::default()
        .with_poll_interval(POLL_INTERVAL)
        .with_compare_contents(false);
    let polled = notify::PollWatcher::new(handler, config).and_then(|mut w| {
        w.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(Box::new(w) as Box<dyn Watcher + Send>)
    });
    match polled {
        Ok(watcher) => {
            tracing::warn!(
                dir = %dir.display(),
                error = %refused,
                interval_ms = POLL_INTERVAL.as_millis() as u64,
                "cannot watch the plugins folder with inotify; polling it instead"
            );
            Some(watcher)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the plugins folder; hot reload is off");
            None
        }
    }
}

/// True for events that may change a file's contents or presence; opening
/// and reading (the hub's own reloads read the file) are not changes.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind};

    #[test]
    fn opening_and_reading_a_file_is_not_a_change() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Remove(RemoveKind::File)));
    }
}
