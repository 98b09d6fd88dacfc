//! The task of a persistent query: read a batch from an input, hand it to the query's
//! [`Operator`], and commit what it made together with the input's next offset. A crash
//! between commits repeats nothing and loses nothing: the offset and the output it produced
//! land together or not at all.

mod commit;
mod placement;
pub(crate) mod reader;
mod stage;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use eddy_storage::Store;
use tokio::sync::watch;
use tracing::warn;

use crate::catalog::DataSource;
use crate::codec::Schemas;
use crate::error::Result;
use crate::query::panics::catching_panics;
use crate::query::state::consumer_group;
use crate::query::status::QueryShared;
use crate::query::{QueryPlan, processing_log};
use commit::{CommitContext, InFlight, MAX_IN_FLIGHT, Uncommitted};
use reader::{PartitionReader, query_inputs};
pub use reader::{Split, SplitPart, TaskStage};
use stage::{part_layout, stage_operator};

/// The task of one persistent query. Returns when stopped, or with the failure that ended it.
pub async fn run_query(
    store: Store,
    query_id: String,
    (plan, buffering, split): (QueryPlan, Buffering, Option<Split>),
    (sink, schemas, dead_letter_topic): (DataSource, Schemas, Option<String>),
    shared: Arc<QueryShared>,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let outcome = catching_panics(run_query_inner(
        &store,
        &query_id,
        (&plan, buffering, split.as_ref()),
        (&sink, &schemas, dead_letter_topic.as_deref()),
        &shared,
        &mut stop,
    ))
    .await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(panic),
    };
    if let Some(error) = &failure {
        warn!(query = %query_id, error = %error, "query stopped with an error");
        *shared.error.lock() = Some((eddy_storage::now_ms(), error.clone()));
    }
    // A split query's runs end and start again as its partitions move: its supervisor says
    // when it has finished, so a wait for queries to catch up never passes between two runs.
    if split.is_none() {
        shared.finished.store(true, Ordering::SeqCst);
    }
    shared.progress.notify_waiters();
    failure
}

async fn run_query_inner(
    store: &Store,
    query_id: &str,
    (plan, buffering, split): (&QueryPlan, Buffering, Option<&Split>),
    (sink, schemas, dead_letter_topic): (&DataSource, &Schemas, Option<&str>),
    shared: &QueryShared,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let group = consumer_group(query_id);
    let part = split.map_or(&SplitPart::Whole, |s| &s.part);
    let joined = plan;
    let (plan, namespace, sink_topic) = part_layout(plan, part, query_id, sink)?;
    let plan = plan.as_ref();
    let (inputs, positions) = query_inputs(store, &group, plan, split)?;
    if split.is_some() {
        let mut started = shared.started.lock();
        for (input, at) in inputs.iter().zip(&positions) {
            started.insert((input.topic.clone(), input.partition), *at);
        }
    }
    // A task's state catches up with what the node it moved from committed, after the
    // positions it starts from: no later commit of that node's can land (see `claim_task`).
    let _claimed = match part {
        SplitPart::Task {
            partition,
            namespace,
            changelog,
            ..
        } => Some(Claim::take(store, namespace, (changelog, *partition)).await?),
        _ => None,
    };
    let placement = match part {
        SplitPart::Task { routes, .. } => {
            let rerouted: Vec<&str> = routes.iter().map(|(_, to)| to.as_str()).collect();
            placement::Placement::of_task(store, plan, &inputs, &rerouted)?
        }
        _ => placement::Placement::none(),
    };
    let mut reader = PartitionReader::over(store, query_id, inputs, positions)
        .tables_first(plan)
        .final_rows_by_window(plan);
    let stage = match part {
        SplitPart::Task { stage, .. } => stage,
        _ => &TaskStage::Whole,
    };
    let mut operator: Box<dyn crate::query::operator::Operator + '_> =
        match (part, plan.split_aggregation(), plan.split_join()) {
            (SplitPart::Route { .. }, Some(aggregation), _) => Box::new(
                crate::query::aggregate::GroupRouter::new(store, aggregation, (sink, schemas))?,
            ),
            (SplitPart::Route { topic }, _, Some(join)) => Box::new(
                crate::query::join::JoinRouter::new(store, (&join.chain, topic), schemas)?,
            ),
            _ if *stage != TaskStage::Whole => stage_operator(
                store,
                (joined, plan, stage),
                &namespace,
                (sink, buffering.enabled(), schemas),
            )?,
            _ => plan.operator(store, &namespace, sink, buffering.enabled(), schemas)?,
        };
    let log_topic_exists = store.topic_exists(processing_log::PROCESSING_LOG_TOPIC);
    if let Some(topic) = dead_letter_topic {
        store.ensure_topic(topic)?;
    }
    let context = CommitContext {
        query_id,
        group: &group,
        sink_topic,
        counts: match part {
            SplitPart::Whole => commit::Counts::BOTH,
            SplitPart::Route { .. } => commit::Counts {
                through: &[],
                latency: false,
            },
            // Rows on their way to their group are not yet the query's results.
            SplitPart::Task { routes, stage, .. } => commit::Counts {
                through: routes,
                latency: !matches!(
                    stage,
                    TaskStage::Regroup { .. } | TaskStage::ForeignRight { .. }
                ),
            },
        },
        key_suffix: sink
            .window
            .as_ref()
            .map_or(0, crate::query::source::window_bytes),
        error_topic: &plan.source().topic,
        log_errors: log_topic_exists,
        dead_letter_topic,
        shared,
        chain: eddy_storage::CommitChain::new(),
    };
    // Commits stay in flight while the next records are processed: they apply in order, each
    // whole, and none after one that failed, so a crash or a failed write loses only work whose
    // offsets were not committed either.
    let mut in_flight: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut uncommitted = Uncommitted::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let next = match reader.try_next()? {
            Some(next) => Some(next),
            None => {
                // Caught up: what the record cache holds goes out now, and every commit lands
                // before waiting for input.
                if !uncommitted.is_empty() {
                    in_flight.push_back(uncommitted.submit(store, operator.as_mut(), &context)?);
                }
                while let Some(done) = in_flight.pop_front() {
                    done.finish(shared).await?;
                }
                reader.next(stop).await?
            }
        };
        let Some((index, fetched)) = next else {
            break;
        };
        let input = reader.input(index).clone();
        let mut step = operator.step(store, &input, &fetched.records)?;
        if let Some(misplaced) = placement.check(index, &input, &fetched.records) {
            step.errors.push(misplaced);
        }
        uncommitted.add(
            &context,
            operator.state_namespace(),
            (&input, &fetched),
            step,
        );
        reader.advance(index, fetched.next_offset);
        // A query with a backlog would otherwise run step after step without giving its
        // worker thread back: tasks woken meanwhile (an HTTP answer, a scrape) would wait.
        tokio::task::consume_budget().await;
        // With a record cache, the cache flushes (and the steps' work commits) once it is full
        // or the commit interval has passed. Without one, every update goes out, but steps
        // commit together up to a batch's worth: inputs merged by time can make steps of a few
        // records each, and a commit per step would cost more than their work.
        let due = match operator.record_cache() {
            Some(bytes) => bytes >= buffering.max_bytes || uncommitted.age() >= buffering.interval,
            None => uncommitted.processed() >= COMMIT_RECORDS || uncommitted.age() >= COMMIT_DELAY,
        };
        if due {
            in_flight.push_back(uncommitted.submit(store, operator.as_mut(), &context)?);
            if in_flight.len() > MAX_IN_FLIGHT
                && let Some(done) = in_flight.pop_front()
            {
                done.finish(shared).await?;
            }
            // State read through from the store stays in memory only up to a bound: past it,
            // once every change is stored, it is dropped and read again as input needs it.
            if operator.cached_state() > buffering.state_cache_entries {
                while let Some(done) = in_flight.pop_front() {
                    done.finish(shared).await?;
                }
                operator.drop_cached_state();
            }
        }
    }
    if !uncommitted.is_empty() {
        in_flight.push_back(uncommitted.submit(store, operator.as_mut(), &context)?);
    }
    while let Some(done) = in_flight.pop_front() {
        done.finish(shared).await?;
    }
    Ok(())
}

