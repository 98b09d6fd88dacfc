//! One transactional id's state and its transitions, as Kafka's `TransactionMetadata` and
//! `TransactionCoordinator` define them. Eddy writes a transaction's markers, its offsets and
//! its new state in one atomic store write, so the states Kafka passes through between asking
//! for markers and seeing them written (PrepareCommit, PrepareAbort, PrepareEpochFence) never
//! outlive a write: a restart finds each transaction ongoing or complete, never half of one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::super::code;

/// No epoch yet: a transactional id that has never been initialised.
pub const NO_EPOCH: i16 = -1;
/// No producer id.
pub const NO_PRODUCER_ID: i64 = -1;

/// Where a transactional id's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// Initialised, no transaction begun.
    Empty,
    /// A transaction is open: partitions or offsets were added.
    Ongoing,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name for the state, as DescribeTransactions and ListTransactions give it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// A consumer group offset committed inside a transaction, applied only if it commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to read.
    pub offset: i64,
    /// The leader epoch of the last record read, or -1.
    pub leader_epoch: i32,
    /// The client's metadata.
    pub metadata: String,
}

/// A transactional id's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    /// The producer's `transactional.id`.
    pub transactional_id: String,
    /// The producer id now in use.
    pub producer_id: i64,
    /// The id before the last rotation (epochs exhausted), or -1.
    pub last_producer_id: i64,
    /// The current epoch; -1 before the first InitProducerId completes.
    pub epoch: i16,
    /// The epoch before the last bump, so a retried InitProducerId gets the same answer
    /// (KIP-360), or -1.
    pub last_epoch: i16,
    /// The producer's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// Where the transaction stands.
    pub state: TxnState,
    /// The partitions the open transaction wrote to (or may have).
    pub partitions: BTreeSet<(String, u32)>,
    /// The consumer groups whose offsets the open transaction commits.
    pub groups: BTreeSet<String>,
    /// Offsets committed in the open transaction.
    pub offsets: Vec<PendingOffset>,
    /// When the open transaction began, ms since the epoch; -1 when none is open.
    pub start_ms: i64,
    /// When the state last changed.
    pub updated_ms: i64,
}

/// Whether a producer's epochs are used up, so the next bump takes a new producer id.
fn exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

impl TxnMeta {
    /// A transactional id seen for the first time, with a fresh producer id.
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> TxnMeta {
        TxnMeta {
            transactional_id: transactional_id.to_string(),
            producer_id,
            last_producer_id: NO_PRODUCER_ID,
            epoch: NO_EPOCH,
            last_epoch: NO_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: Vec::new(),
            start_ms: -1,
            updated_ms: now,
        }
    }

    /// Whether a producer id and epoch a client says it had (KIP-360's InitProducerId) may
    /// continue as this transactional id: the id is new, it is the current producer, or the
    /// previous one whose epochs ran out.
    pub fn accepts_expected(&self, expected: Option<(i64, i16)>) -> bool {
        expected.is_none_or(|(id, epoch)| {
            self.epoch == NO_EPOCH
                || id == self.producer_id
                || (id == self.last_producer_id && exhausted(epoch))
        })
    }

    /// InitProducerId on a transactional id with no open transaction: the epoch bumped (a new
    /// producer id once epochs run out), fencing every older producer of this id.
    pub fn initialised(
        &self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now: i64,
        new_producer_id: impl FnOnce() -> i64,
    ) -> Result<TxnMeta, i16> {
        let mut next = self.cleared(TxnState::Empty, now);
        next.timeout_ms = timeout_ms;
        let expected_epoch = expected.map(|(_, epoch)| epoch);
        if exhausted(self.epoch) && expected_epoch.is_none_or(|e| e == self.epoch) {
            next.last_producer_id = self.producer_id;
            next.producer_id = new_producer_id();
            next.epoch = 0;
            next.last_epoch = if expected.is_some() {
                self.epoch
            } else {
                NO_EPOCH
            };
            return Ok(next);
        }
        let bumped = self.epoch + 1;
        (next.epoch, next.last_epoch) = match expected_epoch {
            None => (bumped, NO_EPOCH),
            Some(e) if self.epoch == NO_EPOCH || e == self.epoch => (bumped, self.epoch),
            // A retry of a bump whose answer was lost: the same answer again.
            Some(e) if e == self.last_epoch => (self.epoch, self.last_epoch),
            Some(_) => return Err(code::PRODUCER_FENCED),
        };
        Ok(next)
    }

    /// The state with its transaction over, keeping the producer.
    pub fn cleared(&self, state: TxnState, now: i64) -> TxnMeta {
        TxnMeta {
            state,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: Vec::new(),
            start_ms: -1,
            updated_ms: now,
            ..self.clone()
        }
    }

    /// The open transaction aborted by the coordinator (a timeout, or a new producer of the
    /// id): the epoch is bumped, so the producer that left it open is fenced.
    pub fn fenced_abort(&self, now: i64) -> TxnMeta {
        let mut next = self.cleared(TxnState::CompleteAbort, now);
        if !exhausted(self.epoch) {
            next.epoch = self.epoch + 1;
        }
        next.last_epoch = NO_EPOCH;
        next
    }

