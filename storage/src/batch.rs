//! Records and the on-disk unit that holds them: a Kafka record batch (magic v2).
//!
//! Compressed batches are encoded with the `kafka-protocol` crate's records codec. The fixed
//! 61-byte header is parsed by hand, because the log needs it on every append and every read,
//! and so are the records, the log's hot read path: uncompressed in place, compressed once
//! inflated (within a bound, see [`crate::compression`]). A property test checks that reader
//! against the crate's decoder. A batch a client produces is read whole before it is
//! acknowledged ([`EncodedBatch::validate`]), so no reader meets a batch it cannot read.
//! The base offset and the partition leader epoch sit outside the CRC, so the log stamps them at
//! append time without re-encoding.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
    Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::compression::{MAX_DECOMPRESSED_BATCH_BYTES, decompress};

/// Size of the fixed batch header, up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: the base offset and the length itself.
pub const BATCH_LOG_OVERHEAD: usize = 12;

const MAGIC_V2: i8 = 2;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// A record header: a string key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// The header name.
    pub key: String,
    /// The header value, or none.
    pub value: Option<Bytes>,
}

/// A record to append: optional key and value, a timestamp in milliseconds, and headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Key bytes; keyed records are partitioned by key.
    pub key: Option<Bytes>,
    /// Value bytes; a keyed record without a value is a tombstone.
    pub value: Option<Bytes>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
}

impl Record {
    /// A record with a key and a value.
    pub fn keyed(key: impl Into<Bytes>, value: impl Into<Bytes>, timestamp: i64) -> Self {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            timestamp,
            headers: Vec::new(),
        }
    }

    /// A record with a value and no key.
    pub fn unkeyed(value: impl Into<Bytes>, timestamp: i64) -> Self {
        Record {
            key: None,
            value: Some(value.into()),
            timestamp,
            headers: Vec::new(),
        }
    }

    /// A tombstone: a key with no value.
    pub fn tombstone(key: impl Into<Bytes>, timestamp: i64) -> Self {
        Record {
            key: Some(key.into()),
            value: None,
            timestamp,
            headers: Vec::new(),
        }
    }
}

/// A record read back from the log, with the offset it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record.
    pub record: Record,
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: i32,
    /// Stored CRC-32C over attributes..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `bytes`, checking only framing, not the CRC.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(format!(
                "batch is {} bytes, shorter than the {BATCH_HEADER_LEN}-byte header",
                bytes.len()
            ));
        }
        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let i32_at = |at: usize| i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let i16_at = |at: usize| i16::from_be_bytes(bytes[at..at + 2].try_into().unwrap_or([0; 2]));
        let magic = bytes[16] as i8;
        if magic != MAGIC_V2 {
            return Err(format!(
                "magic byte is {magic}, only v2 batches are supported"
            ));
        }
        let header = BatchHeader {
            base_offset: i64_at(0),
            batch_length: i32_at(8),
            partition_leader_epoch: i32_at(12),
            crc: u32::from_be_bytes(bytes[17..21].try_into().unwrap_or([0; 4])),
            attributes: i16_at(21),
            last_offset_delta: i32_at(23),
            first_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            record_count: i32_at(57),
        };
        let total = header.total_len();
        if header.batch_length < (BATCH_HEADER_LEN - BATCH_LOG_OVERHEAD) as i32 {
            return Err(format!("batch length {} is too small", header.batch_length));
        }
        if total != bytes.len() {
            return Err(format!(
                "batch length field says {total} bytes but {} are stored",
                bytes.len()
            ));
        }
        if header.record_count < 0 || header.last_offset_delta < 0 {
            return Err("negative record count or offset delta".to_string());
        }
        Ok(header)
    }

    /// Whole size of the batch in bytes.
    pub fn total_len(&self) -> usize {
        BATCH_LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record the batch covers.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Whether the batch is a transaction marker rather than data.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
}

/// Verifies the CRC-32C of a whole batch.
pub fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<(), String> {
    let actual = crc32c::crc32c(&batch[21..]);
    if actual != header.crc {
        return Err(format!(
            "CRC mismatch: stored {:#010x}, computed {actual:#010x}",
            header.crc
        ));
    }
    Ok(())
}

