//! Deferred state writes: `EMIT FINAL` over time windows, with the record cache on, writes a
//! group's state once per commit (at the flush) rather than after every step that changed
//! it. Its rows go out only when windows close, so the cache holds no rows, only the writes.
//! A group made and closed between two flushes was never in the store: it is neither written
//! nor deleted, and its entry in the index of open windows is neither filed nor taken out.

use super::state::GroupSet;
use crate::query::state::StateWrites;

/// What a group waiting for its state to be written counts for in the record cache, beside
/// its key: its accumulators' state and the set's own room, roughly.
const UNWRITTEN_GROUP_BYTES: usize = 48;

/// The bookkeeping of deferred writes between two flushes.
#[derive(Default)]
pub(super) struct DeferredWrites {
    /// The groups changed since the last flush whose state is still to be written.
    unwritten: GroupSet,
    /// Estimated bytes those groups' states take.
    unwritten_bytes: usize,
    /// Whether windows closed since the last flush: their rows wait for the commit, so it
    /// comes as soon as it would without the cache.
    finals_waiting: bool,
    /// The groups made since the last flush that the store has never held.
    fresh: GroupSet,
    /// The index entries of those groups' closed windows.
    cancelled_index: GroupSet,
}

impl DeferredWrites {
    /// Group `key`, not in the store, was made in memory.
    pub(super) fn made(&mut self, key: &[u8]) {
        self.fresh.insert(key.to_vec());
    }

    /// Group `key` changed: its state is written at the flush.
    pub(super) fn changed(&mut self, key: Vec<u8>) {
        let bytes = key.len() + UNWRITTEN_GROUP_BYTES;
        if self.unwritten.insert(key) {
            self.unwritten_bytes += bytes;
        }
    }

    /// Group `key` is deleted now: there is nothing left to write.
    pub(super) fn deleted(&mut self, key: &[u8]) {
        self.unwritten.remove(key);
    }

    /// Group `key`'s window closed, filed in the index under `index_key`. Returns whether the
    /// store never held the group: then neither it nor its index entry is written.
    pub(super) fn closed_unstored(&mut self, key: &[u8], index_key: Vec<u8>) -> bool {
        if !self.fresh.remove(key) {
            return false;
        }
        self.cancelled_index.insert(index_key);
        self.unwritten.remove(key);
        true
    }

    /// Windows closed: their rows wait for the next commit.
    pub(super) fn finals_closed(&mut self) {
        self.finals_waiting = true;
    }

    /// The bytes the record cache counts, or none when closed windows' rows want the commit
    /// as soon as it would come without the cache (a join waiting for a window's row should
    /// not wait a commit interval for it).
    pub(super) fn cache_bytes(&self) -> Option<usize> {
        (!self.finals_waiting).then_some(self.unwritten_bytes)
    }

    /// Whether group states wait to be written.
    pub(super) fn holds_writes(&self) -> bool {
        !self.unwritten.is_empty()
    }

    /// At the flush: leaves out of `index_writes` the cancelled entries, and returns the groups
    /// whose states to write; every group is then in the store, or about to be.
    pub(super) fn flush(&mut self, index_writes: &mut StateWrites) -> GroupSet {
        let cancelled = std::mem::take(&mut self.cancelled_index);
        if !cancelled.is_empty() {
            index_writes.retain(|(key, _)| !cancelled.contains(key));
        }
        self.fresh.clear();
        self.unwritten_bytes = 0;
        self.finals_waiting = false;
        std::mem::take(&mut self.unwritten)
    }
}
