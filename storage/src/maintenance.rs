//! Background maintenance: retention by time and size, and compaction of compacted topics.
//!
//! The decisions are the pure functions of [`crate::segment`]; this module reads the log,
//! applies them, and writes the result through the commit writer so it is serialized with
//! appends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocksdb::{DB, WriteBatch};
use tracing::{debug, info, warn};

use crate::batch::{LogRecord, decode_records, encode_log_records};
use crate::error::{Result, StorageError};
use crate::keys::{self, CF_LOG, CF_META};
use crate::segment::{CompactionCandidate, compaction_survivors, expired_segment_count};
use crate::store::{Store, corrupt, parse_checked};
use crate::topic::{PartitionLog, TopicLog};
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

/// Compaction's change to one batch: its old base offset, and the new base and bytes (none when
/// every record went).
type BatchRewrite = (i64, Option<(i64, Vec<u8>)>);

/// A stored batch and its decoded records, from a closed segment.
struct ClosedBatch {
    base: i64,
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
        debug!(topic = %topic.name, partition = p.partition, new_start, "retention");
        Ok(MaintenanceReport {
            segments_deleted: count,
            bytes_reclaimed: reclaimed,
            ..MaintenanceReport::default()
        })
    }

    fn read_closed_batches(
        &self,
        p: &PartitionLog,
        from: i64,
        to: i64,
        segments: &[i64],
    ) -> Result<Vec<ClosedBatch>> {
        let mut out = Vec::new();
        let mut offset = from;
        while offset < to {
            let fetched = self.read(&p.topic, p.partition, offset, 4 << 20)?;
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
                    return Ok(out);
                }
                offset = header.last_offset() + 1;
                let segment = segments
                    .partition_point(|base| *base <= header.base_offset)
                    .saturating_sub(1);
                let size = raw.len();
                let records = decode_records(Bytes::clone(&raw))
                    .map_err(|reason| corrupt(&p.topic, p.partition, header.base_offset, reason))?;
                out.push(ClosedBatch {
                    base: header.base_offset,
                    size,
                    segment,
                    attributes_header: header,
                    records,
                });
            }
        }
        Ok(out)
    }

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
        let to = closed[closed.len() - 1].next_offset;
        let bases: Vec<i64> = closed.iter().map(|s| s.base_offset).collect();
        let batches = self.read_closed_batches(p, from, to, &bases)?;

        let candidates: Vec<CompactionCandidate<'_>> = batches
            .iter()
            .flat_map(|b| {
                let old =
                    now_ms.saturating_sub(closed[b.segment].last_append_ms) > delete_retention_ms;
                b.records.iter().map(move |r| CompactionCandidate {
                    offset: r.offset,
                    key: r.record.key.as_deref(),
                    tombstone: r.record.value.is_none(),
                    past_delete_retention: old,
                })
            })
            .collect();
        let survivors: HashSet<i64> = compaction_survivors(&candidates).into_iter().collect();
        drop(candidates);

        let mut report = MaintenanceReport::default();
        let mut rewrites: Vec<BatchRewrite> = Vec::new();
        let mut segment_bytes: HashMap<usize, i64> = HashMap::new();
        for batch in &batches {
            let kept: Vec<LogRecord> = batch
                .records
                .iter()
                .filter(|r| survivors.contains(&r.offset))
                .cloned()
                .collect();
            if kept.len() == batch.records.len() {
                continue;
            }
            report.batches_compacted += 1;
            report.records_compacted += (batch.records.len() - kept.len()) as u64;
            let new_size = if kept.is_empty() {
                rewrites.push((batch.base, None));
                0
            } else {
                let encoded = encode_log_records(&kept, &batch.attributes_header)
                    .map_err(|reason| corrupt(&p.topic, p.partition, batch.base, reason))?;
                let mut encoded = encoded;
                let new_base = encoded.header().base_offset;
                encoded.stamp(new_base, batch.attributes_header.partition_leader_epoch);
                let len = encoded.len();
                rewrites.push((batch.base, Some((new_base, encoded.as_bytes().to_vec()))));
                len
            };
            report.bytes_reclaimed += (batch.size - new_size) as u64;
            *segment_bytes.entry(batch.segment).or_default() += new_size as i64 - batch.size as i64;
        }
        if rewrites.is_empty() {
            return Ok(report);
        }
        let mut updated_segments = closed.clone();
        for (index, delta) in &segment_bytes {
            let s = &mut updated_segments[*index];
            s.bytes = (s.bytes as i64 + delta).max(0) as u64;
        }
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
        self.run_custom(build)?;
        debug!(topic = %topic.name, partition = p.partition, ?report, "compaction");
        Ok(report)
    }
}
