//! Change data capture across a crash of `eddy`: PostgreSQL commits a stream of small
//! transactions while a connector copies them into Eddy's log; `eddy` is killed with SIGKILL
//! in the middle and started again on the same data directory; the topic ends with every row
//! exactly once, in commit order, read back by a real Kafka client (kcat). The PostgreSQL
//! server is a real one, started by the test (`.ci/deps` installs it).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
// Shared with the tests crate, whose benches use more of it than these tests do.
#[allow(dead_code)]
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

/// The order-tracking example of docs/connectors.md: the service's tables, the reporting
/// tables the sinks write, and the outbox.
const SHOP: &str = "
CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, status text NOT NULL);
CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
                     aggregateid text NOT NULL, type text NOT NULL, payload jsonb);
CREATE TABLE order_report (order_id text PRIMARY KEY, status text NOT NULL);
CREATE TABLE status_report (status text PRIMARY KEY, orders bigint NOT NULL);";

/// Eddy's side of the example, for the database on `port`.
fn order_tracking(port: u16) -> String {
    let database = format!(
        "'database.hostname' = '127.0.0.1', 'database.port' = '{port}',
         'database.user' = 'postgres', 'database.password' = '{}', 'database.dbname' = 'postgres'",
        postgres::PASSWORD
    );
    let sink = |name: &str, topic: &str, table: &str, key: &str| {
        format!(
            "CREATE SINK CONNECTOR {name} WITH (
               'connector.class' = 'io.confluent.connect.jdbc.JdbcSinkConnector',
               'connection.url' = 'jdbc:postgresql://127.0.0.1:{port}/postgres',
               'connection.user' = 'postgres', 'connection.password' = '{}',
               'topics' = '{topic}', 'table.name.format' = '{table}',
               'insert.mode' = 'upsert', 'pk.mode' = 'record_key', 'pk.fields' = '{key}',
               'delete.enabled' = 'true');",
            postgres::PASSWORD
        )
    };
    format!(
        "SET 'auto.offset.reset' = 'earliest';
         CREATE SOURCE CONNECTOR orders_outbox WITH (
           'connector.class' = 'io.debezium.connector.postgresql.PostgresConnector', {database},
           'topic.prefix' = 'shop', 'slot.name' = 'orders_outbox',
           'table.include.list' = 'public.outbox', 'transforms' = 'outbox',
           'transforms.outbox.type' = 'io.debezium.transforms.outbox.EventRouter');
         CREATE STREAM order_events (order_id STRING KEY, status STRING, amount DOUBLE)
           WITH (kafka_topic = 'outbox.event.order', partitions = 1, value_format = 'JSON');
         CREATE TABLE order_status
           WITH (key_format = 'JSON', dead_letter_topic = 'order_events_dead') AS
           SELECT order_id, LATEST_BY_OFFSET(status) AS status FROM order_events GROUP BY order_id;
         CREATE TABLE status_counts WITH (key_format = 'JSON') AS
           SELECT status, COUNT(*) AS orders FROM order_status GROUP BY status HAVING COUNT(*) > 0;
         {}
         {}",
        sink(
            "order_report_sink",
            "ORDER_STATUS",
            "order_report",
            "order_id"
        ),
        sink(
            "status_report_sink",
            "STATUS_COUNTS",
            "status_report",
            "status"
        ),
    )
}

/// Rows of `sql` as text pairs.
async fn pairs(db: &tokio_postgres::Client, sql: &str) -> Vec<(String, String)> {
    db.query(sql, &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// The service: each order placed with its event in one transaction, and some paid and
/// shipped later, each change with its event; one event in the middle that no order has and
/// whose amount is not a number.
async fn run_shop(conninfo: String, orders: i32) {
    let (mut db, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let event = |id: &str, status: &str, amount: &str| {
        format!(
            "INSERT INTO outbox VALUES (gen_random_uuid(), 'order', '{id}', 'Order{status}',
               '{{\"status\": \"{status}\", \"amount\": {amount}}}');"
        )
    };
    for id in 1..=orders {
        let tx = db.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "INSERT INTO orders VALUES ({id}, 'c{}', 'placed'); {}",
            id % 7,
            event(&id.to_string(), "placed", &format!("{id}.5"))
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let earlier = id - 5;
        let next = match earlier % 6 {
            0 => Some("shipped"),
            3 => Some("paid"),
            _ => None,
        };
        if let (true, Some(status)) = (earlier > 0, next) {
            let tx = db.transaction().await.unwrap();
            tx.batch_execute(&format!(
                "UPDATE orders SET status = '{status}' WHERE id = {earlier}; {}",
                event(&earlier.to_string(), status, "0")
            ))
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        if id == orders / 2 {
            db.batch_execute(&event("9999", "placed", "\"lots\""))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The README's order-tracking example end to end: orders and their outbox events written to
/// PostgreSQL in one transaction each, the events captured into Eddy, each order's status and
/// the count per status computed in SQL, both written back to PostgreSQL reporting tables by
/// sinks, a poison event sent to the dead-letter topic, and `eddy` killed with SIGKILL in the
/// middle. The reporting tables end equal to what the orders table says, and the dead letter
/// is there once.
#[test]
fn the_order_tracking_example_survives_a_kill_and_reports_what_the_database_holds() {
    const ORDERS: i32 = 240;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (pg, db) = runtime
        .block_on(postgres::Postgres::with_schema(SHOP))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let (status, body) = common::ksql(&server, &order_tracking(pg.port()));
    assert_eq!(status, 200, "{body}");

    let writer = {
        let conninfo = pg.conninfo();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(run_shop(conninfo, ORDERS))
        })
    };
    // Killed once the reports have started to fill.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reported = runtime.block_on(pairs(&db, "SELECT order_id, status FROM order_report"));
        if reported.len() >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reports; the server's log:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server); // SIGKILL
    assert!(!writer.is_finished(), "the kill came after the last order");
    let server = common::start_in(&data, &[]);
    writer.join().unwrap();

    let expected_orders = "SELECT id::text, status FROM orders ORDER BY id::text";
    let reported_orders = "SELECT order_id, status FROM order_report ORDER BY order_id";
    let expected_counts =
        "SELECT status, count(*)::text FROM orders GROUP BY status ORDER BY status";
    let reported_counts = "SELECT status, orders::text FROM status_report ORDER BY status";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (want, got, want_counts, got_counts) = runtime.block_on(async {
            (
                pairs(&db, expected_orders).await,
                pairs(&db, reported_orders).await,
                pairs(&db, expected_counts).await,
                pairs(&db, reported_counts).await,
            )
        });
        if want == got && want_counts == got_counts {
            assert_eq!(want.len(), ORDERS as usize);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reports {} of {} orders, counts {got_counts:?} for {want_counts:?}; the server's log:\n{}",
            got.len(),
            want.len(),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The poison event is a dead letter, once, with where it came from and why.
    let out = Command::new(common::tools::kcat())
        .args(["-b", &server.kafka, "-t", "order_events_dead", "-C", "-e"])
        .args(["-o", "beginning", "-q", "-f", "%k|%s|%h\n"])
        .output()
        .unwrap();
    let letters = String::from_utf8_lossy(&out.stdout).into_owned();
    let letters: Vec<&str> = letters.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].starts_with("9999|") && letters[0].contains("\"lots\""),
        "{letters:?}"
    );
    assert!(
        letters[0].contains("__connect.errors.topic=outbox.event.order")
            && letters[0].contains("__connect.errors.stage=VALUE_CONVERTER"),
        "{letters:?}"
    );
}
