//! A join's results on their way out: each match as the sides' stored records, decoded back
//! with the sides' decoders and laid side by side as joined rows, and handed to the next stage
//! as records when the chain goes on.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use eddy_storage::{LogRecord, Record};

use super::JoinStage;
use super::state::{JoinState, Stored};
use crate::catalog::DataSource;
use crate::codec::{RowCodec, Schemas};
use crate::error::{EngineError, Result};
use crate::query::source::ROWPARTITION;
use crate::query::source::split_windowed_key;
use crate::schema::Column;

/// One joined result before it is decoded: the sides' records, the time and the key.
pub(super) struct Output {
    /// The left side's record, if the result has one.
    pub(super) left: Option<Stored>,
    /// The right side's record, if the result has one.
    pub(super) right: Option<Stored>,
    /// The result's time.
    pub(super) timestamp: i64,
    /// The join key, in the key converter's row format.
    pub(super) key: Vec<u8>,
    /// Whether the result deletes its key.
    pub(super) tombstone: bool,
    /// The input record that produced it.
    pub(super) from: usize,
    /// The row of the input batch that the triggering side's record is, when it is there.
    pub(super) current: Option<usize>,
}

/// One input row of a join kind: its join key, the record, whether it has a value, and the
/// index of its record among the input records.
pub(super) type InputRow = (Option<Vec<u8>>, Stored, bool, usize);

/// `this` and `other` as (left, right), `this` being on `side`.
pub(super) fn pair<T>(side: usize, this: Option<T>, other: Option<T>) -> (Option<T>, Option<T>) {
    if side == 0 {
        (this, other)
    } else {
        (other, this)
    }
}

/// Turns a stage's joined rows into records for the next stage, as a repartition topic would
/// carry them between nodes: the key columns and the rest, as JSON.
#[derive(Debug, Clone)]
pub struct Handoff {
    key_codec: RowCodec,
    value_codec: RowCodec,
    key_fields: Vec<usize>,
    value_fields: Vec<usize>,
}

impl Handoff {
    pub(super) fn new(rows: &DataSource, joined: &SchemaRef) -> Result<Self> {
        let keys: Vec<&Column> = rows.key_columns().collect();
        let values: Vec<&Column> = rows.value_columns().collect();
        let index = |c: &&Column| {
            joined
                .index_of(&c.name)
                .map_err(|e| EngineError::internal_from("a joined column is missing", e))
        };
        Ok(Handoff {
            // Joined rows are handed on as JSON, which needs no registry.
            key_codec: RowCodec::new(&rows.key_format, &keys, false, &Schemas::default())?,
            value_codec: RowCodec::new(&rows.value_format, &values, true, &Schemas::default())?,
            key_fields: keys.iter().map(index).collect::<Result<_>>()?,
            value_fields: values.iter().map(index).collect::<Result<_>>()?,
        })
    }

    /// The next stage's input records: one per result, a deleted result without a value.
    pub(super) fn records(
        &self,
        joined: &RecordBatch,
        outputs: &[Output],
        inputs: &[LogRecord],
        state: &mut JoinState,
    ) -> Result<Vec<LogRecord>> {
        let n = joined.num_rows();
        let pick = |fields: &[usize]| -> Vec<ArrayRef> {
            fields.iter().map(|&i| joined.column(i).clone()).collect()
        };
        let keys = self.key_codec.encode(&pick(&self.key_fields), n)?;
        let values = self
            .value_codec
            .encode_shared(&pick(&self.value_fields), n)?;
        Ok(outputs
            .iter()
            .zip(keys.into_iter().zip(values))
            .map(|(o, (key, value))| LogRecord {
                offset: state.next_sequence() as i64,
                record: Record {
                    key: key.map(Into::into),
                    value: if o.tombstone { None } else { value },
                    timestamp: o.timestamp,
                    headers: inputs[o.from].record.headers.clone(),
                },
            })
            .collect())
    }
}

