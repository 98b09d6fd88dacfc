//! Background maintenance: retention by time and size, and compaction of compacted topics.
//!
//! The decisions are the pure functions of [`crate::segment`]; this module reads the log,
//! applies them, and writes the result through the commit writer so it is serialized with
//! appends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rocksdb::{BottommostLevelCompaction, CompactOptions, DB, WriteBatch};
use tracing::{debug, info, warn};

use crate::batch::{LogRecord, decode_records, encode_log_records};
use crate::error::{Result, StorageError};
use crate::keys::{self, CF_LOG, CF_META};
use crate::segment::{expired_segment_count, survives};
use crate::store::{Store, corrupt, parse_checked};
use crate::topic::{PartitionLog, TopicLog};
use crate::transactions;
use crate::writer::{AfterWrite, BatchBuilder};

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Segments removed by retention.
    pub segments_deleted: usize,
    /// Batches rewritten or removed by compaction.
    pub batches_compacted: usize,
    /// Records removed by compaction.
    pub records_compacted: u64,
    /// Bytes freed by both.
    pub bytes_reclaimed: u64,
}

impl MaintenanceReport {
    fn add(&mut self, other: MaintenanceReport) {
        self.segments_deleted += other.segments_deleted;
        self.batches_compacted += other.batches_compacted;
        self.records_compacted += other.records_compacted;
        self.bytes_reclaimed += other.bytes_reclaimed;
    }
}

/// How much of the log one read of compaction takes.
const COMPACTION_READ_BYTES: usize = 4 << 20;
/// How many bytes of rewritten batches compaction gathers before it writes them.
const COMPACTION_WRITE_BYTES: usize = 16 << 20;
/// A map entry's cost beyond its key's bytes.
const KEY_OVERHEAD: usize = 48;

/// Compaction's change to one batch: its old base offset, and the new base and bytes (none when
/// every record went).
type BatchRewrite = (i64, Option<(i64, Vec<u8>)>);

/// A stored batch and its decoded records, from a closed segment.
struct ClosedBatch {
    base: i64,
    /// The offset after its last record.
    next: i64,
    size: usize,
    segment: usize,
    attributes_header: crate::batch::BatchHeader,
    records: Vec<LogRecord>,
}

impl Store {
    /// Runs retention and compaction over every topic once, at wall-clock time `now_ms`.
    /// Blocking; run it on a blocking thread.
    pub fn run_maintenance_at(&self, now_ms: i64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        for topic in self.topics_snapshot() {
            for partition in &topic.partitions {
                if topic.is_deleted() {
                    break;
                }
                report.add(self.apply_retention(&topic, partition, now_ms)?);
                if topic.config.read().cleanup_policy.compacts() {
                    report.add(self.compact_partition(&topic, partition, now_ms)?);
                }
            }
        }
        if report != MaintenanceReport::default() {
            info!(?report, "maintenance pass");
        }
        Ok(report)
    }

    /// Runs retention and compaction over every topic once, now.
    pub fn run_maintenance(&self) -> Result<MaintenanceReport> {
        self.run_maintenance_at(crate::now_ms())
    }

