//! DDL end to end: sources, types, properties and variables, their errors, and the catalog
//! surviving a restart.

use eddy_engine::{Engine, Session, StatementResult};
use eddy_sql::ast::SourceKind;
use eddy_storage::{CleanupPolicy, TopicConfig};

mod common;
use common::open_store as store;

/// Statements that must fail, after some setup, with a message containing the fragment.
/// The messages are ksqlDB's.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "",
        "CREATE STREAM s (id INT) WITH (value_format='JSON');",
        "Missing required property \"KAFKA_TOPIC\"",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1);",
        "Statement is missing the 'VALUE_FORMAT' property",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='FOO');",
        "Unknown format: FOO",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, format='FOO');",
        "Unknown format: FOO",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, key_format='KAFKA', format='KAFKA');",
        "Cannot supply both 'KEY_FORMAT' and 'FORMAT' properties",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='JSON', format='KAFKA');",
        "Cannot supply both 'VALUE_FORMAT' and 'FORMAT' properties",
    ),
    (
        "",
        "CREATE STREAM s WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "No columns supplied.",
    ),
    (
        "",
        "CREATE TABLE t (id INT, v INT) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "Tables require a PRIMARY KEY. Please define the PRIMARY KEY.",
    ),
    (
        "",
        "CREATE STREAM s (k STRING KEY, v0 INT, v1 STRING) WITH (kafka_topic='t', partitions=1, value_format='KafkA');",
        "The 'KAFKA' format only supports a single field. Got: [`V0` INTEGER, `V1` STRING]",
    ),
    (
        "",
        "CREATE STREAM s (k STRING KEY, v0 BOOLEAN) WITH (kafka_topic='t', partitions=1, value_format='KAFKA');",
        "The 'KAFKA' format does not support type 'BOOLEAN'",
    ),
    (
        "",
        "CREATE STREAM s (foo ARRAY<INT>) WITH (kafka_topic='t', partitions=1, value_format='DELIMITED');",
        "The 'DELIMITED' format does not support type 'ARRAY'",
    ),
    (
        "",
        "CREATE STREAM s (foo MAP<INT, DOUBLE>) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "JSON only supports MAP types with STRING keys",
    ),
    (
        "",
        "CREATE STREAM s (k MAP<STRING, DOUBLE> KEY, foo INT) WITH (kafka_topic='t', partitions=1, format='JSON');",
        "Map keys, including types that contain maps, are not supported",
    ),
    (
        "",
        "CREATE STREAM s (k STRING KEY, foo INT) WITH (WRAP_SINGLE_VALUE=true, kafka_topic='t', partitions=1, value_format='KAFKA');",
        "Format 'KAFKA' does not support 'WRAP_SINGLE_VALUE' set to 'true'.",
    ),
    (
        "",
        "CREATE STREAM s (k STRING KEY, f0 STRING, f1 STRING) WITH (WRAP_SINGLE_VALUE=true, kafka_topic='t', partitions=1, value_format='JSON');",
        "'WRAP_SINGLE_VALUE' is only valid for single-field value schemas",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='JSON', value_delimiter='|');",
        "JSON does not support the following configs: [delimiter]",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='DELIMITED', value_delimiter='<~>');",
        "Invalid delimiter value: '<~>'",
    ),
    (
        "",
        "CREATE STREAM s (id INT KEY, ROWPARTITION STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "'ROWPARTITION' is a reserved column name. You cannot use it as a name for a column.",
    ),
    (
        "",
        "CREATE STREAM s (k STRING KEY, h BYTES HEADERS) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "Invalid type for HEADERS column: expected ARRAY<STRUCT<`KEY` STRING, `VALUE` BYTES>>, got BYTES",
    ),
    (
        "",
        "CREATE STREAM s (k STRING KEY, h INT HEADER('key')) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "Invalid type for HEADER('key') column: expected BYTES, got INTEGER",
    ),
    (
        "",
        "CREATE STREAM s (f0 INT) WITH (kafka_topic='t', partitions=1, value_format='JSON', window_type='SESSION');",
        "Windowed sources require a key column.",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='missing', value_format='JSON');",
        "Topic 'missing' does not exist.",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='XML');",
        "format",
    ),
    (
        "",
        "CREATE OR REPLACE SOURCE STREAM s (k STRING KEY, v STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "Cannot add stream 'S': CREATE OR REPLACE is not supported on source streams.",
    ),
    (
        "CREATE SOURCE TABLE t (k INT PRIMARY KEY, v STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "CREATE OR REPLACE TABLE t (k INT PRIMARY KEY, v STRING) WITH (kafka_topic='t', value_format='JSON');",
        "Cannot add table 'T': CREATE OR REPLACE is not supported on source tables.",
    ),
    (
        "CREATE STREAM s (v STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "CREATE STREAM s (v STRING) WITH (kafka_topic='t', value_format='JSON');",
        "A stream with the same name already exists",
    ),
    (
        "CREATE STREAM s (v STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "CREATE STREAM s2 (v STRING) WITH (kafka_topic='t', partitions=4, value_format='JSON');",
        "KSQL expects 4 partitions (topic has 1)",
    ),
    ("", "DROP STREAM test;", "Stream TEST does not exist"),
    (
        "CREATE TABLE t (k INT PRIMARY KEY, v STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "DROP STREAM t;",
        "Incompatible data source type is TABLE, but statement was DROP STREAM",
    ),
    (
        "CREATE SOURCE STREAM s (k STRING KEY, v STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "DROP STREAM s DELETE TOPIC;",
        "Cannot delete topic for read-only source: S",
    ),
    (
        "",
        "CREATE STREAM s (a addr) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "type 'ADDR' is not defined",
    ),
    ("", "SELECT * FROM s;", "not supported yet"),
    // Each partition is held in memory: billions of them are refused, not allocated.
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=4000000000, value_format='JSON');",
        "topic \"t\" asks for 4000000000 partitions, more than the 10000 this server allows",
    ),
    (
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "CREATE STREAM c WITH (partitions=10001) AS SELECT * FROM s;",
        "asks for 10001 partitions, more than the 10000",
    ),
    // Names of Eddy's own topics are reserved: nothing may create or write them.
    (
        "CREATE STREAM s (id INT) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
        "CREATE STREAM c WITH (kafka_topic='__eddy_copy', partitions=1) AS SELECT * FROM s;",
        "Cannot write into read-only topic: __eddy_copy",
    ),
    (
        "",
        "CREATE STREAM s (id INT) WITH (kafka_topic='__eddy_new', partitions=1, value_format='JSON');",
        "Topics starting '__eddy_' are Eddy's own",
    ),
];

