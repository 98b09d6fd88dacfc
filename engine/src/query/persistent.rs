//! A persistent query as the engine keeps it: what started it, what it reads and writes, its
//! task (started, paused, resumed, stopped), and what `SHOW QUERIES` and `EXPLAIN` show of it.
//!
//! A task that fails is started again from its committed offsets after a backoff that doubles
//! from `ksql.query.retry.backoff.initial.ms` to `ksql.query.retry.backoff.max.ms`, as ksqlDB
//! retries its queries: a full disk or a fault that passes does not end a query for good. The
//! query shows `ERROR` with its cause from the failure until the new task has run for the initial
//! backoff without failing, or has committed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::query::state::{self, consumer_group};
use crate::query::status::QueryShared;
use crate::query::task::{Buffering, Split, SplitPart, TaskStage};
use crate::query::{QueryPlan, stats};

/// How a persistent query was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `CREATE STREAM|TABLE ... AS SELECT`.
    CreateAsSelect,
    /// `INSERT INTO ... SELECT`.
    InsertInto,
}

/// A persistent query the engine runs.
#[derive(Debug)]
pub struct PersistentQuery {
    /// Its id, such as `CSAS_OUTPUT_3`.
    pub id: String,
    /// The statement that created it.
    pub sql: String,
    /// The sources it reads, and their topics.
    pub sources: Vec<(String, String)>,
    /// The sink it writes.
    pub sink: String,
    /// The sink's topic.
    pub sink_topic: String,
    /// How it was created.
    pub kind: QueryKind,
    /// The sink's columns.
    pub fields: Vec<crate::schema::Column>,
    /// The execution plan, as `EXPLAIN` prints it.
    pub execution_plan: String,
    /// Counters and progress.
    pub shared: Arc<QueryShared>,
    /// What (re)starting its task needs.
    launch: QueryLaunch,
    stop: watch::Sender<bool>,
    /// The running task; none while paused or held.
    task: Option<JoinHandle<()>>,
    /// Paused by `PAUSE`.
    paused: bool,
    /// Held because this node stands by for its service's active node on a Kafka cluster.
    held: bool,
}

/// How long a failed query waits before it is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The first wait (`ksql.query.retry.backoff.initial.ms`, 15 s).
    pub initial: Duration,
    /// The longest wait, reached by doubling (`ksql.query.retry.backoff.max.ms`, 15 min).
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            initial: Duration::from_secs(15),
            max: Duration::from_secs(15 * 60),
        }
    }
}

/// What a query's task runs: the plan over the store, writing the sink.
#[derive(Debug, Clone)]
pub struct QueryLaunch {
    /// The store it reads and writes.
    pub store: eddy_storage::Store,
    /// The plan.
    pub plan: QueryPlan,
    /// The sink it writes.
    pub sink: crate::catalog::DataSource,
    /// How its record cache coalesces updates.
    pub buffering: Buffering,
    /// How long it waits to be started again after a failure.
    pub retry: RetryBackoff,
    /// The registry the formats of its sources and sink use.
    pub schemas: crate::codec::Schemas,
    /// Where records it fails on and drops go (`DEAD_LETTER_TOPIC`), if anywhere.
    pub dead_letter_topic: Option<String>,
}