/// Decodes the results' records with the sides' decoders and lays them side by side.
pub(super) fn joined_rows(
    plan: &JoinStage,
    state: &JoinState,
    outputs: &[Output],
    (trigger, current): (usize, &RecordBatch),
) -> Result<RecordBatch> {
    let n = outputs.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(plan.joined_schema.fields().len());
    for (side, input) in plan.sides().into_iter().enumerate() {
        fn slot_of(o: &Output, side: usize) -> Option<&Stored> {
            if side == 0 {
                o.left.as_ref()
            } else {
                o.right.as_ref()
            }
        }
        // The input's own rows are already decoded; only records from state are decoded here.
        let in_batch = |o: &Output| if side == trigger { o.current } else { None };
        let records: Vec<LogRecord> = outputs
            .iter()
            .filter(|o| in_batch(o).is_none())
            .filter_map(|o| slot_of(o, side))
            .map(Stored::log_record)
            .collect();
        let decoded = input.decoder.decode(0, &records)?;
        // Rows that fail to decode now (they decoded once) are left null.
        let bad: HashSet<i64> = decoded.errors.iter().map(|e| e.offset).collect();
        let mut row_of = Vec::with_capacity(records.len());
        let mut next = 0usize;
        for r in &records {
            if bad.contains(&r.offset) {
                row_of.push(None);
            } else {
                row_of.push(Some(next));
                next += 1;
            }
        }
        // Each row from the input batch (0), the decoded records (1), or a null row (2).
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut partitions: Vec<Option<i32>> = Vec::with_capacity(n);
        let mut k = 0;
        for o in outputs {
            match (in_batch(o), slot_of(o, side)) {
                (Some(row), s) => {
                    picks.push((0, row));
                    partitions.push(s.map(|s| s.partition as i32));
                }
                (None, Some(s)) => {
                    match row_of[k] {
                        Some(r) => {
                            picks.push((1, r));
                            partitions.push(Some(s.partition as i32));
                        }
                        None => {
                            picks.push((2, 0));
                            partitions.push(None);
                        }
                    }
                    k += 1;
                }
                (None, None) => {
                    picks.push((2, 0));
                    partitions.push(None);
                }
            }
        }
        for (i, field) in input.decoder.schema().fields().iter().enumerate() {
            if field.name() == ROWPARTITION {
                columns.push(Arc::new(Int32Array::from(partitions.clone())));
                continue;
            }
            let null = new_null_array(field.data_type(), 1);
            let from_input = if side == trigger && i < current.num_columns() {
                current.column(i).clone()
            } else {
                null.clone()
            };
            let from_state = if decoded.batch.num_rows() > 0 {
                decoded.batch.column(i).clone()
            } else {
                null.clone()
            };
            let sources: [&dyn Array; 3] =
                [from_input.as_ref(), from_state.as_ref(), null.as_ref()];
            columns.push(
                interleave(&sources, &picks)
                    .map_err(|e| EngineError::internal_from("cannot join rows", e))?,
            );
        }
    }
    columns.push(Arc::new(Int64Array::from_iter_values(
        outputs.iter().map(|o| o.timestamp),
    )));
    let key_arrays = if plan.key_column.is_some() || plan.keyed_by_window() {
        let rows: Vec<Option<Vec<u8>>> = outputs
            .iter()
            .map(|o| (!o.key.is_empty()).then(|| o.key.clone()))
            .collect();
        keys_arrays(state, plan, &rows)?
    } else {
        Vec::new()
    };
    if plan.keyed_by_window() {
        columns.extend(key_arrays.iter().skip(1).take(2).cloned());
    } else if let Some(window) = &plan.window {
        // A windowed table's foreign-key join: each result has its left row's window.
        let bounds: Vec<Option<(i64, i64)>> = outputs
            .iter()
            .map(|o| {
                let key = o.left.as_ref()?.key.as_deref()?;
                split_windowed_key(key, window).map(|(_, start, end)| (start, end))
            })
            .collect();
        columns.push(Arc::new(Int64Array::from_iter(
            bounds.iter().map(|b| b.map(|b| b.0)),
        )));
        columns.push(Arc::new(Int64Array::from_iter(
            bounds.iter().map(|b| b.map(|b| b.1)),
        )));
    }
    let key_array = if plan.key_column.is_some() {
        key_arrays.first().cloned()
    } else {
        None
    };
    if plan.joined_schema.fields().len() > columns.len()
        && let Some(keys) = &key_array
    {
        columns.push(keys.clone());
    }
    if let (Some(index), Some(keys)) = (plan.key_column, key_array)
        && index < columns.len()
    {
        columns[index] = keys;
    }
    RecordBatch::try_new_with_options(
        plan.joined_schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| EngineError::internal_from("cannot join rows", e))
}

/// The join keys (and window bounds) as arrays, back from the converter's format.
fn keys_arrays(
    state: &JoinState,
    plan: &JoinStage,
    keys: &[Option<Vec<u8>>],
) -> Result<Vec<ArrayRef>> {
    let present: Vec<&Vec<u8>> = keys.iter().flatten().collect();
    if present.is_empty() {
        let mut arrays = vec![new_null_array(&plan.key_type, keys.len())];
        if plan.keyed_by_window() {
            arrays.push(new_null_array(&DataType::Int64, keys.len()));
            arrays.push(new_null_array(&DataType::Int64, keys.len()));
        }
        return Ok(arrays);
    }
    let parser = state.converter.parser();
    let rows: Vec<_> = present.iter().map(|k| parser.parse(k)).collect();
    let converted = state
        .converter
        .convert_rows(rows)
        .map_err(|e| EngineError::internal_from("cannot read a join key", e))?;
    let mut next = 0u32;
    let indices: UInt32Array = keys
        .iter()
        .map(|k| {
            k.as_ref().map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect();
    converted
        .iter()
        .map(|values| {
            take(values.as_ref(), &indices, None)
                .map_err(|e| EngineError::internal_from("cannot read a join key", e))
        })
        .collect()
}
