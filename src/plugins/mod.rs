//! WebAssembly plugins: the remap and routing policies operators drop into
//! the plugins folder.
//!
//! Every wasmtime type stays in this module. The rest of the hub sees
//! [`crate::policy::RemapPolicy`] and [`crate::policy::RoutingPolicy`]
//! objects that [`PluginHost`] hands out; a policy looks its plugin up by
//! name at each decision, so a reload swaps it for the next decision while
//! decisions in flight finish on the version they started with.
//!
//! - [`bindings`]: `bindgen!` for both worlds and the `host` imports.
//! - [`loader`]: one engine, compiling with an on-disk cache, checking a
//!   component against the worlds.
//! - [`runner`]: warm instances and the three limits of a decision.
//! - [`policies`]: the trait objects, with failure policy and quarantine.
//! - [`watch`]: hot reload of the plugins folder.
//! - [`trial`]: `alkhub plugin run`, one decision without a hub.

mod bindings;
mod loader;
mod policies;
mod runner;
mod trial;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::PluginsConfig;
use crate::policy::{LeastInFlight, NativeRemap, RemapPolicy, RoutingPolicy};

pub use loader::{check_file, component_digest, CheckReport, World};
pub use policies::RoutingTable;
use runner::Plugin;
pub use trial::{run_file, Trial, TrialInput};

/// The shipped default plugins, built from `plugins/<name>/` and embedded so
/// that a fresh checkout serves with them and no guest toolchain.
const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "rule-remap",
        include_bytes!("../../plugins/dist/rule-remap.wasm"),
    ),
    (
        "least-in-flight",
        include_bytes!("../../plugins/dist/least-in-flight.wasm"),
    ),
];

/// The versions (first 16 hex digits of the SHA-256) of the embedded
/// defaults, hashed once: their compiled code always stays cached.
fn embedded_versions() -> impl Iterator<Item = String> {
    static VERSIONS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VERSIONS
        .get_or_init(|| {
            EMBEDDED
                .iter()
                .map(|(_, bytes)| loader::component_digest(bytes)[..16].to_owned())
                .collect()
        })
        .iter()
        .cloned()
}

/// The name that selects the built-in native policy instead of a plugin.
pub const NATIVE: &str = "native";

/// Loads, runs and reloads plugins; cloning shares it.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

struct Inner {
    loader: loader::Loader,
    /// The `[plugins]` section in force (replaced by [`PluginHost::reconfigure`]).
    config: RwLock<Arc<PluginsConfig>>,
    /// The version of each plugin that serves new decisions.
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// Files that failed to load, with the reason (the old version, if any, keeps serving).
    failed: Mutex<BTreeMap<String, (PathBuf, String)>>,
    native_remap: Arc<NativeRemap>,
    native_routing: Arc<LeastInFlight>,
    reloads: AtomicU64,
    /// Plugins whose new version is being compiled (a swap in progress).
    loading: Mutex<std::collections::BTreeSet<String>>,
    /// Per plugin name, the decisions its `on_failure = "fallback"` handed
    /// to the built-in policy.
    fallbacks: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// Cancelled when the host is dropped: the folder watcher stops.
    watch_stop: tokio_util::sync::CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watch_stop.cancel();
    }
}

/// What `GET /v1/plugins` shows of one plugin.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// Its name (the file's stem).
    pub name: String,
    /// `remap` or `routing`; absent when it failed to load.
    pub world: Option<World>,
    /// The first 16 hex digits of the SHA-256 of the component.
    pub version: Option<String>,
    /// The version of `alkdev:hub` it was built against (`0.3.0`).
    pub wit_version: Option<&'static str>,
    /// `active`, `quarantined`, `failed` (its file did not load),
    /// `loading` (its first version is compiling) or `missing` (the
    /// configuration selects it, but no file of that name is loaded).
    pub status: &'static str,
    /// Why it failed to load, why it is quarantined, or why it is missing.
    pub error: Option<String>,
    /// True while a new version is compiling: the version shown serves
    /// until it is swapped in.
    pub loading: bool,
    /// What the configuration selects it for: `remap`, `routing` (the
    /// default routing policy), `route <pattern>`; empty when unused.
    pub roles: Vec<String>,
    /// `file` or `embedded`.
    pub source: &'static str,
    /// The name of its file in the plugins folder (`sticky.wasm`), never the
    /// folder: where the hub's files live is the operator's to know, and
    /// there is no admin role yet to show it to. `alkhub plugin check`
    /// prints full paths.
    pub file: Option<String>,
    /// The last `warn` or `error` message the plugin logged (through the
    /// host's `log`), at most 1,024 bytes on one line.
    pub last_message: Option<String>,
    /// Decisions made.
    pub decisions: u64,
    /// Decisions that failed (trap, deadline, memory, invalid answer).
    pub failures: u64,
    /// Decisions its `on_failure = "fallback"` handed to the built-in policy
    /// (failed, quarantined or missing), counted across its versions.
    pub fallbacks: u64,
    /// Times this version was quarantined.
    pub quarantines: u64,
    /// Mean latency of a decision, in microseconds.
    pub mean_latency_us: f64,
}

