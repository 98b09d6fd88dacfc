//! Snapshots of a replica's store, so the Raft log can be purged and a node that missed the
//! purged entries catches up from a copy of the store instead.
//!
//! A snapshot a node takes is a RocksDB checkpoint of its store (`<id>.ckpt/`): the memtables
//! flushed together and the SST files hard-linked, so it costs no copy of the data, however
//! large the store. Only when a follower needs it (it fell behind the purged log) is it packed
//! into one file ([`packed`], `<id>.snap`) and sent. A follower installs that file by clearing
//! the data families and ingesting its SST files, so its database stays open; a durable marker
//! makes a crash in the middle finish the install on restart. `docs/replication.md` says why it
//! is built so.

mod file;
mod packed;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{DB, IngestExternalFileOptions, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

pub use file::SnapshotFile;

use super::log_store::{decode, encode};
use super::types::NodeId;
use crate::keys::{CF_LOG, CF_META, CF_OFFSETS, CF_RAFT, CF_STATE};

/// What a snapshot says of itself, in openraft's terms.
pub type Meta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// The column families a snapshot copies: everything but Raft's own state.
const DATA_FAMILIES: [&str; 4] = [CF_LOG, CF_META, CF_OFFSETS, CF_STATE];
/// `raft` family: the snapshot being installed, set before the data families are cleared and
/// removed once the snapshot's files are in and its position applied.
const INSTALLING: &[u8] = b"installing";
/// Snapshot files are named after their id with this extension.
const EXTENSION: &str = "snap";
/// Checkpoints are directories named after their id with this extension.
const CHECKPOINT: &str = "ckpt";
/// In a checkpoint's directory: what the snapshot says of itself.
const META_FILE: &str = "meta";
/// In a checkpoint's directory: the database.
const DATABASE: &str = "db";

/// The applied position, kept in the `raft` family in the same write as what it applied.
pub(super) const APPLIED: &[u8] = b"applied";

/// How far a store applied the log, kept in the same write as what it applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AppliedState {
    pub(super) last: Option<super::types::LogId>,
    pub(super) membership: super::types::StoredMembership,
}

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn family<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| invalid(format!("the store has no {name} column family")))
}

/// The index through which the store on disk holds every applied entry, as far as a
/// snapshot made it so (a checkpoint flushes the memtables; an install writes its position
/// synced): the Raft log may be purged up to there without flushing again. The snapshots and
/// the Raft log share it.
#[derive(Clone, Default)]
pub(crate) struct Flushed(Arc<AtomicU64>);

impl Flushed {
    /// Records that the store on disk holds every entry up to `index`.
    fn advance(&self, index: Option<u64>) {
        if let Some(index) = index {
            self.0.fetch_max(index + 1, Ordering::AcqRel);
        }
    }

    /// Whether the store on disk holds every entry up to `index`.
    pub(crate) fn covers(&self, index: u64) -> bool {
        self.0.load(Ordering::Acquire) > index
    }
}

/// How a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// One file, as sent: received from the leader, or a checkpoint packed to be sent.
    Packed,
    /// A checkpoint of this node's store.
    Checkpoint,
}

/// How the entry at `path` of the snapshots' directory keeps a snapshot, if it is a whole one.
fn kept(path: &Path) -> Option<Kept> {
    let name = path.file_name()?.to_string_lossy();
    if name.starts_with("tmp-") || name.starts_with("incoming-") {
        return None;
    }
    match path.extension()?.to_str()? {
        EXTENSION => Some(Kept::Packed),
        CHECKPOINT => Some(Kept::Checkpoint),
        _ => None,
    }
}

