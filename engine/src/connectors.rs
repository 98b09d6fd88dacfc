//! Connectors run inside Eddy (ksqlDB's `CREATE SOURCE|SINK CONNECTOR`): each is a task the
//! engine starts when the statement runs or is replayed from the command log, and stops on
//! `DROP CONNECTOR` or shutdown. A connector that fails is started again after a backoff, as
//! Kafka Connect restarts a failed task when asked; its last error stays in its status until
//! it runs again. Where it is (its position in the database's log) is in the store, written
//! with the records, so a restart of Eddy resumes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eddy_connect::postgres::{
    PostgresSink, PostgresSinkConfig, PostgresSource, PostgresSourceConfig, SourceProgress,
};
use eddy_storage::Store;
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::{EngineError, Result};

/// The connector classes Eddy runs, by the class name Kafka Connect knows them under.
pub const POSTGRES_SOURCE_CLASS: &str = "io.debezium.connector.postgresql.PostgresConnector";
/// The JDBC sink's class (Confluent's; Debezium's `io.debezium.connector.jdbc.JdbcSinkConnector`
/// is taken too), run by Eddy for PostgreSQL URLs.
pub const JDBC_SINK_CLASS: &str = "io.confluent.connect.jdbc.JdbcSinkConnector";

/// The first wait before a failed connector is started again; it doubles up to a minute.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// Whether a connector reads into Eddy or writes out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    /// Reads an external system into topics.
    Source,
    /// Writes topics to an external system.
    Sink,
}

impl ConnectorKind {
    /// `SOURCE` or `SINK`, as ksqlDB lists it.
    pub fn name(self) -> &'static str {
        match self {
            ConnectorKind::Source => "SOURCE",
            ConnectorKind::Sink => "SINK",
        }
    }
}

/// What a connector is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorState {
    /// Running.
    Running,
    /// Failed with this error; started again after a backoff.
    Failed(String),
    /// Paused by `PAUSE CONNECTOR`; its position is kept for `RESUME CONNECTOR`.
    Paused,
    /// Stopped, or not started yet.
    Stopped,
}

impl ConnectorState {
    /// Kafka Connect's word for the state.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectorState::Running => "RUNNING",
            ConnectorState::Failed(_) => "FAILED",
            ConnectorState::Paused => "PAUSED",
            ConnectorState::Stopped => "UNASSIGNED",
        }
    }
}

/// A connector as `SHOW CONNECTORS` and `DESCRIBE CONNECTOR` report it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSummary {
    /// Its name.
    pub name: String,
    /// Source or sink.
    pub kind: ConnectorKind,
    /// Its `connector.class`.
    pub class: String,
    /// Its configuration as written, passwords masked.
    pub config: BTreeMap<String, String>,
    /// What it is doing.
    pub state: ConnectorState,
    /// The topics it writes (a source) or reads (a sink) so far.
    pub topics: Vec<String>,
    /// A sink's lag: the records in its topics it has not written yet.
    pub lag: Option<u64>,
    /// A running source's lag: the WAL bytes between the server's end and what it has written.
    pub wal_lag_bytes: Option<u64>,
}

/// A configured connector and its task, while it runs.
pub(crate) struct Connector {
    name: String,
    kind: ConnectorKind,
    class: String,
    config: BTreeMap<String, String>,
    topics: Topics,
    state: Arc<Mutex<ConnectorState>>,
    paused: bool,
    task: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    /// A running source's progress.
    progress: Option<Arc<SourceProgress>>,
}

/// A connector's configuration checked before it is logged: what to start.
pub(crate) enum ConnectorPlan {
    /// PostgreSQL change data capture.
    PostgresSource(PostgresSourceConfig),
    /// Topics into PostgreSQL tables.
    PostgresSink(PostgresSinkConfig),
}