impl PluginStatus {
    /// The entry of plugin `name` when no version of it is loaded.
    fn absent(name: &str) -> Self {
        PluginStatus {
            name: name.to_owned(),
            world: None,
            version: None,
            wit_version: None,
            status: "missing",
            error: None,
            loading: false,
            roles: Vec::new(),
            source: "file",
            file: None,
            last_message: None,
            decisions: 0,
            failures: 0,
            fallbacks: 0,
            quarantines: 0,
            mean_latency_us: 0.0,
        }
    }
}

/// Marks a plugin as loading for as long as it lives.
struct Loading<'a> {
    set: &'a Mutex<std::collections::BTreeSet<String>>,
    name: String,
}

impl<'a> Loading<'a> {
    fn start(set: &'a Mutex<std::collections::BTreeSet<String>>, name: &str) -> Self {
        set.lock().unwrap().insert(name.to_owned());
        Loading {
            set,
            name: name.to_owned(),
        }
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.name);
    }
}

/// The whole of `GET /v1/plugins`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// Every plugin, loaded or failed.
    pub plugins: Vec<PluginStatus>,
    /// Components compiled by this process (0 on a restart with unchanged plugins).
    pub compiled: u64,
    /// Components taken from a cache (on disk, or already compiled in this process).
    pub cache_hits: u64,
    /// Successful reloads since start.
    pub reloads: u64,
}