impl QueryLaunch {
    fn spawn(&self, id: &str, shared: &Arc<QueryShared>) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        // Before the task runs, so a wait for queries to catch up that starts now counts it.
        shared.finished.store(false, Ordering::SeqCst);
        let task = tokio::spawn(
            self.clone()
                .supervise(id.to_string(), shared.clone(), stopped),
        );
        (stop, task)
    }

    /// Whether this query's partitions are split among its service's nodes: a query that
    /// can be, on a Kafka cluster.
    fn split(&self) -> bool {
        self.plan.splits_partitions()
            && self.store.service_member().is_some()
            && self.partitions_agree()
    }

    /// Whether a join's sources read by their key have as many partitions each, so partition
    /// `p` of one meets partition `p` of the others; any other query's do.
    fn partitions_agree(&self) -> bool {
        let Some(join) = self.plan.split_join() else {
            return true;
        };
        let counts: Vec<Option<u32>> = join
            .chain
            .sources
            .iter()
            .zip(join.chain.routed())
            .filter(|(_, routed)| !routed)
            .map(|(s, _)| self.store.partition_count(&s.topic).ok())
            .collect();
        counts.iter().all(|c| c.is_some() && *c == counts[0])
    }

    /// Runs the task until it is stopped, starting it again after each failure; a split
    /// query's task runs over the partitions its group gives this node, and again each time
    /// they change.
    async fn supervise(self, id: String, shared: Arc<QueryShared>, stopped: watch::Receiver<bool>) {
        if !self.split() {
            return self.supervise_runs(id, shared, stopped, None).await;
        }
        let local_group = consumer_group(&id);
        let layout = self.task_layout(&id);
        let topics: Vec<String> = match &layout {
            Some(layout) => layout.group_topics(),
            None => self
                .plan
                .sources()
                .iter()
                .map(|s| s.topic.clone())
                .collect(),
        };
        let mut backoff = self.retry.initial;
        let group = loop {
            let joined = match &layout {
                Some(layout) => layout.ensure(&self.store),
                None => Ok(()),
            }
            .and_then(|()| self.store.join_query_group(&local_group, &id, &topics));
            match joined {
                Ok(Some(group)) => break group,
                Ok(None) => return self.supervise_runs(id, shared, stopped, None).await,
                Err(e) => {
                    tracing::warn!(query = %id, error = %e, "joining the query's group failed; trying again");
                    *shared.error.lock() = Some((eddy_storage::now_ms(), e.to_string()));
                    let mut stop = stopped.clone();
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(self.retry.max);
                }
            }
        };
        let store = self.store.clone();
        self.supervise_runs(id, shared.clone(), stopped, Some(group))
            .await;
        store.leave_query_group(&local_group);
        for changelog in layout.iter().flat_map(TaskLayout::changelogs) {
            store.unfollow_task_changelog(changelog);
        }
        // Stopped or paused, it runs no partition here.
        *shared.assigned.lock() = Some(std::collections::BTreeSet::new());
        shared.finished.store(true, Ordering::SeqCst);
        shared.progress.notify_waiters();
    }

    /// Runs the task until it is stopped, starting it again after each failure and, for a
    /// split query, after each change of its partitions.
    async fn supervise_runs(
        &self,
        id: String,
        shared: Arc<QueryShared>,
        stopped: watch::Receiver<bool>,
        group: Option<eddy_storage::QueryGroup>,
    ) {
        let mut assignment = group.as_ref().map(eddy_storage::QueryGroup::assignment);
        let mut backoff = self.retry.initial;
        loop {
            let (parts, run_stop, revision) = match (&group, assignment.as_mut()) {
                (Some(group), Some(assignment)) => {
                    let Some(now) = await_partitions(group, assignment, &shared, &stopped).await
                    else {
                        return;
                    };
                    let parts = self.parts(&id, group, now.partitions);
                    let runs = parts.iter().flatten().flat_map(|s| s.partitions.clone());
                    *shared.assigned.lock() = Some(runs.collect());
                    let run_stop = stop_on_change(stopped.clone(), assignment.clone());
                    (parts, run_stop, now.revision)
                }
                _ => (vec![None], stopped.clone(), 0),
            };
            shared.finished.store(false, Ordering::SeqCst);
            // A task that failed mid-commit left its commits uncounted; the new one starts afresh.
            shared.uncounted_commits.store(0, Ordering::SeqCst);
            let run = self.run_parts(&id, &shared, parts, run_stop);
            tokio::pin!(run);
            let healthy_after = tokio::time::sleep(self.retry.initial);
            tokio::pin!(healthy_after);
            let mut recovered = false;
            // The run's own outcome decides the restart; `shared.error` is what SHOW QUERIES
            // reports, and others clear it.
            let failure = loop {
                tokio::select! {
                    failure = &mut run => break failure,
                    () = &mut healthy_after, if !recovered => {
                        recovered = true;
                        backoff = self.retry.initial;
                        if shared.error.lock().take().is_some() {
                            tracing::info!(query = %id, "query recovered");
                        }
                    }
                }
            };
            // Its commits have landed or failed and no task runs now: every partition given
            // up so far, including those whose revocation stopped it, may move on.
            if let (Some(group), Some(assignment)) = (&group, &assignment) {
                group.released(assignment.borrow().revision.max(revision));
            }
            // A split query's runs leave its being finished to this loop (see `run_query`).
            let finish = || {
                if group.is_some() {
                    shared.finished.store(true, Ordering::SeqCst);
                    shared.progress.notify_waiters();
                }
            };
            if *stopped.borrow() {
                finish();
                return;
            }
            let Some(cause) = failure else {
                if group.is_some() {
                    // The partitions changed: run again over the new ones.
                    continue;
                }
                return;
            };
            finish();
            tracing::warn!(
                query = %id,
                error = %cause,
                retry_in_ms = backoff.as_millis() as u64,
                "query failed; it will be started again from its committed offsets"
            );
            let mut stop = stopped.clone();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            if *stopped.borrow() {
                return;
            }
            backoff = (backoff * 2).min(self.retry.max);
        }
    }
}

