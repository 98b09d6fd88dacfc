//! Whether a split task's keyed sources hold each key in the partition its hash names. A
//! task joins (or aggregates by key) partition `p` of each source it reads directly, trusting
//! that every record with a given key is in the partition murmur2 of the key's bytes picks,
//! as Kafka's Java producers, Kafka Connect and Eddy place them and as ksqlDB assumes. Data
//! written with another partitioner (librdkafka's default, CRC32) breaks that trust: a task
//! would miss its matches without a word. The task still processes such records, and each
//! read that holds some says so once in the processing log and the server's log.

use eddy_storage::{LogRecord, Store};

use crate::error::Result;
use crate::query::QueryPlan;
use crate::query::operator::Input;
use crate::query::source::{RecordError, RecordErrorKind};

/// Per input of a task, the partition count its keys hash over, for the inputs that must be
/// placed by key.
pub(crate) struct Placement {
    partitions: Vec<Option<u32>>,
}

impl Placement {
    /// The check for a task over `inputs` of `plan`, reading `rerouted` topics (repartition
    /// topics, which the query's routers placed) besides its keyed sources. Windowed sources
    /// are left out: Kafka Streams places their records by the key without its window.
    pub(crate) fn of_task(
        store: &Store,
        plan: &QueryPlan,
        inputs: &[Input],
        rerouted: &[&str],
    ) -> Result<Self> {
        let sources = plan.sources();
        let partitions = inputs
            .iter()
            .map(|input| {
                let windowed = sources
                    .get(input.side)
                    .is_none_or(|source| source.window.is_some());
                if windowed || rerouted.contains(&input.topic.as_str()) {
                    return Ok(None);
                }
                Ok(Some(store.partition_count(&input.topic)?))
            })
            .collect::<Result<_>>()?;
        Ok(Placement { partitions })
    }

    /// No check, for what is not a split task.
    pub(crate) fn none() -> Self {
        Placement {
            partitions: Vec::new(),
        }
    }

    /// The error to report when some of `records`, read from input `index`, are in another
    /// partition than their key's.
    pub(crate) fn check(
        &self,
        index: usize,
        input: &Input,
        records: &[LogRecord],
    ) -> Option<RecordError> {
        let partitions = (*self.partitions.get(index)?)?;
        let misplaced = |r: &&LogRecord| {
            r.record.key.as_deref().is_some_and(|key| {
                eddy_storage::partition_for_key(key, partitions) != input.partition
            })
        };
        let first = records.iter().find(misplaced)?;
        let count = records.iter().filter(misplaced).count();
        Some(RecordError {
            kind: RecordErrorKind::Misplaced,
            partition: input.partition,
            offset: first.offset,
            reason: format!(
                "{count} of {} records read from {} are in partition {} while their keys hash (murmur2, as Kafka's Java producers partition) to others: the query splits its work by partition and may miss their matches; write this topic with a murmur2 partitioner (librdkafka: partitioner=murmur2_random)",
                records.len(),
                input.topic,
                input.partition
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use eddy_storage::Record;

    use super::*;

    fn keyed(offset: i64, key: &str) -> LogRecord {
        LogRecord {
            offset,
            record: Record {
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
                value: None,
                timestamp: 0,
                headers: Vec::new(),
            },
        }
    }

    #[test]
    fn records_whose_keys_hash_to_another_partition_are_reported_once_per_read() {
        let input = Input {
            side: 1,
            topic: "customers".into(),
            partition: 3,
        };
        let keys: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
        let (here, elsewhere): (Vec<&String>, Vec<&String>) = keys
            .iter()
            .partition(|k| eddy_storage::partition_for_key(k.as_bytes(), 8) == 3);
        let placement = Placement {
            partitions: vec![None, Some(8)],
        };
        let placed: Vec<LogRecord> = here
            .iter()
            .enumerate()
            .map(|(i, k)| keyed(i as i64, k))
            .collect();
        assert!(placement.check(1, &input, &placed).is_none());
        // A read from a repartition topic (no count) is not checked.
        let mixed = vec![
            keyed(10, here[0]),
            keyed(11, elsewhere[0]),
            keyed(12, elsewhere[1]),
        ];
        assert!(placement.check(0, &input, &mixed).is_none());
        let error = placement
            .check(1, &input, &mixed)
            .expect("misplaced records");
        assert_eq!(
            (error.kind, error.offset, error.partition),
            (RecordErrorKind::Misplaced, 11, 3)
        );
        assert!(
            error.reason.starts_with("2 of 3 records"),
            "{}",
            error.reason
        );
        // A record without a key has no place to be in.
        let mut unkeyed = keyed(20, elsewhere[0]);
        unkeyed.record.key = None;
        assert!(placement.check(1, &input, &[unkeyed]).is_none());
    }
}
