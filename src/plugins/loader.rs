//! One engine for the process, compiling components once (cached on disk
//! by content hash and engine compatibility, each cache file checked
//! against the digest written with it before it is loaded), and checking
//! each component against the two worlds.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Serialize;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;

use super::bindings::{remap, remap_v1, remap_v2, routing, routing_v1, routing_v2, PluginState};
use super::runner::{Plugin, Prepared};
use crate::config::PluginLimits;
use crate::crypto::sha256_hex;

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Exports `alkdev:hub/remap`.
    Remap,
    /// Exports `alkdev:hub/routing`.
    Routing,
}

impl World {
    /// `remap` or `routing`.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Remap => "remap",
            World::Routing => "routing",
        }
    }
}

/// How often the engine's epoch advances: the unit of `epoch_deadline_ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The process's engine. One engine shares compiled code and its epoch
/// ticker across every hub in the process (tests start several); a static is
/// the simplest owner of something that must exist exactly once.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).expect("the wasmtime configuration is valid");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("alkhub-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            })
            .expect("cannot start the epoch thread");
        engine
    })
}

/// Compiles and links components.
pub struct Loader {
    engine: Engine,
    /// Every version of both worlds: their import names differ by version.
    linker: Linker<PluginState>,
    cache_dir: Option<PathBuf>,
    /// Components compiled by this loader.
    pub compiled: AtomicU64,
    /// Components found in the cache.
    pub cache_hits: AtomicU64,
}

/// A linker offering WASI (with nothing granted, for guests whose
/// toolchains import it) and the hub's imports of every published version.
fn linker(engine: &Engine) -> anyhow::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // A version's routing world imports everything its remap world does
    // (`host`, `types`), which may be linked only once.
    let l = &mut linker;
    routing::RoutingPlugin::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)?;
    routing_v2::RoutingPlugin::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)?;
    routing_v1::RoutingPlugin::add_to_linker::<_, HasSelf<PluginState>>(l, |s| s)?;
    Ok(linker)
}

/// True for the names the cache writes: `<64 hex>-<16 hex>.cwasm` and, while
/// it writes, `.tmp`. Nothing else in `cache_dir` is ever deleted.
fn is_cache_file(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some((stem, extension)) = name.rsplit_once('.') else {
        return false;
    };
    let Some((digest, engine)) = stem.split_once('-') else {
        return false;
    };
    matches!(extension, "cwasm" | "tmp") && hex(digest, 64) && hex(engine, 16)
}

/// Compiled components shared within the process (several hubs, reloads of
/// an unchanged file), by digest; the disk cache serves restarts.
fn in_memory() -> &'static Mutex<HashMap<String, Component>> {
    static IN_MEMORY: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    IN_MEMORY.get_or_init(Mutex::default)
}

impl Loader {
    /// A loader caching compiled components in `cache_dir` (created if missing).
    pub fn new(cache_dir: &Path) -> anyhow::Result<Self> {
        let mut loader = Self::uncached()?;
        match std::fs::create_dir_all(cache_dir) {
            Ok(()) => loader.cache_dir = Some(cache_dir.to_owned()),
            Err(e) => {
                tracing::warn!(dir = %cache_dir.display(), error = %e, "no plugin cache: every start compiles")
            }
        }
        Ok(loader)
    }

    /// A loader without a disk cache (for `plugin check` and benchmarks).
    pub fn uncached() -> anyhow::Result<Self> {
        let engine = engine().clone();
        Ok(Loader {
            linker: linker(&engine)?,
            engine,
            cache_dir: None,
            compiled: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        })
    }

