//! Aggregations: `GROUP BY` over a stream, a table or a join's rows, optionally in tumbling,
//! hopping or session windows, into a table. Aggregates are DataFusion `Accumulator`s; each
//! group's accumulator state is kept in the state store and written in the same commit as the
//! output and the input offsets.
//!
//! - `plan` checks the query with ksqlDB's rules and compiles it; `calls` resolves each
//!   aggregate call.
//! - `operator` runs it: each batch's rows update their groups (`session` for session
//!   windows, `table` for a table's retractions), and the updated results go to the sink.
//! - `windows` holds the window and session decisions, `stream_time` the clocks they follow,
//!   `emit_final` what `EMIT FINAL` writes when a window closes.
//! - `panes` keeps hopping windows under `EMIT FINAL` as panes, merged when a window closes.
//! - `route` sends each record to its group's partition, for an aggregation the nodes of a
//!   service split.
//! - `state` keeps the groups (`group`) in memory and in the store.

mod calls;
mod deferred;
mod emit_final;
mod group;
mod operator;
mod panes;
mod plan;
mod route;
mod session;
mod state;
pub(crate) mod stream_time;
mod table;
pub mod windows;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::logical_expr::{Accumulator, AggregateUDF};
use datafusion::physical_expr::PhysicalExpr;

use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::sink::OutputColumn;
use crate::query::source::SourceDecoder;
use crate::schema::Column;
use windows::{SessionWindows, TimeWindows};

pub(crate) use operator::Aggregation;
pub(crate) use plan::plan_aggregate_over;
pub use plan::{aggregates_anything, plan_aggregate};
pub(crate) use route::{GroupRouter, GroupRouting, TableRouter};

/// One aggregate call: `SUM(x)`.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    /// ksqlDB's name, for messages.
    pub name: String,
    /// The DataFusion function.
    pub function: Arc<AggregateUDF>,
    /// Its arguments over the input rows.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// The argument fields.
    pub arg_fields: Vec<FieldRef>,
    /// `DISTINCT`-like functions (`COUNT_DISTINCT`, `COLLECT_SET`).
    pub distinct: bool,
    /// Functions that skip nulls (`LATEST_BY_OFFSET`).
    pub ignore_nulls: bool,
    /// The type DataFusion returns.
    pub return_field: FieldRef,
    /// The type ksqlDB returns (`SUM(INT)` is an INT), when it differs.
    pub result_type: DataType,
    /// `COLLECT_LIST` and `COLLECT_SET`: the most elements a result holds (ksqlDB's
    /// `ksql.functions.collect_list.limit` and `collect_set.limit`); the first ones are kept.
    pub limit: Option<usize>,
}

/// ksqlDB's default for `ksql.functions.collect_list.limit` and `collect_set.limit`.
pub const DEFAULT_COLLECT_LIMIT: usize = 1000;

impl AggregatePlan {
    /// Applies the query's properties to its calls: the size limits of `COLLECT_LIST` and
    /// `COLLECT_SET`.
    pub fn apply_properties(&mut self, properties: &std::collections::HashMap<String, String>) {
        let limit = |name: &str| {
            properties
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(DEFAULT_COLLECT_LIMIT)
        };
        for call in &mut self.aggregates {
            call.limit = match call.name.as_str() {
                "COLLECT_LIST" => Some(limit("ksql.functions.collect_list.limit")),
                "COLLECT_SET" => Some(limit("ksql.functions.collect_set.limit")),
                _ => None,
            };
        }
    }
}

