//! Session windows: a record joins every session of its group within the gap of it, merging
//! them into one; the sessions it swallows are deleted from the result, and the merged session
//! is written in their place.

use datafusion::common::ScalarValue;
use eddy_storage::Store;

use super::group::current_result;
use super::operator::{Aggregation, Evaluated, Updates};
use super::state::session_key;
use crate::error::{EngineError, Result};

impl Aggregation<'_> {
    /// Row `i` joins its group's sessions, or starts one. Returns whether it was late: its
    /// session would already have closed.
    pub(super) fn aggregate_session_row(
        &mut self,
        store: &Store,
        batch: &Evaluated<'_>,
        i: usize,
        stream_time: i64,
        updates: &mut Updates,
    ) -> Result<bool> {
        let plan = self.plan;
        let Some(windows) = plan.session else {
            return Err(EngineError::internal(
                "a session row of an aggregation without sessions",
            ));
        };
        let timestamp = batch.rowtimes.value(i);
        let clock = batch.clocks[i];
        let group_key = batch.group_rows.row(i).as_ref().to_vec();
        // Closed sessions neither merge nor are kept. Still filed in the index: EMIT FINAL
        // emits them from there, and expiry finds them already gone.
        let sessions = self.state.sessions_of(store, &group_key)?;
        let (open, closed) = windows.split_closed(sessions, stream_time);
        for (old_start, old_end) in closed {
            let old_key = session_key(&group_key, old_start, old_end);
            self.state.groups.remove(&old_key);
            updates.dirty.remove(&old_key);
            updates.deleted.push(old_key);
        }
        self.state.sessions.insert(group_key.clone(), open.clone());
        updates.dirty_sessions.insert(group_key.clone());
        let merge = windows.merge(&open, timestamp);
        let (start, end) = merge.merged;
        if end < windows.close_time(stream_time) {
            return Ok(true);
        }
        // The merged session takes over the states of the sessions it swallows.
        let mut merged = self.state.fresh_group(plan, &batch.input_schema)?;
        for &(old_start, old_end) in &merge.merging {
            let old_key = session_key(&group_key, old_start, old_end);
            let mut old = self
                .state
                .take_group(store, &old_key, plan, &batch.input_schema)?;
            for (acc, old_acc) in merged.accumulators.iter_mut().zip(&mut old.accumulators) {
                let values = old_acc
                    .state()
                    .map_err(|e| EngineError::execution("aggregation failed", e))?;
                let arrays = values
                    .iter()
                    .map(ScalarValue::to_array)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| EngineError::internal_from("cannot merge sessions", e))?;
                acc.merge_batch(&arrays)
                    .map_err(|e| EngineError::execution("aggregation failed", e))?;
            }
            updates.dirty.remove(&old_key);
            updates.deleted.push(old_key.clone());
            self.state.unfile(store, clock, old_end, &old_key)?;
            if plan.emit_final {
                // Never emitted, so there is no row to delete: it just stops waiting.
                continue;
            }
            // The old session's row is deleted, at its end.
            for (k, call) in plan.aggregates.iter().enumerate() {
                updates.results[k].push(
                    ScalarValue::try_from(call.return_field.data_type())
                        .map_err(|e| EngineError::internal_from("cannot type a deletion", e))?,
                );
            }
            updates.push(i, (old_start, old_end), old_key, (old_end, true));
        }
        let key = session_key(&group_key, start, end);
        for (k, acc) in merged.accumulators.iter_mut().enumerate() {
            acc.update_batch(&batch.args(k, i))
                .map_err(|e| EngineError::execution("aggregation failed", e))?;
            if !plan.emit_final {
                updates.results[k].push(current_result(acc, &plan.aggregates[k])?);
            }
        }
        merged.latest = Some(merged.latest.map_or(end, |t| t.max(end)));
        updates.deleted.retain(|k| *k != key);
        self.state.groups.insert(key.clone(), merged);
        let mut now = merge.keeping;
        now.push((start, end));
        self.state.sessions.insert(group_key.clone(), now);
        updates.dirty_sessions.insert(group_key);
        // Sessions are filed by end, to be emitted (EMIT FINAL) or expired once closed.
        self.state.file_window(store, clock, end, &key)?;
        updates.dirty.insert(key.clone());
        if plan.emit_final {
            let (closed, emptied) = self.state.close_final_sessions(
                store,
                plan,
                &batch.input_schema,
                (clock, stream_time),
            )?;
            updates.dirty_sessions.extend(emptied);
            updates
                .finals
                .add(i, closed, (&mut updates.dirty, &mut updates.deleted));
            return Ok(false);
        }
        updates.push(i, (start, end), key, (end, false));
        Ok(false)
    }
}
