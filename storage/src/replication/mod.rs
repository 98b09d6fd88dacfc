//! The replicated log: several nodes keep one store through one Raft group (openraft), the
//! leader proposing each group commit's write batch and every node applying the committed
//! ones in order. `docs/replication.md` says why it is built so.

mod isr;
mod log_segments;
mod log_store;
mod network;
mod payloads;
mod snapshot;
mod state_machine;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use rocksdb::DB;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use network::ReplicationTls;
pub use types::NodeId;
use types::{Applied, Batch, TypeConfig};

use crate::error::{Result, StorageError};
use crate::writer::SyncPolicy;

/// How a node takes part in the replicated log.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// This node's id.
    pub node_id: NodeId,
    /// Every node of the group (this one too) and the `host:port` its replication listener is
    /// reached at.
    pub peers: BTreeMap<NodeId, String>,
    /// Where this node's replication listener binds; by default its own address in `peers`.
    pub listen: Option<String>,
    /// When the Raft log and applied batches are forced to disk: the store's policy.
    pub sync: SyncPolicy,
    /// How long a follower may go without catching up with the leader, or without answering
    /// it, before it leaves the in-sync replicas (Kafka's `replica.lag.time.max.ms`).
    pub lag: Duration,
    /// How many entries the Raft log grows by between snapshots of the store; the log is
    /// purged up to a snapshot, keeping the last [`KEPT_ENTRIES`] (at most this many).
    pub snapshot_entries: u64,
    /// How many bytes of entries this node appends to its Raft log between snapshots at most,
    /// so a log of a few huge group commits is purged as soon as one of many small ones.
    pub snapshot_bytes: u64,
    /// Mutual TLS with the other nodes; plain TCP when `None`.
    pub tls: Option<ReplicationTls>,
}

/// How many bytes of entries the Raft log grows by between snapshots at most, by default.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 1 << 30;

/// How many entries the Raft log grows by between snapshots, by default.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 20_000;
/// How many entries before a snapshot's position the Raft log keeps, so a follower a little
/// behind catches up from the log rather than from a whole snapshot.
pub const KEPT_ENTRIES: u64 = 1_000;

/// The folder of a node's directory that holds its Raft log's segment files.
const RAFT_LOG: &str = "raft-log";

/// Kafka's default `replica.lag.time.max.ms`.
pub const DEFAULT_REPLICA_LAG: Duration = Duration::from_secs(30);

/// What a replica counted of the group since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaCounts {
    /// Times the in-sync replicas lost a node while this node led.
    pub isr_shrinks: u64,
    /// Times the in-sync replicas gained a node while this node led.
    pub isr_expands: u64,
    /// Times the leader this node knows of changed; the first leader it learns of counts.
    pub leader_changes: u64,
    /// Snapshots of its store this node took.
    pub snapshots_taken: u64,
    /// Snapshots this node installed from the leader, having missed entries the leader purged.
    pub snapshots_installed: u64,
}

/// What the tracker remembers between looks at Raft's view.
#[derive(Debug, Default)]
struct History {
    /// The last leader known.
    leader: Option<NodeId>,
    /// The term this node leads, and when it began leading it (ms on [`isr::clock_ms`]).
    leading: Option<(u64, u64)>,
    /// The in-sync replicas at the last look.
    isr: Option<Vec<NodeId>>,
    /// The latest snapshot's index when last looked at, and the bytes appended to the log by
    /// then.
    snapshot_mark: Option<(Option<u64>, u64)>,
    /// The latest snapshot's index when one was last asked for, and what was applied then.
    snapshot_asked: Option<(Option<u64>, u64)>,
    counts: ReplicaCounts,
}

/// Who leads the group, as one replica sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The Raft term, which is the leader epoch of every partition.
    pub term: u64,
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// The index of the last entry this replica applied to its store.
    pub applied: Option<u64>,
}

/// How much of the Raft log a replica keeps, and where its latest snapshot of the store is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogExtent {
    /// The index of the last entry purged from the log (every entry up to it is gone).
    pub purged: Option<u64>,
    /// The index of the last entry the latest snapshot holds.
    pub snapshot: Option<u64>,
    /// The index of the last entry in the log.
    pub last: Option<u64>,
}

impl LogExtent {
    /// How many entries the log holds.
    pub fn entries(&self) -> u64 {
        let first = self.purged.map_or(0, |p| p + 1);
        self.last.map_or(0, |last| (last + 1).saturating_sub(first))
    }
}

