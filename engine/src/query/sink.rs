//! The end of every operator: computing the sink's key and value columns over result rows and
//! encoding them as records of the sink, with their timestamps, windows and headers.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use eddy_storage::Record;

use crate::catalog::{DataSource, WindowInfo};
use crate::codec::{RowCodec, Schemas};
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::query::evaluate::{evaluate_rows, note_function_errors};
use crate::query::operator::StepOutput;
use crate::query::rows::Rows;
use crate::query::source::{
    ROWTIME, RecordError, RecordErrorKind, WINDOWEND, WINDOWSTART, append_window,
};
use crate::schema::{Column, ColumnKind};

/// A column the query writes, and how it is computed.
#[derive(Debug, Clone)]
pub struct OutputColumn {
    /// The column, as the sink declares it.
    pub column: Column,
    /// Its value for each input row.
    pub expr: Arc<dyn PhysicalExpr>,
}

impl OutputColumn {
    /// The column cast to `ty`, which its values widen to (see
    /// [`eddy_sql::coercion::widens_to`]).
    pub(crate) fn cast_to(&mut self, ty: &eddy_sql::ast::SqlType) -> Result<()> {
        let arrow = eddy_sql::types::to_arrow(ty)
            .map_err(|e| crate::error::EngineError::statement(e.to_string()))?;
        self.expr = Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
            self.expr.clone(),
            arrow,
            None,
        ));
        self.column.ty = ty.clone();
        Ok(())
    }
}

/// The columns `keys` and then `values` compute, as the sink declares them.
pub(crate) fn output_columns(keys: &[OutputColumn], values: &[OutputColumn]) -> Vec<Column> {
    keys.iter()
        .chain(values)
        .map(|c| c.column.clone())
        .collect()
}

/// A column of the sink, by its index among the key or among the value columns.
#[derive(Debug, Clone, Copy)]
enum SinkColumn {
    Key(usize),
    Value(usize),
}

/// Encodes result rows as records of the sink.
#[derive(Debug, Clone)]
pub struct SinkEncoder {
    /// The sink's columns, keys first.
    columns: Vec<Column>,
    key_codec: Option<RowCodec>,
    value_codec: RowCodec,
    /// The sink's `TIMESTAMP` column.
    timestamp_column: Option<SinkColumn>,
    /// A delimited key of only nulls is written as no key, not as empty fields.
    null_key_when_all_null: bool,
    /// The sink's window, appended to each key.
    window: Option<WindowInfo>,
}

impl SinkEncoder {
    /// An encoder for `sink`'s formats and columns.
    pub fn new(sink: &DataSource, schemas: &Schemas) -> Result<Self> {
        let keys: Vec<&Column> = sink.key_columns().collect();
        let values: Vec<&Column> = sink.value_columns().collect();
        let key_codec = if keys.is_empty() || sink.key_format.format == Format::None {
            None
        } else {
            Some(RowCodec::new(&sink.key_format, &keys, false, schemas)?)
        };
        let value_codec = RowCodec::new(
            &sink.value_format,
            &values,
            sink.wrap_single_value.unwrap_or(true),
            schemas,
        )?;
        let timestamp_column = sink.timestamp_column.as_ref().and_then(|name| {
            keys.iter()
                .position(|c| &c.name == name)
                .map(SinkColumn::Key)
                .or_else(|| {
                    values
                        .iter()
                        .position(|c| &c.name == name)
                        .map(SinkColumn::Value)
                })
        });
        Ok(SinkEncoder {
            columns: sink.columns.clone(),
            window: sink.window,
            null_key_when_all_null: sink.key_format.format == Format::Delimited,
            key_codec,
            value_codec,
            timestamp_column,
        })
    }

    /// The sink keys of `batch`'s rows, without windows: what the partitioner hashes.
    pub(crate) fn encode_keys(
        &self,
        key_outputs: &[OutputColumn],
        batch: &RecordBatch,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let rows = batch.num_rows();
        let mut failed = vec![None; rows];
        let (keys, _) = self.evaluate_outputs((key_outputs, &[]), batch, &mut failed)?;
        match &self.key_codec {
            Some(codec) => codec.encode(&keys, rows),
            None => Ok(vec![None; rows]),
        }
    }

