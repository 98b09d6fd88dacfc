//! Persistent queries: planning, the running tasks, and what the engine knows of each.

pub mod aggregate;
pub mod join;
mod lookup;
pub(crate) mod materialized;
pub mod plan;
pub mod processing_log;
pub mod provider;
pub mod runner;
mod shared;
pub mod source;
mod statements;
pub mod stats;
mod stream_time;
pub mod transient;
pub mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::query::source::RecordError;

/// What a persistent query does.
#[derive(Debug, Clone)]
pub enum QueryPlan {
    /// Filter, project, re-key.
    Stateless(plan::StatelessPlan),
    /// Group and aggregate.
    Aggregate(aggregate::AggregatePlan),
    /// Join two sources, then filter and project.
    Join(Box<join::JoinPlan>),
}

impl QueryPlan {
    /// The source read: a join's left source, whose formats and partitions the result takes.
    pub fn source(&self) -> &crate::catalog::DataSource {
        match self {
            QueryPlan::Stateless(p) => &p.source,
            QueryPlan::Aggregate(p) => p.join.as_ref().map_or(&p.source, |j| &j.sources[0]),
            QueryPlan::Join(p) => &p.chain.sources[0],
        }
    }

    /// Every source read, in the order the query names them.
    pub fn sources(&self) -> Vec<&crate::catalog::DataSource> {
        match self {
            QueryPlan::Join(p) => p.chain.sources.iter().collect(),
            QueryPlan::Aggregate(p) if p.join.is_some() => p
                .join
                .as_ref()
                .map(|j| j.sources.iter().collect())
                .unwrap_or_default(),
            _ => vec![self.source()],
        }
    }

    /// The result's columns: keys, then values.
    pub fn columns(&self) -> Vec<crate::schema::Column> {
        match self {
            QueryPlan::Stateless(p) => p.columns(),
            QueryPlan::Aggregate(p) => p.columns(),
            QueryPlan::Join(p) => p.post.columns(),
        }
    }

    /// Column names in the order the projection lists them.
    pub fn column_order(&self) -> &[String] {
        match self {
            QueryPlan::Stateless(p) => &p.column_order,
            QueryPlan::Aggregate(p) => &p.column_order,
            QueryPlan::Join(p) => &p.post.column_order,
        }
    }

    /// Whether the result has key columns.
    pub fn has_keys(&self) -> bool {
        match self {
            QueryPlan::Stateless(p) => !p.keys.is_empty(),
            QueryPlan::Aggregate(p) => !p.keys.is_empty(),
            QueryPlan::Join(p) => !p.post.keys.is_empty(),
        }
    }

    /// The execution plan, as `EXPLAIN` prints it.
    pub fn explain(&self, query_id: &str, sink_name: &str) -> String {
        match self {
            QueryPlan::Stateless(p) => p.explain(query_id, sink_name),
            QueryPlan::Aggregate(p) => p.explain(query_id, sink_name),
            QueryPlan::Join(p) => p.explain(query_id, sink_name),
        }
    }

    /// The window of the sink's keys: a windowed aggregation's, or a windowed source's that
    /// a stateless query keeps.
    pub fn sink_window(&self) -> Option<crate::catalog::WindowInfo> {
        use crate::catalog::{WindowInfo, WindowType};
        match self {
            QueryPlan::Stateless(p) if !p.repartitioned => p.source.window,
            QueryPlan::Stateless(_) => None,
            QueryPlan::Join(p) => p.window(),
            QueryPlan::Aggregate(p) if p.session.is_some() => Some(WindowInfo {
                window_type: WindowType::Session,
                size_ms: None,
                retention_ms: p.retention,
            }),
            QueryPlan::Aggregate(p) => p.window.map(|(w, _)| match w {
                window::TimeWindows::Tumbling { size } => WindowInfo {
                    window_type: WindowType::Tumbling,
                    size_ms: Some(size as u64),
                    retention_ms: p.retention,
                },
                window::TimeWindows::Hopping { size, .. } => WindowInfo {
                    window_type: WindowType::Hopping,
                    size_ms: Some(size as u64),
                    retention_ms: p.retention,
                },
            }),
        }
    }
}

/// How many recent record errors a query keeps for `DESCRIBE ... EXTENDED`.
const RECENT_ERRORS: usize = 16;

/// Every function a query can call by name, with its kind (`SCALAR`, `AGGREGATE`, `TABLE`),
/// sorted by name.
pub fn function_names() -> Vec<(String, &'static str)> {
    let mut functions: Vec<(String, &'static str)> = eddy_sql::functions::scalar_function_names()
        .into_iter()
        .map(|name| (name, "SCALAR"))
        .chain(
            aggregate::AGGREGATE_FUNCTIONS
                .iter()
                .map(|name| (name.to_string(), "AGGREGATE")),
        )
        .chain(std::iter::once(("EXPLODE".to_string(), "TABLE")))
        .collect();
    functions.sort();
    functions.dedup_by(|a, b| a.0 == b.0);
    functions
}

/// The consumer group holding a query's committed input offsets.
pub fn consumer_group(query_id: &str) -> String {
    format!("_eddy_query_{query_id}")
}

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
    /// Signalled after every commit and when the task ends; shared by all queries.
    pub progress: Arc<Notify>,
    /// Set when the task has ended.
    pub finished: AtomicBool,
    /// Why the task ended, if it failed.
    pub error: Mutex<Option<String>>,
    /// The latest record errors.
    pub recent_errors: Mutex<VecDeque<RecordError>>,
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

/// How a persistent query was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `CREATE STREAM|TABLE ... AS SELECT`.
    CreateAsSelect,
    /// `INSERT INTO ... SELECT`.
    InsertInto,
}

