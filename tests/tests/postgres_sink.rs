//! The PostgreSQL sink against a real PostgreSQL (started by the test): a table computed in
//! SQL is upserted into a reporting table, a tombstone deletes its key's row, and the sink
//! goes on from its committed offsets after PostgreSQL restarts under it.

use std::time::{Duration, Instant};

use eddy_engine::connectors::ConnectorState;
use eddy_engine::{Engine, Session, StatementResult};
use eddy_storage::{Store, StoreOptions};
use eddy_tests::log::{header, wait_for_records};
use eddy_tests::postgres::{PASSWORD, Postgres};

/// The reporting table the sink writes.
const REPORT: &str = "CREATE TABLE report (status text PRIMARY KEY, n bigint NOT NULL);";

/// A sink upserting `topic` into the reporting table by its key, with `more` settings.
fn create_sink(pg: &Postgres, topic: &str, more: &str) -> String {
    format!(
        "CREATE SINK CONNECTOR report_sink WITH (
           'connector.class' = 'io.confluent.connect.jdbc.JdbcSinkConnector',
           'connection.url' = 'jdbc:postgresql://127.0.0.1:{}/postgres',
           'connection.user' = 'postgres', 'connection.password' = '{PASSWORD}',
           'topics' = '{topic}', 'table.name.format' = 'report',
           'insert.mode' = 'upsert', 'pk.mode' = 'record_key', 'pk.fields' = 'status',
           {more});",
        pg.port()
    )
}