impl PluginHost {
    /// Creates the engine and loads the embedded defaults and every
    /// component in the plugins folder. A component that fails to load is
    /// reported in [`PluginHost::status`], not fatal.
    pub fn start(
        config: &PluginsConfig,
        per_spoke_namespaces: Vec<String>,
    ) -> anyhow::Result<Self> {
        let loader = loader::Loader::new(&config.cache_dir)?;
        let host = PluginHost {
            inner: Arc::new(Inner {
                loader,
                config: RwLock::new(Arc::new(config.clone())),
                plugins: RwLock::default(),
                failed: Mutex::default(),
                native_remap: Arc::new(NativeRemap::new(per_spoke_namespaces.clone())),
                native_routing: Arc::new(LeastInFlight),
                reloads: AtomicU64::new(0),
                loading: Mutex::default(),
                fallbacks: Mutex::default(),
                watch_stop: Default::default(),
            }),
        };
        for (name, bytes) in EMBEDDED {
            let settings = host.settings_json(name, &per_spoke_namespaces);
            match host
                .inner
                .loader
                .load(name, bytes, None, settings, config.limits_of(name))
            {
                Ok(plugin) => {
                    host.inner
                        .plugins
                        .write()
                        .unwrap()
                        .insert(name.to_string(), Arc::new(plugin));
                }
                Err(e) => {
                    tracing::error!(plugin = name, error = %e, "embedded plugin failed to load")
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&config.dir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_component_file(p))
                .collect();
            paths.sort();
            for path in paths {
                host.load_file(&path, &per_spoke_namespaces);
            }
        }
        let c = host.config();
        let wanted = std::iter::once((&c.remap, World::Remap))
            .chain(std::iter::once((&c.routing, World::Routing)))
            .chain(c.route.iter().map(|r| (&r.plugin, World::Routing)));
        for (name, world) in wanted {
            if name != NATIVE && host.get_world(name, world).is_none() {
                tracing::warn!(
                    plugin = %name,
                    ?world,
                    "configured plugin is not loaded with this world; its failure policy applies"
                );
            }
        }
        let versions: std::collections::HashSet<String> = host
            .inner
            .plugins
            .read()
            .unwrap()
            .values()
            .map(|p| p.version.clone())
            .chain(embedded_versions())
            .collect();
        host.inner.loader.prune(&versions);
        if config.watch {
            watch::spawn(host.clone(), per_spoke_namespaces);
        }
        Ok(host)
    }

    /// The `[plugins]` section in force.
    pub fn config(&self) -> Arc<PluginsConfig> {
        self.inner.config.read().unwrap().clone()
    }

    /// Applies a new `[plugins]` section: selections, routes, settings and
    /// limits take effect for the next decision (a plugin whose settings or
    /// limits changed is instantiated again, with fresh counters); `dir`,
    /// `cache_dir` and `watch` wait for the next start. The caller swaps in
    /// the new [`PluginHost::routing_policy`] and
    /// [`PluginHost::remap_policy`]. Returns each change, in words (also
    /// logged).
    pub fn reconfigure(&self, new: &PluginsConfig, per_spoke_namespaces: &[String]) -> Vec<String> {
        let old = self.config();
        let mut changes = Vec::new();
        for (key, differs) in [
            ("dir", old.dir != new.dir),
            ("cache_dir", old.cache_dir != new.cache_dir),
            ("watch", old.watch != new.watch),
        ] {
            if differs {
                changes.push(format!(
                    "plugins.{key} changed; it takes effect at the next start"
                ));
            }
        }
        if old.remap != new.remap {
            changes.push(format!("plugins.remap: {} -> {}", old.remap, new.remap));
        }
        if old.routing != new.routing {
            changes.push(format!(
                "plugins.routing: {} -> {}",
                old.routing, new.routing
            ));
        }
        if old.route != new.route {
            let rules: Vec<String> = new
                .route
                .iter()
                .map(|r| format!("{} -> {}", r.pattern, r.plugin))
                .collect();
            changes.push(format!("plugins.route: [{}]", rules.join(", ")));
        }
        // The new values for `dir`, `cache_dir` and `watch` are not used
        // before a restart.
        let applied = PluginsConfig {
            dir: old.dir.clone(),
            cache_dir: old.cache_dir.clone(),
            watch: old.watch,
            ..new.clone()
        };
        *self.inner.config.write().unwrap() = Arc::new(applied);

        // Settings and limits are part of a loaded version: load those that
        // changed again, from the same bytes (compiled already).
        let loaded: Vec<Arc<Plugin>> = self
            .inner
            .plugins
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for plugin in loaded {
            let name = &*plugin.name;
            let settings = self.settings_json(name, per_spoke_namespaces);
            let limits = new.limits_of(name);
            let what = match (settings != *plugin.settings(), limits != plugin.limits) {
                (false, false) => continue,
                (true, false) => "settings",
                (false, true) => "limits",
                (true, true) => "settings and limits",
            };
            let bytes = match &plugin.path {
                Some(path) => std::fs::read(path).ok(),
                None => EMBEDDED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, b)| b.to_vec()),
            };
            let reloaded = bytes
                .ok_or_else(|| anyhow::anyhow!("its file cannot be read"))
                .and_then(|bytes| {
                    self.inner
                        .loader
                        .load(name, &bytes, plugin.path.as_deref(), settings, limits)
                });
            match reloaded {
                Ok(version) => {
                    let file_changed = version.version != plugin.version;
                    let old = self
                        .inner
                        .plugins
                        .write()
                        .unwrap()
                        .insert(name.to_owned(), Arc::new(version));
                    self.inner.failed.lock().unwrap().remove(name);
                    self.retire(old);
                    changes.push(if file_changed {
                        format!("plugin {name}: new {what}, and the new version of its file")
                    } else {
                        format!("plugin {name}: new {what}")
                    });
                }
                Err(e) => changes.push(format!(
                    "plugin {name}: new {what} not applied, the version serving keeps the old ones: {e:#}"
                )),
            }
        }
        for change in &changes {
            tracing::info!(change = %change, "configuration reloaded");
        }
        changes
    }

    /// The plugin's settings as JSON. The rule-remap plugin receives the
    /// hub's `[remap] per_spoke_namespaces` unless its settings name their own,
    /// so the plugin and the native fallback agree.
    fn settings_json(&self, name: &str, per_spoke_namespaces: &[String]) -> Arc<str> {
        let mut value = match self.config().settings.get(name) {
            Some(settings) => serde_json::to_value(settings).unwrap_or_default(),
            None => serde_json::json!({}),
        };
        if name == "rule-remap" && value.get("per_spoke_namespaces").is_none() {
            value["per_spoke_namespaces"] = serde_json::json!(per_spoke_namespaces);
        }
        value.to_string().into()
    }

    /// Loads (or reloads) one component file. On failure the previous
    /// version, if any, keeps serving and the error is recorded.
    fn load_file(&self, path: &Path, per_spoke_namespaces: &[String]) -> bool {
        let Some(name) = plugin_name(path) else {
            return false;
        };
        // The error is shown by `GET /v1/plugins`: it names the file, the
        // log line below its whole path.
        let file = file_name(path).unwrap_or_default();
        let loaded = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))
            .and_then(|bytes| {
                if self.serves_unchanged(&name, &bytes) {
                    return Ok(None);
                }
                let _loading = Loading::start(&self.inner.loading, &name);
                let settings = self.settings_json(&name, per_spoke_namespaces);
                let limits = self.config().limits_of(&name);
                self.inner
                    .loader
                    .load(&name, &bytes, Some(path), settings, limits)
                    .map(Some)
            });
        match loaded {
            Ok(None) => {
                // Touched, or rewritten with the same bytes: the version
                // serving keeps its counters and any quarantine.
                tracing::debug!(plugin = %name, "plugin file unchanged; not reloaded");
                self.inner.failed.lock().unwrap().remove(&name);
                false
            }
            Ok(Some(plugin)) => {
                tracing::info!(plugin = %name, world = ?plugin.world(), version = %plugin.version, "plugin loaded");
                self.inner.failed.lock().unwrap().remove(&name);
                let old = self
                    .inner
                    .plugins
                    .write()
                    .unwrap()
                    .insert(name, Arc::new(plugin));
                self.retire(old);
                true
            }
            Err(e) => {
                tracing::error!(plugin = %name, file = %path.display(), error = %format!("{e:#}"), "plugin failed to load");
                self.inner
                    .failed
                    .lock()
                    .unwrap()
                    .insert(name, (path.to_owned(), format!("{e:#}")));
                false
            }
        }
    }

    /// The counter of decisions plugin `name`'s failure policy handed to
    /// the built-in policy.
    fn fallback_counter(&self, name: &str) -> Arc<AtomicU64> {
        self.inner
            .fallbacks
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The roles the configuration gives plugin `name`: `remap`, `routing`
    /// (the default routing policy) and `route <pattern>` for each route.
    fn roles_of(&self, name: &str) -> Vec<String> {
        let c = self.config();
        let mut roles = Vec::new();
        if c.remap == name {
            roles.push("remap".to_owned());
        }
        if c.routing == name {
            roles.push("routing".to_owned());
        }
        roles.extend(
            c.route
                .iter()
                .filter(|r| r.plugin == name)
                .map(|r| format!("route {}", r.pattern)),
        );
        roles
    }

    /// True when plugin `name` already serves exactly `bytes` from its file.
    /// A file plugin of a name can only come from the one folder, so the
    /// path is not compared (it is spelled relative at start, absolute in
    /// the watcher's events).
    fn serves_unchanged(&self, name: &str, bytes: &[u8]) -> bool {
        let plugins = self.inner.plugins.read().unwrap();
        plugins.get(name).is_some_and(|p| {
            p.path.is_some() && loader::component_digest(bytes).starts_with(p.version.as_str())
        })
    }

    /// A file was removed: its plugin unloads (an embedded default of the
    /// same name takes over again).
    fn unload_file(&self, path: &Path, per_spoke_namespaces: &[String]) {
        let Some(name) = plugin_name(path) else {
            return;
        };
        self.inner.failed.lock().unwrap().remove(&name);
        let embedded = EMBEDDED.iter().find(|(n, _)| *n == name);
        let mut plugins = self.inner.plugins.write().unwrap();
        let old = match embedded {
            Some((_, bytes)) => {
                let settings = self.settings_json(&name, per_spoke_namespaces);
                match self.inner.loader.load(
                    &name,
                    bytes,
                    None,
                    settings,
                    self.config().limits_of(&name),
                ) {
                    Ok(p) => plugins.insert(name, Arc::new(p)),
                    Err(_) => plugins.remove(&name),
                }
            }
            None => plugins.remove(&name),
        };
        drop(plugins);
        self.retire(old);
    }

    /// A version that stopped serving: its compiled code is dropped from
    /// the caches unless another plugin still uses it. Embedded defaults
    /// stay cached (they can come back whenever a file is removed).
    fn retire(&self, old: Option<Arc<Plugin>>) {
        let Some(old) = old.filter(|p| p.path.is_some()) else {
            return;
        };
        let in_use = self
            .inner
            .plugins
            .read()
            .unwrap()
            .values()
            .any(|p| p.version == old.version);
        if !in_use && !embedded_versions().any(|v| v == old.version) {
            self.inner.loader.forget(&old.version);
        }
    }

    /// The current version of plugin `name` if it implements `world`.
    fn get_world(&self, name: &str, world: World) -> Option<Arc<Plugin>> {
        let plugin = self.inner.plugins.read().unwrap().get(name).cloned()?;
        (plugin.world() == world).then_some(plugin)
    }

    /// Loads every changed file of the plugins folder now, as the watcher
    /// would (unchanged versions are kept); returns how many new versions
    /// were loaded. Blocks while components compile.
    pub fn rescan(&self, per_spoke_namespaces: &[String]) -> usize {
        let dir = self.config().dir.clone();
        let mut loaded = 0;
        for path in watch::every_file(self, &dir) {
            if path.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            if is_component_file(&path) {
                if self.load_file(&path, per_spoke_namespaces) {
                    self.inner.reloads.fetch_add(1, Ordering::Relaxed);
                    loaded += 1;
                }
            } else if !path.exists() {
                self.unload_file(&path, per_spoke_namespaces);
            }
        }
        loaded
    }

    /// Ends plugin `name`'s quarantine now; `None` when no version of it is
    /// loaded, else whether it was quarantined.
    pub fn lift_quarantine(&self, name: &str) -> Option<bool> {
        let plugin = self.inner.plugins.read().unwrap().get(name).cloned()?;
        Some(plugin.lift_quarantine())
    }

    /// The remap policy the configuration selects.
    pub fn remap_policy(&self) -> Arc<dyn RemapPolicy> {
        let config = self.config();
        let name = &config.remap;
        if name == NATIVE {
            return self.inner.native_remap.clone();
        }
        Arc::new(policies::WasmRemap::new(self.clone(), name))
    }

    /// The routing policy the configuration selects: per-pattern routes over
    /// the default.
    pub fn routing_policy(&self) -> Arc<dyn RoutingPolicy> {
        let c = self.config();
        let by_name = |name: &str| -> Arc<dyn RoutingPolicy> {
            if name == NATIVE {
                self.inner.native_routing.clone()
            } else {
                Arc::new(policies::WasmRouting::new(self.clone(), name))
            }
        };
        let routes = c
            .route
            .iter()
            .map(|r| (r.pattern.clone(), by_name(&r.plugin)))
            .collect();
        Arc::new(RoutingTable::new(routes, by_name(&c.routing)))
    }

    /// Every plugin with its state and counters.
    pub fn status(&self) -> HostStatus {
        let mut plugins: Vec<PluginStatus> = self
            .inner
            .plugins
            .read()
            .unwrap()
            .values()
            .map(|p| p.status())
            .collect();
        for (name, (path, error)) in self.inner.failed.lock().unwrap().iter() {
            match plugins.iter_mut().find(|p| &p.name == name) {
                // The old version still serves; show the new one's error beside it.
                Some(serving) => {
                    serving.error = Some(format!("a newer file failed to load: {error}"))
                }
                None => plugins.push(PluginStatus {
                    status: "failed",
                    error: Some(error.clone()),
                    file: file_name(path),
                    ..PluginStatus::absent(name)
                }),
            }
        }
        for name in self.inner.loading.lock().unwrap().iter() {
            match plugins.iter_mut().find(|p| &p.name == name) {
                Some(serving) => serving.loading = true,
                None => plugins.push(PluginStatus {
                    status: "loading",
                    loading: true,
                    ..PluginStatus::absent(name)
                }),
            }
        }
        // Every plugin the configuration selects is listed, loaded or not.
        let c = self.config();
        let selected = [&c.remap, &c.routing]
            .into_iter()
            .chain(c.route.iter().map(|r| &r.plugin))
            .filter(|name| *name != NATIVE);
        for name in selected {
            if !plugins.iter().any(|p| &p.name == name) {
                plugins.push(PluginStatus {
                    status: "missing",
                    error: Some(format!(
                        "no {name}.wasm is loaded from the plugins folder; its on_failure applies"
                    )),
                    ..PluginStatus::absent(name)
                });
            }
        }
        let fallbacks = self.inner.fallbacks.lock().unwrap();
        for p in &mut plugins {
            p.roles = self.roles_of(&p.name);
            p.fallbacks = fallbacks
                .get(&p.name)
                .map_or(0, |n| n.load(Ordering::Relaxed));
        }
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        HostStatus {
            plugins,
            compiled: self.inner.loader.compiled.load(Ordering::Relaxed),
            cache_hits: self.inner.loader.cache_hits.load(Ordering::Relaxed),
            reloads: self.inner.reloads.load(Ordering::Relaxed),
        }
    }
}

