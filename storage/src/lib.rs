//! Eddy's storage: a durable, partitioned log of Kafka record batches on RocksDB, with
//! consumer-group offsets, a key-value state store, and one atomic commit across all three.
//!
//! The engine's exactly-once processing rests on [`Store::commit`]: one step of a query appends its
//! output, changes its state and commits its input offsets in a single RocksDB write batch.

mod batch;
mod cluster;
mod commit;
mod compression;
mod config;
mod disk;
mod error;
mod internal;
mod keys;
mod maintenance;
mod offsets;
mod partitioner;
mod producers;
mod replication;
mod segment;
mod state;
mod store;
mod topic;
mod transactions;
mod writer;

pub use batch::{
    BatchHeader, EncodedBatch, LogRecord, Record, RecordHeader, decode_records,
    decode_records_into, split_batches,
};
pub use cluster::{
    ALIVE_FOR, Assignment, ClusterOptions, DEFAULT_SERVICE_ID, Guarantee, NodeState, QueryGroup,
    Role, ServiceNode,
};
pub use commit::{
    AppendResult, Commit, CommitAppend, CommitChain, CommitOffset, OffsetAndMetadata, StateOp,
};
pub use compression::MAX_DECOMPRESSED_BATCH_BYTES;
pub use config::{CleanupPolicy, TopicConfig, validate_topic_name};
pub use disk::DiskHealth;
pub use error::{Result, StorageError};
pub use internal::{
    INTERNAL_GROUP_PREFIX, INTERNAL_TOPIC_PREFIX, is_internal_group, is_internal_topic,
};
pub use keys::prefix_successor;
pub use maintenance::MaintenanceReport;
pub use offsets::GroupOffset;
pub use partitioner::{DefaultPartitioner, murmur2, partition_for_key};
pub use replication::{
    DEFAULT_REPLICA_LAG, DEFAULT_SNAPSHOT_BYTES, DEFAULT_SNAPSHOT_ENTRIES, KEPT_ENTRIES,
    Leadership, LogExtent, NodeId, Replica, ReplicaCounts, ReplicaOptions, ReplicaStatus,
    ReplicationTls,
};
pub use segment::{SegmentMeta, expired_segment_count, should_roll, survives};
pub use state::{StateEntry, StateScan, StateSnapshot};
pub use store::{
    DEFAULT_MAX_PARTITIONS, FetchedBatches, FetchedRecords, PartitionDescription, PendingCommit,
    Store, StoreOptions, TopicDescription,
};
pub use transactions::{AbortedTxn, Isolation, ProducerSummary, TxnMarker};
pub use writer::SyncPolicy;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
