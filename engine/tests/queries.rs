//! Persistent queries end to end: output, resuming after a restart without loss or duplicates,
//! `TERMINATE`, `DROP` and bad records.

use std::time::Duration;

use eddy_engine::{Engine, Session, StatementResult};
use eddy_storage::Record;

mod common;
use common::{open_store, values};

async fn run(engine: &Engine, session: &mut Session, sql: &str) -> Vec<StatementResult> {
    engine
        .execute(session, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"))
}

/// Asserts that a stream selecting `item` (as `v`) from the stream `s` is refused, with
/// `message` in the error.
async fn assert_item_refused(engine: &Engine, item: &str, message: &str) {
    let sql = format!("CREATE STREAM bad AS SELECT k, {item} AS v FROM s;");
    let err = engine
        .execute(&mut Session::default(), &sql)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(message), "{item}: {err}");
}

fn input(id: i64) -> Record {
    Record::keyed(
        format!("k{}", id % 7).into_bytes(),
        format!(
            r#"{{"id": {id}, "name": "n{id}", "amount": {}.5}}"#,
            id % 100
        )
        .into_bytes(),
        1_000 + id,
    )
}

const SETUP: &str = "
    SET 'auto.offset.reset' = 'earliest';
    CREATE STREAM orders (k STRING KEY, id BIGINT, name STRING, amount DOUBLE)
        WITH (kafka_topic='orders', partitions=1, value_format='JSON');
    CREATE STREAM big AS SELECT k, id, UCASE(name) AS name FROM orders WHERE amount > 10;";

fn expected_big(n: i64) -> Vec<String> {
    (0..n)
        .filter(|id| id % 100 > 9)
        .map(|id| format!(r#"{{"ID":{id},"NAME":"N{id}"}}"#))
        .collect()
}

#[tokio::test]
async fn a_query_filters_and_projects_into_its_sink() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    let results = run(&engine, &mut session, SETUP).await;
    match results.last() {
        Some(StatementResult::CommandStatus { message, .. }) => {
            assert_eq!(message, "Created query with ID CSAS_BIG_1")
        }
        other => panic!("unexpected result {other:?}"),
    }
    engine
        .store()
        .produce("orders", (0..300).map(input).collect())
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(20)).await);
    assert_eq!(values(engine.store(), "BIG"), expected_big(300));
    let explained = run(&engine, &mut session, "EXPLAIN CSAS_BIG_1;").await;
    let StatementResult::QueryDescription { query, .. } = &explained[0] else {
        panic!("{explained:?}");
    };
    assert_eq!(
        (query.id.as_str(), query.state.as_str()),
        ("CSAS_BIG_1", "RUNNING")
    );
    assert_eq!(
        (query.sources.clone(), query.sinks.clone()),
        (vec!["ORDERS".to_string()], vec!["BIG".to_string()])
    );
    let steps: Vec<&str> = query
        .execution_plan
        .lines()
        .map(|l| l.trim_start().split(" |").next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "> [ SINK ]",
            "> [ PROJECT ]",
            "> [ FILTER ]",
            "> [ SOURCE ]"
        ]
    );
    let err = engine
        .execute(&mut session, "EXPLAIN nope;")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Query with id:NOPE does not exist"),
        "{err}"
    );
    let described = run(&engine, &mut session, "DESCRIBE big;").await;
    assert!(matches!(
        &described[0],
        StatementResult::SourceDescription { source, .. }
            if source.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() == ["K", "ID", "NAME"]
    ));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_restart_mid_stream_neither_loses_nor_repeats_output() {
    let dir = tempfile::tempdir().unwrap();
    let total = 20_000;
    let chunks: Vec<Vec<i64>> = (0..total)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(<[i64]>::to_vec)
        .collect();
    let (before, after) = chunks.split_at(chunks.len() / 2);
    {
        let engine = Engine::open(open_store(dir.path())).await.unwrap();
        let mut session = Session::default();
        run(&engine, &mut session, SETUP).await;
        // Many small appends; the engine stops once some output is out, usually mid-stream.
        for chunk in before {
            engine
                .store()
                .produce("orders", chunk.iter().copied().map(input).collect())
                .await
                .unwrap();
        }
        while values(engine.store(), "BIG").is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        engine.shutdown().await;
        engine.store().close().unwrap();
    }
    // More input arrives while the engine is down.
    let store = open_store(dir.path());
    for chunk in after {
        store
            .produce("orders", chunk.iter().copied().map(input).collect())
            .await
            .unwrap();
    }
    let written_before = values(&store, "BIG").len();
    assert!(written_before < expected_big(total).len());
    let engine = Engine::open(store).await.unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(60)).await);
    assert_eq!(values(engine.store(), "BIG"), expected_big(total));
    engine.shutdown().await;
}

