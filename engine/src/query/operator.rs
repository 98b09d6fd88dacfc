//! The one interface between a query's task and what it computes.
//!
//! The task (persistent, push or pull) reads batches of records from its inputs and hands each
//! to its operator; the operator returns sink records, failed records and state changes, which
//! the task commits together. Every kind of query is an [`Operator`]: a projection, an
//! aggregation, a join. A join hands its joined rows on to a [`RowsOperator`] (a projection or an
//! aggregation), so join-then-aggregate is two operators composed, not a kind of its own.

use eddy_storage::{LogRecord, Record, Store};

use crate::error::Result;
use crate::query::rows::Rows;
use crate::query::source::RecordError;
use crate::query::state::StateWrites;

/// One partition a query reads, and which of its sources it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// The source's index among the query's sources (a join's left is 0, right 1).
    pub side: usize,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

/// What an operator made of one batch: records for the sink, records it could not process,
/// and the state changes to commit with them.
#[derive(Debug, Default)]
pub(crate) struct StepOutput {
    /// Records for the sink, in input order.
    pub records: Vec<Record>,
    /// Records that could not be processed.
    pub errors: Vec<RecordError>,
    /// Changes to the operator's state, in the order they apply.
    pub writes: StateWrites,
    /// The partition of the sink each record goes to, when the operator places them itself
    /// (a split aggregation's router); empty when the sink's partitioner places them by key.
    pub routes: Vec<u32>,
    /// Records for other topics than the sink, each with its topic and partition (a split
    /// foreign-key join's subscriptions), written in the same commit.
    pub to: Vec<(String, u32, Record)>,
}

impl StepOutput {
    /// Nothing to write and nothing failed.
    pub(crate) fn empty() -> Self {
        StepOutput::default()
    }

    /// A router's output: `records` unchanged, each sent to its partition in `routes`.
    pub(crate) fn routed(records: &[eddy_storage::LogRecord], routes: Vec<u32>) -> Self {
        StepOutput {
            records: records.iter().map(|r| r.record.clone()).collect(),
            routes,
            ..StepOutput::empty()
        }
    }

    /// `later`'s records, failures and state changes after these.
    pub(crate) fn extend(&mut self, later: StepOutput) {
        self.records.extend(later.records);
        self.errors.extend(later.errors);
        self.writes.extend(later.writes);
        self.routes.extend(later.routes);
        self.to.extend(later.to);
    }
}

/// A streaming operator: what a query computes over the records its task reads.
pub(crate) trait Operator: Send {
    /// Processes records read from one partition of one of the query's sources.
    fn process(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput>;

    /// Processes a batch, then lets stream time close what it passed: what a task calls per
    /// batch read.
    fn step(&mut self, store: &Store, input: &Input, records: &[LogRecord]) -> Result<StepOutput> {
        let mut out = self.process(store, input, records)?;
        out.extend(self.advance_time(store)?);
        Ok(out)
    }

    /// Stream time moved during the last [`Operator::process`]: emits and drops what it
    /// closed. [`Operator::step`] calls it after every batch.
    fn advance_time(&mut self, _store: &Store) -> Result<StepOutput> {
        Ok(StepOutput::empty())
    }

    /// Empties the record cache before a commit: the updates it held back, and what stream
    /// time closed meanwhile.
    fn flush(&mut self, _store: &Store) -> Result<StepOutput> {
        Ok(StepOutput::empty())
    }

    /// The state-store namespace its state changes go to, if it keeps state.
    fn state_namespace(&self) -> Option<&str> {
        None
    }

    /// With a record cache that holds updates back until [`Operator::flush`], the bytes it
    /// holds now; `None` when every update goes out as it happens.
    fn record_cache(&self) -> Option<usize> {
        None
    }

    /// How many entries of stored state (groups, rows, sessions) it keeps in memory, read
    /// through from the store as input needs them.
    fn cached_state(&self) -> usize {
        0
    }

    /// Forgets the state it keeps in memory, to read it back from the store when input needs
    /// it again. The task calls it only when every change the operator made is stored: after
    /// a flush, with no commit in flight, so what is read back is what was dropped.
    fn drop_cached_state(&mut self) {}
}

/// An operator that can also take rows another operator made (a join's joined rows) instead
/// of records read from the log.
pub(crate) trait RowsOperator: Operator {
    /// Processes rows made from records of partition `rows.partition`.
    fn process_rows(&mut self, store: &Store, rows: Rows<'_>) -> Result<StepOutput>;
}
