//! Joins: stream–stream within a window, stream–table, and table–table on the primary key or
//! on a foreign key, with ksqlDB's rules, names and errors.
//!
//! Planning (`plan`, `tail`) turns the join into a chain of stages and a projection or
//! aggregation over *joined rows*: every column of both sides renamed `ALIAS_COLUMN`, the
//! result's `ROWTIME`, and the result key. The query's `SELECT`, `WHERE`, `GROUP BY` and
//! `PARTITION BY` are rewritten onto those names (`scope`) and planned by the same code as a
//! single-source query.
//!
//! Processing (`operator`) keeps each side's records (as stored in the log) in the query's
//! state (`state`): a table's latest row per key, a stream's records within the join window,
//! a windowed table's final rows, and the records still waiting for a partner (outer
//! stream–stream joins with a grace period; records waiting for their window's final rows).
//! Each join kind decides what a record joins with in a file of its own (`stream_stream`,
//! `stream_table`, `stream_window`, `table_table`, `foreign_key`); matches are decoded back
//! with the sides' decoders and laid side by side (`rows`), then handed to the projection or
//! aggregation that follows. A side whose join expression is not its key is re-keyed in
//! process (the `REKEY` step of the plan); state is keyed by the join key, not by partition, so
//! no repartition topic is needed on one node. The nodes of a service that split a join send
//! such a side's records to the partition of their join key first (`route`), and the joined
//! rows of a join aggregated by other columns to the partition of their group (`regroup`).

mod foreign_key;
mod foreign_key_split;
mod operator;
mod plan;
mod regroup;
mod route;
mod rows;
mod scope;
mod state;
mod stream_stream;
mod stream_table;
mod stream_window;
mod table_table;
mod tail;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use eddy_storage::Store;

use crate::catalog::DataSource;
use crate::error::Result;
use crate::query::aggregate::AggregatePlan;
use crate::query::source::SourceDecoder;
use crate::query::stateless::StatelessPlan;

pub(crate) use foreign_key_split::{ForeignLeft, ForeignRight};
pub(crate) use operator::Join;
pub use plan::{plan_join, plan_join_aggregate};
pub(crate) use regroup::{RegroupRouter, RegroupedAggregation};
pub(crate) use route::JoinRouter;
pub use rows::Handoff;
pub use state::JoinState;

/// Inner, left, right or full outer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    /// Rows with a partner on both sides.
    Inner,
    /// Every left row.
    Left,
    /// Every right row.
    Right,
    /// Every row of either side.
    Outer,
}

impl JoinType {
    /// Whether rows of `side` (0 left, 1 right) are kept without a partner.
    fn preserves(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinType::Outer, _) | (JoinType::Left, 0) | (JoinType::Right, 1)
        )
    }

    /// As ksqlDB writes it in messages.
    fn text(self) -> &'static str {
        match self {
            JoinType::Inner => "[INNER] JOIN",
            JoinType::Left => "LEFT [OUTER] JOIN",
            JoinType::Right => "RIGHT [OUTER] JOIN",
            JoinType::Outer => "[FULL] OUTER JOIN",
        }
    }
}

/// A stream–stream join's window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindowMs {
    /// How far a right record may precede a left one.
    pub before: i64,
    /// How far a right record may follow a left one.
    pub after: i64,
    /// How long after the window closes late records still join.
    pub grace: i64,
    /// With an explicit `GRACE PERIOD`, outer results wait for the window to close (so none is
    /// spurious); without one, they are emitted at once, as ksqlDB did before grace periods.
    pub wait_for_close: bool,
}

impl JoinWindowMs {
    /// How long a side keeps its records.
    fn retention(&self) -> i64 {
        self.before
            .saturating_add(self.after)
            .saturating_add(self.grace)
    }
}

