//! The store: one RocksDB database holding the log, group offsets and operator state.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    DBRawIteratorWithThreadMode, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::batch::{
    BatchHeader, EncodedBatch, LogRecord, Record, decode_records, decode_records_into, verify_crc,
};
use crate::cluster::{
    Changelogs, Cluster, ClusterOptions, GroupPositions, Membership, NodeState, PartitionAppend,
    QueryGroup, Role, ServiceNode, cluster_error,
};
use crate::commit::{AppendResult, Commit, CommitChain};
use crate::config::{TopicConfig, validate_topic_name};
use crate::disk::{DiskGuard, DiskHealth};
use crate::error::{Result, StorageError};
use crate::keys::{self, CF_LOG, CF_META, CF_OFFSETS, CF_RAFT, CF_STATE};
use crate::partitioner::DefaultPartitioner;
use crate::segment::SegmentMeta;
use crate::topic::{PartitionLog, StoredTopic, TopicLog};
use crate::transactions::{self, AbortedTxn, Isolation};
use crate::writer::{
    AfterWrite, BatchBuilder, CommitJob, CommitWriter, Job, PreparedAppend, SyncPolicy,
};

/// A commit's writes to the local database: appends to the embedded log, state changes, and
/// offsets as keys and values.
type LocalWrites = (
    Vec<PreparedAppend>,
    Vec<crate::commit::StateOp>,
    Vec<(Vec<u8>, Vec<u8>)>,
);

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// When appends reach the disk.
    pub sync: SyncPolicy,
    /// The leader epoch stamped on every batch; one node keeps 0.
    pub leader_epoch: i32,
    /// The most partitions one topic may have: each is kept in memory, so a count of
    /// billions would exhaust it.
    pub max_partitions: u32,
    /// Bytes of the disk kept free: below it, writes are refused until space returns. `None`
    /// keeps 5% of the filesystem, between 256 MiB and 1 GiB (half of a filesystem under 512 MiB).
    pub disk_reserve_bytes: Option<u64>,
    /// The most memory compaction's map of keys to their latest offsets takes per partition
    /// and pass (Kafka's `log.cleaner.dedupe.buffer.size`); what lies past it is compacted on a
    /// later pass.
    pub compaction_map_bytes: usize,
    /// Whether RocksDB reads its files through `mmap`: it saves copying each block from the
    /// page cache, but the pages it touches count in the process's resident memory.
    pub mmap_reads: bool,
    /// The Kafka cluster the log runs on, or `None` for the embedded log. State and query
    /// positions stay in the local database either way.
    pub cluster: Option<ClusterOptions>,
}

/// The default bound of compaction's key map.
pub const DEFAULT_COMPACTION_MAP_BYTES: usize = 64 << 20;

/// The default cap on partitions per topic, well above what one node serves well.
pub const DEFAULT_MAX_PARTITIONS: u32 = 10_000;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            leader_epoch: 0,
            max_partitions: DEFAULT_MAX_PARTITIONS,
            disk_reserve_bytes: None,
            compaction_map_bytes: DEFAULT_COMPACTION_MAP_BYTES,
            mmap_reads: false,
            cluster: None,
        }
    }
}

/// A topic as `describe` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic name.
    pub name: String,
    /// Stable numeric id, never reused.
    pub id: u32,
    /// The configuration.
    pub config: TopicConfig,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// One entry per partition.
    pub partitions: Vec<PartitionDescription>,
}

/// A partition as `describe` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition number.
    pub partition: u32,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// The offset the next record gets (the high watermark).
    pub end_offset: i64,
    /// Bytes of stored batches.
    pub size_bytes: u64,
    /// How many segments the partition has.
    pub segments: usize,
}

/// A commit submitted with [`Store::commit_pending`].
#[derive(Debug)]
pub struct PendingCommit(oneshot::Receiver<Result<Vec<AppendResult>>>);

impl PendingCommit {
    /// Waits until the commit is written; its appends' positions, as [`Store::commit`] returns.
    pub async fn wait(self) -> Result<Vec<AppendResult>> {
        self.0.await.map_err(|_| StorageError::Closed)?
    }
}

/// Raw batches read from a partition, as the Kafka fetch path serves them.
#[derive(Debug, Clone, Default)]
pub struct FetchedBatches {
    /// Whole batches in offset order; the first may start before the requested offset.
    pub batches: Vec<Bytes>,
    /// The high watermark when the read happened.
    pub high_watermark: i64,
    /// The last stable offset when the read happened.
    pub last_stable_offset: i64,
    /// The log start offset when the read happened.
    pub log_start_offset: i64,
    /// For a read_committed read, the aborted transactions the batches overlap.
    pub aborted: Vec<AbortedTxn>,
}

/// Records read from a partition.
#[derive(Debug, Clone, Default)]
pub struct FetchedRecords {
    /// Records at or after the requested offset, in offset order.
    pub records: Vec<LogRecord>,
    /// Where the next read should start.
    pub next_offset: i64,
    /// The high watermark when the read happened.
    pub high_watermark: i64,
    /// The last stable offset when the read happened: the read went no further.
    pub last_stable_offset: i64,
    /// The log start offset when the read happened.
    pub log_start_offset: i64,
}

pub(crate) struct StoreInner {
    pub db: Arc<DB>,
    path: PathBuf,
    options: StoreOptions,
    topics: RwLock<BTreeMap<String, Arc<TopicLog>>>,
    writer: parking_lot::Mutex<CommitWriter>,
    partitioner: DefaultPartitioner,
    disk: Arc<DiskGuard>,
    /// The cluster every log operation goes to, when the log is not embedded.
    pub(crate) cluster: Option<Cluster>,
    /// Whether every write goes through the replicated log's group, by the commit writer.
    replicated: bool,
    /// The replica the store is over, when the log is replicated.
    replica: Option<crate::ReplicaStatus>,
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        self.writer.lock().shutdown();
        if let Err(e) = self.db.flush_wal(true) {
            warn!(error = %e, "WAL sync on close failed");
        }
    }
}

/// Eddy's storage: topics of partitioned logs, group offsets and a state store, on RocksDB.
///
/// Cloning is cheap; clones share one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("sync", &self.inner.options.sync)
            .finish()
    }
}

/// A commit's positions that are query groups' offsets on the cluster, by group, and the
/// local groups they are kept under (whose positions are not changelogged).
fn group_positions(
    cluster: &Cluster,
    offsets: &[crate::commit::CommitOffset],
) -> Result<(Vec<GroupPositions>, HashSet<String>)> {
    let groups = cluster.query_groups.lock();
    let mut out: Vec<GroupPositions> = Vec::new();
    let mut split = HashSet::new();
    for o in offsets {
        let Some(group) = groups.get(&o.group) else {
            continue;
        };
        split.insert(o.group.clone());
        let index = match out.iter().position(|p| p.group.name() == group.name()) {
            Some(index) => index,
            None => {
                out.push(GroupPositions {
                    group: group.clone(),
                    offsets: rdkafka::TopicPartitionList::new(),
                });
                out.len() - 1
            }
        };
        out[index]
            .offsets
            .add_partition_offset(
                &o.topic,
                o.partition as i32,
                rdkafka::Offset::Offset(o.offset.offset),
            )
            .map_err(|e| cluster_error(format!("committing the offsets of {}", o.group), e))?;
    }
    Ok((out, split))
}

