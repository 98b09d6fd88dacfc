//! Runtime statistics of persistent queries: input rates, consumer offsets and lag, as
//! `DESCRIBE … EXTENDED`, `SHOW QUERIES EXTENDED` and `/metrics` report them.

use eddy_storage::Store;

use crate::error::Result;

/// The span over which [`ThroughputMeter`] averages.
pub const RATE_WINDOW_SECS: u64 = 60;

/// Records counted per second over the last [`RATE_WINDOW_SECS`] seconds, so a rate falls back
/// to zero when input stops instead of averaging over the query's whole life.
#[derive(Debug, Clone)]
pub struct ThroughputMeter {
    /// `(second, records)` slots, indexed by second modulo the window.
    slots: Vec<(u64, u64)>,
    /// The second of the first record counted.
    started: Option<u64>,
}

impl Default for ThroughputMeter {
    fn default() -> Self {
        ThroughputMeter {
            slots: vec![(0, 0); RATE_WINDOW_SECS as usize],
            started: None,
        }
    }
}

impl ThroughputMeter {
    /// Counts `records` processed at `now_secs`.
    pub fn record(&mut self, now_secs: u64, records: u64) {
        self.started.get_or_insert(now_secs);
        let slot = &mut self.slots[(now_secs % RATE_WINDOW_SECS) as usize];
        if slot.0 != now_secs {
            *slot = (now_secs, 0);
        }
        slot.1 += records;
    }

    /// Records per second over the window ending at `now_secs`; over less time when the
    /// first record came within the window, so a new query's rate is not diluted.
    pub fn per_second(&self, now_secs: u64) -> f64 {
        let Some(started) = self.started else {
            return 0.0;
        };
        let oldest = now_secs.saturating_sub(RATE_WINDOW_SECS - 1);
        let total: u64 = self
            .slots
            .iter()
            .filter(|(second, _)| *second >= oldest && *second <= now_secs)
            .map(|(_, records)| records)
            .sum();
        let span = now_secs.saturating_sub(started.max(oldest)) + 1;
        total as f64 / span as f64
    }
}

/// One partition's positions, as Kafka's consumer-group tools show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: u32,
    /// The first offset still in the log.
    pub log_start: i64,
    /// The offset the next record appended gets.
    pub log_end: i64,
    /// The position the group committed; the log start when it committed none.
    pub consumer: i64,
}

impl PartitionOffsets {
    /// Records appended and not yet consumed: log end minus the committed position.
    pub fn lag(&self) -> i64 {
        (self.log_end - self.consumer.max(self.log_start)).max(0)
    }
}

/// A group's positions on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOffsets {
    /// The topic.
    pub topic: String,
    /// One entry per partition.
    pub partitions: Vec<PartitionOffsets>,
}

/// A consumer group's positions on the topics it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffsets {
    /// The group.
    pub group: String,
    /// The topics read.
    pub topics: Vec<TopicOffsets>,
}

impl GroupOffsets {
    /// The group's positions on `topics`, from the log and its committed offsets. A topic
    /// deleted meanwhile is left out.
    pub fn read(store: &Store, group: &str, topics: &[String]) -> Result<GroupOffsets> {
        Self::read_with(store, group, topics, |topic, partition| {
            Ok(store
                .fetch_offset(group, topic, partition)?
                .map(|c| c.offset))
        })
    }

    /// A group's positions on every topic it committed offsets for, read with one scan of its
    /// offsets.
    pub fn of_group(store: &Store, group: &str) -> Result<GroupOffsets> {
        let committed = store.fetch_group_offsets(group)?;
        let mut topics: Vec<String> = committed.iter().map(|o| o.topic.clone()).collect();
        topics.dedup();
        Self::read_with(store, group, &topics, |topic, partition| {
            Ok(committed
                .iter()
                .find(|o| o.topic == topic && o.partition == partition)
                .map(|o| o.offset.offset))
        })
    }

    /// The positions on `topics`, with each partition's committed offset from `committed`.
    fn read_with(
        store: &Store,
        group: &str,
        topics: &[String],
        committed: impl Fn(&str, u32) -> Result<Option<i64>>,
    ) -> Result<GroupOffsets> {
        let mut out = Vec::with_capacity(topics.len());
        for topic in topics {
            let Ok(description) = store.describe_topic(topic) else {
                continue;
            };
            let mut partitions = Vec::with_capacity(description.partitions.len());
            for p in &description.partitions {
                partitions.push(PartitionOffsets {
                    partition: p.partition,
                    log_start: p.log_start_offset,
                    log_end: p.end_offset,
                    consumer: committed(topic, p.partition)?.unwrap_or(p.log_start_offset),
                });
            }
            out.push(TopicOffsets {
                topic: topic.clone(),
                partitions,
            });
        }
        Ok(GroupOffsets {
            group: group.to_string(),
            topics: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_covers_only_the_window_and_falls_to_zero() {
        let mut meter = ThroughputMeter::default();
        assert_eq!(meter.per_second(100), 0.0);
        meter.record(100, 10);
        meter.record(101, 30);
        // Two seconds since the first record: 40 records over 2 s.
        assert_eq!(meter.per_second(101), 20.0);
        // Ten seconds in, the same 40 records are spread over 10 s.
        assert_eq!(meter.per_second(109), 4.0);
        // A full window later nothing is left.
        assert_eq!(meter.per_second(101 + RATE_WINDOW_SECS), 0.0);
        // A slot reused a window later holds only its new second; second 101 is still in.
        meter.record(100 + RATE_WINDOW_SECS, 6);
        assert_eq!(
            meter.per_second(100 + RATE_WINDOW_SECS),
            36.0 / RATE_WINDOW_SECS as f64
        );
    }

    #[test]
    fn lag_is_log_end_minus_committed_and_never_negative() {
        let p = PartitionOffsets {
            partition: 0,
            log_start: 5,
            log_end: 20,
            consumer: 12,
        };
        assert_eq!(p.lag(), 8);
        // Retention removed what the group had not read: it can read from the log start only.
        assert_eq!(PartitionOffsets { consumer: 2, ..p }.lag(), 15);
        assert_eq!(PartitionOffsets { consumer: 25, ..p }.lag(), 0);
    }
}