/// A replica's snapshots: the directory that holds the current one, and the lock that keeps a
/// snapshot from being taken while one is installed.
pub(super) struct Snapshots {
    dir: PathBuf,
    /// Written while a snapshot is installed (the store is cleared, then refilled); read while
    /// a checkpoint is taken, so none falls between the two, and by reads of the store, which
    /// go on while a checkpoint is taken.
    installing: parking_lot::RwLock<()>,
    /// Held while the current snapshot changes, briefly: openraft's state machine worker
    /// takes it to look up the current snapshot.
    publishing: parking_lot::Mutex<()>,
    /// Held while a checkpoint is packed into a file, which may take minutes.
    packing: parking_lot::Mutex<()>,
    received: AtomicU64,
    /// Names the work directories of checkpoints taken and of sends' links.
    started: AtomicU64,
    taken: AtomicU64,
    installed: AtomicU64,
    flushed: Flushed,
}

impl Snapshots {
    /// The snapshots kept in `dir`, dropping what a crash left half written.
    pub(super) fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("tmp-") || name.starts_with("incoming-") || name == "ingest" {
                remove(&entry.path())?;
            }
        }
        Ok(Snapshots {
            dir,
            installing: parking_lot::RwLock::new(()),
            publishing: parking_lot::Mutex::new(()),
            packing: parking_lot::Mutex::new(()),
            received: AtomicU64::new(0),
            started: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            flushed: Flushed::default(),
        })
    }

    /// How far the snapshots made the store durable, shared with the Raft log.
    pub(super) fn flushed(&self) -> Flushed {
        self.flushed.clone()
    }

    /// How many snapshots this node took, and installed from the leader, since it started.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.installed.load(Ordering::Relaxed),
        )
    }

    /// The current snapshot (the newest whole one), if any, and where it is: a file, or a
    /// checkpoint's directory. Of a file and a checkpoint of the same snapshot, the file.
    pub(super) fn current(&self) -> std::io::Result<Option<(Meta, PathBuf)>> {
        let mut newest: Option<(Meta, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let meta = match kept(&path) {
                None => continue,
                Some(Kept::Packed) => packed::read_header(&mut File::open(&path)?)?.0.meta,
                Some(Kept::Checkpoint) => read_meta(&path)?,
            };
            let newer = newest.as_ref().is_none_or(|(kept_meta, kept_path)| {
                kept_meta.last_log_id < meta.last_log_id
                    || (kept_meta.snapshot_id == meta.snapshot_id
                        && kept(kept_path) == Some(Kept::Checkpoint))
            });
            if newer {
                newest = Some((meta, path));
            }
        }
        Ok(newest)
    }

    /// Whether a newer snapshot than `meta` is kept (one that cannot be read counts as none).
    pub(super) fn is_replaced(&self, meta: &Meta) -> bool {
        matches!(self.current(), Ok(Some((current, _))) if current.last_log_id > meta.last_log_id)
    }

    /// Opens the current snapshot to be sent. A checkpoint is packed when first read, on a
    /// blocking thread that holds `hold` while it works.
    pub(super) fn open_current(
        self: &Arc<Self>,
        hold: impl Send + 'static,
    ) -> std::io::Result<Option<(Meta, SnapshotFile)>> {
        let _publishing = self.publishing.lock();
        let Some((meta, path)) = self.current()? else {
            return Ok(None);
        };
        let file = self.opened(&meta, path, hold)?;
        Ok(Some((meta, file)))
    }

    /// The snapshot `meta` kept at `path`, to be read.
    fn opened(
        self: &Arc<Self>,
        meta: &Meta,
        path: PathBuf,
        hold: impl Send + 'static,
    ) -> std::io::Result<SnapshotFile> {
        if kept(&path) == Some(Kept::Packed) {
            let file = File::open(&path)?;
            return Ok(SnapshotFile::open(path, file));
        }
        // The checkpoint's files are linked into a directory of this file's own, so a newer
        // snapshot replacing the checkpoint before it is read leaves it readable: openraft
        // takes a snapshot that cannot be read for a failed disk, and stops.
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let pinned = Pinned(self.dir.join(format!("tmp-send-{n}")));
        std::fs::create_dir_all(pinned.0.join(DATABASE))?;
        for entry in std::fs::read_dir(path.join(DATABASE))? {
            let entry = entry?;
            std::fs::hard_link(
                entry.path(),
                pinned.0.join(DATABASE).join(entry.file_name()),
            )?;
        }
        let (snapshots, meta) = (self.clone(), meta.clone());
        Ok(SnapshotFile::unpacked(Box::new(move || {
            let _hold = hold;
            snapshots.pack(&meta, &path, &pinned.0)
        })))
    }

    /// A new file to receive a snapshot into. Raft receives one snapshot at a time, so the
    /// files of streams it gave up on go.
    pub(super) fn receive(&self) -> std::io::Result<SnapshotFile> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("incoming-") {
                remove(&entry.path())?;
            }
        }
        let n = self.received.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("incoming-{n}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(SnapshotFile::open(path, file))
    }

    /// Holds the store as an install does, for tests of what readers see meanwhile.
    #[cfg(test)]
    pub(crate) fn hold_as_installing(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.installing.write()
    }

    /// Runs `read` of the store unless a snapshot is being installed, which clears the store
    /// before refilling it.
    pub(super) fn unless_installing<T>(&self, read: impl FnOnce() -> T) -> Option<T> {
        let _installing = self.installing.try_read()?;
        Some(read())
    }

    /// Takes a snapshot of `db` as it is now, as a checkpoint: its applied position and every
    /// family. Its file (packed when first read) holds `hold` while it is packed.
    pub(super) fn build(
        self: &Arc<Self>,
        db: &DB,
        hold: impl Send + 'static,
    ) -> std::io::Result<(Meta, SnapshotFile)> {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let work = self.dir.join(format!("tmp-checkpoint-{n}"));
        remove(&work)?;
        std::fs::create_dir_all(&work)?;
        {
            let _installing = self.installing.read();
            // Flushes the memtables (all families together, as the database is opened) first:
            // the applied writes skip the write-ahead log, and a checkpoint holds no memtable.
            rocksdb::checkpoint::Checkpoint::new(db)
                .and_then(|checkpoint| checkpoint.create_checkpoint(work.join(DATABASE)))
                .map_err(std::io::Error::other)?;
        }
        // The position is read from the checkpoint itself: entries applied meanwhile may be in it.
        let meta = checkpoint_meta(&work.join(DATABASE))?;
        self.flushed.advance(meta.last_log_id.map(|id| id.index));
        let mut file = File::create(work.join(META_FILE))?;
        std::io::Write::write_all(&mut file, &encode(&meta).map_err(invalid)?)?;
        file.sync_all()?;
        File::open(&work)?.sync_all()?;
        let (path, _) = self.publish(&work, &meta, Kept::Checkpoint)?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        let file = self.opened(&meta, path, hold)?;
        Ok((meta, file))
    }

    /// Makes the snapshot at `path` current, kept as `how`, if it is newer than the current
    /// one, and removes the ones it replaces; returns where it now is. If it is not newer,
    /// drops it and names the current one, which stays.
    fn publish(
        &self,
        path: &Path,
        meta: &Meta,
        how: Kept,
    ) -> std::io::Result<(PathBuf, Option<Meta>)> {
        let _publishing = self.publishing.lock();
        if let Some((newest, _)) = self
            .current()?
            .filter(|(newest, _)| newest.last_log_id >= meta.last_log_id)
        {
            remove(path)?;
            return Ok((path.to_path_buf(), Some(newest)));
        }
        let extension = match how {
            Kept::Packed => EXTENSION,
            Kept::Checkpoint => CHECKPOINT,
        };
        let named = self.dir.join(format!("{}.{extension}", meta.snapshot_id));
        if how == Kept::Packed {
            File::open(path)?.sync_all()?;
        }
        std::fs::rename(path, &named)?;
        File::open(&self.dir)?.sync_all()?;
        self.remove_all_but(&named)?;
        Ok((named, None))
    }

    /// Removes every snapshot kept but the one at `path`.
    fn remove_all_but(&self, path: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let other = entry?.path();
            if other != path && kept(&other).is_some() {
                remove(&other)?;
            }
        }
        Ok(())
    }

    /// Packs the checkpoint at `path`, snapshot `meta`, from the copy of its links at
    /// `pinned`, into a snapshot file, which replaces it if it is still current; returns the
    /// file's path, and the file opened. The file may be packed already (by an earlier send).
    /// A checkpoint replaced meanwhile is packed all the same, into a file that is read once
    /// and goes (the network refuses to send a replaced snapshot, and openraft then sends the
    /// current one).
    fn pack(&self, meta: &Meta, path: &Path, pinned: &Path) -> std::io::Result<(PathBuf, File)> {
        // One packing at a time: a second send of the same snapshot waits, then finds the file.
        let _packing = self.packing.lock();
        let named = self.dir.join(format!("{}.{EXTENSION}", meta.snapshot_id));
        if let Ok(file) = File::open(&named) {
            return Ok((named, file));
        }
        // Packed without the publishing lock, which openraft's state machine worker takes to
        // look up the current snapshot: a store of many GB takes minutes to pack.
        let work = self.dir.join(format!("tmp-pack-{}", meta.snapshot_id));
        let part = pack_checkpoint(meta, pinned, &work)?;
        let _publishing = self.publishing.lock();
        if !path.exists() {
            let file = File::open(&part)?;
            remove(&work)?;
            return Ok((part, file));
        }
        std::fs::rename(&part, &named)?;
        File::open(&self.dir)?.sync_all()?;
        // The file is the snapshot now: the checkpoint's links would only hold on to SST
        // files the store has compacted away.
        remove(path)?;
        remove(&work)?;
        tracing::info!(snapshot = %meta, "packed a snapshot of the replicated store to send it");
        let file = File::open(&named)?;
        Ok((named, file))
    }

    /// Installs the received snapshot `file` (described by `meta`) into `db`: it becomes the
    /// current snapshot, and the store holds exactly what it holds. Returns the applied state.
    pub(super) fn install(
        &self,
        db: &DB,
        meta: &Meta,
        file: &Path,
    ) -> std::io::Result<AppliedState> {
        let _installing = self.installing.write();
        // Every section is read and checked before the snapshot is kept or the store touched.
        let (received, files) = self.unpack(file)?;
        if received != *meta {
            return Err(invalid(format!(
                "the snapshot received says it is {received}, but was sent as {meta}"
            )));
        }
        if let (_, Some(current)) = self.publish(file, meta, Kept::Packed)? {
            return Err(invalid(format!(
                "snapshot {meta} is not newer than the current snapshot {current}"
            )));
        }
        let applied = self.load(db, meta, &files)?;
        self.flushed.advance(meta.last_log_id.map(|id| id.index));
        self.installed.fetch_add(1, Ordering::Relaxed);
        Ok(applied)
    }

    /// Copies each section of the snapshot at `path` into its own file, checking it.
    fn unpack(&self, path: &Path) -> std::io::Result<(Meta, Vec<(String, PathBuf)>)> {
        let ingest = self.dir.join("ingest");
        remove(&ingest)?;
        std::fs::create_dir_all(&ingest)?;
        packed::unpack(path, &ingest)
    }

    /// Finishes an install that a crash interrupted, if any, before the state machine reads
    /// what it applied.
    pub(super) fn recover(&self, db: &DB) -> std::io::Result<()> {
        let raft = family(db, CF_RAFT)?;
        let Some(bytes) = db.get_cf(raft, INSTALLING).map_err(std::io::Error::other)? else {
            return Ok(());
        };
        let meta: Meta = decode(&bytes).map_err(invalid)?;
        match self.current()? {
            Some((current, path)) if current == meta && kept(&path) == Some(Kept::Packed) => {
                tracing::warn!(snapshot = %meta, "finishing a snapshot's install a restart interrupted");
                let _installing = self.installing.write();
                let (_, files) = self.unpack(&path)?;
                self.load(db, &meta, &files).map(drop)
            }
            _ => Err(invalid(format!(
                "snapshot {meta} was being installed, and its file is gone"
            ))),
        }
    }

    /// Replaces the data families of `db` with the unpacked snapshot `meta`'s `files`; the
    /// caller holds the install lock.
    fn load(
        &self,
        db: &DB,
        meta: &Meta,
        files: &[(String, PathBuf)],
    ) -> std::io::Result<AppliedState> {
        let raft = family(db, CF_RAFT)?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let mut clear = WriteBatch::default();
        for name in DATA_FAMILIES {
            clear_family(db, name, &mut clear)?;
        }
        clear.put_cf(raft, INSTALLING, encode(meta).map_err(invalid)?);
        db.write_opt(clear, &sync).map_err(std::io::Error::other)?;
        let mut options = IngestExternalFileOptions::default();
        options.set_move_files(true);
        for (name, file) in files {
            db.ingest_external_file_cf_opts(family(db, name)?, &options, vec![file])
                .map_err(std::io::Error::other)?;
        }
        let applied = AppliedState {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let mut done = WriteBatch::default();
        done.put_cf(raft, APPLIED, encode(&applied).map_err(invalid)?);
        done.delete_cf(raft, INSTALLING);
        db.write_opt(done, &sync).map_err(std::io::Error::other)?;
        remove(&self.dir.join("ingest"))?;
        tracing::info!(snapshot = %meta, "installed a snapshot of the replicated store");
        Ok(applied)
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Adds to `batch` the deletion of every key of the family `name`.
fn clear_family(db: &DB, name: &str, batch: &mut WriteBatch) -> std::io::Result<()> {
    let cf = family(db, name)?;
    let first = db.iterator_cf(cf, IteratorMode::Start).next();
    let last = db.iterator_cf(cf, IteratorMode::End).next();
    if let (Some(first), Some(last)) = (first, last) {
        let (first, _) = first.map_err(std::io::Error::other)?;
        let (last, _) = last.map_err(std::io::Error::other)?;
        batch.delete_range_cf(cf, &first, &last);
        batch.delete_cf(cf, &last);
    }
    Ok(())
}

/// Packs the checkpoint at `path` (snapshot `meta`) into a file in the work directory `work`;
/// returns the file.
fn pack_checkpoint(meta: &Meta, path: &Path, work: &Path) -> std::io::Result<PathBuf> {
    remove(work)?;
    std::fs::create_dir_all(work)?;
    let db = open_checkpoint(&path.join(DATABASE))?;
    let mut files = Vec::new();
    for name in DATA_FAMILIES {
        let sst = work.join(format!("{name}.sst"));
        if packed::write_family(
            db.iterator_cf(family(&db, name)?, IteratorMode::Start),
            &sst,
        )? {
            files.push((name, sst));
        }
    }
    drop(db);
    let part = work.join("packed");
    packed::pack(meta, &files, &part)?;
    Ok(part)
}

/// A directory of links to a checkpoint's files, removed when the file it was made for goes.
struct Pinned(PathBuf);

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Err(error) = remove(&self.0) {
            tracing::warn!(%error, path = %self.0.display(), "removing a sent snapshot's links failed");
        }
    }
}

