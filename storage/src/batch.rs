//! Records and the on-disk unit that holds them: a Kafka record batch (magic v2).
//!
//! Batches are encoded and decoded with the `kafka-protocol` crate's records codec. Only the fixed
//! 61-byte header is parsed by hand, because the log needs it on every append and every read.
//! The base offset and the partition leader epoch sit outside the CRC, so the log stamps them at
//! append time without re-encoding.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
    Record as WireRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};

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
        Self::from_bytes(bytes)
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

    /// Whether any record has no key (scans the records).
    pub fn has_keyless_record(&self) -> Result<bool, String> {
        let records = decode_records(self.bytes.clone().freeze())?;
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
        compression: compression_of(header.attributes),
    };
    RecordBatchEncoder::encode(&mut bytes, wire.iter(), &options).map_err(|e| e.to_string())?;
    let mut batch = EncodedBatch::from_bytes(bytes)?;
    batch.header.base_offset = first;
    Ok(batch)
}

fn compression_of(attributes: i16) -> Compression {
    match attributes & 0x7 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
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
    let header = BatchHeader::parse(&batch)?;
    if header.is_control() {
        verify_crc(&batch, &header)?;
        return Ok(Vec::new());
    }
    let mut buf = batch;
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
    Ok(set
        .records
        .into_iter()
        .map(|r| LogRecord {
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
        })
        .collect())
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
