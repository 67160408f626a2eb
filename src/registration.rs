//! Turning the operations a peer declares into definitions and active
//! registrations: validate each spec, remap its id, check the provider's
//! grants and limits, settle definitions and registrations in one
//! transaction, and publish them in the catalog.
//!
//! One declaration failing never affects the others: each ends up either in
//! `registrations` or in `rejected` with a code and a reason. A reason never
//! reveals an operation the declarer may not see: outside its grants, or
//! facing a definition it could not call, a declaration gets the same
//! `ACCESS_DENIED` whether or not anything exists under that id.
//!
//! Registrations belong to the session that activated them (its
//! [`Registrar::session_key`] is stored on the row): ending a session
//! deactivates only the rows still carrying its key, so a newer session
//! that re-activated a row keeps it. The deactivation runs in a background
//! task that batches ending sessions into few statements and retries.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::catalog::{shared_validator_of, Catalog, Provider, Publish};
use crate::config::LimitsConfig;
use crate::connection::Connection;
use crate::names;
use crate::policy::{Declared, RemapPolicy, RemapProvider};
use crate::protocol::{
    AccessLevel, ErrorCode, Identity, OperationSpec, PrincipalKind, RegisterResult, Registered,
    Rejected, Warning,
};
use crate::store::{
    Declaration, Declarer, Definition, NewDefinition, OwnerKind, Refused, Source, Store, StoreError,
};

/// What one session has registered: pre-remap id → (post-remap id, registration id).
pub type SessionRegistrations = HashMap<String, (String, Arc<str>)>;

/// Handle that registers and unregisters operations; cloning shares it.
#[derive(Clone)]
pub struct Registrar {
    store: Store,
    catalog: Catalog,
    remap: Arc<RwLock<Arc<dyn RemapPolicy>>>,
    limits: RegistrationLimits,
    // Distinguishes this process's session ids from those of an earlier run
    // (or another hub) in the `session_id` column.
    instance: Arc<str>,
    deactivations: mpsc::UnboundedSender<Deactivation>,
}

/// The declaration-time limits (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct RegistrationLimits {
    /// `limits.max_operations_per_session`.
    pub per_session: usize,
    /// `limits.max_operations_per_principal`.
    pub per_principal: usize,
    /// `limits.max_schema_bytes`.
    pub schema_bytes: usize,
    /// `limits.max_schema_depth`.
    pub schema_depth: usize,
}

impl From<&LimitsConfig> for RegistrationLimits {
    fn from(limits: &LimitsConfig) -> Self {
        RegistrationLimits {
            per_session: limits.max_operations_per_session,
            per_principal: limits.max_operations_per_principal,
            schema_bytes: limits.max_schema_bytes,
            schema_depth: limits.max_schema_depth,
        }
    }
}

/// A principal's provider grants: which post-remap ids it may serve.
///
/// `patterns` are operation-id patterns where `*` matches any characters
/// (`chat.*` matches `chat.complete` and `chat.a.b`). Without patterns the
/// default of the kind applies: a spoke may provide anything except what an
/// import owns, a client nothing. An import's operations (and its
/// namespace) need a pattern that names them: the catch-all `*` does not.
/// The reserved namespace `hub` is refused before grants are looked at.
#[derive(Debug, Clone, Copy)]
pub struct Grants<'a> {
    /// Spoke or client.
    pub kind: PrincipalKind,
    /// The stored `provides`; `None` is the default of the kind.
    pub patterns: Option<&'a [String]>,
}

impl Grants<'_> {
    /// Whether `operation_id` may be provided; `import_owned` when an import
    /// defined it or it lies in an import's namespace.
    pub fn may_provide(&self, operation_id: &str, import_owned: bool) -> bool {
        match self.patterns {
            None => self.kind == PrincipalKind::Spoke && !import_owned,
            Some(patterns) => patterns.iter().any(|p| {
                pattern_matches(p, operation_id) && !(import_owned && p.chars().all(|c| c == '*'))
            }),
        }
    }
}

