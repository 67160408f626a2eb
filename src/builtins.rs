//! The operations the hub serves itself (`hub.operations.list`,
//! `hub.operations.get`) and the listing they share with
//! `GET /v1/operations`.
//!
//! They go through the normal call path (lookup, access, validation); only
//! the last step differs: the hub answers instead of a provider.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::catalog::{Catalog, Entry};
use crate::dispatch::{check_access, Access, Builtins, CallError, Reply};
use crate::protocol::{AccessLevel, ErrorCode, Identity, OperationType, PrincipalKind};
use crate::store::{NewDefinition, Registration, RegistrationStatus, Source, Store};

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
             a page at a time: pass the answer's `next` as `after` for the next page. \
             `namespace` keeps the operations of that namespace and those below it.",
            Some(json!({
                "type": ["object", "null"],
                "properties": {
                    "limit": {"type": "integer", "minimum": 1},
                    "after": {"type": "string"},
                    "namespace": {"type": "string"}
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

/// One definition as listings show it: `GET /v1/operations`,
/// `GET /v1/admin/operations` and `hub.operations.list`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationView<'a> {
    /// `namespace.name`, the id callers use.
    pub id: &'a str,
    /// Everything before the last `.` of the id.
    pub namespace: &'a str,
    /// The last segment of the id.
    pub name: &'a str,
    /// `query`, `mutation` or `subscription`.
    #[serde(rename = "type")]
    pub op_type: OperationType,
    /// What it does; `null` when not declared.
    pub description: Option<&'a str>,
    /// Who may call it.
    pub access_level: AccessLevel,
    /// Scopes a `scoped` operation requires.
    pub required_scopes: &'a [String],
    /// Where the definition came from.
    #[schema(value_type = Source)]
    pub source: &'static str,
    /// JSON Schema of the input; `null` when not declared.
    #[schema(value_type = Value)]
    pub input_schema: Option<&'a Value>,
    /// JSON Schema of `output.data`; `null` when not declared.
    #[schema(value_type = Value)]
    pub output_schema: Option<&'a Value>,
    /// Registrations serving it now (built-ins have none).
    pub active_registrations: usize,
}

/// One page of a listing, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationPage<'a> {
    /// The definitions on this page.
    pub operations: Vec<OperationView<'a>>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = String)]
    pub next: Option<String>,
}

/// One stored registration, active or not, as `hub.operations.get` and
/// `GET /v1/admin/operations/{operationId}` show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationView<'a> {
    /// Random id (`reg_…`).
    pub registration_id: &'a str,
    /// `spoke` or `client`.
    pub provider_type: PrincipalKind,
    /// The provider's id.
    pub provider_id: &'a str,
    /// Whether it serves calls now.
    #[schema(value_type = RegistrationStatus)]
    pub status: &'static str,
    /// The id the provider declared, before the remap.
    pub pre_remap_id: String,
    /// When it was last activated.
    pub registered_at: DateTime<Utc>,
}

/// One definition with every stored registration, active or not: the
/// answer of `hub.operations.get`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationDetail<'a> {
    /// The definition, as listings show it.
    #[serde(flatten)]
    pub operation: OperationView<'a>,
    /// Every stored registration of it.
    pub registrations: Vec<RegistrationView<'a>>,
}

/// One catalog entry as listings show it.
pub fn view(entry: &Entry) -> OperationView<'_> {
    let d = &entry.definition;
    OperationView {
        id: &d.id,
        namespace: &d.spec.namespace,
        name: &d.spec.name,
        op_type: d.spec.op_type,
        description: d.spec.description.as_deref(),
        access_level: d.spec.access_level,
        required_scopes: &d.spec.required_scopes,
        source: d.spec.source.as_str(),
        input_schema: d.spec.input_schema.as_ref(),
        output_schema: d.spec.output_schema.as_ref(),
        active_registrations: entry.providers.len(),
    }
}

/// One catalog entry as listings show it, as JSON.
pub fn describe(entry: &Entry) -> Value {
    serde_json::to_value(view(entry)).expect("a view serializes")
}

/// Stored registrations as `hub.operations.get` shows them.
pub fn registration_views(registrations: &[Registration]) -> Vec<RegistrationView<'_>> {
    registrations
        .iter()
        .map(|r| RegistrationView {
            registration_id: &r.id,
            provider_type: r.provider_type,
            provider_id: &r.provider_id,
            status: r.status.as_str(),
            pre_remap_id: r.pre_remap_id(),
            registered_at: r.registered_at,
        })
        .collect()
}

/// Stored registrations as `hub.operations.get` shows them, as JSON.
pub fn describe_registrations(registrations: &[Registration]) -> Value {
    serde_json::to_value(registration_views(registrations)).expect("a view serializes")
}

/// Which page of a listing: the definitions after the id `after`, at most
/// `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Definitions on the page; `None` is `limits.max_list_page`.
    pub limit: Option<usize>,
    /// Only the definitions of this namespace and the namespaces below it
    /// (`files` keeps `files.read` and `files.dir.list`, not `filesystem.x`).
    pub namespace: Option<String>,
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
        let namespace = match input.get("namespace") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("namespace must be a string")),
        };
        Ok(PageRequest {
            after,
            limit,
            namespace,
        })
    }

    /// Whether `entry` is in the requested namespace (always, without one).
    fn in_namespace(&self, entry: &Entry) -> bool {
        self.namespace.as_deref().is_none_or(|ns| {
            let id = entry.definition.id.as_str();
            id.strip_prefix(ns)
                .is_some_and(|rest| rest.starts_with('.'))
        })
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
    // A namespace's ids sort together, after the namespace itself.
    let after = match (&page.after, &page.namespace) {
        (Some(after), Some(ns)) if after.as_str() < ns.as_str() => Some(ns.as_str()),
        (None, Some(ns)) => Some(ns.as_str()),
        (after, _) => after.as_deref(),
    };
    let found = catalog.page(after, size, |e| page.in_namespace(e) && keep(e));
    let page = OperationPage {
        operations: found.entries.iter().map(|e| view(e)).collect(),
        next: found.next.map(|next| next.to_string()),
    };
    Ok(serde_json::to_value(page).expect("a page serializes"))
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
                            let detail = OperationDetail {
                                operation: view(&entry),
                                registrations: registration_views(&registrations),
                            };
                            let out = serde_json::to_value(detail).expect("a detail serializes");
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