/// The node's id, made (from the clock and the process id) and kept the first time the store
/// is opened on a cluster: its clients' ids carry it, so the brokers' logs tell nodes apart
/// across restarts.
fn node_id(db: &DB) -> Result<String> {
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| StorageError::CorruptMetadata {
            key: "node-id".into(),
            reason: "the meta column family is missing".into(),
        })?;
    if let Some(id) = db.get_cf(meta, keys::NODE_ID_KEY)? {
        return Ok(String::from_utf8_lossy(&id).into_owned());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!(
        "{:016x}",
        (nanos as u64) ^ (u64::from(std::process::id()) << 40)
    );
    db.put_cf(meta, keys::NODE_ID_KEY, id.as_bytes())?;
    Ok(id)
}

/// Opens (or creates) the store's database in `path`, with every column family.
pub(crate) fn open_database(path: &Path, mmap_reads: bool) -> Result<Arc<DB>> {
    open_database_with(path, |options| options.set_allow_mmap_reads(mmap_reads))
}

/// Opens (creating when missing) the database of a node of the replicated log. Its state
/// machine applies entries without the write-ahead log (the Raft log holds them), so memtables
/// are flushed together: a store on disk is always whole as of one applied entry.
pub(crate) fn open_replica_database(path: &Path) -> Result<Arc<DB>> {
    open_database_with(path, |options| options.set_atomic_flush(true))
}

fn open_database_with(path: &Path, configure: impl FnOnce(&mut Options)) -> Result<Arc<DB>> {
    std::fs::create_dir_all(path)?;
    let mut db_options = Options::default();
    db_options.create_if_missing(true);
    db_options.create_missing_column_families(true);
    db_options.increase_parallelism(2);
    db_options.set_max_background_jobs(2);
    db_options.set_keep_log_file_num(4);
    configure(&mut db_options);
    Ok(Arc::new(DB::open_cf_descriptors(
        &db_options,
        path,
        column_families(),
    )?))
}

/// Refuses a database a node of the replicated log keeps (its Raft state is there): written on
/// its own, it would drift from the other nodes' copies, which Raft never reconciles.
fn refuse_replica(db: &DB) -> Result<()> {
    let Some(raft) = db.cf_handle(keys::CF_RAFT) else {
        return Ok(());
    };
    match db.iterator_cf(raft, IteratorMode::Start).next() {
        None => Ok(()),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(_)) => Err(StorageError::Replication {
            operation: "opening the store".into(),
            reason: "this directory holds a node of a replicated log; start it with its \
                     --node-id and --peers (docs/replication.md), since a copy written on its \
                     own would drift from the other nodes'"
                .into(),
        }),
    }
}

/// Flushes every column family's memtable to disk, together, and waits for it.
pub(crate) fn flush_all(db: &DB) -> std::result::Result<(), rocksdb::Error> {
    let families: Vec<_> = [CF_LOG, CF_META, CF_OFFSETS, CF_STATE, CF_RAFT]
        .into_iter()
        .filter_map(|name| db.cf_handle(name))
        .collect();
    let mut options = rocksdb::FlushOptions::default();
    options.set_wait(true);
    db.flush_cfs_opt(&families.iter().collect::<Vec<_>>(), &options)
}

/// The smallest batch the `log` family keeps in a blob file rather than in its SSTs.
const LOG_BLOB_MIN_BYTES: u64 = 4096;

/// A column family's options before its own: room for memtables waiting to be flushed.
///
/// Writes stop while a family has as many memtables as this, all but one waiting for the flush
/// thread. RocksDB's default of 2 stops them whenever one flush is slower than filling one
/// memtable, which a burst of appends does on a busy disk (every few seconds on the nodes of a
/// replicated log, whose applied writes skip the write-ahead log and so fill memtables faster).
/// A memtable takes memory only as it fills, so the room costs nothing while unused.
fn family_options() -> Options {
    let mut options = Options::default();
    options.set_max_write_buffer_number(4);
    options
}

fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let mut log = family_options();
    // Batches are often compressed by producers already; the log is written once and read in order.
    log.set_compression_type(DBCompressionType::None);
    log.set_write_buffer_size(64 << 20);
    log.set_target_file_size_base(64 << 20);
    // A batch of 4 KiB or more goes to a blob file when its memtable is flushed, and the SSTs
    // keep only its key and where it is. Compactions then move keys, not records: before, they
    // rewrote every record several times, the work that mattered most once three nodes shared
    // two cores (docs/performance.md). Small batches stay inline, where they cost no extra read.
    log.set_enable_blob_files(true);
    log.set_min_blob_size(LOG_BLOB_MIN_BYTES);
    log.set_blob_compression_type(DBCompressionType::None);
    // A blob file holds the batches of every topic flushed together, so one long-lived topic
    // could keep whole files of expired records. Compactions move the live batches out of the
    // oldest quarter of the files, and are forced once half of what those hold is garbage.
    log.set_enable_blob_gc(true);
    log.set_blob_gc_age_cutoff(0.25);
    log.set_blob_gc_force_threshold(0.5);
    log.set_blob_compaction_readahead_size(2 << 20);
    let mut meta = family_options();
    meta.set_compression_type(DBCompressionType::None);
    let mut offsets = family_options();
    offsets.set_compression_type(DBCompressionType::None);
    let mut state = family_options();
    state.set_compression_type(DBCompressionType::Lz4);
    state.set_write_buffer_size(32 << 20);
    // Operators look up many keys the state does not hold (a new group, a join partner not
    // seen yet): Bloom filters on files and memtables answer most of those without searching,
    // as Kafka Streams configures its RocksDB stores.
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    state.set_block_based_table_factory(&table);
    state.set_memtable_prefix_bloom_ratio(0.1);
    state.set_memtable_whole_key_filtering(true);
    // Raft's own state (its vote, and the applied, committed and purged positions): a few
    // small keys, not worth compressing.
    let mut raft = family_options();
    raft.set_compression_type(DBCompressionType::None);
    vec![
        ColumnFamilyDescriptor::new(CF_LOG, log),
        ColumnFamilyDescriptor::new(CF_META, meta),
        ColumnFamilyDescriptor::new(CF_OFFSETS, offsets),
        ColumnFamilyDescriptor::new(CF_STATE, state),
        ColumnFamilyDescriptor::new(CF_RAFT, raft),
    ]
}

