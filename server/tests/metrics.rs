//! `GET /metrics`: Prometheus text from a real server, and the lag of a paused query growing
//! as rows arrive.

mod common;

use std::time::{Duration, Instant};

use common::{exchange, ksql, request, start};

/// The value of the first sample whose name and labels start with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(server: &common::Server) -> String {
    let (status, body) = exchange(
        &server.http,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.http
        ),
    );
    assert_eq!(status, 200);
    body
}

/// Scrapes until `series` has `value`, for up to ten seconds.
fn wait_for(server: &common::Server, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(server);
        if sample(&metrics, series) == Some(value) || Instant::now() > deadline {
            assert_eq!(
                sample(&metrics, series),
                Some(value),
                "{series} in\n{metrics}"
            );
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn insert(server: &common::Server, from: i32, to: i32) {
    let values: String = (from..to)
        .map(|i| format!("INSERT INTO clicks (id, page) VALUES ({i}, 'p{i}');"))
        .collect();
    let (status, body) = ksql(server, &values);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn lag_of_a_paused_query_grows_with_inserts_and_clears_on_resume() {
    let server = start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM clicks (id INT KEY, page STRING) WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
         CREATE STREAM home AS SELECT * FROM clicks WHERE page = 'p1';",
    );
    assert_eq!(status, 200, "{body}");
    let query = r#"eddy_query_lag_records{partition="0",query="CSAS_HOME_1",topic="clicks"}"#;
    insert(&server, 0, 5);
    wait_for(
        &server,
        r#"eddy_query_records_in_total{query="CSAS_HOME_1"}"#,
        5.0,
    );
    let metrics = wait_for(&server, query, 0.0);
    assert_eq!(
        sample(
            &metrics,
            r#"eddy_query_records_out_total{query="CSAS_HOME_1"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"eddy_topic_records_in_total{topic="clicks"}"#),
        Some(5.0)
    );
    assert!(sample(&metrics, r#"eddy_topic_size_bytes{topic="clicks"}"#).unwrap() > 0.0);
    assert!(metrics.contains(r#"eddy_query_e2e_latency_seconds_count{query="CSAS_HOME_1"} 5"#));
    assert!(metrics.contains(
        r#"eddy_consumergroup_lag_records{group="_eddy_query_CSAS_HOME_1",partition="0",topic="clicks"} 0"#
    ));
    assert!(metrics.contains("# TYPE eddy_http_requests_total counter"));
    assert!(
        metrics.contains(r#"eddy_http_requests_total{method="POST",route="/ksql",status="200"}"#)
    );

    let (status, body) = ksql(&server, "PAUSE CSAS_HOME_1;");
    assert_eq!(status, 200, "{body}");
    insert(&server, 5, 8);
    wait_for(&server, query, 3.0);
    insert(&server, 8, 15);
    wait_for(&server, query, 10.0);
    // SHOW QUERIES EXTENDED tells the same.
    let (_, shown) = ksql(&server, "SHOW QUERIES EXTENDED;");
    let description = &shown[0]["queryDescriptions"][0];
    assert_eq!(description["state"], "PAUSED");
    assert_eq!(description["consumerLag"], 10);
    let offsets = &description["queryOffsetSummaries"][0]["topicSummaries"][0]["offsets"][0];
    assert_eq!(
        (
            offsets["consumerOffset"].as_i64(),
            offsets["logEndOffset"].as_i64()
        ),
        (Some(5), Some(15))
    );

    ksql(&server, "RESUME CSAS_HOME_1;");
    wait_for(&server, query, 0.0);
    let (_, described) = ksql(&server, "DESCRIBE clicks EXTENDED;");
    let statistics = described[0]["sourceDescription"]["statistics"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        statistics.contains("consumer-total-messages: 15"),
        "{statistics}"
    );
    assert!(statistics.contains("consumer-lag: 0"), "{statistics}");

    // A Kafka client reads the topic: every record of every batch it was sent is counted.
    let out = std::process::Command::new("kcat")
        .args(["-b", &server.kafka, "-t", "clicks", "-C", "-e", "-q"])
        .output()
        .expect("kcat is needed for this test; .ci/run installs it");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 15);
    wait_for(
        &server,
        r#"eddy_topic_records_fetched_total{topic="clicks"}"#,
        15.0,
    );
}

#[test]
fn pull_and_push_queries_are_counted() {
    let server = start();
    ksql(
        &server,
        "CREATE TABLE users (id INT PRIMARY KEY, name STRING) WITH (kafka_topic='users', value_format='JSON', partitions=1);",
    );
    for _ in 0..3 {
        let (status, _) = request(
            &server.http,
            "POST",
            "/query-stream",
            Some(r#"{"sql": "SELECT * FROM users;"}"#),
        );
        assert_eq!(status, 200);
    }
    let metrics = scrape(&server);
    assert_eq!(
        sample(&metrics, "eddy_pull_query_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(sample(&metrics, "eddy_push_queries "), Some(0.0));
}
