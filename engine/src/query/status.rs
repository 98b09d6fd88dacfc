//! What a running query reports: the counters, rates, errors and progress its task shares
//! with the engine, and what `SHOW QUERIES`, `DESCRIBE ... EXTENDED` and `EXPLAIN` show of it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::query::source::RecordError;
use crate::query::stats;

/// How many recent record errors a query keeps for `DESCRIBE ... EXTENDED`.
const RECENT_ERRORS: usize = 16;

/// What a query's task shares with the engine: counters, errors and progress.
#[derive(Debug, Default)]
pub struct QueryShared {
    /// Input records read.
    pub processed: AtomicU64,
    /// Input records that could not be processed.
    pub failed: AtomicU64,
    /// Records written to the sink.
    pub emitted: AtomicU64,
    /// When the last input record was processed, ms since the epoch; 0 before the first.
    pub last_message_ms: AtomicI64,
    /// Input records per second, lately.
    pub throughput: Mutex<stats::ThroughputMeter>,
    /// Wall-clock time at commit minus each input record's timestamp, as Kafka Streams'
    /// `record-e2e-latency` measures it; a series of the engine's [`crate::metrics::EngineMetrics`].
    pub e2e_latency: Option<prometheus::Histogram>,
    /// Commits submitted whose records are not yet counted here: while any is, the query's
    /// committed offsets may run ahead of these counters.
    pub uncounted_commits: AtomicU64,
    /// Signalled after every commit and when the task ends; shared by all queries.
    pub progress: Arc<Notify>,
    /// Set when the task has ended.
    pub finished: AtomicBool,
    /// Why the task ended, if it failed, and when (ms since the epoch); cleared once it recovers.
    pub error: Mutex<Option<(i64, String)>>,
    /// The latest record errors.
    pub recent_errors: Mutex<VecDeque<RecordError>>,
    /// For a query whose partitions the service's nodes split, the input partitions this
    /// node runs it over now; `None` for one that runs whole on one node.
    pub assigned: Mutex<Option<std::collections::BTreeSet<(String, u32)>>>,
    /// For a split query, where this node started each partition it was given, from the
    /// group's offsets on the cluster: its position there until its first commit.
    pub started: Mutex<std::collections::HashMap<(String, u32), i64>>,
}

impl QueryShared {
    /// Keeps the latest record errors.
    pub fn record_errors(&self, errors: Vec<RecordError>) {
        if errors.is_empty() {
            return;
        }
        let mut recent = self.recent_errors.lock();
        for e in errors {
            if recent.len() == RECENT_ERRORS {
                recent.pop_front();
            }
            recent.push_back(e);
        }
    }
}

/// A running query as `SHOW QUERIES` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySummary {
    /// The query id.
    pub id: String,
    /// The statement that started it.
    pub sql: String,
    /// The source it writes.
    pub sink: String,
    /// The sink's topic.
    pub sink_topic: String,
    /// `PERSISTENT`, or `PUSH` for a push query a client is reading.
    pub query_type: &'static str,
    /// `RUNNING` or `ERROR`.
    pub state: String,
    /// Input records processed.
    pub processed: u64,
    /// Input records that failed.
    pub failed: u64,
    /// Records written to the sink.
    pub emitted: u64,
    /// Input records per second over the last minute.
    pub messages_per_sec: f64,
    /// When the last input record was processed, ms since the epoch.
    pub last_message_ms: Option<i64>,
    /// The query's consumer group positions and lag; none for push queries.
    pub offsets: Option<stats::GroupOffsets>,
    /// For a query whose partitions the service's nodes split, the input partitions this
    /// node runs; `None` for one that runs whole on one node.
    pub assigned: Option<Vec<(String, u32)>>,
    /// For a split query whose tasks keep state, the tasks' partitions this node keeps warm
    /// (it applies their changelog) without running them: its standby partitions.
    pub standby: Vec<(String, u32)>,
}

impl QuerySummary {
    /// Whether this node runs the query on `topic`-`partition`: every partition of a query
    /// that runs whole on one node, its own of one whose partitions the service's nodes split.
    pub fn runs(&self, topic: &str, partition: u32) -> bool {
        self.assigned
            .as_ref()
            .is_none_or(|assigned| assigned.iter().any(|(t, p)| t == topic && *p == partition))
    }

    /// Records appended to the query's inputs and not yet processed, on the partitions this
    /// node runs.
    pub fn lag(&self) -> i64 {
        self.offsets
            .iter()
            .flat_map(|o| &o.topics)
            .fold(0, |lag, t| {
                lag + t
                    .partitions
                    .iter()
                    .filter(|p| self.runs(&t.topic, p.partition))
                    .map(stats::PartitionOffsets::lag)
                    .sum::<i64>()
            })
    }
}

/// A query as `EXPLAIN` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDescription {
    /// The query id; empty for a statement explained without running it.
    pub id: String,
    /// The statement.
    pub sql: String,
    /// Sources read.
    pub sources: Vec<String>,
    /// Sinks written.
    pub sinks: Vec<String>,
    /// The sinks' topics.
    pub sink_topics: Vec<String>,
    /// The result's columns.
    pub fields: Vec<crate::schema::Column>,
    /// The execution plan, one step per line.
    pub execution_plan: String,
    /// `RUNNING`, `ERROR`, or `NOT_RUNNING` for an explained statement.
    pub state: String,
    /// While it is in `ERROR`: when it failed (ms since the epoch) and why.
    pub error: Option<(i64, String)>,
}
