//! The in-memory index the call path reads: every definition, its input
//! schema's validator, and its active registrations with their in-flight
//! counts.
//!
//! Updated on lifecycle events (load, register, unregister, disconnect);
//! never touches the database. Entries are immutable snapshots behind `Arc`:
//! a change builds a new entry and swaps it in, so a lookup holds the lock
//! only for one hash-map probe and a reference-count increment.
//!
//! Beside the map by id the catalog keeps the ids in order (for paginated
//! listings) and, per session, the ids it provides (so a session's end
//! touches only its own entries). Changes to many entries (a hello's
//! operations, a departure) take the write lock for at most
//! [`WRITE_CHUNK`] entries at a time: lookups wait for one chunk, never for
//! the whole change.
//!
//! Validators are compiled when a call first needs one, and identical
//! schemas share one compiled validator ([`shared_validator`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use tokio::sync::watch;

use crate::connection::Connection;
use crate::protocol::PrincipalKind;
use crate::store::Definition;

/// One provider's active registration of a definition.
#[derive(Debug)]
pub struct Provider {
    /// The registration's id.
    pub registration_id: Arc<str>,
    /// The id the provider declared; calls reach it under this id.
    pub pre_remap_id: Arc<str>,
    /// The provider's live connection.
    pub connection: Arc<Connection>,
    /// Calls this registration is serving.
    pub in_flight: Arc<AtomicU32>,
}

impl Provider {
    /// A registration of `connection` with nothing in flight.
    pub fn new(
        registration_id: Arc<str>,
        pre_remap_id: Arc<str>,
        connection: Arc<Connection>,
    ) -> Arc<Provider> {
        Arc::new(Provider {
            registration_id,
            pre_remap_id,
            connection,
            in_flight: Arc::new(AtomicU32::new(0)),
        })
    }
}

/// The compiled input schema of one definition, made on first use.
type LazyValidator = OnceLock<Option<Arc<jsonschema::Validator>>>;

/// A definition and its active providers.
#[derive(Debug)]
pub struct Entry {
    /// The stored definition.
    pub definition: Arc<Definition>,
    // Shared by every snapshot of the same definition.
    validator: Arc<LazyValidator>,
    /// Active registrations.
    pub providers: Vec<Arc<Provider>>,
    /// Calls routed so far, shared across snapshots (round robin reads it).
    pub sequence: Arc<AtomicU64>,
}

impl Entry {
    /// The same definition with another set of providers.
    fn with_providers(&self, providers: Vec<Arc<Provider>>) -> Entry {
        Entry {
            definition: self.definition.clone(),
            validator: self.validator.clone(),
            providers,
            sequence: self.sequence.clone(),
        }
    }

    /// The compiled input schema; `None` accepts any input. Compiled on the
    /// first call (shared with every definition of the same schema); a
    /// stored schema that no longer compiles accepts any input and is
    /// logged once.
    pub fn validator(&self) -> Option<&Arc<jsonschema::Validator>> {
        self.validator
            .get_or_init(|| {
                let schema = self.definition.spec.input_schema.as_ref()?;
                shared_validator(schema)
                    .map_err(|e| tracing::warn!(operation = %self.definition.id, error = %e, "schema not enforced"))
                    .ok()
            })
            .as_ref()
    }
}

/// Told of the changes this node's peers make to the catalog, so that a
/// cluster ([`crate::cluster`]) can announce them to the other nodes.
/// Called after the change, never under the catalog's lock.
pub trait CatalogHooks: Send + Sync {
    /// Registrations of one session were published: per item its
    /// operation id, its provider, and whether the definition is new or
    /// changed.
    fn published(&self, connection: &Arc<Connection>, items: &[(Arc<str>, Arc<Provider>, bool)]);
    /// A session's providers left the catalog (all of them, or `only` these
    /// registrations).
    fn removed(&self, session_id: u64, only: Option<&[Arc<str>]>);
    /// A definition was deleted.
    fn definition_removed(&self, id: &str);
    /// A spoke's session started here: its sessions elsewhere are
    /// superseded (one session per spoke holds across nodes).
    fn spoke_attached(&self, connection: &Arc<Connection>);
}

/// Entries one write-lock hold changes at most during a bulk change.
pub const WRITE_CHUNK: usize = 64;

/// Handle to the index; cloning shares it.
#[derive(Clone)]
pub struct Catalog {
    // A std lock: it is never held across an await, and only for a probe,
    // a swap, or one chunk of a bulk change.
    inner: Arc<RwLock<Inner>>,
    // Counts changes; watchers (the MCP server) wake on each one.
    generation: Arc<watch::Sender<u64>>,
    // False while the stored definitions are still being loaded (start-up).
    loaded: Arc<watch::Sender<bool>>,
    // Set once in cluster mode.
    hooks: Arc<OnceLock<Arc<dyn CatalogHooks>>>,
}