#[tokio::test]
async fn ksqldb_rules_are_enforced_with_ksqldb_messages() {
    for (setup, statement, fragment) in REFUSED {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(store(dir.path())).await.unwrap();
        let mut session = Session::default();
        engine
            .execute(&mut session, setup)
            .await
            .unwrap_or_else(|e| panic!("setup `{setup}` failed: {e}"));
        let err = engine
            .execute(&mut session, statement)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains(fragment),
            "`{statement}`\n  expected: {fragment}\n  got:      {err}"
        );
        assert!(!err.error.is_server_fault(), "{statement}: {err}");
        assert_eq!(
            err.statement.trim_end_matches(';'),
            statement.trim_end_matches(';')
        );
    }
}

#[tokio::test]
async fn sources_are_created_listed_described_dropped_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(store(dir.path())).await.unwrap();
        let mut session = Session::default();
        let results = engine
            .execute(
                &mut session,
                "CREATE TYPE addr AS STRUCT<street STRING, zip INT>;
                 CREATE STREAM orders (id INT KEY, item STRING, ship addr) WITH (kafka_topic='orders', partitions=3, value_format='JSON');
                 CREATE TABLE users (id INT PRIMARY KEY, name STRING) WITH (kafka_topic='users', partitions=2, format='JSON');
                 CREATE STREAM IF NOT EXISTS orders (id INT KEY) WITH (kafka_topic='orders', value_format='JSON');
                 CREATE STREAM keyless (v STRING) WITH (kafka_topic='orders', value_format='DELIMITED', value_delimiter='TAB');",
            )
            .await
            .unwrap();
        assert_eq!(results.len(), 5);
        assert!(
            matches!(&results[1], StatementResult::CommandStatus { message, .. } if message == "Stream created")
        );
        assert!(matches!(&results[3], StatementResult::Warning { .. }));

        let described = engine.store().describe_topic("users").unwrap();
        assert_eq!(described.config.partitions, 2);
        assert_eq!(
            described.config.cleanup_policy,
            CleanupPolicy::Compact,
            "table topics are compacted"
        );
        assert_eq!(engine.store().partition_count("orders").unwrap(), 3);

        let catalog = engine.catalog().await;
        let orders = catalog.source("ORDERS").unwrap();
        assert_eq!(orders.kind, SourceKind::Stream);
        assert_eq!(orders.key_columns().count(), 1);
        assert_eq!(
            eddy_engine::schema::type_display(&orders.columns[2].ty),
            "STRUCT<`STREET` STRING, `ZIP` INTEGER>"
        );
        let keyless = catalog.source("KEYLESS").unwrap();
        assert_eq!(keyless.key_format.format, eddy_engine::format::Format::None);
        assert_eq!(keyless.value_format.delimiter, Some('\t'));

        let shown = engine
            .execute(
                &mut session,
                "SHOW STREAMS; LIST TABLES; SHOW TOPICS; DESCRIBE orders; SHOW TYPES;",
            )
            .await
            .unwrap();
        let StatementResult::Sources { sources, .. } = &shown[0] else {
            panic!("{shown:?}")
        };
        assert_eq!(
            sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["KEYLESS", "KSQL_PROCESSING_LOG", "ORDERS"]
        );
        let StatementResult::Sources { sources, .. } = &shown[1] else {
            panic!("{shown:?}")
        };
        assert_eq!(sources[0].name, "USERS");
        let StatementResult::Topics { topics, .. } = &shown[2] else {
            panic!("{shown:?}")
        };
        assert_eq!(
            topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            vec!["default_ksql_processing_log", "orders", "users"]
        );
        let StatementResult::SourceDescription {
            source, partitions, ..
        } = &shown[3]
        else {
            panic!("{shown:?}")
        };
        assert_eq!((source.name.as_str(), *partitions), ("ORDERS", Some(3)));
        let StatementResult::Types { types, .. } = &shown[4] else {
            panic!("{shown:?}")
        };
        assert_eq!(types[0].0, "ADDR");

        let dropped = engine
            .execute(
                &mut session,
                "DROP TABLE users DELETE TOPIC; DROP STREAM IF EXISTS nope;",
            )
            .await
            .unwrap();
        assert!(
            matches!(&dropped[0], StatementResult::CommandStatus { message, .. } if message.contains("was dropped"))
        );
        assert!(!engine.store().topic_exists("users"));
    }
    // A new engine on the same store has the same catalog.
    let engine = Engine::open(store(dir.path())).await.unwrap();
    let catalog = engine.catalog().await;
    let names: Vec<&str> = catalog.sources().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["KEYLESS", "KSQL_PROCESSING_LOG", "ORDERS"]);
    assert!(catalog.named_type("ADDR").is_some());
    // The statuses of the commands, as /status reports them, come back with the replay.
    let statuses = engine.command_statuses().await;
    let status = |id: &str| {
        statuses
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, message)| message.clone())
    };
    assert_eq!(
        status("stream/`ORDERS`/create").as_deref(),
        Some("Stream created")
    );
    assert!(status("table/`USERS`/drop").is_some_and(|m| m.contains("was dropped")));
    // And keeps logging after the replay.
    let mut session = Session::default();
    engine
        .execute(&mut session, "DROP STREAM keyless;")
        .await
        .unwrap();
    let engine = Engine::open(engine.store().clone()).await.unwrap();
    assert_eq!(
        engine.catalog().await.sources().count(),
        2,
        "ORDERS and the processing log"
    );
}