async fn rows(db: &tokio_postgres::Client) -> Vec<(String, i64)> {
    db.query("SELECT status, n FROM report ORDER BY status", &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

async fn wait_for_rows(pg: &Postgres, expected: &[(&str, i64)]) {
    let expected: Vec<(String, i64)> = expected.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A new connection each time: the server may have restarted.
        let got = match pg.connect().await {
            Ok(db) => rows(&db).await,
            Err(_) => Vec::new(),
        };
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "report: {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_is_upserted_into_postgres_and_survives_a_database_restart() {
    let (pg, _db) = Postgres::with_schema(REPORT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(Store::open(dir.path(), StoreOptions::default()).unwrap())
        .await
        .unwrap();
    let mut session = Session::default();
    engine
        .execute(
            &mut session,
            "SET 'auto.offset.reset' = 'earliest';
             SET 'cache.max.bytes.buffering' = '0';
             CREATE TABLE orders (id INT PRIMARY KEY, status STRING)
               WITH (kafka_topic = 'orders', partitions = 1, value_format = 'JSON');
             CREATE TABLE status_counts WITH (key_format = 'JSON') AS
               SELECT status, COUNT(*) AS n FROM orders GROUP BY status HAVING COUNT(*) > 0;
             INSERT INTO orders (id, status) VALUES (1, 'new');
             INSERT INTO orders (id, status) VALUES (2, 'new');
             INSERT INTO orders (id, status) VALUES (3, 'paid');",
        )
        .await
        .unwrap();
    let create = create_sink(&pg, "STATUS_COUNTS", "'delete.enabled' = 'true'");
    let created = engine.execute(&mut session, &create).await.unwrap();
    assert!(
        matches!(&created[0], StatementResult::ConnectorInfo { .. }),
        "{created:?}"
    );
    wait_for_rows(&pg, &[("new", 2), ("paid", 1)]).await;

    // PostgreSQL goes away under the sink: it fails, says so, and goes on once it is back.
    pg.stop("immediate").unwrap();
    engine
        .execute(
            &mut session,
            "INSERT INTO orders (id, status) VALUES (3, 'shipped');
             INSERT INTO orders (id, status) VALUES (4, 'new');",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = engine
            .execute(&mut session, "DESCRIBE CONNECTOR report_sink;")
            .await
            .unwrap();
        let StatementResult::ConnectorDescription { connector, .. } = &shown[0] else {
            panic!("{shown:?}");
        };
        if matches!(connector.state, ConnectorState::Failed(_)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink never noticed: {connector:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.start_server().unwrap();
    // Order 3 moved on: no order is paid, and the count's tombstone deleted its row.
    wait_for_rows(&pg, &[("new", 3), ("shipped", 1)]).await;
    engine.shutdown().await;
}

/// `errors.tolerance=all` with a dead-letter topic: a record that is not a JSON object, and one
/// whose value PostgreSQL's column cannot take, go to the dead-letter topic with their original
/// key and value and headers saying where they came from and why; the records around them are
/// written. Fixed and sent again from SQL, the row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_cannot_be_written_go_to_the_dead_letter_topic() {
    let (pg, _db) = Postgres::with_schema(REPORT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let engine = Engine::open(store.clone()).await.unwrap();
    let mut session = Session::default();
    let record =
        |key: &str, value: &str| eddy_storage::Record::keyed(key.to_string(), value.to_string(), 1);
    store.create_topic("counts", Default::default()).unwrap();
    store
        .produce(
            "counts",
            vec![
                record(r#""new""#, r#"{"N": 2}"#),
                record(r#""bad""#, r#"not json at all"#),
                record(r#""huge""#, r#"{"N": "many"}"#),
                record(r#""paid""#, r#"{"N": 1}"#),
            ],
        )
        .await
        .unwrap();
    let create = create_sink(
        &pg,
        "counts",
        "'errors.tolerance' = 'all', 'errors.deadletterqueue.topic.name' = 'counts_dlq'",
    );
    engine.execute(&mut session, &create).await.unwrap();
    wait_for_rows(&pg, &[("new", 2), ("paid", 1)]).await;

    let dead = wait_for_records(&store, "counts_dlq", 2).await;
    let header = |i: usize, name: &str| header(&dead[i], name).unwrap_or_default();
    assert_eq!(
        dead[0].record.value.as_deref(),
        Some(&b"not json at all"[..])
    );
    assert_eq!(header(0, "__connect.errors.topic"), "counts");
    assert_eq!(header(0, "__connect.errors.offset"), "1");
    assert_eq!(header(0, "__connect.errors.stage"), "VALUE_CONVERTER");
    assert_eq!(dead[1].record.key.as_deref(), Some(&br#""huge""#[..]));
    assert_eq!(header(1, "__connect.errors.offset"), "2");
    assert_eq!(header(1, "__connect.errors.stage"), "TASK_PUT");
    assert!(
        header(1, "__connect.errors.exception.message").contains("bigint"),
        "{}",
        header(1, "__connect.errors.exception.message")
    );

    // The cause fixed, the dead letters are sent again from SQL (docs/connectors.md's
    // example) and land; the one that is not JSON stays behind.
    engine
        .execute(
            &mut session,
            "SET 'auto.offset.reset' = 'earliest';
             CREATE STREAM report_updates (status STRING KEY, n BIGINT)
               WITH (kafka_topic = 'counts', key_format = 'JSON', value_format = 'JSON');
             CREATE STREAM report_dead (status STRING KEY, n STRING)
               WITH (kafka_topic = 'counts_dlq', key_format = 'JSON', value_format = 'JSON');
             INSERT INTO report_updates
               SELECT status, CAST(REPLACE(n, 'many', '1000') AS BIGINT) AS n FROM report_dead;",
        )
        .await
        .unwrap();
    wait_for_rows(&pg, &[("huge", 1000), ("new", 2), ("paid", 1)]).await;
    engine.shutdown().await;
}

/// The sink's state and lag, as `DESCRIBE CONNECTOR` reports them.
async fn described(engine: &Engine) -> (String, Option<u64>) {
    let shown = engine
        .execute(&mut Session::default(), "DESCRIBE CONNECTOR report_sink;")
        .await
        .unwrap();
    let StatementResult::ConnectorDescription { connector, .. } = &shown[0] else {
        panic!("{shown:?}");
    };
    (connector.state.name().to_string(), connector.lag)
}

/// `PAUSE CONNECTOR` stops the sink where it is, with its lag growing and nothing written, and
/// it stays paused across a restart of Eddy; `RESUME CONNECTOR` writes what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sink_writes_nothing_until_resumed_even_across_a_restart() {
    let (pg, _db) = Postgres::with_schema(REPORT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        (Engine::open(store.clone()).await.unwrap(), store)
    };
    let (engine, store) = open().await;
    let mut session = Session::default();
    let record =
        |key: &str, value: &str| eddy_storage::Record::keyed(key.to_string(), value.to_string(), 1);
    store.create_topic("counts", Default::default()).unwrap();
    store
        .produce("counts", vec![record(r#""new""#, r#"{"N": 1}"#)])
        .await
        .unwrap();
    engine
        .execute(
            &mut session,
            &create_sink(&pg, "counts", "'batch.size' = '10'"),
        )
        .await
        .unwrap();
    wait_for_rows(&pg, &[("new", 1)]).await;
    // The sink commits its position just after the rows land in PostgreSQL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while described(&engine).await != ("RUNNING".into(), Some(0))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(described(&engine).await, ("RUNNING".into(), Some(0)));

    let paused = engine
        .execute(&mut session, "PAUSE CONNECTOR report_sink;")
        .await
        .unwrap();
    assert!(
        matches!(&paused[0], StatementResult::CommandStatus { message, .. } if message == "Connector paused."),
        "{paused:?}"
    );
    store
        .produce(
            "counts",
            vec![
                record(r#""new""#, r#"{"N": 2}"#),
                record(r#""paid""#, r#"{"N": 1}"#),
            ],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(described(&engine).await, ("PAUSED".into(), Some(2)));
    wait_for_rows(&pg, &[("new", 1)]).await;

    engine.shutdown().await;
    store.close().unwrap();
    drop((engine, store));
    let (engine, _store) = open().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(described(&engine).await, ("PAUSED".into(), Some(2)));
    wait_for_rows(&pg, &[("new", 1)]).await;

    engine
        .execute(&mut session, "RESUME CONNECTOR report_sink;")
        .await
        .unwrap();
    wait_for_rows(&pg, &[("new", 2), ("paid", 1)]).await;
    let err = engine
        .execute(&mut session, "PAUSE CONNECTOR nobody;")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Connector NOBODY does not exist"), "{err}");
    engine.shutdown().await;
}
