//! Staging a group commit: each job's appends get their offsets, idempotent producers'
//! sequences are checked and their states recorded, and everything goes into one write batch.

use std::sync::Arc;

use rocksdb::{ColumnFamily, DB, WriteBatch};
use tokio::sync::oneshot;

use super::{AfterWrite, CommitJob, PreparedAppend};
use crate::batch::BatchHeader;
use crate::commit::{AppendResult, CommitChain, StateOp};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::producers::{self, ProducerState, SequenceCheck};
use crate::topic::{PartitionLog, PartitionTail, TailSnapshot};
use crate::transactions;

/// A producer's stored state; a damaged one reads as unknown, as Kafka treats a producer it
/// has no state for.
fn load_producer(db: &DB, meta_cf: &ColumnFamily, key: &[u8]) -> Option<ProducerState> {
    let bytes = db.get_cf(meta_cf, key).ok().flatten()?;
    ProducerState::decode(&bytes)
}

/// The group commit being staged, and the last one the store holds: a producer's state that
/// a later group cached must stay in memory, as the store cannot give it back yet.
#[derive(Clone, Copy)]
pub(super) struct Generation {
    pub group: u64,
    pub stored: u64,
}

/// What staging writes a producer's state with: the store, its `meta` family and the group's
/// write batch.
type Stored<'a, 'b> = (&'a DB, &'a ColumnFamily, &'b mut WriteBatch, Generation);

/// Changes the state of a batch's producer on the partition with `change`, writing it in the
/// group's write when it changed, and notes what the cache held before, for a failed write to
/// put back.
fn update_producer(
    (db, meta_cf, wb, generation): Stored,
    partition: &PartitionLog,
    (tail, undo): (&mut PartitionTail, &mut TailSnapshot),
    producer_id: i64,
    change: impl FnOnce(&mut ProducerState),
) {
    let key = keys::producer_key(partition.topic_id, partition.partition, producer_id);
    let stored = tail
        .producers
        .get(
            producer_id,
            || load_producer(db, meta_cf, &key),
            generation.stored,
        )
        .cloned();
    let mut state = stored.clone().unwrap_or_default();
    change(&mut state);
    if stored.as_ref() == Some(&state) {
        return;
    }
    wb.put_cf(meta_cf, key, state.encode());
    let before = tail
        .producers
        .set(producer_id, Some(state), generation.group);
    undo.producers.push((producer_id, before));
}

/// Writes the new state of the producer of an appended batch, stamped with its base offset.
fn record_producer(
    stored: Stored,
    partition: &PartitionLog,
    tail: &mut PartitionTail,
    undo: &mut TailSnapshot,
    header: &BatchHeader,
) {
    update_producer(
        stored,
        partition,
        (tail, undo),
        header.producer_id,
        |state| state.record(header, header.base_offset),
    );
}

/// Notes the transaction bookkeeping of a batch just stamped: a transactional data batch opens
/// its producer's transaction on the partition; a marker closes it (indexing an abort) and
/// fences an older epoch.
fn record_transaction(
    stored: Stored,
    partition: &PartitionLog,
    tail: &mut PartitionTail,
    undo: &mut TailSnapshot,
    (header, marker): (&BatchHeader, Option<bool>),
) {
    let at = (partition.topic_id, partition.partition);
    match marker {
        Some(commit) => {
            let (db, meta_cf, wb, generation) = stored;
            let ended = (header.producer_id, header.base_offset, commit);
            if let Some(offset) =
                transactions::note_marker(&mut tail.open_txns, (meta_cf, &mut *wb), at, ended)
            {
                partition
                    .last_abort
                    .fetch_max(offset, std::sync::atomic::Ordering::AcqRel);
            }
            // A fenced producer starts over at sequence 0 of its new epoch.
            let epoch = header.producer_epoch;
            update_producer(
                (db, meta_cf, wb, generation),
                partition,
                (tail, undo),
                header.producer_id,
                |state| state.end_transaction(epoch),
            );
        }
        None if header.is_transactional() => {
            let (_, meta_cf, wb, _) = stored;
            transactions::note_data(&mut tail.open_txns, (meta_cf, wb), at, header);
        }
        None => {}
    }
}

/// For each append of a job: `None` to write it, or the base offset it already has when it is a
/// retry of an idempotent producer's batch. A batch out of sequence, or from a fenced producer
/// epoch, refuses the whole job.
fn check_sequences(
    (db, meta_cf): (&DB, &ColumnFamily),
    appends: &[PreparedAppend],
    generation: Generation,
) -> Result<Vec<Option<i64>>> {
    appends
        .iter()
        .map(|append| {
            let header = append.batch.header();
            if !producers::is_idempotent(header) {
                return Ok(None);
            }
            let partition = &append.partition;
            let key =
                keys::producer_key(partition.topic_id, partition.partition, header.producer_id);
            let mut tail = partition.tail.lock();
            let load = || load_producer(db, meta_cf, &key);
            let Some(state) = tail
                .producers
                .get(header.producer_id, load, generation.stored)
            else {
                return Ok(None);
            };
            match state.check(header) {
                SequenceCheck::Append => Ok(None),
                SequenceCheck::Duplicate(base) => Ok(Some(base)),
                SequenceCheck::StaleEpoch => Err(StorageError::InvalidProducerEpoch {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    producer_id: header.producer_id,
                    epoch: header.producer_epoch,
                }),
                SequenceCheck::OutOfOrder { expected } => Err(StorageError::OutOfOrderSequence {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                    producer_id: header.producer_id,
                    expected,
                    got: header.base_sequence,
                }),
            }
        })
        .collect()
}

/// What a staged job waits for: its answer, and what its writer is told then.
pub(super) enum Pending {
    Commit(
        oneshot::Sender<Result<Vec<AppendResult>>>,
        Vec<AppendResult>,
        Option<CommitChain>,
    ),
    Custom(std::sync::mpsc::SyncSender<Result<()>>, AfterWrite),
}

/// Adds a commit's state changes and consumer offsets to the batch being written.
fn put_state_and_offsets(
    wb: &mut WriteBatch,
    (state_cf, offsets_cf): (&ColumnFamily, &ColumnFamily),
    state: Vec<StateOp>,
    offsets: Vec<(Vec<u8>, Vec<u8>)>,
) {
    for op in state {
        match op {
            StateOp::Put {
                namespace,
                key,
                value,
            } => wb.put_cf(state_cf, keys::state_key(&namespace, &key), value),
            StateOp::Delete { namespace, key } => {
                wb.delete_cf(state_cf, keys::state_key(&namespace, &key))
            }
            StateOp::DeleteNamespace { namespace } => {
                let start = keys::state_key(&namespace, b"");
                let end = keys::prefix_successor(&start).unwrap_or_else(|| vec![0xff; 3]);
                wb.delete_range_cf(state_cf, start, end);
            }
        }
    }
    for (key, value) in offsets {
        wb.put_cf(offsets_cf, key, value);
    }
}

/// The column families a group writes to: log, meta, offsets, state.
pub(super) type Families<'a> = (
    &'a ColumnFamily,
    &'a ColumnFamily,
    &'a ColumnFamily,
    &'a ColumnFamily,
);

