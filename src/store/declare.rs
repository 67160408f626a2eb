//! One provider's declarations settled in one transaction: each definition
//! created or matched (ownership decides what a match may change), each
//! registration activated and tied to the declaring session.
//!
//! The registrar decides everything that needs no stored row (parsing,
//! remap, limits, grants against the id); this module decides what does (the
//! stored contract, who owns it, which registration row to re-activate),
//! with a handful of statements per [`DECLARE_CHUNK`] declarations instead of
//! a round trip per declaration.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::types::Json;

use super::operations::{
    insert_definitions, insert_definitions_sql, DefinitionRow, COLUMNS as DEFINITION_COLUMNS,
};
use super::registrations::placeholders;
use super::{now, on_pool, Definition, NewDefinition, Owner, Result, Source, Store, StoreError};
use crate::crypto::random_id;
use crate::protocol::PrincipalKind;

/// Declarations handled by one group of statements. Bounded so that every
/// statement stays far below the bind-parameter limits of both engines.
pub const DECLARE_CHUNK: usize = 100;

/// Attempts of the whole transaction when a concurrent writer (another hub,
/// or a session of the same principal on PostgreSQL) created a row first.
const ATTEMPTS: usize = 3;

/// One declaration, remapped and checked by the registrar.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// The definition as declared, under its post-remap id. Absent schemas
    /// keep the stored ones: a declaration never removes validation.
    pub definition: NewDefinition,
    /// The namespace the provider declared.
    pub pre_remap_namespace: String,
    /// The name the provider declared.
    pub pre_remap_name: String,
}

impl Declaration {
    /// The id the provider declared, `namespace.name` before the remap.
    pub fn pre_remap_id(&self) -> String {
        format!("{}.{}", self.pre_remap_namespace, self.pre_remap_name)
    }
}

/// Who declares, and the session the registrations belong to.
#[derive(Debug, Clone, Copy)]
pub struct Declarer<'a> {
    /// Spoke or client.
    pub kind: PrincipalKind,
    /// The principal's id.
    pub id: &'a str,
    /// The session activating the registrations.
    pub session_id: &'a str,
    /// Stored with every registration.
    pub metadata: &'a Value,
}

/// A declaration that is now an active registration.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The definition in force (the stored one, with the owner's changes).
    pub definition: Definition,
    /// Whether this declaration created or changed the definition.
    pub changed: bool,
    /// The registration, re-activated or new.
    pub registration_id: String,
}

/// Why a declaration was not registered.
#[derive(Debug)]
pub enum Refused<E> {
    /// The caller's gate refused it, having seen the stored definition.
    Gate(E),
    /// The stored definition has another value in this contract field.
    Conflict(&'static str),
    /// The provider already has an active registration of the definition
    /// under another pre-remap id.
    AlreadyActive,
    /// `keep_going` stopped the transaction; nothing of it was written.
    Stopped,
}

/// What a declaration may do to an existing definition: `Err(field)` when
/// its contract differs, `Ok(Some(updated))` when the owner changed it,
/// `Ok(None)` when it registers against the definition as stored.
///
/// Type and schemas are the contract of every provider; an absent schema
/// means "the stored one". Description, access level and scopes belong to the
/// owner: the owner's declaration sets them, another provider's must repeat
/// the access level and scopes (it would otherwise serve callers it does not
/// expect) and its description is ignored. A spoke-sourced definition without
/// an owner (older than ownership) is claimed by the first declaration.
pub fn settle(
    stored: &Definition,
    declared: &NewDefinition,
    declarer: &Owner,
) -> Result<Option<Definition>, &'static str> {
    let spec = &stored.spec;
    let input = declared
        .input_schema
        .as_ref()
        .or(spec.input_schema.as_ref());
    let output = declared
        .output_schema
        .as_ref()
        .or(spec.output_schema.as_ref());
    if spec.op_type != declared.op_type {
        return Err("type");
    }
    if spec.input_schema.as_ref() != input {
        return Err("inputSchema");
    }
    if spec.output_schema.as_ref() != output {
        return Err("outputSchema");
    }
    let claim = stored.owner.is_none() && spec.source == Source::Spoke;
    if !claim && stored.owner.as_ref() != Some(declarer) {
        if spec.access_level != declared.access_level {
            return Err("accessLevel");
        }
        if spec.required_scopes != declared.required_scopes {
            return Err("requiredScopes");
        }
        return Ok(None);
    }
    let mut updated = stored.clone();
    updated.spec.access_level = declared.access_level;
    updated.spec.required_scopes = declared.required_scopes.clone();
    if declared.description.is_some() {
        updated.spec.description = declared.description.clone();
    }
    updated.owner = Some(declarer.clone());
    Ok((updated != *stored).then_some(updated))
}