    /// Compiles (or takes from the cache), checks and prepares a plugin.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        path: Option<&Path>,
        settings: Arc<str>,
        limits: PluginLimits,
    ) -> anyhow::Result<Plugin> {
        let digest = component_digest(bytes);
        let component = self.compile(bytes, &digest)?;
        let prepared = self.prepare(&component)?;
        Ok(Plugin::new(
            name,
            digest[..16].to_owned(),
            path.map(Path::to_owned),
            prepared,
            settings,
            limits,
        ))
    }

    fn engine_hash(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        let engine_hash = self.engine_hash();
        self.cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{engine_hash}.cwasm")))
    }

    /// Deletes every cache file but those of the versions in `keep` (first
    /// 16 hex digits of their digests) compiled by this engine: entries of
    /// replaced plugins, of other wasmtime builds, and unfinished writes.
    /// Returns how many files went.
    pub fn prune(&self, keep: &HashSet<String>) -> usize {
        let Some(dir) = &self.cache_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let current = format!("-{}.cwasm", self.engine_hash());
        let mut removed = 0;
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let ours = is_cache_file(name);
            let kept = name.ends_with(&current) && name.get(..16).is_some_and(|v| keep.contains(v));
            if ours && !kept {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot prune the plugin cache")
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(files = removed, "pruned the plugin cache");
        }
        removed
    }

    /// Forgets the compiled code of version `version` (first 16 hex digits
    /// of its digest): in this process and on disk.
    pub fn forget(&self, version: &str) {
        in_memory()
            .lock()
            .unwrap()
            .retain(|digest, _| !digest.starts_with(version));
        let Some(dir) = &self.cache_dir else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(version) && is_cache_file(name) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot prune the plugin cache");
                }
            }
        }
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> anyhow::Result<Component> {
        let memory = in_memory();
        if let Some(component) = memory.lock().unwrap().get(digest) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(component.clone());
        }
        let component = self.compile_uncached_in_memory(bytes, digest)?;
        memory
            .lock()
            .unwrap()
            .insert(digest.to_owned(), component.clone());
        Ok(component)
    }

    fn compile_uncached_in_memory(&self, bytes: &[u8], digest: &str) -> anyhow::Result<Component> {
        let cached = self.cache_path(digest);
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            match read_cache_file(path) {
                Ok(compiled) => {
                    // SAFETY: these are the bytes `precompile_component` of an
                    // engine with the same compatibility hash (it is in the
                    // name) wrote, unchanged since: their SHA-256 is the one
                    // written with them. Deserializing anything else could
                    // run arbitrary code, which is why the digest is checked
                    // first.
                    match unsafe { Component::deserialize(&self.engine, compiled) } {
                        Ok(component) => {
                            self.cache_hits.fetch_add(1, Ordering::Relaxed);
                            return Ok(component);
                        }
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "cached component unusable; compiling")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cached component rejected; compiling")
                }
            }
        }
        let serialized = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| anyhow!("not a valid WebAssembly component: {e:#}"))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(digest = &digest[..16], "compiled plugin component");
        if let Some(path) = &cached {
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, cache_file(&serialized))
                .and_then(|()| std::fs::rename(&tmp, path))
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the plugin cache");
            }
        }
        // SAFETY: the bytes were just produced by this engine's `precompile_component`.
        unsafe { Component::deserialize(&self.engine, &serialized) }.map_err(anyhow::Error::from)
    }

    /// Checks the component against both worlds, in every published
    /// version, and prepares its instances.
    fn prepare(&self, component: &Component) -> anyhow::Result<Prepared> {
        let reads_details = || {
            component
                .component_type()
                .imports(&self.engine)
                .any(|(name, _)| name.starts_with(CALL_DETAILS))
        };
        // Linking fails only for imports the hub does not offer at all.
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow!(
                "the component imports what the hub does not offer ({e:#}); a plugin may import \
                 `alkdev:hub/host`, `alkdev:hub/types` and (routing) `alkdev:hub/call-details` of \
                 version 0.3.0, 0.2.0 or 0.1.0, and WASI, which grants nothing"
            )
        })?;
        let routing_err = match routing::RoutingPluginPre::new(pre.clone()) {
            Ok(p) => return Ok(Prepared::Routing(p, reads_details())),
            Err(e) => e,
        };
        let remap_err = match remap::RemapPluginPre::new(pre.clone()) {
            Ok(p) => return Ok(Prepared::Remap(p)),
            Err(e) => e,
        };
        if let Ok(p) = routing_v2::RoutingPluginPre::new(pre.clone()) {
            return Ok(Prepared::RoutingV2(p, reads_details()));
        }
        if let Ok(p) = remap_v2::RemapPluginPre::new(pre.clone()) {
            return Ok(Prepared::RemapV2(p));
        }
        if let Ok(p) = routing_v1::RoutingPluginPre::new(pre.clone()) {
            return Ok(Prepared::RoutingV1(p));
        }
        if let Ok(p) = remap_v1::RemapPluginPre::new(pre) {
            return Ok(Prepared::RemapV1(p));
        }
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        Err(anyhow!(
            "the component implements neither world of alkdev:hub@0.3.0 (nor of 0.2.0 or 0.1.0): it \
             must export `alkdev:hub/routing@0.3.0` (routing-plugin) or `alkdev:hub/remap@0.3.0` \
             (remap-plugin) and import nothing but `alkdev:hub/host@0.3.0`, \
             `alkdev:hub/types@0.3.0`, `alkdev:hub/call-details@0.3.0` (routing) and WASI; it \
             exports [{}]. \
             As routing-plugin: {routing_err:#}. As remap-plugin: {remap_err:#}",
            exports.join(", ")
        ))
    }
}

