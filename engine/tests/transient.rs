//! Push queries end completely: closing one, or dropping it as a client that disconnects does,
//! stops its task and its reader and takes it off `SHOW QUERIES`.

use std::time::{Duration, Instant};

use eddy_engine::query::transient::TransientEvent;
use eddy_engine::{Engine, Session, StatementResult};

mod common;

/// A session whose push queries read their sources from the start.
fn from_the_start() -> Session {
    let mut session = Session::default();
    session
        .properties
        .insert("auto.offset.reset".into(), "earliest".into());
    session
}

async fn push_queries_listed(engine: &Engine) -> usize {
    let shown = engine
        .execute(&mut Session::default(), "SHOW QUERIES;")
        .await
        .unwrap();
    match &shown[0] {
        StatementResult::Queries { queries, .. } => {
            queries.iter().filter(|q| q.query_type == "PUSH").count()
        }
        other => panic!("SHOW QUERIES answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_push_queries_opened_and_closed_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', partitions=2, value_format='JSON');
         INSERT INTO s (id, v) VALUES (1, 'a');",
    )
    .await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let session = from_the_start();

    for round in 0..200 {
        let mut query = engine
            .query(&session, "SELECT * FROM s EMIT CHANGES;")
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), query.events.recv())
            .await
            .expect("the push query sent no row")
            .expect("the push query ended early");
        assert!(matches!(first, TransientEvent::Row { .. }), "{first:?}");
        if round % 2 == 0 {
            // Closed by id, as /close-query does: the query ends and says nothing more.
            assert!(engine.close_query(&query.id));
            let rest = tokio::time::timeout(Duration::from_secs(10), query.events.recv())
                .await
                .expect("a closed query kept its channel open");
            assert!(
                !matches!(rest, Some(TransientEvent::Row { .. })),
                "{rest:?}"
            );
        } else {
            // Dropped, as when the client disconnects.
            drop(query);
        }
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tasks = metrics.num_alive_tasks();
        let listed = push_queries_listed(&engine).await;
        if tasks <= tasks_before && listed == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tasks} tasks alive (was {tasks_before}) and {listed} push queries listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn aggregates_without_group_by_count_every_row_in_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE STREAM s (id INT KEY, v INT) WITH (kafka_topic='s', partitions=2, value_format='JSON');
         INSERT INTO s (id, v) VALUES (1, 10);
         INSERT INTO s (id, v) VALUES (2, 5);",
    )
    .await;
    let session = from_the_start();
    let mut query = engine
        .query(
            &session,
            "SELECT COUNT(*) AS n, SUM(v) AS total FROM s EMIT CHANGES LIMIT 2;",
        )
        .await
        .unwrap();
    let names: Vec<&str> = query.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["N", "TOTAL"]);
    let mut rows = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), query.events.recv())
        .await
        .unwrap()
    {
        match event {
            TransientEvent::Row { columns, .. } => rows.push(columns),
            TransientEvent::Finished(_) => break,
            TransientEvent::Error(e) => panic!("{e}"),
        }
    }
    // The two partitions may be read in either order; the count goes 1, 2 all the same.
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], 1);
    assert_eq!(rows[1], vec![serde_json::json!(2), serde_json::json!(15)]);
    engine.shutdown().await;
}

#[tokio::test]
async fn push_queries_evaluate_lambdas() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE STREAM s (id INT KEY, n ARRAY<INT>) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         INSERT INTO s (id, n) VALUES (1, ARRAY[1, 5, 9]);",
    )
    .await;
    let mut query = engine
        .query(
            &from_the_start(),
            "SELECT id, TRANSFORM(n, x => x * id) AS t, REDUCE(n, 0, (a, x) => a + x) AS r
             FROM s WHERE ARRAY_LENGTH(FILTER(n, x => x > 4)) = 2 EMIT CHANGES LIMIT 1;",
        )
        .await
        .unwrap();
    assert_eq!(
        next_row(&mut query).await,
        vec![
            serde_json::json!(1),
            serde_json::json!([1, 5, 9]),
            serde_json::json!(15)
        ]
    );
    engine.shutdown().await;
}