impl Default for Catalog {
    /// An empty catalog, loaded.
    fn default() -> Self {
        Catalog {
            inner: Arc::default(),
            generation: Arc::default(),
            loaded: Arc::new(watch::Sender::new(true)),
            hooks: Arc::default(),
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Arc<str>, Arc<Entry>>,
    // The same ids in order, for pages.
    ids: BTreeSet<Arc<str>>,
    // What each session provides, and the sessions of each principal.
    sessions: HashMap<u64, Provided>,
    principals: HashMap<(PrincipalKind, Arc<str>), Vec<u64>>,
}

struct Provided {
    connection: Arc<Connection>,
    operations: HashSet<Arc<str>>,
}

/// One page of a listing.
pub struct Page {
    /// The entries, ordered by id.
    pub entries: Vec<Arc<Entry>>,
    /// The id to pass as `after` for the next page; `None` on the last.
    pub next: Option<Arc<str>>,
}

/// One activated registration to publish, with its definition when that is
/// new or changed.
pub struct Publish {
    /// The post-remap id.
    pub operation_id: String,
    /// The definition to put first, with its validator when already compiled.
    pub definition: Option<(Definition, Option<Arc<jsonschema::Validator>>)>,
    /// The registration.
    pub provider: Arc<Provider>,
}

/// Backtracking steps one `pattern` match may take on one string before it
/// stops (and the string does not validate). Only patterns that need
/// backtracking (look-around, back-references) ever use it: the others run
/// on the `regex` crate's linear-time engine.
pub const SCHEMA_PATTERN_BACKTRACK_LIMIT: usize = 10_000;

/// Approximate bytes one compiled `pattern` (and its lazy DFA cache) may use;
/// a pattern that needs more is an invalid schema.
pub const SCHEMA_PATTERN_SIZE_LIMIT: usize = 1024 * 1024;

/// Compiles a JSON Schema, or says what is wrong with it.
///
/// Patterns use `fancy-regex`, which hands every pattern without
/// look-around or back-references to the linear-time `regex` engine, and
/// bounds the backtracking of the others by
/// [`SCHEMA_PATTERN_BACKTRACK_LIMIT`]; a catastrophic pattern therefore costs
/// at most that many steps per string, and compiling one at most
/// [`SCHEMA_PATTERN_SIZE_LIMIT`] bytes.
pub fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    let patterns = jsonschema::PatternOptions::fancy_regex()
        .backtrack_limit(SCHEMA_PATTERN_BACKTRACK_LIMIT)
        .size_limit(SCHEMA_PATTERN_SIZE_LIMIT)
        .dfa_size_limit(SCHEMA_PATTERN_SIZE_LIMIT);
    jsonschema::options()
        .with_pattern_options(patterns)
        .build(schema)
        .map_err(|e| format!("invalid JSON Schema: {e}"))
}

// Compiled validators by schema text, held weakly: a validator lives as long
// as some definition uses it.
static VALIDATORS: OnceLock<Mutex<Validators>> = OnceLock::new();

#[derive(Default)]
struct Validators {
    by_schema: HashMap<String, Weak<jsonschema::Validator>>,
    // Entries at the last sweep of dead ones; the next sweep waits until
    // the map has doubled, so sweeping costs O(1) per insertion.
    swept_at: usize,
}

/// [`compile_schema`], shared: every schema with the same text (keys are
/// serialised in order, so the same schema always has the same text) gets
/// the same compiled validator while one is alive.
pub fn shared_validator(schema: &serde_json::Value) -> Result<Arc<jsonschema::Validator>, String> {
    let key = serde_json::to_string(schema).map_err(|e| e.to_string())?;
    shared_validator_of(schema, key)
}

/// [`shared_validator`] for a caller that has serialised `schema` already:
/// `key` must be `serde_json::to_string(schema)`.
pub fn shared_validator_of(
    schema: &serde_json::Value,
    key: String,
) -> Result<Arc<jsonschema::Validator>, String> {
    let cache = VALIDATORS.get_or_init(Mutex::default);
    if let Some(found) = cache
        .lock()
        .unwrap()
        .by_schema
        .get(&key)
        .and_then(Weak::upgrade)
    {
        return Ok(found);
    }
    let compiled = Arc::new(compile_schema(schema)?);
    let mut cache = cache.lock().unwrap();
    // Another thread may have compiled the same schema meanwhile: keep one.
    if let Some(found) = cache.by_schema.get(&key).and_then(Weak::upgrade) {
        return Ok(found);
    }
    cache.by_schema.insert(key, Arc::downgrade(&compiled));
    if cache.by_schema.len() >= 2 * cache.swept_at.max(512) {
        cache.by_schema.retain(|_, v| v.strong_count() > 0);
        cache.swept_at = cache.by_schema.len();
    }
    Ok(compiled)
}

impl Inner {
    /// Puts `definition` in, keeping the providers of an entry it replaces.
    fn put(&mut self, definition: Definition, validator: Option<Arc<jsonschema::Validator>>) {
        let id: Arc<str> = definition.id.as_str().into();
        let lazy = match validator {
            Some(v) => OnceLock::from(Some(v)),
            None => OnceLock::new(),
        };
        let (providers, sequence) = match self.entries.get(&id) {
            Some(old) => (old.providers.clone(), old.sequence.clone()),
            None => {
                self.ids.insert(id.clone());
                (Vec::new(), Arc::default())
            }
        };
        let entry = Entry {
            definition: Arc::new(definition),
            validator: Arc::new(lazy),
            providers,
            sequence,
        };
        self.entries.insert(id, Arc::new(entry));
    }

