//! Hopping windows by panes. Under `EMIT FINAL`, hopping windows whose size is a multiple of
//! their advance are made of panes one advance wide, as Flink slices its windows: a record
//! updates the one pane it falls in instead of each of its windows, and when a window closes its
//! result merges the accumulator states of its panes. A pane leaves the state with the last
//! window that holds it, the one it starts.
//!
//! `HOPPING (SIZE 10 SECONDS, ADVANCE BY 2 SECONDS)` puts each record in five windows: by panes
//! a record is one group update, not five, and a group's state is written while its pane is
//! current (two seconds), not while each of its windows is open (ten).
//!
//! Only aggregates whose result does not depend on the order their states merge in go by
//! panes: `COUNT`, `MIN`, `MAX`, and `SUM` of integers and decimals (a sum of doubles depends
//! on the order it adds in, and a list on the order of its rows). A query whose state was
//! written per window, before panes, goes on per window.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use eddy_storage::Store;

use super::AggregatePlan;
use super::emit_final::ClosedWindow;
use super::group::current_result;
use super::operator::{Aggregation, Evaluated, Updates};
use super::state::{AggregateState, GroupKey};
use crate::error::{EngineError, Result};
use crate::query::state::aggregate_keys;

/// Whether an aggregation goes by panes, once its state says.
#[derive(Default)]
pub(super) enum PaneMode {
    /// Not read yet.
    #[default]
    Undecided,
    /// Per window.
    Off,
    /// By panes.
    On(Panes),
}

/// The panes' bookkeeping.
pub(super) struct Panes {
    /// Per partition clock, the latest window start closed: what its stream time has closed.
    closed_through: HashMap<u32, i64>,
}

/// A pane that left the state, and whether the store may hold it.
type GonePane = (GroupKey, bool);

/// Whether `plan` can go by panes: hopping windows under `EMIT FINAL` over a stream, whose size
/// is a multiple of their advance, with only aggregates whose states merge in any order.
fn panes_fit(plan: &AggregatePlan) -> bool {
    let Some((windows, _)) = &plan.window else {
        return false;
    };
    plan.emit_final
        && windows.made_of_panes()
        && !plan.over_table()
        && plan.session.is_none()
        && plan.aggregates.iter().all(|call| {
            let exact_sum = || {
                call.arg_fields.iter().all(|f| {
                    f.data_type().is_integer() || matches!(f.data_type(), DataType::Decimal128(..))
                })
            };
            !call.distinct
                && match call.name.as_str() {
                    "COUNT" | "MIN" | "MAX" => true,
                    "SUM" => exact_sum(),
                    _ => false,
                }
        })
}

impl AggregateState {
    /// Decides, at the first batch, whether the aggregation goes by panes: when it can, and
    /// its state was either written by panes or not written yet.
    pub(super) fn prepare_panes(&mut self, store: &Store, plan: &AggregatePlan) -> Result<()> {
        if !matches!(self.panes, PaneMode::Undecided) {
            return Ok(());
        }
        let Some((windows, grace)) = &plan.window else {
            self.panes = PaneMode::Off;
            return Ok(());
        };
        let by_panes = panes_fit(plan)
            && (store
                .state_get(&self.namespace, aggregate_keys::PANES)?
                .is_some()
                || store
                    .state_get(&self.namespace, aggregate_keys::STREAM_TIME)?
                    .is_none());
        if !by_panes {
            self.panes = PaneMode::Off;
            return Ok(());
        }
        self.index_writes
            .push((aggregate_keys::PANES.to_vec(), Some(Vec::new())));
        // Every window stream time has closed was closed in the step that moved it there.
        let partitions = self.partitioner.partitions();
        let times = self.stream_times(store)?;
        let closed_through = (0..partitions)
            .map(|p| (p, windows.last_closable_start(*grace, times.get(p))))
            .collect();
        self.panes = PaneMode::On(Panes { closed_through });
        Ok(())
    }

    /// Whether the aggregation goes by panes.
    pub(super) fn by_panes(&self) -> bool {
        matches!(self.panes, PaneMode::On(_))
    }

    /// The windows of partition `clock` that its stream time, now `stream_time`, closes, each
    /// with its result merged from its panes; and the panes that leave the state, each with
    /// whether the store may hold it (else there is nothing to delete). As per window, a window
    /// older than the store's retention behind the latest start written is not emitted.
    fn close_panes(
        &mut self,
        store: &Store,
        (plan, input): (&AggregatePlan, &Schema),
        (clock, stream_time): (u32, i64),
    ) -> Result<(Vec<ClosedWindow>, Vec<GonePane>)> {
        let (PaneMode::On(panes), Some((windows, grace))) = (&self.panes, &plan.window) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let through = panes
            .closed_through
            .get(&clock)
            .copied()
            .unwrap_or(i64::MIN);
        let last = windows.last_closable_start(*grace, stream_time);
        if last <= through {
            return Ok((Vec::new(), Vec::new()));
        }
        let size = windows.size();
        let latest_start = self
            .latest_start
            .as_ref()
            .map_or(i64::MIN, |s| s.get(clock));
        let oldest_kept = windows.oldest_kept_start(*grace, latest_start);
        // The windows closing start after `through`, so their panes do too.
        let filed = self.filed_between(
            store,
            clock,
            (through.saturating_add(1), last.saturating_add(size)),
        )?;
        let from = through.saturating_add(1).max(oldest_kept);
        let mut closing: BTreeMap<i64, BTreeMap<&[u8], Vec<i64>>> = BTreeMap::new();
        for (pane, key) in &filed {
            let group_row = &key[..key.len().saturating_sub(8)];
            for start in windows.windows_of_pane(*pane, from, last) {
                closing
                    .entry(start)
                    .or_default()
                    .entry(group_row)
                    .or_default()
                    .push(*pane);
            }
        }
        let mut closed = Vec::new();
        for (start, groups) in closing {
            for (group_row, in_window) in groups {
                let (latest, values) =
                    self.merged_result(store, group_row, &in_window, (plan, input), stream_time)?;
                let mut key = Vec::with_capacity(group_row.len() + 8);
                key.extend_from_slice(group_row);
                key.extend_from_slice(&start.to_be_bytes());
                closed.push((
                    key,
                    (start, start.saturating_add(size)),
                    latest,
                    values,
                    false,
                ));
            }
        }
        // A pane leaves with the window it starts.
        let mut gone = Vec::new();
        for (pane, key) in filed {
            if pane > last {
                continue;
            }
            self.groups.remove(&key);
            self.unfile(store, clock, pane, &key)?;
            let stored = !self.close_unstored(clock, pane, &key);
            gone.push((key, stored));
        }
        if let PaneMode::On(panes) = &mut self.panes {
            panes.closed_through.insert(clock, last);
        }
        Ok((closed, gone))
    }