/// What is joined to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinShape {
    /// Two streams, within a window.
    StreamStream(JoinWindowMs),
    /// A stream looking up a table by the table's key.
    StreamTable,
    /// Two tables on their keys.
    TableTable,
    /// A left-table expression against the right table's key.
    ForeignKey,
    /// A stream joined with the final rows of a tumbling windowed table (of windows `size`
    /// milliseconds long) for the window its record falls in (beyond ksqlDB).
    StreamWindow {
        /// The table's window size.
        size: i64,
        /// How many of the table's rows a record's window may have for its join key.
        rows: WindowRows,
    },
}

/// How many final rows of a windowed table share a join key in one window: once the only one
/// has come, a record of that window need not wait for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRows {
    /// Any number: the table is joined on other columns than its key.
    Many,
    /// One: the table is joined on its key.
    OnePerKey,
    /// One for the whole window: the table has no key columns.
    OnePerWindow,
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// The source read.
    pub source: DataSource,
    /// Its name in the query.
    pub alias: String,
    /// Decodes its records.
    pub decoder: SourceDecoder,
    /// The side's join expression over its decoded rows.
    pub key: Arc<dyn PhysicalExpr>,
    /// Whether that expression is not the side's key, so its rows are re-keyed.
    pub rekeyed: bool,
}

/// One stage of a join: the rows so far (or the first source) joined with one more source.
#[derive(Debug, Clone)]
pub struct JoinStage {
    /// The left input: the first source, or the previous stage's rows.
    pub left: JoinSide,
    /// The right input: the next source.
    pub right: JoinSide,
    /// Inner, left, right or outer.
    pub join_type: JoinType,
    /// Streams or tables, and the window.
    pub shape: JoinShape,
    /// The type of the join key.
    pub key_type: DataType,
    /// The window of the joined rows' keys: both sources', whose window is then part of the
    /// join key, or a windowed left table's looking up a table on a foreign key.
    pub window: Option<crate::catalog::WindowInfo>,
    /// Joined rows: both sides' columns renamed, `ROWTIME`, and a synthetic key if any.
    pub joined_schema: SchemaRef,
    /// The column of joined rows that holds the join key (none for foreign-key joins, whose
    /// key is the left table's).
    pub key_column: Option<usize>,
    /// The columns of joined rows that hold the join key wherever they are not null (none
    /// for foreign-key joins).
    pub key_names: Vec<String>,
    /// How the rows become the next stage's input; none for the last stage.
    pub handoff: Option<Handoff>,
}

impl JoinStage {
    /// The sides in order.
    fn sides(&self) -> [&JoinSide; 2] {
        [&self.left, &self.right]
    }

    /// Whether rows join on their window as well as their key: when both sides are windowed.
    /// A windowed table's foreign key is what it names alone (the table it looks up has no
    /// windows).
    pub(super) fn keyed_by_window(&self) -> bool {
        self.window.is_some() && !matches!(self.shape, JoinShape::ForeignKey)
    }
}

/// How a source writes its keys: equal keys of sources laid out alike are equal bytes, so
/// they hash to equal partition numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyLayout {
    format: crate::format::FormatSpec,
    types: Vec<eddy_sql::ast::SqlType>,
}

impl KeyLayout {
    /// The layout of `source`'s keys.
    pub(crate) fn of(source: &DataSource) -> Self {
        KeyLayout {
            format: source.key_format.clone(),
            types: source.key_columns().map(|c| c.ty.clone()).collect(),
        }
    }
}

/// The joins of a query: its sources, and a chain of stages evaluated left to right.
#[derive(Debug, Clone)]
pub struct JoinChain {
    /// The sources in the order the query names them.
    pub sources: Vec<DataSource>,
    /// Stage `k` joins source `k + 1` to what came before.
    pub stages: Vec<JoinStage>,
}

impl JoinChain {
    /// The stage that source `index` feeds, and on which side.
    fn entry(index: usize) -> (usize, usize) {
        if index <= 1 {
            (0, index)
        } else {
            (index - 1, 1)
        }
    }

