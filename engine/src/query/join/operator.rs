//! Running a join: records of one source go through every stage after it (each stage decodes
//! them, keys them, and asks its join kind what they join with), and the last stage's joined
//! rows go to the projection or aggregation that follows.

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use eddy_storage::{LogRecord, Record, Store};

use super::rows::{Output, joined_rows};
use super::state::{JoinState, Stored, keys};
use super::{
    JoinChain, JoinShape, JoinStage, foreign_key, stream_stream, stream_table, stream_window,
    table_table,
};
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, RowsOperator, StepOutput};
use crate::query::rows::Rows;
use crate::query::source::{ROWTIME, RecordError, RecordErrorKind, WINDOWEND, WINDOWSTART};
use crate::query::state::StateWrites;

/// The operator of a join: its chain of stages with their state, and what takes its rows.
pub(crate) struct Join<'p> {
    chain: &'p JoinChain,
    states: Vec<JoinState>,
    then: Box<dyn RowsOperator + 'p>,
}

impl<'p> Join<'p> {
    /// The joins of `chain`, their state read back from the store, feeding `then`.
    pub(crate) fn new(
        store: &Store,
        namespace: &str,
        chain: &'p JoinChain,
        then: Box<dyn RowsOperator + 'p>,
    ) -> Result<Self> {
        Ok(Join {
            states: chain.load_states(store, namespace)?,
            chain,
            then,
        })
    }

    /// A table result deletes only keys it holds: a row that was never in it (filtered out,
    /// or never joined) needs no tombstone. (Foreign-key joins, as in ksqlDB, always propagate
    /// a deletion; a table-table join is never aggregated in the same query.)
    fn drop_needless_tombstones(&mut self, step: &mut StepOutput) -> Result<()> {
        let last = self.chain.stages.len().saturating_sub(1);
        let (Some(stage), Some(state)) = (self.chain.stages.last(), self.states.get_mut(last))
        else {
            return Ok(());
        };
        if stage.shape != JoinShape::TableTable {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(step.records.len());
        for record in std::mem::take(&mut step.records) {
            let mut present = vec![keys::PRESENT];
            present.extend_from_slice(record.key.as_deref().unwrap_or_default());
            let held = state.contains(&present)?;
            if record.value.is_some() {
                if !held {
                    state.put(present, Vec::new());
                }
            } else if held {
                state.delete(&present);
            } else {
                continue;
            }
            kept.push(record);
        }
        step.records = kept;
        step.writes.append(&mut state.writes);
        Ok(())
    }
}

impl Operator for Join<'_> {
    fn process(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let JoinedRows {
            batch,
            results,
            tombstone,
            errors,
            writes,
        } = join_rows(
            self.chain,
            &mut self.states,
            input.side,
            input.partition,
            records,
        )?;
        let mut out = StepOutput {
            writes,
            ..StepOutput::empty()
        };
        let Some(batch) = batch else {
            out.errors = errors;
            return Ok(out);
        };
        let rows = Rows::joined(input.partition, &results, batch, tombstone, errors);
        let mut step = self.then.process_rows(store, rows)?;
        self.drop_needless_tombstones(&mut step)?;
        out.extend(step);
        Ok(out)
    }

    fn advance_time(&mut self, store: &Store) -> Result<StepOutput> {
        self.then.advance_time(store)
    }

    fn flush(&mut self, store: &Store) -> Result<StepOutput> {
        self.then.flush(store)
    }

    fn state_namespace(&self) -> Option<&str> {
        self.states
            .first()
            .map(JoinState::namespace)
            .or_else(|| self.then.state_namespace())
    }

    fn record_cache(&self) -> Option<usize> {
        self.then.record_cache()
    }

    fn cached_state(&self) -> usize {
        let joins: usize = self.states.iter().map(JoinState::cached_entries).sum();
        joins + self.then.cached_state()
    }

    fn drop_cached_state(&mut self) {
        for state in &mut self.states {
            state.drop_cached();
        }
        self.then.drop_cached_state();
    }
}

/// What a chain of joins made of some records: the last stage's joined rows, a record standing
/// for each (the one that produced it, stamped with the result's time), which rows delete their
/// key, the records that failed, and the state changes.
struct JoinedRows {
    /// The rows, or none when nothing joined.
    pub batch: Option<RecordBatch>,
    /// For each row, the input record that produced it, with the row's timestamp.
    pub results: Vec<LogRecord>,
    /// For each row, whether it deletes its key.
    pub tombstone: Vec<bool>,
    /// Records that could not be read.
    pub errors: Vec<RecordError>,
    /// State changes of every stage.
    pub writes: StateWrites,
}