impl Store {
    /// Opens the store in `dir`, creating it when missing, and recovers every partition's end.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let path = dir.as_ref().to_path_buf();
        let db = open_database(&path, options.mmap_reads)?;
        refuse_replica(&db)?;
        Store::over(db, path, options, None)
    }

    /// The replicated log's view of the group, for a store opened over a replica.
    pub fn replica_status(&self) -> Option<&crate::ReplicaStatus> {
        self.inner.replica.as_ref()
    }

    /// Opens a store over a node of the replicated log. Built for the leader `term` (see
    /// [`crate::Replica::await_leading`]), its writer proposes each group commit to the group
    /// and acknowledges it once committed and applied here; without a term it reads what was
    /// applied when it opened and refuses writes. The database's options are the replica's.
    pub fn open_replica(
        replica: &crate::Replica,
        mut options: StoreOptions,
        term: Option<u64>,
    ) -> Result<Store> {
        if options.cluster.is_some() {
            return Err(StorageError::Replication {
                operation: "opening a store".into(),
                reason: "a replicated log cannot also be on a Kafka cluster".into(),
            });
        }
        let proposer = replica.proposer(term)?;
        if let Some(term) = term {
            // Every batch carries its leader's epoch, as Kafka stamps partition leader epochs.
            options.leader_epoch = i32::try_from(term).unwrap_or(i32::MAX);
        }
        Store::over(
            replica.database(),
            replica.path().to_path_buf(),
            options,
            Some((proposer, replica.status().clone())),
        )
    }

    /// The store over an open database, writing through `proposer` when it is replicated.
    fn over(
        db: Arc<DB>,
        path: PathBuf,
        options: StoreOptions,
        replicated: Option<(crate::replication::Proposer, crate::ReplicaStatus)>,
    ) -> Result<Store> {
        let (proposer, replica) = replicated.unzip();
        let mut topics = load_topics(&db, options.max_partitions)?;
        let cluster = match &options.cluster {
            Some(cluster) => {
                if !topics.is_empty() {
                    warn!(
                        topics = topics.len(),
                        "the store holds an embedded log, which is not served while the log is on a Kafka cluster"
                    );
                    topics.clear();
                }
                let node_id = node_id(&db)?;
                info!(bootstrap = %cluster.bootstrap_servers, node = %node_id, "the log is on a Kafka cluster");
                Some(Cluster::connect(cluster, &node_id)?)
            }
            None => None,
        };
        let disk = Arc::new(DiskGuard::new(&path, options.disk_reserve_bytes));
        let replicated = proposer.is_some();
        let writer = CommitWriter::start(
            db.clone(),
            options.sync,
            options.leader_epoch,
            disk.clone(),
            proposer,
        )?;
        info!(
            path = %path.display(),
            topics = topics.len(),
            sync = %options.sync,
            "opened store"
        );
        let store = Store {
            inner: Arc::new(StoreInner {
                db,
                path,
                options,
                topics: RwLock::new(topics),
                writer: parking_lot::Mutex::new(writer),
                partitioner: DefaultPartitioner::new(),
                disk,
                cluster,
                replicated,
                replica,
            }),
        };
        if let Some(cluster) = &store.inner.cluster {
            // The command topic first, which the service's group follows; joining it settles
            // whether this node is active, and before anyone reads the state, a node that
            // starts empty, or behind, catches up with the changelogs either way.
            cluster.changelogs.ensure(&cluster.topics)?;
            let membership =
                Membership::join(&store, &cluster.options, cluster.changelogs.command_topic())?;
            info!(role = ?membership.role(), service = %cluster.options.service_id, "joined the service");
            let _ = cluster.membership.set(membership);
        }
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Free space on the store's disk, and whether writes succeed.
    pub fn disk_health(&self) -> DiskHealth {
        self.inner.disk.health()
    }

    /// The options the store was opened with.
    pub(crate) fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The sync policy in force.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.inner.options.sync
    }

    /// Finishes queued writes, syncs the write-ahead log and flushes memtables.
    ///
    /// Further writes fail with [`StorageError::Closed`]; reads keep working until the last clone
    /// is dropped.
    pub fn close(&self) -> Result<()> {
        if let Some(cluster) = &self.inner.cluster {
            cluster.directory.leave();
        }
        self.inner.writer.lock().shutdown();
        self.inner.db.flush_wal(true)?;
        flush_all(&self.inner.db)?;
        info!(path = %self.inner.path.display(), "closed store");
        Ok(())
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.inner
            .db
            .cf_handle(name)
            .ok_or_else(|| StorageError::CorruptMetadata {
                key: name.to_string(),
                reason: "column family is missing".to_string(),
            })
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<TopicLog>> {
        self.inner
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))
    }

    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<TopicLog>, Arc<PartitionLog>)> {
        let t = self.topic(topic)?;
        let p = t
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| StorageError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: t.partitions.len() as u32,
            })?;
        Ok((t, p))
    }

    pub(crate) fn topics_snapshot(&self) -> Vec<Arc<TopicLog>> {
        self.inner.topics.read().values().cloned().collect()
    }

    /// Runs a custom write through the commit writer and waits for it (one group commit).
    pub(crate) fn run_custom(&self, build: BatchBuilder) -> Result<()> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.inner
            .writer
            .lock()
            .submit(Job::Custom { build, reply })?;
        rx.recv().map_err(|_| StorageError::Closed)?
    }

    // ---- topics ------------------------------------------------------------------------------

    /// Refuses a partition count above the store's cap.
    pub fn check_partition_count(&self, topic: &str, partitions: u32) -> Result<()> {
        check_partitions(topic, partitions, self.inner.options.max_partitions)
    }

    /// Creates a topic. Fails if the name is invalid or taken, or the config is invalid.
    pub fn create_topic(&self, name: &str, mut config: TopicConfig) -> Result<TopicDescription> {
        if let Some(cluster) = &self.inner.cluster {
            self.check_partition_count(name, config.partitions)?;
            cluster.topics.create(name, &config)?;
            return cluster.topics.describe(name);
        }
        validate_topic_name(name)?;
        config.validate(name)?;
        self.check_partition_count(name, config.partitions)?;
        // One node keeps one copy; the default is that one.
        config.replication_factor = config.replication_factor.max(1);
        let mut topics = self.inner.topics.write();
        if topics.contains_key(name) {
            return Err(StorageError::TopicExists(name.to_string()));
        }
        let meta = self.cf(CF_META)?;
        let id = match self.inner.db.get_cf(meta, keys::NEXT_TOPIC_ID_KEY)? {
            Some(bytes) => u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                StorageError::CorruptMetadata {
                    key: "next-topic-id".into(),
                    reason: "not 4 bytes".into(),
                }
            })?),
            None => 1,
        };
        let stored = StoredTopic {
            name: name.to_string(),
            id,
            config,
            created_ms: crate::now_ms(),
        };
        let json = serde_json::to_vec(&stored).map_err(|e| StorageError::CorruptMetadata {
            key: name.to_string(),
            reason: e.to_string(),
        })?;
        let stored_name = name.to_string();
        if self.inner.replicated {
            // Through the writer, which alone proposes to the replicated log's group.
            self.run_custom(Box::new(move |db: &DB, wb: &mut WriteBatch| {
                let meta = db.cf_handle(CF_META).ok_or(StorageError::Closed)?;
                wb.put_cf(meta, keys::NEXT_TOPIC_ID_KEY, (id + 1).to_be_bytes());
                wb.put_cf(meta, keys::topic_key(&stored_name), json);
                Ok(Box::new(|| {}) as AfterWrite)
            }))?;
        } else {
            let mut wb = WriteBatch::default();
            wb.put_cf(meta, keys::NEXT_TOPIC_ID_KEY, (id + 1).to_be_bytes());
            wb.put_cf(meta, keys::topic_key(name), json);
            let mut write = rocksdb::WriteOptions::default();
            write.set_sync(self.inner.options.sync != SyncPolicy::Os);
            self.inner.db.write_opt(wb, &write)?;
        }
        let partitions = (0..stored.config.partitions)
            .map(|p| Arc::new(PartitionLog::new(name, id, p, 0, 0, Vec::new())))
            .collect();
        let topic = Arc::new(TopicLog::new(stored, partitions));
        topics.insert(name.to_string(), topic.clone());
        drop(topics);
        info!(
            topic = name,
            id,
            partitions = topic.partitions.len(),
            "created topic"
        );
        self.describe_topic(name)
    }

    /// Deletes a topic, its records, its segment bookkeeping and the group offsets committed on it.
    ///
    /// Blocks for one group commit.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if let Some(cluster) = &self.inner.cluster {
            cluster.topics.delete(name)?;
            return self.delete_group_offsets_of(name);
        }
        let topic = self
            .inner
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
        let offset_keys = self.group_offset_keys_for_topic(name)?;
        let doomed = topic.clone();
        let build: BatchBuilder = Box::new(move |db: &DB, wb: &mut WriteBatch| {
            let (Some(log), Some(meta), Some(offsets)) = (
                db.cf_handle(CF_LOG),
                db.cf_handle(CF_META),
                db.cf_handle(CF_OFFSETS),
            ) else {
                return Err(StorageError::Closed);
            };
            doomed.mark_deleted();
            let id = doomed.id;
            wb.delete_range_cf(
                log,
                keys::log_partition_prefix(id, 0),
                keys::log_partition_prefix(id + 1, 0),
            );
            for prefix in keys::topic_id_meta_prefixes(id) {
                let end = keys::prefix_successor(&prefix).unwrap_or_default();
                wb.delete_range_cf(meta, prefix, end);
            }
            wb.delete_cf(meta, keys::topic_key(&doomed.name));
            for key in offset_keys {
                wb.delete_cf(offsets, key);
            }
            Ok(Box::new(|| {}) as AfterWrite)
        });
        let result = self.run_custom(build);
        if let Err(e) = result {
            // The write failed: the topic is still on disk, so keep serving it.
            if !topic.is_deleted() {
                self.inner.topics.write().insert(name.to_string(), topic);
            }
            return Err(e);
        }
        // Wake readers waiting on the deleted partitions.
        drop(topic);
        info!(topic = name, "deleted topic");
        Ok(())
    }

    /// The names of all topics, sorted.
    pub fn list_topics(&self) -> Vec<String> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.topics.list().unwrap_or_else(|error| {
                warn!(%error, "listing the cluster's topics");
                Vec::new()
            });
        }
        self.inner.topics.read().keys().cloned().collect()
    }

    /// Makes `name` with the default configuration unless it exists (or another writer made
    /// it meanwhile): for topics a writer needs and names itself, such as dead-letter topics.
    pub fn ensure_topic(&self, name: &str) -> Result<()> {
        if self.topic_exists(name) {
            return Ok(());
        }
        match self.create_topic(name, TopicConfig::default()) {
            Ok(_) => Ok(()),
            Err(StorageError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether a topic exists.
    pub fn topic_exists(&self, name: &str) -> bool {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.topics.exists(name);
        }
        self.inner.topics.read().contains_key(name)
    }

    /// A topic's config.
    pub fn topic_config(&self, name: &str) -> Result<TopicConfig> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.topics.describe(name).map(|d| d.config);
        }
        Ok(self.topic(name)?.config.read().clone())
    }

    /// A topic's config, partitions and offsets.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.topics.describe(name);
        }
        let topic = self.topic(name)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let tail = p.tail.lock();
                PartitionDescription {
                    partition: p.partition,
                    log_start_offset: p.log_start_offset(),
                    end_offset: p.end_offset(),
                    size_bytes: tail.segments.iter().map(|s| s.bytes).sum(),
                    segments: tail.segments.len(),
                }
            })
            .collect();
        Ok(TopicDescription {
            name: topic.name.clone(),
            id: topic.id,
            config: topic.config.read().clone(),
            created_ms: topic.created_ms,
            partitions,
        })
    }

    /// The number of partitions of a topic.
    pub fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.topics.partition_count(topic);
        }
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    // ---- appends -----------------------------------------------------------------------------

    fn prepare(&self, topic: &str, partition: u32, records: &[Record]) -> Result<PreparedAppend> {
        let (t, p) = self.partition(topic, partition)?;
        let batch = EncodedBatch::encode(records).map_err(StorageError::Encode)?;
        self.check_batch(&t, &batch, records.iter().any(|r| r.key.is_none()))?;
        Ok(PreparedAppend {
            topic: t,
            partition: p,
            batch,
            marker: None,
        })
    }

    fn check_batch(&self, topic: &TopicLog, batch: &EncodedBatch, keyless: bool) -> Result<()> {
        let config = topic.config.read();
        if batch.len() > config.max_message_bytes as usize {
            return Err(StorageError::RecordTooLarge {
                topic: topic.name.clone(),
                size: batch.len(),
                limit: config.max_message_bytes as usize,
            });
        }
        if keyless && config.cleanup_policy.compacts() {
            return Err(StorageError::InvalidRecord {
                topic: topic.name.clone(),
                reason: "a compacted topic only accepts records with a key".to_string(),
            });
        }
        Ok(())
    }

    fn submit_commit(
        &self,
        commit: Commit,
        chain: Option<CommitChain>,
    ) -> Result<oneshot::Receiver<Result<Vec<AppendResult>>>> {
        if self.inner.cluster.is_some() {
            return self.submit_to_cluster(commit, chain);
        }
        self.inner.disk.check_space(commit.approximate_bytes())?;
        let mut appends = Vec::with_capacity(commit.appends.len());
        for append in commit.appends {
            if append.records.is_empty() {
                continue;
            }
            match append.partition {
                Some(partition) => {
                    appends.push(self.prepare(&append.topic, partition, &append.records)?)
                }
                None => {
                    let partitions = self.partition_count(&append.topic)?;
                    let by_partition = self.by_key(append.records, partitions, append.key_suffix);
                    for (partition, records) in by_partition {
                        appends.push(self.prepare(&append.topic, partition, &records)?);
                    }
                }
            }
        }
        let now = crate::now_ms();
        for marker in commit.markers {
            let (topic, partition) = self.partition(&marker.topic, marker.partition)?;
            let batch = transactions::control_batch(&marker, now).map_err(StorageError::Encode)?;
            appends.push(PreparedAppend {
                topic,
                partition,
                batch,
                marker: Some(marker.commit),
            });
        }
        let state = commit.state;
        let mut offsets = Vec::with_capacity(commit.offsets.len());
        for o in commit.offsets {
            self.partition(&o.topic, o.partition)?;
            offsets.push((
                keys::group_offset_key(&o.group, &o.topic, o.partition),
                o.offset.encode(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.submit_local((appends, state, offsets), chain, reply)?;
        Ok(rx)
    }

    /// Hands a commit's local writes to the commit writer, which answers `reply`.
    fn submit_local(
        &self,
        (appends, state, offsets): LocalWrites,
        chain: Option<CommitChain>,
        reply: oneshot::Sender<Result<Vec<AppendResult>>>,
    ) -> Result<()> {
        self.inner.writer.lock().submit(Job::Commit(CommitJob {
            appends,
            delivered: Vec::new(),
            state,
            offsets,
            chain,
            reply,
        }))
    }

    /// On a Kafka cluster, this node's role in its service and the command-topic records it
    /// has applied, as they change; `None` for the embedded log.
    pub fn node_state(&self) -> Option<tokio::sync::watch::Receiver<NodeState>> {
        Some(self.inner.cluster.as_ref()?.membership.get()?.watch())
    }

    /// Whether this node stands by for its service's active node on a Kafka cluster, so its
    /// queries must not run.
    pub fn is_standby(&self) -> bool {
        self.inner
            .cluster
            .as_ref()
            .and_then(|c| c.membership.get())
            .is_some_and(|m| m.role() == Role::Standby)
    }

    /// On a Kafka cluster, hands this node's status to its service's other nodes (the
    /// server's heartbeat); nothing happens on the embedded log.
    pub fn publish_node_status(&self, status: Vec<u8>) {
        if let Some(cluster) = &self.inner.cluster {
            cluster.directory.publish(status);
        }
    }

    /// On a Kafka cluster, the nodes of this node's service as it hears of them, itself
    /// included once its first status came back; `None` on the embedded log.
    pub fn service_nodes(&self) -> Option<Vec<ServiceNode>> {
        Some(self.inner.cluster.as_ref()?.directory.nodes())
    }

    /// On a Kafka cluster, the service's own topic `name`
    /// (`_confluent-ksql-<service id>_<name>`, as its command topic is); `None` on the
    /// embedded log.
    pub fn service_topic(&self, name: &str) -> Option<String> {
        let (_, service) = self.service_member()?;
        Some(crate::cluster::service_topic(service, name))
    }

    /// On a Kafka cluster, this node's id in its service, and the service's id.
    pub fn service_member(&self) -> Option<(&str, &str)> {
        let cluster = self.inner.cluster.as_ref()?;
        Some((cluster.directory.node_id(), &cluster.options.service_id))
    }

    /// Records grouped by the partition Kafka's default partitioner picks for their keys, less
    /// `key_suffix` bytes at the end of each (a windowed key's window).
    fn by_key(
        &self,
        records: Vec<Record>,
        partitions: u32,
        key_suffix: usize,
    ) -> BTreeMap<u32, Vec<Record>> {
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for record in records {
            let key = record
                .key
                .as_deref()
                .map(|k| &k[..k.len().saturating_sub(key_suffix)]);
            let p = self.inner.partitioner.partition(key, partitions);
            by_partition.entry(p).or_default().push(record);
        }
        by_partition
    }

    /// A commit's appends as records per partition of the cluster's topics, those without a
    /// partition placed by Kafka's default partitioner.
    fn place_on_cluster(
        &self,
        cluster: &Cluster,
        commit_appends: Vec<crate::commit::CommitAppend>,
    ) -> Result<Vec<PartitionAppend>> {
        let mut appends = Vec::with_capacity(commit_appends.len());
        for append in commit_appends {
            if append.records.is_empty() {
                continue;
            }
            let topic = append.topic;
            match append.partition {
                Some(partition) => {
                    let partitions = cluster.topics.partition_count(&topic)?;
                    if partition >= partitions {
                        return Err(StorageError::UnknownPartition {
                            topic,
                            partition,
                            partitions,
                        });
                    }
                    appends.push(PartitionAppend {
                        topic,
                        partition,
                        records: append.records,
                    });
                }
                None => {
                    let partitions = cluster.topics.partition_count(&topic)?;
                    let by_partition = self.by_key(append.records, partitions, append.key_suffix);
                    appends.extend(by_partition.into_iter().map(|(partition, records)| {
                        PartitionAppend {
                            topic: topic.clone(),
                            partition,
                            records,
                        }
                    }));
                }
            }
        }
        Ok(appends)
    }

    /// A commit on a store whose log is a Kafka cluster: its records, and the changelog
    /// records of its state changes and offsets, go to the cluster in submission order (one
    /// transaction under exactly-once); the state changes and offsets are written locally once
    /// the cluster has them, in the same order. A node that dies between the two restores
    /// them from the changelog.
    fn submit_to_cluster(
        &self,
        commit: Commit,
        chain: Option<CommitChain>,
    ) -> Result<oneshot::Receiver<Result<Vec<AppendResult>>>> {
        let Some(cluster) = &self.inner.cluster else {
            return Err(StorageError::Closed);
        };
        if let Some(marker) = commit.markers.first() {
            return Err(StorageError::InvalidRecord {
                topic: marker.topic.clone(),
                reason: "transaction markers are the cluster's to write".into(),
            });
        }
        if chain.as_ref().is_some_and(CommitChain::is_broken) {
            return Err(StorageError::EarlierCommitFailed);
        }
        self.inner.disk.check_space(commit.approximate_bytes())?;
        let mut appends = self.place_on_cluster(cluster, commit.appends)?;
        let (positions, split_groups) = group_positions(cluster, &commit.offsets)?;
        let offsets: Vec<(String, Vec<u8>, Vec<u8>)> = commit
            .offsets
            .into_iter()
            .map(|o| {
                let key = keys::group_offset_key(&o.group, &o.topic, o.partition);
                (o.group, key, o.offset.encode())
            })
            .collect();
        let state = commit.state;
        let own = appends.len();
        // A split query's positions are its group's offsets on the cluster, not changelogged;
        // they are kept locally too, for its lag.
        let changelogged: Vec<(String, Vec<u8>, Vec<u8>)> = offsets
            .iter()
            .filter(|(group, _, _)| !split_groups.contains(group))
            .cloned()
            .collect();
        appends.extend(
            cluster
                .changelogs
                .records_of(self, cluster, &state, &changelogged)?,
        );
        let mut offsets: Vec<(Vec<u8>, Vec<u8>)> =
            offsets.into_iter().map(|(_, k, v)| (k, v)).collect();
        let (reply, rx) = oneshot::channel();
        if appends.is_empty() && positions.is_empty() {
            // Only what stays on this node (a table materialized for pull queries): no record
            // for the cluster, so any node writes it, standbys too.
            let local = (Vec::new(), state, offsets);
            return self.submit_local(local, chain, reply).map(|()| rx);
        }
        // Records for users' topics and nothing else (an insert) are any node's to write, as
        // each of ksqlDB's servers produces its inserts itself. Eddy's own topics (the schema
        // registry's) keep one writer, the active node.
        let services = crate::cluster::service_topic(&cluster.options.service_id, "");
        let free_standing = state.is_empty()
            && offsets.is_empty()
            && appends.iter().all(|a| {
                !crate::internal::is_internal_topic(&a.topic) && !a.topic.starts_with(&services)
            });
        if positions.is_empty() && !free_standing && self.is_standby() {
            return Err(StorageError::Standby {
                service: cluster.options.service_id.clone(),
            });
        }
        let store = Arc::downgrade(&self.inner);
        let chained = chain.clone();
        let then = Box::new(move |delivered: Result<Vec<(String, AppendResult)>>| {
            let delivered = match delivered {
                Ok(mut delivered) => {
                    // The changelogs' positions are written with the state they carry.
                    for (topic, result) in delivered.split_off(own.min(delivered.len())) {
                        offsets.push(Changelogs::restored_to(&topic, &result));
                    }
                    delivered.into_iter().map(|(_, result)| result).collect()
                }
                Err(e) => {
                    if let Some(chain) = &chain {
                        chain.break_off();
                    }
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let Some(store) = store.upgrade() else {
                let _ = reply.send(Err(StorageError::Closed));
                return;
            };
            // The writer answers `reply` itself, and refuses the job when the chain broke.
            let job = Job::Commit(CommitJob {
                appends: Vec::new(),
                delivered,
                state,
                offsets,
                chain,
                reply,
            });
            if let Err(error) = store.writer.lock().submit(job) {
                warn!(%error, "a commit's records reached the cluster, its state did not");
            }
        });
        // A split query's commits and inserts go through this node's own producer, on every
        // node.
        let committer = if positions.is_empty() && !free_standing {
            &cluster.committer
        } else {
            &cluster.node_committer
        };
        committer.send((appends, positions), chained, then)?;
        Ok(rx)
    }

    /// On a Kafka cluster, joins the consumer group that splits query `query_id`'s input
    /// `topics` among its service's nodes; its positions (kept under `local_group`) are then
    /// that group's committed offsets. `None` on the embedded log. Leaving the group is
    /// dropping every clone of what this returns.
    pub fn join_query_group(
        &self,
        local_group: &str,
        query_id: &str,
        topics: &[String],
    ) -> Result<Option<QueryGroup>> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok(None);
        };
        let name = format!(
            "_confluent-ksql-{}query_{query_id}",
            cluster.options.service_id
        );
        let group = QueryGroup::join(&cluster.options, &name, topics)?;
        cluster
            .query_groups
            .lock()
            .insert(local_group.to_string(), group.clone());
        Ok(Some(group))
    }

    /// On a Kafka cluster, creates the compacted changelog `topic` of a split query's tasks
    /// (one partition per task) unless it exists, and applies the partitions of the tasks other
    /// nodes run as they grow. Nothing happens on the embedded log.
    pub fn follow_task_changelog(&self, topic: &str, partitions: u32) -> Result<()> {
        match &self.inner.cluster {
            Some(cluster) => cluster.task_state.follow(cluster, topic, partitions),
            None => Ok(()),
        }
    }

    /// Stops applying the task changelog `topic`.
    pub fn unfollow_task_changelog(&self, topic: &str) {
        if let Some(cluster) = &self.inner.cluster {
            cluster.task_state.unfollow(topic);
        }
    }

    /// On a Kafka cluster, takes the split task whose state is in `namespace`, backed by
    /// `partition` of the changelog `topic`: applies what that partition holds and this node
    /// has not applied yet, up to its last stable offset, and from then on writes the
    /// namespace's changes there and no longer follows it. Blocks while it catches up.
    pub fn claim_task(&self, namespace: &str, (topic, partition): (&str, u32)) -> Result<u64> {
        match &self.inner.cluster {
            Some(cluster) => cluster
                .task_state
                .claim(self, cluster, namespace, (topic, partition)),
            None => Ok(0),
        }
    }

    /// Gives up the split task whose state is in `namespace`, once its commits have landed:
    /// its partition is followed again.
    pub fn release_task(&self, namespace: &str) {
        if let Some(cluster) = &self.inner.cluster {
            cluster.task_state.release(namespace);
        }
    }

    /// Deletes `namespaces` from this node's state alone, writing nothing to a changelog: on
    /// a Kafka cluster, the local copies of a terminated split query's task state, whose
    /// changelogs go with the query. Waits while a changelog is being applied, so none is
    /// applied into them afterwards by a follow that began before.
    pub fn forget_local_state(&self, namespaces: &[String]) -> Result<()> {
        let forget = || -> Result<()> {
            let state = self.cf(CF_STATE)?;
            let mut wb = WriteBatch::default();
            for namespace in namespaces {
                let start = keys::state_key(namespace, b"");
                let end = keys::prefix_successor(&start).unwrap_or_else(|| vec![0xff; 3]);
                wb.delete_range_cf(state, start, end);
            }
            self.inner.db.write(wb)?;
            Ok(())
        };
        match &self.inner.cluster {
            Some(cluster) => cluster.task_state.while_not_applying(forget),
            None => forget(),
        }
    }

    /// Creates `topic` with `partitions` partitions unless it exists (a split query's
    /// repartition topic).
    pub fn ensure_topic_with_partitions(&self, topic: &str, partitions: u32) -> Result<()> {
        if self.topic_exists(topic) {
            return Ok(());
        }
        match self.create_topic(topic, TopicConfig::with_partitions(partitions.max(1))) {
            Ok(_) | Err(StorageError::TopicExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Leaves the query group kept under `local_group`, once its task has stopped.
    pub fn leave_query_group(&self, local_group: &str) {
        if let Some(cluster) = &self.inner.cluster {
            cluster.query_groups.lock().remove(local_group);
        }
    }

    /// A split query's positions on `partitions`: its group's committed offsets on the
    /// cluster, once no transaction still writes them.
    pub fn query_group_positions(
        &self,
        group: &QueryGroup,
        partitions: &[(String, u32)],
    ) -> Result<Vec<(String, u32, i64)>> {
        group.committed(partitions)
    }

    /// Writes appends, state changes and offsets atomically. The results are the appends' positions
    /// in order (a partition-by-key append yields one result per partition it touched).
    pub async fn commit(&self, commit: Commit) -> Result<Vec<AppendResult>> {
        let rx = self.submit_commit(commit, None)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Submits a commit and returns without waiting for it; [`PendingCommit::wait`] resolves
    /// once it is written. Commits apply in the order they are submitted, all or nothing each,
    /// and one of `chain` only if every earlier one of it did: so a caller may keep several in
    /// flight and never see a later one land without an earlier one.
    pub fn commit_pending(&self, commit: Commit, chain: &CommitChain) -> Result<PendingCommit> {
        if chain.is_broken() {
            return Err(StorageError::EarlierCommitFailed);
        }
        match self.submit_commit(commit, Some(chain.clone())) {
            Ok(rx) => Ok(PendingCommit(rx)),
            Err(e) => {
                chain.break_off();
                Err(e)
            }
        }
    }

    /// [`Store::commit`] for callers outside an async runtime.
    pub fn commit_blocking(&self, commit: Commit) -> Result<Vec<AppendResult>> {
        let rx = self.submit_commit(commit, None)?;
        rx.blocking_recv().map_err(|_| StorageError::Closed)?
    }

    /// Appends records to one partition as one batch and returns where they landed.
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<AppendResult> {
        let mut commit = Commit::new();
        commit.append(topic, Some(partition), records);
        single(self.commit(commit).await?, topic)
    }

    /// [`Store::append`] for callers outside an async runtime.
    pub fn append_blocking(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<AppendResult> {
        let mut commit = Commit::new();
        commit.append(topic, Some(partition), records);
        single(self.commit_blocking(commit)?, topic)
    }

    /// Appends records, each to the partition Kafka's default partitioner picks for its key.
    pub async fn produce(&self, topic: &str, records: Vec<Record>) -> Result<Vec<AppendResult>> {
        let mut commit = Commit::new();
        commit.append(topic, None, records);
        self.commit(commit).await
    }

    /// Appends a batch already encoded, as a Kafka producer sends it; it is stored as sent apart
    /// from its base offset and leader epoch.
    pub async fn append_encoded(
        &self,
        topic: &str,
        partition: u32,
        batch: EncodedBatch,
    ) -> Result<AppendResult> {
        let (t, p) = self.partition(topic, partition)?;
        if batch.header().is_control() {
            // Only the transaction coordinator writes markers, as Kafka's broker refuses them
            // from clients.
            return Err(StorageError::InvalidRecord {
                topic: topic.to_string(),
                reason: "a client may not write a control batch (a transaction marker)".into(),
            });
        }
        // The size first, so nothing too large is inflated; then every record is read before
        // the batch is acknowledged, as Kafka's broker does, so no reader ever meets a batch
        // it cannot read.
        self.check_batch(&t, &batch, false)?;
        let keyless = batch
            .validate()
            .map_err(|reason| StorageError::InvalidRecord {
                topic: topic.to_string(),
                reason,
            })?;
        self.check_batch(&t, &batch, keyless)?;
        let (reply, rx) = oneshot::channel();
        self.inner.writer.lock().submit(Job::Commit(CommitJob {
            appends: vec![PreparedAppend {
                topic: t,
                partition: p,
                batch,
                marker: None,
            }],
            delivered: Vec::new(),
            state: Vec::new(),
            offsets: Vec::new(),
            chain: None,
            reply,
        }))?;
        single(rx.await.map_err(|_| StorageError::Closed)??, topic)
    }

    // ---- reads -------------------------------------------------------------------------------

    /// The offset the next appended record gets: the high watermark.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<i64> {
        if let Some(cluster) = &self.inner.cluster {
            return Ok(cluster.topics.watermarks(topic, partition, false)?.1);
        }
        Ok(self.partition(topic, partition)?.1.end_offset())
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self, topic: &str, partition: u32) -> Result<i64> {
        if let Some(cluster) = &self.inner.cluster {
            return Ok(cluster.topics.watermarks(topic, partition, false)?.0);
        }
        Ok(self.partition(topic, partition)?.1.log_start_offset())
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the high
    /// watermark when none is open. A read_committed reader reads up to it.
    pub fn last_stable_offset(&self, topic: &str, partition: u32) -> Result<i64> {
        if let Some(cluster) = &self.inner.cluster {
            return Ok(cluster.topics.watermarks(topic, partition, true)?.1);
        }
        Ok(self.partition(topic, partition)?.1.stable_offset())
    }

    /// The transactions open on a partition, as (producer id, first offset), oldest producer
    /// id first.
    pub fn open_transactions(&self, topic: &str, partition: u32) -> Result<Vec<(i64, i64)>> {
        let (_, p) = self.partition(topic, partition)?;
        let tail = p.tail.lock();
        Ok(tail.open_txns.iter().collect())
    }

    /// Reads whole batches from `offset` until about `max_bytes`; at least one batch when any exists.
    /// Checksums are verified. Reads as read_uncommitted: up to the high watermark.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedBatches> {
        self.read_isolated(
            topic,
            partition,
            offset,
            max_bytes,
            Isolation::ReadUncommitted,
        )
    }

    /// [`Store::read`] at an isolation level: read_committed reads up to the last stable offset
    /// and lists the aborted transactions the batches overlap, for the reader to drop.
    pub fn read_isolated(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<FetchedBatches> {
        let read = (offset, max_bytes, isolation);
        self.read_batches(topic, partition, read, Checksums::Verify)
    }

    fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        (offset, max_bytes, isolation): (i64, usize, Isolation),
        checksums: Checksums,
    ) -> Result<FetchedBatches> {
        let (_, p) = self.partition(topic, partition)?;
        // The stable offset first: it never passes the end read after it.
        let stable = p.stable_offset();
        let end = p.end_offset();
        let start = p.log_start_offset();
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                log_start: start,
                end,
            });
        }
        let mut out = FetchedBatches {
            batches: Vec::new(),
            high_watermark: end,
            last_stable_offset: stable,
            log_start_offset: start,
            aborted: Vec::new(),
        };
        let upper = match isolation {
            Isolation::ReadUncommitted => end,
            Isolation::ReadCommitted => stable,
        };
        if offset >= upper {
            return Ok(out);
        }
        let mut iter = self.log_iter(&p, max_bytes)?;
        position_at(&mut iter, &p, offset);
        let mut total = 0usize;
        while iter.valid() {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            let base = keys::log_key_offset(key).unwrap_or(i64::MAX);
            if base >= upper {
                break;
            }
            let header = match checksums {
                Checksums::Verify => parse_checked(&p, base, value)?,
                Checksums::LeftToDecoder => parse_stored(&p, base, value)?,
            };
            if header.last_offset() >= offset {
                total += value.len();
                out.batches.push(Bytes::copy_from_slice(value));
                if total >= max_bytes {
                    break;
                }
            }
            iter.next();
        }
        iter.status()?;
        drop(iter);
        if isolation == Isolation::ReadCommitted
            && p.last_abort.load(std::sync::atomic::Ordering::Acquire) >= offset
            && let Some(last) = out.batches.last()
        {
            let last = BatchHeader::parse(last)
                .map_err(|reason| corrupt(topic, partition, offset, reason))?
                .last_offset();
            let range = (offset, last + 1);
            let at = (p.topic_id, p.partition);
            out.aborted = transactions::aborted_in(&self.inner.db, self.cf(CF_META)?, at, range)?;
        }
        Ok(out)
    }

    /// Reads records from `offset` until about `max_bytes`, skipping records before `offset` in the
    /// first batch and control batches. Reads as read_committed: never past the last stable
    /// offset, and never a record of an aborted transaction.
    pub fn read_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedRecords> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster.fetcher.read(topic, partition, offset, max_bytes);
        }
        // Decoding a batch checks its CRC, so the read need not check it first.
        let read = (offset, max_bytes, Isolation::ReadCommitted);
        let fetched = self.read_batches(topic, partition, read, Checksums::LeftToDecoder)?;
        let headers = fetched
            .batches
            .iter()
            .map(|b| {
                BatchHeader::parse(b).map_err(|reason| corrupt(topic, partition, offset, reason))
            })
            .collect::<Result<Vec<_>>>()?;
        // Room for every record at once; a corrupt count must not reserve more than the bytes
        // could hold.
        let mut records = Vec::with_capacity(
            headers
                .iter()
                .zip(&fetched.batches)
                .map(|(h, b)| (h.record_count.max(0) as usize).min(b.len() / 7))
                .sum(),
        );
        let mut next_offset = offset;
        for (batch, header) in fetched.batches.into_iter().zip(headers) {
            let base = header.base_offset;
            next_offset = next_offset.max(header.last_offset() + 1);
            if transactions::is_aborted(&header, &fetched.aborted) {
                continue;
            }
            decode_records_into(batch, offset, &mut records)
                .map_err(|reason| corrupt(topic, partition, base, reason))?;
        }
        Ok(FetchedRecords {
            records,
            next_offset,
            high_watermark: fetched.high_watermark,
            last_stable_offset: fetched.last_stable_offset,
            log_start_offset: fetched.log_start_offset,
        })
    }

    /// The first record at or after `timestamp`: its offset and timestamp. `None` when every record
    /// is older.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (_, p) = self.partition(topic, partition)?;
        let end = p.end_offset();
        // Segments whose newest record is older than the target cannot hold the answer.
        let first_candidate = {
            let tail = p.tail.lock();
            tail.segments
                .iter()
                .find(|s| s.max_timestamp >= timestamp)
                .map(|s| s.base_offset)
        };
        let Some(from) = first_candidate else {
            return Ok(None);
        };
        let mut iter = self.log_iter(&p, 2 << 20)?;
        position_at(&mut iter, &p, from.max(p.log_start_offset()));
        while iter.valid() {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            let base = keys::log_key_offset(key).unwrap_or(i64::MAX);
            if base >= end {
                break;
            }
            let header = parse_checked(&p, base, value)?;
            if header.max_timestamp >= timestamp && !header.is_control() {
                let records = decode_records(Bytes::copy_from_slice(value))
                    .map_err(|reason| corrupt(&p.topic, p.partition, base, reason))?;
                if let Some(r) = records.iter().find(|r| r.record.timestamp >= timestamp) {
                    return Ok(Some((r.offset, r.record.timestamp)));
                }
            }
            iter.next();
        }
        iter.status()?;
        Ok(None)
    }

    /// Waits until `offset` is readable by [`Store::read_records`] (the last stable offset passes
    /// it) or `timeout` elapses, without polling. Returns whether data is there.
    pub async fn wait_for_data(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        timeout: Duration,
    ) -> Result<bool> {
        if let Some(cluster) = &self.inner.cluster {
            return cluster
                .fetcher
                .wait(topic, partition, offset, timeout)
                .await;
        }
        let isolation = Isolation::ReadCommitted;
        self.wait_for_isolated(topic, partition, offset, (timeout, isolation))
            .await
    }

    /// Waits until `offset` is readable at an isolation level: the high watermark passes it, or
    /// for read_committed the last stable offset.
    pub async fn wait_for_isolated(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        (timeout, isolation): (Duration, Isolation),
    ) -> Result<bool> {
        let (_, p) = self.partition(topic, partition)?;
        let mut rx = match isolation {
            Isolation::ReadUncommitted => p.end.subscribe(),
            Isolation::ReadCommitted => p.stable.subscribe(),
        };
        drop(p);
        let waited = tokio::time::timeout(timeout, rx.wait_for(|end| *end > offset)).await;
        Ok(matches!(waited, Ok(Ok(_))))
    }

    fn log_iter(
        &self,
        p: &PartitionLog,
        max_bytes: usize,
    ) -> Result<DBRawIteratorWithThreadMode<'_, DB>> {
        let prefix = keys::log_partition_prefix(p.topic_id, p.partition);
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(prefix.to_vec());
        read.set_iterate_upper_bound(
            keys::log_partition_prefix(p.topic_id, p.partition + 1).to_vec(),
        );
        // Each read opens its own iterator, whose first block read fetches this much ahead in
        // every file it touches: more than the read takes is copied for nothing.
        read.set_readahead_size(max_bytes.clamp(64 << 10, 2 << 20));
        // Log reads scan once: caching their blocks would only evict state blocks, and every
        // batch read carries its own CRC, checked by `read` or by the decoder.
        read.fill_cache(false);
        read.set_verify_checksums(false);
        Ok(self.inner.db.raw_iterator_cf_opt(self.cf(CF_LOG)?, read))
    }
}

