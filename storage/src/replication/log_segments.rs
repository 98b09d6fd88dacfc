//! The Raft log's entries on disk: append-only segment files, each named by the index of its
//! first entry, of CRC-framed records.
//!
//! Kept in RocksDB, every entry was written three times on each node (its write-ahead log,
//! then an SST at flush, then compactions) for a log that only ever grows at the end and is
//! dropped from the front a snapshot later. Here it is written once, and purging deletes whole
//! files, as Kafka's and etcd's logs do.
//!
//! A record is a 16-byte header (the payload's length and the CRC-32C of the index and the
//! payload, both `u32`, then the entry's index, `u64`, all little-endian) and the payload.
//! Opening the log checks every record. A record cut short or failing its CRC at the end
//! of the last segment is an append that a crash interrupted, and the log is truncated before
//! it. Anywhere else it is damage: when appends are fsynced (the store's `always` policy) that
//! is an error, since those entries were promised to the leader; otherwise the log ends there,
//! as the unsynced tail of a log ends where a power loss left it, and Raft fetches the rest
//! from the leader.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::log_store::recycle;

/// How many bytes a segment holds before the next append starts another.
const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 16;
const SUFFIX: &str = ".log";

/// One segment file and where each of its entries starts.
struct Segment {
    first: u64,
    path: PathBuf,
    file: File,
    /// The byte at which each entry starts, the first entry's at 0.
    starts: Vec<u64>,
    /// The byte after the last entry: where the next is written.
    end: u64,
}

impl Segment {
    /// The index of its last entry, if it holds any.
    fn last(&self) -> Option<u64> {
        (self.starts.len() as u64)
            .checked_sub(1)
            .map(|n| self.first + n)
    }

    /// Where the entry at `index` starts and ends, if the segment holds it.
    fn span(&self, index: u64) -> Option<(u64, u64)> {
        let at = usize::try_from(index.checked_sub(self.first)?).ok()?;
        let start = *self.starts.get(at)?;
        let end = self.starts.get(at + 1).copied().unwrap_or(self.end);
        Some((start, end))
    }
}

/// The segment files of one Raft log, oldest first; the last one takes the appends.
pub(super) struct Segments {
    dir: PathBuf,
    sync: bool,
    /// A segment takes no more appends once it holds this many bytes.
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The first index not purged: those before it that share a segment with later ones are
    /// still in the file, but gone from the log.
    floor: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn damaged(path: &Path, at: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the Raft log's segment {} is damaged at byte {at}: {what}",
            path.display()
        ),
    )
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

/// A record's header: its payload's length, its CRC and its index.
fn parse_header(header: [u8; HEADER]) -> (usize, u32, u64) {
    let [l0, l1, l2, l3, c0, c1, c2, c3, index @ ..] = header;
    let size = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    (
        size,
        u32::from_le_bytes([c0, c1, c2, c3]),
        u64::from_le_bytes(index),
    )
}

/// Entries framed as records for [`Segments::append`], encoded straight into one buffer that
/// is kept from append to append. Entries are group commits of up to 32 MiB: a fresh buffer
/// for each would be a fresh mapping of memory that the kernel zeroes page by page, and
/// copying each entry's encoding into it would copy every record once more.
#[derive(Default)]
pub(super) struct Frames {
    buffer: Vec<u8>,
    /// Each record's index and where it starts in `buffer`.
    records: Vec<(u64, usize)>,
}

impl Frames {
    /// Empties the frames, keeping the buffer unless it grew too big ([`recycle`]).
    pub(super) fn clear(&mut self) {
        recycle(&mut self.buffer);
        self.records.clear();
    }

    /// Makes room for `records` more records whose payloads take `payload_bytes` in all.
    pub(super) fn reserve(&mut self, records: usize, payload_bytes: usize) {
        self.buffer.reserve(records * HEADER + payload_bytes);
        self.records.reserve(records);
    }