/// Runs records of one of the chain's sources through every stage after it.
fn join_rows(
    chain: &JoinChain,
    states: &mut [JoinState],
    source: usize,
    partition: u32,
    records: &[LogRecord],
) -> Result<JoinedRows> {
    let (mut stage, mut side) = JoinChain::entry(source);
    let mut partition = partition;
    let mut handed: Option<Vec<LogRecord>> = None;
    let mut errors = Vec::new();
    let mut writes: StateWrites = Vec::new();
    loop {
        let input: &[LogRecord] = handed.as_deref().unwrap_or(records);
        let (Some(current), Some(state)) = (chain.stages.get(stage), states.get_mut(stage)) else {
            return Err(EngineError::internal("a join stage without its state"));
        };
        let (outputs, batch, stage_errors) = join_step(current, state, side, partition, input)?;
        errors.extend(stage_errors);
        if outputs.is_empty() {
            writes.append(&mut state.writes);
            return Ok(JoinedRows {
                batch: None,
                results: Vec::new(),
                tombstone: Vec::new(),
                errors,
                writes,
            });
        }
        let joined = joined_rows(current, state, &outputs, (side, &batch))?;
        if let Some(handoff) = &current.handoff {
            let next = handoff.records(&joined, &outputs, input, state)?;
            writes.append(&mut state.writes);
            handed = Some(next);
            stage += 1;
            side = 0;
            partition = 0;
            continue;
        }
        let results: Vec<LogRecord> = outputs
            .iter()
            .map(|o| {
                let input = &input[o.from];
                LogRecord {
                    offset: input.offset,
                    record: Record {
                        key: None,
                        value: None,
                        timestamp: o.timestamp,
                        headers: input.record.headers.clone(),
                    },
                }
            })
            .collect();
        writes.append(&mut state.writes);
        return Ok(JoinedRows {
            batch: Some(joined),
            results,
            tombstone: outputs.iter().map(|o| o.tombstone).collect(),
            errors,
            writes,
        });
    }
}

/// Joins records arriving on one side of a stage: the results, the decoded input rows they
/// may take their side from, and the records that could not be decoded.
fn join_step(
    plan: &JoinStage,
    state: &mut JoinState,
    side: usize,
    partition: u32,
    records: &[LogRecord],
) -> Result<(Vec<Output>, RecordBatch, Vec<RecordError>)> {
    let input = plan.sides()[side];
    let decoded = input.decoder.decode(partition, records)?;
    let mut rows = Rows::decoded(partition, records, decoded);
    // A row whose key cannot be computed is logged and joins nothing, as a null key.
    let (key_values, _) = evaluate_step(
        &input.key,
        &mut rows,
        ("Error computing the join key", RecordErrorKind::Dropped),
    )?;
    let Rows {
        batch,
        rows_from,
        has_value,
        errors,
        ..
    } = rows;
    let mut key_columns = vec![key_values];
    if plan.keyed_by_window() {
        for bound in [WINDOWSTART, WINDOWEND] {
            let column = batch.column_by_name(bound).cloned().ok_or_else(|| {
                EngineError::internal(format!("a windowed source without {bound}"))
            })?;
            key_columns.push(column);
        }
    }
    let join_keys = state.join_keys(&key_columns)?;
    let mut outputs = Vec::new();
    for (row, &from) in rows_from.iter().enumerate() {
        let record = &records[from];
        let stored = Stored {
            key: record.record.key.as_ref().map(|k| k.to_vec()),
            value: record.record.value.as_ref().map(|v| v.to_vec()),
            timestamp: batch_rowtime(&batch, row).unwrap_or(record.record.timestamp),
            partition,
            offset: record.offset,
            headers: record.record.headers.clone(),
        };
        let has_value = has_value[row];
        let key = join_keys[row].clone();
        let (offset, before) = (stored.offset, outputs.len());
        let input_row = (key, stored, has_value, from);
        match plan.shape {
            JoinShape::StreamStream(window) => stream_stream::stream_stream(
                plan.join_type,
                window,
                state,
                side,
                input_row,
                &mut outputs,
            )?,
            JoinShape::StreamTable => {
                stream_table::stream_table(plan.join_type, state, side, input_row, &mut outputs)?
            }
            JoinShape::TableTable => {
                table_table::table_table(plan.join_type, state, side, input_row, &mut outputs)?
            }
            JoinShape::ForeignKey => {
                foreign_key::foreign_key(plan.join_type, state, side, input_row, &mut outputs)?
            }
            JoinShape::StreamWindow { size, rows } => {
                let row_window = (side == 1)
                    .then(|| batch_window_start(&batch, row))
                    .flatten();
                stream_window::stream_window(
                    (plan.join_type, size, rows),
                    state,
                    side,
                    input_row,
                    row_window,
                    &mut outputs,
                )?
            }
        }
        // Results holding this very record take it from the decoded batch.
        for o in &mut outputs[before..] {
            let slot = if side == 0 { &o.left } else { &o.right };
            if slot
                .as_ref()
                .is_some_and(|s| s.offset == offset && s.partition == partition)
            {
                o.current = Some(row);
            }
        }
    }
    Ok((outputs, batch, errors))
}

/// The `ROWTIME` of row `row`, if it has one.
fn batch_rowtime(batch: &RecordBatch, row: usize) -> Option<i64> {
    int64_at(batch, ROWTIME, row)
}

/// The `WINDOWSTART` of a windowed source's row `row`.
fn batch_window_start(batch: &RecordBatch, row: usize) -> Option<i64> {
    int64_at(batch, WINDOWSTART, row)
}

/// Column `name` of row `row`, if it is there and not null.
fn int64_at(batch: &RecordBatch, name: &str, row: usize) -> Option<i64> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .filter(|c| c.is_valid(row))
        .map(|c| c.value(row))
}