/// One node of the replicated log: its database, its Raft and its replication listener.
pub struct Replica {
    path: PathBuf,
    db: Arc<DB>,
    in_use: InUse,
    status: ReplicaStatus,
    stop: watch::Sender<bool>,
    address: String,
}

/// What a replica tells of the group: who leads, the voters, and who is in sync. Clones share
/// the replica.
#[derive(Clone)]
pub struct ReplicaStatus {
    id: NodeId,
    raft: Raft<TypeConfig>,
    answered: network::Answered,
    progress: Arc<parking_lot::Mutex<BTreeMap<NodeId, isr::FollowerProgress>>>,
    lag: Duration,
    snapshot_entries: u64,
    snapshot_bytes: u64,
    /// Bytes of entries appended to this node's Raft log since it started.
    appended: Arc<std::sync::atomic::AtomicU64>,
    history: Arc<parking_lot::Mutex<History>>,
    directory: network::Directory,
    isr: Arc<parking_lot::Mutex<network::Isr>>,
    /// Weak: a status outliving its replica must not hold the database open.
    db: std::sync::Weak<DB>,
    snapshots: Arc<snapshot::Snapshots>,
    /// The topics [`ReplicaStatus::topics`] read last.
    topics_read: Arc<parking_lot::Mutex<Vec<(String, u32)>>>,
}

impl ReplicaStatus {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Who leads, in which term, and how far this replica applied.
    pub fn leadership(&self) -> Leadership {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        Leadership {
            term: metrics.current_term,
            leader: metrics.current_leader,
            applied: metrics.last_applied.map(|id| id.index),
        }
    }

    /// Why Raft stopped on this node, once it stopped: shut down, or for good after a fault
    /// of its storage (a write that failed, a snapshot that could not be installed). A node
    /// whose Raft stopped can only be restarted.
    pub fn fault(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .running_state
            .as_ref()
            .err()
            .map(ToString::to_string)
    }

    /// How much of the Raft log this replica keeps, and its latest snapshot.
    pub fn log_extent(&self) -> LogExtent {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        LogExtent {
            purged: metrics.purged.map(|id| id.index),
            snapshot: metrics.snapshot.map(|id| id.index),
            last: metrics.last_log_index,
        }
    }