    /// Whether a request from this producer id and epoch is the current producer's: Kafka's
    /// INVALID_PRODUCER_ID_MAPPING for another id, PRODUCER_FENCED for another epoch.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            Err(code::INVALID_PRODUCER_ID_MAPPING)
        } else if epoch != self.epoch {
            Err(code::PRODUCER_FENCED)
        } else {
            Ok(())
        }
    }

    /// The transaction with more partitions or groups in it, begun if it was not open; `None`
    /// when it already holds them all (nothing to write).
    pub fn adding(
        &self,
        partitions: &[(String, u32)],
        group: Option<&str>,
        now: i64,
    ) -> Option<TxnMeta> {
        let has_all = self.state == TxnState::Ongoing
            && partitions.iter().all(|p| self.partitions.contains(p))
            && group.is_none_or(|g| self.groups.contains(g));
        if has_all {
            return None;
        }
        let mut next = if self.state == TxnState::Ongoing {
            self.clone()
        } else {
            let mut begun = self.cleared(TxnState::Ongoing, now);
            begun.start_ms = now;
            begun
        };
        next.partitions.extend(partitions.iter().cloned());
        next.groups.extend(group.map(str::to_string));
        next.updated_ms = now;
        Some(next)
    }

    /// What EndTxn does: `Ok(None)` for a retry of the end already written, `Ok(Some(_))` for
    /// the state after ending the open transaction, or Kafka's error.
    pub fn ending(&self, commit: bool, now: i64) -> Result<Option<TxnMeta>, i16> {
        match (self.state, commit) {
            (TxnState::Ongoing, true) => Ok(Some(self.cleared(TxnState::CompleteCommit, now))),
            (TxnState::Ongoing, false) => Ok(Some(self.cleared(TxnState::CompleteAbort, now))),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            _ => Err(code::INVALID_TXN_STATE),
        }
    }

    /// Whether the open transaction has run past its timeout at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initialised(meta: &TxnMeta, expected: Option<(i64, i16)>) -> Result<TxnMeta, i16> {
        meta.initialised(expected, 60_000, 1, || 99)
    }

    #[test]
    fn each_init_bumps_the_epoch_and_a_lost_answer_is_given_again() {
        let fresh = TxnMeta::new("t", 7, 60_000, 0);
        let first = initialised(&fresh, None).unwrap();
        assert_eq!((first.producer_id, first.epoch), (7, 0));
        let second = initialised(&first, Some((7, 0))).unwrap();
        assert_eq!((second.epoch, second.last_epoch), (1, 0));
        // The client never saw epoch 1 and asks again with 0.
        let retried = initialised(&second, Some((7, 0))).unwrap();
        assert_eq!(retried.epoch, 1);
        assert_eq!(
            initialised(&second, Some((7, 5))),
            Err(code::PRODUCER_FENCED)
        );
        assert!(!second.accepts_expected(Some((8, 1))));
    }

    #[test]
    fn exhausted_epochs_rotate_the_producer_id() {
        let mut meta = TxnMeta::new("t", 7, 60_000, 0);
        meta.epoch = i16::MAX - 1;
        let next = initialised(&meta, None).unwrap();
        assert_eq!(
            (next.producer_id, next.epoch, next.last_producer_id),
            (99, 0, 7)
        );
    }

    #[test]
    fn a_transaction_begins_with_its_first_partition_and_ends_once() {
        let meta = initialised(&TxnMeta::new("t", 7, 60_000, 0), None).unwrap();
        assert_eq!(meta.ending(true, 2), Err(code::INVALID_TXN_STATE));
        let open = meta.adding(&[("a".into(), 0)], None, 5).unwrap();
        assert_eq!((open.state, open.start_ms), (TxnState::Ongoing, 5));
        assert!(open.adding(&[("a".into(), 0)], None, 6).is_none());
        let more = open.adding(&[], Some("g"), 6).unwrap();
        assert_eq!(more.start_ms, 5);
        let done = more.ending(true, 7).unwrap().unwrap();
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty() && done.groups.is_empty());
        assert_eq!(done.ending(true, 8), Ok(None));
        assert_eq!(done.ending(false, 8), Err(code::INVALID_TXN_STATE));
    }

    #[test]
    fn a_fenced_abort_bumps_the_epoch_and_the_old_producer_is_refused() {
        let meta = TxnMeta::new("t", 7, 1_000, 0)
            .initialised(None, 1_000, 1, || 99)
            .unwrap();
        let open = meta.adding(&[("a".into(), 0)], None, 10).unwrap();
        assert!(!open.expired(1_010) && open.expired(1_011));
        let aborted = open.fenced_abort(1_011);
        assert_eq!((aborted.state, aborted.epoch), (TxnState::CompleteAbort, 1));
        assert_eq!(aborted.check_producer(7, 0), Err(code::PRODUCER_FENCED));
        assert_eq!(
            aborted.check_producer(8, 1),
            Err(code::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(aborted.check_producer(7, 1), Ok(()));
    }
}
