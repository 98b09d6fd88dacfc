//! A join whose rows are aggregated by other columns than the join key, split among the nodes
//! of a service in two parts, as ksqlDB's join feeds its `GroupBy` repartition step:
//!
//! - the join's tasks (one per partition number of its sources) send each joined row, as a
//!   record, to the partition of the query's `-Aggregate-GroupBy-repartition` topic that its
//!   group's key hashes to ([`RegroupRouter`]);
//! - one aggregation task per partition of that topic reads the rows back and aggregates them
//!   ([`RegroupedAggregation`]), with state of its own.
//!
//! A joined row travels as one record: its key is the group's key as the result writes it,
//! its value every column of the joined row (both sides' columns and pseudo-columns, the
//! result's `ROWTIME`, window bounds, a synthetic key) as a JSON object, its timestamp the
//! row's, and its headers those of the record that made it. JSON needs no registry and reads
//! back every ksqlDB type as it was written.

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use eddy_storage::{LogRecord, Record, Store};

use crate::catalog::DataSource;
use crate::codec::{RowCodec, Schemas};
use crate::error::{EngineError, Result};
use crate::format::{Format, FormatSpec};
use crate::query::aggregate::{AggregatePlan, Aggregation, GroupRouting};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, RowsOperator, StepOutput};
use crate::query::rows::Rows;
use crate::query::source::{RecordError, RecordErrorKind};
use crate::schema::{Column, ColumnKind};

/// Joined rows as records and back: every column as a JSON object's field.
pub(crate) struct JoinedRowCodec {
    schema: SchemaRef,
    codec: RowCodec,
}

impl JoinedRowCodec {
    /// The codec of rows of `schema` (a join's last stage's joined rows).
    pub(crate) fn new(schema: &SchemaRef) -> Result<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = eddy_sql::types::from_arrow(f.data_type()).map_err(|e| {
                    EngineError::internal(format!(
                        "joined column {} cannot be carried between tasks: {e}",
                        f.name()
                    ))
                })?;
                Ok(Column {
                    name: f.name().clone(),
                    ty,
                    kind: ColumnKind::Value,
                })
            })
            .collect::<Result<Vec<Column>>>()?;
        let refs: Vec<&Column> = columns.iter().collect();
        Ok(JoinedRowCodec {
            schema: schema.clone(),
            codec: RowCodec::new(
                &FormatSpec::of(Format::Json),
                &refs,
                true,
                &Schemas::default(),
            )?,
        })
    }

    /// Each row of `batch` as a record's value.
    fn encode(&self, batch: &RecordBatch) -> Result<Vec<Option<Bytes>>> {
        self.codec.encode_shared(batch.columns(), batch.num_rows())
    }

    /// The rows `values` hold, one per value (a missing value's row is null), and the values
    /// that could not be read, by index, with the reason.
    fn decode(&self, values: &[Option<&[u8]>]) -> Result<(RecordBatch, Vec<(usize, String)>)> {
        let decoded = self.codec.decode(values);
        let columns = decoded
            .columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(array, field)| {
                if array.data_type() == field.data_type() {
                    Ok(array)
                } else {
                    cast(array.as_ref(), field.data_type())
                        .map_err(|e| EngineError::internal_from("cannot read a joined row", e))
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(values.len())),
        )
        .map_err(|e| EngineError::internal_from("cannot read joined rows", e))?;
        Ok((batch, decoded.errors))
    }
}

/// The end of a split join's task: each joined row to the partition of its group.
pub(crate) struct RegroupRouter<'p> {
    plan: &'p AggregatePlan,
    routing: GroupRouting<'p>,
    codec: JoinedRowCodec,
}

impl<'p> RegroupRouter<'p> {
    /// The router of the rows of a join (of `joined` schema) that `plan` aggregates, over
    /// the `partitions` partitions of the repartition topic, by their groups' keys as `sink`
    /// writes them.
    pub(crate) fn new(
        plan: &'p AggregatePlan,
        joined: &SchemaRef,
        (sink, partitions, schemas): (&DataSource, u32, &Schemas),
    ) -> Result<Self> {
        Ok(RegroupRouter {
            plan,
            routing: GroupRouting::new(plan, (sink, partitions, schemas))?,
            codec: JoinedRowCodec::new(joined)?,
        })
    }

    /// Keeps the rows the aggregation may take: those with a value that `WHERE` does not
    /// reject. A row `WHERE` fails on goes on, for the aggregation's task to log it.
    fn keep_aggregated(&self, rows: &mut Rows<'_>) -> Result<()> {
        let mut keep = rows.has_value.clone();
        if let Some(filter) = &self.plan.filter {
            let (mask, failed) = evaluate_step(
                filter,
                rows,
                ("Error evaluating WHERE", RecordErrorKind::Dropped),
            )?;
            if let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() {
                for (i, k) in keep.iter_mut().enumerate() {
                    *k = *k && (failed[i] || (mask.is_valid(i) && mask.value(i)));
                }
            }
        }
        rows.retain(&BooleanArray::from(keep))
    }
}

impl Operator for RegroupRouter<'_> {
    fn process(
        &mut self,
        _store: &Store,
        _input: &Input,
        _records: &[LogRecord],
    ) -> Result<StepOutput> {
        Err(EngineError::internal(
            "a joined rows' router was given records instead of joined rows",
        ))
    }
}