    /// The nodes that vote, in id order: every partition's replicas.
    pub fn voters(&self) -> Vec<NodeId> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().voter_ids().collect()
    }

    /// The in-sync nodes: on the leader, itself and the followers that caught up with it and
    /// answered it within the lag (Kafka's `replica.lag.time.max.ms`), as the tracker last
    /// worked them out (at most 200 ms ago; the ISR its counts of shrinks and expands saw); on
    /// a follower, as the leader last told it (with its heartbeats), or itself alone before it
    /// heard.
    pub fn in_sync(&self) -> Vec<NodeId> {
        // Raft's metrics are read before the history is locked, as `observe` reads them: the
        // other order deadlocks with it once a metrics update waits between the two reads.
        let leader = self.leadership().leader;
        let history = self.history.lock();
        if history.leading.is_some() {
            return history.isr.clone().unwrap_or_else(|| vec![self.id]);
        }
        match &self.isr.lock().heard {
            Some((from, told)) if Some(*from) == leader => told.clone(),
            _ => vec![self.id],
        }
    }

    /// How many entries each follower is behind this node, the leader (`None` for one that has
    /// matched nothing yet); empty on a follower.
    pub fn follower_lag(&self) -> BTreeMap<NodeId, Option<u64>> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let end = metrics.last_log_index.unwrap_or(0);
        let Some(replication) = metrics
            .replication
            .as_ref()
            .filter(|_| metrics.state == ServerState::Leader)
        else {
            return BTreeMap::new();
        };
        replication
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, matched)| (*id, matched.map(|m| end.saturating_sub(m.index))))
            .collect()
    }

    /// Sets where this node serves its clients: an entry every other node learns from this
    /// node's messages (the storage layer does not read it).
    pub fn advertise(&self, addresses: String) {
        self.directory.lock().insert(self.id, addresses);
    }

    /// Where each node serves its clients, as each last said (this node's own entry too);
    /// a node not heard from since this one started is missing.
    pub fn directory(&self) -> BTreeMap<NodeId, String> {
        self.directory.lock().clone()
    }

    /// The topics this replica's store applied, and their partition counts.
    pub fn topics(&self) -> Result<Vec<(String, u32)>> {
        let db = self.db.upgrade().ok_or(StorageError::Closed)?;
        // A snapshot's install clears the store before refilling it: meanwhile, the topics
        // read last are told rather than none.
        match self
            .snapshots
            .unless_installing(|| crate::store::stored_topics(&db))
        {
            Some(read) => {
                let topics = read?;
                self.topics_read.lock().clone_from(&topics);
                Ok(topics)
            }
            None => Ok(self.topics_read.lock().clone()),
        }
    }

    /// Runs `read` unless a snapshot is being installed (the store is cleared meanwhile, so a
    /// read would see nothing); `None` when one is.
    pub fn unless_installing<T>(&self, read: impl FnOnce() -> T) -> Option<T> {
        self.snapshots.unless_installing(read)
    }

    /// What the replica counted of ISR and leader changes, and of snapshots, since it started.
    pub fn counts(&self) -> ReplicaCounts {
        let (taken, installed) = self.snapshots.counts();
        ReplicaCounts {
            snapshots_taken: taken,
            snapshots_installed: installed,
            ..self.history.lock().counts
        }
    }

    /// Waits until this node stops leading in `term` (another term began, or it lost its
    /// leadership), or its replica stops.
    pub async fn await_not_leading(&self, term: u64) {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.current_term != term || m.state != ServerState::Leader {
                    return;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether the store applied a snapshot interval's worth of entries past its latest
    /// snapshot, noting it as asked for when so. Raft's own policy looks only as entries
    /// commit, and may pass over a commit while a snapshot is being taken; this is looked at
    /// again as time passes.
    fn snapshot_due(&self) -> bool {
        let (snapshot, applied) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (
                metrics.snapshot.map(|s| s.index),
                metrics.last_applied.map(|a| a.index),
            )
        };
        let Some(applied) = applied else {
            return false;
        };
        let appended = self.appended.load(std::sync::atomic::Ordering::Relaxed);
        let mut history = self.history.lock();
        // Until a snapshot is done (Raft's view shows a newer one), one asked for counts as
        // taken at what was applied when asked: it holds at least that. Asking again meanwhile
        // would copy the store once more for no entry or a few.
        let held = match history.snapshot_asked {
            Some((seen, asked)) if seen == snapshot => snapshot.max(Some(asked)),
            _ => snapshot,
        };
        let since = held.map_or(0, |s| s + 1);
        let mark = history.snapshot_mark.get_or_insert((held, appended));
        if mark.0 != held {
            *mark = (held, appended);
        }
        let due = applied + 1 >= since + self.snapshot_entries
            // Something must be applied past the latest snapshot for a new one to hold more.
            || (applied >= since && appended.saturating_sub(mark.1) >= self.snapshot_bytes);
        if due {
            history.snapshot_asked = Some((snapshot, applied));
        }
        due
    }

    /// Notes each follower's progress from Raft's view while this node leads, and counts
    /// changes of leader and of the ISR.
    fn observe(&self) {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let mut history = self.history.lock();
        if metrics.current_leader.is_some() && metrics.current_leader != history.leader {
            history.leader = metrics.current_leader;
            history.counts.leader_changes += 1;
        }
        let mut progress = self.progress.lock();
        let Some(replication) = metrics
            .replication
            .as_ref()
            .filter(|_| metrics.state == ServerState::Leader)
        else {
            progress.clear();
            history.leading = None;
            history.isr = None;
            self.isr.lock().told.clear();
            return;
        };
        let now = isr::clock_ms();
        let term = metrics.current_term;
        if history.leading.is_none_or(|(led, _)| led != term) {
            history.leading = Some((term, now));
            history.isr = None;
        }
        for (id, matched) in replication.iter() {
            let seen = isr::Observation {
                matched: matched.map(|m| m.index),
                leader_end: metrics.last_log_index,
                now,
            };
            let entry = progress.entry(*id).or_default();
            *entry = isr::observe(*entry, seen);
        }
        let since = history.leading.map_or(now, |(_, since)| since);
        let isr = isr::in_sync(
            self.id,
            &progress,
            &self.answered.lock(),
            (now, since),
            self.lag,
        );
        if let Some(before) = &history.isr {
            let (shrank, expanded) = isr::change(before, &isr);
            history.counts.isr_shrinks += u64::from(shrank);
            history.counts.isr_expands += u64::from(expanded);
        }
        self.isr.lock().told = isr.clone();
        history.isr = Some(isr);
    }
}

fn replication_error(operation: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Replication {
        operation: operation.to_string(),
        reason: e.to_string(),
    }
}