/// Whether `pattern` (`*` matches any characters, everything else itself)
/// matches all of `text`. Greedy with one backtrack point, so linear in
/// practice and never exponential.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// Checks one grant pattern: letters, digits, `_`, `-`, `.` and `*`, at
/// most 256 characters.
pub fn check_grant_pattern(pattern: &str) -> Result<(), String> {
    let valid = !pattern.is_empty()
        && pattern.len() <= 256
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid provider grant {pattern:?}: use operation-id patterns such as `chat.*` \
             (letters, digits, `_`, `-`, `.`, `*` for any characters)"
        ))
    }
}

fn reject(
    operation_id: impl Into<String>,
    code: ErrorCode,
    message: impl Into<String>,
) -> Rejected {
    Rejected {
        operation_id: operation_id.into(),
        code,
        message: message.into(),
    }
}

/// The one answer to a declaration outside the declarer's grants, or facing
/// a definition it may not see: it names only what was declared.
fn not_granted(identity: &Identity, pre_remap_id: &str, operation_id: &str) -> Rejected {
    reject(
        pre_remap_id,
        ErrorCode::AccessDenied,
        format!(
            "{} {} is not granted to provide {operation_id}",
            identity.kind, identity.id
        ),
    )
}

/// Whether `identity` could call (and so may see) `definition`: the rule of
/// [`crate::dispatch::check_access`], for a stored definition.
fn may_see(definition: &Definition, identity: &Identity) -> bool {
    let spec = &definition.spec;
    match spec.access_level {
        AccessLevel::Public | AccessLevel::Authenticated => true,
        AccessLevel::Internal => identity.kind == PrincipalKind::Spoke,
        AccessLevel::Scoped => spec
            .required_scopes
            .iter()
            .all(|s| identity.scopes.contains(s)),
    }
}

fn import_owned(definition: &Definition) -> bool {
    definition
        .owner
        .as_ref()
        .is_some_and(|o| o.kind == OwnerKind::Import)
        || matches!(definition.spec.source, Source::Openapi | Source::Mcp)
}

