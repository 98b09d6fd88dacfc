//! Transactions in the log, as Kafka keeps them: a transactional producer's batches carry the
//! transactional bit; a control batch (the commit or abort marker, written by the transaction
//! coordinator) ends its transaction on each partition. Each partition knows its open
//! transactions (producer id and first offset, stored so a restart finds them again), which give
//! the last stable offset (LSO): the first offset of the oldest open transaction, or the high
//! watermark when none is open. Aborted transactions are indexed per partition by the offset of
//! their abort marker, so a read_committed reader learns which batches to drop.
//!
//! Everything here changes only in the commit writer, under the partition's tail lock, in the
//! same RocksDB write as the batches it describes.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, Record as WireRecord, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, WriteBatch};

use crate::batch::{BatchHeader, EncodedBatch};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::producers::ProducerState;
use crate::store::Store;

/// A transaction marker to write: ends one producer's transaction on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMarker {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The transactional producer.
    pub producer_id: i64,
    /// Its epoch when the transaction ended (bumped when the coordinator fenced it).
    pub producer_epoch: i16,
    /// Commit, or abort.
    pub commit: bool,
    /// The coordinator's epoch, written in the marker's value as Kafka writes it.
    pub coordinator_epoch: i32,
}

/// An aborted transaction on a partition, as Fetch reports it to read_committed consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose records in the range are aborted.
    pub producer_id: i64,
    /// Its first offset on the partition.
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
}

/// What a reader sees of transactions (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everything up to the high watermark, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Only up to the last stable offset, and never an aborted transaction's records.
    ReadCommitted,
}

impl Isolation {
    /// Kafka's wire value: 0 read_uncommitted, 1 read_committed.
    pub fn from_wire(level: i8) -> Isolation {
        if level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        }
    }
}

/// The open transactions of one partition: producer id to its first offset there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OpenTxns(BTreeMap<i64, i64>);

impl OpenTxns {
    /// The last stable offset, given the high watermark.
    pub fn stable_offset(&self, end: i64) -> i64 {
        self.0.values().copied().min().unwrap_or(end).min(end)
    }

    /// Every open transaction, as (producer id, first offset).
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().map(|(p, f)| (*p, *f))
    }
}

/// Reads a partition's open transactions back at startup.
pub(crate) fn load_open(
    db: &DB,
    meta: &ColumnFamily,
    topic_id: u32,
    partition: u32,
) -> Result<OpenTxns> {
    let prefix = keys::open_txn_prefix(topic_id, partition);
    let mut open = OpenTxns::default();
    for item in db.iterator_cf(meta, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let (Some(producer), Some(first)) = (
            key.get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes),
            value.as_ref().try_into().ok().map(i64::from_be_bytes),
        ) else {
            return Err(StorageError::CorruptMetadata {
                key: format!("open transaction of topic id {topic_id} partition {partition}"),
                reason: "not 8 bytes".into(),
            });
        };
        open.0.insert(producer, first);
    }
    Ok(open)
}

/// The abort marker's offset of the partition's newest aborted transaction, or -1: a reader
/// whose range starts past it need not look in the index.
pub(crate) fn load_last_abort(
    db: &DB,
    meta: &ColumnFamily,
    topic_id: u32,
    partition: u32,
) -> Result<i64> {
    let prefix = keys::aborted_txn_prefix(topic_id, partition);
    let end = keys::prefix_successor(&prefix).unwrap_or_default();
    let mut iter = db.raw_iterator_cf(meta);
    iter.seek_for_prev(&end);
    let mut last = -1;
    if iter.valid()
        && let Some(key) = iter.key()
        && key.starts_with(&prefix)
    {
        last = key
            .get(prefix.len()..)
            .and_then(|b| b.try_into().ok())
            .map_or(-1, |b| u64::from_be_bytes(b) as i64);
    }
    iter.status()?;
    Ok(last)
}

/// The aborted transactions that overlap `[from, to)`, oldest marker first, as Kafka's
/// `collectAbortedTxns` gathers them: every one whose marker is at or after `from` and whose
/// first offset is before `to`, up to the first after whose marker the last stable offset was
/// at or past `to` (every transaction aborted later began at or after that offset).
pub(crate) fn aborted_in(
    db: &DB,
    meta: &ColumnFamily,
    (topic_id, partition): (u32, u32),
    (from, to): (i64, i64),
) -> Result<Vec<AbortedTxn>> {
    let prefix = keys::aborted_txn_prefix(topic_id, partition);
    let start = keys::aborted_txn_key(topic_id, partition, from.max(0));
    let mut out = Vec::new();
    for item in db.iterator_cf(meta, IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let last_offset = key
            .get(prefix.len()..)
            .and_then(|b| b.try_into().ok())
            .map(|b| u64::from_be_bytes(b) as i64);
        let at = |from: usize| {
            value
                .get(from..from + 8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes)
        };
        let (Some(last_offset), Some(producer_id), Some(first_offset), Some(stable)) =
            (last_offset, at(0), at(8), at(16))
        else {
            return Err(StorageError::CorruptMetadata {
                key: format!("aborted transaction of topic id {topic_id} partition {partition}"),
                reason: "wrong length".into(),
            });
        };
        if first_offset < to {
            out.push(AbortedTxn {
                producer_id,
                first_offset,
                last_offset,
            });
        }
        if stable >= to {
            break;
        }
    }
    Ok(out)
}

/// Whether a batch with this header lies in one of the aborted transactions.
pub(crate) fn is_aborted(header: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    header.is_transactional()
        && !header.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == header.producer_id
                && a.first_offset <= header.base_offset
                && header.base_offset < a.last_offset
        })
}

