//! Running an aggregation: each row updates the groups (and windows) it falls in, the updated
//! results pass `HAVING` and go to the sink, and the changed groups are written back with them.
//! With the record cache on, updates wait and a group's latest result goes out once per flush.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::Rows as GroupRows;
use datafusion::common::ScalarValue;
use eddy_storage::{LogRecord, Store};

use super::AggregatePlan;
use super::emit_final::FinalRows;
use super::group::{Group, current_result, serialize};
use super::state::{AggregateState, GroupMap, GroupSet, state_key};
use super::table::{marked_changes, table_changes};
use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, RowsOperator, StepOutput};
use crate::query::rows::{Rows, retain_marked};
use crate::query::sink::SinkEncoder;
use crate::query::source::{ROWTIME, RecordError, RecordErrorKind};
use crate::query::state::{StateWrites, aggregate_keys};

/// The operator of an aggregation: its plan, its running state, and the sink it writes.
pub(crate) struct Aggregation<'p> {
    pub(super) plan: &'p AggregatePlan,
    pub(super) state: AggregateState,
    encoder: SinkEncoder,
    /// A table's changes come marked (retraction or new row) by the router that sent them,
    /// instead of being worked out here from the previous row of each key.
    marked_changes: bool,
}

impl<'p> Aggregation<'p> {
    /// The aggregation of `plan`, its state in `namespace`, into `sink`; with `coalesce`, updates
    /// wait in the record cache for [`Operator::flush`].
    pub(crate) fn new(
        store: &Store,
        namespace: &str,
        plan: &'p AggregatePlan,
        (sink, schemas): (&DataSource, &crate::codec::Schemas),
        coalesce: bool,
    ) -> Result<Self> {
        let partitions = store.partition_count(&plan.source.topic).unwrap_or(1);
        Ok(Aggregation {
            plan,
            state: AggregateState::new(namespace, plan, (sink, partitions, schemas), coalesce)?,
            encoder: SinkEncoder::new(sink, schemas)?,
            marked_changes: false,
        })
    }

    /// This aggregation of a table reading its changes as a router marked them: the task
    /// of a split aggregation over a table (see `route`).
    pub(crate) fn with_marked_changes(mut self) -> Self {
        self.marked_changes = true;
        self
    }
}

