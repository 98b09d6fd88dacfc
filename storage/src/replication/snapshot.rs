//! Snapshots of a replica's store, so the Raft log can be purged and a node that missed the
//! purged entries catches up from a copy of the store instead.
//!
//! A snapshot is one file: a header (what it holds: the Raft position it was taken at, and one
//! section per data column family with its length and CRC-32C), then each family's keys as an
//! SST file written with RocksDB's `SstFileWriter` from a consistent view of the database. A
//! follower installs one by clearing those families and ingesting the files, so its database
//! stays open; a durable marker makes a crash in the middle finish the install on restart.
//! `docs/replication.md` says why it is built so.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use rocksdb::{
    DB, DBCompressionType, IngestExternalFileOptions, IteratorMode, Options, SstFileWriter,
    WriteBatch, WriteOptions,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::log_store::{decode, encode};
use super::types::NodeId;
use crate::keys::{CF_LOG, CF_META, CF_OFFSETS, CF_RAFT, CF_STATE};

/// What a snapshot says of itself, in openraft's terms.
pub type Meta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// The column families a snapshot copies: everything but the Raft log itself.
const DATA_FAMILIES: [&str; 4] = [CF_LOG, CF_META, CF_OFFSETS, CF_STATE];
const MAGIC: &[u8; 8] = b"EDDYSNP1";
/// A header names a position, a membership and four sections: far less than this.
const MAX_HEADER_BYTES: u32 = 1 << 20;
/// `raft` family: the snapshot being installed, set before the data families are cleared and
/// removed once the snapshot's files are in and its position applied.
const INSTALLING: &[u8] = b"installing";
/// Snapshot files are named after their id with this extension.
const EXTENSION: &str = "snap";

/// The applied position, kept in the `raft` family in the same write as what it applied.
pub(super) const APPLIED: &[u8] = b"applied";

/// How far a store applied the log, kept in the same write as what it applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AppliedState {
    pub(super) last: Option<super::types::LogId>,
    pub(super) membership: super::types::StoredMembership,
}

#[derive(Serialize, Deserialize)]
struct Header {
    meta: Meta,
    sections: Vec<Section>,
}

#[derive(Serialize, Deserialize)]
struct Section {
    family: String,
    len: u64,
    crc: u32,
}

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn family<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| invalid(format!("the store has no {name} column family")))
}

/// A snapshot file being sent, received or installed: openraft's snapshot data.
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    fn open(path: PathBuf, file: File) -> Self {
        SnapshotFile {
            file: tokio::fs::File::from_std(file),
            path,
        }
    }

    /// Where the file is.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// A replica's snapshots: the directory that holds the current one, and the lock that keeps a