/// The control batch of a marker: one record whose key is version 0 and the marker type (0
/// abort, 1 commit) and whose value is version 0 and the coordinator epoch.
pub(crate) fn control_batch(
    marker: &TxnMarker,
    timestamp: i64,
) -> std::result::Result<EncodedBatch, String> {
    let mut key = BytesMut::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(marker.commit).to_be_bytes());
    let mut value = BytesMut::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = WireRecord {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: marker.producer_id,
        producer_epoch: marker.producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut bytes = BytesMut::with_capacity(96);
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut bytes, std::iter::once(&record), &options)
        .map_err(|e| e.to_string())?;
    EncodedBatch::from_bytes(bytes)
}

/// Notes a transactional data batch appended at `base`: the first of its transaction on the
/// partition opens it there.
pub(crate) fn note_data(
    open: &mut OpenTxns,
    (meta, wb): (&ColumnFamily, &mut WriteBatch),
    (topic_id, partition): (u32, u32),
    header: &BatchHeader,
) {
    if let std::collections::btree_map::Entry::Vacant(slot) = open.0.entry(header.producer_id) {
        slot.insert(header.base_offset);
        wb.put_cf(
            meta,
            keys::open_txn_key(topic_id, partition, header.producer_id),
            header.base_offset.to_be_bytes(),
        );
    }
}

/// Notes a marker appended at `offset`: its producer's transaction on the partition ends, and
/// an abort of one that wrote there enters the index with the last stable offset just after
/// it. Returns the marker's offset when it indexed an abort.
pub(crate) fn note_marker(
    open: &mut OpenTxns,
    (meta, wb): (&ColumnFamily, &mut WriteBatch),
    (topic_id, partition): (u32, u32),
    (producer_id, offset, commit): (i64, i64, bool),
) -> Option<i64> {
    let first = open.0.remove(&producer_id)?;
    wb.delete_cf(meta, keys::open_txn_key(topic_id, partition, producer_id));
    if commit {
        return None;
    }
    let stable = open.stable_offset(offset + 1);
    let mut value = Vec::with_capacity(24);
    value.extend_from_slice(&producer_id.to_be_bytes());
    value.extend_from_slice(&first.to_be_bytes());
    value.extend_from_slice(&stable.to_be_bytes());
    wb.put_cf(
        meta,
        keys::aborted_txn_key(topic_id, partition, offset),
        value,
    );
    Some(offset)
}

/// A producer with state on a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch on the partition.
    pub epoch: i16,
    /// The sequence of its last record there, or -1.
    pub last_sequence: i32,
    /// The first offset of its open transaction there, if it has one.
    pub open_transaction_offset: Option<i64>,
}

impl Store {
    /// The producers with state on a partition, and each one's open transaction.
    pub fn producers(&self, topic: &str, partition: u32) -> Result<Vec<ProducerSummary>> {
        let (_, p) = self.partition(topic, partition)?;
        let open: BTreeMap<i64, i64> = p.tail.lock().open_txns.iter().collect();
        let prefix = keys::producer_prefix(p.topic_id, p.partition);
        let meta = self.cf(keys::CF_META)?;
        let mut out = Vec::new();
        let start = IteratorMode::From(&prefix, Direction::Forward);
        for item in self.inner.db.iterator_cf(meta, start) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let producer_id = key
                .get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map_or(-1, i64::from_be_bytes);
            let Some(state) = ProducerState::decode(&value) else {
                continue;
            };
            out.push(ProducerSummary {
                producer_id,
                epoch: state.epoch(),
                last_sequence: state.last_sequence(),
                open_transaction_offset: open.get(&producer_id).copied(),
            });
        }
        // A producer whose transaction holds only a marker-less open entry still shows.
        for (producer_id, first) in open {
            if !out.iter().any(|s| s.producer_id == producer_id) {
                out.push(ProducerSummary {
                    producer_id,
                    epoch: -1,
                    last_sequence: -1,
                    open_transaction_offset: Some(first),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_encodes_as_a_control_batch_and_reads_back() {
        for commit in [true, false] {
            let marker = TxnMarker {
                topic: "t".into(),
                partition: 0,
                producer_id: 42,
                producer_epoch: 3,
                commit,
                coordinator_epoch: 0,
            };
            let batch = control_batch(&marker, 1_700_000_000_000).unwrap();
            let header = batch.header();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, -1);
            let mut bytes = Bytes::copy_from_slice(batch.as_bytes());
            let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
            let record = &decoded.records[0];
            assert!(record.control);
            let key = record.key.as_deref().unwrap();
            assert_eq!(key, [0, 0, 0, u8::from(commit)]);
        }
    }

    #[test]
    fn the_stable_offset_is_the_oldest_open_transaction() {
        let mut open = OpenTxns::default();
        assert_eq!(open.stable_offset(10), 10);
        open.0.insert(7, 4);
        open.0.insert(3, 6);
        assert_eq!(open.stable_offset(10), 4);
    }

    #[test]
    fn only_the_aborted_producers_batches_in_range_are_aborted() {
        let header = |producer_id, base_offset, attributes| BatchHeader {
            base_offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            crc: 0,
            attributes,
            last_offset_delta: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: 1,
        };
        let aborted = [AbortedTxn {
            producer_id: 5,
            first_offset: 10,
            last_offset: 20,
        }];
        assert!(is_aborted(&header(5, 12, 0x10), &aborted));
        assert!(!is_aborted(&header(6, 12, 0x10), &aborted));
        assert!(!is_aborted(&header(5, 21, 0x10), &aborted));
        assert!(!is_aborted(&header(5, 12, 0), &aborted));
        assert!(!is_aborted(&header(5, 20, 0x30), &aborted));
    }
}