#[tokio::test]
async fn a_failing_statement_stops_the_request_and_reports_what_ran() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_topic("t", TopicConfig::default()).unwrap();
    let engine = Engine::open(s).await.unwrap();
    let mut session = Session::default();
    let err = engine
        .execute(
            &mut session,
            "CREATE STREAM a (v STRING) WITH (kafka_topic='t', value_format='JSON');
             CREATE STREAM b (v STRING) WITH (kafka_topic='t', value_format='NOPE');
             CREATE STREAM c (v STRING) WITH (kafka_topic='t', value_format='JSON');",
        )
        .await
        .unwrap_err();
    assert_eq!(err.completed.len(), 1);
    assert!(err.statement.starts_with("CREATE STREAM b"));
    assert!(
        engine.catalog().await.source("C").is_none(),
        "statements after a failure do not run"
    );
}

#[tokio::test]
async fn properties_and_variables_live_in_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(store(dir.path())).await.unwrap();
    let mut session = Session::default();
    engine
        .execute(
            &mut session,
            "SET 'auto.offset.reset' = 'earliest';
             SET 'ksql.persistence.default.format.value' = 'JSON';
             DEFINE topic = 'events';
             CREATE STREAM e (v STRING) WITH (kafka_topic='${topic}', partitions=1);",
        )
        .await
        .unwrap();
    assert_eq!(session.properties["auto.offset.reset"], "earliest");
    assert!(
        engine.store().topic_exists("events"),
        "the variable was substituted"
    );
    assert_eq!(
        engine
            .catalog()
            .await
            .source("E")
            .unwrap()
            .value_format
            .format,
        eddy_engine::format::Format::Json,
        "the session's default value format applied"
    );
    let shown = engine
        .execute(
            &mut session,
            "SHOW PROPERTIES; SHOW VARIABLES; UNSET 'auto.offset.reset'; UNDEFINE topic;",
        )
        .await
        .unwrap();
    let StatementResult::Properties { properties, .. } = &shown[0] else {
        panic!()
    };
    assert!(properties.contains(&("auto.offset.reset".to_string(), "earliest".to_string())));
    let StatementResult::Variables { variables, .. } = &shown[1] else {
        panic!()
    };
    assert_eq!(
        variables,
        &vec![("TOPIC".to_string(), "events".to_string())]
    );
    assert!(!session.properties.contains_key("auto.offset.reset"));
    let err = engine
        .execute(&mut session, "SHOW TOPICS; PRINT '${topic}';")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not defined"), "{err}");
    assert_eq!(err.completed.len(), 1);
}