impl Operator for Aggregation<'_> {
    fn process(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let mut writes: StateWrites = Vec::new();
        let mut unmarked = Vec::new();
        let rows = if self.marked_changes {
            marked_changes(self.plan, input.partition, records, &mut unmarked)?
        } else if self.plan.over_table() {
            table_changes(
                store,
                self.plan,
                &mut self.state,
                input.partition,
                records,
                &mut writes,
            )?
        } else {
            let decoded = self.plan.decoder.decode(input.partition, records)?;
            Rows::decoded(input.partition, records, decoded)
        };
        let mut out = StepOutput {
            writes,
            ..StepOutput::empty()
        };
        out.extend(self.aggregate(store, rows)?);
        Ok(out)
    }

    /// Closed windows leave memory and the store (their rows stay in the sink); with the
    /// record cache, at its flush, once their last updates are out.
    fn advance_time(&mut self, store: &Store) -> Result<StepOutput> {
        if self.state.coalesce {
            return Ok(StepOutput::empty());
        }
        let mut writes: StateWrites = Vec::new();
        for key in self.state.expire_windows(store, self.plan)? {
            if let Some(deferred) = &mut self.state.deferred {
                deferred.deleted(&key);
            }
            writes.push((state_key(&key), None));
        }
        let (expired, changed) = self.state.expire_sessions(store, self.plan)?;
        for key in expired {
            writes.push((state_key(&key), None));
        }
        writes.extend(self.state.session_list_writes(changed));
        if self.state.deferred.is_none() {
            writes.extend(self.state.take_index_writes());
        }
        Ok(StepOutput {
            writes,
            ..StepOutput::empty()
        })
    }

    /// Empties the record cache: the current result of each group changed since the last
    /// flush, once, and its state to commit with it.
    fn flush(&mut self, store: &Store) -> Result<StepOutput> {
        if !self.state.coalesce {
            let mut writes = self.state.take_index_writes();
            if let Some(deferred) = &mut self.state.deferred {
                for key in deferred.flush(&mut writes) {
                    if let Some(group) = self.state.groups.get_mut(&key) {
                        group.unwritten = false;
                        writes.push((state_key(&key), Some(serialize(group)?)));
                    }
                }
            }
            return Ok(StepOutput {
                writes,
                ..StepOutput::empty()
            });
        }
        let pending = std::mem::take(&mut self.state.pending);
        self.state.pending_at.clear();
        self.state.pending_bytes = 0;
        let mut step = StepOutput::empty();
        let mut partitions: Vec<u32> = pending.iter().map(|u| u.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        for partition in partitions {
            let updates: Vec<_> = pending
                .iter()
                .filter(|u| u.partition == partition)
                .collect();
            let mut results: Vec<Vec<ScalarValue>> =
                vec![Vec::with_capacity(updates.len()); self.plan.aggregates.len()];
            let mut times = Vec::with_capacity(updates.len());
            let mut records = Vec::with_capacity(updates.len());
            for update in &updates {
                let group = self
                    .state
                    .groups
                    .get_mut(&update.key)
                    .ok_or_else(|| EngineError::internal("aggregate group vanished"))?;
                for (k, (acc, call)) in group
                    .accumulators
                    .iter_mut()
                    .zip(&self.plan.aggregates)
                    .enumerate()
                {
                    results[k].push(current_result(acc, call)?);
                }
                let latest = group.latest.unwrap_or_default();
                times.push(latest);
                // The result stands for the last record that changed the group.
                records.push(LogRecord {
                    offset: update.offset,
                    record: eddy_storage::Record {
                        key: None,
                        value: None,
                        timestamp: latest,
                        headers: Vec::new(),
                    },
                });
            }
            let keys: Vec<Vec<u8>> = updates.iter().map(|u| u.key.clone()).collect();
            let suffix = if self.plan.window.is_some() { 8 } else { 0 };
            let updated = Updated {
                group_columns: self.state.group_values(&keys, suffix)?,
                results,
                windows: updates.iter().map(|u| u.window).collect(),
                times,
                tombstone: vec![false; updates.len()],
                keys,
                from: (0..updates.len()).collect(),
            };
            step.extend(self.emit_updated(updated, (partition, &records), Vec::new())?);
            // After HAVING, which notes in each group whether its row stands.
            for update in updates {
                if let Some(group) = self.state.groups.get_mut(&update.key) {
                    step.writes
                        .push((state_key(&update.key), Some(serialize(group)?)));
                }
            }
        }
        for key in self.state.expire_windows(store, self.plan)? {
            step.writes.push((state_key(&key), None));
        }
        step.writes.extend(self.state.take_index_writes());
        Ok(step)
    }

    fn state_namespace(&self) -> Option<&str> {
        Some(&self.state.namespace)
    }

    fn record_cache(&self) -> Option<usize> {
        if let Some(deferred) = &self.state.deferred {
            return deferred.cache_bytes();
        }
        self.state.coalesce.then_some(self.state.pending_bytes)
    }

    fn cached_state(&self) -> usize {
        self.state.cached_entries()
    }

    fn drop_cached_state(&mut self) {
        self.state.drop_cached();
    }
}

impl RowsOperator for Aggregation<'_> {
    fn process_rows(&mut self, store: &Store, rows: Rows<'_>) -> Result<StepOutput> {
        self.aggregate(store, rows)
    }
}

/// A record dropped for coming after its windows closed: counted among the query's failed
/// records and written to the processing log, so late data is never lost silently.
pub(super) fn late(partition: u32, offset: i64, timestamp: i64) -> RecordError {
    RecordError {
        kind: RecordErrorKind::Late,
        partition,
        offset,
        reason: format!(
            "The record (timestamp {timestamp}) arrived after stream time passed the end plus grace period of every window it falls in; it is dropped"
        ),
    }
}

