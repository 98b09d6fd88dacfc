//! The commit writer: the one thread that assigns offsets and writes to RocksDB.
//!
//! Callers encode their batches on their own threads and queue them here. The writer drains
//! whatever is queued into one `WriteBatch`, stamps base offsets, writes once (with one fsync
//! under the `always` policy) and then publishes the new high watermarks. Offsets are therefore
//! assigned in exactly one place, dense and in write order, and concurrent appenders share fsyncs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::{ColumnFamily, DB, WriteBatch, WriteOptions};
use tokio::sync::oneshot;
use tracing::{debug, error};

use crate::batch::{BatchHeader, EncodedBatch};
use crate::commit::{AppendResult, CommitChain, StateOp};
use crate::disk::DiskGuard;
use crate::error::{Result, StorageError};
use crate::keys::{self, CF_LOG, CF_META, CF_OFFSETS, CF_STATE};
use crate::producers::{self, ProducerState, SequenceCheck};
use crate::replication::Proposer;
use crate::topic::{PartitionLog, PartitionTail, TailSnapshot, TopicLog};
use crate::transactions;

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every group commit is fsynced before it is acknowledged.
    Always,
    /// The write-ahead log is fsynced in the background at this interval.
    Interval(Duration),
    /// Never fsynced explicitly; the operating system writes back when it likes.
    Os,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "always" => Ok(SyncPolicy::Always),
            "os" => Ok(SyncPolicy::Os),
            "interval" => Ok(SyncPolicy::Interval(Duration::from_millis(100))),
            other => {
                let ms = other
                    .strip_prefix("interval:")
                    .map(|v| v.trim_end_matches("ms"))
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|ms| *ms > 0);
                match ms {
                    Some(ms) => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
                    None => Err(format!(
                        "unknown sync policy {s:?}; expected always, interval, interval:<ms> or os"
                    )),
                }
            }
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => write!(f, "always"),
            SyncPolicy::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
            SyncPolicy::Os => write!(f, "os"),
        }
    }
}

/// Work run after a custom job's write succeeded.
pub(crate) type AfterWrite = Box<dyn FnOnce() + Send>;
/// Adds a custom job's operations to the group's write batch. It must not write on error.
pub(crate) type BatchBuilder = Box<dyn FnOnce(&DB, &mut WriteBatch) -> Result<AfterWrite> + Send>;

/// A batch to append, already encoded and validated.
pub(crate) struct PreparedAppend {
    pub topic: Arc<TopicLog>,
    pub partition: Arc<PartitionLog>,
    pub batch: EncodedBatch,
    /// For a transaction marker the coordinator writes: whether it commits.
    pub marker: Option<bool>,
}

/// Appends, state changes and offsets to write together.
pub(crate) struct CommitJob {
    pub appends: Vec<PreparedAppend>,
    /// Where records written elsewhere (on a Kafka cluster) landed, reported before the
    /// appends' own positions.
    pub delivered: Vec<AppendResult>,
    pub state: Vec<StateOp>,
    pub offsets: Vec<(Vec<u8>, Vec<u8>)>,
    /// Written only if every earlier commit of the chain was.
    pub chain: Option<CommitChain>,
    pub reply: oneshot::Sender<Result<Vec<AppendResult>>>,
}

pub(crate) enum Job {
    Commit(CommitJob),
    /// Replies over a std channel so admin callers may block on it from any thread.
    Custom {
        build: BatchBuilder,
        reply: std::sync::mpsc::SyncSender<Result<()>>,
    },
}

/// What an entry of a write batch holds beside its key and value: a tag, a column family and
/// two lengths.
const ENTRY_OVERHEAD: usize = 16;
/// Roughly what an append's keys (its batch's and its index entries) add beside its records.
const APPEND_OVERHEAD: usize = 128;

