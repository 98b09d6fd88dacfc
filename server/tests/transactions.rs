//! Kafka transactions end to end with confluent-kafka (librdkafka): commits and aborts seen by
//! read_committed and read_uncommitted consumers, a consume-transform-produce copy with its
//! offsets in the transaction across a forced abort, fencing of an older producer, a timed-out
//! transaction aborted, and a SIGKILL mid-transaction after which the open transaction is
//! aborted, the committed one kept, and a persistent query counts each committed record once.
//! `.ci/deps` installs confluent-kafka and kcat.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/confluent_transactions.py"
);

/// Runs one scenario of the client script and returns what it printed.
fn scenario(kafka: &str, name: &str) -> String {
    let out = Command::new(common::tools::python())
        .args([SCRIPT, kafka, name])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn read_committed_sees_only_committed_transactions_and_read_uncommitted_sees_all() {
    let server = common::start();
    assert_eq!(
        scenario(&server.kafka, "commit_and_abort"),
        "committed ['a1', 'a2', 'a3', 'b1', 'b2']\n\
         uncommitted ['a1', 'a2', 'a3', 'b1', 'b2', 'x1', 'x2']\n",
        "{}",
        server.log_tail()
    );
}

#[test]
fn a_consume_transform_produce_loop_copies_exactly_once_across_an_abort() {
    let server = common::start();
    assert_eq!(
        scenario(&server.kafka, "copy_exactly_once"),
        "copied 30 distinct 30\nvalues True\ngroup offsets 30\n",
        "{}",
        server.log_tail()
    );
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let server = common::start();
    assert_eq!(
        scenario(&server.kafka, "fencing"),
        "old fenced True\ncommitted ['fresh']\n",
        "{}",
        server.log_tail()
    );
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted() {
    let server = common::start();
    assert_eq!(
        scenario(&server.kafka, "timeout"),
        "late refused True\ncommitted ['quick']\n",
        "{}",
        server.log_tail()
    );
    let (_, metrics) = common::exchange(
        &server.http,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.http
        ),
    );
    for line in [
        "eddy_transactions_open 0",
        "eddy_transactions_committed_total 1",
        "eddy_transactions_aborted_total 1",
        "eddy_transactions_timed_out_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

/// What kcat, reading `topic` from the start to its end with librdkafka's default
/// isolation (read_committed), prints, one value per line.
fn kcat_reads(kafka: &str, topic: &str) -> String {
    let out = Command::new(common::tools::kcat())
        .args([
            "-b",
            kafka,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_reads_around_an_open_transaction_and_past_it_once_it_commits() {
    let server = common::start();
    let mut client = Command::new(common::tools::python())
        .args([SCRIPT, &server.kafka, "hold_open"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    // kcat stops at the end of what is committed, neither stalling on the open transaction
    // nor showing its record.
    let started = Instant::now();
    assert_eq!(kcat_reads(&server.kafka, "held"), "k1\nk2\n");
    assert!(started.elapsed() < Duration::from_secs(20));
    use std::io::Write;
    writeln!(client.stdin.take().unwrap()).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "done");
    assert_eq!(kcat_reads(&server.kafka, "held"), "k1\nk2\nk3\n");
    client.wait().unwrap();
}

/// Runs a statement with queries reading from the earliest offset.
fn ksql(server: &common::Server, sql: &str) {
    let properties = json!({"auto.offset.reset": "earliest"});
    let body = json!({"ksql": sql, "streamsProperties": properties}).to_string();
    let (status, answer) = common::request(&server.http, "POST", "/ksql", Some(&body));
    assert_eq!(status, 200, "{sql}: {answer}");
}

/// The rows of the table `counts` (value, count), by a pull query.
fn counted(server: &common::Server) -> Vec<(String, u64)> {
    let body = json!({"ksql": "SELECT * FROM counts;"}).to_string();
    let (status, answer) = common::request(&server.http, "POST", "/query", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let mut rows: Vec<(String, u64)> = answer
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let columns = item["row"]["columns"].as_array()?;
            Some((
                columns.first()?.as_str()?.to_string(),
                columns.get(1)?.as_u64()?,
            ))
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn after_a_kill_mid_transaction_the_open_one_aborts_and_the_committed_one_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let mut client = Command::new(common::tools::python())
        .args([SCRIPT, &server.kafka, "open_then_wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "open\n");
    // SIGKILL, with the transaction open and its records written.
    drop(server);
    let _ = client.kill();
    let _ = client.wait();

    let server = common::start_in(&data, &[]);
    ksql(
        &server,
        "CREATE STREAM crash_values (v STRING) WITH (kafka_topic='crash', value_format='DELIMITED');",
    );
    ksql(
        &server,
        "CREATE TABLE counts AS SELECT v, COUNT(*) AS n FROM crash_values GROUP BY v;",
    );
    // The open transaction times out (3 s) and is aborted; a new one commits after it.
    assert_eq!(
        scenario(&server.kafka, "after_restart"),
        "committed ['c0', 'c1', 'c2', 'c3', 'c4', 'd1', 'd2']\n",
        "{}",
        server.log_tail()
    );
    let committed: Vec<(String, u64)> = ["c0", "c1", "c2", "c3", "c4", "d1", "d2"]
        .into_iter()
        .map(|v| (v.to_string(), 1))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted(&server) != committed {
        assert!(
            Instant::now() < deadline,
            "the query counted {:?}, not each committed record once\n{}",
            counted(&server),
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more arrives later: the aborted records never count.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counted(&server), committed);
}
