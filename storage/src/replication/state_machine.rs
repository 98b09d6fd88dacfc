//! Applying committed entries: each batch is written to the replica's store together with the
//! entry's id, in one atomic write, so a store holds exactly the committed entries it says it
//! applied.
//!
//! Those writes skip RocksDB's write-ahead log: the Raft log already holds every entry, so
//! writing it to a second log would only copy it again. What a crash takes from the memtables
//! is applied again from the Raft log when the node restarts (openraft re-applies from the
//! applied entry the store recovered up to the committed one). The database flushes its
//! families together ([`crate::store::open_replica_database`]), so what a crash leaves is a
//! store as of one applied entry, and the Raft log is purged only past what a flush made
//! durable ([`super::log_store`]).
#![allow(
    clippy::result_large_err,
    reason = "openraft's storage traits return its StorageError, whatever its size"
)]

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{DB, WriteBatch, WriteOptions};

use super::InUse;
use super::log_store::{decode, encode};
use super::snapshot::{APPLIED, AppliedState, Meta, SnapshotFile, Snapshots};
use super::types::{Applied, Entry, LogId, RaftStorageError, StoredMembership, TypeConfig};
use crate::keys::CF_RAFT;

/// The replica's store, as Raft's state machine.
pub struct StateMachine {
    db: Arc<DB>,
    applied: AppliedState,
    snapshots: Arc<Snapshots>,
    in_use: InUse,
}

impl StateMachine {
    /// The state machine writing to `db`, resuming from what it applied before, with its
    /// snapshots kept in `snapshots` (finishing an install a crash interrupted), holding
    /// `in_use` while it and its work last.
    pub(crate) fn open(
        db: Arc<DB>,
        snapshots: Arc<Snapshots>,
        in_use: InUse,
    ) -> Result<Self, RaftStorageError> {
        snapshots
            .recover(&db)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
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
        Ok(StateMachine {
            db,
            applied,
            snapshots,
            in_use,
        })
    }

    /// Writes `batch` (if any) with the new applied state, atomically, to the memtables alone.
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
        options.disable_wal(true);
        self.db
            .write_opt(wb, &options)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }
}

fn missing_family() -> std::io::Error {
    std::io::Error::other("the store has no raft column family")
}

/// Runs blocking snapshot work off the runtime's workers, holding `in_use`.
async fn blocking<T: Send + 'static>(
    in_use: &InUse,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    in_use.blocking(work).await?
}

