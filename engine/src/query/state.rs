//! Where a persistent query keeps what it has done in the store: its input positions, in a
//! consumer group of its own, and its operators' state, in a namespace whose keys are laid out
//! below.
//!
//! Every query's state lives in one namespace of the store's `state` column family,
//! `__eddy_query_{query id}`, written in the same commit as the query's output and input
//! offsets. Within it, the first byte of a key says whose it is:
//!
//! | first byte | owner | what follows |
//! |---|---|---|
//! | `0`, `1`, … | join stage `k` | the stage's own keys (see `join::state`) |
//! | `g` | aggregation | a group's accumulators: group key (and window bounds) |
//! | `s` | aggregation | a group's session list: group key |
//! | `r` | aggregation over a table, or a split one's tasks over the table | a table row's last value: the record key |
//! | `t` | aggregation | stream time per partition |
//! | `m` | aggregation, `EMIT FINAL` | the latest window start written per partition |
//! | `w` | aggregation | an open window, filed by the bound it closes at: partition clock, bound, group key |
//! | `W` | aggregation | marks that the `w` index is kept (state from before it is indexed once) |
//!
//! A join stage's byte is its index, far below the letters, so a join feeding an aggregation
//! shares the namespace without a clash.

/// State-store changes of one step: a key and its new value, or `None` to delete it.
pub type StateWrites = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The consumer group holding query `query_id`'s committed input offsets.
pub fn consumer_group(query_id: &str) -> String {
    format!("{}query_{query_id}", eddy_storage::INTERNAL_GROUP_PREFIX)
}

/// The state-store namespace of query `query_id`.
pub(crate) fn namespace(query_id: &str) -> String {
    format!("__eddy_query_{query_id}")
}

/// The state-store namespace of task `partition` of query `query_id`, when the nodes of its
/// service split it: each task's state is its own, as it moves between nodes on its own.
pub(crate) fn task_namespace(query_id: &str, partition: u32) -> String {
    format!("__eddy_query_{query_id}_task_{partition}")
}

/// The state-store namespace of the aggregation task `partition` of query `query_id`, when
/// its joined rows are aggregated by other columns than the join key: apart from the join
/// task of the same number, which may run on another node.
pub(crate) fn aggregate_task_namespace(query_id: &str, partition: u32) -> String {
    format!("__eddy_query_{query_id}_aggregate_{partition}")
}

/// The topic a split aggregation's router writes each record to, in its group's partition,
/// on the cluster of service `service_id` (ksqlDB's name for it).
pub(crate) fn repartition_topic(service_id: &str, query_id: &str) -> String {
    format!("_confluent-ksql-{service_id}query_{query_id}-Aggregate-GroupBy-repartition")
}

/// The topic a split join's router writes the records of source `index` (joined on another
/// column than its key) to, in their join key's partition: ksqlDB's name for a join's left
/// and right repartition, and a numbered one for a later source of several joins.
pub(crate) fn join_repartition_topic(service_id: &str, query_id: &str, index: usize) -> String {
    let side = match index {
        0 => "Join-left".to_string(),
        1 => "Join-right".to_string(),
        n => format!("Join-{n}-right"),
    };
    format!("_confluent-ksql-{service_id}query_{query_id}-{side}-repartition")
}

/// The compacted topic backing the state of a split join's tasks, one partition per task.
pub(crate) fn join_changelog_topic(service_id: &str, query_id: &str) -> String {
    format!("_confluent-ksql-{service_id}query_{query_id}-Join-changelog")
}

/// The compacted topic backing the state of a split aggregation's tasks, one partition per
/// task (ksqlDB's name for the aggregation's state store changelog).
pub(crate) fn task_changelog_topic(service_id: &str, query_id: &str) -> String {
    format!(
        "_confluent-ksql-{service_id}query_{query_id}-Aggregate-Aggregate-Materialize-changelog"
    )
}

/// The compacted topic backing the state of the tasks over a table's partitions that a split
/// aggregation of the table keeps (each key's last row), one partition per task (ksqlDB's
/// name for a source table's materialization).
pub(crate) fn table_changelog_topic(service_id: &str, query_id: &str) -> String {
    format!("_confluent-ksql-{service_id}query_{query_id}-KsqlTopic-Reduce-changelog")
}

/// The state-store namespace of a split foreign-key join's task over partition `partition`
/// of its right table.
pub(crate) fn right_task_namespace(query_id: &str, partition: u32) -> String {
    format!("__eddy_query_{query_id}_right_{partition}")
}

/// The topics of a split foreign-key join (Kafka Streams' names for them): the left tasks'
/// subscriptions, partitioned as the right table, and the right tasks' responses,
/// partitioned as the left table.
pub(crate) fn foreign_key_topics(service_id: &str, query_id: &str) -> [String; 2] {
    let prefix = format!("_confluent-ksql-{service_id}query_{query_id}");
    [
        format!("{prefix}-KTABLE-FK-JOIN-SUBSCRIPTION-REGISTRATION-topic"),
        format!("{prefix}-KTABLE-FK-JOIN-SUBSCRIPTION-RESPONSE-topic"),
    ]
}

/// The compacted topic backing the state of a split foreign-key join's right tasks.
pub(crate) fn foreign_key_changelog_topic(service_id: &str, query_id: &str) -> String {
    format!(
        "_confluent-ksql-{service_id}query_{query_id}-KTABLE-FK-JOIN-SUBSCRIPTION-STATE-STORE-changelog"
    )
}

/// The first bytes of an aggregation's keys.
pub(crate) mod aggregate_keys {
    /// A group's accumulators.
    pub const GROUP: u8 = b'g';
    /// A group's list of sessions.
    pub const SESSIONS: u8 = b's';
    /// A table row's last value, for retracting it.
    pub const TABLE_ROW: u8 = b'r';
    /// Stream time per partition.
    pub const STREAM_TIME: &[u8] = b"t";
    /// `EMIT FINAL`: the latest window start written per partition.
    pub const LATEST_START: &[u8] = b"m";
    /// An open window, by the clock of its partition and the bound it closes at.
    pub const WINDOW_INDEX: u8 = b'w';
    /// Present once the open windows are indexed under [`WINDOW_INDEX`].
    pub const WINDOW_INDEX_KEPT: &[u8] = b"W";
    /// Present when hopping windows are kept as panes (see the aggregation's `panes`).
    pub const PANES: &[u8] = b"P";
}

/// A timestamp as bytes that sort as the numbers do.
pub(crate) fn time_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// A timestamp back from [`time_bytes`].
pub(crate) fn time_from_bytes(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// `key` behind the one-byte prefix `kind`.
pub(crate) fn prefixed(kind: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(kind);
    out.extend_from_slice(key);
    out
}