/// Checks a connector's configuration: its class must be one Eddy runs, and its keys must
/// make sense for it.
pub(crate) fn plan(
    kind: ConnectorKind,
    config: &BTreeMap<String, String>,
) -> Result<ConnectorPlan> {
    let class = config_value(config, "connector.class").ok_or_else(|| {
        EngineError::statement("A connector needs 'connector.class' in its WITH clause.")
    })?;
    let simple = class.rsplit('.').next().unwrap_or(class);
    match (kind, simple) {
        (ConnectorKind::Source, "PostgresConnector") => {
            PostgresSourceConfig::from_properties(config)
                .map(ConnectorPlan::PostgresSource)
                .map_err(|e| {
                    EngineError::statement(format!("Invalid connector configuration: {e}"))
                })
        }
        (ConnectorKind::Source, _) => Err(EngineError::statement(format!(
            "Eddy runs no source connector of class '{class}'; it runs {POSTGRES_SOURCE_CLASS}."
        ))),
        (ConnectorKind::Sink, "JdbcSinkConnector") => PostgresSinkConfig::from_properties(config)
            .map(ConnectorPlan::PostgresSink)
            .map_err(|e| EngineError::statement(format!("Invalid connector configuration: {e}"))),
        (ConnectorKind::Sink, _) => Err(EngineError::statement(format!(
            "Eddy runs no sink connector of class '{class}'; it runs {JDBC_SINK_CLASS} into PostgreSQL."
        ))),
    }
}

