//! The first part of a join the nodes of a service split, for a stream joined on another
//! column than its key: each of its records goes, unchanged, to the partition of the side's
//! repartition topic that its join key hashes to as the sources read by their key write their
//! keys (Kafka's default partitioner over the key in their key format). The task of that
//! partition number reads it there, with the partition of every keyed source holding the same
//! key, as ksqlDB's join repartitions a side before joining it.
//!
//! A source joined on its key but written in another key layout than the keyed sources' (a
//! table too) is routed alike: its join key is its key, so each key's records, deletions
//! (which have no value but decode their key) among them, stay in order on one partition.
//!
//! When every source is routed (two streams both joined on other columns than their keys),
//! the join key is written as JSON and the tasks are as many as the larger stream has
//! partitions.
//!
//! A record whose join key cannot be computed (it cannot be read, or the key expression fails
//! on it) stays on its own partition's number: the task that reads it treats it as the whole
//! join would.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::physical_expr::expressions::Column as ColumnRef;
use eddy_sql::ast::SourceKind;
use eddy_storage::{LogRecord, Store, partition_for_key};

use super::JoinChain;
use super::scope::joined_rows_source;
use crate::catalog::DataSource;
use crate::error::{EngineError, Result};
use crate::query::evaluate::evaluate_step;
use crate::query::operator::{Input, Operator, StepOutput};
use crate::query::rows::Rows;
use crate::query::sink::{OutputColumn, SinkEncoder};
use crate::query::source::RecordErrorKind;
use crate::schema::{Column, ColumnKind};

/// Sends each record of a routed join side to its join key's partition.
pub(crate) struct JoinRouter<'p> {
    chain: &'p JoinChain,
    /// Writes join keys as the keyed sources write their keys (as JSON when every source is
    /// routed).
    encoder: SinkEncoder,
    /// The keyed sources' key column, taken from a batch holding the join keys alone.
    key: [OutputColumn; 1],
    /// The tasks' partition count, which the repartition topics share.
    partitions: u32,
}

impl<'p> JoinRouter<'p> {
    /// The router of the routed sides of `chain`, writing to the repartition topic `topic`.
    pub(crate) fn new(
        store: &Store,
        (chain, topic): (&'p JoinChain, &str),
        schemas: &crate::codec::Schemas,
    ) -> Result<Self> {
        let keyed = chain
            .sources
            .iter()
            .zip(chain.routed())
            .find_map(|(source, routed)| (!routed).then_some(source));
        let keys = match keyed {
            Some(keyed) => keyed.clone(),
            None => every_source_routed(chain)?,
        };
        // The repartition topics were made with as many partitions as there are tasks.
        let partitions = store.partition_count(topic)?;
        let column = keys
            .key_columns()
            .next()
            .cloned()
            .ok_or_else(|| EngineError::internal("a split join's keyed source has no key"))?;
        Ok(JoinRouter {
            chain,
            encoder: SinkEncoder::new(&keys, schemas)?,
            key: [OutputColumn {
                column,
                expr: Arc::new(ColumnRef::new("key", 0)),
            }],
            partitions: partitions.max(1),
        })
    }
}

/// With every source routed (streams joined on other columns than their keys), how join
/// keys are written: as JSON, which any key type can be and needs no registry.
fn every_source_routed(chain: &JoinChain) -> Result<DataSource> {
    let stage = chain
        .stages
        .first()
        .ok_or_else(|| EngineError::internal("a split join without a stage"))?;
    let ty = eddy_sql::types::from_arrow(&stage.key_type)
        .map_err(|e| EngineError::internal(format!("a join key of no ksqlDB type: {e}")))?;
    let key = Column {
        name: "KEY".to_string(),
        ty,
        kind: ColumnKind::Key,
    };
    let keys = joined_rows_source(
        "JOIN_KEY".into(),
        SourceKind::Stream,
        String::new(),
        vec![key],
    );
    Ok(keys)
}

impl Operator for JoinRouter<'_> {
    fn process(
        &mut self,
        _store: &Store,
        input: &Input,
        records: &[LogRecord],
    ) -> Result<StepOutput> {
        let mut routes = vec![input.partition % self.partitions; records.len()];
        let side = self.chain.side_of(input.side).ok_or_else(|| {
            EngineError::internal("a join router read a source it has no side for")
        })?;
        let decoded = side.decoder.decode(input.partition, records)?;
        let mut rows = Rows::decoded(input.partition, records, decoded);
        if rows.batch.num_rows() > 0 {
            let (keys, failed) = evaluate_step(
                &side.key,
                &mut rows,
                ("Error evaluating join key", RecordErrorKind::Dropped),
            )?;
            let schema = Schema::new(vec![Field::new("key", keys.data_type().clone(), true)]);
            let batch = RecordBatch::try_new(Arc::new(schema), vec![keys])
                .map_err(|e| EngineError::internal_from("cannot lay join keys out", e))?;
            let written = self.encoder.encode_keys(&self.key, &batch)?;
            for (row, key) in written.iter().enumerate() {
                if let (Some(key), false) = (key, failed[row]) {
                    routes[rows.rows_from[row]] = partition_for_key(key, self.partitions);
                }
            }
        }
        // What failed here is the join's to log, where the record arrives.
        Ok(StepOutput::routed(records, routes))
    }
}
