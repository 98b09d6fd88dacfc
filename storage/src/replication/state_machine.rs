//! Applying committed entries: each batch is written to the replica's store together with the
//! entry's id, in one atomic write, so a store holds exactly the committed entries it says it
//! applied.
#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its StorageError, whatever its size"
)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use rocksdb::{DB, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode};
use super::types::{Applied, Entry, LogId, RaftStorageError, StoredMembership, TypeConfig};
use crate::keys::CF_RAFT;

const APPLIED: &[u8] = b"applied";

/// How far a store applied the log, kept in the same write as what it applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last: Option<LogId>,
    membership: StoredMembership,
}

/// The replica's store, as Raft's state machine.
pub struct StateMachine {
    db: Arc<DB>,
    sync: bool,
    applied: AppliedState,
}

impl StateMachine {
    /// The state machine writing to `db`, resuming from what it applied before.
    pub fn open(db: Arc<DB>, sync: bool) -> Result<Self, RaftStorageError> {
        let cf = db
            .cf_handle(CF_RAFT)
            .ok_or_else(|| StorageIOError::read_state_machine(&missing_family()))?;
        let applied = match db
            .get_cf(cf, APPLIED)
            .map_err(|e| StorageIOError::read_state_machine(&e))?
        {
            Some(bytes) => decode(&bytes).map_err(|e| StorageIOError::read_state_machine(&e))?,
            None => AppliedState::default(),
        };
        Ok(StateMachine { db, sync, applied })
    }

    /// Writes `batch` (if any) with the new applied state, atomically.
    fn write(&self, batch: Option<&[u8]>, state: &AppliedState) -> Result<(), RaftStorageError> {
        let cf = self
            .db
            .cf_handle(CF_RAFT)
            .ok_or_else(|| StorageIOError::write_state_machine(&missing_family()))?;
        let mut wb = match batch {
            Some(bytes) => WriteBatch::from_data(bytes),
            None => WriteBatch::default(),
        };
        let bytes = encode(state).map_err(|e| StorageIOError::write_state_machine(&e))?;
        wb.put_cf(cf, APPLIED, bytes);
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db
            .write_opt(wb, &options)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }
}

fn missing_family() -> std::io::Error {
    std::io::Error::other("the store has no raft column family")
}

fn no_snapshots() -> std::io::Error {
    std::io::Error::other(
        "the replicated log does not make snapshots yet; its Raft log is kept whole",
    )
}

/// Refuses to build snapshots: until they exist the log is never purged, so no replica needs one.
pub struct NoSnapshots;

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        Err(StorageIOError::write_snapshot(None, &no_snapshots()).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let mut state = self.applied.clone();
            state.last = Some(entry.log_id);
            let (batch, result) = match &entry.payload {
                EntryPayload::Blank => (None, Applied::Written),
                EntryPayload::Normal(batch) if batch.term == entry.log_id.leader_id.term => {
                    (Some(&batch.bytes[..]), Applied::Written)
                }
                EntryPayload::Normal(_) => (None, Applied::Stale),
                EntryPayload::Membership(membership) => {
                    state.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    (None, Applied::Written)
                }
            };
            self.write(batch, &state)?;
            self.applied = state;
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Err(StorageIOError::write_snapshot(None, &no_snapshots()).into())
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<u64, openraft::BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        Err(StorageIOError::write_snapshot(None, &no_snapshots()).into())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::keys::CF_STATE;
    use crate::replication::types::Batch;

    fn entry(term: u64, index: u64, batch: Option<Batch>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: batch.map_or(EntryPayload::Blank, EntryPayload::Normal),
        }
    }

    fn put(db: &DB, term: u64, key: &[u8]) -> Batch {
        let mut wb = WriteBatch::default();
        wb.put_cf(db.cf_handle(CF_STATE).expect("state"), key, b"v");
        Batch {
            term,
            bytes: bytes::Bytes::copy_from_slice(wb.data()),
        }
    }

    #[tokio::test]
    async fn a_batch_is_applied_only_in_the_term_it_was_built_for() {
        let dir = tempfile::tempdir().expect("a directory");
        let db = crate::store::open_database(dir.path(), false).expect("a database");
        let mut machine = StateMachine::open(db.clone(), false).expect("a state machine");
        let built_in_two = put(&db, 2, b"current");
        // Built in term 2 but appended by term 3's leader: another leader wrote in between.
        let stale = put(&db, 2, b"stale");
        let applied = machine
            .apply([
                entry(2, 1, None),
                entry(2, 2, Some(built_in_two)),
                entry(3, 3, Some(stale)),
            ])
            .await
            .expect("applied");
        assert_eq!(
            applied,
            [Applied::Written, Applied::Written, Applied::Stale]
        );
        let state = db.cf_handle(CF_STATE).expect("state");
        assert!(db.get_cf(state, b"current").expect("read").is_some());
        assert!(db.get_cf(state, b"stale").expect("read").is_none());
        // What was applied, stale entries too, is remembered across a reopen.
        drop(machine);
        let mut reopened = StateMachine::open(db, false).expect("reopened");
        let (last, _) = reopened.applied_state().await.expect("applied state");
        assert_eq!(last.map(|id| id.index), Some(3));
    }
}
