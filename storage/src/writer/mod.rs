//! The commit writer: the one thread that assigns offsets and writes to RocksDB.
//!
//! Callers encode their batches on their own threads and queue them here. The writer drains
//! whatever is queued into one `WriteBatch`, stamps base offsets, writes once (with one fsync
//! under the `always` policy) and then publishes the new high watermarks. Offsets are therefore
//! assigned in exactly one place, dense and in write order, and concurrent appenders share fsyncs.
//! A replicated store proposes each group to the group of nodes instead of writing it, and
//! goes on to the next before the group answers (see `pipeline`).

mod pipeline;
mod staging;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::{DB, WriteBatch};
use tokio::sync::oneshot;
use tracing::error;

use crate::batch::EncodedBatch;
use crate::commit::{AppendResult, CommitChain, StateOp};
use crate::disk::DiskGuard;
use crate::error::{Result, StorageError};
use crate::replication::Proposer;
use crate::topic::{PartitionLog, TopicLog};
use pipeline::{Event, Output, Writer};

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

/// Handle to the writer thread and, under the interval policy, the WAL syncer thread.
pub(crate) struct CommitWriter {
    tx: Option<Sender<Event>>,
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
        let answers = tx.clone();
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
                    Writer::new(db, leader_epoch, output, answers).run(rx)
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
            .send(Event::Job(job))
            .map_err(|_| StorageError::Closed)
    }

    /// Stops accepting work, lets queued work finish, and joins the threads.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Event::Stop);
        }
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
