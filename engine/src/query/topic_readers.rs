//! One reader per topic for the push queries on it: a task reads each partition's new records
//! once and broadcasts them, so a hundred dashboards watching one stream cost one read of it,
//! not a hundred.
//!
//! A subscriber keeps its own position per partition. Records before it are skipped; a gap
//! before the first record broadcast (the subscriber started earlier than the reader, or fell
//! behind and lost broadcasts) is read from the log by the subscriber itself, so it sees every
//! record from where it started exactly once and in offset order. The reader stops once its
//! last subscriber is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use eddy_storage::{FetchedRecords, StorageError, Store};
use futures::future::select_all;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

use crate::error::Result;

/// How much a reader or a subscriber reads from a partition at a time.
const READ_BYTES: usize = 1 << 20;
/// Reads a reader keeps for subscribers before the slowest of them lags and catches up alone.
const BROADCAST_READS: usize = 64;
/// How often an idle reader checks whether anyone still listens.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// One partition's read, as broadcast.
type Read = Arc<(u32, FetchedRecords)>;

/// The shared readers, by topic.
#[derive(Debug, Default)]
pub(crate) struct SharedReaders {
    readers: Arc<Mutex<HashMap<String, broadcast::Sender<Read>>>>,
}

impl SharedReaders {
    /// Subscribes to `topic`'s new records, from `positions` (one offset per partition),
    /// starting the topic's reader unless it runs.
    pub(crate) fn subscribe(
        &self,
        store: &Store,
        topic: &str,
        positions: Vec<i64>,
    ) -> Result<Subscription> {
        let mut readers = self.readers.lock();
        let receiver = match readers.get(topic) {
            Some(sender) => sender.subscribe(),
            None => {
                let partitions = store.partition_count(topic)?;
                let start = (0..partitions)
                    .map(|p| store.last_stable_offset(topic, p))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let (sender, receiver) = broadcast::channel(BROADCAST_READS);
                readers.insert(topic.to_string(), sender.clone());
                debug!(topic, "shared reader started");
                tokio::spawn(read_topic(
                    store.clone(),
                    topic.to_string(),
                    start,
                    sender,
                    self.readers.clone(),
                ));
                receiver
            }
        };
        drop(readers);
        // What the topic holds now, before the query's start, it reads alone first.
        let targets = (0..positions.len() as u32)
            .map(|p| store.last_stable_offset(topic, p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Subscription {
            store: store.clone(),
            topic: topic.to_string(),
            queued_to: positions,
            targets,
            queued: VecDeque::new(),
            receiver,
        })
    }

    /// How many topics have a reader running.
    pub(crate) fn running(&self) -> usize {
        self.readers.lock().len()
    }
}

/// A topic's reader: reads each partition from `positions` on and broadcasts every read,
/// until no one subscribes.
async fn read_topic(
    store: Store,
    topic: String,
    mut positions: Vec<i64>,
    sender: broadcast::Sender<Read>,
    readers: Arc<Mutex<HashMap<String, broadcast::Sender<Read>>>>,
) {
    loop {
        {
            // Checked under the registry's lock, so no one subscribes to a reader that ends.
            let mut registry = readers.lock();
            if sender.receiver_count() == 0 {
                registry.remove(&topic);
                debug!(topic, "shared reader stopped: no subscribers");
                return;
            }
        }
        let mut read_any = false;
        for (p, position) in positions.iter_mut().enumerate() {
            match store.read_records(&topic, p as u32, *position, READ_BYTES) {
                Ok(fetched) if fetched.next_offset > *position => {
                    *position = fetched.next_offset;
                    read_any = true;
                    let _ = sender.send(Arc::new((p as u32, fetched)));
                }
                Ok(_) => {}
                Err(StorageError::OffsetOutOfRange { log_start, .. }) => *position = log_start,
                Err(e) => {
                    warn!(topic, error = %e, "shared reader failed; its subscribers read alone");
                    readers.lock().remove(&topic);
                    return;
                }
            }
        }
        if read_any {
            continue;
        }
        wait_for_any(&store, &topic, &positions).await;
    }
}

/// Waits until some partition of `topic` has records at or past its position in `positions`,
/// or until `IDLE_CHECK` passes.
async fn wait_for_any(store: &Store, topic: &str, positions: &[i64]) {
    let waits = positions
        .iter()
        .enumerate()
        .map(|(p, &at)| Box::pin(store.wait_for_data(topic, p as u32, at, IDLE_CHECK)))
        .collect::<Vec<_>>();
    if waits.is_empty() {
        tokio::time::sleep(IDLE_CHECK).await;
    } else {
        let _ = select_all(waits).await;
    }
}

/// A push query's view of a topic's shared reader: each partition's records from where the
/// query started, in offset order, each once.
#[derive(Debug)]
pub(crate) struct Subscription {
    store: Store,
    topic: String,
    /// Per partition, the offset up to which records are queued or handed out.
    queued_to: Vec<i64>,
    /// Per partition, the offset up to which it reads alone, a read at a time, before it takes
    /// broadcasts again: what was there when it started, or when it fell behind.
    targets: Vec<i64>,
    queued: VecDeque<(u32, FetchedRecords)>,
    receiver: broadcast::Receiver<Read>,
}

impl Subscription {
    /// The next records of some partition, or `None` once `stop` is set.
    pub(crate) async fn next(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(u32, FetchedRecords)>> {
        loop {
            if *stop.borrow() {
                return Ok(None);
            }
            if let Some(next) = self.queued.pop_front() {
                return Ok(Some(next));
            }
            if let Some(partition) =
                (0..self.queued_to.len()).find(|&p| self.queued_to[p] < self.targets[p])
            {
                let until = self.targets[partition];
                if !self.read_once(partition as u32, until)? {
                    // Nothing there (the log was truncated under it): stop aiming for it.
                    self.targets[partition] = self.queued_to[partition];
                }
                continue;
            }
            let received = tokio::select! {
                _ = stop.changed() => return Ok(None),
                received = self.receiver.recv() => received,
            };
            match received {
                Ok(read) => {
                    let (partition, fetched) = (read.0, &read.1);
                    self.take(partition, fetched)?;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Reads were lost: read each partition up to its end alone; later
                    // broadcasts then only add what is newer.
                    debug!(topic = %self.topic, missed, "push query lagged behind its shared reader");
                    self.aim_at_the_end()?;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // The reader stopped on an error: go on reading alone.
                    self.aim_at_the_end()?;
                    if (0..self.queued_to.len()).all(|p| self.queued_to[p] >= self.targets[p]) {
                        tokio::select! {
                            _ = stop.changed() => return Ok(None),
                            _ = wait_for_any(&self.store, &self.topic, &self.queued_to) => {}
                        }
                    }
                }
            }
        }
    }

    /// Queues what a broadcast read adds for this subscriber: first any gap before it, read
    /// alone, then its records from the subscriber's position on.
    fn take(&mut self, partition: u32, fetched: &FetchedRecords) -> Result<()> {
        let Some(&at) = self.queued_to.get(partition as usize) else {
            return Ok(());
        };
        if fetched.next_offset <= at {
            return Ok(());
        }
        let first = fetched
            .records
            .first()
            .map_or(fetched.next_offset, |r| r.offset);
        if first > at {
            self.read_alone(partition, first)?;
        }
        let at = self.queued_to[partition as usize];
        let records: Vec<_> = fetched
            .records
            .iter()
            .filter(|r| r.offset >= at)
            .cloned()
            .collect();
        self.queued_to[partition as usize] = fetched.next_offset;
        if !records.is_empty() {
            self.queued.push_back((
                partition,
                FetchedRecords {
                    records,
                    next_offset: fetched.next_offset,
                    high_watermark: fetched.high_watermark,
                    last_stable_offset: fetched.last_stable_offset,
                    log_start_offset: fetched.log_start_offset,
                },
            ));
        }
        Ok(())
    }

    /// Reads every partition alone up to its end as it is now.
    fn aim_at_the_end(&mut self) -> Result<()> {
        for (p, target) in self.targets.iter_mut().enumerate() {
            *target = (*target).max(self.store.last_stable_offset(&self.topic, p as u32)?);
        }
        Ok(())
    }

    /// Reads `partition` from where this subscriber stands up to `until` (a gap a broadcast
    /// revealed, which is short), queueing the reads.
    fn read_alone(&mut self, partition: u32, until: i64) -> Result<()> {
        while self.queued_to[partition as usize] < until {
            if !self.read_once(partition, until)? {
                break;
            }
        }
        Ok(())
    }

    /// One read of `partition` from where this subscriber stands, up to `until`; whether it
    /// got anywhere.
    fn read_once(&mut self, partition: u32, until: i64) -> Result<bool> {
        let index = partition as usize;
        let at = self.queued_to[index];
        let mut fetched = match self
            .store
            .read_records(&self.topic, partition, at, READ_BYTES)
        {
            Ok(fetched) => fetched,
            Err(StorageError::OffsetOutOfRange { log_start, .. }) => {
                self.queued_to[index] = log_start;
                return Ok(log_start > at);
            }
            Err(e) => return Err(e.into()),
        };
        if fetched.next_offset <= at {
            return Ok(false);
        }
        fetched.records.retain(|r| r.offset < until);
        let next = fetched.next_offset.min(until);
        fetched.next_offset = next;
        self.queued_to[index] = next;
        if !fetched.records.is_empty() {
            self.queued.push_back((partition, fetched));
        }
        Ok(true)
    }
}
