//! The engine: executes statements against the catalog and the log.
//!
//! Every statement that changes the catalog is appended to a command log in the state store, as
//! ksqlDB keeps its command topic. Opening the engine replays the log, so the catalog survives
//! restarts without a second storage format to keep in step with the SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use eddy_sql::ast::{Statement, StatementKind};
use eddy_sql::{parse_statements, split_statements, substitute_variables};
use eddy_storage::{Store, TopicConfig};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::command_log;
use crate::error::{EngineError, Result};
use crate::query::{PersistentQuery, consumer_group};
use crate::result::{QuerySummary, StatementResult};
use crate::session::Session;

/// How often a node on a cluster reads what the active node wrote to the registry's log.
const REGISTRY_FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

pub(crate) struct EngineState {
    pub(crate) catalog: Catalog,
    pub(crate) next_seq: u64,
    /// Sequence number of the command being replayed, which names the queries it starts.
    pub(crate) replaying_seq: Option<u64>,
    /// Running persistent queries by id.
    pub(crate) queries: BTreeMap<String, PersistentQuery>,
    /// Connectors by name.
    pub(crate) connectors: BTreeMap<String, crate::connectors::Connector>,
    /// The last message of each command that changed the catalog, by command id
    /// (``stream/`ORDERS`/create``), as `/status` reports them.
    pub(crate) command_statuses: BTreeMap<String, String>,
}

/// A failed request: the statements completed before the failure, and what failed.
#[derive(Debug)]
pub struct ExecuteError {
    /// Results of the statements that ran before the failing one.
    pub completed: Vec<StatementResult>,
    /// The text of the failing statement.
    pub statement: String,
    /// Why it failed.
    pub error: EngineError,
}

impl std::fmt::Display for ExecuteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for ExecuteError {}

/// Whether a statement is run for a client or replayed from the command log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Live,
    Replay,
}

/// Eddy's SQL engine over one store.
pub struct Engine {
    pub(crate) store: Store,
    state: Mutex<EngineState>,
    /// Evaluates expressions; holds DataFusion's function registry and configuration.
    pub(crate) datafusion: datafusion::prelude::SessionContext,
    /// Signalled whenever a persistent query commits or stops.
    pub(crate) progress: Arc<tokio::sync::Notify>,
    /// Running push and pull queries.
    pub(crate) transient: Arc<crate::query::transient::TransientRegistry>,
    /// What running queries record for `/metrics`.
    pub(crate) metrics: crate::metrics::EngineMetrics,
    /// Tables kept in the state store for pull queries.
    pub(crate) materializers: Arc<crate::query::materialized::Materializers>,
    /// Plans of key-lookup pull queries, reused across keys.
    pub(crate) pull_plans: crate::query::transient::PullPlans,
    /// Command-log entries replay skipped because they could not be read back.
    damaged_commands: Vec<command_log::DamagedEntry>,
    /// How queries run.
    pub(crate) options: EngineOptions,
    /// The schema registry, kept in the store, that the AVRO format reads and registers with.
    pub(crate) registry: Arc<eddy_registry::SchemaRegistry>,
    /// The same registry as the codecs take it.
    pub(crate) schemas: crate::codec::Schemas,
}

/// How the engine runs its queries.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How long a failed persistent query waits before it is started again.
    pub query_retry: crate::query::RetryBackoff,
    /// The most push queries clients may run at once (ksqlDB's `ksql.max.push.queries`).
    pub max_push_queries: usize,
    /// The most entries of stored state (aggregation groups, table rows) each persistent query
    /// keeps in memory; the rest is read through from the store.
    pub state_cache_entries: usize,
    /// The most bytes of rows a pull query may hold back to sort them (`ORDER BY`) or to keep
    /// a table's latest row per key.
    pub pull_query_max_bytes: usize,
}

/// ksqlDB's default `ksql.max.push.queries`.
pub const DEFAULT_MAX_PUSH_QUERIES: usize = 100;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            query_retry: crate::query::RetryBackoff::default(),
            max_push_queries: DEFAULT_MAX_PUSH_QUERIES,
            state_cache_entries: crate::query::task::DEFAULT_STATE_CACHE_ENTRIES,
            pull_query_max_bytes: crate::query::transient::DEFAULT_PULL_QUERY_MAX_BYTES,
        }
    }
}

