//! Errors returned by the log and the state store.

use thiserror::Error;

/// Everything that can go wrong in `eddy-storage`.
#[derive(Debug, Error)]
pub enum StorageError {
    /// A topic name Kafka would refuse.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A topic configuration that is out of range or unknown.
    #[error("invalid config for topic {topic:?}: {reason}")]
    InvalidConfig {
        /// The topic being configured.
        topic: String,
        /// What was wrong.
        reason: String,
    },
    /// A partition count above the store's cap.
    #[error(
        "topic {topic:?} asks for {partitions} partitions, more than the {max} this server allows (--max-partitions)"
    )]
    TooManyPartitions {
        /// The topic.
        topic: String,
        /// The count asked for.
        partitions: u32,
        /// The cap.
        max: u32,
    },
    /// Creating a topic whose name is taken.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A topic that does not exist.
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// A partition number outside the topic's partition count.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The requested partition.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// A read below the log start offset or past the end offset.
    #[error(
        "offset {offset} is out of range for {topic}-{partition} (log start {log_start}, end {end})"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The requested offset.
        offset: i64,
        /// The first offset still in the log.
        log_start: i64,
        /// The offset the next record will get.
        end: i64,
    },
    /// A record larger than the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes={limit} of topic {topic:?}")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The encoded batch size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A record a topic cannot accept, such as a keyless record on a compacted topic.
    #[error("invalid record for topic {topic:?}: {reason}")]
    InvalidRecord {
        /// The topic.
        topic: String,
        /// Why the record was refused.
        reason: String,
    },
    /// A stored batch whose checksum or framing is wrong.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {reason}")]
    CorruptBatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The base offset of the batch (or the offset being read).
        offset: i64,
        /// What failed to verify.
        reason: String,
    },
    /// Encoding records into a batch failed.
    #[error("cannot encode record batch: {0}")]
    Encode(String),
    /// Stored metadata that cannot be decoded.
    #[error("corrupt metadata under key {key}: {reason}")]
    CorruptMetadata {
        /// The metadata key, printed for humans.
        key: String,
        /// What failed.
        reason: String,
    },
    /// An idempotent producer's batch whose sequence does not follow its last one.
    #[error(
        "out of order sequence number for producer {producer_id} on {topic}-{partition}: expected {expected}, got {got}"
    )]
    OutOfOrderSequence {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// The sequence the batch should have started at.
        expected: i32,
        /// The sequence it started at.
        got: i32,
    },
    /// A batch from a producer epoch older than one already seen: a fenced, zombie producer.
    #[error(
        "producer {producer_id} on {topic}-{partition} has been fenced by a newer epoch than {epoch}"
    )]
    InvalidProducerEpoch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// The stale epoch.
        epoch: i16,
    },
    /// The store's disk has less free space than the store keeps in reserve; retry once space
    /// is freed.
    #[error(
        "the store's disk is nearly full ({free} bytes free, {reserve} kept in reserve): writes are refused until space is freed"
    )]
    DiskFull {
        /// Bytes free.
        free: u64,
        /// Bytes the store keeps free.
        reserve: u64,
    },
    /// The store has been closed.
    #[error("the store is shut down")]
    Closed,

    /// This node stands by for its service's active node, which alone commits.
    #[error(
        "this node is a standby of service {service:?}: the active node runs its queries and takes statements that change the catalog or write records"
    )]
    Standby {
        /// The service id.
        service: String,
    },

    /// This node is not the leader of the replicated log, which alone writes.
    #[error("this node is not the leader of the replicated log; {}", leader_hint(.leader))]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<u64>,
    },
    /// The replicated log's consensus failed an operation.
    #[error("replication: {operation}: {reason}")]
    Replication {
        /// What was being done.
        operation: String,
        /// What went wrong.
        reason: String,
    },

    /// The Kafka cluster the log runs on refused or failed an operation.
    #[error("Kafka cluster: {operation}: {reason}")]
    Cluster {
        /// What was asked of the cluster.
        operation: String,
        /// The client's or the broker's error.
        reason: String,
        /// Whether asking again may succeed (the cluster was unreachable or busy).
        retriable: bool,
    },
    /// A commit not applied because an earlier one in its [`crate::CommitChain`] failed.
    #[error("not written: an earlier commit of the same sequence failed")]
    EarlierCommitFailed,
    /// An error from RocksDB.
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// An I/O error outside RocksDB.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Who leads instead, for [`StorageError::NotLeader`].
fn leader_hint(leader: &Option<u64>) -> String {
    match leader {
        Some(leader) => format!("node {leader} is"),
        None => "no leader is known now".to_string(),
    }
}

impl StorageError {
    /// Whether the store itself failed (its disk, its metadata, an encoder) rather than the
    /// request being one it refuses.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            StorageError::Encode(_)
                | StorageError::CorruptMetadata { .. }
                | StorageError::Closed
                | StorageError::EarlierCommitFailed
                | StorageError::RocksDb(_)
                | StorageError::Io(_)
                | StorageError::DiskFull { .. }
                | StorageError::Cluster { .. }
                | StorageError::Replication { .. }
        )
    }

    /// Whether the same request may succeed later without changing it: the disk was full.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            StorageError::DiskFull { .. }
                | StorageError::Cluster {
                    retriable: true,
                    ..
                }
                | StorageError::Standby { .. }
                | StorageError::NotLeader { .. }
        )
    }
}

/// Result type of `eddy-storage`.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
