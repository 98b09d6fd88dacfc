//! The snapshot file: how a snapshot travels to a follower and is kept by it. A header (the
//! Raft position it was taken at, and one section per data column family with its length and
//! CRC-32C), then each family's keys as an SST file written with RocksDB's `SstFileWriter`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rocksdb::{DBCompressionType, Options, SstFileWriter};
use serde::{Deserialize, Serialize};

use super::{DATA_FAMILIES, Meta, invalid, remove};
use crate::replication::log_store::{decode, encode};

pub(super) const MAGIC: &[u8; 8] = b"EDDYSNP1";
/// A header names a position, a membership and four sections: far less than this.
const MAX_HEADER_BYTES: u32 = 1 << 20;

/// What a snapshot file says of itself.
#[derive(Serialize, Deserialize)]
pub(super) struct Header {
    pub(super) meta: Meta,
    sections: Vec<Section>,
}

#[derive(Serialize, Deserialize)]
struct Section {
    family: String,
    len: u64,
    crc: u32,
}

/// Writes every key of `items` to an SST file at `path`; false (and no file) when there is none.
pub(super) fn write_family<'a>(
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
pub(super) fn pack(meta: &Meta, files: &[(&str, PathBuf)], to: &Path) -> std::io::Result<()> {
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
pub(super) fn read_header(file: &mut File) -> std::io::Result<(Header, u64)> {
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
pub(super) fn unpack(path: &Path, dir: &Path) -> std::io::Result<(Meta, Vec<(String, PathBuf)>)> {
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
