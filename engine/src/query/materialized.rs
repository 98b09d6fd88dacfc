//! Tables materialized in the state store, for pull queries: the latest record of each key of a
//! table's topic, kept by one task per topic that commits its state changes and its read
//! offsets in one write batch, as a persistent query does. A pull query reads this state (a
//! row per key) instead of replaying the topic's whole changelog.
//!
//! A task starts the first time a table is pull-queried and runs until the engine stops or
//! the table is dropped; its state and offsets persist, so after a restart it goes on from
//! where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eddy_storage::{Commit, LogRecord, OffsetAndMetadata, Record, Store};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};
use crate::query::operator::Input;
use crate::query::task::reader::PartitionReader;

/// The state namespace holding a topic's latest record per key.
pub(crate) fn namespace(topic: &str) -> String {
    format!("__eddy_table/{topic}")
}

/// The consumer group whose offsets say how far a topic is materialized.
pub(crate) fn group(topic: &str) -> String {
    format!("{}table_{topic}", eddy_storage::INTERNAL_GROUP_PREFIX)
}

/// A stored latest record: its timestamp, partition and offset, then the value bytes.
fn encode(partition: u32, record: &LogRecord, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + value.len());
    out.extend_from_slice(&record.record.timestamp.to_be_bytes());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&record.offset.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// A stored latest record back as the partition it came from and the record.
pub(crate) fn decode(key: &[u8], stored: &[u8]) -> Option<(u32, LogRecord)> {
    let timestamp = i64::from_be_bytes(stored.get(0..8)?.try_into().ok()?);
    let partition = u32::from_be_bytes(stored.get(8..12)?.try_into().ok()?);
    let offset = i64::from_be_bytes(stored.get(12..20)?.try_into().ok()?);
    let value = bytes::Bytes::copy_from_slice(stored.get(20..)?);
    Some((
        partition,
        LogRecord {
            offset,
            record: Record {
                key: Some(bytes::Bytes::copy_from_slice(key)),
                value: Some(value),
                timestamp,
                headers: Vec::new(),
            },
        },
    ))
}

/// Per topic, the offsets each partition is materialized up to.
type CommittedOffsets = Mutex<HashMap<String, Vec<i64>>>;

/// A running materializer: what stops it, and its task.
type Running = (watch::Sender<bool>, JoinHandle<()>);

/// The running materializers, by topic.
#[derive(Debug, Default)]
pub(crate) struct Materializers {
    running: Mutex<HashMap<String, Running>>,
    /// Signalled after every commit of any materializer.
    progress: Arc<Notify>,
    /// Per topic, the offsets each partition is committed up to, as the task knows them, so a
    /// pull query checks them without reading the store.
    committed: Arc<CommittedOffsets>,
}

impl Materializers {
    /// Starts materializing `topic` unless it already is.
    pub(crate) fn ensure(&self, store: &Store, topic: &str) -> Result<()> {
        let mut running = self.running.lock();
        if let Some((_, task)) = running.get(topic)
            && !task.is_finished()
        {
            return Ok(());
        }
        let partitions = store.partition_count(topic)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(materialize(
            store.clone(),
            topic.to_string(),
            partitions,
            (self.progress.clone(), self.committed.clone()),
            stopped,
        ));
        running.insert(topic.to_string(), (stop, task));
        Ok(())
    }

