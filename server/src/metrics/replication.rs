//! The replicated log's series, as Kafka exports them from a leader: under-replicated
//! partitions, ISR shrinks and expands, leader changes, and how far each follower is behind.
//! Registered only on a node of a replicated log.

use eddy_storage::{ReplicaStatus, Store};
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::MetricsError;

/// The replicated log's series, read from the replica's status at scrape time.
pub(super) struct ReplicationMetrics {
    status: ReplicaStatus,
    leader: IntGauge,
    term: IntGauge,
    replicas: IntGauge,
    in_sync: IntGauge,
    under_replicated: IntGauge,
    follower_lag: IntGaugeVec,
    log_entries: IntGauge,
    snapshot_index: IntGauge,
    isr_shrinks: IntCounter,
    isr_expands: IntCounter,
    leader_changes: IntCounter,
    snapshots_taken: IntCounter,
    snapshots_installed: IntCounter,
}

impl ReplicationMetrics {
    /// Registers the series of `status`'s replica.
    pub(super) fn new(registry: &Registry, status: &ReplicaStatus) -> Result<Self, MetricsError> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let follower_lag = IntGaugeVec::new(
            Opts::new(
                "eddy_replication_follower_lag_entries",
                "Raft entries (group commits) a follower is behind the leader; -1 for one that matched nothing yet",
            ),
            &["node"],
        )?;
        registry.register(Box::new(follower_lag.clone()))?;
        Ok(ReplicationMetrics {
            status: status.clone(),
            leader: gauge(
                "eddy_replication_leader",
                "1 while this node leads the replicated log (and so every partition)",
            )?,
            term: gauge(
                "eddy_replication_term",
                "The replicated log's Raft term, every partition's leader epoch",
            )?,
            replicas: gauge(
                "eddy_replication_replicas",
                "Nodes of the replicated log: every partition's replicas",
            )?,
            in_sync: gauge(
                "eddy_replication_in_sync_replicas",
                "Nodes in sync with the leader, the leader too (Kafka's ISR, by replica.lag.time.max.ms); on a follower, as the leader last told it",
            )?,
            under_replicated: gauge(
                "eddy_replication_under_replicated_partitions",
                "Partitions whose in-sync replicas are fewer than their replicas (every partition, while a node is out of sync)",
            )?,
            follower_lag,
            log_entries: gauge(
                "eddy_replication_log_entries",
                "Entries this node's Raft log holds: what was appended since the last purge (a snapshot of the store lets the log be purged)",
            )?,
            snapshot_index: gauge(
                "eddy_replication_snapshot_index",
                "The Raft index of the last entry this node's latest snapshot of its store holds; -1 before the first",
            )?,
            isr_shrinks: counter(
                "eddy_replication_isr_shrinks_total",
                "Times a node left the in-sync replicas while this node led",
            )?,
            isr_expands: counter(
                "eddy_replication_isr_expands_total",
                "Times a node rejoined the in-sync replicas while this node led",
            )?,
            leader_changes: counter(
                "eddy_replication_leader_changes_total",
                "Times the leader this node knows of changed since it started (the first leader it learns of counts)",
            )?,
            snapshots_taken: counter(
                "eddy_replication_snapshots_taken_total",
                "Snapshots of its store this node took, so its Raft log could be purged",
            )?,
            snapshots_installed: counter(
                "eddy_replication_snapshots_installed_total",
                "Snapshots this node installed from the leader, having missed entries the leader purged",
            )?,
        })
    }

    /// Reads the series from the replica; `store`, on the leader, gives the partitions that
    /// are under-replicated (a follower reports none, as Kafka's do).
    pub(super) fn refresh(&self, store: Option<&Store>) {
        let leadership = self.status.leadership();
        let leads = leadership.leader == Some(self.status.id());
        self.leader.set(i64::from(leads));
        self.term
            .set(i64::try_from(leadership.term).unwrap_or(i64::MAX));
        let replicas = self.status.voters().len();
        let in_sync = self.status.in_sync().len();
        self.replicas.set(replicas as i64);
        self.in_sync.set(in_sync as i64);
        let under = match store {
            Some(store) if leads && in_sync < replicas => store
                .list_topics()
                .iter()
                .filter_map(|topic| store.partition_count(topic).ok())
                .map(u64::from)
                .sum(),
            _ => 0,
        };
        self.under_replicated
            .set(i64::try_from(under).unwrap_or(i64::MAX));
        self.follower_lag.reset();
        for (node, lag) in self.status.follower_lag() {
            let entries = lag.map_or(-1, |lag| i64::try_from(lag).unwrap_or(i64::MAX));
            self.follower_lag
                .with_label_values(&[node.to_string().as_str()])
                .set(entries);
        }
        let extent = self.status.log_extent();
        self.log_entries
            .set(i64::try_from(extent.entries()).unwrap_or(i64::MAX));
        self.snapshot_index.set(
            extent
                .snapshot
                .map_or(-1, |index| i64::try_from(index).unwrap_or(i64::MAX)),
        );
        let counts = self.status.counts();
        for (counter, value) in [
            (&self.isr_shrinks, counts.isr_shrinks),
            (&self.isr_expands, counts.isr_expands),
            (&self.leader_changes, counts.leader_changes),
            (&self.snapshots_taken, counts.snapshots_taken),
            (&self.snapshots_installed, counts.snapshots_installed),
        ] {
            counter.inc_by(value.saturating_sub(counter.get()));
        }
    }
}

/// The replicated log's series alone, as a follower serves them at `/metrics`.
pub fn following(status: &ReplicaStatus) -> Result<String, MetricsError> {
    let registry = Registry::new();
    ReplicationMetrics::new(&registry, status)?.refresh(None);
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