    /// Frames the entry at `index`, whose payload `encode` writes at the end of the buffer.
    pub(super) fn push(
        &mut self,
        index: u64,
        encode: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&[0; HEADER]);
        if let Err(e) = encode(&mut self.buffer) {
            self.buffer.truncate(start);
            return Err(e);
        }
        let (head, payload) = self.buffer[start..].split_at_mut(HEADER);
        let Ok(len) = u32::try_from(payload.len()) else {
            self.buffer.truncate(start);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Raft entry over 4 GiB",
            ));
        };
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..8].copy_from_slice(&checksum(index, payload).to_le_bytes());
        head[8..].copy_from_slice(&index.to_le_bytes());
        self.records.push((index, start));
        Ok(())
    }
}

/// What reading a segment's records from its start found.
struct Scan {
    starts: Vec<u64>,
    /// Where the last whole, valid record ends.
    end: u64,
    /// Why reading stopped before the file's end, if it did.
    broken: Option<io::Error>,
}

/// Reads every record of the segment at `path`, whose first entry is `first`, checking each.
fn scan(path: &Path, file: &File, first: u64) -> io::Result<Scan> {
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan = Scan {
        starts: Vec::new(),
        end: 0,
        broken: None,
    };
    let mut payload = Vec::new();
    while scan.end < len {
        let at = scan.end;
        let expected = first + scan.starts.len() as u64;
        let mut header = [0u8; HEADER];
        if len - at < HEADER as u64 {
            scan.broken = Some(damaged(path, at, "a record's header is cut short"));
            break;
        }
        reader.read_exact(&mut header)?;
        let (size, crc, index) = parse_header(header);
        let size = size as u64;
        if len - at - (HEADER as u64) < size {
            scan.broken = Some(damaged(path, at, "a record is cut short"));
            break;
        }
        // The size is within the file, so this allocation is bounded by what is on disk.
        payload.resize(size as usize, 0);
        reader.read_exact(&mut payload)?;
        if checksum(index, &payload) != crc {
            scan.broken = Some(damaged(path, at, "a record fails its CRC"));
            break;
        }
        if index != expected {
            scan.broken = Some(damaged(
                path,
                at,
                &format!("entry {index} where entry {expected} was due"),
            ));
            break;
        }
        scan.starts.push(at);
        scan.end = at + HEADER as u64 + size;
    }
    Ok(scan)
}

