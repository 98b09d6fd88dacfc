//! The state of split tasks: an aggregation the service's nodes split runs as one task per
//! partition of its repartition topic, as Kafka Streams runs a stateful task, and each task's
//! state is backed by its own partition of the query's changelog topic,
//! `_confluent-ksql-<service id>query_<id>-Aggregate-Aggregate-Materialize-changelog`.
//!
//! Only the node running a task writes the task's partition (a zombie's commit is refused by
//! its group's generation), so each partition has one writer at a time, and the local
//! position of what was applied from it (kept under the `__eddy_restored` group, as for the
//! service's own changelog) stays exact: a node's own commit moves it past its own records.
//! Every node applies the partitions of the tasks it does not run, every 200 ms, so their
//! state is warm when a task moves to it; a node given a task applies what is left of the
//! task's partition, up to its last stable offset, before the task starts, and stops
//! applying it while the task runs here.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use tracing::debug;

use super::Cluster;
use crate::config::{CleanupPolicy, TopicConfig};
use crate::error::Result;
use crate::store::Store;

/// Which task changelogs this node applies, and which tasks it runs.
#[derive(Default)]
pub(crate) struct TaskState {
    registry: Mutex<Registry>,
    /// Held while a task partition is applied, so a task's catching up and the periodic
    /// following never apply the same partition at once.
    applying: Mutex<()>,
}

#[derive(Default, Clone)]
struct Registry {
    /// The changelog topics followed (each one query's).
    topics: BTreeSet<String>,
    /// The tasks this node runs: each task's state namespace, and its changelog partition.
    owned: HashMap<String, (String, u32)>,
}

impl TaskState {
    /// Creates the compacted changelog `topic` of `partitions` partitions unless it exists,
    /// and applies its partitions from now on.
    pub(crate) fn follow(&self, cluster: &Cluster, topic: &str, partitions: u32) -> Result<()> {
        let mut config = TopicConfig::with_partitions(partitions.max(1));
        config.cleanup_policy = CleanupPolicy::Compact;
        cluster.topics.ensure(topic, &config)?;
        self.registry.lock().topics.insert(topic.to_string());
        Ok(())
    }

    /// Stops applying `topic`.
    pub(crate) fn unfollow(&self, topic: &str) {
        self.registry.lock().topics.remove(topic);
    }

    /// The tasks this node runs: each one's state namespace and changelog partition.
    pub(crate) fn owned(&self) -> HashMap<String, (String, u32)> {
        self.registry.lock().owned.clone()
    }

    /// Takes the task whose state is `namespace`, backed by `partition` of `topic`: applies
    /// what the partition holds beyond what this node applied, then stops following it.
    pub(crate) fn claim(
        &self,
        store: &Store,
        cluster: &Cluster,
        namespace: &str,
        (topic, partition): (&str, u32),
    ) -> Result<u64> {
        let _applying = self.applying.lock();
        let applied = cluster
            .changelogs
            .restore_partition(store, cluster, topic, partition)?;
        self.registry
            .lock()
            .owned
            .insert(namespace.to_string(), (topic.to_string(), partition));
        Ok(applied)
    }

    /// Gives the task whose state is `namespace` up: its partition is followed again.
    pub(crate) fn release(&self, namespace: &str) {
        let _applying = self.applying.lock();
        self.registry.lock().owned.remove(namespace);
    }

    /// Runs `f` while no changelog partition is being applied.
    pub(crate) fn while_not_applying<T>(&self, f: impl FnOnce() -> T) -> T {
        let _applying = self.applying.lock();
        f()
    }

    /// Applies what has come of every followed partition of a task this node does not run,
    /// without asking the cluster where each ends. Returns how many records it applied.
    pub(crate) fn follow_all(&self, store: &Store, cluster: &Cluster) -> u64 {
        let _applying = self.applying.lock();
        let registry = self.registry.lock().clone();
        let mut applied = 0;
        for topic in &registry.topics {
            let Ok(partitions) = cluster.topics.partition_count(topic) else {
                continue;
            };
            for partition in 0..partitions {
                let runs_here = registry
                    .owned
                    .values()
                    .any(|(t, p)| t == topic && *p == partition);
                if runs_here {
                    continue;
                }
                // One partition that cannot be read now holds back neither the others nor
                // the node's membership, whose thread this runs on; it is tried again next time.
                match cluster
                    .changelogs
                    .follow_partition(store, cluster, topic, partition)
                {
                    Ok(records) => applied += records,
                    Err(error) => {
                        debug!(topic, partition, %error, "following a task's changelog failed")
                    }
                }
            }
        }
        applied
    }
}