fn single(results: Vec<AppendResult>, topic: &str) -> Result<AppendResult> {
    results
        .into_iter()
        .next()
        .ok_or_else(|| StorageError::InvalidRecord {
            topic: topic.to_string(),
            reason: "nothing to append: no records given".to_string(),
        })
}

pub(crate) fn corrupt(topic: &str, partition: u32, offset: i64, reason: String) -> StorageError {
    StorageError::CorruptBatch {
        topic: topic.to_string(),
        partition,
        offset,
        reason,
    }
}

/// Who checks a stored batch's CRC on a read.
#[derive(Debug, Clone, Copy)]
enum Checksums {
    /// The read, before handing the batch on.
    Verify,
    /// The decoder the batch goes to, which checks it anyway.
    LeftToDecoder,
}

pub(crate) fn parse_checked(p: &PartitionLog, base: i64, value: &[u8]) -> Result<BatchHeader> {
    let header = parse_stored(p, base, value)?;
    verify_crc(value, &header).map_err(|reason| corrupt(&p.topic, p.partition, base, reason))?;
    Ok(header)
}

/// Parses a stored batch's header and checks it sits at the offset it claims.
fn parse_stored(p: &PartitionLog, base: i64, value: &[u8]) -> Result<BatchHeader> {
    let header =
        BatchHeader::parse(value).map_err(|reason| corrupt(&p.topic, p.partition, base, reason))?;
    if header.base_offset != base {
        return Err(corrupt(
            &p.topic,
            p.partition,
            base,
            format!(
                "batch says base offset {} but is stored at {base}",
                header.base_offset
            ),
        ));
    }
    Ok(header)
}