/// A persistent query the engine runs.
#[derive(Debug)]
pub struct PersistentQuery {
    /// Its id, such as `CSAS_OUTPUT_3`.
    pub id: String,
    /// The statement that created it.
    pub sql: String,
    /// The sources it reads, and their topics.
    pub sources: Vec<(String, String)>,
    /// The sink it writes.
    pub sink: String,
    /// The sink's topic.
    pub sink_topic: String,
    /// How it was created.
    pub kind: QueryKind,
    /// The sink's columns.
    pub fields: Vec<crate::schema::Column>,
    /// The execution plan, as `EXPLAIN` prints it.
    pub execution_plan: String,
    /// Counters and progress.
    pub shared: Arc<QueryShared>,
    /// What (re)starting its task needs.
    launch: QueryLaunch,
    stop: watch::Sender<bool>,
    /// The running task; none while paused.
    task: Option<JoinHandle<()>>,
}

/// What a query's task runs: the plan over the store, writing the sink.
#[derive(Debug, Clone)]
pub struct QueryLaunch {
    /// The store it reads and writes.
    pub store: eddy_storage::Store,
    /// The plan.
    pub plan: QueryPlan,
    /// The sink it writes.
    pub sink: crate::catalog::DataSource,
    /// How its record cache coalesces updates.
    pub buffering: runner::Buffering,
}

impl QueryLaunch {
    fn spawn(&self, id: &str, shared: &Arc<QueryShared>) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        shared.finished.store(false, Ordering::SeqCst);
        let task = tokio::spawn(runner::run_query(
            self.store.clone(),
            id.to_string(),
            (self.plan.clone(), self.buffering),
            self.sink.clone(),
            shared.clone(),
            stopped,
        ));
        (stop, task)
    }
}

impl PersistentQuery {
    /// Starts the query's task.
    pub fn start(
        id: String,
        sql: String,
        launch: QueryLaunch,
        (kind, execution_plan): (QueryKind, String),
        shared: Arc<QueryShared>,
    ) -> Self {
        let sources = launch
            .plan
            .sources()
            .iter()
            .map(|s| (s.name.clone(), s.topic.clone()))
            .collect();
        let (sink, sink_topic) = (launch.sink.name.clone(), launch.sink.topic.clone());
        let fields = launch.sink.columns.clone();
        let (stop, task) = launch.spawn(&id, &shared);
        PersistentQuery {
            id,
            sql,
            sources,
            sink,
            sink_topic,
            kind,
            fields,
            execution_plan,
            shared,
            launch,
            stop,
            task: Some(task),
        }
    }

    /// Stops the task, keeping its offsets and state, until [`Self::resume`]; its input piles
    /// up as lag meanwhile.
    pub async fn pause(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(query = %self.id, error = %e, "query task ended abnormally");
        }
    }

    /// Restarts a paused task from its committed offsets.
    pub fn resume(&mut self) {
        if self.task.is_none() {
            let (stop, task) = self.launch.spawn(&self.id, &self.shared);
            self.stop = stop;
            self.task = Some(task);
        }
    }

    /// Whether the query is paused.
    pub fn is_paused(&self) -> bool {
        self.task.is_none()
    }

    /// `RUNNING`, `PAUSED`, or `ERROR` when the task failed.
    pub fn state(&self) -> &'static str {
        if self.is_paused() {
            "PAUSED"
        } else if self.shared.error.lock().is_some() {
            "ERROR"
        } else {
            "RUNNING"
        }
    }

    /// Stops the task and waits for it to end; its last commit is either in or out whole.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(query = %self.id, error = %e, "query task ended abnormally");
        }
    }

    /// What `SHOW QUERIES` and `DESCRIBE` show of it, with its positions in `store`. A
    /// store that fails to read offsets leaves them out rather than failing the listing.
    pub fn summary(&self, store: &eddy_storage::Store) -> crate::result::QuerySummary {
        let topics: Vec<String> = self.sources.iter().map(|(_, t)| t.clone()).collect();
        let offsets = stats::GroupOffsets::read(store, &consumer_group(&self.id), &topics)
            .map_err(|e| tracing::warn!(query = %self.id, error = %e, "reading the query's offsets failed"))
            .ok();
        let last = self.shared.last_message_ms.load(Ordering::Relaxed);
        let now_secs = (eddy_storage::now_ms() / 1000) as u64;
        crate::result::QuerySummary {
            id: self.id.clone(),
            sql: self.sql.clone(),
            sink: self.sink.clone(),
            sink_topic: self.sink_topic.clone(),
            query_type: "PERSISTENT",
            state: self.state().to_string(),
            processed: self.shared.processed.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            emitted: self.shared.emitted.load(Ordering::Relaxed),
            messages_per_sec: self.shared.throughput.lock().per_second(now_secs),
            last_message_ms: (last > 0).then_some(last),
            offsets,
        }
    }

    /// What `EXPLAIN` shows of it.
    pub fn description(&self) -> crate::result::QueryDescription {
        crate::result::QueryDescription {
            id: self.id.clone(),
            sql: self.sql.clone(),
            sources: self.sources.iter().map(|(name, _)| name.clone()).collect(),
            sinks: vec![self.sink.clone()],
            sink_topics: vec![self.sink_topic.clone()],
            fields: self.fields.clone(),
            execution_plan: self.execution_plan.clone(),
            state: self.state().to_string(),
        }
    }

    /// Whether the task has ended.
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }
}
