//! Queries: planning, the operators that run them, and the tasks that feed the operators.
//!
//! The layers, each using only those below it:
//!
//! - **Plans and dispatch** (this module, `planner`, `explain`): a `QueryPlan` is a
//!   stateless projection, an aggregation, or a chain of joins followed by either; it names
//!   its sources and columns, prints itself for `EXPLAIN`, and builds its operator.
//! - **Tasks**: `task` runs a persistent query (read, process, commit), `transient` a push
//!   or pull query, `materialized` keeps tables for pull queries.
//! - **Operators**: `join`, `aggregate` and `stateless`, each planning and running one
//!   kind of step behind the one `operator::Operator` trait.
//! - **Shared ground**: `operator` (the trait and its output), `rows` (rows between
//!   operators), `sink` (encoding results), `state` (the state namespace and key layout),
//!   `scope` and `naming` (compiling expressions and naming columns), `source` (decoding
//!   records).

pub mod aggregate;
pub(crate) mod evaluate;
mod explain;
pub mod join;
mod lookup;
pub(crate) mod materialized;
pub(crate) mod naming;
pub(crate) mod operator;
mod panics;
mod persistent;
pub mod planner;
pub mod processing_log;
pub mod provider;
pub(crate) mod rows;
pub(crate) mod scope;
pub mod sink;
pub mod source;
pub mod state;
pub mod stateless;
pub mod stats;
mod status;
pub(crate) mod task;
mod topic_readers;
pub mod transient;

use eddy_storage::Store;

use crate::catalog::{DataSource, WindowInfo};
use crate::error::Result;
use crate::schema::Column;
use aggregate::{AggregatePlan, Aggregation};
use join::{Join, JoinPlan, JoinTail};
use operator::{Operator, RowsOperator};
use stateless::{Projection, StatelessPlan};

pub use persistent::{PersistentQuery, QueryKind, QueryLaunch, RetryBackoff};
pub use state::consumer_group;
pub use status::{QueryDescription, QueryShared, QuerySummary};
pub use task::Buffering;

/// What a query does.
#[derive(Debug, Clone)]
pub enum QueryPlan {
    /// Filter, project, re-key.
    Stateless(StatelessPlan),
    /// Group and aggregate one source.
    Aggregate(AggregatePlan),
    /// Join sources, then project or aggregate their rows.
    Join(Box<JoinPlan>),
}

impl QueryPlan {
    /// Applies the properties a query runs with to its plan (see
    /// [`AggregatePlan::apply_properties`]).
    pub fn apply_properties(&mut self, properties: &std::collections::HashMap<String, String>) {
        match self {
            QueryPlan::Aggregate(plan) => plan.apply_properties(properties),
            QueryPlan::Join(join) => {
                if let join::JoinTail::Aggregate(plan) = &mut join.then {
                    plan.apply_properties(properties);
                }
            }
            QueryPlan::Stateless(_) => {}
        }
    }

    /// Whether the nodes of a service on a Kafka cluster may split the query's partitions
    /// among them: a stateless query keeps nothing but its positions, so each partition runs
    /// on its own wherever the query's group puts it; an aggregation over a stream splits once
    /// its records are repartitioned by group (see [`QueryPlan::split_aggregation`]), and a
    /// join once its sides are partitioned alike (see [`QueryPlan::split_join`]). Other
    /// joins, and aggregations over tables, keep state that spans partitions, and run on the
    /// active node.
    pub fn splits_partitions(&self) -> bool {
        matches!(self, QueryPlan::Stateless(_))
            || self.split_aggregation().is_some()
            || self.split_join().is_some()
            || self.split_foreign_key().is_some()
    }

    /// A foreign-key join of two tables, projected, that splits as Kafka Streams splits one
    /// (see `join::foreign_key_split`): tasks over the left table's partitions and tasks over
    /// the right table's, talking through a subscription and a response topic.
    pub(crate) fn split_foreign_key(&self) -> Option<&JoinPlan> {
        let QueryPlan::Join(join) = self else {
            return None;
        };
        let [stage] = join.chain.stages.as_slice() else {
            return None;
        };
        let [left, right] = join.chain.sources.as_slice() else {
            return None;
        };
        let tables = [left, right]
            .iter()
            .all(|s| s.kind == eddy_sql::ast::SourceKind::Table && s.window.is_none());
        (stage.shape == join::JoinShape::ForeignKey
            && matches!(join.then, JoinTail::Project(_))
            && tables
            && left.topic != right.topic)
            .then_some(join.as_ref())
    }