/// Puts the iterator on the batch that holds `offset`, or on the first batch after it.
fn position_at(iter: &mut DBRawIteratorWithThreadMode<'_, DB>, p: &PartitionLog, offset: i64) {
    let key = keys::log_key(p.topic_id, p.partition, offset);
    // Readers mostly continue where their last read ended, at the start of a batch, and a
    // forward seek is much cheaper than a backward one over several files.
    iter.seek(key);
    if iter.valid() && iter.key() == Some(&key[..]) {
        return;
    }
    iter.seek_for_prev(key);
    if iter.valid() {
        // A batch whose header does not parse stays put, so the read reports it rather than
        // skipping past it.
        let holds = iter
            .value()
            .is_some_and(|v| BatchHeader::parse(v).map_or(true, |h| h.last_offset() >= offset));
        if !holds {
            iter.next();
        }
    } else {
        iter.seek(keys::log_key(p.topic_id, p.partition, offset));
    }
}

/// Refuses more than `max` partitions for `topic`.
fn check_partitions(topic: &str, partitions: u32, max: u32) -> Result<()> {
    if partitions > max {
        return Err(StorageError::TooManyPartitions {
            topic: topic.to_string(),
            partitions,
            max,
        });
    }
    Ok(())
}

/// Every topic's stored record, in name order.
fn read_stored_topics(db: &DB) -> Result<Vec<StoredTopic>> {
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| StorageError::CorruptMetadata {
            key: CF_META.into(),
            reason: "column family is missing".into(),
        })?;
    let mut topics = Vec::new();
    let iter = db.iterator_cf(
        meta,
        IteratorMode::From(keys::TOPIC_PREFIX, Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        if !key.starts_with(keys::TOPIC_PREFIX) {
            break;
        }
        let stored: StoredTopic =
            serde_json::from_slice(&value).map_err(|e| StorageError::CorruptMetadata {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: e.to_string(),
            })?;
        topics.push(stored);
    }
    Ok(topics)
}

