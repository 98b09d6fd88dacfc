//! Fetch: record batches from the log, bounded as Kafka bounds them. The answer carries at most
//! the request's `max_bytes`, itself capped by the broker's `fetch.max.bytes`, except that the
//! first batch found is always sent whole (KIP-74), so a batch larger than the limit cannot
//! stall a consumer. A partition named twice is read once, as Kafka does. A read_committed
//! consumer reads up to the last stable offset and is told which transactions in its range
//! aborted, so it drops their records.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use bytes::BytesMut;
use eddy_storage::{Isolation, Store, split_batches};
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};

use super::{code, storage_error_code};

/// Kafka's default `fetch.max.bytes`: the most one Fetch answer carries, whatever a client asks.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 55 << 20;

/// Answers `request` once `min_bytes` are there, a partition is in error, or `max_wait_ms` passed.
pub(super) async fn fetch(
    store: &Store,
    request: &FetchRequest,
    version: i16,
    fetch_max_bytes: usize,
    fetched: Option<&prometheus::IntCounterVec>,
) -> FetchResponse {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let wanted = distinct_partitions(request);
    let max_bytes = (request.max_bytes.max(0) as usize).min(fetch_max_bytes);
    let isolation = Isolation::from_wire(request.isolation_level);
    loop {
        let (responses, bytes) = fetch_once(store, &wanted, (max_bytes, isolation), version);
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
        let remaining = deadline - now;
        let waits: Vec<_> = wanted
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(move |p| {
                    let topic = topic.to_string();
                    let (partition, offset) = (p.partition, p.fetch_offset);
                    Box::pin(async move {
                        if let Ok(p) = u32::try_from(partition) {
                            let wait = (remaining, isolation);
                            let _ = store.wait_for_isolated(&topic, p, offset, wait).await;
                        }
                    })
                })
            })
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::select! {
                _ = futures::future::select_all(waits) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// The request's topics and partitions in the order first named, each partition once with the
/// position it was last given at.
fn distinct_partitions(request: &FetchRequest) -> Vec<(TopicName, Vec<FetchPartition>)> {
    let mut wanted: Vec<(TopicName, Vec<FetchPartition>)> = Vec::new();
    // Indexes into `wanted`, so a request naming many topics is not searched once per name.
    let mut topics: HashMap<&TopicName, usize> = HashMap::new();
    let mut partitions: HashMap<(&TopicName, i32), usize> = HashMap::new();
    for topic in &request.topics {
        let t = *topics.entry(&topic.topic).or_insert_with(|| {
            wanted.push((topic.topic.clone(), Vec::new()));
            wanted.len() - 1
        });
        for partition in &topic.partitions {
            let slots = &mut wanted[t].1;
            match partitions.entry((&topic.topic, partition.partition)) {
                Entry::Occupied(at) => slots[*at.get()] = partition.clone(),
                Entry::Vacant(at) => {
                    at.insert(slots.len());
                    slots.push(partition.clone());
                }
            }
        }
    }
    wanted
}

/// Reads every wanted partition once, sending at most `max_bytes` in all beyond the first batch.
fn fetch_once(
    store: &Store,
    wanted: &[(TopicName, Vec<FetchPartition>)],
    (max_bytes, isolation): (usize, Isolation),
    version: i16,
) -> (Vec<FetchableTopicResponse>, usize) {
    // Fields a version lacks must stay at their defaults, or the encoder refuses the response.
    let log_start = |offset: i64| if version >= 5 { offset } else { -1 };
    let mut total = 0usize;
    let responses = wanted
        .iter()
        .map(|(topic, partitions)| {
            let name = topic.to_string();
            let partitions = partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_aborted_transactions(Some(Vec::new()));
                    let Ok(index) = u32::try_from(p.partition) else {
                        return data.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let budget = max_bytes.saturating_sub(total);
                    let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
                    let read = (p.fetch_offset, limit.max(1), isolation);
                    match store.read_isolated(&name, index, read.0, read.1, read.2) {
                        Ok(read) => {
                            let records = within_limit(&read.batches, limit, budget, total == 0);
                            total += records.len();
                            let aborted = read
                                .aborted
                                .iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                })
                                .collect();
                            data.with_high_watermark(read.high_watermark)
                                .with_last_stable_offset(read.last_stable_offset)
                                .with_log_start_offset(log_start(read.log_start_offset))
                                .with_aborted_transactions(Some(aborted))
                                .with_records(Some(records.freeze()))
                        }
                        Err(e) => {
                            let (hw, start) = (
                                store.end_offset(&name, index).unwrap_or(-1),
                                store.log_start_offset(&name, index).unwrap_or(-1),
                            );
                            let lso = store.last_stable_offset(&name, index).unwrap_or(-1);
                            data.with_error_code(storage_error_code(&e))
                                .with_high_watermark(hw)
                                .with_last_stable_offset(lso)
                                .with_log_start_offset(log_start(start))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    (responses, total)
}

/// The leading batches that fit in `limit`. The first batch may be larger when nothing has been
/// sent yet (KIP-74), or when it still fits in what is left of the whole answer's `budget`, so a
/// partition's own limit never hides a batch larger than it for good.
fn within_limit(
    batches: &[bytes::Bytes],
    limit: usize,
    budget: usize,
    first_of_answer: bool,
) -> BytesMut {
    let mut records = BytesMut::new();
    for (i, batch) in batches.iter().enumerate() {
        let fits = records.len() + batch.len() <= limit
            || (i == 0 && (first_of_answer || batch.len() <= budget));
        if !fits {
            break;
        }
        records.extend_from_slice(batch);
    }
    records
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batches(sizes: &[usize]) -> Vec<Bytes> {
        sizes.iter().map(|&n| Bytes::from(vec![0u8; n])).collect()
    }

    #[test]
    fn a_partition_named_twice_is_read_once_at_its_last_position() {
        use kafka_protocol::messages::fetch_request::FetchTopic;
        let at = |partition, offset| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
        };
        let topic = |name: &'static str, partitions| {
            FetchTopic::default()
                .with_topic(TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str(name),
                ))
                .with_partitions(partitions)
        };
        let request = FetchRequest::default().with_topics(vec![
            topic("a", vec![at(0, 1), at(1, 1), at(0, 5)]),
            topic("b", vec![at(0, 2)]),
            topic("a", vec![at(1, 7), at(2, 3)]),
        ]);
        let wanted: Vec<(String, Vec<(i32, i64)>)> = distinct_partitions(&request)
            .into_iter()
            .map(|(name, ps)| {
                let ps = ps.iter().map(|p| (p.partition, p.fetch_offset)).collect();
                (name.to_string(), ps)
            })
            .collect();
        assert_eq!(
            wanted,
            [
                ("a".to_string(), vec![(0, 5), (1, 7), (2, 3)]),
                ("b".to_string(), vec![(0, 2)]),
            ]
        );
    }

    #[test]
    fn batches_past_the_limit_wait_for_the_next_fetch() {
        assert_eq!(within_limit(&batches(&[60, 60]), 100, 1000, true).len(), 60);
        assert_eq!(
            within_limit(&batches(&[40, 60, 1]), 100, 1000, true).len(),
            100
        );
    }

    #[test]
    fn the_first_batch_of_an_answer_goes_whole_whatever_its_size() {
        assert_eq!(within_limit(&batches(&[500, 1]), 100, 100, true).len(), 500);
        assert_eq!(within_limit(&batches(&[500]), 0, 0, true).len(), 500);
    }

    #[test]
    fn a_later_partition_sends_a_large_batch_only_within_the_answers_budget() {
        assert_eq!(within_limit(&batches(&[500]), 100, 1000, false).len(), 500);
        assert_eq!(within_limit(&batches(&[500]), 100, 400, false).len(), 0);
        assert_eq!(within_limit(&batches(&[500]), 0, 0, false).len(), 0);
    }
}
