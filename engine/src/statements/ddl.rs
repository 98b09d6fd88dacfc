//! The statements that declare what there is: `CREATE` and `DROP` of streams, tables and
//! types, and `ALTER ... ADD COLUMN`.

use eddy_sql::ast::{CreateSource, Ident, Literal, SourceKind, SqlType};
use eddy_storage::{CleanupPolicy, TopicConfig};

use super::command_status;
use crate::engine::{Engine, EngineState, Mode};
use crate::error::{EngineError, Result};
use crate::result::StatementResult;
use crate::session::Session;

impl Engine {
    /// `CREATE [OR REPLACE] STREAM|TABLE`: a source declared over a topic, created when
    /// `PARTITIONS` is given.
    pub(super) async fn create_source(
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
        // Replayed statements were logged with their inferred columns.
        let inferred = match mode {
            Mode::Live => self.infer_columns(create, session).await?,
            Mode::Replay => None,
        };
        let (create, text) = match &inferred {
            Some((filled, filled_text)) => (filled, filled_text.as_str()),
            None => (create, text),
        };
        let source = state
            .catalog
            .build_source(create, text, &session.properties)?;
        if mode == Mode::Live {
            self.ensure_topic(create, &source.topic, source.kind)?;
            self.register_schemas(&source, false).await?;
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
        if eddy_storage::is_internal_topic(topic) {
            return Err(EngineError::statement(internal_topic_message(topic)));
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
        // Without REPLICAS, the log's default (the brokers' on a cluster), as ksqlDB does.
        config.replication_factor = replicas.unwrap_or(0).min(u32::from(u16::MAX)) as u16;
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
    pub(super) async fn alter_source(
        &self,
        state: &mut EngineState,
        session: &Session,
        (kind, name, columns): (SourceKind, &Ident, &[(Ident, SqlType)]),
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

    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`: refused while other queries read
    /// it; the queries writing it stop.
    pub(super) async fn drop_source(
        &self,
        state: &mut EngineState,
        session: &Session,
        (kind, name): (SourceKind, &str),
        (if_exists, delete_topic): (bool, bool),
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

    /// `CREATE TYPE [IF NOT EXISTS] name AS type`.
    pub(super) async fn create_type(
        &self,
        state: &mut EngineState,
        session: &Session,
        (name, ty, if_not_exists): (&Ident, &SqlType, bool),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        if let Some(existing) = state.catalog.named_type(&name.value) {
            if if_not_exists {
                return Ok(StatementResult::Warning {
                    statement: text.to_string(),
                    message: format!("Type {} already exists", name.value),
                });
            }
            return Err(EngineError::statement(format!(
                "Cannot register custom type '{}' since it is already registered with type: {}",
                name.value,
                crate::schema::type_display(existing)
            )));
        }
        let resolved = eddy_sql::types::resolve(ty, &|n| state.catalog.named_type(n).cloned())
            .map_err(|e| EngineError::statement(e.to_string()))?;
        self.log_command(state, session, text, mode).await?;
        state.catalog.put_type(name.value.clone(), resolved);
        Ok(command_status(
            text,
            None,
            format!("Registered custom type with name '{}'", name.value),
        ))
    }

    /// `DROP TYPE [IF EXISTS] name`.
    pub(super) async fn drop_type(
        &self,
        state: &mut EngineState,
        session: &Session,
        (name, if_exists): (&Ident, bool),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let command_id = format!("type/`{}`/drop", name.value);
        if state.catalog.named_type(&name.value).is_none() {
            if if_exists {
                return Ok(command_status(
                    text,
                    Some(command_id),
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
        Ok(command_status(
            text,
            Some(command_id),
            format!("Dropped type '{}'", name.value),
        ))
    }
}

/// Why a statement may not create or write `topic`.
pub(crate) fn internal_topic_message(topic: &str) -> String {
    format!(
        "Cannot write into read-only topic: {topic}. Topics starting '{}' are Eddy's own; a stream over one may read it, but nothing may create or write it.",
        eddy_storage::INTERNAL_TOPIC_PREFIX
    )
}
