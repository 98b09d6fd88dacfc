//! `EMIT FINAL`: a window's result is written once, when stream time closes the window (its
//! end plus grace), instead of at every update; the window then leaves the state.

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use eddy_storage::Store;

use super::AggregatePlan;
use super::state::{AggregateState, GroupKey};
use crate::error::Result;

/// timestamp and aggregate values, and the input row that closed it.
#[derive(Default)]
pub(super) struct FinalRows {
    /// For each closed window, the input row that closed it.
    pub(super) rows: Vec<usize>,
    /// Its group key.
    pub(super) keys: Vec<Vec<u8>>,
    /// Its bounds.
    pub(super) windows: Vec<(i64, i64)>,
    /// Its result's timestamp.
    pub(super) times: Vec<i64>,
    /// Per aggregate call, its result.
    pub(super) results: Vec<Vec<ScalarValue>>,
}

/// A window `EMIT FINAL` closed: its group key, bounds, result timestamp and values, and
/// whether the store may hold its group (else there is nothing to delete).
pub(super) type ClosedWindow = (Vec<u8>, (i64, i64), i64, Vec<ScalarValue>, bool);

impl FinalRows {
    /// Adds the windows input row `row` closed; they leave the state.
    pub(super) fn add(
        &mut self,
        row: usize,
        closed: Vec<ClosedWindow>,
        (dirty, deleted): (&mut super::state::GroupSet, &mut Vec<Vec<u8>>),
    ) {
        for (key, window, latest, values, stored) in closed {
            for (k, v) in values.into_iter().enumerate() {
                self.results[k].push(v);
            }
            self.rows.push(row);
            self.windows.push(window);
            self.times.push(latest);
            dirty.remove(&key);
            if stored {
                deleted.push(key.clone());
            }
            self.keys.push(key);
        }
    }
}

impl AggregateState {
    /// A group's result as `EMIT FINAL` writes it: its latest timestamp (`fallback` if it has
    /// none) and each aggregate's value. The group leaves memory.
    fn final_result(
        &mut self,
        store: &Store,
        key: &[u8],
        (plan, input): (&AggregatePlan, &Schema),
        fallback: i64,
    ) -> Result<(i64, Vec<ScalarValue>)> {
        let group = self.group(store, key, plan, input)?;
        let latest = group.latest.unwrap_or(fallback);
        let values = group.results(&plan.aggregates)?;
        self.groups.remove(key);
        Ok((latest, values))
    }

    /// The windows of partition `clock` that `EMIT FINAL` emits now that its stream time is
    /// `stream_time`: those whose end plus grace it has reached. As in Kafka Streams, a
    /// window older than the store's retention (size plus grace) behind the latest window
    /// written is gone instead, so a jump in stream time past several windows emits only the
    /// recent ones. Emitted and expired windows leave the state.
    pub(super) fn close_final_windows(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
        input: &Schema,
        (clock, stream_time): (u32, i64),
    ) -> Result<(Vec<ClosedWindow>, Vec<GroupKey>)> {
        let Some((windows, grace)) = &plan.window else {
            return Ok((Vec::new(), Vec::new()));
        };
        let size = windows.size();
        let last_closable = windows.last_closable_start(*grace, stream_time);
        let ready = self.take_windows_through(store, clock, last_closable)?;
        let latest_start = self
            .latest_start
            .as_ref()
            .map_or(i64::MIN, |s| s.get(clock));
        let oldest_kept = windows.oldest_kept_start(*grace, latest_start);
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (start, keys) in ready {
            for key in keys {
                if start >= oldest_kept {
                    let (latest, values) =
                        self.final_result(store, &key, (plan, input), stream_time)?;
                    let stored = !self.close_unstored(clock, start, &key);
                    out.push((key, (start, start + size), latest, values, stored));
                } else {
                    self.groups.remove(&key);
                    expired.push(key);
                }
            }
        }
        Ok((out, expired))
    }

    /// `EMIT FINAL` over sessions: the sessions of partition `clock` whose end plus grace its
    /// stream time has reached, as Kafka Streams' suppression closes a session window, each
    /// with its result; they leave the state and their groups' session lists (whose group
    /// keys come back too).
    pub(super) fn close_final_sessions(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
        input: &Schema,
        (clock, stream_time): (u32, i64),
    ) -> Result<(Vec<ClosedWindow>, Vec<GroupKey>)> {
        let Some(sessions) = plan.session else {
            return Ok((Vec::new(), Vec::new()));
        };
        let ready =
            self.take_windows_through(store, clock, stream_time.saturating_sub(sessions.grace))?;
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        for (end, keys) in ready {
            for key in keys {
                let Some((group_key, start)) = self.leave_session_list(store, &key, end)? else {
                    continue;
                };
                let (latest, values) = self.final_result(store, &key, (plan, input), end)?;
                out.push((key, (start, end), latest, values, true));
                emptied.push(group_key);
            }
        }
        Ok((out, emptied))
    }
}
