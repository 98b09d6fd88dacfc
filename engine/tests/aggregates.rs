//! Aggregations end to end: running results per group, windows, HAVING, and state that
//! survives a restart without counting anything twice.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_engine::{Engine, Session};
use eddy_storage::{Record, Store};

mod common;
use common::{feed, keyed_records as records, open_store, run};

fn order(user: &str, amount: i64, ts: i64) -> Record {
    Record::keyed(
        format!("o{ts}").into_bytes(),
        format!(r#"{{"user": "{user}", "amount": {amount}}}"#).into_bytes(),
        ts,
    )
}

const SETUP: &str = "
    SET 'auto.offset.reset' = 'earliest';
    CREATE STREAM orders (id STRING KEY, user STRING, amount INT)
        WITH (kafka_topic='orders', partitions=1, value_format='JSON');";

#[tokio::test]
async fn counts_and_sums_update_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE totals AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
         FROM orders GROUP BY user HAVING SUM(amount) < 100;",
    )
    .await;
    feed(
        &engine,
        "orders",
        vec![
            order("ann", 10, 1),
            order("bob", 5, 2),
            order("ann", 20, 3),
            order("ann", 80, 4),
        ],
    )
    .await;
    let got: Vec<(String, Option<String>, i64)> = records(engine.store(), "TOTALS")
        .into_iter()
        .map(|(k, v, t)| (String::from_utf8(k).unwrap(), v, t))
        .collect();
    assert_eq!(
        got,
        [
            (
                "ann".to_string(),
                Some(r#"{"N":1,"TOTAL":10}"#.to_string()),
                1
            ),
            (
                "bob".to_string(),
                Some(r#"{"N":1,"TOTAL":5}"#.to_string()),
                2
            ),
            (
                "ann".to_string(),
                Some(r#"{"N":2,"TOTAL":30}"#.to_string()),
                3
            ),
            // The total passes 100: HAVING no longer holds, so the row is deleted.
            ("ann".to_string(), None, 4),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn tumbling_windows_key_results_by_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE per_minute AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 1 MINUTE) GROUP BY user;",
    )
    .await;
    feed(
        &engine,
        "orders",
        vec![
            order("ann", 1, 1_000),
            order("ann", 1, 61_000),
            order("ann", 1, 59_000),
            // Stream time 200 s: the first window ended at 60 s, plus 60 s of grace.
            order("ann", 1, 200_000),
            order("ann", 1, 30_000),
        ],
    )
    .await;
    let got: Vec<(i64, String)> = records(engine.store(), "PER_MINUTE")
        .into_iter()
        .map(|(k, v, _)| {
            let start = i64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            assert_eq!(&k[..k.len() - 8], b"ann");
            (start, v.unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, r#"{"N":1}"#.to_string()),
            (60_000, r#"{"N":1}"#.to_string()),
            (0, r#"{"N":2}"#.to_string()),
            (180_000, r#"{"N":1}"#.to_string()),
        ],
        "the late record for the closed window is dropped"
    );
    engine.shutdown().await;
}

/// Windows and grace periods of absurd length (`SIZE 999999999999 DAYS` is past the end of
/// time in milliseconds) end at the last representable instant rather than wrapping round.
#[tokio::test]
async fn windows_longer_than_time_itself_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE forever AS SELECT user, COUNT(*) AS n, WINDOWEND AS e FROM orders
         WINDOW TUMBLING (SIZE 999999999999 DAYS, GRACE PERIOD 999999999999 DAYS) GROUP BY user;
         CREATE TABLE hopping AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW HOPPING (SIZE 999999999999 DAYS, ADVANCE BY 999999999999 DAYS) GROUP BY user;
         CREATE TABLE sessions AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW SESSION (999999999999 DAYS) GROUP BY user;",
    )
    .await;
    feed(
        &engine,
        "orders",
        vec![order("ann", 1, 1_000), order("ann", 1, 5_000)],
    )
    .await;
    let forever: Vec<String> = records(engine.store(), "FOREVER")
        .into_iter()
        .map(|(_, v, _)| v.unwrap())
        .collect();
    let end = i64::MAX;
    assert_eq!(
        forever,
        [
            format!(r#"{{"N":1,"E":{end}}}"#),
            format!(r#"{{"N":2,"E":{end}}}"#)
        ]
    );
    assert_eq!(records(engine.store(), "HOPPING").len(), 2);
    let sessions: Vec<Option<String>> = records(engine.store(), "SESSIONS")
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    // The second record merges into the first's session: the old one is deleted.
    assert_eq!(
        sessions,
        [
            Some(r#"{"N":1}"#.to_string()),
            None,
            Some(r#"{"N":2}"#.to_string())
        ]
    );
    let failed: Vec<_> = queries(&engine)
        .await
        .into_iter()
        .filter(|q| q.state != "RUNNING")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn aggregate_state_survives_a_restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let total = 6_000i64;
    {
        let engine = Engine::open(open_store(dir.path())).await.unwrap();
        run(&engine, SETUP).await;
        run(
            &engine,
            "CREATE TABLE totals AS SELECT user, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY user;",
        )
        .await;
        for chunk in (0..total).collect::<Vec<_>>().chunks(200) {
            let batch = chunk
                .iter()
                .map(|&i| order(&format!("u{}", i % 5), 1, i))
                .collect();
            engine.store().produce("orders", batch).await.unwrap();
        }
        // Stop once some, and usually not all, of the input is aggregated.
        while records(engine.store(), "TOTALS").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.shutdown().await;
        let written = records(engine.store(), "TOTALS").len() as i64;
        assert!(written > 0 && written <= total);
        engine.store().close().unwrap();
    }
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(60)).await);
    // The last result per user counts every order exactly once.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let all = records(engine.store(), "TOTALS");
    assert_eq!(all.len() as i64, total, "one update per input record");
    for (k, v, _) in all {
        last.insert(String::from_utf8(k).unwrap(), v.unwrap());
    }
    let per_user = total / 5;
    for user in 0..5 {
        assert_eq!(
            last[&format!("u{user}")],
            format!(r#"{{"N":{per_user},"TOTAL":{per_user}}}"#)
        );
    }
    engine.shutdown().await;
}

/// ksqlDB's default: the record cache coalesces updates to a key between commits, and the
/// final table is the same as with every update.
#[tokio::test]
async fn the_record_cache_coalesces_updates_to_a_key_between_commits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         SET 'cache.max.bytes.buffering' = '10485760';
         CREATE STREAM orders (id STRING KEY, user STRING, amount INT)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE TABLE totals AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
             FROM orders GROUP BY user HAVING COUNT(*) > 1;
         CREATE TABLE per_minute AS SELECT user, COUNT(*) AS n FROM orders
             WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user;",
    )
    .await;
    let total = 3_000i64;
    let batch = (0..total)
        .map(|i| order(&format!("u{}", i % 3), 2, i * 100))
        .collect();
    feed(&engine, "orders", batch).await;

    let written = records(engine.store(), "TOTALS");
    assert!(
        written.len() < 30,
        "{} updates written for 3 keys: the cache did not coalesce them",
        written.len()
    );
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (k, v, _) in written {
        last.insert(String::from_utf8(k).unwrap(), v.unwrap());
    }
    for user in 0..3 {
        assert_eq!(
            last[&format!("u{user}")],
            format!(r#"{{"N":1000,"TOTAL":2000}}"#)
        );
    }
    // Windowed: one row per user and minute in the end, the last update of each window
    // stamped with its latest record.
    let mut windows: BTreeMap<Vec<u8>, (String, i64)> = BTreeMap::new();
    for (k, v, ts) in records(engine.store(), "PER_MINUTE") {
        windows.insert(k, (v.unwrap(), ts));
    }
    let minutes = (total * 100 + 59_999) / 60_000;
    assert_eq!(windows.len() as i64, 3 * minutes);
    let counted: i64 = windows
        .values()
        .map(|(v, _)| {
            let row: serde_json::Value = serde_json::from_str(v).unwrap();
            row["N"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(counted, total);
    for (key, (_, ts)) in &windows {
        let start = i64::from_be_bytes(key[key.len() - 8..].try_into().unwrap());
        assert!(
            *ts >= start && *ts < start + 60_000,
            "{ts} is outside its window"
        );
    }

    // With the cache off (as `run` sets it), every update comes out.
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE every AS SELECT user, COUNT(*) AS n FROM orders GROUP BY user;",
    )
    .await;
    assert!(engine.wait_until_processed(Duration::from_secs(60)).await);
    assert_eq!(records(engine.store(), "EVERY").len() as i64, total);
    engine.shutdown().await;
}

#[tokio::test]
async fn aggregating_a_table_undoes_a_rows_old_value() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE users (id STRING PRIMARY KEY, region STRING, score INT)
             WITH (kafka_topic='users', partitions=1, value_format='JSON');
         CREATE TABLE per_region AS SELECT region, COUNT(*) AS n, SUM(score) AS total
             FROM users GROUP BY region;",
    )
    .await;
    let user = |id: &str, region: &str, score: i64, ts: i64| {
        Record::keyed(
            id.as_bytes().to_vec(),
            format!(r#"{{"region": "{region}", "score": {score}}}"#).into_bytes(),
            ts,
        )
    };
    feed(
        &engine,
        "users",
        vec![
            user("a", "eu", 10, 1),
            user("b", "eu", 5, 2),
            // a moves to us: eu loses it, us gains it.
            user("a", "us", 7, 3),
            // b is deleted.
            Record::tombstone(&b"b"[..], 4),
        ],
    )
    .await;
    let got: Vec<(String, String, i64)> = records(engine.store(), "PER_REGION")
        .into_iter()
        .map(|(k, v, t)| (String::from_utf8(k).unwrap(), v.unwrap(), t))
        .collect();
    let row = |k: &str, v: &str, t: i64| (k.to_string(), v.to_string(), t);
    assert_eq!(
        got,
        [
            row("eu", r#"{"N":1,"TOTAL":10}"#, 1),
            row("eu", r#"{"N":2,"TOTAL":15}"#, 2),
            row("eu", r#"{"N":1,"TOTAL":5}"#, 3),
            row("us", r#"{"N":1,"TOTAL":7}"#, 3),
            row("eu", r#"{"N":0,"TOTAL":0}"#, 4),
        ]
    );
    let err = engine
        .execute(
            &mut Session::default(),
            "CREATE TABLE lowest AS SELECT region, MIN(score) AS m FROM users GROUP BY region;",
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "The aggregation function MIN cannot be applied to a table source, only to a stream source."
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn session_windows_merge_and_delete_the_sessions_they_swallow() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE visits AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW SESSION (20 SECONDS) GROUP BY user;",
    )
    .await;
    feed(
        &engine,
        "orders",
        vec![
            order("ann", 1, 0),
            order("ann", 1, 30_000),
            // Within 20 s of both: the two sessions and this record become one.
            order("ann", 1, 15_000),
        ],
    )
    .await;
    let got: Vec<(i64, i64, Option<String>, i64)> = records(engine.store(), "VISITS")
        .into_iter()
        .map(|(k, v, t)| {
            // Session keys end with the window's end, then its start.
            let end = i64::from_be_bytes(k[k.len() - 16..k.len() - 8].try_into().unwrap());
            let start = i64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            (start, end, v, t)
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, 0, Some(r#"{"N":1}"#.to_string()), 0),
            (30_000, 30_000, Some(r#"{"N":1}"#.to_string()), 30_000),
            (0, 0, None, 0),
            (30_000, 30_000, None, 30_000),
            (0, 30_000, Some(r#"{"N":3}"#.to_string()), 30_000),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn population_deviation_and_correlation() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM points (id STRING KEY, g STRING, x DOUBLE, y DOUBLE)
             WITH (kafka_topic='points', partitions=1, value_format='JSON');
         CREATE TABLE stats AS SELECT g, STDDEV_POP(x) AS sd, CORRELATION(x, y) AS r
             FROM points GROUP BY g;",
    )
    .await;
    let points = [(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)]
        .iter()
        .enumerate()
        .map(|(i, (x, y))| {
            Record::keyed(
                format!("p{i}").into_bytes(),
                format!(r#"{{"g":"a","x":{x},"y":{y}}}"#).into_bytes(),
                i as i64,
            )
        })
        .collect();
    feed(&engine, "points", points).await;
    let last = records(engine.store(), "STATS").pop().unwrap();
    let value: serde_json::Value = serde_json::from_str(last.1.as_deref().unwrap()).unwrap();
    // The population deviation of 1, 2, 3 is sqrt(2/3); y = 2x correlates perfectly.
    assert!(
        (value["SD"].as_f64().unwrap() - (2.0f64 / 3.0).sqrt()).abs() < 1e-9,
        "{value}"
    );
    assert!((value["R"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{value}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_table_update_within_a_group_emits_one_change_and_collect_list_takes_values_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE TABLE owners (pet STRING PRIMARY KEY, owner STRING, age INT)
             WITH (kafka_topic='owners', partitions=1, value_format='JSON');
         CREATE TABLE pets_per_owner AS SELECT owner, COLLECT_LIST(pet) AS pets, SUM(age) AS ages
             FROM owners GROUP BY owner;",
    )
    .await;
    let row = |pet: &str, value: &str, ts: i64| {
        Record::keyed(pet.as_bytes().to_vec(), value.as_bytes().to_vec(), ts)
    };
    for record in [
        row("rex", r#"{"owner":"ann","age":3}"#, 1),
        row("tom", r#"{"owner":"ann","age":5}"#, 2),
        // Rex gets older: one change for ann, not a retraction and then an addition.
        row("rex", r#"{"owner":"ann","age":4}"#, 3),
    ] {
        feed(&engine, "owners", vec![record]).await;
    }
    let got: Vec<Option<String>> = records(engine.store(), "PETS_PER_OWNER")
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    assert_eq!(
        got,
        [
            Some(r#"{"PETS":["rex"],"AGES":3}"#.to_string()),
            Some(r#"{"PETS":["rex","tom"],"AGES":8}"#.to_string()),
            Some(r#"{"PETS":["tom","rex"],"AGES":9}"#.to_string()),
        ]
    );
    engine.shutdown().await;
}

/// As Kafka Streams does, a result carries the latest timestamp among its group's records, so
/// an earlier record arriving late does not move the result back in time, across a restart too.
#[tokio::test]
async fn a_result_is_stamped_with_its_groups_latest_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(open_store(dir.path())).await.unwrap();
        run(&engine, SETUP).await;
        run(
            &engine,
            "CREATE TABLE per_user AS SELECT user, COUNT(*) AS n FROM orders
             WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user;",
        )
        .await;
        feed(
            &engine,
            "orders",
            vec![order("ann", 1, 2_000), order("ann", 1, 1_000)],
        )
        .await;
        engine.shutdown().await;
    }
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    feed(&engine, "orders", vec![order("ann", 1, 1_500)]).await;
    let stamps: Vec<i64> = records(engine.store(), "PER_USER")
        .into_iter()
        .map(|(_, _, ts)| ts)
        .collect();
    assert_eq!(stamps, vec![2_000, 2_000, 2_000]);
    engine.shutdown().await;
}

/// Session windows with `EMIT FINAL`: sessions merge silently, and each comes out once, when
/// stream time reaches its end plus the grace period, for every user; the sessions waiting
/// survive a restart.
#[tokio::test]
async fn emit_final_writes_each_session_once_when_it_closes_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE sessions AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
         FROM orders WINDOW SESSION (5 MILLISECONDS, GRACE PERIOD 2 MILLISECONDS)
         GROUP BY user EMIT FINAL;",
    )
    .await;
    let store = engine.store().clone();
    // ann: [1, 3], which 6 extends to [1, 6] and 10 to [1, 10]; bob: [4, 4].
    feed(
        &engine,
        "orders",
        vec![
            order("ann", 1, 1),
            order("ann", 2, 3),
            order("bob", 5, 4),
            order("ann", 8, 6),
            order("ann", 4, 10),
        ],
    )
    .await;
    // Stream time 10: bob's [4, 4] closed at 4 + 2; ann's session is still growing.
    let rows =
        |store: &Store| -> Vec<(Vec<u8>, Option<String>, i64)> { records(store, "SESSIONS") };
    let bob = rows(&store);
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0].1.as_deref(), Some(r#"{"N":1,"TOTAL":5}"#));
    assert_eq!(bob[0].2, 4);
    assert!(bob[0].0.starts_with(b"bob"));
    engine.shutdown().await;
    store.close().unwrap();
    drop((engine, store));

    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let store = engine.store().clone();
    feed(&engine, "orders", vec![order("cy", 1, 12)]).await;
    let out = rows(&store);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].1.as_deref(), Some(r#"{"N":4,"TOTAL":15}"#));
    assert_eq!(out[1].2, 10);
    // The key carries the session in ksqlDB's layout: the user, then its end and start.
    let key = &out[1].0;
    assert_eq!(&key[..key.len() - 16], b"ann");
    assert_eq!(&key[key.len() - 16..key.len() - 8], &10i64.to_be_bytes());
    assert_eq!(&key[key.len() - 8..], &1i64.to_be_bytes());
    engine.shutdown().await;
}

#[tokio::test]
async fn emit_final_writes_each_window_once_when_it_closes_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE per_window AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
         FROM orders WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS)
         GROUP BY user EMIT FINAL;",
    )
    .await;
    let store = engine.store().clone();
    // Window [0, 10) gets three orders; one comes late but within the grace period.
    feed(
        &engine,
        "orders",
        vec![
            order("ann", 1, 1),
            order("ann", 2, 8),
            order("bob", 5, 9),
            order("ann", 4, 12),
        ],
    )
    .await;
    assert!(
        records(&store, "PER_WINDOW").is_empty(),
        "nothing before the window closes"
    );
    feed(&engine, "orders", vec![order("ann", 3, 7)]).await;
    // The window's state is pending across a restart.
    engine.shutdown().await;
    store.close().unwrap();
    drop((engine, store));
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let store = engine.store().clone();
    // Stream time reaches 15 = end 10 + grace 5: [0, 10) closes, for both users.
    feed(&engine, "orders", vec![order("cy", 1, 15)]).await;
    let out: Vec<(Option<String>, i64)> = records(&store, "PER_WINDOW")
        .into_iter()
        .map(|(_, v, ts)| (v, ts))
        .collect();
    assert_eq!(
        out,
        vec![
            (Some(r#"{"N":3,"TOTAL":6}"#.to_string()), 8),
            (Some(r#"{"N":1,"TOTAL":5}"#.to_string()), 9),
        ]
    );
    // A record for the closed window is late and dropped; nothing is emitted twice.
    feed(
        &engine,
        "orders",
        vec![order("ann", 9, 3), order("cy", 1, 16)],
    )
    .await;
    assert_eq!(records(&store, "PER_WINDOW").len(), 2);
    engine.shutdown().await;
}

/// With the record cache on, `EMIT FINAL` writes a group's state once per commit, not per
/// step, and a window that opens and closes between two commits is never written at all.
/// Hopping windows fed in large batches, with a restart between them, come out exactly once
/// each, with the counts a run without the restart gives and the counts the windows hold.
#[tokio::test]
async fn emit_final_with_the_record_cache_writes_each_hopping_window_once_across_a_restart() {
    const CREATE: &str = "CREATE TABLE per_window AS SELECT user, COUNT(*) AS n
         FROM orders WINDOW HOPPING (SIZE 10 MILLISECONDS, ADVANCE BY 5 MILLISECONDS,
           GRACE PERIOD 0 MILLISECONDS)
         GROUP BY user EMIT FINAL;";
    let users = ["ann", "bob", "cy"];
    let order_at = |t: i64| order(users[t as usize % 3], 1, t);
    async fn start(dir: &std::path::Path) -> Engine {
        let engine = Engine::open(open_store(dir)).await.unwrap();
        run(&engine, SETUP).await;
        // The default session: the record cache is on.
        engine
            .execute(&mut Session::default(), CREATE)
            .await
            .unwrap();
        engine
    }
    let finals = |store: &Store| -> BTreeMap<(String, i64), String> {
        let mut out = BTreeMap::new();
        for (key, value, _) in records(store, "PER_WINDOW") {
            let (user, start) = key.split_at(key.len() - 8);
            let start = i64::from_be_bytes(start.try_into().unwrap());
            let user = String::from_utf8(user.to_vec()).unwrap();
            let previous = out.insert((user, start), value.unwrap());
            assert!(previous.is_none(), "a window came out twice");
        }
        out
    };

    let restarted = tempfile::tempdir().unwrap();
    let engine = start(restarted.path()).await;
    // Two commits before the restart: windows 50 and 55 change after the first and are still
    // open at the restart.
    feed(&engine, "orders", (0..55).map(order_at).collect()).await;
    feed(&engine, "orders", (55..60).map(order_at).collect()).await;
    engine.shutdown().await;
    engine.store().close().unwrap();
    drop(engine);
    let engine = Engine::open(open_store(restarted.path())).await.unwrap();
    feed(&engine, "orders", (60..100).map(order_at).collect()).await;
    let after_restart = finals(engine.store());
    engine.shutdown().await;

    let straight = tempfile::tempdir().unwrap();
    let engine = start(straight.path()).await;
    feed(&engine, "orders", (0..100).map(order_at).collect()).await;
    let without_restart = finals(engine.store());
    engine.shutdown().await;

    // Stream time ends at 99: the windows ending at or before it are final.
    let mut expected = BTreeMap::new();
    for start in (0..=85).step_by(5) {
        for (u, user) in users.iter().enumerate() {
            let n = (start..start + 10).filter(|t| *t as usize % 3 == u).count();
            expected.insert((user.to_string(), start), format!(r#"{{"N":{n}}}"#));
        }
    }
    assert_eq!(without_restart, expected);
    assert_eq!(after_restart, expected);
}

/// Beyond ksqlDB: the final rows of a windowed aggregation, read back as a windowed stream,
/// aggregate again by their window: here the highest count of any user per window.
#[tokio::test]
async fn a_windowed_stream_aggregates_by_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE per_user AS SELECT user, COUNT(*) AS n
         FROM orders WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 0 MILLISECONDS)
         GROUP BY user EMIT FINAL;
         CREATE STREAM per_user_final (user STRING KEY, n BIGINT)
           WITH (kafka_topic='PER_USER', value_format='JSON', window_type='TUMBLING',
                 window_size='10 MILLISECONDS');
         CREATE TABLE busiest WITH (key_format='JSON') AS
           SELECT WINDOWSTART AS starttime, MAX(n) AS most, COUNT(*) AS users
           FROM per_user_final GROUP BY WINDOWSTART;",
    )
    .await;
    let orders = [
        ("ann", 1),
        ("ann", 2),
        ("bob", 3),
        ("bob", 11),
        ("bob", 12),
        ("bob", 13),
    ];
    feed(
        &engine,
        "orders",
        orders.iter().map(|(u, ts)| order(u, 1, *ts)).collect(),
    )
    .await;
    // Stream time 25 closes [10, 20) as well.
    feed(&engine, "orders", vec![order("cy", 1, 25)]).await;
    let out: Vec<(String, Option<String>)> = records(engine.store(), "BUSIEST")
        .into_iter()
        .map(|(k, v, _)| (String::from_utf8(k).unwrap(), v))
        .collect();
    assert_eq!(
        out,
        vec![
            ("0".to_string(), Some(r#"{"MOST":2,"USERS":1}"#.to_string())),
            ("0".to_string(), Some(r#"{"MOST":2,"USERS":2}"#.to_string())),
            (
                "10".to_string(),
                Some(r#"{"MOST":3,"USERS":1}"#.to_string())
            ),
        ]
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn emit_final_needs_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    let err = engine
        .execute(
            &mut Session::default(),
            "CREATE TABLE t AS SELECT user, COUNT(*) AS n FROM orders GROUP BY user EMIT FINAL;",
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "EMIT FINAL is only supported for windowed aggregations."
    );
}

/// ksqlDB's validation messages for aggregations, and `*` standing for every source column.
#[tokio::test]
async fn aggregations_are_checked_with_ksqldbs_messages() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "CREATE STREAM s (k INT KEY, a INT, b STRING) WITH (kafka_topic='s', partitions=1, format='JSON');",
    )
    .await;
    let refused = |sql: &'static str| {
        let engine = &engine;
        async move {
            engine
                .execute(&mut Session::default(), sql)
                .await
                .expect_err(sql)
                .to_string()
        }
    };
    for (sql, message) in [
        (
            "CREATE TABLE t1 AS SELECT COUNT(*) FROM s GROUP BY k, a, b;",
            "must include the grouping expressions K, A and B in its projection (eg, SELECT K, A, B...).",
        ),
        (
            "CREATE TABLE t2 AS SELECT b, b AS b2, COUNT(*) FROM s GROUP BY b;",
            "The projection contains a key column more than once: `B` and `B2`.",
        ),
        (
            "CREATE TABLE t3 AS SELECT b, COUNT(*) FROM s GROUP BY b HAVING a > 1;",
            "Non-aggregate HAVING expression not part of GROUP BY: A",
        ),
        (
            "CREATE TABLE t4 AS SELECT COUNT(*), SUM(a) FROM s;",
            "does not support aggregate function [COUNT(ROWTIME), SUM(A)] without a GROUP BY clause.",
        ),
        (
            "CREATE TABLE t5 AS SELECT b AS n, COUNT(*) AS n FROM s GROUP BY b;",
            "Duplicate value columns found in schema: `N` BIGINT",
        ),
        (
            "CREATE TABLE t6 AS SELECT *, COUNT(*) FROM s GROUP BY k;",
            "Non-aggregate SELECT expression(s) not part of GROUP BY: A, B",
        ),
        // The default grace period is 24 hours, which a retention of an hour does not cover.
        (
            "CREATE TABLE t7 AS SELECT b, COUNT(*) FROM s\n  WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 1 HOUR) GROUP BY b;",
            "Line: 2, Col: 10: The retention period of the window must be no smaller than its window size plus the grace period. Got size=[60000], grace=[86400000], retention=[3600000].",
        ),
        (
            "CREATE TABLE t8 AS SELECT b, COUNT(*) FROM s\n  WINDOW SESSION (1 HOUR, RETENTION 1 HOUR, GRACE PERIOD 1 SECOND) GROUP BY b;",
            "Got gap=[3600000], grace=[1000], retention=[3600000].",
        ),
        (
            "CREATE TABLE t9 AS SELECT b, COUNT(*) FROM s\n  WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 0 SECONDS) GROUP BY b;",
            "Line: 2, Col: 10: Window advancement interval should be more than zero and less than window duration which is 60000 ms, but given advancement interval is: 0 ms",
        ),
        (
            "CREATE TABLE t10 AS SELECT b, COUNT(*) FROM s WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 2 MINUTES) GROUP BY b;",
            "but given advancement interval is: 120000 ms",
        ),
        // Each record would update 86.4 million windows.
        (
            "CREATE TABLE t11 AS SELECT b, COUNT(*) FROM s WINDOW HOPPING (SIZE 1 DAY, ADVANCE BY 1 MILLISECOND) GROUP BY b;",
            "puts each record in 86400000 windows; at most 10000 are allowed. Advance by at least 8640 ms.",
        ),
        (
            "CREATE TABLE t12 AS SELECT b, COUNT(*) FROM s WINDOW TUMBLING (SIZE 0 SECONDS) GROUP BY b;",
            "Window size must be positive",
        ),
        (
            "CREATE TABLE t13 AS SELECT b, COUNT(*) FROM s WINDOW SESSION (0 SECONDS) GROUP BY b;",
            "Session windows need an inactivity gap greater than zero",
        ),
    ] {
        let error = refused(sql).await;
        assert!(error.contains(message), "{sql}\n{error}");
    }
    // `*` with every column grouped: the columns are the key, the count the value.
    let done = engine
        .execute(
            &mut Session::default(),
            "CREATE TABLE all_grouped AS SELECT *, COUNT(*) AS n FROM s GROUP BY k, a, b;",
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    let described = engine
        .execute(&mut Session::default(), "DESCRIBE all_grouped;")
        .await
        .unwrap();
    let text = format!("{described:?}");
    for column in ["\"K\"", "\"A\"", "\"B\"", "\"N\""] {
        assert!(text.contains(column), "{column} missing from {text}");
    }
    engine.shutdown().await;
}

/// A tumbling window leaves the aggregation's state once stream time passes its end plus the
/// grace period: the state does not grow with every window ever seen, and a late record for
/// it is dropped rather than starting it over.
#[tokio::test]
async fn closed_windows_leave_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE per_window AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS) GROUP BY user;",
    )
    .await;
    // The same with the record cache on: windows leave at its flushes.
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         SET 'cache.max.bytes.buffering' = '10485760';
         CREATE TABLE cached AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS) GROUP BY user;",
    )
    .await;
    let namespaces = state_namespaces(&engine).await;
    assert_eq!(namespaces.len(), 2);
    let store = engine.store().clone();
    let windows_kept = |store: &Store| {
        let kept: Vec<std::collections::BTreeSet<i64>> = namespaces
            .iter()
            .map(|namespace| {
                store
                    .state_scan_prefix(namespace, b"g")
                    .unwrap()
                    .map(|e| {
                        let (key, _) = e.unwrap();
                        i64::from_be_bytes(key[key.len() - 8..].try_into().unwrap())
                    })
                    .collect()
            })
            .collect();
        assert_eq!(kept[0], kept[1], "with and without the cache");
        kept[0].clone()
    };
    for (i, ts) in [1, 12, 23, 34, 45].into_iter().enumerate() {
        feed(
            &engine,
            "orders",
            vec![order(&format!("u{}", i % 2), 1, ts)],
        )
        .await;
    }
    // Stream time 45: a window closes when its end plus grace is reached, so [30, 40) just
    // did, and only [40, 50) stays.
    assert_eq!(windows_kept(&store), [40].into_iter().collect());
    // A record for a closed window is late: dropped, not counted from zero again.
    feed(&engine, "orders", vec![order("u0", 1, 2)]).await;
    assert_eq!(records(&store, "PER_WINDOW").len(), 5);
    assert_eq!(windows_kept(&store), [40].into_iter().collect());
    // It is counted among each query's failed records (and logged), not lost silently.
    wait_for_failed(&engine, 1).await;
    engine.shutdown().await;
}

/// Open windows are filed in the store by the bound they close at, so they close without
/// being held in memory; state written before that index was kept (here, with it removed) is
/// indexed once at the next start, and its windows still close.
#[tokio::test]
async fn windows_of_state_kept_before_the_index_still_close() {
    let dir = tempfile::tempdir().unwrap();
    let group_starts = |store: &Store, namespace: &str, prefix: &[u8]| -> Vec<i64> {
        store
            .state_scan_prefix(namespace, prefix)
            .unwrap()
            .map(|e| {
                let (key, _) = e.unwrap();
                let at = if prefix == b"w" { 5 } else { key.len() - 8 };
                let start = u64::from_be_bytes(key[at..at + 8].try_into().unwrap());
                if prefix == b"w" {
                    (start ^ (1 << 63)) as i64
                } else {
                    start as i64
                }
            })
            .collect()
    };
    let namespace = {
        let engine = Engine::open(open_store(dir.path())).await.unwrap();
        run(&engine, SETUP).await;
        run(
            &engine,
            "CREATE TABLE per_window AS SELECT user, COUNT(*) AS n FROM orders
             WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS) GROUP BY user;",
        )
        .await;
        let namespace = state_namespaces(&engine).await.remove(0);
        for (user, ts) in [("a", 1), ("b", 2), ("a", 12)] {
            feed(&engine, "orders", vec![order(user, 1, ts)]).await;
        }
        let store = engine.store().clone();
        assert_eq!(group_starts(&store, &namespace, b"w"), [0, 0, 10]);
        engine.shutdown().await;
        // As an older Eddy left it: groups, no index.
        let mut commit = eddy_storage::Commit::new();
        commit.delete_state(&namespace, b"W".to_vec());
        for entry in store.state_scan_prefix(&namespace, b"w").unwrap() {
            let (key, _) = entry.unwrap();
            commit.delete_state(&namespace, key);
        }
        store.commit(commit).await.unwrap();
        assert!(group_starts(&store, &namespace, b"w").is_empty());
        store.close().unwrap();
        namespace
    };
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let store = engine.store().clone();
    assert!(engine.wait_until_processed(Duration::from_secs(60)).await);
    assert_eq!(group_starts(&store, &namespace, b"g"), [0, 10, 0]);
    // Stream time 30 closes [0, 10) and [10, 20) (end plus grace reached); [30, 40) opens.
    feed(&engine, "orders", vec![order("b", 1, 30)]).await;
    assert_eq!(group_starts(&store, &namespace, b"g"), [30]);
    assert_eq!(group_starts(&store, &namespace, b"w"), [30]);
    assert!(store.state_get(&namespace, b"W").unwrap().is_some());
    engine.shutdown().await;
}

/// Stream time is kept per partition, as ksqlDB keeps it per task: a group is governed by the
/// clock of its key's partition, so a partition that lags behind another does not have its
/// records dropped as late, while a record late within its own partition is. The clocks
/// survive a restart, and every window of a key is written to the key's partition.
#[tokio::test]
async fn stream_time_is_kept_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let user_in = |partition: u32, skip: usize| {
        (0..)
            .map(|i| format!("u{i}"))
            .filter(|u| eddy_storage::partition_for_key(u.as_bytes(), 2) == partition)
            .nth(skip)
            .unwrap()
    };
    let (ahead, ahead_too, behind) = (user_in(0, 0), user_in(0, 1), user_in(1, 0));
    let click = |user: &str, ts: i64| {
        Record::keyed(
            user.as_bytes().to_vec(),
            br#"{"page": "home"}"#.to_vec(),
            ts,
        )
    };
    // Counts per window: (user, window start) -> latest count.
    let counts = |store: &Store| {
        let mut counts = BTreeMap::new();
        for p in 0..2 {
            for r in store
                .read_records("PER_WINDOW", p, 0, usize::MAX)
                .unwrap()
                .records
            {
                let key = r.record.key.unwrap().to_vec();
                let (user, start) = key.split_at(key.len() - 8);
                assert_eq!(
                    eddy_storage::partition_for_key(user, 2),
                    p,
                    "a window is written to its key's partition"
                );
                counts.insert(
                    (
                        String::from_utf8(user.to_vec()).unwrap(),
                        i64::from_be_bytes(start.try_into().unwrap()),
                    ),
                    String::from_utf8(r.record.value.unwrap().to_vec()).unwrap(),
                );
            }
        }
        counts
    };

    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(
        &engine,
        "SET 'auto.offset.reset' = 'earliest';
         CREATE STREAM clicks (user STRING KEY, page STRING)
             WITH (kafka_topic='clicks', partitions=2, value_format='JSON');
         CREATE TABLE per_window AS SELECT user, COUNT(*) AS n FROM clicks
         WINDOW TUMBLING (SIZE 10 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS) GROUP BY user;",
    )
    .await;
    let store = engine.store().clone();
    for record in [click(&ahead, 100), click(&behind, 5)] {
        feed(&engine, "clicks", vec![record]).await;
    }
    // Partition 0 is at 100, which closed [0, 10) there; partition 1 is at 5, so the record
    // behind counts. A record of another key of partition 0 at 5 is late, and dropped.
    feed(&engine, "clicks", vec![click(&ahead_too, 5)]).await;
    let got = counts(&store);
    assert_eq!(
        got.get(&(behind.clone(), 0)).map(String::as_str),
        Some(r#"{"N":1}"#)
    );
    assert_eq!(
        got.get(&(ahead.clone(), 100)).map(String::as_str),
        Some(r#"{"N":1}"#)
    );
    assert!(!got.contains_key(&(ahead_too.clone(), 0)), "{got:?}");
    wait_for_failed(&engine, 1).await;
    engine.shutdown().await;
    drop((engine, store));

    // After a restart each partition keeps its clock.
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    let store = engine.store().clone();
    for record in [click(&behind, 7), click(&ahead_too, 6)] {
        feed(&engine, "clicks", vec![record]).await;
    }
    let got = counts(&store);
    assert_eq!(
        got.get(&(behind.clone(), 0)).map(String::as_str),
        Some(r#"{"N":2}"#)
    );
    assert!(!got.contains_key(&(ahead_too.clone(), 0)), "{got:?}");
    wait_for_failed(&engine, 1).await;
    engine.shutdown().await;
}

/// The running queries, as `SHOW QUERIES` lists them.
async fn queries(engine: &Engine) -> Vec<eddy_engine::QuerySummary> {
    let shown = engine
        .execute(&mut Session::default(), "SHOW QUERIES;")
        .await
        .unwrap();
    let eddy_engine::StatementResult::Queries { queries, .. } = &shown[0] else {
        panic!("{shown:?}");
    };
    queries.clone()
}

/// Each running query's state-store namespace.
async fn state_namespaces(engine: &Engine) -> Vec<String> {
    queries(engine)
        .await
        .iter()
        .map(|q| format!("__eddy_query_{}", q.id))
        .collect()
}

/// Waits until every running query has counted `want` failed records. The counters follow
/// the commit that carried the records, so they may take a moment.
async fn wait_for_failed(engine: &Engine, want: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queries = queries(engine).await;
        if queries.iter().all(|q| q.failed == want) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{queries:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session leaves the aggregation's state once its partition's stream time passes its end
/// plus the gap and the grace period, even if its group never sees another record; a group
/// with no session left leaves the store altogether.
#[tokio::test]
async fn closed_sessions_leave_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE visits AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW SESSION (10 MILLISECONDS, GRACE PERIOD 5 MILLISECONDS) GROUP BY user;",
    )
    .await;
    let namespace = state_namespaces(&engine).await.remove(0);
    let store = engine.store().clone();
    // (sessions stored, groups with a session list stored)
    let kept = |store: &Store| {
        let count = |prefix: &[u8]| store.state_scan_prefix(&namespace, prefix).unwrap().count();
        (count(b"g"), count(b"s"))
    };
    for (user, ts) in [("ann", 1), ("bob", 2), ("ann", 8), ("cat", 16)] {
        feed(&engine, "orders", vec![order(user, 1, ts)]).await;
    }
    // Stream time 16: nothing has closed yet (a session closes 15 ms after its end).
    assert_eq!(kept(&store), (3, 3));
    feed(&engine, "orders", vec![order("cat", 1, 20)]).await;
    // Stream time 20 closed bob's session [2, 2], not ann's [1, 8].
    assert_eq!(kept(&store), (2, 2));
    feed(&engine, "orders", vec![order("dan", 1, 100)]).await;
    assert_eq!(kept(&store), (1, 1), "only dan's session is open");
    // Their rows stay in the table's topic: ann's merged session counted two.
    let rows = records(&store, "VISITS");
    assert!(
        rows.iter()
            .any(|(k, v, _)| k.starts_with(b"ann") && v.as_deref() == Some(r#"{"N":2}"#))
    );
    engine.shutdown().await;
}

/// Runs four aggregations (a windowed count over a stream, a count over a table whose rows
/// move between groups, session windows, and `EMIT FINAL` over hopping windows with the record
/// cache on and a commit at every step, whose groups of windows opened since the cache was
/// dropped are not looked for in the store) over the same input; what each writes.
async fn outputs_with_state_cache(entries: usize) -> Vec<Vec<(Vec<u8>, Option<String>, i64)>> {
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
         CREATE STREAM orders (id STRING KEY, user STRING, amount INT)
             WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE TABLE users (id STRING PRIMARY KEY, region STRING, score INT)
             WITH (kafka_topic='users', partitions=1, value_format='JSON');
         CREATE TABLE per_user AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
             FROM orders WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY user;
         CREATE TABLE per_region AS SELECT region, COUNT(*) AS n, SUM(score) AS total
             FROM users GROUP BY region;
         CREATE TABLE sessions AS SELECT user, COUNT(*) AS n
             FROM orders WINDOW SESSION (3 SECONDS) GROUP BY user;
         SET 'cache.max.bytes.buffering' = '10000000';
         SET 'commit.interval.ms' = '0';
         CREATE STREAM ticks (id STRING KEY, user STRING, amount INT)
             WITH (kafka_topic='ticks', partitions=1, value_format='JSON');
         CREATE TABLE final_hops AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
             FROM ticks WINDOW HOPPING (SIZE 6 SECONDS, ADVANCE BY 2 SECONDS,
               GRACE PERIOD 0 SECONDS)
             GROUP BY user EMIT FINAL;",
    )
    .await;
    for round in 0..6i64 {
        let orders: Vec<Record> = (0..40i64)
            .map(|i| {
                order(
                    &format!("u{}", (i * 7 + round) % 23),
                    i,
                    round * 4_000 + i * 50,
                )
            })
            .collect();
        // The same orders without gaps in time, so windows span the rounds.
        let ticks = orders
            .iter()
            .enumerate()
            .map(|(i, o)| Record {
                timestamp: round * 2_000 + i as i64 * 50,
                ..o.clone()
            })
            .collect();
        feed(&engine, "orders", orders).await;
        feed(&engine, "ticks", ticks).await;
        let users: Vec<Record> = (0..30i64)
            .map(|i| {
                Record::keyed(
                    format!("id{}", (i + round * 3) % 37).into_bytes(),
                    format!(r#"{{"region": "r{}", "score": {i}}}"#, (i + round) % 11).into_bytes(),
                    round * 1_000 + i,
                )
            })
            .collect();
        feed(&engine, "users", users).await;
    }
    let store = engine.store().clone();
    engine.shutdown().await;
    ["PER_USER", "PER_REGION", "SESSIONS", "FINAL_HOPS"]
        .iter()
        .map(|topic| records(&store, topic))
        .collect()
}

/// Groups, table rows and sessions beyond the state cache are dropped once stored and read
/// back as input needs them: with a cache of three entries, which is dropped at almost every
/// commit, every aggregation writes exactly what it writes with everything in memory.
#[tokio::test]
async fn state_beyond_the_cache_is_read_through_with_the_same_results() {
    let everything_in_memory = outputs_with_state_cache(usize::MAX).await;
    let three_entries = outputs_with_state_cache(3).await;
    assert!(everything_in_memory.iter().all(|o| o.len() > 20));
    assert_eq!(three_entries, everything_in_memory);
}

/// A type error in HAVING names the aggregate as written, not the column Eddy computes it
/// into, and names need no quotes unless they must have them, as ksqlDB reports it.
#[tokio::test]
async fn having_errors_name_the_aggregate_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    let error = common::fails(
        &engine,
        "CREATE TABLE t AS SELECT user, SUM(amount) AS total FROM orders GROUP BY user
         HAVING COUNT(*) > 1 AND SUM(amount) > '100';",
    )
    .await;
    assert!(
        error.starts_with(
            "Error in HAVING expression: Cannot compare SUM(AMOUNT) (INTEGER) to '100' (STRING) with GREATER_THAN."
        ),
        "{error}"
    );
    engine.shutdown().await;
}

/// `COLLECT_LIST` and `COLLECT_SET` keep at most `ksql.functions.collect_list.limit` and
/// `collect_set.limit` elements (1,000 unless set), the first ones, as ksqlDB does.
#[tokio::test]
async fn collected_lists_and_sets_stop_at_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "SET 'ksql.functions.collect_list.limit' = '2';
         SET 'ksql.functions.collect_set.limit' = '1';
         CREATE TABLE collected AS SELECT user, COLLECT_LIST(amount) AS amounts,
             COLLECT_SET(amount) AS distinct_amounts FROM orders GROUP BY user;",
    )
    .await;
    for (amount, ts) in [(5, 1), (5, 2), (7, 3)] {
        feed(&engine, "orders", vec![order("ann", amount, ts)]).await;
    }
    let rows = records(engine.store(), "COLLECTED");
    let last = rows.last().and_then(|(_, v, _)| v.clone()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(value["AMOUNTS"], serde_json::json!([5, 5]));
    assert_eq!(value["DISTINCT_AMOUNTS"], serde_json::json!([5]));
    engine.shutdown().await;
}

/// Hopping windows under `EMIT FINAL` against a model of ksqlDB's rules: each record counts
/// in every window of its still open (end plus grace ahead of stream time), a window comes out
/// once when stream time passes its end plus grace (unless stream time jumped past the store's
/// retention), windows by start and then by key. Records arrive out of order, some within the
/// grace period and some after it, stream time sometimes jumps, and the engine restarts half
/// way. `COUNT`, `SUM`, `MIN` and `MAX` go by panes; `COLLECT_LIST`, whose result depends on
/// the order of its rows, goes per window; both with the record cache on and off.
#[tokio::test]
async fn hopping_final_windows_match_a_model_by_panes_and_per_window() {
    const SIZE: i64 = 10;
    const ADVANCE: i64 = 2;
    const GRACE: i64 = 3;
    const USERS: [&str; 4] = ["ann", "bob", "cy", "dee"];
    const BY_PANES: &str = "SELECT user, COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS lo,
        MAX(amount) AS hi FROM orders
        WINDOW HOPPING (SIZE 10 MILLISECONDS, ADVANCE BY 2 MILLISECONDS,
          GRACE PERIOD 3 MILLISECONDS)
        GROUP BY user EMIT FINAL;";
    const PER_WINDOW: &str = "SELECT user, COUNT(*) AS n, SUM(amount) AS total,
        MIN(amount) AS lo, MAX(amount) AS hi, COLLECT_LIST(amount) AS seen FROM orders
        WINDOW HOPPING (SIZE 10 MILLISECONDS, ADVANCE BY 2 MILLISECONDS,
          GRACE PERIOD 3 MILLISECONDS)
        GROUP BY user EMIT FINAL;";

    /// The final rows ksqlDB's rules give: key (user, then start), value, timestamp.
    fn model(records: &[(usize, i64, i64)], with_list: bool) -> Vec<(Vec<u8>, String, i64)> {
        let mut stream_time = i64::MIN;
        let mut latest_start = i64::MIN;
        let mut open: BTreeMap<(i64, &str), Vec<(i64, i64)>> = BTreeMap::new();
        let mut out = Vec::new();
        for &(u, amount, ts) in records {
            stream_time = stream_time.max(ts);
            let mut start = ts - ts.rem_euclid(ADVANCE);
            while start > ts - SIZE && start >= 0 {
                if start + SIZE + GRACE > stream_time {
                    open.entry((start, USERS[u]))
                        .or_default()
                        .push((amount, ts));
                    latest_start = latest_start.max(start);
                }
                start -= ADVANCE;
            }
            let bound = stream_time - GRACE - SIZE;
            let last_closable = bound - bound.rem_euclid(ADVANCE);
            let closing: Vec<(i64, &str)> = open
                .keys()
                .filter(|(start, _)| *start <= last_closable)
                .copied()
                .collect();
            for window in closing {
                let rows = open.remove(&window).unwrap();
                if window.0 < latest_start - SIZE - GRACE {
                    continue;
                }
                let amounts: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let mut value = format!(
                    r#"{{"N":{},"TOTAL":{},"LO":{},"HI":{}"#,
                    rows.len(),
                    amounts.iter().sum::<i64>(),
                    amounts.iter().min().unwrap(),
                    amounts.iter().max().unwrap()
                );
                if with_list {
                    let list: Vec<String> = amounts.iter().map(i64::to_string).collect();
                    value.push_str(&format!(r#","SEEN":[{}]"#, list.join(",")));
                }
                value.push('}');
                let mut key = window.1.as_bytes().to_vec();
                key.extend_from_slice(&window.0.to_be_bytes());
                let latest = rows.iter().map(|r| r.1).max().unwrap();
                out.push((key, value, latest));
            }
        }
        out
    }

    async fn start(dir: &std::path::Path, create: bool, cache_entries: usize) -> Engine {
        let options = eddy_engine::EngineOptions {
            state_cache_entries: cache_entries,
            ..Default::default()
        };
        let engine = Engine::open_with(open_store(dir), options).await.unwrap();
        if create {
            run(&engine, SETUP).await;
            run(&engine, &format!("CREATE TABLE panes AS {BY_PANES}")).await;
            run(&engine, &format!("CREATE TABLE windows AS {PER_WINDOW}")).await;
            let mut cached = Session::default();
            if cache_entries < 100 {
                // A commit at every step, after which the state cache may be dropped.
                cached
                    .properties
                    .insert("commit.interval.ms".into(), "0".into());
            }
            for (name, query) in [("cached_panes", BY_PANES), ("cached_windows", PER_WINDOW)] {
                engine
                    .execute(&mut cached, &format!("CREATE TABLE {name} AS {query}"))
                    .await
                    .unwrap();
            }
        }
        engine
    }

    // The last seed keeps a handful of groups in memory and, with the record cache, commits at
    // every step: panes are dropped and read back from the store as windows close.
    for (seed, cache_entries) in [(7u64, 100_000), (1_234, 100_000), (99_991, 8)] {
        let mut rng = seed;
        let mut next = move |below: i64| -> i64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % below as u64) as i64
        };
        let mut records = Vec::new();
        let mut time = 0i64;
        for _ in 0..400 {
            time += match next(100) {
                0 => 25 + next(20),
                1..=15 => -next(10),
                _ => next(4),
            };
            let ts = time.max(0);
            records.push((next(4) as usize, 1 + next(50), ts));
        }
        let dir = tempfile::tempdir().unwrap();
        let mut engine = start(dir.path(), true, cache_entries).await;
        let mut fed = 0;
        while fed < records.len() {
            let chunk = (1 + next(40) as usize).min(records.len() - fed);
            let batch = records[fed..fed + chunk]
                .iter()
                .map(|&(u, amount, ts)| order(USERS[u], amount, ts))
                .collect();
            feed(&engine, "orders", batch).await;
            fed += chunk;
            if fed >= records.len() / 2 && fed - chunk < records.len() / 2 {
                engine.shutdown().await;
                engine.store().close().unwrap();
                drop(engine);
                engine = start(dir.path(), false, cache_entries).await;
            }
        }
        for (table, with_list) in [
            ("PANES", false),
            ("WINDOWS", true),
            ("CACHED_PANES", false),
            ("CACHED_WINDOWS", true),
        ] {
            let got: Vec<(Vec<u8>, String, i64)> = records_of(engine.store(), table);
            assert_eq!(
                got,
                model(&records, with_list),
                "seed {seed}, {table}: {records:?}"
            );
        }
        engine.shutdown().await;
    }

    fn records_of(store: &Store, topic: &str) -> Vec<(Vec<u8>, String, i64)> {
        records(store, topic)
            .into_iter()
            .map(|(k, v, t)| (k, v.expect("final rows have values"), t))
            .collect()
    }
}

/// Hopping windows by panes at the far end of time: records near the largest timestamp neither
/// overflow a window's bounds nor stop the query. A window within the retention behind the
/// latest comes out; the earlier ones, past it, are gone; the last windows never close.
#[tokio::test]
async fn panes_at_the_end_of_time_close_what_they_can_and_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(open_store(dir.path())).await.unwrap();
    run(&engine, SETUP).await;
    run(
        &engine,
        "CREATE TABLE per_window AS SELECT user, COUNT(*) AS n FROM orders
         WINDOW HOPPING (SIZE 10 MILLISECONDS, ADVANCE BY 2 MILLISECONDS,
           GRACE PERIOD 20 MILLISECONDS)
         GROUP BY user EMIT FINAL;",
    )
    .await;
    const END: i64 = i64::MAX;
    feed(
        &engine,
        "orders",
        vec![order("ann", 1, 1), order("bob", 1, END - 30)],
    )
    .await;
    // Stream time END - 1 closes bob's five windows (the last ends at END - 21, plus 20 of
    // grace); only the one starting at END - 31 is within 30 (size and grace) of the latest
    // start, END - 1. ann's windows went when stream time jumped past them.
    feed(&engine, "orders", vec![order("cy", 1, END - 1)]).await;
    feed(&engine, "orders", vec![order("dee", 1, END)]).await;
    let out: Vec<(Vec<u8>, Option<String>, i64)> = records(engine.store(), "PER_WINDOW");
    let mut key = b"bob".to_vec();
    key.extend_from_slice(&(END - 31).to_be_bytes());
    assert_eq!(out, vec![(key, Some(r#"{"N":1}"#.to_string()), END - 30)]);
    engine.shutdown().await;
}
