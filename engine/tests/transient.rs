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