    /// The state of each stage, read back from the store.
    pub fn load_states(&self, store: &Store, namespace: &str) -> Result<Vec<JoinState>> {
        self.stages
            .iter()
            .enumerate()
            .map(|(k, stage)| JoinState::load(store, namespace, stage, k as u8))
            .collect()
    }

    /// For each source, whether it is joined on another column than its key.
    pub(crate) fn rekeyed(&self) -> Vec<bool> {
        (0..self.sources.len())
            .map(|index| {
                let (stage, side) = Self::entry(index);
                self.stages
                    .get(stage)
                    .is_some_and(|stage| stage.sides()[side].rekeyed)
            })
            .collect()
    }

    /// For each source, whether the nodes of a service splitting the join first route its
    /// records by their join key: a source joined on another column than its key, and one
    /// joined on its key that lays its keys out otherwise (another key format or key type)
    /// than the first source joined on its key, whose layout the tasks take, as ksqlDB
    /// repartitions a join side whose key format differs from the other's. A windowed
    /// source is not routed for its layout alone.
    pub(crate) fn routed(&self) -> Vec<bool> {
        let mut first: Option<KeyLayout> = None;
        self.sources
            .iter()
            .zip(self.rekeyed())
            .map(|(source, rekeyed)| {
                if rekeyed {
                    return true;
                }
                let layout = KeyLayout::of(source);
                match &first {
                    None => {
                        first = Some(layout);
                        false
                    }
                    Some(first) => *first != layout && source.window.is_none(),
                }
            })
            .collect()
    }

    /// The join side that reads source `index`.
    pub(crate) fn side_of(&self, index: usize) -> Option<&JoinSide> {
        let (stage, side) = Self::entry(index);
        self.stages.get(stage).map(|stage| stage.sides()[side])
    }

    /// Whether the last stage's rows form a table (a changelog), not a stream.
    pub fn yields_table(&self) -> bool {
        self.stages
            .last()
            .is_some_and(|s| matches!(s.shape, JoinShape::TableTable | JoinShape::ForeignKey))
    }
}

/// A planned join query: the joins, then what is done with their rows.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    /// The sources and the stages joining them.
    pub chain: JoinChain,
    /// The projection or aggregation of the last stage's rows.
    pub then: JoinTail,
}

/// What follows the joins of a query.
#[derive(Debug, Clone)]
pub enum JoinTail {
    /// Filter and projection over the last stage's rows.
    Project(StatelessPlan),
    /// An aggregation of the last stage's rows.
    Aggregate(AggregatePlan),
}

impl JoinPlan {
    /// Whether the joined rows are aggregated by the last join's key alone, so each group's
    /// rows come from one partition number of the sources, as joined by one split task.
    pub(crate) fn aggregated_by_join_key(&self) -> bool {
        use datafusion::physical_expr::expressions::Column as ColumnRef;
        let (JoinTail::Aggregate(aggregation), Some(last)) = (&self.then, self.chain.stages.last())
        else {
            return false;
        };
        let [by] = aggregation.group_by.as_slice() else {
            return false;
        };
        by.downcast_ref::<ColumnRef>().is_some_and(|column| {
            let field = last.joined_schema.fields().get(column.index());
            field.is_some_and(|f| f.name() == column.name() && last.key_names.contains(f.name()))
        })
    }

    /// Whether the joined rows (a stream's) are aggregated by other columns than the join
    /// key, so the nodes of a service splitting the join send each row on to the task of its
    /// group (see `regroup`).
    pub(crate) fn regroups(&self) -> bool {
        matches!(self.then, JoinTail::Aggregate(_))
            && !self.aggregated_by_join_key()
            && !self.chain.yields_table()
    }

    /// The joined rows of the last stage, which its projection or aggregation reads.
    pub(crate) fn joined_schema(&self) -> Option<&SchemaRef> {
        self.chain.stages.last().map(|s| &s.joined_schema)
    }

    /// The window of the result's keys, for windowed sources.
    pub fn window(&self) -> Option<crate::catalog::WindowInfo> {
        self.chain.stages.first().and_then(|s| s.window)
    }
}
