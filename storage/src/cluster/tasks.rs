//! A persistent query's partitions, split among the nodes of its service as Kafka Streams
//! splits a topology's tasks: every node running the query is a member of the consumer group
//! `_confluent-ksql-<service id>query_<query id>` (ksqlDB's name for the query's group),
//! subscribed to its input topics, and runs it over the partitions the group gives it.
//!
//! Partitions move with Kafka's cooperative protocol. Before a node gives partitions up, the
//! rebalance waits (in librdkafka's revocation callback) until the engine has stopped the
//! query's task and its last commit has landed, as Kafka Streams commits in
//! `onPartitionsRevoked`; so the node that gets them next starts from offsets no commit will
//! pass. The query's input positions are the group's committed offsets, written in each
//! commit's Kafka transaction (`send_offsets_to_transaction`, with the group's generation):
//! a node that lost its partitions without knowing it (paused, cut off) finds its next
//! commit refused by the group coordinator rather than writing output twice (KIP-447).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use super::client;
use super::{ClusterOptions, cluster_error};
use crate::error::{Result, StorageError};

/// The longest a rebalance waits for the engine to stop a query's task on partitions this
/// node gives up; past it they go anyway, and a late commit of the task is refused.
const RELEASE_AT_MOST: Duration = Duration::from_secs(30);

/// The partitions this node runs a query over, as of one of the group's rebalances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Counts the changes: the engine says which one it has let go of (see
    /// [`QueryGroup::released`]).
    pub revision: u64,
    /// `(topic, partition)` pairs.
    pub partitions: BTreeSet<(String, u32)>,
    /// Whether the group has assigned this node its share yet, if only nothing: until then,
    /// no partitions means none given so far rather than none to run.
    pub settled: bool,
}

/// What the consumer's callbacks and the query's side share.
struct Shared {
    assignment: watch::Sender<Assignment>,
    released: AtomicU64,
    metadata: Mutex<Option<Arc<ConsumerGroupMetadata>>>,
    stop: AtomicBool,
}

/// The consumer's context: publishes each rebalance's outcome and holds a revocation until
/// the engine released the partitions.
struct Member {
    shared: Arc<Shared>,
    group: String,
}

client::logs_through_tracing!(Member);

impl ConsumerContext for Member {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let gone = partitions_of(revoked);
        if gone.is_empty() {
            return;
        }
        let mut revision = 0;
        self.shared.assignment.send_modify(|a| {
            a.revision += 1;
            a.partitions.retain(|p| !gone.contains(p));
            revision = a.revision;
        });
        let deadline = Instant::now() + RELEASE_AT_MOST;
        while self.shared.released.load(Ordering::Acquire) < revision
            && !self.shared.stop.load(Ordering::Acquire)
        {
            if Instant::now() >= deadline {
                warn!(group = %self.group, "the query did not stop on the partitions this node gives up in time; they go anyway");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Error(error) = rebalance {
            warn!(group = %self.group, %error, "the query's group failed to rebalance");
            return;
        }
        // The generation the next commits must carry, before any task runs under it.
        *self.shared.metadata.lock() = consumer.group_metadata().map(Arc::new);
        let Ok(now) = consumer.assignment() else {
            return;
        };
        let partitions = partitions_of(&now);
        if !partitions.is_empty() {
            // The partitions are the group's to hand out; their records are read elsewhere.
            let _ = consumer.pause(&now);
        }
        self.shared.assignment.send_if_modified(|a| {
            if a.partitions == partitions {
                return !std::mem::replace(&mut a.settled, true);
            }
            a.revision += 1;
            a.partitions = partitions;
            a.settled = true;
            true
        });
    }
}

/// The `(topic, partition)` pairs of a list.
fn partitions_of(list: &TopicPartitionList) -> BTreeSet<(String, u32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition().max(0) as u32))
        .collect()
}

/// This node's membership in one query's group; leaving it when dropped.
#[derive(Clone)]
pub struct QueryGroup {
    inner: Arc<GroupInner>,
}

