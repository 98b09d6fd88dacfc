//! The writer thread's loop: it forms group commits from the queued jobs, stages each into one
//! write batch, and writes it to the store, or proposes it to the replicated log.
//!
//! A store of its own writes a group and answers its jobs before it forms the next. A
//! replicated store's writer does not wait for the group's answer: it proposes the next group
//! while earlier ones are replicated, as a Kafka leader appends produce requests while earlier
//! ones wait for their followers. Raft commits the groups in the order they were proposed, so
//! the writer answers them in that order, and each group's high watermarks are published as
//! staging left them. A group that fails fails every later one, as they were staged on its
//! offsets; since a replicated store's writer is built for one leader term, and a failed
//! proposal means that term is over, its later jobs are refused with the same error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};

use rocksdb::{DB, WriteBatch, WriteOptions};
use tracing::{debug, error};

use super::staging::{Generation, Pending, Staging, stage_commit};
use super::{CommitJob, Job, SyncPolicy};
use crate::disk::DiskGuard;
use crate::error::{Result, StorageError};
use crate::keys::{CF_LOG, CF_META, CF_OFFSETS, CF_STATE};
use crate::replication::Proposer;
use crate::topic::{PartitionLog, Published, TailSnapshot};

const MAX_GROUP_BYTES: usize = 32 << 20;
const MAX_GROUP_JOBS: usize = 4096;
/// Groups a replicated store's writer proposes before it waits for the first one's answer.
const MAX_IN_FLIGHT: usize = 16;
/// Bytes of groups in flight before the writer waits: what the leader holds in memory for
/// writes not yet committed.
const MAX_IN_FLIGHT_BYTES: usize = 128 << 20;

/// What the writer thread is told.
pub(super) enum Event {
    /// A job to write.
    Job(Job),
    /// The replicated log's answer to the group of this number.
    Answered(u64, Result<()>),
    /// Finish what is queued and in flight, then stop.
    Stop,
}

/// Where the writer's group commits go, and how they are made durable.
pub(super) struct Output {
    pub sync: SyncPolicy,
    /// Set after a write under the interval policy, for the syncer.
    pub dirty: Arc<std::sync::atomic::AtomicBool>,
    pub disk: Arc<DiskGuard>,
    /// The replicated log's group, which writes each batch to every node's store (this one's
    /// too) once committed, and whether the store is closing; none for a store of its own.
    pub proposer: Option<(Proposer, tokio::sync::watch::Receiver<bool>)>,
}

