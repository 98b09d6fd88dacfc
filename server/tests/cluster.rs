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
    // A killed node's partitions move once its session times out (6 s), and a transaction it
    // left open holds readers for up to 10 s more; under a parallel test run, the rest of the
    // input then takes its time too.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let lines = topic_lines(cluster, topic);
        if check(&lines) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {topic} holds {lines:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills `node` (SIGKILL) as soon as its query has written to `topic`: mid-stream.
fn kill_once_output_begins(node: common::Server, cluster: &str, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while topic_lines(cluster, topic).is_empty() {
        assert!(Instant::now() < deadline, "{}", node.log_tail());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(node);
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
    let stderr = failed_start(&[
        "--bootstrap-servers",
        &address,
        "--cluster-property",
        "socket.connection.setup.timeout.ms=1000",
        "--cluster-timeout-ms",
        "3000",
    ]);
    assert!(stderr.contains("Kafka cluster"), "{stderr}");
}

/// Starts a server that must fail to start; what it printed.
fn failed_start(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--schema-registry-listen", "off"])
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    kill_once_output_begins(first, &brokers, "evens");

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

#[test]
fn a_node_rides_out_the_cluster_going_away_and_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_data = dir.path().join("cluster");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let brokers = format!("127.0.0.1:{port}");
    let cluster_flags = ["--kafka-listen", brokers.as_str()];
    let cluster = common::start_in(&cluster_data, &cluster_flags);
    let mut node = common::start_with(&[
        "--bootstrap-servers",
        &brokers,
        "--cluster-timeout-ms",
        "5000",
        "--query-retry-backoff-initial-ms",
        "200",
        "--query-retry-backoff-max-ms",
        "1000",
    ]);
    ksql_ok(
        &node,
        "CREATE STREAM clicks (user STRING KEY, page STRING)
           WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
         CREATE STREAM pages WITH (kafka_topic='pages') AS SELECT user, UCASE(page) AS page FROM clicks;",
    );
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("ann|{\"page\":\"home\"}\n"),
    );
    await_topic(&brokers, "pages", "before the outage", |lines| {
        lines == ["ann={\"PAGE\":\"HOME\"}"]
    });

    // The broker dies (SIGKILL). The node stays up; what needs the cluster fails with the
    // reason, in bounded time, and what does not still works.
    drop(cluster);
    let started = Instant::now();
    let (status, body) = common::ksql(
        &node,
        "CREATE STREAM more (id INT) WITH (kafka_topic='more', value_format='JSON', partitions=1);",
    );
    assert_ne!(status, 200, "{body}");
    assert!(body.to_string().contains("Kafka cluster"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let streams = ksql_ok(&node, "SHOW STREAMS;").to_string();
    assert!(streams.contains("PAGES"), "{streams}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.alive(), "{}", node.log_tail());

    // The broker comes back on its data and address: the query goes on, with nothing lost
    // and nothing twice.
    let _cluster = common::start_in(&cluster_data, &cluster_flags);
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("bob|{\"page\":\"cart\"}\n"),
    );
    await_topic(&brokers, "pages", "after the outage", |lines| {
        lines == ["ann={\"PAGE\":\"HOME\"}", "bob={\"PAGE\":\"CART\"}"]
    });
    assert!(node.alive(), "{}", node.log_tail());
}

#[test]
fn a_bad_client_property_stops_the_server_naming_it() {
    let stderr = failed_start(&[
        "--bootstrap-servers",
        "127.0.0.1:9",
        "--cluster-property",
        "no.such.property=1",
    ]);
    assert!(stderr.contains("no.such.property"), "{stderr}");
    // A flag without `=` is refused before anything starts.
    let stderr = failed_start(&["--cluster-property", "security.protocol"]);
    assert!(stderr.contains("NAME=VALUE"), "{stderr}");
}

/// Polls `read` every 200 ms until `check` holds of what it read, for at most a minute.
fn await_value<T: std::fmt::Debug>(
    node: &common::Server,
    what: &str,
    read: impl Fn() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = read();
        if check(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {value:#?}\n{}",
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until a pull query's rows on `node` satisfy `check`.
fn await_pull(node: &common::Server, sql: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    await_value(node, sql, || pull(node, sql), |rows| check(rows))
}

/// A cluster, and nodes of one service on it, each with its own data directory.
struct Service {
    _cluster: common::Server,
    brokers: String,
    id: &'static str,
    dir: tempfile::TempDir,
}

impl Service {
    fn new(id: &'static str) -> Service {
        let cluster = common::start();
        Service {
            brokers: cluster.kafka.clone(),
            _cluster: cluster,
            id,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts (or restarts) the node whose data lives under `name`.
    fn node(&self, name: &str) -> common::Server {
        self.node_with(name, &[])
    }

    /// [`Service::node`] with more flags.
    fn node_with(&self, name: &str, extra: &[&str]) -> common::Server {
        let mut flags = vec![
            "--bootstrap-servers",
            &self.brokers,
            "--service-id",
            self.id,
        ];
        flags.extend_from_slice(extra);
        common::start_in(&self.dir.path().join(name), &flags)
    }
}

/// The join of orders with customers splits among the nodes (the orders routed by
/// customer), and so does the windowed aggregation of that join by region (each joined row
/// sent on to its region's task); the active node is killed mid-stream.
#[test]
fn three_nodes_share_a_service_and_a_standby_takes_over_from_a_killed_active_node() {
    let service = Service::new("trio");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let second = service.node("second");
    let third = service.node("third");

    ksql_ok(
        &first,
        "CREATE TABLE customers (customer STRING PRIMARY KEY, region STRING)
           WITH (kafka_topic='customers', value_format='JSON', partitions=8);
         CREATE STREAM orders (id INT KEY, customer STRING, amount INT)
           WITH (kafka_topic='orders', key_format='JSON', value_format='JSON', partitions=8);
         CREATE STREAM enriched WITH (kafka_topic='enriched') AS
           SELECT o.customer AS customer, o.id AS id, o.amount AS amount, c.region AS region
           FROM orders o JOIN customers c ON o.customer = c.customer;
         CREATE TABLE by_region WITH (kafka_topic='by_region') AS
           SELECT c.region AS region, COUNT(*) AS n, SUM(o.amount) AS total
           FROM orders o JOIN customers c ON o.customer = c.customer
           WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY c.region;
         CREATE TABLE accounts (customer STRING PRIMARY KEY, tier INT)
           WITH (kafka_topic='accounts', key_format='JSON', value_format='JSON', partitions=8);
         CREATE TABLE tiers (tier INT PRIMARY KEY, name STRING)
           WITH (kafka_topic='tiers', value_format='JSON', partitions=8);
         CREATE TABLE tiered WITH (kafka_topic='tiered') AS
           SELECT c.customer AS customer, a.tier AS tier, t.name AS name
           FROM customers c JOIN accounts a ON c.customer = a.customer
           LEFT JOIN tiers t ON a.tier = t.tier;",
    );
    // A standby forwards statements to the active node; it shows the queries it would run
    // (a chain of joins with a foreign-key join among them runs on the active node alone)
    // as standing by.
    ksql_ok(
        &second,
        "CREATE STREAM other (id INT) WITH (kafka_topic='other', value_format='JSON', partitions=1);",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queries = ksql_ok(&second, "SHOW QUERIES;").to_string();
        if queries.contains("CTAS_TIERED") && queries.contains("STANDBY") {
            break;
        }
        assert!(Instant::now() < deadline, "{queries}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let customers = (0..10).map(|c| format!("c{c}|{{\"REGION\":\"r{}\"}}", c % 3));
    produce_lines(&brokers, "customers", customers);
    std::thread::sleep(Duration::from_millis(500));
    const ORDERS: i64 = 40_000;
    let orders = (0..ORDERS).map(|i| {
        format!(
            "{i}|{{\"CUSTOMER\":\"c{}\",\"AMOUNT\":{}}}",
            i % 10,
            i % 100
        )
    });
    produce_lines(&brokers, "orders", orders);

    // The active node dies mid-stream; a standby takes over from the changelogs.
    kill_once_output_begins(first, &brokers, "enriched");
    let deadline = Instant::now() + Duration::from_secs(90);
    while topic_lines(&brokers, "enriched").len() < ORDERS as usize {
        if Instant::now() > deadline {
            let mut per_customer = std::collections::BTreeMap::new();
            for line in topic_lines(&brokers, "enriched") {
                let customer = line.split('=').next().unwrap_or("").to_string();
                *per_customer.entry(customer).or_insert(0) += 1;
            }
            let (_, status) = common::request(&second.http, "GET", "/clusterStatus", None);
            let hosts = status["clusterStatus"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let summary: Vec<String> = hosts
                .iter()
                .map(|(host, h)| {
                    let query = &h["activeStandbyPerQuery"]["CSAS_ENRICHED_2"];
                    let lags = &h["hostStoreLags"]["stateStoreLags"];
                    format!(
                        "{host} alive {} role {}: active {} lags {}",
                        h["hostAlive"], h["role"], query["activePartitions"], lags
                    )
                })
                .collect();
            panic!(
                "not every order was joined: {per_customer:?}\n{}\n{}\nsecond:\n{}\nthird:\n{}",
                summary.join("\n"),
                kcat(&["-b", &brokers, "-L"], None),
                second.log_tail(),
                third.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The killed node comes back on its directory, as a standby now.
    let first = service.node("first");

    let lines = topic_lines(&brokers, "enriched");
    let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), ORDERS as usize);
    assert_eq!(distinct.len(), ORDERS as usize);

    // Every node answers pull queries over the whole table, and they agree with one run over
    // the input: each region's count and sum over its windows.
    for region in 0..3 {
        let customers_of = |i: &i64| (i % 10) % 3 == region;
        let n = (0..ORDERS).filter(customers_of).count() as i64;
        let total: i64 = (0..ORDERS).filter(customers_of).map(|i| i % 100).sum();
        let sql = format!("SELECT n, total FROM by_region WHERE region = 'r{region}';");
        let sums = |rows: &[Value]| {
            rows.iter().fold((0, 0), |(n, t), row| {
                (
                    n + row[0].as_i64().unwrap_or(0),
                    t + row[1].as_i64().unwrap_or(0),
                )
            })
        };
        let mut answers = Vec::new();
        for node in [&first, &second, &third] {
            let rows = await_pull(node, &sql, |rows| sums(rows) == (n, total));
            answers.push(rows);
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[1], answers[2]);
    }
}

/// `/clusterStatus` of `node` once `check` holds of its hosts.
fn await_cluster_status(
    node: &common::Server,
    what: &str,
    check: impl Fn(&serde_json::Map<String, Value>) -> bool,
) -> serde_json::Map<String, Value> {
    let read = || {
        let (status, body) = common::request(&node.http, "GET", "/clusterStatus", None);
        assert_eq!(status, 200, "{body}");
        body["clusterStatus"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    await_value(node, what, read, check)
}

#[test]
fn a_standby_forwards_statements_and_every_node_shows_the_whole_service() {
    let service = Service::new("duo");
    let brokers = service.brokers.clone();
    let active = service.node("a");
    let standby = service.node("b");

    // Each node hears of the other through the cluster, by the address it advertises.
    for node in [&active, &standby] {
        let hosts = await_cluster_status(node, "both nodes alive", |hosts| {
            hosts.len() == 2 && hosts.values().all(|h| h["hostAlive"] == json!(true))
        });
        assert_eq!(hosts[&active.http]["role"], json!("ACTIVE"), "{hosts:?}");
        assert_eq!(hosts[&standby.http]["role"], json!("STANDBY"), "{hosts:?}");
    }
    // Records in the nodes' topic that are not a node's status are passed over.
    kcat(
        &[
            "-b",
            &brokers,
            "-t",
            "_confluent-ksql-duo_eddy-nodes",
            "-P",
            "-K",
            "|",
        ],
        Some("intruder|not json\n|{\"url\": 5}\nhalf|{\"url\": \"http://x:1\", \"role\"\n"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let hosts = await_cluster_status(&standby, "the two nodes alone", |hosts| hosts.len() == 2);
    assert!(hosts.contains_key(&active.http), "{hosts:?}");
    let metrics = |node: &common::Server| {
        let (_, text) = common::request(&node.http, "GET", "/metrics", None);
        text.as_str().unwrap_or_default().to_string()
    };
    let text = metrics(&standby);
    assert!(
        text.contains("eddy_node_role{role=\"STANDBY\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("eddy_service_nodes{state=\"alive\"} 2"),
        "{text}"
    );
    assert!(metrics(&active).contains("eddy_node_role{role=\"ACTIVE\"} 1"));
    let (_, info) = common::request(&standby.http, "GET", "/info", None);
    assert_eq!(
        info["KsqlServerInfo"]["ksqlServiceId"],
        json!("duo"),
        "{info}"
    );

    // Statements sent to the standby run on the active node; the standby answers once it
    // applied them itself, so the caller's next request sees them there.
    let created = ksql_ok(
        &standby,
        "CREATE TABLE clicks (user STRING PRIMARY KEY, page STRING)
           WITH (kafka_topic='clicks', value_format='JSON', partitions=2);
         CREATE TABLE profiles (user STRING PRIMARY KEY, name STRING)
           WITH (kafka_topic='profiles', key_format='JSON', value_format='JSON', partitions=2);
         CREATE TABLE pages (page STRING PRIMARY KEY, title STRING)
           WITH (kafka_topic='pages', value_format='JSON', partitions=2);
         CREATE TABLE titled AS SELECT c.user AS user, c.page AS page, p.name AS name
           FROM clicks c JOIN profiles p ON c.user = p.user LEFT JOIN pages g ON c.page = g.page;",
    );
    assert_eq!(
        created[3]["commandStatus"]["status"],
        json!("SUCCESS"),
        "{created}"
    );
    let query_id = created[3]["commandStatus"]["queryId"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            let shown = ksql_ok(&active, "SHOW QUERIES;");
            shown[0]["queries"][0]["id"].as_str().map(str::to_string)
        })
        .expect("the query's id");
    // Connectors run on the active node alone; the standby shows this one unassigned (its
    // database is unreachable, so on the active node it runs and fails, and retries).
    ksql_ok(
        &standby,
        "CREATE SINK CONNECTOR report WITH (
           'connector.class' = 'io.confluent.connect.jdbc.JdbcSinkConnector',
           'connection.url' = 'jdbc:postgresql://127.0.0.1:1/none',
           'connection.user' = 'eddy', 'connection.password' = 'none',
           'topics' = 'TITLED', 'table.name.format' = 'report',
           'insert.mode' = 'upsert', 'pk.mode' = 'record_key', 'pk.fields' = 'user');",
    );
    let connector_state = |node: &common::Server| {
        let listed = ksql_ok(node, "SHOW CONNECTORS;");
        listed[0]["connectors"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(connector_state(&standby).starts_with("UNASSIGNED"));
    assert!(!connector_state(&active).starts_with("UNASSIGNED"));
    let described = ksql_ok(&standby, "DESCRIBE titled;");
    assert_eq!(described[0]["sourceDescription"]["name"], json!("TITLED"));

    // A request one node forwarded is never forwarded again: the standby refuses it.
    let body = json!({"ksql": "CREATE STREAM loop1 (id INT) WITH (kafka_topic='loop1', value_format='JSON', partitions=1);"}).to_string();
    let (status, text) = common::exchange(
        &standby.http,
        &format!(
            "POST /ksql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nx-eddy-forwarded-by: http://elsewhere:1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            standby.http,
            body.len()
        ),
    );
    assert_ne!(status, 200, "{text}");
    assert!(text.contains("standby"), "{text}");

    // A chain of joins with a foreign-key join among them runs on the active node and
    // stands by on the other, as every node counts it.
    // Each node hears of the other's queries with its next status, a second or so later.
    for node in [&active, &standby] {
        await_value(
            node,
            "the query counted on both nodes",
            || ksql_ok(node, "SHOW QUERIES;"),
            |shown| shown[0]["queries"][0]["statusCount"] == json!({"RUNNING": 1, "STANDBY": 1}),
        );
    }
    let explained = ksql_ok(&active, &format!("EXPLAIN {query_id};"));
    assert_eq!(
        explained[0]["queryDescription"]["ksqlHostQueryStatus"],
        json!({active.http.clone(): "RUNNING", standby.http.clone(): "STANDBY"}),
        "{explained}"
    );
    let extended = ksql_ok(&standby, "SHOW QUERIES EXTENDED;");
    assert_eq!(
        extended[0]["queryDescriptions"][0]["ksqlHostQueryStatus"],
        explained[0]["queryDescription"]["ksqlHostQueryStatus"],
        "{extended}"
    );

    // Both nodes report the query's input partitions, and the standby's state catches up.
    // The standby takes inserts itself, through its own producer.
    kcat(
        &["-b", &brokers, "-t", "profiles", "-P", "-K", "|"],
        Some("\"u1\"|{\"NAME\":\"One\"}\n\"u2\"|{\"NAME\":\"Two\"}\n"),
    );
    let rows = "{\"target\": \"clicks\"}\n{\"USER\": \"u1\", \"PAGE\": \"a\"}\n{\"USER\": \"u2\", \"PAGE\": \"b\"}\n";
    let (status, acks) = common::exchange(
        &standby.http,
        &format!(
            "POST /inserts-stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{rows}",
            standby.http,
            rows.len()
        ),
    );
    assert_eq!(status, 200, "{acks}");
    assert_eq!(acks.matches("\"ok\"").count(), 2, "{acks}");
    kcat(
        &["-b", &brokers, "-t", "clicks", "-P", "-K", "|"],
        Some("u1|{\"PAGE\":\"c\"}\n"),
    );
    // u1 moved from page a to c.
    await_pull(&standby, "SELECT user, page, name FROM titled;", |rows| {
        let mut rows = rows.to_vec();
        rows.sort_by_key(|r| r[0].as_str().map(str::to_string));
        rows == [json!(["u1", "c", "One"]), json!(["u2", "b", "Two"])]
    });
    let store = format!("_confluent-ksql-duo_query_{query_id}#clicks");
    let hosts = await_cluster_status(&standby, "both caught up", |hosts| {
        hosts.values().all(|h| {
            let lags = &h["hostStoreLags"]["stateStoreLags"][&store]["lagByPartition"];
            let ends: i64 = (0..2)
                .map(|p| {
                    lags[p.to_string()]["endOffsetPosition"]
                        .as_i64()
                        .unwrap_or(0)
                })
                .sum();
            let lag: i64 = (0..2)
                .map(|p| lags[p.to_string()]["offsetLag"].as_i64().unwrap_or(1))
                .sum();
            // Transactions add a marker to the partitions they wrote.
            ends >= 3 && lag == 0
        })
    });
    let partitions = json!([
        {"topic": "clicks", "partition": 0},
        {"topic": "clicks", "partition": 1},
        {"topic": "profiles", "partition": 0},
        {"topic": "profiles", "partition": 1},
        {"topic": "pages", "partition": 0},
        {"topic": "pages", "partition": 1}
    ]);
    let on_active = &hosts[&active.http]["activeStandbyPerQuery"][&query_id];
    assert_eq!(on_active["activePartitions"], partitions, "{hosts:?}");
    let on_standby = &hosts[&standby.http]["activeStandbyPerQuery"][&query_id];
    assert_eq!(on_standby["standByPartitions"], partitions, "{hosts:?}");

    // The active node dies: the standby takes over, sees the other gone, and runs statements
    // itself.
    let gone = active.http.clone();
    drop(active);
    await_cluster_status(&standby, "the standby took over", |hosts| {
        hosts[&standby.http]["role"] == json!("ACTIVE")
            && hosts
                .get(&gone)
                .is_none_or(|h| h["hostAlive"] == json!(false))
    });
    let text = metrics(&standby);
    assert!(text.contains("eddy_node_role{role=\"ACTIVE\"} 1"), "{text}");
    await_value(
        &standby,
        "the connector runs on the new active node",
        || connector_state(&standby),
        |state| !state.starts_with("UNASSIGNED"),
    );
    ksql_ok(
        &standby,
        "CREATE STREAM later (id INT) WITH (kafka_topic='later', value_format='JSON', partitions=1);",
    );
}

/// Each node's partitions of `query` in a `/clusterStatus`, by host.
fn partitions_by_host(
    hosts: &serde_json::Map<String, Value>,
    query: &str,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    topic_partitions_by_host(hosts, query, None)
}

/// Whether every node runs some of the partitions, and each of `count` runs on exactly one.
fn split_among(
    by_host: &std::collections::BTreeMap<String, Vec<u64>>,
    nodes: usize,
    count: u64,
) -> bool {
    let mut all: Vec<u64> = by_host.values().flatten().copied().collect();
    all.sort_unstable();
    by_host.len() == nodes
        && by_host.values().all(|p| !p.is_empty())
        && all == (0..count).collect::<Vec<_>>()
}

#[test]
fn the_nodes_of_a_service_split_a_stateless_query_partitions_and_move_them_exactly_once() {
    let service = Service::new("split");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE STREAM events (id INT KEY, amount INT)
           WITH (kafka_topic='events', key_format='JSON', value_format='JSON', partitions=8);
         CREATE STREAM doubled WITH (kafka_topic='doubled') AS
           SELECT id, amount * 2 AS twice FROM events;",
    );
    let query = created[1]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CSAS_DOUBLED_1".to_string(), str::to_string);
    const EVENTS: i64 = 40_000;
    let produce = |from: i64, to: i64| {
        let events: String = (from..to)
            .map(|i| format!("{i}|{{\"AMOUNT\":{}}}\n", i % 1000))
            .collect();
        kcat(
            &["-b", &brokers, "-t", "events", "-P", "-K", "|"],
            Some(&events),
        );
    };
    produce(0, EVENTS / 2);

    // Two more nodes join while the first is busy: the query's group hands them partitions,
    // the first giving them up only once its commits on them landed.
    let second = service.node("second");
    let third = service.node("third");
    let hosts = await_cluster_status(&second, "the partitions split three ways", |hosts| {
        split_among(&partitions_by_host(hosts, &query), 3, 8)
    });
    // Every node runs the query, over its own partitions.
    for node in [&first, &second, &third] {
        assert!(
            hosts[&node.http]["activeStandbyPerQuery"][&query]["activePartitions"]
                .as_array()
                .is_some_and(|p| !p.is_empty()),
            "{hosts:?}"
        );
    }
    await_value(
        &second,
        "the query running on all three",
        || ksql_ok(&second, "SHOW QUERIES;"),
        |shown| shown[0]["queries"][0]["statusCount"] == json!({"RUNNING": 3}),
    );

    // One node dies mid-stream; the other two take its partitions from the offsets its
    // last transaction committed.
    produce(EVENTS / 2, EVENTS);
    let gone = second.http.clone();
    drop(second);
    await_topic(&brokers, "doubled", "every event doubled", |lines| {
        lines.len() >= EVENTS as usize
    });
    let lines = topic_lines(&brokers, "doubled");
    let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), EVENTS as usize);
    assert_eq!(lines.len(), EVENTS as usize, "an event was doubled twice");
    let expected: std::collections::BTreeSet<String> = (0..EVENTS)
        .map(|i| format!("{i}={{\"TWICE\":{}}}", (i % 1000) * 2))
        .collect();
    let got: std::collections::BTreeSet<String> = lines.into_iter().collect();
    assert_eq!(got, expected);
    await_cluster_status(&first, "the partitions split two ways", |hosts| {
        hosts
            .get(&gone)
            .is_none_or(|h| h["hostAlive"] == json!(false))
            && split_among(&partitions_by_host(hosts, &query), 2, 8)
    });

    // Paused, the query leaves its group on every node; resumed, it splits again; ended, it
    // runs nowhere.
    ksql_ok(&third, &format!("PAUSE {query};"));
    await_cluster_status(&first, "the query paused everywhere", |hosts| {
        partitions_by_host(hosts, &query)
            .values()
            .all(Vec::is_empty)
    });
    ksql_ok(&first, &format!("RESUME {query};"));
    await_cluster_status(&third, "the query split again", |hosts| {
        split_among(&partitions_by_host(hosts, &query), 2, 8)
    });
    ksql_ok(&third, &format!("TERMINATE {query};"));
    for node in [&first, &third] {
        await_value(
            node,
            "no query left",
            || ksql_ok(node, "SHOW QUERIES;"),
            |shown| shown[0]["queries"] == json!([]),
        );
    }
}

#[test]
fn under_at_least_once_a_split_query_keeps_its_positions_in_its_group() {
    let service = Service::new("loose");
    let brokers = service.brokers.clone();
    let loose = ["--processing-guarantee", "at_least_once"];
    let first = service.node_with("first", &loose);
    ksql_ok(
        &first,
        "CREATE STREAM events (id INT KEY, amount INT)
           WITH (kafka_topic='events', key_format='JSON', value_format='JSON', partitions=4);
         CREATE STREAM copied WITH (kafka_topic='copied') AS SELECT id, amount FROM events;",
    );
    const EVENTS: i64 = 10_000;
    let produce = |from: i64, to: i64| {
        let events: String = (from..to)
            .map(|i| format!("{i}|{{\"AMOUNT\":{i}}}\n"))
            .collect();
        kcat(
            &["-b", &brokers, "-t", "events", "-P", "-K", "|"],
            Some(&events),
        );
    };
    produce(0, EVENTS);
    await_topic(&brokers, "copied", "the first events copied", |lines| {
        lines.len() >= EVENTS as usize
    });
    // A node on an empty directory has no position of its own: it goes on from the offsets
    // the first node committed to the query's group, not from the start.
    drop(first);
    let second = service.node_with("second", &loose);
    produce(EVENTS, 2 * EVENTS);
    await_topic(&brokers, "copied", "every event copied", |lines| {
        let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
        distinct.len() >= 2 * EVENTS as usize
    });
    let lines = topic_lines(&brokers, "copied");
    assert!(
        lines.len() < 5 * EVENTS as usize / 2,
        "{} records: the second node started over\n{}",
        lines.len(),
        second.log_tail()
    );
}

/// Produces `key|value` lines to `topic` on the cluster, one record each, partitioned by
/// key as Java's producers (and so ksqlDB) do: murmur2, not librdkafka's CRC32 default.
fn produce_lines(cluster: &str, topic: &str, lines: impl Iterator<Item = String>) {
    let text: String = lines.map(|line| line + "\n").collect();
    let partitioner = "topic.partitioner=murmur2_random";
    kcat(
        &[
            "-b",
            cluster,
            "-t",
            topic,
            "-X",
            partitioner,
            "-P",
            "-K",
            "|",
        ],
        Some(&text),
    );
}

/// A table of customers (8 partitions) and a stream of their orders keyed by order id (4).
const CUSTOMERS_AND_ORDERS: &str =
    "CREATE TABLE customers (customer STRING PRIMARY KEY, region STRING)
       WITH (kafka_topic='customers', value_format='JSON', partitions=8);
     CREATE STREAM orders (id INT KEY, customer STRING, amount INT)
       WITH (kafka_topic='orders', key_format='JSON', value_format='JSON', partitions=4);";

/// Writes `lines` (`key|value`, an empty value deleting the key) to `topic`, partitioned by
/// murmur2 as Kafka's own clients do.
fn produce_changes(cluster: &str, topic: &str, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let partitioner = "topic.partitioner=murmur2_random";
    let args = [
        "-b",
        cluster,
        "-t",
        topic,
        "-X",
        partitioner,
        "-P",
        "-Z",
        "-K",
        "|",
    ];
    kcat(&args, Some(&text));
}

/// Customers `c0`, `c1`, ... to the `customers` table, customer `c` in region `r{c % regions}`.
fn produce_customers(cluster: &str, customers: i64, regions: i64) {
    let rows = (0..customers).map(|c| format!("c{c}|{{\"REGION\":\"r{}\"}}", c % regions));
    produce_lines(cluster, "customers", rows);
}

/// Orders `ids` to the `orders` stream: order `i` by customer `c{i % customers}`, of amount
/// `i % 9`.
fn produce_orders(cluster: &str, ids: std::ops::Range<i64>, customers: i64) {
    let orders = ids.map(|i| {
        format!(
            "{i}|{{\"CUSTOMER\":\"c{}\",\"AMOUNT\":{}}}",
            i % customers,
            i % 9
        )
    });
    produce_lines(cluster, "orders", orders);
}

/// Each live node's partitions (of `topic`, or of any) that it runs `query` over, by host.
fn topic_partitions_by_host(
    hosts: &serde_json::Map<String, Value>,
    query: &str,
    topic: Option<&str>,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    hosts
        .iter()
        .filter(|(_, h)| h["hostAlive"] == json!(true))
        .map(|(host, h)| {
            let partitions = h["activeStandbyPerQuery"][query]["activePartitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| topic.is_none_or(|topic| p["topic"] == json!(topic)))
                .filter_map(|p| p["partition"].as_u64())
                .collect();
            (host.clone(), partitions)
        })
        .collect()
}

/// Whether each of `nodes` live nodes runs some of `query`'s partitions, and each partition
/// of each of `topics` (8 partitions each) runs on exactly one.
fn tasks_split_among(
    hosts: &serde_json::Map<String, Value>,
    query: &str,
    topics: &[&str],
    nodes: usize,
) -> bool {
    let by_topic: Vec<_> = topics
        .iter()
        .map(|topic| topic_partitions_by_host(hosts, query, Some(topic)))
        .collect();
    let every_node_works = by_topic[0].keys().all(|host| {
        by_topic
            .iter()
            .any(|by_host| by_host.get(host).is_some_and(|p| !p.is_empty()))
    });
    let each_once = by_topic.iter().all(|by_host| {
        let mut all: Vec<u64> = by_host.values().flatten().copied().collect();
        all.sort_unstable();
        all == (0..8).collect::<Vec<_>>()
    });
    by_topic[0].len() == nodes && every_node_works && each_once
}

#[test]
fn the_nodes_of_a_service_split_an_aggregation_by_group_and_agree_after_a_node_dies() {
    let service = Service::new("groups");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE STREAM readings (id INT KEY, sensor STRING, v INT)
           WITH (kafka_topic='readings', key_format='JSON', value_format='JSON', partitions=8);
         CREATE TABLE per_sensor WITH (kafka_topic='per_sensor') AS
           SELECT sensor, COUNT(*) AS n, SUM(v) AS total FROM readings
           WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY sensor;",
    );
    let query = created[1]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_PER_SENSOR_1".to_string(), str::to_string);
    let repartition = format!("_confluent-ksql-groupsquery_{query}-Aggregate-GroupBy-repartition");
    const SENSORS: i64 = 40;
    const READINGS: i64 = 30_000;
    let produce = |from: i64, to: i64| {
        produce_lines(
            &brokers,
            "readings",
            (from..to).map(|i| format!("{i}|{{\"SENSOR\":\"s{}\",\"V\":{}}}", i % SENSORS, i % 7)),
        );
    };
    produce(0, READINGS / 3);

    // Two more nodes join: the group splits the source's partitions (which a node routes by
    // sensor) and the repartition topic's (each one aggregation task) among the three.
    let second = service.node("second");
    let third = service.node("third");
    await_cluster_status(&third, "the tasks split three ways", |hosts| {
        tasks_split_among(hosts, &query, &["readings", &repartition], 3)
    });
    await_value(
        &first,
        "the aggregation running on all three",
        || ksql_ok(&first, "SHOW QUERIES;"),
        |shown| shown[0]["queries"][0]["statusCount"] == json!({"RUNNING": 3}),
    );

    // One node is killed mid-stream and comes back on an empty directory: its tasks move to
    // the others with the state its last transaction committed, and back to it, restored from
    // the tasks' changelog.
    produce(READINGS / 3, 2 * READINGS / 3);
    drop(second);
    let second = service.node("second-again");
    await_cluster_status(&first, "the tasks split three ways again", |hosts| {
        tasks_split_among(hosts, &query, &["readings", &repartition], 3)
    });
    produce(2 * READINGS / 3, READINGS);

    // Every node's pull queries see each sensor's count and sum over its windows as one run
    // over the input would: nothing lost, nothing counted twice.
    for sensor in [0, 7, 13, 39] {
        let of_sensor = |i: &i64| i % SENSORS == sensor;
        let n = (0..READINGS).filter(of_sensor).count() as i64;
        let total: i64 = (0..READINGS).filter(of_sensor).map(|i| i % 7).sum();
        let sql = format!("SELECT n, total FROM per_sensor WHERE sensor = 's{sensor}';");
        let sums = |rows: &[Value]| {
            rows.iter().fold((0, 0), |(n, t), row| {
                (
                    n + row[0].as_i64().unwrap_or(0),
                    t + row[1].as_i64().unwrap_or(0),
                )
            })
        };
        for node in [&first, &second, &third] {
            await_pull(node, &sql, |rows| sums(rows) == (n, total));
        }
    }

    // Terminated, the query leaves no internal topic behind on the cluster.
    ksql_ok(&second, &format!("TERMINATE {query};"));
    let changelog =
        format!("_confluent-ksql-groupsquery_{query}-Aggregate-Aggregate-Materialize-changelog");
    await_value(
        &first,
        "the internal topics deleted",
        || kcat(&["-b", &brokers, "-L"], None),
        |listed| !listed.contains(&repartition) && !listed.contains(&changelog),
    );
}

#[test]
fn an_aggregation_grouped_by_its_source_key_splits_over_the_source_without_a_repartition_topic() {
    let service = Service::new("bykey");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE STREAM readings (sensor STRING KEY, v INT)
           WITH (kafka_topic='readings', value_format='JSON', partitions=8);
         CREATE TABLE per_sensor WITH (kafka_topic='per_sensor') AS
           SELECT sensor, COUNT(*) AS n, SUM(v) AS total FROM readings GROUP BY sensor;",
    );
    let query = created[1]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_PER_SENSOR_1".to_string(), str::to_string);
    let second = service.node("second");
    // Each node aggregates its own partitions of the source: no router, no repartition topic.
    // It keeps the other's tasks warm, as their standby.
    let standby_for_the_rest = |hosts: &serde_json::Map<String, Value>| {
        hosts.values().all(|h| {
            let query = &h["activeStandbyPerQuery"][&query];
            let listed = |kind: &str| -> Vec<u64> {
                let partitions = query[kind].as_array().into_iter().flatten();
                partitions.filter_map(|p| p["partition"].as_u64()).collect()
            };
            let mut all = listed("activePartitions");
            all.extend(listed("standByPartitions"));
            all.sort_unstable();
            all == (0..8).collect::<Vec<_>>()
        })
    };
    await_cluster_status(&second, "the source split two ways", |hosts| {
        split_among(
            &topic_partitions_by_host(hosts, &query, Some("readings")),
            2,
            8,
        ) && topic_partitions_by_host(hosts, &query, None)
            .values()
            .flatten()
            .count()
            == 8
            && standby_for_the_rest(hosts)
    });
    const SENSORS: i64 = 24;
    const READINGS: i64 = 6_000;
    let readings = (0..READINGS).map(|i| format!("s{}|{{\"V\":{}}}", i % SENSORS, i % 5));
    produce_lines(&brokers, "readings", readings);
    for sensor in [0, 5, 23] {
        let of_sensor = |i: &i64| i % SENSORS == sensor;
        let n = (0..READINGS).filter(of_sensor).count() as i64;
        let total: i64 = (0..READINGS).filter(of_sensor).map(|i| i % 5).sum();
        let sql = format!("SELECT n, total FROM per_sensor WHERE sensor = 's{sensor}';");
        for node in [&first, &second] {
            await_pull(node, &sql, |rows| rows == [json!([n, total])]);
        }
    }
    let listed = kcat(&["-b", &brokers, "-L"], None);
    assert!(
        listed.contains(&format!(
            "_confluent-ksql-bykeyquery_{query}-Aggregate-Aggregate-Materialize-changelog"
        )) && !listed.contains("GroupBy-repartition"),
        "the tasks' changelog and no repartition topic: {listed}"
    );
}

#[test]
fn the_nodes_of_a_service_split_a_join_on_a_non_key_column_through_a_repartition_topic() {
    let service = Service::new("rekey");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        &format!(
            "{CUSTOMERS_AND_ORDERS}
         CREATE STREAM enriched WITH (kafka_topic='enriched') AS
           SELECT o.customer AS customer, o.id AS id, o.amount AS amount, c.region AS region
           FROM orders o JOIN customers c ON o.customer = c.customer;
         CREATE TABLE spend WITH (kafka_topic='spend') AS
           SELECT o.customer AS customer, COUNT(*) AS n, SUM(o.amount) AS total
           FROM orders o JOIN customers c ON o.customer = c.customer GROUP BY o.customer;"
        ),
    );
    let query = created[2]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CSAS_ENRICHED_2".to_string(), str::to_string);
    let spend = created[3]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_SPEND_3".to_string(), str::to_string);
    let repartition = format!("_confluent-ksql-rekeyquery_{query}-Join-left-repartition");
    const CUSTOMERS: i64 = 50;
    produce_customers(&brokers, CUSTOMERS, 3);
    const ORDERS: i64 = 12_000;
    let produce = |from: i64, to: i64| produce_orders(&brokers, from..to, CUSTOMERS);
    produce(0, ORDERS / 2);

    // A second node joins: the two route the orders' 4 partitions by customer (each runs the
    // router over the ones the group gives it) and share the 8 partition numbers of the
    // customers and the repartition topic.
    let second = service.node("second");
    let routed_once = |hosts: &serde_json::Map<String, Value>| {
        let mut all: Vec<u64> = topic_partitions_by_host(hosts, &query, Some("orders"))
            .into_values()
            .flatten()
            .collect();
        all.sort_unstable();
        all == [0, 1, 2, 3]
    };
    // The aggregation of the join by its key splits alike: each group is in one task.
    await_cluster_status(&second, "the join split two ways", |hosts| {
        split_among(
            &topic_partitions_by_host(hosts, &spend, Some("customers")),
            2,
            8,
        ) && split_among(
            &topic_partitions_by_host(hosts, &query, Some("customers")),
            2,
            8,
        ) && split_among(
            &topic_partitions_by_host(hosts, &query, Some(&repartition)),
            2,
            8,
        ) && routed_once(hosts)
    });

    // One node is killed mid-stream and comes back on an empty directory.
    produce(ORDERS / 2, 3 * ORDERS / 4);
    drop(second);
    let second = service.node("second-again");
    await_cluster_status(&first, "the join split two ways again", |hosts| {
        split_among(
            &topic_partitions_by_host(hosts, &query, Some("customers")),
            2,
            8,
        )
    });
    produce(3 * ORDERS / 4, ORDERS);

    // Every order joined once, with its customer's region.
    await_topic(&brokers, "enriched", "every order joined", |lines| {
        lines.len() >= ORDERS as usize
    });
    let lines = topic_lines(&brokers, "enriched");
    assert_eq!(lines.len(), ORDERS as usize, "an order was joined twice");
    let got: std::collections::BTreeSet<String> = lines.into_iter().collect();
    let expected: std::collections::BTreeSet<String> = (0..ORDERS)
        .map(|i| {
            let c = i % CUSTOMERS;
            format!(
                "\"c{c}\"={{\"ID\":{i},\"AMOUNT\":{},\"REGION\":\"r{}\"}}",
                i % 9,
                c % 3
            )
        })
        .collect();
    assert_eq!(got, expected);
    for customer in [0, 17, 49] {
        let of_customer = |i: &i64| i % CUSTOMERS == customer;
        let n = (0..ORDERS).filter(of_customer).count() as i64;
        let total: i64 = (0..ORDERS).filter(of_customer).map(|i| i % 9).sum();
        let sql = format!("SELECT n, total FROM spend WHERE customer = 'c{customer}';");
        for node in [&first, &second] {
            await_pull(node, &sql, |rows| rows == [json!([n, total])]);
        }
    }

    ksql_ok(&first, &format!("TERMINATE {query};"));
    await_value(
        &first,
        "the repartition topic deleted",
        || kcat(&["-b", &brokers, "-L"], None),
        |listed| !listed.contains(&repartition),
    );
}

#[test]
fn the_nodes_of_a_service_split_a_join_aggregated_by_other_columns_in_two_stages() {
    let service = Service::new("regroup");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        &format!(
            "{CUSTOMERS_AND_ORDERS}
         CREATE TABLE by_region WITH (kafka_topic='by_region') AS
           SELECT c.region AS region, COUNT(*) AS n, SUM(o.amount) AS total
           FROM orders o JOIN customers c ON o.customer = c.customer
           WHERE o.amount > 0 GROUP BY c.region;"
        ),
    );
    let query = created[2]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_BY_REGION_2".to_string(), str::to_string);
    let prefix = format!("_confluent-ksql-regroupquery_{query}");
    let rekeyed = format!("{prefix}-Join-left-repartition");
    let regrouped = format!("{prefix}-Aggregate-GroupBy-repartition");
    const CUSTOMERS: i64 = 50;
    const REGIONS: i64 = 7;
    produce_customers(&brokers, CUSTOMERS, REGIONS);
    const ORDERS: i64 = 12_000;
    let produce = |from: i64, to: i64| produce_orders(&brokers, from..to, CUSTOMERS);
    produce(0, ORDERS / 2);

    // A second node joins: the two share the join's tasks (the customers' partition numbers)
    // and the aggregation's (the partitions the joined rows are sent to by region).
    let second = service.node("second");
    let split_two_ways = |hosts: &serde_json::Map<String, Value>| {
        tasks_split_among(hosts, &query, &["customers", &regrouped], 2)
    };
    await_cluster_status(
        &second,
        "the join and its aggregation split two ways",
        |hosts| split_two_ways(hosts),
    );

    // One node is killed mid-stream and comes back on an empty directory: its join tasks
    // and its aggregation tasks go on elsewhere, and come back restored from their changelogs.
    produce(ORDERS / 2, 3 * ORDERS / 4);
    drop(second);
    let second = service.node("second-again");
    await_cluster_status(&first, "split two ways again", |hosts| {
        split_two_ways(hosts)
    });
    produce(3 * ORDERS / 4, ORDERS);

    // Each region counted once per order with an amount, on every node.
    for region in 0..REGIONS {
        let of_region = |i: &i64| (i % CUSTOMERS) % REGIONS == region && i % 9 > 0;
        let n = (0..ORDERS).filter(of_region).count() as i64;
        let total: i64 = (0..ORDERS).filter(of_region).map(|i| i % 9).sum();
        let sql = format!("SELECT n, total FROM by_region WHERE region = 'r{region}';");
        for node in [&first, &second] {
            await_pull(node, &sql, |rows| rows == [json!([n, total])]);
        }
    }
    // The result's records are keyed by region, as a single node writes them.
    let lines = topic_lines(&brokers, "by_region");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("\"r") || l.starts_with('r')),
        "{lines:?}"
    );

    // Terminated, the query leaves none of its internal topics behind.
    ksql_ok(&second, &format!("TERMINATE {query};"));
    let internal = [
        rekeyed.clone(),
        regrouped.clone(),
        format!("{prefix}-Join-changelog"),
        format!("{prefix}-Aggregate-Aggregate-Materialize-changelog"),
    ];
    await_value(
        &first,
        "the internal topics deleted",
        || kcat(&["-b", &brokers, "-L"], None),
        |listed| internal.iter().all(|t| !listed.contains(t.as_str())),
    );
}

#[test]
fn the_nodes_of_a_service_split_an_aggregation_over_a_table_retracting_each_row_it_replaces() {
    let service = Service::new("tablesum");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE TABLE accounts (id STRING PRIMARY KEY, region STRING, credit INT)
           WITH (kafka_topic='accounts', value_format='JSON', partitions=8);
         CREATE TABLE per_region WITH (kafka_topic='per_region') AS
           SELECT region, COUNT(*) AS n, SUM(credit) AS total FROM accounts GROUP BY region;",
    );
    let query = created[1]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_PER_REGION_1".to_string(), str::to_string);
    let prefix = format!("_confluent-ksql-tablesumquery_{query}");
    let regrouped = format!("{prefix}-Aggregate-GroupBy-repartition");
    const ACCOUNTS: i64 = 400;
    const REGIONS: i64 = 5;
    // Each account's row as the table holds it last: its region and credit, or none.
    let mut rows: std::collections::BTreeMap<i64, (i64, i64)> = std::collections::BTreeMap::new();
    let mut write = |changes: Vec<(i64, Option<(i64, i64)>)>| {
        let lines: Vec<String> = changes
            .iter()
            .map(|(id, row)| match row {
                Some((region, credit)) => {
                    format!("a{id}|{{\"REGION\":\"r{region}\",\"CREDIT\":{credit}}}")
                }
                None => format!("a{id}|"),
            })
            .collect();
        produce_changes(&brokers, "accounts", &lines);
        for (id, row) in changes {
            match row {
                Some(row) => rows.insert(id, row),
                None => rows.remove(&id),
            };
        }
    };
    write((0..ACCOUNTS).map(|a| (a, Some((a % REGIONS, a)))).collect());

    // A second node joins: the two share the tasks over the table's partitions (each keeps
    // its accounts' last rows) and the aggregation's tasks.
    let second = service.node("second");
    let split_two_ways = |hosts: &serde_json::Map<String, Value>| {
        tasks_split_among(hosts, &query, &["accounts", &regrouped], 2)
    };
    await_cluster_status(&second, "the aggregation split two ways", |hosts| {
        split_two_ways(hosts)
    });

    // Accounts move between regions and change their credit; one node is killed, and comes
    // back on an empty directory while some accounts are deleted and others move again.
    let moved = |step: i64, every: i64| -> Vec<(i64, Option<(i64, i64)>)> {
        (0..ACCOUNTS)
            .filter(|a| a % every == 0)
            .map(|a| (a, Some(((a + step) % REGIONS, a * step))))
            .collect()
    };
    write(moved(1, 3));
    drop(second);
    write(
        (0..ACCOUNTS)
            .filter(|a| a % 7 == 0)
            .map(|a| (a, None))
            .collect(),
    );
    let second = service.node("second-again");
    await_cluster_status(&first, "split two ways again", |hosts| {
        split_two_ways(hosts)
    });
    write(moved(2, 11));

    // Each region counts the accounts in it now, once each, with their credit now.
    for region in 0..REGIONS {
        let now: Vec<i64> = rows
            .values()
            .filter(|(r, _)| *r == region)
            .map(|(_, credit)| *credit)
            .collect();
        let expected = json!([[now.len(), now.iter().sum::<i64>()]]);
        let sql = format!("SELECT n, total FROM per_region WHERE region = 'r{region}';");
        for node in [&first, &second] {
            await_pull(node, &sql, |rows| json!(rows) == expected);
        }
    }

    ksql_ok(&first, &format!("TERMINATE {query};"));
    let internal = [
        regrouped.clone(),
        format!("{prefix}-KsqlTopic-Reduce-changelog"),
        format!("{prefix}-Aggregate-Aggregate-Materialize-changelog"),
    ];
    await_value(
        &first,
        "the internal topics deleted",
        || kcat(&["-b", &brokers, "-L"], None),
        |listed| internal.iter().all(|t| !listed.contains(t.as_str())),
    );
}

#[test]
fn the_nodes_of_a_service_split_a_join_of_two_streams_both_joined_on_other_columns() {
    let service = Service::new("rerouted");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE STREAM clicks (id INT KEY, user STRING)
           WITH (kafka_topic='clicks', key_format='JSON', value_format='JSON', partitions=4);
         CREATE STREAM views (id INT KEY, user STRING)
           WITH (kafka_topic='views', key_format='JSON', value_format='JSON', partitions=8);
         CREATE STREAM matched WITH (kafka_topic='matched') AS
           SELECT c.user AS user, c.id AS click, v.id AS view
           FROM clicks c JOIN views v WITHIN 1 HOUR ON c.user = v.user;",
    );
    let query = created[2]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CSAS_MATCHED_2".to_string(), str::to_string);
    let prefix = format!("_confluent-ksql-reroutedquery_{query}");
    let (left, right) = (
        format!("{prefix}-Join-left-repartition"),
        format!("{prefix}-Join-right-repartition"),
    );
    const USERS: i64 = 20;
    const VIEWS: i64 = 200;
    const CLICKS: i64 = 1_000;
    let produce = |topic: &str, ids: std::ops::Range<i64>| {
        let lines = ids.map(|i| format!("{i}|{{\"USER\":\"u{}\"}}", i % USERS));
        produce_lines(&brokers, topic, lines);
    };
    produce("views", 0..VIEWS);
    produce("clicks", 0..CLICKS / 2);

    // A second node joins: the two share the routers over each stream's partitions and the
    // tasks, one per partition of the repartition topics (as many as the larger stream has).
    let second = service.node("second");
    let split_two_ways = |hosts: &serde_json::Map<String, Value>| {
        tasks_split_among(hosts, &query, &["views", &left, &right], 2)
    };
    await_cluster_status(&second, "the join split two ways", |hosts| {
        split_two_ways(hosts)
    });

    // One node is killed mid-stream and comes back on an empty directory.
    drop(second);
    produce("clicks", CLICKS / 2..3 * CLICKS / 4);
    let _second = service.node("second-again");
    await_cluster_status(&first, "split two ways again", |hosts| {
        split_two_ways(hosts)
    });
    produce("clicks", 3 * CLICKS / 4..CLICKS);

    // Each click met each view of its user once.
    let expected = (CLICKS / USERS) * (VIEWS / USERS) * USERS;
    await_topic(&brokers, "matched", "every click joined", |lines| {
        lines.len() >= expected as usize
    });
    let lines = topic_lines(&brokers, "matched");
    assert_eq!(lines.len(), expected as usize, "a pair was joined twice");
    let pairs: std::collections::BTreeSet<(i64, i64)> = lines
        .iter()
        .filter_map(|line| {
            let (_, value) = line.split_once('=')?;
            let value: Value = serde_json::from_str(value).ok()?;
            Some((value["CLICK"].as_i64()?, value["VIEW"].as_i64()?))
        })
        .collect();
    assert_eq!(pairs.len(), expected as usize);
    assert!(pairs.iter().all(|(c, v)| c % USERS == v % USERS));
}

/// A join of tables whose keys are written in different formats splits: the second table's
/// changes (deletions too) go first to the partition their key has in the first's format,
/// as ksqlDB repartitions a join side whose key format differs.
#[test]
fn the_nodes_of_a_service_split_a_join_of_tables_whose_keys_are_written_in_different_formats() {
    let service = Service::new("formats");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE TABLE customers (customer STRING PRIMARY KEY, region STRING)
           WITH (kafka_topic='customers', value_format='JSON', partitions=8);
         CREATE TABLE accounts (customer STRING PRIMARY KEY, tier INT)
           WITH (kafka_topic='accounts', key_format='JSON', value_format='JSON', partitions=8);
         CREATE TABLE tiered WITH (kafka_topic='tiered') AS
           SELECT c.customer AS customer, c.region AS region, a.tier AS tier
           FROM customers c JOIN accounts a ON c.customer = a.customer;",
    );
    let query = created[2]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_TIERED_2".to_string(), str::to_string);
    let rerouted = format!("_confluent-ksql-formatsquery_{query}-Join-right-repartition");
    const CUSTOMERS: i64 = 40;
    // What each table holds last: a customer's region, an account's tier.
    let mut regions: std::collections::BTreeMap<i64, i64> = Default::default();
    let mut tiers: std::collections::BTreeMap<i64, i64> = Default::default();
    type Layout = (&'static str, fn(i64) -> String, fn(i64) -> String);
    let change = |(topic, key, value): Layout,
                  state: &mut std::collections::BTreeMap<i64, i64>,
                  changes: Vec<(i64, Option<i64>)>| {
        let lines: Vec<String> = changes
            .iter()
            .map(|(c, v)| match v {
                Some(v) => format!("{}|{}", key(*c), value(*v)),
                None => format!("{}|", key(*c)),
            })
            .collect();
        produce_changes(&brokers, topic, &lines);
        for (c, v) in changes {
            match v {
                Some(v) => state.insert(c, v),
                None => state.remove(&c),
            };
        }
    };
    let customers: Layout = (
        "customers",
        |c| format!("c{c}"),
        |r| format!("{{\"REGION\":\"r{r}\"}}"),
    );
    // JSON keys are quoted strings, other bytes than the KAFKA format's.
    let accounts: Layout = (
        "accounts",
        |c| format!("\"c{c}\""),
        |t| format!("{{\"TIER\":{t}}}"),
    );
    change(
        customers,
        &mut regions,
        (0..CUSTOMERS).map(|c| (c, Some(c % 5))).collect(),
    );
    change(
        accounts,
        &mut tiers,
        (0..CUSTOMERS).map(|c| (c, Some(c % 3))).collect(),
    );

    // A second node joins: the two share the routers over the accounts' partitions and the
    // tasks, each over a partition of the customers and of the accounts' repartition topic.
    let second = service.node("second");
    let split_two_ways = |hosts: &serde_json::Map<String, Value>| {
        tasks_split_among(hosts, &query, &["customers", "accounts", &rerouted], 2)
    };
    await_cluster_status(&second, "the join split two ways", |hosts| {
        split_two_ways(hosts)
    });

    // While a node is down, accounts change tier and some are deleted; customers move.
    drop(second);
    let moved = (0..CUSTOMERS).filter(|c| c % 4 == 0);
    change(
        accounts,
        &mut tiers,
        moved.map(|c| (c, Some(c + 10))).collect(),
    );
    let gone = (0..CUSTOMERS).filter(|c| c % 7 == 0);
    change(accounts, &mut tiers, gone.map(|c| (c, None)).collect());
    change(
        customers,
        &mut regions,
        (0..CUSTOMERS)
            .filter(|c| c % 5 == 0)
            .map(|c| (c, Some(9)))
            .collect(),
    );
    let second = service.node("second-again");
    await_cluster_status(&first, "split two ways again", |hosts| {
        split_two_ways(hosts)
    });
    // Some deleted accounts come back, and a customer goes.
    let back = (0..CUSTOMERS).filter(|c| c % 14 == 0);
    change(accounts, &mut tiers, back.map(|c| (c, Some(99))).collect());
    change(customers, &mut regions, vec![(1, None)]);

    // Every node's table holds each customer with an account, as both tables hold it now.
    let expected: std::collections::BTreeSet<String> = regions
        .iter()
        .filter_map(|(c, region)| {
            let tier = tiers.get(c)?;
            Some(json!([format!("c{c}"), format!("r{region}"), tier]).to_string())
        })
        .collect();
    for node in [&first, &second] {
        await_pull(node, "SELECT customer, region, tier FROM tiered;", |rows| {
            let got: std::collections::BTreeSet<String> =
                rows.iter().map(Value::to_string).collect();
            got == expected
        });
    }
}

#[test]
fn the_nodes_of_a_service_split_a_foreign_key_join_whose_rows_move_between_keys() {
    let service = Service::new("foreign");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE TABLE purchases (id STRING PRIMARY KEY, customer STRING, amount INT)
           WITH (kafka_topic='purchases', value_format='JSON', partitions=8);
         CREATE TABLE customers (customer STRING PRIMARY KEY, region STRING)
           WITH (kafka_topic='customers', value_format='JSON', partitions=4);
         CREATE TABLE located WITH (kafka_topic='located') AS
           SELECT p.id AS id, p.amount AS amount, c.region AS region
           FROM purchases p JOIN customers c ON p.customer = c.customer;",
    );
    let query = created[2]["commandStatus"]["queryId"]
        .as_str()
        .map_or_else(|| "CTAS_LOCATED_2".to_string(), str::to_string);
    const CUSTOMERS: i64 = 30;
    const PURCHASES: i64 = 600;
    // What each table holds last: a purchase's customer and amount, a customer's region.
    let mut purchases: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    let mut regions: std::collections::BTreeMap<i64, i64> = Default::default();
    let write = |topic: &str, lines: Vec<String>| produce_changes(&brokers, topic, &lines);
    let mut customers_now = |changes: Vec<(i64, Option<i64>)>| {
        let lines = changes
            .iter()
            .map(|(c, region)| match region {
                Some(r) => format!("c{c}|{{\"REGION\":\"r{r}\"}}"),
                None => format!("c{c}|"),
            })
            .collect();
        write("customers", lines);
        for (c, region) in changes {
            match region {
                Some(r) => regions.insert(c, r),
                None => regions.remove(&c),
            };
        }
    };
    customers_now((0..CUSTOMERS).map(|c| (c, Some(c % 5))).collect());
    let mut purchases_now = |changes: Vec<(i64, Option<(i64, i64)>)>| {
        let lines = changes
            .iter()
            .map(|(p, row)| match row {
                Some((c, amount)) => {
                    format!("p{p}|{{\"CUSTOMER\":\"c{c}\",\"AMOUNT\":{amount}}}")
                }
                None => format!("p{p}|"),
            })
            .collect();
        write("purchases", lines);
        for (p, row) in changes {
            match row {
                Some(row) => purchases.insert(p, row),
                None => purchases.remove(&p),
            };
        }
    };
    purchases_now(
        (0..PURCHASES)
            .map(|p| (p, Some((p % CUSTOMERS, p))))
            .collect(),
    );

    // A second node joins: the two share the tasks over the purchases' partitions (which
    // subscribe to their customers) and those over the customers' (which answer).
    let second = service.node("second");
    let split_two_ways = |hosts: &serde_json::Map<String, Value>| {
        let by_host = |topic: &str| topic_partitions_by_host(hosts, &query, Some(topic));
        let (left, right) = (by_host("purchases"), by_host("customers"));
        let once = |by_host: &std::collections::BTreeMap<String, Vec<u64>>, count: u64| {
            let mut all: Vec<u64> = by_host.values().flatten().copied().collect();
            all.sort_unstable();
            all == (0..count).collect::<Vec<_>>()
        };
        let working = left
            .iter()
            .filter(|(host, p)| !p.is_empty() || right.get(*host).is_some_and(|r| !r.is_empty()))
            .count();
        left.len() == 2 && working == 2 && once(&left, 8) && once(&right, 4)
    };
    await_cluster_status(&second, "the join split two ways", |hosts| {
        split_two_ways(hosts)
    });

    // Purchases move to other customers and some are deleted while a node is down; then
    // customers move to other regions and one is deleted.
    drop(second);
    purchases_now(
        (0..PURCHASES)
            .filter(|p| p % 4 == 0)
            .map(|p| (p, Some(((p + 7) % CUSTOMERS, p + 1))))
            .collect(),
    );
    purchases_now(
        (0..PURCHASES)
            .filter(|p| p % 9 == 0)
            .map(|p| (p, None))
            .collect(),
    );
    let second = service.node("second-again");
    await_cluster_status(&first, "split two ways again", |hosts| {
        split_two_ways(hosts)
    });
    customers_now(
        (0..CUSTOMERS)
            .filter(|c| c % 3 == 0)
            .map(|c| (c, Some((c + 2) % 5)))
            .chain([(CUSTOMERS - 1, None)])
            .collect(),
    );

    // Every node's table holds each purchase whose customer is there, in its region now.
    let expected: std::collections::BTreeSet<String> = purchases
        .iter()
        .filter_map(|(p, (c, amount))| {
            let region = regions.get(c)?;
            Some(json!([format!("p{p}"), amount, format!("r{region}")]).to_string())
        })
        .collect();
    for node in [&first, &second] {
        await_pull(node, "SELECT id, amount, region FROM located;", |rows| {
            let got: std::collections::BTreeSet<String> =
                rows.iter().map(Value::to_string).collect();
            got == expected
        });
    }

    ksql_ok(&first, &format!("TERMINATE {query};"));
    let prefix = format!("_confluent-ksql-foreignquery_{query}");
    await_value(
        &first,
        "the internal topics deleted",
        || kcat(&["-b", &brokers, "-L"], None),
        |listed| !listed.contains(&prefix),
    );
}

#[test]
fn the_nodes_of_a_service_split_a_join_of_co_partitioned_sources_exactly_once() {
    let service = Service::new("pairs");
    let brokers = service.brokers.clone();
    let first = service.node("first");
    let created = ksql_ok(
        &first,
        "CREATE TABLE sensors (sensor STRING PRIMARY KEY, site STRING)
           WITH (kafka_topic='sensors', value_format='JSON', partitions=8);
         CREATE STREAM readings (sensor STRING KEY, v INT)
           WITH (kafka_topic='readings', value_format='JSON', partitions=8);
         CREATE STREAM located WITH (kafka_topic='located') AS
           SELECT r.sensor AS sensor, r.v AS v, s.site AS site
           FROM readings r JOIN sensors s ON r.sensor = s.sensor;",
    );
    let query = created[2]["commandStatus"]["queryId"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            let shown = ksql_ok(&first, "SHOW QUERIES;");
            shown[0]["queries"][0]["id"].as_str().map(str::to_string)
        })
        .expect("the query's id");
    const SENSORS: i64 = 40;
    let sensors = (0..SENSORS).map(|s| format!("s{s}|{{\"SITE\":\"site{}\"}}", s % 4));
    produce_lines(&brokers, "sensors", sensors);
    const READINGS: i64 = 24_000;
    let produce = |from: i64, to: i64| {
        let readings = (from..to).map(|i| format!("s{}|{{\"V\":{i}}}", i % SENSORS));
        produce_lines(&brokers, "readings", readings);
    };
    produce(0, READINGS / 3);

    // Two more nodes join: each runs the join over its own partition numbers of both sources.
    let second = service.node("second");
    let third = service.node("third");
    await_cluster_status(&third, "the join split three ways", |hosts| {
        split_among(
            &topic_partitions_by_host(hosts, &query, Some("sensors")),
            3,
            8,
        ) && split_among(
            &topic_partitions_by_host(hosts, &query, Some("readings")),
            3,
            8,
        )
    });

    // One node is killed mid-stream and comes back on an empty directory: its tasks go on
    // elsewhere with the table rows their state holds, and come back restored.
    produce(READINGS / 3, 2 * READINGS / 3);
    drop(second);
    let _second = service.node("second-again");
    await_cluster_status(&first, "the join split three ways again", |hosts| {
        split_among(
            &topic_partitions_by_host(hosts, &query, Some("readings")),
            3,
            8,
        )
    });
    produce(2 * READINGS / 3, READINGS);

    // Every reading joined once, with its sensor's site.
    await_topic(&brokers, "located", "every reading joined", |lines| {
        lines.len() >= READINGS as usize
    });
    let lines = topic_lines(&brokers, "located");
    let expected: std::collections::BTreeSet<String> = (0..READINGS)
        .map(|i| {
            let sensor = i % SENSORS;
            format!("s{sensor}={{\"V\":{i},\"SITE\":\"site{}\"}}", sensor % 4)
        })
        .collect();
    assert_eq!(lines.len(), READINGS as usize, "a reading was joined twice");
    let got: std::collections::BTreeSet<String> = lines.into_iter().collect();
    assert_eq!(got, expected);
    drop(third);
}

/// An Avro record schema named `name` with one long field.
fn avro_schema(name: &str) -> String {
    json!({
        "schema": json!({
            "type": "record",
            "name": name,
            "fields": [{"name": "n", "type": "long"}]
        })
        .to_string()
    })
    .to_string()
}

/// Registers `body` under `subject` on `node`'s registry: the status and the answer.
fn register(node: &common::Server, subject: &str, body: &str) -> (u16, Value) {
    common::request(
        &node.registry,
        "POST",
        &format!("/subjects/{subject}/versions"),
        Some(body),
    )
}

/// The schema registry is written by the active node alone (one writer keeps ids unique, as
/// Confluent's registries have one leader); a standby sends it the changes it is given and
/// follows the registry's log, so after a failover the new active node gives no id twice.
#[test]
fn a_standby_forwards_schema_changes_and_a_new_active_node_gives_no_id_twice() {
    let service = Service::new("schemas");
    let first = service.node("first");
    let second = service.node_with("second", &["--max-request-bytes", "65536"]);
    await_cluster_status(&second, "both nodes alive", |hosts| {
        hosts.len() == 2 && hosts.values().all(|h| h["hostAlive"] == json!(true))
    });

    // A registration sent to the standby is made by the active node (whose registry the
    // standby learns of from its status, published every second).
    let (status, forwarded) = await_value(
        &second,
        "a registration forwarded to the active node",
        || register(&second, "made-on-standby-value", &avro_schema("A")),
        |(status, _)| *status == 200,
    );
    assert_eq!(status, 200, "{forwarded}");
    let a = forwarded["id"].as_u64().expect("an id");
    let (status, on_active) =
        common::request(&first.registry, "GET", &format!("/schemas/ids/{a}"), None);
    assert_eq!(status, 200, "{on_active}");
    assert!(
        on_active["schema"].as_str().unwrap_or("").contains("\"A\""),
        "{on_active}"
    );
    // The standby answers once it applied the change itself.
    let (_, subjects) = common::request(&second.registry, "GET", "/subjects", None);
    assert!(
        subjects.to_string().contains("made-on-standby-value"),
        "{subjects}"
    );

    // What the active node registers itself, the standby follows.
    let (status, made) = register(&first, "made-on-active-value", &avro_schema("B"));
    assert_eq!(status, 200, "{made}");
    let b = made["id"].as_u64().expect("an id");
    assert_ne!(a, b);
    await_value(
        &second,
        "the standby following the registry's log",
        || common::request(&second.registry, "GET", &format!("/schemas/ids/{b}"), None).0,
        |status| *status == 200,
    );
    // A level set on the standby is set on the active node.
    let (status, level) = common::request(
        &second.registry,
        "PUT",
        "/config/made-on-active-value",
        Some(r#"{"compatibility":"NONE"}"#),
    );
    assert_eq!(status, 200, "{level}");
    let (_, level) = common::request(&first.registry, "GET", "/config/made-on-active-value", None);
    assert_eq!(level["compatibilityLevel"], json!("NONE"), "{level}");
    // Reads stay on the standby: a lookup by schema (a POST) answers there.
    let (status, found) = common::request(
        &second.registry,
        "POST",
        "/subjects/made-on-active-value",
        Some(&avro_schema("B")),
    );
    assert_eq!((status, found["id"].as_u64()), (200, Some(b)), "{found}");

    // A request another node forwarded already is not sent on again (two nodes that each
    // think the other active cannot bounce it between them): the standby refuses to write.
    let body = avro_schema("Looped");
    let (status, refused) = common::exchange(
        &second.registry,
        &format!(
            "POST /subjects/looped-value/versions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nx-eddy-forwarded-by: http://elsewhere:1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            second.registry,
            body.len()
        ),
    );
    assert!(status >= 500, "{status} {refused}");
    assert!(refused.contains("error_code"), "{refused}");
    let (_, subjects) = common::request(&first.registry, "GET", "/subjects", None);
    assert!(!subjects.to_string().contains("looped-value"), "{subjects}");
    // A body over the limit is refused on the standby in the registry's shape.
    let huge = "x".repeat(100_000);
    let (status, too_large) = register(&second, "huge-value", &huge);
    assert_eq!(status, 413, "{too_large}");
    assert_eq!(too_large["error_code"], json!(413), "{too_large}");

    // The active node dies; the standby takes over and registers with a new id.
    drop(first);
    let (status, after) = await_value(
        &second,
        "a registration on the node that took over",
        || register(&second, "made-after-failover-value", &avro_schema("C")),
        |(status, _)| *status == 200,
    );
    assert_eq!(status, 200, "{after}");
    let c = after["id"].as_u64().expect("an id");
    assert!(c != a && c != b, "ids {a} {b} given again as {c}");
    for (id, name) in [(a, "\"A\""), (b, "\"B\""), (c, "\"C\"")] {
        let (_, schema) =
            common::request(&second.registry, "GET", &format!("/schemas/ids/{id}"), None);
        assert!(
            schema["schema"].as_str().unwrap_or("").contains(name),
            "{id}: {schema}"
        );
    }
}

/// A split join trusts that its keyed sources hold each key in the partition murmur2 of the
/// key picks; a table written with librdkafka's default partitioner (CRC32) breaks that
/// trust, and the query says so in the processing log rather than missing matches silently.
#[test]
fn a_split_join_reports_a_table_partitioned_otherwise_than_by_murmur2() {
    let service = Service::new("placed");
    let brokers = service.brokers.clone();
    let node = service.node("only");
    ksql_ok(
        &node,
        "CREATE TABLE customers (customer STRING PRIMARY KEY, region STRING)
           WITH (kafka_topic='customers', value_format='JSON', partitions=4);
         CREATE STREAM orders (id INT KEY, customer STRING, amount INT)
           WITH (kafka_topic='orders', key_format='JSON', value_format='JSON', partitions=4);
         CREATE STREAM enriched WITH (kafka_topic='enriched') AS
           SELECT o.customer AS customer, o.id AS id, c.region AS region
           FROM orders o JOIN customers c ON o.customer = c.customer;",
    );
    let misplaced = || {
        topic_lines(&brokers, "default_ksql_processing_log")
            .into_iter()
            .filter(|line| line.contains("murmur2") && line.contains("customers"))
            .collect::<Vec<_>>()
    };
    // Rows written as Java's producers place them join, and nothing is reported.
    produce_lines(
        &brokers,
        "customers",
        (0..20).map(|c| format!("c{c}|{{\"REGION\":\"r0\"}}")),
    );
    std::thread::sleep(Duration::from_millis(500));
    produce_lines(
        &brokers,
        "orders",
        (0..20).map(|i| format!("{i}|{{\"CUSTOMER\":\"c{i}\",\"AMOUNT\":1}}")),
    );
    await_topic(&brokers, "enriched", "every order joined", |lines| {
        (0..20).all(|c| lines.iter().any(|l| l.starts_with(&format!("\"c{c}\"="))))
    });
    assert_eq!(misplaced(), Vec::<String>::new());

    // kcat's own partitioner: CRC32 of the key, as librdkafka's clients default to.
    let text: String = (20..40)
        .map(|c| format!("c{c}|{{\"REGION\":\"r1\"}}\n"))
        .collect();
    kcat(
        &["-b", &brokers, "-t", "customers", "-P", "-K", "|"],
        Some(&text),
    );
    let lines = await_value(
        &node,
        "the misplaced customers reported",
        misplaced,
        |lines| !lines.is_empty(),
    );
    assert!(lines[0].contains("partitioner=murmur2_random"), "{lines:?}");
}
