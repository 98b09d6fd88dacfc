//! Kafka's wire protocol on Eddy's log: producing, consuming by assignment or in consumer groups
//! (ApiVersions, Metadata, Produce, Fetch, ListOffsets, FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch).
//!
//! Frames are decoded and encoded with the `kafka-protocol` crate. Each connection handles its
//! requests one after another, so responses go out in request order.

mod admin;
mod groups;
mod producers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use eddy_storage::{EncodedBatch, StorageError, Store, TopicConfig, split_batches};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, InitProducerIdRequest,
    InitProducerIdResponse, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProducerId, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

mod code;

/// The node id Eddy gives itself.
const NODE_ID: i32 = 0;
/// The largest frame accepted from a client.
const MAX_FRAME: usize = 100 << 20;

/// The versions served, within what the crate and Kafka 4's baseline allow. Metadata stays below
/// v9 so clients do not expect OffsetForLeaderEpoch, and Fetch below v13 (topic ids).
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 8),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::ListGroups, 0, 3),
    (ApiKey::DescribeGroups, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
];

/// How the Kafka listener behaves.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// The address clients are told to connect to.
    pub advertised: SocketAddr,
    /// Whether Metadata requests create unknown topics.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    pub default_partitions: u32,
    /// Counts records sent by Fetch, per topic, when the server exports metrics.
    pub fetched_records: Option<prometheus::IntCounterVec>,
}

/// Accepts Kafka clients until the task is dropped.
pub async fn serve(listener: TcpListener, store: Store, config: KafkaConfig) {
    let coordinator = groups::GroupCoordinator::start(store.clone());
    let producers = Arc::new(producers::ProducerRegistry::new());
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "kafka listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let store = store.clone();
        let config = config.clone();
        let coordinator = coordinator.clone();
        let producers = producers.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_connection(socket, store, config, coordinator, producers).await {
                debug!(%peer, error = %e, "kafka connection closed");
            }
        });
    }
}

async fn handle_connection(
    mut socket: TcpStream,
    store: Store,
    config: KafkaConfig,
    coordinator: Arc<groups::GroupCoordinator>,
    producers: Arc<producers::ProducerRegistry>,
) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    loop {
        let mut length = [0u8; 4];
        if socket.read_exact(&mut length).await.is_err() {
            return Ok(());
        }
        let length = i32::from_be_bytes(length);
        if length < 8 || length as usize > MAX_FRAME {
            anyhow::bail!("refusing a frame of {length} bytes");
        }
        let mut frame = vec![0u8; length as usize];
        socket.read_exact(&mut frame).await?;
        if let Some(response) = handle_frame(
            Bytes::from(frame),
            &store,
            &config,
            &coordinator,
            &producers,
        )
        .await?
        {
            let mut out = BytesMut::with_capacity(response.len() + 4);
            out.put_i32(response.len() as i32);
            out.extend_from_slice(&response);
            socket.write_all(&out).await?;
        }
    }
}

