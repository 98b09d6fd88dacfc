//! Committing a query's work: each step's sink records, state changes, failed records and
//! input positions go into one commit, submitted while the next step is processed and counted
//! once it is written.

use std::sync::atomic::Ordering;
use std::time::Duration;

use eddy_connect::dead_letter::{Failure, dead_letter_record};
use eddy_storage::{Commit, LogRecord, OffsetAndMetadata, Record, Store};
use tracing::warn;

use crate::error::Result;
use crate::query::operator::{Input, Operator, StepOutput};
use crate::query::processing_log;
use crate::query::source::RecordError;
use crate::query::status::QueryShared;

/// The most record bytes per appended batch, well under a topic's default `max.message.bytes`.
const APPEND_BYTES: usize = 512 << 10;

/// Splits records into runs of at most about `limit` bytes, so no stored batch is too large.
fn batches_under(records: Vec<Record>, limit: usize) -> Vec<Vec<Record>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for record in records {
        let len = record.key.as_ref().map_or(0, |k| k.len())
            + record.value.as_ref().map_or(0, |v| v.len())
            + record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
            + 24;
        if size + len > limit && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(record);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What a run counts of the records it reads (see [`CommitContext::counts`]): every record
/// processed, unless it comes through one of `through`'s repartition topics, where its router
/// counted it; and, with `latency`, how long each took from its source to the result, for a
/// run that writes the query's results.
#[derive(Clone, Copy)]
pub(super) struct Counts<'a> {
    pub(super) through: &'a [(String, String)],
    pub(super) latency: bool,
}

impl Counts<'_> {
    /// A run over the query's sources writing its results.
    pub(super) const BOTH: Counts<'static> = Counts {
        through: &[],
        latency: true,
    };

    /// Whether records read from `topic` count as processed here.
    fn processed(&self, topic: &str) -> bool {
        !self.through.iter().any(|(_, to)| to == topic)
    }

    /// Whether the latency of the records read here is measured.
    fn latency(&self) -> bool {
        self.latency
    }
}

/// What a query's commits name: its group, its sink, and where failed records are logged.
pub(super) struct CommitContext<'a> {
    pub(super) query_id: &'a str,
    pub(super) group: &'a str,
    pub(super) sink_topic: &'a str,
    /// A split query's run over its source, or what a router sent it: a record counts as
    /// processed where it is read from the source, and its latency where its result is
    /// written, so a record through a repartition topic counts once for each.
    pub(super) counts: Counts<'a>,
    /// The bytes of window at the end of each sink key, which the partitioner ignores so that
    /// a key's windows share its partition.
    pub(super) key_suffix: usize,
    /// The topic named in processing-log entries for records the cache's flush failed on.
    pub(super) error_topic: &'a str,
    pub(super) log_errors: bool,
    /// The topic records the query failed on and dropped go to, if it names one.
    pub(super) dead_letter_topic: Option<&'a str>,
    /// What the query shares with the engine.
    pub(super) shared: &'a QueryShared,
    /// The run's commits, in flight together: once one fails, no later one lands.
    pub(super) chain: eddy_storage::CommitChain,
}

/// Work processed since the last commit: one commit being assembled, and what to count once
/// it is written.
#[derive(Default)]
pub(super) struct Uncommitted {
    commit: Option<Commit>,
    /// Where reading stands in each input advanced since the last commit.
    offsets: std::collections::BTreeMap<(String, u32), i64>,
    processed: u64,
    emitted: u64,
    timestamps: Vec<i64>,
    errors: Vec<RecordError>,
    since: Option<std::time::Instant>,
}

impl Uncommitted {
    pub(super) fn is_empty(&self) -> bool {
        self.commit.is_none()
    }

    /// How many input records the uncommitted steps processed.
    pub(super) fn processed(&self) -> u64 {
        self.processed
    }