impl QueryLaunch {
    /// The topics of a split query with state on the cluster, as query `id` names them;
    /// `None` for a stateless query, a query that does not split, and off a cluster.
    fn task_layout(&self, id: &str) -> Option<TaskLayout> {
        let (_, service) = self.store.service_member()?;
        if let Some(aggregation) = self.plan.split_aggregation() {
            // Grouped by its source's key, written in the same format, each group's records
            // are in the partition its result goes to: the tasks read the source itself.
            let by_key = aggregation.grouped_by_source_key()
                && aggregation.source.key_format.format == self.sink.key_format.format;
            let source = aggregation.source.topic.clone();
            let aggregated = state::task_changelog_topic(service, id);
            return Some(if by_key {
                TaskLayout {
                    routes: Vec::new(),
                    keyed: vec![source],
                    changelog: aggregated,
                    regroup: None,
                    foreign: None,
                }
            } else if aggregation.over_table() {
                // A table's changes need its last row per key, which tasks over its
                // partitions keep, sending each change on to its group's task.
                TaskLayout {
                    routes: Vec::new(),
                    keyed: vec![source],
                    changelog: state::table_changelog_topic(service, id),
                    regroup: Some(Regroup {
                        topic: state::repartition_topic(service, id),
                        changelog: aggregated,
                    }),
                    foreign: None,
                }
            } else {
                TaskLayout {
                    routes: vec![(source, state::repartition_topic(service, id))],
                    keyed: Vec::new(),
                    changelog: aggregated,
                    regroup: None,
                    foreign: None,
                }
            });
        }
        if let Some(layout) = self.foreign_key_layout(id, service) {
            return Some(layout);
        }
        let join = self.plan.split_join()?;
        if !self.partitions_agree() {
            return None;
        }
        let (mut routes, mut keyed) = (Vec::new(), Vec::new());
        for (index, (source, routed)) in join
            .chain
            .sources
            .iter()
            .zip(join.chain.routed())
            .enumerate()
        {
            if routed {
                let topic = state::join_repartition_topic(service, id, index);
                routes.push((source.topic.clone(), topic));
            } else {
                keyed.push(source.topic.clone());
            }
        }
        // Joined rows aggregated by other columns go on to their group's task, as ksqlDB's
        // join feeds its GroupBy repartition.
        let regroup = join.regroups().then(|| Regroup {
            topic: state::repartition_topic(service, id),
            changelog: state::task_changelog_topic(service, id),
        });
        Some(TaskLayout {
            routes,
            keyed,
            changelog: state::join_changelog_topic(service, id),
            regroup,
            foreign: None,
        })
    }

    /// The topics of a split foreign-key join: tasks over the left table's partitions, with
    /// their state in the join's changelog, and tasks over the right table's.
    fn foreign_key_layout(&self, id: &str, service: &str) -> Option<TaskLayout> {
        let join = self.plan.split_foreign_key()?;
        let [left, right] = join.chain.sources.as_slice() else {
            return None;
        };
        let [subscriptions, responses] = state::foreign_key_topics(service, id);
        Some(TaskLayout {
            routes: Vec::new(),
            keyed: vec![left.topic.clone()],
            changelog: state::join_changelog_topic(service, id),
            regroup: None,
            foreign: Some(Foreign {
                left: left.topic.clone(),
                right: right.topic.clone(),
                subscriptions,
                responses,
                changelog: state::foreign_key_changelog_topic(service, id),
            }),
        })
    }