/// A batch of rows to aggregate, evaluated: group values and aggregate arguments per row.
pub(super) struct Evaluated<'r> {
    /// The rows, after `WHERE`.
    pub(super) rows: Rows<'r>,
    /// Rows whose group could not be computed (already logged).
    pub(super) ungrouped: Vec<bool>,
    /// The `GROUP BY` values.
    pub(super) group_arrays: Vec<ArrayRef>,
    /// Per aggregate call, its arguments.
    pub(super) arg_arrays: Vec<Vec<ArrayRef>>,
    /// The group values of each row in their stored form.
    pub(super) group_rows: GroupRows,
    /// Each row's time.
    pub(super) rowtimes: Int64Array,
    /// The partition whose stream time governs each row's group.
    pub(super) clocks: Vec<u32>,
    /// The rows' schema, which accumulators are made for.
    pub(super) input_schema: SchemaRef,
}

impl Evaluated<'_> {
    /// Row `i`'s arguments to aggregate call `k`.
    pub(super) fn args(&self, k: usize, i: usize) -> Vec<ArrayRef> {
        self.arg_arrays[k].iter().map(|a| a.slice(i, 1)).collect()
    }

    /// The offset of the record row `i` came from.
    pub(super) fn offset(&self, i: usize) -> i64 {
        self.rows.record(i).offset
    }
}

/// What one batch did to the aggregation: a result row per group update, and the groups and
/// session lists to write back, each once.
pub(super) struct Updates {
    /// For each result, the input row that made it.
    pub(super) rows: Vec<usize>,
    /// Its window's bounds, or (0, 0).
    pub(super) windows: Vec<(i64, i64)>,
    /// Per aggregate call, each result's value.
    pub(super) results: Vec<Vec<ScalarValue>>,
    /// Its group key.
    pub(super) keys: Vec<Vec<u8>>,
    /// Its timestamp.
    pub(super) times: Vec<i64>,
    /// Whether it deletes its key (a session merged away).
    pub(super) tombstone: Vec<bool>,
    /// `EMIT FINAL`: the windows that closed, emitted instead of the updates.
    pub(super) finals: FinalRows,
    /// Groups to write back.
    pub(super) dirty: GroupSet,
    /// Groups to delete.
    pub(super) deleted: Vec<Vec<u8>>,
    /// Groups whose session lists changed.
    pub(super) dirty_sessions: BTreeSet<Vec<u8>>,
}

impl Updates {
    fn new(calls: usize) -> Self {
        Updates {
            rows: Vec::new(),
            windows: Vec::new(),
            results: vec![Vec::new(); calls],
            keys: Vec::new(),
            times: Vec::new(),
            tombstone: Vec::new(),
            finals: FinalRows {
                results: vec![Vec::new(); calls],
                ..FinalRows::default()
            },
            dirty: GroupSet::default(),
            deleted: Vec::new(),
            dirty_sessions: BTreeSet::new(),
        }
    }

    /// A result row for group `key` in `window`, made by input row `row`, stamped `time`.
    pub(super) fn push(
        &mut self,
        row: usize,
        window: (i64, i64),
        key: Vec<u8>,
        (time, tombstone): (i64, bool),
    ) {
        self.rows.push(row);
        self.windows.push(window);
        self.keys.push(key);
        self.times.push(time);
        self.tombstone.push(tombstone);
    }

    /// One input record changes a group once: a table row's retraction and its new value in
    /// the same group come out as the new result only, as ksqlDB emits one change per record.
    fn drop_superseded(&mut self, rows_from: &[usize]) {
        let n = self.rows.len();
        let superseded: Vec<bool> = (0..n)
            .map(|r| {
                r + 1 < n
                    && self.keys[r + 1] == self.keys[r]
                    && rows_from[self.rows[r + 1]] == rows_from[self.rows[r]]
                    && !self.tombstone[r]
            })
            .collect();
        if !superseded.iter().any(|s| *s) {
            return;
        }
        let kept = |i: usize| !superseded[i];
        retain_marked(&mut self.rows, kept);
        retain_marked(&mut self.windows, kept);
        retain_marked(&mut self.keys, kept);
        retain_marked(&mut self.times, kept);
        retain_marked(&mut self.tombstone, kept);
        for r in self.results.iter_mut() {
            retain_marked(r, kept);
        }
    }

