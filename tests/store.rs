//! The store suite: every scenario runs once on SQLite and once on PostgreSQL.

mod common;

use std::time::Duration;

use alkhub::crypto::{Token, TokenKind};
use alkhub::protocol::{AccessLevel, OperationType, PrincipalKind};
use alkhub::store::{
    Declaration, Declared, Declarer, DefineOutcome, Definition, NewDefinition, NewPrincipal,
    NewRegistration, Owner, Refused, RegistrationStatus, Source, Store, StoreError,
};
use serde_json::json;

fn definition(id: &str, source: Source) -> NewDefinition {
    let (namespace, name) = id.rsplit_once('.').unwrap();
    NewDefinition {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        op_type: OperationType::Query,
        input_schema: Some(json!({"type": "object", "properties": {"path": {"type": "string"}}})),
        output_schema: None,
        access_level: AccessLevel::Authenticated,
        required_scopes: vec![],
        description: Some("reads".to_owned()),
        source,
    }
}

fn registration(operation_id: &str, provider: &str) -> NewRegistration {
    let (namespace, name) = operation_id.rsplit_once('.').unwrap();
    NewRegistration {
        operation_id: operation_id.to_owned(),
        provider_type: PrincipalKind::Spoke,
        provider_id: provider.to_owned(),
        pre_remap_namespace: namespace.to_owned(),
        pre_remap_name: name.to_owned(),
        metadata: json!({}),
        session_id: None,
    }
}

fn declaration(id: &str) -> Declaration {
    let definition = definition(id, Source::Spoke);
    Declaration {
        pre_remap_namespace: definition.namespace.clone(),
        pre_remap_name: definition.name.clone(),
        definition,
    }
}

type Outcome = Result<Declared, Refused<()>>;

/// Declares as spoke `provider` in `session`, with a gate that lets all pass.
async fn declare(
    store: &Store,
    provider: &str,
    session: &str,
    declarations: &[Declaration],
) -> Vec<Outcome> {
    let metadata = json!({});
    let declarer = Declarer {
        kind: PrincipalKind::Spoke,
        id: provider,
        session_id: session,
        metadata: &metadata,
    };
    let open = |_: &Declaration, _: Option<&Definition>| Ok::<(), ()>(());
    store
        .declare(&declarer, declarations, &open, &|| true)
        .await
        .unwrap()
}

fn declared(outcome: &Outcome) -> &Declared {
    match outcome {
        Ok(declared) => declared,
        Err(refused) => panic!("refused: {refused:?}"),
    }
}

async fn spoke(store: &Store, id: &str) -> Token {
    let new = NewPrincipal {
        id: id.to_owned(),
        ..Default::default()
    };
    store
        .create_principal(PrincipalKind::Spoke, &new)
        .await
        .unwrap()
        .1
}

async fn namespace_and_name_are_unique(store: &Store) {
    store
        .insert_operation(&definition("dev.fs.read", Source::Spoke))
        .await
        .unwrap();
    let err = store
        .insert_operation(&definition("dev.fs.read", Source::Openapi))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err}");
    let by_name = store
        .get_operation_by_name("dev.fs", "read")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name.id, "dev.fs.read");
    assert_eq!(by_name.spec.source, Source::Spoke);
}

async fn a_second_active_registration_is_refused_but_inactive_duplicates_are_allowed(
    store: &Store,
) {
    store
        .insert_operation(&definition("chat.complete", Source::Spoke))
        .await
        .unwrap();
    let reg = registration("chat.complete", "oc1");
    store
        .insert_registration(&reg, RegistrationStatus::Inactive)
        .await
        .unwrap();
    store
        .insert_registration(&reg, RegistrationStatus::Inactive)
        .await
        .unwrap();
    store
        .insert_registration(&reg, RegistrationStatus::Active)
        .await
        .unwrap();
    let err = store
        .insert_registration(&reg, RegistrationStatus::Active)
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    // Another provider of the same operation is a separate registration.
    store
        .insert_registration(
            &registration("chat.complete", "oc2"),
            RegistrationStatus::Active,
        )
        .await
        .unwrap();
    let all = store
        .registrations_of_operation("chat.complete")
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        all.iter()
            .filter(|r| r.status == RegistrationStatus::Active)
            .count(),
        2
    );
}

async fn activation_reuses_the_providers_registration(store: &Store) {
    store
        .insert_operation(&definition("dev.fs.read", Source::Spoke))
        .await
        .unwrap();
    let first = store
        .activate_registration(&registration("dev.fs.read", "devbox"))
        .await
        .unwrap();
    assert_eq!(first.status, RegistrationStatus::Active);
    assert_eq!(
        store
            .deactivate_provider(PrincipalKind::Spoke, "devbox")
            .await
            .unwrap(),
        1
    );
    let again = store
        .activate_registration(&registration("dev.fs.read", "devbox"))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.status, RegistrationStatus::Active);
    let of_provider = store
        .registrations_of_provider(PrincipalKind::Spoke, "devbox")
        .await
        .unwrap();
    assert_eq!(of_provider.len(), 1);
    assert_eq!(of_provider[0].pre_remap_id(), "dev.fs.read");
}

