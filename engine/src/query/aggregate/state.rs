//! An aggregation's running state: its groups (accumulators in memory, loaded from the store
//! as rows need them), each key's sessions, the stream time of each partition, the index of open
//! windows by the bound they close at (kept in the store, with the changes since the cache was
//! dropped in memory), and the record cache of updates not yet emitted.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::row::{RowConverter, SortField};
use eddy_storage::Store;

use super::AggregatePlan;
use super::deferred::DeferredWrites;
use super::group::{Group, restore};
use super::panes::PaneMode;
use super::stream_time::{GroupPartitioner, PartitionTimes};
use super::windows::Session;
use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::state::{StateWrites, aggregate_keys, prefixed, time_bytes, time_from_bytes};

/// A map by group key: hashed with foldhash, as every aggregated row looks its groups up.
pub(super) type GroupMap<V> = HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// A set of group keys, hashed as [`GroupMap`]'s.
pub(super) type GroupSet = std::collections::HashSet<Vec<u8>, foldhash::fast::RandomState>;

/// The running state of an aggregation: groups by their state key, and stream time.
pub(crate) struct AggregateState {
    /// Where its state lives in the store.
    pub(super) namespace: String,
    /// The groups in memory, by their key.
    pub(super) groups: GroupMap<Group>,
    /// A table source's current value per key, once read.
    pub(super) rows: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Session windows: each group's sessions as (start, end), once read.
    pub(super) sessions: HashMap<Vec<u8>, Vec<Session>>,
    /// Stream time of each partition (see [`super::stream_time`]), once read.
    pub(super) stream_times: Option<PartitionTimes>,
    /// Which partition's stream time governs each group.
    pub(super) partitioner: GroupPartitioner,
    /// Whether windows are sessions, whose keys end in a start and an end (else a start).
    pub(super) sessions_windowed: bool,
    /// Group values to and from their stored form.
    pub(super) converter: RowConverter,
    /// Changes since the cache was last dropped to the index of windows still open (tumbling
    /// and hopping) or not yet emitted (`EMIT FINAL`), filed by start (a session by its end):
    /// by index key, whether filed or taken out. Every change not yet committed is here, so
    /// it shadows what the store holds.
    pub(super) window_index: BTreeMap<Vec<u8>, bool>,
    /// Index changes not yet handed to a commit.
    pub(super) index_writes: StateWrites,
    /// Whether the store is known to keep the index (see [`AggregateState::index_ready`]).
    pub(super) index_kept: bool,
    /// Per partition clock, the bound through which windows were already taken out of the
    /// index, so the next take need not pass over them again.
    pub(super) taken_through: HashMap<u32, i64>,
    /// `EMIT FINAL`: the latest window start written in each partition, once read.
    pub(super) latest_start: Option<PartitionTimes>,
    /// `EMIT FINAL`: windows starting after this one were first touched since the groups in
    /// memory were loaded or last dropped, so a group of theirs not in memory is in no store
    /// either; unknown until the latest starts are read.
    pub(super) untouched_after: Option<i64>,
    /// Whether updates wait in the record cache for its flush instead of going out one per
    /// input row.
    pub(super) coalesce: bool,
    /// The groups changed since the last flush, in the order they first changed.
    pub(super) pending: Vec<PendingUpdate>,
    /// Each pending group's index in `pending`.
    pub(super) pending_at: GroupMap<usize>,
    /// Estimated bytes the pending updates hold, as the record cache counts them.
    pub(super) pending_bytes: usize,
    /// `EMIT FINAL` over time windows with the record cache on: group states written once
    /// per commit (see [`DeferredWrites`]).
    pub(super) deferred: Option<DeferredWrites>,
    /// Whether hopping windows are kept as panes.
    pub(super) panes: PaneMode,
}

/// A group changed since the last flush of the record cache: its window, and the partition and
/// offset of the last input record that changed it.
pub(super) struct PendingUpdate {
    /// The group.
    pub(super) key: Vec<u8>,
    /// Its window's bounds, or (0, 0).
    pub(super) window: (i64, i64),
    /// The partition of the last record that changed it.
    pub(super) partition: u32,
    /// That record's offset.
    pub(super) offset: i64,
}

/// A group's key in the state: its grouping values (and a window's bounds).
pub(super) type GroupKey = Vec<u8>;

/// Window keys by the bound they close at.
pub(super) type WindowIndex = std::collections::BTreeMap<i64, std::collections::BTreeSet<Vec<u8>>>;