/// snapshot from being taken while one is installed.
pub(super) struct Snapshots {
    dir: PathBuf,
    /// Held while a snapshot is installed, and while one is started (its view taken), so no
    /// view falls between clearing the store and recording what was installed.
    installing: parking_lot::Mutex<()>,
    /// Held while the current snapshot changes.
    publishing: parking_lot::Mutex<()>,
    received: AtomicU64,
    taken: AtomicU64,
    installed: AtomicU64,
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
            installing: parking_lot::Mutex::new(()),
            publishing: parking_lot::Mutex::new(()),
            received: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            installed: AtomicU64::new(0),
        })
    }

    /// How many snapshots this node took, and installed from the leader, since it started.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.installed.load(Ordering::Relaxed),
        )
    }

    /// The current snapshot (the newest whole one), if any, and where it is.
    pub(super) fn current(&self) -> std::io::Result<Option<(Meta, PathBuf)>> {
        let mut newest: Option<(Meta, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let named = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if path.extension().is_none_or(|e| e != EXTENSION)
                || named.is_none_or(|n| n.starts_with("tmp-") || n.starts_with("incoming-"))
            {
                continue;
            }
            let (header, _) = read_header(&mut File::open(&path)?)?;
            if newest
                .as_ref()
                .is_none_or(|(meta, _)| meta.last_log_id < header.meta.last_log_id)
            {
                newest = Some((header.meta, path));
            }
        }
        Ok(newest)
    }

    /// Whether a newer snapshot than `meta` is kept (one that cannot be read counts as none).
    pub(super) fn is_replaced(&self, meta: &Meta) -> bool {
        matches!(self.current(), Ok(Some((current, _))) if current.last_log_id > meta.last_log_id)
    }

    /// Opens the current snapshot to be sent.
    pub(super) fn open_current(&self) -> std::io::Result<Option<(Meta, SnapshotFile)>> {
        let _publishing = self.publishing.lock();
        let Some((meta, path)) = self.current()? else {
            return Ok(None);
        };
        let file = File::open(&path)?;
        Ok(Some((meta, SnapshotFile::open(path, file))))
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

    /// Runs `read` of the store unless a snapshot is being installed, which clears the store
    /// before refilling it.
    pub(super) fn unless_installing<T>(&self, read: impl FnOnce() -> T) -> Option<T> {
        let _installing = self.installing.try_lock()?;
        Some(read())
    }

    /// Takes a snapshot of `db` as it is now: its applied position and every data family.
    pub(super) fn build(&self, db: &DB) -> std::io::Result<(Meta, SnapshotFile)> {
        let installing = self.installing.lock();
        let view = db.snapshot();
        drop(installing);
        let raft = family(db, CF_RAFT)?;
        if view
            .get_cf(raft, INSTALLING)
            .map_err(std::io::Error::other)?
            .is_some()
        {
            return Err(invalid("a snapshot is being installed"));
        }
        let applied: AppliedState =
            match view.get_cf(raft, APPLIED).map_err(std::io::Error::other)? {
                Some(bytes) => decode(&bytes).map_err(invalid)?,
                None => AppliedState::default(),
            };
        let position = applied
            .last
            .map_or((0, 0), |id| (id.leader_id.term, id.index));
        let meta = Meta {
            last_log_id: applied.last,
            last_membership: applied.membership,
            snapshot_id: format!("{}-{}-{}", position.0, position.1, crate::now_ms()),
        };
        let work = self.dir.join(format!("tmp-{}", meta.snapshot_id));
        std::fs::create_dir_all(&work)?;
        let mut files = Vec::new();
        for name in DATA_FAMILIES {
            let path = work.join(format!("{name}.sst"));
            let cf = family(db, name)?;
            if write_family(view.iterator_cf(cf, IteratorMode::Start), &path)? {
                files.push((name, path));
            }
        }
        drop(view);
        // Not named as a snapshot until it is whole and published.
        let packed = self.dir.join(format!("tmp-{}.part", meta.snapshot_id));
        pack(&meta, &files, &packed)?;
        remove(&work)?;
        let (file, _) = self.publish(&packed, &meta)?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok((meta, file))
    }

    /// Makes the snapshot at `path` current if it is newer than the current one, and opens
    /// it; if it is not, drops it and also names the current one, which stays.
    fn publish(&self, path: &Path, meta: &Meta) -> std::io::Result<(SnapshotFile, Option<Meta>)> {
        let _publishing = self.publishing.lock();
        let current = self.current()?;
        let file = File::open(path)?;
        if let Some((newest, _)) = current
            .as_ref()
            .filter(|(newest, _)| newest.last_log_id >= meta.last_log_id)
        {
            remove(path)?;
            return Ok((
                SnapshotFile::open(path.to_path_buf(), file),
                Some(newest.clone()),
            ));
        }
        let named = self.dir.join(format!("{}.{EXTENSION}", meta.snapshot_id));
        file.sync_all()?;
        std::fs::rename(path, &named)?;
        File::open(&self.dir)?.sync_all()?;
        if let Some((_, older)) = current {
            remove(&older)?;
        }
        Ok((SnapshotFile::open(named, file), None))
    }

    /// Installs the received snapshot `file` (described by `meta`) into `db`: it becomes the
    /// current snapshot, and the store holds exactly what it holds. Returns the applied state.
    pub(super) fn install(
        &self,
        db: &DB,
        meta: &Meta,
        file: &Path,
    ) -> std::io::Result<AppliedState> {
        let _installing = self.installing.lock();
        // Every section is read and checked before the snapshot is kept or the store touched.
        let (received, files) = self.unpack(file)?;
        if received != *meta {
            return Err(invalid(format!(
                "the snapshot received says it is {received}, but was sent as {meta}"
            )));
        }
        if let (_, Some(current)) = self.publish(file, meta)? {
            return Err(invalid(format!(
                "snapshot {meta} is not newer than the current snapshot {current}"
            )));
        }
        let applied = self.load(db, meta, &files)?;
        self.installed.fetch_add(1, Ordering::Relaxed);
        Ok(applied)
    }

    /// Copies each section of the snapshot at `path` into its own file, checking it.
    fn unpack(&self, path: &Path) -> std::io::Result<(Meta, Vec<(String, PathBuf)>)> {
        let ingest = self.dir.join("ingest");
        remove(&ingest)?;
        std::fs::create_dir_all(&ingest)?;
        unpack(path, &ingest)
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
            Some((current, path)) if current == meta => {
                tracing::warn!(snapshot = %meta, "finishing a snapshot's install a restart interrupted");
                let _installing = self.installing.lock();
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

/// Writes every key of `items` to an SST file at `path`; false (and no file) when there is none.
fn write_family<'a>(
    items: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 'a,
    path: &Path,
) -> std::io::Result<bool> {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::None);
    let mut writer = SstFileWriter::create(&options);
    writer.open(path).map_err(std::io::Error::other)?;
    let mut written = false;
    for item in items {
        let (key, value) = item.map_err(std::io::Error::other)?;
        writer.put(key, value).map_err(std::io::Error::other)?;
        written = true;
    }
    if written {
        writer.finish().map_err(std::io::Error::other)?;
    } else {
        drop(writer);
        remove(path)?;
    }
    Ok(written)
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

fn crc_of(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
    }
}

/// Writes the snapshot file: the header, then each family's SST file.
fn pack(meta: &Meta, files: &[(&str, PathBuf)], to: &Path) -> std::io::Result<()> {
    let mut sections = Vec::new();
    for (name, path) in files {
        let (len, crc) = crc_of(path)?;
        sections.push(Section {
            family: (*name).to_string(),
            len,
            crc,
        });
    }
    let header = encode(&Header {
        meta: meta.clone(),
        sections,
    })
    .map_err(invalid)?;
    let mut out = BufWriter::with_capacity(1 << 20, File::create(to)?);
    out.write_all(MAGIC)?;
    out.write_all(&(header.len() as u32).to_be_bytes())?;
    out.write_all(&header)?;
    for (_, path) in files {
        std::io::copy(&mut File::open(path)?, &mut out)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Reads a snapshot file's header, checking it describes the whole file; returns it and
/// where the first section starts.
fn read_header(file: &mut File) -> std::io::Result<(Header, u64)> {
    let size = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| invalid("a snapshot file shorter than its header"))?;
    if &magic != MAGIC {
        return Err(invalid("not a snapshot of Eddy's replicated store"));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len)
        .map_err(|_| invalid("a snapshot file shorter than its header"))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "a snapshot header of {len} bytes is over the limit of {MAX_HEADER_BYTES}"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes)
        .map_err(|_| invalid("a snapshot file shorter than its header"))?;
    let header: Header = decode(&bytes).map_err(invalid)?;
    let start = 12 + u64::from(len);
    let mut seen = Vec::new();
    let mut total = start;
    for section in &header.sections {
        if !DATA_FAMILIES.contains(&section.family.as_str()) || seen.contains(&&section.family) {
            return Err(invalid(format!(
                "a snapshot section of an unknown or repeated family {:?}",
                section.family
            )));
        }
        seen.push(&section.family);
        total = total
            .checked_add(section.len)
            .ok_or_else(|| invalid("snapshot sections longer than a file can be"))?;
    }
    if total != size {
        return Err(invalid(format!(
            "a snapshot file of {size} bytes whose header describes {total}"
        )));
    }
    Ok((header, start))
}

/// Copies each section of the snapshot at `path` into its own file under `dir`, checking its
/// CRC; returns the snapshot's meta and the files by family.
fn unpack(path: &Path, dir: &Path) -> std::io::Result<(Meta, Vec<(String, PathBuf)>)> {
    let mut file = File::open(path)?;
    let (header, start) = read_header(&mut file)?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut files = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for section in header.sections {
        let to = dir.join(format!("{}.sst", section.family));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&to)?);
        let (mut left, mut crc) = (section.len, 0u32);
        while left > 0 {
            let n = reader.read(&mut buf[..left.min(1 << 20) as usize])?;
            if n == 0 {
                return Err(invalid("a snapshot file ended inside a section"));
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        if crc != section.crc {
            return Err(invalid(format!(
                "the snapshot's {} section fails its checksum",
                section.family
            )));
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        files.push((section.family, to));
    }
    Ok((header.meta, files))
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
        db.write(wb).expect("written");
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

    /// Copies a snapshot file as a receiving node gets it.
    fn received(snapshots: &Snapshots, from: &Path) -> PathBuf {
        let file = snapshots.receive().expect("a file to receive into");
        let path = file.path().to_path_buf();
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
        let sent = Snapshots::open(a.path().join("snapshots")).unwrap();
        let (meta, file) = sent.build(&source).expect("a snapshot");
        assert_eq!(meta.last_log_id.map(|id| id.index), Some(7));
        // Writes after the snapshot was taken are not in it.
        fill(&source, &["k9"], 8);
        let kept = Snapshots::open(b.path().join("snapshots")).unwrap();
        let incoming = received(&kept, file.path());
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
        let (newer, _) = sent.build(&source).expect("a newer snapshot");
        assert_eq!(newer.last_log_id.map(|id| id.index), Some(8));
        let (current, _) = sent.current().unwrap().expect("current");
        assert_eq!(current, newer);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_before_the_store_is_touched() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (database(a.path()), database(b.path()));
        fill(&source, &["k1", "k2"], 5);
        fill(&target, &["mine"], 2);
        let before = contents(&target);
        let (meta, file) = Snapshots::open(a.path().join("snapshots"))
            .unwrap()
            .build(&source)
            .unwrap();
        let good = std::fs::read(file.path()).unwrap();
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
                let mut huge = MAGIC.to_vec();
                huge.extend_from_slice(&u32::MAX.to_be_bytes());
                huge
            }),
        ];
        for (what, bytes) in damaged {
            let path = kept.receive().unwrap().path().to_path_buf();
            std::fs::write(&path, &bytes).unwrap();
            let refused = kept.install(&target, &meta, &path);
            assert!(refused.is_err(), "{what} was installed");
            assert_eq!(contents(&target), before, "{what} touched the store");
            assert!(kept.current().unwrap().is_none(), "{what} was kept");
        }
        // Sent under another snapshot's name, it is refused too.
        let mut other = meta.clone();
        other.snapshot_id = "another".into();
        let path = received(&kept, file.path());
        assert!(kept.install(&target, &other, &path).is_err());
        assert_eq!(contents(&target), before);
    }

    #[test]
    fn an_install_a_crash_interrupted_is_finished_on_reopen() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (database(a.path()), database(b.path()));
        fill(&source, &["k1", "k2"], 9);
        fill(&target, &["old"], 4);
        let (meta, file) = Snapshots::open(a.path().join("snapshots"))
            .unwrap()
            .build(&source)
            .unwrap();
        let kept = Snapshots::open(b.path().join("snapshots")).unwrap();
        let incoming = received(&kept, file.path());
        // As if the node died once the store was cleared, before the files went in.
        let _ = kept.publish(&incoming, &meta).unwrap();
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
