//! The engine: executes statements against the catalog and the log.
//!
//! Every statement that changes the catalog is appended to a command log in the state store, as
//! ksqlDB keeps its command topic. Opening the engine replays the log, so the catalog survives
//! restarts without a second storage format to keep in step with the SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use eddy_sql::ast::{
    CreateSource, Ident, ListKind, Literal, SourceKind, SqlType, Statement, StatementKind,
};
use eddy_sql::{parse_statements, split_statements, substitute_variables};
use eddy_storage::{CleanupPolicy, Commit, Store, TopicConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::catalog::{Catalog, DEFAULT_KEY_FORMAT};
use crate::error::{EngineError, Result};
use crate::query::PersistentQuery;
use crate::result::{QuerySummary, SourceSummary, StatementResult, TopicSummary};
use crate::session::Session;

/// State-store namespace of the command log.
const COMMAND_LOG: &str = "__eddy_command_log";

/// One entry of the command log.
#[derive(Debug, Serialize, Deserialize)]
struct Command {
    sql: String,
    #[serde(default)]
    properties: HashMap<String, String>,
}

pub(crate) struct EngineState {
    pub(crate) catalog: Catalog,
    pub(crate) next_seq: u64,
    /// Sequence number of the command being replayed, which names the queries it starts.
    pub(crate) replaying_seq: Option<u64>,
    /// Running persistent queries by id.
    pub(crate) queries: BTreeMap<String, PersistentQuery>,
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
}

impl Engine {
    /// Opens the engine on a store, replaying the command log to rebuild the catalog.
    pub async fn open(store: Store) -> Result<Engine> {
        let mut state = EngineState {
            catalog: Catalog::default(),
            next_seq: 0,
            replaying_seq: None,
            queries: BTreeMap::new(),
            command_statuses: BTreeMap::new(),
        };
        let mut entries = Vec::new();
        for entry in store.state_scan_prefix(COMMAND_LOG, b"")? {
            let (key, value) = entry?;
            let seq = key
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| EngineError::CorruptCommandLog {
                    seq: state.next_seq,
                    reason: "the key is not 8 bytes".into(),
                })?;
            let command: Command =
                serde_json::from_slice(&value).map_err(|e| EngineError::CorruptCommandLog {
                    seq,
                    reason: e.to_string(),
                })?;
            entries.push((seq, command));
        }
        let engine = Engine {
            store,
            state: Mutex::new(EngineState {
                catalog: Catalog::default(),
                next_seq: 0,
                replaying_seq: None,
                queries: BTreeMap::new(),
                command_statuses: BTreeMap::new(),
            }),
            datafusion: datafusion::prelude::SessionContext::new(),
            progress: Arc::new(tokio::sync::Notify::new()),
            transient: Arc::default(),
            metrics: crate::metrics::EngineMetrics::default(),
            materializers: Arc::default(),
            pull_plans: Default::default(),
        };
        for (seq, command) in entries {
            let mut session = Session {
                properties: command.properties.clone(),
                ..Session::default()
            };
            state.replaying_seq = Some(seq);
            for statement in parse_statements(&command.sql)? {
                if let Err(e) = engine
                    .execute_statement(
                        &mut state,
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
            state.next_seq = seq + 1;
        }
        state.replaying_seq = None;
        engine.ensure_processing_log(&mut state)?;
        info!(
            sources = state.catalog.sources().count(),
            commands = state.next_seq,
            "engine catalog restored"
        );
        *engine.state.lock().await = state;
        Ok(engine)
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
        let text = if sql.contains("${") {
            substitute_variables(sql, &session.variables)?
        } else {
            sql.to_string()
        };
        let mut parsed = parse_statements(&text)?;
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
        )?))
    }

    /// Inserts rows given as JSON objects into a stream, as `/inserts-stream` does; one result
    /// per row, in order. Rows that fail are reported and the others still go in.
    pub async fn insert_rows(
        &self,
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
        if source.read_only {
            return Err(EngineError::statement(format!(
                "Cannot insert values into read-only {}: {}",
                source.kind_name().to_ascii_lowercase(),
                source.name
            )));
        }
        let mut results = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            match crate::insert::record_from_json(&source, row) {
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

    async fn run_statement(
        &self,
        state: &mut EngineState,
        session: &mut Session,
        statement: &Statement,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let done = |message: String| StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: None,
            message,
        };
        let command = |command_id: String, message: String| StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(command_id),
            message,
        };
        match &statement.kind {
            StatementKind::CreateSource(create) => {
                self.create_source(state, session, create, text, mode).await
            }
            StatementKind::DropSource {
                kind,
                if_exists,
                name,
                delete_topic,
            } => {
                self.drop_source(
                    state,
                    session,
                    *kind,
                    *if_exists,
                    &name.value,
                    *delete_topic,
                    text,
                    mode,
                )
                .await
            }
            StatementKind::CreateType {
                if_not_exists,
                name,
                ty,
            } => {
                if state.catalog.named_type(&name.value).is_some() {
                    if *if_not_exists {
                        return Ok(StatementResult::Warning {
                            statement: text.to_string(),
                            message: format!("Type {} already exists", name.value),
                        });
                    }
                    return Err(EngineError::statement(format!(
                        "Cannot register custom type '{}' since it is already registered with type: {}",
                        name.value,
                        crate::schema::type_display(
                            state.catalog.named_type(&name.value).unwrap_or(ty)
                        )
                    )));
                }
                let resolved =
                    eddy_sql::types::resolve(ty, &|n| state.catalog.named_type(n).cloned())
                        .map_err(|e| EngineError::statement(e.to_string()))?;
                self.log_command(state, session, text, mode).await?;
                state.catalog.put_type(name.value.clone(), resolved);
                Ok(done(format!(
                    "Registered custom type with name '{}'",
                    name.value
                )))
            }
            StatementKind::DropType { if_exists, name } => {
                if state.catalog.named_type(&name.value).is_none() {
                    if *if_exists {
                        return Ok(command(
                            format!("type/`{}`/drop", name.value),
                            format!("Type '{}' does not exist", name.value),
                        ));
                    }
                    return Err(EngineError::statement(format!(
                        "Type {} does not exist.",
                        name.value
                    )));
                }
                self.log_command(state, session, text, mode).await?;
                state.catalog.remove_type(&name.value);
                Ok(command(
                    format!("type/`{}`/drop", name.value),
                    format!("Dropped type '{}'", name.value),
                ))
            }
            StatementKind::List {
                what: ListKind::Queries,
                extended,
            } => Ok(self.list_queries(state, text, *extended)),
            StatementKind::List { what, .. } => self.list(state, session, *what, text),
            StatementKind::Describe { name, extended } => {
                let source = state.catalog.source(&name.value).ok_or_else(|| {
                    EngineError::statement(format!(
                        "Could not find STREAM/TABLE '{}' in the Metastore",
                        name.value
                    ))
                })?;
                let partitions = self.store.partition_count(&source.topic).ok();
                let summaries = |reading: bool| {
                    state
                        .queries
                        .values()
                        .filter(|q| {
                            if reading {
                                q.sources.iter().any(|(s, _)| *s == source.name)
                            } else {
                                q.sink == source.name
                            }
                        })
                        .map(|q| q.summary(&self.store))
                        .collect()
                };
                Ok(StatementResult::SourceDescription {
                    statement: text.to_string(),
                    source: Box::new(source.clone()),
                    extended: *extended,
                    partitions,
                    read_queries: summaries(true),
                    write_queries: summaries(false),
                })
            }
            StatementKind::InsertValues {
                target,
                columns,
                values,
            } => {
                let source = match state.catalog.source(&target.value) {
                    Some(source) => source,
                    None => {
                        let hint = match state.catalog.similar_source(&target.value) {
                            Some(similar) if target.quoted => format!(
                                "\nDid you mean {}? Hint: try removing double quotes from the source name.",
                                similar.name
                            ),
                            Some(similar) => format!(
                                "\nDid you mean \"{}\"? Hint: wrap the source name in double quotes to make it case-sensitive.",
                                similar.name
                            ),
                            None => String::new(),
                        };
                        return Err(EngineError::statement(format!(
                            "Cannot insert values into an unknown stream/table: `{}`{hint}",
                            target.value
                        )));
                    }
                };
                if source.read_only {
                    return Err(EngineError::statement(format!(
                        "Cannot insert values into read-only {}: {}",
                        source.kind_name().to_ascii_lowercase(),
                        source.name
                    )));
                }
                source.key_format.format.ensure_supported()?;
                source.value_format.format.ensure_supported()?;
                let record = crate::insert::build_record(
                    &self.datafusion,
                    &state.catalog,
                    source,
                    columns,
                    values,
                )?;
                let topic = source.topic.clone();
                if mode == Mode::Live {
                    self.store.produce(&topic, vec![record]).await?;
                }
                Ok(done(format!("Inserted 1 row into {}", target.value)))
            }
            StatementKind::SetProperty { name, value } => {
                session.properties.insert(name.clone(), value.clone());
                Ok(done(format!(
                    "Successfully changed local property '{name}' to '{value}'."
                )))
            }
            StatementKind::UnsetProperty(name) => {
                session.properties.remove(name);
                Ok(done(format!("Successfully unset local property '{name}'.")))
            }
            StatementKind::DefineVariable { name, value } => {
                session.variables.insert(name.value.clone(), value.clone());
                Ok(done(format!(
                    "Defined variable {} as '{value}'",
                    name.value
                )))
            }
            StatementKind::UndefineVariable(name) => {
                if session.variables.remove(&name.value).is_none() {
                    return Ok(StatementResult::Warning {
                        statement: text.to_string(),
                        message: format!(
                            "Cannot undefine variable '{}' which was never defined",
                            name.value
                        ),
                    });
                }
                Ok(done(format!("Undefined variable {}", name.value)))
            }
            StatementKind::CreateAsSelect(create) => {
                self.create_as_select(state, session, create, text, mode)
                    .await
            }
            StatementKind::InsertInto { target, query, .. } => {
                self.insert_into_select(state, session, target, query, text, mode)
                    .await
            }
            StatementKind::AlterSource {
                kind,
                name,
                columns,
            } => {
                self.alter_source(state, session, *kind, name, columns, text, mode)
                    .await
            }
            StatementKind::ExplainQuery(id) => self.explain_query(state, id, text),
            StatementKind::Explain(inner) => self.explain_statement(state, session, inner, text),
            StatementKind::Terminate(target) => {
                self.terminate(state, session, target, text, mode).await
            }
            StatementKind::Pause(target) => {
                self.pause_or_resume(state, session, (target, true), text, mode)
                    .await
            }
            StatementKind::Resume(target) => {
                self.pause_or_resume(state, session, (target, false), text, mode)
                    .await
            }
            other => Err(EngineError::Unsupported(describe_kind(other).to_string())),
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
        let command = Command {
            sql: sql.to_string(),
            properties: session.properties.clone(),
        };
        let value = serde_json::to_vec(&command).map_err(|e| EngineError::CorruptCommandLog {
            seq: state.next_seq,
            reason: e.to_string(),
        })?;
        let mut commit = Commit::new();
        commit.put_state(COMMAND_LOG, state.next_seq.to_be_bytes().to_vec(), value);
        self.store.commit(commit).await?;
        let seq = state.next_seq;
        state.next_seq += 1;
        Ok(seq)
    }

    async fn create_source(
        &self,
        state: &mut EngineState,
        session: &Session,
        create: &CreateSource,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let kind = match create.kind {
            SourceKind::Stream => "stream",
            SourceKind::Table => "table",
        };
        let name = &create.name.value;
        let existing = state.catalog.source(name);
        if create.or_replace && (create.read_only || existing.is_some_and(|s| s.read_only)) {
            return Err(EngineError::statement(format!(
                "Cannot add {kind} '{name}': CREATE OR REPLACE is not supported on source {kind}s."
            )));
        }
        if let Some(existing) = existing {
            if create.if_not_exists {
                return Ok(StatementResult::Warning {
                    statement: text.to_string(),
                    message: format!(
                        "Cannot add {kind} {name}: A {} with the same name already exists.",
                        existing.kind_name().to_ascii_lowercase()
                    ),
                });
            }
            if !create.or_replace {
                return Err(EngineError::statement(format!(
                    "Cannot add {kind} '{name}': A {} with the same name already exists",
                    existing.kind_name().to_ascii_lowercase()
                )));
            }
            if existing.kind != create.kind {
                return Err(EngineError::statement(format!(
                    "Cannot add {kind} '{name}': A {} with the same name already exists",
                    existing.kind_name().to_ascii_lowercase()
                )));
            }
        }
        let replaced = existing.is_some();
        let source = state
            .catalog
            .build_source(create, text, &session.properties)?;
        if mode == Mode::Live {
            self.ensure_topic(create, &source.topic, source.kind)?;
        }
        self.log_command(state, session, text, mode).await?;
        let message = match (create.kind, replaced) {
            (SourceKind::Stream, false) => "Stream created",
            (SourceKind::Table, false) => "Table created",
            (SourceKind::Stream, true) => "Stream replaced",
            (SourceKind::Table, true) => "Table replaced",
        };
        state.catalog.put_source(source);
        Ok(StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(format!("{kind}/`{name}`/create")),
            message: message.to_string(),
        })
    }

    /// Creates the source's topic, or checks the existing one against `PARTITIONS` and `REPLICAS`.
    pub(crate) fn ensure_topic(
        &self,
        create: &CreateSource,
        topic: &str,
        kind: SourceKind,
    ) -> Result<()> {
        let count = |name: &str| -> Result<Option<u32>> {
            match create.properties.get(name) {
                None => Ok(None),
                Some(Literal::Integer(n)) if *n > 0 && *n <= i64::from(u32::MAX) => {
                    Ok(Some(*n as u32))
                }
                Some(other) => Err(EngineError::statement(format!(
                    "Invalid value for {name}: {other}. It must be a positive number"
                ))),
            }
        };
        let partitions = count("PARTITIONS")?;
        let replicas = count("REPLICAS")?;
        if self.store.topic_exists(topic) {
            let description = self.store.describe_topic(topic)?;
            let have_partitions = description.config.partitions;
            let have_replicas = u32::from(description.config.replication_factor);
            let partitions_differ = partitions.is_some_and(|p| p != have_partitions);
            let replicas_differ = replicas.is_some_and(|r| r != have_replicas);
            if partitions_differ || replicas_differ {
                return Err(EngineError::statement(format!(
                    "A Kafka topic with the name '{topic}' already exists, with different partition/replica configuration than required. KSQL expects {} partitions (topic has {have_partitions}), {} replication factor (topic has {have_replicas}).",
                    partitions.unwrap_or(have_partitions),
                    replicas.unwrap_or(have_replicas)
                )));
            }
            return Ok(());
        }
        let Some(partitions) = partitions else {
            return Err(EngineError::statement(format!(
                "Topic '{topic}' does not exist. If you want to create a new topic for the {} please re-run the statement providing the required 'PARTITIONS' configuration in the WITH clause (and optionally 'REPLICAS'). For example: CREATE {} {} (ID INT) WITH (KAFKA_TOPIC='{topic}', PARTITIONS=2, REPLICAS=1, FORMAT='JSON');",
                if kind == SourceKind::Stream {
                    "stream"
                } else {
                    "table"
                },
                if kind == SourceKind::Stream {
                    "STREAM"
                } else {
                    "TABLE"
                },
                create.name.value
            )));
        };
        let mut config = TopicConfig::with_partitions(partitions);
        config.replication_factor = replicas.unwrap_or(1).min(u32::from(u16::MAX)) as u16;
        if kind == SourceKind::Table {
            config.cleanup_policy = CleanupPolicy::Compact;
        }
        if let Some(Literal::Integer(ms)) = create.properties.get("RETENTION_MS") {
            config.retention_ms = *ms;
        }
        self.store.create_topic(topic, config)?;
        Ok(())
    }

    /// `ALTER STREAM|TABLE name ADD COLUMN ...`: new value columns for a declared source.
    #[allow(clippy::too_many_arguments)]
    async fn alter_source(
        &self,
        state: &mut EngineState,
        session: &Session,
        kind: SourceKind,
        name: &Ident,
        columns: &[(Ident, SqlType)],
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let word = match kind {
            SourceKind::Stream => "stream",
            SourceKind::Table => "table",
        };
        let Some(source) = state.catalog.source(&name.value).cloned() else {
            return Err(EngineError::statement(format!(
                "Source {} does not exist.",
                name.value
            )));
        };
        if source.kind != kind {
            return Err(EngineError::statement(format!(
                "Incompatible data source type is {}, but statement was ALTER {}",
                source.kind_name(),
                word.to_ascii_uppercase()
            )));
        }
        if source.read_only {
            return Err(EngineError::statement(format!(
                "Cannot alter {word} '{}': ALTER operations are not supported on source {word}s.",
                name.value
            )));
        }
        if source.created_by_query {
            return Err(EngineError::statement(
                "ALTER command is not supported for CREATE ... AS statements.",
            ));
        }
        let mut altered = source.clone();
        for (column, ty) in columns {
            if altered.columns.iter().any(|c| c.name == column.value) {
                return Err(EngineError::statement(format!(
                    "Cannot add column `{}` to schema. A column with the same name already exists.",
                    column.value
                )));
            }
            let ty = eddy_sql::types::resolve(ty, &|n| state.catalog.named_type(n).cloned())
                .map_err(|e| EngineError::statement(e.to_string()))?;
            altered.columns.push(crate::schema::Column {
                name: column.value.clone(),
                ty,
                kind: crate::schema::ColumnKind::Value,
            });
        }
        let values: Vec<&crate::schema::Column> = altered.value_columns().collect();
        crate::format::check_columns(altered.value_format.format, &values, false)?;
        self.log_command(state, session, text, mode).await?;
        state.catalog.put_source(altered);
        Ok(StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(format!("{word}/`{}`/alter", name.value)),
            message: format!(
                "{} altered.",
                if kind == SourceKind::Stream {
                    "Stream"
                } else {
                    "Table"
                }
            ),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn drop_source(
        &self,
        state: &mut EngineState,
        session: &Session,
        kind: SourceKind,
        if_exists: bool,
        name: &str,
        delete_topic: bool,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let wanted = if kind == SourceKind::Stream {
            "Stream"
        } else {
            "Table"
        };
        let Some(source) = state.catalog.source(name).cloned() else {
            if if_exists {
                return Ok(StatementResult::CommandStatus {
                    statement: text.to_string(),
                    command_id: Some(format!("{}/`{name}`/drop", wanted.to_ascii_lowercase())),
                    message: format!("Source `{name}` does not exist."),
                });
            }
            return Err(EngineError::statement(format!(
                "{wanted} {name} does not exist"
            )));
        };
        if source.kind != kind {
            return Err(EngineError::statement(format!(
                "Incompatible data source type is {}, but statement was DROP {}",
                source.kind_name(),
                wanted.to_ascii_uppercase()
            )));
        }
        let readers: Vec<String> = state
            .queries
            .values()
            .filter(|q| q.sources.iter().any(|(s, _)| *s == name) && q.sink != name)
            .map(|q| q.sink.clone())
            .collect();
        if !readers.is_empty() {
            return Err(EngineError::statement(format!(
                "Cannot drop {name}.\nThe following streams and/or tables read from this source: [{}].\nYou need to drop them before dropping {name}.",
                readers.join(", ")
            )));
        }
        if delete_topic && source.read_only {
            return Err(EngineError::statement(format!(
                "Cannot delete topic for read-only source: {name}"
            )));
        }
        let last_table_on_topic = source.kind == SourceKind::Table
            && !state
                .catalog
                .sources()
                .any(|s| s.kind == SourceKind::Table && s.topic == source.topic && s.name != name);
        if mode == Mode::Live && last_table_on_topic {
            self.materializers
                .forget(&self.store, &source.topic)
                .await?;
        }
        if mode == Mode::Live && delete_topic && self.store.topic_exists(&source.topic) {
            self.store.delete_topic(&source.topic)?;
        }
        self.log_command(state, session, text, mode).await?;
        let writers: Vec<String> = state
            .queries
            .values()
            .filter(|q| q.sink == name)
            .map(|q| q.id.clone())
            .collect();
        for id in writers {
            self.stop_query(state, &id).await;
        }
        state.catalog.remove_source(name);
        Ok(StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(format!("{}/`{name}`/drop", wanted.to_ascii_lowercase())),
            message: format!("Source `{name}` (topic: {}) was dropped.", source.topic),
        })
    }

    fn list(
        &self,
        state: &EngineState,
        session: &Session,
        what: ListKind,
        text: &str,
    ) -> Result<StatementResult> {
        let statement = text.to_string();
        Ok(match what {
            ListKind::Streams | ListKind::Tables => {
                let (kind, label) = if what == ListKind::Streams {
                    (SourceKind::Stream, "STREAM")
                } else {
                    (SourceKind::Table, "TABLE")
                };
                StatementResult::Sources {
                    statement,
                    kind: label,
                    sources: state
                        .catalog
                        .sources()
                        .filter(|s| s.kind == kind)
                        .map(SourceSummary::of)
                        .collect(),
                }
            }
            ListKind::Topics | ListKind::AllTopics => {
                let mut topics = Vec::new();
                for name in self.store.list_topics() {
                    if what == ListKind::Topics && name.starts_with('_') {
                        continue;
                    }
                    let description = self.store.describe_topic(&name)?;
                    topics.push(TopicSummary {
                        name,
                        replicas: vec![
                            description.config.replication_factor;
                            description.partitions.len()
                        ],
                    });
                }
                StatementResult::Topics { statement, topics }
            }
            ListKind::Types => StatementResult::Types {
                statement,
                types: state
                    .catalog
                    .types()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            ListKind::Properties => {
                let mut properties: Vec<(String, String)> = [
                    ("auto.offset.reset", "latest"),
                    (DEFAULT_KEY_FORMAT, "KAFKA"),
                    ("cache.max.bytes.buffering", "10485760"),
                    ("commit.interval.ms", "2000"),
                ]
                .iter()
                .filter(|(k, _)| !session.properties.contains_key(*k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                properties.extend(
                    session
                        .properties
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                properties.sort();
                StatementResult::Properties {
                    statement,
                    properties,
                }
            }
            ListKind::Variables => {
                let mut variables: Vec<(String, String)> = session
                    .variables
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                variables.sort();
                StatementResult::Variables {
                    statement,
                    variables,
                }
            }
            ListKind::Functions => StatementResult::Functions {
                statement,
                functions: crate::query::function_names(),
            },
            ListKind::Queries | ListKind::Connectors => {
                return Err(EngineError::Unsupported(
                    format!("SHOW {what:?}").to_uppercase(),
                ));
            }
        })
    }
}

fn describe_kind(kind: &StatementKind) -> &'static str {
    match kind {
        StatementKind::CreateAsSelect(_) => "CREATE ... AS SELECT",
        StatementKind::InsertInto { .. } => "INSERT INTO ... SELECT",
        StatementKind::InsertValues { .. } => "INSERT INTO ... VALUES",
        StatementKind::Query(_) => "SELECT",
        StatementKind::DescribeAll { .. } => "DESCRIBE STREAMS/TABLES",
        StatementKind::DescribeFunction(_) => "DESCRIBE FUNCTION",
        StatementKind::Explain(_) | StatementKind::ExplainQuery(_) => "EXPLAIN",
        StatementKind::Terminate(_) => "TERMINATE",
        StatementKind::Print(_) => "PRINT",
        StatementKind::AlterSource { .. } => "ALTER",
        StatementKind::AlterSystem { .. } => "ALTER SYSTEM",
        StatementKind::AssertTopic { .. } | StatementKind::AssertSchema { .. } => "ASSERT",
        StatementKind::CreateConnector { .. }
        | StatementKind::DropConnector { .. }
        | StatementKind::DescribeConnector(_) => "Connectors",
        _ => "This statement",
    }
}