/// A session's group key: the grouping values, then its start and end.
pub(super) fn session_key(group_key: &[u8], start: i64, end: i64) -> Vec<u8> {
    let mut key = group_key.to_vec();
    key.extend_from_slice(&start.to_be_bytes());
    key.extend_from_slice(&end.to_be_bytes());
    key
}

/// Where a group's list of sessions is stored.
pub(super) fn session_index_key(group_key: &[u8]) -> Vec<u8> {
    prefixed(aggregate_keys::SESSIONS, group_key)
}

/// Where a window is filed in the index of open windows: its partition's clock, the bound it
/// closes at, its key.
fn window_index_key(clock: u32, bound: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + key.len());
    out.push(aggregate_keys::WINDOW_INDEX);
    out.extend_from_slice(&clock.to_be_bytes());
    out.extend_from_slice(&time_bytes(bound));
    out.extend_from_slice(key);
    out
}

/// Where a group's accumulators are stored.
pub(super) fn state_key(group_key: &[u8]) -> Vec<u8> {
    prefixed(aggregate_keys::GROUP, group_key)
}

/// How `plan` keys its groups: the partition whose clock governs each, among `partitions`,
/// for the sink `sink`; and group values to their stored form.
pub(super) fn group_keying(
    plan: &AggregatePlan,
    (sink, partitions, schemas): (&DataSource, u32, &crate::codec::Schemas),
) -> Result<(GroupPartitioner, RowConverter)> {
    let fields = plan
        .aggregate_schema
        .fields()
        .iter()
        .take(plan.group_by.len())
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let partitioner = GroupPartitioner::new(
        (sink, schemas),
        partitions,
        &plan.keys,
        &plan.aggregate_schema,
        plan.group_by.len(),
    )?;
    let converter = RowConverter::new(fields)
        .map_err(|e| EngineError::internal_from("cannot key an aggregation", e))?;
    Ok((partitioner, converter))
}

impl AggregateState {
    /// The state kept in `namespace`, writing `sink`, over a source of `partitions`
    /// partitions; groups load from the store as rows need them. With `coalesce`, updates to
    /// a group wait for the record cache to flush, except under session windows and `EMIT
    /// FINAL`, which emit as they go.
    pub(super) fn new(
        namespace: &str,
        plan: &AggregatePlan,
        (sink, partitions, schemas): (&DataSource, u32, &crate::codec::Schemas),
        coalesce: bool,
    ) -> Result<Self> {
        let (partitioner, converter) = group_keying(plan, (sink, partitions, schemas))?;
        Ok(AggregateState {
            namespace: namespace.to_string(),
            groups: GroupMap::default(),
            rows: HashMap::new(),
            sessions: HashMap::new(),
            stream_times: None,
            sessions_windowed: plan.session.is_some(),
            partitioner,
            window_index: BTreeMap::new(),
            index_writes: StateWrites::new(),
            index_kept: false,
            taken_through: HashMap::new(),
            latest_start: None,
            untouched_after: None,
            coalesce: coalesce && plan.session.is_none() && !plan.emit_final,
            deferred: (coalesce && plan.session.is_none() && plan.emit_final)
                .then(DeferredWrites::default),
            panes: PaneMode::default(),
            pending: Vec::new(),
            pending_at: GroupMap::default(),
            pending_bytes: 0,
            converter,
        })
    }

    /// The groups, table rows, session lists and window index changes in memory.
    pub(super) fn cached_entries(&self) -> usize {
        self.groups.len() + self.rows.len() + self.sessions.len() + self.window_index.len()
    }

    /// Forgets the groups, table rows, session lists and window index changes in memory; they
    /// are read from the store again as input needs them. Nothing is dropped while the record
    /// cache holds updates, which are emitted from the groups in memory, or while index
    /// changes or groups' states wait to be written.
    pub(super) fn drop_cached(&mut self) {
        let writes_wait = self
            .deferred
            .as_ref()
            .is_some_and(DeferredWrites::holds_writes);
        if self.pending.is_empty() && self.index_writes.is_empty() && !writes_wait {
            if let (Some(after), Some(starts)) = (&mut self.untouched_after, &self.latest_start) {
                *after = starts.iter().map(|(_, start)| start).fold(*after, i64::max);
            }
            self.groups = GroupMap::default();
            self.rows = HashMap::new();
            self.sessions = HashMap::new();
            self.window_index = BTreeMap::new();
        }
    }

