//! The idempotent producer's state, kept with the log as Kafka's `ProducerStateManager` keeps
//! it: per partition and producer id, the epoch, the last sequence and the last five batches.
//! The commit writer checks each produced batch against it and writes the new state in the same
//! RocksDB write as the batch, so a retry after a restart is still recognised and answered with
//! the offset the batch first got, never stored twice.
//!
//! Only the writer thread reads or changes it, under the partition's tail lock. States are
//! cached in memory as they are used and read from the store on a miss, so the cache can be
//! dropped at any time, but for the states of group commits still being replicated: the
//! store does not hold those yet.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;

/// Kafka keeps the last five batches per producer and partition; clients cap in-flight requests
/// at five when idempotent.
const RETAINED_BATCHES: usize = 5;

/// The most producer states a partition keeps in memory before its cache is dropped.
const CACHED_PRODUCERS: usize = 1024;

/// One producer's state on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerState {
    epoch: i16,
    last_sequence: i32,
    /// (first sequence, last sequence, base offset) of recent batches, oldest first.
    recent: VecDeque<(i32, i32, i64)>,
}

/// What to do with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Append it.
    Append,
    /// A retry of a batch already appended at this base offset: answer without appending.
    Duplicate(i64),
    /// Older than the producer's epoch: a zombie producer.
    StaleEpoch,
    /// A gap or a repeat that is not one of the recent batches.
    OutOfOrder {
        /// The sequence the batch should have started at.
        expected: i32,
    },
}

/// Whether a batch carries a producer id and sequence to check.
pub(crate) fn is_idempotent(header: &BatchHeader) -> bool {
    header.producer_id >= 0 && header.base_sequence >= 0
}

fn last_sequence(header: &BatchHeader) -> i32 {
    header.base_sequence.wrapping_add(header.last_offset_delta)
}

impl ProducerState {
    /// Checks a batch as Kafka's `ProducerAppendInfo` does.
    pub(crate) fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if header.producer_epoch < self.epoch {
            return SequenceCheck::StaleEpoch;
        }
        if header.producer_epoch > self.epoch {
            return if header.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder { expected: 0 }
            };
        }
        let last = last_sequence(header);
        if let Some((_, _, offset)) = self
            .recent
            .iter()
            .find(|(first, l, _)| *first == header.base_sequence && *l == last)
        {
            return SequenceCheck::Duplicate(*offset);
        }
        let expected = if self.last_sequence == i32::MAX {
            0
        } else {
            self.last_sequence + 1
        };
        if header.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder { expected }
        }
    }

    /// Records a batch appended at `base_offset`.
    pub(crate) fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        if header.producer_epoch != self.epoch {
            self.recent.clear();
        }
        self.epoch = header.producer_epoch;
        self.last_sequence = last_sequence(header);
        self.recent
            .push_back((header.base_sequence, self.last_sequence, base_offset));
        while self.recent.len() > RETAINED_BATCHES {
            self.recent.pop_front();
        }
    }

    /// The producer's epoch on the partition.
    pub(crate) fn epoch(&self) -> i16 {
        self.epoch
    }

    /// The sequence of the last record appended.
    pub(crate) fn last_sequence(&self) -> i32 {
        self.last_sequence
    }

    /// Takes a transaction marker's epoch: one newer than the producer's (the coordinator fenced
    /// it) starts the producer over at sequence 0, as Kafka's `ProducerStateManager` does.
    pub(crate) fn end_transaction(&mut self, epoch: i16) {
        if epoch > self.epoch || self.recent.is_empty() {
            self.epoch = self.epoch.max(epoch);
            self.last_sequence = -1;
            self.recent.clear();
        }
    }

    /// The stored form: epoch, last sequence, count, then each recent batch.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.recent.len() * 16);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.last_sequence.to_be_bytes());
        out.push(self.recent.len() as u8);
        for (first, last, offset) in &self.recent {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&last.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    /// Reads the stored form back; `None` when it is damaged, which the caller treats as an
    /// unknown producer (Kafka accepts any sequence from one).
    pub(crate) fn decode(bytes: &[u8]) -> Option<ProducerState> {
        let epoch = i16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?);
        let last_sequence = i32::from_be_bytes(bytes.get(2..6)?.try_into().ok()?);
        let count = usize::from(*bytes.get(6)?);
        let mut recent = VecDeque::with_capacity(count.min(RETAINED_BATCHES));
        for i in 0..count.min(RETAINED_BATCHES) {
            let at = 7 + i * 16;
            let entry = bytes.get(at..at + 16)?;
            recent.push_back((
                i32::from_be_bytes(entry[0..4].try_into().ok()?),
                i32::from_be_bytes(entry[4..8].try_into().ok()?),
                i64::from_be_bytes(entry[8..16].try_into().ok()?),
            ));
        }
        Some(ProducerState {
            epoch,
            last_sequence,
            recent,
        })
    }
}

