//! The local state's backing on the cluster, as Kafka Streams backs its stores with changelog
//! topics: every state change and query position a commit writes is also a record on the
//! cluster, produced with the commit's output, and a node whose local state is missing or
//! behind replays those records before it serves.
//!
//! Two topics per service id:
//! - the command topic, `_confluent-ksql-<service id>_command_topic` (ksqlDB's name): the
//!   command log's entries, keyed by their sequence number, kept forever;
//! - the state changelog, `_confluent-ksql-<service id>_state_changelog`, compacted: each
//!   record's key is the local key it sets, after one byte naming the column family (`s` for
//!   operator state, `o` for a query's committed positions), and a tombstone deletes it.
//!
//! What a node can rebuild from topics on its own stays local: a table materialized for pull
//! queries (and its positions), the server's users and ACLs, and the Kafka listener's
//! transactions, which a node on a cluster does not serve. How far each changelog partition
//! was applied locally is kept with the state it produced, so a restart replays nothing.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use parking_lot::Mutex;
use rocksdb::WriteBatch;
use tracing::debug;

use super::commit::PartitionAppend;
use super::{Cluster, Topics};
use crate::batch::Record;
use crate::commit::{AppendResult, OffsetAndMetadata, StateOp};
use crate::config::{CleanupPolicy, TopicConfig};
use crate::error::{Result, StorageError};
use crate::internal::INTERNAL_GROUP_PREFIX;
use crate::keys::{self, CF_OFFSETS, CF_STATE};
use crate::store::Store;

/// The state namespace of the engine's command log, which the command topic backs.
const COMMAND_LOG: &str = "__eddy_command_log";
/// State namespaces that stay on the node.
const LOCAL_NAMESPACES: [&str; 3] = ["__eddy_table/", "__eddy_security/", "__eddy_transactions"];
/// The group under which a node keeps how far it applied each changelog partition.
const RESTORED: &str = "__eddy_restored";
/// The first byte of a state changelog key: which local column family the rest is a key of.
const STATE: u8 = b's';
const OFFSETS: u8 = b'o';

/// The changelog topics of one service id.
pub(crate) struct Changelogs {
    command_topic: String,
    state_topic: String,
    /// Topics known to exist, so commits need not ask.
    ready: Mutex<HashSet<String>>,
}

/// Whether a local group's positions stay on the node: a materialized table's, and the
/// restore positions themselves.
fn local_group(group: &str) -> bool {
    group == RESTORED
        || group
            .strip_prefix(INTERNAL_GROUP_PREFIX)
            .is_some_and(|rest| rest.starts_with("table_"))
}

fn local_namespace(namespace: &str) -> bool {
    LOCAL_NAMESPACES
        .iter()
        .any(|local| namespace.starts_with(local))
}

impl Changelogs {
    /// The changelogs of `service_id`.
    pub(crate) fn new(service_id: &str) -> Changelogs {
        Changelogs {
            command_topic: super::service_topic(service_id, "command_topic"),
            state_topic: super::service_topic(service_id, "state_changelog"),
            ready: Mutex::new(HashSet::new()),
        }
    }

    /// The command topic's name.
    pub(crate) fn command_topic(&self) -> &str {
        &self.command_topic
    }

    /// Creates both topics unless they exist.
    pub(crate) fn ensure(&self, topics: &Topics) -> Result<()> {
        for (topic, policy) in [
            (&self.command_topic, CleanupPolicy::Delete),
            (&self.state_topic, CleanupPolicy::Compact),
        ] {
            if self.ready.lock().contains(topic) {
                continue;
            }
            let mut config = TopicConfig::with_partitions(1);
            config.cleanup_policy = policy;
            // The command topic is the catalog: it is never deleted by age.
            config.retention_ms = -1;
            topics.ensure(topic, &config)?;
            self.ready.lock().insert(topic.clone());
        }
        Ok(())
    }