    /// The group stored under `key`, loaded from the store the first time.
    pub(super) fn group<'a>(
        &'a mut self,
        store: &Store,
        key: &[u8],
        plan: &AggregatePlan,
        input: &Schema,
    ) -> Result<&'a mut Group> {
        self.group_maybe_stored(store, key, true, (plan, input))
    }

    /// `EMIT FINAL`: the group of window `key`, starting at `start`; one of a window first
    /// touched since the groups in memory were loaded is not looked for in the store.
    pub(super) fn window_group<'a>(
        &'a mut self,
        store: &Store,
        (key, start): (&[u8], i64),
        plan: &AggregatePlan,
        input: &Schema,
    ) -> Result<&'a mut Group> {
        let maybe_stored = self.untouched_after.is_none_or(|after| start <= after);
        self.group_maybe_stored(store, key, maybe_stored, (plan, input))
    }

    /// The group under `key`: from memory, else from the store when it may be there, else new.
    fn group_maybe_stored<'a>(
        &'a mut self,
        store: &Store,
        key: &[u8],
        maybe_stored: bool,
        (plan, input): (&AggregatePlan, &Schema),
    ) -> Result<&'a mut Group> {
        if !self.groups.contains_key(key) {
            let mut group = self.fresh_group(plan, input)?;
            let stored = match maybe_stored {
                true => store.state_get(&self.namespace, &state_key(key))?,
                false => None,
            };
            match stored {
                Some(bytes) => restore(&mut group, &bytes)?,
                None => {
                    if let Some(deferred) = &mut self.deferred {
                        deferred.made(key);
                    }
                }
            }
            self.groups.insert(key.to_vec(), group);
        }
        self.groups
            .get_mut(key)
            .ok_or_else(|| EngineError::internal("aggregate group vanished"))
    }
}

impl AggregateState {
    /// The times per partition stored under `key`.
    pub(super) fn stored_times(&self, store: &Store, key: &[u8]) -> Result<PartitionTimes> {
        let stored = store.state_get(&self.namespace, key)?;
        Ok(PartitionTimes::decode(
            stored.as_deref(),
            self.partitioner.partitions(),
        ))
    }

    /// Stream time per partition, read from the store the first time.
    pub(super) fn stream_times(&mut self, store: &Store) -> Result<&mut PartitionTimes> {
        if self.stream_times.is_none() {
            self.stream_times = Some(self.stored_times(store, aggregate_keys::STREAM_TIME)?);
        }
        self.stream_times
            .as_mut()
            .ok_or_else(|| EngineError::internal("the stream times vanished"))
    }

    /// Makes sure the store keeps the index of open windows: state written before it was kept
    /// is indexed once, from its groups' keys. Reads the latest starts of `EMIT FINAL` too.
    fn index_ready(&mut self, store: &Store) -> Result<()> {
        if self.index_kept {
            return Ok(());
        }
        if store
            .state_get(&self.namespace, aggregate_keys::WINDOW_INDEX_KEPT)?
            .is_none()
        {
            for (clock, bound, key) in self.stored_windows(store)? {
                self.file(clock, bound, &key);
            }
            self.index_writes
                .push((aggregate_keys::WINDOW_INDEX_KEPT.to_vec(), Some(Vec::new())));
        }
        let starts = self.stored_times(store, aggregate_keys::LATEST_START)?;
        // EMIT FINAL has written the latest starts with every step that touched a window
        // (since it was first built), so no group in the store starts after them.
        self.untouched_after = Some(starts.iter().map(|(_, s)| s).max().unwrap_or(i64::MIN));
        self.latest_start = Some(starts);
        self.index_kept = true;
        Ok(())
    }

