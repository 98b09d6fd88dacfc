//! A real `eddy` whose disk fills up: Kafka producers get the retriable `KAFKA_STORAGE_ERROR`,
//! statements get 503, `/healthcheck` and `/metrics` say why, and once space returns writes and
//! the persistent query reading the topic resume by themselves, with every acknowledged record
//! through it.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::disk::SmallDisk;
use common::wire::Wire;
use common::{ksql, request};
use eddy_storage::{EncodedBatch, Record};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, GroupId, ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest,
    OffsetCommitResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Records per produced batch, of 16 KiB each: 768 KiB, under the 1 MiB `max.message.bytes`.
const RECORDS: u32 = 48;

/// A batch of `RECORDS` records, hard to compress.
fn batch(round: u32) -> Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| {
            let seed = round.wrapping_mul(RECORDS).wrapping_add(i);
            let value: Vec<u8> = format!("{{\"N\":{seed},\"PAD\":\"")
                .into_bytes()
                .into_iter()
                .chain((0..16 * 1024u32).map(|j| {
                    b'a' + ((seed.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) >> 9) as u8
                        % 26
                }))
                .chain(*b"\"}")
                .collect();
            Record::unkeyed(Bytes::from(value), 0)
        })
        .collect();
    Bytes::copy_from_slice(EncodedBatch::encode(&records).unwrap().as_bytes())
}

/// Produces one batch; its error code.
fn produce(wire: &mut Wire, round: u32) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("src")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(round))),
                ]),
        ]);
    let (response, _): (ProduceResponse, _) = wire.call(ApiKey::Produce, 7, &request);
    response.responses[0].partition_responses[0].error_code
}

/// The end offset of partition 0 of `topic`.
fn end_offset(wire: &mut Wire, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1),
            ]),
    ]);
    let (response, _): (ListOffsetsResponse, _) = wire.call(ApiKey::ListOffsets, 1, &request);
    response.topics[0].partitions[0].offset
}

#[test]
fn a_full_disk_refuses_writes_until_space_returns_and_nothing_acknowledged_is_lost() {
    let Some(disk) = SmallDisk::mount(384) else {
        return;
    };
    let server = common::start_in(
        &disk.path().join("data"),
        &[
            "--disk-reserve-bytes",
            "100663296",
            "--query-retry-backoff-initial-ms",
            "200",
            "--query-retry-backoff-max-ms",
            "400",
            "--sync",
            "always",
        ],
    );
    let (status, body) = ksql(
        &server,
        "CREATE STREAM src (n INT, pad STRING) WITH (kafka_topic='src', partitions=1, value_format='JSON');
         CREATE STREAM copied AS SELECT n FROM src;",
    );
    assert_eq!(status, 200, "{body}");
    let filler = disk.fill(128 << 20);

    let mut wire = Wire::connect(&server.kafka);
    let mut acknowledged = 0i64;
    let mut refusal = None;
    for round in 0..10_000 {
        match produce(&mut wire, round) {
            0 => acknowledged += i64::from(RECORDS),
            code => {
                refusal = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        refusal,
        Some(56),
        "KAFKA_STORAGE_ERROR, which clients retry"
    );
    assert!(
        acknowledged >= i64::from(RECORDS) * 10,
        "{acknowledged} records before the disk filled"
    );

    // A consumer's offset commit is refused with an error clients retry, too.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("app")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("src")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1),
                ]),
        ]);
    let (committed, _): (OffsetCommitResponse, _) = wire.call(ApiKey::OffsetCommit, 2, &commit);
    assert_eq!(
        committed.topics[0].partitions[0].error_code, 15,
        "COORDINATOR_NOT_AVAILABLE"
    );

    let (status, body) = ksql(&server, "INSERT INTO src (n, pad) VALUES (-1, 'x');");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error_code"], 50300, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("nearly full"),
        "{body}"
    );
    let (status, health) = request(&server.http, "GET", "/healthcheck", None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["details"]["kafka"]["isHealthy"], false, "{health}");
    assert!(
        health["details"]["kafka"]["message"]
            .as_str()
            .unwrap()
            .contains("kept in reserve"),
        "{health}"
    );
    let (_, metrics) = request(&server.http, "GET", "/metrics", None);
    assert!(
        metrics.as_str().unwrap().contains("eddy_store_writable 0"),
        "{metrics}"
    );

    std::fs::remove_file(filler).unwrap();
    let started = Instant::now();
    loop {
        match produce(&mut wire, 1_000_000) {
            0 => break,
            code if started.elapsed() > Duration::from_secs(20) => panic!("still refused: {code}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    acknowledged += i64::from(RECORDS);
    assert_eq!(end_offset(&mut wire, "src"), acknowledged);
    let (status, health) = request(&server.http, "GET", "/healthcheck", None);
    assert_eq!(status, 200, "{health}");

    // The query failed while it could not commit, and catches up on its own.
    let started = Instant::now();
    while end_offset(&mut wire, "COPIED") < acknowledged {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the query copied {} of {acknowledged} records; SHOW QUERIES: {}\nthe server's log:\n{}",
            end_offset(&mut wire, "COPIED"),
            ksql(&server, "SHOW QUERIES;").1,
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(end_offset(&mut wire, "COPIED"), acknowledged);
    let (_, queries) = ksql(&server, "SHOW QUERIES;");
    assert_eq!(queries[0]["queries"][0]["state"], "RUNNING", "{queries}");
}
