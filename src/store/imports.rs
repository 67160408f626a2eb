//! The `imports` table: OpenAPI documents and MCP servers whose operations
//! the hub defines, and the definitions each one owns.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::operations::{Definition, NewDefinition, Owner, Source};
use super::{now, on_pool, parse_text, Result, Store, StoreError};
use crate::protocol::text_enum;

/// What an import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportKind {
    /// An OpenAPI 3 document.
    Openapi,
    /// An MCP server's tools.
    Mcp,
}

text_enum!(ImportKind { Openapi => "openapi", Mcp => "mcp" });

impl ImportKind {
    /// The source its definitions carry.
    pub fn source(self) -> Source {
        match self {
            ImportKind::Openapi => Source::Openapi,
            ImportKind::Mcp => Source::Mcp,
        }
    }
}

/// A stored import.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// Its name, unique.
    pub name: String,
    /// OpenAPI or MCP.
    pub kind: ImportKind,
    /// The namespace of its operations.
    pub namespace: String,
    /// Where it came from and how to call it (no secrets, only variable names).
    pub config: Value,
    /// The operation ids it defined.
    pub operations: Vec<String>,
    /// Whether the hub serves it.
    pub enabled: bool,
    /// When it was first imported.
    pub created_at: DateTime<Utc>,
    /// When it was last imported.
    pub updated_at: DateTime<Utc>,
}

/// What saving an import changed, by operation id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportChanges {
    /// Definitions created.
    pub added: Vec<String>,
    /// Definitions whose contract or description changed.
    pub updated: Vec<String>,
    /// Definitions kept as they were.
    pub unchanged: Vec<String>,
    /// Definitions of the previous import that the new one no longer has.
    pub removed: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ImportRow {
    name: String,
    kind: String,
    namespace: String,
    config: Json<Value>,
    operations: Json<Vec<String>>,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ImportRow> for Import {
    type Error = StoreError;
    fn try_from(r: ImportRow) -> Result<Self> {
        Ok(Import {
            name: r.name,
            kind: parse_text(&r.kind)?,
            namespace: r.namespace,
            config: r.config.0,
            operations: r.operations.0,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const COLUMNS: &str = "name, kind, namespace, config, operations, enabled, created_at, updated_at";

impl Store {
    /// Creates or replaces import `name` with `definitions`, in one
    /// transaction: new ids are created, changed ones updated, the previous
    /// import's ids that are gone deleted (with their registrations). A
    /// definition that exists but belongs to something else (a spoke or
    /// another import) is a conflict and nothing is saved.
    pub async fn save_import(
        &self,
        name: &str,
        kind: ImportKind,
        namespace: &str,
        config: &Value,
        definitions: &[NewDefinition],
    ) -> Result<ImportChanges> {
        let at = now();
        let ids: Vec<String> = definitions.iter().map(NewDefinition::id).collect();
        let select_import = format!("SELECT {COLUMNS} FROM imports WHERE name = $1");
        let others = format!("SELECT {COLUMNS} FROM imports WHERE name <> $1");
        let select_def = format!(
            "SELECT {} FROM operations WHERE id = $1",
            super::operations::COLUMNS
        );
        let owner = Owner::import(name);
        let changes = on_pool!(self, |pool| {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            let previous: Option<ImportRow> = sqlx::query_as(&select_import)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            let previous_config = previous.as_ref().map(|r| r.config.0.clone());
            let previous: Vec<String> = previous.map(|r| r.operations.0).unwrap_or_default();
            let other_imports: Vec<ImportRow> = sqlx::query_as(&others)
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
            let mut changes = ImportChanges::default();
            for (new, id) in definitions.iter().zip(&ids) {
                if let Some(owner) = other_imports.iter().find(|i| i.operations.0.contains(id)) {
                    return Err(StoreError::Invalid(format!(
                        "operation {id} belongs to import {}; remove it first or choose another namespace",
                        owner.name
                    )));
                }
                let existing: Option<super::operations::DefinitionRow> =
                    sqlx::query_as(&select_def)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let existing = existing.map(Definition::try_from).transpose()?;
                match existing {
                    None => {
                        super::operations::insert_definition!(id, new, Some(&owner), at)
                            .execute(&mut *tx)
                            .await?;
                        changes.added.push(id.clone());
                    }
                    Some(old) if old.spec.source != kind.source() => {
                        return Err(StoreError::Invalid(format!(
                            "operation {id} is already defined by a {} source; the import would replace it",
                            old.spec.source.as_str()
                        )));
                    }
                    Some(old) if old.spec == *new => changes.unchanged.push(id.clone()),
                    Some(_) => {
                        sqlx::query(
                            "UPDATE operations SET type = $2, input_schema = $3, output_schema = $4, \
                             access_level = $5, required_scopes = $6, description = $7, \
                             updated_at = $8, owner_kind = 'import', owner_id = $9 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(new.op_type.as_str())
                        .bind(new.input_schema.as_ref().map(Json))
                        .bind(new.output_schema.as_ref().map(Json))
                        .bind(new.access_level.as_str())
                        .bind(Json(&new.required_scopes))
                        .bind(&new.description)
                        .bind(at)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                        changes.updated.push(id.clone());
                    }
                }
            }
            for id in previous.iter().filter(|id| !ids.contains(id)) {
                sqlx::query("DELETE FROM operations WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                changes.removed.push(id.clone());
            }
            // Saving what is already there changes nothing, not even
            // `updated_at`: running hubs serve an import anew when it moves.
            let same = previous_config.as_ref() == Some(config)
                && changes.added.is_empty()
                && changes.updated.is_empty()
                && changes.removed.is_empty()
                && previous == ids;
            if same {
                tx.commit().await?;
                return Ok::<ImportChanges, StoreError>(changes);
            }
            sqlx::query(
                "INSERT INTO imports (name, kind, namespace, config, operations, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6) \
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, namespace = excluded.namespace, \
                 config = excluded.config, operations = excluded.operations, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(kind.as_str())
            .bind(namespace)
            .bind(Json(config))
            .bind(Json(&ids))
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<ImportChanges, StoreError>(changes)
        })?;
        Ok(changes)
    }

    /// One import by name.
    pub async fn get_import(&self, name: &str) -> Result<Option<Import>> {
        let sql = format!("SELECT {COLUMNS} FROM imports WHERE name = $1");
        let row: Option<ImportRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(pool)
            .await)?;
        row.map(Import::try_from).transpose()
    }

    /// Every import, by name.
    pub async fn list_imports(&self) -> Result<Vec<Import>> {
        let sql = format!("SELECT {COLUMNS} FROM imports ORDER BY name");
        let rows: Vec<ImportRow> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(Import::try_from).collect()
    }

    /// Deletes import `name`, its definitions and their registrations;
    /// returns the operation ids deleted.
    pub async fn remove_import(&self, name: &str) -> Result<Vec<String>> {
        let select = format!("SELECT {COLUMNS} FROM imports WHERE name = $1");
        let removed = on_pool!(self, |pool| {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            // Read in the same transaction, so a concurrent re-import cannot
            // add an operation that this removal then leaves behind.
            let row: Option<ImportRow> = sqlx::query_as(&select)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound {
                    kind: "import",
                    id: name.to_owned(),
                });
            };
            for id in &row.operations.0 {
                sqlx::query("DELETE FROM operations WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM imports WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<Vec<String>, StoreError>(row.operations.0)
        })?;
        Ok(removed)
    }
}