#[tokio::test]
async fn terminate_stops_a_query_and_drop_refuses_while_others_read() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(&engine, &mut session, SETUP).await;
    let err = engine
        .execute(&mut session, "DROP STREAM orders;")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cannot drop ORDERS.\nThe following streams and/or tables read from this source: [BIG].\nYou need to drop them before dropping ORDERS."
    );
    let shown = run(&engine, &mut session, "SHOW QUERIES;").await;
    assert!(
        matches!(&shown[0], StatementResult::Queries { queries, .. } if queries.len() == 1 && queries[0].id == "CSAS_BIG_1")
    );
    run(&engine, &mut session, "TERMINATE CSAS_BIG_1;").await;
    engine
        .store()
        .produce("orders", (0..50).map(input).collect())
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(5)).await);
    assert!(values(engine.store(), "BIG").is_empty());
    // With its writer gone, the sink can be dropped, then its source.
    run(
        &engine,
        &mut session,
        "DROP STREAM big; DROP STREAM orders;",
    )
    .await;
    // A terminated query stays terminated after a restart.
    engine.shutdown().await;
    engine.store().close().unwrap();
    drop(engine);
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let shown = run(&engine, &mut session, "SHOW QUERIES;").await;
    assert!(matches!(&shown[0], StatementResult::Queries { queries, .. } if queries.is_empty()));
}

