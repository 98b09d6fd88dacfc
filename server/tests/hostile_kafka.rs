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

mod fuzz {
    //! Well-formed but hostile requests, generated: produced batches whose headers lie (record
    //! counts, offset deltas, compression bits), compressed bombs, truncated records, and
    //! fetches of repeated partitions with any limits, all with valid CRCs so they get past the
    //! first check. The server must answer or close the connection, go on serving, keep its
    //! memory bounded, and never store a batch a reader cannot read.

    use super::*;
    use bytes::Bytes;
    use eddy_storage::{EncodedBatch, Record};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    use kafka_protocol::records::Compression;
    use proptest::prelude::*;

    /// A lie told in a batch header, or damage to its records.
    #[derive(Debug, Clone)]
    enum Lie {
        None,
        RecordCount(i32),
        LastOffsetDelta(i32),
        Attributes(i16),
        Truncate(usize),
        Flip(usize, u8),
    }

    fn lie() -> impl Strategy<Value = Lie> {
        prop_oneof![
            Just(Lie::None),
            any::<i32>().prop_map(Lie::RecordCount),
            prop_oneof![Just(i32::MAX), Just(-1), any::<i32>()].prop_map(Lie::LastOffsetDelta),
            any::<i16>().prop_map(Lie::Attributes),
            (1usize..64).prop_map(Lie::Truncate),
            (0usize..4096, 1u8..=255).prop_map(|(at, x)| Lie::Flip(at, x)),
        ]
    }

    fn compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy),
            Just(Compression::Lz4),
            Just(Compression::Zstd),
        ]
    }

    /// The batch, with the lie told and its length and CRC made consistent again.
    fn forge(records: &[Record], compression: Compression, lie: &Lie) -> Bytes {
        let batch = EncodedBatch::encode_with(records, compression).unwrap();
        let mut bytes = batch.as_bytes().to_vec();
        match *lie {
            Lie::None => {}
            Lie::RecordCount(n) => bytes[57..61].copy_from_slice(&n.to_be_bytes()),
            Lie::LastOffsetDelta(n) => bytes[23..27].copy_from_slice(&n.to_be_bytes()),
            Lie::Attributes(a) => bytes[21..23].copy_from_slice(&a.to_be_bytes()),
            Lie::Truncate(n) => {
                let keep = bytes.len().saturating_sub(n).max(61);
                bytes.truncate(keep);
            }
            Lie::Flip(at, x) => {
                if bytes.len() > 61 {
                    let at = 61 + at % (bytes.len() - 61);
                    bytes[at] ^= x;
                }
            }
        }
        let length = (bytes.len() - 12) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(bytes)
    }

    fn produce(wire: &mut Wire, partition: i32, records: Bytes) -> Result<i16, String> {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(name("fuzz")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records)),
                    ]),
            ]);
        let (response, _): (ProduceResponse, _) = wire.try_call(ApiKey::Produce, 7, &request)?;
        Ok(response.responses[0].partition_responses[0].error_code)
    }

    fn fetch(wire: &mut Wire, copies: usize, offset: i64, max_bytes: i32) -> Result<usize, String> {
        let partitions = (0..copies)
            .map(|i| {
                FetchPartition::default()
                    .with_partition((i % 3) as i32)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)
            })
            .collect();
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_bytes(max_bytes)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(name("fuzz")))
                    .with_partitions(partitions),
            ]);
        let (_, size): (FetchResponse, usize) = wire.try_call(ApiKey::Fetch, 4, &request)?;
        Ok(size)
    }

    /// Everything stored in the topic decodes: no accepted batch poisons a reader.
    fn every_stored_batch_decodes(address: &str) -> usize {
        let mut wire = Wire::connect(address);
        (0..2)
            .map(|partition| wire.read_all("fuzz", partition).len())
            .sum()
    }

    #[test]
    fn hostile_requests_never_take_the_server_down() {
        let mut server = common::start();
        let (status, body) = ksql(
            &server,
            "CREATE STREAM fuzz (v STRING) WITH (kafka_topic='fuzz', partitions=2, value_format='KAFKA');",
        );
        assert_eq!(status, 200, "{body}");
        let address = server.kafka.clone();
        let wire = std::cell::RefCell::new(Wire::connect(&address));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        });
        let produced = (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20),
            compression(),
            lie(),
            prop_oneof![Just(0i32), Just(1), Just(-1), Just(7)],
        );
        let fetched = (
            1usize..3000,
            prop_oneof![Just(0i64), Just(-5), any::<i64>()],
            any::<i32>(),
        );
        runner
            .run(
                &(produced, fetched),
                |((values, codec, lie, partition), (copies, offset, max_bytes))| {
                    let records: Vec<Record> = values
                        .into_iter()
                        .map(|v| Record::unkeyed(Bytes::from(v), 0))
                        .collect();
                    let forged = forge(&records, codec, &lie);
                    let mut current = wire.borrow_mut();
                    if produce(&mut current, partition, forged).is_err()
                        || fetch(&mut current, copies, offset, max_bytes).is_err()
                    {
                        // The server may close a connection it cannot trust; a new one must work.
                        *current = Wire::connect(&address);
                    }
                    let mut probe = Wire::connect(&address);
                    let (versions, _): (ApiVersionsResponse, _) =
                        probe.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
                    prop_assert_eq!(versions.error_code, 0);
                    Ok(())
                },
            )
            .unwrap();

        // Bombs: a compressed batch that inflates far past the bound is refused whole.
        let mut wire = wire.into_inner();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bomb = vec![Record::unkeyed(Bytes::from(vec![0u8; 96 << 20]), 0)];
            let code = produce(&mut wire, 0, forge(&bomb, codec, &Lie::None)).unwrap();
            assert_ne!(code, 0, "{codec:?} bomb accepted");
        }
        assert!(server.alive());
        let stored = every_stored_batch_decodes(&address);
        assert!(stored > 0, "some honest batches were stored");
        let rss = server.resident_bytes();
        assert!(rss < 1 << 30, "the server holds {rss} bytes");
    }
}
