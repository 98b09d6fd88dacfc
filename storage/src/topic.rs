//! In-memory state of the topics and partitions a store holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::TopicConfig;
use crate::producers::{CachedProducer, ProducerCache};
use crate::segment::{SegmentMeta, should_roll};
use crate::transactions::OpenTxns;

/// What `meta` stores about a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredTopic {
    pub name: String,
    pub id: u32,
    pub config: TopicConfig,
    pub created_ms: i64,
}

/// A live topic.
#[derive(Debug)]
pub(crate) struct TopicLog {
    pub name: String,
    pub id: u32,
    pub config: RwLock<TopicConfig>,
    pub created_ms: i64,
    pub partitions: Vec<Arc<PartitionLog>>,
    deleted: AtomicBool,
}

impl TopicLog {
    pub fn new(stored: StoredTopic, partitions: Vec<Arc<PartitionLog>>) -> Self {
        TopicLog {
            name: stored.name,
            id: stored.id,
            config: RwLock::new(stored.config),
            created_ms: stored.created_ms,
            partitions,
            deleted: AtomicBool::new(false),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }
}

/// A live partition: where the next offset comes from, and what readers may see.
#[derive(Debug)]
pub(crate) struct PartitionLog {
    pub topic: String,
    pub topic_id: u32,
    pub partition: u32,
    /// Only the commit writer advances `next_offset`; maintenance edits closed segments.
    pub tail: Mutex<PartitionTail>,
    /// The high watermark: every offset below it is written and readable.
    pub end: watch::Sender<i64>,
    /// The last stable offset: below it, every transaction is committed or aborted.
    pub stable: watch::Sender<i64>,
    /// The abort marker's offset of the newest aborted transaction, or -1 when none was.
    pub last_abort: AtomicI64,
    pub log_start: AtomicI64,
    /// Where compaction's next key map starts: everything before it was compacted against a map
    /// of the keys after it. In memory only; after a restart, compaction starts over.
    pub compacted_to: AtomicI64,
}

impl PartitionLog {
    pub fn new(
        topic: &str,
        topic_id: u32,
        partition: u32,
        next_offset: i64,
        log_start: i64,
        segments: Vec<SegmentMeta>,
    ) -> Self {
        PartitionLog {
            topic: topic.to_string(),
            topic_id,
            partition,
            tail: Mutex::new(PartitionTail {
                next_offset,
                segments,
                producers: ProducerCache::default(),
                open_txns: OpenTxns::default(),
            }),
            end: watch::Sender::new(next_offset),
            stable: watch::Sender::new(next_offset),
            last_abort: AtomicI64::new(-1),
            log_start: AtomicI64::new(log_start),
            compacted_to: AtomicI64::new(0),
        }
    }

    /// The partition as recovered with its open transactions and newest abort.
    pub fn with_transactions(self, open: OpenTxns, last_abort: i64) -> Self {
        let end = self.end_offset();
        self.stable.send_replace(open.stable_offset(end));
        self.last_abort.store(last_abort, Ordering::Release);
        self.tail.lock().open_txns = open;
        self
    }

    pub fn end_offset(&self) -> i64 {
        *self.end.borrow()
    }

    pub fn stable_offset(&self) -> i64 {
        *self.stable.borrow()
    }

    /// Publishes a write: the new high watermark and last stable offset.
    pub fn publish(&self, (end, stable): Published) {
        self.end.send_replace(end);
        self.stable.send_replace(stable);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }
}

/// The writable end of a partition.
#[derive(Debug)]
pub(crate) struct PartitionTail {
    pub next_offset: i64,
    /// Oldest first; the last one is active.
    pub segments: Vec<SegmentMeta>,
    /// Idempotent producers' states, as far as they are in memory.
    pub producers: ProducerCache,
    /// The transactions open on the partition.
    pub open_txns: OpenTxns,
}

/// What a failed group commit restores.
#[derive(Debug, Clone)]
pub(crate) struct TailSnapshot {
    next_offset: i64,
    active: Option<SegmentMeta>,
    /// Producer states the group changed, with what was cached before, oldest change first.
    pub producers: Vec<(i64, Option<CachedProducer>)>,
    open_txns: OpenTxns,
}

/// A partition's high watermark and last stable offset, as a group commit leaves them.
pub(crate) type Published = (i64, i64);

impl PartitionTail {
    /// What publishing the tail as it is now would publish.
    pub fn published(&self) -> Published {
        (
            self.next_offset,
            self.open_txns.stable_offset(self.next_offset),
        )
    }

    pub fn snapshot(&self) -> TailSnapshot {
        TailSnapshot {
            next_offset: self.next_offset,
            active: self.segments.last().copied(),
            producers: Vec::new(),
            open_txns: self.open_txns.clone(),
        }
    }

    pub fn restore(&mut self, snapshot: &TailSnapshot) {
        self.next_offset = snapshot.next_offset;
        self.open_txns = snapshot.open_txns.clone();
        for (producer_id, before) in snapshot.producers.iter().rev() {
            self.producers.restore(*producer_id, before.clone());
        }
        match snapshot.active {
            Some(active) => {
                self.segments
                    .retain(|s| s.base_offset <= active.base_offset);
                if let Some(last) = self.segments.last_mut()
                    && last.base_offset == active.base_offset
                {
                    *last = active;
                }
            }
            None => self.segments.clear(),
        }
    }

    /// The active segment a batch of `bytes` goes into, rolling a new one when due.
    pub fn active_segment_for(
        &mut self,
        bytes: usize,
        now_ms: i64,
        config: &TopicConfig,
    ) -> &mut SegmentMeta {
        let roll = match self.segments.last() {
            None => true,
            Some(active) => should_roll(active, bytes, now_ms, config),
        };
        if roll {
            self.segments
                .push(SegmentMeta::new(self.next_offset, now_ms));
        }
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }
}
