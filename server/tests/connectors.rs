//! Change data capture across a crash of `eddy`: PostgreSQL commits a stream of small
//! transactions while a connector copies them into Eddy's log; `eddy` is killed with SIGKILL
//! in the middle and started again on the same data directory; the topic ends with every row
//! exactly once, in commit order, read back by a real Kafka client (kcat). The PostgreSQL
//! server is a real one, started by the test (`.ci/deps` installs it).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
#[path = "../../tests/src/postgres.rs"]
mod postgres;

const TOPIC: &str = "shop.public.orders";
const ROWS: i64 = 600;

/// The topic's values, read from the beginning with kcat: up to `most`, or as many as there
/// are (kcat stops at the end while new rows keep coming only once it has `most`).
fn topic_values(kafka: &str, most: usize) -> Vec<Value> {
    let most = most.to_string();
    let out = Command::new(common::tools::kcat())
        .args([
            "-b",
            kafka,
            "-t",
            TOPIC,
            "-C",
            "-e",
            "-o",
            "beginning",
            "-c",
            &most,
        ])
        .args(["-q", "-f", "%s\n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_for_rows(server: &common::Server, at_least: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let values = topic_values(&server.kafka, at_least);
        if values.len() >= at_least {
            return values;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {at_least} rows; the server's log:\n{}",
            values.len(),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connector_killed_mid_stream_resumes_with_every_row_exactly_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (pg, db) = runtime
        .block_on(postgres::Postgres::with_schema(
            "CREATE TABLE orders (id int PRIMARY KEY, status text);",
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let (status, body) = common::ksql(
        &server,
        &format!(
            "CREATE SOURCE CONNECTOR orders_cdc WITH (
               'connector.class' = 'io.debezium.connector.postgresql.PostgresConnector',
               'database.hostname' = '127.0.0.1', 'database.port' = '{}',
               'database.user' = 'postgres', 'database.password' = '{}',
               'database.dbname' = 'postgres', 'topic.prefix' = 'shop',
               'table.include.list' = 'public.orders');",
            pg.port(),
            postgres::PASSWORD
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["@type"], "connector_info", "{body}");

    // The first row makes the topic, so reading it back is quick from then on.
    runtime
        .block_on(db.batch_execute("INSERT INTO orders VALUES (1, 'new');"))
        .unwrap();
    wait_for_rows(&server, 1);

    // One row per transaction, committed while the server runs, dies and comes back.
    let writer = {
        let conninfo = pg.conninfo();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let (db, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                for id in 2..=ROWS {
                    db.execute("INSERT INTO orders VALUES ($1, 'new')", &[&(id as i32)])
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
    };
    let before_kill = wait_for_rows(&server, 50).len();
    drop(server); // SIGKILL
    assert!((before_kill as i64) < ROWS, "the kill came after every row");
    let server = common::start_in(&data, &[]);
    writer.join().unwrap();

    let values = wait_for_rows(&server, ROWS as usize);
    std::thread::sleep(Duration::from_millis(500));
    // Nothing more comes: a duplicate would show as more than ROWS records.
    let values = if values.len() == ROWS as usize {
        topic_values(&server.kafka, ROWS as usize + 1)
    } else {
        values
    };
    let ids: Vec<i64> = values
        .iter()
        .map(|v| v["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=ROWS).collect::<Vec<_>>(),
        "every row once, in commit order"
    );
    // The first row may come before the connector's snapshot, which then reads it.
    assert!(values[1..].iter().all(|v| v["op"] == "c"));

    // Back from the command log, running, and saying so where operators look.
    let (_, metrics) = common::request(&server.http, "GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(
            r#"eddy_connector_state{connector="ORDERS_CDC",state="RUNNING",type="SOURCE"} 1"#
        ),
        "{metrics}"
    );
    let (_, shown) = common::ksql(&server, "SHOW CONNECTORS;");
    assert_eq!(shown[0]["@type"], "connector_list", "{shown}");
    assert_eq!(
        shown[0]["connectors"][0]["state"],
        "RUNNING (1/1 tasks RUNNING)"
    );
}
