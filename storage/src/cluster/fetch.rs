//! Reading the cluster's partitions from any offset, as [`crate::Store::read_records`] promises.
//!
//! The store's read API names a partition and an offset, never a reader; Kafka consumers keep
//! a position per assigned partition. So reads are served by cursors: a cursor is one
//! partition assigned to one consumer, fetching ahead from where its reader stands into a
//! bounded buffer. A read that continues where a cursor's last read ended takes that cursor's
//! records. Another reader of the same partition gets a cursor on another consumer of the pool
//! (a consumer can hold a partition once), and a cursor left idle is moved to the next offset
//! asked for, or dropped after a minute. Every consumer reads as read_committed, as the
//! embedded log's readers do.
//!
//! Each consumer has one thread polling it, which serves librdkafka's events and files each
//! record with its cursor; readers take records from the cursors without touching librdkafka.
//! A cursor moved to another offset is sought there by that thread too, between polls: a
//! record the thread has polled but not filed yet may come from before the move, and only the
//! thread knows when none can.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::client::{self, Logs};
use super::{ClusterOptions, cluster_error};
use crate::batch::{LogRecord, Record, RecordHeader};
use crate::error::{Result, StorageError};
use crate::store::FetchedRecords;

/// Bytes a consumer's cursors buffer ahead of their readers, together, before its thread stops
/// taking records from librdkafka (which then stops fetching once its own queue,
/// `queued.max.messages.kbytes`, is full). This is the usual backpressure: pausing a partition
/// in librdkafka drops what it fetched for it and fetches it again on resuming, which held a
/// query with a backlog to a fifth of its speed when cursors were paused at a few MiB each.
const CONSUMER_BYTES: usize = 64 << 20;
/// Bytes one cursor buffers before its partition is paused after all: a reader that stopped
/// reading must not hold the whole budget from the other partitions of its consumer.
const CURSOR_BYTES: usize = CONSUMER_BYTES / 2;
/// How long a consumer whose cursors are full waits before it looks again.
const FULL_WAIT: Duration = Duration::from_millis(2);
/// A cursor unread this long may be moved to another offset of its partition.
const REPOSITION_AFTER: Duration = Duration::from_secs(2);
/// A cursor unread this long is dropped, and its partition unassigned.
const DROP_AFTER: Duration = Duration::from_secs(60);
/// How long a consumer's thread waits for records before it looks after its cursors.
const POLL: Duration = Duration::from_millis(100);
/// The most records a consumer's thread files before it wakes their readers.
const FILE_AT_ONCE: usize = 4096;

/// The pool of consumers and their cursors.
pub(crate) struct Fetcher {
    options: ClusterOptions,
    members: Mutex<Vec<Arc<Member>>>,
}

/// One consumer of the pool, its cursors, and whether its thread should stop.
struct Member {
    consumer: BaseConsumer<Logs>,
    cursors: Mutex<HashMap<String, HashMap<u32, Arc<Cursor>>>>,
    /// Cursors moved by their readers, for the consumer's thread to seek.
    moves: Mutex<Vec<(String, u32, Arc<Cursor>)>>,
    stop: AtomicBool,
}

/// One partition on one consumer: the records fetched ahead of its reader.
struct Cursor {
    state: Mutex<CursorState>,
    ready: Notify,
}

struct CursorState {
    records: VecDeque<LogRecord>,
    bytes: usize,
    /// Where the reader goes on: every record before it was handed out.
    next: i64,
    /// The offset after the last record fetched; records below it are stale.
    fetched: i64,
    paused: bool,
    used: Instant,
    /// Where a reader moved the cursor, until the consumer's thread has sought there: what
    /// the thread polls meanwhile was fetched from the old position, and is dropped.
    moving: Option<i64>,
}

impl CursorState {
    /// Files a record the consumer fetched, unless it is stale: below what was fetched
    /// already, or fetched before a move the consumer has not made yet. Filed, a record past
    /// a gap would have the reader skip the gap.
    fn file(&mut self, record: LogRecord) -> bool {
        if self.moving.is_some() || record.offset < self.fetched {
            return false;
        }
        self.fetched = record.offset + 1;
        self.bytes += record_bytes(&record);
        self.records.push_back(record);
        true
    }

