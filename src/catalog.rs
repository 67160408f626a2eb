//! The in-memory index the call path reads: every definition, its compiled
//! input schema, and its active registrations with their in-flight counts.
//!
//! Updated on lifecycle events (load, register, unregister, disconnect);
//! never touches the database. Entries are immutable snapshots behind `Arc`:
//! a change builds a new entry and swaps it in, so a lookup holds the lock
//! only for one hash-map probe and a reference-count increment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::connection::Connection;
use crate::store::Definition;

/// One provider's active registration of a definition.
#[derive(Debug, Clone)]
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

/// A definition and its active providers.
#[derive(Debug)]
pub struct Entry {
    /// The stored definition.
    pub definition: Arc<Definition>,
    /// The compiled input schema; `None` accepts any input.
    pub validator: Option<Arc<jsonschema::Validator>>,
    /// Active registrations.
    pub providers: Vec<Provider>,
    /// Calls routed so far, shared across snapshots (round robin reads it).
    pub sequence: Arc<AtomicU64>,
}

impl Entry {
    /// The same definition with another set of providers.
    fn with_providers(&self, providers: Vec<Provider>) -> Entry {
        Entry {
            definition: self.definition.clone(),
            validator: self.validator.clone(),
            providers,
            sequence: self.sequence.clone(),
        }
    }
}

/// Handle to the index; cloning shares it.
#[derive(Clone, Default)]
pub struct Catalog {
    // A std lock: it is never held across an await, and only for a probe or
    // a swap of one `Arc`.
    entries: Arc<RwLock<HashMap<Arc<str>, Arc<Entry>>>>,
    // Counts changes; watchers (the MCP server) wake on each one.
    generation: Arc<watch::Sender<u64>>,
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

impl Catalog {
    /// Looks up a definition by post-remap id.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.entries.read().unwrap().get(id).cloned()
    }

    /// Wakes on every change to a definition or a provider set; read the
    /// catalog again when it does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Every entry, ordered by id.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<_> = self.entries.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
        all
    }

    /// Adds or replaces a definition, keeping its providers. A stored schema
    /// that no longer compiles accepts any input and is logged.
    pub fn put_definition(&self, definition: Definition) {
        let validator = definition.spec.input_schema.as_ref().and_then(|s| {
            compile_schema(s)
                .map_err(|e| tracing::warn!(operation = %definition.id, error = %e, "schema not enforced"))
                .ok()
                .map(Arc::new)
        });
        self.put_compiled(definition, validator);
    }

    /// Adds or replaces a definition whose schema is already compiled.
    pub fn put_compiled(
        &self,
        definition: Definition,
        validator: Option<Arc<jsonschema::Validator>>,
    ) {
        let id: Arc<str> = definition.id.as_str().into();
        let mut entries = self.entries.write().unwrap();
        let (providers, sequence) = match entries.get(&id) {
            Some(old) => (old.providers.clone(), old.sequence.clone()),
            None => (Vec::new(), Arc::default()),
        };
        entries.insert(
            id,
            Arc::new(Entry {
                definition: Arc::new(definition),
                validator,
                providers,
                sequence,
            }),
        );
        drop(entries);
        self.changed();
    }

    /// Adds an active provider to a definition already in the catalog.
    /// Refused (false) when the provider's session is closing: the check is
    /// made under the write lock that [`Catalog::remove_session`] takes after
    /// the close, so a registration racing with the session's end can never
    /// leave a provider behind.
    pub fn add_provider(&self, operation_id: &str, provider: Provider) -> bool {
        let mut entries = self.entries.write().unwrap();
        if provider.connection.is_closing() {
            return false;
        }
        let Some(old) = entries.get(operation_id) else {
            return false;
        };
        let mut providers = old.providers.clone();
        providers.retain(|p| p.registration_id != provider.registration_id);
        providers.push(provider);
        let entry = Arc::new(old.with_providers(providers));
        entries.insert(operation_id.into(), entry);
        drop(entries);
        self.changed();
        true
    }

    /// Removes the providers of one session; with `registration_ids`, only those.
    pub fn remove_session(&self, session_id: u64, only: Option<&[Arc<str>]>) {
        let mut entries = self.entries.write().unwrap();
        let affected: Vec<Arc<str>> = entries
            .iter()
            .filter(|(_, e)| {
                e.providers
                    .iter()
                    .any(|p| p.connection.session_id == session_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if affected.is_empty() {
            return;
        }
        for id in affected {
            let old = &entries[&id];
            let providers = old
                .providers
                .iter()
                .filter(|p| {
                    p.connection.session_id != session_id
                        || only.is_some_and(|ids| !ids.contains(&p.registration_id))
                })
                .cloned()
                .collect();
            let entry = Arc::new(old.with_providers(providers));
            entries.insert(id, entry);
        }
        drop(entries);
        self.changed();
    }

    /// Removes a definition and its providers.
    pub fn remove_definition(&self, id: &str) {
        if self.entries.write().unwrap().remove(id).is_some() {
            self.changed();
        }
    }
}
