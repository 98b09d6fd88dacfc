//! A commit's records on the cluster, and then its local part, in the order commits are
//! submitted.
//!
//! One thread owns the producer. It takes the commits waiting for it, produces all of their
//! records, and once they are acknowledged runs each commit's local part (state changes and
//! positions) in order. Under exactly-once, the commits it takes together are one Kafka
//! transaction: their output, their state changelog records and their positions' records
//! become visible to read_committed readers all at once or never, so a node that dies
//! mid-commit leaves nothing half-written for the node that restores from the changelogs.
//! Under at-least-once the producer is only idempotent: a crash between records and local
//! state repeats output, as ksqlDB's `at_least_once` does.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use parking_lot::Mutex;
use rdkafka::TopicPartitionList;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use super::client::{self, Logs};
use super::tasks::QueryGroup;
use super::{ClusterOptions, Guarantee, cluster_error};

use crate::batch::Record;
use crate::commit::AppendResult;
use crate::error::{Result, StorageError};

/// Records bound for one partition.
pub(crate) struct PartitionAppend {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) records: Vec<Record>,
}

/// What runs once a commit's records are acknowledged (or not): its local part.
pub(crate) type AfterDelivery = Box<dyn FnOnce(Result<Landed>) + Send>;

/// Where a commit's records landed: per partition written, its topic and offsets.
pub(crate) type Landed = Vec<(String, AppendResult)>;

/// A commit waiting for the producer.
struct Submitted {
    appends: Vec<PartitionAppend>,
    /// Input positions kept as a query group's committed offsets (a query whose partitions
    /// the service's nodes split), committed with the records.
    positions: Vec<GroupPositions>,
    /// The chain it belongs to: once an earlier commit of it failed, it is refused rather
    /// than committed after it (a query's positions would skip the failed one's records).
    chain: Option<crate::CommitChain>,
    then: AfterDelivery,
}

/// A query group's offsets to commit with a commit's records.
pub(crate) struct GroupPositions {
    pub(crate) group: QueryGroup,
    pub(crate) offsets: TopicPartitionList,
}

/// What the producer's thread is asked, in order.
enum Job {
    Commit(Submitted),
    /// Start the producer: this node became its service's active node.
    Activate(mpsc::SyncSender<Result<()>>),
    /// Drop it: another node is active now.
    Deactivate,
}

/// One partition's records handed to the producer.
type InFlight = Vec<(String, u32, Vec<DeliveryFuture>)>;

/// The most commits one transaction takes.
const COMMITS_PER_TRANSACTION: usize = 256;

/// The producer's thread, fed in submission order.
pub(crate) struct Committer {
    queue: Mutex<mpsc::Sender<Job>>,
    timeout: Duration,
}

/// Which producer a committer drives.
#[derive(Clone)]
pub(crate) struct ProducerRole {
    /// Its transactional id under exactly-once.
    pub(crate) transactional_id: String,
    /// Whether it starts at once and again after it failed for good, rather than only when
    /// activated.
    pub(crate) always: bool,
    /// Its thread's name.
    pub(crate) thread: &'static str,
    /// How long a transaction of it may stay open: a node that dies mid-transaction holds
    /// read_committed readers of what it wrote (and the offsets it committed) that long,
    /// unless a producer of the same id fences it first.
    pub(crate) transaction_timeout: Duration,
}

/// The producer and how it commits.
struct Producing {
    producer: FutureProducer<Logs>,
    options: ClusterOptions,
    transactional_id: Option<String>,
}

impl Committer {
    /// Starts the thread that will drive `producer`: at once when it is `always` on, else
    /// once this node is active.
    pub(crate) fn start(options: &ClusterOptions, producer: ProducerRole) -> Result<Committer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let options = options.clone();
        let timeout = options.timeout;
        let always = producer.always;
        std::thread::Builder::new()
            .name(producer.thread.into())
            .spawn(move || run(options, producer, rx))
            .map_err(StorageError::Io)?;
        let committer = Committer {
            queue: Mutex::new(tx),
            timeout,
        };
        if always {
            committer.activate()?;
        }
        Ok(committer)
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.queue
            .lock()
            .send(job)
            .map_err(|_| StorageError::Closed)
    }

    /// Starts the producer: under exactly-once with the service's transactional id, which
    /// fences the former active node's producer and aborts what it left open.
    pub(crate) fn activate(&self) -> Result<()> {
        let (reply, done) = mpsc::sync_channel(1);
        self.submit(Job::Activate(reply))?;
        // Starting waits for the cluster at most one timeout, beginning transactions another.
        done.recv_timeout(self.timeout * 3)
            .map_err(|_| StorageError::Closed)?
    }

    /// Drops the producer; commits are refused until the next activation.
    pub(crate) fn deactivate(&self) {
        let _ = self.submit(Job::Deactivate);
    }

    /// Queues a commit's records; `then` runs with where they landed once they are
    /// acknowledged (committed, under exactly-once), after every commit queued before it.
    pub(crate) fn send(
        &self,
        (appends, positions): (Vec<PartitionAppend>, Vec<GroupPositions>),
        chain: Option<crate::CommitChain>,
        then: AfterDelivery,
    ) -> Result<()> {
        self.submit(Job::Commit(Submitted {
            appends,
            positions,
            chain,
            then,
        }))
    }
}