    /// The changelog records of a commit's state changes and positions, in the order they
    /// apply; a namespace's deletion becomes a tombstone for each key it holds now.
    pub(crate) fn records_of(
        &self,
        store: &Store,
        cluster: &Cluster,
        state: &[StateOp],
        offsets: &[(String, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<PartitionAppend>> {
        let mut commands = Vec::new();
        let mut changes = Vec::new();
        // A split task's state goes to its own partition of its query's changelog.
        let tasks = cluster.task_state.owned();
        let mut task_changes: BTreeMap<(String, u32), Vec<Record>> = BTreeMap::new();
        let mut change = |namespace: &str, record: Record| match tasks.get(namespace) {
            Some(at) => task_changes.entry(at.clone()).or_default().push(record),
            None => changes.push(record),
        };
        let now = crate::now_ms();
        for op in state {
            match op {
                StateOp::Put {
                    namespace,
                    key,
                    value,
                } => {
                    let record = Record {
                        key: None,
                        value: Some(Bytes::copy_from_slice(value)),
                        timestamp: now,
                        headers: Vec::new(),
                    };
                    if namespace == COMMAND_LOG {
                        commands.push(Record {
                            key: Some(Bytes::copy_from_slice(key)),
                            ..record
                        });
                    } else if changelogged(namespace) {
                        change(
                            namespace,
                            Record {
                                key: Some(state_key(namespace, key)),
                                ..record
                            },
                        );
                    }
                }
                StateOp::Delete { namespace, key } if changelogged(namespace) => {
                    change(namespace, tombstone(state_key(namespace, key), now));
                }
                StateOp::DeleteNamespace { namespace } if changelogged(namespace) => {
                    for entry in store.state_scan_prefix(namespace, b"")? {
                        let (key, _) = entry?;
                        change(namespace, tombstone(state_key(namespace, &key), now));
                    }
                }
                StateOp::Delete { .. } | StateOp::DeleteNamespace { .. } => {}
            }
        }
        for (group, key, value) in offsets {
            if !local_group(group) {
                let mut tagged = Vec::with_capacity(1 + key.len());
                tagged.push(OFFSETS);
                tagged.extend_from_slice(key);
                changes.push(Record {
                    key: Some(Bytes::from(tagged)),
                    value: Some(Bytes::copy_from_slice(value)),
                    timestamp: now,
                    headers: Vec::new(),
                });
            }
        }
        let mut appends = Vec::with_capacity(2 + task_changes.len());
        appends.extend(
            task_changes
                .into_iter()
                .map(|((topic, partition), records)| PartitionAppend {
                    topic,
                    partition,
                    records,
                }),
        );
        if commands.is_empty() && changes.is_empty() {
            return Ok(appends);
        }
        self.ensure(&cluster.topics)?;
        for (topic, records) in [
            (&self.command_topic, commands),
            (&self.state_topic, changes),
        ] {
            if !records.is_empty() {
                appends.push(PartitionAppend {
                    topic: topic.clone(),
                    partition: 0,
                    records,
                });
            }
        }
        Ok(appends)
    }

    /// The local writes saying how far each changelog partition a commit wrote is applied.
    pub(crate) fn restored_to(topic: &str, result: &AppendResult) -> (Vec<u8>, Vec<u8>) {
        (
            keys::group_offset_key(RESTORED, topic, result.partition),
            OffsetAndMetadata::new(result.last_offset + 1).encode(),
        )
    }

    /// Applies to the local store every changelog record it has not applied yet, up to each
    /// partition's last stable offset: the command log first, then state and positions.
    /// Returns how many command-topic records it applied.
    pub(crate) fn restore(&self, store: &Store, cluster: &Cluster) -> Result<u64> {
        let mut commands = 0;
        for topic in [&self.command_topic, &self.state_topic] {
            if !cluster.topics.exists(topic) {
                continue;
            }
            let partitions = cluster.topics.partition_count(topic)?;
            for partition in 0..partitions {
                let applied = self.restore_partition(store, cluster, topic, partition)?;
                if applied > 0 {
                    debug!(
                        topic,
                        partition,
                        records = applied,
                        "applied changelog records"
                    );
                }
                if topic == &self.command_topic {
                    commands += applied;
                }
            }
        }
        Ok(commands)
    }

    /// Applies what `partition` of changelog `topic` holds beyond what this node applied, up
    /// to its last stable offset. Returns how many records it applied.
    pub(crate) fn restore_partition(
        &self,
        store: &Store,
        cluster: &Cluster,
        topic: &str,
        partition: u32,
    ) -> Result<u64> {
        let (start, _) = cluster.topics.watermarks(topic, partition, false)?;
        let (_, end) = cluster.topics.watermarks(topic, partition, true)?;
        let mut at = store
            .fetch_offset(RESTORED, topic, partition)?
            .map_or(start, |o| o.offset)
            .max(start);
        let mut applied = 0u64;
        let mut idle_reads = 0;
        while at < end {
            let fetched = cluster.fetcher.read(topic, partition, at, 1 << 20)?;
            if fetched.records.is_empty() && fetched.next_offset == at {
                // The fetch has not come in yet; a cluster that sends nothing for a minute
                // is not going to.
                idle_reads += 1;
                if idle_reads > 600 {
                    return Err(StorageError::Cluster {
                        operation: format!("restoring {topic}-{partition}"),
                        reason: format!("no record past offset {at} arrived, the end is {end}"),
                        retriable: true,
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            idle_reads = 0;
            applied += self.apply(store, (topic, partition), &fetched)?;
            at = fetched.next_offset;
        }
        Ok(applied)
    }

    /// Applies what the fetcher already holds of `partition` of changelog `topic` past what
    /// this node applied, without waiting for more: a follower's periodic look. A partition
    /// never applied here is restored in full first. Returns how many records it applied.
    pub(crate) fn follow_partition(
        &self,
        store: &Store,
        cluster: &Cluster,
        topic: &str,
        partition: u32,
    ) -> Result<u64> {
        let Some(at) = store.fetch_offset(RESTORED, topic, partition)? else {
            return self.restore_partition(store, cluster, topic, partition);
        };
        let fetched = cluster.fetcher.read(topic, partition, at.offset, 1 << 20)?;
        if fetched.next_offset == at.offset {
            return Ok(0);
        }
        self.apply(store, (topic, partition), &fetched)
    }

    /// Writes fetched changelog records into the local store, with how far the partition is
    /// applied now, in one batch. Returns how many records it applied.
    fn apply(
        &self,
        store: &Store,
        (topic, partition): (&str, u32),
        fetched: &crate::FetchedRecords,
    ) -> Result<u64> {
        let (state_cf, offsets_cf) = (store.cf(CF_STATE)?, store.cf(CF_OFFSETS)?);
        let mut wb = WriteBatch::default();
        for record in &fetched.records {
            let Some(key) = record.record.key.as_deref() else {
                continue;
            };
            let (family, local_key) = if topic == self.command_topic {
                (state_cf, keys::state_key(COMMAND_LOG, key))
            } else {
                match key.split_first() {
                    // What stays on each node, and the catalog, never come from a state
                    // changelog, whoever wrote the record.
                    Some((&STATE, rest)) if namespace_of(rest).is_some_and(changelogged) => {
                        (state_cf, rest.to_vec())
                    }
                    // A split task's changelog holds its state alone: its positions are its
                    // group's offsets.
                    Some((&OFFSETS, rest)) if topic == self.state_topic => {
                        (offsets_cf, rest.to_vec())
                    }
                    _ => continue,
                }
            };
            match record.record.value.as_deref() {
                Some(value) => wb.put_cf(family, local_key, value),
                None => wb.delete_cf(family, local_key),
            }
        }
        wb.put_cf(
            offsets_cf,
            keys::group_offset_key(RESTORED, topic, partition),
            OffsetAndMetadata::new(fetched.next_offset).encode(),
        );
        store.inner.db.write(wb)?;
        Ok(fetched.records.len() as u64)
    }
}

/// The namespace a local state key belongs to (see [`keys::state_key`]).
fn namespace_of(local_key: &[u8]) -> Option<&str> {
    let (len, rest) = local_key.split_first_chunk::<2>()?;
    let namespace = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    std::str::from_utf8(namespace).ok()
}

/// Whether a namespace's state may come from a state changelog: neither the catalog nor
/// what stays on each node.
fn changelogged(namespace: &str) -> bool {
    namespace != COMMAND_LOG && !local_namespace(namespace)
}

fn state_key(namespace: &str, key: &[u8]) -> Bytes {
    let local = keys::state_key(namespace, key);
    let mut tagged = Vec::with_capacity(1 + local.len());
    tagged.push(STATE);
    tagged.extend_from_slice(&local);
    Bytes::from(tagged)
}

fn tombstone(key: Bytes, timestamp: i64) -> Record {
    Record {
        key: Some(key),
        value: None,
        timestamp,
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_key_names_its_namespace_and_cut_keys_name_none() {
        let key = keys::state_key("__eddy_query_Q_task_3", b"g\x01");
        assert_eq!(namespace_of(&key), Some("__eddy_query_Q_task_3"));
        assert_eq!(namespace_of(&key[..5]), None);
        assert_eq!(namespace_of(&[]), None);
        assert_eq!(namespace_of(&[0]), None);
        assert_eq!(namespace_of(&[0, 2, 0xff, 0xfe]), None, "not UTF-8");
    }

    #[test]
    fn only_query_state_comes_from_a_changelog() {
        assert!(changelogged("__eddy_query_Q"));
        assert!(changelogged("__eddy_query_Q_task_0"));
        // Users and ACLs, transactions and tables stay on each node, and the catalog comes
        // from the command topic alone: a record in a state changelog cannot set them.
        assert!(!changelogged("__eddy_security/users"));
        assert!(!changelogged("__eddy_transactions"));
        assert!(!changelogged("__eddy_table/T"));
        assert!(!changelogged(COMMAND_LOG));
    }
}
