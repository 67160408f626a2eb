//! The `operations` table: definitions, one per post-remap id, shared by all
//! providers of that id.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{now, on_pool, parse_text, touched, Result, Store, StoreError};
use crate::protocol::{text_enum, AccessLevel, OperationType, PrincipalKind};

/// Where a definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Source {
    /// Declared by a connected provider.
    Spoke,
    /// Imported from an OpenAPI document.
    Openapi,
    /// Imported from an MCP server's tools.
    Mcp,
    /// Served by the hub itself.
    Builtin,
}

text_enum!(Source { Spoke => "spoke", Openapi => "openapi", Mcp => "mcp", Builtin => "builtin" });

/// What kind of principal owns a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// A spoke, by its id.
    Spoke,
    /// A client, by its id.
    Client,
    /// An import, by its name.
    Import,
}

text_enum!(OwnerKind { Spoke => "spoke", Client => "client", Import => "import" });

/// Whose declaration (or which import) created a definition. The owner alone
/// changes its description, access level and required scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Spoke, client or import.
    pub kind: OwnerKind,
    /// The principal's id or the import's name.
    pub id: String,
}

impl Owner {
    /// The owner that is this provider.
    pub fn provider(kind: PrincipalKind, id: &str) -> Owner {
        let kind = match kind {
            PrincipalKind::Spoke => OwnerKind::Spoke,
            PrincipalKind::Client => OwnerKind::Client,
        };
        Owner {
            kind,
            id: id.to_owned(),
        }
    }

    /// The owner that is import `name`.
    pub fn import(name: &str) -> Owner {
        Owner {
            kind: OwnerKind::Import,
            id: name.to_owned(),
        }
    }
}

/// A definition to create or to match against the stored one.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDefinition {
    /// Post-remap namespace.
    pub namespace: String,
    /// Name (the last segment of the id).
    pub name: String,
    /// Query, mutation or subscription.
    pub op_type: OperationType,
    /// JSON Schema of the input; `None` accepts anything.
    pub input_schema: Option<Value>,
    /// JSON Schema of `output.data`.
    pub output_schema: Option<Value>,
    /// Who may call it.
    pub access_level: AccessLevel,
    /// Scopes required with [`AccessLevel::Scoped`].
    pub required_scopes: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// Where it came from.
    pub source: Source,
}

