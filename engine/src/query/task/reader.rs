//! Reading a query's inputs: every partition of every source from the query's positions, in
//! timestamp order across inputs, with the next read of a busy input begun ahead.

use std::time::Duration;

use eddy_sql::ast::SourceKind;
use eddy_storage::{StorageError, Store};
use futures::future::select_all;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::Result;
use crate::query::QueryPlan;
use crate::query::operator::Input;

/// How much to read from a partition per step.
const READ_BYTES: usize = 1 << 20;

/// Reads partitions in turn from given positions, waiting for input when all are read to
/// their end.
pub(crate) struct PartitionReader {
    store: Store,
    query_id: String,
    inputs: Vec<Input>,
    positions: Vec<i64>,
    /// Records read from an input but not yet handed out.
    pending: Vec<Option<eddy_storage::FetchedRecords>>,
    /// Per input, the rest of a read cut short when it was handed out: pending again once the
    /// caller advances past what it was handed, so merging inputs by time never reads the
    /// same records twice.
    rest: Vec<Option<eddy_storage::FetchedRecords>>,
    /// Whether inputs are merged in timestamp order (see [`PartitionReader::try_next`]).
    ordered: bool,
    /// Per input, its rank among inputs whose next records have the same time: lower first.
    tie_rank: Vec<u8>,
    /// Per input, its next read, started when its records were last handed out in full, while
    /// the caller processes them.
    prefetch: Vec<Option<Prefetch>>,
    /// Per input, the window of a windowed table whose final rows a stream joins: its records
    /// are merged by their window's start rather than their time (see `final_rows_by_window`).
    by_window: Vec<Option<crate::catalog::WindowInfo>>,
    /// Per table input, the end its log had when last asked, until reading reaches it: while
    /// such a table has nothing fetched, stream inputs wait, so its records already in the
    /// log are merged by time with the stream's even when a log on a cluster has not fetched
    /// them yet (Kafka Streams' tasks idle for the same reason until each partition's end is
    /// known).
    table_ends: Vec<Option<i64>>,
    /// Whether the tables' ends are to be asked before the next stream records go: before
    /// the first, and after each time the reader caught up, since rows may have come to a
    /// table meanwhile that a log on a cluster has not fetched yet.
    recheck_tables: bool,
}

/// A read of one input begun ahead on a blocking thread: reading and decoding the log takes
/// a query with a backlog about a third of its time, which then overlaps processing.
struct Prefetch {
    position: i64,
    result: std::sync::mpsc::Receiver<eddy_storage::Result<eddy_storage::FetchedRecords>>,
}

impl PartitionReader {
    /// A reader of `inputs`, each starting at its position.
    pub(crate) fn over(
        store: &Store,
        query_id: &str,
        inputs: Vec<Input>,
        positions: Vec<i64>,
    ) -> Self {
        PartitionReader {
            store: store.clone(),
            query_id: query_id.to_string(),
            pending: (0..inputs.len()).map(|_| None).collect(),
            rest: (0..inputs.len()).map(|_| None).collect(),
            tie_rank: vec![0; inputs.len()],
            prefetch: (0..inputs.len()).map(|_| None).collect(),
            by_window: vec![None; inputs.len()],
            table_ends: vec![None; inputs.len()],
            recheck_tables: false,
            inputs,
            positions,
            ordered: true,
        }
    }

    /// Reads input `i` from `position`, taking the read begun ahead if it is that one.
    fn read(
        &mut self,
        i: usize,
        position: i64,
    ) -> eddy_storage::Result<eddy_storage::FetchedRecords> {
        if let Some(ahead) = self.prefetch[i].take()
            && ahead.position == position
            && let Ok(result) = ahead.result.recv()
        {
            return result;
        }
        let input = &self.inputs[i];
        self.store
            .read_records(&input.topic, input.partition, position, READ_BYTES)
    }