    /// Every window the store holds a group of, with its partition clock and the bound it
    /// closes at: what the index holds, read the slow way.
    fn stored_windows(&self, store: &Store) -> Result<Vec<(u32, i64, GroupKey)>> {
        let mut filed: Vec<(i64, Vec<u8>)> = Vec::new();
        for entry in store.state_scan_prefix(&self.namespace, &[aggregate_keys::GROUP])? {
            let (key, _) = entry?;
            let group_key = key[1..].to_vec();
            if let Some(bound) = group_key
                .len()
                .checked_sub(8)
                .and_then(|at| group_key[at..].try_into().ok())
                .map(i64::from_be_bytes)
            {
                filed.push((bound, group_key));
            }
        }
        // A window's key is its group's, then its start (and a session's end).
        let suffix = if self.sessions_windowed { 16 } else { 8 };
        let (bounds, keys): (Vec<i64>, Vec<GroupKey>) = filed.into_iter().unzip();
        let clocks = if keys.is_empty() || self.partitioner.partitions() <= 1 {
            vec![0; keys.len()]
        } else {
            let groups = self.group_values(&keys, suffix)?;
            self.partitioner.assign(&groups, keys.len(), &|i| {
                keys[i][..keys[i].len().saturating_sub(suffix)].to_vec()
            })
        };
        Ok(clocks
            .into_iter()
            .zip(bounds)
            .zip(keys)
            .map(|((c, b), k)| (c, b, k))
            .collect())
    }

    /// Files window `key` of partition `clock` under the bound it closes at.
    fn file(&mut self, clock: u32, bound: i64, key: &[u8]) {
        let index_key = window_index_key(clock, bound, key);
        if self.window_index.get(&index_key) == Some(&true) {
            return;
        }
        if self
            .taken_through
            .get(&clock)
            .is_some_and(|&through| bound <= through)
        {
            match bound.checked_sub(1) {
                Some(before) => self.taken_through.insert(clock, before),
                None => self.taken_through.remove(&clock),
            };
        }
        self.index_writes
            .push((index_key.clone(), Some(Vec::new())));
        self.window_index.insert(index_key, true);
    }

    /// Files window `key` of partition `clock` as open (or, under `EMIT FINAL`, waiting) until
    /// `bound`: a window by its start, a session by its end.
    pub(super) fn file_window(
        &mut self,
        store: &Store,
        clock: u32,
        bound: i64,
        key: &[u8],
    ) -> Result<()> {
        self.index_ready(store)?;
        self.file(clock, bound, key);
        Ok(())
    }

    /// Index changes to commit with the step.
    pub(super) fn take_index_writes(&mut self) -> StateWrites {
        std::mem::take(&mut self.index_writes)
    }

    /// With deferred writes, whether the store never held the group of window `key` (filed
    /// under partition `clock` at `start`) that just closed: then its index entry is not
    /// written, and its state is not deleted.
    pub(super) fn close_unstored(&mut self, clock: u32, start: i64, key: &[u8]) -> bool {
        self.deferred
            .as_mut()
            .is_some_and(|d| d.closed_unstored(key, window_index_key(clock, start, key)))
    }

    /// Takes out of partition `clock`'s index every window filed at or before `bound`, by
    /// bound.
    pub(super) fn take_windows_through(
        &mut self,
        store: &Store,
        clock: u32,
        bound: i64,
    ) -> Result<WindowIndex> {
        self.index_ready(store)?;
        let index_prefix = window_index_key(clock, i64::MIN, &[]);
        let prefix = &index_prefix[..5];
        let from = match self.taken_through.get(&clock) {
            Some(&through) if through >= bound => return Ok(WindowIndex::new()),
            Some(&through) => [prefix, &time_bytes(through.saturating_add(1))].concat(),
            None => prefix.to_vec(),
        };
        let to = match bound.checked_add(1) {
            Some(after) => Some([prefix, &time_bytes(after)].concat()),
            None => eddy_storage::prefix_successor(prefix),
        };
        let found = self.index_between(store, (&from, to.as_deref()), true)?;
        let mut taken = WindowIndex::new();
        for (index_key, filed) in found {
            let Some(filed_at) = index_key.get(5..13).and_then(time_from_bytes) else {
                continue;
            };
            if !filed {
                continue;
            }
            taken
                .entry(filed_at)
                .or_default()
                .insert(index_key[13..].to_vec());
            self.index_writes.push((index_key.clone(), None));
            self.window_index.insert(index_key, false);
        }
        self.taken_through.insert(clock, bound);
        Ok(taken)
    }

    /// The index's entries from index key `from` up to `to` (exclusive), each with whether it
    /// is filed or was taken out: the store's, shadowed by the changes in memory. Without
    /// `in_store`, the store is known to hold none in that range, and is not read.
    fn index_between(
        &self,
        store: &Store,
        (from, to): (&[u8], Option<&[u8]>),
        in_store: bool,
    ) -> Result<BTreeMap<Vec<u8>, bool>> {
        let mut found: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        if in_store {
            for entry in store.state_scan_range(&self.namespace, from, to)? {
                found.insert(entry?.0, true);
            }
        }
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        for (key, &filed) in self
            .window_index
            .range::<[u8], _>((Bound::Included(from), upper))
        {
            found.insert(key.clone(), filed);
        }
        Ok(found)
    }

