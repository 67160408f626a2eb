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
use crate::store::{NewDefinition, Registration, Source, Store};

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
            "The operations the caller may call, each with its active registration count, \
             a page at a time: pass the answer's `next` as `after` for the next page.",
            Some(json!({
                "type": ["object", "null"],
                "properties": {
                    "limit": {"type": "integer", "minimum": 1},
                    "after": {"type": "string"}
                }
            })),
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

/// Stored registrations as `hub.operations.get` shows them.
pub fn describe_registrations(registrations: &[Registration]) -> Value {
    registrations
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
        .collect()
}

/// Which page of a listing: the definitions after the id `after`, at most
/// `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Definitions on the page; `None` is `limits.max_list_page`.
    pub limit: Option<usize>,
}

impl PageRequest {
    /// Reads `{"limit"?, "after"?}` (`null` is the first page).
    pub fn from_input(input: &Value) -> Result<PageRequest, CallError> {
        let invalid = |message: &str| CallError::new(ErrorCode::ValidationError, message);
        if input.is_null() {
            return Ok(PageRequest::default());
        }
        let limit = match input.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| invalid("limit must be a positive integer"))?,
            ),
        };
        let after = match input.get("after") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("after must be a string (the `next` of a page)")),
        };
        Ok(PageRequest { after, limit })
    }

    /// The page size, checked against `max` (`limits.max_list_page`).
    fn size(&self, max: usize) -> Result<usize, CallError> {
        match self.limit {
            None => Ok(max.max(1)),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(CallError::new(
                ErrorCode::ValidationError,
                format!("limit {n} is out of range: pages hold 1 to {max} definitions (limits.max_list_page)"),
            )),
        }
    }
}

/// One page of the definitions `identity` may see, ordered by id:
/// `{"operations": [...], "next": "<id>"}`, without `next` on the last page.
pub fn listing(
    catalog: &Catalog,
    identity: Option<&Identity>,
    page: &PageRequest,
    max_page: usize,
) -> Result<Value, CallError> {
    page_of(catalog, page, max_page, |e| {
        matches!(check_access(e, identity), Access::Allowed)
    })
}

/// One page of the definitions `keep` accepts, as [`listing`] shows it.
pub fn page_of(
    catalog: &Catalog,
    page: &PageRequest,
    max_page: usize,
    keep: impl Fn(&Entry) -> bool,
) -> Result<Value, CallError> {
    let size = page.size(max_page)?;
    let found = catalog.page(page.after.as_deref(), size, keep);
    let operations: Vec<Value> = found.entries.iter().map(|e| describe(e)).collect();
    let mut out = json!({ "operations": operations });
    if let Some(next) = found.next {
        out["next"] = Value::String(next.to_string());
    }
    Ok(out)
}

/// Answers `hub.operations.list`.
fn list(
    catalog: &Catalog,
    input: &Value,
    caller: Option<&Identity>,
    max_page: usize,
    reply: Reply,
) {
    match PageRequest::from_input(input).and_then(|page| listing(catalog, caller, &page, max_page))
    {
        Ok(data) => reply.data(LIST, data),
        Err(e) => reply.error(e),
    }
}

/// The hub's implementation of the built-ins.
pub struct HubBuiltins {
    /// Read for listings.
    pub catalog: Catalog,
    /// Read for registrations with their status.
    pub store: Store,
    /// `limits.max_list_page`.
    pub max_page: usize,
}

impl Builtins for HubBuiltins {
    fn run(&self, operation_id: &str, input: Value, caller: Option<Identity>, reply: Reply) {
        match operation_id {
            LIST if self.catalog.is_loading() => {
                // At start-up, list once every stored definition is in.
                let catalog = self.catalog.clone();
                let max_page = self.max_page;
                tokio::spawn(async move {
                    catalog.wait_loaded().await;
                    list(&catalog, &input, caller.as_ref(), max_page, reply);
                });
            }
            LIST => list(&self.catalog, &input, caller.as_ref(), self.max_page, reply),
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
                            out["registrations"] = describe_registrations(&registrations);
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