/// A producer's state in memory, and the group commit that set it (0 when it was read from
/// the store).
#[derive(Debug, Clone)]
pub(crate) struct CachedProducer {
    state: Option<ProducerState>,
    set_by: u64,
}

/// The states of one partition's producers that are in memory.
#[derive(Debug, Default)]
pub(crate) struct ProducerCache {
    states: HashMap<i64, CachedProducer>,
}

impl ProducerCache {
    /// The state of `producer_id`, reading it with `load` on a miss; `None` for a producer the
    /// partition has not seen. A full cache is dropped first, but for the states that group
    /// commits after `written` set: the store may not hold them yet.
    pub(crate) fn get(
        &mut self,
        producer_id: i64,
        load: impl FnOnce() -> Option<ProducerState>,
        written: u64,
    ) -> Option<&ProducerState> {
        if !self.states.contains_key(&producer_id) && self.states.len() >= CACHED_PRODUCERS {
            self.states.retain(|_, cached| cached.set_by > written);
        }
        self.states
            .entry(producer_id)
            .or_insert_with(|| CachedProducer {
                state: load(),
                set_by: 0,
            })
            .state
            .as_ref()
    }

    /// Puts back what [`ProducerCache::set`] returned, after a failed write.
    pub(crate) fn restore(&mut self, producer_id: i64, before: Option<CachedProducer>) {
        match before {
            Some(cached) => {
                self.states.insert(producer_id, cached);
            }
            None => {
                self.states.remove(&producer_id);
            }
        }
    }

    /// Replaces the state of `producer_id` with the one group commit `group` writes,
    /// returning what was cached before.
    pub(crate) fn set(
        &mut self,
        producer_id: i64,
        state: Option<ProducerState>,
        group: u64,
    ) -> Option<CachedProducer> {
        self.states.insert(
            producer_id,
            CachedProducer {
                state,
                set_by: group,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: count,
        }
    }

    #[test]
    fn sequences_follow_kafkas_rules() {
        let mut state = ProducerState::default();
        state.record(&header(7, 0, 0, 3), 100);
        assert_eq!(
            state.check(&header(7, 0, 0, 3)),
            SequenceCheck::Duplicate(100)
        );
        assert_eq!(
            state.check(&header(7, 0, 5, 1)),
            SequenceCheck::OutOfOrder { expected: 3 }
        );
        assert_eq!(state.check(&header(7, 0, 3, 2)), SequenceCheck::Append);
        state.record(&header(7, 1, 0, 1), 103);
        assert_eq!(state.check(&header(7, 0, 1, 1)), SequenceCheck::StaleEpoch);
        assert_eq!(
            state.check(&header(7, 2, 7, 1)),
            SequenceCheck::OutOfOrder { expected: 0 }
        );
        assert_eq!(state.check(&header(7, 2, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn the_stored_form_reads_back_and_damage_is_an_unknown_producer() {
        let mut state = ProducerState::default();
        for i in 0..7 {
            state.record(&header(7, 3, i * 2, 2), 10 * i64::from(i));
        }
        let bytes = state.encode();
        assert_eq!(ProducerState::decode(&bytes), Some(state));
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(ProducerState::decode(&[]), None);
    }

    #[test]
    fn a_full_cache_keeps_the_states_the_store_does_not_hold_yet() {
        let mut cache = ProducerCache::default();
        for id in 0..CACHED_PRODUCERS as i64 {
            cache.get(id, || None, 0);
        }
        let mut state = ProducerState::default();
        state.record(&header(1, 0, 0, 1), 40);
        // Group 7 is still being replicated; group 3 is in the store.
        cache.set(1, Some(state.clone()), 7);
        cache.set(2, Some(state.clone()), 3);
        // A new producer finds the cache full while groups up to 5 are stored.
        assert_eq!(cache.get(5_000, || None, 5), None);
        let mut loaded = Vec::new();
        let kept = cache.get(
            1,
            || {
                loaded.push(1);
                None
            },
            5,
        );
        assert_eq!(
            kept,
            Some(&state),
            "the state of a group in flight was dropped"
        );
        let reloaded = cache.get(
            2,
            || {
                loaded.push(2);
                None
            },
            5,
        );
        assert_eq!(reloaded, None);
        assert_eq!(loaded, [2], "only the stored state is read again");
    }
}