/// This node's hold on a split task: its state caught up and written to its changelog
/// partition while held, followed again once dropped.
struct Claim {
    store: Store,
    namespace: String,
}

impl Claim {
    async fn take(
        store: &Store,
        namespace: &str,
        (changelog, partition): (&str, u32),
    ) -> Result<Claim> {
        let (claiming, owned, topic) =
            (store.clone(), namespace.to_string(), changelog.to_string());
        let applied =
            tokio::task::spawn_blocking(move || claiming.claim_task(&owned, (&topic, partition)))
                .await
                .map_err(|e| {
                    crate::error::EngineError::internal_from("catching a task's state up", e)
                })??;
        tracing::debug!(
            namespace,
            partition,
            records = applied,
            "took a task, its state caught up"
        );
        Ok(Claim {
            store: store.clone(),
            namespace: namespace.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.store.release_task(&self.namespace);
    }
}

/// Without a record cache, the records whose steps commit together at most (a caught-up query
/// commits at once)...
const COMMIT_RECORDS: u64 = 1024;
/// ... and the longest their output waits for the commit that makes it visible.
const COMMIT_DELAY: Duration = Duration::from_millis(50);

/// How a query's record cache coalesces updates, from `cache.max.bytes.buffering` and
/// `commit.interval.ms` as ksqlDB reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// The most bytes of updates the cache holds before it flushes; 0 turns it off, so every
    /// update goes out.
    pub max_bytes: usize,
    /// The longest the cache holds updates before it flushes and the query commits.
    pub interval: Duration,
    /// The most entries of stored state (groups, rows) the query keeps in memory; past it,
    /// they are dropped once stored and read through from the store again.
    pub state_cache_entries: usize,
}

/// The default bound on a query's state in memory: 100,000 groups or rows, tens of MB.
pub const DEFAULT_STATE_CACHE_ENTRIES: usize = 100_000;

impl Default for Buffering {
    fn default() -> Self {
        Buffering {
            max_bytes: 10 << 20,
            interval: Duration::from_millis(2_000),
            state_cache_entries: DEFAULT_STATE_CACHE_ENTRIES,
        }
    }
}

impl Buffering {
    /// The buffering `properties` ask for, with ksqlDB's defaults for what they leave out.
    pub fn from_properties(properties: &std::collections::HashMap<String, String>) -> Self {
        let get = |name: &str| {
            properties
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        };
        let default = Buffering::default();
        Buffering {
            max_bytes: get("cache.max.bytes.buffering")
                .map_or(default.max_bytes, |b| b.min(usize::MAX as u64) as usize),
            interval: get("commit.interval.ms").map_or(default.interval, Duration::from_millis),
            state_cache_entries: default.state_cache_entries,
        }
    }

    /// Whether updates are coalesced at all.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}