fn in_namespace(operation_id: &str, namespace: &str) -> bool {
    operation_id
        .strip_prefix(namespace)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Nesting depth of arrays and objects in `value` (a scalar is 0), without
/// recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((value, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        deepest = deepest.max(level);
        stack.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

/// A declaration that passed every check that needs no stored row.
struct Prepared {
    index: usize,
    pre_remap_id: String,
    operation_id: String,
    /// For the provider: the remap did not decide as configured.
    warning: Option<String>,
    validator: Option<Arc<jsonschema::Validator>>,
    declaration: Declaration,
}

/// One ending session whose registrations become inactive.
struct Deactivation {
    session: String,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Attempts of one batch of deactivations before it is given up (logged).
/// With the backoff below that is a little over a minute.
const DEACTIVATION_ATTEMPTS: u32 = 20;
const DEACTIVATION_BACKOFF: Duration = Duration::from_millis(50);
const DEACTIVATION_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Sessions deactivated by one batch at most.
const DEACTIVATION_BATCH: usize = 1000;

impl Registrar {
    /// A registrar writing to `store` and publishing to `catalog`. Starts the
    /// task that deactivates the registrations of ended sessions; it stops
    /// once every clone of the registrar is gone and its work is done.
    pub fn new(
        store: Store,
        catalog: Catalog,
        remap: Arc<dyn RemapPolicy>,
        limits: &LimitsConfig,
    ) -> Self {
        let instance = crate::crypto::random_id("");
        Registrar {
            deactivations: spawn_deactivator(store.clone()),
            store,
            catalog,
            remap: Arc::new(RwLock::new(remap)),
            limits: limits.into(),
            instance: instance[..12].into(),
        }
    }

    /// This hub run's id: the prefix of every [`Registrar::session_key`].
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Replaces the remap policy for declarations from now on.
    pub fn set_remap(&self, remap: Arc<dyn RemapPolicy>) {
        *self.remap.write().unwrap() = remap;
    }

    /// The id stored with the registrations a session activates: unique
    /// across hub processes, not only within this one. The session number
    /// is zero-padded, so the ids of one process order like their numbers
    /// and a late write of an older session never takes a row from a newer
    /// one (see [`Store::declare`]).
    pub fn session_key(&self, connection: &Connection) -> String {
        format!("{}-{:020}", self.instance, connection.session_id)
    }

    /// Registers every declared operation of `connection`: the checks that
    /// need no database first, then one transaction for all of them. A
    /// session that is closing stops between chunks; what is left comes back
    /// in `rejected` with `ABORTED`, and nothing of it reaches the catalog.
    pub async fn register(
        &self,
        connection: &Arc<Connection>,
        name: Option<&str>,
        declared: Vec<Value>,
        mine: &mut SessionRegistrations,
    ) -> RegisterResult {
        if declared.is_empty() {
            return RegisterResult {
                registrations: Vec::new(),
                rejected: Vec::new(),
                warnings: Vec::new(),
            };
        }
        // Declarations are checked against the stored definitions: at
        // start-up, wait until they are loaded.
        self.catalog.wait_loaded().await;
        let mut outcomes: Vec<Option<Result<Registered, Rejected>>> =
            declared.iter().map(|_| None).collect();
        let import_namespaces: Vec<String> = match self.store.list_imports().await {
            Ok(imports) => imports.into_iter().map(|i| i.namespace).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the imports; refusing declarations");
                return RegisterResult {
                    registrations: Vec::new(),
                    rejected: declared
                        .iter()
                        .map(|v| {
                            reject(
                                declared_id(v),
                                ErrorCode::UnknownError,
                                "the hub's database is unavailable; declare again later",
                            )
                        })
                        .collect(),
                    warnings: Vec::new(),
                };
            }
        };

        // 1. Everything that needs no stored row, in order.
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut repeats: Vec<(usize, Declaration)> = Vec::new();
        let mut in_batch: HashMap<String, usize> = HashMap::new();
        let mut warnings = Vec::new();
        for (index, value) in declared.into_iter().enumerate() {
            match self.prepare(connection, name, value, &import_namespaces) {
                Ok(mut step) => {
                    if let Some(message) = step.warning.take() {
                        warnings.push(Warning {
                            operation_id: step.pre_remap_id.clone(),
                            message,
                        });
                    }
                    let id = &step.pre_remap_id;
                    if in_batch.contains_key(id) || mine.contains_key(id) {
                        repeats.push((index, step.declaration));
                    } else {
                        in_batch.insert(id.clone(), index);
                        prepared.push(Prepared { index, ..step });
                    }
                }
                Err(rejected) => outcomes[index] = Some(Err(rejected)),
            }
        }

        // 2. Limits on what one session and one principal hold.
        let held_elsewhere = self.held_by_other_sessions(connection);
        let mut accepted = Vec::with_capacity(prepared.len());
        for p in prepared {
            let (session, principal) = (
                mine.len() + accepted.len(),
                held_elsewhere + mine.len() + accepted.len(),
            );
            let over = if session >= self.limits.per_session {
                Some((
                    "max_operations_per_session",
                    self.limits.per_session,
                    "this session",
                ))
            } else if principal >= self.limits.per_principal {
                Some((
                    "max_operations_per_principal",
                    self.limits.per_principal,
                    "this principal's sessions",
                ))
            } else {
                None
            };
            match over {
                Some((key, limit, holder)) => {
                    outcomes[p.index] = Some(Err(reject(
                        &p.pre_remap_id,
                        ErrorCode::Overloaded,
                        format!(
                            "{} {} not registered: {holder} already hold {limit} operations; \
                             limits.{key} is {limit}",
                            p.pre_remap_id, p.operation_id
                        ),
                    )))
                }
                None => accepted.push(p),
            }
        }

        // 3. One transaction for definitions and registrations.
        if !accepted.is_empty() {
            self.settle(
                connection,
                accepted,
                mine,
                &import_namespaces,
                &mut outcomes,
            )
            .await;
        }

        // 4. Ids declared twice: the first declaration decided.
        for (index, declaration) in repeats {
            let pre_remap_id = declaration.pre_remap_id();
            outcomes[index] = Some(match mine.get(&pre_remap_id) {
                Some((operation_id, registration_id)) => {
                    self.repeat(&declaration, operation_id, registration_id)
                }
                None => {
                    let first = in_batch
                        .get(&pre_remap_id)
                        .and_then(|&i| outcomes[i].clone());
                    match first {
                        Some(Err(rejected)) => Err(rejected),
                        _ => Err(reject(
                            &pre_remap_id,
                            ErrorCode::ValidationError,
                            format!(
                                "operation {pre_remap_id} was declared twice and not registered"
                            ),
                        )),
                    }
                }
            });
        }

        let mut result = RegisterResult {
            registrations: Vec::new(),
            rejected: Vec::new(),
            warnings,
        };
        for outcome in outcomes.into_iter().flatten() {
            match outcome {
                Ok(registered) => result.registrations.push(registered),
                Err(rejected) => result.rejected.push(rejected),
            }
        }
        result
    }

    /// Parses, checks, remaps and grants one declaration.
    fn prepare(
        &self,
        connection: &Connection,
        name: Option<&str>,
        value: Value,
        import_namespaces: &[String],
    ) -> Result<Prepared, Rejected> {
        let declared_id = declared_id(&value);
        let spec: OperationSpec = serde_json::from_value(value).map_err(|e| {
            reject(
                &declared_id,
                ErrorCode::ValidationError,
                format!("invalid operation spec: {e}"),
            )
        })?;
        let pre_remap_id = spec.id();
        let invalid = |message: String| reject(&pre_remap_id, ErrorCode::ValidationError, message);
        names::check_namespace(&spec.namespace).map_err(invalid)?;
        names::check_name(&spec.name).map_err(invalid)?;
        if is_reserved(&spec.namespace) {
            return Err(invalid(format!(
                "operation {pre_remap_id}: the namespace `hub` is reserved for the hub's own operations"
            )));
        }
        let mut validator = None;
        for (field, schema) in [
            ("inputSchema", &spec.input_schema),
            ("outputSchema", &spec.output_schema),
        ] {
            if let Some(schema) = schema {
                let text = self
                    .check_schema_size(&pre_remap_id, field, schema)
                    .map_err(invalid)?;
                let compiled = shared_validator_of(schema, text)
                    .map_err(|e| invalid(format!("{field} of {pre_remap_id}: {e}")))?;
                if field == "inputSchema" {
                    validator = Some(compiled);
                }
            }
        }

        let identity = &connection.identity;
        let remap = self.remap.read().unwrap().clone();
        let (remapped, warning) = remap.remap_noted(
            &RemapProvider {
                kind: identity.kind,
                id: &identity.id,
                name,
                labels: &connection.labels,
            },
            &Declared {
                namespace: &spec.namespace,
                name: &spec.name,
                op_type: spec.op_type,
            },
        );
        // After a failed plugin, the note tells both why it failed and why
        // the built-in remap refused.
        let (namespace, op_name) = remapped.map_err(|reason| {
            let reason = warning.clone().unwrap_or(reason);
            invalid(format!("remap refused {pre_remap_id}: {reason}"))
        })?;
        names::check_namespace(&namespace)
            .and_then(|_| names::check_name(&op_name))
            .map_err(|e| {
                invalid(format!(
                    "remap of {pre_remap_id} produced an invalid id: {e}"
                ))
            })?;
        if is_reserved(&namespace) {
            return Err(invalid(format!(
                "remap of {pre_remap_id} produced an id in the reserved namespace `hub`"
            )));
        }
        let operation_id = format!("{namespace}.{op_name}");

        let entry = self.catalog.get(&operation_id);
        let owned_by_import = import_namespaces
            .iter()
            .any(|ns| in_namespace(&operation_id, ns))
            || entry.as_ref().is_some_and(|e| import_owned(&e.definition));
        let grants = Grants {
            kind: identity.kind,
            patterns: connection.provides.as_deref(),
        };
        if !grants.may_provide(&operation_id, owned_by_import)
            || entry
                .as_ref()
                .is_some_and(|e| !may_see(&e.definition, identity))
        {
            return Err(not_granted(identity, &pre_remap_id, &operation_id));
        }
        if let Some(entry) = &entry {
            let taken = entry.providers.iter().any(|p| {
                p.connection.identity.kind == identity.kind
                    && p.connection.identity.id == identity.id
                    && p.connection.session_id != connection.session_id
            });
            if taken {
                return Err(reject(
                    &pre_remap_id,
                    ErrorCode::AlreadyRegistered,
                    format!("operation {operation_id} is already provided by another live session of {}", identity.id),
                ));
            }
        }

        let declaration = Declaration {
            definition: NewDefinition {
                namespace,
                name: op_name,
                op_type: spec.op_type,
                input_schema: spec.input_schema,
                output_schema: spec.output_schema,
                access_level: spec.access_level,
                required_scopes: spec.required_scopes,
                description: spec.description,
                source: Source::Spoke,
            },
            pre_remap_namespace: spec.namespace,
            pre_remap_name: spec.name,
        };
        Ok(Prepared {
            index: 0,
            pre_remap_id,
            operation_id,
            warning,
            validator,
            declaration,
        })
    }

    /// Checks the size and depth of a declared schema; returns its JSON text.
    fn check_schema_size(&self, id: &str, field: &str, schema: &Value) -> Result<String, String> {
        let text = serde_json::to_string(schema).map_err(|e| format!("{field} of {id}: {e}"))?;
        let bytes = text.len();
        if bytes > self.limits.schema_bytes {
            return Err(format!(
                "{field} of {id} is {bytes} bytes; limits.max_schema_bytes is {}",
                self.limits.schema_bytes
            ));
        }
        let nesting = depth(schema);
        if nesting > self.limits.schema_depth {
            return Err(format!(
                "{field} of {id} nests {nesting} levels deep; limits.max_schema_depth is {}",
                self.limits.schema_depth
            ));
        }
        Ok(text)
    }

    /// Active registrations the principal of `connection` holds in its other
    /// live sessions (the catalog has exactly those).
    fn held_by_other_sessions(&self, connection: &Connection) -> usize {
        self.catalog.held_elsewhere(connection)
    }

    /// A pre-remap id this session already registered: the same
    /// registration, unless the contract now differs.
    fn repeat(
        &self,
        declaration: &Declaration,
        operation_id: &str,
        registration_id: &Arc<str>,
    ) -> Result<Registered, Rejected> {
        let pre_remap_id = declaration.pre_remap_id();
        let spec = &declaration.definition;
        if let Some(entry) = self.catalog.get(operation_id) {
            let stored = &entry.definition.spec;
            let redeclared = NewDefinition {
                op_type: spec.op_type,
                input_schema: spec
                    .input_schema
                    .clone()
                    .or_else(|| stored.input_schema.clone()),
                output_schema: spec
                    .output_schema
                    .clone()
                    .or_else(|| stored.output_schema.clone()),
                access_level: spec.access_level,
                required_scopes: spec.required_scopes.clone(),
                ..stored.clone()
            };
            if let Some(field) = crate::store::contract_difference(stored, &redeclared) {
                return Err(reject(
                    &pre_remap_id,
                    ErrorCode::ValidationError,
                    format!(
                        "operation {operation_id} is already registered in this session with a different {field}"
                    ),
                ));
            }
        }
        Ok(Registered {
            operation_id: operation_id.to_owned(),
            pre_remap_id,
            registration_id: registration_id.to_string(),
        })
    }

    /// Writes `accepted` in one transaction and publishes what it activated,
    /// unless the session started closing meanwhile.
    async fn settle(
        &self,
        connection: &Arc<Connection>,
        accepted: Vec<Prepared>,
        mine: &mut SessionRegistrations,
        import_namespaces: &[String],
        outcomes: &mut [Option<Result<Registered, Rejected>>],
    ) {
        let identity = &connection.identity;
        let session = self.session_key(connection);
        let metadata = serde_json::json!({ "sessionId": connection.session_id.to_string() });
        let declarer = Declarer {
            kind: identity.kind,
            id: &identity.id,
            session_id: &session,
            metadata: &metadata,
        };
        let grants = Grants {
            kind: identity.kind,
            patterns: connection.provides.as_deref(),
        };
        let gate = |declaration: &Declaration, stored: Option<&Definition>| -> Result<(), ()> {
            let id = declaration.definition.id();
            let owned_by_import = import_namespaces.iter().any(|ns| in_namespace(&id, ns))
                || stored.is_some_and(import_owned);
            let visible = stored.is_none_or(|d| may_see(d, identity));
            if grants.may_provide(&id, owned_by_import) && visible {
                Ok(())
            } else {
                Err(())
            }
        };
        let keep_going = || !connection.is_closing();
        let (declarations, accepted): (Vec<Declaration>, Vec<Accepted>) = accepted
            .into_iter()
            .map(|p| {
                (
                    p.declaration,
                    Accepted {
                        index: p.index,
                        pre_remap_id: p.pre_remap_id,
                        operation_id: p.operation_id,
                        validator: p.validator,
                    },
                )
            })
            .unzip();
        let settled = self
            .store
            .declare(&declarer, &declarations, &gate, &keep_going)
            .await;
        let settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                tracing::warn!(error = %e, session = connection.session_id, "registration failed in the database");
                for p in &accepted {
                    outcomes[p.index] = Some(Err(reject(
                        &p.pre_remap_id,
                        ErrorCode::UnknownError,
                        format!("operation {} could not be stored: {e}", p.operation_id),
                    )));
                }
                return;
            }
        };

        let mut published: Vec<(usize, Registered)> = Vec::new();
        let mut added: Vec<Arc<str>> = Vec::new();
        let mut batch: Vec<Publish> = Vec::new();
        let mut pending: Vec<(usize, Registered, Arc<str>)> = Vec::new();
        let closing = connection.is_closing();
        for (p, outcome) in accepted.into_iter().zip(settled) {
            let declared = match outcome {
                Ok(declared) if !closing => declared,
                Ok(_) | Err(Refused::Stopped) => {
                    outcomes[p.index] = Some(Err(reject(
                        &p.pre_remap_id,
                        ErrorCode::Aborted,
                        format!(
                            "the session is closing; {} was not registered",
                            p.pre_remap_id
                        ),
                    )));
                    continue;
                }
                Err(Refused::Gate(())) => {
                    outcomes[p.index] =
                        Some(Err(not_granted(identity, &p.pre_remap_id, &p.operation_id)));
                    continue;
                }
                Err(Refused::Conflict(field)) => {
                    outcomes[p.index] = Some(Err(reject(
                        &p.pre_remap_id,
                        ErrorCode::ValidationError,
                        format!(
                            "operation {:?} is already defined with a different {field}",
                            p.operation_id
                        ),
                    )));
                    continue;
                }
                Err(Refused::AlreadyActive) => {
                    outcomes[p.index] = Some(Err(reject(
                        &p.pre_remap_id,
                        ErrorCode::AlreadyRegistered,
                        format!(
                            "operation {} is already actively provided by {}",
                            p.operation_id, identity.id
                        ),
                    )));
                    continue;
                }
            };
            let definition =
                self.definition_update(declared.definition, declared.changed, p.validator);
            let registration_id: Arc<str> = declared.registration_id.as_str().into();
            batch.push(Publish {
                operation_id: p.operation_id.clone(),
                definition,
                provider: Provider::new(
                    registration_id.clone(),
                    p.pre_remap_id.as_str().into(),
                    connection.clone(),
                ),
            });
            pending.push((
                p.index,
                Registered {
                    operation_id: p.operation_id,
                    pre_remap_id: p.pre_remap_id,
                    registration_id: registration_id.to_string(),
                },
                registration_id,
            ));
        }
        // One batch for the catalog: lookups wait for a chunk at most.
        let landed = self.catalog.publish(batch);
        for ((index, registered, registration_id), landed) in pending.into_iter().zip(landed) {
            if landed {
                added.push(registration_id.clone());
                mine.insert(
                    registered.pre_remap_id.clone(),
                    (registered.operation_id.clone(), registration_id),
                );
            }
            published.push((index, registered));
        }

        // The session may have closed while this ran: what it activated must
        // neither stay in the catalog nor stay active in the database.
        if closing || connection.is_closing() {
            if !added.is_empty() {
                self.catalog
                    .remove_session(connection.session_id, Some(&added));
                mine.retain(|_, (_, reg)| !added.contains(reg));
            }
            self.deactivate_later(session);
            for (index, registered) in published {
                outcomes[index] = Some(Err(reject(
                    &registered.pre_remap_id,
                    ErrorCode::Aborted,
                    format!(
                        "the session is closing; {} was not registered",
                        registered.pre_remap_id
                    ),
                )));
            }
            return;
        }
        for (index, registered) in published {
            outcomes[index] = Some(Ok(registered));
        }
    }

    /// What the catalog needs of `definition`: `None` when it holds it
    /// already, unchanged; otherwise the definition with its validator
    /// (the declared one, or the current one when the schema is the same;
    /// `None` compiles on first use).
    fn definition_update(
        &self,
        definition: Definition,
        changed: bool,
        declared: Option<Arc<jsonschema::Validator>>,
    ) -> Option<(Definition, Option<Arc<jsonschema::Validator>>)> {
        let current = self.catalog.get(&definition.id);
        if !changed
            && current
                .as_ref()
                .is_some_and(|e| *e.definition == definition)
        {
            return None;
        }
        let stored = definition.spec.input_schema.as_ref();
        let validator = match (stored, declared) {
            (None, _) => None,
            (Some(_), Some(declared)) => Some(declared),
            (Some(schema), None) => current
                .as_ref()
                .filter(|e| e.definition.spec.input_schema.as_ref() == Some(schema))
                .and_then(|e| e.validator().cloned()),
        };
        Some((definition, validator))
    }

    /// Makes the named registrations of a session inactive (`unregister`).
    /// Ids the session never registered are ignored.
    pub async fn unregister(
        &self,
        connection: &Connection,
        pre_remap_ids: &[String],
        mine: &mut SessionRegistrations,
    ) -> Result<(), StoreError> {
        let removed: Vec<Arc<str>> = pre_remap_ids
            .iter()
            .filter_map(|id| mine.remove(id).map(|(_, reg)| reg))
            .collect();
        if removed.is_empty() {
            return Ok(());
        }
        self.catalog
            .remove_session(connection.session_id, Some(&removed));
        let ids: Vec<String> = removed.iter().map(|r| r.to_string()).collect();
        self.store
            .deactivate_registrations(connection.identity.kind, &connection.identity.id, &ids)
            .await?;
        Ok(())
    }

    /// A session ended (its providers have already left the catalog): the
    /// registrations it activated and no newer session has re-activated
    /// become inactive. Works the same for ended and superseded sessions.
    ///
    /// Sessions ending together are deactivated together, in one statement
    /// per batch, by a background task. This returns once the first attempt
    /// for this session has finished; an error means that attempt failed and
    /// the task keeps retrying with backoff.
    pub async fn session_ended(
        &self,
        connection: &Connection,
        _mine: &SessionRegistrations,
    ) -> Result<(), StoreError> {
        let (done, first_attempt) = oneshot::channel();
        let queued = self.deactivations.send(Deactivation {
            session: self.session_key(connection),
            done: Some(done),
        });
        if queued.is_err() {
            return Ok(());
        }
        match first_attempt.await {
            Ok(Err(message)) => Err(StoreError::Invalid(format!(
                "the registrations of session {} are not inactive yet ({message}); retrying",
                connection.session_id
            ))),
            _ => Ok(()),
        }
    }

    /// Queues the deactivation of a session's registrations without waiting.
    fn deactivate_later(&self, session: String) {
        let _ = self.deactivations.send(Deactivation {
            session,
            done: None,
        });
    }
}

