//! Stream time per partition, for windowed aggregations.
//!
//! ksqlDB aggregates each partition of its repartition topic (or, when grouping by the source's
//! key, of the source) in a task of its own, and each task keeps its own stream time: the
//! largest timestamp it has seen. A window closes when the stream time of its task passes its
//! end plus the grace period. Eddy aggregates every partition in one task, so it gives each
//! group the partition ksqlDB's task would have: the one Kafka's default partitioner gives the
//! group's key, as the sink writes it without its window, among as many partitions as the
//! source has. Grouping by the key of a source partitioned by key, that is the partition the
//! group's records arrive on. A partition that lags behind the others (a producer replaying
//! old data into it, say) then keeps its own clock, and its records are not dropped as late
//! because another partition's clock ran ahead.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use eddy_storage::partition_for_key;

use crate::catalog::DataSource;
use crate::error::Result;
use crate::query::sink::{OutputColumn, SinkEncoder};

/// A time per partition, such as stream time or the latest window start written; `i64::MIN`
/// until the partition has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionTimes {
    times: Vec<i64>,
}

impl PartitionTimes {
    /// The times stored as `bytes` (8 big-endian bytes per partition), for `partitions`
    /// partitions. A single stored time, as Eddy kept one stream time per query before it kept
    /// one per partition, applies to every partition; anything else starts afresh.
    pub(crate) fn decode(bytes: Option<&[u8]>, partitions: u32) -> Self {
        let partitions = partitions.max(1) as usize;
        let read = |chunk: &[u8]| chunk.try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN);
        let times = match bytes {
            Some(b) if b.len() == 8 * partitions => b.chunks_exact(8).map(read).collect(),
            Some(b) if b.len() == 8 => vec![read(b); partitions],
            _ => vec![i64::MIN; partitions],
        };
        PartitionTimes { times }
    }

    /// The times as stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        self.times.iter().flat_map(|t| t.to_be_bytes()).collect()
    }

    /// The time of `partition`.
    pub(crate) fn get(&self, partition: u32) -> i64 {
        self.times
            .get(partition as usize)
            .copied()
            .unwrap_or(i64::MIN)
    }

    /// Raises the time of `partition` to `time`, if later, and returns it.
    pub(crate) fn advance(&mut self, partition: u32, time: i64) -> i64 {
        match self.times.get_mut(partition as usize) {
            Some(t) => {
                *t = (*t).max(time);
                *t
            }
            None => time,
        }
    }

    /// Each partition and its time, for the partitions that have one.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.times
            .iter()
            .enumerate()
            .filter(|(_, t)| **t != i64::MIN)
            .map(|(p, t)| (p as u32, *t))
    }
}

/// Gives each group the partition whose stream time governs it (see the module's notes).
#[derive(Debug, Clone)]
pub(crate) struct GroupPartitioner {
    partitions: u32,
    encoder: SinkEncoder,
    keys: Vec<OutputColumn>,
    /// The group columns alone, over which the sink's key expressions are evaluated (they
    /// read nothing else, since ksqlDB's key columns are the grouping expressions).
    groups: SchemaRef,
}

impl GroupPartitioner {
    /// A partitioner over `partitions` partitions, for the sink `sink` whose key columns
    /// `keys` computes from aggregated rows that begin with the group columns of `aggregated`.
    pub(crate) fn new(
        (sink, schemas): (&DataSource, &crate::codec::Schemas),
        partitions: u32,
        keys: &[OutputColumn],
        aggregated: &Schema,
        group_columns: usize,
    ) -> Result<Self> {
        let fields = aggregated
            .fields()
            .iter()
            .take(group_columns)
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect::<Vec<_>>();
        Ok(GroupPartitioner {
            partitions: partitions.max(1),
            encoder: SinkEncoder::new(sink, schemas)?,
            keys: keys.to_vec(),
            groups: Arc::new(Schema::new(fields)),
        })
    }

    /// How many partitions there are.
    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of each of `rows` groups, given their group values. A key that cannot be
    /// computed from the group values alone falls back to hashing `row_bytes(i)`, the group's
    /// stored form, which is as stable across restarts.
    pub(crate) fn assign(
        &self,
        groups: &[ArrayRef],
        rows: usize,
        row_bytes: &dyn Fn(usize) -> Vec<u8>,
    ) -> Vec<u32> {
        if self.partitions <= 1 {
            return vec![0; rows];
        }
        self.assign_keyed(groups, rows, row_bytes)
            .into_iter()
            .map(|(partition, _)| partition)
            .collect()
    }

    /// As [`GroupPartitioner::assign`], with each group's key as the sink writes it, where
    /// it can be computed from the group values alone.
    pub(crate) fn assign_keyed(
        &self,
        groups: &[ArrayRef],
        rows: usize,
        row_bytes: &dyn Fn(usize) -> Vec<u8>,
    ) -> Vec<(u32, Option<Vec<u8>>)> {
        let keys = RecordBatch::try_new_with_options(
            self.groups.clone(),
            groups.to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| crate::error::EngineError::internal_from("cannot lay group values out", e))
        .and_then(|batch| self.encoder.encode_keys(&self.keys, &batch));
        match keys {
            Ok(keys) if keys.len() == rows => keys
                .into_iter()
                .map(|k| {
                    let partition = k
                        .as_deref()
                        .map_or(0, |k| partition_for_key(k, self.partitions));
                    (partition, k)
                })
                .collect(),
            _ => (0..rows)
                .map(|i| (partition_for_key(&row_bytes(i), self.partitions), None))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_advance_per_partition() {
        let mut times = PartitionTimes::decode(None, 3);
        assert_eq!(times.iter().count(), 0);
        assert_eq!(times.advance(1, 500), 500);
        assert_eq!(times.advance(1, 200), 500, "stream time never goes back");
        assert_eq!(times.advance(2, 100), 100);
        assert_eq!(times.get(0), i64::MIN);
        let stored = times.encode();
        let back = PartitionTimes::decode(Some(&stored), 3);
        assert_eq!(back, times);
        assert_eq!(back.iter().collect::<Vec<_>>(), vec![(1, 500), (2, 100)]);
    }

    #[test]
    fn one_stored_time_applies_to_every_partition() {
        let times = PartitionTimes::decode(Some(&42i64.to_be_bytes()), 4);
        assert!((0..4).all(|p| times.get(p) == 42));
        // Bytes of another layout (the partitions changed) start afresh.
        let times = PartitionTimes::decode(Some(&[0u8; 24]), 4);
        assert_eq!(times.iter().count(), 0);
        assert_eq!(times.get(9), i64::MIN);
    }
}