    /// Adds `provider` to `operation_id`; false when there is no such entry.
    fn add(&mut self, operation_id: &str, provider: Arc<Provider>) -> bool {
        let Some((id, old)) = self.entries.get_key_value(operation_id) else {
            return false;
        };
        let id = id.clone();
        let mut providers = Vec::with_capacity(old.providers.len() + 1);
        providers.extend(
            old.providers
                .iter()
                .filter(|p| p.registration_id != provider.registration_id)
                .cloned(),
        );
        let connection = provider.connection.clone();
        providers.push(provider);
        let entry = Arc::new(old.with_providers(providers));
        self.entries.insert(id.clone(), entry);
        let session = connection.session_id;
        let provided = self.sessions.entry(session).or_insert_with(|| {
            let identity = &connection.identity;
            self.principals
                .entry((identity.kind, identity.id.as_str().into()))
                .or_default()
                .push(session);
            Provided {
                connection: connection.clone(),
                operations: HashSet::new(),
            }
        });
        provided.operations.insert(id);
        true
    }

    /// Removes the providers of `session` from `operation_id`, or only the
    /// registrations `only` names.
    fn remove(&mut self, operation_id: &str, session: u64, only: Option<&[Arc<str>]>) {
        let Some((id, old)) = self.entries.get_key_value(operation_id) else {
            return;
        };
        let id = id.clone();
        let providers = old
            .providers
            .iter()
            .filter(|p| {
                p.connection.session_id != session
                    || only.is_some_and(|ids| !ids.contains(&p.registration_id))
            })
            .cloned()
            .collect();
        let entry = Arc::new(old.with_providers(providers));
        self.entries.insert(id, entry);
    }

    /// Forgets `session` in the indexes.
    fn forget_session(&mut self, session: u64) -> Option<Provided> {
        let provided = self.sessions.remove(&session)?;
        let identity = &provided.connection.identity;
        let key = (identity.kind, Arc::<str>::from(identity.id.as_str()));
        if let Some(sessions) = self.principals.get_mut(&key) {
            sessions.retain(|&s| s != session);
            if sessions.is_empty() {
                self.principals.remove(&key);
            }
        }
        Some(provided)
    }
}

impl Catalog {
    /// An empty catalog that is still loading: see [`Catalog::finish_loading`].
    pub fn loading() -> Catalog {
        let catalog = Catalog::default();
        catalog.loaded.send_replace(false);
        catalog
    }

    /// The stored definitions are all in: lookups that miss mean "unknown"
    /// again, and whoever waits in [`Catalog::wait_loaded`] goes on.
    pub fn finish_loading(&self) {
        self.loaded.send_replace(true);
        self.changed();
    }

    /// Whether start-up is still loading the stored definitions (a lookup
    /// that misses may then be a definition not loaded yet).
    pub fn is_loading(&self) -> bool {
        !*self.loaded.borrow()
    }

    /// Returns once the stored definitions are loaded.
    pub async fn wait_loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        let _ = loaded.wait_for(|l| *l).await;
    }

