//! The transaction APIs on the wire: each request checked against the ACLs as Kafka checks it
//! (Write on the transactional id; Write on each topic added; Read on the group whose offsets
//! join; Describe to see a transaction), handed to the coordinator, and answered with Kafka's
//! errors. Requests older than KIP-588 get INVALID_PRODUCER_EPOCH where newer ones get
//! PRODUCER_FENCED.

use eddy_security::acl::{Operation, ResourceType};
use eddy_storage::Store;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Decodable;

use super::super::authorize::Caller;
use super::super::groups::GroupCoordinator;
use super::super::{Broker, encode_response, init_producer_id};
use super::super::{code, topic_name};
use super::TransactionCoordinator;
use super::metadata::PendingOffset;

/// Decodes, answers and encodes a request to one of the producer APIs (InitProducerId, the
/// transaction APIs, DescribeTransactions, ListTransactions, DescribeProducers).
pub(in super::super) async fn serve(
    (key, version, correlation_id): (ApiKey, i16, i32),
    frame: &mut Bytes,
    broker: &Broker,
    caller: Caller<'_>,
) -> anyhow::Result<Option<BytesMut>> {
    let (txns, store) = (&*broker.transactions, &broker.store);
    macro_rules! decode {
        ($request:ty) => {
            <$request>::decode(frame, version)?
        };
    }
    macro_rules! reply {
        ($response:expr) => {
            encode_response(correlation_id, key, version, &$response).map(Some)
        };
    }
    match key {
        ApiKey::InitProducerId => {
            let request = decode!(InitProducerIdRequest);
            if request.transactional_id.is_some() {
                reply!(init_transactional_producer(txns, &request, version, caller).await)
            } else {
                reply!(init_producer_id(&broker.producers, caller))
            }
        }
        ApiKey::AddPartitionsToTxn => {
            let request = decode!(AddPartitionsToTxnRequest);
            reply!(add_partitions_to_txn((txns, store), &request, version, caller).await)
        }
        ApiKey::AddOffsetsToTxn => {
            let request = decode!(AddOffsetsToTxnRequest);
            reply!(add_offsets_to_txn(txns, &request, version, caller).await)
        }
        ApiKey::TxnOffsetCommit => {
            let request = decode!(TxnOffsetCommitRequest);
            let parts = (txns, &*broker.coordinator, store);
            reply!(txn_offset_commit(parts, &request, version, caller).await)
        }
        ApiKey::EndTxn => {
            let request = decode!(EndTxnRequest);
            reply!(end_txn(txns, &request, version, caller).await)
        }
        ApiKey::DescribeTransactions => {
            let request = decode!(DescribeTransactionsRequest);
            reply!(describe_transactions(txns, &request, caller))
        }
        ApiKey::ListTransactions => {
            let request = decode!(ListTransactionsRequest);
            reply!(list_transactions(txns, &request, caller))
        }
        ApiKey::DescribeProducers => {
            let request = decode!(DescribeProducersRequest);
            reply!(describe_producers(store, &request, caller))
        }
        other => anyhow::bail!("{other:?} is not a producer API"),
    }
}

/// PRODUCER_FENCED as a request of `version` knows it: INVALID_PRODUCER_EPOCH below
/// `fenced_since`, the first version KIP-588 gave the new code.
fn fenced_for(error: i16, version: i16, fenced_since: i16) -> i16 {
    if error == code::PRODUCER_FENCED && version < fenced_since {
        code::INVALID_PRODUCER_EPOCH
    } else {
        error
    }
}

fn may_write_id(caller: Caller<'_>, id: &str) -> bool {
    caller.may(Operation::Write, ResourceType::TransactionalId, id)
}