/// A batch ready to append: encoded, checksummed, its base offset still to be stamped.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    bytes: BytesMut,
    header: BatchHeader,
}

impl EncodedBatch {
    /// Encodes records (uncompressed) into one batch whose offsets start at 0.
    pub fn encode(records: &[Record]) -> Result<Self, String> {
        Self::encode_with(records, Compression::None)
    }

    /// Encodes records into one batch with the given compression.
    pub fn encode_with(records: &[Record], compression: Compression) -> Result<Self, String> {
        if records.is_empty() {
            return Err("a batch needs at least one record".to_string());
        }
        if compression == Compression::None {
            return encode_uncompressed(records);
        }
        Self::encode_with_crate(records, compression)
    }

    /// Encodes with the `kafka-protocol` crate's encoder, which compresses.
    fn encode_with_crate(records: &[Record], compression: Compression) -> Result<Self, String> {
        let wire: Vec<WireRecord> = records
            .iter()
            .enumerate()
            .map(|(i, r)| to_wire(i as i64, r))
            .collect();
        let mut bytes = BytesMut::with_capacity(
            BATCH_HEADER_LEN
                + records
                    .iter()
                    .map(|r| {
                        16 + r.key.as_ref().map_or(0, |k| k.len())
                            + r.value.as_ref().map_or(0, |v| v.len())
                    })
                    .sum::<usize>(),
        );
        let options = RecordEncodeOptions {
            version: MAGIC_V2,
            compression,
        };
        RecordBatchEncoder::encode(&mut bytes, wire.iter(), &options).map_err(|e| e.to_string())?;
        // The encoder has just computed the CRC; checking it again would only cost time.
        let header = BatchHeader::parse(&bytes)?;
        Ok(EncodedBatch { bytes, header })
    }

    /// Marks the batch as an idempotent producer's, as a Kafka client does: its producer id and
    /// epoch, and the sequence of its first record; the checksum is computed again.
    pub fn set_producer(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) {
        self.bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        self.bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        self.bytes[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&self.bytes[21..]);
        self.bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        self.header.producer_id = producer_id;
        self.header.producer_epoch = epoch;
        self.header.base_sequence = base_sequence;
        self.header.crc = crc;
    }

    /// Marks the batch as a transactional producer's, as [`EncodedBatch::set_producer`] does
    /// for an idempotent one, with the transactional bit set.
    pub fn set_transactional(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) {
        let attributes = self.header.attributes | ATTR_TRANSACTIONAL;
        self.bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
        self.header.attributes = attributes;
        self.set_producer(producer_id, epoch, base_sequence);
    }