    /// `EMIT FINAL`: the closed windows take the place of the updates.
    fn take_finals(&mut self) {
        self.rows = std::mem::take(&mut self.finals.rows);
        self.windows = std::mem::take(&mut self.finals.windows);
        self.times = std::mem::take(&mut self.finals.times);
        self.tombstone = vec![false; self.rows.len()];
        self.results = std::mem::take(&mut self.finals.results);
        self.keys = std::mem::take(&mut self.finals.keys);
    }
}

/// Aggregated rows on their way out: one per group update, with the group's values, the
/// aggregates' results, the window, the result's timestamp, and the input record it came from.
struct Updated {
    group_columns: Vec<ArrayRef>,
    results: Vec<Vec<ScalarValue>>,
    windows: Vec<(i64, i64)>,
    times: Vec<i64>,
    tombstone: Vec<bool>,
    keys: Vec<Vec<u8>>,
    /// For each row, the index of its input record.
    from: Vec<usize>,
}

impl Aggregation<'_> {
    /// Aggregates rows (a source's decoded records, a table's changes, or a join's rows),
    /// emitting the updated result of each group a row touches, and the state to write back.
    fn aggregate(&mut self, store: &Store, rows: Rows<'_>) -> Result<StepOutput> {
        let plan = self.plan;
        let mut batch = self.evaluate(rows)?;
        self.state.stream_times(store)?;
        self.state.prepare_panes(store, plan)?;
        let by_panes = self.state.by_panes();
        let mut updates = Updates::new(plan.aggregates.len());
        let mut errors = std::mem::take(&mut batch.rows.errors);
        for i in 0..batch.rows.batch.num_rows() {
            if batch.ungrouped[i] {
                continue;
            }
            if batch.group_arrays.iter().any(|a| a.is_null(i)) {
                errors.push(RecordError {
                    kind: RecordErrorKind::Dropped,
                    partition: batch.rows.partition,
                    offset: batch.offset(i),
                    reason: "GROUP BY column(s) are null; the record is dropped".into(),
                });
                continue;
            }
            let timestamp = batch.rowtimes.value(i);
            let clock = batch.clocks[i];
            let stream_time = self.state.stream_times(store)?.advance(clock, timestamp);
            let late = if plan.session.is_some() {
                self.aggregate_session_row(store, &batch, i, stream_time, &mut updates)?
            } else if by_panes {
                self.aggregate_pane_row(store, &batch, i, stream_time, &mut updates)?
            } else {
                self.aggregate_window_row(store, &batch, i, stream_time, &mut updates)?
            };
            if late {
                errors.push(late_row(&batch, i, timestamp));
            }
        }
        let group_columns = if plan.emit_final {
            updates.take_finals();
            if !updates.rows.is_empty()
                && let Some(deferred) = &mut self.state.deferred
            {
                deferred.finals_closed();
            }
            // A final row's key is its window's: the group, then the start (and a session's
            // end), not that of the record that closed it.
            let suffix = if plan.session.is_some() { 16 } else { 8 };
            self.state.group_values(&updates.keys, suffix)?
        } else {
            updates.drop_superseded(&batch.rows.rows_from);
            let indices = datafusion::arrow::array::UInt32Array::from_iter_values(
                updates.rows.iter().map(|&i| i as u32),
            );
            batch
                .group_arrays
                .iter()
                .map(|a| datafusion::arrow::compute::take(a.as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| EngineError::internal_from("cannot pick group values", e))?
        };
        let from = updates
            .rows
            .iter()
            .map(|&i| batch.rows.rows_from[i])
            .collect();
        let updated = Updated {
            group_columns,
            results: std::mem::take(&mut updates.results),
            windows: std::mem::take(&mut updates.windows),
            times: std::mem::take(&mut updates.times),
            tombstone: std::mem::take(&mut updates.tombstone),
            keys: std::mem::take(&mut updates.keys),
            from,
        };
        let records = batch.rows.records;
        let mut step = self.emit_updated(updated, (batch.rows.partition, records), errors)?;
        step.writes = self.write_back(updates)?;
        Ok(step)
    }

    /// Keeps the rows with a value that pass `WHERE`, and evaluates their groups, arguments
    /// and times.
    fn evaluate<'r>(&mut self, mut rows: Rows<'r>) -> Result<Evaluated<'r>> {
        let plan = self.plan;
        // A stream record without a value has nothing to aggregate.
        let mut keep: Vec<bool> = rows.has_value.clone();
        if let Some(filter) = &plan.filter {
            // A row the condition fails on is logged and not aggregated.
            let (mask, _) = evaluate_step(
                filter,
                &mut rows,
                ("Error evaluating WHERE", RecordErrorKind::Dropped),
            )?;
            if let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() {
                for (i, k) in keep.iter_mut().enumerate() {
                    *k = *k && mask.is_valid(i) && mask.value(i);
                }
            }
        }
        rows.retain(&BooleanArray::from(keep))?;
        let n = rows.batch.num_rows();
        // A row whose group cannot be computed is logged and dropped; an argument that cannot
        // be is logged and aggregated as null, as ksqlDB's functions return null when they throw.
        let mut ungrouped = vec![false; n];
        let mut group_arrays = Vec::with_capacity(plan.group_by.len());
        for by in &plan.group_by {
            let (array, failed) = evaluate_step(
                by,
                &mut rows,
                ("Error evaluating GROUP BY", RecordErrorKind::Dropped),
            )?;
            for (u, f) in ungrouped.iter_mut().zip(failed) {
                *u = *u || f;
            }
            group_arrays.push(array);
        }
        let mut arg_arrays = Vec::with_capacity(plan.aggregates.len());
        for call in &plan.aggregates {
            let what = format!("Error evaluating the arguments of {}", call.name);
            let args = call
                .args
                .iter()
                .map(|a| {
                    evaluate_step(a, &mut rows, (&what, RecordErrorKind::Expression))
                        .map(|(array, _)| array)
                })
                .collect::<Result<Vec<_>>>()?;
            arg_arrays.push(args);
        }
        let group_rows = self
            .state
            .converter
            .convert_columns(&group_arrays)
            .map_err(|e| EngineError::internal_from("cannot key groups", e))?;
        let rowtimes = rows
            .batch
            .column_by_name(ROWTIME)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .ok_or_else(|| EngineError::internal("ROWTIME is missing"))?;
        // Only windows close, so only they need each group's partition.
        let clocks = if plan.windowed() {
            self.state
                .partitioner
                .assign(&group_arrays, n, &|i| group_rows.row(i).as_ref().to_vec())
        } else {
            vec![0; n]
        };
        Ok(Evaluated {
            input_schema: rows.batch.schema(),
            rows,
            ungrouped,
            group_arrays,
            arg_arrays,
            group_rows,
            rowtimes,
            clocks,
        })
    }

    /// Row `i` updates each time window it falls in (or its group, unwindowed). Returns
    /// whether it was late for every window.
    fn aggregate_window_row(
        &mut self,
        store: &Store,
        batch: &Evaluated<'_>,
        i: usize,
        stream_time: i64,
        updates: &mut Updates,
    ) -> Result<bool> {
        let plan = self.plan;
        let timestamp = batch.rowtimes.value(i);
        let clock = batch.clocks[i];
        let open = plan
            .window
            .as_ref()
            .map(|(w, grace)| w.open_windows_for(timestamp, *grace, stream_time));
        if open.as_ref().is_some_and(Vec::is_empty) {
            return Ok(true);
        }
        // The row's arguments, the same for each of its windows.
        let args: Vec<Vec<ArrayRef>> = (0..plan.aggregates.len())
            .map(|k| batch.args(k, i))
            .collect();
        let group_row = batch.group_rows.row(i);
        for w in 0..open.as_ref().map_or(1, Vec::len) {
            let window = open.as_ref().map(|windows| windows[w]);
            let coalesce = self.state.coalesce;
            let mut key = Vec::with_capacity(group_row.as_ref().len() + 8);
            key.extend_from_slice(group_row.as_ref());
            if let Some((start, _)) = window {
                key.extend_from_slice(&start.to_be_bytes());
            }
            let group = match window {
                Some((start, _)) if plan.emit_final => {
                    let input = &batch.input_schema;
                    self.state.window_group(store, (&key, start), plan, input)?
                }
                _ => self.state.group(store, &key, plan, &batch.input_schema)?,
            };
            for (k, acc) in group.accumulators.iter_mut().enumerate() {
                if batch.rows.retracts(i) {
                    acc.retract_batch(&args[k])
                } else {
                    acc.update_batch(&args[k])
                }
                .map_err(|e| EngineError::execution("aggregation failed", e))?;
                // EMIT FINAL writes a window's result once, when it closes, and the record
                // cache when it flushes; not per update.
                if !plan.emit_final && !coalesce {
                    updates.results[k].push(current_result(acc, &plan.aggregates[k])?);
                }
            }
            let latest = group.latest.map_or(timestamp, |t| t.max(timestamp));
            group.latest = Some(latest);
            let filed = std::mem::replace(&mut group.filed, true);
            let marked = std::mem::replace(&mut group.unwritten, plan.emit_final);
            if let Some((start, _)) = window
                && !filed
            {
                // Windows are filed by start, so they can leave the state once closed (or,
                // under EMIT FINAL, be written then).
                self.state.file_window(store, clock, start, &key)?;
            }
            if coalesce {
                let offset = batch.offset(i);
                let partition = batch.rows.partition;
                self.state
                    .mark_pending(key, window.unwrap_or((0, 0)), partition, offset);
                continue;
            }
            if plan.emit_final
                && let Some((start, _)) = window
                && let Some(latest) = self.state.latest_start.as_mut()
            {
                latest.advance(clock, start);
            }
            // EMIT FINAL writes the windows that close, not the updates.
            if plan.emit_final {
                if !marked {
                    updates.dirty.insert(key);
                }
            } else {
                updates.dirty.insert(key.clone());
                updates.push(i, window.unwrap_or((0, 0)), key, (latest, false));
            }
        }
        if plan.emit_final {
            let (closed, expired) = self.state.close_final_windows(
                store,
                plan,
                &batch.input_schema,
                (clock, stream_time),
            )?;
            for key in expired {
                updates.dirty.remove(&key);
                updates.deleted.push(key);
            }
            updates
                .finals
                .add(i, closed, (&mut updates.dirty, &mut updates.deleted));
        }
        Ok(false)
    }

    /// Applies `HAVING` to updated rows (a group that stops passing is deleted) and encodes
    /// them as sink records.
    fn emit_updated(
        &mut self,
        updated: Updated,
        (partition, records): (u32, &[LogRecord]),
        errors: Vec<RecordError>,
    ) -> Result<StepOutput> {
        let plan = self.plan;
        let n = updated.keys.len();
        let aggregated = aggregated_rows(plan, &updated)?;
        // HAVING: a group that passes is emitted; one that stops passing is deleted.
        let mut emit_row = vec![true; n];
        let mut tombstone = updated.tombstone.clone();
        if let Some(having) = &plan.having {
            let mask = having
                .evaluate(&aggregated)
                .and_then(|v| v.into_array(n))
                .map_err(|e| EngineError::execution("Error evaluating HAVING", e))?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .unwrap_or_else(|| BooleanArray::from(vec![false; n]));
            apply_having(
                &mask,
                plan.emit_final,
                &mut self.state.groups,
                &updated,
                (&mut emit_row, &mut tombstone),
            )?;
        }
        let selected = BooleanArray::from(emit_row.clone());
        let aggregated = filter_record_batch(&aggregated, &selected)
            .map_err(|e| EngineError::internal_from("cannot filter aggregated rows", e))?;
        let picked = |e: &bool| *e;
        let rows_from: Vec<usize> = updated
            .from
            .into_iter()
            .zip(&emit_row)
            .filter_map(|(x, e)| picked(e).then_some(x))
            .collect();
        let tombstone: Vec<bool> = tombstone
            .into_iter()
            .zip(&emit_row)
            .filter_map(|(t, e)| picked(e).then_some(t))
            .collect();
        let count = aggregated.num_rows();
        self.encoder.emit(
            (&plan.keys, &plan.values),
            Rows {
                partition,
                records,
                batch: aggregated,
                rows_from,
                has_value: vec![true; count],
                tombstone,
                retract: Vec::new(),
                errors,
            },
        )
    }

    /// The state changes a batch made: changed groups, deleted ones, session lists, and the
    /// clocks.
    fn write_back(&mut self, updates: Updates) -> Result<StateWrites> {
        let mut writes = StateWrites::new();
        match &mut self.state.deferred {
            Some(deferred) => updates
                .dirty
                .into_iter()
                .for_each(|key| deferred.changed(key)),
            None => {
                for key in updates.dirty {
                    if let Some(group) = self.state.groups.get_mut(&key) {
                        group.unwritten = false;
                        writes.push((state_key(&key), Some(serialize(group)?)));
                    }
                }
            }
        }
        for key in updates.deleted {
            if let Some(deferred) = &mut self.state.deferred {
                deferred.deleted(&key);
            }
            writes.push((state_key(&key), None));
        }
        writes.extend(self.state.session_list_writes(updates.dirty_sessions));
        if let Some(times) = &self.state.stream_times {
            writes.push((aggregate_keys::STREAM_TIME.to_vec(), Some(times.encode())));
        }
        if let Some(starts) = &self.state.latest_start
            && starts.iter().next().is_some()
        {
            writes.push((aggregate_keys::LATEST_START.to_vec(), Some(starts.encode())));
        }
        // Deferred, the index changes wait for the flush with the groups' states.
        if self.state.deferred.is_none() {
            writes.extend(self.state.take_index_writes());
        }
        Ok(writes)
    }
}