    /// Moves the cursor to `offset`, dropping what it fetched, until the consumer seeks there.
    fn move_to(&mut self, offset: i64) {
        self.records.clear();
        self.bytes = 0;
        self.next = offset;
        self.fetched = offset;
        self.paused = false;
        self.used = Instant::now();
        self.moving = Some(offset);
    }

    /// The consumer has sought to `offset`: what it polls from now on is the cursor's, unless
    /// the cursor moved again meanwhile.
    fn moved(&mut self, offset: i64) {
        if self.moving == Some(offset) {
            self.moving = None;
        }
    }

    /// The consumer's position, past transaction markers it hands out no record for; whether
    /// that moved what was fetched. A position read before a move is not the cursor's.
    fn pass_to(&mut self, position: i64) -> bool {
        if self.moving.is_some() || position <= self.fetched {
            return false;
        }
        self.fetched = position;
        true
    }

    /// Takes records up to about `max_bytes` (at least one when any is there) for the reader.
    fn take(&mut self, max_bytes: usize) -> Vec<LogRecord> {
        let mut records = Vec::new();
        let mut taken = 0;
        while let Some(record) = self.records.front() {
            let size = record_bytes(record);
            if !records.is_empty() && taken + size > max_bytes {
                break;
            }
            taken += size;
            if let Some(record) = self.records.pop_front() {
                self.next = record.offset + 1;
                records.push(record);
            }
        }
        self.bytes -= taken;
        if self.records.is_empty() {
            // Every record fetched was handed out; what lies between is transaction markers.
            self.next = self.next.max(self.fetched);
        }
        records
    }
}

impl Cursor {
    fn at(offset: i64) -> Arc<Cursor> {
        Arc::new(Cursor {
            state: Mutex::new(CursorState {
                records: VecDeque::new(),
                bytes: 0,
                next: offset,
                fetched: offset,
                paused: false,
                used: Instant::now(),
                moving: None,
            }),
            ready: Notify::new(),
        })
    }
}

fn record_bytes(record: &LogRecord) -> usize {
    let record = &record.record;
    record.key.as_ref().map_or(0, Bytes::len) + record.value.as_ref().map_or(0, Bytes::len) + 32
}

fn one(topic: &str, partition: u32, offset: Option<i64>) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    match offset {
        Some(at) => list
            .add_partition_offset(topic, partition as i32, Offset::Offset(at))
            .map_err(|e| cluster_error(format!("assigning {topic}-{partition}"), e))?,
        None => {
            list.add_partition(topic, partition as i32);
        }
    }
    Ok(list)
}

