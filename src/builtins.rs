//! The operations the hub serves itself (`hub.operations.list`,
//! `hub.operations.get`) and the listing they share with
//! `GET /v1/operations`.
//!
//! They go through the normal call path (lookup, access, validation); only
//! the last step differs: the hub answers instead of a provider.

use serde_json::{json, Value};

use crate::catalog::{Catalog, Entry};
use crate::dispatch::{check_access, Access, Builtins, CallError, Reply};
use crate::protocol::{AccessLevel, ErrorCode, Identity, OperationType};
use crate::store::{NewDefinition, Source, Store};

/// `hub.operations.list`
pub const LIST: &str = "hub.operations.list";
/// `hub.operations.get`
pub const GET: &str = "hub.operations.get";

/// The definitions of the built-in operations.
pub fn definitions() -> Vec<NewDefinition> {
    let def = |name: &str, description: &str, input_schema: Option<Value>| NewDefinition {
        namespace: "hub.operations".to_owned(),
        name: name.to_owned(),
        op_type: OperationType::Query,
        input_schema,
        output_schema: None,
        access_level: AccessLevel::Authenticated,
        required_scopes: Vec::new(),
        description: Some(description.to_owned()),
        source: Source::Builtin,
    };
    vec![
        def(
            "list",
            "The operations the caller may call, each with its active registration count.",
            None,
        ),
        def(
            "get",
            "One operation: its definition, schemas and registrations with their status.",
            Some(json!({
                "type": "object",
                "required": ["operationId"],
                "properties": {"operationId": {"type": "string"}}
            })),
        ),
    ]
}

/// One catalog entry as listings show it.
pub fn describe(entry: &Entry) -> Value {
    let d = &entry.definition;
    json!({
        "id": d.id,
        "namespace": d.spec.namespace,
        "name": d.spec.name,
        "type": d.spec.op_type,
        "description": d.spec.description,
        "accessLevel": d.spec.access_level,
        "requiredScopes": d.spec.required_scopes,
        "source": d.spec.source.as_str(),
        "inputSchema": d.spec.input_schema,
        "outputSchema": d.spec.output_schema,
        "activeRegistrations": entry.providers.len(),
    })
}

/// Every definition `identity` may see.
pub fn listing(catalog: &Catalog, identity: Option<&Identity>) -> Value {
    let operations: Vec<Value> = catalog
        .list()
        .iter()
        .filter(|e| matches!(check_access(e, identity), Access::Allowed))
        .map(|e| describe(e))
        .collect();
    json!({ "operations": operations })
}

/// The hub's implementation of the built-ins.
pub struct HubBuiltins {
    /// Read for listings.
    pub catalog: Catalog,
    /// Read for registrations with their status.
    pub store: Store,
}

impl Builtins for HubBuiltins {
    fn run(&self, operation_id: &str, input: Value, caller: Option<Identity>, reply: Reply) {
        match operation_id {
            LIST => reply.data(LIST, listing(&self.catalog, caller.as_ref())),
            GET => {
                let target = input["operationId"].as_str().unwrap_or_default().to_owned();
                let not_found = || {
                    CallError::new(
                        ErrorCode::OperationNotFound,
                        format!("operation {target} not found"),
                    )
                };
                let Some(entry) = self
                    .catalog
                    .get(&target)
                    .filter(|e| matches!(check_access(e, caller.as_ref()), Access::Allowed))
                else {
                    return reply.error(not_found());
                };
                let store = self.store.clone();
                tokio::spawn(async move {
                    match store.registrations_of_operation(&target).await {
                        Ok(registrations) => {
                            let mut out = describe(&entry);
                            out["registrations"] = registrations
                                .iter()
                                .map(|r| {
                                    json!({
                                        "registrationId": r.id,
                                        "providerType": r.provider_type,
                                        "providerId": r.provider_id,
                                        "status": r.status.as_str(),
                                        "preRemapId": r.pre_remap_id(),
                                        "registeredAt": r.registered_at,
                                    })
                                })
                                .collect();
                            reply.data(GET, out);
                        }
                        Err(e) => {
                            reply.error(CallError::new(ErrorCode::UnknownError, e.to_string()))
                        }
                    }
                });
            }
            other => reply.error(CallError::new(
                ErrorCode::OperationNotFound,
                format!("operation {other} not found"),
            )),
        }
    }
}