async fn deleting_a_definition_cascades_to_its_registrations(store: &Store) {
    store
        .insert_operation(&definition("dev.fs.read", Source::Spoke))
        .await
        .unwrap();
    store
        .activate_registration(&registration("dev.fs.read", "devbox"))
        .await
        .unwrap();
    store.delete_operation("dev.fs.read").await.unwrap();
    assert!(store.get_operation("dev.fs.read").await.unwrap().is_none());
    assert!(store.list_registrations().await.unwrap().is_empty());
    assert!(matches!(
        store.delete_operation("dev.fs.read").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn removing_a_spoke_removes_its_registrations_only(store: &Store) {
    spoke(store, "devbox").await;
    spoke(store, "other").await;
    store
        .insert_operation(&definition("chat.complete", Source::Spoke))
        .await
        .unwrap();
    store
        .insert_operation(&definition("dev.fs.read", Source::Spoke))
        .await
        .unwrap();
    store
        .activate_registration(&registration("chat.complete", "devbox"))
        .await
        .unwrap();
    store
        .activate_registration(&registration("dev.fs.read", "devbox"))
        .await
        .unwrap();
    store
        .activate_registration(&registration("chat.complete", "other"))
        .await
        .unwrap();
    let removed = store
        .remove_principal(PrincipalKind::Spoke, "devbox")
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(store
        .get_principal(PrincipalKind::Spoke, "devbox")
        .await
        .unwrap()
        .is_none());
    let left = store.list_registrations().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].provider_id, "other");
    // Definitions stay: the cleanup task decides about them.
    assert_eq!(store.list_operations().await.unwrap().len(), 2);
    assert!(matches!(
        store.remove_principal(PrincipalKind::Spoke, "devbox").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn start_up_deactivates_every_registration(store: &Store) {
    store
        .insert_operation(&definition("chat.complete", Source::Spoke))
        .await
        .unwrap();
    store
        .activate_registration(&registration("chat.complete", "a"))
        .await
        .unwrap();
    store
        .activate_registration(&registration("chat.complete", "b"))
        .await
        .unwrap();
    assert_eq!(store.deactivate_all_registrations().await.unwrap(), 2);
    assert!(store
        .list_registrations()
        .await
        .unwrap()
        .iter()
        .all(|r| r.status == RegistrationStatus::Inactive));
}

async fn cleanup_honours_source_and_grace_period(store: &Store) {
    store
        .insert_operation(&definition("gone.op", Source::Spoke))
        .await
        .unwrap();
    store
        .insert_operation(&definition("never.op", Source::Spoke))
        .await
        .unwrap();
    store
        .insert_operation(&definition("live.op", Source::Spoke))
        .await
        .unwrap();
    store
        .insert_operation(&definition("api.op", Source::Openapi))
        .await
        .unwrap();
    store
        .activate_registration(&registration("gone.op", "a"))
        .await
        .unwrap();
    store
        .activate_registration(&registration("live.op", "b"))
        .await
        .unwrap();
    store
        .deactivate_provider(PrincipalKind::Spoke, "a")
        .await
        .unwrap();

    let within_grace = store
        .cleanup_orphaned_operations(Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(within_grace.is_empty(), "{within_grace:?}");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut removed = store
        .cleanup_orphaned_operations(Duration::from_millis(10))
        .await
        .unwrap();
    removed.sort();
    assert_eq!(removed, ["gone.op", "never.op"]);
    let mut left: Vec<String> = store
        .list_operations()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    left.sort();
    assert_eq!(left, ["api.op", "live.op"]);
}

async fn a_conflicting_redeclaration_is_detected(store: &Store) {
    let original = definition("dev.fs.read", Source::Spoke);
    let (_, outcome) = store.define_operation(&original).await.unwrap();
    assert_eq!(outcome, DefineOutcome::Created);
    let (_, outcome) = store.define_operation(&original).await.unwrap();
    assert_eq!(outcome, DefineOutcome::Matched);

    let mut other_type = original.clone();
    other_type.op_type = OperationType::Mutation;
    let err = store.define_operation(&other_type).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { field: "type", .. }),
        "{err}"
    );

    let mut other_schema = original.clone();
    other_schema.input_schema = Some(json!({"type": "string"}));
    let err = store.define_operation(&other_schema).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                field: "inputSchema",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("dev.fs.read"));

    let stored = store.get_operation("dev.fs.read").await.unwrap().unwrap();
    assert_eq!(
        stored.spec, original,
        "a conflict must not overwrite the definition"
    );

    let mut new_description = original.clone();
    new_description.description = Some("reads a file".to_owned());
    let (updated, outcome) = store.define_operation(&new_description).await.unwrap();
    assert_eq!(outcome, DefineOutcome::Matched);
    assert_eq!(updated.spec.description.as_deref(), Some("reads a file"));
}

async fn principals_are_found_by_token_and_store_only_its_hash(store: &Store) {
    let token = spoke(store, "devbox").await;
    assert_eq!(token.kind(), Some(TokenKind::Spoke));
    let found = store
        .find_principal_by_token(PrincipalKind::Spoke, &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, "devbox");
    assert!(store
        .find_principal_by_token(PrincipalKind::Client, &token)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .find_principal_by_token(PrincipalKind::Spoke, &Token::generate(TokenKind::Spoke))
        .await
        .unwrap()
        .is_none());
    let hashes = store
        .fetch_raw_strings("SELECT token_hash FROM spokes")
        .await
        .unwrap();
    assert_eq!(hashes, [token.hash().0]);
    assert!(!hashes[0].contains(token.expose()));

    let dup = store
        .create_principal(
            PrincipalKind::Spoke,
            &NewPrincipal {
                id: "devbox".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Duplicate { .. }), "{dup}");
    let bad = store
        .create_principal(
            PrincipalKind::Client,
            &NewPrincipal {
                id: "Not_A_Slug".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("Not_A_Slug"), "{bad}");
}

async fn provider_grants_are_stored_checked_and_replaced(store: &Store) {
    let new = NewPrincipal {
        id: "chatbot".into(),
        provides: Some(vec!["chat.*".into(), "dev.*".into()]),
        ..Default::default()
    };
    store
        .create_principal(PrincipalKind::Spoke, &new)
        .await
        .unwrap();
    let found = store
        .get_principal(PrincipalKind::Spoke, "chatbot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.provides.as_deref(),
        Some(&["chat.*".to_owned(), "dev.*".to_owned()][..])
    );
    store
        .set_provides(PrincipalKind::Spoke, "chatbot", None)
        .await
        .unwrap();
    let listed = store.list_principals(PrincipalKind::Spoke).await.unwrap();
    assert_eq!(listed[0].provides, None);
    let bad = store
        .set_provides(
            PrincipalKind::Spoke,
            "chatbot",
            Some(&["chat complete".into()]),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("chat complete"), "{bad}");
    let missing = store
        .set_provides(PrincipalKind::Client, "nobody", Some(&[]))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
}

async fn a_large_declaration_settles_in_one_transaction_owned_and_tied_to_its_session(
    store: &Store,
) {
    let many: Vec<Declaration> = (0..250)
        .map(|i| declaration(&format!("bulk.op{i}")))
        .collect();
    let outcomes = declare(store, "a", "s1", &many).await;
    assert_eq!(outcomes.len(), 250);
    assert!(outcomes.iter().all(|o| declared(o).changed));
    let stored = store.get_operation("bulk.op249").await.unwrap().unwrap();
    assert_eq!(
        stored.owner,
        Some(Owner::provider(PrincipalKind::Spoke, "a"))
    );
    let registrations = store.list_registrations().await.unwrap();
    assert_eq!(registrations.len(), 250);
    assert!(registrations
        .iter()
        .all(|r| r.status == RegistrationStatus::Active && r.session_id.as_deref() == Some("s1")));

    // The same declarations again from a newer session: the same rows,
    // re-activated and now held by that session.
    let again = declare(store, "a", "s2", &many).await;
    assert!(again.iter().all(|o| !declared(o).changed));
    assert_eq!(
        declared(&again[7]).registration_id,
        declared(&outcomes[7]).registration_id
    );
    assert_eq!(store.deactivate_sessions(&["s1".into()]).await.unwrap(), 0);
    assert_eq!(
        store.deactivate_sessions(&["s2".into()]).await.unwrap(),
        250
    );
    assert!(store
        .list_registrations()
        .await
        .unwrap()
        .iter()
        .all(|r| r.status == RegistrationStatus::Inactive));
}

async fn only_the_owner_changes_description_and_access(store: &Store) {
    let original = declaration("chat.complete");
    declared(&declare(store, "a", "s1", std::slice::from_ref(&original)).await[0]);

    let mut other = original.clone();
    other.definition.description = Some("mine now".into());
    let outcome = declare(store, "b", "s2", &[other.clone()]).await;
    assert!(!declared(&outcome[0]).changed);
    other.definition.access_level = AccessLevel::Public;
    let outcome = declare(store, "b", "s2", &[other]).await;
    assert!(
        matches!(outcome[0], Err(Refused::Conflict("accessLevel"))),
        "{outcome:?}"
    );
    let stored = store.get_operation("chat.complete").await.unwrap().unwrap();
    assert_eq!(stored.spec, original.definition, "a non-owner changed it");

    let mut owner = original.clone();
    owner.definition.description = Some("completes".into());
    owner.definition.access_level = AccessLevel::Public;
    let outcome = declare(store, "a", "s3", &[owner.clone()]).await;
    assert!(declared(&outcome[0]).changed);
    let stored = store.get_operation("chat.complete").await.unwrap().unwrap();
    assert_eq!(stored.spec, owner.definition);
}

async fn a_declaration_without_schemas_keeps_the_stored_ones(store: &Store) {
    let original = declaration("files.read");
    declare(store, "a", "s1", std::slice::from_ref(&original)).await;
    for provider in ["a", "b"] {
        let mut bare = original.clone();
        bare.definition.input_schema = None;
        let outcome = declare(store, provider, "s2", &[bare]).await;
        assert_eq!(
            declared(&outcome[0]).definition.spec.input_schema,
            original.definition.input_schema
        );
    }
    let stored = store.get_operation("files.read").await.unwrap().unwrap();
    assert_eq!(stored.spec.input_schema, original.definition.input_schema);
    let mut changed = original.clone();
    changed.definition.input_schema = Some(json!({"type": "string"}));
    let outcome = declare(store, "a", "s3", &[changed]).await;
    assert!(
        matches!(outcome[0], Err(Refused::Conflict("inputSchema"))),
        "{outcome:?}"
    );
}

async fn a_stopped_declaration_writes_nothing(store: &Store) {
    let metadata = json!({});
    let declarer = Declarer {
        kind: PrincipalKind::Spoke,
        id: "a",
        session_id: "s1",
        metadata: &metadata,
    };
    let open = |_: &Declaration, _: Option<&Definition>| Ok::<(), ()>(());
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let once = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
    let many: Vec<Declaration> = (0..150)
        .map(|i| declaration(&format!("half.op{i}")))
        .collect();
    let outcomes = store.declare(&declarer, &many, &open, &once).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Err(Refused::Stopped))));
    assert!(store.list_operations().await.unwrap().is_empty());
    assert!(store.list_registrations().await.unwrap().is_empty());
}

