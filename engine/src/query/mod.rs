//! Persistent queries: planning, the running tasks, and what the engine knows of each.

pub mod aggregate;
pub mod join;
mod lookup;
pub mod plan;
pub mod processing_log;
pub mod runner;
pub mod source;
mod statements;
pub mod transient;
pub mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
            }),
            QueryPlan::Aggregate(p) => p.window.map(|(w, _)| match w {
                window::TimeWindows::Tumbling { size } => WindowInfo {
                    window_type: WindowType::Tumbling,
                    size_ms: Some(size as u64),
                },
                window::TimeWindows::Hopping { size, .. } => WindowInfo {
                    window_type: WindowType::Hopping,
                    size_ms: Some(size as u64),
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
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl PersistentQuery {
    /// Wraps a started task.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        sql: String,
        sources: Vec<(String, String)>,
        (sink, sink_topic): (String, String),
        (kind, fields, execution_plan): (QueryKind, Vec<crate::schema::Column>, String),
        shared: Arc<QueryShared>,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    ) -> Self {
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
            stop,
            task: Some(task),
        }
    }

    /// `RUNNING`, or `ERROR` when the task failed.
    pub fn state(&self) -> &'static str {
        if self.shared.error.lock().is_some() {
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

    /// What `SHOW QUERIES` and `DESCRIBE` show of it.
    pub fn summary(&self) -> crate::result::QuerySummary {
        crate::result::QuerySummary {
            id: self.id.clone(),
            sql: self.sql.clone(),
            sink: self.sink.clone(),
            sink_topic: self.sink_topic.clone(),
            query_type: "PERSISTENT",
            state: self.state().to_string(),
            processed: self.shared.processed.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
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
