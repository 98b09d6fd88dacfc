//! Produce: each partition's batch is checked whole, then appended; the store checks an
//! idempotent producer's sequence as it writes. A transactional batch goes only to a partition
//! its transaction added, at the producer's current epoch (the check KIP-890 made Kafka's
//! brokers do), so a fenced producer cannot write. Clients may not write Eddy's internal topics.

use bytes::BytesMut;
use eddy_storage::{EncodedBatch, Store};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::warn;

use super::transactions::TransactionCoordinator;
use super::{code, storage_error_code, topic_name};

/// Appends each partition's batch, answering per partition.
pub(super) async fn produce(
    (store, txns): (&Store, &TransactionCoordinator),
    request: ProduceRequest,
    version: i16,
) -> ProduceResponse {
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.to_string();
        let internal = eddy_storage::is_internal_topic(&name);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let index = partition.index;
            let outcome = match partition.records {
                // Kafka refuses clients' writes to its internal topics the same way.
                _ if internal => Err(code::INVALID_TOPIC_EXCEPTION),
                None => Err(code::INVALID_REQUEST),
                Some(records) => match EncodedBatch::from_bytes(BytesMut::from(records.as_ref())) {
                    Err(reason) => {
                        warn!(topic = %name, partition = index, %reason, "refused a produced batch");
                        Err(code::CORRUPT_MESSAGE)
                    }
                    Ok(batch) => match u32::try_from(index) {
                        Err(_) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                        Ok(p) => match in_transaction(txns, &batch, &name, p) {
                            Ok(()) => append_checked(store, &name, p, batch).await,
                            Err(code) => Err(code),
                        },
                    },
                },
            };
            let response = PartitionProduceResponse::default().with_index(index);
            partitions.push(match outcome {
                Ok(appended) => {
                    let response = response.with_base_offset(appended.base_offset);
                    if version >= 5 {
                        response.with_log_start_offset(
                            store
                                .log_start_offset(&name, appended.partition)
                                .unwrap_or(0),
                        )
                    } else {
                        response
                    }
                }
                Err(code) => response.with_error_code(code).with_base_offset(-1),
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partitions),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

/// A topic's answer with every partition of `topic` refused with `error`.
pub(super) fn refused(
    topic: &kafka_protocol::messages::produce_request::TopicProduceData,
    error: i16,
) -> TopicProduceResponse {
    TopicProduceResponse::default()
        .with_name(topic.name.clone())
        .with_partition_responses(
            topic
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(error)
                        .with_base_offset(-1)
                })
                .collect(),
        )
}

/// Every topic and partition of `request` refused with `error`.
pub(super) fn refuse_all(request: &ProduceRequest, error: i16) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        request
            .topic_data
            .iter()
            .map(|t| refused(t, error))
            .collect(),
    )
}

/// Whether a transactional batch belongs to an open transaction that added the partition.
fn in_transaction(
    txns: &TransactionCoordinator,
    batch: &EncodedBatch,
    topic: &str,
    partition: u32,
) -> Result<(), i16> {
    let header = batch.header();
    // A client's marker is refused by the store as INVALID_RECORD, whatever it claims to be.
    if !header.is_transactional() || header.is_control() {
        return Ok(());
    }
    let producer = (header.producer_id, header.producer_epoch);
    txns.verify_produce(producer, topic, partition)
        .inspect_err(|code| {
            warn!(
                topic,
                partition,
                producer_id = header.producer_id,
                code,
                "refused a transactional batch outside its transaction"
            );
        })
}

/// Appends a produced batch; the store checks an idempotent producer's sequence in the same
/// write, answering a retry with the offset the batch first got.
async fn append_checked(
    store: &Store,
    topic: &str,
    partition: u32,
    batch: EncodedBatch,
) -> Result<eddy_storage::AppendResult, i16> {
    store
        .append_encoded(topic, partition, batch)
        .await
        .map_err(|e| storage_error_code(&e))
}