impl Engine {
    /// Opens the engine on a store, replaying the command log to rebuild the catalog.
    pub async fn open(store: Store) -> Result<Engine> {
        Engine::open_with(store, EngineOptions::default()).await
    }

    /// [`Engine::open`] with options.
    pub async fn open_with(store: Store, options: EngineOptions) -> Result<Engine> {
        let mut state = EngineState {
            catalog: Catalog::default(),
            next_seq: 0,
            replaying_seq: None,
            queries: BTreeMap::new(),
            connectors: BTreeMap::new(),
            command_statuses: BTreeMap::new(),
        };
        let (entries, mut damaged) = command_log::read(&store)?;
        let next_seq = command_log::next_seq(&entries, &damaged);
        let registry =
            Arc::new(eddy_registry::SchemaRegistry::open(&store).map_err(|e| {
                EngineError::internal(format!("cannot read the schema registry: {e}"))
            })?);
        let schemas = crate::codec::Schemas::new(registry.clone());
        let config =
            datafusion::prelude::SessionConfig::new().with_extension(Arc::new(schemas.clone()));
        let engine = Engine {
            store,
            state: Mutex::new(EngineState {
                catalog: Catalog::default(),
                next_seq: 0,
                replaying_seq: None,
                queries: BTreeMap::new(),
                connectors: BTreeMap::new(),
                command_statuses: BTreeMap::new(),
            }),
            datafusion: datafusion::prelude::SessionContext::new_with_config(config),
            progress: Arc::new(tokio::sync::Notify::new()),
            transient: Arc::new(
                crate::query::transient::TransientRegistry::with_max_held_bytes(
                    options.pull_query_max_bytes,
                ),
            ),
            metrics: crate::metrics::EngineMetrics::default(),
            materializers: Arc::default(),
            pull_plans: Default::default(),
            damaged_commands: Vec::new(),
            options,
            registry,
            schemas,
        };
        engine.replay(&mut state, entries, &mut damaged).await;
        state.next_seq = next_seq;
        damaged.sort_by_key(|d| d.seq.unwrap_or(u64::MAX));
        for entry in &damaged {
            tracing::error!(
                seq = entry.seq,
                reason = %entry.reason,
                "a command-log entry cannot be replayed; skipped, and /healthcheck reports the log damaged"
            );
        }
        let mut engine = engine;
        engine.damaged_commands = damaged;
        engine.ensure_processing_log(&mut state)?;
        engine.start_connectors(&mut state);
        info!(
            sources = state.catalog.sources().count(),
            commands = state.next_seq,
            "engine catalog restored"
        );
        *engine.state.lock().await = state;
        Ok(engine)
    }

    /// Runs logged commands again, in order, without logging them: the catalog they built.
    async fn replay(
        &self,
        state: &mut EngineState,
        entries: command_log::Entries,
        damaged: &mut Vec<command_log::DamagedEntry>,
    ) {
        for (seq, command) in entries {
            let mut session = Session {
                properties: command.properties.clone(),
                ..Session::default()
            };
            state.replaying_seq = Some(seq);
            let statements = match parse_statements(&command.sql) {
                Ok(statements) => statements,
                Err(e) => {
                    damaged.push(command_log::DamagedEntry {
                        seq: Some(seq),
                        reason: format!("its SQL no longer parses: {e}"),
                    });
                    continue;
                }
            };
            for statement in statements {
                if let Err(e) = self
                    .execute_statement(
                        state,
                        &mut session,
                        &statement.statement,
                        &statement.text,
                        Mode::Replay,
                    )
                    .await
                {
                    warn!(seq, sql = %command.sql, error = %e, "a logged command no longer applies; skipped");
                }
            }
        }
        state.replaying_seq = None;
    }