struct GroupInner {
    group: String,
    consumer: Arc<BaseConsumer<Member>>,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl Drop for GroupInner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for QueryGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryGroup")
            .field("group", &self.inner.group)
            .field("assignment", &*self.inner.shared.assignment.borrow())
            .finish()
    }
}

impl QueryGroup {
    /// Joins `group`, subscribed to `topics`.
    pub(crate) fn join(options: &ClusterOptions, group: &str, topics: &[String]) -> Result<Self> {
        let (assignment, _) = watch::channel(Assignment::default());
        let shared = Arc::new(Shared {
            assignment,
            released: AtomicU64::new(0),
            metadata: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let consumer: BaseConsumer<Member> = client::config(
            options,
            "tasks",
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // Committed offsets are read only once the transactions writing them ended.
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1000"),
                ("max.poll.interval.ms", "300000"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("allow.auto.create.topics", "false"),
            ],
        )
        .create_with_context(Member {
            shared: shared.clone(),
            group: group.to_string(),
        })
        .map_err(|e| cluster_error(format!("joining the query's group {group}"), e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| cluster_error(format!("joining the query's group {group}"), e))?;
        let consumer = Arc::new(consumer);
        let polled = consumer.clone();
        let stop = shared.clone();
        let name = group.to_string();
        std::thread::Builder::new()
            .name("eddy-kafka-tasks".into())
            .spawn(move || {
                while !stop.stop.load(Ordering::Acquire) {
                    // Polling serves the group's rebalances; no record is read here.
                    if let Some(Err(error)) = polled.poll(Duration::from_millis(100)) {
                        warn!(group = %name, %error, "the query's group");
                    }
                }
                // Leaving at once hands the partitions to the other nodes now rather than
                // after a session timeout.
                polled.unsubscribe();
                let _ = polled.poll(Duration::from_millis(100));
            })
            .map_err(StorageError::Io)?;
        info!(group, "joined the query's group");
        Ok(QueryGroup {
            inner: Arc::new(GroupInner {
                group: group.to_string(),
                consumer,
                shared,
                timeout: options.timeout,
            }),
        })
    }

    /// The partitions this node runs the query over, as they change.
    pub fn assignment(&self) -> watch::Receiver<Assignment> {
        self.inner.shared.assignment.subscribe()
    }

    /// Says the query's task over the partitions before `revision` has stopped and its
    /// commits landed, so a rebalance waiting to give some of them up goes on.
    pub fn released(&self, revision: u64) {
        self.inner
            .shared
            .released
            .fetch_max(revision, Ordering::AcqRel);
    }

    /// The group's name on the cluster.
    pub fn name(&self) -> &str {
        &self.inner.group
    }

    /// The group's member metadata (its generation) for a transaction's offsets.
    pub(crate) fn metadata(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.inner.shared.metadata.lock().clone()
    }

    /// The group's committed offsets of `partitions` (the next offset to read), waiting out
    /// transactions still writing them; a partition without one is left out.
    pub(crate) fn committed(
        &self,
        partitions: &[(String, u32)],
    ) -> Result<Vec<(String, u32, i64)>> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition as i32);
        }
        let committed = self
            .inner
            .consumer
            .committed_offsets(list, self.inner.timeout)
            .map_err(|e| {
                cluster_error(format!("reading the offsets of {}", self.inner.group), e)
            })?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => {
                    Some((e.topic().to_string(), e.partition().max(0) as u32, offset))
                }
                _ => None,
            })
            .collect())
    }

    /// Commits `offsets` outside a transaction (at-least-once), with the group's generation.
    pub(crate) fn commit(&self, offsets: &TopicPartitionList) -> Result<()> {
        self.inner
            .consumer
            .commit(offsets, CommitMode::Sync)
            .map_err(|e| {
                cluster_error(format!("committing the offsets of {}", self.inner.group), e)
            })
    }
}