    /// Begins reading input `i` from `position` on a blocking thread, when the log is known
    /// to hold more there and a runtime is at hand.
    fn read_ahead(&mut self, i: usize, fetched: &eddy_storage::FetchedRecords) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if fetched.next_offset >= fetched.last_stable_offset
            || self.prefetch[i]
                .as_ref()
                .is_some_and(|p| p.position == fetched.next_offset)
        {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let store = self.store.clone();
        let (topic, partition) = (self.inputs[i].topic.clone(), self.inputs[i].partition);
        let position = fetched.next_offset;
        runtime.spawn_blocking(move || {
            let _ = tx.send(store.read_records(&topic, partition, position, READ_BYTES));
        });
        self.prefetch[i] = Some(Prefetch {
            position,
            result: rx,
        });
    }

    /// Hands out each input's records as they come, in whole reads, without merging inputs
    /// by time: for readers (such as a table's materializer) to whom order across partitions
    /// means nothing, and for whom many small steps would cost a commit each.
    pub(crate) fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// Of records with the same time, hands out the tables' first: a stream record joined
    /// with a table then sees the table as of its own time, rows written at that time included.
    /// Kafka Streams leaves such ties to chance; a source's rows are usually written at or
    /// before the time of the events that refer to them (a person before the auctions they
    /// open in the same millisecond).
    pub(crate) fn tables_first(mut self, plan: &QueryPlan) -> Self {
        let sources = plan.sources();
        self.tie_rank = self
            .inputs
            .iter()
            .map(|input| match sources.get(input.side) {
                Some(source) if source.kind == SourceKind::Table => 0,
                _ => 1,
            })
            .collect();
        // The tables' ends are asked before the first stream records go, as after each time
        // the reader catches up.
        self.recheck_tables = self.joins_tables_and_streams();
        self
    }

    /// Whether the inputs are tables and streams both, so streams may wait for tables.
    fn joins_tables_and_streams(&self) -> bool {
        self.tie_rank.contains(&0) && self.tie_rank.contains(&1)
    }

    /// Asks each table input with nothing fetched where its log ends now, so stream records
    /// wait for table rows the log holds and has not fetched yet, as Kafka Streams' tasks
    /// wait for partitions the broker says have more (`max.task.idle.ms` at 0).
    fn recheck_table_ends(&mut self) {
        for i in 0..self.inputs.len() {
            if self.tie_rank[i] != 0 || self.pending[i].is_some() {
                continue;
            }
            let input = &self.inputs[i];
            let end = self
                .store
                .last_stable_offset(&input.topic, input.partition)
                .ok();
            if let Some(end) = end.filter(|end| *end > self.positions[i]) {
                self.table_ends[i] = Some(end);
            }
        }
    }

    /// Merges a windowed table whose final rows a stream joins by its rows' window starts: a
    /// window's rows are written once it closes, at a time within it; read by their start,
    /// they come before the window's stream records when they are already there, so those
    /// need not wait for them.
    pub(crate) fn final_rows_by_window(mut self, plan: &QueryPlan) -> Self {
        if let QueryPlan::Join(join) = plan
            && let Some(stage) = join.chain.stages.first()
            && matches!(
                stage.shape,
                crate::query::join::JoinShape::StreamWindow { .. }
            )
        {
            self.by_window = self
                .inputs
                .iter()
                .map(|input| {
                    (input.side == 1)
                        .then_some(stage.right.source.window)
                        .flatten()
                })
                .collect();
        }
        self
    }

    /// The time input `i`'s record is merged by: its timestamp, or its window's start.
    fn merge_time(&self, i: usize, record: &eddy_storage::LogRecord) -> i64 {
        self.by_window[i]
            .as_ref()
            .zip(record.record.key.as_deref())
            .and_then(|(window, key)| crate::query::source::split_windowed_key(key, window))
            .map_or(record.record.timestamp, |(_, start, _)| start)
    }

