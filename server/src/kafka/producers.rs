//! The idempotent producer: producer ids, and per partition and producer the sequence checks that
//! drop retried duplicates and refuse gaps, as Kafka's `ProducerAppendInfo` does.
//!
//! State lives in memory. After a restart a producer has no state, and Kafka's rule for unknown
//! producers applies: any sequence is accepted.

use super::code::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

/// Kafka keeps the last five batches per producer and partition; clients cap in-flight requests
/// at five when idempotent.
const RETAINED_BATCHES: usize = 5;

/// Sequence of a batch that is not idempotent.
const NO_SEQUENCE: i32 = -1;

#[derive(Debug, Default)]
struct ProducerState {
    epoch: i16,
    last_sequence: i32,
    /// (first sequence, last sequence, base offset) of recent batches.
    recent: VecDeque<(i32, i32, i64)>,
}

/// Who produced a batch, and its sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatch {
    /// The producer id, or -1 for a plain producer.
    pub producer_id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Records in the batch.
    pub count: i32,
}

impl ProducedBatch {
    /// The producer facts in a batch header.
    pub fn of(header: &eddy_storage::BatchHeader) -> Self {
        ProducedBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            count: header.last_offset_delta + 1,
        }
    }

    fn last_sequence(&self) -> i32 {
        self.base_sequence.wrapping_add(self.count - 1)
    }

    fn idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence != NO_SEQUENCE
    }
}

/// What to do with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// A retry of a batch already appended at this base offset: answer without appending.
    Duplicate(i64),
    /// Refuse it with this Kafka error code.
    Refuse(i16),
}

/// Producer ids and sequence state.
#[derive(Debug)]
pub struct ProducerRegistry {
    next_id: AtomicI64,
    states: Mutex<HashMap<(String, u32, i64), ProducerState>>,
}

impl ProducerRegistry {
    /// Ids start at the wall-clock time in ms, so they do not repeat across restarts.
    pub fn new() -> Self {
        ProducerRegistry {
            next_id: AtomicI64::new(eddy_storage::now_ms().max(1)),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// A new producer id, with epoch 0.
    pub fn allocate(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a batch against the producer's state on this partition.
    pub fn check(&self, topic: &str, partition: u32, batch: ProducedBatch) -> SequenceCheck {
        if !batch.idempotent() {
            return SequenceCheck::Append;
        }
        let states = self.states.lock();
        let Some(state) = states.get(&(topic.to_string(), partition, batch.producer_id)) else {
            return SequenceCheck::Append;
        };
        if batch.epoch < state.epoch {
            return SequenceCheck::Refuse(INVALID_PRODUCER_EPOCH);
        }
        if batch.epoch > state.epoch {
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        let last = batch.last_sequence();
        if let Some((_, _, offset)) = state
            .recent
            .iter()
            .find(|(f, l, _)| *f == batch.base_sequence && *l == last)
        {
            return SequenceCheck::Duplicate(*offset);
        }
        let expected = if state.last_sequence == i32::MAX {
            0
        } else {
            state.last_sequence + 1
        };
        if batch.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        }
    }

    /// Records a batch appended at `base_offset`.
    pub fn record(&self, topic: &str, partition: u32, batch: ProducedBatch, base_offset: i64) {
        if !batch.idempotent() {
            return;
        }
        let mut states = self.states.lock();
        let state = states
            .entry((topic.to_string(), partition, batch.producer_id))
            .or_default();
        if batch.epoch != state.epoch {
            state.recent.clear();
        }
        state.epoch = batch.epoch;
        state.last_sequence = batch.last_sequence();
        state
            .recent
            .push_back((batch.base_sequence, batch.last_sequence(), base_offset));
        while state.recent.len() > RETAINED_BATCHES {
            state.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> ProducedBatch {
        ProducedBatch {
            producer_id,
            epoch,
            base_sequence,
            count,
        }
    }

    #[test]
    fn sequences_follow_kafkas_rules() {
        let r = ProducerRegistry::new();
        let pid = r.allocate();
        assert_eq!(
            r.check("t", 0, batch(pid, 0, 0, 3)),
            SequenceCheck::Append,
            "unknown producers are accepted"
        );
        r.record("t", 0, batch(pid, 0, 0, 3), 100);
        assert_eq!(
            r.check("t", 0, batch(pid, 0, 0, 3)),
            SequenceCheck::Duplicate(100),
            "a retry is not appended twice"
        );
        assert_eq!(
            r.check("t", 0, batch(pid, 0, 5, 1)),
            SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(r.check("t", 0, batch(pid, 0, 3, 2)), SequenceCheck::Append);
        r.record("t", 0, batch(pid, 1, 0, 1), 103);
        assert_eq!(
            r.check("t", 0, batch(pid, 0, 1, 1)),
            SequenceCheck::Refuse(INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            r.check("t", 0, batch(pid, 2, 7, 1)),
            SequenceCheck::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            r.check("t", 0, batch(pid, 2, 0, 1)),
            SequenceCheck::Append,
            "a new epoch starts at 0"
        );
        assert_eq!(
            r.check("t", 0, batch(-1, -1, -1, 4)),
            SequenceCheck::Append,
            "plain producers are not checked"
        );
        assert_ne!(r.allocate(), pid);
    }
}