/// A prepared declaration on its way through [`Registrar::settle`], its
/// declaration handed to the store.
struct Accepted {
    index: usize,
    pre_remap_id: String,
    operation_id: String,
    validator: Option<Arc<jsonschema::Validator>>,
}

/// Runs deactivations of ended sessions: waits for one, takes every other
/// already queued (up to [`DEACTIVATION_BATCH`]), and marks them inactive in
/// one statement per chunk. A failure is retried with exponential backoff,
/// together with whatever arrived meanwhile, up to
/// [`DEACTIVATION_ATTEMPTS`] times; a closed pool (the hub stopped, and
/// start-up deactivates everything anyway) ends the task.
fn spawn_deactivator(store: Store) -> mpsc::UnboundedSender<Deactivation> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Deactivation>();
    tokio::spawn(async move {
        let mut batch: Vec<String> = Vec::new();
        let mut waiting: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
        let mut attempts = 0;
        let mut backoff = DEACTIVATION_BACKOFF;
        loop {
            if batch.is_empty() {
                let Some(first) = rx.recv().await else {
                    return;
                };
                batch.push(first.session);
                waiting.extend(first.done);
            }
            while batch.len() < DEACTIVATION_BATCH {
                let Ok(next) = rx.try_recv() else {
                    break;
                };
                batch.push(next.session);
                waiting.extend(next.done);
            }
            match store.deactivate_sessions(&batch).await {
                Ok(changed) => {
                    tracing::debug!(
                        sessions = batch.len(),
                        changed,
                        "registrations of ended sessions inactive"
                    );
                    for done in waiting.drain(..) {
                        let _ = done.send(Ok(()));
                    }
                    batch.clear();
                    attempts = 0;
                    backoff = DEACTIVATION_BACKOFF;
                }
                Err(StoreError::Database(sqlx::Error::PoolClosed)) => {
                    tracing::debug!(
                        sessions = batch.len(),
                        "store closed; leaving deactivation to the next start-up"
                    );
                    for done in waiting.drain(..) {
                        let _ = done.send(Ok(()));
                    }
                    return;
                }
                Err(e) => {
                    attempts += 1;
                    for done in waiting.drain(..) {
                        let _ = done.send(Err(e.to_string()));
                    }
                    if attempts >= DEACTIVATION_ATTEMPTS {
                        tracing::error!(error = %e, sessions = batch.len(), attempts, "giving up marking the registrations of ended sessions inactive; the next start-up will");
                        batch.clear();
                        attempts = 0;
                        backoff = DEACTIVATION_BACKOFF;
                        continue;
                    }
                    tracing::warn!(error = %e, sessions = batch.len(), attempts, retry_in_ms = backoff.as_millis() as u64, "could not mark the registrations of ended sessions inactive; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(DEACTIVATION_BACKOFF_MAX);
                }
            }
        }
    });
    tx
}