    /// A window's result from the panes of group `group_row` starting at `starts`: its latest
    /// timestamp (`fallback` if none) and each aggregate's value, their states merged.
    fn merged_result(
        &mut self,
        store: &Store,
        group_row: &[u8],
        starts: &[i64],
        (plan, input): (&AggregatePlan, &Schema),
        fallback: i64,
    ) -> Result<(i64, Vec<ScalarValue>)> {
        let calls = plan.aggregates.len();
        let mut states: Vec<Vec<Vec<ScalarValue>>> = vec![Vec::new(); calls];
        let mut latest = None;
        let mut key = Vec::with_capacity(group_row.len() + 8);
        for &start in starts {
            key.clear();
            key.extend_from_slice(group_row);
            key.extend_from_slice(&start.to_be_bytes());
            let group = self.group(store, &key, plan, input)?;
            latest = latest.max(group.latest);
            if starts.len() == 1 {
                // One pane: its accumulators give the window's result as they stand.
                let values = group.results(&plan.aggregates)?;
                return Ok((latest.unwrap_or(fallback), values));
            }
            for (k, acc) in group.accumulators.iter_mut().enumerate() {
                let state = acc.state().map_err(|e| {
                    EngineError::execution("cannot read a pane's aggregate state", e)
                })?;
                if states[k].is_empty() {
                    states[k] = vec![Vec::with_capacity(starts.len()); state.len()];
                }
                for (column, value) in states[k].iter_mut().zip(state) {
                    column.push(value);
                }
            }
        }
        let mut values = Vec::with_capacity(calls);
        for (call, state) in plan.aggregates.iter().zip(states) {
            let mut acc = call.make_accumulator(input, false)?;
            let columns = state
                .into_iter()
                .map(ScalarValue::iter_to_array)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| EngineError::internal_from("cannot lay out pane states", e))?;
            if !columns.is_empty() {
                acc.merge_batch(&columns)
                    .map_err(|e| EngineError::execution("cannot merge panes", e))?;
            }
            values.push(current_result(&mut acc, call)?);
        }
        Ok((latest.unwrap_or(fallback), values))
    }
}

impl Aggregation<'_> {
    /// By panes, row `i` updates the pane it falls in, and the windows its stream time closes
    /// are emitted. Returns whether it was late for every window.
    pub(super) fn aggregate_pane_row(
        &mut self,
        store: &Store,
        batch: &Evaluated<'_>,
        i: usize,
        stream_time: i64,
        updates: &mut Updates,
    ) -> Result<bool> {
        let plan = self.plan;
        let Some((windows, grace)) = &plan.window else {
            return Err(EngineError::internal("panes without windows"));
        };
        let timestamp = batch.rowtimes.value(i);
        let clock = batch.clocks[i];
        // The pane starts with the record's latest window, which is the last to close: when
        // it has closed (or starts before the epoch), every window of the record has.
        let pane = windows.start_at_or_before(timestamp);
        if pane < 0
            || super::windows::window_closed(
                pane.saturating_add(windows.size()),
                *grace,
                stream_time,
            )
        {
            return Ok(true);
        }
        let group_row = batch.group_rows.row(i);
        let mut key = Vec::with_capacity(group_row.as_ref().len() + 8);
        key.extend_from_slice(group_row.as_ref());
        key.extend_from_slice(&pane.to_be_bytes());
        let input = &batch.input_schema;
        let group = self.state.window_group(store, (&key, pane), plan, input)?;
        for (k, acc) in group.accumulators.iter_mut().enumerate() {
            let args = batch.args(k, i);
            if batch.rows.retracts(i) {
                acc.retract_batch(&args)
            } else {
                acc.update_batch(&args)
            }
            .map_err(|e| EngineError::execution("aggregation failed", e))?;
        }
        group.latest = Some(group.latest.map_or(timestamp, |t| t.max(timestamp)));
        let filed = std::mem::replace(&mut group.filed, true);
        let marked = std::mem::replace(&mut group.unwritten, true);
        if !filed {
            self.state.file_window(store, clock, pane, &key)?;
        }
        if let Some(latest) = self.state.latest_start.as_mut() {
            latest.advance(clock, pane);
        }
        if !marked {
            updates.dirty.insert(key);
        }
        let (closed, gone) = self
            .state
            .close_panes(store, (plan, input), (clock, stream_time))?;
        for (key, stored) in gone {
            updates.dirty.remove(&key);
            if stored {
                updates.deleted.push(key);
            }
        }
        updates
            .finals
            .add(i, closed, (&mut updates.dirty, &mut updates.deleted));
        Ok(false)
    }
}
