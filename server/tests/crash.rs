//! Exactly-once state across a crash: a persistent aggregation is killed with SIGKILL while it
//! works through its input, the server restarts on the same data directory, and the table it
//! ends with equals that of an aggregation over the same input that was never interrupted, and
//! the counts computed from the input itself. kcat produces the input (`.ci/deps` installs it).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const USERS: u64 = 50;
const ORDERS: u64 = 400_000;

fn produce(kafka: &str, lines: &str) {
    let mut child = Command::new(common::tools::kcat())
        .args(["-b", kafka, "-t", "orders", "-P", "-K:"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ksql(server: &common::Server, sql: &str, properties: Value) {
    let body = json!({"ksql": sql, "streamsProperties": properties}).to_string();
    let (status, answer) = common::request(&server.http, "POST", "/ksql", Some(&body));
    assert_eq!(status, 200, "{sql}: {answer}");
}

/// Records a query has processed, by the id prefix of its query, from `/metrics`.
fn records_in(server: &common::Server, query_prefix: &str) -> u64 {
    let (_, text) = common::exchange(
        &server.http,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.http
        ),
    );
    text.lines()
        .filter(|l| {
            l.starts_with(&format!(
                "eddy_query_records_in_total{{query=\"{query_prefix}"
            ))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The rows of a pull query over a table: user → (count, total).
fn table(server: &common::Server, name: &str) -> BTreeMap<String, (u64, u64)> {
    let body = json!({"ksql": format!("SELECT * FROM {name};")}).to_string();
    let (status, answer) = common::request(&server.http, "POST", "/query", Some(&body));
    assert_eq!(status, 200, "{answer}");
    answer
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["row"]["columns"].as_array())
        .map(|columns| {
            (
                columns[0].as_str().unwrap().to_string(),
                (columns[1].as_u64().unwrap(), columns[2].as_u64().unwrap()),
            )
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_aggregation_killed_mid_stream_ends_with_the_table_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut lines = String::new();
    for i in 0..ORDERS {
        let user = format!("u{:02}", (i * 7) % USERS);
        let amount = i % 13;
        let entry = expected.entry(user.clone()).or_default();
        entry.0 += 1;
        entry.1 += amount;
        lines.push_str(&format!("{user}:{{\"amount\":{amount}}}\n"));
    }

    let server = common::start_in(&data, &[]);
    ksql(
        &server,
        "CREATE STREAM orders (user STRING KEY, amount INT)
             WITH (kafka_topic='orders', partitions=2, value_format='JSON');",
        json!({}),
    );
    produce(&server.kafka, &lines);
    // The record cache is on (ksqlDB's default), committing every 20 ms, so a kill lands
    // between commits that each hold coalesced updates, state and offsets.
    ksql(
        &server,
        "CREATE TABLE totals AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
             FROM orders GROUP BY user;",
        json!({"auto.offset.reset": "earliest", "commit.interval.ms": "20"}),
    );
    wait_for("the first commit", || {
        records_in(&server, "CTAS_TOTALS") > 0
    });
    let at_kill = records_in(&server, "CTAS_TOTALS");
    println!("killed after {at_kill} of {ORDERS} records were committed");
    // Dropping the server kills it with SIGKILL: no shutdown, no last commit.
    drop(server);
    assert!(
        at_kill < ORDERS,
        "the query had finished ({at_kill} records) before the kill"
    );

    let server = common::start_in(&data, &[]);
    // An aggregation over the same input that nothing interrupts.
    ksql(
        &server,
        "CREATE TABLE clean AS SELECT user, COUNT(*) AS n, SUM(amount) AS total
             FROM orders GROUP BY user;",
        json!({"auto.offset.reset": "earliest"}),
    );
    let counted = |t: &BTreeMap<String, (u64, u64)>| t.values().map(|v| v.0).sum::<u64>();
    wait_for("the restarted aggregation", || {
        counted(&table(&server, "TOTALS")) >= ORDERS
    });
    wait_for("the uninterrupted aggregation", || {
        counted(&table(&server, "CLEAN")) >= ORDERS
    });
    let resumed = table(&server, "TOTALS");
    assert_eq!(resumed, expected, "every order counted exactly once");
    assert_eq!(resumed, table(&server, "CLEAN"));
}