    /// The joins of a query that splits as one task per partition number, each joining that
    /// partition of every source, as Kafka Streams joins co-partitioned topics. The sources
    /// joined on their key and laid out as the first of them (the same key format and types;
    /// the *keyed* ones) put equal keys on equal partition numbers when they have as many
    /// partitions (the query's launch checks). The others are *routed*: a stream joined on
    /// another column, and a source joined on its key but laid out otherwise (see
    /// [`join::JoinChain::routed`]). Their records first go to the partition of a
    /// repartition topic that their join key hashes to as the keyed sources write it, as
    /// ksqlDB repartitions a join side. The joins are stream–stream, stream–table or
    /// table–table (no foreign key, no windowed table's final rows), only the first source
    /// or a stage's new source is routed (never joined rows), every source is a topic of its
    /// own, and the joined rows are projected, aggregated by the join key alone, or (a
    /// stream's rows) aggregated by other columns, each row sent on to its group's task.
    pub(crate) fn split_join(&self) -> Option<&JoinPlan> {
        let QueryPlan::Join(join) = self else {
            return None;
        };
        let chain = &join.chain;
        // An aggregation by the join key keeps each group in the task that joins its rows;
        // one by other columns has the joined rows sent on to its group's task.
        let projected = matches!(join.then, JoinTail::Project(_))
            || join.aggregated_by_join_key()
            || join.regroups();
        let shapes = chain.stages.iter().enumerate().all(|(k, stage)| {
            (k == 0 || !stage.left.rekeyed)
                && matches!(
                    stage.shape,
                    join::JoinShape::StreamStream(_)
                        | join::JoinShape::StreamTable
                        | join::JoinShape::TableTable
                )
        });
        let routed = chain.routed();
        // A table routed for its key's layout keeps its keys, so each key's changes stay in
        // order on one partition; one joined on another column is a foreign-key join.
        let routable = chain
            .sources
            .iter()
            .zip(chain.rekeyed())
            .all(|(source, rekeyed)| !rekeyed || source.kind == eddy_sql::ast::SourceKind::Stream);
        let keyed: Vec<_> = chain
            .sources
            .iter()
            .zip(&routed)
            .filter(|(_, routed)| !**routed)
            .map(|(source, _)| join::KeyLayout::of(source))
            .collect();
        // With every source routed, the join keys are laid out alike by their routers.
        let alike = keyed
            .first()
            .is_none_or(|first| keyed.iter().all(|k| k == first));
        let topics: std::collections::BTreeSet<&str> =
            chain.sources.iter().map(|s| s.topic.as_str()).collect();
        let distinct = topics.len() == chain.sources.len();
        (projected && shapes && routable && alike && distinct).then_some(join.as_ref())
    }

    /// The aggregation of a query that splits as two parts: over a stream, a router that
    /// sends each record to its group's partition of a repartition topic, and one task per
    /// partition of that topic; over a table, a task per partition of the table that sends
    /// each change (the key's previous row retracted, its new row added) on to its group's
    /// partition, and one task per partition of that topic. One grouped by its source's key
    /// needs neither: its tasks read the source's partitions.
    pub(crate) fn split_aggregation(&self) -> Option<&AggregatePlan> {
        match self {
            QueryPlan::Aggregate(p) => Some(p),
            _ => None,
        }
    }

    /// The aggregation of a split join's rows (or a table's changes) by other columns than
    /// the join key (the table's key), reading them from `topic`, where the first tasks send
    /// them by group.
    pub(crate) fn regrouped(&self, topic: &str) -> Option<QueryPlan> {
        let aggregation = match self {
            QueryPlan::Aggregate(aggregation) => aggregation,
            QueryPlan::Join(join) => match &join.then {
                JoinTail::Aggregate(aggregation) => aggregation,
                JoinTail::Project(_) => return None,
            },
            QueryPlan::Stateless(_) => return None,
        };
        let mut aggregation = aggregation.clone();
        aggregation.source.topic = topic.to_string();
        Some(QueryPlan::Aggregate(aggregation))
    }

    /// This plan reading each of `routes`' repartition topics in place of its source's
    /// topic, laid out as the source: a split query's task reading what its routers sent.
    pub(crate) fn rerouted(&self, routes: &[(String, String)]) -> QueryPlan {
        let mut plan = self.clone();
        let reroute = |source: &mut DataSource| {
            if let Some((_, to)) = routes.iter().find(|(from, _)| *from == source.topic) {
                source.topic = to.clone();
            }
        };
        match &mut plan {
            QueryPlan::Stateless(p) => reroute(&mut p.source),
            QueryPlan::Aggregate(p) => reroute(&mut p.source),
            QueryPlan::Join(p) => {
                p.chain.sources.iter_mut().for_each(&reroute);
                for stage in &mut p.chain.stages {
                    reroute(&mut stage.left.source);
                    reroute(&mut stage.right.source);
                }
            }
        }
        plan
    }