/// How a cache file starts: this tag, the SHA-256 (hex) of the compiled
/// bytes, a newline, then the bytes. The digest catches a truncated or
/// altered file before wasmtime trusts it; it is no signature (whoever can
/// write the cache folder can write a matching digest, and can as well
/// replace the plugins), so the folder must stay writable by the hub alone.
const CACHE_TAG: &[u8] = b"alkhub-compiled-sha256:";

/// The content of a cache file holding `compiled`.
fn cache_file(compiled: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(CACHE_TAG.len() + 65 + compiled.len());
    file.extend_from_slice(CACHE_TAG);
    file.extend_from_slice(sha256_hex(compiled).as_bytes());
    file.push(b'\n');
    file.extend_from_slice(compiled);
    file
}

/// The compiled bytes of a cache file, when they match the digest written
/// with them.
fn read_cache_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut file = std::fs::read(path)?;
    let header = CACHE_TAG.len() + 65;
    let recorded = file
        .get(..header)
        .filter(|h| h.starts_with(CACHE_TAG) && h[header - 1] == b'\n')
        .map(|h| h[CACHE_TAG.len()..header - 1].to_vec())
        .ok_or_else(|| anyhow!("it does not start with a digest of its content"))?;
    let actual = sha256_hex(&file[header..]);
    if recorded != actual.as_bytes() {
        return Err(anyhow!(
            "its content does not match the digest written with it (SHA-256 {actual}, expected {})",
            String::from_utf8_lossy(&recorded)
        ));
    }
    file.drain(..header);
    Ok(file)
}

/// The custom section in which a build records what it was built from.
pub const SOURCE_SECTION: &str = "alkhub:source";

/// The longest `alkhub:source` record the hub reads; a longer one is ignored.
pub const MAX_SOURCE_RECORD: usize = 1024;

/// What identifies a component to the compile cache and to reloads (the
/// first 16 hex digits are its `version`): the SHA-256 of its bytes, or,
/// when its build recorded what it was built from in a top-level custom
/// section `alkhub:source` (the last one counts; 1 to 1,024 bytes), the
/// SHA-256 of that record. Toolchains whose output differs from one build
/// of the same source to the next (componentize-js, componentize-py) are
/// then one version per source, compiled once.
pub fn component_digest(bytes: &[u8]) -> String {
    match source_record(bytes) {
        Some(record) => {
            let mut named = SOURCE_SECTION.as_bytes().to_vec();
            named.push(b'\n');
            named.extend_from_slice(record);
            sha256_hex(&named)
        }
        None => sha256_hex(bytes),
    }
}

/// The payload of the last top-level custom section `alkhub:source`, when
/// it holds 1 to [`MAX_SOURCE_RECORD`] bytes. Nested modules and components
/// are inside their sections and never looked at; anything malformed is
/// no record (compiling reports it).
fn source_record(bytes: &[u8]) -> Option<&[u8]> {
    // `\0asm`, then a 4-byte version and layer.
    let mut rest = bytes.strip_prefix(b"\0asm")?.get(4..)?;
    let mut found = None;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, after_size) = leb128_u32(after_id)?;
        let body = after_size.get(..size)?;
        rest = &after_size[size..];
        if id != 0 {
            continue;
        }
        let (name_len, after_len) = leb128_u32(body)?;
        let name = after_len.get(..name_len)?;
        let payload = &after_len[name_len..];
        if name == SOURCE_SECTION.as_bytes() {
            found = (1..=MAX_SOURCE_RECORD)
                .contains(&payload.len())
                .then_some(payload);
        }
    }
    found
}

/// An unsigned LEB128 number of at most 5 bytes, and what follows it.
fn leb128_u32(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value)
                .ok()
                .map(|v| (v as usize, &bytes[i + 1..]));
        }
    }
    None
}

/// The import name prefix of `call-details`, any version.
const CALL_DETAILS: &str = "alkdev:hub/call-details@";

/// What `alkhub plugin check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The world it implements.
    pub world: World,
    /// The version of `alkdev:hub` it was built against.
    pub wit_version: &'static str,
    /// Its imports.
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
    /// Size of the component in bytes.
    pub size: usize,
}

