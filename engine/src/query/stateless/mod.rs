//! Stateless queries: filter, explode, project and re-key the rows of one source (or of a
//! join), with no state between batches.

mod plan;

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, ListArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use eddy_sql::ast::SourceKind;
use eddy_storage::{LogRecord, Store};

use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, RowsOperator, StepOutput};
use crate::query::rows::Rows;
use crate::query::sink::{OutputColumn, SinkEncoder};
use crate::query::source::{RecordErrorKind, SourceDecoder};
use crate::schema::Column;

pub(crate) use plan::plan_projection;
pub use plan::plan_stateless;

/// A planned stateless query.
#[derive(Debug, Clone)]
pub struct StatelessPlan {
    /// The source read.
    pub source: DataSource,
    /// Decodes the source's records.
    pub decoder: SourceDecoder,
    /// `WHERE`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The arrays of the table functions (`EXPLODE`), one output row per element.
    pub table_functions: Vec<Arc<dyn PhysicalExpr>>,
    /// The input schema plus one column per table function, which the projection reads.
    pub exploded_schema: SchemaRef,
    /// Key columns of the result, in order.
    pub keys: Vec<OutputColumn>,
    /// Value columns of the result, in order.
    pub values: Vec<OutputColumn>,
    /// Whether the key changed (`PARTITION BY`), so records move between partitions.
    pub repartitioned: bool,
    /// Column names in the order the projection lists them, for queries that return rows.
    pub column_order: Vec<String>,
    /// Whether stream records without their value object are skipped: push and pull queries
    /// skip them, as ksqlDB's do, while persistent queries pass their nulls on.
    pub skips_missing_values: bool,
}

impl StatelessPlan {
    /// The result's columns: keys, then values.
    pub fn columns(&self) -> Vec<Column> {
        crate::query::sink::output_columns(&self.keys, &self.values)
    }
}

/// The operator of a stateless plan: rows in, sink records out.
pub(crate) struct Projection<'p> {
    plan: &'p StatelessPlan,
    encoder: SinkEncoder,
}

impl<'p> Projection<'p> {
    /// The projection of `plan` into `sink`.
    pub(crate) fn new(
        plan: &'p StatelessPlan,
        (sink, schemas): (&DataSource, &crate::codec::Schemas),
    ) -> Result<Self> {
        Ok(Projection {
            plan,
            encoder: SinkEncoder::new(sink, schemas)?,
        })
    }

    /// Rows that are no rows of the result: a table's record without a key (a table's row is
    /// its key's latest value), and for push and pull queries a stream's record whose value
    /// object is missing.
    fn drop_keyless_and_empty(&self, rows: &mut Rows<'_>) -> Result<()> {
        let table = self.plan.source.kind == SourceKind::Table;
        let objects = self.plan.skips_missing_values;
        let dropped = |i: usize, record: usize| {
            if table {
                rows.records
                    .get(record)
                    .is_some_and(|rec| rec.record.key.is_none())
            } else {
                objects && !rows.has_value.get(i).copied().unwrap_or(true)
            }
        };
        if !rows
            .rows_from
            .iter()
            .enumerate()
            .any(|(i, r)| dropped(i, *r))
        {
            return Ok(());
        }
        let keep: BooleanArray = rows
            .rows_from
            .iter()
            .enumerate()
            .map(|(i, r)| Some(!dropped(i, *r)))
            .collect();
        rows.retain(&keep)
    }