    /// Where reading stands in each input.
    pub(crate) fn positions(&self) -> &[i64] {
        &self.positions
    }

    /// The input at `index`.
    pub(crate) fn input(&self, index: usize) -> &Input {
        &self.inputs[index]
    }

    /// Records that the caller has consumed input `index` up to `next_offset`.
    pub(crate) fn advance(&mut self, index: usize, next_offset: i64) {
        if let Some(p) = self.positions.get_mut(index) {
            *p = next_offset;
            self.pending[index] = self.rest[index]
                .take()
                .filter(|rest| rest.records.first().map(|r| r.offset) == Some(next_offset));
        }
    }

    /// The next records of some input if any are there now, without waiting or advancing.
    /// Inputs are merged in timestamp order, as Kafka Streams picks the partition with the
    /// oldest record: of the inputs with records, the one whose first record is oldest goes
    /// first, and only up to where another input's first record is older still. So a table
    /// a stream is joined with is read up to the stream's time before the stream goes on.
    pub(crate) fn try_next(&mut self) -> Result<Option<(usize, eddy_storage::FetchedRecords)>> {
        for i in 0..self.inputs.len() {
            if self.pending[i].is_some() {
                continue;
            }
            let position = self.positions[i];
            match self.read(i, position) {
                Ok(fetched) if fetched.next_offset > position => self.pending[i] = Some(fetched),
                Ok(_) => {}
                Err(StorageError::OffsetOutOfRange { log_start, .. }) => {
                    let input = &self.inputs[i];
                    warn!(query = %self.query_id, topic = %input.topic, partition = input.partition, from = position, to = log_start, "input offset out of range; skipping to the log start");
                    self.positions[i] = log_start;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let streams_waiting =
            (0..self.inputs.len()).any(|i| self.tie_rank[i] != 0 && self.pending[i].is_some());
        if self.recheck_tables && streams_waiting {
            self.recheck_tables = false;
            self.recheck_table_ends();
        }
        for i in 0..self.inputs.len() {
            if self.table_ends[i].is_some_and(|end| self.positions[i] >= end) {
                self.table_ends[i] = None;
            }
        }
        let head = |i: usize, f: &eddy_storage::FetchedRecords| {
            let time = f
                .records
                .first()
                .map_or(i64::MIN, |r| self.merge_time(i, r));
            (time, self.tie_rank[i])
        };
        // A table with records still to fetch is waited for; once they are here, the merge by
        // time decides as for any input.
        let tables_behind = (0..self.inputs.len())
            .any(|i| self.table_ends[i].is_some() && self.pending[i].is_none());
        let Some(chosen) = (0..self.inputs.len())
            .filter(|&i| !tables_behind || self.tie_rank[i] == 0)
            .filter_map(|i| self.pending[i].as_ref().map(|f| (head(i, f), i)))
            .min()
            .map(|(_, i)| i)
        else {
            // Caught up (or waiting for a table): whatever comes next, the tables may have
            // grown first.
            self.recheck_tables = self.joins_tables_and_streams();
            return Ok(None);
        };
        let bound = (0..self.inputs.len())
            .filter(|_| self.ordered)
            .filter(|&i| i != chosen)
            .filter_map(|i| self.pending[i].as_ref().map(|f| head(i, f)))
            .min();
        let rank = self.tie_rank[chosen];
        let Some(mut fetched) = self.pending[chosen].take() else {
            return Ok(None);
        };
        self.rest[chosen] = None;
        if let Some(bound) = bound
            && let Some(cut) = fetched
                .records
                .iter()
                .skip(1)
                .position(|r| (self.merge_time(chosen, r), rank) > bound)
        {
            let cut = cut + 1;
            let rest = eddy_storage::FetchedRecords {
                records: fetched.records.split_off(cut),
                next_offset: fetched.next_offset,
                high_watermark: fetched.high_watermark,
                last_stable_offset: fetched.last_stable_offset,
                log_start_offset: fetched.log_start_offset,
            };
            fetched.next_offset = rest.records.first().map_or(rest.next_offset, |r| r.offset);
            self.rest[chosen] = Some(rest);
        }
        if self.rest[chosen].is_none() {
            self.read_ahead(chosen, &fetched);
        }
        Ok(Some((chosen, fetched)))
    }

    /// The next records of some input, without advancing (see [`PartitionReader::advance`]),
    /// or `None` once `stop` is set. Waits without polling while everything is read.
    pub(crate) async fn next(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(usize, eddy_storage::FetchedRecords)>> {
        loop {
            if *stop.borrow() || self.inputs.is_empty() {
                return Ok(None);
            }
            if let Some(next) = self.try_next()? {
                return Ok(Some(next));
            }
            debug!(query = %self.query_id, "caught up; waiting for input");
            let waits = self
                .inputs
                .iter()
                .zip(&self.positions)
                .map(|(input, &at)| {
                    let store = self.store.clone();
                    let topic = input.topic.clone();
                    let partition = input.partition;
                    Box::pin(async move {
                        store
                            .wait_for_data(&topic, partition, at, Duration::from_secs(1))
                            .await
                    })
                })
                .collect::<Vec<_>>();
            tokio::select! {
                _ = stop.changed() => {}
                _ = select_all(waits) => {}
            }
        }
    }
}

/// Every partition of every source of `plan`, with where the query's group stands in each;
/// for a query whose partitions the service's nodes split, only those of `split`'s, from its
/// group's committed offsets on the cluster.
pub(crate) fn query_inputs(
    store: &Store,
    group: &str,
    plan: &QueryPlan,
    split: Option<&Split>,
) -> Result<(Vec<Input>, Vec<i64>)> {
    let mut inputs = Vec::new();
    for (side, source) in plan.sources().into_iter().enumerate() {
        let partitions = store.partition_count(&source.topic)?;
        inputs.extend(
            (0..partitions)
                .map(|partition| Input {
                    side,
                    topic: source.topic.clone(),
                    partition,
                })
                .filter(|input| {
                    split.is_none_or(|s| {
                        s.partitions
                            .contains(&(input.topic.clone(), input.partition))
                    })
                }),
        );
    }
    let committed = match split {
        Some(split) => {
            let wanted: Vec<(String, u32)> = inputs
                .iter()
                .map(|i| (i.topic.clone(), i.partition))
                .collect();
            store.query_group_positions(&split.group, &wanted)?
        }
        None => Vec::new(),
    };
    let positions = inputs
        .iter()
        .map(|input| {
            let on_cluster = committed
                .iter()
                .find(|(t, p, _)| *t == input.topic && *p == input.partition)
                .map(|(_, _, offset)| *offset);
            start_position(store, group, input, on_cluster)
        })
        .collect::<Result<Vec<i64>>>()?;
    Ok((inputs, positions))
}

/// The partitions of a query this node runs, as its service's nodes split them.
#[derive(Debug, Clone)]
pub struct Split {
    /// The query's group on the cluster.
    pub group: eddy_storage::QueryGroup,
    /// This node's partitions.
    pub partitions: std::collections::BTreeSet<(String, u32)>,
    /// Which part of the query runs over them.
    pub part: SplitPart,
}

/// What one run of a split query does over its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitPart {
    /// The whole query, over this node's partitions of its sources (a stateless query).
    Whole,
    /// A router of a split query with state: this node's partitions of one source, each
    /// record sent to the partition of the repartition topic `topic` that its group (of an
    /// aggregation) or join key (of a join) hashes to.
    Route {
        /// The repartition topic.
        topic: String,
    },
    /// A task of a split query with state, over one partition number of every topic it reads:
    /// an aggregation's repartition topic (or its source, grouped by its key), a join's
    /// sources (or their repartition topics).
    Task {
        /// The sources the task reads through their repartition topics, each with its
        /// repartition topic, which the task reads as it would the source.
        routes: Vec<(String, String)>,
        /// The partition, which is the task's.
        partition: u32,
        /// The task's state namespace.
        namespace: String,
        /// The changelog topic whose partition `partition` backs the task's state.
        changelog: String,
        /// What the task computes.
        stage: TaskStage,
    },
}

/// What a task of a split query with state computes over its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStage {
    /// The query after its routers: an aggregation, or a join and its projection or its
    /// aggregation by the join key.
    Whole,
    /// The first of two: a join whose rows are aggregated by other columns, or a table's
    /// changes aggregated by other columns than its key. Each row (a table's previous row
    /// marked as its retraction) goes to the partition of the repartition topic `topic` that
    /// its group's key hashes to.
    Regroup {
        /// The repartition topic.
        topic: String,
    },
    /// The second: the aggregation of the rows in the task's partition of `topic`, which is
    /// also the task's one entry in `routes`.
    Aggregate {
        /// The repartition topic.
        topic: String,
    },
    /// A foreign-key join's task over a partition of its left table, and of the response
    /// topic (in place of the right table, in `routes`): it sends subscriptions to
    /// `subscriptions` and writes the results.
    ForeignLeft {
        /// The subscription topic.
        subscriptions: String,
    },
    /// A foreign-key join's task over a partition of its right table, and of the
    /// subscription topic (in place of the left table, in `routes`): it answers to
    /// `responses`.
    ForeignRight {
        /// The response topic.
        responses: String,
    },
}

/// Where the query starts reading a partition: its group's offset on the cluster, else its
/// committed offset here (where a new query's first positions are), else the log's start.
fn start_position(
    store: &Store,
    group: &str,
    input: &Input,
    on_cluster: Option<i64>,
) -> Result<i64> {
    if let Some(offset) = on_cluster {
        return Ok(offset);
    }
    Ok(
        match store.fetch_offset(group, &input.topic, input.partition)? {
            Some(committed) => committed.offset,
            None => store.log_start_offset(&input.topic, input.partition)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use eddy_storage::{Record, Store, StoreOptions, TopicConfig};

    use super::*;

    /// Two topics whose records interleave in time: `a` at even times, `b` at odd ones.
    async fn interleaved(dir: &std::path::Path) -> Store {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        for (topic, first) in [("a", 0), ("b", 1)] {
            store.create_topic(topic, TopicConfig::default()).unwrap();
            let records = (0..100)
                .map(|i| Record::unkeyed(vec![b'x'], first + 2 * i))
                .collect();
            store.produce(topic, records).await.unwrap();
        }
        store
    }

    fn reader_of(store: &Store) -> PartitionReader {
        let inputs = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(side, topic)| Input {
                side,
                topic: topic.to_string(),
                partition: 0,
            })
            .collect();
        PartitionReader::over(store, "q", inputs, vec![0, 0])
    }

    #[tokio::test]
    async fn interleaved_inputs_come_out_in_time_order_each_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = interleaved(dir.path()).await;
        let mut reader = reader_of(&store);
        let mut times = Vec::new();
        while let Some((index, fetched)) = reader.try_next().unwrap() {
            times.extend(fetched.records.iter().map(|r| r.record.timestamp));
            reader.advance(index, fetched.next_offset);
        }
        assert_eq!(times, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn records_handed_out_but_not_advanced_past_come_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = interleaved(dir.path()).await;
        let mut reader = reader_of(&store);
        let (index, first) = reader.try_next().unwrap().unwrap();
        let (again, repeated) = reader.try_next().unwrap().unwrap();
        assert_eq!((index, first.next_offset), (again, repeated.next_offset));
        assert_eq!(first.records.len(), repeated.records.len());
        reader.advance(index, first.next_offset);
        let (other, next) = reader.try_next().unwrap().unwrap();
        assert_ne!(other, index);
        assert_eq!(next.records[0].record.timestamp, 1);
    }
}