impl Replica {
    /// Opens the store's database in `dir`, starts Raft over it and the listener, and forms
    /// the group of `options.peers` if it was never formed (every node may try; it is formed
    /// once).
    pub async fn start(dir: impl AsRef<Path>, options: ReplicaOptions) -> Result<Replica> {
        let id = options.node_id;
        let own = options.peers.get(&id).cloned().ok_or_else(|| {
            replication_error(
                "starting a replica",
                format!("node {id} is not among the peers {:?}", options.peers),
            )
        })?;
        let path = dir.as_ref().to_path_buf();
        let db = crate::store::open_replica_database(&path)?;
        let sync = options.sync == SyncPolicy::Always;
        let config = Config {
            cluster_name: "eddy".to_string(),
            // openraft gives an AppendEntries one heartbeat interval to be answered: long
            // enough for a follower busy applying a few big group commits.
            heartbeat_interval: 300,
            election_timeout_min: 1200,
            election_timeout_max: 2400,
            // Entries are whole group commits, up to 32 MiB each; a frame holds a few.
            max_payload_entries: 8,
            // A snapshot copies the whole store: taken every so many entries, it bounds the
            // log that is kept (docs/replication.md).
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_entries.max(1)),
            max_in_snapshot_log_to_keep: KEPT_ENTRIES.min(options.snapshot_entries),
            // The answer to a snapshot's last segment comes once the follower checked and
            // ingested the whole store, which takes longer than openraft's default 200 ms
            // on a busy disk; the leader would send it all again meanwhile.
            install_snapshot_timeout: 60_000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| replication_error("configuring Raft", e))?;
        let snapshots = Arc::new(
            snapshot::Snapshots::open(path.join("snapshots"))
                .map_err(|e| replication_error("opening the snapshots", e))?,
        );
        let answered = network::Answered::default();
        let addresses = network::Addresses {
            id,
            directory: network::Directory::default(),
            isr: Arc::default(),
        };
        let in_use = InUse::default();
        let log = log_store::LogStore::open(
            db.clone(),
            &path.join(RAFT_LOG),
            sync,
            in_use.clone(),
            snapshots.flushed(),
        )
        .map_err(|e| replication_error("opening the Raft log", e))?;
        let appended = log.appended();
        let raft = Raft::new(
            id,
            Arc::new(config),
            network::Network {
                answered: answered.clone(),
                addresses: addresses.clone(),
                snapshots: snapshots.clone(),
                tls: options.tls.as_ref().map(|tls| tls.connector.clone()),
                peers: options.peers.clone(),
            },
            log,
            state_machine::StateMachine::open(db.clone(), snapshots.clone(), in_use.clone())
                .map_err(|e| replication_error("opening the applied state", e))?,
        )
        .await
        .map_err(|e| replication_error("starting Raft", e))?;
        let listen = options.listen.clone().unwrap_or_else(|| own.clone());
        let listener = TcpListener::bind(&listen).await?;
        let address = listener.local_addr()?.to_string();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(network::serve(
            (
                listener,
                options.tls.as_ref().map(|tls| tls.acceptor.clone()),
            ),
            raft.clone(),
            addresses.clone(),
            stopped,
        ));
        let members: BTreeMap<NodeId, BasicNode> = options
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| replication_error("reading the group's state", e))?;
        if !initialized {
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(replication_error("forming the group", e)),
            }
        }
        // Read once now, so that a read during this node's first snapshot install (which clears
        // the store until it is refilled) is told what the store held when the node started,
        // rather than no topics at all.
        let topics_read = snapshots
            .unless_installing(|| crate::store::stored_topics(&db))
            .and_then(Result::ok)
            .unwrap_or_default();
        let status = ReplicaStatus {
            id,
            raft,
            answered,
            progress: Arc::default(),
            lag: options.lag,
            snapshot_entries: options.snapshot_entries.max(1),
            snapshot_bytes: options.snapshot_bytes.max(1),
            appended,
            history: Arc::default(),
            directory: addresses.directory,
            isr: addresses.isr,
            db: Arc::downgrade(&db),
            snapshots,
            topics_read: Arc::new(parking_lot::Mutex::new(topics_read)),
        };
        tokio::spawn(track_followers(status.clone(), stop.subscribe()));
        info!(node = id, %address, peers = ?options.peers, "replica started");
        Ok(Replica {
            path,
            db,
            in_use,
            status,
            stop,
            address,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.status.id
    }

    /// What the replica tells of the group.
    pub fn status(&self) -> &ReplicaStatus {
        &self.status
    }

    /// The address the replication listener is bound to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The directory of the replica's store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who leads, in which term, and how far this replica applied.
    pub fn leadership(&self) -> Leadership {
        self.status.leadership()
    }

    /// Waits up to `timeout` for the group to have a leader, and names it.
    pub async fn await_leader(&self, timeout: Duration) -> Result<NodeId> {
        let mut metrics = self.status.raft.metrics();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(StorageError::Closed);
                }
            }
        })
        .await;
        found.map_err(|_| replication_error("waiting for a leader", "no leader was elected"))?
    }

    /// Waits up to `timeout` (twice, at most) until this node leads and has applied every entry
    /// in its log before an empty batch it commits, so a store opened now sees every write
    /// that may be committed before its own; returns the term.
    pub async fn await_leading(&self, timeout: Duration) -> Result<u64> {
        let mut metrics = self.status.raft.metrics();
        let led = tokio::time::timeout(timeout, async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.running_state.is_err() {
                        return Err(StorageError::Closed);
                    }
                    if m.state == ServerState::Leader {
                        return Ok(m.current_term);
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(StorageError::Closed);
                }
            }
        })
        .await;
        let not_leader = || StorageError::NotLeader {
            leader: self.leadership().leader,
        };
        let term = led.map_err(|_| not_leader())??;
        // Every entry in this leader's log may be committed before its store's first write,
        // and some may not be applied yet (a leader restarted in its own term has no new first
        // entry to vouch for them). An empty batch of this term, committed and applied, does:
        // Raft applies in order. It also settles a restarted node that only thinks it leads a
        // term the others left.
        let marker = Batch {
            term,
            bytes: rocksdb::WriteBatch::default().data().to_vec().into(),
        };
        let written = tokio::time::timeout(timeout, self.status.raft.client_write(marker)).await;
        match written {
            Ok(Ok(response)) if response.data == Applied::Written => Ok(term),
            _ => Err(not_leader()),
        }
    }

    /// Waits up to `timeout` until this replica applied the entry at `index`.
    pub async fn await_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let mut metrics = self.status.raft.metrics();
        let applied = tokio::time::timeout(timeout, async {
            loop {
                if metrics
                    .borrow_and_update()
                    .last_applied
                    .is_some_and(|id| id.index >= index)
                {
                    return Ok(());
                }
                if metrics.changed().await.is_err() {
                    return Err(StorageError::Closed);
                }
            }
        })
        .await;
        applied.map_err(|_| {
            replication_error(
                "catching up",
                format!("entry {index} was not applied in time"),
            )
        })?
    }

    /// Stops Raft and the listener, and waits for the work Raft's storage started on the
    /// database (a flush, a snapshot) to end; the database closes with the last store over it.
    pub async fn shutdown(&self) -> Result<()> {
        let _ = self.stop.send(true);
        self.status
            .raft
            .shutdown()
            .await
            .map_err(|e| replication_error("stopping Raft", e))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.in_use.idle() {
            if tokio::time::Instant::now() > deadline {
                warn!(
                    node = self.id(),
                    "Raft's storage still works on the database after a minute; stopping without it"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The database, for a store over it.
    pub(crate) fn database(&self) -> Arc<DB> {
        self.db.clone()
    }

    /// What a store's writer proposes its group commits through: built for `term`, or for no
    /// term (a store that only reads).
    pub(crate) fn proposer(&self, term: Option<u64>) -> Result<Proposer> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| replication_error("opening a store over a replica", e))?;
        Ok(Proposer {
            status: self.status.clone(),
            term,
            runtime,
        })
    }
}

/// Held by Raft's storage (the log and the state machine) and by the blocking work each starts
/// on the database, so a replica's shutdown can wait for them all to let go of it: until
/// then the database stays open, and the node could not be started again in the process.
#[derive(Clone, Default)]
pub(crate) struct InUse(Arc<()>);

impl InUse {
    /// Runs `work` on a blocking thread, held in use until it ends.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let held = self.clone();
        tokio::task::spawn_blocking(move || {
            let _held = held;
            work()
        })
        .await
        .map_err(std::io::Error::other)
    }

    fn idle(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

/// A proposal's answer, told that the store closed if the runtime drops the proposal before
/// it was answered: the writer waits for every answer.
struct Answer<F: FnOnce(Result<()>)>(Option<F>);

impl<F: FnOnce(Result<()>)> Drop for Answer<F> {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err(StorageError::Closed));
        }
    }
}