impl AggregateCall {
    /// An accumulator; for a table source one that can also retract values.
    fn make_accumulator(&self, input: &Schema, retracting: bool) -> Result<Box<dyn Accumulator>> {
        let args = datafusion::logical_expr::function::AccumulatorArgs {
            return_field: self.return_field.clone(),
            schema: input,
            ignore_nulls: self.ignore_nulls,
            order_bys: &[],
            is_reversed: false,
            name: &self.name,
            is_distinct: self.distinct,
            exprs: &self.args,
            expr_fields: &self.arg_fields,
        };
        let made = if retracting {
            self.function.create_sliding_accumulator(args)
        } else {
            self.function.accumulator(args)
        };
        made.map_err(|e| {
            EngineError::statement(format!("cannot aggregate with {}: {e}", self.name))
        })
    }
}

/// A planned aggregation.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// The source read (for a join, its rows described as a source).
    pub source: DataSource,
    /// Decodes its records.
    pub decoder: SourceDecoder,
    /// `WHERE`, over input rows.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The `GROUP BY` expressions, over input rows.
    pub group_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The aggregate calls.
    pub aggregates: Vec<AggregateCall>,
    /// The window, if any, and its grace period.
    pub window: Option<(TimeWindows, i64)>,
    /// Session windows: the inactivity gap and the grace period.
    pub session: Option<SessionWindows>,
    /// `RETENTION`: how far behind the newest window a window stays for pull queries.
    pub retention: Option<u64>,
    /// `HAVING`, over aggregated rows.
    pub having: Option<Arc<dyn PhysicalExpr>>,
    /// `EMIT FINAL`: one row per window once it closes, instead of every update.
    pub emit_final: bool,
    /// Rows of group values, aggregate results, window bounds and `ROWTIME`.
    pub aggregate_schema: SchemaRef,
    /// Key columns of the result, over aggregated rows.
    pub keys: Vec<OutputColumn>,
    /// Value columns of the result, over aggregated rows.
    pub values: Vec<OutputColumn>,
    /// Column names in the order the projection lists them, for queries that return rows.
    pub column_order: Vec<String>,
}

impl AggregatePlan {
    /// The result's columns: keys, then values.
    pub fn columns(&self) -> Vec<Column> {
        crate::query::sink::output_columns(&self.keys, &self.values)
    }

    /// Whether results are windowed (time windows or sessions).
    fn windowed(&self) -> bool {
        self.window.is_some() || self.session.is_some()
    }

    /// Whether the rows aggregated are a table's, whose old values are taken back out.
    pub(crate) fn over_table(&self) -> bool {
        self.source.kind == eddy_sql::ast::SourceKind::Table
    }

    /// Whether the groups are the source's key, column for column, so each group's records
    /// already share a partition of an unwindowed source and its tasks need no repartition,
    /// as ksqlDB groups by key.
    pub(crate) fn grouped_by_source_key(&self) -> bool {
        use datafusion::physical_expr::expressions::Column as ColumnRef;
        let keys: Vec<&Column> = self.source.key_columns().collect();
        let is_key = |by: &Arc<dyn PhysicalExpr>, key: &Column| {
            by.downcast_ref::<ColumnRef>()
                .and_then(|c| self.source.columns.get(c.index()))
                .is_some_and(|c| c == key)
        };
        self.source.window.is_none()
            && !keys.is_empty()
            && keys.len() == self.group_by.len()
            && self
                .group_by
                .iter()
                .zip(keys)
                .all(|(by, key)| is_key(by, key))
    }

    /// The window of the sink's keys.
    pub fn sink_window(&self) -> Option<crate::catalog::WindowInfo> {
        use crate::catalog::{WindowInfo, WindowType};
        if self.session.is_some() {
            return Some(WindowInfo {
                window_type: WindowType::Session,
                size_ms: None,
                retention_ms: self.retention,
            });
        }
        self.window.map(|(w, _)| match w {
            TimeWindows::Tumbling { size } => WindowInfo {
                window_type: WindowType::Tumbling,
                size_ms: Some(size as u64),
                retention_ms: self.retention,
            },
            TimeWindows::Hopping { size, .. } => WindowInfo {
                window_type: WindowType::Hopping,
                size_ms: Some(size as u64),
                retention_ms: self.retention,
            },
        })
    }
}
