//! The atomic commit: appends to several partitions, state-store changes and offset commits,
//! made visible together in one RocksDB write batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::batch::Record;
use crate::transactions::TxnMarker;

/// Commits that land in order, each only if every earlier one did. A caller that keeps several
/// commits in flight (a query commits a step while it processes the next) needs it: should an
/// earlier commit fail and a later one land, the later one's input offsets would pass output
/// that was never written.
#[derive(Debug, Clone, Default)]
pub struct CommitChain(Arc<AtomicBool>);

impl CommitChain {
    /// A chain no commit has failed in yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a commit in the chain failed, so every later one is refused.
    pub fn is_broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn break_off(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A committed consumer position: the next offset to read, and what the client attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset the group will read.
    pub offset: i64,
    /// Leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// Client metadata, returned unchanged by fetches.
    pub metadata: String,
    /// When the commit happened, in ms since the epoch.
    pub commit_timestamp: i64,
}

impl OffsetAndMetadata {
    /// An offset with no metadata and no leader epoch.
    pub fn new(offset: i64) -> Self {
        OffsetAndMetadata {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.metadata.len());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.leader_epoch.to_be_bytes());
        out.extend_from_slice(&self.commit_timestamp.to_be_bytes());
        out.extend_from_slice(self.metadata.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 20 {
            return None;
        }
        Some(OffsetAndMetadata {
            offset: i64::from_be_bytes(bytes[0..8].try_into().ok()?),
            leader_epoch: i32::from_be_bytes(bytes[8..12].try_into().ok()?),
            commit_timestamp: i64::from_be_bytes(bytes[12..20].try_into().ok()?),
            metadata: String::from_utf8(bytes[20..].to_vec()).ok()?,
        })
    }
}

/// A change to the key-value state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    /// Set `key` in `namespace` to `value`.
    Put {
        /// The namespace, such as an operator's id.
        namespace: String,
        /// The key within the namespace.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` from `namespace`.
    Delete {
        /// The namespace.
        namespace: String,
        /// The key within the namespace.
        key: Vec<u8>,
    },
    /// Remove every key of `namespace`.
    DeleteNamespace {
        /// The namespace.
        namespace: String,
    },
}

/// Appends to one partition inside a [`Commit`]. `partition: None` lets the default partitioner
/// place each record by its key.
#[derive(Debug, Clone)]
pub struct CommitAppend {
    /// The topic.
    pub topic: String,
    /// The partition, or `None` to partition by key.
    pub partition: Option<u32>,
    /// When partitioning by key, how many bytes at the end of each key the partitioner
    /// ignores: a windowed key's window, so that every window of a key lands on the key's
    /// partition, as Kafka Streams' `WindowedStreamPartitioner` places them.
    pub key_suffix: usize,
    /// The records, in order.
    pub records: Vec<Record>,
}

/// One consumer-group offset inside a [`Commit`].
#[derive(Debug, Clone)]
pub struct CommitOffset {
    /// The group (or query) id.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The position and metadata.
    pub offset: OffsetAndMetadata,
}

/// Everything one step of a query writes. Either all of it is visible after a crash, or none.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Records to append.
    pub appends: Vec<CommitAppend>,
    /// State-store changes, applied in order.
    pub state: Vec<StateOp>,
    /// Offsets to commit.
    pub offsets: Vec<CommitOffset>,
    /// Transaction markers to write, each a control batch on its partition.
    pub markers: Vec<TxnMarker>,
}

impl Commit {
    /// An empty commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// About how many bytes the commit adds to the store.
    pub(crate) fn approximate_bytes(&self) -> u64 {
        let records: usize = self
            .appends
            .iter()
            .flat_map(|a| &a.records)
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + 16
            })
            .sum();
        let state: usize = self
            .state
            .iter()
            .map(|op| match op {
                StateOp::Put { key, value, .. } => key.len() + value.len(),
                _ => 16,
            })
            .sum();
        (records + state + self.offsets.len() * 32 + self.markers.len() * 96) as u64
    }

    /// Adds records for one partition, or for the partitioner to place when `partition` is `None`.
    pub fn append(
        &mut self,
        topic: impl Into<String>,
        partition: Option<u32>,
        records: Vec<Record>,
    ) -> &mut Self {
        self.appends.push(CommitAppend {
            topic: topic.into(),
            partition,
            key_suffix: 0,
            records,
        });
        self
    }

    /// Adds records for the partitioner to place by their keys without the last `key_suffix`
    /// bytes of each (a windowed key's window).
    pub fn append_by_key_prefix(
        &mut self,
        topic: impl Into<String>,
        key_suffix: usize,
        records: Vec<Record>,
    ) -> &mut Self {
        self.appends.push(CommitAppend {
            topic: topic.into(),
            partition: None,
            key_suffix,
            records,
        });
        self
    }

    /// Sets a state-store key.
    pub fn put_state(
        &mut self,
        namespace: impl Into<String>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.state.push(StateOp::Put {
            namespace: namespace.into(),
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Removes a state-store key.
    pub fn delete_state(
        &mut self,
        namespace: impl Into<String>,
        key: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.state.push(StateOp::Delete {
            namespace: namespace.into(),
            key: key.into(),
        });
        self
    }

    /// Removes every key of a state-store namespace.
    pub fn delete_namespace(&mut self, namespace: impl Into<String>) -> &mut Self {
        self.state.push(StateOp::DeleteNamespace {
            namespace: namespace.into(),
        });
        self
    }

    /// Commits a group offset.
    pub fn commit_offset(
        &mut self,
        group: impl Into<String>,
        topic: impl Into<String>,
        partition: u32,
        offset: OffsetAndMetadata,
    ) -> &mut Self {
        self.offsets.push(CommitOffset {
            group: group.into(),
            topic: topic.into(),
            partition,
            offset,
        });
        self
    }

    /// Ends a producer's transaction on one partition with a commit or abort marker.
    pub fn marker(&mut self, marker: TxnMarker) -> &mut Self {
        self.markers.push(marker);
        self
    }

    /// Whether the commit writes nothing.
    pub fn is_empty(&self) -> bool {
        self.appends.iter().all(|a| a.records.is_empty())
            && self.state.is_empty()
            && self.offsets.is_empty()
            && self.markers.is_empty()
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The partition written.
    pub partition: u32,
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_metadata_round_trip() {
        let o = OffsetAndMetadata {
            offset: 42,
            leader_epoch: 3,
            metadata: "consumer-1 → ok".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(OffsetAndMetadata::decode(&o.encode()), Some(o));
        assert_eq!(OffsetAndMetadata::decode(&[0; 5]), None);
    }
}