impl Job {
    /// The bytes the job adds to a write batch, nearly: the group's batch is sized from them
    /// once, rather than doubled (and copied) again and again as a big group fills it.
    fn size(&self) -> usize {
        match self {
            Job::Commit(CommitJob {
                appends,
                state,
                offsets,
                ..
            }) => {
                let appends: usize = appends
                    .iter()
                    .map(|a| a.batch.len() + APPEND_OVERHEAD)
                    .sum();
                let state: usize = state
                    .iter()
                    .map(|op| {
                        ENTRY_OVERHEAD
                            + match op {
                                StateOp::Put {
                                    namespace,
                                    key,
                                    value,
                                } => namespace.len() + key.len() + value.len(),
                                StateOp::Delete { namespace, key } => namespace.len() + key.len(),
                                StateOp::DeleteNamespace { namespace } => 2 * namespace.len(),
                            }
                    })
                    .sum();
                let offsets: usize = offsets
                    .iter()
                    .map(|(k, v)| ENTRY_OVERHEAD + k.len() + v.len())
                    .sum();
                appends + state + offsets
            }
            Job::Custom { .. } => 4096,
        }
    }
}

const MAX_GROUP_BYTES: usize = 32 << 20;
const MAX_GROUP_JOBS: usize = 4096;

/// Handle to the writer thread and, under the interval policy, the WAL syncer thread.
pub(crate) struct CommitWriter {
    tx: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    syncer: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// Turned true on shutdown, so a proposal the group may never answer is given up.
    closing: tokio::sync::watch::Sender<bool>,
}