/// Proposes a store's group commits to the group, from the store's writer thread.
#[derive(Clone)]
pub(crate) struct Proposer {
    status: ReplicaStatus,
    term: Option<u64>,
    runtime: tokio::runtime::Handle,
}

impl Proposer {
    /// Proposes the batch `bytes` and returns at once; `answer` is told, on the runtime, once
    /// the batch is committed and applied to this node's store. Raft keeps the order of the
    /// proposals, so the writer may propose the next group before this one is answered.
    pub(crate) fn propose(
        &self,
        bytes: Vec<u8>,
        closing: &watch::Receiver<bool>,
        answer: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let proposer = self.clone();
        let closing = closing.clone();
        let mut answer = Answer(Some(answer));
        self.runtime.spawn(async move {
            let result = proposer.replicate(bytes, closing).await;
            if let Some(answer) = answer.0.take() {
                answer(result);
            }
        });
    }

    /// Waits until the batch `bytes` is committed and applied to this node's store. It gives
    /// up (the batch may still be committed later, as a Kafka write whose request timed out)
    /// when this node stops leading the term, and when `closing` turns true: the store is
    /// closing, and nothing waits for the answer.
    async fn replicate(&self, bytes: Vec<u8>, closing: watch::Receiver<bool>) -> Result<()> {
        let not_leader = |status: &ReplicaStatus| StorageError::NotLeader {
            leader: status.leadership().leader,
        };
        let Some(term) = self.term else {
            return Err(not_leader(&self.status));
        };
        let status = &self.status;
        let mut watching = closing.clone();
        let written = tokio::select! {
            written = status.raft.client_write(Batch { term, bytes: bytes.into() }) => Some(written),
            // openraft may keep a write pending after its leader stepped down (another
            // node may yet commit it): the writer must not wait on it for ever.
            () = status.await_not_leading(term) => None,
            _ = watching.wait_for(|closing| *closing) => None,
        };
        let Some(written) = written else {
            return Err(if *closing.borrow() {
                StorageError::Closed
            } else {
                not_leader(&self.status)
            });
        };
        match written {
            Ok(response) if response.data == Applied::Written => Ok(()),
            // Leadership moved since the store was opened: another leader's writes came first.
            Ok(_) => Err(not_leader(&self.status)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(StorageError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            // The node is going away: another leads, or will.
            Err(RaftError::Fatal(Fatal::Stopped)) => Err(StorageError::NotLeader { leader: None }),
            Err(e) => Err(replication_error("replicating a write", e)),
        }
    }
}

/// Looks at the followers' progress each time Raft's view changes, and at least every 200 ms
/// (a follower's standing ages even when nothing changes), and asks for a snapshot when one is
/// due, until the replica stops.
async fn track_followers(status: ReplicaStatus, mut stop: watch::Receiver<bool>) {
    let mut metrics = status.raft.metrics();
    loop {
        status.observe();
        // Ignored while a snapshot is being taken; the next look asks again.
        if status.snapshot_due() && status.raft.trigger().snapshot().await.is_err() {
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions, TopicConfig};

    async fn start(dir: &Path, peers: &BTreeMap<NodeId, String>) -> Result<Replica> {
        let options = ReplicaOptions {
            node_id: 1,
            peers: peers.clone(),
            listen: None,
            sync: SyncPolicy::Os,
            lag: DEFAULT_REPLICA_LAG,
            snapshot_entries: 20_000,
            snapshot_bytes: DEFAULT_SNAPSHOT_BYTES,
            tls: None,
        };
        Replica::start(dir, options).await
    }

    /// A node restarted into a snapshot's install (which clears its store until refilled)
    /// still tells the topics its store held when it started, not none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topics_read_during_the_first_install_are_those_the_store_held() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let peers = BTreeMap::from([(1, port.to_string())]);
        let wait = Duration::from_secs(30);
        let replica = start(dir.path(), &peers).await?;
        let term = replica.await_leading(wait).await?;
        let store = {
            let store = Store::open_replica(&replica, StoreOptions::default(), Some(term))?;
            store.create_topic("kept", TopicConfig::with_partitions(3))?;
            store
        };
        store.close()?;
        drop(store);
        replica.shutdown().await?;
        drop(replica);

        let replica = start(dir.path(), &peers).await?;
        let status = replica.status();
        let installing = status.snapshots.hold_as_installing();
        assert_eq!(status.topics()?, [("kept".to_string(), 3)]);
        drop(installing);
        assert_eq!(status.topics()?, [("kept".to_string(), 3)]);
        replica.shutdown().await?;
        Ok(())
    }
}
