//! PostgreSQL change data capture against a real PostgreSQL (started by the test, see
//! `eddy_tests::postgres`): the snapshot, then inserts, updates and deletes in commit order
//! in Debezium's envelope, keyed by primary key with a tombstone after each delete; and a
//! connector stopped and started again, or cut off mid-stream, neither loses nor repeats a
//! change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use eddy_connect::postgres::{PostgresSource, PostgresSourceConfig};
use eddy_storage::{Store, StoreOptions};
use eddy_tests::postgres::{PASSWORD, Postgres};
use serde_json::{Value, json};
use tokio::sync::watch;

const TOPIC: &str = "shop.public.orders";

fn config(pg: &Postgres) -> PostgresSourceConfig {
    let props: BTreeMap<String, String> = [
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
    PostgresSourceConfig::from_properties(&props).unwrap()
}

/// Every record of the topic: key, and value as JSON (`None` for a tombstone).
fn records(store: &Store) -> Vec<(Option<Value>, Option<Value>)> {
    if !store.topic_exists(TOPIC) {
        return Vec::new();
    }
    store
        .read_records(TOPIC, 0, 0, usize::MAX)
        .unwrap()
        .records
        .into_iter()
        .map(|r| {
            let json = |b: bytes::Bytes| serde_json::from_slice::<Value>(&b).unwrap();
            (r.record.key.map(json), r.record.value.map(json))
        })
        .collect()
}

async fn wait_for(store: &Store, count: usize) -> Vec<(Option<Value>, Option<Value>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = records(store);
        if got.len() >= count || Instant::now() > deadline {
            assert_eq!(got.len(), count, "records: {got:#?}");
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running source and what stops it.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<eddy_connect::Result<()>>,
}

fn start(pg: &Postgres, store: &Store) -> Running {
    let (stop, stopped) = watch::channel(false);
    let source = PostgresSource::new("orders-cdc", config(pg), store.clone());
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
