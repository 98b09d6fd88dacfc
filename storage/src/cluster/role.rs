//! Which node of a service runs its queries: the active node, chosen by Kafka's consumer-group
//! protocol, while the others stand by with their state kept warm.
//!
//! Every node joins the group `_confluent-ksql-<service id>_eddy-active`, subscribed to the
//! command topic's one partition; the member the group assigns it to is the active node. When
//! that node dies, the group gives the partition to another within a session timeout, as it
//! moves a partition between consumers. Becoming active starts the transactional producer
//! under the service's one transactional id, which fences the former active node (a zombie's
//! next commit fails) and aborts what it left open; then the new active node catches up with
//! the changelogs and its engine starts the queries from the positions they hold. A standby
//! applies the changelogs as they grow, so it takes over with its state in place, and answers
//! pull and push queries meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use tokio::sync::watch;
use tracing::{info, warn};

use super::client;
use super::{ClusterOptions, cluster_error};
use crate::error::{Result, StorageError};
use crate::store::{Store, StoreInner};

/// What a node does in its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It runs the service's persistent queries and takes its statements.
    Active,
    /// It keeps the state warm and answers queries, ready to take over.
    Standby,
}

/// A node's role, and how many command-topic records it has applied as a standby: the engine
/// watches both, to start or hold its queries and to apply statements other nodes ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// The role.
    pub role: Role,
    /// Command-topic records applied since the store opened.
    pub commands: u64,
}

/// How often a standby applies what the changelogs gained.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// A standby that heard nothing from the group this long after joining counts as decided.
const JOIN_AT_MOST: Duration = Duration::from_secs(10);

/// The consumer's context: librdkafka's logs, whether the group has answered yet, and whether
/// it gave this node the command topic's partition. Both change only with a rebalance's
/// outcome, never in the middle of one.
struct Member {
    topic: String,
    joined: AtomicBool,
    holds: AtomicBool,
}

client::logs_through_tracing!(Member);

impl ConsumerContext for Member {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                if assigned.find_partition(&self.topic, 0).is_some() {
                    self.holds.store(true, Ordering::Release);
                }
                self.joined.store(true, Ordering::Release);
            }
            Rebalance::Revoke(revoked) => {
                if revoked.find_partition(&self.topic, 0).is_some() {
                    self.holds.store(false, Ordering::Release);
                }
            }
            Rebalance::Error(_) => {}
        }
    }
}

/// This node's membership in its service's group.
pub(crate) struct Membership {
    state: watch::Sender<NodeState>,
    stop: Arc<AtomicBool>,
}

impl Membership {
    /// Joins the group and waits until this node knows its role: active (producer started,
    /// changelogs caught up) or standby (changelogs caught up).
    pub(crate) fn join(
        store: &Store,
        options: &ClusterOptions,
        command_topic: &str,
    ) -> Result<Membership> {
        let group = format!("_confluent-ksql-{}_eddy-active", options.service_id);
        let consumer: BaseConsumer<Member> = client::config(
            options,
            "member",
            &[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "latest"),
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1000"),
                // The active node keeps the partition while others come and go.
                ("partition.assignment.strategy", "cooperative-sticky"),
            ],
        )
        .create_with_context(Member {
            topic: command_topic.to_string(),
            joined: AtomicBool::new(false),
            holds: AtomicBool::new(false),
        })
        .map_err(|e| cluster_error("joining the service's group", e))?;
        consumer
            .subscribe(&[command_topic])
            .map_err(|e| cluster_error("joining the service's group", e))?;
        let (state, decided) = watch::channel(NodeState {
            role: Role::Standby,
            commands: 0,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut node = Node {
            consumer,
            store: Arc::downgrade(&store.inner),
            state: state.clone(),
            stop: stop.clone(),
            decided: false,
            followed: Instant::now(),
            tasks_followed: Instant::now(),
            joined_at: Instant::now(),
        };
        let (first, first_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("eddy-kafka-role".into())
            .spawn(move || node.run(first))
            .map_err(StorageError::Io)?;
        // Joining takes a session timeout at most; taking over or catching up takes as long as
        // the changelogs are, so the wait is generous.
        let wait = (options.timeout * 4).max(Duration::from_secs(120));
        match first_rx.recv_timeout(wait) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.store(true, Ordering::Release);
                return Err(e);
            }
            Err(_) => {
                stop.store(true, Ordering::Release);
                return Err(StorageError::Cluster {
                    operation: format!("joining the group {group}"),
                    reason: format!(
                        "this node had no role in its service after {} s: the group did not answer, or catching up with the changelogs took longer",
                        wait.as_secs()
                    ),
                    retriable: true,
                });
            }
        }
        drop(decided);
        Ok(Membership { state, stop })
    }