/// Handles one request frame; `None` means no response is due (Produce with `acks=0`).
async fn handle_frame(
    mut frame: Bytes,
    store: &Store,
    config: &KafkaConfig,
    coordinator: &Arc<groups::GroupCoordinator>,
    producers: &producers::ProducerRegistry,
) -> anyhow::Result<Option<BytesMut>> {
    let api_key = frame.clone().get_i16();
    let api_version = frame.clone().slice(2..).get_i16();
    let Ok(key) = ApiKey::try_from(api_key) else {
        anyhow::bail!("unknown API key {api_key}");
    };
    let supported = SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .filter(|(_, min, max)| (*min..=*max).contains(&api_version));
    let header = RequestHeader::decode(&mut frame, key.request_header_version(api_version))?;
    let correlation_id = header.correlation_id;
    if supported.is_none() {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with the error and the table, so the client can retry.
            let response = api_versions(code::UNSUPPORTED_VERSION);
            return encode_response(correlation_id, ApiKey::ApiVersions, 0, &response).map(Some);
        }
        anyhow::bail!("{key:?} v{api_version} is not supported");
    }
    match key {
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(&mut frame, api_version)?;
            encode_response(correlation_id, key, api_version, &api_versions(code::NONE)).map(Some)
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut frame, api_version)?;
            let response = metadata(store, config, &request, api_version);
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut frame, api_version)?;
            let acks = request.acks;
            let response = produce(store, producers, request, api_version).await;
            if acks == 0 {
                return Ok(None);
            }
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::Fetch => {
            let request = FetchRequest::decode(&mut frame, api_version)?;
            let response = fetch(
                store,
                &request,
                api_version,
                config.fetched_records.as_ref(),
            )
            .await;
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::decode(&mut frame, api_version)?;
            let response = list_offsets(store, &request);
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::FindCoordinator => {
            FindCoordinatorRequest::decode(&mut frame, api_version)?;
            let response = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(StrBytes::from_string(config.advertised.ip().to_string()))
                .with_port(i32::from(config.advertised.port()));
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::JoinGroup => {
            let request = JoinGroupRequest::decode(&mut frame, api_version)?;
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let response = coordinator.join(request, api_version, &client_id).await;
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::SyncGroup => {
            let request = SyncGroupRequest::decode(&mut frame, api_version)?;
            let response = coordinator.sync(request, api_version).await;
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::Heartbeat => {
            let request = HeartbeatRequest::decode(&mut frame, api_version)?;
            encode_response(
                correlation_id,
                key,
                api_version,
                &coordinator.heartbeat(&request),
            )
            .map(Some)
        }
        ApiKey::LeaveGroup => {
            let request = LeaveGroupRequest::decode(&mut frame, api_version)?;
            encode_response(
                correlation_id,
                key,
                api_version,
                &coordinator.leave(&request, api_version),
            )
            .map(Some)
        }
        ApiKey::OffsetCommit => {
            let request = OffsetCommitRequest::decode(&mut frame, api_version)?;
            let response = coordinator.commit(&request).await;
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::OffsetFetch => {
            let request = OffsetFetchRequest::decode(&mut frame, api_version)?;
            encode_response(
                correlation_id,
                key,
                api_version,
                &coordinator.fetch(&request, api_version),
            )
            .map(Some)
        }
        ApiKey::ListGroups => {
            ListGroupsRequest::decode(&mut frame, api_version)?;
            encode_response(correlation_id, key, api_version, &coordinator.list()).map(Some)
        }
        ApiKey::DescribeGroups => {
            let request = DescribeGroupsRequest::decode(&mut frame, api_version)?;
            encode_response(
                correlation_id,
                key,
                api_version,
                &coordinator.describe(&request),
            )
            .map(Some)
        }
        ApiKey::DescribeConfigs => {
            let request = DescribeConfigsRequest::decode(&mut frame, api_version)?;
            let response = admin::describe_configs(store, &request);
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::CreateTopics => {
            let request = CreateTopicsRequest::decode(&mut frame, api_version)?;
            let response = admin::create_topics(store, &request, api_version);
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::decode(&mut frame, api_version)?;
            let response = admin::delete_topics(store, &request, api_version);
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        ApiKey::InitProducerId => {
            let request = InitProducerIdRequest::decode(&mut frame, api_version)?;
            let response = if request.transactional_id.is_some() {
                warn!(
                    "a client asked for a transactional producer; transactions are not supported yet"
                );
                InitProducerIdResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
            } else {
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(producers.allocate()))
                    .with_producer_epoch(0)
            };
            encode_response(correlation_id, key, api_version, &response).map(Some)
        }
        other => anyhow::bail!("{other:?} is not served"),
    }
}

fn encode_response<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &T,
) -> anyhow::Result<BytesMut> {
    let mut out = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut out, key.response_header_version(version))?;
    body.encode(&mut out, version)?;
    Ok(out)
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn metadata(
    store: &Store,
    config: &KafkaConfig,
    request: &MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 and a null topic list both mean every topic, except that v0 sends an empty list for it.
    let wanted: Vec<String> = match &request.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect(),
        _ => store.list_topics(),
    };
    let auto_create =
        config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let topics = wanted
        .into_iter()
        .map(|name| {
            if !store.topic_exists(&name) && auto_create {
                match store.create_topic(
                    &name,
                    TopicConfig::with_partitions(config.default_partitions),
                ) {
                    Ok(_) => info!(topic = %name, "auto-created topic for a Kafka client"),
                    Err(StorageError::TopicExists(_)) => {}
                    Err(e) => {
                        warn!(topic = %name, error = %e, "cannot auto-create topic");
                        return MetadataResponseTopic::default()
                            .with_name(Some(topic_name(&name)))
                            .with_error_code(code::INVALID_TOPIC_EXCEPTION);
                    }
                }
            }
            match store.partition_count(&name) {
                Ok(partitions) => MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_partitions(
                        (0..partitions as i32)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(NODE_ID))
                                    .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                                    .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                    .with_isr_nodes(vec![BrokerId(NODE_ID)])
                            })
                            .collect(),
                    ),
                Err(_) => MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
            }
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(StrBytes::from_string(config.advertised.ip().to_string()))
                .with_port(i32::from(config.advertised.port())),
        ])
        .with_cluster_id((version >= 2).then(|| StrBytes::from_static_str("eddy")))
        .with_controller_id(BrokerId(if version >= 1 { NODE_ID } else { -1 }))
        .with_topics(topics)
}