#[tokio::test]
async fn bad_records_are_skipped_and_counted_without_stopping_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(&engine, &mut session, SETUP).await;
    let mut records: Vec<Record> = (0..20).map(input).collect();
    records.insert(5, Record::keyed(&b"k"[..], &b"{not json"[..], 5));
    records.insert(9, Record::keyed(&b"k"[..], &br#"{"id": "twelve"}"#[..], 5));
    engine.store().produce("orders", records).await.unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(values(engine.store(), "BIG"), expected_big(20));
    let shown = run(&engine, &mut session, "SHOW QUERIES;").await;
    let StatementResult::Queries { queries, .. } = &shown[0] else {
        panic!("expected queries");
    };
    assert_eq!((queries[0].processed, queries[0].failed), (22, 2));
    assert_eq!(queries[0].state, "RUNNING");
    // Each failure is in the processing log, with where the record was.
    let log: Vec<serde_json::Value> = values(engine.store(), "default_ksql_processing_log")
        .iter()
        .map(|v| serde_json::from_str(v).unwrap())
        .collect();
    assert_eq!(log.len(), 2);
    for (entry, offset) in log.iter().zip([5, 9]) {
        assert_eq!(entry["LOGGER"], "processing.CSAS_BIG_1");
        let error = &entry["MESSAGE"]["DESERIALIZATIONERROR"];
        assert_eq!(error["TARGET"], "value");
        assert_eq!(error["topic"], "orders");
        let message = error["ERRORMESSAGE"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("(topic orders, partition 0, offset {offset})")),
            "{message}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_failing_expression_is_null_and_logged_but_the_record_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, d STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM parsed AS SELECT k, STRINGTOTIMESTAMP(d, 'yyyy-MM-dd') AS ts FROM s;
         INSERT INTO s (k, d) VALUES ('a', '1970-01-02');
         INSERT INTO s (k, d) VALUES ('b', 'not a date');",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "PARSED"),
        [r#"{"TS":86400000}"#, r#"{"TS":null}"#]
    );
    let log = values(engine.store(), "default_ksql_processing_log");
    assert_eq!(log.len(), 1);
    assert!(
        log[0].contains("RECORDPROCESSINGERROR") && log[0].contains("not a date"),
        "{}",
        log[0]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_row_a_condition_group_or_key_cannot_be_computed_on_is_logged_and_the_query_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         SET 'cache.max.bytes.buffering' = '0';
         CREATE STREAM s (k STRING KEY, a INT, b INT) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE TABLE t (id INT PRIMARY KEY, name STRING) WITH (kafka_topic='t', partitions=1, value_format='JSON');
         INSERT INTO t (id, name) VALUES (2, 'two');
         CREATE STREAM filtered AS SELECT k, a FROM s WHERE a / b > 1;
         CREATE TABLE grouped AS SELECT a / b AS q, COUNT(*) AS n FROM s GROUP BY a / b;
         CREATE STREAM exploded AS SELECT k, EXPLODE(ARRAY[a / b]) AS x FROM s;
         CREATE STREAM joined AS SELECT t.id, t.name FROM s JOIN t ON a / b = t.id;
         INSERT INTO s (k, a, b) VALUES ('x', 4, 2);
         INSERT INTO s (k, a, b) VALUES ('y', 1, 0);
         INSERT INTO s (k, a, b) VALUES ('z', 6, 3);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    // The row dividing by zero is gone from each result; the rows around it are there.
    assert_eq!(
        values(engine.store(), "FILTERED"),
        [r#"{"A":4}"#, r#"{"A":6}"#]
    );
    assert_eq!(
        values(engine.store(), "GROUPED"),
        [r#"{"N":1}"#, r#"{"N":2}"#]
    );
    assert_eq!(
        values(engine.store(), "EXPLODED"),
        [r#"{"X":2}"#, r#"{"X":2}"#]
    );
    assert_eq!(
        values(engine.store(), "JOINED"),
        [r#"{"NAME":"two"}"#, r#"{"NAME":"two"}"#]
    );
    let shown = run(&engine, &mut session, "SHOW QUERIES;").await;
    let StatementResult::Queries { queries, .. } = &shown[0] else {
        panic!("expected queries");
    };
    assert_eq!(queries.len(), 4);
    for query in queries {
        assert_eq!(query.state, "RUNNING", "{}", query.id);
        assert_eq!(query.failed, 1, "{}", query.id);
    }
    let log = values(engine.store(), "default_ksql_processing_log");
    assert_eq!(log.len(), 4, "{log:?}");
    for clause in [
        "Error evaluating WHERE",
        "Error evaluating GROUP BY",
        "Error evaluating EXPLODE",
        "Error computing the join key",
    ] {
        assert!(
            log.iter()
                .any(|entry| entry.contains(clause) && entry.contains("Divide by zero")),
            "{clause} in {log:?}"
        );
    }
    engine.shutdown().await;
}

/// The records of `topic`'s only partition.
fn log_records(engine: &Engine, topic: &str) -> Vec<eddy_storage::LogRecord> {
    engine
        .store()
        .read_records(topic, 0, 0, usize::MAX)
        .unwrap()
        .records
}

/// A header of `record` as text.
fn header(record: &eddy_storage::LogRecord, name: &str) -> Option<String> {
    let found = record.record.headers.iter().find(|h| h.key == name)?;
    found
        .value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test]
async fn records_a_query_drops_go_to_its_dead_letter_topic_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, a INT, b INT, c INT) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM t (k STRING KEY, a INT, b INT, c INT) WITH (kafka_topic='t', partitions=1, value_format='JSON');
         CREATE STREAM ratios WITH (DEAD_LETTER_TOPIC='ratios_dead') AS
           SELECT k, a / b AS r, 10 / c AS q FROM s WHERE a / b >= 0;
         INSERT INTO ratios WITH (DEAD_LETTER_TOPIC='more_dead')
           SELECT k, a / b AS r, 10 / c AS q FROM t WHERE a / b >= 0;",
    )
    .await;
    let mut traced = Record::keyed(&b"k2"[..], &b"{not json"[..], 2);
    traced.headers.push(eddy_storage::RecordHeader {
        key: "trace".into(),
        value: Some(b"abc".to_vec().into()),
    });
    let inputs = vec![
        Record::keyed(&b"k1"[..], &br#"{"a": 4, "b": 2, "c": 5}"#[..], 1),
        traced,
        // The condition divides by zero: the record is dropped.
        Record::keyed(&b"k3"[..], &br#"{"a": 1, "b": 0, "c": 1}"#[..], 3),
        // Only the projection fails: the record goes on with a null, and is no dead letter.
        Record::keyed(&b"k4"[..], &br#"{"a": 6, "b": 3, "c": 0}"#[..], 4),
        Record::keyed(&b"k5"[..], &br#"{"a": "x"}"#[..], 5),
    ];
    engine.store().produce("s", inputs.clone()).await.unwrap();
    engine
        .store()
        .produce("t", vec![Record::keyed(&b"t1"[..], &b"[1]"[..], 6)])
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "RATIOS"),
        [r#"{"R":2,"Q":2}"#, r#"{"R":2,"Q":null}"#]
    );
    let dead = log_records(&engine, "ratios_dead");
    let expected = [
        (1, "VALUE_CONVERTER", "DeserializationError"),
        (2, "TRANSFORMATION", "RecordProcessingError"),
        (4, "VALUE_CONVERTER", "DeserializationError"),
    ];
    assert_eq!(dead.len(), expected.len());
    for (letter, (offset, stage, class)) in dead.iter().zip(expected) {
        let original = &inputs[offset as usize];
        assert_eq!(letter.record.key, original.key);
        assert_eq!(letter.record.value, original.value);
        assert_eq!(letter.record.timestamp, original.timestamp);
        let offset_text = offset.to_string();
        for (name, value) in [
            ("__connect.errors.topic", "s"),
            ("__connect.errors.partition", "0"),
            ("__connect.errors.offset", offset_text.as_str()),
            ("__connect.errors.connector.name", "CSAS_RATIOS_2"),
            ("__connect.errors.stage", stage),
            ("__connect.errors.exception.class.name", class),
        ] {
            assert_eq!(header(letter, name).as_deref(), Some(value), "{name}");
        }
    }
    assert_eq!(header(&dead[0], "trace").as_deref(), Some("abc"));
    let why = header(&dead[1], "__connect.errors.exception.message").unwrap();
    assert!(why.contains("Error evaluating WHERE"), "{why}");
    let more = log_records(&engine, "more_dead");
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].record.value.as_deref(), Some(&b"[1]"[..]));
    assert_eq!(
        header(&more[0], "__connect.errors.connector.name").as_deref(),
        Some("INSERTQUERY_3")
    );
    // The dead letters were committed with the offsets past them: a restart writes none again.
    engine.shutdown().await;
    engine.store().close().unwrap();
    drop(engine);
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    engine
        .store()
        .produce("s", vec![Record::keyed(&b"k6"[..], &b"oops"[..], 6)])
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    let dead = log_records(&engine, "ratios_dead");
    assert_eq!(dead.len(), 4);
    assert_eq!(dead[3].record.value.as_deref(), Some(&b"oops"[..]));
    assert_eq!(values(engine.store(), "RATIOS").len(), 2);
    // A dead-letter topic must be a name, and not one the query reads or writes.
    for (topic, message) in [
        ("5", "takes a topic name as a string"),
        ("'s'", "a topic the query reads or writes"),
        ("'RATIOS'", "a topic the query reads or writes"),
        ("'a/b'", "Invalid DEAD_LETTER_TOPIC"),
    ] {
        let sql = format!(
            "INSERT INTO ratios WITH (DEAD_LETTER_TOPIC={topic}) SELECT k, a / b AS r, 10 / c AS q FROM s;"
        );
        let err = engine
            .execute(&mut Session::default(), &sql)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{topic}: {err}");
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn insert_into_select_merges_a_stream_into_another() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM a (id INT KEY, v STRING) WITH (kafka_topic='a', partitions=1, value_format='DELIMITED');
         CREATE STREAM b (id INT KEY, v STRING) WITH (kafka_topic='b', partitions=1, value_format='DELIMITED');
         CREATE STREAM merged AS SELECT * FROM a;
         INSERT INTO merged SELECT id, CONCAT(v, '!') AS v FROM b;
         INSERT INTO a (id, v) VALUES (1, 'from a');
         INSERT INTO b (id, v) VALUES (2, 'from b');",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    let mut got = values(engine.store(), "MERGED");
    got.sort();
    assert_eq!(got, ["from a", "from b!"]);
    let err = engine
        .execute(
            &mut session,
            "INSERT INTO merged SELECT id, v, v AS w FROM b;",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Incompatible schema between results and sink."),
        "{err}"
    );
    engine.shutdown().await;
}

/// `INSERT INTO ... SELECT` widens numbers to the sink's columns as ksqlDB casts implicitly
/// (an INT into a BIGINT or a DECIMAL, a DECIMAL into a wider one or a DOUBLE), and refuses
/// what would narrow them.
#[tokio::test]
async fn insert_into_select_widens_numbers_and_refuses_narrowing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM src (id INT KEY, n INT, d DECIMAL(3, 1))
           WITH (kafka_topic='src', partitions=1, value_format='JSON');
         CREATE STREAM wide (id INT KEY, n BIGINT, d DECIMAL(6, 2), x DOUBLE)
           WITH (kafka_topic='wide', partitions=1, value_format='JSON');
         INSERT INTO wide SELECT id, n, d, d AS x FROM src;
         INSERT INTO src (id, n, d) VALUES (1, 7, 12.5);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "wide"),
        [r#"{"N":7,"D":12.50,"X":12.5}"#]
    );
    for narrowing in [
        "INSERT INTO src SELECT id, n, x AS d FROM wide;",
        "INSERT INTO src SELECT id, n, d FROM wide;",
        "INSERT INTO src SELECT id, CAST(n AS BIGINT) AS n, CAST(d AS DECIMAL(3, 1)) AS d FROM wide;",
    ] {
        let err = engine.execute(&mut session, narrowing).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Incompatible schema between results and sink."),
            "{narrowing}: {err}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn alter_adds_columns_to_declared_sources_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(&engine, &mut session, SETUP).await;
    run(
        &engine,
        &mut session,
        "ALTER STREAM orders ADD COLUMN note STRING, ADD COLUMN qty INT;",
    )
    .await;
    let catalog = engine.catalog().await;
    let names: Vec<&str> = catalog
        .source("ORDERS")
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["K", "ID", "NAME", "AMOUNT", "NOTE", "QTY"]);
    let error = |sql: &'static str| {
        let engine = &engine;
        async move {
            engine
                .execute(&mut Session::default(), sql)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert_eq!(
        error("ALTER STREAM big ADD COLUMN x INT;").await,
        "ALTER command is not supported for CREATE ... AS statements."
    );
    assert_eq!(
        error("ALTER STREAM orders ADD COLUMN id INT;").await,
        "Cannot add column `ID` to schema. A column with the same name already exists."
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn explode_emits_a_row_per_element_and_zips_several_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, a ARRAY<INT>, b ARRAY<STRING>) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM flat AS SELECT k, EXPLODE(a) AS x, EXPLODE(b) AS y FROM s;
         INSERT INTO s (k, a, b) VALUES ('r', ARRAY[1, 2, 3], ARRAY['p']);
         INSERT INTO s (k, a, b) VALUES ('e', ARRAY[], NULL);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "FLAT"),
        [
            r#"{"X":1,"Y":"p"}"#,
            r#"{"X":2,"Y":null}"#,
            r#"{"X":3,"Y":null}"#
        ]
    );
    engine.shutdown().await;
}

/// CUBE_EXPLODE makes a row for each combination of the array's elements with some of them
/// null (one, not two, for an element already null), beside an EXPLODE of another array.
#[tokio::test]
async fn cube_explode_emits_every_combination_of_its_array() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, a STRING, b STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM cubed AS SELECT k, CUBE_EXPLODE(ARRAY[a, b]) AS c FROM s;
         INSERT INTO s (k, a, b) VALUES ('r', 'x', 'y');
         INSERT INTO s (k, a, b) VALUES ('n', 'x', NULL);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "CUBED"),
        [
            r#"{"C":[null,null]}"#,
            r#"{"C":[null,"y"]}"#,
            r#"{"C":["x",null]}"#,
            r#"{"C":["x","y"]}"#,
            r#"{"C":[null,null]}"#,
            r#"{"C":["x",null]}"#
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn lambdas_transform_filter_and_reduce_arrays_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, n ARRAY<INT>, d ARRAY<DOUBLE>, m MAP<STRING, INT>, base INT)
             WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM out AS SELECT k,
             TRANSFORM(n, x => x * base) AS scaled,
             FILTER(d, x => ROUND(x) >= 10) AS big,
             REDUCE(n, 0, (acc, x) => acc + x) AS total,
             FILTER(m, (key, v) => LEN(key) > 1 AND v > 0) AS kept,
             TRANSFORM(m, (key, v) => UCASE(key), (key, v) => v + base) AS upper,
             REDUCE(m, '', (acc, key, v) => CONCAT(acc, key)) AS keys
         FROM s;
         INSERT INTO s (k, n, d, m, base) VALUES ('a', ARRAY[1, 2, 3], ARRAY[9.22, 9.56, 10.63],
             MAP('x' := 1, 'yy' := 2, 'zz' := -1), 10);
         INSERT INTO s (k, n, d, m, base) VALUES ('b', NULL, ARRAY[10.55, NULL], NULL, 1);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    let rows: Vec<serde_json::Value> = values(engine.store(), "OUT")
        .iter()
        .map(|v| serde_json::from_str(v).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            serde_json::json!({
                "SCALED": [10, 20, 30], "BIG": [9.56, 10.63], "TOTAL": 6,
                "KEPT": {"yy": 2}, "UPPER": {"X": 11, "YY": 12, "ZZ": 9}, "KEYS": "xyyzz"
            }),
            // A null array or map transforms and filters to null; REDUCE gives its initial state.
            serde_json::json!({
                "SCALED": null, "BIG": [10.55], "TOTAL": 0,
                "KEPT": null, "UPPER": null, "KEYS": ""
            }),
        ]
    );
    // A lambda with the wrong number of parameters is refused where it is written.
    assert_item_refused(
        &engine,
        "FILTER(m, x => x > 1)",
        "The lambda of FILTER takes 2 parameter(s) here, not 1",
    )
    .await;
    engine.shutdown().await;
}

