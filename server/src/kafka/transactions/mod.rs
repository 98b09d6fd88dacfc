//! The transaction coordinator: Eddy coordinates every transactional id itself, as one Kafka
//! broker that leads every `__transaction_state` partition would. A transactional id's state
//! lives in the store (namespace `__eddy_transactions`), written in the same atomic write as
//! the markers and consumer offsets that end its transaction, so a restart finds every
//! transaction ongoing or complete. Ongoing ones are aborted when their timeout passes,
//! whether or not the server restarted in between.

mod metadata;
mod requests;

pub(super) use requests::serve;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eddy_storage::{Commit, OffsetAndMetadata, Store, TxnMarker};
use parking_lot::Mutex;
use tracing::{info, warn};

use super::code;
use super::producers::ProducerRegistry;
use metadata::{PendingOffset, TxnMeta, TxnState};

/// Where transactional ids' states are kept in the state store.
const NAMESPACE: &str = "__eddy_transactions";

/// How long a transactional id with no open transaction is kept after its last change (Kafka's
/// `transactional.id.expiration.ms`, 7 days).
const ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Bounds on transactions, named after the broker settings they mirror.
#[derive(Debug, Clone)]
pub struct TransactionLimits {
    /// The longest `transaction.timeout.ms` a producer may ask for
    /// (`transaction.max.timeout.ms`).
    pub max_timeout: Duration,
    /// How often open transactions are checked against their timeouts
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub abort_check_interval: Duration,
}

impl Default for TransactionLimits {
    fn default() -> Self {
        TransactionLimits {
            max_timeout: Duration::from_secs(15 * 60),
            abort_check_interval: Duration::from_secs(1),
        }
    }
}

/// What the coordinator has done, for `/metrics` and `SHOW TRANSACTIONS`.
#[derive(Debug, Default)]
pub struct TransactionCounts {
    /// Transactions committed.
    pub committed: AtomicU64,
    /// Transactions aborted, by their producer or by the coordinator.
    pub aborted: AtomicU64,
    /// Of those, aborted because they ran past their timeout.
    pub timed_out: AtomicU64,
}

/// One transactional id as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSummary {
    /// The `transactional.id`.
    pub transactional_id: String,
    /// The producer id and epoch.
    pub producer: (i64, i16),
    /// Kafka's name for its state.
    pub state: &'static str,
    /// When the open transaction began, or -1.
    pub start_ms: i64,
    /// Its timeout.
    pub timeout_ms: i32,
    /// The partitions it wrote to.
    pub partitions: Vec<(String, u32)>,
}

/// The in-memory view of every transactional id, kept equal to what the store holds.
#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, TxnMeta>,
    /// Producer id to transactional id, for checking transactional produce requests.
    by_producer: HashMap<i64, String>,
}

impl Registry {
    fn put(&mut self, meta: TxnMeta) {
        if meta.last_producer_id >= 0 {
            self.by_producer.remove(&meta.last_producer_id);
        }
        self.by_producer
            .insert(meta.producer_id, meta.transactional_id.clone());
        self.by_id.insert(meta.transactional_id.clone(), meta);
    }
}

/// Eddy's transaction coordinator.
pub struct TransactionCoordinator {
    store: Store,
    ids: Arc<ProducerRegistry>,
    limits: TransactionLimits,
    registry: Mutex<Registry>,
    /// Serialises changes, so each is computed from the state the last one wrote.
    changing: tokio::sync::Mutex<()>,
    counts: TransactionCounts,
    /// Open transactions in the log that no open transaction here accounts for, as last seen.
    orphans: Mutex<Vec<Orphan>>,
}

/// A transaction open in the log (topic, partition, producer id, first offset) that the
/// coordinator has no open transaction for.
type Orphan = (String, u32, i64, i64);

impl std::fmt::Debug for TransactionCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionCoordinator")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A change to one transactional id: its new state, and the markers and offsets that go with
/// it in the same write.
struct Change {
    meta: TxnMeta,
    markers: Vec<TxnMarker>,
    offsets: Vec<PendingOffset>,
}