fn storage_error_code(error: &StorageError) -> i16 {
    match error {
        StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. } => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        StorageError::RecordTooLarge { .. } => code::MESSAGE_TOO_LARGE,
        StorageError::InvalidRecord { .. } => code::INVALID_RECORD,
        StorageError::TooManyPartitions { .. } => code::INVALID_PARTITIONS,
        StorageError::CorruptBatch { .. } => code::CORRUPT_MESSAGE,
        StorageError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

async fn produce(
    store: &Store,
    producers: &producers::ProducerRegistry,
    request: ProduceRequest,
    version: i16,
) -> ProduceResponse {
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let index = partition.index;
            let outcome = match partition.records {
                None => Err(code::INVALID_REQUEST),
                Some(records) => match EncodedBatch::from_bytes(BytesMut::from(records.as_ref())) {
                    Err(reason) => {
                        warn!(topic = %name, partition = index, %reason, "refused a produced batch");
                        Err(code::CORRUPT_MESSAGE)
                    }
                    Ok(batch) => match u32::try_from(index) {
                        Err(_) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                        Ok(p) => append_checked(store, producers, &name, p, batch).await,
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

/// Appends a produced batch after the idempotent producer's sequence check; a retried batch is
/// answered with the offset it already got.
async fn append_checked(
    store: &Store,
    producers: &producers::ProducerRegistry,
    topic: &str,
    partition: u32,
    batch: EncodedBatch,
) -> Result<eddy_storage::AppendResult, i16> {
    let produced = producers::ProducedBatch::of(batch.header());
    match producers.check(topic, partition, produced) {
        producers::SequenceCheck::Refuse(code) => Err(code),
        producers::SequenceCheck::Duplicate(base_offset) => Ok(eddy_storage::AppendResult {
            partition,
            base_offset,
            last_offset: base_offset + i64::from(produced.count) - 1,
        }),
        producers::SequenceCheck::Append => {
            let appended = store
                .append_encoded(topic, partition, batch)
                .await
                .map_err(|e| storage_error_code(&e))?;
            producers.record(topic, partition, produced, appended.base_offset);
            Ok(appended)
        }
    }
}

/// Adds the records of each topic's answer to its count, reading the batch headers.
fn count_fetched(fetched: &prometheus::IntCounterVec, responses: &[FetchableTopicResponse]) {
    for topic in responses {
        let mut count = 0u64;
        for partition in &topic.partitions {
            let Some(records) = partition.records.as_deref() else {
                continue;
            };
            for (header, _) in split_batches(records).map_while(Result::ok) {
                count += header.record_count.max(0) as u64;
            }
        }
        if count > 0 {
            fetched
                .with_label_values(&[topic.topic.as_str()])
                .inc_by(count);
        }
    }
}

async fn fetch(
    store: &Store,
    request: &FetchRequest,
    version: i16,
    fetched: Option<&prometheus::IntCounterVec>,
) -> FetchResponse {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    loop {
        let (responses, bytes) = fetch_once(store, request, version);
        // Errors are answered at once, as Kafka does; waiting on a partition in error would
        // wake immediately and spin.
        let any_error = responses
            .iter()
            .any(|t| t.partitions.iter().any(|p| p.error_code != code::NONE));
        let now = tokio::time::Instant::now();
        if bytes >= min_bytes.max(1) || any_error || now >= deadline {
            if let Some(fetched) = fetched {
                count_fetched(fetched, &responses);
            }
            return FetchResponse::default().with_responses(responses);
        }
        // Wait for an append to any requested partition, then read again.
        let waits: Vec<_> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    let topic = t.topic.to_string();
                    let partition = p.partition;
                    let offset = p.fetch_offset;
                    let remaining = deadline - now;
                    async move {
                        if let Ok(p) = u32::try_from(partition) {
                            let _ = store.wait_for_data(&topic, p, offset, remaining).await;
                        }
                    }
                })
            })
            .map(Box::pin)
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::select! {
                _ = futures_select_any(waits) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Resolves when the first of the futures does.
async fn futures_select_any<F: std::future::Future<Output = ()> + Unpin>(mut futures: Vec<F>) {
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn fetch_once(
    store: &Store,
    request: &FetchRequest,
    version: i16,
) -> (Vec<FetchableTopicResponse>, usize) {
    // Fields a version lacks must stay at their defaults, or the encoder refuses the response.
    let log_start = |offset: i64| if version >= 5 { offset } else { -1 };
    let mut total = 0usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let responses = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.topic.to_string();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_aborted_transactions(Some(Vec::new()));
                    let Ok(index) = u32::try_from(p.partition) else {
                        return data.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    // Always at least one batch for the first partition with data (KIP-74).
                    let limit = (p.partition_max_bytes.max(1) as usize)
                        .min(max_bytes.saturating_sub(total).max(1));
                    match store.read(&name, index, p.fetch_offset, limit) {
                        Ok(read) => {
                            let mut records = BytesMut::new();
                            for batch in &read.batches {
                                records.extend_from_slice(batch);
                            }
                            total += records.len();
                            data.with_high_watermark(read.high_watermark)
                                .with_last_stable_offset(read.high_watermark)
                                .with_log_start_offset(log_start(read.log_start_offset))
                                .with_records(Some(records.freeze()))
                        }
                        Err(e) => {
                            let (hw, start) = (
                                store.end_offset(&name, index).unwrap_or(-1),
                                store.log_start_offset(&name, index).unwrap_or(-1),
                            );
                            data.with_error_code(storage_error_code(&e))
                                .with_high_watermark(hw)
                                .with_last_stable_offset(hw)
                                .with_log_start_offset(log_start(start))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    (responses, total)
}

fn list_offsets(store: &Store, request: &ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1);
                    let Ok(index) = u32::try_from(p.partition_index) else {
                        return response
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1);
                    };
                    let found = match p.timestamp {
                        -2 => store.log_start_offset(&name, index).map(|o| (o, -1)),
                        -1 => store.end_offset(&name, index).map(|o| (o, -1)),
                        ts => store
                            .offset_for_timestamp(&name, index, ts)
                            .map(|found| found.unwrap_or((-1, -1))),
                    };
                    match found {
                        Ok((offset, timestamp)) => {
                            response.with_offset(offset).with_timestamp(timestamp)
                        }
                        Err(e) => response
                            .with_error_code(storage_error_code(&e))
                            .with_offset(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A request header in the form `key` at `version` expects, with a null client id, then
    /// `body`: well-formed up to the body, so the body's decoder is what gets exercised.
    fn frame(key: ApiKey, version: i16, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.extend_from_slice(&(key as i16).to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&7i32.to_be_bytes());
        out.extend_from_slice(&(-1i16).to_be_bytes());
        if key.request_header_version(version) >= 2 {
            out.extend_from_slice(&[0]);
        }
        out.extend_from_slice(body);
        out.freeze()
    }

    /// What `handle_frame` needs: a store in `dir` and the listener's shared parts.
    fn broker(
        dir: &std::path::Path,
    ) -> (
        Store,
        KafkaConfig,
        Arc<groups::GroupCoordinator>,
        producers::ProducerRegistry,
    ) {
        let store = Store::open(dir, eddy_storage::StoreOptions::default()).unwrap();
        let config = KafkaConfig {
            advertised: "127.0.0.1:9092".parse().unwrap(),
            auto_create_topics: false,
            default_partitions: 1,
            fetched_records: None,
        };
        let coordinator = groups::GroupCoordinator::start(store.clone());
        (
            store,
            config,
            coordinator,
            producers::ProducerRegistry::new(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random request bodies, for every API at every version served, get an answer or an
        /// error, never a panic. CreateTopics and Fetch are left out: a random body can ask
        /// for a huge topic or a long poll, which is valid, not malformed.
        #[test]
        fn random_request_bodies_never_panic(
            which in 0..SUPPORTED.len(),
            version_pick in 0i16..20,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (key, min, max) = SUPPORTED[which];
            prop_assume!(!matches!(key, ApiKey::CreateTopics | ApiKey::Fetch));
            let version = min + version_pick % (max - min + 1);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            runtime.block_on(async {
                let (store, config, coordinator, producers) = broker(dir.path());
                let request = frame(key, version, &body);
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    handle_frame(request, &store, &config, &coordinator, &producers),
                )
                .await;
            });
        }

        /// Frames with any key and version bytes at all are refused or answered, never a panic.
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 8..128)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            runtime.block_on(async {
                let (store, config, coordinator, producers) = broker(dir.path());
                let key = i16::from_be_bytes([bytes[0], bytes[1]]);
                prop_assume!(!matches!(ApiKey::try_from(key), Ok(ApiKey::CreateTopics | ApiKey::Fetch)));
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    handle_frame(Bytes::from(bytes), &store, &config, &coordinator, &producers),
                )
                .await;
                Ok(())
            })?;
        }
    }
}
