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
use super::table::{LastRows, RETRACTION_HEADER, changes};
use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, StepOutput};
use crate::query::rows::Rows;
use crate::query::source::RecordErrorKind;

/// A row's group's partition, and its key as the result writes it where it can be computed.
pub(crate) type Routed = (u32, Option<Vec<u8>>);

/// Which partition of a repartition topic each row's group goes to.
pub(crate) struct GroupRouting<'p> {
    plan: &'p AggregatePlan,
    partitioner: GroupPartitioner,
    /// Group values to bytes, for a group whose sink key cannot be computed.
    converter: RowConverter,
}

impl<'p> GroupRouting<'p> {
    /// The routing of `plan`'s rows over `partitions` partitions, by their groups' keys as
    /// `sink` writes them.
    pub(crate) fn new(
        plan: &'p AggregatePlan,
        (sink, partitions, schemas): (&DataSource, u32, &crate::codec::Schemas),
    ) -> Result<Self> {
        let (partitioner, converter) = group_keying(plan, (sink, partitions, schemas))?;
        Ok(GroupRouting {
            plan,
            partitioner,
            converter,
        })
    }

    /// How many partitions rows are routed over.
    pub(crate) fn partitions(&self) -> u32 {
        self.partitioner.partitions()
    }

    /// For each row, its group's partition and key (where the sink's key can be computed),
    /// or `None` where a `GROUP BY` expression fails on it. Failures are noted in
    /// `rows.errors`, which the caller drops: they are logged where the row is aggregated.
    pub(crate) fn route(&self, rows: &mut Rows<'_>) -> Result<Vec<Option<Routed>>> {
        let n = rows.batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut groups = Vec::with_capacity(self.plan.group_by.len());
        let mut failed = vec![false; n];
        for by in &self.plan.group_by {
            let (array, failures) = evaluate_step(
                by,
                rows,
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
            .assign_keyed(&groups, n, &|i| group_rows.row(i).as_ref().to_vec());
        Ok(assigned
            .into_iter()
            .zip(failed)
            .map(|(routed, failed)| (!failed).then_some(routed))
            .collect())
    }
}

/// Sends each record to its group's partition.
pub(crate) struct GroupRouter<'p> {
    plan: &'p AggregatePlan,
    routing: GroupRouting<'p>,
}

impl<'p> GroupRouter<'p> {
    /// The router of `plan`, whose results go to `sink`.
    pub(crate) fn new(
        store: &Store,
        plan: &'p AggregatePlan,
        (sink, schemas): (&DataSource, &crate::codec::Schemas),
    ) -> Result<Self> {
        let partitions = store.partition_count(&plan.source.topic)?;
        Ok(GroupRouter {
            plan,
            routing: GroupRouting::new(plan, (sink, partitions, schemas))?,
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
        let mut routes = vec![input.partition % self.routing.partitions(); records.len()];
        let decoded = self.plan.decoder.decode(input.partition, records)?;
        let mut rows = Rows::decoded(input.partition, records, decoded);
        for (row, routed) in self.routing.route(&mut rows)?.into_iter().enumerate() {
            if let Some((partition, _)) = routed {
                routes[rows.rows_from[row]] = partition;
            }
        }
        // What failed here is the aggregation's to log, where the record arrives.
        Ok(StepOutput::routed(records, routes))
    }
}

/// The first part of an aggregation over a table that the nodes of a service split: a task
/// per partition of the table, which keeps each key's last row (as a single node does, see
/// [`super::table`]) and sends each change on as Kafka Streams' table `groupBy` does: the
/// key's previous row, marked as a retraction, to its group's partition, and the new row to
/// its own. The aggregation's task of that partition takes the one out and adds the other.
pub(crate) struct TableRouter<'p> {
    plan: &'p AggregatePlan,
    routing: GroupRouting<'p>,
    namespace: String,
    rows: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'p> TableRouter<'p> {
    /// The router of `plan`'s table, keeping its last rows in `namespace`, over the
    /// `partitions` partitions of the repartition topic, by their groups' keys as `sink`
    /// writes them.
    pub(crate) fn new(
        plan: &'p AggregatePlan,
        namespace: &str,
        (sink, partitions, schemas): (&DataSource, u32, &crate::codec::Schemas),
    ) -> Result<Self> {
        Ok(TableRouter {
            plan,
            routing: GroupRouting::new(plan, (sink, partitions, schemas))?,
            namespace: namespace.to_string(),
            rows: std::collections::HashMap::new(),
        })
    }
}

impl Operator for TableRouter<'_> {
    fn process(
        &mut self,
        store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let mut writes = Vec::new();
        let last = LastRows {
            namespace: &self.namespace,
            rows: &mut self.rows,
        };
        let (mut rows, olds) = changes(
            store,
            self.plan,
            last,
            input.partition,
            records,
            &mut writes,
        )?;
        // Records that cannot be read are logged here: only their key's retraction goes on.
        let errors = std::mem::take(&mut rows.errors);
        let routed = self.routing.route(&mut rows)?;
        let own = input.partition % self.routing.partitions().max(1);
        let mut out = StepOutput {
            errors,
            writes,
            ..StepOutput::empty()
        };
        for (row, routed) in routed.into_iter().enumerate() {
            let from = rows.rows_from[row];
            let mut record = records[from].record.clone();
            if rows.retracts(row) {
                let Some(old) = &olds[from] else {
                    return Err(EngineError::internal(
                        "a retraction without the row it takes out",
                    ));
                };
                record.value.clone_from(&old.record.value);
                record.headers.push(eddy_storage::RecordHeader {
                    key: RETRACTION_HEADER.to_string(),
                    value: None,
                });
            }
            // A row whose group fails stays on this partition number, to be logged there.
            let (partition, _) = routed.unwrap_or((own, None));
            out.records.push(record);
            out.routes.push(partition);
        }
        Ok(out)
    }

    fn state_namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn cached_state(&self) -> usize {
        self.rows.len()
    }

    fn drop_cached_state(&mut self) {
        self.rows.clear();
    }
}