/// A command-log entry that cannot be read back (damaged bytes, or SQL the parser no longer
/// takes, such as an expression past today's depth limit) is skipped at start and reported; the
/// rest of the catalog comes back, and new commands do not overwrite the skipped entries.
#[tokio::test]
async fn a_damaged_command_log_entry_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(store(dir.path())).await.unwrap();
        let mut session = Session::default();
        engine
            .execute(
                &mut session,
                "CREATE STREAM orders (id INT KEY, item STRING) WITH (kafka_topic='orders', partitions=1, value_format='JSON');",
            )
            .await
            .unwrap();
        let too_deep = format!(
            r#"{{"sql": "CREATE STREAM deep AS SELECT 1{} AS n FROM orders;"}}"#,
            "+1".repeat(2_000)
        );
        let mut commit = eddy_storage::Commit::new();
        commit.put_state(
            "__eddy_command_log",
            50u64.to_be_bytes().to_vec(),
            b"\xff not json".to_vec(),
        );
        commit.put_state(
            "__eddy_command_log",
            51u64.to_be_bytes().to_vec(),
            too_deep.into_bytes(),
        );
        commit.put_state("__eddy_command_log", b"short".to_vec(), b"{}".to_vec());
        engine.store().commit(commit).await.unwrap();
        engine.shutdown().await;
        engine.store().close().unwrap();
    }
    let engine = Engine::open(store(dir.path())).await.unwrap();
    let damaged = engine.damaged_commands();
    assert_eq!(damaged.len(), 3, "{damaged:?}");
    assert_eq!(damaged[0].seq, Some(50));
    assert!(damaged[0].reason.contains("not a command"), "{damaged:?}");
    assert_eq!(damaged[1].seq, Some(51));
    assert!(damaged[1].reason.contains("too deep"), "{damaged:?}");
    assert!(engine.catalog().await.source("ORDERS").is_some());

    let mut session = Session::default();
    engine
        .execute(
            &mut session,
            "CREATE STREAM later (id INT KEY) WITH (kafka_topic='later', partitions=1, value_format='JSON');",
        )
        .await
        .unwrap();
    engine.shutdown().await;
    engine.store().close().unwrap();
    drop(engine);
    let engine = Engine::open(store(dir.path())).await.unwrap();
    assert!(engine.catalog().await.source("LATER").is_some());
    assert_eq!(
        engine.damaged_commands().len(),
        3,
        "the new command took a fresh entry"
    );
}
