//! The statements that start and stop persistent queries: `CREATE ... AS SELECT`,
//! `INSERT INTO ... SELECT`, `TERMINATE`, `PAUSE` and `RESUME`.

use std::sync::Arc;

use eddy_sql::Span;
use eddy_sql::ast::{
    ColumnConstraint, CreateAsSelect, CreateSource, Ident, Literal, Properties, Property, Query,
    QueryTarget, SourceKind, TableElement, property_names,
};
use eddy_storage::{Commit, OffsetAndMetadata};
use tracing::info;

use crate::catalog::{DEFAULT_KEY_FORMAT, DataSource};
use crate::engine::{Engine, EngineState, Mode};
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::query::join::{JoinShape, JoinTail};
use crate::query::planner::{plan_aggregation, plan_select};
use crate::query::scope::located_error;
use crate::query::{
    Buffering, PersistentQuery, QueryKind, QueryLaunch, QueryPlan, QueryShared, consumer_group,
};
use crate::result::StatementResult;
use crate::schema::{ColumnKind, type_display};
use crate::session::Session;

/// Refuses `ORDER BY` in a persistent query, whose rows come out as they happen.
fn refuse_order_by(query: &Query) -> Result<()> {
    match query.order_by.first() {
        Some(item) => Err(located_error(
            item.span.start,
            crate::query::transient::ORDER_BY_PULL_ONLY,
        )),
        None => Ok(()),
    }
}

fn kind_word(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "stream",
        SourceKind::Table => "table",
    }
}

fn property(name: &str, value: Literal) -> Property {
    Property {
        name: name.to_string(),
        quoted: false,
        value,
        span: Span::default(),
    }
}