    /// The runs of a split query over `partitions`, those the group gave this node: the whole
    /// query over them; for a query with state, a router over those of each source it routes
    /// and one task per partition number it is given, over that partition of every topic the
    /// tasks read.
    fn parts(
        &self,
        id: &str,
        group: &eddy_storage::QueryGroup,
        partitions: BTreeSet<(String, u32)>,
    ) -> Vec<Option<Split>> {
        let Some(layout) = self.task_layout(id) else {
            return vec![Some(Split {
                group: group.clone(),
                partitions,
                part: SplitPart::Whole,
            })];
        };
        let task_topic = layout.task_topic();
        let mut routed: Vec<(String, BTreeSet<(String, u32)>)> = layout
            .routes
            .iter()
            .map(|(_, to)| (to.clone(), BTreeSet::new()))
            .collect();
        let mut parts = Vec::new();
        for (topic, partition) in partitions {
            if let Some(foreign) = &layout.foreign {
                parts.extend(
                    foreign
                        .part(id, &layout.changelog, (topic, partition))
                        .map(|part| {
                            Some(Split {
                                group: group.clone(),
                                partitions: part.0,
                                part: part.1,
                            })
                        }),
                );
            } else if let Some(index) = layout.routes.iter().position(|(from, _)| *from == topic) {
                routed[index].1.insert((topic, partition));
            } else if topic == task_topic {
                let read = layout.task_topics().map(|t| (t.to_string(), partition));
                parts.push(Some(Split {
                    group: group.clone(),
                    partitions: read.collect(),
                    part: SplitPart::Task {
                        routes: layout.routes.clone(),
                        partition,
                        namespace: state::task_namespace(id, partition),
                        changelog: layout.changelog.clone(),
                        stage: match &layout.regroup {
                            Some(regroup) => TaskStage::Regroup {
                                topic: regroup.topic.clone(),
                            },
                            None => TaskStage::Whole,
                        },
                    },
                }));
            } else if let Some(regroup) = layout.regroup.as_ref().filter(|r| r.topic == topic) {
                parts.push(Some(Split {
                    group: group.clone(),
                    partitions: BTreeSet::from([(topic.clone(), partition)]),
                    part: SplitPart::Task {
                        routes: vec![(String::new(), topic.clone())],
                        partition,
                        namespace: state::aggregate_task_namespace(id, partition),
                        changelog: regroup.changelog.clone(),
                        stage: TaskStage::Aggregate { topic },
                    },
                }));
            }
        }
        let routers = routed
            .into_iter()
            .filter(|(_, partitions)| !partitions.is_empty())
            .map(|(topic, partitions)| {
                Some(Split {
                    group: group.clone(),
                    partitions,
                    part: SplitPart::Route { topic },
                })
            });
        routers.chain(parts).collect()
    }