/// What one group's staging shares: its write batch, and each touched partition's tail before.
pub(super) struct Staging<'a> {
    pub db: &'a DB,
    pub families: Families<'a>,
    pub wb: WriteBatch,
    pub touched: Vec<(Arc<PartitionLog>, TailSnapshot)>,
    pub now: i64,
    pub leader_epoch: i32,
    pub generation: Generation,
}

/// Adds one commit to the group's write batch; or refuses it, breaking its chain.
pub(super) fn stage_commit(staging: &mut Staging, job: CommitJob) -> Option<Pending> {
    let CommitJob {
        appends,
        delivered,
        state,
        offsets,
        chain,
        reply,
    } = job;
    let refuse = |reply: oneshot::Sender<Result<Vec<AppendResult>>>, error: StorageError| {
        if let Some(chain) = &chain {
            chain.break_off();
        }
        let _ = reply.send(Err(error));
        None
    };
    if chain.as_ref().is_some_and(CommitChain::is_broken) {
        return refuse(reply, StorageError::EarlierCommitFailed);
    }
    if let Some(dead) = appends.iter().find(|a| a.topic.is_deleted()) {
        return refuse(reply, StorageError::UnknownTopic(dead.topic.name.clone()));
    }
    let db = staging.db;
    let (log_cf, meta_cf, offsets_cf, state_cf) = staging.families;
    let generation = staging.generation;
    let sequenced = match check_sequences((db, meta_cf), &appends, generation) {
        Ok(sequenced) => sequenced,
        Err(e) => return refuse(reply, e),
    };
    let mut results = delivered;
    results.reserve(appends.len());
    for (mut append, duplicate) in appends.into_iter().zip(sequenced) {
        let partition = &append.partition;
        if let Some(base) = duplicate {
            // A retry: answered with where the batch went the first time.
            results.push(AppendResult {
                partition: partition.partition,
                base_offset: base,
                last_offset: base + append.batch.offset_span() - 1,
            });
            continue;
        }
        let mut tail = partition.tail.lock();
        let touched = &mut staging.touched;
        let snapshot = match touched.iter().position(|(p, _)| Arc::ptr_eq(p, partition)) {
            Some(at) => at,
            None => {
                touched.push((partition.clone(), tail.snapshot()));
                touched.len() - 1
            }
        };
        let base = tail.next_offset;
        append.batch.stamp(base, staging.leader_epoch);
        let undo = &mut touched[snapshot].1;
        if producers::is_idempotent(append.batch.header()) {
            let stored = (db, meta_cf, &mut staging.wb, generation);
            record_producer(stored, partition, &mut tail, undo, append.batch.header());
        }
        if append.marker.is_some() || append.batch.header().is_transactional() {
            let stored = (db, meta_cf, &mut staging.wb, generation);
            let batch = (append.batch.header(), append.marker);
            record_transaction(stored, partition, &mut tail, undo, batch);
        }
        let next = base + append.batch.offset_span();
        let len = append.batch.len();
        let max_ts = append.batch.header().max_timestamp;
        let config = append.topic.config.read();
        let active = tail.active_segment_for(len, staging.now, &config);
        active.add_batch(next, len, max_ts, staging.now);
        let active_key =
            keys::segment_key(partition.topic_id, partition.partition, active.base_offset);
        let active_value = active.encode();
        drop(config);
        staging.wb.put_cf(
            log_cf,
            keys::log_key(partition.topic_id, partition.partition, base),
            append.batch.as_bytes(),
        );
        staging.wb.put_cf(meta_cf, active_key, active_value);
        tail.next_offset = next;
        results.push(AppendResult {
            partition: partition.partition,
            base_offset: base,
            last_offset: next - 1,
        });
    }
    put_state_and_offsets(&mut staging.wb, (state_cf, offsets_cf), state, offsets);
    Some(Pending::Commit(reply, results, chain))
}