type Outcomes<E> = Vec<Result<Declared, Refused<E>>>;

/// Decides, seeing the stored definition of its id (if any), whether a
/// declaration may go on; `Err` refuses it with the caller's reason.
pub type Gate<'a, E> = dyn Fn(&Declaration, Option<&Definition>) -> Result<(), E> + Sync + 'a;

/// The `LIKE` pattern of every session id of the same hub process as
/// `session_id` (`<instance>-<number>`, the number zero-padded so that ids of
/// one process order like their numbers).
fn session_prefix(session_id: &str) -> String {
    match session_id.rfind('-') {
        Some(dash) => format!("{}%", &session_id[..=dash]),
        None => format!("{session_id}%"),
    }
}

impl Store {
    /// Settles `declarations` of one provider in one transaction and returns
    /// one outcome per declaration, in order. `gate` sees each declaration
    /// with the stored definition of its id (if any) before anything is
    /// written for it; `keep_going` is asked before each chunk, and when it
    /// answers false the transaction is rolled back and every declaration not
    /// already refused comes back [`Refused::Stopped`].
    pub async fn declare<E>(
        &self,
        declarer: &Declarer<'_>,
        declarations: &[Declaration],
        gate: &Gate<'_, E>,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Outcomes<E>>
    where
        E: Send,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .declare_once(declarer, declarations, gate, keep_going)
                .await
            {
                Err(e)
                    if attempt < ATTEMPTS
                        && (e.is_unique_violation()
                            || matches!(e, StoreError::Duplicate { .. })) =>
                {
                    tracing::debug!(error = %e, attempt, "declarations raced another writer; retrying");
                }
                other => return other,
            }
        }
    }

    async fn declare_once<E>(
        &self,
        declarer: &Declarer<'_>,
        declarations: &[Declaration],
        gate: &Gate<'_, E>,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Outcomes<E>>
    where
        E: Send,
    {
        let owner = Owner::provider(declarer.kind, declarer.id);
        let at = now();
        let mut outcomes: Vec<Option<Result<Declared, Refused<E>>>> =
            declarations.iter().map(|_| None).collect();
        // Post-remap id → pre-remap id, for what this transaction activated.
        let mut activated: HashMap<String, (String, String)> = HashMap::new();
        let mut stopped = false;
        let _turn = self.write_turn().await;
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(self.begin_write()).await?;
            for (chunk_no, chunk) in declarations.chunks(DECLARE_CHUNK).enumerate() {
                if !keep_going() {
                    stopped = true;
                    break;
                }
                let first = chunk_no * DECLARE_CHUNK;

                // 1. The stored definitions of this chunk, in one read.
                let ids: Vec<String> = chunk.iter().map(|d| d.definition.id()).collect();
                let unique: Vec<&String> = {
                    let mut seen = HashSet::new();
                    ids.iter().filter(|id| seen.insert(id.as_str())).collect()
                };
                let sql = self.positional(format!(
                    "SELECT {DEFINITION_COLUMNS} FROM operations WHERE id IN ({})",
                    placeholders(1, unique.len())
                ));
                let mut query = sqlx::query_as::<_, DefinitionRow>(&sql);
                for id in &unique {
                    query = query.bind(id.as_str());
                }
                let mut stored: HashMap<String, Definition> = HashMap::new();
                for row in query.fetch_all(&mut *tx).await? {
                    let definition = Definition::try_from(row)?;
                    stored.insert(definition.id.clone(), definition);
                }

                // 2. Create, match or (owner) update each definition. New
                // ones are inserted together, in one statement per chunk.
                let mut settled: Vec<(usize, Definition, bool)> = Vec::new();
                let mut creating: Vec<(String, &NewDefinition)> = Vec::new();
                macro_rules! create_pending {
                    () => {
                        if !creating.is_empty() {
                            let sql = self.positional(insert_definitions_sql(creating.len()));
                            let inserted = insert_definitions!(&sql, &creating, Some(&owner), at)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                            if inserted as usize != creating.len() {
                                // Created by a concurrent transaction: start over.
                                return Err(StoreError::Duplicate {
                                    kind: "operation",
                                    id: creating[0].0.clone(),
                                });
                            }
                            creating.clear();
                        }
                    };
                }
                for (offset, (declaration, id)) in chunk.iter().zip(&ids).enumerate() {
                    let index = first + offset;
                    let existing = stored.get(id);
                    if let Err(e) = gate(declaration, existing) {
                        outcomes[index] = Some(Err(Refused::Gate(e)));
                        continue;
                    }
                    let Some(existing) = existing else {
                        let new = &declaration.definition;
                        creating.push((id.clone(), new));
                        let created = Definition {
                            id: id.clone(),
                            spec: new.clone(),
                            owner: Some(owner.clone()),
                            created_at: at,
                            updated_at: at,
                        };
                        stored.insert(id.clone(), created.clone());
                        settled.push((index, created, true));
                        continue;
                    };
                    match settle(existing, &declaration.definition, &owner) {
                        Err(field) => outcomes[index] = Some(Err(Refused::Conflict(field))),
                        Ok(None) => settled.push((index, existing.clone(), false)),
                        Ok(Some(mut updated)) => {
                            // The row to update may be one this chunk creates.
                            create_pending!();
                            updated.updated_at = at;
                            let owner_of = updated.owner.as_ref();
                            sqlx::query(
                                "UPDATE operations SET access_level = $1, required_scopes = $2, \
                                 description = $3, owner_kind = $4, owner_id = $5, updated_at = $6 \
                                 WHERE id = $7",
                            )
                            .bind(updated.spec.access_level.as_str())
                            .bind(Json(&updated.spec.required_scopes))
                            .bind(&updated.spec.description)
                            .bind(owner_of.map(|o| o.kind.as_str()))
                            .bind(owner_of.map(|o| o.id.as_str()))
                            .bind(at)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                            stored.insert(id.clone(), updated.clone());
                            settled.push((index, updated, true));
                        }
                    }
                }
                create_pending!();
                if settled.is_empty() {
                    continue;
                }

                // 3. The provider's registrations of these definitions, in one read.
                let operation_ids: Vec<&str> = {
                    let mut seen = HashSet::new();
                    settled
                        .iter()
                        .map(|(_, d, _)| d.id.as_str())
                        .filter(|id| seen.insert(*id))
                        .collect()
                };
                let sql = self.positional(format!(
                    "SELECT id, operation_id, status, pre_remap_namespace, pre_remap_name \
                     FROM operation_registrations \
                     WHERE provider_type = $1 AND provider_id = $2 AND operation_id IN ({}) \
                     ORDER BY status ASC, updated_at DESC, id",
                    placeholders(3, operation_ids.len())
                ));
                let mut query = sqlx::query_as::<_, (String, String, String, String, String)>(&sql)
                    .bind(declarer.kind.as_str())
                    .bind(declarer.id);
                for id in &operation_ids {
                    query = query.bind(*id);
                }
                let mut rows: HashMap<String, Vec<(String, String, String, String)>> =
                    HashMap::new();
                for (id, operation_id, status, namespace, name) in query.fetch_all(&mut *tx).await?
                {
                    rows.entry(operation_id)
                        .or_default()
                        .push((id, status, namespace, name));
                }

                // 4. Re-activate the most recent row of the same pre-remap id,
                // or create one; both tied to this session.
                let mut reactivate: Vec<String> = Vec::new();
                let mut create: Vec<(String, usize)> = Vec::new();
                for (index, definition, changed) in settled {
                    let declaration = &declarations[index];
                    let pre = (
                        declaration.pre_remap_namespace.clone(),
                        declaration.pre_remap_name.clone(),
                    );
                    let same = |ns: &str, name: &str| ns == pre.0 && name == pre.1;
                    let of_operation = rows.get(&definition.id).map(Vec::as_slice).unwrap_or(&[]);
                    let elsewhere = activated.get(&definition.id).is_some_and(|p| *p != pre)
                        || of_operation
                            .iter()
                            .any(|(_, status, ns, name)| status == "active" && !same(ns, name));
                    if elsewhere {
                        outcomes[index] = Some(Err(Refused::AlreadyActive));
                        continue;
                    }
                    let registration_id =
                        match of_operation.iter().find(|(_, _, ns, name)| same(ns, name)) {
                            Some((id, ..)) => {
                                if !reactivate.contains(id) {
                                    reactivate.push(id.clone());
                                }
                                id.clone()
                            }
                            None => {
                                let id = random_id("reg_");
                                create.push((id.clone(), index));
                                // A repeat later in this transaction re-uses it.
                                rows.entry(definition.id.clone()).or_default().push((
                                    id.clone(),
                                    "active".to_owned(),
                                    pre.0.clone(),
                                    pre.1.clone(),
                                ));
                                id
                            }
                        };
                    activated.insert(definition.id.clone(), pre);
                    outcomes[index] = Some(Ok(Declared {
                        definition,
                        changed,
                        registration_id,
                    }));
                }
                if !reactivate.is_empty() {
                    // Never take a row from a newer session of this hub: a
                    // superseded session's late write must not steal back
                    // what its successor holds (on PostgreSQL the two
                    // transactions may interleave; the later UPDATE then
                    // re-checks this condition on the committed row).
                    let sql = self.positional(format!(
                        "UPDATE operation_registrations SET status = 'active', metadata = $1, \
                         session_id = $2, registered_at = $3, updated_at = $4 \
                         WHERE (status = 'inactive' OR session_id IS NULL \
                           OR session_id NOT LIKE $5 OR session_id <= $6) AND id IN ({}) \
                         RETURNING id",
                        placeholders(7, reactivate.len())
                    ));
                    let mut query = sqlx::query_as::<_, (String,)>(&sql)
                        .bind(Json(declarer.metadata))
                        .bind(declarer.session_id)
                        .bind(at)
                        .bind(at)
                        .bind(session_prefix(declarer.session_id))
                        .bind(declarer.session_id);
                    for id in &reactivate {
                        query = query.bind(id);
                    }
                    let taken: HashSet<String> = query
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .map(|(id,)| id)
                        .collect();
                    for outcome in outcomes[first..first + chunk.len()].iter_mut() {
                        let held_by_newer = matches!(
                            outcome,
                            Some(Ok(d)) if reactivate.contains(&d.registration_id)
                                && !taken.contains(&d.registration_id)
                        );
                        if held_by_newer {
                            *outcome = Some(Err(Refused::AlreadyActive));
                        }
                    }
                }
                if !create.is_empty() {
                    let values: Vec<String> = (0..create.len())
                        .map(|row| {
                            let p: Vec<String> =
                                (1..=11).map(|i| format!("${}", row * 11 + i)).collect();
                            format!(
                                "({}, {}, {}, {}, 'active', {})",
                                p[0],
                                p[1],
                                p[2],
                                p[3],
                                p[4..].join(", ")
                            )
                        })
                        .collect();
                    let sql = self.positional(format!(
                        "INSERT INTO operation_registrations (id, operation_id, provider_type, \
                         provider_id, status, pre_remap_namespace, pre_remap_name, metadata, \
                         session_id, registered_at, created_at, updated_at) VALUES {}",
                        values.join(", ")
                    ));
                    let mut query = sqlx::query(&sql);
                    for (id, index) in &create {
                        let declaration = &declarations[*index];
                        query = query
                            .bind(id)
                            .bind(declaration.definition.id())
                            .bind(declarer.kind.as_str())
                            .bind(declarer.id)
                            .bind(&declaration.pre_remap_namespace)
                            .bind(&declaration.pre_remap_name)
                            .bind(Json(declarer.metadata))
                            .bind(declarer.session_id)
                            .bind(at)
                            .bind(at)
                            .bind(at);
                    }
                    query.execute(&mut *tx).await?;
                }
            }
            if stopped {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok::<(), StoreError>(())
        })?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Some(Ok(_)) | None if stopped => Err(Refused::Stopped),
                Some(outcome) => outcome,
                None => Err(Refused::Stopped),
            })
            .collect())
    }
}