#[tokio::test]
async fn least_and_greatest_resolve_their_arguments_as_ksqldb_does() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, i INT, b BIGINT, d DOUBLE, t STRING, ts TIMESTAMP)
             WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM out AS SELECT k, LEAST(i, d, NULL) AS low, GREATEST(ts, '2022-06-14') AS late
             FROM s;
         INSERT INTO s (k, i, b, d, t, ts) VALUES ('a', 3, 4, 2.5, 'x', 0);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "OUT"),
        [r#"{"LOW":2.5,"LATE":1655164800000}"#]
    );
    for (call, message) in [
        (
            "LEAST(i, b)",
            "Function 'least' cannot be resolved due to ambiguous method parameters (INTEGER, BIGINT).",
        ),
        (
            "GREATEST(t, i)",
            "Function 'greatest' does not accept parameters (STRING, INTEGER).",
        ),
        (
            "LEAST(NULL, NULL)",
            "Function 'least' cannot be resolved due to ambiguous method parameters (null, null).",
        ),
        ("LEAST()", "Function 'least' does not accept parameters ()."),
    ] {
        assert_item_refused(&engine, call, message).await;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn constructors_read_literals_as_their_elements_and_refuse_what_ksqldb_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM s (k STRING KEY, i INT, flag BOOLEAN)
             WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM out AS SELECT k, ARRAY[NULL, i, '7'] AS a, MAP(k := flag, 10 := 'no') AS m
             FROM s;
         INSERT INTO s (k, i, flag) VALUES ('x', 3, true);",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    assert_eq!(
        values(engine.store(), "OUT"),
        [r#"{"A":[null,3,7],"M":{"x":true,"10":false}}"#]
    );
    for (constructor, message) in [
        ("ARRAY[]", "Array constructor cannot be empty."),
        (
            "ARRAY[NULL]",
            "Cannot construct an array with all NULL elements",
        ),
        (
            "ARRAY[i, 'x']",
            "invalid input syntax for type INTEGER: \"x\".",
        ),
        ("MAP()", "Map constructor cannot be empty."),
        (
            "MAP(k := NULL)",
            "Cannot construct a map with all NULL values",
        ),
        (
            "MAP(NULL := i)",
            "Cannot construct a map with all NULL keys",
        ),
    ] {
        assert_item_refused(&engine, constructor, message).await;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn push_queries_stream_changes_and_pull_queries_answer_from_what_is_there() {
    use eddy_engine::query::transient::TransientEvent;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(&engine, &mut session, SETUP).await;
    engine
        .store()
        .produce("orders", (0..3).map(input).collect())
        .await
        .unwrap();
    // A pull query over the stream scans what is in it, and completes.
    let mut pull = engine
        .query(&session, "SELECT id, k FROM orders WHERE id > 0;")
        .await
        .unwrap();
    assert!(!pull.push);
    assert_eq!(
        pull.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["ID", "K"]
    );
    let mut events = Vec::new();
    while let Some(event) = pull.events.recv().await {
        events.push(event);
    }
    assert_eq!(
        events,
        [
            TransientEvent::Row {
                columns: vec![1.into(), "k1".into()],
                tombstone: false
            },
            TransientEvent::Row {
                columns: vec![2.into(), "k2".into()],
                tombstone: false
            },
            TransientEvent::Finished("Query Completed"),
        ]
    );
    // A push query starts at the end (auto.offset.reset=latest) and streams until its limit.
    let mut push = engine
        .query(
            &Session::default(),
            "SELECT UCASE(name) AS n FROM orders EMIT CHANGES LIMIT 2;",
        )
        .await
        .unwrap();
    assert!(push.push);
    engine
        .store()
        .produce("orders", (10..13).map(input).collect())
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(event) = push.events.recv().await {
        events.push(event);
    }
    assert_eq!(
        events,
        [
            TransientEvent::Row {
                columns: vec!["N10".into()],
                tombstone: false
            },
            TransientEvent::Row {
                columns: vec!["N11".into()],
                tombstone: false
            },
            TransientEvent::Finished("Limit Reached"),
        ]
    );
    // Closing a push query ends its stream.
    let mut open = engine
        .query(&Session::default(), "SELECT * FROM orders EMIT CHANGES;")
        .await
        .unwrap();
    assert!(engine.close_query(&open.id));
    assert_eq!(open.events.recv().await, None);
    engine.shutdown().await;
}

fn only_query(results: &[StatementResult]) -> eddy_engine::QuerySummary {
    match results {
        [StatementResult::Queries { queries, .. }] if queries.len() == 1 => queries[0].clone(),
        other => panic!("expected one query, got {other:?}"),
    }
}

#[tokio::test]
async fn a_paused_query_keeps_its_place_shows_lag_and_catches_up_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(&engine, &mut session, SETUP).await;
    engine
        .store()
        .produce("orders", (0..20).map(input).collect())
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(5)).await);
    let before = only_query(&run(&engine, &mut session, "SHOW QUERIES EXTENDED;").await);
    assert_eq!((before.state.as_str(), before.lag()), ("RUNNING", 0));
    assert_eq!((before.processed, before.emitted), (20, 10));
    assert!(before.messages_per_sec > 0.0);
    assert!(before.last_message_ms.is_some());

    run(&engine, &mut session, "PAUSE csas_big_1;").await;
    engine
        .store()
        .produce("orders", (20..50).map(input).collect())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paused = only_query(&run(&engine, &mut session, "SHOW QUERIES;").await);
    assert_eq!((paused.state.as_str(), paused.lag()), ("PAUSED", 30));
    assert_eq!(paused.processed, 20);
    let offsets = paused.offsets.expect("a persistent query has offsets");
    assert_eq!(offsets.group, "_eddy_query_CSAS_BIG_1");
    let p = offsets.topics[0].partitions[0];
    assert_eq!((p.consumer, p.log_end), (20, 50));
    assert_eq!(values(engine.store(), "BIG"), expected_big(20));

    // Paused survives a restart: the PAUSE is in the command log.
    engine.shutdown().await;
    engine.store().close().unwrap();
    drop(engine);
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let restarted = only_query(&run(&engine, &mut session, "SHOW QUERIES;").await);
    assert_eq!((restarted.state.as_str(), restarted.lag()), ("PAUSED", 30));

    run(&engine, &mut session, "RESUME ALL;").await;
    assert!(engine.wait_until_processed(Duration::from_secs(5)).await);
    let resumed = only_query(&run(&engine, &mut session, "SHOW QUERIES;").await);
    assert_eq!((resumed.state.as_str(), resumed.lag()), ("RUNNING", 0));
    assert_eq!(values(engine.store(), "BIG"), expected_big(50));
    let err = engine
        .execute(&mut session, "PAUSE no_such_query;")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Unknown queryId: NO_SUCH_QUERY");
    engine.shutdown().await;
}