/// The producer's thread: commits go to the producer while the node is active, and are
/// refused otherwise. The commits waiting together go as one transaction.
fn run(options: ClusterOptions, producer: ProducerRole, queue: mpsc::Receiver<Job>) {
    let mut producing: Option<Producing> = None;
    let mut next = queue.recv().ok();
    while let Some(job) = next.take() {
        match job {
            Job::Activate(reply) => {
                // The old producer goes first: one producer per node holds the id.
                drop(producing.take());
                match Producing::start(&options, &producer) {
                    Ok(started) => {
                        producing = Some(started);
                        let _ = reply.send(Ok(()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Job::Deactivate => producing = None,
            Job::Commit(first) => {
                let mut commits = vec![first];
                while commits.len() < COMMITS_PER_TRANSACTION {
                    match queue.try_recv() {
                        Ok(Job::Commit(commit)) => commits.push(commit),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // A commit after one of its chain that failed goes no further: one that
                // failed in the last transaction broke its chain before this one is built.
                let (commits, refused): (Vec<_>, Vec<_>) = commits
                    .into_iter()
                    .partition(|c| !c.chain.as_ref().is_some_and(crate::CommitChain::is_broken));
                for commit in refused {
                    (commit.then)(Err(StorageError::EarlierCommitFailed));
                }
                if producing.is_none() && producer.always {
                    match Producing::start(&options, &producer) {
                        Ok(started) => producing = Some(started),
                        Err(error) => warn!(%error, "starting this node's producer again"),
                    }
                }
                match producing.as_mut() {
                    _ if commits.is_empty() => {}
                    Some(p) if p.transactional_id.is_some() => {
                        if !p.in_transaction(commits) {
                            // Fenced or failed for good: another node took over.
                            producing = None;
                        }
                    }
                    Some(p) => p.at_least_once(commits),
                    None => {
                        for commit in commits {
                            (commit.then)(Err(StorageError::Standby {
                                service: options.service_id.clone(),
                            }));
                        }
                    }
                }
            }
        }
        if next.is_none() {
            next = queue.recv().ok();
        }
    }
}

impl Producing {
    fn start(options: &ClusterOptions, role: &ProducerRole) -> Result<Producing> {
        let transactional_id =
            (options.guarantee == Guarantee::ExactlyOnce).then(|| role.transactional_id.clone());
        let timeout = role.transaction_timeout.as_millis().max(1000).to_string();
        let mut own = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
        ];
        if let Some(id) = &transactional_id {
            own.push(("transactional.id", id));
            own.push(("transaction.timeout.ms", &timeout));
            // librdkafka wants a request to give up before its transaction would.
            own.push(("socket.timeout.ms", &timeout));
        }
        let producer: FutureProducer<Logs> = client::config(options, "producer", &own)
            .create_with_context(Logs)
            .map_err(|e| cluster_error("starting the producer", e))?;
        if let Some(id) = &transactional_id {
            producer
                .init_transactions(options.timeout)
                .map_err(|e| cluster_error(format!("starting transactions as {id:?}"), e))?;
            info!(transactional_id = %id, "exactly-once commits through Kafka transactions");
        }
        Ok(Producing {
            producer,
            options: options.clone(),
            transactional_id,
        })
    }

    /// Every commit's records go out at once; each commit's local part follows its own
    /// acknowledgements, in order.
    fn at_least_once(&self, commits: Vec<Submitted>) {
        let sent: Vec<(Result<InFlight>, Vec<GroupPositions>, AfterDelivery)> = commits
            .into_iter()
            .map(|commit| {
                (
                    self.produce_all(&commit.appends),
                    commit.positions,
                    commit.then,
                )
            })
            .collect();
        for (in_flight, positions, then) in sent {
            let landed = in_flight.and_then(|f| futures::executor::block_on(delivered(f)));
            // Positions follow the records they cover: a crash between the two repeats
            // output, as at-least-once allows.
            let landed = landed.and_then(|landed| {
                for p in &positions {
                    p.group.commit(&p.offsets)?;
                }
                Ok(landed)
            });
            then(landed);
        }
    }

    /// The commits as one transaction: committed, then each local part in order; or aborted,
    /// and every commit refused. False when the producer failed for good.
    fn in_transaction(&mut self, commits: Vec<Submitted>) -> bool {
        let outcome = self.transaction(&commits);
        match outcome {
            Ok(results) => {
                for (commit, result) in commits.into_iter().zip(results) {
                    (commit.then)(Ok(result));
                }
                true
            }
            Err((error, fatal)) => {
                warn!(%error, commits = commits.len(), "a transaction failed; its commits are refused");
                let reason = error.to_string();
                for commit in commits {
                    (commit.then)(Err(StorageError::Cluster {
                        operation: "committing a transaction".into(),
                        reason: reason.clone(),
                        retriable: true,
                    }));
                }
                if fatal {
                    warn!(
                        "the producer was fenced or failed for good; this node commits no more until it is active again"
                    );
                }
                !fatal
            }
        }
    }

    /// Runs the commits as one transaction; an error says whether the producer failed for
    /// good (fenced by a newer one of its transactional id, or a fatal error).
    fn transaction(
        &self,
        commits: &[Submitted],
    ) -> std::result::Result<Vec<Landed>, (StorageError, bool)> {
        let timeout = self.options.timeout;
        let failed = |operation: &str, e: KafkaError| {
            let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
            (cluster_error(operation, e), fatal)
        };
        self.producer
            .begin_transaction()
            .map_err(|e| failed("beginning a transaction", e))?;
        let mut in_flight = Vec::with_capacity(commits.len());
        for commit in commits {
            match self.produce_all(&commit.appends) {
                Ok(sent) => in_flight.push(sent),
                Err(e) => {
                    let _ = self.producer.abort_transaction(timeout);
                    return Err((e, false));
                }
            }
        }
        for positions in commits.iter().flat_map(|c| &c.positions) {
            // The group's generation goes with the offsets: a node that lost the partitions
            // in a rebalance it missed has the transaction refused, not its output doubled.
            let sent = match positions.group.metadata() {
                Some(metadata) => self
                    .producer
                    .send_offsets_to_transaction(&positions.offsets, &metadata, timeout)
                    .map_err(|e| failed("committing a query group's offsets", e)),
                None => Err((
                    StorageError::Cluster {
                        operation: format!("committing the offsets of {}", positions.group.name()),
                        reason: "this node is not a member of the group yet".into(),
                        retriable: true,
                    },
                    false,
                )),
            };
            if let Err(failure) = sent {
                if !failure.1 {
                    let _ = self.producer.abort_transaction(timeout);
                }
                return Err(failure);
            }
        }
        if let Err(e) = self.producer.commit_transaction(timeout) {
            let failure = failed("committing a transaction", e);
            if !failure.1 {
                let _ = self.producer.abort_transaction(timeout);
            }
            return Err(failure);
        }
        // Committed: every record is acknowledged, so these resolve at once.
        in_flight
            .into_iter()
            .map(|sent| futures::executor::block_on(delivered(sent)).map_err(|e| (e, false)))
            .collect()
    }

    /// Hands every record of a commit to the producer.
    fn produce_all(&self, appends: &[PartitionAppend]) -> Result<InFlight> {
        let mut partitions = Vec::with_capacity(appends.len());
        for append in appends {
            let mut deliveries = Vec::with_capacity(append.records.len());
            for record in &append.records {
                deliveries.push(self.produce(&append.topic, append.partition, record)?);
            }
            partitions.push((append.topic.clone(), append.partition, deliveries));
        }
        Ok(partitions)
    }

    /// Hands one record to the producer, waiting while its queue is full.
    fn produce(&self, topic: &str, partition: u32, record: &Record) -> Result<DeliveryFuture> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for header in &record.headers {
            headers = headers.insert(Header {
                key: &header.key,
                value: header.value.as_deref(),
            });
        }
        let mut future = FutureRecord::<[u8], [u8]> {
            topic,
            partition: Some(partition as i32),
            payload: record.value.as_deref(),
            key: record.key.as_deref(),
            timestamp: Some(record.timestamp),
            headers: (!record.headers.is_empty()).then_some(headers),
        };
        let deadline = Instant::now() + self.options.timeout;
        loop {
            match self.producer.send_result(future) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    future = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    return Err(cluster_error(
                        format!("producing to {topic}-{partition}"),
                        error,
                    ));
                }
            }
        }
    }
}

/// Where each partition's records landed, in the order they were sent, once every one is
/// acknowledged.
async fn delivered(partitions: InFlight) -> Result<Landed> {
    let mut results = Vec::with_capacity(partitions.len());
    for (topic, partition, deliveries) in partitions {
        let mut first = None;
        let mut last = -1;
        for delivery in join_all(deliveries).await {
            match delivery {
                Ok(Ok(delivery)) => {
                    first.get_or_insert(delivery.offset);
                    last = delivery.offset;
                }
                Ok(Err((error, _))) => {
                    warn!(%error, topic, partition, "a record was not acknowledged");
                    return Err(cluster_error(
                        format!("producing to {topic}-{partition}"),
                        error,
                    ));
                }
                Err(_) => return Err(StorageError::Closed),
            }
        }
        if let Some(first) = first {
            results.push((
                topic,
                AppendResult {
                    partition,
                    base_offset: first,
                    last_offset: last,
                },
            ));
        }
    }
    Ok(results)
}
