//! The transaction APIs on the wire, as a bare client sends them: Kafka's errors for requests
//! out of turn (unknown ids, stale epochs, unknown partitions, ending what is not open,
//! batches outside their transaction, client-written markers), the last stable offset that
//! ListOffsets answers, and what DescribeTransactions, ListTransactions and DescribeProducers
//! show of an open transaction.

use bytes::Bytes;
use eddy_storage::{EncodedBatch, Record};
use kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

mod common;

use common::wire::Wire;

const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const PRODUCER_FENCED: i16 = 90;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_RECORD: i16 = 87;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const UNKNOWN_MEMBER_ID: i16 = 25;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn id(text: &str) -> TransactionalId {
    TransactionalId(s(text))
}

fn init(wire: &mut Wire, txn: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(id(txn)))
        .with_transaction_timeout_ms(timeout_ms);
    wire.call(ApiKey::InitProducerId, 3, &request).0
}

fn add_partitions(
    wire: &mut Wire,
    version: i16,
    (txn, producer, epoch): (&str, i64, i16),
    partitions: &[(&str, i32)],
) -> Vec<(String, i32, i16)> {
    let topics = partitions
        .iter()
        .map(|(topic, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![*p])
        })
        .collect();
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(id(txn))
        .with_v3_and_below_producer_id(ProducerId(producer))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let response: AddPartitionsToTxnResponse =
        wire.call(ApiKey::AddPartitionsToTxn, version, &request).0;
    response
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.partition_error_code,
                )
            })
        })
        .collect()
}

fn end(wire: &mut Wire, (txn, producer, epoch): (&str, i64, i16), commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(id(txn))
        .with_producer_id(ProducerId(producer))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let response: EndTxnResponse = wire.call(ApiKey::EndTxn, 3, &request).0;
    response.error_code
}

fn produce(wire: &mut Wire, topic: &str, batch: &EncodedBatch) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::copy_from_slice(batch.as_bytes()))),
                ]),
        ]);
    let response: ProduceResponse = wire.call(ApiKey::Produce, 8, &request).0;
    response.responses[0].partition_responses[0].error_code
}

fn transactional_batch(producer: i64, epoch: i16, sequence: i32) -> EncodedBatch {
    let mut batch = EncodedBatch::encode(&[Record::keyed("k", "v", 0)]).unwrap();
    batch.set_transactional(producer, epoch, sequence);
    batch
}

fn latest(wire: &mut Wire, topic: &str, isolation: i8) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let response: ListOffsetsResponse = wire.call(ApiKey::ListOffsets, 4, &request).0;
    response.topics[0].partitions[0].offset
}

fn create_topic(wire: &mut Wire, topic: &str) {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
        ]))
        .with_allow_auto_topic_creation(true);
    let _: (MetadataResponse, usize) = wire.call(ApiKey::Metadata, 8, &request);
}

