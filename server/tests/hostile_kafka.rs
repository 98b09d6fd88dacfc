//! Kafka requests no well-behaved client sends, against a real `eddy`: each is answered with
//! Kafka's error, or bounded as Kafka bounds it, and the listener goes on serving.

mod common;

use std::time::Duration;

use common::wire::Wire;
use common::{ksql, request};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, GroupId,
    JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const KIB: usize = 1024;

fn name(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// A topic holding eight records of 200 KiB, one batch each.
fn eight_large_records(server: &common::Server) {
    let value = "x".repeat(200 * KIB);
    let inserts: String = (0..8)
        .map(|i| format!("INSERT INTO big (id, v) VALUES ({i}, '{value}');"))
        .collect();
    let (status, body) = ksql(
        server,
        &format!(
            "CREATE STREAM big (id INT KEY, v STRING) WITH (kafka_topic='big', partitions=1, value_format='JSON');{inserts}"
        ),
    );
    assert_eq!(status, 200, "{body}");
}

/// A Fetch naming the same partition 20,000 times and asking for unlimited bytes used to be
/// answered with every copy (1.6 MB each, 32 GB in all); now the partition is read once and the
/// answer stays within the broker's `fetch.max.bytes`, as Kafka's does.
#[test]
fn a_fetch_repeating_a_partition_is_answered_once_within_fetch_max_bytes() {
    let server = common::start_with(&["--kafka-fetch-max-bytes", "524288"]);
    eight_large_records(&server);
    let copies: Vec<FetchPartition> = (0..20_000)
        .map(|_| {
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(i32::MAX)
        })
        .collect();
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(name("big")))
                .with_partitions(copies),
        ]);
    let mut wire = Wire::connect(&server.kafka);
    let (response, size): (FetchResponse, usize) = wire.call(ApiKey::Fetch, 4, &fetch);
    let partitions: Vec<_> = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .collect();
    assert_eq!(partitions.len(), 1, "one answer per distinct partition");
    let records = partitions[0].records.as_ref().map_or(0, |r| r.len());
    // Two 200 KiB batches fit in 512 KiB; the third waits for the next fetch.
    assert!(
        (400 * KIB..512 * KIB).contains(&records),
        "{records} bytes of records"
    );
    assert!(size < 600 * KIB, "a {size}-byte answer");

    // The first batch goes whole even when it is larger than the limit (KIP-74).
    let small = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_bytes(1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(name("big")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(3)
                        .with_partition_max_bytes(1),
                ]),
        ]);
    let (response, _): (FetchResponse, usize) = wire.call(ApiKey::Fetch, 4, &small);
    let records = response.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, |r| r.len());
    assert!((200 * KIB..250 * KIB).contains(&records), "{records}");
}

fn join(group: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(name(group)))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(session_timeout_ms)
        .with_protocol_type(name("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(name("range")),
        ])
}

fn commit(group: &str, metadata: &str) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(name(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name("orders")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1_000_000)
                        .with_committed_metadata(Some(name(metadata))),
                ]),
        ])
}

