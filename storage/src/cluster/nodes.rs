//! The nodes of a service, as each sees the others: every node publishes its status (what the
//! server above puts in it: its REST address, its role, its queries and their lag) to the
//! compacted topic `_confluent-ksql-<service id>_eddy-nodes`, keyed by its node id, and reads
//! everyone's. ksqlDB's servers find each other through Kafka Streams' metadata and send each
//! other heartbeats over HTTP; here the cluster carries both, so a node needs no list of its
//! peers, and one that cannot reach the cluster drops out of everyone's view as it would drop
//! out of the service's group.
//!
//! A node counts as alive while its statuses keep coming: one heard within [`ALIVE_FOR`], by
//! the reader's clock and by the record's own timestamp (so statuses left in the topic by nodes
//! long gone do not count when a node starts and reads them). A node that stops cleanly
//! publishes a tombstone and leaves the view at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::client::{self, Logs};
use super::{ClusterOptions, Topics, cluster_error};
use crate::config::{CleanupPolicy, TopicConfig};
use crate::error::{Result, StorageError};

/// A node whose last status is older than this is taken for dead.
pub const ALIVE_FOR: Duration = Duration::from_secs(5);

/// How long a status may wait in the producer before it is dropped for a newer one.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(4);

/// One node of the service, as this node last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNode {
    /// The node's id (its store's `node-id`).
    pub id: String,
    /// What the node last published about itself.
    pub status: Vec<u8>,
    /// When it published that, by its own clock (ms since the epoch).
    pub published_ms: i64,
    /// Whether its statuses are still coming.
    pub alive: bool,
    /// Whether this is the node asking.
    pub local: bool,
}

/// What the reader keeps of a node's last status.
struct Heard {
    status: Vec<u8>,
    published_ms: i64,
    at: Instant,
}

/// The service's directory of nodes: this node's publisher and everyone's statuses.
pub(crate) struct Directory {
    node_id: String,
    heard: Arc<Mutex<BTreeMap<String, Heard>>>,
    outbox: Arc<Mutex<Outbox>>,
    stop: Arc<AtomicBool>,
}

/// What the directory's thread is to publish next.
#[derive(Default)]
struct Outbox {
    status: Option<Vec<u8>>,
    leave: bool,
    left: bool,
}

impl Directory {
    /// The name of `service_id`'s directory topic.
    pub(crate) fn topic_of(service_id: &str) -> String {
        super::service_topic(service_id, "eddy-nodes")
    }

    /// Creates the topic unless it exists and starts reading it from its start.
    pub(crate) fn start(
        options: &ClusterOptions,
        topics: &Topics,
        node_id: &str,
    ) -> Result<Directory> {
        let topic = Self::topic_of(&options.service_id);
        let mut config = TopicConfig::with_partitions(1);
        config.cleanup_policy = CleanupPolicy::Compact;
        topics.ensure(&topic, &config)?;
        let consumer: BaseConsumer<Logs> = client::config(
            options,
            "directory",
            &[
                ("group.id", "eddy-unused"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                ("allow.auto.create.topics", "false"),
                ("fetch.wait.max.ms", "200"),
            ],
        )
        .create_with_context(Logs)
        .map_err(|e| cluster_error("reading the service's nodes", e))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| cluster_error("reading the service's nodes", e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| cluster_error("reading the service's nodes", e))?;
        let timeout = DELIVERY_TIMEOUT.as_millis().to_string();
        let producer: BaseProducer<Logs> = client::config(
            options,
            "directory",
            &[
                ("linger.ms", "0"),
                ("message.timeout.ms", &timeout),
                ("allow.auto.create.topics", "false"),
            ],
        )
        .create_with_context(Logs)
        .map_err(|e| cluster_error("publishing this node's status", e))?;
        let directory = Directory {
            node_id: node_id.to_string(),
            heard: Arc::default(),
            outbox: Arc::default(),
            stop: Arc::default(),
        };
        let mut thread = Publisher {
            topic,
            node_id: node_id.to_string(),
            consumer,
            producer,
            heard: directory.heard.clone(),
            outbox: directory.outbox.clone(),
            stop: directory.stop.clone(),
        };
        std::thread::Builder::new()
            .name("eddy-kafka-nodes".into())
            .spawn(move || thread.run())
            .map_err(StorageError::Io)?;
        Ok(directory)
    }

    /// Publishes this node's status (replacing one not yet sent).
    pub(crate) fn publish(&self, status: Vec<u8>) {
        let mut outbox = self.outbox.lock();
        if !outbox.leave {
            outbox.status = Some(status);
        }
    }

    /// Every node heard of, this one included once its first status came back.
    pub(crate) fn nodes(&self) -> Vec<ServiceNode> {
        let now_ms = crate::now_ms();
        self.heard
            .lock()
            .iter()
            .map(|(id, heard)| ServiceNode {
                id: id.clone(),
                status: heard.status.clone(),
                published_ms: heard.published_ms,
                alive: heard.at.elapsed() < ALIVE_FOR
                    && now_ms.saturating_sub(heard.published_ms) < ALIVE_FOR.as_millis() as i64,
                local: *id == self.node_id,
            })
            .collect()
    }

    /// Publishes a tombstone for this node, waiting a little for it to land, and stops.
    pub(crate) fn leave(&self) {
        self.outbox.lock().leave = true;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.outbox.lock().left && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Release);
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The directory's thread: publishes what the outbox holds and files what the topic brings.
struct Publisher {
    topic: String,
    node_id: String,
    consumer: BaseConsumer<Logs>,
    producer: BaseProducer<Logs>,
    heard: Arc<Mutex<BTreeMap<String, Heard>>>,
    outbox: Arc<Mutex<Outbox>>,
    stop: Arc<AtomicBool>,
}

impl Publisher {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.send();
            self.producer.poll(Duration::ZERO);
            if let Some(received) = self.consumer.poll(Duration::from_millis(100)) {
                match received {
                    Ok(message) => self.file(&message),
                    Err(error) => debug!(%error, "reading the service's nodes"),
                }
            }
        }
    }

    /// Produces the status waiting in the outbox, or this node's tombstone.
    fn send(&mut self) {
        let (status, leave) = {
            let mut outbox = self.outbox.lock();
            if outbox.left {
                return;
            }
            (outbox.status.take(), outbox.leave)
        };
        if leave {
            let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).key(&self.node_id);
            if let Err((error, _)) = self.producer.send(record) {
                warn!(%error, "could not say this node leaves its service");
            }
            let _ = self.producer.flush(Duration::from_secs(1));
            self.outbox.lock().left = true;
            return;
        }
        if let Some(status) = status {
            let record = BaseRecord::to(&self.topic)
                .key(self.node_id.as_str())
                .payload(status.as_slice());
            if let Err((error, _)) = self.producer.send(record) {
                // The next status replaces this one; missing one only ages this node's.
                debug!(%error, "could not publish this node's status");
            }
        }
    }

    /// Keeps a node's status, or forgets the node at its tombstone.
    fn file(&self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let Some(Ok(id)) = message.key().map(std::str::from_utf8) else {
            return;
        };
        let mut heard = self.heard.lock();
        match message.payload() {
            None => {
                heard.remove(id);
            }
            Some(status) => {
                heard.insert(
                    id.to_string(),
                    Heard {
                        status: status.to_vec(),
                        published_ms: message.timestamp().to_millis().unwrap_or(0),
                        at: Instant::now(),
                    },
                );
            }
        }
    }
}