fn is_reserved(namespace: &str) -> bool {
    namespace == "hub" || namespace.starts_with("hub.")
}

/// The id a raw declaration names, as far as it can be read, for `rejected`.
pub fn declared_id(value: &Value) -> String {
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("?");
    format!("{}.{}", field("namespace"), field("name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_patterns_match_any_characters_at_a_star() {
        assert!(pattern_matches("chat.*", "chat.complete"));
        assert!(pattern_matches("chat.*", "chat.a.b"));
        assert!(!pattern_matches("chat.*", "chatter.x"));
        assert!(!pattern_matches("chat.*", "chat"));
        assert!(pattern_matches("*", "anything.at.all"));
        assert!(pattern_matches("dev.*.read", "dev.box.fs.read"));
        assert!(!pattern_matches("dev.*.read", "dev.box.fs.write"));
        assert!(pattern_matches("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaab"));
        assert!(!pattern_matches("a*a*a*a*a*a*b", &"a".repeat(5000)));
    }

    #[test]
    fn default_grants_differ_by_kind_and_imports_need_a_naming_grant() {
        let spoke = Grants {
            kind: PrincipalKind::Spoke,
            patterns: None,
        };
        let client = Grants {
            kind: PrincipalKind::Client,
            patterns: None,
        };
        assert!(spoke.may_provide("chat.complete", false));
        assert!(!spoke.may_provide("pets.getPet", true));
        assert!(!client.may_provide("chat.complete", false));
        let all = ["*".to_owned()];
        let catch_all = Grants {
            kind: PrincipalKind::Client,
            patterns: Some(&all),
        };
        assert!(catch_all.may_provide("chat.complete", false));
        assert!(!catch_all.may_provide("pets.getPet", true));
        let named = ["pets.*".to_owned()];
        let pets = Grants {
            kind: PrincipalKind::Spoke,
            patterns: Some(&named),
        };
        assert!(pets.may_provide("pets.getPet", true));
        assert!(!pets.may_provide("chat.complete", false));
    }

    #[test]
    fn schema_depth_counts_nested_arrays_and_objects() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({"type": "string"})), 1);
        assert_eq!(
            depth(&serde_json::json!({"properties": {"a": {"type": "string"}}})),
            3
        );
    }

    #[test]
    fn grant_patterns_are_checked() {
        assert!(check_grant_pattern("chat.*").is_ok());
        assert!(check_grant_pattern("").is_err());
        assert!(check_grant_pattern("chat complete").is_err());
    }
}