impl RowsOperator for RegroupRouter<'_> {
    fn process_rows(&mut self, _store: &Store, mut rows: Rows<'_>) -> Result<StepOutput> {
        // The join's own failures are logged here; what fails below is the aggregation's.
        let errors = std::mem::take(&mut rows.errors);
        self.keep_aggregated(&mut rows)?;
        let routed = self.routing.route(&mut rows)?;
        let values = self.codec.encode(&rows.batch)?;
        let own = rows.partition % self.routing.partitions().max(1);
        let mut out = StepOutput {
            errors,
            ..StepOutput::empty()
        };
        for (row, (routed, value)) in routed.into_iter().zip(values).enumerate() {
            let made_by = &rows.record(row).record;
            // A row whose group fails stays on this partition number, to be logged there.
            let (partition, key) = routed.unwrap_or((own, None));
            out.records.push(Record {
                key: key.map(Bytes::from),
                value,
                timestamp: made_by.timestamp,
                headers: made_by.headers.clone(),
            });
            out.routes.push(partition);
        }
        Ok(out)
    }
}

/// A task aggregating the joined rows its partition of the repartition topic holds.
pub(crate) struct RegroupedAggregation<'p> {
    codec: JoinedRowCodec,
    then: Aggregation<'p>,
}

impl<'p> RegroupedAggregation<'p> {
    /// `then` over the rows of a join of `joined` schema, read back from records.
    pub(crate) fn new(joined: &SchemaRef, then: Aggregation<'p>) -> Result<Self> {
        Ok(RegroupedAggregation {
            codec: JoinedRowCodec::new(joined)?,
            then,
        })
    }
}

impl Operator for RegroupedAggregation<'_> {
    fn process(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let values: Vec<Option<&[u8]>> =
            records.iter().map(|r| r.record.value.as_deref()).collect();
        let (batch, failed) = self.codec.decode(&values)?;
        let mut readable = vec![true; records.len()];
        let mut errors = Vec::with_capacity(failed.len());
        for (i, reason) in failed {
            readable[i] = false;
            errors.push(RecordError {
                kind: RecordErrorKind::Value,
                partition: input.partition,
                offset: records[i].offset,
                reason: format!("a joined row could not be read: {reason}"),
            });
        }
        let batch = if errors.is_empty() {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::from(readable.clone()))
                .map_err(|e| EngineError::internal_from("cannot filter joined rows", e))?
        };
        let rows_from: Vec<usize> = (0..records.len()).filter(|&i| readable[i]).collect();
        let has_value: Vec<bool> = rows_from.iter().map(|&i| values[i].is_some()).collect();
        let rows = Rows {
            partition: input.partition,
            records,
            batch,
            tombstone: has_value.iter().map(|v| !v).collect(),
            has_value,
            rows_from,
            retract: Vec::new(),
            errors,
        };
        self.then.process_rows(store, rows)
    }

    fn advance_time(&mut self, store: &Store) -> Result<StepOutput> {
        self.then.advance_time(store)
    }

    fn flush(&mut self, store: &Store) -> Result<StepOutput> {
        self.then.flush(store)
    }

    fn state_namespace(&self) -> Option<&str> {
        self.then.state_namespace()
    }

    fn record_cache(&self) -> Option<usize> {
        self.then.record_cache()
    }

    fn cached_state(&self) -> usize {
        self.then.cached_state()
    }

    fn drop_cached_state(&mut self) {
        self.then.drop_cached_state();
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Decimal128Array, Int32Array, Int64Array, ListArray, StringArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};

    use std::sync::Arc;

    use super::*;

    fn joined() -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("L_ID", DataType::Int32, true),
            Field::new("L_ROWTIME", DataType::Int64, true),
            Field::new("R_name", DataType::Utf8, true),
            Field::new("R_PRICE", DataType::Decimal128(10, 2), true),
            Field::new(
                "R_TAGS",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
            Field::new("ROWTIME", DataType::Int64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(1), None])),
            Arc::new(Int64Array::from(vec![Some(10), Some(11)])),
            Arc::new(StringArray::from(vec![Some("a \"quoted\" name"), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), Some(-5)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
            ])),
            Arc::new(Int64Array::from(vec![Some(10), Some(20)])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        (schema, batch)
    }

    #[test]
    fn joined_rows_read_back_as_they_were_written() {
        let (schema, batch) = joined();
        let codec = JoinedRowCodec::new(&schema).unwrap();
        let values = codec.encode(&batch).unwrap();
        let payloads: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        let (back, failed) = codec.decode(&payloads).unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(back, batch);
    }

    #[test]
    fn a_value_that_is_not_a_joined_row_is_reported_not_read() {
        let (schema, _) = joined();
        let codec = JoinedRowCodec::new(&schema).unwrap();
        let payloads: Vec<Option<&[u8]>> = vec![Some(b"{\"L_ID\": \"x\"}"), Some(b"\xff[")];
        let (back, failed) = codec.decode(&payloads).unwrap();
        assert_eq!(back.num_rows(), 2);
        let bad: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        assert!(bad.contains(&1), "{failed:?}");
        assert!(back.column(0).is_null(1));
    }
}
