//! PostgreSQL change data capture against a real PostgreSQL (started by the test, see
//! `eddy_tests::postgres`): the snapshot, then inserts, updates and deletes in commit order
//! in Debezium's envelope, keyed by primary key with a tombstone after each delete; and a
//! connector stopped and started again, or cut off mid-stream, neither loses nor repeats a
//! change.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_connect::postgres::{PostgresSource, PostgresSourceConfig};
use eddy_engine::connectors::ConnectorState;
use eddy_engine::{Engine, Session, StatementResult};
use eddy_storage::LogRecord;
use eddy_storage::{Store, StoreOptions};
use eddy_tests::log::{eventually, header, topic_records, wait_for_records};
use eddy_tests::postgres::{PASSWORD, Postgres};
use serde_json::{Value, json};
use tokio::sync::watch;

const TOPIC: &str = "shop.public.orders";

fn config(pg: &Postgres) -> PostgresSourceConfig {
    config_with(pg, &[])
}

fn config_with(pg: &Postgres, extra: &[(&str, &str)]) -> PostgresSourceConfig {
    let mut props: BTreeMap<String, String> = [
        (
            "connector.class",
            "io.debezium.connector.postgresql.PostgresConnector",
        ),
        ("database.hostname", "127.0.0.1"),
        ("database.port", &pg.port().to_string()),
        ("database.user", "postgres"),
        ("database.password", PASSWORD),
        ("database.dbname", "postgres"),
        ("topic.prefix", "shop"),
        ("table.include.list", "public.orders"),
        ("publication.autocreate.mode", "filtered"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    props.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PostgresSourceConfig::from_properties(&props).unwrap()
}

/// A record's key and value as JSON (`None` for a tombstone's value).
fn as_json(record: LogRecord) -> (Option<Value>, Option<Value>) {
    let json = |b: bytes::Bytes| serde_json::from_slice::<Value>(&b).unwrap();
    (record.record.key.map(json), record.record.value.map(json))
}

/// Every record of the topic, as JSON.
fn records(store: &Store) -> Vec<(Option<Value>, Option<Value>)> {
    topic_records(store, TOPIC)
        .into_iter()
        .map(as_json)
        .collect()
}

/// The topic's records, as JSON, once there are `count` of them.
async fn wait_for(store: &Store, count: usize) -> Vec<(Option<Value>, Option<Value>)> {
    let got = wait_for_records(store, TOPIC, count).await;
    got.into_iter().map(as_json).collect()
}

/// Waits for the connector's slot: its position is written once the snapshot is.
async fn wait_until_started(store: &Store, config: PostgresSourceConfig) {
    let source = PostgresSource::new("orders-cdc", config, store.clone());
    eventually("the connector never started", || {
        source.position().unwrap().lsn != 0
    })
    .await;
}

/// A running source and what stops it.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<eddy_connect::Result<()>>,
}

fn start(pg: &Postgres, store: &Store) -> Running {
    start_with(config(pg), store)
}

fn start_with(config: PostgresSourceConfig, store: &Store) -> Running {
    let (stop, stopped) = watch::channel(false);
    let source = PostgresSource::new("orders-cdc", config, store.clone());
    let task = tokio::spawn(async move { source.run(stopped).await });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// The envelope's `op` and the `id` of the row it is about.
fn op_and_id(value: &Value) -> (String, i64) {
    let row = if value["after"].is_null() {
        &value["before"]
    } else {
        &value["after"]
    };
    (
        value["op"].as_str().unwrap().to_string(),
        row["id"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_changes_in_commit_order_exactly_once_across_restarts() {
    let pg = Postgres::start().unwrap();
    let db = pg.connect().await.unwrap();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount numeric(10,2),
                              placed date, note text);
         CREATE TABLE elsewhere (id int PRIMARY KEY);
         INSERT INTO orders VALUES (1, 'new', 10.50, '2024-01-02', NULL),
                                   (2, 'new', 7.25, '2024-01-03', 'gift');
         INSERT INTO elsewhere VALUES (1);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();

    // The snapshot: both rows as reads, keyed by primary key.
    let running = start(&pg, &store);
    let got = wait_for(&store, 2).await;
    assert_eq!(got[0].0, Some(json!({"id": 1})));
    let first = got[0].1.as_ref().unwrap();
    assert_eq!(first["op"], "r");
    assert_eq!(
        first["after"],
        json!({"id": 1, "status": "new", "amount": "10.50", "placed": 19724, "note": null})
    );
    assert_eq!(first["source"]["snapshot"], "true");
    assert_eq!(first["source"]["table"], "orders");

    // Changes, each transaction whole and in commit order; another table is not captured.
    db.batch_execute(
        "BEGIN; INSERT INTO orders VALUES (3, 'new', 1.00, NULL, NULL);
                UPDATE orders SET status = 'paid' WHERE id = 1; COMMIT;
         DELETE FROM orders WHERE id = 2;
         INSERT INTO elsewhere VALUES (2);",
    )
    .await
    .unwrap();
    let got = wait_for(&store, 6).await;
    let ops: Vec<(String, i64)> = got[2..5]
        .iter()
        .map(|(_, v)| op_and_id(v.as_ref().unwrap()))
        .collect();
    assert_eq!(ops, vec![("c".into(), 3), ("u".into(), 1), ("d".into(), 2)]);
    let update = got[3].1.as_ref().unwrap();
    assert_eq!(update["after"]["status"], "paid");
    assert_eq!(update["source"]["snapshot"], "false");
    assert!(update["source"]["lsn"].as_u64().unwrap() > 0);
    let delete = got[4].1.as_ref().unwrap();
    assert_eq!(delete["before"]["id"], 2);
    // The delete's tombstone, for compacted topics.
    assert_eq!(got[5], (Some(json!({"id": 2})), None));
    running.stop().await;

    // Changes while the connector is stopped arrive once it is back, and nothing twice.
    db.batch_execute("INSERT INTO orders VALUES (4, 'new', 2.00, NULL, NULL);")
        .await
        .unwrap();
    let running = start(&pg, &store);
    let got = wait_for(&store, 7).await;
    assert_eq!(op_and_id(got[6].1.as_ref().unwrap()), ("c".into(), 4));

    // Cut off mid-stream (the task dropped without a clean stop) and started again: the
    // slot resends from what was acknowledged, and what the log holds is skipped.
    db.batch_execute("INSERT INTO orders VALUES (5, 'new', 3.00, NULL, NULL);")
        .await
        .unwrap();
    wait_for(&store, 8).await;
    running.task.abort();
    let _ = running.task.await;
    db.batch_execute(
        "INSERT INTO orders VALUES (6, 'new', 4.00, NULL, NULL);
         UPDATE orders SET status = 'shipped' WHERE id = 5;",
    )
    .await
    .unwrap();
    let running = start(&pg, &store);
    let got = wait_for(&store, 10).await;
    let tail: Vec<(String, i64)> = got[7..]
        .iter()
        .map(|(_, v)| op_and_id(v.as_ref().unwrap()))
        .collect();
    assert_eq!(
        tail,
        vec![("c".into(), 5), ("c".into(), 6), ("u".into(), 5)]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(records(&store).len(), 10, "nothing came twice");
    running.stop().await;

    // The slot was told how far the log holds, so PostgreSQL may recycle the WAL before it.
    let confirmed: String = db
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'debezium'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(confirmed, "0/0");
}

/// `topic`'s values, as JSON, once there are `count` of them.
async fn wait_for_topic(store: &Store, topic: &str, count: usize) -> Vec<Option<Value>> {
    let got = wait_for_records(store, topic, count).await;
    got.into_iter().map(|r| as_json(r).1).collect()
}

/// ksqlDB's statements: a connector made in SQL runs inside Eddy, a stream over its topic
/// reads Debezium's envelope, `SHOW CONNECTORS` and `DESCRIBE CONNECTOR` report it, it resumes
/// after Eddy restarts (replayed from the command log), and `DROP CONNECTOR` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_made_in_sql_feeds_a_query_and_resumes_after_a_restart() {
    let pg = Postgres::start().unwrap();
    let db = pg.connect().await.unwrap();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
         INSERT INTO orders VALUES (1, 'new'), (2, 'new');",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(Store::open(dir.path(), StoreOptions::default()).unwrap())
        .await
        .unwrap();
    let mut session = Session::default();
    let create = format!(
        "CREATE SOURCE CONNECTOR orders_cdc WITH (
           'connector.class' = 'io.debezium.connector.postgresql.PostgresConnector',
           'database.hostname' = '127.0.0.1', 'database.port' = '{}',
           'database.user' = 'postgres', 'database.password' = '{PASSWORD}',
           'database.dbname' = 'postgres', 'topic.prefix' = 'shop',
           'table.include.list' = 'public.orders');",
        pg.port()
    );
    let created = engine.execute(&mut session, &create).await.unwrap();
    let StatementResult::ConnectorInfo { name, config, .. } = &created[0] else {
        panic!("{created:?}");
    };
    assert_eq!(name, "ORDERS_CDC");
    assert_eq!(config["topic.prefix"], "shop");
    assert_eq!(
        config["database.password"], "********",
        "passwords are not shown"
    );
    wait_for_topic(engine.store(), TOPIC, 2).await;

    engine
        .execute(
            &mut session,
            "SET 'auto.offset.reset' = 'earliest';
             CREATE STREAM order_changes (op STRING, after STRUCT<id INT, status STRING>)
               WITH (kafka_topic = 'shop.public.orders', value_format = 'JSON');
             CREATE STREAM paid AS SELECT after->id AS id FROM order_changes
               WHERE op = 'u' AND after->status = 'paid';",
        )
        .await
        .unwrap();
    db.batch_execute("UPDATE orders SET status = 'paid' WHERE id = 2;")
        .await
        .unwrap();
    let paid = wait_for_topic(engine.store(), "PAID", 1).await;
    assert_eq!(paid[0], Some(json!({"ID": 2})));

    let shown = engine
        .execute(
            &mut session,
            "SHOW CONNECTORS; DESCRIBE CONNECTOR orders_cdc;",
        )
        .await
        .unwrap();
    let StatementResult::Connectors { connectors, .. } = &shown[0] else {
        panic!("{shown:?}");
    };
    assert_eq!(connectors.len(), 1);
    assert_eq!(connectors[0].state, ConnectorState::Running);
    let StatementResult::ConnectorDescription { connector, .. } = &shown[1] else {
        panic!("{shown:?}");
    };
    assert_eq!(connector.topics, vec![TOPIC.to_string()]);
    // Caught up: nothing of the server's WAL is left to read (once a keepalive said where
    // the server's end is).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = engine
            .execute(&mut session, "DESCRIBE CONNECTOR orders_cdc;")
            .await
            .unwrap();
        let StatementResult::ConnectorDescription { connector, .. } = &shown[0] else {
            panic!("{shown:?}");
        };
        if connector.wal_lag_bytes == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lag {:?}",
            connector.wal_lag_bytes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Eddy restarts: the connector comes back from the command log and resumes.
    engine.shutdown().await;
    let store = engine.store().clone();
    drop(engine);
    db.batch_execute(
        "INSERT INTO orders VALUES (3, 'new'); UPDATE orders SET status = 'paid' WHERE id = 3;",
    )
    .await
    .unwrap();
    let engine = Engine::open(store).await.unwrap();
    let changes = wait_for_topic(engine.store(), TOPIC, 5).await;
    assert_eq!(changes[4].as_ref().unwrap()["op"], "u");
    let paid = wait_for_topic(engine.store(), "PAID", 2).await;
    assert_eq!(paid[1], Some(json!({"ID": 3})));

    // A connector of a class Eddy does not run, or with a bad configuration, is refused
    // before anything is logged.
    let error = engine
        .execute(
            &mut session,
            "CREATE SOURCE CONNECTOR other WITH ('connector.class' = 'com.example.Nope');",
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("com.example.Nope"), "{error}");
    let error = engine
        .execute(
            &mut session,
            "CREATE SOURCE CONNECTOR other WITH (
               'connector.class' = 'io.debezium.connector.postgresql.PostgresConnector',
               'database.hostname' = '127.0.0.1');",
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("'database.user'"), "{error}");

    let dropped = engine
        .execute(&mut session, "DROP CONNECTOR orders_cdc; SHOW CONNECTORS;")
        .await
        .unwrap();
    assert!(
        matches!(&dropped[0], StatementResult::DropConnector { name, .. } if name == "ORDERS_CDC")
    );
    let StatementResult::Connectors { connectors, .. } = &dropped[1] else {
        panic!("{dropped:?}");
    };
    assert!(connectors.is_empty());
    engine.shutdown().await;
}

/// A transaction larger than `max.batch.size` is written in chunks, so memory holds one chunk,
/// not the transaction; cut off between its chunks and started again, the connector writes the
/// rest of it and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_is_written_in_chunks_and_resumed_exactly_once() {
    const ROWS: i64 = 5_000;
    let pg = Postgres::start().unwrap();
    let db = pg.connect().await.unwrap();
    db.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let chunked = || config_with(&pg, &[("max.batch.size", "100")]);
    let running = start_with(chunked(), &store);
    wait_until_started(&store, chunked()).await;
    db.batch_execute(&format!(
        "INSERT INTO orders SELECT g, 'new' FROM generate_series(1, {ROWS}) g;"
    ))
    .await
    .unwrap();
    // Cut off once some chunks, not all, are in the log.
    let mut written = 0;
    while written == 0 {
        written = if store.topic_exists(TOPIC) {
            store.end_offset(TOPIC, 0).unwrap()
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    running.task.abort();
    let _ = running.task.await;
    let cut_at = store.end_offset(TOPIC, 0).unwrap();
    assert!(
        cut_at < ROWS,
        "cut off after the whole transaction ({cut_at} records)"
    );
    assert_eq!(cut_at % 100, 0, "chunks of max.batch.size");

    let running = start_with(chunked(), &store);
    let got = wait_for(&store, ROWS as usize).await;
    let ids: Vec<i64> = got
        .iter()
        .map(|(_, v)| op_and_id(v.as_ref().unwrap()).1)
        .collect();
    assert_eq!(
        ids,
        (1..=ROWS).collect::<Vec<_>>(),
        "every row once, in order"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(records(&store).len(), ROWS as usize, "nothing came twice");
    running.stop().await;
}

/// The transactional outbox: a service writes its order and its event in one transaction (and
/// deletes the event row at once, as services often do); each event reaches the topic its
/// `aggregatetype` names, keyed by its `aggregateid`, its payload as the value and its id and
/// type as headers, once, while the deletes are not events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_events_are_routed_by_aggregate_type_and_keyed_by_aggregate() {
    let pg = Postgres::start().unwrap();
    let db = pg.connect().await.unwrap();
    db.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
         CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
                              aggregateid text NOT NULL, type text NOT NULL, payload jsonb);",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let config = config_with(
        &pg,
        &[
            ("table.include.list", "public.outbox"),
            ("transforms", "outbox"),
            (
                "transforms.outbox.type",
                "io.debezium.transforms.outbox.EventRouter",
            ),
            (
                "transforms.outbox.table.fields.additional.placement",
                "type:header:eventType",
            ),
        ],
    );
    let running = start_with(config, &store);
    wait_until_started(&store, config_with(&pg, &[])).await;
    for (id, status) in [(1, "new"), (2, "new"), (1, "paid")] {
        let event = uuid_like(id, status);
        db.batch_execute(&format!(
            "BEGIN;
             INSERT INTO orders VALUES ({id}, '{status}')
               ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status;
             INSERT INTO outbox VALUES ('{event}', 'order', '{id}', 'Order{status}',
               '{{\"order\": {id}, \"status\": \"{status}\"}}');
             DELETE FROM outbox WHERE id = '{event}';
             COMMIT;"
        ))
        .await
        .unwrap();
    }
    let topic = "outbox.event.order";
    wait_for_records(&store, topic, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = topic_records(&store, topic);
    assert_eq!(events.len(), 3, "each event once, no deletes");
    let keys: Vec<&[u8]> = events
        .iter()
        .map(|e| e.record.key.as_deref().unwrap())
        .collect();
    assert_eq!(keys, vec![&b"1"[..], b"2", b"1"]);
    let payload: Value = serde_json::from_slice(events[2].record.value.as_ref().unwrap()).unwrap();
    assert_eq!(payload, json!({"order": 1, "status": "paid"}));
    let header = |i: usize, name: &str| header(&events[i], name);
    assert_eq!(header(0, "id"), Some(uuid_like(1, "new")));
    assert_eq!(header(2, "eventType").as_deref(), Some("Orderpaid"));
    // The changes of the outbox table itself are not written.
    assert!(!store.topic_exists("shop.public.outbox"));
    running.stop().await;
}

/// A UUID made from an order and its status, so the test knows each event's id.
fn uuid_like(id: i64, status: &str) -> String {
    let n = status.bytes().fold(id as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}