    /// Runs the parts together until `stop`; one failing stops the others, so the query
    /// starts again as a whole. Returns the first failure.
    async fn run_parts(
        &self,
        id: &str,
        shared: &Arc<QueryShared>,
        parts: Vec<Option<Split>>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<String> {
        let run = |split: Option<Split>, stop: watch::Receiver<bool>| {
            crate::query::task::run_query(
                self.store.clone(),
                id.to_string(),
                (self.plan.clone(), self.buffering, split),
                (
                    self.sink.clone(),
                    self.schemas.clone(),
                    self.dead_letter_topic.clone(),
                ),
                shared.clone(),
                stop,
            )
        };
        if parts.len() == 1 {
            return run(parts.into_iter().next().flatten(), stop).await;
        }
        let (abort, aborted) = watch::channel(*stop.borrow());
        let mut runs: FuturesUnordered<_> = parts
            .into_iter()
            .map(|split| run(split, aborted.clone()))
            .collect();
        let mut failure = None;
        loop {
            tokio::select! {
                done = runs.next() => match done {
                    None => return failure,
                    Some(Some(cause)) => {
                        failure.get_or_insert(cause);
                        let _ = abort.send(true);
                    }
                    Some(None) => {}
                },
                _ = stop.wait_for(|s| *s), if !*abort.borrow() => {
                    let _ = abort.send(true);
                }
            }
        }
    }
}

/// Where a split query's tasks meet on the cluster.
struct TaskLayout {
    /// The sources a router sends to the partition of their group or join key, each with the
    /// repartition topic it writes and the tasks read.
    routes: Vec<(String, String)>,
    /// The sources the tasks read as they are, partition `p` by task `p`.
    keyed: Vec<String>,
    /// The topic backing its tasks' state.
    changelog: String,
    /// Where a join's rows go on to be aggregated by other columns than the join key.
    regroup: Option<Regroup>,
    /// A foreign-key join's right tasks and the topics its two kinds of task talk through.
    foreign: Option<Foreign>,
}

/// A split foreign-key join's tables and topics (see `join::foreign_key_split`).
struct Foreign {
    left: String,
    right: String,
    /// Where left tasks subscribe, partitioned as the right table.
    subscriptions: String,
    /// Where right tasks answer, partitioned as the left table.
    responses: String,
    /// The changelog backing the right tasks' state.
    changelog: String,
}

impl Foreign {
    /// The task this node runs for `partition` of `topic`, which the query's group gave it
    /// (with its partitions): a left task over a partition of the left table and of the
    /// responses, whose state `changelog` backs, or a right task over a partition of the right
    /// table and of the subscriptions.
    fn part(
        &self,
        id: &str,
        changelog: &str,
        (topic, partition): (String, u32),
    ) -> Option<(BTreeSet<(String, u32)>, SplitPart)> {
        if topic == self.left {
            let read = BTreeSet::from([(topic, partition), (self.responses.clone(), partition)]);
            return Some((
                read,
                SplitPart::Task {
                    routes: vec![(self.right.clone(), self.responses.clone())],
                    partition,
                    namespace: state::task_namespace(id, partition),
                    changelog: changelog.to_string(),
                    stage: TaskStage::ForeignLeft {
                        subscriptions: self.subscriptions.clone(),
                    },
                },
            ));
        }
        if topic == self.right {
            let subscribed = (self.subscriptions.clone(), partition);
            let read = BTreeSet::from([(topic, partition), subscribed]);
            return Some((
                read,
                SplitPart::Task {
                    routes: vec![(self.left.clone(), self.subscriptions.clone())],
                    partition,
                    namespace: state::right_task_namespace(id, partition),
                    changelog: self.changelog.clone(),
                    stage: TaskStage::ForeignRight {
                        responses: self.responses.clone(),
                    },
                },
            ));
        }
        None
    }
}

/// The second stage of a split join aggregated by other columns: the repartition topic the
/// join's tasks send each joined row to, by group, and the changelog backing the state of
/// the aggregation's tasks, one per partition of that topic.
struct Regroup {
    topic: String,
    changelog: String,
}

impl TaskLayout {
    /// The topic whose partitions the query's group hands out as tasks: the first source read
    /// as it is, else the first repartition topic.
    fn task_topic(&self) -> &str {
        self.keyed
            .first()
            .or(self.routes.first().map(|(_, to)| to))
            .map_or("", String::as_str)
    }

    /// Every topic a task reads its partition of.
    fn task_topics(&self) -> impl Iterator<Item = &str> {
        let keyed = self.keyed.iter().map(String::as_str);
        keyed.chain(self.routes.iter().map(|(_, to)| to.as_str()))
    }

    /// The topics the query's group hands out: the sources routed, then the tasks' topic,
    /// then the topic of a join's rows regrouped.
    fn group_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.routes.iter().map(|(from, _)| from.clone()).collect();
        topics.push(self.task_topic().to_string());
        topics.extend(self.regroup.iter().map(|r| r.topic.clone()));
        topics.extend(self.foreign.iter().map(|f| f.right.clone()));
        topics
    }

