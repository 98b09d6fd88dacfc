//! The statements that show what is there: `SHOW` and `LIST`, `DESCRIBE`, and `EXPLAIN`.

use eddy_sql::ast::{Ident, ListKind, SourceKind};

use crate::catalog::DEFAULT_KEY_FORMAT;
use crate::engine::{Engine, EngineState};
use crate::error::{EngineError, Result};
use crate::query::planner::{plan_aggregation, plan_select};
use crate::result::{SourceSummary, StatementResult, TopicSummary};
use crate::session::Session;
use crate::statements::queries::new_planner;

impl Engine {
    /// `SHOW STREAMS`, `TABLES`, `TOPICS`, `TYPES`, `PROPERTIES`, `VARIABLES`, `FUNCTIONS`.
    pub(super) fn list(
        &self,
        state: &EngineState,
        session: &Session,
        what: ListKind,
        text: &str,
    ) -> Result<StatementResult> {
        let statement = text.to_string();
        // Listings show only what the caller may describe, as Kafka's metadata does.
        let visible = |topic: &str| {
            session
                .caller
                .as_ref()
                .is_none_or(|c| c.may_describe_topic(topic))
        };
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
                        .filter(|s| s.kind == kind && visible(&s.topic))
                        .map(SourceSummary::of)
                        .collect(),
                }
            }
            ListKind::Topics | ListKind::AllTopics => {
                let mut topics = Vec::new();
                for name in self.store.list_topics() {
                    if (what == ListKind::Topics && name.starts_with('_')) || !visible(&name) {
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
                // Answered by their own handlers.
                return Err(EngineError::Unsupported(
                    format!("SHOW {what:?}").to_uppercase(),
                ));
            }
        })
    }

    /// `SHOW QUERIES`.
    pub(super) fn list_queries(
        &self,
        state: &EngineState,
        text: &str,
        extended: bool,
    ) -> StatementResult {
        StatementResult::Queries {
            statement: text.to_string(),
            extended,
            queries: state
                .queries
                .values()
                .map(|q| q.summary(&self.store))
                .chain(self.transient.summaries())
                .collect(),
        }
    }

    /// `EXPLAIN query_id`: a running query's description.
    pub(super) fn explain_query(
        &self,
        state: &EngineState,
        id: &Ident,
        text: &str,
    ) -> Result<StatementResult> {
        let query = state
            .queries
            .values()
            .find(|q| q.id.eq_ignore_ascii_case(&id.value))
            .ok_or_else(|| {
                EngineError::statement(format!(
                    "Query with id:{} does not exist, use SHOW QUERIES to view the full set of queries.",
                    id.value
                ))
            })?;
        Ok(StatementResult::QueryDescription {
            statement: text.to_string(),
            query: Box::new(query.description()),
        })
    }

    /// `EXPLAIN statement`: how a `CREATE ... AS SELECT` or `INSERT INTO ... SELECT` would run,
    /// without running it.
    pub(super) fn explain_statement(
        &self,
        state: &EngineState,
        session: &Session,
        statement: &eddy_sql::ast::Statement,
        text: &str,
    ) -> Result<StatementResult> {
        use eddy_sql::ast::StatementKind;
        let (query, sink_name, sink_kind) = match &statement.kind {
            StatementKind::CreateAsSelect(create) => {
                (&create.query, create.name.value.clone(), create.kind)
            }
            StatementKind::InsertInto { target, query, .. } => {
                (query, target.value.clone(), SourceKind::Stream)
            }
            _ => {
                return Err(EngineError::statement(
                    "EXPLAIN takes a query id, or a CREATE ... AS SELECT or INSERT INTO ... SELECT statement",
                ));
            }
        };
        let plan = if query.group_by.is_empty() {
            plan_select(
                &self.datafusion,
                &state.catalog,
                query,
                (&sink_name, sink_kind),
                new_planner(session),
            )?
        } else {
            plan_aggregation(&self.datafusion, &state.catalog, query, &sink_name, false)?
        };
        Ok(StatementResult::QueryDescription {
            statement: text.to_string(),
            query: Box::new(crate::result::QueryDescription {
                id: String::new(),
                sql: statement.to_string(),
                sources: plan.sources().iter().map(|s| s.name.clone()).collect(),
                sinks: vec![sink_name.clone()],
                sink_topics: Vec::new(),
                fields: plan.columns(),
                execution_plan: plan.explain("", &sink_name),
                state: "NOT_RUNNING".to_string(),
                error: None,
            }),
        })
    }

    /// `DESCRIBE [EXTENDED] name`: the source, its partitions, and the queries reading and
    /// writing it.
    pub(super) fn describe(
        &self,
        state: &EngineState,
        name: &Ident,
        extended: bool,
        text: &str,
    ) -> Result<StatementResult> {
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
            extended,
            partitions,
            read_queries: summaries(true),
            write_queries: summaries(false),
        })
    }
}

/// `DESCRIBE FUNCTION name`: its overview and variations, or ksqlDB's error for a name no
/// function has.
pub(super) fn describe_function(name: &Ident, text: &str) -> Result<StatementResult> {
    let function = eddy_sql::functions::describe_function(&name.value).ok_or_else(|| {
        EngineError::statement(format!(
            "Can't find any functions with the name '{}'",
            name.value
        ))
    })?;
    Ok(StatementResult::FunctionDescription {
        statement: text.to_string(),
        function,
    })
}