/// A persistent query's consumer group moves only with the query's own commits: a Kafka
/// client may read it but not join it or commit to it. Session timeouts outside Kafka's
/// bounds and oversized commit metadata get Kafka's errors.
#[test]
fn consumer_groups_are_held_to_kafkas_bounds_and_queries_groups_are_reserved() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM orders (id INT KEY, v STRING) WITH (kafka_topic='orders', partitions=1, value_format='JSON');
         CREATE STREAM copied AS SELECT * FROM orders;",
    );
    assert_eq!(status, 200, "{body}");
    let (_, queries) = ksql(&server, "SHOW QUERIES;");
    let query_id = queries[0]["queries"][0]["id"].as_str().unwrap().to_string();
    let query_group = format!("_eddy_query_{query_id}");
    let mut wire = Wire::connect(&server.kafka);

    let (response, _): (OffsetCommitResponse, _) =
        wire.call(ApiKey::OffsetCommit, 2, &commit(&query_group, ""));
    assert_eq!(
        response.topics[0].partitions[0].error_code, 24,
        "INVALID_GROUP_ID"
    );
    let (response, _): (JoinGroupResponse, _) =
        wire.call(ApiKey::JoinGroup, 2, &join(&query_group, 10_000));
    assert_eq!(response.error_code, 24, "INVALID_GROUP_ID");

    let week = 7 * 24 * 3600 * 1000;
    for timeout in [week, 1] {
        let (response, _): (JoinGroupResponse, _) =
            wire.call(ApiKey::JoinGroup, 2, &join("app", timeout));
        assert_eq!(
            response.error_code, 26,
            "INVALID_SESSION_TIMEOUT for {timeout} ms"
        );
    }
    let (response, _): (OffsetCommitResponse, _) =
        wire.call(ApiKey::OffsetCommit, 2, &commit("app", &"m".repeat(5000)));
    assert_eq!(
        response.topics[0].partitions[0].error_code, 12,
        "OFFSET_METADATA_TOO_LARGE"
    );
    let (response, _): (OffsetCommitResponse, _) =
        wire.call(ApiKey::OffsetCommit, 2, &commit("app", "fine"));
    assert_eq!(response.topics[0].partitions[0].error_code, 0);

    // The query still reads from where it was: a record produced now comes through.
    let (status, body) = ksql(&server, "INSERT INTO orders (id, v) VALUES (1, 'after');");
    assert_eq!(status, 200, "{body}");
    let (status, rows) = request(
        &server.http,
        "POST",
        "/query",
        Some(
            r#"{"ksql": "SELECT * FROM copied EMIT CHANGES LIMIT 1;", "streamsProperties": {"auto.offset.reset": "earliest"}}"#,
        ),
    );
    assert_eq!(status, 200, "{rows}");
    assert!(rows.to_string().contains("after"), "{rows}");
}

fn api_versions(wire: &mut Wire) {
    let (response, _): (ApiVersionsResponse, _) =
        wire.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

/// A connection that sends nothing is closed after `connections.max.idle.ms`; one that keeps
/// asking stays open.
#[test]
fn idle_kafka_connections_are_closed() {
    let server = common::start_with(&["--kafka-connections-max-idle-ms", "1000"]);
    let mut idle = Wire::connect(&server.kafka);
    let mut busy = Wire::connect(&server.kafka);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        api_versions(&mut busy);
    }
    assert!(idle.closed_within(Duration::from_secs(5)));
    assert!(!busy.closed_within(Duration::from_millis(100)));
}

/// With --max-connections 4, a fifth Kafka connection is closed at once and a fifth HTTP one
/// gets 503 in ksqlDB's shape; once one closes, a new one is served. Without the limit, idle
/// connections would take file descriptors until the store could not open its files.
#[test]
fn each_listener_holds_at_most_max_connections() {
    let server = common::start_with(&["--max-connections", "4"]);
    let mut held: Vec<Wire> = (0..4).map(|_| Wire::connect(&server.kafka)).collect();
    for wire in &mut held {
        api_versions(wire);
    }
    let mut refused = Wire::connect(&server.kafka);
    assert!(refused.closed_within(Duration::from_secs(5)));
    held.pop();
    let admitted = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let mut wire = Wire::connect(&server.kafka);
        !wire.closed_within(Duration::from_millis(200))
    });
    assert!(
        admitted,
        "a place freed by a closed connection is given again"
    );

    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&server.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = common::exchange(
        &server.http,
        &format!("GET /info HTTP/1.1\r\nHost: {}\r\n\r\n", server.http),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("50300") && body.contains("--max-connections"),
        "{body}"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let (status, metrics) = request(&server.http, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("eddy_connections_refused_total{listener=\"http\"} 1"),
        "{metrics}"
    );
}