/// Opens the checkpoint's database at `path` to read it.
fn open_checkpoint(path: &Path) -> std::io::Result<DB> {
    let options = Options::default();
    let families = DB::list_cf(&options, path).map_err(std::io::Error::other)?;
    DB::open_cf_for_read_only(&options, path, families, false).map_err(std::io::Error::other)
}

/// What the checkpoint's database at `path` holds: the position it applied, as a snapshot.
fn checkpoint_meta(path: &Path) -> std::io::Result<Meta> {
    let db = open_checkpoint(path)?;
    let raft = family(&db, CF_RAFT)?;
    if db
        .get_cf(raft, INSTALLING)
        .map_err(std::io::Error::other)?
        .is_some()
    {
        return Err(invalid("a snapshot is being installed"));
    }
    let applied: AppliedState = match db.get_cf(raft, APPLIED).map_err(std::io::Error::other)? {
        Some(bytes) => decode(&bytes).map_err(invalid)?,
        None => AppliedState::default(),
    };
    let position = applied
        .last
        .map_or((0, 0), |id| (id.leader_id.term, id.index));
    Ok(Meta {
        last_log_id: applied.last,
        last_membership: applied.membership,
        snapshot_id: format!("{}-{}-{}", position.0, position.1, crate::now_ms()),
    })
}