impl Change {
    fn state(meta: TxnMeta) -> Change {
        Change {
            meta,
            markers: Vec::new(),
            offsets: Vec::new(),
        }
    }
}

impl TransactionCoordinator {
    /// Loads every transactional id from the store and starts aborting timed-out transactions
    /// (those that ran out while the server was down included).
    pub fn start(
        store: Store,
        ids: Arc<ProducerRegistry>,
        limits: TransactionLimits,
    ) -> Arc<TransactionCoordinator> {
        let mut registry = Registry::default();
        match store.state_scan_prefix(NAMESPACE, b"") {
            Ok(scan) => {
                for entry in scan {
                    match entry.map(|(_, value)| serde_json::from_slice::<TxnMeta>(&value)) {
                        Ok(Ok(meta)) => registry.put(meta),
                        Ok(Err(e)) => warn!(error = %e, "skipping a damaged transaction state"),
                        Err(e) => warn!(error = %e, "cannot read transaction states"),
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read transaction states"),
        }
        let open = registry
            .by_id
            .values()
            .filter(|m| m.state == TxnState::Ongoing)
            .count();
        if !registry.by_id.is_empty() {
            info!(
                transactional_ids = registry.by_id.len(),
                open, "loaded transaction states"
            );
        }
        let coordinator = Arc::new(TransactionCoordinator {
            store,
            ids,
            limits,
            registry: Mutex::new(registry),
            changing: tokio::sync::Mutex::new(()),
            counts: TransactionCounts::default(),
            orphans: Mutex::new(Vec::new()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&coordinator);
            let every = coordinator.limits.abort_check_interval;
            runtime.spawn(async move {
                // The first check comes one interval after the start, not at once: an orphan
                // is aborted on its second sighting, and a check racing the first requests
                // would count as one.
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let Some(coordinator) = weak.upgrade() else {
                        return;
                    };
                    coordinator.abort_expired().await;
                    coordinator.abort_orphans().await;
                    coordinator.expire_idle_ids().await;
                }
            });
        }
        coordinator
    }

    /// What the coordinator has done so far.
    pub fn counts(&self) -> &TransactionCounts {
        &self.counts
    }

    /// Every transactional id, open transactions first, oldest first.
    pub fn summaries(&self) -> Vec<TransactionSummary> {
        let registry = self.registry.lock();
        let mut out: Vec<TransactionSummary> = registry
            .by_id
            .values()
            .map(|m| TransactionSummary {
                transactional_id: m.transactional_id.clone(),
                producer: (m.producer_id, m.epoch),
                state: m.state.name(),
                start_ms: m.start_ms,
                timeout_ms: m.timeout_ms,
                partitions: m.partitions.iter().cloned().collect(),
            })
            .collect();
        out.sort_by_key(|s| (s.start_ms < 0, s.start_ms, s.transactional_id.clone()));
        out
    }

    fn get(&self, transactional_id: &str) -> Option<TxnMeta> {
        self.registry.lock().by_id.get(transactional_id).cloned()
    }

    /// Whether a transactional batch from this producer may go to this partition: its
    /// transaction is open, at this epoch, and the partition was added to it.
    pub fn verify_produce(
        &self,
        (producer_id, epoch): (i64, i16),
        topic: &str,
        partition: u32,
    ) -> Result<(), i16> {
        let registry = self.registry.lock();
        let Some(meta) = registry
            .by_producer
            .get(&producer_id)
            .and_then(|id| registry.by_id.get(id))
        else {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        };
        if epoch < meta.epoch {
            return Err(code::INVALID_PRODUCER_EPOCH);
        }
        let added = meta.partitions.contains(&(topic.to_string(), partition));
        if epoch != meta.epoch || meta.state != TxnState::Ongoing || !added {
            return Err(code::INVALID_TXN_STATE);
        }
        Ok(())
    }

    /// The groups and partitions with offsets waiting in an open transaction, for OffsetFetch's
    /// `require_stable`.
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: u32) -> bool {
        self.registry.lock().by_id.values().any(|m| {
            m.offsets
                .iter()
                .any(|o| o.group == group && o.topic == topic && o.partition == partition)
        })
    }

    /// Writes a change: its markers, its offsets (when it commits) and the new state, in one
    /// store write; then makes it visible.
    async fn write(&self, change: Change) -> Result<TxnMeta, i16> {
        let Change {
            meta,
            markers,
            offsets,
        } = change;
        let mut commit = Commit::new();
        let json = serde_json::to_vec(&meta).map_err(|_| code::UNKNOWN_SERVER_ERROR)?;
        commit.put_state(NAMESPACE, meta.transactional_id.as_bytes(), json);
        // A topic deleted while the transaction was open gets no marker and no offsets: there
        // is nothing left to mark, and one missing topic must not fail the rest.
        for marker in markers {
            if self.store.topic_exists(&marker.topic) {
                commit.marker(marker);
            }
        }
        let now = eddy_storage::now_ms();
        for o in offsets {
            if self.store.topic_exists(&o.topic) {
                let position = OffsetAndMetadata {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                    commit_timestamp: now,
                };
                commit.commit_offset(o.group, o.topic, o.partition, position);
            }
        }
        if let Err(e) = self.store.commit(commit).await {
            warn!(transactional_id = %meta.transactional_id, error = %e, "cannot write a transaction's state");
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        self.registry.lock().put(meta.clone());
        Ok(meta)
    }

    /// The markers that end `meta`'s open transaction on every partition it added, with the
    /// epoch `epoch`.
    fn markers(meta: &TxnMeta, epoch: i16, commit: bool) -> Vec<TxnMarker> {
        meta.partitions
            .iter()
            .map(|(topic, partition)| TxnMarker {
                topic: topic.clone(),
                partition: *partition,
                producer_id: meta.producer_id,
                producer_epoch: epoch,
                commit,
                coordinator_epoch: 0,
            })
            .collect()
    }

    /// Ends an open transaction: markers on its partitions and, when it commits, its offsets.
    fn end(meta: &TxnMeta, next: TxnMeta, commit: bool) -> Change {
        let offsets = if commit {
            meta.offsets.clone()
        } else {
            Vec::new()
        };
        Change {
            markers: Self::markers(meta, next.epoch, commit),
            offsets,
            meta: next,
        }
    }

    fn count_end(&self, commit: bool) {
        let counter = if commit {
            &self.counts.committed
        } else {
            &self.counts.aborted
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// InitProducerId for a transactional id: a fresh id or a bumped epoch, after aborting a
    /// transaction an earlier producer of the id left open.
    pub async fn init_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), i16> {
        let max = self.limits.max_timeout.as_millis().min(i32::MAX as u128) as i32;
        if timeout_ms <= 0 || timeout_ms > max {
            return Err(code::INVALID_TRANSACTION_TIMEOUT);
        }
        let _changing = self.changing.lock().await;
        let now = eddy_storage::now_ms();
        let current = self.get(transactional_id).unwrap_or_else(|| {
            TxnMeta::new(transactional_id, self.ids.allocate(), timeout_ms, now)
        });
        if !current.accepts_expected(expected) {
            return Err(code::PRODUCER_FENCED);
        }
        let mut change = Change::state(current.clone());
        let mut expected = expected;
        if current.state == TxnState::Ongoing {
            let aborted = current.fenced_abort(now);
            change = Self::end(&current, aborted, false);
            // The epoch just moved past what the client knew; the bump below starts from it.
            expected = None;
            info!(
                transactional_id,
                "aborting the transaction a fenced producer left open"
            );
        }
        let aborting = current.state == TxnState::Ongoing;
        change.meta = change
            .meta
            .initialised(expected, timeout_ms, now, || self.ids.allocate())?;
        let meta = self.write(change).await?;
        if aborting {
            self.count_end(false);
        }
        Ok((meta.producer_id, meta.epoch))
    }

    /// The transactional id's state, when `producer` (id and epoch) is its current producer;
    /// else Kafka's error for a stranger or a fenced producer.
    fn current_producer(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
    ) -> Result<TxnMeta, i16> {
        let current = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        current.check_producer(producer.0, producer.1)?;
        Ok(current)
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: the partitions, or the group, join the
    /// transaction, which begins with the first.
    pub async fn add(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        (partitions, group): (&[(String, u32)], Option<&str>),
    ) -> Result<(), i16> {
        let _changing = self.changing.lock().await;
        let current = self.current_producer(transactional_id, producer)?;
        match current.adding(partitions, group, eddy_storage::now_ms()) {
            None => Ok(()),
            Some(next) => self.write(Change::state(next)).await.map(|_| ()),
        }
    }

    /// TxnOffsetCommit: offsets held in the transaction until it commits.
    pub async fn commit_offsets(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        offsets: Vec<PendingOffset>,
    ) -> Result<(), i16> {
        let _changing = self.changing.lock().await;
        let current = self.current_producer(transactional_id, producer)?;
        let group_added = offsets.iter().all(|o| current.groups.contains(&o.group));
        if current.state != TxnState::Ongoing || !group_added {
            return Err(code::INVALID_TXN_STATE);
        }
        let mut next = current;
        for o in offsets {
            next.offsets
                .retain(|p| (&p.group, &p.topic, p.partition) != (&o.group, &o.topic, o.partition));
            next.offsets.push(o);
        }
        next.updated_ms = eddy_storage::now_ms();
        self.write(Change::state(next)).await.map(|_| ())
    }

    /// EndTxn: commits or aborts the open transaction; a retry of an end already written
    /// succeeds again.
    pub async fn end_transaction(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        commit: bool,
    ) -> Result<(i64, i16), i16> {
        let _changing = self.changing.lock().await;
        let current = self.current_producer(transactional_id, producer)?;
        let Some(next) = current.ending(commit, eddy_storage::now_ms())? else {
            return Ok((current.producer_id, current.epoch));
        };
        let meta = self.write(Self::end(&current, next, commit)).await?;
        self.count_end(commit);
        Ok((meta.producer_id, meta.epoch))
    }

    /// The transactions the log holds open that no open transaction of the coordinator
    /// accounts for: a batch that passed its check just before its transaction ended, and
    /// landed after the marker. Kafka leaves such a "hanging" transaction holding back the last
    /// stable offset until an operator aborts it; Eddy aborts it once it is seen two checks in
    /// a row, so read_committed readers never wait on it for long.
    fn orphans(&self) -> Vec<Orphan> {
        let mut open = Vec::new();
        for topic in self.store.list_topics() {
            let partitions = self.store.partition_count(&topic).unwrap_or(0);
            for p in 0..partitions {
                for (producer, first) in self.store.open_transactions(&topic, p).unwrap_or_default()
                {
                    open.push((topic.clone(), p, producer, first));
                }
            }
        }
        if open.is_empty() {
            return open;
        }
        let registry = self.registry.lock();
        open.retain(|(topic, p, producer, _)| {
            let meta = registry
                .by_producer
                .get(producer)
                .and_then(|id| registry.by_id.get(id));
            !meta.is_some_and(|m| {
                m.state == TxnState::Ongoing && m.partitions.contains(&(topic.clone(), *p))
            })
        });
        open
    }

    async fn abort_orphans(&self) {
        let seen = self.orphans();
        let confirmed: Vec<Orphan> = {
            let mut last = self.orphans.lock();
            let confirmed = seen.iter().filter(|o| last.contains(o)).cloned().collect();
            *last = seen;
            confirmed
        };
        if confirmed.is_empty() {
            return;
        }
        let _changing = self.changing.lock().await;
        let still = self.orphans();
        for (topic, partition, producer_id, first) in confirmed {
            if !still.contains(&(topic.clone(), partition, producer_id, first)) {
                continue;
            }
            let epoch = {
                let registry = self.registry.lock();
                registry
                    .by_producer
                    .get(&producer_id)
                    .and_then(|id| registry.by_id.get(id))
                    .map_or(0, |m| m.epoch)
            };
            let mut commit = Commit::new();
            commit.marker(TxnMarker {
                topic: topic.clone(),
                partition,
                producer_id,
                producer_epoch: epoch,
                commit: false,
                coordinator_epoch: 0,
            });
            match self.store.commit(commit).await {
                Ok(_) => warn!(
                    topic = %topic,
                    partition,
                    producer_id,
                    first_offset = first,
                    "aborted records of a transaction that had already ended"
                ),
                Err(e) => {
                    warn!(topic = %topic, partition, error = %e, "cannot abort a hanging transaction")
                }
            }
        }
    }

    /// Forgets transactional ids with no open transaction whose last change is older than
    /// `transactional.id.expiration.ms`, as Kafka does, so ids used once do not pile up.
    async fn expire_idle_ids(&self) {
        let cutoff = eddy_storage::now_ms() - ID_EXPIRATION_MS;
        let idle = |m: &TxnMeta| m.state != TxnState::Ongoing && m.updated_ms < cutoff;
        let doomed: Vec<String> = {
            let registry = self.registry.lock();
            registry
                .by_id
                .values()
                .filter(|m| idle(m))
                .map(|m| m.transactional_id.clone())
                .collect()
        };
        for id in doomed {
            let _changing = self.changing.lock().await;
            if !self.get(&id).is_some_and(|m| idle(&m)) {
                continue;
            }
            let mut commit = Commit::new();
            commit.delete_state(NAMESPACE, id.as_bytes());
            if self.store.commit(commit).await.is_ok() {
                let mut registry = self.registry.lock();
                if let Some(meta) = registry.by_id.remove(&id) {
                    registry.by_producer.remove(&meta.producer_id);
                }
                info!(transactional_id = %id, "forgot an idle transactional id");
            }
        }
    }

    /// Aborts every open transaction past its timeout, fencing its producer.
    pub async fn abort_expired(&self) {
        let now = eddy_storage::now_ms();
        let expired: Vec<String> = self
            .registry
            .lock()
            .by_id
            .values()
            .filter(|m| m.expired(now))
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in expired {
            let _changing = self.changing.lock().await;
            let Some(current) = self.get(&id).filter(|m| m.expired(now)) else {
                continue;
            };
            let aborted = current.fenced_abort(eddy_storage::now_ms());
            if self
                .write(Self::end(&current, aborted, false))
                .await
                .is_ok()
            {
                warn!(
                    transactional_id = %id,
                    timeout_ms = current.timeout_ms,
                    "aborted a transaction that ran past its timeout"
                );
                self.count_end(false);
                self.counts.timed_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_storage::{EncodedBatch, Record, StoreOptions, TopicConfig};

    #[tokio::test]
    async fn a_transaction_left_hanging_in_the_log_is_aborted_on_the_second_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .create_topic("t", TopicConfig::with_partitions(1))
            .unwrap();
        let limits = TransactionLimits {
            abort_check_interval: Duration::from_secs(3600),
            ..TransactionLimits::default()
        };
        let coordinator =
            TransactionCoordinator::start(store.clone(), Arc::new(ProducerRegistry::new()), limits);
        // A batch that passed its check as its transaction ended, landing after the marker.
        let mut batch = EncodedBatch::encode(&[Record::keyed("k", "v", 0)]).unwrap();
        batch.set_transactional(77, 0, 0);
        store.append_encoded("t", 0, batch).await.unwrap();
        assert_eq!(store.last_stable_offset("t", 0).unwrap(), 0);
        coordinator.abort_orphans().await;
        assert_eq!(store.last_stable_offset("t", 0).unwrap(), 0);
        coordinator.abort_orphans().await;
        assert_eq!(store.last_stable_offset("t", 0).unwrap(), 2);
        let read = store.read_records("t", 0, 0, usize::MAX).unwrap();
        assert!(read.records.is_empty());
    }
}