    /// Runs maintenance every `every` on tokio's blocking pool until the store is closed.
    pub fn spawn_maintenance(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.run_maintenance()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(StorageError::Closed)) => break,
                    Ok(Err(e)) => warn!(error = %e, "maintenance pass failed"),
                    Err(e) => warn!(error = %e, "maintenance task panicked"),
                }
            }
        })
    }

    fn apply_retention(
        &self,
        topic: &Arc<TopicLog>,
        p: &Arc<PartitionLog>,
        now_ms: i64,
    ) -> Result<MaintenanceReport> {
        let config = topic.config.read().clone();
        let (doomed, new_start) = {
            let tail = p.tail.lock();
            let n = expired_segment_count(&tail.segments, &config, now_ms);
            if n == 0 {
                return Ok(MaintenanceReport::default());
            }
            (tail.segments[..n].to_vec(), tail.segments[n].base_offset)
        };
        let reclaimed: u64 = doomed.iter().map(|s| s.bytes).sum();
        let first = doomed[0].base_offset;
        let (topic_ref, partition) = (topic.clone(), p.clone());
        let build: BatchBuilder = Box::new(move |db: &DB, wb: &mut WriteBatch| {
            let (Some(log), Some(meta)) = (db.cf_handle(CF_LOG), db.cf_handle(CF_META)) else {
                return Err(StorageError::Closed);
            };
            if topic_ref.is_deleted() {
                return Ok(Box::new(|| {}) as AfterWrite);
            }
            let (id, n) = (partition.topic_id, partition.partition);
            wb.delete_range_cf(
                log,
                keys::log_key(id, n, first),
                keys::log_key(id, n, new_start),
            );
            for segment in &doomed {
                wb.delete_cf(meta, keys::segment_key(id, n, segment.base_offset));
            }
            wb.put_cf(meta, keys::log_start_key(id, n), new_start.to_be_bytes());
            // Aborted transactions that ended before the new start concern no reader.
            wb.delete_range_cf(
                meta,
                keys::aborted_txn_key(id, n, 0),
                keys::aborted_txn_key(id, n, new_start),
            );
            Ok(Box::new(move || {
                partition
                    .tail
                    .lock()
                    .segments
                    .retain(|s| s.base_offset >= new_start);
                partition
                    .log_start
                    .fetch_max(new_start, std::sync::atomic::Ordering::AcqRel);
            }) as AfterWrite)
        });
        let count = {
            let tail = p.tail.lock();
            tail.segments
                .iter()
                .take_while(|s| s.base_offset < new_start)
                .count()
        };
        self.run_custom(build)?;
        let (id, n) = (p.topic_id, p.partition);
        self.reclaim_log(
            &keys::log_key(id, n, first),
            &keys::log_key(id, n, new_start),
        )?;
        debug!(topic = %topic.name, partition = p.partition, new_start, "retention");
        Ok(MaintenanceReport {
            segments_deleted: count,
            bytes_reclaimed: reclaimed,
            ..MaintenanceReport::default()
        })
    }

    /// Compacts the `log` keys from `start` up to `end`, just deleted, so that the disk their
    /// batches held (SSTs and blob files) is given back now, as Kafka deletes a segment's file,
    /// and not only once later writes bring compactions there: a topic that went idle would
    /// keep its expired records. Other writes and compactions go on meanwhile.
    fn reclaim_log(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let mut options = CompactOptions::default();
        options.set_exclusive_manual_compaction(false);
        options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
        self.inner
            .db
            .compact_range_cf_opt(self.cf(CF_LOG)?, Some(start), Some(end), &options);
        Ok(())
    }

    /// Reads the batches of closed segments from `from` up to `to`, a chunk at a time, and
    /// hands each to `visit` decoded, until it says to stop; memory holds one chunk at most.
    fn for_each_closed_batch(
        &self,
        p: &PartitionLog,
        (from, to): (i64, i64),
        segments: &[i64],
        mut visit: impl FnMut(ClosedBatch) -> Result<bool>,
    ) -> Result<()> {
        let mut offset = from;
        while offset < to {
            let fetched = self.read(&p.topic, p.partition, offset, COMPACTION_READ_BYTES)?;
            if fetched.batches.is_empty() {
                break;
            }
            for raw in fetched.batches {
                let header = parse_checked(
                    p,
                    i64::from_be_bytes(raw[0..8].try_into().unwrap_or([0; 8])),
                    &raw,
                )?;
                if header.base_offset >= to {
                    return Ok(());
                }
                offset = header.last_offset() + 1;
                let segment = segments
                    .partition_point(|base| *base <= header.base_offset)
                    .saturating_sub(1);
                let size = raw.len();
                let records = decode_records(Bytes::clone(&raw))
                    .map_err(|reason| corrupt(&p.topic, p.partition, header.base_offset, reason))?;
                let batch = ClosedBatch {
                    base: header.base_offset,
                    next: offset,
                    size,
                    segment,
                    attributes_header: header,
                    records,
                };
                if !visit(batch)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Compacts the closed segments of a partition as Kafka's log cleaner does, in two passes
    /// that each hold one chunk of the log at a time. The first maps each key to its latest
    /// offset, from where the last compaction's map ended (the dirty part) up to a bound on the
    /// map; the second rewrites the batches from the log start to the end of the mapped part
    /// that lost records (those a later record of their key replaced), written a few MiB at a
    /// time. What lies past the map waits for the next pass.
    fn compact_partition(
        &self,
        topic: &Arc<TopicLog>,
        p: &Arc<PartitionLog>,
        now_ms: i64,
    ) -> Result<MaintenanceReport> {
        let delete_retention_ms = topic.config.read().delete_retention_ms;
        let closed = {
            let tail = p.tail.lock();
            if tail.segments.len() < 2 {
                return Ok(MaintenanceReport::default());
            }
            tail.segments[..tail.segments.len() - 1].to_vec()
        };
        let from = closed[0].base_offset.max(p.log_start_offset());
        // An open transaction's records may yet be aborted: compaction stops before them.
        let to = closed[closed.len() - 1].next_offset.min(p.stable_offset());
        if to <= from {
            return Ok(MaintenanceReport::default());
        }
        // Aborted records are dropped, as Kafka's cleaner drops them, and never stand for
        // their key: the committed value before them is the latest.
        let aborted = transactions::aborted_in(
            &self.inner.db,
            self.cf(CF_META)?,
            (p.topic_id, p.partition),
            (from, to),
        )?;
        // With nothing new to map, the pass still drops tombstones past delete.retention.ms.
        let dirty = p.compacted_to.load(Ordering::Acquire).clamp(from, to);
        let bases: Vec<i64> = closed.iter().map(|s| s.base_offset).collect();

        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut map_bytes = 0usize;
        let mut mapped_to = dirty;
        self.for_each_closed_batch(p, (dirty, to), &bases, |batch| {
            let records = if transactions::is_aborted(&batch.attributes_header, &aborted) {
                &[][..]
            } else {
                &batch.records[..]
            };
            for r in records {
                if let Some(key) = r.record.key.as_deref()
                    && latest.insert(key.to_vec(), r.offset).is_none()
                {
                    map_bytes += key.len() + KEY_OVERHEAD;
                }
            }
            mapped_to = batch.next;
            Ok(map_bytes < self.options().compaction_map_bytes)
        })?;

        let mut report = MaintenanceReport::default();
        let mut chunk = CompactionChunk::new(closed);
        self.for_each_closed_batch(p, (from, mapped_to.max(dirty)), &bases, |batch| {
            let old = now_ms.saturating_sub(chunk.segments[batch.segment].last_append_ms)
                > delete_retention_ms;
            let aborted = transactions::is_aborted(&batch.attributes_header, &aborted);
            let kept: Vec<LogRecord> = batch
                .records
                .iter()
                .filter(|_| !aborted)
                .filter(|r| {
                    let key = r.record.key.as_deref();
                    survives(
                        key.map(|k| latest.get(k).copied()),
                        r.offset,
                        r.record.value.is_none(),
                        old,
                    )
                })
                .cloned()
                .collect();
            if kept.len() == batch.records.len() {
                return Ok(true);
            }
            report.batches_compacted += 1;
            report.records_compacted += (batch.records.len() - kept.len()) as u64;
            let new = if kept.is_empty() {
                None
            } else {
                let mut encoded = encode_log_records(&kept, &batch.attributes_header)
                    .map_err(|reason| corrupt(&p.topic, p.partition, batch.base, reason))?;
                let new_base = encoded.header().base_offset;
                encoded.stamp(new_base, batch.attributes_header.partition_leader_epoch);
                Some((new_base, encoded.as_bytes().to_vec()))
            };
            let new_size = new.as_ref().map_or(0, |(_, bytes)| bytes.len());
            report.bytes_reclaimed += (batch.size - new_size) as u64;
            chunk.rewrite(batch.segment, batch.base, new, batch.size);
            if chunk.bytes >= COMPACTION_WRITE_BYTES {
                self.write_compaction(topic, p, &mut chunk)?;
            }
            Ok(true)
        })?;
        self.write_compaction(topic, p, &mut chunk)?;
        p.compacted_to.store(mapped_to, Ordering::Release);
        if report.batches_compacted > 0 {
            debug!(topic = %topic.name, partition = p.partition, ?report, "compaction");
        }
        Ok(report)
    }

    /// Writes the rewrites gathered so far, with the segments' new sizes, through the commit
    /// writer.
    fn write_compaction(
        &self,
        topic: &Arc<TopicLog>,
        p: &Arc<PartitionLog>,
        chunk: &mut CompactionChunk,
    ) -> Result<()> {
        if chunk.rewrites.is_empty() {
            return Ok(());
        }
        let rewrites = std::mem::take(&mut chunk.rewrites);
        chunk.bytes = 0;
        let updated_segments = chunk.segments.clone();
        let (topic_ref, partition) = (topic.clone(), p.clone());
        let build: BatchBuilder = Box::new(move |db: &DB, wb: &mut WriteBatch| {
            let (Some(log), Some(meta)) = (db.cf_handle(CF_LOG), db.cf_handle(CF_META)) else {
                return Err(StorageError::Closed);
            };
            if topic_ref.is_deleted() {
                return Ok(Box::new(|| {}) as AfterWrite);
            }
            let (id, n) = (partition.topic_id, partition.partition);
            let start = partition.log_start_offset();
            for (old_base, new) in &rewrites {
                wb.delete_cf(log, keys::log_key(id, n, *old_base));
                if let Some((new_base, bytes)) = new {
                    wb.put_cf(log, keys::log_key(id, n, *new_base), bytes);
                }
            }
            let live: Vec<_> = updated_segments
                .iter()
                .filter(|s| s.next_offset > start)
                .copied()
                .collect();
            for s in &live {
                wb.put_cf(meta, keys::segment_key(id, n, s.base_offset), s.encode());
            }
            Ok(Box::new(move || {
                let mut tail = partition.tail.lock();
                for s in tail.segments.iter_mut() {
                    if let Some(updated) = live.iter().find(|u| u.base_offset == s.base_offset) {
                        s.bytes = updated.bytes;
                    }
                }
            }) as AfterWrite)
        });
        self.run_custom(build)
    }
}

/// Compaction's pending writes: the batches rewritten since the last write, and every closed
/// segment with its size so far.
struct CompactionChunk {
    segments: Vec<crate::segment::SegmentMeta>,
    rewrites: Vec<BatchRewrite>,
    bytes: usize,
}

impl CompactionChunk {
    fn new(segments: Vec<crate::segment::SegmentMeta>) -> Self {
        CompactionChunk {
            segments,
            rewrites: Vec::new(),
            bytes: 0,
        }
    }

    fn rewrite(
        &mut self,
        segment: usize,
        old_base: i64,
        new: Option<(i64, Vec<u8>)>,
        old_size: usize,
    ) {
        let new_size = new.as_ref().map_or(0, |(_, bytes)| bytes.len());
        let s = &mut self.segments[segment];
        s.bytes = (s.bytes as i64 + new_size as i64 - old_size as i64).max(0) as u64;
        self.bytes += new_size + 32;
        self.rewrites.push((old_base, new));
    }
}