impl CommitWriter {
    pub fn start(
        db: Arc<DB>,
        sync: SyncPolicy,
        leader_epoch: i32,
        disk: Arc<DiskGuard>,
        proposer: Option<Proposer>,
    ) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let dirty = Arc::new(AtomicBool::new(false));
        let (closing, closed) = tokio::sync::watch::channel(false);
        let writer = {
            let db = db.clone();
            let dirty = dirty.clone();
            let disk = disk.clone();
            std::thread::Builder::new()
                .name("eddy-commit-writer".into())
                .spawn(move || {
                    let output = Output {
                        sync,
                        dirty,
                        disk,
                        proposer: proposer.map(|p| (p, closed)),
                    };
                    run_writer(db, rx, leader_epoch, output)
                })?
        };
        let syncer = match sync {
            SyncPolicy::Interval(every) => {
                let stop = Arc::new(AtomicBool::new(false));
                let handle = {
                    let stop = stop.clone();
                    std::thread::Builder::new()
                        .name("eddy-wal-syncer".into())
                        .spawn(move || run_syncer(db, every, stop, dirty, disk))?
                };
                Some((stop, handle))
            }
            _ => None,
        };
        Ok(CommitWriter {
            tx: Some(tx),
            writer: Some(writer),
            syncer,
            closing,
        })
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        self.tx
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(job)
            .map_err(|_| StorageError::Closed)
    }

    /// Stops accepting work, lets queued work finish, and joins the threads.
    pub fn shutdown(&mut self) {
        self.tx.take();
        let _ = self.closing.send(true);
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        if let Some((stop, handle)) = self.syncer.take() {
            stop.store(true, Ordering::Release);
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Drop for CommitWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run_syncer(
    db: Arc<DB>,
    every: Duration,
    stop: Arc<AtomicBool>,
    dirty: Arc<AtomicBool>,
    disk: Arc<DiskGuard>,
) {
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(every);
        if dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = db.flush_wal(true)
        {
            // Acknowledged writes may not be on disk: /healthcheck says so until a write succeeds.
            error!(error = %e, "background WAL sync failed");
            disk.record_write(Err(&e));
        }
    }
}

/// Where the writer's group commits go, and how they are made durable.
struct Output {
    sync: SyncPolicy,
    /// Set after a write under the interval policy, for the syncer.
    dirty: Arc<AtomicBool>,
    disk: Arc<DiskGuard>,
    /// The replicated log's group, which writes each batch to every node's store (this one's
    /// too) once committed, and whether the store is closing; none for a store of its own.
    proposer: Option<(Proposer, tokio::sync::watch::Receiver<bool>)>,
}

impl Output {
    /// Writes `wb` to the store, or has the group commit it and apply it here.
    fn write(&self, db: &DB, wb: WriteBatch) -> Result<()> {
        if let Some((proposer, closing)) = &self.proposer {
            return proposer.propose(wb.data().to_vec(), closing);
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.sync == SyncPolicy::Always);
        let written = db.write_opt(wb, &options);
        self.disk.record_write(written.as_ref().map(|_| ()));
        written?;
        if matches!(self.sync, SyncPolicy::Interval(_)) {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// A copy of a failed group's error for each of its writers.
fn copy_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::RocksDb(e) => StorageError::RocksDb(e.clone()),
        StorageError::NotLeader { leader } => StorageError::NotLeader { leader: *leader },
        StorageError::Closed => StorageError::Closed,
        other => StorageError::Replication {
            operation: "writing a group commit".into(),
            reason: other.to_string(),
        },
    }
}

fn run_writer(db: Arc<DB>, rx: Receiver<Job>, leader_epoch: i32, output: Output) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.size();
        let mut group = vec![first];
        while bytes < MAX_GROUP_BYTES && group.len() < MAX_GROUP_JOBS {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.size();
                    group.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        debug!(jobs = group.len(), bytes, "group commit");
        write_group(&db, (group, bytes), leader_epoch, &output);
    }
}

/// A producer's stored state; a damaged one reads as unknown, as Kafka treats a producer it
/// has no state for.
fn load_producer(db: &DB, meta_cf: &ColumnFamily, key: &[u8]) -> Option<ProducerState> {
    let bytes = db.get_cf(meta_cf, key).ok().flatten()?;
    ProducerState::decode(&bytes)
}

/// Changes the state of a batch's producer on the partition with `change`, writing it in the
/// group's write when it changed, and notes what the cache held before, for a failed write to
/// put back.
fn update_producer(
    (db, meta_cf, wb): (&DB, &ColumnFamily, &mut WriteBatch),
    partition: &PartitionLog,
    (tail, undo): (&mut PartitionTail, &mut TailSnapshot),
    producer_id: i64,
    change: impl FnOnce(&mut ProducerState),
) {
    let key = keys::producer_key(partition.topic_id, partition.partition, producer_id);
    let stored = tail
        .producers
        .get(producer_id, || load_producer(db, meta_cf, &key))
        .cloned();
    let mut state = stored.clone().unwrap_or_default();
    change(&mut state);
    if stored.as_ref() == Some(&state) {
        return;
    }
    wb.put_cf(meta_cf, key, state.encode());
    let before = tail.producers.set(producer_id, Some(state));
    undo.producers.push((producer_id, before));
}

/// Writes the new state of the producer of an appended batch, stamped with its base offset.
fn record_producer(
    stored: (&DB, &ColumnFamily, &mut WriteBatch),
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
    stored: (&DB, &ColumnFamily, &mut WriteBatch),
    partition: &PartitionLog,
    tail: &mut PartitionTail,
    undo: &mut TailSnapshot,
    (header, marker): (&BatchHeader, Option<bool>),
) {
    let at = (partition.topic_id, partition.partition);
    match marker {
        Some(commit) => {
            let (db, meta_cf, wb) = stored;
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
                (db, meta_cf, wb),
                partition,
                (tail, undo),
                header.producer_id,
                |state| state.end_transaction(epoch),
            );
        }
        None if header.is_transactional() => {
            let (_, meta_cf, wb) = stored;
            transactions::note_data(&mut tail.open_txns, (meta_cf, wb), at, header);
        }
        None => {}
    }
}