/// The summary of the only query once `check` holds for it, within 10 s.
async fn query_when(
    engine: &Engine,
    what: &str,
    check: impl Fn(&eddy_engine::QuerySummary) -> bool,
) -> eddy_engine::QuerySummary {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queries = engine.persistent_query_summaries().await;
        if let [query] = queries.as_slice()
            && check(query)
        {
            return query.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {what}: {queries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A query whose sink topic vanishes fails, shows `ERROR` with the cause, and is started again
/// with a growing backoff; once the topic is back it picks up from its committed offsets,
/// losing nothing and repeating nothing, and shows `RUNNING` again, as ksqlDB retries queries.
#[tokio::test]
async fn a_failed_query_is_retried_with_backoff_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let options = eddy_engine::EngineOptions {
        query_retry: eddy_engine::query::RetryBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        },
        ..eddy_engine::EngineOptions::default()
    };
    let engine = Engine::open_with(open_store(dir.path()), options)
        .await
        .unwrap();
    let mut session = Session::default();
    run(&engine, &mut session, SETUP).await;
    let store = engine.store().clone();
    store
        .produce("orders", (0..20).map(input).collect())
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(5)).await);
    let sink = store.describe_topic("BIG").unwrap().config;

    store.delete_topic("BIG").unwrap();
    store
        .produce("orders", (20..50).map(input).collect())
        .await
        .unwrap();
    let failed = query_when(&engine, "ERROR", |q| q.state == "ERROR").await;
    assert_eq!(
        failed.processed, 20,
        "nothing after the failure counts as done"
    );
    match run(&engine, &mut session, "EXPLAIN CSAS_BIG_1;")
        .await
        .as_slice()
    {
        [StatementResult::QueryDescription { query, .. }] => {
            let (_, cause) = query.error.clone().expect("the failure's cause");
            assert!(cause.contains("\"BIG\" does not exist"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    // Retries go on failing while the topic is missing, and the query stays in ERROR.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(engine.persistent_query_summaries().await[0].state, "ERROR");

    store.create_topic("BIG", sink).unwrap();
    let recovered = query_when(&engine, "recovery", |q| {
        q.state == "RUNNING" && q.processed == 50
    })
    .await;
    assert_eq!(recovered.lag(), 0);
    assert_eq!(
        values(&store, "BIG"),
        expected_big(50)
            .into_iter()
            .filter(|v| !expected_big(20).contains(v))
            .collect::<Vec<_>>(),
        "the records after the failure, once each"
    );
    engine.shutdown().await;
}

/// A terminated query's state goes with it, as ksqlDB deletes a terminated query's state
/// stores; the table it wrote stays.
#[tokio::test]
async fn terminate_deletes_the_query_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let mut session = Session::default();
    run(
        &engine,
        &mut session,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM orders (k STRING KEY, id BIGINT, name STRING, amount DOUBLE)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE TABLE per_key AS SELECT k, COUNT(*) AS n FROM orders GROUP BY k;",
    )
    .await;
    engine
        .store()
        .produce("orders", (0..70).map(input).collect())
        .await
        .unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    let namespace = "__eddy_query_CTAS_PER_KEY_1";
    let kept = |engine: &Engine| {
        engine
            .store()
            .state_scan_prefix(namespace, b"")
            .unwrap()
            .count()
    };
    assert!(kept(&engine) > 0, "the aggregation keeps its groups");
    run(&engine, &mut session, "TERMINATE CTAS_PER_KEY_1;").await;
    assert_eq!(kept(&engine), 0);
    // The table it wrote stays, with every group's count.
    let counts = values(engine.store(), "PER_KEY");
    assert!(counts.iter().any(|v| v.contains("10")), "{counts:?}");
    engine.shutdown().await;
}