    /// Stops materializing `topic` and forgets its state and offsets, as when its table is
    /// dropped; a table declared on the topic later starts from the beginning.
    pub(crate) async fn forget(&self, store: &Store, topic: &str) -> Result<()> {
        let entry = self.running.lock().remove(topic);
        if let Some((stop, task)) = entry {
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.committed.lock().remove(topic);
        clear(store, topic).await?;
        if let Ok(partitions) = store.partition_count(topic) {
            let mut commit = Commit::new();
            for p in 0..partitions {
                commit.commit_offset(
                    group(topic),
                    topic.to_string(),
                    p,
                    OffsetAndMetadata::new(0),
                );
            }
            store.commit(commit).await?;
        }
        Ok(())
    }

    /// Stops every task, for a clean shutdown; state and offsets stay.
    pub(crate) async fn stop_all(&self) {
        let tasks: Vec<_> = self.running.lock().drain().collect();
        for (_, (stop, task)) in tasks {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Waits until `topic` is materialized up to `ends` (one end offset per partition), so a
    /// pull query sees every record appended before it started.
    pub(crate) async fn wait_for(&self, store: &Store, topic: &str, ends: &[i64]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let group = group(topic);
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let known = self.committed.lock().get(topic).cloned();
            let caught_up = match known {
                Some(committed) if committed.len() >= ends.len() => {
                    committed.iter().zip(ends).all(|(at, end)| at >= end)
                }
                _ => {
                    let mut caught_up = true;
                    for (p, end) in ends.iter().enumerate() {
                        let at = store
                            .fetch_offset(&group, topic, p as u32)?
                            .map_or(0, |o| o.offset);
                        if at < *end {
                            caught_up = false;
                            break;
                        }
                    }
                    caught_up
                }
            };
            if caught_up {
                return Ok(());
            }
            let finished = self
                .running
                .lock()
                .get(topic)
                .is_none_or(|(_, task)| task.is_finished());
            if finished {
                return Err(EngineError::internal(format!(
                    "The table's state for topic {topic} is not being maintained"
                )));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(EngineError::internal(format!(
                    "Timed out waiting for the table's state to catch up with topic {topic}"
                )));
            }
        }
    }
}

/// Deletes a topic's materialized state and offsets.
async fn clear(store: &Store, topic: &str) -> Result<()> {
    let namespace = namespace(topic);
    let mut commit = Commit::new();
    let mut any = false;
    for entry in store.state_scan_prefix(&namespace, b"")? {
        let (key, _) = entry?;
        commit.delete_state(namespace.clone(), key);
        any = true;
    }
    if any {
        store.commit(commit).await?;
    }
    Ok(())
}

/// The task: reads the topic from the committed offsets and keeps the latest record per key.
async fn materialize(
    store: Store,
    topic: String,
    partitions: u32,
    (progress, committed): (Arc<Notify>, Arc<CommittedOffsets>),
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = materialize_inner(
        &store,
        &topic,
        partitions,
        (&progress, &committed),
        &mut stop,
    )
    .await
    {
        warn!(topic = %topic, error = %e, "materializing the table's topic stopped");
    }
    committed.lock().remove(&topic);
    progress.notify_waiters();
}

async fn materialize_inner(
    store: &Store,
    topic: &str,
    partitions: u32,
    (progress, committed): (&Notify, &CommittedOffsets),
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let group = group(topic);
    let namespace = namespace(topic);
    let mut positions = Vec::with_capacity(partitions as usize);
    let mut inputs = Vec::with_capacity(partitions as usize);
    let mut committed_any = false;
    for p in 0..partitions {
        let committed = store.fetch_offset(&group, topic, p)?;
        committed_any |= committed.is_some();
        positions.push(match committed {
            Some(c) => c.offset,
            None => store.log_start_offset(topic, p)?,
        });
        inputs.push(Input {
            side: 0,
            topic: topic.to_string(),
            partition: p,
        });
    }
    // No offsets but some state: the topic was deleted and made again; start over.
    if !committed_any {
        clear(store, topic).await?;
    }
    committed
        .lock()
        .insert(topic.to_string(), positions.clone());
    info!(topic = %topic, "materializing the table's topic for pull queries");
    let mut reader = PartitionReader::over(store, &group, inputs, positions).unordered();
    while let Some((index, fetched)) = reader.next(stop).await? {
        let partition = reader.input(index).partition;
        let mut commit = Commit::new();
        for record in &fetched.records {
            // A record without a key is no row of a table.
            let Some(key) = record.record.key.as_ref() else {
                continue;
            };
            match &record.record.value {
                Some(value) => {
                    commit.put_state(
                        namespace.clone(),
                        key.to_vec(),
                        encode(partition, record, value),
                    );
                }
                None => {
                    commit.delete_state(namespace.clone(), key.to_vec());
                }
            }
        }
        commit.commit_offset(
            group.clone(),
            topic.to_string(),
            partition,
            OffsetAndMetadata::new(fetched.next_offset),
        );
        store.commit(commit).await?;
        if let Some(at) = committed
            .lock()
            .get_mut(topic)
            .and_then(|c| c.get_mut(partition as usize))
        {
            *at = fetched.next_offset;
        }
        reader.advance(index, fetched.next_offset);
        debug!(topic = %topic, partition, next = fetched.next_offset, "materialized");
        progress.notify_waiters();
    }
    Ok(())
}

/// Which keys of a table's state a read takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScan {
    /// Every key.
    All,
    /// These keys (in the table's key format), each a point read.
    Keys(Vec<Vec<u8>>),
    /// Keys in `[from, to)` (`to: None`: to the end), one range scan.
    Range {
        /// The first key that may match.
        from: Vec<u8>,
        /// The first key past the range, if bounded.
        to: Option<Vec<u8>>,
    },
}

/// The materialized records of `topic` that `scan` takes, grouped by the partition each came
/// from (in key order within each), all from one consistent view of the store; keys with no
/// row are left out.
pub(crate) fn read(
    store: &Store,
    topic: &str,
    partitions: u32,
    scan: &KeyScan,
) -> Result<Vec<Vec<LogRecord>>> {
    let namespace = namespace(topic);
    let snapshot = store.state_snapshot();
    let mut out: Vec<Vec<LogRecord>> = vec![Vec::new(); partitions as usize];
    let mut keep = |key: &[u8], stored: &[u8]| {
        if let Some((partition, record)) = decode(key, stored)
            && let Some(records) = out.get_mut(partition as usize)
        {
            records.push(record);
        }
    };
    match scan {
        KeyScan::Keys(keys) => {
            for key in keys {
                if let Some(stored) = snapshot.get(&namespace, key)? {
                    keep(key, &stored);
                }
            }
        }
        KeyScan::All => {
            for entry in snapshot.scan_prefix(&namespace, b"")? {
                let (key, stored) = entry?;
                keep(&key, &stored);
            }
        }
        KeyScan::Range { from, to } => {
            for entry in snapshot.scan_range(&namespace, from, to.as_deref())? {
                let (key, stored) = entry?;
                keep(&key, &stored);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_record_decodes_to_what_was_stored() {
        let record = LogRecord {
            offset: 41,
            record: Record::keyed(&b"k"[..], &b"{\"v\":1}"[..], 1_700_000_000_123),
        };
        let stored = encode(3, &record, b"{\"v\":1}");
        let (partition, back) = decode(b"k", &stored).unwrap();
        assert_eq!((partition, back), (3, record));
        assert!(decode(b"k", &stored[..10]).is_none());
    }
}
