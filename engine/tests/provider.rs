//! Materialized tables as DataFusion tables: SQL planned by DataFusion (filters, ORDER BY,
//! aggregates, joins between tables) over consistent snapshots of their state, reading the
//! writes before each query, with key filters read as point reads or range scans.

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{SessionContext, ident, lit};
use eddy_engine::Engine;
use eddy_engine::query::provider::KeyScan;
use eddy_storage::Record;

mod common;

fn row(key: &[u8], value: &str) -> Record {
    Record::keyed(key.to_vec(), value.as_bytes().to_vec(), 1)
}

async fn sql(ctx: &SessionContext, query: &str) -> String {
    let batches = ctx
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datafusion_plans_sql_over_snapshots_of_materialized_tables() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING, region STRING)
             WITH (kafka_topic='users', partitions=2, key_format='KAFKA', value_format='JSON');
         CREATE TABLE orders (id STRING PRIMARY KEY, user BIGINT, amount INT)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE STREAM clicks (id STRING KEY) WITH (kafka_topic='clicks', partitions=1, value_format='JSON');",
    )
    .await;
    let store = engine.store().clone();
    let user = |id: i64, value: &str| row(&id.to_be_bytes(), value);
    store
        .produce(
            "users",
            vec![
                user(1, r#"{"NAME": "ann", "REGION": "eu"}"#),
                user(2, r#"{"NAME": "bob", "REGION": "us"}"#),
                user(3, r#"{"NAME": "cy", "REGION": "eu"}"#),
                // An update and a deletion: the state holds the latest row per key.
                user(1, r#"{"NAME": "anne", "REGION": "eu"}"#),
                Record {
                    value: None,
                    ..user(3, "")
                },
            ],
        )
        .await
        .unwrap();
    store
        .produce(
            "orders",
            vec![
                row(b"o1", r#"{"USER": 1, "AMOUNT": 10}"#),
                row(b"o2", r#"{"USER": 2, "AMOUNT": 5}"#),
                row(b"o3", r#"{"USER": 1, "AMOUNT": 7}"#),
                row(b"o4", r#"{"USER": 9, "AMOUNT": 1}"#),
            ],
        )
        .await
        .unwrap();

    let ctx = SessionContext::new();
    let users = engine.table_provider("users").await.unwrap();
    ctx.register_table("users", users.clone()).unwrap();
    ctx.register_table("orders", engine.table_provider("ORDERS").await.unwrap())
        .unwrap();

    assert_eq!(
        sql(&ctx, r#"SELECT "NAME" FROM users WHERE "ID" = 2"#).await,
        "+------+\n| NAME |\n+------+\n| bob  |\n+------+"
    );
    assert_eq!(
        sql(
            &ctx,
            r#"SELECT "ID", "NAME", "REGION" FROM users ORDER BY "NAME" DESC"#
        )
        .await,
        "+----+------+--------+\n| ID | NAME | REGION |\n+----+------+--------+\n| 2  | bob  | us     |\n| 1  | anne | eu     |\n+----+------+--------+"
    );
    // A join between two tables and an aggregate over it, at query time.
    assert_eq!(
        sql(
            &ctx,
            r#"SELECT u."NAME", SUM(o."AMOUNT") AS total, COUNT(*) AS n
               FROM orders o JOIN users u ON o."USER" = u."ID"
               GROUP BY u."NAME" ORDER BY total DESC"#
        )
        .await,
        "+------+-------+---+\n| NAME | total | n |\n+------+-------+---+\n| anne | 17    | 2 |\n| bob  | 5     | 1 |\n+------+-------+---+"
    );

    // Each scan first catches up with what was appended: a query reads its own writes.
    store
        .produce("users", vec![user(4, r#"{"NAME": "di", "REGION": "us"}"#)])
        .await
        .unwrap();
    assert_eq!(
        sql(
            &ctx,
            r#"SELECT "REGION", COUNT(*) AS n FROM users GROUP BY "REGION" ORDER BY "REGION""#
        )
        .await,
        "+--------+---+\n| REGION | n |\n+--------+---+\n| eu     | 1 |\n| us     | 2 |\n+--------+---+"
    );

    // Key filters narrow what a scan reads; anything else reads every key.
    let id = || ident("ID");
    assert_eq!(
        users.key_scan(&[id().eq(lit(2i64))]),
        KeyScan::Keys(vec![2i64.to_be_bytes().to_vec()])
    );
    assert_eq!(
        users.key_scan(&[
            ident("NAME").eq(lit("bob")),
            id().in_list(vec![lit(4i64), lit(1i64)], false)
        ]),
        KeyScan::Keys(vec![
            1i64.to_be_bytes().to_vec(),
            4i64.to_be_bytes().to_vec()
        ])
    );
    assert_eq!(
        users.key_scan(&[id().eq(lit(1i64)).or(lit(3i64).eq(id()))]),
        KeyScan::Keys(vec![
            1i64.to_be_bytes().to_vec(),
            3i64.to_be_bytes().to_vec()
        ])
    );
    assert_eq!(
        users.key_scan(&[ident("NAME").eq(lit("bob"))]),
        KeyScan::All
    );
    assert_eq!(
        users.key_scan(&[id().gt(lit(2i64))]),
        KeyScan::All,
        "BIGINT keys do not sort as their bytes"
    );
    let orders = engine.table_provider("orders").await.unwrap();
    let key = || ident("ID");
    assert_eq!(
        orders.key_scan(&[key().gt_eq(lit("o2")), key().lt(lit("o4"))]),
        KeyScan::Range {
            from: b"o2".to_vec(),
            to: Some(b"o4".to_vec())
        }
    );
    assert_eq!(
        orders.key_scan(&[lit("o3").lt(key()).and(key().lt_eq(lit("o9")))]),
        KeyScan::Range {
            from: b"o3\0".to_vec(),
            to: Some(b"o9\0".to_vec())
        }
    );
    let ctx_orders = SessionContext::new();
    ctx_orders
        .register_table("orders", Arc::clone(&orders) as _)
        .unwrap();
    assert_eq!(
        sql(
            &ctx_orders,
            r#"SELECT "ID" FROM orders WHERE "ID" > 'o1' AND "ID" <= 'o3' ORDER BY "ID""#
        )
        .await,
        "+----+\n| ID |\n+----+\n| o2 |\n| o3 |\n+----+"
    );

    // Only tables have state.
    let error = engine
        .table_provider("clicks")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("CLICKS is a stream"), "{error}");
    assert!(engine.table_provider("nope").await.is_err());
    engine.shutdown().await;
}