/// A connector's configuration as it is shown: passwords (any key naming one) masked, as
/// `SHOW`/`DESCRIBE` answers and REST responses travel and are logged where the password
/// should not.
pub(crate) fn shown_config(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let secret = k.to_ascii_lowercase().contains("password");
            (
                k.clone(),
                if secret {
                    "********".to_string()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

/// A configuration value by key, compared without case.
fn config_value<'a>(config: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    config
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

impl Connector {
    /// Connector `name`, configured and not started.
    pub(crate) fn new(
        name: &str,
        kind: ConnectorKind,
        config: BTreeMap<String, String>,
        plan: &ConnectorPlan,
    ) -> Connector {
        let class = config_value(&config, "connector.class")
            .unwrap_or_default()
            .to_string();
        let topics = match plan {
            ConnectorPlan::PostgresSource(source) => {
                Topics::Prefixed(format!("{}.", source.topic_prefix))
            }
            ConnectorPlan::PostgresSink(sink) => Topics::Named(sink.topics.clone()),
        };
        Connector {
            name: name.to_string(),
            kind,
            class,
            config,
            topics,
            state: Arc::new(Mutex::new(ConnectorState::Stopped)),
            paused: false,
            task: None,
            progress: None,
        }
    }

    /// Starts its task on `store`, unless it runs already or is paused, or this node stands by
    /// for its service's active node, which alone runs connectors (their writes would be
    /// refused here; see [`Connector::stand_by`]).
    pub(crate) fn start(&mut self, store: &Store) {
        if self.paused || self.task.is_some() || store.is_standby() {
            return;
        }
        // The configuration was checked when the connector was made; checked again here, as
        // what runs is built from it.
        let runner = match plan(self.kind, &self.config) {
            Ok(ConnectorPlan::PostgresSource(config)) => {
                let source = PostgresSource::new(&self.name, config, store.clone());
                self.progress = Some(source.progress());
                Runner::Source(source)
            }
            Ok(ConnectorPlan::PostgresSink(config)) => {
                Runner::Sink(PostgresSink::new(&self.name, config, store.clone()))
            }
            Err(e) => {
                *self.state.lock() = ConnectorState::Failed(e.to_string());
                return;
            }
        };
        let (stop, stopped) = watch::channel(false);
        *self.state.lock() = ConnectorState::Running;
        let task = tokio::spawn(supervise(
            self.name.clone(),
            runner,
            self.state.clone(),
            stopped,
        ));
        self.task = Some((stop, task));
    }

    /// Stops its task until [`Connector::resume`]; where it is stays in the store.
    pub(crate) async fn pause(&mut self) {
        self.paused = true;
        self.stop_task().await;
        *self.state.lock() = ConnectorState::Paused;
    }

    /// Stops its task while this node stands by, keeping where it is in the store for the
    /// active node; it shows as unassigned here, as a Connect worker without the task.
    pub(crate) async fn stand_by(&mut self) {
        if self.task.is_some() {
            self.stop_task().await;
            *self.state.lock() = ConnectorState::Stopped;
        }
    }

    /// Lets it run again, and starts it on `store` when `start` (not while the command log
    /// is replayed: connectors start once it is).
    pub(crate) fn resume(&mut self, store: &Store, start: bool) {
        self.paused = false;
        *self.state.lock() = ConnectorState::Stopped;
        if start {
            self.start(store);
        }
    }

    /// What `SHOW CONNECTORS` and `DESCRIBE CONNECTOR` show of it.
    pub(crate) fn summary(&self, store: &Store) -> ConnectorSummary {
        let topics = match &self.topics {
            Topics::Prefixed(prefix) => store
                .list_topics()
                .into_iter()
                .filter(|t| t.starts_with(prefix.as_str()))
                .collect(),
            Topics::Named(topics) => topics.clone(),
        };
        let lag = match self.kind {
            ConnectorKind::Sink => Some(sink_lag(
                store,
                &PostgresSink::group_of(&self.name),
                &topics,
            )),
            ConnectorKind::Source => None,
        };
        ConnectorSummary {
            name: self.name.clone(),
            kind: self.kind,
            class: self.class.clone(),
            config: shown_config(&self.config),
            state: self.state.lock().clone(),
            topics,
            lag,
            wal_lag_bytes: self
                .progress
                .as_ref()
                .filter(|_| self.task.is_some())
                .and_then(|p| p.lag_bytes()),
        }
    }

    async fn stop_task(&mut self) {
        if let Some((stop, task)) = self.task.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Stops its task and waits for it.
    pub(crate) async fn stop(mut self) {
        self.stop_task().await;
    }
}

/// The records in `topics` that the sink reading them as `group` has not written: from its
/// committed offset (or the log's start) to each partition's end.
fn sink_lag(store: &Store, group: &str, topics: &[String]) -> u64 {
    let mut lag = 0;
    for topic in topics {
        let Ok(partitions) = store.partition_count(topic) else {
            continue;
        };
        for partition in 0..partitions {
            let end = store.last_stable_offset(topic, partition).unwrap_or(0);
            let start = store.log_start_offset(topic, partition).unwrap_or(0);
            let done = match store.fetch_offset(group, topic, partition) {
                Ok(Some(committed)) => committed.offset.max(start),
                _ => start,
            };
            lag += u64::try_from(end - done).unwrap_or(0);
        }
    }
    lag
}

/// The topics a connector writes (a source: those under its prefix) or reads (a sink).
enum Topics {
    Prefixed(String),
    Named(Vec<String>),
}

/// What a connector's task runs.
enum Runner {
    Source(PostgresSource),
    Sink(PostgresSink),
}

impl Runner {
    async fn run(&self, stopped: watch::Receiver<bool>) -> eddy_connect::Result<()> {
        match self {
            Runner::Source(source) => source.run(stopped).await,
            Runner::Sink(sink) => sink.run(stopped).await,
        }
    }
}

/// Runs a connector until stopped, starting it again after each failure.
async fn supervise(
    name: String,
    source: Runner,
    state: Arc<Mutex<ConnectorState>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut wait = FIRST_RETRY;
    loop {
        *state.lock() = ConnectorState::Running;
        let started = std::time::Instant::now();
        let failure = match source.run(stopped.clone()).await {
            Ok(()) if *stopped.borrow() => {
                *state.lock() = ConnectorState::Stopped;
                info!(connector = %name, "connector stopped");
                return;
            }
            Ok(()) => "the database ended the replication stream".to_string(),
            Err(e) => e.to_string(),
        };
        // A connector that ran a while before failing starts again soon.
        if started.elapsed() > LONGEST_RETRY {
            wait = FIRST_RETRY;
        }
        warn!(connector = %name, "connector failed, starting it again in {wait:?}: {failure}");
        *state.lock() = ConnectorState::Failed(failure);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => {
                *state.lock() = ConnectorState::Stopped;
                return;
            }
        }
        if *stopped.borrow() {
            return;
        }
        wait = (wait * 2).min(LONGEST_RETRY);
    }
}
