//! `eddy-bench nexmark --load`: Nexmark's events produced to a running server over Kafka's
//! protocol, for people trying Eddy (or comparing with any Kafka-speaking engine): the three
//! topics `tests/nexmark/ddl.sql` declares, created with one partition when missing.

use anyhow::Context;
use eddy_storage::EncodedBatch;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::bench::batches;
use crate::bench::kafka::Connection;
use crate::bench::nexmark::{Events, record};

/// Kafka's `TOPIC_ALREADY_EXISTS`.
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// Produces `events` as JSON to the Kafka listener at `bootstrap` (`host:port`); how many
/// records it produced.
pub async fn load(events: &Events, bootstrap: &str) -> anyhow::Result<u64> {
    let address = tokio::net::lookup_host(bootstrap)
        .await
        .with_context(|| format!("resolving {bootstrap}"))?
        .next()
        .with_context(|| format!("{bootstrap} resolves to no address"))?;
    let mut connection = Connection::open(address, None)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let topics = events
        .kinds()
        .iter()
        .map(|(_, topic, _)| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_num_partitions(1)
                .with_replication_factor(1)
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(30_000);
    let response: CreateTopicsResponse = connection
        .call(ApiKey::CreateTopics, 4, &request)
        .await
        .context("CreateTopics")?;
    for topic in &response.topics {
        anyhow::ensure!(
            topic.error_code == 0 || topic.error_code == TOPIC_ALREADY_EXISTS,
            "creating {} answered error code {}",
            topic.name.0,
            topic.error_code
        );
    }
    let mut produced = 0;
    for (_, topic, lines) in events.kinds() {
        let records = lines
            .iter()
            .map(|line| record(topic, line, None))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for batch in batches(records) {
            let encoded = EncodedBatch::encode(&batch)
                .map_err(|e| anyhow::anyhow!("encoding a batch: {e}"))?;
            connection.produce_to(topic, 0, encoded.as_bytes()).await?;
            produced += batch.len() as u64;
        }
    }
    Ok(produced)
}