    /// The source read: a join's left source, whose formats and partitions the result takes.
    pub fn source(&self) -> &DataSource {
        match self {
            QueryPlan::Stateless(p) => &p.source,
            QueryPlan::Aggregate(p) => &p.source,
            QueryPlan::Join(p) => &p.chain.sources[0],
        }
    }

    /// Every source read, in the order the query names them.
    pub fn sources(&self) -> Vec<&DataSource> {
        match self {
            QueryPlan::Join(p) => p.chain.sources.iter().collect(),
            _ => vec![self.source()],
        }
    }

    /// The projection that makes the result, unless the result is an aggregation.
    pub fn projection(&self) -> Option<&StatelessPlan> {
        match self {
            QueryPlan::Stateless(p) => Some(p),
            QueryPlan::Join(p) => match &p.then {
                JoinTail::Project(post) => Some(post),
                JoinTail::Aggregate(_) => None,
            },
            QueryPlan::Aggregate(_) => None,
        }
    }

    /// [`QueryPlan::projection`], to change.
    pub fn projection_mut(&mut self) -> Option<&mut StatelessPlan> {
        match self {
            QueryPlan::Stateless(p) => Some(p),
            QueryPlan::Join(p) => match &mut p.then {
                JoinTail::Project(post) => Some(post),
                JoinTail::Aggregate(_) => None,
            },
            QueryPlan::Aggregate(_) => None,
        }
    }

    /// The aggregation that makes the result, if the result is one.
    pub fn aggregation(&self) -> Option<&AggregatePlan> {
        match self {
            QueryPlan::Aggregate(p) => Some(p),
            QueryPlan::Join(p) => match &p.then {
                JoinTail::Aggregate(a) => Some(a),
                JoinTail::Project(_) => None,
            },
            QueryPlan::Stateless(_) => None,
        }
    }

    /// The result's columns: keys, then values.
    pub fn columns(&self) -> Vec<Column> {
        match (self.projection(), self.aggregation()) {
            (Some(p), _) => p.columns(),
            (_, Some(a)) => a.columns(),
            (None, None) => Vec::new(),
        }
    }

    /// Column names in the order the projection lists them.
    pub fn column_order(&self) -> &[String] {
        match (self.projection(), self.aggregation()) {
            (Some(p), _) => &p.column_order,
            (_, Some(a)) => &a.column_order,
            (None, None) => &[],
        }
    }

    /// Whether the result has key columns.
    pub fn has_keys(&self) -> bool {
        match (self.projection(), self.aggregation()) {
            (Some(p), _) => !p.keys.is_empty(),
            (_, Some(a)) => !a.keys.is_empty(),
            (None, None) => false,
        }
    }

    /// The window of the sink's keys: a windowed aggregation's, or a windowed source's that
    /// a stateless query or a join keeps.
    pub fn sink_window(&self) -> Option<WindowInfo> {
        if let Some(aggregation) = self.aggregation() {
            return aggregation.sink_window();
        }
        match self {
            QueryPlan::Stateless(p) if !p.repartitioned => p.source.window,
            QueryPlan::Join(p) => p.window(),
            _ => None,
        }
    }

    /// The operator that runs this plan into `sink`, its state in `namespace`; with
    /// `coalesce`, an aggregation's updates wait in its record cache until the operator is
    /// flushed.
    pub(crate) fn operator<'p>(
        &'p self,
        store: &Store,
        namespace: &str,
        sink: &DataSource,
        coalesce: bool,
        schemas: &crate::codec::Schemas,
    ) -> Result<Box<dyn Operator + 'p>> {
        let sink = (sink, schemas);
        Ok(match self {
            QueryPlan::Stateless(p) => Box::new(Projection::new(p, sink)?),
            QueryPlan::Aggregate(p) => {
                Box::new(Aggregation::new(store, namespace, p, sink, coalesce)?)
            }
            QueryPlan::Join(p) => {
                let then: Box<dyn RowsOperator + 'p> = match &p.then {
                    JoinTail::Project(post) => Box::new(Projection::new(post, sink)?),
                    JoinTail::Aggregate(a) => {
                        Box::new(Aggregation::new(store, namespace, a, sink, coalesce)?)
                    }
                };
                Box::new(Join::new(store, namespace, &p.chain, then)?)
            }
        })
    }
}

/// Every function a query can call by name, with its kind (`SCALAR`, `AGGREGATE`, `TABLE`),
/// sorted by name.
pub fn function_names() -> Vec<(String, &'static str)> {
    eddy_sql::functions::all_functions()
        .into_iter()
        .map(|f| (f.name, f.kind.name()))
        .collect()
}