/// Mean cost of one routing decision of `component` (with `settings`), over
/// `n` decisions among `among` candidates (labelled `region` = eu, us, ap in
/// turn, and `zone`; the call's metadata has `region` = us), either on one
/// warm instance or on a new instance each time. For benchmarks.
#[doc(hidden)]
pub fn measure_routing(
    component: &[u8],
    settings: &str,
    n: u32,
    warm: bool,
    among: usize,
) -> anyhow::Result<std::time::Duration> {
    use crate::policy::{Candidate, RouteCall};
    let loader = loader::Loader::uncached()?;
    let limits = crate::config::PluginLimits {
        max_uses: if warm { u64::MAX } else { 1 },
        ..Default::default()
    };
    let plugin = loader.load("bench", component, None, settings.into(), limits)?;
    let labels: Vec<BTreeMap<String, String>> = (0..among)
        .map(|i| {
            BTreeMap::from([
                ("region".to_owned(), ["eu", "us", "ap"][i % 3].to_owned()),
                ("zone".to_owned(), format!("z{i}")),
            ])
        })
        .collect();
    let ids: Vec<String> = (0..among).map(|i| format!("p{i}")).collect();
    let candidates: Vec<Candidate<'_>> = (0..among)
        .map(|i| Candidate {
            registration_id: &ids[i],
            provider_id: &ids[i],
            labels: &labels[i],
            in_flight: i as u32,
            connected_at_ms: 0,
        })
        .collect();
    let metadata = BTreeMap::from([
        ("region".to_owned(), "us".to_owned()),
        ("affinity".to_owned(), "user-42".to_owned()),
    ]);
    let mut call = RouteCall {
        operation_id: "bench.echo",
        op_type: crate::protocol::OperationType::Query,
        caller: None,
        metadata: Some(&metadata),
        sequence: 0,
    };
    for _ in 0..n.min(100) {
        plugin
            .route(&call, &candidates)
            .map_err(anyhow::Error::msg)?;
    }
    let started = std::time::Instant::now();
    for i in 0..n {
        call.sequence = u64::from(i);
        plugin
            .route(&call, &candidates)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(started.elapsed() / n.max(1))
}

fn is_component_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm") && path.is_file()
}

/// The last component of `path` (`sticky.wasm`).
fn file_name(path: &Path) -> Option<String> {
    Some(path.file_name()?.to_string_lossy().into_owned())
}

fn plugin_name(path: &Path) -> Option<String> {
    path.file_stem()?.to_str().map(str::to_owned)
}