/// Row `i` of `batch`, dropped as late.
fn late_row(batch: &Evaluated<'_>, i: usize, timestamp: i64) -> RecordError {
    late(batch.rows.partition, batch.offset(i), timestamp)
}

/// The aggregated rows: group values, results (as ksqlDB types them), window bounds, `ROWTIME`.
fn aggregated_rows(plan: &AggregatePlan, updated: &Updated) -> Result<RecordBatch> {
    let mut columns = updated.group_columns.clone();
    for (call, values) in plan.aggregates.iter().zip(&updated.results) {
        let array = if values.is_empty() {
            datafusion::arrow::array::new_null_array(call.return_field.data_type(), 0)
        } else {
            ScalarValue::iter_to_array(values.iter().cloned())
                .map_err(|e| EngineError::internal_from("cannot lay out aggregate results", e))?
        };
        let array = if array.data_type() == &call.result_type {
            array
        } else {
            datafusion::arrow::compute::cast(&array, &call.result_type)
                .map_err(|e| EngineError::execution("cannot type an aggregate's result", e))?
        };
        columns.push(array);
    }
    if plan.windowed() {
        columns.push(Arc::new(Int64Array::from_iter_values(
            updated.windows.iter().map(|w| w.0),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            updated.windows.iter().map(|w| w.1),
        )));
    }
    columns.push(Arc::new(Int64Array::from_iter_values(
        updated.times.iter().copied(),
    )));
    RecordBatch::try_new_with_options(
        plan.aggregate_schema.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new()
            .with_row_count(Some(updated.keys.len())),
    )
    .map_err(|e| EngineError::internal_from("cannot assemble aggregated rows", e))
}

/// Marks which updated rows `HAVING` lets out: a group that passes is emitted (and noted as
/// standing), one that stops passing is deleted, one that never passed stays unwritten. A
/// final row is its window's only one: it is emitted or not, with nothing to undo.
fn apply_having(
    mask: &BooleanArray,
    emit_final: bool,
    groups: &mut GroupMap<Group>,
    updated: &Updated,
    (emit_row, tombstone): (&mut [bool], &mut [bool]),
) -> Result<()> {
    for r in 0..updated.keys.len() {
        if updated.tombstone[r] {
            continue;
        }
        let passes = mask.is_valid(r) && mask.value(r);
        if emit_final {
            emit_row[r] = passes;
            continue;
        }
        let group = groups
            .get_mut(&updated.keys[r])
            .ok_or_else(|| EngineError::internal("aggregate group vanished"))?;
        if passes {
            group.emitted = true;
        } else if group.emitted {
            group.emitted = false;
            tombstone[r] = true;
        } else {
            emit_row[r] = false;
        }
    }
    Ok(())
}