/// Whether `ksql.new.query.planner.enabled` is set, which relaxes some projection rules.
pub(super) fn new_planner(session: &Session) -> bool {
    session
        .properties
        .get("ksql.new.query.planner.enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The `DEAD_LETTER_TOPIC` a persistent query names: where the records it fails on and drops
/// go, with their key, value and headers and headers saying why.
fn dead_letter_topic(
    properties: &Properties,
    plan: &QueryPlan,
    sink_topic: &str,
) -> Result<Option<String>> {
    let Some(value) = properties.get(property_names::DEAD_LETTER_TOPIC) else {
        return Ok(None);
    };
    let Literal::String(topic) = value else {
        return Err(EngineError::statement(
            "DEAD_LETTER_TOPIC takes a topic name as a string, as in DEAD_LETTER_TOPIC='orders_dead'.",
        ));
    };
    eddy_storage::validate_topic_name(topic)
        .map_err(|e| EngineError::statement(format!("Invalid DEAD_LETTER_TOPIC: {e}")))?;
    if eddy_storage::is_internal_topic(topic) {
        return Err(EngineError::statement(format!(
            "DEAD_LETTER_TOPIC '{topic}' is an internal topic."
        )));
    }
    if topic == sink_topic || plan.sources().iter().any(|s| s.topic == *topic) {
        return Err(EngineError::statement(format!(
            "DEAD_LETTER_TOPIC '{topic}' is a topic the query reads or writes; dead letters need a topic of their own."
        )));
    }
    Ok(Some(topic.clone()))
}

/// A delimiter as the `*_DELIMITER` properties take it: blanks by name.
fn delimiter_name(d: char) -> String {
    match d {
        ' ' => "SPACE".into(),
        '\t' => "TAB".into(),
        other => other.to_string(),
    }
}

/// The outcome of `TERMINATE`, `PAUSE` or `RESUME`, with ksqlDB's command id
/// (`terminate/CSAS_X_1/execute`, `pause/ALL/execute`).
fn query_command(text: &str, verb: &str, target: &QueryTarget, message: &str) -> StatementResult {
    StatementResult::CommandStatus {
        statement: text.to_string(),
        command_id: Some(match target {
            QueryTarget::All => format!("{verb}/ALL/execute"),
            QueryTarget::Query(id) => format!("{verb}/{}/execute", id.value),
        }),
        message: message.to_string(),
    }
}

impl Engine {
    /// `CREATE STREAM|TABLE ... AS SELECT`.
    pub(super) async fn create_as_select(
        &self,
        state: &mut EngineState,
        session: &Session,
        create: &CreateAsSelect,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let kind = kind_word(create.kind);
        let name = &create.name.value;
        refuse_order_by(&create.query)?;
        if create.query.limit.is_some() {
            return Err(EngineError::statement(format!(
                "CREATE {} AS SELECT statements don't support LIMIT clause.",
                kind.to_ascii_uppercase()
            )));
        }
        if let Some(existing) = state.catalog.source(name) {
            let existing_kind = existing.kind_name().to_ascii_lowercase();
            if create.if_not_exists {
                return Ok(StatementResult::Warning {
                    statement: text.to_string(),
                    message: format!(
                        "Cannot add {kind} {name}: A {existing_kind} with the same name already exists."
                    ),
                });
            }
            if !create.or_replace || existing.kind != create.kind {
                return Err(EngineError::statement(format!(
                    "Cannot add {kind} '{name}': A {existing_kind} with the same name already exists"
                )));
            }
            return Err(EngineError::Unsupported(
                "CREATE OR REPLACE of a query's sink".into(),
            ));
        }
        let aggregating = !create.query.group_by.is_empty() || create.query.window.is_some();
        // Aggregates without GROUP BY are planned as an aggregation too, so its analysis
        // reports the projection's non-aggregate columns, as ksqlDB does.
        let plan = if (aggregating && !create.query.group_by.is_empty())
            || crate::query::aggregate::aggregates_anything(&create.query)
        {
            if create.kind == SourceKind::Stream {
                return Err(EngineError::statement(
                    "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.",
                ));
            }
            plan_aggregation(&self.datafusion, &state.catalog, &create.query, name, false)?
        } else {
            let plan = plan_select(
                &self.datafusion,
                &state.catalog,
                &create.query,
                (name, create.kind),
                new_planner(session),
            )?;
            let (result_kind, repartitioned) = match plan.projection() {
                Some(p) => (p.source.kind, p.repartitioned),
                None => (SourceKind::Table, false),
            };
            match (result_kind, create.kind) {
                (SourceKind::Stream, SourceKind::Table) => {
                    return Err(EngineError::statement(
                        "Invalid result type. Your SELECT query produces a STREAM. Please use CREATE STREAM AS SELECT statement instead.",
                    ));
                }
                (SourceKind::Table, SourceKind::Stream) => {
                    return Err(EngineError::statement(
                        "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.",
                    ));
                }
                _ => {}
            }
            if repartitioned && result_kind == SourceKind::Table {
                return Err(EngineError::statement(
                    "Unsupported operation: PARTITION BY on a table. Use GROUP BY to change the key of a table.",
                ));
            }
            plan
        };
        self.check_copartitioned(&plan)?;
        let declaration = self.sink_declaration(create, &plan, session)?;
        let mut sink = state
            .catalog
            .build_query_sink(&declaration, text, &session.properties)?;
        let dead_letters = dead_letter_topic(&create.properties, &plan, &sink.topic)?;
        if eddy_storage::is_internal_topic(&sink.topic) {
            return Err(EngineError::statement(super::ddl::internal_topic_message(
                &sink.topic,
            )));
        }
        // RETENTION is the query's, not the sink declaration's: the table keeps it for its
        // pull queries.
        if let (Some(window), Some(planned)) = (sink.window.as_mut(), plan.sink_window()) {
            window.retention_ms = planned.retention_ms;
        }
        if mode == Mode::Live {
            self.register_schemas(&sink, true).await?;
            self.ensure_topic(&declaration, &sink.topic, sink.kind)?;
        }
        let seq = self.log_command(state, session, text, mode).await?;
        let prefix = match create.kind {
            SourceKind::Stream => "CSAS",
            SourceKind::Table => "CTAS",
        };
        let query_id = format!("{prefix}_{}_{seq}", name.to_ascii_uppercase());
        state.catalog.put_source(sink.clone());
        self.start_query(
            state,
            session,
            query_id.clone(),
            text,
            plan,
            (sink, dead_letters),
            QueryKind::CreateAsSelect,
            mode,
        )
        .await?;
        Ok(StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(format!("{kind}/`{name}`/create")),
            message: format!("Created query with ID {query_id}"),
        })
    }

    /// Refuses a join of two sources that are both read by their key but have different
    /// partition counts, as ksqlDB does: neither is re-keyed, so their partitions must pair up.
    fn check_copartitioned(&self, plan: &QueryPlan) -> Result<()> {
        let QueryPlan::Join(join) = plan else {
            return Ok(());
        };
        let Some(stage) = join.chain.stages.first() else {
            return Ok(());
        };
        if stage.shape == JoinShape::ForeignKey || stage.left.rekeyed || stage.right.rekeyed {
            return Ok(());
        }
        let (left, right) = (&stage.left.source, &stage.right.source);
        let left_partitions = self.store.partition_count(&left.topic)?;
        let right_partitions = self.store.partition_count(&right.topic)?;
        if left_partitions != right_partitions {
            return Err(EngineError::statement(format!(
                "Can't join `{}` with `{}` since the number of partitions don't match. `{}` partitions = {left_partitions}; `{}` partitions = {right_partitions}. Please repartition either one so that the number of partitions match.",
                left.name, right.name, left.name, right.name
            )));
        }
        Ok(())
    }

    /// The `CREATE` a query's sink amounts to: its columns, and its properties with what it
    /// inherits from its source (formats, delimiters, partition count).
    fn sink_declaration(
        &self,
        create: &CreateAsSelect,
        plan: &QueryPlan,
        session: &Session,
    ) -> Result<CreateSource> {
        let source = plan.source();
        // The dead-letter topic is the query's, not the sink's.
        let mut properties: Vec<Property> = create
            .properties
            .0
            .iter()
            .filter(|p| {
                !p.name
                    .eq_ignore_ascii_case(property_names::DEAD_LETTER_TOPIC)
            })
            .cloned()
            .collect();
        let has = |properties: &[Property], name: &str| {
            properties.iter().any(|p| p.name.eq_ignore_ascii_case(name))
        };
        if !has(&properties, "KAFKA_TOPIC") {
            properties.push(property(
                "KAFKA_TOPIC",
                Literal::String(create.name.value.clone()),
            ));
        }
        let format_given = has(&properties, "FORMAT");
        if !format_given && !has(&properties, "VALUE_FORMAT") {
            properties.push(property(
                "VALUE_FORMAT",
                Literal::String(source.value_format.format.name().into()),
            ));
            if let Some(d) = source.value_format.delimiter
                && !has(&properties, "VALUE_DELIMITER")
            {
                properties.push(property(
                    "VALUE_DELIMITER",
                    Literal::String(delimiter_name(d)),
                ));
            }
        }
        if !format_given && !has(&properties, "KEY_FORMAT") && plan.has_keys() {
            let key_format = match source.key_format.format {
                Format::None => session
                    .properties
                    .get(DEFAULT_KEY_FORMAT)
                    .cloned()
                    .unwrap_or_else(|| Format::Kafka.name().to_string()),
                other => other.name().to_string(),
            };
            properties.push(property("KEY_FORMAT", Literal::String(key_format)));
            if let Some(d) = source.key_format.delimiter
                && !has(&properties, "KEY_DELIMITER")
            {
                properties.push(property(
                    "KEY_DELIMITER",
                    Literal::String(delimiter_name(d)),
                ));
            }
        }
        // A windowed aggregation, or a query over a windowed stream, writes windowed keys.
        if let Some(window) = &plan.sink_window() {
            let kind = window.window_type.name();
            properties.push(property("WINDOW_TYPE", Literal::String(kind.into())));
            if let Some(size) = window.size_ms {
                properties.push(property(
                    "WINDOW_SIZE",
                    Literal::String(format!("{size} MILLISECONDS")),
                ));
            }
        }
        if !has(&properties, "PARTITIONS") {
            // An existing sink topic keeps its partitions; a new one takes the source's.
            let topic = properties
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case("KAFKA_TOPIC"))
                .and_then(|p| match &p.value {
                    Literal::String(t) => Some(t.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| create.name.value.clone());
            let partitions = match self.store.partition_count(&topic) {
                Ok(n) => n,
                Err(_) => self.store.partition_count(&source.topic)?,
            };
            properties.push(property(
                "PARTITIONS",
                Literal::Integer(i64::from(partitions)),
            ));
        }
        let key_constraint = match create.kind {
            SourceKind::Stream => ColumnConstraint::Key,
            SourceKind::Table => ColumnConstraint::PrimaryKey,
        };
        let elements = plan
            .columns()
            .into_iter()
            .map(|c| TableElement {
                name: Ident::quoted(&c.name),
                ty: c.ty,
                constraint: (c.kind == ColumnKind::Key).then(|| key_constraint.clone()),
                span: Span::default(),
            })
            .collect();
        Ok(CreateSource {
            kind: create.kind,
            or_replace: create.or_replace,
            read_only: false,
            if_not_exists: create.if_not_exists,
            name: create.name.clone(),
            elements: Some(elements),
            properties: Properties(properties),
        })
    }

    /// `INSERT INTO target SELECT ...`.
    pub(super) async fn insert_into_select(
        &self,
        state: &mut EngineState,
        session: &Session,
        (target, properties): (&Ident, &Properties),
        query: &Query,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        refuse_order_by(query)?;
        let sink = state
            .catalog
            .source(&target.value)
            .cloned()
            .ok_or_else(|| {
                EngineError::statement(format!(
                    "Line: {}, Col: {}: Source `{}` does not exist.",
                    target.span.start.line, target.span.start.column, target.value
                ))
            })?;
        if sink.kind == SourceKind::Table {
            return Err(EngineError::statement(format!(
                "INSERT INTO can only be used to insert into a stream. {} is a table.",
                sink.name
            )));
        }
        if sink.read_only {
            return Err(EngineError::statement(format!(
                "Cannot insert into read-only stream: {}",
                sink.name
            )));
        }
        if sink
            .columns
            .iter()
            .any(|c| matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
        {
            return Err(EngineError::statement(format!(
                "Cannot insert into {} because it has header columns",
                sink.name
            )));
        }
        if !query.group_by.is_empty() {
            return Err(EngineError::statement(format!(
                "INSERT INTO can only be used to insert into a stream. An aggregation produces a table, and {} is a stream.",
                sink.name
            )));
        }
        let mut plan = plan_select(
            &self.datafusion,
            &state.catalog,
            query,
            (&sink.name, SourceKind::Stream),
            new_planner(session),
        )?;
        let from_table = match &plan {
            QueryPlan::Stateless(p) => (p.source.kind == SourceKind::Table).then_some(&p.source),
            QueryPlan::Join(p) => match &p.then {
                JoinTail::Project(post) => {
                    (post.source.kind == SourceKind::Table).then_some(&p.chain.sources[0])
                }
                JoinTail::Aggregate(_) => Some(&p.chain.sources[0]),
            },
            QueryPlan::Aggregate(p) => Some(&p.source),
        };
        if let Some(table) = from_table {
            return Err(EngineError::statement(format!(
                "INSERT INTO can only be used to insert into a stream from a stream. {} is a table.",
                table.name
            )));
        }
        self.check_copartitioned(&plan)?;
        let sink_columns: Vec<_> = sink
            .columns
            .iter()
            .filter(|c| matches!(c.kind, ColumnKind::Key | ColumnKind::Value))
            .cloned()
            .collect();
        widen_to_sink(&mut plan, &sink_columns)?;
        let result = plan.columns();
        let same = result.len() == sink_columns.len()
            && result.iter().zip(&sink_columns).all(|(r, s)| {
                r.name == s.name && r.kind == s.kind && type_display(&r.ty) == type_display(&s.ty)
            });
        if !same {
            return Err(EngineError::statement(format!(
                "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
                crate::schema::schema_text(&result, true),
                crate::schema::schema_text(&sink_columns, true)
            )));
        }
        let dead_letters = dead_letter_topic(properties, &plan, &sink.topic)?;
        if mode == Mode::Live {
            self.register_schemas(&sink, true).await?;
        }
        let seq = self.log_command(state, session, text, mode).await?;
        let query_id = format!("INSERTQUERY_{seq}");
        self.start_query(
            state,
            session,
            query_id.clone(),
            text,
            plan,
            (sink, dead_letters),
            QueryKind::InsertInto,
            mode,
        )
        .await?;
        Ok(StatementResult::CommandStatus {
            statement: text.to_string(),
            command_id: Some(format!("stream/`{}`/create", target.value)),
            message: format!("Created query with ID {query_id}"),
        })
    }

    /// Starts a query's task. A new query (not a replayed one) first commits where it starts
    /// reading: the end of its input, or the beginning with `auto.offset.reset=earliest`.
    #[allow(clippy::too_many_arguments)]
    async fn start_query(
        &self,
        state: &mut EngineState,
        session: &Session,
        query_id: String,
        text: &str,
        plan: QueryPlan,
        (sink, dead_letter_topic): (DataSource, Option<String>),
        kind: QueryKind,
        mode: Mode,
    ) -> Result<()> {
        let mut plan = plan;
        plan.apply_properties(&session.properties);
        let sources: Vec<(String, String)> = plan
            .sources()
            .iter()
            .map(|s| (s.name.clone(), s.topic.clone()))
            .collect();
        let group = consumer_group(&query_id);
        let execution_plan = plan.explain(&query_id, &sink.name);
        if mode == Mode::Live {
            let earliest = session
                .properties
                .get("auto.offset.reset")
                .is_some_and(|v| v.eq_ignore_ascii_case("earliest"));
            let mut commit = Commit::new();
            for (_, topic) in &sources {
                for p in 0..self.store.partition_count(topic)? {
                    let offset = if earliest {
                        self.store.log_start_offset(topic, p)?
                    } else {
                        self.store.last_stable_offset(topic, p)?
                    };
                    commit.commit_offset(
                        group.clone(),
                        topic.clone(),
                        p,
                        OffsetAndMetadata::new(offset),
                    );
                }
            }
            self.store.commit(commit).await?;
            if let Some(topic) = &dead_letter_topic {
                self.store.ensure_topic(topic)?;
            }
        }
        let shared = Arc::new(QueryShared {
            progress: self.progress.clone(),
            e2e_latency: Some(self.metrics.e2e_latency.with_label_values(&[&query_id])),
            ..QueryShared::default()
        });
        info!(query = %query_id, source = %plan.source().name, sink = %sink.name, "query started");
        let launch = QueryLaunch {
            store: self.store.clone(),
            plan,
            sink,
            buffering: Buffering {
                state_cache_entries: self.options.state_cache_entries,
                ..Buffering::from_properties(&session.properties)
            },
            retry: self.options.query_retry,
            schemas: self.schemas.clone(),
            dead_letter_topic,
        };
        state.queries.insert(
            query_id.clone(),
            PersistentQuery::start(
                query_id,
                text.to_string(),
                launch,
                (kind, execution_plan),
                (shared, self.store.is_standby()),
            ),
        );
        Ok(())
    }

    /// The queries `TERMINATE`, `PAUSE` or `RESUME` names: one by id (any case), or all.
    fn target_queries(state: &EngineState, target: &QueryTarget) -> Result<Vec<String>> {
        Ok(match target {
            QueryTarget::All => state.queries.keys().cloned().collect(),
            QueryTarget::Query(id) => {
                let wanted = id.value.to_ascii_uppercase();
                let Some(found) = state
                    .queries
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(&wanted))
                    .cloned()
                else {
                    return Err(EngineError::statement(format!(
                        "Unknown queryId: {}",
                        id.value
                    )));
                };
                vec![found]
            }
        })
    }

    /// `PAUSE id|ALL` and `RESUME id|ALL`: stops or restarts query tasks, keeping their
    /// offsets and state. Logged, so a paused query stays paused after a restart.
    pub(super) async fn pause_or_resume(
        &self,
        state: &mut EngineState,
        session: &Session,
        (target, pause): (&QueryTarget, bool),
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let ids = Self::target_queries(state, target)?;
        self.log_command(state, session, text, mode).await?;
        for id in &ids {
            if let Some(query) = state.queries.get_mut(id) {
                if pause {
                    query.pause().await;
                    info!(query = %id, "query paused");
                } else {
                    query.resume();
                    info!(query = %id, "query resumed");
                }
            }
        }
        Ok(if pause {
            query_command(text, "pause", target, "Query paused.")
        } else {
            query_command(text, "resume", target, "Query resumed.")
        })
    }

    /// `TERMINATE id` and `TERMINATE ALL`.
    pub(super) async fn terminate(
        &self,
        state: &mut EngineState,
        session: &Session,
        target: &QueryTarget,
        text: &str,
        mode: Mode,
    ) -> Result<StatementResult> {
        let ids = Self::target_queries(state, target)?;
        self.log_command(state, session, text, mode).await?;
        for id in &ids {
            let (internal, tasks) = state
                .queries
                .get(id)
                .map(|q| (q.internal_topics(), q.task_namespaces()))
                .unwrap_or_default();
            self.stop_query(state, id).await;
            // A split query's tasks' state is on every node, each a copy of a changelog that
            // goes with the query: each node forgets its own copy.
            if let Err(error) = self.store.forget_local_state(&tasks) {
                tracing::warn!(query = %id, %error, "forgetting a terminated query's task state failed");
            }
            // As ksqlDB deletes a terminated query's internal topics and state stores; the
            // node that ran the statement does it, the others only stop the query (on a
            // cluster they follow the state's deletion through its changelog).
            if mode == crate::engine::Mode::Live {
                for topic in internal {
                    if let Err(error) = self.store.delete_topic(&topic) {
                        tracing::warn!(query = %id, %topic, %error, "deleting a terminated query's internal topic failed");
                    }
                }
                let mut commit = eddy_storage::Commit::new();
                commit.delete_namespace(crate::query::state::namespace(id));
                if let Err(error) = self.store.commit(commit).await {
                    tracing::warn!(query = %id, %error, "deleting a terminated query's state failed");
                }
            }
        }
        Ok(query_command(
            text,
            "terminate",
            target,
            "Query terminated.",
        ))
    }

    /// Stops one query and forgets it.
    pub(crate) async fn stop_query(&self, state: &mut EngineState, id: &str) {
        if let Some(query) = state.queries.remove(id) {
            query.stop().await;
            self.metrics.forget_query(id);
            info!(query = %id, "query terminated");
        }
    }
}

/// `INSERT INTO`: each result column whose number widens to the sink column of the same name
/// and kind (an `INT` into a `DECIMAL`, say) is cast to it, as ksqlDB casts implicitly;
/// anything else is left for the schema check to refuse.
fn widen_to_sink(plan: &mut QueryPlan, sink_columns: &[crate::schema::Column]) -> Result<()> {
    let Some(projection) = plan.projection_mut() else {
        return Ok(());
    };
    let outputs = projection
        .keys
        .iter_mut()
        .chain(projection.values.iter_mut());
    for (output, sink) in outputs.zip(sink_columns) {
        if output.column.name == sink.name
            && output.column.kind == sink.kind
            && output.column.ty != sink.ty
            && eddy_sql::coercion::widens_to(&output.column.ty, &sink.ty)
        {
            output.cast_to(&sink.ty)?;
        }
    }
    Ok(())
}
