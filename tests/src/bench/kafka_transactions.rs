//! `kafka --transactional`: records produced in transactions of `transaction_size` records spread
//! over every partition (one batch per partition per transaction, sent on each partition's
//! connection at once), each transaction begun with AddPartitionsToTxn and ended with EndTxn on a
//! coordinator connection. The baseline, in the same run, is the same rounds of batches without
//! a transaction, so the ratio is the cost of transactions alone.

use std::time::Instant;

use anyhow::Context;
use eddy_storage::{EncodedBatch, Store, StoreOptions, TopicConfig};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::kafka::{Connection, KafkaBenchConfig, TOPIC, batch};
use crate::bench::Throughput;

/// The transactional id the benchmark's producer uses.
const TRANSACTIONAL_ID: &str = "eddy-bench";

/// Produces the records in rounds of one batch per partition, without transactions and then
/// in one transaction per round; both throughputs.
pub async fn run(config: &KafkaBenchConfig) -> anyhow::Result<(Throughput, Throughput)> {
    let plain = pass(config, false).await?;
    let transactional = pass(config, true).await?;
    Ok((plain, transactional))
}

async fn pass(config: &KafkaBenchConfig, transactional: bool) -> anyhow::Result<Throughput> {
    let partitions = config.partitions;
    let per_batch = (config.transaction_size / partitions as usize).max(1);
    let rounds = config.records / (per_batch as u64 * u64::from(partitions));
    let total = rounds * per_batch as u64 * u64::from(partitions);
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TOPIC, TopicConfig::with_partitions(partitions))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let listener_config = eddy_server::kafka::KafkaConfig {
        auto_create_topics: false,
        ..eddy_server::kafka::KafkaConfig::new(address)
    };
    let server = tokio::spawn(eddy_server::kafka::serve(
        listener,
        store.clone(),
        listener_config,
    ));
    let mut coordinator = Connection::open(address, None).await?;
    let (producer_id, epoch) = if transactional {
        init(&mut coordinator).await?
    } else {
        (-1, -1)
    };
    let mut connections = Vec::new();
    for _ in 0..partitions {
        connections.push(Connection::open(address, None).await?);
    }

    let started = Instant::now();
    for round in 0..rounds {
        if transactional {
            add_partitions(&mut coordinator, (producer_id, epoch), partitions).await?;
        }
        let sends = connections.iter_mut().enumerate().map(|(p, connection)| {
            let first = round * per_batch as u64;
            async move {
                let mut encoded = EncodedBatch::encode(&batch(config, first, per_batch))
                    .map_err(|e| anyhow::anyhow!("encoding a batch: {e}"))?;
                if transactional {
                    encoded.set_transactional(producer_id, epoch, first as i32);
                }
                connection.produce(p as i32, encoded.as_bytes()).await
            }
        });
        for sent in futures::future::join_all(sends).await {
            sent?;
        }
        if transactional {
            end(&mut coordinator, (producer_id, epoch)).await?;
        }
    }
    let elapsed = started.elapsed();
    for p in 0..partitions {
        let (stable, end) = (
            store.last_stable_offset(TOPIC, p)?,
            store.end_offset(TOPIC, p)?,
        );
        anyhow::ensure!(
            stable == end,
            "partition {p}: the last stable offset {stable} is short of the end {end}"
        );
    }
    server.abort();
    Ok(Throughput {
        records: total,
        bytes: total * config.record_size as u64,
        elapsed,
        cpu: None,
        cluster_cpu: None,
    })
}

fn txn_id() -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(TRANSACTIONAL_ID))
}

async fn init(coordinator: &mut Connection) -> anyhow::Result<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id()))
        .with_transaction_timeout_ms(60_000);
    let response: InitProducerIdResponse = coordinator
        .call(ApiKey::InitProducerId, 1, &request)
        .await
        .context("InitProducerId")?;
    anyhow::ensure!(
        response.error_code == 0,
        "InitProducerId answered error code {}",
        response.error_code
    );
    Ok((response.producer_id.0, response.producer_epoch))
}

async fn add_partitions(
    coordinator: &mut Connection,
    (producer_id, epoch): (i64, i16),
    partitions: u32,
) -> anyhow::Result<()> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id())
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions((0..partitions as i32).collect()),
        ]);
    let response: AddPartitionsToTxnResponse = coordinator
        .call(ApiKey::AddPartitionsToTxn, 1, &request)
        .await
        .context("AddPartitionsToTxn")?;
    for topic in &response.results_by_topic_v3_and_below {
        for p in &topic.results_by_partition {
            anyhow::ensure!(
                p.partition_error_code == 0,
                "AddPartitionsToTxn answered error code {}",
                p.partition_error_code
            );
        }
    }
    Ok(())
}

async fn end(coordinator: &mut Connection, (producer_id, epoch): (i64, i16)) -> anyhow::Result<()> {
    let request = EndTxnRequest::default()
        .with_transactional_id(txn_id())
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_committed(true);
    let response: EndTxnResponse = coordinator
        .call(ApiKey::EndTxn, 1, &request)
        .await
        .context("EndTxn")?;
    anyhow::ensure!(
        response.error_code == 0,
        "EndTxn answered error code {}",
        response.error_code
    );
    Ok(())
}
