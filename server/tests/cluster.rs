//! Eddy with its log on a Kafka cluster (`--bootstrap-servers`). No Apache Kafka package is
//! at hand, so the cluster is a second `eddy` process on its embedded log, which speaks
//! Kafka's protocol to the first one's librdkafka clients as a broker would; kcat, another
//! librdkafka client, reads and writes the cluster's topics directly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::kcat;

/// Every record of a topic on the cluster as `key=value` lines, sorted: partitions interleave.
fn topic_lines(cluster: &str, topic: &str) -> Vec<String> {
    let out = kcat(
        &[
            "-b", cluster, "-t", topic, "-C", "-e", "-q", "-f", "%k=%s\n",
        ],
        None,
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Waits until `check` holds of the topic's records on the cluster.
fn await_topic(cluster: &str, topic: &str, what: &str, check: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = topic_lines(cluster, topic);
        if check(&lines) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {topic} holds {lines:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rows of a pull query on `node`, as arrays of columns.
fn pull(node: &common::Server, sql: &str) -> Vec<Value> {
    let (status, body) = common::request(
        &node.http,
        "POST",
        "/query",
        Some(&json!({"ksql": sql}).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("row").map(|row| row["columns"].clone()))
        .collect()
}

fn ksql_ok(node: &common::Server, sql: &str) -> Value {
    let (status, body) = common::ksql(node, sql);
    assert_eq!(status, 200, "{sql}: {body}\n{}", node.log_tail());
    body
}

#[test]
fn streams_tables_and_queries_live_on_the_cluster() {
    let cluster = common::start();
    let brokers = cluster.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // At-least-once here; the other tests run exactly-once, the default.
    let flags = [
        "--bootstrap-servers",
        &brokers,
        "--processing-guarantee",
        "at_least_once",
    ];
    let node = common::start_in(&data, &flags);

    ksql_ok(
        &node,
        "CREATE STREAM clicks (user STRING KEY, page STRING, ms INT)
           WITH (kafka_topic='clicks', value_format='JSON', partitions=4);
         CREATE STREAM slow_clicks WITH (kafka_topic='slow_clicks') AS
           SELECT user, UCASE(page) AS page FROM clicks WHERE ms > 100;
         CREATE TABLE pages WITH (kafka_topic='pages') AS
           SELECT page, COUNT(*) AS n FROM clicks GROUP BY page;",
    );
    // The topics are the cluster's, with the partitions asked for.
    let metadata = kcat(&["-b", &brokers, "-L"], None);
    assert!(
        metadata.contains("topic \"clicks\" with 4 partitions"),
        "{metadata}"
    );
    assert!(metadata.contains("topic \"slow_clicks\""), "{metadata}");
    // SHOW TOPICS on the node lists the cluster's topics.
    let shown = ksql_ok(&node, "SHOW TOPICS;");
    assert!(shown.to_string().contains("\"clicks\""), "{shown}");

    // Rows inserted through the node, and records produced to the cluster by another client,
    // both go through the node's queries.
    ksql_ok(
        &node,
        "INSERT INTO clicks (user, page, ms) VALUES ('ann', 'home', 50);
         INSERT INTO clicks (user, page, ms) VALUES ('bob', 'cart', 250);",
    );
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("cy|{\"page\":\"pay\",\"ms\":120}\ndee|{\"page\":\"cart\",\"ms\":90}\n"),
    );
    await_topic(&brokers, "slow_clicks", "the filtered stream", |lines| {
        lines == ["bob={\"PAGE\":\"CART\"}", "cy={\"PAGE\":\"PAY\"}"]
    });
    // The aggregate's changelog is on the cluster; its latest count per page is right.
    await_topic(&brokers, "pages", "the table's changelog", |lines| {
        lines.contains(&"cart={\"N\":2}".to_string())
            && lines.contains(&"home={\"N\":1}".to_string())
            && lines.contains(&"pay={\"N\":1}".to_string())
    });

    // A pull query reads the node's materialized table.
    assert_eq!(
        pull(&node, "SELECT * FROM pages WHERE page = 'cart';"),
        vec![json!(["cart", 2])]
    );
    // A pull query over a stream scans the cluster's partitions up to their end.
    let mut scanned = pull(&node, "SELECT user FROM clicks;");
    scanned.sort_by_key(Value::to_string);
    assert_eq!(
        scanned,
        vec![
            json!(["ann"]),
            json!(["bob"]),
            json!(["cy"]),
            json!(["dee"])
        ]
    );

    // The node restarts on its data directory: the catalog and the queries come back, go on
    // from their positions, and new records flow.
    drop(node);
    let node = common::start_in(&data, &flags);
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("eve|{\"page\":\"home\",\"ms\":300}\n"),
    );
    await_topic(&brokers, "slow_clicks", "after the restart", |lines| {
        lines.contains(&"eve={\"PAGE\":\"HOME\"}".to_string())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while pull(&node, "SELECT * FROM pages WHERE page = 'home';") != vec![json!(["home", 2])] {
        assert!(Instant::now() < deadline, "{}", node.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Dropping a stream with DELETE TOPIC deletes it on the cluster.
    ksql_ok(&node, "DROP STREAM slow_clicks DELETE TOPIC;");
    let metadata = kcat(&["-b", &brokers, "-L"], None);
    assert!(!metadata.contains("topic \"slow_clicks\""), "{metadata}");
}

#[test]
fn a_cluster_that_does_not_answer_stops_the_server_with_the_reason() {
    // A port nothing listens on: the server must not come up as if it had a log.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = unused.local_addr().unwrap().to_string();
    drop(unused);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--schema-registry-listen",
            "off",
            "--bootstrap-servers",
            &address,
            "--cluster-property",
            "socket.connection.setup.timeout.ms=1000",
        ])
        .env("EDDY_CLUSTER_TIMEOUT_MS", "3000")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Kafka cluster"), "{stderr}");
}

#[test]
fn a_node_on_an_empty_directory_restores_the_catalog_and_state_from_the_cluster() {
    let cluster = common::start();
    let brokers = cluster.kafka.clone();
    let first = common::start_with(&["--bootstrap-servers", &brokers, "--service-id", "shop"]);
    ksql_ok(
        &first,
        "CREATE STREAM clicks (user STRING KEY, page STRING, ms INT)
           WITH (kafka_topic='clicks', value_format='JSON', partitions=2);
         CREATE STREAM slow_clicks WITH (kafka_topic='slow_clicks') AS
           SELECT user, page FROM clicks WHERE ms > 100;
         CREATE TABLE pages WITH (kafka_topic='pages') AS
           SELECT page, COUNT(*) AS n FROM clicks GROUP BY page;",
    );
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("ann|{\"page\":\"home\",\"ms\":150}\nbob|{\"page\":\"home\",\"ms\":250}\n"),
    );
    await_topic(&brokers, "pages", "the first node's count", |lines| {
        lines.contains(&"home={\"N\":2}".to_string())
    });
    // The catalog and the state changelog are the cluster's topics, named as ksqlDB names them.
    let metadata = kcat(&["-b", &brokers, "-L"], None);
    assert!(
        metadata.contains("topic \"_confluent-ksql-shop_command_topic\""),
        "{metadata}"
    );
    assert!(
        metadata.contains("topic \"_confluent-ksql-shop_state_changelog\""),
        "{metadata}"
    );
    let counted = topic_lines(&brokers, "pages");
    drop(first);

    // A second node of the same service, on a new directory, has the catalog and goes on from
    // the first one's positions and counts: no record is processed twice.
    let second = common::start_with(&["--bootstrap-servers", &brokers, "--service-id", "shop"]);
    let streams = ksql_ok(&second, "SHOW STREAMS;").to_string();
    assert!(streams.contains("SLOW_CLICKS"), "{streams}");
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("cy|{\"page\":\"home\",\"ms\":350}\n"),
    );
    await_topic(&brokers, "pages", "the second node's count", |lines| {
        lines.contains(&"home={\"N\":3}".to_string())
    });
    assert_eq!(
        topic_lines(&brokers, "slow_clicks").len(),
        3,
        "{}",
        second.log_tail()
    );
    // The second node's only update is the new count.
    let mut expected = counted.clone();
    expected.push("home={\"N\":3}".to_string());
    assert_eq!(
        topic_lines(&brokers, "pages"),
        expected,
        "{}",
        second.log_tail()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while pull(&second, "SELECT * FROM pages WHERE page = 'home';") != vec![json!(["home", 3])] {
        assert!(Instant::now() < deadline, "{}", second.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Another service id on the same cluster starts with an empty catalog of its own.
    let other = common::start_with(&["--bootstrap-servers", &brokers, "--service-id", "other"]);
    let streams = ksql_ok(&other, "SHOW STREAMS;").to_string();
    assert!(!streams.contains("SLOW_CLICKS"), "{streams}");
}

#[test]
fn a_node_killed_mid_stream_leaves_no_duplicate_and_loses_nothing() {
    let cluster = common::start();
    let brokers = cluster.kafka.clone();
    let first = common::start_with(&["--bootstrap-servers", &brokers, "--service-id", "eos"]);
    ksql_ok(
        &first,
        "CREATE STREAM events (id INT KEY, v INT)
           WITH (kafka_topic='events', key_format='JSON', value_format='JSON', partitions=4);
         CREATE STREAM evens WITH (kafka_topic='evens') AS
           SELECT id, v FROM events WHERE v % 2 = 0;
         CREATE TABLE totals WITH (kafka_topic='totals') AS
           SELECT id % 10 AS bucket, COUNT(*) AS n, SUM(v) AS total FROM events GROUP BY id % 10;",
    );
    const EVENTS: i64 = 40_000;
    let input: String = (0..EVENTS)
        .map(|i| format!("{i}|{{\"V\":{i}}}\n"))
        .collect();
    kcat(
        &["-b", &brokers, "-t", "events", "-P", "-K", "|"],
        Some(&input),
    );
    // Killed (SIGKILL) once part of the input is processed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while topic_lines(&brokers, "evens").is_empty() {
        assert!(Instant::now() < deadline, "{}", first.log_tail());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first);

    let second = common::start_with(&["--bootstrap-servers", &brokers, "--service-id", "eos"]);
    let evens = EVENTS as usize / 2;
    await_topic(&brokers, "evens", "every even event once", |lines| {
        lines.len() >= evens
    });
    let lines = topic_lines(&brokers, "evens");
    let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), evens, "{}", second.log_tail());
    assert_eq!(distinct.len(), evens);
    // Each bucket's final count and sum, as one run over the input makes them.
    for bucket in [0i64, 3, 9] {
        let n = (0..EVENTS).filter(|i| i % 10 == bucket).count() as i64;
        let total: i64 = (0..EVENTS).filter(|i| i % 10 == bucket).sum();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = pull(
                &second,
                &format!("SELECT n, total FROM totals WHERE bucket = {bucket};"),
            );
            if rows == vec![json!([n, total])] {
                break;
            }
            assert!(Instant::now() < deadline, "{rows:?}\n{}", second.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