impl Output {
    /// Writes `wb` to the store and returns how that went; or proposes it to the group and
    /// returns `None`, the group telling `answer` later.
    fn write(
        &self,
        db: &DB,
        wb: WriteBatch,
        answer: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Option<Result<()>> {
        if let Some((proposer, closing)) = &self.proposer {
            proposer.propose(wb.data().to_vec(), closing, answer);
            return None;
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.sync == SyncPolicy::Always);
        let written = db.write_opt(wb, &options);
        self.disk.record_write(written.as_ref().map(|_| ()));
        if written.is_ok() && matches!(self.sync, SyncPolicy::Interval(_)) {
            self.dirty.store(true, Ordering::Release);
        }
        Some(written.map_err(StorageError::from))
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

/// A group commit written or proposed, waiting for its answer.
struct InFlight {
    group: u64,
    bytes: usize,
    /// Holds a custom job, which reads the store as it builds: nothing is staged after it
    /// until it is answered.
    exclusive: bool,
    /// Each touched partition, its tail before the group, and what the group publishes.
    touched: Vec<(Arc<PartitionLog>, TailSnapshot, Published)>,
    pending: Vec<Pending>,
    answer: Option<Result<()>>,
}

/// The writer thread's state.
pub(super) struct Writer {
    db: Arc<DB>,
    leader_epoch: i32,
    output: Output,
    /// Where the group's answers come back, on the writer's own channel.
    answers: Sender<Event>,
    queued: VecDeque<Job>,
    in_flight: VecDeque<InFlight>,
    /// The number of the last group staged; groups are numbered from 1, and 0 stands for
    /// what the store held when the writer started.
    staged: u64,
    /// The number of the last group answered.
    answered: u64,
    /// Why a replicated store's writes stopped, once a group failed.
    failed: Option<StorageError>,
}

impl Writer {
    pub(super) fn new(
        db: Arc<DB>,
        leader_epoch: i32,
        output: Output,
        answers: Sender<Event>,
    ) -> Writer {
        Writer {
            db,
            leader_epoch,
            output,
            answers,
            queued: VecDeque::new(),
            in_flight: VecDeque::new(),
            staged: 0,
            answered: 0,
            failed: None,
        }
    }

    /// Writes what it is told until it is told to stop and has answered every job.
    pub(super) fn run(mut self, rx: Receiver<Event>) {
        let mut stopping = false;
        loop {
            if !self.can_stage() {
                if stopping && self.queued.is_empty() && self.in_flight.is_empty() {
                    return;
                }
                // The writer holds a sender of its own: the channel never closes under it.
                let Ok(event) = rx.recv() else { return };
                stopping |= self.take(event);
            }
            while let Ok(event) = rx.try_recv() {
                stopping |= self.take(event);
            }
            if self.can_stage() {
                self.write_next_group();
            }
        }
    }

    /// Notes an event; true when it says to stop.
    fn take(&mut self, event: Event) -> bool {
        match event {
            Event::Job(job) => self.queued.push_back(job),
            Event::Answered(group, result) => {
                if let Some(in_flight) = self.in_flight.iter_mut().find(|g| g.group == group) {
                    in_flight.answer = Some(result);
                }
                self.finish_answered();
            }
            Event::Stop => return true,
        }
        false
    }

    /// Whether a group can be staged now: a job is queued, and the groups in flight leave
    /// room for it.
    fn can_stage(&self) -> bool {
        let Some(next) = self.queued.front() else {
            return false;
        };
        if self.failed.is_some() || self.in_flight.is_empty() {
            return true;
        }
        let bytes: usize = self.in_flight.iter().map(|g| g.bytes).sum();
        self.in_flight.len() < MAX_IN_FLIGHT
            && bytes < MAX_IN_FLIGHT_BYTES
            && !self.in_flight.iter().any(|g| g.exclusive)
            && !matches!(next, Job::Custom { .. })
    }

    /// The next group's jobs from the queue, and their size: a custom job joins a group only
    /// when nothing is in flight, as it reads the store.
    fn next_group(&mut self) -> (Vec<Job>, usize) {
        let mut group = Vec::new();
        let mut bytes = 0;
        while bytes < MAX_GROUP_BYTES && group.len() < MAX_GROUP_JOBS {
            let custom = matches!(self.queued.front(), Some(Job::Custom { .. }));
            if custom && !self.in_flight.is_empty() {
                break;
            }
            let Some(job) = self.queued.pop_front() else {
                break;
            };
            bytes += job.size();
            group.push(job);
        }
        (group, bytes)
    }

    fn write_next_group(&mut self) {
        if let Some(e) = &self.failed {
            for job in self.queued.drain(..) {
                refuse(job, copy_error(e));
            }
            return;
        }
        let (group, bytes) = self.next_group();
        let exclusive = group.iter().any(|job| matches!(job, Job::Custom { .. }));
        debug!(
            jobs = group.len(),
            bytes,
            in_flight = self.in_flight.len(),
            "group commit"
        );
        let db = self.db.clone();
        let (Some(log_cf), Some(meta_cf), Some(offsets_cf), Some(state_cf)) = (
            db.cf_handle(CF_LOG),
            db.cf_handle(CF_META),
            db.cf_handle(CF_OFFSETS),
            db.cf_handle(CF_STATE),
        ) else {
            error!("column family missing; refusing the group");
            for job in group {
                refuse(job, StorageError::Closed);
            }
            return;
        };
        self.staged += 1;
        let number = self.staged;
        let mut staging = Staging {
            db: &db,
            families: (log_cf, meta_cf, offsets_cf, state_cf),
            wb: WriteBatch::with_capacity_bytes(bytes),
            touched: Vec::new(),
            now: crate::now_ms(),
            leader_epoch: self.leader_epoch,
            generation: Generation {
                group: number,
                stored: self.answered,
            },
        };
        let mut pending = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Commit(commit) => pending.extend(stage_commit(&mut staging, commit)),
                Job::Custom { build, reply } => match build(&db, &mut staging.wb) {
                    Ok(after) => pending.push(Pending::Custom(reply, after)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
        let Staging { wb, touched, .. } = staging;
        let touched = touched
            .into_iter()
            .map(|(partition, before)| {
                let published = partition.tail.lock().published();
                (partition, before, published)
            })
            .collect();
        let answers = self.answers.clone();
        let answer = move |result| {
            let _ = answers.send(Event::Answered(number, result));
        };
        let written = self.output.write(&db, wb, answer);
        self.in_flight.push_back(InFlight {
            group: number,
            bytes,
            exclusive,
            touched,
            pending,
            answer: written,
        });
        self.finish_answered();
    }

    /// Tells the jobs of the answered groups at the front of the flight how they went.
    fn finish_answered(&mut self) {
        while self.in_flight.front().is_some_and(|g| g.answer.is_some()) {
            let Some(mut group) = self.in_flight.pop_front() else {
                return;
            };
            self.answered = group.group;
            match group.answer.take() {
                Some(Ok(())) if self.failed.is_none() => succeed(group),
                Some(Ok(())) => {
                    let e = self
                        .failed
                        .as_ref()
                        .map_or(StorageError::Closed, copy_error);
                    self.fail(group, e);
                }
                Some(Err(e)) => self.fail(group, e),
                None => {}
            }
        }
    }

    /// Fails `group` with `e`, and every group after it, which was staged on its offsets.
    fn fail(&mut self, group: InFlight, e: StorageError) {
        error!(error = %e, "group commit failed");
        let mut failed: Vec<InFlight> = vec![group];
        failed.extend(self.in_flight.drain(..));
        for group in failed.iter().rev() {
            for (partition, before, _) in group.touched.iter().rev() {
                partition.tail.lock().restore(before);
            }
        }
        for group in failed {
            for pending in group.pending {
                match pending {
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
        if self.output.proposer.is_some() {
            self.failed = Some(e);
        }
    }
}

/// Publishes what a written group leaves of its partitions, and answers its jobs.
fn succeed(group: InFlight) {
    for (partition, _, published) in &group.touched {
        partition.publish(*published);
    }
    for pending in group.pending {
        match pending {
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

/// Answers a job that was never staged with `e`, breaking its chain.
fn refuse(job: Job, e: StorageError) {
    match job {
        Job::Commit(CommitJob { chain, reply, .. }) => {
            if let Some(chain) = chain {
                chain.break_off();
            }
            let _ = reply.send(Err(e));
        }
        Job::Custom { reply, .. } => {
            let _ = reply.send(Err(e));
        }
    }
}