    /// The windows (or panes) of partition `clock` filed from `from` up to `to` (exclusive),
    /// by bound, without taking them out. When every one of them was filed since the groups
    /// in memory were loaded, the store is not read.
    pub(super) fn filed_between(
        &mut self,
        store: &Store,
        clock: u32,
        (from, to): (i64, i64),
    ) -> Result<Vec<(i64, GroupKey)>> {
        self.index_ready(store)?;
        if from >= to {
            return Ok(Vec::new());
        }
        let lower = window_index_key(clock, from, &[]);
        let upper = window_index_key(clock, to, &[]);
        // Entries the store holds and memory does not were filed before the groups were last
        // loaded, at bounds no later than the latest starts written then.
        let in_store = self.untouched_after.is_none_or(|after| from <= after);
        let found = self.index_between(store, (&lower, Some(&upper)), in_store)?;
        Ok(found
            .into_iter()
            .filter(|(_, filed)| *filed)
            .filter_map(|(index_key, _)| {
                let bound = index_key.get(5..13).and_then(time_from_bytes)?;
                Some((bound, index_key[13..].to_vec()))
            })
            .collect())
    }

    /// Takes the session stored under `key`, which ends at `end`, out of its group's session
    /// list; returns the group key and the session's start (`None` for a malformed key).
    pub(super) fn leave_session_list(
        &mut self,
        store: &Store,
        key: &[u8],
        end: i64,
    ) -> Result<Option<(GroupKey, i64)>> {
        let Some(at) = key.len().checked_sub(16) else {
            return Ok(None);
        };
        let start = key[at..at + 8]
            .try_into()
            .map(i64::from_be_bytes)
            .map_err(|_| EngineError::internal("a session key is malformed"))?;
        let group_key = key[..at].to_vec();
        let mut sessions = self.sessions_of(store, &group_key)?;
        sessions.retain(|s| *s != (start, end));
        self.sessions.insert(group_key.clone(), sessions);
        Ok(Some((group_key, start)))
    }

    /// Takes out of the index, in every partition, the windows filed at or before the
    /// partition's stream time less `lag`, by bound.
    pub(super) fn take_closed(&mut self, store: &Store, lag: i64) -> Result<Vec<(i64, GroupKey)>> {
        let clocks: Vec<(u32, i64)> = self.stream_times(store)?.iter().collect();
        let mut closed = Vec::new();
        for (clock, stream_time) in clocks {
            for (bound, keys) in
                self.take_windows_through(store, clock, stream_time.saturating_sub(lag))?
            {
                closed.extend(keys.into_iter().map(|key| (bound, key)));
            }
        }
        Ok(closed)
    }

    /// Tumbling and hopping windows (without `EMIT FINAL`) that their partition's stream
    /// time has closed: their end plus grace is behind it, so no record can change them
    /// again. They leave memory; the caller deletes them from the store.
    pub(super) fn expire_windows(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
    ) -> Result<Vec<Vec<u8>>> {
        let Some((windows, grace)) = &plan.window else {
            return Ok(Vec::new());
        };
        if plan.emit_final {
            return Ok(Vec::new());
        }
        let expired: Vec<GroupKey> = self
            .take_closed(store, windows.expiry_lag(*grace))?
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        for key in &expired {
            self.groups.remove(key);
        }
        Ok(expired)
    }