/// What the checkpoint kept in the directory `path` says of itself.
fn read_meta(path: &Path) -> std::io::Result<Meta> {
    decode(&std::fs::read(path.join(META_FILE))?).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::replication::types::LogId;

    fn database(dir: &Path) -> std::sync::Arc<DB> {
        crate::store::open_replica_database(dir).expect("a database")
    }

    /// Writes `keys` into every data family, and an applied position at `index`.
    fn fill(db: &DB, keys: &[&str], index: u64) {
        let mut wb = WriteBatch::default();
        for name in DATA_FAMILIES {
            for key in keys {
                wb.put_cf(
                    family(db, name).expect("a family"),
                    key,
                    format!("{name}:{key}"),
                );
            }
        }
        let applied = AppliedState {
            last: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            membership: Default::default(),
        };
        wb.put_cf(
            family(db, CF_RAFT).expect("raft"),
            APPLIED,
            encode(&applied).expect("encoded"),
        );
        // As the state machine writes: without the write-ahead log.
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        db.write_opt(wb, &options).expect("written");
    }

    fn contents(db: &DB) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        for name in DATA_FAMILIES {
            for item in db.iterator_cf(family(db, name).expect("a family"), IteratorMode::Start) {
                let (key, value) = item.expect("read");
                all.push((name.to_string(), key.to_vec(), value.to_vec()));
            }
        }
        all
    }

    /// The file of the snapshot `meta` taken by `snapshots`, packed as it is to be sent.
    fn packed(snapshots: &Snapshots, meta: &Meta) -> PathBuf {
        let (current, path) = snapshots.current().unwrap().expect("a current snapshot");
        assert_eq!(&current, meta);
        snapshots.pack(meta, &path, &path).expect("packed").0
    }

    /// Copies a snapshot file as a receiving node gets it.
    fn received(snapshots: &Snapshots, from: &Path) -> PathBuf {
        let file = snapshots.receive().expect("a file to receive into");
        let path = file.path().expect("a file").to_path_buf();
        drop(file);
        std::fs::copy(from, &path).expect("copied");
        path
    }

    #[test]
    fn a_snapshot_installed_replaces_the_store_with_what_it_was_taken_of() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (database(a.path()), database(b.path()));
        fill(&source, &["k1", "k2", "k3"], 7);
        // The target holds keys the source never had, and keys the source has with other values.
        fill(&target, &["k0", "k2", "zz"], 3);
        target
            .put_cf(family(&target, CF_LOG).unwrap(), "k1", "stale")
            .unwrap();
        let sent = Arc::new(Snapshots::open(a.path().join("snapshots")).unwrap());
        let (meta, _) = sent.build(&source, ()).expect("a snapshot");
        assert_eq!(meta.last_log_id.map(|id| id.index), Some(7));
        // Writes after the snapshot was taken are not in it.
        fill(&source, &["k9"], 8);
        let file = packed(&sent, &meta);
        let kept = Snapshots::open(b.path().join("snapshots")).unwrap();
        let incoming = received(&kept, &file);
        let applied = kept.install(&target, &meta, &incoming).expect("installed");
        assert_eq!(applied.last, meta.last_log_id);
        let source_then: Vec<_> = contents(&source)
            .into_iter()
            .filter(|(_, key, _)| key != b"k9")
            .collect();
        assert_eq!(contents(&target), source_then);
        // The installed snapshot is the node's current one, and survives a reopen.
        let reopened = Snapshots::open(b.path().join("snapshots")).unwrap();
        let (current, _) = reopened.current().unwrap().expect("a current snapshot");
        assert_eq!(current, meta);
        // A newer snapshot replaces it; an older one does not.
        let (newer, _) = sent.build(&source, ()).expect("a newer snapshot");
        assert_eq!(newer.last_log_id.map(|id| id.index), Some(8));
        let (current, _) = sent.current().unwrap().expect("current");
        assert_eq!(current, newer);
    }

    #[tokio::test]
    async fn a_snapshot_is_a_checkpoint_sharing_the_stores_files_until_it_is_sent() {
        use std::io::SeekFrom;
        use std::os::unix::fs::MetadataExt;
        use tokio::io::{AsyncReadExt, AsyncSeekExt};

        let a = tempfile::tempdir().unwrap();
        let source = database(a.path());
        fill(&source, &["k1", "k2", "k3"], 4);
        let snapshots = Arc::new(Snapshots::open(a.path().join("snapshots")).unwrap());
        let (meta, mut sent) = snapshots.build(&source, ()).expect("a snapshot");
        assert!(sent.path().is_none(), "packed before it was read");
        // Taking it copied nothing: each of its SST files is a link to one of the store's.
        let (current, checkpoint) = snapshots.current().unwrap().expect("current");
        assert_eq!(
            (current, kept(&checkpoint)),
            (meta.clone(), Some(Kept::Checkpoint))
        );
        let tables: Vec<_> = std::fs::read_dir(checkpoint.join(DATABASE))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "sst"))
            .collect();
        assert!(
            !tables.is_empty(),
            "the unlogged writes were flushed into it"
        );
        for table in &tables {
            assert!(
                std::fs::metadata(table).unwrap().nlink() >= 2,
                "{table:?} is a copy"
            );
        }
        // Read as openraft sends it (its end, then chunks from the start), it is packed once
        // into the file that replaces the checkpoint, and installs as the store was.
        let end = sent.seek(SeekFrom::End(0)).await.expect("its end");
        sent.seek(SeekFrom::Start(0)).await.expect("its start");
        let mut bytes = Vec::new();
        sent.read_to_end(&mut bytes).await.expect("read");
        assert_eq!(bytes.len() as u64, end);
        let (current, file) = snapshots.current().unwrap().expect("current");
        assert_eq!((current, kept(&file)), (meta.clone(), Some(Kept::Packed)));
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
        assert!(!checkpoint.exists(), "the checkpoint outlived its packing");
        let b = tempfile::tempdir().unwrap();
        let target = database(b.path());
        let kept_by_b = Snapshots::open(b.path().join("snapshots")).unwrap();
        let incoming = received(&kept_by_b, &file);
        kept_by_b
            .install(&target, &meta, &incoming)
            .expect("installed");
        assert_eq!(contents(&target), contents(&source));
        // A checkpoint replaced before it was read is still read whole (openraft stops on a
        // snapshot it cannot read), and does not become current again.
        fill(&source, &["k4"], 5);
        let (older, mut older_file) = snapshots.build(&source, ()).unwrap();
        let at_five = contents(&source);
        fill(&source, &["k5"], 6);
        let (newer, _) = snapshots.build(&source, ()).unwrap();
        assert_eq!(newer.last_log_id.map(|id| id.index), Some(6));
        let mut bytes = Vec::new();
        older_file.read_to_end(&mut bytes).await.expect("read");
        drop(older_file);
        let c = tempfile::tempdir().unwrap();
        let late = database(c.path());
        let kept_by_c = Snapshots::open(c.path().join("snapshots")).unwrap();
        let incoming = kept_by_c
            .receive()
            .unwrap()
            .path()
            .expect("a file")
            .to_path_buf();
        std::fs::write(&incoming, &bytes).unwrap();
        kept_by_c
            .install(&late, &older, &incoming)
            .expect("installed");
        assert_eq!(contents(&late), at_five);
        assert_eq!(
            snapshots.current().unwrap().map(|(meta, _)| meta),
            Some(newer)
        );
        // Nothing of the packing is left behind.
        let left: Vec<_> = std::fs::read_dir(a.path().join("snapshots"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// openraft's state machine worker looks up the current snapshot between applying
    /// entries: a packing that takes minutes must not hold it up.
    #[test]
    fn the_current_snapshot_is_found_while_one_is_packed() {
        let a = tempfile::tempdir().unwrap();
        let source = database(a.path());
        fill(&source, &["k1"], 3);
        let snapshots = Arc::new(Snapshots::open(a.path().join("snapshots")).unwrap());
        let (meta, _) = snapshots.build(&source, ()).unwrap();
        let packing = snapshots.packing.lock();
        let (found, looked_up) = std::sync::mpsc::channel();
        let looking = snapshots.clone();
        std::thread::spawn(move || {
            let current = looking.open_current(()).map(|c| c.map(|(meta, _)| meta));
            let _ = found.send(current.ok().flatten());
        });
        let current = looked_up
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the look-up waited for the packing");
        assert_eq!(current, Some(meta));
        drop(packing);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_before_the_store_is_touched() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (database(a.path()), database(b.path()));
        fill(&source, &["k1", "k2"], 5);
        fill(&target, &["mine"], 2);
        let before = contents(&target);
        let sent = Arc::new(Snapshots::open(a.path().join("snapshots")).unwrap());
        let (meta, _) = sent.build(&source, ()).unwrap();
        let file = packed(&sent, &meta);
        let good = std::fs::read(&file).unwrap();
        let kept = Snapshots::open(b.path().join("snapshots")).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0xff;
        let damaged: [(&str, Vec<u8>); 5] = [
            ("empty", Vec::new()),
            ("not a snapshot", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("a flipped byte", flipped),
            ("a huge header", {
                let mut huge = packed::MAGIC.to_vec();
                huge.extend_from_slice(&u32::MAX.to_be_bytes());
                huge
            }),
        ];
        for (what, bytes) in damaged {
            let path = kept
                .receive()
                .unwrap()
                .path()
                .expect("a file")
                .to_path_buf();
            std::fs::write(&path, &bytes).unwrap();
            let refused = kept.install(&target, &meta, &path);
            assert!(refused.is_err(), "{what} was installed");
            assert_eq!(contents(&target), before, "{what} touched the store");
            assert!(kept.current().unwrap().is_none(), "{what} was kept");
        }
        // Sent under another snapshot's name, it is refused too.
        let mut other = meta.clone();
        other.snapshot_id = "another".into();
        let path = received(&kept, &file);
        assert!(kept.install(&target, &other, &path).is_err());
        assert_eq!(contents(&target), before);
    }

    #[test]
    fn an_install_a_crash_interrupted_is_finished_on_reopen() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (database(a.path()), database(b.path()));
        fill(&source, &["k1", "k2"], 9);
        fill(&target, &["old"], 4);
        let sent = Arc::new(Snapshots::open(a.path().join("snapshots")).unwrap());
        let (meta, _) = sent.build(&source, ()).unwrap();
        let file = packed(&sent, &meta);
        let kept = Snapshots::open(b.path().join("snapshots")).unwrap();
        let incoming = received(&kept, &file);
        // As if the node died once the store was cleared, before the files went in.
        let _ = kept.publish(&incoming, &meta, Kept::Packed).unwrap();
        let mut clear = WriteBatch::default();
        for name in DATA_FAMILIES {
            clear_family(&target, name, &mut clear).unwrap();
        }
        clear.put_cf(
            family(&target, CF_RAFT).unwrap(),
            INSTALLING,
            encode(&meta).unwrap(),
        );
        target.write(clear).unwrap();
        assert!(contents(&target).is_empty());
        let reopened = Snapshots::open(b.path().join("snapshots")).unwrap();
        reopened.recover(&target).expect("recovered");
        assert_eq!(contents(&target), contents(&source));
        let raft = family(&target, CF_RAFT).unwrap();
        assert!(target.get_cf(raft, INSTALLING).unwrap().is_none());
        let applied: AppliedState =
            decode(&target.get_cf(raft, APPLIED).unwrap().unwrap()).unwrap();
        assert_eq!(applied.last, meta.last_log_id);
    }
}
