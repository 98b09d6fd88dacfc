//! Aggregating a table: a record replaces its key's row, so the row's previous value is taken
//! back out of its group (retracted) before the new value goes in. The previous values live in
//! the aggregation's state, kept as they were read.

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use eddy_storage::{LogRecord, Record, Store};

use super::AggregatePlan;
use super::state::AggregateState;
use crate::error::{EngineError, Result};
use crate::query::rows::Rows;
use crate::query::state::{StateWrites, aggregate_keys, prefixed};

/// A table source's changes: for each record, its key's previous row (retracted) and then its
/// new row (added). The previous rows live in the state store, kept as they were read.
pub(super) fn table_changes<'r>(
    store: &Store,
    plan: &AggregatePlan,
    state: &mut AggregateState,
    partition: u32,
    records: &'r [LogRecord],
    writes: &mut StateWrites,
) -> Result<Rows<'r>> {
    let last = LastRows {
        namespace: &state.namespace,
        rows: &mut state.rows,
    };
    Ok(changes(store, plan, last, partition, records, writes)?.0)
}

/// A table's last row per key, as read (cached from the state namespace): what the next
/// change of the key retracts.
pub(super) struct LastRows<'s> {
    pub(super) namespace: &'s str,
    pub(super) rows: &'s mut std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// As [`table_changes`], with each record's previous row as a record (the one a retracting
/// row stands for), by the record's index.
pub(super) fn changes<'r>(
    store: &Store,
    plan: &AggregatePlan,
    state: LastRows<'_>,
    partition: u32,
    records: &'r [LogRecord],
    writes: &mut StateWrites,
) -> Result<(Rows<'r>, Vec<Option<LogRecord>>)> {
    let stored_row_key = |key: &[u8]| prefixed(aggregate_keys::TABLE_ROW, key);
    let mut olds: Vec<Option<LogRecord>> = Vec::with_capacity(records.len());
    for record in records {
        let key = record.record.key.as_deref().unwrap_or_default().to_vec();
        if !state.rows.contains_key(&key) {
            let stored = store.state_get(state.namespace, &stored_row_key(&key))?;
            state.rows.insert(key.clone(), stored);
        }
        let previous = state.rows.get(&key).cloned().flatten();
        // A retraction happens at the time of the record that replaces the row.
        olds.push(previous.map(|value| LogRecord {
            offset: record.offset,
            record: Record {
                key: record.record.key.clone(),
                value: Some(value.into()),
                timestamp: record.record.timestamp,
                headers: Vec::new(),
            },
        }));
        let now = record.record.value.as_ref().map(|v| v.to_vec());
        writes.push((stored_row_key(&key), now.clone()));
        state.rows.insert(key, now);
    }
    let new = plan.decoder.decode(partition, records)?;
    let old_records: Vec<LogRecord> = olds.iter().flatten().cloned().collect();
    let old = plan.decoder.decode(partition, &old_records)?;
    // Map each record to its row in the decoded batches (records that failed are missing).
    let index =
        |batch_offsets: &[i64], offset: i64| batch_offsets.iter().position(|o| *o == offset);
    let offsets = |b: &RecordBatch| -> Vec<i64> {
        b.column_by_name(crate::query::source::ROWOFFSET)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .map(|a| a.iter().map(|o| o.unwrap_or(-1)).collect())
            .unwrap_or_default()
    };
    let old_offsets = offsets(&old.batch);
    let new_bad: std::collections::HashSet<i64> = new.errors.iter().map(|e| e.offset).collect();
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let (mut rows_from, mut retract, mut has_value) = (Vec::new(), Vec::new(), Vec::new());
    let mut next_new = 0usize;
    for (i, record) in records.iter().enumerate() {
        if olds[i].is_some()
            && let Some(row) = index(&old_offsets, record.offset)
        {
            picks.push((0, row));
            rows_from.push(i);
            retract.push(true);
            has_value.push(true);
        }
        if new_bad.contains(&record.offset) {
            continue;
        }
        let row = next_new;
        next_new += 1;
        if record.record.value.is_some() {
            picks.push((1, row));
            rows_from.push(i);
            retract.push(false);
            has_value.push(true);
        }
    }
    let columns = (0..plan.decoder.schema().fields().len())
        .map(|c| {
            let sources = [old.batch.column(c).as_ref(), new.batch.column(c).as_ref()];
            datafusion::arrow::compute::interleave(&sources, &picks)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| EngineError::internal_from("cannot lay a table's changes out", e))?;
    let batch = RecordBatch::try_new_with_options(
        plan.decoder.schema().clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(picks.len())),
    )
    .map_err(|e| EngineError::internal_from("cannot lay a table's changes out", e))?;
    let rows = Rows {
        partition,
        records,
        tombstone: vec![false; batch.num_rows()],
        batch,
        rows_from,
        has_value,
        retract,
        errors: new.errors,
    };
    Ok((rows, olds))
}

/// The header marking a table's change sent through a repartition topic as the retraction
/// of a previous row (its value), not a new row.
pub(crate) const RETRACTION_HEADER: &str = "__eddy_retract";

/// Changes of a table as its router sent them through the repartition topic: each record a
/// row, retracted where marked so. The mark is taken off before the rows are read, so
/// `HEADERS` shows the row's own headers.
pub(super) fn marked_changes<'r>(
    plan: &AggregatePlan,
    partition: u32,
    records: &'r [LogRecord],
    unmarked: &'r mut Vec<LogRecord>,
) -> Result<Rows<'r>> {
    let marked = |r: &LogRecord| r.record.headers.iter().any(|h| h.key == RETRACTION_HEADER);
    let retracting: Vec<bool> = records.iter().map(marked).collect();
    // Only a read holding retractions is copied, to take their mark off.
    let read: &'r [LogRecord] = if retracting.contains(&true) {
        *unmarked = records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.record.headers.retain(|h| h.key != RETRACTION_HEADER);
                r
            })
            .collect();
        unmarked
    } else {
        records
    };
    let decoded = plan.decoder.decode(partition, read)?;
    let mut rows = Rows::decoded(partition, read, decoded);
    rows.retract = rows.rows_from.iter().map(|&i| retracting[i]).collect();
    Ok(rows)
}