    /// The node's role and applied commands, as they change.
    pub(crate) fn watch(&self) -> watch::Receiver<NodeState> {
        self.state.subscribe()
    }

    /// The node's role now.
    pub(crate) fn role(&self) -> Role {
        self.state.borrow().role
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The membership thread's own part.
struct Node {
    consumer: BaseConsumer<Member>,
    store: Weak<StoreInner>,
    state: watch::Sender<NodeState>,
    stop: Arc<AtomicBool>,
    decided: bool,
    followed: Instant,
    tasks_followed: Instant,
    joined_at: Instant,
}

impl Node {
    fn run(&mut self, first: std::sync::mpsc::SyncSender<Result<()>>) {
        let mut first = Some(first);
        while !self.stop.load(Ordering::Acquire) {
            // Polling serves the group's rebalances; the partition itself is never read.
            let _ = self.consumer.poll(Duration::from_millis(100));
            if let Ok(assigned) = self.consumer.assignment()
                && assigned.count() > 0
            {
                let _ = self.consumer.pause(&assigned);
            }
            let Some(inner) = self.store.upgrade() else {
                return;
            };
            let store = Store { inner };
            let outcome = self.step(&store);
            drop(store);
            if let Some(first) = first.take_if(|_| self.decided || outcome.is_err()) {
                let _ = first.send(outcome);
            } else if let Err(error) = outcome {
                warn!(%error, "keeping this node's role in its service; trying again in a second");
                // librdkafka heartbeats on its own threads, so a pause costs the group nothing.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// One look at the group: take over, stand down, or follow the changelogs.
    fn step(&mut self, store: &Store) -> Result<()> {
        let Some(cluster) = store.inner.cluster.as_ref() else {
            return Ok(());
        };
        let member = self.consumer.context();
        let holds = member.holds.load(Ordering::Acquire);
        let joined =
            member.joined.load(Ordering::Acquire) || self.joined_at.elapsed() > JOIN_AT_MOST;
        let role = self.state.borrow().role;
        match (role, holds) {
            (Role::Standby, true) => {
                cluster.committer.activate()?;
                let applied = cluster.changelogs.restore(store, cluster)?;
                self.state.send_modify(|s| {
                    s.role = Role::Active;
                    s.commands += applied;
                });
                self.decided = true;
                info!("this node is the active node of its service: it runs the queries");
            }
            (Role::Active, false) => {
                cluster.committer.deactivate();
                self.state.send_modify(|s| s.role = Role::Standby);
                warn!("this node is no longer the active node of its service: its queries stop");
            }
            (Role::Standby, false) if joined && self.followed.elapsed() >= FOLLOW_EVERY => {
                self.followed = Instant::now();
                let applied = cluster.changelogs.restore(store, cluster)?;
                if applied > 0 {
                    self.state.send_modify(|s| s.commands += applied);
                }
                if !self.decided {
                    self.decided = true;
                    info!("this node stands by for its service's active node");
                }
            }
            _ => {}
        }
        // Split tasks run on every node, whatever its role: each follows the others' state.
        if self.tasks_followed.elapsed() >= FOLLOW_EVERY {
            self.tasks_followed = Instant::now();
            cluster.task_state.follow_all(store, cluster);
        }
        Ok(())
    }
}