/// InitProducerId with a `transactional.id`.
async fn init_transactional_producer(
    coordinator: &TransactionCoordinator,
    request: &InitProducerIdRequest,
    version: i16,
    caller: Caller<'_>,
) -> InitProducerIdResponse {
    let refused = |error: i16| {
        InitProducerIdResponse::default()
            .with_error_code(fenced_for(error, version, 4))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let id = request
        .transactional_id
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    if id.is_empty() {
        return refused(code::INVALID_REQUEST);
    }
    if !may_write_id(caller, &id) {
        return refused(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    let expected =
        (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    match coordinator
        .init_producer(&id, request.transaction_timeout_ms, expected)
        .await
    {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(error) => refused(error),
    }
}

/// AddPartitionsToTxn (v0 to v3, one transaction per request): every partition joins, or none
/// does and each says why.
async fn add_partitions_to_txn(
    (coordinator, store): (&TransactionCoordinator, &Store),
    request: &AddPartitionsToTxnRequest,
    version: i16,
    caller: Caller<'_>,
) -> AddPartitionsToTxnResponse {
    let id = request.v3_and_below_transactional_id.to_string();
    let producer = (
        request.v3_and_below_producer_id.0,
        request.v3_and_below_producer_epoch,
    );
    let id_allowed = may_write_id(caller, &id);
    // Each partition's own problem, if it has one.
    let mut problems: Vec<(String, i32, Option<i16>)> = Vec::new();
    for topic in &request.v3_and_below_topics {
        let name = topic.name.to_string();
        let topic_error = if !id_allowed {
            Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else if !caller.may_topic(Operation::Write, &name) {
            Some(code::TOPIC_AUTHORIZATION_FAILED)
        } else {
            None
        };
        let partitions = store.partition_count(&name).ok();
        for &p in &topic.partitions {
            let exists = partitions.is_some_and(|n| p >= 0 && (p as u32) < n);
            let error = topic_error.or((!exists).then_some(code::UNKNOWN_TOPIC_OR_PARTITION));
            problems.push((name.clone(), p, error));
        }
    }
    let errors: Vec<(String, i32, i16)> = if problems.iter().any(|(_, _, e)| e.is_some()) {
        problems
            .into_iter()
            .map(|(t, p, e)| (t, p, e.unwrap_or(code::OPERATION_NOT_ATTEMPTED)))
            .collect()
    } else {
        let partitions: Vec<(String, u32)> = problems
            .iter()
            .map(|(t, p, _)| (t.clone(), *p as u32))
            .collect();
        let outcome = coordinator
            .add(&id, producer, (&partitions, None))
            .await
            .err()
            .map_or(code::NONE, |e| fenced_for(e, version, 2));
        problems
            .into_iter()
            .map(|(t, p, _)| (t, p, outcome))
            .collect()
    };
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (name, partition, error) in errors {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(error);
        match topics.iter_mut().find(|t| t.name.as_str() == name) {
            Some(topic) => topic.results_by_partition.push(result),
            None => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic_name(&name))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

/// AddOffsetsToTxn: the group's offsets will commit with the transaction.
async fn add_offsets_to_txn(
    coordinator: &TransactionCoordinator,
    request: &AddOffsetsToTxnRequest,
    version: i16,
    caller: Caller<'_>,
) -> AddOffsetsToTxnResponse {
    let id = request.transactional_id.to_string();
    let group = request.group_id.to_string();
    let error = if !may_write_id(caller, &id) {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !caller.may_group(Operation::Read, &group) {
        code::GROUP_AUTHORIZATION_FAILED
    } else if group.is_empty() || eddy_storage::is_internal_group(&group) {
        code::INVALID_GROUP_ID
    } else {
        let producer = (request.producer_id.0, request.producer_epoch);
        coordinator
            .add(&id, producer, (&[], Some(&group)))
            .await
            .err()
            .map_or(code::NONE, |e| fenced_for(e, version, 2))
    };
    AddOffsetsToTxnResponse::default().with_error_code(error)
}

/// TxnOffsetCommit: offsets that take effect when the transaction commits, from a consumer
/// that is still a member of its group at its generation.
async fn txn_offset_commit(
    (coordinator, groups, store): (&TransactionCoordinator, &GroupCoordinator, &Store),
    request: &TxnOffsetCommitRequest,
    version: i16,
    caller: Caller<'_>,
) -> TxnOffsetCommitResponse {
    let id = request.transactional_id.to_string();
    let group = request.group_id.to_string();
    let common = if !may_write_id(caller, &id) {
        Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if !caller.may_group(Operation::Read, &group) {
        Some(code::GROUP_AUTHORIZATION_FAILED)
    } else {
        groups.check_transactional_member(&group, &request.member_id, request.generation_id)
    };
    let mut offsets = Vec::new();
    let mut answers: Vec<(usize, i32, Option<i16>)> = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.name.to_string();
        let partitions = store.partition_count(&name).ok();
        for p in &topic.partitions {
            let index = p.partition_index;
            let error = common.or_else(|| {
                if !caller.may_topic(Operation::Read, &name) {
                    Some(code::TOPIC_AUTHORIZATION_FAILED)
                } else if !partitions.is_some_and(|n| index >= 0 && (index as u32) < n) {
                    Some(code::UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    None
                }
            });
            if error.is_none() {
                offsets.push(PendingOffset {
                    group: group.clone(),
                    topic: name.clone(),
                    partition: index as u32,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                });
            }
            answers.push((t, index, error));
        }
    }
    let outcome = if offsets.is_empty() {
        code::NONE
    } else {
        let producer = (request.producer_id.0, request.producer_epoch);
        coordinator
            .commit_offsets(&id, producer, offsets)
            .await
            .err()
            .map_or(code::NONE, |e| fenced_for(e, version, 3))
    };
    let topics = request
        .topics
        .iter()
        .enumerate()
        .map(|(t, topic)| {
            let partitions = answers
                .iter()
                .filter(|(of, _, _)| *of == t)
                .map(|(_, index, error)| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(*index)
                        .with_error_code(error.unwrap_or(outcome))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn: commit or abort.
async fn end_txn(
    coordinator: &TransactionCoordinator,
    request: &EndTxnRequest,
    version: i16,
    caller: Caller<'_>,
) -> EndTxnResponse {
    let id = request.transactional_id.to_string();
    if !may_write_id(caller, &id) {
        return EndTxnResponse::default()
            .with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let producer = (request.producer_id.0, request.producer_epoch);
    match coordinator
        .end_transaction(&id, producer, request.committed)
        .await
    {
        Ok((producer_id, epoch)) => EndTxnResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(error) => EndTxnResponse::default()
            .with_error_code(fenced_for(error, version, 2))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// DescribeTransactions: each named id's state, for ids the caller may describe.
fn describe_transactions(
    coordinator: &TransactionCoordinator,
    request: &DescribeTransactionsRequest,
    caller: Caller<'_>,
) -> DescribeTransactionsResponse {
    let summaries = coordinator.summaries();
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            if !caller.may(Operation::Describe, ResourceType::TransactionalId, id) {
                return state.with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
            }
            let Some(s) = summaries.iter().find(|s| s.transactional_id == id.as_str()) else {
                return state.with_error_code(code::TRANSACTIONAL_ID_NOT_FOUND);
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (topic, partition) in &s.partitions {
                let partition = *partition as i32;
                match topics.iter_mut().find(|t| t.topic.as_str() == topic) {
                    Some(t) => t.partitions.push(partition),
                    None => topics.push(
                        TopicData::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(vec![partition]),
                    ),
                }
            }
            state
                .with_transaction_state(StrBytes::from_static_str(s.state))
                .with_transaction_timeout_ms(s.timeout_ms)
                .with_transaction_start_time_ms(s.start_ms)
                .with_producer_id(ProducerId(s.producer.0))
                .with_producer_epoch(s.producer.1)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: the ids the caller may describe, filtered by state, producer id and (v1)
/// how long they have been open.
fn list_transactions(
    coordinator: &TransactionCoordinator,
    request: &ListTransactionsRequest,
    caller: Caller<'_>,
) -> ListTransactionsResponse {
    const KNOWN: [&str; 4] = ["Empty", "Ongoing", "CompleteCommit", "CompleteAbort"];
    const ALSO_KAFKAS: [&str; 4] = ["PrepareCommit", "PrepareAbort", "Dead", "PrepareEpochFence"];
    let unknown: Vec<StrBytes> = request
        .state_filters
        .iter()
        .filter(|s| !KNOWN.contains(&s.as_str()) && !ALSO_KAFKAS.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = eddy_storage::now_ms();
    let states = coordinator
        .summaries()
        .into_iter()
        .filter(|s| {
            request.state_filters.is_empty()
                || request.state_filters.iter().any(|f| f.as_str() == s.state)
        })
        .filter(|s| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .contains(&ProducerId(s.producer.0))
        })
        .filter(|s| {
            request.duration_filter < 0
                || (s.start_ms >= 0 && now - s.start_ms >= request.duration_filter)
        })
        .filter(|s| {
            caller.may(
                Operation::Describe,
                ResourceType::TransactionalId,
                &s.transactional_id,
            )
        })
        .map(|s| {
            ListedState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(s.transactional_id)))
                .with_producer_id(ProducerId(s.producer.0))
                .with_transaction_state(StrBytes::from_static_str(s.state))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

/// DescribeProducers: each partition's producers with state there, and the first offset of
/// the transaction each has open.
fn describe_producers(
    store: &Store,
    request: &DescribeProducersRequest,
    caller: Caller<'_>,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let allowed = caller.may_topic(Operation::Read, &name);
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    if !allowed {
                        return response.with_error_code(code::TOPIC_AUTHORIZATION_FAILED);
                    }
                    let Ok(p) = u32::try_from(index) else {
                        return response.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    match store.producers(&name, p) {
                        Ok(producers) => response.with_active_producers(
                            producers
                                .into_iter()
                                .map(|s| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(s.producer_id))
                                        .with_producer_epoch(i32::from(s.epoch))
                                        .with_last_sequence(s.last_sequence)
                                        .with_last_timestamp(-1)
                                        .with_coordinator_epoch(0)
                                        .with_current_txn_start_offset(
                                            s.open_transaction_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                        Err(_) => response.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