    /// Looks up a definition by post-remap id.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.inner.read().unwrap().entries.get(id).cloned()
    }

    /// How many definitions there are.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap().entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes on every change to a definition or a provider set; read the
    /// catalog again when it does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Every entry, ordered by id. Prefer [`Catalog::page`]: this holds
    /// every entry at once.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.page(None, usize::MAX, |_| true).entries
    }

    /// Up to `limit` entries that `keep` accepts, in id order, starting
    /// after the id `after`. Reads under the lock in chunks, so a listing
    /// never holds writers back for long.
    pub fn page(&self, after: Option<&str>, limit: usize, keep: impl Fn(&Entry) -> bool) -> Page {
        const CHUNK: usize = 256;
        let mut entries = Vec::new();
        let mut cursor: Option<Arc<str>> = after.map(Arc::from);
        loop {
            let chunk: Vec<Arc<Entry>> = {
                let inner = self.inner.read().unwrap();
                let start = match &cursor {
                    Some(id) => Bound::Excluded(id.clone()),
                    None => Bound::Unbounded,
                };
                inner
                    .ids
                    .range((start, Bound::Unbounded))
                    .take(CHUNK)
                    .filter_map(|id| inner.entries.get(id).cloned())
                    .collect()
            };
            let Some(last) = chunk.last() else {
                return Page {
                    entries,
                    next: None,
                };
            };
            cursor = Some(last.definition.id.as_str().into());
            let exhausted = chunk.len() < CHUNK;
            for entry in chunk {
                if entries.len() == limit {
                    let next = entries
                        .last()
                        .map(|e: &Arc<Entry>| e.definition.id.as_str().into());
                    return Page { entries, next };
                }
                if keep(&entry) {
                    entries.push(entry);
                }
            }
            if exhausted {
                return Page {
                    entries,
                    next: None,
                };
            }
        }
    }

    /// Sets the hooks told of this node's changes; only the first call counts.
    pub fn set_hooks(&self, hooks: Arc<dyn CatalogHooks>) {
        let _ = self.hooks.set(hooks);
    }

    /// The provider of `session_id` that declared `pre_remap_id`, with its
    /// entry: the registration a call forwarded from another node names.
    pub fn provider_of(&self, session_id: u64, pre_remap_id: &str) -> Option<(Arc<Entry>, usize)> {
        let inner = self.inner.read().unwrap();
        let find = |entry: &Arc<Entry>| {
            entry
                .providers
                .iter()
                .position(|p| {
                    p.connection.session_id == session_id && &*p.pre_remap_id == pre_remap_id
                })
                .map(|i| (entry.clone(), i))
        };
        // Most operations keep their declared id: one probe.
        if let Some(found) = inner.entries.get(pre_remap_id).and_then(find) {
            return Some(found);
        }
        let provided = inner.sessions.get(&session_id)?;
        provided
            .operations
            .iter()
            .filter_map(|id| inner.entries.get(id))
            .find_map(find)
    }

    /// The hooks, when set.
    pub fn hooks(&self) -> Option<&Arc<dyn CatalogHooks>> {
        self.hooks.get()
    }

    /// Removes a definition that another node deleted (nothing is announced).
    pub fn forget_definition(&self, id: &str) {
        self.remove_definition_inner(id);
    }

    /// Adds or replaces a definition, keeping its providers. Its validator
    /// is compiled when a call first needs it.
    pub fn put_definition(&self, definition: Definition) {
        self.put_compiled(definition, None);
    }

    /// Adds many definitions (start-up's load), a chunk per lock hold. An
    /// id the catalog already holds keeps its entry: a registration made
    /// while the load ran is newer than the stored row that was read.
    pub fn load_definitions(&self, definitions: impl IntoIterator<Item = Definition>) {
        let mut definitions = definitions.into_iter().peekable();
        while definitions.peek().is_some() {
            let mut inner = self.inner.write().unwrap();
            for definition in definitions.by_ref().take(WRITE_CHUNK) {
                if !inner.entries.contains_key(definition.id.as_str()) {
                    inner.put(definition, None);
                }
            }
        }
        self.changed();
    }

    /// Adds or replaces a definition whose schema is already compiled
    /// (`None`: compile on first use).
    pub fn put_compiled(
        &self,
        definition: Definition,
        validator: Option<Arc<jsonschema::Validator>>,
    ) {
        self.inner.write().unwrap().put(definition, validator);
        self.changed();
    }

    /// Adds an active provider to a definition already in the catalog.
    /// Refused (false) when the provider's session is closing: the check is
    /// made under the write lock that [`Catalog::remove_session`] takes after
    /// the close, so a registration racing with the session's end can never
    /// leave a provider behind.
    pub fn add_provider(&self, operation_id: &str, provider: Arc<Provider>) -> bool {
        let mut inner = self.inner.write().unwrap();
        if provider.connection.is_closing() {
            return false;
        }
        let added = inner.add(operation_id, provider);
        drop(inner);
        if added {
            self.changed();
        }
        added
    }

    /// Publishes a batch of registrations of one session (with their new or
    /// changed definitions), a chunk per lock hold. Returns, per item,
    /// whether it was published: nothing is once the session is closing.
    pub fn publish(&self, batch: Vec<Publish>) -> Vec<bool> {
        let hooks = self.hooks.get();
        let mut announced = Vec::new();
        let connection = batch.first().map(|item| item.provider.connection.clone());
        let mut published = Vec::with_capacity(batch.len());
        let mut items = batch.into_iter().peekable();
        while items.peek().is_some() {
            let mut inner = self.inner.write().unwrap();
            for item in items.by_ref().take(WRITE_CHUNK) {
                let changed = item.definition.is_some();
                if let Some((definition, validator)) = item.definition {
                    inner.put(definition, validator);
                }
                let open = !item.provider.connection.is_closing();
                let provider = hooks.map(|_| item.provider.clone());
                let landed = open && inner.add(&item.operation_id, item.provider);
                if let (true, Some(provider)) = (landed, provider) {
                    announced.push((item.operation_id.as_str().into(), provider, changed));
                }
                published.push(landed);
            }
        }
        self.changed();
        if let (Some(hooks), Some(connection)) = (hooks, connection) {
            if !announced.is_empty() {
                hooks.published(&connection, &announced);
            }
        }
        published
    }

    /// Removes the providers of one session; with `only`, only those
    /// registrations. Touches only the session's own entries, a chunk per
    /// lock hold.
    pub fn remove_session(&self, session_id: u64, only: Option<&[Arc<str>]>) {
        self.remove_session_inner(session_id, only);
        if let Some(hooks) = self.hooks.get() {
            hooks.removed(session_id, only);
        }
    }

    fn remove_session_inner(&self, session_id: u64, only: Option<&[Arc<str>]>) {
        let operations: Vec<Arc<str>> = {
            let mut inner = self.inner.write().unwrap();
            match only {
                None => match inner.forget_session(session_id) {
                    Some(provided) => provided.operations.into_iter().collect(),
                    None => return,
                },
                Some(registrations) => {
                    let Some(provided) = inner.sessions.get(&session_id) else {
                        return;
                    };
                    let hit: Vec<Arc<str>> = provided
                        .operations
                        .iter()
                        .filter(|id| {
                            inner.entries.get(*id).is_some_and(|e| {
                                e.providers.iter().any(|p| {
                                    p.connection.session_id == session_id
                                        && registrations.contains(&p.registration_id)
                                })
                            })
                        })
                        .cloned()
                        .collect();
                    let provided = inner.sessions.get_mut(&session_id).expect("looked up");
                    for id in &hit {
                        provided.operations.remove(id);
                    }
                    if provided.operations.is_empty() {
                        inner.forget_session(session_id);
                    }
                    hit
                }
            }
        };
        if operations.is_empty() {
            return;
        }
        for chunk in operations.chunks(WRITE_CHUNK) {
            let mut inner = self.inner.write().unwrap();
            for id in chunk {
                inner.remove(id, session_id, only);
            }
        }
        self.changed();
    }

    /// Active registrations that the principal of `connection` holds in its
    /// other live sessions.
    pub fn held_elsewhere(&self, connection: &Connection) -> usize {
        let identity = &connection.identity;
        let inner = self.inner.read().unwrap();
        let key = (identity.kind, Arc::<str>::from(identity.id.as_str()));
        let Some(sessions) = inner.principals.get(&key) else {
            return 0;
        };
        sessions
            .iter()
            .filter(|&&s| s != connection.session_id)
            .filter_map(|s| inner.sessions.get(s))
            .filter(|p| !p.connection.is_closing())
            .map(|p| p.operations.len())
            .sum()
    }

    /// Removes a definition and its providers.
    pub fn remove_definition(&self, id: &str) {
        self.remove_definition_inner(id);
        if let Some(hooks) = self.hooks.get() {
            hooks.definition_removed(id);
        }
    }

    fn remove_definition_inner(&self, id: &str) {
        let mut inner = self.inner.write().unwrap();
        let Some(old) = inner.entries.remove(id) else {
            return;
        };
        inner.ids.remove(id);
        for provider in &old.providers {
            let session = provider.connection.session_id;
            if let Some(provided) = inner.sessions.get_mut(&session) {
                provided.operations.remove(id);
                if provided.operations.is_empty() {
                    inner.forget_session(session);
                }
            }
        }
        drop(inner);
        self.changed();
    }
}
