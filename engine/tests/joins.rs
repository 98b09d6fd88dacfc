//! Joins end to end: stream–table lookups, windowed stream–stream joins and their outer
//! results, table–table joins on the key and on a foreign key, and join state that survives a
//! restart without repeating or losing a result.

use std::time::Duration;

use eddy_engine::Engine;
use eddy_storage::Record;

mod common;
use common::{fails, open_store, run, text_record as json, text_records as records};

/// Appends one record to `topic` and waits until every query has processed it.
async fn feed(engine: &Engine, topic: &str, record: Record) {
    common::feed(engine, topic, vec![record]).await;
}

fn row(key: &str, value: &str, ts: i64) -> (String, Option<String>, i64) {
    (key.to_string(), Some(value.to_string()), ts)
}

const USERS_AND_CLICKS: &str = "
    SET 'auto.offset.reset' = 'earliest';
    CREATE STREAM clicks (user STRING KEY, page STRING)
        WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
    CREATE TABLE users (id STRING PRIMARY KEY, name STRING, region STRING)
        WITH (kafka_topic='users', partitions=1, value_format='JSON');";

#[tokio::test]
async fn a_stream_table_join_looks_up_the_latest_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, USERS_AND_CLICKS).await;
    run(
        &engine,
        "CREATE STREAM enriched AS SELECT c.user, page, name, region
         FROM clicks c LEFT JOIN users u ON c.user = u.id;",
    )
    .await;
    feed(
        &engine,
        "users",
        json("u1", Some(r#"{"name":"Ann","region":"eu"}"#), 1),
    )
    .await;
    feed(&engine, "clicks", json("u1", Some(r#"{"page":"/a"}"#), 2)).await;
    feed(
        &engine,
        "users",
        json("u1", Some(r#"{"name":"Ann","region":"us"}"#), 3),
    )
    .await;
    feed(&engine, "clicks", json("u1", Some(r#"{"page":"/b"}"#), 4)).await;
    // No such user: a left join keeps the click with nulls.
    feed(&engine, "clicks", json("u2", Some(r#"{"page":"/c"}"#), 5)).await;
    // A deleted user is no longer found.
    feed(&engine, "users", json("u1", None, 6)).await;
    feed(&engine, "clicks", json("u1", Some(r#"{"page":"/d"}"#), 7)).await;
    assert_eq!(
        records(engine.store(), "ENRICHED"),
        [
            row("u1", r#"{"PAGE":"/a","NAME":"Ann","REGION":"eu"}"#, 2),
            row("u1", r#"{"PAGE":"/b","NAME":"Ann","REGION":"us"}"#, 4),
            row("u2", r#"{"PAGE":"/c","NAME":null,"REGION":null}"#, 5),
            row("u1", r#"{"PAGE":"/d","NAME":null,"REGION":null}"#, 7),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_stream_stream_left_join_with_grace_emits_unmatched_rows_when_the_window_closes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM orders (id STRING KEY, item STRING)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE STREAM shipments (id STRING KEY, carrier STRING)
             WITH (kafka_topic='shipments', partitions=1, value_format='JSON');
         CREATE STREAM tracked AS SELECT o.id, item, carrier FROM orders o
             LEFT JOIN shipments s WITHIN 10 SECONDS GRACE PERIOD 5 SECONDS ON o.id = s.id;",
    )
    .await;
    feed(
        &engine,
        "orders",
        json("a", Some(r#"{"item":"book"}"#), 1_000),
    )
    .await;
    feed(
        &engine,
        "orders",
        json("b", Some(r#"{"item":"pen"}"#), 2_000),
    )
    .await;
    feed(
        &engine,
        "shipments",
        json("a", Some(r#"{"carrier":"ups"}"#), 5_000),
    )
    .await;
    // Nothing for "b" yet: its window (until 12 s, plus 5 s of grace) is still open.
    assert_eq!(records(engine.store(), "TRACKED").len(), 1);
    // Time passes beyond b's window and grace: b comes out unmatched.
    feed(
        &engine,
        "orders",
        json("c", Some(r#"{"item":"cup"}"#), 30_000),
    )
    .await;
    assert_eq!(
        records(engine.store(), "TRACKED"),
        [
            row("a", r#"{"ITEM":"book","CARRIER":"ups"}"#, 5_000),
            row("b", r#"{"ITEM":"pen","CARRIER":null}"#, 2_000),
        ]
    );
    // A shipment too late for the window finds nothing to join.
    feed(
        &engine,
        "shipments",
        json("b", Some(r#"{"carrier":"dhl"}"#), 2_500),
    )
    .await;
    assert_eq!(records(engine.store(), "TRACKED").len(), 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_full_outer_table_join_follows_both_sides_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE stock (sku STRING PRIMARY KEY, qty INT)
             WITH (kafka_topic='stock', partitions=1, value_format='JSON');
         CREATE TABLE prices (sku STRING PRIMARY KEY, price DOUBLE)
             WITH (kafka_topic='prices', partitions=1, value_format='JSON');
         CREATE TABLE catalog AS SELECT ROWKEY AS sku, qty, price
             FROM stock s FULL OUTER JOIN prices p ON s.sku = p.sku;",
    )
    .await;
    feed(&engine, "stock", json("x", Some(r#"{"qty":3}"#), 1)).await;
    feed(&engine, "prices", json("x", Some(r#"{"price":9.5}"#), 2)).await;
    feed(&engine, "prices", json("y", Some(r#"{"price":1.0}"#), 3)).await;
    feed(&engine, "stock", json("x", None, 4)).await;
    feed(&engine, "prices", json("x", None, 5)).await;
    // Deleting a row that was never there changes nothing.
    feed(&engine, "stock", json("z", None, 6)).await;
    assert_eq!(
        records(engine.store(), "CATALOG"),
        [
            row("x", r#"{"QTY":3,"PRICE":null}"#, 1),
            row("x", r#"{"QTY":3,"PRICE":9.5}"#, 2),
            row("y", r#"{"QTY":null,"PRICE":1.0}"#, 3),
            row("x", r#"{"QTY":null,"PRICE":9.5}"#, 4),
            ("x".to_string(), None, 5),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_foreign_key_join_updates_every_row_that_points_at_a_changed_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE orders (id STRING PRIMARY KEY, customer STRING, total INT)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE TABLE customers (id STRING PRIMARY KEY, name STRING)
             WITH (kafka_topic='customers', partitions=1, value_format='JSON');
         CREATE TABLE order_names AS SELECT o.id, total, name
             FROM orders o JOIN customers c ON o.customer = c.id;",
    )
    .await;
    feed(
        &engine,
        "customers",
        json("c1", Some(r#"{"name":"Ann"}"#), 1),
    )
    .await;
    feed(
        &engine,
        "orders",
        json("o1", Some(r#"{"customer":"c1","total":5}"#), 2),
    )
    .await;
    feed(
        &engine,
        "orders",
        json("o2", Some(r#"{"customer":"c1","total":7}"#), 3),
    )
    .await;
    feed(
        &engine,
        "customers",
        json("c1", Some(r#"{"name":"Anna"}"#), 4),
    )
    .await;
    // o1 moves to a customer that does not exist: the inner result is deleted.
    feed(
        &engine,
        "orders",
        json("o1", Some(r#"{"customer":"c9","total":5}"#), 5),
    )
    .await;
    assert_eq!(
        records(engine.store(), "ORDER_NAMES"),
        [
            row("o1", r#"{"TOTAL":5,"NAME":"Ann"}"#, 2),
            row("o2", r#"{"TOTAL":7,"NAME":"Ann"}"#, 3),
            row("o1", r#"{"TOTAL":5,"NAME":"Anna"}"#, 4),
            row("o2", r#"{"TOTAL":7,"NAME":"Anna"}"#, 4),
            ("o1".to_string(), None, 5),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn join_errors_follow_ksqldb() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, USERS_AND_CLICKS).await;
    run(
        &engine,
        "CREATE TABLE wide (id STRING PRIMARY KEY, v INT)
             WITH (kafka_topic='wide', partitions=3, value_format='JSON');",
    )
    .await;
    for (sql, expected) in [
        (
            "CREATE STREAM x AS SELECT * FROM clicks c FULL OUTER JOIN users u ON c.user = u.id;",
            "Invalid join type: full-outer join not supported for stream-table join",
        ),
        (
            "CREATE STREAM x AS SELECT * FROM clicks c JOIN users u ON c.page = u.name;",
            "stream-table joins require to join on the table's primary key. Got C.PAGE = U.NAME.",
        ),
        (
            "CREATE STREAM x AS SELECT page FROM clicks c JOIN users u ON c.user = u.id;",
            "must include the join expressions C.USER or U.ID in its projection",
        ),
        (
            "CREATE STREAM x AS SELECT * FROM clicks a JOIN clicks b WITHIN 1 SECOND ON a.user = b.user;",
            "self joins are not yet supported",
        ),
        (
            "CREATE STREAM x AS SELECT c.user, v FROM clicks c JOIN wide w ON c.user = w.id;",
            "Can't join `CLICKS` with `WIDE` since the number of partitions don't match. `CLICKS` partitions = 1; `WIDE` partitions = 3.",
        ),
    ] {
        let message = fails(&engine, sql).await;
        assert!(message.contains(expected), "{sql}\n{message}");
    }
    // Re-keying the stream lifts the requirement, as ksqlDB repartitions it.
    run(
        &engine,
        "CREATE STREAM y AS SELECT page, v FROM clicks c JOIN wide w ON c.page = w.id;",
    )
    .await;
    engine.shutdown().await;
}

#[tokio::test]
async fn join_state_survives_a_restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let total = 4_000usize;
    {
        let engine = Engine::open(open_store(dir.path())).await.unwrap();
        run(&engine, USERS_AND_CLICKS).await;
        let users = (0..10)
            .map(|i| json(&format!("u{i}"), Some(&format!(r#"{{"name":"n{i}"}}"#)), 0))
            .collect();
        engine.store().produce("users", users).await.unwrap();
        run(
            &engine,
            "SET 'auto.offset.reset' = 'earliest';
             CREATE STREAM enriched AS SELECT c.user, page, name FROM clicks c JOIN users u ON c.user = u.id;",
        )
        .await;
        assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
        for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
            let batch = chunk
                .iter()
                .map(|&i| {
                    json(
                        &format!("u{}", i % 10),
                        Some(&format!(r#"{{"page":"p{i}"}}"#)),
                        1 + i as i64,
                    )
                })
                .collect();
            engine.store().produce("clicks", batch).await.unwrap();
        }
        // Stop once some, and usually not all, of the clicks are joined.
        while records(engine.store(), "ENRICHED").is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        engine.shutdown().await;
        engine.store().close().unwrap();
    }
    // The users table is read back from the join's state, not from the beginning again.
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(60)).await);
    let all = records(engine.store(), "ENRICHED");
    assert_eq!(all.len(), total, "one result per click, none twice");
    for (i, (key, value, ts)) in all.iter().enumerate() {
        assert_eq!(key, &format!("u{}", i % 10));
        assert_eq!(
            value.as_deref(),
            Some(format!(r#"{{"PAGE":"p{i}","NAME":"n{}"}}"#, i % 10).as_str())
        );
        assert_eq!(*ts, 1 + i as i64);
    }
    engine.shutdown().await;
}

/// Writes a backlog of `clicks` and then `users` before the query `enriched` (over both, by
/// `select`) starts; what it wrote once it read them all.
async fn join_over_backlog(
    clicks: Vec<Record>,
    users: Vec<Record>,
    select: &str,
) -> Vec<(String, Option<String>, i64)> {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, USERS_AND_CLICKS).await;
    engine.store().produce("clicks", clicks).await.unwrap();
    engine.store().produce("users", users).await.unwrap();
    run(
        &engine,
        &format!(
            "SET 'auto.offset.reset' = 'earliest';
             CREATE STREAM enriched AS {select} FROM clicks c JOIN users u ON c.user = u.id;"
        ),
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(10)).await);
    let got = records(engine.store(), "ENRICHED");
    engine.shutdown().await;
    got
}

#[tokio::test]
async fn inputs_are_merged_in_timestamp_order_so_a_table_is_loaded_before_later_clicks() {
    // The clicks were written first but happened after the users were registered.
    let clicks = (0..5)
        .map(|i| json("u1", Some(&format!(r#"{{"page":"p{i}"}}"#)), 100 + i))
        .collect();
    let users = vec![json("u1", Some(r#"{"name":"Ann"}"#), 50)];
    let got = join_over_backlog(clicks, users, "SELECT c.user, page, name").await;
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(
        got.iter()
            .all(|(_, v, _)| v.as_deref().is_some_and(|v| v.contains("Ann")))
    );
}

#[tokio::test]
async fn a_table_row_written_in_the_same_millisecond_as_a_stream_record_is_joined() {
    // The stream is the join's first input and its records come first in its topic, yet the
    // users registered in the same millisecond as their clicks are found.
    let clicks = (0..3)
        .map(|i| json(&format!("u{i}"), Some(r#"{"page":"/"}"#), 100 + i))
        .collect();
    let users = (0..3)
        .map(|i| {
            json(
                &format!("u{i}"),
                Some(&format!(r#"{{"name":"n{i}"}}"#)),
                100 + i,
            )
        })
        .collect();
    assert_eq!(
        join_over_backlog(clicks, users, "SELECT c.user, name").await,
        [
            row("u0", r#"{"NAME":"n0"}"#, 100),
            row("u1", r#"{"NAME":"n1"}"#, 101),
            row("u2", r#"{"NAME":"n2"}"#, 102),
        ]
    );
}

#[tokio::test]
async fn a_stream_is_enriched_by_two_tables_in_one_query() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM clicks (user STRING KEY, page STRING)
             WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
         CREATE TABLE users (id STRING PRIMARY KEY, name STRING, region STRING)
             WITH (kafka_topic='users', partitions=1, value_format='JSON');
         CREATE TABLE regions (id STRING PRIMARY KEY, label STRING)
             WITH (kafka_topic='regions', partitions=1, value_format='JSON');
         CREATE STREAM enriched AS SELECT u.region, page, name, label
             FROM clicks c JOIN users u ON c.user = u.id
             LEFT JOIN regions r ON u.region = r.id;",
    )
    .await;
    feed(
        &engine,
        "regions",
        json("eu", Some(r#"{"label":"Europe"}"#), 1),
    )
    .await;
    feed(
        &engine,
        "users",
        json("u1", Some(r#"{"name":"Ann","region":"eu"}"#), 2),
    )
    .await;
    feed(
        &engine,
        "users",
        json("u2", Some(r#"{"name":"Bob","region":"mars"}"#), 3),
    )
    .await;
    feed(&engine, "clicks", json("u1", Some(r#"{"page":"/a"}"#), 4)).await;
    feed(&engine, "clicks", json("u2", Some(r#"{"page":"/b"}"#), 5)).await;
    // No such user: the inner join drops the click before the second join sees it.
    feed(&engine, "clicks", json("u3", Some(r#"{"page":"/c"}"#), 6)).await;
    assert_eq!(
        records(engine.store(), "ENRICHED"),
        [
            row("eu", r#"{"PAGE":"/a","NAME":"Ann","LABEL":"Europe"}"#, 4),
            row("mars", r#"{"PAGE":"/b","NAME":"Bob","LABEL":null}"#, 5),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_chain_of_table_joins_follows_changes_and_deletes_through_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE a (id STRING PRIMARY KEY, x INT)
             WITH (kafka_topic='a', partitions=1, value_format='JSON');
         CREATE TABLE b (id STRING PRIMARY KEY, y INT)
             WITH (kafka_topic='b', partitions=1, value_format='JSON');
         CREATE TABLE c (id STRING PRIMARY KEY, z INT)
             WITH (kafka_topic='c', partitions=1, value_format='JSON');
         CREATE TABLE abc AS SELECT a.id, x, y, z
             FROM a JOIN b ON a.id = b.id JOIN c ON a.id = c.id;",
    )
    .await;
    feed(&engine, "a", json("k", Some(r#"{"x":1}"#), 1)).await;
    feed(&engine, "b", json("k", Some(r#"{"y":2}"#), 2)).await;
    feed(&engine, "c", json("k", Some(r#"{"z":3}"#), 3)).await;
    feed(&engine, "b", json("k", Some(r#"{"y":20}"#), 4)).await;
    feed(&engine, "b", json("k", None, 5)).await;
    assert_eq!(
        records(engine.store(), "ABC"),
        [
            row("k", r#"{"X":1,"Y":2,"Z":3}"#, 3),
            row("k", r#"{"X":1,"Y":20,"Z":3}"#, 4),
            ("k".to_string(), None, 5),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_join_can_be_aggregated_in_the_same_query() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, USERS_AND_CLICKS).await;
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE clicks_per_region AS SELECT region, COUNT(*) AS clicks
             FROM clicks c JOIN users u ON c.user = u.id GROUP BY region;",
    )
    .await;
    feed(
        &engine,
        "users",
        json("u1", Some(r#"{"name":"Ann","region":"eu"}"#), 1),
    )
    .await;
    feed(
        &engine,
        "users",
        json("u2", Some(r#"{"name":"Bob","region":"us"}"#), 2),
    )
    .await;
    feed(&engine, "clicks", json("u1", Some(r#"{"page":"/a"}"#), 3)).await;
    feed(&engine, "clicks", json("u2", Some(r#"{"page":"/b"}"#), 4)).await;
    feed(&engine, "clicks", json("u1", Some(r#"{"page":"/c"}"#), 5)).await;
    // A click by an unknown user joins nothing, so counts nowhere.
    feed(&engine, "clicks", json("u9", Some(r#"{"page":"/d"}"#), 6)).await;
    assert_eq!(
        records(engine.store(), "CLICKS_PER_REGION"),
        [
            row("eu", r#"{"CLICKS":1}"#, 3),
            row("us", r#"{"CLICKS":1}"#, 4),
            row("eu", r#"{"CLICKS":2}"#, 5),
        ]
    );
    engine.shutdown().await;
}

/// Runs a stream–table, a windowed stream–stream left, a full outer table–table and a
/// foreign-key join over the same changing inputs, with a join state cache of `entries`;
/// what each writes.
async fn join_outputs_with_state_cache(entries: usize) -> Vec<Vec<(String, Option<String>, i64)>> {
    let dir = tempfile::tempdir().unwrap();
    let options = eddy_engine::EngineOptions {
        state_cache_entries: entries,
        ..eddy_engine::EngineOptions::default()
    };
    let engine = Engine::open_with(open_store(dir.path()), options)
        .await
        .unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM clicks (user STRING KEY, page STRING)
             WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
         CREATE STREAM views (user STRING KEY, seconds INT)
             WITH (kafka_topic='views', partitions=1, value_format='JSON');
         CREATE TABLE users (id STRING PRIMARY KEY, name STRING, team STRING)
             WITH (kafka_topic='users', partitions=1, value_format='JSON');
         CREATE TABLE teams (id STRING PRIMARY KEY, label STRING)
             WITH (kafka_topic='teams', partitions=1, value_format='JSON');
         CREATE TABLE scores (id STRING PRIMARY KEY, score INT)
             WITH (kafka_topic='scores', partitions=1, value_format='JSON');
         CREATE STREAM enriched AS SELECT c.user, page, name
             FROM clicks c LEFT JOIN users u ON c.user = u.id;
         CREATE STREAM watched AS SELECT c.user, page, seconds
             FROM clicks c LEFT JOIN views v WITHIN 2 SECONDS GRACE PERIOD 1 SECOND
             ON c.user = v.user;
         CREATE TABLE scored AS SELECT ROWKEY AS id, name, score
             FROM users u FULL OUTER JOIN scores s ON u.id = s.id;
         CREATE TABLE labelled AS SELECT u.id, name, label
             FROM users u JOIN teams t ON u.team = t.id;",
    )
    .await;
    for round in 0..8i64 {
        let at = |i: i64| round * 1_500 + i * 37;
        let users = (0..12i64)
            .map(|i| {
                let id = format!("u{}", (i * 5 + round) % 17);
                let value = (i % 7 != 3)
                    .then(|| format!(r#"{{"name":"n{i}r{round}","team":"t{}"}}"#, (i + round) % 4));
                json(&id, value.as_deref(), at(i))
            })
            .collect();
        common::feed(&engine, "users", users).await;
        let teams = (0..3i64)
            .map(|i| {
                let id = format!("t{}", (i + round) % 5);
                let value = format!(r#"{{"label":"L{i}r{round}"}}"#);
                json(&id, (round % 3 != 2).then_some(value.as_str()), at(i) + 5)
            })
            .collect();
        common::feed(&engine, "teams", teams).await;
        let scores = (0..9i64)
            .map(|i| {
                let id = format!("u{}", (i * 3 + round) % 19);
                let value = format!(r#"{{"score":{}}}"#, i * round);
                json(&id, (i % 4 != 1).then_some(value.as_str()), at(i) + 7)
            })
            .collect();
        common::feed(&engine, "scores", scores).await;
        let views = (0..10i64)
            .map(|i| {
                let user = format!("u{}", (i * 3 + round) % 13);
                json(&user, Some(&format!(r#"{{"seconds":{i}}}"#)), at(i) + 11)
            })
            .collect();
        common::feed(&engine, "views", views).await;
        let clicks = (0..15i64)
            .map(|i| {
                let user = format!("u{}", (i * 7 + round) % 17);
                json(&user, Some(&format!(r#"{{"page":"p{i}"}}"#)), at(i) + 13)
            })
            .collect();
        common::feed(&engine, "clicks", clicks).await;
    }
    let store = engine.store().clone();
    engine.shutdown().await;
    ["ENRICHED", "WATCHED", "SCORED", "LABELLED"]
        .iter()
        .map(|topic| records(&store, topic))
        .collect()
}

/// Join state beyond the cache is dropped once stored and read back as records need it: with a
/// cache of three entries, dropped at almost every commit, every kind of join writes exactly
/// what it writes with its whole state in memory.
#[tokio::test]
async fn join_state_beyond_the_cache_is_read_through_with_the_same_results() {
    let everything_in_memory = join_outputs_with_state_cache(usize::MAX).await;
    let three_entries = join_outputs_with_state_cache(3).await;
    for output in &everything_in_memory {
        assert!(output.len() > 20, "{output:?}");
    }
    assert_eq!(three_entries, everything_in_memory);
}

/// A windowed key: the user, then the window start (8 bytes, big-endian).
fn windowed(user: &str, start: i64) -> Vec<u8> {
    let mut key = user.as_bytes().to_vec();
    key.extend_from_slice(&start.to_be_bytes());
    key
}

/// Beyond ksqlDB: a windowed table looks up a plain table on a foreign key made of its window
/// start, and the result, keyed by the windowed table's key and window, follows both sides.
#[tokio::test]
async fn a_windowed_table_joins_a_table_on_its_window_start() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE visits (user STRING PRIMARY KEY, n BIGINT)
           WITH (kafka_topic='visits', partitions=1, value_format='JSON',
                 window_type='TUMBLING', window_size='10 MILLISECONDS');
         CREATE TABLE quota (start BIGINT PRIMARY KEY, most BIGINT)
           WITH (kafka_topic='quota', partitions=1, value_format='JSON');
         CREATE TABLE over_quota AS
           SELECT v.user, v.n AS n, q.most AS most, v.windowstart AS ws
           FROM visits v JOIN quota q ON v.windowstart = q.start
           WHERE v.n > q.most;",
    )
    .await;
    let visit = |user: &str, start: i64, n: i64, ts: i64| {
        Record::keyed(
            windowed(user, start),
            format!(r#"{{"n":{n}}}"#).into_bytes(),
            ts,
        )
    };
    let quota = |start: i64, most: i64, ts: i64| {
        Record::keyed(
            start.to_be_bytes().to_vec(),
            format!(r#"{{"most":{most}}}"#).into_bytes(),
            ts,
        )
    };
    feed(&engine, "quota", quota(0, 1, 1)).await;
    feed(&engine, "visits", visit("u1", 0, 2, 2)).await;
    // No quota for window 10 yet: an inner join has nothing for it.
    feed(&engine, "visits", visit("u2", 10, 5, 12)).await;
    feed(&engine, "quota", quota(10, 3, 13)).await;
    // Window 0's quota rises past u1's visits: u1's row for it goes.
    feed(&engine, "quota", quota(0, 5, 14)).await;
    let got: Vec<(Vec<u8>, Option<String>)> = common::records(engine.store(), "OVER_QUOTA")
        .into_iter()
        .map(|(k, v, _)| (k.unwrap_or_default(), v))
        .collect();
    assert_eq!(
        got,
        [
            (
                windowed("u1", 0),
                Some(r#"{"N":2,"MOST":1,"WS":0}"#.to_string())
            ),
            (
                windowed("u2", 10),
                Some(r#"{"N":5,"MOST":3,"WS":10}"#.to_string())
            ),
            (windowed("u1", 0), None),
        ]
    );
    // Joined on its key, a windowed table still needs a windowed table, as in ksqlDB.
    let err = fails(
        &engine,
        "CREATE TABLE t AS SELECT v.user, q.most FROM visits v JOIN quota q ON v.user = q.start;",
    )
    .await;
    assert!(
        err.contains("Can not join windowed source to non-windowed source"),
        "{err}"
    );
    engine.shutdown().await;
}

const BIDS_AND_TOP: &str = "
    SET 'auto.offset.reset' = 'earliest';
    CREATE STREAM bids (item STRING KEY, price BIGINT)
        WITH (kafka_topic='bids', partitions=1, value_format='JSON');
    CREATE TABLE top AS SELECT MAX(price) AS best
        FROM bids WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 0 MILLISECONDS)
        EMIT FINAL;";

/// A bid on `item` at `price`, at time `ts`.
fn bid(item: &str, price: i64, ts: i64) -> Record {
    json(item, Some(&format!(r#"{{"price":{price}}}"#)), ts)
}

/// Beyond ksqlDB: a windowed aggregate without GROUP BY is keyed by its window alone, and a
/// stream joined with such a table's final rows gets its own window's row once the window
/// closes: the bids at each window's highest price (Nexmark's q7).
#[tokio::test]
async fn a_stream_joins_its_windows_final_row_once_the_window_closes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, BIDS_AND_TOP).await;
    run(
        &engine,
        "CREATE STREAM winners AS SELECT b.item AS item, b.price AS price, t.windowstart AS ws
         FROM bids b JOIN top t ON b.price = t.best;",
    )
    .await;
    feed(&engine, "bids", bid("a", 5, 1)).await;
    feed(&engine, "bids", bid("b", 7, 3)).await;
    feed(&engine, "bids", bid("c", 7, 8)).await;
    // Window 0 is open: its bids wait for its final row.
    assert!(records(engine.store(), "WINNERS").is_empty());
    // A bid of window 10 closes window 0: its maximum is written, and its bids at it join.
    feed(&engine, "bids", bid("d", 2, 12)).await;
    feed(&engine, "bids", bid("e", 4, 15)).await;
    let price_key = |p: i64| String::from_utf8_lossy(&p.to_be_bytes()).into_owned();
    assert_eq!(
        records(engine.store(), "WINNERS"),
        [
            (price_key(7), Some(r#"{"ITEM":"b","WS":0}"#.to_string()), 3),
            (price_key(7), Some(r#"{"ITEM":"c","WS":0}"#.to_string()), 8),
        ]
    );
    // The table is keyed by its window alone: the key is the window start.
    let top: Vec<(Option<Vec<u8>>, Option<String>)> = common::records(engine.store(), "TOP")
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(
        top,
        [(
            Some(0i64.to_be_bytes().to_vec()),
            Some(r#"{"BEST":7}"#.to_string())
        )]
    );
    // Window 10 closes too.
    feed(&engine, "bids", bid("f", 1, 20)).await;
    assert_eq!(
        records(engine.store(), "WINNERS").last(),
        Some(&(
            price_key(4),
            Some(r#"{"ITEM":"e","WS":10}"#.to_string()),
            15
        ))
    );
    engine.shutdown().await;
}

/// A left join emits a record whose window closed without a row for its key, and the table
/// may be joined on its key; the table must be tumbling and written with EMIT FINAL.
#[tokio::test]
async fn a_left_join_with_a_windowed_table_keeps_records_whose_window_has_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, BIDS_AND_TOP).await;
    run(
        &engine,
        "CREATE TABLE big AS SELECT item, COUNT(*) AS n
           FROM bids WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 0 MILLISECONDS)
           WHERE price > 10 GROUP BY item EMIT FINAL;
         CREATE STREAM marked AS SELECT b.item AS item, b.price AS price, g.n AS big_bids
           FROM bids b LEFT JOIN big g ON b.item = g.item;",
    )
    .await;
    feed(&engine, "bids", bid("a", 50, 1)).await;
    feed(&engine, "bids", bid("b", 5, 2)).await;
    feed(&engine, "bids", bid("a", 60, 3)).await;
    feed(&engine, "bids", bid("a", 1, 11)).await;
    // Window 0 has closed with a row for `a` only; `b`'s record waits until the table shows
    // it is past window 0, at its next row (window 10's, closed at 25).
    feed(&engine, "bids", bid("c", 70, 12)).await;
    assert_eq!(records(engine.store(), "MARKED").len(), 2);
    feed(&engine, "bids", bid("z", 99, 25)).await;
    assert_eq!(
        records(engine.store(), "MARKED"),
        [
            row("a", r#"{"PRICE":50,"BIG_BIDS":2}"#, 1),
            row("a", r#"{"PRICE":60,"BIG_BIDS":2}"#, 3),
            row("c", r#"{"PRICE":70,"BIG_BIDS":1}"#, 12),
            row("b", r#"{"PRICE":5,"BIG_BIDS":null}"#, 2),
        ]
    );
    // `a`'s bid of window 10 (filtered out of the table) goes once window 20 is known to be
    // the table's.
    feed(&engine, "bids", bid("z", 99, 35)).await;
    assert_eq!(
        records(engine.store(), "MARKED").last(),
        Some(&row("a", r#"{"PRICE":1,"BIG_BIDS":null}"#, 11))
    );
    run(
        &engine,
        "CREATE TABLE changing AS SELECT item, COUNT(*) AS n
           FROM bids WINDOW TUMBLING (SIZE 10 MILLISECONDS) GROUP BY item;
         CREATE TABLE hops AS SELECT item, COUNT(*) AS n
           FROM bids WINDOW HOPPING (SIZE 10 MILLISECONDS, ADVANCE BY 5 MILLISECONDS)
           GROUP BY item EMIT FINAL;",
    )
    .await;
    let err = fails(
        &engine,
        "CREATE STREAM s1 AS SELECT b.item, c.n FROM bids b JOIN changing c ON b.item = c.item;",
    )
    .await;
    assert!(
        err.contains("not written by a query with EMIT FINAL"),
        "{err}"
    );
    let err = fails(
        &engine,
        "CREATE STREAM s2 AS SELECT b.item, h.n FROM bids b JOIN hops h ON b.item = h.item;",
    )
    .await;
    assert!(err.contains("HOPPING windowed table"), "{err}");
    let err = fails(
        &engine,
        "CREATE STREAM s3 AS SELECT b.item, h.n FROM bids b FULL OUTER JOIN top h ON b.price = h.best;",
    )
    .await;
    assert!(err.contains("full-outer join not supported"), "{err}");
    engine.shutdown().await;
}