impl NewDefinition {
    /// The operation id, `namespace.name`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `namespace.name`, the id callers use.
    pub id: String,
    /// Everything declared.
    pub spec: NewDefinition,
    /// Who created it; `None` for built-ins and for definitions older than
    /// ownership that no provider has claimed yet.
    pub owner: Option<Owner>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct DefinitionRow {
    id: String,
    namespace: String,
    name: String,
    #[sqlx(rename = "type")]
    op_type: String,
    input_schema: Option<Json<Value>>,
    output_schema: Option<Json<Value>>,
    access_level: String,
    required_scopes: Json<Vec<String>>,
    description: Option<String>,
    source: String,
    owner_kind: Option<String>,
    owner_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DefinitionRow> for Definition {
    type Error = StoreError;
    fn try_from(r: DefinitionRow) -> Result<Self> {
        Ok(Definition {
            id: r.id,
            spec: NewDefinition {
                namespace: r.namespace,
                name: r.name,
                op_type: parse_text(&r.op_type)?,
                input_schema: r.input_schema.map(|j| j.0),
                output_schema: r.output_schema.map(|j| j.0),
                access_level: parse_text(&r.access_level)?,
                required_scopes: r.required_scopes.0,
                description: r.description,
                source: parse_text(&r.source)?,
            },
            owner: match (r.owner_kind, r.owner_id) {
                (Some(kind), Some(id)) => Some(Owner {
                    kind: parse_text(&kind)?,
                    id,
                }),
                _ => None,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// How [`Store::define_operation`] settled a declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefineOutcome {
    /// No definition existed; one was created.
    Created,
    /// An equal definition existed and was kept.
    Matched,
}

pub(super) const COLUMNS: &str =
    "id, namespace, name, type, input_schema, output_schema, access_level, \
                       required_scopes, description, source, owner_kind, owner_id, created_at, updated_at";

/// The insert of one definition with id `$id` (a `String` or `&String`),
/// owned by `$owner` (`Option<&Owner>`), created and updated at `$at`, ready
/// to execute on a pool or inside a transaction of either engine. An
/// existing id is left alone (no rows affected), so a concurrent creator
/// never aborts the surrounding transaction.
macro_rules! insert_definition {
    ($id:expr, $new:expr, $owner:expr, $at:expr) => {{
        static ONE: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| $crate::store::operations::insert_definitions_sql(1));
        $crate::store::operations::insert_definitions!(ONE.as_str(), [($id, $new)], $owner, $at)
    }};
}
pub(super) use insert_definition;

/// `INSERT` of `rows` new definitions in one statement (14 parameters a
/// row, each used once and in order, so [`Store::positional`] applies),
/// skipping ids that exist; see [`insert_definitions`].
pub(super) fn insert_definitions_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let list: Vec<String> = (1..=14).map(|i| format!("${}", row * 14 + i)).collect();
            format!("({})", list.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO operations (id, namespace, name, type, input_schema, output_schema, \
         access_level, required_scopes, description, source, created_at, owner_kind, owner_id, \
         updated_at) VALUES {} ON CONFLICT DO NOTHING",
        values.join(", ")
    )
}

/// Binds `rows` (`(id, &NewDefinition)`) to [`insert_definitions_sql`].
macro_rules! insert_definitions {
    ($sql:expr, $rows:expr, $owner:expr, $at:expr) => {{
        let mut query = sqlx::query($sql);
        for (id, new) in $rows {
            let new: &$crate::store::NewDefinition = new;
            query = query
                .bind(id.as_str())
                .bind(&new.namespace)
                .bind(&new.name)
                .bind(new.op_type.as_str())
                .bind(new.input_schema.as_ref().map(Json))
                .bind(new.output_schema.as_ref().map(Json))
                .bind(new.access_level.as_str())
                .bind(Json(&new.required_scopes))
                .bind(&new.description)
                .bind(new.source.as_str())
                .bind($at)
                .bind($owner.map(|o: &$crate::store::Owner| o.kind.as_str()))
                .bind($owner.map(|o: &$crate::store::Owner| o.id.as_str()))
                .bind($at);
        }
        query
    }};
}
pub(super) use insert_definitions;

/// Names the first contract field in which `declared` differs from `stored`.
/// The contract is what callers and validation rely on: type, schemas,
/// access level and scopes. Description and source are not part of it.
pub fn contract_difference(
    stored: &NewDefinition,
    declared: &NewDefinition,
) -> Option<&'static str> {
    if stored.op_type != declared.op_type {
        Some("type")
    } else if stored.input_schema != declared.input_schema {
        Some("inputSchema")
    } else if stored.output_schema != declared.output_schema {
        Some("outputSchema")
    } else if stored.access_level != declared.access_level {
        Some("accessLevel")
    } else if stored.required_scopes != declared.required_scopes {
        Some("requiredScopes")
    } else {
        None
    }
}

impl Store {
    /// Creates the definition, or matches it to the stored one with the same
    /// id. A stored definition whose contract differs is left untouched and
    /// reported as [`StoreError::Conflict`]; a newer description is kept.
    pub async fn define_operation(
        &self,
        new: &NewDefinition,
    ) -> Result<(Definition, DefineOutcome)> {
        let id = new.id();
        // Two attempts: a concurrent creator may win the insert between our
        // read and our write; the second read then sees its row.
        for _ in 0..2 {
            if let Some(existing) = self.get_operation(&id).await? {
                let mut declared = new.clone();
                if existing.spec.source != declared.source {
                    // A provider of an imported definition may leave the
                    // schemas out: it then serves the imported contract.
                    declared.input_schema = declared
                        .input_schema
                        .or_else(|| existing.spec.input_schema.clone());
                    declared.output_schema = declared
                        .output_schema
                        .or_else(|| existing.spec.output_schema.clone());
                }
                if let Some(field) = contract_difference(&existing.spec, &declared) {
                    return Err(StoreError::Conflict { id, field });
                }
                if existing.spec.description != new.description && new.description.is_some() {
                    let at = now();
                    on_pool!(self, |pool| sqlx::query(
                        "UPDATE operations SET description = $1, updated_at = $2 WHERE id = $3"
                    )
                    .bind(&new.description)
                    .bind(at)
                    .bind(&id)
                    .execute(pool)
                    .await
                    .map(|d| d.rows_affected()))?;
                    let mut updated = existing;
                    updated.spec.description = new.description.clone();
                    updated.updated_at = at;
                    return Ok((updated, DefineOutcome::Matched));
                }
                return Ok((existing, DefineOutcome::Matched));
            }
            match self.insert_operation(new).await {
                Ok(created) => return Ok((created, DefineOutcome::Created)),
                Err(StoreError::Duplicate { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            id,
            field: "definition (concurrently changed)",
        })
    }

    /// Inserts a definition without an owner; fails on an existing id or
    /// `(namespace, name)` ([`StoreError::Duplicate`]).
    pub async fn insert_operation(&self, new: &NewDefinition) -> Result<Definition> {
        let at = now();
        let id = new.id();
        let inserted = on_pool!(self, |pool| insert_definition!(&id, new, None, at)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))?;
        if inserted == 0 {
            return Err(StoreError::Duplicate {
                kind: "operation",
                id,
            });
        }
        Ok(Definition {
            id,
            spec: new.clone(),
            owner: None,
            created_at: at,
            updated_at: at,
        })
    }

    /// One definition by operation id.
    pub async fn get_operation(&self, id: &str) -> Result<Option<Definition>> {
        let sql = format!("SELECT {COLUMNS} FROM operations WHERE id = $1");
        let row: Option<DefinitionRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        row.map(Definition::try_from).transpose()
    }

    /// One definition by post-remap namespace and name.
    pub async fn get_operation_by_name(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Definition>> {
        let sql = format!("SELECT {COLUMNS} FROM operations WHERE namespace = $1 AND name = $2");
        let row: Option<DefinitionRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(namespace)
            .bind(name)
            .fetch_optional(pool)
            .await)?;
        row.map(Definition::try_from).transpose()
    }

    /// Every definition, ordered by id.
    pub async fn list_operations(&self) -> Result<Vec<Definition>> {
        let sql = format!("SELECT {COLUMNS} FROM operations ORDER BY id");
        let rows: Vec<DefinitionRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(Definition::try_from).collect()
    }

    /// Deletes a definition; its registrations go with it (ON DELETE CASCADE).
    pub async fn delete_operation(&self, id: &str) -> Result<()> {
        let done = on_pool!(self, |pool| sqlx::query(
            "DELETE FROM operations WHERE id = $1"
        )
        .bind(id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))?;
        touched(done, "operation", id)
    }

    /// Deletes spoke-sourced definitions that have had no active registration
    /// for longer than `grace`, measured from the last change of any of their
    /// registrations (or of the definition, when it never had one). Returns
    /// the ids deleted.
    pub async fn cleanup_orphaned_operations(
        &self,
        grace: std::time::Duration,
    ) -> Result<Vec<String>> {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let cutoff = now()
            .checked_sub_signed(grace)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let rows: Vec<(String,)> = on_pool!(self, |pool| sqlx::query_as(
            "DELETE FROM operations WHERE source = 'spoke' \
               AND NOT EXISTS (SELECT 1 FROM operation_registrations r \
                               WHERE r.operation_id = operations.id AND \
                                     (r.status = 'active' OR r.updated_at >= $1)) \
               AND operations.updated_at < $1 \
             RETURNING id"
        )
        .bind(cutoff)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