impl Member {
    fn start(options: &ClusterOptions, index: usize) -> Result<Arc<Member>> {
        let consumer: BaseConsumer<Logs> = client::config(
            options,
            &format!("reader-{index}"),
            &[
                // No group: partitions are assigned by hand and positions kept by the store.
                ("group.id", "eddy-unused"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                ("allow.auto.create.topics", "false"),
                ("queued.max.messages.kbytes", "16384"),
                ("fetch.wait.max.ms", "100"),
            ],
        )
        .create_with_context(Logs)
        .map_err(|e| cluster_error("starting a reader", e))?;
        let member = Arc::new(Member {
            consumer,
            cursors: Mutex::new(HashMap::new()),
            moves: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let polled = member.clone();
        std::thread::Builder::new()
            .name(format!("eddy-kafka-rd{index}"))
            .spawn(move || polled.run())
            .map_err(StorageError::Io)?;
        Ok(member)
    }

    fn cursor(&self, topic: &str, partition: u32) -> Option<Arc<Cursor>> {
        self.cursors.lock().get(topic)?.get(&partition).cloned()
    }

    /// Assigns a partition to this consumer at `offset`, with a new cursor.
    fn assign(&self, topic: &str, partition: u32, offset: i64) -> Result<Arc<Cursor>> {
        let cursor = Cursor::at(offset);
        // Filed before the assignment, so the first records find it.
        self.cursors
            .lock()
            .entry(topic.to_string())
            .or_default()
            .insert(partition, cursor.clone());
        if let Err(e) = self
            .consumer
            .incremental_assign(&one(topic, partition, Some(offset))?)
        {
            self.forget(topic, partition);
            return Err(cluster_error(format!("assigning {topic}-{partition}"), e));
        }
        Ok(cursor)
    }

    /// Moves a cursor to `offset`, dropping what it fetched; the consumer's thread seeks there
    /// before it polls again.
    fn reposition(&self, topic: &str, partition: u32, cursor: &Arc<Cursor>, offset: i64) {
        cursor.state.lock().move_to(offset);
        self.moves
            .lock()
            .push((topic.to_string(), partition, cursor.clone()));
    }

    /// Seeks the cursors moved since the last poll (on the consumer's thread). librdkafka
    /// discards what it fetched before a seek (it versions its fetches), so what the next poll
    /// gives is from the new offset.
    fn make_moves(&self) {
        let moves = std::mem::take(&mut *self.moves.lock());
        for (topic, partition, cursor) in moves {
            let Some(offset) = cursor.state.lock().moving else {
                continue;
            };
            if !self
                .cursor(&topic, partition)
                .is_some_and(|now| Arc::ptr_eq(&now, &cursor))
            {
                // Dropped as idle meanwhile: its partition is no longer assigned.
                continue;
            }
            match self.seek(&topic, partition, offset) {
                Ok(()) => cursor.state.lock().moved(offset),
                Err(error) => {
                    // Its reader's next read finds no cursor there and starts another.
                    warn!(%error, topic, partition, offset, "moving a reader of the cluster");
                    self.forget(&topic, partition);
                    if let Ok(list) = one(&topic, partition, None) {
                        let _ = self.consumer.incremental_unassign(&list);
                    }
                }
            }
        }
    }

    /// Seeks `topic`-`partition` to `offset`, resuming it if a full cursor had paused it.
    fn seek(&self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        let list = one(topic, partition, None)?;
        // Resuming a partition that is not paused does nothing.
        let _ = self.consumer.resume(&list);
        if self
            .consumer
            .seek(
                topic,
                partition as i32,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .is_err()
        {
            // A partition whose first fetch has not started cannot seek: assign it afresh.
            let _ = self.consumer.incremental_unassign(&list);
            self.consumer
                .incremental_assign(&one(topic, partition, Some(offset))?)
                .map_err(|e| cluster_error(format!("assigning {topic}-{partition}"), e))?;
        }
        Ok(())
    }

    fn forget(&self, topic: &str, partition: u32) {
        let mut cursors = self.cursors.lock();
        if let Some(partitions) = cursors.get_mut(topic) {
            partitions.remove(&partition);
            if partitions.is_empty() {
                cursors.remove(topic);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.cursors.lock().is_empty()
    }

    /// The consumer's thread: polls, files records with their cursors, and drops idle cursors.
    fn run(&self) {
        let mut swept = Instant::now();
        let mut filed: Vec<Arc<Cursor>> = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            if swept.elapsed() >= Duration::from_secs(1) {
                swept = Instant::now();
                self.sweep();
            }
            self.make_moves();
            if self.buffered() >= CONSUMER_BYTES {
                std::thread::sleep(FULL_WAIT);
                continue;
            }
            // What librdkafka already holds is filed in one go, and readers woken once for
            // it: woken per record, a reader would take a step (and a commit) per record.
            let mut wait = POLL;
            for _ in 0..FILE_AT_ONCE {
                match self.consumer.poll(wait) {
                    Some(Ok(message)) => {
                        if let Some(cursor) = self.file(&message)
                            && !filed.iter().any(|c| Arc::ptr_eq(c, &cursor))
                        {
                            filed.push(cursor);
                        }
                    }
                    Some(Err(error)) => debug!(%error, "reading from the cluster"),
                    None => {
                        if filed.is_empty() {
                            self.pass_control_records();
                        }
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            for cursor in filed.drain(..) {
                cursor.ready.notify_waiters();
            }
        }
    }

    /// Bytes its cursors hold for their readers.
    fn buffered(&self) -> usize {
        self.cursors
            .lock()
            .values()
            .flat_map(HashMap::values)
            .map(|cursor| cursor.state.lock().bytes)
            .sum()
    }

    /// Files a record with its cursor; the cursor, for its reader to be woken.
    fn file(&self, message: &BorrowedMessage<'_>) -> Option<Arc<Cursor>> {
        let partition = message.partition() as u32;
        let cursor = self.cursor(message.topic(), partition)?;
        let mut state = cursor.state.lock();
        let record = LogRecord {
            offset: message.offset(),
            record: to_record(message),
        };
        if !state.file(record) {
            return None;
        }
        if state.bytes >= CURSOR_BYTES
            && !state.paused
            && let Ok(list) = one(message.topic(), partition, None)
            && self.consumer.pause(&list).is_ok()
        {
            state.paused = true;
        }
        drop(state);
        Some(cursor)
    }

    /// Moves idle cursors past transaction markers: librdkafka hands no control record to a
    /// reader but moves its position past them, and without this a reader whose partition
    /// ends in a marker would never reach the end it was told of. Only this thread files
    /// records, so no record below the position is still on its way to the cursor.
    fn pass_control_records(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            let Some(cursor) = self.cursor(element.topic(), element.partition() as u32) else {
                continue;
            };
            let passed = cursor.state.lock().pass_to(position);
            if passed {
                cursor.ready.notify_waiters();
            }
        }
    }

    /// Drops the cursors no reader has used for a while, unassigning their partitions.
    fn sweep(&self) {
        let mut idle = Vec::new();
        for (topic, partitions) in self.cursors.lock().iter() {
            for (&partition, cursor) in partitions {
                if cursor.state.lock().used.elapsed() >= DROP_AFTER {
                    idle.push((topic.clone(), partition));
                }
            }
        }
        for (topic, partition) in idle {
            self.forget(&topic, partition);
            if let Ok(list) = one(&topic, partition, None)
                && let Err(error) = self.consumer.incremental_unassign(&list)
            {
                warn!(%error, topic, partition, "unassigning an idle partition");
            }
        }
    }
}

/// A fetched message as a log record: timestamps the broker does not give read as 0.
fn to_record(message: &BorrowedMessage<'_>) -> Record {
    let headers = message.headers().map_or_else(Vec::new, |headers| {
        headers
            .iter()
            .map(|h| RecordHeader {
                key: h.key.to_string(),
                value: h.value.map(Bytes::copy_from_slice),
            })
            .collect()
    });
    Record {
        key: message.key().map(Bytes::copy_from_slice),
        value: message.payload().map(Bytes::copy_from_slice),
        timestamp: message.timestamp().to_millis().unwrap_or(0),
        headers,
    }
}

impl Fetcher {
    /// A pool with no consumer yet: the first read starts one.
    pub(crate) fn new(options: &ClusterOptions) -> Fetcher {
        Fetcher {
            options: options.clone(),
            members: Mutex::new(Vec::new()),
        }
    }

    /// The cursor a read of `topic`-`partition` at `offset` is served from: one whose reader
    /// stands there, else an idle one moved there, else a new one.
    fn cursor(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<(Arc<Member>, Arc<Cursor>)> {
        let mut members = self.members.lock();
        let mut idle = None;
        let mut free = None;
        for member in members.iter() {
            match member.cursor(topic, partition) {
                Some(cursor) => {
                    let state = cursor.state.lock();
                    if state.next == offset {
                        drop(state);
                        return Ok((member.clone(), cursor));
                    }
                    if idle.is_none() && state.used.elapsed() >= REPOSITION_AFTER {
                        drop(state);
                        idle = Some((member.clone(), cursor));
                    }
                }
                None if free.is_none() => free = Some(member.clone()),
                None => {}
            }
        }
        if let Some((member, cursor)) = idle {
            member.reposition(topic, partition, &cursor, offset);
            return Ok((member, cursor));
        }
        let member = match free {
            Some(member) => member,
            None => {
                // Consumers whose cursors were all dropped make room first.
                members.retain(|m| {
                    let keep = !m.is_empty();
                    if !keep {
                        m.stop.store(true, Ordering::Release);
                    }
                    keep
                });
                let member = Member::start(&self.options, members.len())?;
                members.push(member.clone());
                member
            }
        };
        let cursor = member.assign(topic, partition, offset)?;
        Ok((member, cursor))
    }

    /// Up to about `max_bytes` of records from `offset` (at least one when any is there), with
    /// the partition's offsets as last fetched.
    pub(crate) fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedRecords> {
        let (member, cursor) = self.cursor(topic, partition, offset)?;
        let mut state = cursor.state.lock();
        state.used = Instant::now();
        let records = state.take(max_bytes);
        if state.paused && state.bytes < CURSOR_BYTES / 2 {
            state.paused = false;
            if let Ok(list) = one(topic, partition, None) {
                let _ = member.consumer.resume(&list);
            }
        }
        // What a consumer knows of the partition's end: what its cursor fetched. A read that
        // leaves records behind says more is there, so the engine reads ahead.
        let next_offset = state.next;
        let known_end = if state.records.is_empty() {
            next_offset
        } else {
            state.fetched
        };
        drop(state);
        Ok(FetchedRecords {
            records,
            next_offset,
            high_watermark: known_end,
            last_stable_offset: known_end,
            // A consumer learns the log start only from a request of its own; no caller of a
            // read uses it.
            log_start_offset: 0,
        })
    }

    /// Waits until a record at or after `offset` is fetched, or `timeout` passes.
    pub(crate) async fn wait(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        timeout: Duration,
    ) -> Result<bool> {
        let (_, cursor) = self.cursor(topic, partition, offset)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = cursor.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = cursor.state.lock();
                state.used = Instant::now();
                if !state.records.is_empty() || state.fetched > offset {
                    return Ok(true);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(false);
            }
        }
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        for member in self.members.lock().iter() {
            member.stop.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> LogRecord {
        LogRecord {
            offset,
            record: Record {
                key: None,
                value: Some(Bytes::from_static(b"v")),
                timestamp: 0,
                headers: Vec::new(),
            },
        }
    }

    fn offsets(records: &[LogRecord]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_record_fetched_before_a_move_the_consumer_has_not_made_is_dropped() {
        let cursor = Cursor::at(1000);
        let mut state = cursor.state.lock();
        assert!(state.file(record(1000)));
        // The reader moves back to 500 while the consumer holds record 1200 from before.
        state.move_to(500);
        assert!(!state.file(record(1200)));
        assert!(!state.pass_to(1201));
        assert!(state.take(1 << 20).is_empty());
        assert_eq!(state.next, 500);
        // Once the consumer has sought there, what it polls is the cursor's.
        state.moved(500);
        assert!(state.file(record(500)));
        assert!(state.file(record(501)));
        assert_eq!(offsets(&state.take(1 << 20)), [500, 501]);
        assert_eq!(state.next, 502);
    }

    #[test]
    fn a_seek_for_an_earlier_move_does_not_end_a_later_one() {
        let cursor = Cursor::at(0);
        let mut state = cursor.state.lock();
        state.move_to(500);
        state.move_to(700);
        state.moved(500);
        assert!(!state.file(record(500)));
        state.moved(700);
        assert!(state.file(record(700)));
    }

    #[test]
    fn control_records_move_an_idle_cursor_on_and_stale_records_stay_out() {
        let cursor = Cursor::at(10);
        let mut state = cursor.state.lock();
        assert!(state.file(record(10)));
        assert!(!state.file(record(10)));
        assert!(state.pass_to(13));
        assert!(!state.pass_to(12));
        assert_eq!(offsets(&state.take(1 << 20)), [10]);
        // Past the record, only markers: the reader goes on where the consumer stands.
        assert_eq!(state.next, 13);
        assert!(!state.file(record(12)));
    }
}