#[test]
fn requests_out_of_turn_get_kafkas_errors() {
    let server = common::start();
    let mut wire = Wire::connect(&server.kafka);
    create_topic(&mut wire, "t");

    assert_eq!(
        init(&mut wire, "w", 1_000_000_000).error_code,
        INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(
        end(&mut wire, ("never", 1, 0), true),
        INVALID_PRODUCER_ID_MAPPING
    );

    let first = init(&mut wire, "w", 60_000);
    assert_eq!(first.error_code, 0);
    let (producer, epoch) = (first.producer_id.0, first.producer_epoch);
    // A second producer of the id fences the first.
    let second = init(&mut wire, "w", 60_000);
    assert_eq!(
        (second.producer_id.0, second.producer_epoch),
        (producer, epoch + 1)
    );
    let stale = ("w", producer, epoch);
    assert_eq!(
        add_partitions(&mut wire, 3, stale, &[("t", 0)]),
        [("t".into(), 0, PRODUCER_FENCED)]
    );
    assert_eq!(
        add_partitions(&mut wire, 1, stale, &[("t", 0)]),
        [("t".into(), 0, INVALID_PRODUCER_EPOCH)]
    );
    let current = ("w", producer, epoch + 1);
    assert_eq!(end(&mut wire, current, true), INVALID_TXN_STATE);
    // One unknown partition and nothing is added.
    assert_eq!(
        add_partitions(&mut wire, 3, current, &[("t", 0), ("t", 7)]),
        [
            ("t".into(), 0, OPERATION_NOT_ATTEMPTED),
            ("t".into(), 7, UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    // A batch of a transaction that did not add the partition, and one of no transaction.
    assert_eq!(
        produce(&mut wire, "t", &transactional_batch(producer, epoch + 1, 0)),
        INVALID_TXN_STATE
    );
    assert_eq!(
        produce(&mut wire, "t", &transactional_batch(424242, 0, 0)),
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        add_partitions(&mut wire, 3, current, &[("t", 0)]),
        [("t".into(), 0, 0)]
    );
    assert_eq!(
        produce(&mut wire, "t", &transactional_batch(producer, epoch, 0)),
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        produce(&mut wire, "t", &transactional_batch(producer, epoch + 1, 0)),
        0
    );
    assert_eq!(end(&mut wire, current, false), 0);
    // A retried abort succeeds again; a commit of what aborted does not.
    assert_eq!(end(&mut wire, current, false), 0);
    assert_eq!(end(&mut wire, current, true), INVALID_TXN_STATE);
}

#[test]
fn a_client_written_marker_is_refused() {
    let server = common::start();
    let mut wire = Wire::connect(&server.kafka);
    create_topic(&mut wire, "m");
    // A batch with the control bit set, as only a coordinator writes.
    let marker = kafka_protocol::records::Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 5,
        producer_epoch: 0,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: Some(Bytes::from_static(&[0, 0, 0, 1])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: Default::default(),
    };
    let mut bytes = bytes::BytesMut::new();
    let options = kafka_protocol::records::RecordEncodeOptions {
        version: 2,
        compression: kafka_protocol::records::Compression::None,
    };
    kafka_protocol::records::RecordBatchEncoder::encode(&mut bytes, [&marker], &options).unwrap();
    let batch = EncodedBatch::from_bytes(bytes).unwrap();
    assert!(batch.header().is_control());
    assert_eq!(produce(&mut wire, "m", &batch), INVALID_RECORD);
}

#[test]
fn an_open_transaction_shows_in_the_admin_apis_and_holds_back_the_stable_offset() {
    let server = common::start();
    let mut wire = Wire::connect(&server.kafka);
    create_topic(&mut wire, "o");
    let plain = EncodedBatch::encode(&[Record::keyed("a", "1", 0)]).unwrap();
    assert_eq!(produce(&mut wire, "o", &plain), 0);
    let started = init(&mut wire, "open", 60_000);
    let txn = ("open", started.producer_id.0, started.producer_epoch);
    assert_eq!(
        add_partitions(&mut wire, 3, txn, &[("o", 0)]),
        [("o".into(), 0, 0)]
    );
    let batch = transactional_batch(txn.1, txn.2, 0);
    assert_eq!(produce(&mut wire, "o", &batch), 0);
    assert_eq!(latest(&mut wire, "o", 0), 2);
    assert_eq!(latest(&mut wire, "o", 1), 1);

    let request =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![id("open"), id("nope")]);
    let described: DescribeTransactionsResponse =
        wire.call(ApiKey::DescribeTransactions, 0, &request).0;
    let states = &described.transaction_states;
    assert_eq!(states[0].transaction_state.as_str(), "Ongoing");
    assert_eq!(states[0].topics[0].partitions, [0]);
    assert_eq!(states[1].error_code, TRANSACTIONAL_ID_NOT_FOUND);

    let request = ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing")]);
    let listed: ListTransactionsResponse = wire.call(ApiKey::ListTransactions, 0, &request).0;
    let ids: Vec<&str> = listed
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.as_str())
        .collect();
    assert_eq!(ids, ["open"]);

    let request = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(TopicName(s("o")))
            .with_partition_indexes(vec![0]),
    ]);
    let producers: DescribeProducersResponse = wire.call(ApiKey::DescribeProducers, 0, &request).0;
    let active = &producers.topics[0].partitions[0].active_producers;
    let open: Vec<(i64, i64)> = active
        .iter()
        .map(|p| (p.producer_id.0, p.current_txn_start_offset))
        .collect();
    assert_eq!(open, [(txn.1, 1)]);

    // Offsets in the transaction are unstable until it ends.
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(id("open"))
        .with_producer_id(ProducerId(txn.1))
        .with_producer_epoch(txn.2)
        .with_group_id(GroupId(s("g")));
    let added: AddOffsetsToTxnResponse = wire.call(ApiKey::AddOffsetsToTxn, 3, &request).0;
    assert_eq!(added.error_code, 0);
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(id("open"))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(txn.1))
        .with_producer_epoch(txn.2)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("o")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(2),
                ]),
        ]);
    // A consumer that is no member of the group (a zombie after a rebalance) is fenced.
    let zombie = request
        .clone()
        .with_member_id(s("ghost"))
        .with_generation_id(3);
    let refused: TxnOffsetCommitResponse = wire.call(ApiKey::TxnOffsetCommit, 3, &zombie).0;
    assert_eq!(
        refused.topics[0].partitions[0].error_code,
        UNKNOWN_MEMBER_ID
    );
    let committed: TxnOffsetCommitResponse = wire.call(ApiKey::TxnOffsetCommit, 3, &request).0;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let fetch_offsets = |wire: &mut Wire| {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_require_stable(true)
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("o")))
                    .with_partition_indexes(vec![0]),
            ]));
        let response: OffsetFetchResponse = wire.call(ApiKey::OffsetFetch, 7, &request).0;
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    assert_eq!(fetch_offsets(&mut wire), (UNSTABLE_OFFSET_COMMIT, -1));
    assert_eq!(end(&mut wire, txn, true), 0);
    assert_eq!(fetch_offsets(&mut wire), (0, 2));
    // The marker moved the end past it; nothing is open now.
    assert_eq!(latest(&mut wire, "o", 0), 3);
    assert_eq!(latest(&mut wire, "o", 1), 3);
}