    /// How long the oldest uncommitted work has waited.
    pub(super) fn age(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn commit(&mut self) -> &mut Commit {
        self.since.get_or_insert_with(std::time::Instant::now);
        self.commit.get_or_insert_with(Commit::new)
    }

    /// Adds one step: its state changes, sink records and failures, and the input's position.
    pub(super) fn add(
        &mut self,
        context: &CommitContext,
        namespace: Option<&str>,
        (input, fetched): (&Input, &eddy_storage::FetchedRecords),
        step: StepOutput,
    ) {
        self.add_output(
            context,
            namespace,
            step,
            (&input.topic, Some(&fetched.records)),
        );
        if context.counts.processed(&input.topic) {
            self.processed += fetched.records.len() as u64;
        }
        if context.counts.latency() {
            self.timestamps
                .extend(fetched.records.iter().map(|r| r.record.timestamp));
        }
        self.offsets
            .insert((input.topic.clone(), input.partition), fetched.next_offset);
    }

    fn add_output(
        &mut self,
        context: &CommitContext,
        namespace: Option<&str>,
        mut step: StepOutput,
        (topic, records): (&str, Option<&[LogRecord]>),
    ) {
        let commit = self.commit();
        if let Some(namespace) = namespace {
            for (key, value) in step.writes {
                match value {
                    Some(value) => commit.put_state(namespace.to_string(), key, value),
                    None => commit.delete_state(namespace.to_string(), key),
                };
            }
        }
        let mut log_entries = Vec::with_capacity(step.errors.len());
        let mut dead_letters: Vec<(i64, Record)> = Vec::new();
        let mut dead_lettered = std::collections::BTreeSet::new();
        for error in &step.errors {
            warn!(query = %context.query_id, partition = error.partition, offset = error.offset, reason = %error.reason, "record failed");
            // A step's records are in offset order.
            let record = records.and_then(|r| {
                r.binary_search_by_key(&error.offset, |r| r.offset)
                    .ok()
                    .map(|i| &r[i])
            });
            log_entries.push(processing_log::entry(
                context.query_id,
                topic,
                error,
                record,
            ));
            // One dead letter per record, however many of its expressions failed.
            if let (Some(_), Some(record)) = (context.dead_letter_topic, record)
                && error.kind.dead_letters()
                && dead_lettered.insert(error.offset)
            {
                dead_letters.push((
                    error.offset,
                    dead_letter_record(
                        record,
                        Some(&Failure {
                            by: context.query_id,
                            stage: error.kind.stage(),
                            topic,
                            partition: error.partition,
                            error_class: error.kind.class_name(),
                            error: &error.reason,
                        }),
                    ),
                ));
            }
        }
        if !log_entries.is_empty() && context.log_errors {
            commit.append(processing_log::PROCESSING_LOG_TOPIC, Some(0), log_entries);
        }
        if let Some(dead_letter_topic) = context.dead_letter_topic
            && !dead_letters.is_empty()
        {
            // In the input's order, whichever stage each failed at.
            dead_letters.sort_by_key(|(offset, _)| *offset);
            let letters = dead_letters.into_iter().map(|(_, r)| r).collect();
            for chunk in batches_under(letters, APPEND_BYTES) {
                commit.append(dead_letter_topic, None, chunk);
            }
        }
        if !step.to.is_empty() {
            let mut by_partition: std::collections::BTreeMap<(String, u32), Vec<Record>> =
                std::collections::BTreeMap::new();
            for (topic, partition, record) in std::mem::take(&mut step.to) {
                by_partition
                    .entry((topic, partition))
                    .or_default()
                    .push(record);
            }
            let commit = self.commit();
            for ((topic, partition), records) in by_partition {
                for chunk in batches_under(records, APPEND_BYTES) {
                    commit.append(topic.clone(), Some(partition), chunk);
                }
            }
        }
        if !step.routes.is_empty() {
            // Placed by the operator: a router's records, which are not the query's output.
            let mut by_partition: std::collections::BTreeMap<u32, Vec<Record>> =
                std::collections::BTreeMap::new();
            for (record, partition) in step.records.into_iter().zip(step.routes) {
                by_partition.entry(partition).or_default().push(record);
            }
            let commit = self.commit();
            for (partition, records) in by_partition {
                for chunk in batches_under(records, APPEND_BYTES) {
                    commit.append(context.sink_topic.to_string(), Some(partition), chunk);
                }
            }
            self.errors.extend(step.errors);
            return;
        }
        self.emitted += step.records.len() as u64;
        for chunk in batches_under(step.records, APPEND_BYTES) {
            self.commit().append_by_key_prefix(
                context.sink_topic.to_string(),
                context.key_suffix,
                chunk,
            );
        }
        self.errors.extend(step.errors);
    }

    /// Flushes the operator's record cache into the commit, adds the inputs' positions, and
    /// submits it.
    pub(super) fn submit(
        &mut self,
        store: &Store,
        operator: &mut dyn Operator,
        context: &CommitContext,
    ) -> Result<InFlight> {
        let step = operator.flush(store)?;
        self.add_output(
            context,
            operator.state_namespace(),
            step,
            (context.error_topic, None),
        );
        let mut done = std::mem::take(self);
        let mut commit = done.commit.take().unwrap_or_default();
        for ((topic, partition), next_offset) in done.offsets {
            commit.commit_offset(
                context.group.to_string(),
                topic,
                partition,
                OffsetAndMetadata::new(next_offset),
            );
        }
        // Counted as uncounted before the offsets can land, so no one sees them land first.
        context
            .shared
            .uncounted_commits
            .fetch_add(1, Ordering::SeqCst);
        Ok(InFlight {
            commit: store.commit_pending(commit, &context.chain)?,
            processed: done.processed,
            emitted: done.emitted,
            timestamps: done.timestamps,
            errors: done.errors,
        })
    }
}

/// Commits a query may have submitted and not yet seen written.
pub(super) const MAX_IN_FLIGHT: usize = 2;

/// A submitted commit, and what to count once it is written.
pub(super) struct InFlight {
    commit: eddy_storage::PendingCommit,
    processed: u64,
    /// Records written to the sink.
    emitted: u64,
    /// The input records' timestamps, for the end-to-end latency.
    timestamps: Vec<i64>,
    errors: Vec<RecordError>,
}

impl InFlight {
    pub(super) async fn finish(self, shared: &QueryShared) -> Result<()> {
        self.commit.wait().await?;
        shared
            .processed
            .fetch_add(self.processed, Ordering::Relaxed);
        shared
            .failed
            .fetch_add(self.errors.len() as u64, Ordering::Relaxed);
        shared.emitted.fetch_add(self.emitted, Ordering::Relaxed);
        let now_ms = eddy_storage::now_ms();
        shared.last_message_ms.store(now_ms, Ordering::Relaxed);
        shared
            .throughput
            .lock()
            .record((now_ms / 1000) as u64, self.processed);
        if let Some(histogram) = &shared.e2e_latency {
            let local = histogram.local();
            for t in self.timestamps {
                local.observe((now_ms - t).max(0) as f64 / 1000.0);
            }
            local.flush();
        }
        shared.record_errors(self.errors);
        // A commit after a failure means the query works again.
        if shared.error.lock().take().is_some() {
            tracing::info!("query recovered: it committed again");
        }
        shared.uncounted_commits.fetch_sub(1, Ordering::SeqCst);
        shared.progress.notify_waiters();
        Ok(())
    }
}