/// The topics `db` holds and their partition counts, from their stored records alone: what a
/// follower of the replicated log, which opens no store, tells Kafka clients.
pub(crate) fn stored_topics(db: &DB) -> Result<Vec<(String, u32)>> {
    Ok(read_stored_topics(db)?
        .into_iter()
        .map(|t| (t.name, t.config.partitions))
        .collect())
}

/// Reads every topic's metadata and recovers its partitions, refusing a topic with more
/// partitions than `max_partitions` rather than allocating them.
fn load_topics(db: &DB, max_partitions: u32) -> Result<BTreeMap<String, Arc<TopicLog>>> {
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| StorageError::CorruptMetadata {
            key: CF_META.into(),
            reason: "column family is missing".into(),
        })?;
    let log = db
        .cf_handle(CF_LOG)
        .ok_or_else(|| StorageError::CorruptMetadata {
            key: CF_LOG.into(),
            reason: "column family is missing".into(),
        })?;
    let mut topics = BTreeMap::new();
    for stored in read_stored_topics(db)? {
        check_partitions(&stored.name, stored.config.partitions, max_partitions)?;
        let mut partitions = Vec::with_capacity(stored.config.partitions as usize);
        for partition in 0..stored.config.partitions {
            partitions.push(Arc::new(recover_partition(
                db, meta, log, &stored, partition,
            )?));
        }
        topics.insert(
            stored.name.clone(),
            Arc::new(TopicLog::new(stored, partitions)),
        );
    }
    Ok(topics)
}