    /// `WHERE`: rows that fail it are dropped from a stream; a table forgets their key (a
    /// tombstone). A stream record without a value has no row for the filter to accept, and a
    /// row the condition cannot be evaluated on (a division by zero) is logged and dropped.
    fn filter(&self, rows: &mut Rows<'_>) -> Result<()> {
        let Some(filter) = &self.plan.filter else {
            return Ok(());
        };
        let table_source = self.plan.source.kind == SourceKind::Table;
        let n = rows.batch.num_rows();
        // A row the condition fails on is logged and does not pass.
        let (mask, _) = evaluate_step(
            filter,
            rows,
            ("Error evaluating WHERE", RecordErrorKind::Dropped),
        )?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .unwrap_or_else(|| BooleanArray::from(vec![false; n]));
        let passes = |i: usize| mask.is_valid(i) && mask.value(i);
        let keep: BooleanArray = (0..n)
            .map(|i| Some((rows.has_value[i] && passes(i)) || table_source))
            .collect();
        for i in 0..n {
            rows.tombstone[i] =
                rows.tombstone[i] || (table_source && rows.has_value[i] && !passes(i));
        }
        rows.retain(&keep)
    }
}

impl Operator for Projection<'_> {
    fn process(
        &mut self,
        _store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let decoded = self.plan.decoder.decode(input.partition, records)?;
        let mut rows = Rows::decoded(input.partition, records, decoded);
        self.drop_keyless_and_empty(&mut rows)?;
        self.project(rows)
    }
}

impl RowsOperator for Projection<'_> {
    fn process_rows(&mut self, _store: &Store, rows: Rows<'_>) -> Result<StepOutput> {
        self.project(rows)
    }
}

impl Projection<'_> {
    /// Filters, explodes and projects rows into sink records.
    fn project(&self, mut rows: Rows<'_>) -> Result<StepOutput> {
        self.filter(&mut rows)?;
        if !self.plan.table_functions.is_empty() {
            let (exploded, parents) = explode(&mut rows, self.plan)?;
            let pick = |v: &[bool]| parents.iter().map(|&p| v[p]).collect::<Vec<_>>();
            rows.has_value = pick(&rows.has_value);
            rows.tombstone = pick(&rows.tombstone);
            rows.rows_from = parents.iter().map(|&p| rows.rows_from[p]).collect();
            rows.batch = exploded;
        }
        self.encoder
            .emit((&self.plan.keys, &self.plan.values), rows)
    }
}

/// Applies the table functions: each input row becomes as many rows as its longest array,
/// with shorter arrays padded with nulls (as ksqlDB zips several `EXPLODE`s); a row a table
/// function fails on is logged and gives none. Returns the exploded batch and, for each of its
/// rows, the input row it came from.
fn explode(rows: &mut Rows<'_>, plan: &StatelessPlan) -> Result<(RecordBatch, Vec<usize>)> {
    let lists = plan
        .table_functions
        .iter()
        .map(|f| {
            let (array, _) = evaluate_step(
                f,
                rows,
                ("Error evaluating EXPLODE", RecordErrorKind::Dropped),
            )?;
            array
                .as_any()
                .downcast_ref::<ListArray>()
                .cloned()
                .ok_or_else(|| EngineError::internal("EXPLODE takes an array"))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = &rows.batch;
    let rows = batch.num_rows();
    let length = |list: &ListArray, row: usize| {
        if list.is_null(row) {
            0
        } else {
            list.value_length(row) as usize
        }
    };
    let mut parents = Vec::new();
    let mut elements: Vec<Vec<Option<u32>>> = vec![Vec::new(); lists.len()];
    for row in 0..rows {
        let count = lists.iter().map(|l| length(l, row)).max().unwrap_or(0);
        for j in 0..count {
            parents.push(row);
            for (list, picks) in lists.iter().zip(&mut elements) {
                let start = list.value_offsets()[row] as usize;
                picks.push((j < length(list, row)).then(|| (start + j) as u32));
            }
        }
    }
    let kernel = |e| EngineError::internal_from("cannot explode a batch", e);
    let parent_indices = UInt32Array::from_iter_values(parents.iter().map(|&p| p as u32));
    let mut columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &parent_indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(kernel)?;
    for (list, picks) in lists.iter().zip(elements) {
        let indices = UInt32Array::from(picks);
        columns.push(take(list.values().as_ref(), &indices, None).map_err(kernel)?);
    }
    let exploded = RecordBatch::try_new_with_options(
        plan.exploded_schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(parents.len())),
    )
    .map_err(kernel)?;
    Ok((exploded, parents))
}