async fn the_audit_log_keeps_changes_newest_first_and_tokens_rotate(store: &Store) {
    let old = spoke(store, "edge").await;
    let new = store
        .rotate_token(PrincipalKind::Spoke, "edge")
        .await
        .unwrap();
    assert!(store
        .find_principal_by_token(PrincipalKind::Spoke, &old)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .find_principal_by_token(PrincipalKind::Spoke, &new)
            .await
            .unwrap()
            .map(|p| p.id),
        Some("edge".to_owned())
    );
    assert!(store
        .rotate_token(PrincipalKind::Spoke, "nobody")
        .await
        .is_err());

    for (action, n) in [("spoke.add", 1), ("spoke.disable", 2), ("spoke.enable", 3)] {
        store
            .audit(
                (PrincipalKind::Client, "ops"),
                action,
                "spoke/edge",
                &serde_json::json!({"n": n}),
            )
            .await
            .unwrap();
    }
    let all = store.list_audit(None, 10).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["spoke.enable", "spoke.disable", "spoke.add"]);
    assert_eq!(all[0].detail["n"], 3);
    assert_eq!(
        (all[0].actor_kind.as_str(), all[0].actor_id.as_str()),
        ("client", "ops")
    );
    let older = store.list_audit(Some(all[0].id), 1).await.unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].action, "spoke.disable");
}

macro_rules! store_suite {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let db = crate::common::sqlite().await;
                    super::$scenario(&db.store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let db = crate::common::postgres().await;
                    super::$scenario(&db.store).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

store_suite!(
    namespace_and_name_are_unique,
    a_second_active_registration_is_refused_but_inactive_duplicates_are_allowed,
    activation_reuses_the_providers_registration,
    deleting_a_definition_cascades_to_its_registrations,
    removing_a_spoke_removes_its_registrations_only,
    start_up_deactivates_every_registration,
    cleanup_honours_source_and_grace_period,
    a_conflicting_redeclaration_is_detected,
    principals_are_found_by_token_and_store_only_its_hash,
    provider_grants_are_stored_checked_and_replaced,
    a_large_declaration_settles_in_one_transaction_owned_and_tied_to_its_session,
    only_the_owner_changes_description_and_access,
    a_declaration_without_schemas_keeps_the_stored_ones,
    a_stopped_declaration_writes_nothing,
    the_audit_log_keeps_changes_newest_first_and_tokens_rotate,
);