/// Takes snapshots of the store, off the state machine's task.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshots: Arc<Snapshots>,
    in_use: InUse,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let (db, snapshots, hold) = (self.db.clone(), self.snapshots.clone(), self.in_use.clone());
        let built = blocking(&self.in_use, move || snapshots.build(&db, hold)).await;
        let (meta, file) = match built {
            Ok(built) => built,
            // Raft stops for good on a failed build, so one that fails (the disk is full,
            // say) answers with the current snapshot: not newer, it changes nothing, and the
            // next build tries again.
            Err(error) => {
                tracing::warn!(%error, "a snapshot of the replicated store failed; the Raft log is kept until one succeeds");
                let (snapshots, hold) = (self.snapshots.clone(), self.in_use.clone());
                match blocking(&self.in_use, move || snapshots.open_current(hold)).await {
                    Ok(Some(current)) => current,
                    _ => return Err(StorageIOError::write_snapshot(None, &error).into()),
                }
            }
        };
        tracing::info!(snapshot = %meta, "took a snapshot of the replicated store");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

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
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            in_use: self.in_use.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, RaftStorageError> {
        let snapshots = self.snapshots.clone();
        blocking(&self.in_use, move || snapshots.receive())
            .await
            .map(Box::new)
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), RaftStorageError> {
        let path = snapshot
            .ready()
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?
            .to_path_buf();
        drop(snapshot);
        let (db, snapshots, sent) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        self.applied = blocking(&self.in_use, move || snapshots.install(&db, &sent, &path))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let (snapshots, hold) = (self.snapshots.clone(), self.in_use.clone());
        let current = blocking(&self.in_use, move || snapshots.open_current(hold))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
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
        let db = crate::store::open_replica_database(dir.path()).expect("a database");
        let snapshots =
            Arc::new(Snapshots::open(dir.path().join("snapshots")).expect("a directory"));
        let mut machine = StateMachine::open(db.clone(), snapshots.clone(), InUse::default())
            .expect("a state machine");
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
        let mut reopened =
            StateMachine::open(db, snapshots.clone(), InUse::default()).expect("reopened");
        let (last, _) = reopened.applied_state().await.expect("applied state");
        assert_eq!(last.map(|id| id.index), Some(3));
    }

    /// Copies the files of `from`, a database nothing writes to at the moment, into `to`:
    /// what a crash of the process leaves on disk (the memtables go, the page cache stays).
    fn crash_image(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("a directory");
        for file in std::fs::read_dir(from).expect("a listing") {
            let file = file.expect("an entry");
            let kind = file.file_type().expect("a type");
            if kind.is_file() {
                std::fs::copy(file.path(), to.join(file.file_name())).expect("a copy");
            } else if file.file_name() == "raft-log" {
                crash_image(&file.path(), &to.join("raft-log"));
            }
        }
    }

    /// A node's log, store and state machine, four entries appended and committed (each puts
    /// `k<index>`), the first two applied.
    async fn node_of_four_entries(node: &std::path::Path) -> (Node, Vec<Entry>) {
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

        let (db, mut log, mut machine, snapshots) = open_node(node);
        let entries: Vec<Entry> = (0..4)
            .map(|i| entry(1, i, Some(put(&db, 1, format!("k{i}").as_bytes()))))
            .collect();
        log.blocking_append(entries.clone())
            .await
            .expect("appended");
        log.save_committed(Some(entries[3].log_id))
            .await
            .expect("saved");
        machine.apply(entries[..2].to_vec()).await.expect("applied");
        ((db, log, machine, snapshots), entries)
    }

    /// A node's database, Raft log, state machine and snapshots.
    type Node = (
        Arc<DB>,
        crate::replication::log_store::LogStore,
        StateMachine,
        Arc<Snapshots>,
    );

    /// The node in the directory `node`.
    fn open_node(node: &std::path::Path) -> Node {
        let db = crate::store::open_replica_database(node).expect("a database");
        let snapshots = Arc::new(Snapshots::open(node.join("snapshots")).expect("a directory"));
        let log = crate::replication::log_store::LogStore::open(
            db.clone(),
            &node.join("raft-log"),
            false,
            InUse::default(),
            snapshots.flushed(),
        )
        .expect("a log");
        let machine = StateMachine::open(db.clone(), snapshots.clone(), InUse::default())
            .expect("a state machine");
        (db, log, machine, snapshots)
    }

    /// Which of the four entries' keys the store at `image` holds, and what it says it applied.
    async fn held_after_crash(image: &std::path::Path) -> ([bool; 4], Option<u64>) {
        let (db, _log, mut machine, _) = open_node(image);
        let (last, _) = machine.applied_state().await.expect("applied state");
        let state = db.cf_handle(CF_STATE).expect("state");
        let held = |key: &str| db.get_cf(state, key).expect("read").is_some();
        (["k0", "k1", "k2", "k3"].map(held), last.map(|id| id.index))
    }

    #[tokio::test]
    async fn entries_a_crash_took_from_the_store_are_applied_again_from_the_raft_log() {
        use openraft::storage::{RaftLogStorage, StorageHelper};

        let dir = tempfile::tempdir().expect("a directory");
        let (node, image) = (dir.path().join("node"), dir.path().join("image"));
        let ((db, mut log, mut machine, snapshots), entries) = node_of_four_entries(&node).await;
        // A snapshot of the first two (its checkpoint flushes them), the last two applied
        // after it, then the log purged up to the snapshot, as Raft does: the snapshot made
        // the purged entries durable, so the purge flushes nothing.
        snapshots.build(&db, ()).expect("a snapshot");
        machine.apply(entries[2..].to_vec()).await.expect("applied");
        log.purge(entries[1].log_id).await.expect("purged");
        let state = db.cf_handle(CF_STATE).expect("state");
        assert!(db.get_cf(state, b"k3").expect("read").is_some());

        crash_image(&node, &image);
        // The crash took what was applied since the flush, and only that: the store is whole
        // as of the second entry.
        let (held, last) = held_after_crash(&image).await;
        assert_eq!((held, last), ([true, true, false, false], Some(1)));

        // Starting Raft over it applies the committed entries again from the log.
        let (db, mut log, mut machine, _) = open_node(&image);
        StorageHelper::new(&mut log, &mut machine)
            .get_initial_state()
            .await
            .expect("the initial state");
        let (last, _) = machine.applied_state().await.expect("applied state");
        assert_eq!(last.map(|id| id.index), Some(3));
        let state = db.cf_handle(CF_STATE).expect("state");
        let held = |key: &str| db.get_cf(state, key).expect("read").is_some();
        assert_eq!(["k0", "k1", "k2", "k3"].map(held), [true; 4]);
    }

    /// A purge past what any snapshot made durable (openraft purges so when a node starts
    /// with a gap between its log and its store) flushes the store first.
    #[tokio::test]
    async fn a_purge_no_snapshot_covers_flushes_the_store_first() {
        use openraft::storage::RaftLogStorage;

        let dir = tempfile::tempdir().expect("a directory");
        let (node, image) = (dir.path().join("node"), dir.path().join("image"));
        let ((_db, mut log, mut machine, _snapshots), entries) = node_of_four_entries(&node).await;
        machine.apply(entries[2..].to_vec()).await.expect("applied");
        log.purge(entries[1].log_id).await.expect("purged");
        crash_image(&node, &image);
        assert_eq!(held_after_crash(&image).await, ([true; 4], Some(3)));
    }
}