impl Segments {
    /// Opens the log in `dir`, creating it when missing, and checks every record. `sync`:
    /// whether appends are fsynced before they count as written.
    pub(super) fn open(dir: &Path, sync: bool) -> io::Result<Segments> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let Some(first) = item
                .file_name()
                .to_str()
                .and_then(|name| name.strip_suffix(SUFFIX))
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            files.push((first, item.path()));
        }
        files.sort_unstable();
        let mut log = Segments {
            dir: dir.to_path_buf(),
            sync,
            segment_bytes: SEGMENT_BYTES,
            segments: Vec::new(),
            floor: 0,
        };
        for (n, (first, path)) in files.iter().enumerate() {
            let later: Vec<&Path> = files[n + 1..].iter().map(|(_, p)| p.as_path()).collect();
            if let Some(due) = log.next_index()
                && due != *first
            {
                let gap = damaged(path, 0, &format!("it starts at {first}, not {due}"));
                let doomed: Vec<&Path> = std::iter::once(path.as_path()).chain(later).collect();
                log.end_early(gap, &doomed)?;
                break;
            }
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let scan = scan(path, &file, *first)?;
            log.segments.push(Segment {
                first: *first,
                path: path.clone(),
                file,
                starts: scan.starts,
                end: scan.end,
            });
            if let Some(broken) = scan.broken {
                log.end_early(broken, &later)?;
                break;
            }
        }
        // A segment left empty holds no index to vouch for its name: the next append names
        // its own.
        if log.segments.last().is_some_and(|s| s.starts.is_empty()) {
            log.drop_last()?;
        }
        Ok(log)
    }

    /// Ends the log at the damage `broken` found: refused when it cannot be a torn tail of a
    /// log whose appends were fsynced (`doomed`, the files after it, are not all empty of
    /// promised entries); else the last segment read is cut to its whole records and the
    /// `doomed` files are deleted.
    fn end_early(&mut self, broken: io::Error, doomed: &[&Path]) -> io::Result<()> {
        if self.sync && !doomed.is_empty() {
            return Err(broken);
        }
        warn!(error = %broken, "the Raft log ends early; Raft fetches the rest from the leader");
        if let Some(segment) = self.segments.last() {
            segment.file.set_len(segment.end)?;
            if self.sync {
                segment.file.sync_data()?;
            }
        }
        for path in doomed {
            std::fs::remove_file(path)?;
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> io::Result<()> {
        if self.sync {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    fn drop_last(&mut self) -> io::Result<()> {
        if let Some(segment) = self.segments.pop() {
            std::fs::remove_file(&segment.path)?;
            self.sync_dir()?;
        }
        Ok(())
    }

    /// The index of the last entry, if the log holds any.
    pub(super) fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last)
    }

    /// The index the next append must have, if the log holds any entry.
    fn next_index(&self) -> Option<u64> {
        self.last_index().map(|last| last + 1)
    }

    /// Whether the log holds no entry.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.last_index().is_none()
    }

    /// Replaces the log with `entries` (each its index and payload, in order), fsyncing once
    /// at the end: moving a log kept elsewhere into the files.
    pub(super) fn replace_with(
        &mut self,
        entries: impl Iterator<Item = io::Result<(u64, Vec<u8>)>>,
    ) -> io::Result<()> {
        self.truncate(0)?;
        let sync = std::mem::replace(&mut self.sync, false);
        let mut frames = Frames::default();
        let copied = entries.into_iter().try_for_each(|entry| {
            let (index, payload) = entry?;
            frames.clear();
            frames.push(index, |buffer| {
                buffer.extend_from_slice(&payload);
                Ok(())
            })?;
            self.append(&frames)
        });
        self.sync = sync;
        copied?;
        if let Some(segment) = self.segments.last() {
            segment.file.sync_data()?;
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Appends the framed entries, whose indexes must follow on from the last entry (any
    /// index, in an empty log) and from each other.
    pub(super) fn append(&mut self, frames: &Frames) -> io::Result<()> {
        let entries = &frames.records;
        let Some((first, _)) = entries.first() else {
            return Ok(());
        };
        if let Some(due) = self.next_index()
            && due != *first
        {
            return Err(io::Error::other(format!(
                "entry {first} appended to a Raft log that ends before {due}"
            )));
        }
        for (n, (index, _)) in entries.iter().enumerate() {
            if *index != first + n as u64 {
                return Err(io::Error::other(format!(
                    "Raft entries appended out of order: {index} after {}",
                    first + n as u64 - 1
                )));
            }
        }
        // A segment left empty by a failed append is named for where that append began.
        if self
            .segments
            .last()
            .is_some_and(|s| s.starts.is_empty() && s.first != *first)
        {
            self.drop_last()?;
        }
        let rotate = self
            .segments
            .last()
            .is_none_or(|s| s.end >= self.segment_bytes && !s.starts.is_empty());
        if rotate {
            self.start_segment(*first)?;
        }
        let Some(segment) = self.segments.last_mut() else {
            return Err(io::Error::other("the Raft log has no segment to append to"));
        };
        // Should this fail, whatever part was written is past `end`: the next append
        // overwrites it, and a reopen cuts it off as a torn tail.
        segment.file.write_all_at(&frames.buffer, segment.end)?;
        if self.sync {
            segment.file.sync_data()?;
        }
        let end = segment.end;
        segment
            .starts
            .extend(entries.iter().map(|(_, start)| end + *start as u64));
        segment.end += frames.buffer.len() as u64;
        Ok(())
    }

    /// Starts a new segment whose first entry is `first`, after cutting the one it follows to
    /// its whole records (a failed append may have left part of one).
    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        if let Some(previous) = self.segments.last() {
            previous.file.set_len(previous.end)?;
            if self.sync {
                previous.file.sync_data()?;
            }
        }
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        self.sync_dir()?;
        self.segments.push(Segment {
            first,
            path,
            file,
            starts: Vec::new(),
            end: 0,
        });
        Ok(())
    }

    /// Deletes the entries from `from` on.
    pub(super) fn truncate(&mut self, from: u64) -> io::Result<()> {
        // Later segments go first, the newest first, so a crash midway leaves a log with no
        // gap in it.
        while self.segments.last().is_some_and(|s| s.first >= from) {
            self.drop_last()?;
        }
        if let Some(segment) = self.segments.last_mut()
            && let Some((start, _)) = segment.span(from)
        {
            segment.file.set_len(start)?;
            if self.sync {
                segment.file.sync_data()?;
            }
            let kept = usize::try_from(from - segment.first).unwrap_or(usize::MAX);
            segment.starts.truncate(kept);
            segment.end = start;
        }
        Ok(())
    }

    /// Deletes every segment all of whose entries are at `upto` or before. The entries up to
    /// `upto` that share a segment with later ones stay in its file, never read, until it
    /// goes too.
    pub(super) fn purge(&mut self, upto: u64) -> io::Result<()> {
        self.floor = self.floor.max(upto.saturating_add(1));
        let doomed = self
            .segments
            .iter()
            .take_while(|s| s.last().is_none_or(|last| last <= upto))
            .count();
        for segment in self.segments.drain(..doomed) {
            std::fs::remove_file(&segment.path)?;
        }
        if doomed > 0 {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// The payloads of the entries from `start` to `end` (excluded) that the log holds, in
    /// order, each checked against its CRC.
    pub(super) fn read(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        let mut payloads = Vec::new();
        let mut index = start.max(self.floor);
        for segment in &self.segments {
            let Some(last) = segment.last() else {
                continue;
            };
            if last < index {
                continue;
            }
            index = index.max(segment.first);
            let upto = end.min(last + 1);
            if index >= upto {
                break;
            }
            let Some((from, _)) = segment.span(index) else {
                break;
            };
            let Some((_, to)) = segment.span(upto - 1) else {
                break;
            };
            let mut bytes = vec![0u8; usize::try_from(to - from).map_err(io::Error::other)?];
            segment.file.read_exact_at(&mut bytes, from)?;
            let mut rest = bytes.as_slice();
            for expected in index..upto {
                let at = from + (bytes.len() - rest.len()) as u64;
                let Some((header, body)) = rest.split_first_chunk::<HEADER>() else {
                    return Err(damaged(&segment.path, at, "a record is cut short"));
                };
                let (size, crc, found) = parse_header(*header);
                let Some((payload, after)) = body.split_at_checked(size) else {
                    return Err(damaged(&segment.path, at, "a record is cut short"));
                };
                if found != expected || checksum(found, payload) != crc {
                    return Err(damaged(&segment.path, at, "a record fails its CRC"));
                }
                payloads.push(payload.to_vec());
                rest = after;
            }
            index = upto;
            if index >= end {
                break;
            }
        }
        Ok(payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(index: u64) -> Vec<u8> {
        format!("entry {index} ")
            .repeat(1 + index as usize % 7)
            .into_bytes()
    }

    fn frames(entries: &[(u64, Vec<u8>)]) -> Frames {
        let mut frames = Frames::default();
        for (index, payload) in entries {
            frames
                .push(*index, |buffer| {
                    buffer.extend_from_slice(payload);
                    Ok(())
                })
                .expect("framed");
        }
        frames
    }

    fn append(log: &mut Segments, range: std::ops::Range<u64>) {
        let entries: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
        log.append(&frames(&entries)).expect("appended");
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("a listing")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    }

    /// A log whose every append after the first starts a segment.
    fn open_small(dir: &Path, sync: bool) -> Segments {
        let mut log = Segments::open(dir, sync).expect("opened");
        log.segment_bytes = 1;
        log
    }

    #[test]
    fn entries_read_back_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = open_small(dir.path(), true);
        assert!(log.is_empty());
        append(&mut log, 1..4);
        append(&mut log, 4..6);
        assert_eq!(
            files(dir.path()),
            ["00000000000000000001.log", "00000000000000000004.log"]
        );
        let expected: Vec<Vec<u8>> = (2..6).map(payload).collect();
        assert_eq!(log.read(2, 6).expect("read"), expected);
        drop(log);
        let log = Segments::open(dir.path(), true).expect("reopened");
        assert_eq!(log.last_index(), Some(5));
        assert_eq!(log.read(1, 100).expect("read").len(), 5);
        assert_eq!(log.read(5, 6).expect("read"), vec![payload(5)]);
        assert_eq!(log.read(6, 9).expect("read"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn segments_are_ordered_by_their_first_index_not_their_names() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = open_small(dir.path(), false);
        append(&mut log, 9..11);
        append(&mut log, 11..12);
        drop(log);
        // Named by hand without the padding, "9.log" sorts after "00000000000000000011.log".
        let padded = dir.path().join("00000000000000000009.log");
        std::fs::rename(&padded, dir.path().join("9.log")).expect("renamed");
        let log = Segments::open(dir.path(), true).expect("reopened");
        assert_eq!(log.last_index(), Some(11));
        assert_eq!(log.read(9, 12).expect("read").len(), 3);
    }

    #[test]
    fn appends_must_follow_the_last_entry() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = open_small(dir.path(), false);
        append(&mut log, 1..3);
        assert!(log.append(&frames(&[(4, payload(4))])).is_err(), "a gap");
        assert!(
            log.append(&frames(&[(2, payload(2))])).is_err(),
            "an overlap"
        );
        let skipping = frames(&[(3, payload(3)), (5, payload(5))]);
        assert!(log.append(&skipping).is_err());
        assert_eq!(log.last_index(), Some(2));
    }

    #[test]
    fn truncating_and_purging_keep_the_log_whole() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = open_small(dir.path(), false);
        for range in [10..13, 13..16, 16..19] {
            append(&mut log, range);
        }
        assert_eq!(files(dir.path()).len(), 3);
        log.truncate(14).expect("truncated");
        assert_eq!(log.last_index(), Some(13));
        assert_eq!(files(dir.path()).len(), 2);
        log.segment_bytes = SEGMENT_BYTES;
        append(&mut log, 14..15);
        log.purge(13).expect("purged");
        assert_eq!(
            files(dir.path()).len(),
            1,
            "the first segment is all at or before 13"
        );
        assert_eq!(
            log.read(10, 15).expect("read"),
            vec![payload(14)],
            "a purged entry sharing a file with a later one is not read"
        );
        drop(log);
        let mut log = Segments::open(dir.path(), false).expect("reopened");
        assert_eq!(log.last_index(), Some(14));
        log.purge(14).expect("purged");
        assert!(log.is_empty());
        assert!(files(dir.path()).is_empty());
        // After a snapshot past the log, appends go on from wherever Raft says.
        append(&mut log, 40..42);
        drop(log);
        let log = Segments::open(dir.path(), false).expect("reopened");
        assert_eq!(
            log.read(0, 100).expect("read"),
            vec![payload(40), payload(41)]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_elsewhere_refused_when_synced() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = Segments::open(dir.path(), true).expect("opened");
        append(&mut log, 1..5);
        let path = log.segments[0].path.clone();
        let whole = log.segments[0].end;
        drop(log);
        // A crash in the middle of the last append.
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(whole - 3).expect("cut");
        let mut log = open_small(dir.path(), true);
        assert_eq!(log.last_index(), Some(3));
        append(&mut log, 4..6);
        assert_eq!(log.read(1, 6).expect("read").len(), 5);
        append(&mut log, 6..7);
        assert_eq!(files(dir.path()).len(), 3);
        drop(log);

        // A flipped byte in a segment that is not the last is damage, not a torn tail.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER + 1] ^= 0x40;
        std::fs::write(&path, &bytes).expect("written");
        let refused = Segments::open(dir.path(), true).err().expect("refused");
        assert!(refused.to_string().contains("fails its CRC"), "{refused}");
        assert_eq!(files(dir.path()).len(), 3, "nothing is touched");
        // Unsynced, the log ends before the damage, and Raft fetches the rest.
        let log = Segments::open(dir.path(), false).expect("opened");
        assert_eq!(log.last_index(), None);
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn a_length_past_the_file_is_a_torn_record_not_an_allocation() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = Segments::open(dir.path(), true).expect("opened");
        append(&mut log, 1..3);
        let path = log.segments[0].path.clone();
        drop(log);
        let mut bytes = std::fs::read(&path).expect("read");
        let second = HEADER + payload(1).len();
        bytes[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).expect("written");
        let log = Segments::open(dir.path(), true).expect("opened");
        assert_eq!(log.last_index(), Some(1));
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            second as u64,
            "cut before the torn record"
        );
    }
}