    /// The changelogs backing its tasks' state.
    fn changelogs(&self) -> impl Iterator<Item = &str> {
        let regrouped = self.regroup.iter().map(|r| r.changelog.as_str());
        let right = self.foreign.iter().map(|f| f.changelog.as_str());
        std::iter::once(self.changelog.as_str())
            .chain(regrouped)
            .chain(right)
    }

    /// The topics only the query's tasks write: repartition topics, and a foreign-key join's
    /// subscriptions and responses.
    fn exchanged_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.routes.iter().map(|(_, to)| to.clone()).collect();
        topics.extend(self.regroup.iter().map(|r| r.topic.clone()));
        if let Some(foreign) = &self.foreign {
            topics.extend([foreign.subscriptions.clone(), foreign.responses.clone()]);
        }
        topics
    }

    /// The topics that exist only for the query: those its tasks exchange records through,
    /// and its changelogs.
    fn internal_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.changelogs().map(str::to_string).collect();
        topics.extend(self.exchanged_topics());
        topics
    }

    /// How many tasks of each kind there are: as many as the first source read as it is has
    /// partitions, else (every source routed) as the most any routed source has, as Kafka
    /// Streams sizes repartition topics joined together.
    fn partitions(&self, store: &eddy_storage::Store) -> eddy_storage::Result<u32> {
        match self.keyed.first() {
            Some(first) => store.partition_count(first),
            None => {
                let mut most = 0;
                for (from, _) in &self.routes {
                    most = most.max(store.partition_count(from)?);
                }
                Ok(most)
            }
        }
    }

    /// The state namespaces of every task of query `id`, run here or followed.
    fn namespaces(
        &self,
        id: &str,
        store: &eddy_storage::Store,
    ) -> eddy_storage::Result<Vec<String>> {
        let regrouped = self.regroup.is_some();
        let mut namespaces: Vec<String> = (0..self.partitions(store)?)
            .flat_map(|p| {
                let aggregate = regrouped.then(|| state::aggregate_task_namespace(id, p));
                std::iter::once(state::task_namespace(id, p)).chain(aggregate)
            })
            .collect();
        if let Some(foreign) = &self.foreign {
            let right = store.partition_count(&foreign.right)?;
            namespaces.extend((0..right).map(|p| state::right_task_namespace(id, p)));
        }
        Ok(namespaces)
    }

    /// Creates the topics the tasks exchange records through and the changelogs, as many
    /// partitions as the tasks that read them, unless they exist, and follows the changelogs.
    fn ensure(&self, store: &eddy_storage::Store) -> eddy_storage::Result<()> {
        let partitions = self.partitions(store)?;
        if partitions == 0 {
            return Ok(());
        }
        let repartitions = self.routes.iter().map(|(_, to)| to);
        for topic in repartitions.chain(self.regroup.iter().map(|r| &r.topic)) {
            store.ensure_topic_with_partitions(topic, partitions)?;
        }
        store.follow_task_changelog(&self.changelog, partitions)?;
        if let Some(regroup) = &self.regroup {
            store.follow_task_changelog(&regroup.changelog, partitions)?;
        }
        if let Some(foreign) = &self.foreign {
            // The right table's tasks read the subscriptions; the left table's, the responses.
            let right = store.partition_count(&foreign.right)?;
            store.ensure_topic_with_partitions(&foreign.subscriptions, right)?;
            store.ensure_topic_with_partitions(&foreign.responses, partitions)?;
            store.follow_task_changelog(&foreign.changelog, right)?;
        }
        Ok(())
    }
}

/// Waits until the group gives this node partitions of the query, releasing each revision
/// that leaves it none; `None` once the query is stopped.
async fn await_partitions(
    group: &eddy_storage::QueryGroup,
    assignment: &mut watch::Receiver<eddy_storage::Assignment>,
    shared: &QueryShared,
    stopped: &watch::Receiver<bool>,
) -> Option<eddy_storage::Assignment> {
    let mut stop = stopped.clone();
    loop {
        if *stop.borrow() {
            return None;
        }
        let now = assignment.borrow_and_update().clone();
        if !now.partitions.is_empty() {
            return Some(now);
        }
        group.released(now.revision);
        *shared.assigned.lock() = Some(std::collections::BTreeSet::new());
        if now.settled {
            // Nothing to run here, so nothing to wait for; before the group's first answer,
            // the partitions may yet come here.
            shared.finished.store(true, Ordering::SeqCst);
            shared.progress.notify_waiters();
        }
        tokio::select! {
            changed = assignment.changed() => if changed.is_err() { return None },
            _ = stop.changed() => {}
        }
    }
}