    /// Wraps bytes that already hold exactly one v2 batch, as a Kafka producer sends them.
    pub fn from_bytes(bytes: BytesMut) -> Result<Self, String> {
        let header = BatchHeader::parse(&bytes)?;
        verify_crc(&bytes, &header)?;
        Ok(EncodedBatch { bytes, header })
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a batch holds at least its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many offsets the batch takes: its last offset delta plus one.
    pub fn offset_span(&self) -> i64 {
        i64::from(self.header.last_offset_delta) + 1
    }

    /// Reads every record of a batch a client produced, as Kafka's broker does before it
    /// acknowledges one: the records must parse, their count must be the header's, and their
    /// offset deltas must run 0, 1, 2, ... to the header's last offset delta. Returns whether any
    /// record has no key (a compacted topic refuses those).
    pub fn validate(&self) -> Result<bool, String> {
        if self.header.is_control() {
            return Ok(false);
        }
        let mut records = Vec::new();
        decode_records_into(self.bytes.clone().freeze(), i64::MIN, &mut records)?;
        let base = self.header.base_offset;
        if records.len() != self.header.record_count as usize {
            return Err(format!(
                "the header counts {} records but the batch holds {}",
                self.header.record_count,
                records.len()
            ));
        }
        if let Some((i, r)) = records
            .iter()
            .enumerate()
            .find(|(i, r)| r.offset - base != *i as i64)
        {
            return Err(format!(
                "record {i} has offset delta {}, not {i}",
                r.offset - base
            ));
        }
        if records.len() as i64 != i64::from(self.header.last_offset_delta) + 1 {
            return Err(format!(
                "the last offset delta is {} for {} records",
                self.header.last_offset_delta,
                records.len()
            ));
        }
        Ok(records.iter().any(|r| r.record.key.is_none()))
    }

    /// Stamps the base offset and leader epoch, both outside the CRC.
    pub fn stamp(&mut self, base_offset: i64, leader_epoch: i32) {
        self.bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        self.bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        self.header.base_offset = base_offset;
        self.header.partition_leader_epoch = leader_epoch;
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Writes records as an uncompressed batch with offsets from 0, laid out byte for byte as the
/// `kafka-protocol` encoder lays them out (a property test checks it), but without building the
/// crate's record type (and its header map) for each record: this is the hot path of every
/// query's output. Repeated header names are kept, as Kafka keeps them.
fn encode_uncompressed(records: &[Record]) -> Result<EncodedBatch, String> {
    use bytes::BufMut;
    let count = i32::try_from(records.len())
        .map_err(|_| format!("{} records are too many for one batch", records.len()))?;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for r in records {
        min_ts = min_ts.min(r.timestamp);
        max_ts = max_ts.max(r.timestamp);
    }
    let length = |b: Option<&Bytes>| -> Result<i64, String> {
        match b {
            None => Ok(-1),
            Some(b) => i32::try_from(b.len())
                .map(i64::from)
                .map_err(|_| format!("{} bytes are too many for one record field", b.len())),
        }
    };
    let mut sizes = Vec::with_capacity(records.len());
    let mut total = BATCH_HEADER_LEN;
    for (i, r) in records.iter().enumerate() {
        let mut size = 1 + varint_len(r.timestamp.wrapping_sub(min_ts)) + varint_len(i as i64);
        for field in [r.key.as_ref(), r.value.as_ref()] {
            size += varint_len(length(field)?) + field.map_or(0, Bytes::len);
        }
        size += varint_len(r.headers.len() as i64);
        for h in &r.headers {
            size += varint_len(h.key.len() as i64) + h.key.len();
            size += varint_len(length(h.value.as_ref())?) + h.value.as_ref().map_or(0, Bytes::len);
        }
        let size =
            i32::try_from(size).map_err(|_| format!("a record of {size} bytes is too large"))?;
        total += varint_len(i64::from(size)) + size as usize;
        sizes.push(size);
    }
    let batch_length = i32::try_from(total - BATCH_LOG_OVERHEAD)
        .map_err(|_| format!("a batch of {total} bytes is too large"))?;
    let mut buf = BytesMut::with_capacity(total);
    buf.put_i64(0);
    buf.put_i32(batch_length);
    buf.put_i32(NO_PARTITION_LEADER_EPOCH);
    buf.put_i8(MAGIC_V2);
    buf.put_u32(0); // the CRC, filled in below
    buf.put_i16(0);
    buf.put_i32(count - 1);
    buf.put_i64(min_ts);
    buf.put_i64(max_ts);
    buf.put_i64(NO_PRODUCER_ID);
    buf.put_i16(NO_PRODUCER_EPOCH);
    buf.put_i32(-1);
    buf.put_i32(count);
    for ((i, r), size) in records.iter().enumerate().zip(sizes) {
        put_varint(&mut buf, i64::from(size));
        buf.put_i8(0);
        put_varint(&mut buf, r.timestamp.wrapping_sub(min_ts));
        put_varint(&mut buf, i as i64);
        for field in [r.key.as_ref(), r.value.as_ref()] {
            put_varint(&mut buf, length(field)?);
            if let Some(field) = field {
                buf.put_slice(field);
            }
        }
        put_varint(&mut buf, r.headers.len() as i64);
        for h in &r.headers {
            put_varint(&mut buf, h.key.len() as i64);
            buf.put_slice(h.key.as_bytes());
            put_varint(&mut buf, length(h.value.as_ref())?);
            if let Some(value) = &h.value {
                buf.put_slice(value);
            }
        }
    }
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    let header = BatchHeader::parse(&buf)?;
    Ok(EncodedBatch { bytes: buf, header })
}

/// Bytes a zigzag varint takes.
fn varint_len(v: i64) -> usize {
    let raw = ((v << 1) ^ (v >> 63)) as u64;
    (64 - raw.leading_zeros() as usize).max(1).div_ceil(7)
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    use bytes::BufMut;
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    while raw >= 0x80 {
        buf.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

fn to_wire(offset: i64, record: &Record) -> WireRecord {
    let mut headers = IndexMap::with_capacity(record.headers.len());
    for h in &record.headers {
        headers.insert(StrBytes::from_string(h.key.clone()), h.value.clone());
    }
    WireRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder keeps records in one batch while offset minus sequence stays constant, and
        // derives a base sequence of -1 (no sequence) from the first record.
        sequence: offset as i32 - 1,
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    }
}

/// Re-encodes log records (keeping their offsets and timestamps) into one batch.
///
/// Used by compaction, which removes records from a batch but never renumbers the survivors.
pub fn encode_log_records(
    records: &[LogRecord],
    header: &BatchHeader,
) -> Result<EncodedBatch, String> {
    let first = records
        .first()
        .ok_or_else(|| "a batch needs at least one record".to_string())?
        .offset;
    let wire: Vec<WireRecord> = records
        .iter()
        .map(|r| {
            let mut w = to_wire(r.offset, &r.record);
            w.transactional = header.is_transactional();
            w.producer_id = header.producer_id;
            w.producer_epoch = header.producer_epoch;
            w.partition_leader_epoch = header.partition_leader_epoch;
            w.sequence = if header.base_sequence < 0 {
                (r.offset - first) as i32 - 1
            } else {
                header
                    .base_sequence
                    .wrapping_add((r.offset - header.base_offset) as i32)
            };
            w
        })
        .collect();
    let mut bytes = BytesMut::new();
    let options = RecordEncodeOptions {
        version: MAGIC_V2,
        compression: compression_of(header.attributes)?,
    };
    RecordBatchEncoder::encode(&mut bytes, wire.iter(), &options).map_err(|e| e.to_string())?;
    let mut batch = EncodedBatch::from_bytes(bytes)?;
    batch.header.base_offset = first;
    Ok(batch)
}

/// The compression a batch's attributes name; 5 to 7 name none Kafka knows.
fn compression_of(attributes: i16) -> Result<Compression, String> {
    Ok(match attributes & 0x7 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => return Err(format!("unknown compression type {other}")),
    })
}

/// The batches of `bytes`, whole batches back to back as a Fetch response carries them, each
/// with its header. A partial or malformed batch ends the iteration with its error.
pub fn split_batches(bytes: &[u8]) -> impl Iterator<Item = Result<(BatchHeader, &[u8]), String>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(length) = rest.get(8..BATCH_LOG_OVERHEAD) else {
            let error = format!("{} trailing bytes are no batch", rest.len());
            rest = &[];
            return Some(Err(error));
        };
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let total = (BATCH_LOG_OVERHEAD + length.max(0) as usize).min(rest.len());
        let (batch, after) = rest.split_at(total);
        match BatchHeader::parse(batch) {
            Ok(header) => {
                rest = after;
                Some(Ok((header, batch)))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// Decodes every record of one stored batch, verifying its CRC. Control batches yield no records.
pub fn decode_records(batch: Bytes) -> Result<Vec<LogRecord>, String> {
    let mut records = Vec::new();
    decode_records_into(batch, i64::MIN, &mut records)?;
    Ok(records)
}

/// Appends the records of one stored batch at or after offset `from` to `out`, verifying the
/// batch's CRC. Control batches yield no records. On an error `out` may hold some of the
/// batch's records.
pub fn decode_records_into(
    batch: Bytes,
    from: i64,
    out: &mut Vec<LogRecord>,
) -> Result<(), String> {
    let header = BatchHeader::parse(&batch)?;
    verify_crc(&batch, &header)?;
    if header.is_control() {
        return Ok(());
    }
    match compression_of(header.attributes)? {
        Compression::None => decode_section(&batch, BATCH_HEADER_LEN, &header, from, out),
        compression => {
            let records = decompress(
                compression,
                &batch[BATCH_HEADER_LEN..],
                MAX_DECOMPRESSED_BATCH_BYTES,
            )?;
            decode_section(&records, 0, &header, from, out)
        }
    }
}

/// A record as the `kafka-protocol` decoder gives it, as a log record.
#[cfg(test)]
fn from_wire(r: WireRecord) -> LogRecord {
    LogRecord {
        offset: r.offset,
        record: Record {
            key: r.key,
            value: r.value,
            timestamp: r.timestamp,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| RecordHeader {
                    key: k.to_string(),
                    value: v,
                })
                .collect(),
        },
    }
}

/// Reads the records of a batch from `section`, starting at byte `start` (the batch itself
/// after its header, or a compressed batch's records inflated): keys, values and header values
/// are slices of `section`, with no copy and no intermediate record type.
///
/// This is the log's hot read path; the `kafka-protocol` decoder builds a record with a header
/// map per record and keeps only the last of repeated header names, which Kafka allows.
fn decode_section(
    section: &Bytes,
    start: usize,
    header: &BatchHeader,
    from: i64,
    records: &mut Vec<LogRecord>,
) -> Result<(), String> {
    let mut reader = RecordReader {
        batch: section,
        at: start,
    };
    let batch = section;
    let count = header.record_count as usize;
    // A record takes at least 7 bytes, so a count beyond that is corrupt, not a reason to
    // reserve a huge vector.
    records.reserve(count.min(batch.len() / 7));
    for _ in 0..count {
        let size = reader.length("record size")?;
        let end = reader.at + size;
        if end > batch.len() {
            return Err(format!(
                "record of {size} bytes at byte {} runs past the batch",
                reader.at
            ));
        }
        reader.skip(1)?; // attributes, unused in v2
        let timestamp_delta = reader.varlong()?;
        let offset_delta = reader.varint()?;
        let key = reader.nullable_bytes("key")?;
        let value = reader.nullable_bytes("value")?;
        let header_count = reader.length("header count")?;
        let mut headers = Vec::with_capacity(header_count.min(size));
        for _ in 0..header_count {
            let name_len = reader.length("header name length")?;
            let name = reader.take(name_len)?;
            let key = std::str::from_utf8(&name)
                .map_err(|e| format!("header name is not UTF-8: {e}"))?
                .to_string();
            let value = reader.nullable_bytes("header value")?;
            headers.push(RecordHeader { key, value });
        }
        if reader.at != end {
            return Err(format!(
                "record ends at byte {} but its size says {end}",
                reader.at
            ));
        }
        let offset = header.base_offset + i64::from(offset_delta);
        if offset >= from {
            records.push(LogRecord {
                offset,
                record: Record {
                    key,
                    value,
                    timestamp: header.first_timestamp.wrapping_add(timestamp_delta),
                    headers,
                },
            });
        }
    }
    if reader.at != batch.len() {
        return Err(format!(
            "{} bytes after the last record",
            batch.len() - reader.at
        ));
    }
    Ok(())
}

/// A cursor over the records section of a batch.
struct RecordReader<'a> {
    batch: &'a Bytes,
    at: usize,
}

impl RecordReader<'_> {
    fn varlong(&mut self) -> Result<i64, String> {
        // Most varints in a batch (deltas, small lengths) take one byte.
        if let Some(&byte) = self.batch.get(self.at)
            && byte & 0x80 == 0
        {
            self.at += 1;
            return Ok(i64::from(byte >> 1) ^ -i64::from(byte & 1));
        }
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .batch
                .get(self.at)
                .ok_or_else(|| "a varint runs past the batch".to_string())?;
            self.at += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("a varint is longer than 10 bytes".to_string())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| format!("varint {v} does not fit 32 bits"))
    }

    /// A length that must not be negative.
    fn length(&mut self, what: &str) -> Result<usize, String> {
        let v = self.varint()?;
        usize::try_from(v).map_err(|_| format!("negative {what}: {v}"))
    }

    /// Bytes prefixed by their length, where -1 means none.
    fn nullable_bytes(&mut self, what: &str) -> Result<Option<Bytes>, String> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(format!("negative {what} length: {n}")),
            n => self.take(n as usize).map(Some),
        }
    }

    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.batch.len());
        let Some(end) = end else {
            return Err(format!("{n} bytes at byte {} run past the batch", self.at));
        };
        let slice = self.batch.slice(self.at..end);
        self.at = end;
        Ok(slice)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.batch.len() - self.at < n {
            return Err(format!("{n} bytes at byte {} run past the batch", self.at));
        }
        self.at += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::keyed("k1", "v1", 1_000),
            Record::unkeyed("v2", 1_005),
            Record {
                key: Some(Bytes::from_static(b"k3")),
                value: None,
                timestamp: 999,
                headers: vec![RecordHeader {
                    key: "h".into(),
                    value: Some(Bytes::from_static(b"x")),
                }],
            },
        ]
    }

    #[test]
    fn encode_stamp_decode_round_trip() {
        let mut batch = EncodedBatch::encode(&sample()).unwrap();
        assert_eq!(batch.header().record_count, 3);
        assert_eq!(batch.offset_span(), 3);
        assert_eq!(batch.header().max_timestamp, 1_005);
        assert_eq!(batch.header().base_sequence, -1);
        assert_eq!(batch.header().producer_id, -1);
        batch.stamp(42, 7);
        let bytes = Bytes::copy_from_slice(batch.as_bytes());
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        verify_crc(&bytes, &header).expect("stamping keeps the CRC valid");
        let records = decode_records(bytes).unwrap();
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![42, 43, 44]);
        let back: Vec<Record> = records.into_iter().map(|r| r.record).collect();
        assert_eq!(back, sample());
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let batch = EncodedBatch::encode(&sample()).unwrap();
        let mut bytes = batch.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let err = decode_records(Bytes::from(bytes.clone())).unwrap_err();
        assert!(
            err.to_lowercase().contains("cyclic") || err.contains("CRC"),
            "{err}"
        );
        let header = BatchHeader::parse(&bytes).unwrap();
        assert!(verify_crc(&bytes, &header).is_err());
    }

    #[test]
    fn truncated_batches_are_refused_not_panicked_on() {
        let batch = EncodedBatch::encode(&sample()).unwrap();
        let bytes = batch.as_bytes();
        for cut in [0, 10, 60, bytes.len() - 1] {
            assert!(BatchHeader::parse(&bytes[..cut]).is_err(), "cut at {cut}");
            assert!(decode_records(Bytes::copy_from_slice(&bytes[..cut])).is_err());
        }
    }

    #[test]
    fn compaction_re_encoding_keeps_offsets() {
        let mut batch = EncodedBatch::encode(&sample()).unwrap();
        batch.stamp(100, 0);
        let records = decode_records(Bytes::copy_from_slice(batch.as_bytes())).unwrap();
        let kept = vec![records[0].clone(), records[2].clone()];
        let rewritten = encode_log_records(&kept, batch.header()).unwrap();
        assert_eq!(rewritten.header().base_offset, 100);
        let decoded = decode_records(Bytes::copy_from_slice(rewritten.as_bytes())).unwrap();
        assert_eq!(decoded, kept);
    }

    /// Decodes with the `kafka-protocol` crate, the reference for the hand-written reader.
    fn decode_with_crate(batch: Bytes) -> Vec<LogRecord> {
        let mut buf = batch;
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
        set.records.into_iter().map(from_wire).collect()
    }

    fn arbitrary_record() -> impl proptest::strategy::Strategy<Value = Record> {
        use proptest::prelude::*;
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300));
        let header = ("[a-z]{0,4}", bytes());
        (
            bytes(),
            bytes(),
            -1_000_000i64..1_000_000,
            proptest::collection::vec(header, 0..4),
        )
            .prop_map(|(key, value, timestamp, headers)| {
                let mut seen = std::collections::HashSet::new();
                Record {
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    timestamp: 1_700_000_000_000 + timestamp,
                    // The crate keeps one header per name, so the comparison uses distinct names.
                    headers: headers
                        .into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .map(|(key, value)| RecordHeader {
                            key,
                            value: value.map(Bytes::from),
                        })
                        .collect(),
                }
            })
    }

    proptest::proptest! {
        #[test]
        fn the_batch_writer_agrees_with_the_kafka_protocol_crate(
            records in proptest::collection::vec(arbitrary_record(), 1..40),
        ) {
            let ours = EncodedBatch::encode(&records).unwrap();
            let theirs = EncodedBatch::encode_with_crate(&records, Compression::None).unwrap();
            proptest::prop_assert_eq!(ours.as_bytes(), theirs.as_bytes());
            proptest::prop_assert_eq!(ours.header(), theirs.header());
        }

        #[test]
        fn the_batch_reader_agrees_with_the_kafka_protocol_crate(
            records in proptest::collection::vec(arbitrary_record(), 1..40),
            base in 0i64..1 << 40,
        ) {
            let mut batch = EncodedBatch::encode(&records).unwrap();
            batch.stamp(base, 3);
            let bytes = Bytes::copy_from_slice(batch.as_bytes());
            let ours = decode_records(bytes.clone()).unwrap();
            proptest::prop_assert_eq!(&ours, &decode_with_crate(bytes));
            let back: Vec<Record> = ours.into_iter().map(|r| r.record).collect();
            proptest::prop_assert_eq!(back, records);
        }

        #[test]
        fn a_corrupt_record_section_is_an_error_never_a_panic(
            records in proptest::collection::vec(arbitrary_record(), 1..8),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let batch = EncodedBatch::encode(&records).unwrap();
            let mut bytes = batch.as_bytes().to_vec();
            let i = BATCH_HEADER_LEN + at.index(bytes.len() - BATCH_HEADER_LEN);
            bytes[i] = byte;
            // Recompute the CRC so the reader itself meets the damage.
            let crc = crc32c::crc32c(&bytes[21..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = decode_records(Bytes::from(bytes));
        }
    }

    #[test]
    fn repeated_header_names_are_all_kept() {
        let header = |v: &'static [u8]| RecordHeader {
            key: "trace".into(),
            value: Some(Bytes::from_static(v)),
        };
        let record = Record {
            headers: vec![header(b"a"), header(b"b")],
            ..Record::keyed(&b"k"[..], &b"v"[..], 5)
        };
        let batch = EncodedBatch::encode(std::slice::from_ref(&record)).unwrap();
        let records = decode_records(Bytes::copy_from_slice(batch.as_bytes())).unwrap();
        assert_eq!(records[0].record, record);
    }

    #[test]
    fn batches_back_to_back_split_whole_and_a_cut_one_is_an_error() {
        let first = EncodedBatch::encode(&[Record::keyed(&b"a"[..], &b"1"[..], 1)]).unwrap();
        let mut second = EncodedBatch::encode(&[
            Record::keyed(&b"b"[..], &b"2"[..], 2),
            Record::keyed(&b"c"[..], &b"3"[..], 3),
        ])
        .unwrap();
        second.stamp(1, 0);
        let mut joined = first.as_bytes().to_vec();
        joined.extend_from_slice(second.as_bytes());
        let counts: Vec<(i64, i32)> = split_batches(&joined)
            .map(|b| b.map(|(h, _)| (h.base_offset, h.record_count)).unwrap())
            .collect();
        assert_eq!(counts, vec![(0, 1), (1, 2)]);
        let cut = &joined[..joined.len() - 3];
        let results: Vec<bool> = split_batches(cut).map(|b| b.is_ok()).collect();
        assert_eq!(results, vec![true, false]);
        assert_eq!(split_batches(&[]).count(), 0);
    }
}