    /// Computes the sink's key and value columns over `rows` and encodes them as records: a
    /// row whose expression fails gets a null there and goes on, noted among the errors.
    pub(crate) fn emit(
        &self,
        (key_outputs, value_outputs): (&[OutputColumn], &[OutputColumn]),
        rows: Rows<'_>,
    ) -> Result<StepOutput> {
        let Rows {
            partition,
            records,
            batch,
            rows_from,
            has_value,
            tombstone,
            mut errors,
            ..
        } = rows;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(StepOutput {
                errors,
                ..StepOutput::empty()
            });
        }
        let mut failed: Vec<Option<String>> = vec![None; rows];
        let (arrays, function_errors) = eddy_sql::functions::collect_function_errors(|| {
            self.evaluate_outputs((key_outputs, value_outputs), &batch, &mut failed)
        });
        let (key_arrays, value_arrays) = arrays?;
        note_function_errors(function_errors, &mut failed);
        let keys = self.keys(&key_arrays, &batch, rows)?;
        let values = self.value_codec.encode_shared(&value_arrays, rows)?;
        let rowtimes = int64_column(&batch, ROWTIME);
        let sink_times = match self.timestamp_column {
            Some(SinkColumn::Key(i)) => key_arrays.get(i),
            Some(SinkColumn::Value(i)) => value_arrays.get(i),
            None => None,
        }
        .map(|a| cast(a, &DataType::Int64))
        .and_then(|a| a.ok())
        .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned());
        let valid = |times: &Option<Int64Array>, i: usize| {
            times.as_ref().filter(|t| t.is_valid(i)).map(|t| t.value(i))
        };
        let mut out = Vec::with_capacity(rows);
        for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
            let input = &records[rows_from[i]];
            // A failed expression is null in the output, and the record still goes on, as in ksqlDB.
            if let Some(reason) = failed[i].take() {
                errors.push(RecordError {
                    kind: RecordErrorKind::Expression,
                    partition,
                    offset: input.offset,
                    reason,
                });
            }
            let timestamp = valid(&sink_times, i)
                .or_else(|| valid(&rowtimes, i))
                .unwrap_or(input.record.timestamp);
            if timestamp < 0 {
                errors.push(RecordError {
                    kind: RecordErrorKind::Timestamp,
                    partition,
                    offset: input.offset,
                    reason: format!("The output timestamp {timestamp} is negative"),
                });
                continue;
            }
            let value = if has_value[i] && !tombstone[i] {
                value
            } else {
                None
            };
            out.push(Record {
                key: key.map(Into::into),
                value,
                timestamp,
                headers: input.record.headers.clone(),
            });
        }
        Ok(StepOutput {
            records: out,
            errors,
            ..StepOutput::empty()
        })
    }

    /// The encoded keys of `rows` rows: no key for an all-null delimited key, and a windowed
    /// sink's window after each.
    fn keys(
        &self,
        key_arrays: &[ArrayRef],
        batch: &RecordBatch,
        rows: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut keys = match &self.key_codec {
            Some(codec) => codec.encode(key_arrays, rows)?,
            // A windowed table without key columns is keyed by its window alone.
            None if self.window.is_some() => vec![Some(Vec::new()); rows],
            None => vec![None; rows],
        };
        if self.null_key_when_all_null && !key_arrays.is_empty() {
            for (i, key) in keys.iter_mut().enumerate() {
                if key_arrays.iter().all(|a| a.is_null(i)) {
                    *key = None;
                }
            }
        }
        if let Some(window) = &self.window
            && let (Some(starts), Some(ends)) = (
                int64_column(batch, WINDOWSTART),
                int64_column(batch, WINDOWEND),
            )
        {
            for (i, key) in keys.iter_mut().enumerate() {
                if let Some(key) = key
                    && starts.is_valid(i)
                {
                    append_window(key, window, starts.value(i), ends.value(i));
                }
            }
        }
        Ok(keys)
    }

    /// Evaluates the key and value columns of the result, cast to the sink's types.
    fn evaluate_outputs(
        &self,
        (key_outputs, value_outputs): (&[OutputColumn], &[OutputColumn]),
        batch: &RecordBatch,
        failed: &mut [Option<String>],
    ) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let mut of_kind = |outputs: &[OutputColumn], kind: ColumnKind| {
            outputs
                .iter()
                .zip(self.columns.iter().filter(|c| c.kind == kind))
                .map(|(o, c)| {
                    let what = format!("Error computing expression {}", o.column.name);
                    to_sink_type(evaluate_rows(&o.expr, batch, &what, failed)?, c)
                })
                .collect::<Result<Vec<_>>>()
        };
        let keys = of_kind(key_outputs, ColumnKind::Key)?;
        let values = of_kind(value_outputs, ColumnKind::Value)?;
        Ok((keys, values))
    }
}

/// The `Int64` column `name` of `batch`, if it has one.
fn int64_column(batch: &RecordBatch, name: &str) -> Option<Int64Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
}

/// Casts a computed column to the type the sink declares, when they differ.
fn to_sink_type(array: ArrayRef, column: &Column) -> Result<ArrayRef> {
    let target = eddy_sql::types::to_arrow(&column.ty)
        .map_err(|e| EngineError::internal_from("a sink column has no Arrow type", e))?;
    if array.data_type() == &target {
        return Ok(array);
    }
    crate::insert::coerce(array, &target)
}
