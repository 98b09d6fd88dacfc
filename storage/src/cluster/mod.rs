//! The log on a Kafka cluster: topics, records and offsets come from the user's cluster through
//! librdkafka, while operator state and query positions stay in the local RocksDB.
//!
//! [`crate::Store`] holds a [`Cluster`] when it is opened with [`ClusterOptions`] and sends every
//! log operation to it; the engine above does not learn which log it runs on. A commit's
//! records are produced (idempotently, acknowledged by every in-sync replica) before its
//! state changes and offsets are written locally, so a crash between the two repeats output
//! rather than losing it: at-least-once.

mod changelog;
mod client;
mod commit;
mod fetch;
mod nodes;
mod role;
mod task_state;
mod tasks;
mod topics;

use std::time::Duration;

pub(crate) use changelog::Changelogs;
pub(crate) use commit::{Committer, GroupPositions, PartitionAppend, ProducerRole};
pub(crate) use fetch::Fetcher;
pub(crate) use nodes::Directory;
pub use nodes::{ALIVE_FOR, ServiceNode};
pub(crate) use role::Membership;
pub use role::{NodeState, Role};
pub(crate) use task_state::TaskState;
pub use tasks::{Assignment, QueryGroup};
pub(crate) use topics::Topics;

use rdkafka::error::KafkaError;

use crate::error::{Result, StorageError};

/// ksqlDB's default `ksql.service.id`.
pub const DEFAULT_SERVICE_ID: &str = "default_";

/// How to reach the Kafka cluster the log runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The brokers to bootstrap from, `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// librdkafka properties every client of the cluster gets (`security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`, ...), applied after Eddy's own.
    pub properties: Vec<(String, String)>,
    /// The prefix of the clients' `client.id`s, which the brokers log.
    pub client_id: String,
    /// How long one request to the cluster may take before it fails.
    pub timeout: Duration,
    /// The service id (ksqlDB's `ksql.service.id`): nodes with the same one share a catalog
    /// (the command topic) and state changelogs on the cluster.
    pub service_id: String,
    /// Whether a commit's output, state and positions reach the cluster in one transaction.
    pub guarantee: Guarantee,
}

/// ksqlDB's `processing.guarantee` for a log on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// `exactly_once_v2`: each commit is one Kafka transaction, so a crash neither loses nor
    /// repeats output; the embedded log's commits are exactly-once too.
    #[default]
    ExactlyOnce,
    /// `at_least_once`: an idempotent producer without transactions; a crash may repeat the
    /// output of the commits that were in flight.
    AtLeastOnce,
}

impl std::str::FromStr for Guarantee {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "exactly_once_v2" | "exactly_once" => Ok(Guarantee::ExactlyOnce),
            "at_least_once" => Ok(Guarantee::AtLeastOnce),
            other => Err(format!(
                "processing.guarantee is exactly_once_v2 or at_least_once, not {other:?}"
            )),
        }
    }
}

impl ClusterOptions {
    /// Options for the brokers at `bootstrap_servers`, with no other property.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ClusterOptions {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
            client_id: "eddy".into(),
            timeout: Duration::from_secs(30),
            service_id: DEFAULT_SERVICE_ID.into(),
            guarantee: Guarantee::default(),
        }
    }
}

/// Topic `name` of service `service_id`: ksqlDB's internal topics begin with
/// `_confluent-ksql-<service id>`, so one prefixed ACL covers them.
pub(crate) fn service_topic(service_id: &str, name: &str) -> String {
    format!("_confluent-ksql-{service_id}_{name}")
}

/// The clients of one cluster: admin and metadata, readers, and the producer of commits.
pub(crate) struct Cluster {
    pub(crate) topics: Topics,
    pub(crate) fetcher: Fetcher,
    pub(crate) committer: Committer,
    /// This node's own producer, for the queries whose partitions the service's nodes split:
    /// every node commits those, under its own transactional id.
    pub(crate) node_committer: Committer,
    /// The query groups this node is a member of, by the query's local group.
    pub(crate) query_groups: parking_lot::Mutex<std::collections::HashMap<String, QueryGroup>>,
    pub(crate) changelogs: Changelogs,
    /// The split tasks' changelogs this node follows, and the tasks it runs.
    pub(crate) task_state: TaskState,
    /// The service's nodes as this one hears of them, and its own status.
    pub(crate) directory: Directory,
    /// This node's place in its service, known once the store is open.
    pub(crate) membership: std::sync::OnceLock<Membership>,
    pub(crate) options: ClusterOptions,
}

impl Cluster {
    /// Connects to the cluster, failing when its brokers do not answer within the timeout.
    pub(crate) fn connect(options: &ClusterOptions, node_id: &str) -> Result<Cluster> {
        // The brokers' logs tell the nodes apart by their clients' ids.
        let options = &ClusterOptions {
            client_id: format!("{}-{node_id}", options.client_id),
            ..options.clone()
        };
        let topics = Topics::connect(options)?;
        // A first metadata request proves the brokers answer before the server says it is up.
        topics.list()?;
        let directory = Directory::start(options, &topics, node_id)?;
        Ok(Cluster {
            directory,
            fetcher: Fetcher::new(options),
            // One transactional id per service for the active node's work: the active node's
            // producer fences its predecessor's, whichever node that was.
            committer: Committer::start(
                options,
                ProducerRole {
                    transactional_id: format!("_confluent-ksql-{}_eddy-active", options.service_id),
                    always: false,
                    thread: "eddy-kafka-commit",
                    // A new active node fences this id at once, so the timeout only bounds a
                    // transaction's length.
                    transaction_timeout: options.timeout,
                },
            )?,
            node_committer: Committer::start(
                options,
                ProducerRole {
                    transactional_id: format!(
                        "_confluent-ksql-{}_eddy-node-{node_id}",
                        options.service_id
                    ),
                    always: true,
                    thread: "eddy-kafka-node-commit",
                    // Only this node restarted fences this id: a node that died holds the
                    // partitions it ran this long, as Kafka Streams' exactly-once does.
                    transaction_timeout: Duration::from_secs(10)
                        .min(options.timeout.max(Duration::from_secs(1))),
                },
            )?,
            query_groups: parking_lot::Mutex::default(),
            changelogs: Changelogs::new(&options.service_id),
            task_state: TaskState::default(),
            membership: std::sync::OnceLock::new(),
            options: options.clone(),
            topics,
        })
    }
}

/// A client error as the store's, naming what was asked.
pub(crate) fn cluster_error(
    operation: impl Into<String>,
    error: rdkafka::error::KafkaError,
) -> StorageError {
    use rdkafka::types::RDKafkaErrorCode as Code;
    if let KafkaError::Transaction(e) = &error {
        return StorageError::Cluster {
            operation: operation.into(),
            reason: error.to_string(),
            retriable: !e.is_fatal(),
        };
    }
    let retriable = matches!(
        error.rdkafka_error_code(),
        Some(
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::QueueFull
                | Code::NotEnoughReplicas
                | Code::NotEnoughReplicasAfterAppend
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::NetworkException,
        )
    );
    StorageError::Cluster {
        operation: operation.into(),
        reason: error.to_string(),
        retriable,
    }
}