async fn next_row(
    query: &mut eddy_engine::query::transient::TransientQuery,
) -> Vec<serde_json::Value> {
    match tokio::time::timeout(Duration::from_secs(10), query.events.recv()).await {
        Ok(Some(TransientEvent::Row { columns, .. })) => columns,
        other => panic!("expected a row, got {other:?}"),
    }
}

/// Push queries on one source share one reader of its topic, and each still gets every row
/// from where it started: those that start later or fall behind read the gap themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_queries_on_a_source_share_one_reader() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(common::open_store(dir.path())).await.unwrap();
    common::run(
        &engine,
        "CREATE STREAM s (id INT KEY, v INT) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE STREAM t (id INT KEY, v INT) WITH (kafka_topic='t', partitions=1, value_format='JSON');",
    )
    .await;
    let latest = Session::default();
    let mut queries = Vec::new();
    for _ in 0..20 {
        queries.push(
            engine
                .query(&latest, "SELECT v FROM s WHERE v >= 0 EMIT CHANGES;")
                .await
                .unwrap(),
        );
    }
    let mut other = engine
        .query(&latest, "SELECT v FROM t EMIT CHANGES;")
        .await
        .unwrap();
    assert_eq!(engine.push_readers(), 2, "one reader per topic");

    // One query does not read its rows for a while: it falls behind the shared reader.
    let rows = 3_000;
    for chunk in (0..rows).collect::<Vec<i64>>().chunks(10) {
        let values: Vec<String> = chunk.iter().map(|v| format!("(1, {v})")).collect();
        let sql: String = values
            .iter()
            .map(|v| format!("INSERT INTO s (id, v) VALUES {v};"))
            .collect();
        common::run(&engine, &sql).await;
    }
    common::run(&engine, "INSERT INTO t (id, v) VALUES (1, 7);").await;
    for query in &mut queries {
        for expected in 0..rows {
            assert_eq!(next_row(query).await, vec![serde_json::json!(expected)]);
        }
    }
    assert_eq!(next_row(&mut other).await, vec![serde_json::json!(7)]);

    // A query that starts from the beginning reads what came before it alone, then shares.
    let mut late = engine
        .query(&from_the_start(), "SELECT v FROM s EMIT CHANGES;")
        .await
        .unwrap();
    common::run(&engine, "INSERT INTO s (id, v) VALUES (1, -1);").await;
    for expected in (0..rows).chain([-1]) {
        assert_eq!(next_row(&mut late).await, vec![serde_json::json!(expected)]);
    }
    assert_eq!(engine.push_readers(), 2);

    // When the last query on a topic ends, so does its reader.
    drop((queries, other, late));
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.push_readers() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} readers left",
            engine.push_readers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown().await;
}

/// Past `ksql.max.push.queries` a push query is refused with a message naming the limit; once
/// one closes, another is accepted. Pull queries are not counted.
#[tokio::test]
async fn push_queries_past_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = eddy_engine::EngineOptions {
        max_push_queries: 2,
        ..eddy_engine::EngineOptions::default()
    };
    let engine = Engine::open_with(common::open_store(dir.path()), options)
        .await
        .unwrap();
    common::run(
        &engine,
        "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;",
    )
    .await;
    let session = Session::default();
    let push = "SELECT * FROM s EMIT CHANGES;";
    let first = engine.query(&session, push).await.unwrap();
    let _second = engine.query(&session, push).await.unwrap();
    let refused = engine.query(&session, push).await.unwrap_err().to_string();
    assert!(
        refused.contains("running 2 push queries already")
            && refused.contains("ksql.max.push.queries"),
        "{refused}"
    );
    engine.query(&session, "SELECT * FROM t;").await.unwrap();
    assert!(engine.close_query(&first.id));
    drop(first);
    engine.query(&session, push).await.unwrap();
    engine.shutdown().await;
}
