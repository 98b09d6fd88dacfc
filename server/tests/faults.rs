//! Faults an operator meets: the server killed with SIGKILL again and again under a producer
//! that waits for every acknowledgement, and a command log with an entry that cannot be read
//! back. Nothing acknowledged is lost, and the server always comes back.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::wire::Wire;
use common::{ksql, request};
use eddy_storage::{EncodedBatch, Record};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "acked";
const PER_BATCH: u64 = 10;

/// Produces batch `n` (records `n*10 .. n*10+9`) with acks=all; its base offset if acknowledged.
fn produce(wire: &mut Wire, n: u64) -> Result<i64, String> {
    let records: Vec<Record> = (0..PER_BATCH)
        .map(|i| Record::unkeyed(Bytes::from(format!("v{}", n * PER_BATCH + i)), 0))
        .collect();
    send(wire, &EncodedBatch::encode(&records)?)
}

/// Sends one batch with acks=all; its base offset if acknowledged.
fn send(wire: &mut Wire, batch: &EncodedBatch) -> Result<i64, String> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::copy_from_slice(batch.as_bytes()))),
                ]),
        ]);
    let (response, _): (ProduceResponse, _) = wire.try_call(ApiKey::Produce, 7, &request)?;
    let partition = &response.responses[0].partition_responses[0];
    match partition.error_code {
        0 => Ok(partition.base_offset),
        code => Err(format!("error code {code}")),
    }
}

/// Every record of the topic, by offset.
fn read_back(address: &str) -> BTreeMap<i64, String> {
    Wire::connect(address)
        .read_all(TOPIC, 0)
        .into_iter()
        .map(|r| {
            let value = String::from_utf8(r.record.value.unwrap().to_vec()).unwrap();
            (r.offset, value)
        })
        .collect()
}

/// Five times the server is killed with SIGKILL at a moment no one chose, while a producer with
/// acks=all sends batch after batch, reconnecting and resending what was not acknowledged; each
/// time it restarts on the same data. Every acknowledged record is then read back at the offset
/// its acknowledgement gave.
#[test]
fn nothing_acknowledged_is_lost_across_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = common::start_in(&data, &[]);
    let (status, body) = ksql(
        &server,
        &format!(
            "CREATE STREAM acked (v STRING) WITH (kafka_topic='{TOPIC}', partitions=1, value_format='KAFKA');"
        ),
    );
    assert_eq!(status, 200, "{body}");

    let address = Arc::new(Mutex::new(server.kafka.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (address, done) = (address.clone(), done.clone());
        std::thread::spawn(move || {
            let mut acknowledged: BTreeMap<u64, i64> = BTreeMap::new();
            let mut n = 0u64;
            let mut wire: Option<Wire> = None;
            while !done.load(Ordering::Acquire) {
                if wire.is_none() {
                    let current = address.lock().unwrap().clone();
                    wire = Wire::try_connect(&current).ok();
                }
                let Some(connection) = wire.as_mut() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                match produce(connection, n) {
                    Ok(base) => {
                        acknowledged.insert(n, base);
                        n += 1;
                    }
                    Err(_) => {
                        wire = None;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            acknowledged
        })
    };

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 700));
        drop(server);
        server = common::start_in(&data, &[]);
        *address.lock().unwrap() = server.kafka.clone();
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Release);
    let acknowledged = producer.join().unwrap();
    assert!(
        acknowledged.len() > 50,
        "{} batches acknowledged",
        acknowledged.len()
    );

    let stored = read_back(&server.kafka);
    for (n, base) in &acknowledged {
        for i in 0..PER_BATCH {
            let offset = base + i as i64;
            assert_eq!(
                stored.get(&offset).map(String::as_str),
                Some(format!("v{}", n * PER_BATCH + i).as_str()),
                "batch {n} was acknowledged at offset {base}"
            );
        }
    }
}

/// An entry of the command log that cannot be read back does not keep the server from
/// starting: the rest of the catalog is there, and `/healthcheck` says what was skipped.
#[test]
fn a_damaged_command_log_is_reported_by_the_healthcheck() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let (status, body) = ksql(
        &server,
        "CREATE STREAM kept (v STRING) WITH (kafka_topic='kept', partitions=1, value_format='JSON');",
    );
    assert_eq!(status, 200, "{body}");
    drop(server);

    let store = eddy_storage::Store::open(&data, eddy_storage::StoreOptions::default()).unwrap();
    let mut commit = eddy_storage::Commit::new();
    commit.put_state(
        "__eddy_command_log",
        1_000u64.to_be_bytes().to_vec(),
        b"{\"sql\": 7}".to_vec(),
    );
    store.commit_blocking(commit).unwrap();
    store.close().unwrap();
    drop(store);

    let server = common::start_in(&data, &[]);
    let (status, health) = request(&server.http, "GET", "/healthcheck", None);
    assert_eq!(status, 503, "{health}");
    let runner = &health["details"]["commandRunner"];
    assert_eq!(runner["isHealthy"], false, "{health}");
    assert!(
        runner["message"].as_str().unwrap().contains("entry 1000"),
        "{health}"
    );
    let (status, body) = ksql(&server, "DESCRIBE kept;");
    assert_eq!(status, 200, "{body}");
}

/// The exact failure Kafka's idempotence exists for: a producer's batch is stored, the server
/// dies before the producer hears so, and the producer resends the batch to the restarted
/// server. It is answered with the offset it first got and stored once.
#[test]
fn an_idempotent_retry_after_a_restart_is_stored_once() {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let (status, body) = ksql(
        &server,
        &format!(
            "CREATE STREAM acked (v STRING) WITH (kafka_topic='{TOPIC}', partitions=1, value_format='KAFKA');"
        ),
    );
    assert_eq!(status, 200, "{body}");
    let mut wire = Wire::connect(&server.kafka);
    let (init, _): (InitProducerIdResponse, _) = wire.call(
        ApiKey::InitProducerId,
        1,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!(init.error_code, 0);
    let mut batch = EncodedBatch::encode(&[
        Record::unkeyed(Bytes::from_static(b"once"), 0),
        Record::unkeyed(Bytes::from_static(b"only"), 0),
    ])
    .unwrap();
    batch.set_producer(init.producer_id.0, init.producer_epoch, 0);
    let first = send(&mut wire, &batch).unwrap();
    drop(wire);
    drop(server);

    let server = common::start_in(&data, &[]);
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(send(&mut wire, &batch).unwrap(), first);
    let stored = read_back(&server.kafka);
    assert_eq!(
        stored.values().map(String::as_str).collect::<Vec<_>>(),
        ["once", "only"]
    );
}
