//! Turning the operations a peer declares into definitions and active
//! registrations: validate each spec, remap its id, create or match the
//! definition, activate the registration, and publish it in the catalog.
//!
//! One declaration failing never affects the others: each ends up either in
//! `registrations` or in `rejected` with a code and a reason.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::catalog::{compile_schema, Catalog, Provider};
use crate::connection::Connection;
use crate::names;
use crate::policy::{Declared, RemapPolicy, RemapProvider};
use crate::protocol::{ErrorCode, OperationSpec, RegisterResult, Registered, Rejected};
use crate::store::{NewDefinition, NewRegistration, Source, Store, StoreError};

/// What one session has registered: pre-remap id → (post-remap id, registration id).
pub type SessionRegistrations = HashMap<String, (String, Arc<str>)>;

/// Handle that registers and unregisters operations; cloning shares it.
#[derive(Clone)]
pub struct Registrar {
    store: Store,
    catalog: Catalog,
    remap: Arc<RwLock<Arc<dyn RemapPolicy>>>,
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

impl Registrar {
    /// A registrar writing to `store` and publishing to `catalog`.
    pub fn new(store: Store, catalog: Catalog, remap: Arc<dyn RemapPolicy>) -> Self {
        Registrar {
            store,
            catalog,
            remap: Arc::new(RwLock::new(remap)),
        }
    }

    /// Replaces the remap policy for declarations from now on.
    pub fn set_remap(&self, remap: Arc<dyn RemapPolicy>) {
        *self.remap.write().unwrap() = remap;
    }

    /// Registers every declared operation of `connection`.
    pub async fn register(
        &self,
        connection: &Arc<Connection>,
        name: Option<&str>,
        declared: Vec<Value>,
        mine: &mut SessionRegistrations,
    ) -> RegisterResult {
        let mut result = RegisterResult {
            registrations: Vec::new(),
            rejected: Vec::new(),
        };
        for value in declared {
            match self.register_one(connection, name, value, mine).await {
                Ok(registered) => result.registrations.push(registered),
                Err(rejected) => result.rejected.push(rejected),
            }
        }
        result
    }

    async fn register_one(
        &self,
        connection: &Arc<Connection>,
        name: Option<&str>,
        value: Value,
        mine: &mut SessionRegistrations,
    ) -> Result<Registered, Rejected> {
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
        let validator = match &spec.input_schema {
            Some(schema) => {
                Some(Arc::new(compile_schema(schema).map_err(|e| {
                    invalid(format!("inputSchema of {pre_remap_id}: {e}"))
                })?))
            }
            None => None,
        };
        if let Some(schema) = &spec.output_schema {
            compile_schema(schema)
                .map_err(|e| invalid(format!("outputSchema of {pre_remap_id}: {e}")))?;
        }
        if let Some((operation_id, registration_id)) = mine.get(&pre_remap_id) {
            if let Some(entry) = self.catalog.get(operation_id) {
                let stored = &entry.definition.spec;
                let redeclared = NewDefinition {
                    op_type: spec.op_type,
                    input_schema: spec.input_schema.clone(),
                    output_schema: spec.output_schema.clone(),
                    access_level: spec.access_level,
                    required_scopes: spec.required_scopes.clone(),
                    ..stored.clone()
                };
                if let Some(field) = crate::store::contract_difference(stored, &redeclared) {
                    return Err(invalid(format!(
                        "operation {operation_id} is already registered in this session with a different {field}"
                    )));
                }
            }
            return Ok(Registered {
                operation_id: operation_id.clone(),
                pre_remap_id,
                registration_id: registration_id.to_string(),
            });
        }

        let identity = &connection.identity;
        let remap = self.remap.read().unwrap().clone();
        let (namespace, op_name) = remap
            .remap(
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
            )
            .map_err(|reason| invalid(format!("remap refused {pre_remap_id}: {reason}")))?;
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

        if let Some(entry) = self.catalog.get(&operation_id) {
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

        let new = NewDefinition {
            namespace: namespace.clone(),
            name: op_name.clone(),
            op_type: spec.op_type,
            input_schema: spec.input_schema.clone(),
            output_schema: spec.output_schema.clone(),
            access_level: spec.access_level,
            required_scopes: spec.required_scopes.clone(),
            description: spec.description.clone(),
            source: Source::Spoke,
        };
        let (definition, _) = self
            .store
            .define_operation(&new)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => invalid(e.to_string()),
                other => reject(&pre_remap_id, ErrorCode::UnknownError, other.to_string()),
            })?;
        let registration = self
            .store
            .activate_registration(&NewRegistration {
                operation_id: operation_id.clone(),
                provider_type: identity.kind,
                provider_id: identity.id.clone(),
                pre_remap_namespace: spec.namespace.clone(),
                pre_remap_name: spec.name.clone(),
                metadata: serde_json::json!({ "sessionId": connection.session_id.to_string() }),
            })
            .await
            .map_err(|e| {
                if e.is_unique_violation() {
                    reject(
                        &pre_remap_id,
                        ErrorCode::AlreadyRegistered,
                        format!(
                            "operation {operation_id} is already actively provided by {}",
                            identity.id
                        ),
                    )
                } else {
                    reject(&pre_remap_id, ErrorCode::UnknownError, e.to_string())
                }
            })?;
        let registration_id: Arc<str> = registration.id.as_str().into();
        self.catalog.put_compiled(definition, validator);
        self.catalog.add_provider(
            &operation_id,
            Provider {
                registration_id: registration_id.clone(),
                pre_remap_id: pre_remap_id.as_str().into(),
                connection: connection.clone(),
                in_flight: Arc::new(AtomicU32::new(0)),
            },
        );
        mine.insert(
            pre_remap_id.clone(),
            (operation_id.clone(), registration_id.clone()),
        );
        Ok(Registered {
            operation_id,
            pre_remap_id,
            registration_id: registration_id.to_string(),
        })
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

    /// A session ended (its providers have already left the catalog): unless
    /// a newer session of the same spoke took over, its registrations become
    /// inactive.
    pub async fn session_ended(
        &self,
        connection: &Connection,
        mine: &SessionRegistrations,
    ) -> Result<(), StoreError> {
        if connection.is_superseded() || mine.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = mine.values().map(|(_, reg)| reg.to_string()).collect();
        self.store
            .deactivate_registrations(connection.identity.kind, &connection.identity.id, &ids)
            .await?;
        Ok(())
    }
}

fn is_reserved(namespace: &str) -> bool {
    namespace == "hub" || namespace.starts_with("hub.")
}

/// The id a raw declaration names, as far as it can be read, for `rejected`.
pub fn declared_id(value: &Value) -> String {
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("?");
    format!("{}.{}", field("namespace"), field("name"))
}
