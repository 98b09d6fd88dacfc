//! The registry over a real store: ids, versions, deletes, levels and compatibility, as
//! Confluent's registry answers them, and everything back after the store is reopened.

use eddy_registry::{Level, SchemaRegistry, SchemaRequest, SchemaType, VersionSpec};
use eddy_storage::{Store, StoreOptions};

fn avro(text: &str) -> SchemaRequest {
    SchemaRequest {
        schema: text.to_string(),
        schema_type: SchemaType::Avro,
        references: Vec::new(),
    }
}

const V1: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"name","type":"string","default":""}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"age","type":"int"}]}"#;

#[tokio::test]
async fn schemas_get_ids_and_versions_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let registry = SchemaRegistry::open(&store).unwrap();

    let id1 = registry.register("users-value", &avro(V1)).await.unwrap();
    // The same schema, written differently, is the same id and no new version.
    let again = registry
        .register("users-value", &avro(&V1.replace(',', " , ")))
        .await
        .unwrap();
    assert_eq!(again, id1);
    let id2 = registry.register("users-value", &avro(V2)).await.unwrap();
    assert_ne!(id1, id2);
    // A schema known under another subject keeps its id there.
    assert_eq!(
        registry.register("other-value", &avro(V1)).await.unwrap(),
        id1
    );
    assert_eq!(
        registry.versions("users-value", false).await.unwrap(),
        [1, 2]
    );

    // BACKWARD, the default: a new field without a default breaks it.
    let refused = registry
        .register("users-value", &avro(BREAKS))
        .await
        .unwrap_err();
    assert_eq!(refused.code, 409, "{refused}");
    assert!(refused.message.contains("oldSchemaVersion: 2"), "{refused}");
    registry
        .set_level(Some("users-value"), Level::None)
        .await
        .unwrap();
    let id3 = registry
        .register("users-value", &avro(BREAKS))
        .await
        .unwrap();

    let latest = registry
        .version("users-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    assert_eq!((latest.version, latest.id), (3, id3));
    let found = registry
        .lookup("users-value", &avro(V2), false)
        .await
        .unwrap();
    assert_eq!((found.version, found.id), (2, id2));

    // Soft delete hides a version; a permanent one needs it first.
    let refused = registry
        .delete_version("users-value", VersionSpec::Number(1), true)
        .await
        .unwrap_err();
    assert_eq!(refused.code, 40407);
    registry
        .delete_version("users-value", VersionSpec::Number(1), false)
        .await
        .unwrap();
    assert_eq!(
        registry.versions("users-value", false).await.unwrap(),
        [2, 3]
    );
    assert_eq!(
        registry.versions("users-value", true).await.unwrap(),
        [1, 2, 3]
    );
    registry
        .delete_version("users-value", VersionSpec::Number(1), true)
        .await
        .unwrap();
    drop(registry);
    store.close().unwrap();
    drop(store);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let registry = SchemaRegistry::open(&store).unwrap();
    assert_eq!(
        registry.versions("users-value", true).await.unwrap(),
        [2, 3]
    );
    assert!(registry.schema(id1).await.unwrap().schema.contains("User"));
    assert_eq!(
        registry.level(Some("users-value"), false).await.unwrap(),
        Level::None
    );
    assert_eq!(registry.level(None, true).await.unwrap(), Level::Backward);
    // Ids go on from the highest, never reused.
    let next = registry
        .register("fresh-value", &avro(r#""string""#))
        .await
        .unwrap();
    assert_eq!(next, id3 + 1);
    assert_eq!(
        registry.subjects(false).await,
        ["fresh-value", "other-value", "users-value"]
    );
}

#[tokio::test]
async fn a_subject_is_soft_deleted_before_it_is_deleted_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let registry = SchemaRegistry::open(&store).unwrap();
    registry.register("s", &avro(V1)).await.unwrap();
    assert_eq!(
        registry.delete_subject("s", true).await.unwrap_err().code,
        40405
    );
    assert_eq!(registry.delete_subject("s", false).await.unwrap(), [1]);
    assert_eq!(
        registry.delete_subject("s", false).await.unwrap_err().code,
        40404
    );
    assert!(registry.subjects(false).await.is_empty());
    assert_eq!(registry.subjects(true).await, ["s"]);
    assert_eq!(registry.delete_subject("s", true).await.unwrap(), [1]);
    assert!(registry.subjects(true).await.is_empty());
    assert_eq!(registry.versions("s", true).await.unwrap_err().code, 40401);
    assert_eq!(
        registry.delete_subject("s", false).await.unwrap_err().code,
        40401
    );
    // The schema itself stays readable by id, as Confluent keeps it.
    assert!(registry.schema(1).await.is_ok());
    assert_eq!(registry.schema(99).await.unwrap_err().code, 40403);
}

#[tokio::test]
async fn references_resolve_to_registered_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let registry = SchemaRegistry::open(&store).unwrap();
    registry
        .register(
            "address",
            &avro(
                r#"{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}"#,
            ),
        )
        .await
        .unwrap();
    let person = SchemaRequest {
        schema: r#"{"type":"record","name":"Person","fields":[{"name":"home","type":"Address"}]}"#
            .into(),
        schema_type: SchemaType::Avro,
        references: vec![eddy_registry::Reference {
            name: "Address".into(),
            subject: "address".into(),
            version: 1,
        }],
    };
    let id = registry.register("person-value", &person).await.unwrap();
    assert_eq!(registry.schema(id).await.unwrap().references.len(), 1);
    let missing = SchemaRequest {
        references: vec![eddy_registry::Reference {
            name: "Address".into(),
            subject: "address".into(),
            version: 7,
        }],
        ..person
    };
    assert_eq!(
        registry
            .register("p2-value", &missing)
            .await
            .unwrap_err()
            .code,
        42201
    );
}