/// A stop for one run of a split query's task: when the query stops, or its partitions change.
fn stop_on_change(
    mut stopped: watch::Receiver<bool>,
    mut assignment: watch::Receiver<eddy_storage::Assignment>,
) -> watch::Receiver<bool> {
    let (stop, run_stop) = watch::channel(*stopped.borrow());
    tokio::spawn(async move {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => {}
            _ = assignment.changed() => {}
            () = stop.closed() => return,
        }
        let _ = stop.send(true);
    });
    run_stop
}

impl PersistentQuery {
    /// Starts the query's task, unless `held` (a standby node's queries wait to take over).
    pub fn start(
        id: String,
        sql: String,
        launch: QueryLaunch,
        (kind, execution_plan): (QueryKind, String),
        (shared, held): (Arc<QueryShared>, bool),
    ) -> Self {
        let sources = launch
            .plan
            .sources()
            .iter()
            .map(|s| (s.name.clone(), s.topic.clone()))
            .collect();
        let (sink, sink_topic) = (launch.sink.name.clone(), launch.sink.topic.clone());
        let fields = launch.sink.columns.clone();
        let held = held && !launch.split();
        let (stop, task) = if held {
            // Nothing runs, so nothing is waited for.
            shared.finished.store(true, Ordering::SeqCst);
            (watch::channel(true).0, None)
        } else {
            let (stop, task) = launch.spawn(&id, &shared);
            (stop, Some(task))
        };
        PersistentQuery {
            id,
            sql,
            sources,
            sink,
            sink_topic,
            kind,
            fields,
            execution_plan,
            shared,
            launch,
            stop,
            task,
            paused: false,
            held,
        }
    }

    /// Stops the task, keeping its offsets and state, until [`Self::resume`]; its input piles
    /// up as lag meanwhile.
    pub async fn pause(&mut self) {
        self.paused = true;
        self.halt().await;
    }