/// Checks a component file: which world it implements and what it imports,
/// or exactly what is wrong.
pub fn check_file(path: &Path) -> anyhow::Result<CheckReport> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let loader = Loader::uncached()?;
    let component = loader.compile(&bytes, &component_digest(&bytes))?;
    let prepared = loader.prepare(&component)?;
    let ty = component.component_type();
    Ok(CheckReport {
        world: prepared.world(),
        wit_version: prepared.wit_version(),
        imports: ty
            .imports(&loader.engine)
            .map(|(n, _)| n.to_owned())
            .collect(),
        exports: ty
            .exports(&loader.engine)
            .map(|(n, _)| n.to_owned())
            .collect(),
        size: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_caches_own_files_are_pruned() {
        let digest = "ab".repeat(32);
        assert!(is_cache_file(&format!("{digest}-0123456789abcdef.cwasm")));
        assert!(is_cache_file(&format!("{digest}-0123456789abcdef.tmp")));
        for other in [
            "notes.tmp".to_owned(),
            "plugin.cwasm".to_owned(),
            format!("{digest}-0123456789abcdef.wasm"),
            format!("{digest}.cwasm"),
            format!("{}-0123456789abcdef.cwasm", "zz".repeat(32)),
        ] {
            assert!(!is_cache_file(&other), "{other}");
        }
    }

    /// `component` with a custom section `name` holding `payload` at its end.
    fn with_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        let mut out = component.to_vec();
        out.push(0);
        // The size as a two-byte LEB128, as a toolchain may write it.
        out.extend_from_slice(&[(body.len() as u8 & 0x7f) | 0x80, (body.len() >> 7) as u8]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn a_recorded_source_identifies_a_component_whatever_its_bytes() {
        let (_, bytes) = super::super::EMBEDDED[1];
        assert_eq!(component_digest(bytes), sha256_hex(bytes), "no record");
        let other_name = with_section(bytes, "note", b"sha256:1");
        assert_eq!(component_digest(&other_name), sha256_hex(&other_name));

        let stamped = with_section(bytes, SOURCE_SECTION, b"sha256:1");
        let rebuilt = with_section(
            &with_section(bytes, "note", b"x"),
            SOURCE_SECTION,
            b"sha256:1",
        );
        assert_ne!(stamped, rebuilt);
        assert_eq!(component_digest(&stamped), component_digest(&rebuilt));
        assert_ne!(component_digest(&stamped), sha256_hex(&stamped));

        let restamped = with_section(&stamped, SOURCE_SECTION, b"sha256:2");
        assert_ne!(
            component_digest(&restamped),
            component_digest(&stamped),
            "the last counts"
        );
        let empty = with_section(bytes, SOURCE_SECTION, b"");
        assert_eq!(component_digest(&empty), sha256_hex(&empty));
        let huge = with_section(bytes, SOURCE_SECTION, &[b'x'; MAX_SOURCE_RECORD + 1]);
        assert_eq!(component_digest(&huge), sha256_hex(&huge));
        let mut cut = stamped.clone();
        cut.truncate(cut.len() - 3);
        assert_eq!(
            component_digest(&cut),
            sha256_hex(&cut),
            "malformed: no record"
        );
        assert_eq!(component_digest(b"not wasm"), sha256_hex(b"not wasm"));
        assert!(Loader::uncached()
            .unwrap()
            .compile(&stamped, &component_digest(&stamped))
            .is_ok());
    }

    #[test]
    fn a_cache_file_that_does_not_match_its_digest_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let loader = Loader::new(dir.path()).unwrap();
        let (_, bytes) = super::super::EMBEDDED[1];
        let digest = sha256_hex(bytes);
        let path = loader.cache_path(&digest).unwrap();
        let counts = || {
            (
                loader.compiled.load(Ordering::Relaxed),
                loader.cache_hits.load(Ordering::Relaxed),
            )
        };
        loader.compile_uncached_in_memory(bytes, &digest).unwrap();
        assert_eq!(counts(), (1, 0));
        loader.compile_uncached_in_memory(bytes, &digest).unwrap();
        assert_eq!(counts(), (1, 1), "a good file is used");

        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 3] = [
            ("one byte changed", |f| {
                let middle = f.len() / 2;
                f[middle] ^= 1;
            }),
            ("truncated", |f| f.truncate(f.len() - 100)),
            ("no digest", |f| {
                f.drain(..CACHE_TAG.len() + 65);
            }),
        ];
        for (i, (what, damage)) in damages.into_iter().enumerate() {
            let mut file = std::fs::read(&path).unwrap();
            damage(&mut file);
            std::fs::write(&path, &file).unwrap();
            assert!(read_cache_file(&path).is_err(), "{what} was accepted");
            let component = loader.compile_uncached_in_memory(bytes, &digest).unwrap();
            assert_eq!(counts(), (2 + i as u64, 1), "{what}: compiled again");
            assert!(loader.prepare(&component).is_ok(), "{what}");
            assert!(
                read_cache_file(&path).is_ok(),
                "{what}: the file is rewritten"
            );
        }
    }
}