#[tokio::test]
async fn import_mode_keeps_the_ids_and_versions_a_migration_brings() {
    use eddy_registry::{Mode, Placement};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let registry = SchemaRegistry::open(&store).unwrap();
    let at = |id, version| Placement {
        id: Some(id),
        version: Some(version),
    };

    // An id and version are only taken in IMPORT mode.
    let refused = registry
        .register_at("users-value", &avro(V1), at(102, 3))
        .await
        .unwrap_err();
    assert_eq!(refused.code, 42205);
    assert_eq!(refused.message, "Subject users-value is not in import mode");

    registry
        .set_mode(Some("users-value"), Mode::Import, false)
        .await
        .unwrap();
    // Compatibility is not checked on import: BREAKS follows V1 here.
    assert_eq!(
        registry
            .register_at("users-value", &avro(V1), at(102, 3))
            .await
            .unwrap(),
        102
    );
    assert_eq!(
        registry
            .register_at("users-value", &avro(BREAKS), at(7, 5))
            .await
            .unwrap(),
        7
    );
    // Importing the same again is the same id; another schema at a held id is refused.
    assert_eq!(
        registry
            .register_at("users-value", &avro(V1), at(102, 3))
            .await
            .unwrap(),
        102
    );
    let clash = registry
        .register_at("users-value", &avro(V2), at(102, 6))
        .await
        .unwrap_err();
    assert_eq!(
        (clash.code, clash.message.as_str()),
        (42205, "Overwrite new schema with id 102 is not permitted.")
    );
    // Plain registration waits for READWRITE.
    let plain = registry
        .register("users-value", &avro(V2))
        .await
        .unwrap_err();
    assert_eq!(
        plain.message,
        "Subject users-value is not in read-write mode"
    );
    // IMPORT is refused where schemas already are, unless forced.
    let busy = registry
        .set_mode(None, Mode::Import, false)
        .await
        .unwrap_err();
    assert_eq!(
        (busy.code, busy.message.as_str()),
        (42205, "Cannot import since found existing subjects")
    );
    registry.set_mode(None, Mode::Import, true).await.unwrap();
    registry.delete_mode(None).await.unwrap();
    assert_eq!(
        registry.delete_mode(Some("users-value")).await.unwrap(),
        Mode::Import
    );
    // Back in READWRITE, new ids continue past the imported ones.
    let next = registry.register("users-value", &avro(V2)).await.unwrap();
    assert_eq!(next, 103);
    assert_eq!(
        registry.versions("users-value", false).await.unwrap(),
        vec![3, 5, 6]
    );

    // READONLY refuses changes, deletes included.
    registry
        .set_mode(Some("users-value"), Mode::ReadOnly, false)
        .await
        .unwrap();
    let frozen = registry
        .delete_subject("users-value", false)
        .await
        .unwrap_err();
    assert_eq!(
        (frozen.code, frozen.message.as_str()),
        (42205, "Subject users-value is in read-only mode")
    );
    assert_eq!(
        registry.mode(Some("other"), false).await.unwrap_err().code,
        40409
    );

    // Modes and imported ids survive a restart.
    drop(registry);
    let registry = SchemaRegistry::open(&store).unwrap();
    assert_eq!(
        registry.mode(Some("users-value"), false).await.unwrap(),
        Mode::ReadOnly
    );
    assert_eq!(registry.mode(None, false).await.unwrap(), Mode::ReadWrite);
    let v3 = registry
        .version("users-value", VersionSpec::Number(3), false)
        .await
        .unwrap();
    assert_eq!(v3.id, 102);
}

/// Two registries over one log, as a cluster's active node and a standby (or the node that
/// took over) see it: each change reads what the other wrote first, so no id is given twice,
/// and a lookup of an id the other gave finds it.
#[tokio::test]
async fn a_registry_follows_what_another_wrote_to_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let first = SchemaRegistry::open(&store).unwrap();
    let second = SchemaRegistry::open(&store).unwrap();

    let a = first.register("a-value", &avro(V1)).await.unwrap();
    // Not caught up yet, the second still finds the first's schema by its id.
    assert!(second.schema_by_id(a).is_some());
    let b = second.register("b-value", &avro(V2)).await.unwrap();
    assert_ne!(a, b);
    let c = first.register("c-value", &avro(BREAKS)).await.unwrap();
    assert!(c != a && c != b, "{a} {b} {c}");
    // A level set by one is the other's once it caught up.
    first.set_level(Some("b-value"), Level::None).await.unwrap();
    second.catch_up().await.unwrap();
    assert_eq!(
        second.level(Some("b-value"), false).await.unwrap(),
        Level::None
    );
    assert_eq!(
        second.subjects(false).await,
        ["a-value", "b-value", "c-value"]
    );
    // A new version of a subject the other made continues its versions.
    let again = second.register("a-value", &avro(V2)).await.unwrap();
    assert_eq!(again, b);
    first.catch_up().await.unwrap();
    assert_eq!(first.versions("a-value", false).await.unwrap(), [1, 2]);
}
