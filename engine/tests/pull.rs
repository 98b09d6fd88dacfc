//! Pull queries over tables answer from the table's materialized state: the latest row per
//! key, after updates and tombstones, across a restart, and not from a dropped table's topic.

use eddy_engine::query::transient::TransientEvent;
use eddy_engine::{Engine, Session};
use eddy_storage::Record;
use serde_json::{Value, json};

mod common;

use common::pull;

fn user(id: i64, name: &str, ts: i64) -> Record {
    Record::keyed(
        id.to_string().into_bytes(),
        format!(r#"{{"NAME": "{name}"}}"#).into_bytes(),
        ts,
    )
}

const USERS: &str = "CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING)
    WITH (kafka_topic='users', partitions=2, key_format='KAFKA', value_format='JSON');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_query_reads_the_latest_row_per_key_from_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(&engine, USERS).await;
    let store = engine.store().clone();
    // Keys as KAFKA BIGINTs are 8 bytes; these records are written as the producer would.
    let key = |id: i64| id.to_be_bytes().to_vec();
    let record = |id: i64, name: &str, ts: i64| Record {
        key: Some(key(id).into()),
        ..user(id, name, ts)
    };
    store
        .produce(
            "users",
            vec![
                record(1, "ann", 1),
                record(2, "bob", 2),
                record(1, "anne", 3),
                record(3, "cy", 4),
            ],
        )
        .await
        .unwrap();
    let all = "SELECT * FROM users;";
    assert_eq!(
        pull(&engine, all).await,
        vec![json!([1, "anne"]), json!([2, "bob"]), json!([3, "cy"])]
    );
    assert_eq!(
        pull(&engine, "SELECT name FROM users WHERE id = 2;").await,
        vec![json!(["bob"])]
    );
    // The same shape of lookup with other keys: planned once, answered per key.
    assert_eq!(
        pull(&engine, "SELECT name FROM users WHERE id = 3;").await,
        vec![json!(["cy"])]
    );
    assert_eq!(
        pull(&engine, "SELECT name FROM users WHERE id IN (1, 7, 2);").await,
        vec![json!(["anne"]), json!(["bob"])]
    );
    assert!(
        pull(&engine, "SELECT name FROM users WHERE id = 7;")
            .await
            .is_empty()
    );
    // A tombstone removes the row; later records are seen by the next pull query at once.
    store
        .produce(
            "users",
            vec![
                Record {
                    key: Some(key(2).into()),
                    value: None,
                    timestamp: 5,
                    headers: Vec::new(),
                },
                record(4, "di", 6),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        pull(&engine, all).await,
        vec![json!([1, "anne"]), json!([3, "cy"]), json!([4, "di"])]
    );
    // The answer came from the table's state: one entry per standing key.
    let kept = store
        .state_scan_prefix("__eddy_table/users", b"")
        .unwrap()
        .count();
    assert_eq!(kept, 3);
    // The state and where it stands survive a restart.
    engine.shutdown().await;
    engine.store().close().unwrap();
    drop((engine, store));
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    assert_eq!(
        pull(&engine, "SELECT * FROM users WHERE name <> 'cy';").await,
        vec![json!([1, "anne"]), json!([4, "di"])]
    );
    // A table dropped with its topic leaves nothing for a new table on a new topic of the
    // same name.
    common::run(&engine, "DROP TABLE users DELETE TOPIC;").await;
    common::run(&engine, USERS).await;
    engine
        .store()
        .produce(
            "users",
            vec![Record {
                key: Some(key(9).into()),
                ..user(9, "new", 7)
            }],
        )
        .await
        .unwrap();
    assert_eq!(pull(&engine, all).await, vec![json!([9, "new"])]);
    assert_eq!(
        pull(&engine, "SELECT name FROM users WHERE id = 9;").await,
        vec![json!(["new"])]
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_on_a_large_table_many_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE TABLE big (id BIGINT PRIMARY KEY, name STRING)
         WITH (kafka_topic='big', partitions=4, key_format='KAFKA', value_format='JSON');",
    )
    .await;
    let records: Vec<Record> = (0..20_000i64)
        .map(|id| {
            Record::keyed(
                id.to_be_bytes().to_vec(),
                format!(r#"{{"NAME":"n{id}"}}"#).into_bytes(),
                1_000 + id,
            )
        })
        .collect();
    engine.store().produce("big", records).await.unwrap();
    let started = std::time::Instant::now();
    let rows = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        pull(&engine, "SELECT name FROM big WHERE id = 12345;"),
    )
    .await
    .expect("the lookup took too long");
    assert_eq!(rows, vec![json!(["n12345"])], "{:?}", started.elapsed());
    engine.shutdown().await;
}

/// `ORDER BY` (beyond ksqlDB) sorts a pull query's whole answer before `LIMIT` applies: by a
/// column, an alias, a position or a selected expression, descending, with nulls where asked;
/// push and persistent queries refuse it with where it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_sorts_a_pull_querys_answer_before_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE TABLE scores (id STRING PRIMARY KEY, name STRING, points INT)
             WITH (kafka_topic='scores', partitions=2, value_format='JSON');
         CREATE STREAM plays (id STRING KEY, points INT)
             WITH (kafka_topic='plays', partitions=1, value_format='JSON');",
    )
    .await;
    let row =
        |id: &str, value: &str| Record::keyed(id.as_bytes().to_vec(), value.as_bytes().to_vec(), 1);
    engine
        .store()
        .produce(
            "scores",
            vec![
                row("a", r#"{"NAME": "ann", "POINTS": 30}"#),
                row("b", r#"{"NAME": "bob", "POINTS": 10}"#),
                row("c", r#"{"NAME": "cy", "POINTS": null}"#),
                row("d", r#"{"NAME": "di", "POINTS": 20}"#),
                row("e", r#"{"NAME": "ed", "POINTS": 30}"#),
            ],
        )
        .await
        .unwrap();
    let names =
        |rows: Vec<Value>| -> Vec<Value> { rows.into_iter().map(|r| r[0].clone()).collect() };

    // Ascending puts nulls last; ties keep the table's key order.
    assert_eq!(
        names(pull(&engine, "SELECT name, points FROM scores ORDER BY points;").await),
        vec![
            json!("bob"),
            json!("di"),
            json!("ann"),
            json!("ed"),
            json!("cy")
        ]
    );
    // Descending puts nulls first unless told otherwise; LIMIT applies after the sort.
    assert_eq!(
        names(
            pull(
                &engine,
                "SELECT name, points AS p FROM scores ORDER BY p DESC NULLS LAST, name DESC LIMIT 3;"
            )
            .await
        ),
        vec![json!("ed"), json!("ann"), json!("di")]
    );
    assert_eq!(
        names(
            pull(
                &engine,
                "SELECT name, points * 2 FROM scores ORDER BY points * 2 DESC, 1 LIMIT 2;"
            )
            .await
        ),
        vec![json!("cy"), json!("ann")]
    );
    assert_eq!(
        pull(
            &engine,
            "SELECT * FROM scores WHERE points > 15 ORDER BY 3, 1 DESC;"
        )
        .await,
        vec![
            json!(["d", "di", 20]),
            json!(["e", "ed", 30]),
            json!(["a", "ann", 30])
        ]
    );

    // Over a stream, the rows read are sorted too.
    engine
        .store()
        .produce(
            "plays",
            vec![
                row("x", r#"{"POINTS": 5}"#),
                row("y", r#"{"POINTS": 9}"#),
                row("z", r#"{"POINTS": 7}"#),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        names(
            pull(
                &engine,
                "SELECT id, points FROM plays ORDER BY points DESC LIMIT 2;"
            )
            .await
        ),
        vec![json!("y"), json!("z")]
    );

    // What cannot be ordered is refused with where it is.
    let refused = |sql: &'static str| {
        let engine = &engine;
        async move {
            match engine.query(&Session::default(), sql).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{sql} ran"),
            }
        }
    };
    let error = refused("SELECT name FROM scores ORDER BY points;").await;
    assert!(
        error.contains("Line: 1, Col: 34")
            && error.contains("ORDER BY `POINTS` is not a column of the result"),
        "{error}"
    );
    let error = refused("SELECT name FROM scores ORDER BY 3;").await;
    assert!(error.contains("ORDER BY position 3"), "{error}");
    let error = refused("SELECT * FROM plays ORDER BY points EMIT CHANGES;").await;
    assert!(
        error.contains("Line: 1, Col: 30") && error.contains("only supported in pull queries"),
        "{error}"
    );
    let error = engine
        .execute(
            &mut Session::default(),
            "CREATE STREAM sorted AS SELECT * FROM plays ORDER BY points;",
        )
        .await
        .expect_err("a persistent query with ORDER BY")
        .to_string();
    assert!(
        error.contains("Line: 1, Col: 54") && error.contains("only supported in pull queries"),
        "{error}"
    );
    engine.shutdown().await;
}

/// Aggregates over a table and joins between tables, at query time (beyond ksqlDB), answer
/// from the tables' latest rows: updates count once and deleted rows not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_aggregates_and_joins_over_tables_see_their_latest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE TABLE accounts (id STRING PRIMARY KEY, region STRING, balance INT)
             WITH (kafka_topic='accounts', partitions=2, value_format='JSON');
         CREATE TABLE regions (name STRING PRIMARY KEY, manager STRING)
             WITH (kafka_topic='regions', partitions=1, value_format='JSON');",
    )
    .await;
    let row = |id: &str, value: Option<&str>| Record {
        key: Some(id.as_bytes().to_vec().into()),
        value: value.map(|v| v.as_bytes().to_vec().into()),
        timestamp: 1,
        headers: Vec::new(),
    };
    engine
        .store()
        .produce(
            "accounts",
            vec![
                row("a", Some(r#"{"REGION": "eu", "BALANCE": 10}"#)),
                row("b", Some(r#"{"REGION": "eu", "BALANCE": 5}"#)),
                row("c", Some(r#"{"REGION": "us", "BALANCE": 7}"#)),
                // a moves to us with a new balance; b is deleted.
                row("a", Some(r#"{"REGION": "us", "BALANCE": 1}"#)),
                row("b", None),
                row("d", Some(r#"{"REGION": "apac", "BALANCE": 3}"#)),
            ],
        )
        .await
        .unwrap();
    engine
        .store()
        .produce(
            "regions",
            vec![
                row("us", Some(r#"{"MANAGER": "uma"}"#)),
                row("eu", Some(r#"{"MANAGER": "eve"}"#)),
                row("us", Some(r#"{"MANAGER": "ula"}"#)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        pull(
            &engine,
            "SELECT region, COUNT(*) AS n, SUM(balance) AS total FROM accounts GROUP BY region ORDER BY region;"
        )
        .await,
        vec![json!(["apac", 1, 3]), json!(["us", 2, 8])]
    );
    assert_eq!(
        pull(
            &engine,
            "SELECT a.id, a.balance, r.manager FROM accounts a
             LEFT JOIN regions r ON a.region = r.name ORDER BY a.id;"
        )
        .await,
        vec![
            json!(["a", 1, "ula"]),
            json!(["c", 7, "ula"]),
            json!(["d", 3, null])
        ]
    );
    engine.shutdown().await;
}

/// A pull query over a windowed table answers a row per key and window, whether or not it
/// selects the window bounds, and leaves out windows older than the table's `RETENTION`
/// behind its newest window, as ksqlDB's window store has dropped them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_pull_query_answers_per_window_within_retention() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM clicks (user STRING KEY, page STRING)
             WITH (kafka_topic='clicks', partitions=2, value_format='JSON');
         CREATE TABLE per_window AS SELECT user, COUNT(*) AS n FROM clicks
         WINDOW TUMBLING (SIZE 10 SECONDS, RETENTION 35 SECONDS, GRACE PERIOD 5 SECONDS)
         GROUP BY user;",
    )
    .await;
    let click = |user: &str, ts: i64| {
        Record::keyed(
            user.as_bytes().to_vec(),
            br#"{"page": "home"}"#.to_vec(),
            ts,
        )
    };
    engine
        .store()
        .produce(
            "clicks",
            vec![
                click("a", 1_000),
                click("a", 2_000),
                click("b", 15_000),
                click("a", 25_000),
            ],
        )
        .await
        .unwrap();
    assert!(
        engine
            .wait_until_processed(std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(
        pull(&engine, "SELECT user, n FROM per_window WHERE user = 'a';").await,
        vec![json!(["a", 2]), json!(["a", 1])]
    );
    // The newest window starts at 40 s: the one at 0 s is 40 s behind it, beyond the
    // retention of 35 s, and gone; the one at 10 s is not.
    engine
        .store()
        .produce("clicks", vec![click("b", 45_000)])
        .await
        .unwrap();
    assert!(
        engine
            .wait_until_processed(std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(
        pull(&engine, "SELECT * FROM per_window WHERE user = 'a';").await,
        vec![json!(["a", 20_000, 30_000, 1])]
    );
    assert_eq!(
        pull(&engine, "SELECT user, WINDOWSTART, n FROM per_window;").await,
        vec![
            json!(["a", 20_000, 1]),
            json!(["b", 10_000, 1]),
            json!(["b", 40_000, 1])
        ]
    );
    engine.shutdown().await;
}

/// Every row a pull query sends, or its error.
async fn pull_or_error(engine: &Engine, sql: &str) -> Result<Vec<Value>, String> {
    let mut query = engine
        .query(&Session::default(), sql)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    while let Some(event) = query.events.recv().await {
        match event {
            TransientEvent::Row { columns, .. } => rows.push(Value::Array(columns)),
            TransientEvent::Finished(_) => break,
            TransientEvent::Error(e) => return Err(e),
        }
    }
    Ok(rows)
}

/// A pull query holds rows back (to sort them, or to keep a table's latest row per key) only up
/// to `--pull-query-max-bytes`: past it, it fails with an error naming the flag; `ORDER BY`
/// with a `LIMIT` holds only the rows that can still be among the first, so it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_pull_query_holds_back_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = eddy_engine::EngineOptions {
        pull_query_max_bytes: 64 << 10,
        ..eddy_engine::EngineOptions::default()
    };
    let engine = Engine::open_with(common::open_store(dir.path()), options)
        .await
        .unwrap();
    common::run(
        &engine,
        "CREATE STREAM s (id INT KEY, v INT)
             WITH (kafka_topic='s', partitions=1, key_format='JSON', value_format='JSON');
         CREATE TABLE t (id INT PRIMARY KEY, v INT)
             WITH (kafka_topic='t', partitions=1, key_format='JSON', value_format='JSON');",
    )
    .await;
    let rows: Vec<Record> = (0..5_000i64)
        .map(|i| {
            Record::keyed(
                i.to_string().into_bytes(),
                format!(r#"{{"V": {}}}"#, (i * 7_919) % 5_000).into_bytes(),
                i,
            )
        })
        .collect();
    common::feed(&engine, "s", rows.clone()).await;
    common::feed(&engine, "t", rows).await;
    for sql in ["SELECT * FROM s ORDER BY v;", "SELECT * FROM t;"] {
        let error = pull_or_error(&engine, sql).await.unwrap_err();
        assert!(error.contains("--pull-query-max-bytes"), "{sql}: {error}");
    }
    let top = pull_or_error(&engine, "SELECT v FROM s ORDER BY v DESC LIMIT 3;")
        .await
        .unwrap();
    assert_eq!(top, [json!([4999]), json!([4998]), json!([4997])]);
    let one = pull_or_error(&engine, "SELECT * FROM t WHERE id = 7;")
        .await
        .unwrap();
    assert_eq!(one, [json!([7, (7 * 7_919) % 5_000])]);
    engine.shutdown().await;
}