    /// On a Kafka cluster, what keeps this node in step with its service: statements the
    /// active node ran, applied here as they reach the command log, the schemas it registered,
    /// and the queries held while this node stands by and started when it becomes active.
    /// `None` for the embedded log.
    pub fn follow_cluster(
        self: &Arc<Self>,
    ) -> Option<impl std::future::Future<Output = ()> + use<>> {
        let mut node = self.store.node_state()?;
        let engine = Arc::downgrade(self);
        let registry = Arc::downgrade(&self.registry);
        Some(async move {
            // Every node follows the registry's log, which the active node writes.
            let follow_registry = async move {
                let mut every = tokio::time::interval(REGISTRY_FOLLOW_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    if let Err(error) = registry.catch_up().await {
                        warn!(%error, "following the schema registry's log");
                    }
                }
            };
            let follow_commands = async move {
                loop {
                    let now = *node.borrow_and_update();
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    engine.apply_cluster_state(now.role).await;
                    drop(engine);
                    if node.changed().await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                () = follow_registry => {}
                () = follow_commands => {}
            }
        })
    }

    /// How far this node applied its command log: the sequence number the next statement gets.
    pub async fn command_seq(&self) -> u64 {
        self.state.lock().await.next_seq
    }

    /// Waits until this node applied its command log up to `seq` (another node's
    /// [`Engine::command_seq`] after a statement it ran), at most `timeout`; whether it did.
    pub async fn await_command_seq(&self, seq: u64, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.command_seq().await >= seq {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Applies the command log's new entries, then holds or starts the queries for `role`.
    async fn apply_cluster_state(&self, role: eddy_storage::Role) {
        let mut state = self.state_lock().await;
        match command_log::read(&self.store) {
            Ok((entries, damaged)) => {
                let next_seq = command_log::next_seq(&entries, &damaged);
                let new: command_log::Entries = entries
                    .into_iter()
                    .filter(|(seq, _)| *seq >= state.next_seq)
                    .collect();
                if !new.is_empty() {
                    info!(
                        commands = new.len(),
                        "applying statements from the command topic"
                    );
                    let mut damaged = Vec::new();
                    self.replay(&mut state, new, &mut damaged).await;
                    for entry in damaged {
                        warn!(seq = entry.seq, reason = %entry.reason, "a command from the command topic cannot be applied");
                    }
                }
                state.next_seq = state.next_seq.max(next_seq);
            }
            Err(e) => warn!(error = %e, "reading the command log"),
        }
        let held = role == eddy_storage::Role::Standby;
        for query in state.queries.values_mut() {
            query.hold(held).await;
        }
        // Connectors run where the queries do: their positions are committed state.
        let replaying = state.replaying_seq.is_some();
        for connector in state.connectors.values_mut() {
            if held {
                connector.stand_by().await;
            } else if !replaying {
                connector.start(&self.store);
            }
        }
        self.progress.notify_waiters();
    }

    /// Creates the processing log's topic and stream when missing, as ksqlDB does with
    /// `ksql.logging.processing.stream.auto.create`.
    fn ensure_processing_log(&self, state: &mut EngineState) -> Result<()> {
        use crate::query::processing_log::{
            PROCESSING_LOG_STREAM, PROCESSING_LOG_TOPIC, declaration,
        };
        if !self.store.topic_exists(PROCESSING_LOG_TOPIC) {
            self.store
                .create_topic(PROCESSING_LOG_TOPIC, TopicConfig::with_partitions(1))?;
        }
        if state.catalog.source(PROCESSING_LOG_STREAM).is_none() {
            let sql = declaration();
            for statement in parse_statements(&sql)? {
                if let StatementKind::CreateSource(create) = &statement.statement.kind {
                    let source = state.catalog.build_source(create, &sql, &HashMap::new())?;
                    state.catalog.put_source(source);
                }
            }
        }
        Ok(())
    }

    /// The command-log entries that could not be replayed when the engine opened.
    pub fn damaged_commands(&self) -> &[command_log::DamagedEntry] {
        &self.damaged_commands
    }

    pub(crate) async fn state_lock(&self) -> tokio::sync::MutexGuard<'_, EngineState> {
        self.state.lock().await
    }

    /// Starts a `SELECT`: a push query with `EMIT CHANGES`, which streams rows until its
    /// `LIMIT` or until closed, or a pull query, which answers from what its source holds now.
    pub async fn query(
        &self,
        session: &Session,
        sql: &str,
    ) -> Result<crate::query::transient::TransientQuery> {
        let mut parsed = request_statements(session, sql)?;
        if parsed.len() != 1 {
            return Err(EngineError::statement(
                "Expected exactly one SELECT statement",
            ));
        }
        let statement = parsed.remove(0);
        let StatementKind::Query(query) = &statement.statement.kind else {
            return Err(EngineError::statement(format!(
                "Only SELECT statements run as queries here: {}",
                statement.text
            )));
        };
        if let Some(caller) = &session.caller {
            let state = self.state.lock().await;
            crate::authorize::check(
                caller,
                &state.catalog,
                &self.store,
                &statement.statement.kind,
            )?;
        }
        let max = self.options.max_push_queries;
        if query.emit.is_some() && self.push_query_count() >= max {
            return Err(EngineError::statement(format!(
                "Not able to run the push query: the server is running {max} push queries already, the most it allows (ksql.max.push.queries, --max-push-queries). Close one and try again."
            )));
        }
        let (query, inline) = {
            let state = self.state.lock().await;
            crate::query::transient::start(
                &self.store,
                &self.datafusion,
                &state.catalog,
                (&self.transient, &self.materializers, &self.pull_plans),
                &session.properties,
                query,
                &statement.text,
            )?
        };
        if let Some(work) = inline {
            work.await;
        }
        Ok(query)
    }

    /// Whether `sql` is a `PRINT` statement (which [`Engine::print`] runs, not
    /// [`Engine::query`]).
    pub fn is_print(sql: &str) -> bool {
        parse_statements(sql).is_ok_and(|parsed| {
            matches!(
                parsed.as_slice(),
                [one] if matches!(one.statement.kind, StatementKind::Print(_))
            )
        })
    }

    /// Starts a `PRINT` of a topic: its records as text, from its end (or its beginning with
    /// `FROM BEGINNING` or the session's `auto.offset.reset` of `earliest`).
    pub async fn print(&self, session: &Session, sql: &str) -> Result<crate::print::PrintTopic> {
        let parsed = request_statements(session, sql)?;
        let [statement] = parsed.as_slice() else {
            return Err(EngineError::statement(
                "Expected exactly one PRINT statement",
            ));
        };
        let StatementKind::Print(print) = &statement.statement.kind else {
            return Err(EngineError::statement(format!(
                "Only PRINT statements print topics: {}",
                statement.text
            )));
        };
        if let Some(caller) = &session.caller {
            let state = self.state.lock().await;
            crate::authorize::check(
                caller,
                &state.catalog,
                &self.store,
                &statement.statement.kind,
            )?;
        }
        let earliest = session
            .properties
            .get("auto.offset.reset")
            .is_some_and(|v| v.eq_ignore_ascii_case("earliest"));
        crate::print::start(&self.store, self.schema_registry().clone(), print, earliest)
    }

    /// How many topics have a reader running that their push queries share.
    pub fn push_readers(&self) -> usize {
        self.transient.readers.running()
    }

    /// The table `name` (as SQL names it: any case unless it was quoted) as a DataFusion table
    /// over its materialized state, to register with a
    /// `SessionContext`: every scan answers from one consistent snapshot holding everything
    /// appended before it, and filters on the key become point reads or range scans (see
    /// [`crate::query::provider`]).
    pub async fn table_provider(
        &self,
        name: &str,
    ) -> Result<Arc<crate::query::provider::MaterializedTable>> {
        let state = self.state.lock().await;
        // As an unquoted name in SQL: upper case, unless only the name as given exists.
        let table = state
            .catalog
            .source(&name.to_ascii_uppercase())
            .or_else(|| state.catalog.source(name))
            .ok_or_else(|| {
                EngineError::statement(format!("{} does not exist.", name.to_ascii_uppercase()))
            })?;
        Ok(Arc::new(crate::query::provider::MaterializedTable::new(
            &self.store,
            &self.materializers,
            table,
            &self.schemas,
        )?))
    }

    /// Inserts rows given as JSON objects into a stream, as `/inserts-stream` does; one result
    /// per row, in order. Rows that fail are reported and the others still go in.
    pub async fn insert_rows(
        &self,
        session: &Session,
        target: &str,
        rows: &[serde_json::Value],
    ) -> Result<Vec<Result<()>>> {
        let source = {
            let state = self.state.lock().await;
            // The name as given, else as an unquoted identifier would read.
            state
                .catalog
                .source(target)
                .or_else(|| state.catalog.source(&target.to_ascii_uppercase()))
                .cloned()
                .ok_or_else(|| {
                    EngineError::statement(format!(
                        "Cannot insert values into an unknown stream/table: `{target}`"
                    ))
                })?
        };
        if let Some(caller) = &session.caller {
            crate::authorize::check_write(caller, &source.topic)?;
        }
        if source.read_only {
            return Err(EngineError::statement(format!(
                "Cannot insert values into read-only {}: {}",
                source.kind_name().to_ascii_lowercase(),
                source.name
            )));
        }
        self.register_schemas(&source, true).await?;
        let mut results = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            match crate::insert::record_from_json(&source, row, &self.schemas) {
                Ok(record) => {
                    records.push(record);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if !records.is_empty() {
            self.store.produce(&source.topic, records).await?;
        }
        Ok(results)
    }

    /// Stops a push query by id; whether it was running.
    pub fn close_query(&self, id: &str) -> bool {
        self.transient.close(id)
    }

    /// The metrics running queries record, for the server's registry.
    pub fn metrics(&self) -> &crate::metrics::EngineMetrics {
        &self.metrics
    }

    /// What `SHOW CONNECTORS` shows of every connector.
    pub async fn connector_summaries(&self) -> Vec<crate::connectors::ConnectorSummary> {
        let state = self.state.lock().await;
        state
            .connectors
            .values()
            .map(|c| c.summary(&self.store))
            .collect()
    }

    /// What `SHOW QUERIES` shows of every persistent query, with its offsets and rates.
    pub async fn persistent_query_summaries(&self) -> Vec<QuerySummary> {
        let state = self.state.lock().await;
        state
            .queries
            .values()
            .map(|q| q.summary(&self.store))
            .collect()
    }

    /// The number of push queries clients are reading now.
    pub fn push_query_count(&self) -> usize {
        self.transient.push_count()
    }

    /// The store the engine runs on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The schema registry the engine's formats use; the server serves this same one.
    pub fn schema_registry(&self) -> &Arc<eddy_registry::SchemaRegistry> {
        &self.registry
    }

    /// A copy of the catalog as it is now.
    pub async fn catalog(&self) -> Catalog {
        self.state.lock().await.catalog.clone()
    }

    /// Runs every statement in `sql`, in order, stopping at the first failure.
    ///
    /// The whole text is parsed before anything runs, so a syntax error anywhere runs nothing and
    /// reports its position in the whole text. Text with `${name}` variables is parsed statement by
    /// statement instead, substituting from the session, so a `DEFINE` applies to the statements
    /// after it.
    pub async fn execute(
        &self,
        session: &mut Session,
        sql: &str,
    ) -> Result<Vec<StatementResult>, ExecuteError> {
        let mut completed = Vec::new();
        let mut state = self.state.lock().await;
        let fail =
            |completed: Vec<StatementResult>, statement: String, error: EngineError| ExecuteError {
                completed,
                statement,
                error,
            };
        if let Err(why) = session.check() {
            return Err(fail(
                completed,
                sql.trim().to_string(),
                EngineError::statement(why),
            ));
        }
        if !sql.contains("${") {
            let parsed = parse_statements(sql)
                .map_err(|e| fail(Vec::new(), sql.trim().to_string(), e.into()))?;
            if let Err((statement, error)) = self
                .run_parsed(&mut state, session, parsed, &mut completed)
                .await
            {
                return Err(fail(completed, statement, error));
            }
            return Ok(completed);
        }
        for piece in split_statements(sql) {
            let text = if piece.contains("${") {
                match substitute_variables(piece, &session.variables) {
                    Ok(text) => text,
                    Err(e) => return Err(fail(completed, piece.to_string(), e.into())),
                }
            } else {
                piece.to_string()
            };
            let parsed = match parse_statements(&text) {
                Ok(parsed) => parsed,
                Err(e) => return Err(fail(completed, text, e.into())),
            };
            if let Err((statement, error)) = self
                .run_parsed(&mut state, session, parsed, &mut completed)
                .await
            {
                return Err(fail(completed, statement, error));
            }
        }
        Ok(completed)
    }

    /// Runs parsed statements in order, collecting results; on failure, the failing statement's
    /// text and the error.
    async fn run_parsed(
        &self,
        state: &mut EngineState,
        session: &mut Session,
        parsed: Vec<eddy_sql::ParsedStatement>,
        completed: &mut Vec<StatementResult>,
    ) -> Result<(), (String, EngineError)> {
        for statement in parsed {
            if let Some(caller) = &session.caller
                && let Err(e) = crate::authorize::check(
                    caller,
                    &state.catalog,
                    &self.store,
                    &statement.statement.kind,
                )
            {
                return Err((statement.text, e));
            }
            match self
                .execute_statement(
                    state,
                    session,
                    &statement.statement,
                    &statement.text,
                    Mode::Live,
                )
                .await
            {
                Ok(result) => completed.push(result),
                Err(error) => return Err((statement.text, error)),
            }
        }
        Ok(())
    }

    /// Runs one statement, live or replayed, and records the status of a command it completes.
    async fn execute_statement(
        &self,
        state: &mut EngineState,
        session: &mut Session,
        statement: &Statement,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let result = self
            .run_statement(state, session, statement, text, mode)
            .await?;
        if let StatementResult::CommandStatus {
            command_id: Some(id),
            message,
            ..
        } = &result
        {
            state.command_statuses.insert(id.clone(), message.clone());
        }
        Ok(result)
    }

    /// The status of every command that changed the catalog: its id and its message.
    pub async fn command_statuses(&self) -> Vec<(String, String)> {
        let state = self.state.lock().await;
        state
            .command_statuses
            .iter()
            .map(|(id, message)| (id.clone(), message.clone()))
            .collect()
    }

    /// Waits until every running query has processed everything appended to its input so far,
    /// including what other queries append meanwhile. Returns `false` on timeout.
    pub async fn wait_until_processed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.all_caught_up().await {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(50)), notified)
                .await;
        }
    }

    /// Whether every running query has committed everything its sources hold. The sources'
    /// ends are read before and after the check: if one moved meanwhile (a query upstream
    /// wrote to a topic another reads, after that one was checked), it is not settled yet.
    async fn all_caught_up(&self) -> bool {
        let state = self.state_lock().await;
        let ends = |state: &EngineState| -> Vec<i64> {
            let mut ends = Vec::new();
            for query in state.queries.values().filter(|q| !q.finished()) {
                for topic in &query.input_topics() {
                    let partitions = self.store.partition_count(topic).unwrap_or(0);
                    ends.extend(
                        (0..partitions)
                            .map(|p| self.store.last_stable_offset(topic, p).unwrap_or(0)),
                    );
                }
            }
            ends
        };
        let before = ends(&state);
        for query in state.queries.values() {
            if query.finished() {
                continue;
            }
            // Offsets committed but not yet counted: SHOW QUERIES would lag behind them.
            if query.shared.uncounted_commits.load(Ordering::SeqCst) > 0 {
                return false;
            }
            let group = consumer_group(&query.id);
            for topic in &query.input_topics() {
                // A topic that is gone holds nothing to wait for; one whose end cannot be read
                // now (a cluster that is slow to answer) may, so the query is not caught up.
                let partitions = match self.store.partition_count(topic) {
                    Ok(partitions) => partitions,
                    Err(eddy_storage::StorageError::UnknownTopic(_)) => continue,
                    Err(_) => return false,
                };
                for p in 0..partitions {
                    let Ok(end) = self.store.last_stable_offset(topic, p) else {
                        return false;
                    };
                    let committed = self
                        .store
                        .fetch_offset(&group, topic, p)
                        .ok()
                        .flatten()
                        .map_or(0, |o| o.offset);
                    if committed < end {
                        return false;
                    }
                }
            }
        }
        ends(&state) == before
    }

    /// Stops every query, for a clean shutdown.
    pub async fn shutdown(&self) {
        self.transient.close_all();
        self.materializers.stop_all().await;
        let mut state = self.state_lock().await;
        let ids: Vec<String> = state.queries.keys().cloned().collect();
        for id in ids {
            if let Some(query) = state.queries.remove(&id) {
                query.stop().await;
            }
        }
        for (_, connector) in std::mem::take(&mut state.connectors) {
            connector.stop().await;
        }
    }

    /// Appends a statement to the command log; returns its sequence number (on replay, the
    /// number it was logged with).
    pub(crate) async fn log_command(
        &self,
        state: &mut EngineState,
        session: &Session,
        sql: &str,
        mode: Mode,
    ) -> Result<u64> {
        if mode == Mode::Replay {
            return Ok(state.replaying_seq.unwrap_or(state.next_seq));
        }
        let command = command_log::Command {
            sql: sql.to_string(),
            properties: session.properties.clone(),
        };
        command_log::append(&self.store, state.next_seq, &command).await?;
        let seq = state.next_seq;
        state.next_seq += 1;
        Ok(seq)
    }
}

/// A query request's statements: the session checked and its variables substituted.
fn request_statements(session: &Session, sql: &str) -> Result<Vec<eddy_sql::ParsedStatement>> {
    session.check().map_err(EngineError::statement)?;
    let text = if sql.contains("${") {
        substitute_variables(sql, &session.variables)?
    } else {
        sql.to_string()
    };
    Ok(parse_statements(&text)?)
}
