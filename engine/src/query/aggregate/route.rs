//! The first part of an aggregation the nodes of a service split: each input record goes,
//! unchanged, to the partition of the query's repartition topic that its group's key hashes
//! to, so every record of a group reaches the one task that aggregates that partition, as
//! ksqlDB's `GroupBy` repartition step sends them. It is the partition whose stream time the
//! aggregation keeps for the group (see [`super::stream_time`]), so a task's groups share
//! its one clock.
//!
//! A record whose group cannot be computed (it cannot be read, or a `GROUP BY` expression
//! fails on it) stays on its own partition's number: the task that reads it logs it and
//! drops it, as the whole aggregation would.

use datafusion::arrow::row::RowConverter;
use eddy_storage::{LogRecord, Store};

use super::AggregatePlan;
use super::state::group_keying;
use super::stream_time::GroupPartitioner;
use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, StepOutput};
use crate::query::rows::Rows;
use crate::query::source::RecordErrorKind;

/// Sends each record to its group's partition.
pub(crate) struct GroupRouter<'p> {
    plan: &'p AggregatePlan,
    partitioner: GroupPartitioner,
    /// Group values to bytes, for a group whose sink key cannot be computed.
    converter: RowConverter,
}

impl<'p> GroupRouter<'p> {
    /// The router of `plan`, whose results go to `sink`.
    pub(crate) fn new(
        store: &Store,
        plan: &'p AggregatePlan,
        (sink, schemas): (&DataSource, &crate::codec::Schemas),
    ) -> Result<Self> {
        let partitions = store.partition_count(&plan.source.topic)?;
        let (partitioner, converter) = group_keying(plan, (sink, partitions, schemas))?;
        Ok(GroupRouter {
            plan,
            partitioner,
            converter,
        })
    }
}

impl Operator for GroupRouter<'_> {
    fn process(
        &mut self,
        _store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let partitions = self.partitioner.partitions();
        let mut routes = vec![input.partition % partitions; records.len()];
        let decoded = self.plan.decoder.decode(input.partition, records)?;
        let mut rows = Rows::decoded(input.partition, records, decoded);
        let n = rows.batch.num_rows();
        if n > 0 {
            let mut groups = Vec::with_capacity(self.plan.group_by.len());
            let mut failed = vec![false; n];
            for by in &self.plan.group_by {
                let (array, failures) = evaluate_step(
                    by,
                    &mut rows,
                    ("Error evaluating GROUP BY", RecordErrorKind::Dropped),
                )?;
                for (f, now) in failed.iter_mut().zip(failures) {
                    *f = *f || now;
                }
                groups.push(array);
            }
            let group_rows = self
                .converter
                .convert_columns(&groups)
                .map_err(|e| EngineError::internal_from("cannot key groups", e))?;
            let assigned = self
                .partitioner
                .assign(&groups, n, &|i| group_rows.row(i).as_ref().to_vec());
            for (row, partition) in assigned.into_iter().enumerate() {
                if !failed[row] {
                    routes[rows.rows_from[row]] = partition;
                }
            }
        }
        // What failed here is the aggregation's to log, where the record arrives.
        Ok(StepOutput::routed(records, routes))
    }
}