/// For each append of a job: `None` to write it, or the base offset it already has when it is a
/// retry of an idempotent producer's batch. A batch out of sequence, or from a fenced producer
/// epoch, refuses the whole job.
fn check_sequences(
    db: &DB,
    meta_cf: &ColumnFamily,
    appends: &[PreparedAppend],
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
            let Some(state) = tail
                .producers
                .get(header.producer_id, || load_producer(db, meta_cf, &key))
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

enum Pending {
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
type Families<'a> = (
    &'a ColumnFamily,
    &'a ColumnFamily,
    &'a ColumnFamily,
    &'a ColumnFamily,
);

/// What one group's staging shares: its write batch, and each touched partition's tail before.
struct Staging<'a> {
    db: &'a DB,
    families: Families<'a>,
    wb: WriteBatch,
    touched: Vec<(Arc<PartitionLog>, TailSnapshot)>,
    now: i64,
    leader_epoch: i32,
}

/// Adds one commit to the group's write batch; or refuses it, breaking its chain.
fn stage_commit(staging: &mut Staging, job: CommitJob) -> Option<Pending> {
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
    let sequenced = match check_sequences(db, meta_cf, &appends) {
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
            let stored = (db, meta_cf, &mut staging.wb);
            record_producer(stored, partition, &mut tail, undo, append.batch.header());
        }
        if append.marker.is_some() || append.batch.header().is_transactional() {
            let stored = (db, meta_cf, &mut staging.wb);
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

fn write_group(db: &DB, (group, bytes): (Vec<Job>, usize), leader_epoch: i32, output: &Output) {
    let (Some(log_cf), Some(meta_cf), Some(offsets_cf), Some(state_cf)) = (
        db.cf_handle(CF_LOG),
        db.cf_handle(CF_META),
        db.cf_handle(CF_OFFSETS),
        db.cf_handle(CF_STATE),
    ) else {
        error!("column family missing; refusing the group");
        for job in group {
            if let Job::Commit(CommitJob {
                chain: Some(chain), ..
            }) = job
            {
                chain.break_off();
            }
        }
        return;
    };
    let mut staging = Staging {
        db,
        families: (log_cf, meta_cf, offsets_cf, state_cf),
        wb: WriteBatch::with_capacity_bytes(bytes),
        touched: Vec::new(),
        now: crate::now_ms(),
        leader_epoch,
    };
    let mut pending = Vec::with_capacity(group.len());
    for job in group {
        match job {
            Job::Commit(commit) => pending.extend(stage_commit(&mut staging, commit)),
            Job::Custom { build, reply } => match build(db, &mut staging.wb) {
                Ok(after) => pending.push(Pending::Custom(reply, after)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
    }
    let Staging { wb, touched, .. } = staging;

    match output.write(db, wb) {
        Ok(()) => {
            for (partition, _) in &touched {
                partition.publish(&partition.tail.lock());
            }
            for p in pending {
                match p {
                    Pending::Commit(reply, results, _) => {
                        let _ = reply.send(Ok(results));
                    }
                    Pending::Custom(reply, after) => {
                        after();
                        let _ = reply.send(Ok(()));
                    }
                }
            }
        }
        Err(e) => {
            error!(error = %e, "group commit failed");
            for (partition, snapshot) in &touched {
                partition.tail.lock().restore(snapshot);
            }
            for p in pending {
                match p {
                    Pending::Commit(reply, _, chain) => {
                        if let Some(chain) = chain {
                            chain.break_off();
                        }
                        let _ = reply.send(Err(copy_error(&e)));
                    }
                    Pending::Custom(reply, _) => {
                        let _ = reply.send(Err(copy_error(&e)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policies_parse() {
        assert_eq!("always".parse::<SyncPolicy>(), Ok(SyncPolicy::Always));
        assert_eq!("OS".parse::<SyncPolicy>(), Ok(SyncPolicy::Os));
        assert_eq!(
            "interval".parse::<SyncPolicy>(),
            Ok(SyncPolicy::Interval(Duration::from_millis(100)))
        );
        assert_eq!(
            "interval:5ms".parse::<SyncPolicy>(),
            Ok(SyncPolicy::Interval(Duration::from_millis(5)))
        );
        assert!("sometimes".parse::<SyncPolicy>().is_err());
        assert!("interval:0".parse::<SyncPolicy>().is_err());
    }
}
