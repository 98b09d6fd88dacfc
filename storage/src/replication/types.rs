//! What the replicas' Raft group carries: openraft's type configuration, and the batch each
//! log entry holds.

use serde::{Deserialize, Serialize};

/// A replica's id in the group, as `--node-id` gives it.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The replicated log's Raft types: a node is its address, an entry holds a [`Batch`], a
    /// snapshot is a file of the store's column families.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = super::snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime
);

/// One group commit of the leader's store: a RocksDB write batch's bytes, and the leader term
/// it was built in. It is applied only if the entry holding it was appended in that term, so a
/// batch built on a leader's view of the store never lands after another leader's writes.
#[derive(Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The term of the leader whose store built the batch.
    pub term: u64,
    /// `rocksdb::WriteBatch::data()` of the group commit; shared, not copied, between the
    /// Raft log's cache, the replication streams and the state machine. Between nodes it
    /// travels after its frame's message (`payloads.rs`).
    #[serde(
        serialize_with = "super::payloads::serialize",
        deserialize_with = "super::payloads::deserialize"
    )]
    pub bytes: bytes::Bytes,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("term", &self.term)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// What applying an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The batch was written to the store (or the entry held none).
    Written,
    /// The batch was built in another term than the entry's, and was passed over.
    Stale,
}

/// The Raft log id of an entry.
pub type LogId = openraft::LogId<NodeId>;
/// Who a replica voted for, in which term.
pub type Vote = openraft::Vote<NodeId>;
/// A membership as the log last held it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error in openraft's terms.
pub type RaftStorageError = openraft::StorageError<NodeId>;
