//! Rows on their way through a query's operators: a batch of decoded (or joined) rows and, for
//! each, the input record it stands for and what it means for the result.

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use eddy_storage::LogRecord;

use crate::error::{EngineError, Result};
use crate::query::source::{RecordError, SourceBatch};

/// A batch of rows and what each stands for.
pub(crate) struct Rows<'r> {
    /// The partition the input records were read from.
    pub partition: u32,
    /// The records the rows came from: those read, or one per joined row.
    pub records: &'r [LogRecord],
    /// The rows.
    pub batch: RecordBatch,
    /// For each row, the index of its record in `records`.
    pub rows_from: Vec<usize>,
    /// For each row, whether its record had a value; a stream record without one passes
    /// through without one, and has nothing to aggregate.
    pub has_value: Vec<bool>,
    /// For each row, whether it deletes its key.
    pub tombstone: Vec<bool>,
    /// For each row, whether it takes an old value back out of an aggregation (a table
    /// row's previous value, when the row changes); empty when no row does.
    pub retract: Vec<bool>,
    /// Records that could not be read.
    pub errors: Vec<RecordError>,
}

impl<'r> Rows<'r> {
    /// The rows a decoder made of `records`: every record it could read, none retracting or
    /// deleting.
    pub(crate) fn decoded(partition: u32, records: &'r [LogRecord], decoded: SourceBatch) -> Self {
        let rows = decoded.batch.num_rows();
        // The decoder leaves out records it could not read.
        let rows_from: Vec<usize> = if decoded.errors.is_empty() {
            (0..records.len()).collect()
        } else {
            let bad: std::collections::HashSet<i64> =
                decoded.errors.iter().map(|e| e.offset).collect();
            (0..records.len())
                .filter(|i| !bad.contains(&records[*i].offset))
                .collect()
        };
        Rows {
            partition,
            records,
            batch: decoded.batch,
            rows_from,
            has_value: decoded.has_value,
            tombstone: vec![false; rows],
            retract: Vec::new(),
            errors: decoded.errors,
        }
    }

    /// Rows a join made: one per joined result, each standing for the record in `records` at
    /// its index, and deleting its key where `tombstone` says so.
    pub(crate) fn joined(
        partition: u32,
        records: &'r [LogRecord],
        batch: RecordBatch,
        tombstone: Vec<bool>,
        errors: Vec<RecordError>,
    ) -> Self {
        let rows = records.len();
        Rows {
            partition,
            records,
            batch,
            rows_from: (0..rows).collect(),
            has_value: tombstone.iter().map(|t| !t).collect(),
            tombstone,
            retract: Vec::new(),
            errors,
        }
    }

    /// Keeps the rows `keep` marks, in the batch and in every per-row vector.
    pub(crate) fn retain(&mut self, keep: &BooleanArray) -> Result<()> {
        self.batch = filter_record_batch(&self.batch, keep)
            .map_err(|e| EngineError::internal_from("cannot filter rows", e))?;
        let kept = |i: usize| keep.is_valid(i) && keep.value(i);
        retain_marked(&mut self.rows_from, kept);
        retain_marked(&mut self.has_value, kept);
        retain_marked(&mut self.tombstone, kept);
        if !self.retract.is_empty() {
            retain_marked(&mut self.retract, kept);
        }
        Ok(())
    }

    /// Whether row `row` takes an old value back out.
    pub(crate) fn retracts(&self, row: usize) -> bool {
        self.retract.get(row).copied().unwrap_or(false)
    }

    /// The record row `row` stands for.
    pub(crate) fn record(&self, row: usize) -> &'r LogRecord {
        &self.records[self.rows_from[row]]
    }
}

/// Keeps the items whose index `kept` accepts.
pub(crate) fn retain_marked<T>(items: &mut Vec<T>, kept: impl Fn(usize) -> bool) {
    let mut index = 0;
    items.retain(|_| {
        let keep = kept(index);
        index += 1;
        keep
    });
}