fn recover_partition(
    db: &DB,
    meta: &ColumnFamily,
    log: &ColumnFamily,
    topic: &StoredTopic,
    partition: u32,
) -> Result<PartitionLog> {
    let id = topic.id;
    let mut segments = Vec::new();
    let prefix = keys::segment_prefix(id, partition);
    for item in db.iterator_cf(meta, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let segment = SegmentMeta::decode(&value).ok_or_else(|| StorageError::CorruptMetadata {
            key: format!("segment of {}-{partition}", topic.name),
            reason: "wrong length".into(),
        })?;
        segments.push(segment);
    }
    let log_start = match db.get_cf(meta, keys::log_start_key(id, partition))? {
        Some(bytes) => i64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
            StorageError::CorruptMetadata {
                key: format!("log start of {}-{partition}", topic.name),
                reason: "not 8 bytes".into(),
            }
        })?),
        None => 0,
    };
    // The last stored batch tells where the log ends; the segment table may lag by nothing,
    // since both are written in one batch, but the log is the source of truth.
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(keys::log_partition_prefix(id, partition).to_vec());
    read.set_iterate_upper_bound(keys::log_partition_prefix(id, partition + 1).to_vec());
    let mut iter = db.raw_iterator_cf_opt(log, read);
    iter.seek_to_last();
    let mut end = log_start;
    if iter.valid()
        && let (Some(key), Some(value)) = (iter.key(), iter.value())
    {
        let base = keys::log_key_offset(key).unwrap_or(0);
        // The segment table, written in the same write batch, still gives the end; reads of the
        // damaged batch will report it.
        match BatchHeader::parse(value) {
            Ok(header) => end = end.max(header.last_offset() + 1),
            Err(reason) => warn!(
                topic = %topic.name,
                partition,
                offset = base,
                %reason,
                "the last batch of the partition is corrupt"
            ),
        }
    }
    iter.status()?;
    if let Some(last) = segments.last() {
        end = end.max(last.next_offset);
    }
    let open = transactions::load_open(db, meta, id, partition)?;
    let last_abort = transactions::load_last_abort(db, meta, id, partition)?;
    Ok(
        PartitionLog::new(&topic.name, id, partition, end, log_start, segments)
            .with_transactions(open, last_abort),
    )
}
