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
    PostgresSink, PostgresSinkConfig, PostgresSource, PostgresSourceConfig,
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
    /// Stopped.
    Stopped,
}

impl ConnectorState {
    /// Kafka Connect's word for the state.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectorState::Running => "RUNNING",
            ConnectorState::Failed(_) => "FAILED",
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
}

/// A configured connector and its running task.
pub(crate) struct Connector {
    name: String,
    kind: ConnectorKind,
    class: String,
    config: BTreeMap<String, String>,
    topics: Topics,
    state: Arc<Mutex<ConnectorState>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
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
    /// Starts connector `name` on `store`.
    pub(crate) fn start(
        name: &str,
        kind: ConnectorKind,
        config: BTreeMap<String, String>,
        plan: ConnectorPlan,
        store: &Store,
    ) -> Connector {
        let class = config_value(&config, "connector.class")
            .unwrap_or_default()
            .to_string();
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(Mutex::new(ConnectorState::Running));
        let (topics, runner) = match plan {
            ConnectorPlan::PostgresSource(source_config) => {
                let prefix = format!("{}.", source_config.topic_prefix);
                let source = PostgresSource::new(name, source_config, store.clone());
                (Topics::Prefixed(prefix), Runner::Source(source))
            }
            ConnectorPlan::PostgresSink(sink_config) => {
                let topics = sink_config.topics.clone();
                let sink = PostgresSink::new(name, sink_config, store.clone());
                (Topics::Named(topics), Runner::Sink(sink))
            }
        };
        let task = tokio::spawn(supervise(name.to_string(), runner, state.clone(), stopped));
        Connector {
            name: name.to_string(),
            kind,
            class,
            config,
            topics,
            state,
            stop,
            task,
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
        ConnectorSummary {
            name: self.name.clone(),
            kind: self.kind,
            class: self.class.clone(),
            config: shown_config(&self.config),
            state: self.state.lock().clone(),
            topics,
        }
    }

    /// Stops its task and waits for it.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
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