    /// Sessions (without `EMIT FINAL`) that their partition's stream time has closed: their
    /// end plus the gap and the grace is behind it, so no record can join them again. They
    /// leave memory and their groups' session lists; the caller deletes them from the store
    /// and writes back the lists of the groups returned.
    pub(super) fn expire_sessions(
        &mut self,
        store: &Store,
        plan: &AggregatePlan,
    ) -> Result<(Vec<GroupKey>, Vec<GroupKey>)> {
        let Some(sessions) = plan.session else {
            return Ok((Vec::new(), Vec::new()));
        };
        if plan.emit_final {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut expired = Vec::new();
        let mut changed = Vec::new();
        for (end, key) in self.take_closed(store, sessions.expiry_lag())? {
            if let Some((group_key, _)) = self.leave_session_list(store, &key, end)? {
                self.groups.remove(&key);
                changed.push(group_key);
                expired.push(key);
            }
        }
        Ok((expired, changed))
    }

    /// Takes window (or pane) `key` of partition `clock` out of the index, by the bound it is
    /// filed under: a session merged away, or a pane whose windows have all closed.
    pub(super) fn unfile(
        &mut self,
        store: &Store,
        clock: u32,
        bound: i64,
        key: &[u8],
    ) -> Result<()> {
        self.index_ready(store)?;
        let index_key = window_index_key(clock, bound, key);
        self.index_writes.push((index_key.clone(), None));
        self.window_index.insert(index_key, false);
        Ok(())
    }

    /// The group-by values of group keys: each its grouping row, then `suffix` bytes of window
    /// bounds (8 for a window's start, 16 for a session's start and end, or none).
    pub(super) fn group_values(&self, keys: &[Vec<u8>], suffix: usize) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let rows: Vec<_> = keys
            .iter()
            .map(|k| parser.parse(&k[..k.len().saturating_sub(suffix)]))
            .collect();
        self.converter
            .convert_rows(rows)
            .map_err(|e| EngineError::internal_from("cannot read group keys", e))
    }

    /// A group with no rows yet.
    pub(super) fn fresh_group(&self, plan: &AggregatePlan, input: &Schema) -> Result<Group> {
        Ok(Group {
            accumulators: plan
                .aggregates
                .iter()
                .map(|a| a.make_accumulator(input, plan.over_table()))
                .collect::<Result<_>>()?,
            emitted: false,
            latest: None,
            filed: false,
            unwritten: false,
        })
    }

    /// Removes a group, loading it first if it is only in the store.
    pub(super) fn take_group(
        &mut self,
        store: &Store,
        key: &[u8],
        plan: &AggregatePlan,
        input: &Schema,
    ) -> Result<Group> {
        self.group(store, key, plan, input)?;
        self.groups
            .remove(key)
            .ok_or_else(|| EngineError::internal("aggregate group vanished"))
    }

    /// A group key's sessions, loading them from the store the first time.
    pub(super) fn sessions_of(&mut self, store: &Store, group_key: &[u8]) -> Result<Vec<Session>> {
        if let Some(sessions) = self.sessions.get(group_key) {
            return Ok(sessions.clone());
        }
        let stored = store
            .state_get(&self.namespace, &session_index_key(group_key))?
            .unwrap_or_default();
        let sessions: Vec<(i64, i64)> = stored
            .chunks_exact(16)
            .filter_map(|c| {
                Some((
                    i64::from_be_bytes(c[..8].try_into().ok()?),
                    i64::from_be_bytes(c[8..].try_into().ok()?),
                ))
            })
            .collect();
        self.sessions.insert(group_key.to_vec(), sessions.clone());
        Ok(sessions)
    }

    /// Notes that a group changed, for the next flush of the record cache.
    pub(super) fn mark_pending(
        &mut self,
        key: Vec<u8>,
        window: (i64, i64),
        partition: u32,
        offset: i64,
    ) {
        if let Some(&at) = self.pending_at.get(&key) {
            let update = &mut self.pending[at];
            (update.window, update.partition, update.offset) = (window, partition, offset);
            return;
        }
        // As Kafka Streams' cache counts an entry: its key and value bytes, plus overhead.
        self.pending_bytes += 2 * key.len() + 64;
        self.pending_at.insert(key.clone(), self.pending.len());
        self.pending.push(PendingUpdate {
            key,
            window,
            partition,
            offset,
        });
    }

    /// The lists of sessions of `groups` as they now stand, to write back: a group with no
    /// session left leaves memory and the store.
    pub(super) fn session_list_writes(
        &mut self,
        groups: impl IntoIterator<Item = GroupKey>,
    ) -> StateWrites {
        let mut writes = StateWrites::new();
        for group_key in groups {
            let sessions = self.sessions.get(&group_key).cloned().unwrap_or_default();
            if sessions.is_empty() {
                self.sessions.remove(&group_key);
                writes.push((session_index_key(&group_key), None));
                continue;
            }
            let bytes: Vec<u8> = sessions
                .iter()
                .flat_map(|(s, e)| s.to_be_bytes().into_iter().chain(e.to_be_bytes()))
                .collect();
            writes.push((session_index_key(&group_key), Some(bytes)));
        }
        writes
    }
}