    async fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(query = %self.id, error = %e, "query task ended abnormally");
        }
    }

    /// Restarts a paused task from its committed offsets.
    pub fn resume(&mut self) {
        self.paused = false;
        self.run_unless_stopped();
    }

    /// Holds the task while this node stands by, or lets it run again (unless paused) when
    /// the node becomes active: from the positions the changelog brought.
    pub async fn hold(&mut self, held: bool) {
        // A split query runs on every node, over the partitions its group gives each.
        let held = held && !self.launch.split();
        self.held = held;
        if held {
            self.halt().await;
            self.shared.finished.store(true, Ordering::SeqCst);
        } else {
            self.run_unless_stopped();
        }
    }

    fn run_unless_stopped(&mut self) {
        if self.task.is_none() && !self.paused && !self.held {
            let (stop, task) = self.launch.spawn(&self.id, &self.shared);
            self.stop = stop;
            self.task = Some(task);
        }
    }

    /// Whether the query is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// `RUNNING`, `PAUSED`, `STANDBY` on a node standing by, or `ERROR` when the task failed.
    pub fn state(&self) -> &'static str {
        if self.held && !self.paused {
            "STANDBY"
        } else if self.is_paused() {
            "PAUSED"
        } else if self.shared.error.lock().is_some() {
            "ERROR"
        } else {
            "RUNNING"
        }
    }

    /// Every topic the query reads: its sources', and a split query's repartition topics.
    pub fn input_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.sources.iter().map(|(_, t)| t.clone()).collect();
        if let Some(layout) = self.launch.task_layout(&self.id) {
            topics.extend(layout.exchanged_topics());
        }
        topics
    }

    /// The topics on the cluster that exist only for this query: a split query's
    /// repartition topics and task changelog.
    pub fn internal_topics(&self) -> Vec<String> {
        self.launch
            .task_layout(&self.id)
            .map(|layout| layout.internal_topics())
            .unwrap_or_default()
    }

    /// The state namespaces of a split query's tasks, which every node of its service
    /// keeps (running the task, or following its changelog); none for any other query.
    pub fn task_namespaces(&self) -> Vec<String> {
        let Some(layout) = self.launch.task_layout(&self.id) else {
            return Vec::new();
        };
        // The tasks are counted from the sources, which outlive the query's own topics.
        match layout.namespaces(&self.id, &self.launch.store) {
            Ok(namespaces) => namespaces,
            Err(error) => {
                tracing::warn!(query = %self.id, %error, "counting the query's tasks failed");
                Vec::new()
            }
        }
    }

    /// Stops the task and waits for it to end; its last commit is either in or out whole.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(query = %self.id, error = %e, "query task ended abnormally");
        }
    }

    /// What `SHOW QUERIES` and `DESCRIBE` show of it, with its positions in `store`. A
    /// store that fails to read offsets leaves them out rather than failing the listing.
    pub fn summary(&self, store: &eddy_storage::Store) -> crate::query::QuerySummary {
        let topics = self.input_topics();
        let mut offsets = stats::GroupOffsets::read(store, &consumer_group(&self.id), &topics)
            .map_err(|e| tracing::warn!(query = %self.id, error = %e, "reading the query's offsets failed"))
            .ok();
        // A split query's partition taken from another node is where it started until its
        // first commit here.
        if let Some(offsets) = &mut offsets {
            let started = self.shared.started.lock();
            for topic in &mut offsets.topics {
                for p in &mut topic.partitions {
                    if let Some(at) = started.get(&(topic.topic.clone(), p.partition)) {
                        p.consumer = p.consumer.max(*at);
                    }
                }
            }
        }
        let last = self.shared.last_message_ms.load(Ordering::Relaxed);
        let now_secs = (eddy_storage::now_ms() / 1000) as u64;
        let assigned = self.shared.assigned.lock().clone();
        crate::query::QuerySummary {
            id: self.id.clone(),
            sql: self.sql.clone(),
            sink: self.sink.clone(),
            sink_topic: self.sink_topic.clone(),
            query_type: "PERSISTENT",
            state: self.state().to_string(),
            processed: self.shared.processed.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            emitted: self.shared.emitted.load(Ordering::Relaxed),
            messages_per_sec: self.shared.throughput.lock().per_second(now_secs),
            last_message_ms: (last > 0).then_some(last),
            offsets,
            assigned: assigned.as_ref().map(|a| a.iter().cloned().collect()),
            standby: self.standby_partitions(store, assigned.as_ref()),
        }
    }

    /// The partitions of the query's tasks this node follows without running them, while it
    /// runs the query: every task partition but those `assigned` here.
    fn standby_partitions(
        &self,
        store: &eddy_storage::Store,
        assigned: Option<&BTreeSet<(String, u32)>>,
    ) -> Vec<(String, u32)> {
        let (Some(assigned), Some(layout)) = (assigned, self.launch.task_layout(&self.id)) else {
            return Vec::new();
        };
        if self.state() != "RUNNING" {
            return Vec::new();
        }
        let regrouped = layout.regroup.iter().map(|r| r.topic.as_str());
        let right = layout.foreign.iter().map(|f| f.right.as_str());
        std::iter::once(layout.task_topic())
            .chain(regrouped)
            .chain(right)
            .flat_map(|topic| {
                let partitions = store.partition_count(topic).unwrap_or(0);
                (0..partitions).map(move |p| (topic.to_string(), p))
            })
            .filter(|task| !assigned.contains(task))
            .collect()
    }

    /// What `EXPLAIN` shows of it.
    pub fn description(&self) -> crate::query::QueryDescription {
        crate::query::QueryDescription {
            id: self.id.clone(),
            sql: self.sql.clone(),
            sources: self.sources.iter().map(|(name, _)| name.clone()).collect(),
            sinks: vec![self.sink.clone()],
            sink_topics: vec![self.sink_topic.clone()],
            fields: self.fields.clone(),
            execution_plan: self.execution_plan.clone(),
            state: self.state().to_string(),
            error: self.shared.error.lock().clone(),
        }
    }

    /// Whether the task has ended.
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }
}
