//! Statement results as ksqlDB's REST entities: `currentStatus`, `streams`, `tables`,
//! `sourceDescription`, `queries`, `queryDescription` and the rest, with their field schemas.

use eddy_engine::catalog::DataSource;
use eddy_engine::query::stats::GroupOffsets;
use eddy_engine::schema::ColumnKind;
use eddy_engine::{QueryDescription, QuerySummary, SourceSummary, StatementResult};
use eddy_sql::ast::SqlType;
use serde_json::{Value, json};

/// The schema object ksqlDB gives each field in `sourceDescription`.
pub(crate) fn field_schema(ty: &SqlType) -> Value {
    match ty {
        SqlType::Array(element) => {
            json!({"type": "ARRAY", "fields": null, "memberSchema": field_schema(element)})
        }
        SqlType::Map(_, value) => {
            json!({"type": "MAP", "fields": null, "memberSchema": field_schema(value)})
        }
        SqlType::Struct(fields) => json!({
            "type": "STRUCT",
            "fields": fields.iter().map(|f| json!({"name": f.name.value, "schema": field_schema(&f.ty)})).collect::<Vec<_>>(),
            "memberSchema": null
        }),
        other => {
            json!({"type": eddy_engine::schema::type_base_name(other), "fields": null, "memberSchema": null})
        }
    }
}

/// A source as ksqlDB's `sourceDescription` shows it.
fn source_description(source: &DataSource, extended: bool, partitions: Option<u32>) -> Value {
    let fields: Vec<Value> = source
        .columns
        .iter()
        .map(|c| {
            let mut field = json!({"name": c.name, "schema": field_schema(&c.ty)});
            let kind = match &c.kind {
                ColumnKind::Key => Some("KEY"),
                ColumnKind::Headers | ColumnKind::Header(_) => Some("HEADER"),
                ColumnKind::Value => None,
            };
            if let (Some(kind), Some(obj)) = (kind, field.as_object_mut()) {
                obj.insert("type".into(), json!(kind));
            }
            field
        })
        .collect();
    json!({
        "name": source.name,
        "windowType": source.window.map(|w| format!("{:?}", w.window_type).to_uppercase()),
        "readQueries": [],
        "writeQueries": [],
        "fields": fields,
        "type": source.kind_name(),
        "timestamp": source.timestamp_column.clone().unwrap_or_default(),
        "statistics": "",
        "errorStats": "",
        "extended": extended,
        "keyFormat": source.key_format.format.name(),
        "valueFormat": source.value_format.format.name(),
        "topic": source.topic,
        "partitions": partitions.unwrap_or(0),
        "replication": 1,
        "statement": source.sql,
        "queryOffsetSummaries": [],
        "sourceConstraints": [],
        "clusterStatistics": [],
        "clusterErrorStats": []
    })
}

/// A running query as ksqlDB's `RunningQuery` shows it.
fn running_query(q: &QuerySummary) -> Value {
    json!({
        "queryString": q.sql,
        "sinks": if q.sink.is_empty() { json!([]) } else { json!([q.sink]) },
        "sinkKafkaTopics": if q.sink_topic.is_empty() { json!([]) } else { json!([q.sink_topic]) },
        "id": q.id,
        "statusCount": {q.state.clone(): 1},
        "queryType": q.query_type,
        "state": q.state
    })
}

/// A persistent query's runtime statistics, in ksqlDB's `name: value` layout.
fn query_statistics(q: &QuerySummary) -> String {
    let mut out = format!(
        "messages-per-sec: {:.2} total-messages: {} records-out: {} consumer-lag: {}",
        q.messages_per_sec,
        q.processed,
        q.emitted,
        q.lag()
    );
    if let Some(last) = q.last_message_ms {
        out.push_str(&format!(" last-message: {}", timestamp_text(last)));
    }
    out
}

/// An instant as ISO-8601 UTC, as ksqlDB's statistics print it.
fn timestamp_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// A consumer group's positions, as ksqlDB's `queryOffsetSummaries` entries.
fn offset_summary(offsets: &GroupOffsets) -> Value {
    json!({
        "groupId": offsets.group,
        "topicSummaries": offsets.topics.iter().map(|t| json!({
            "kafkaTopic": t.topic,
            "offsets": t.partitions.iter().map(|p| json!({
                "partition": p.partition,
                "logStartOffset": p.log_start,
                "logEndOffset": p.log_end,
                "consumerOffset": p.consumer,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The ksqlDB entity for a statement's result; `None` for results ksqlDB does not list.
pub(crate) fn entity(result: &StatementResult) -> Option<Value> {
    Some(match result {
        StatementResult::CommandStatus {
            statement,
            command_id: Some(command_id),
            message,
        } => json!({
            "@type": "currentStatus",
            "statementText": statement,
            "commandId": command_id,
            "commandStatus": {"status": "SUCCESS", "message": message, "queryId": null},
            "commandSequenceNumber": -1,
            "warnings": []
        }),
        StatementResult::CommandStatus {
            command_id: None, ..
        } => return None,
        StatementResult::Warning { statement, message } => json!({
            "@type": "warning_entity",
            "statementText": statement,
            "message": message,
            "warnings": []
        }),
        StatementResult::Sources {
            statement,
            kind,
            sources,
        } => source_list(statement, kind, sources),
        StatementResult::Topics { statement, topics } => json!({
            "@type": "kafka_topics",
            "statementText": statement,
            "topics": topics.iter().map(|t| json!({"name": t.name, "replicaInfo": t.replicas})).collect::<Vec<_>>(),
            "warnings": []
        }),
        StatementResult::SourceDescription {
            statement,
            source,
            extended,
            partitions,
            read_queries,
            write_queries,
        } => {
            let description = source_description(source, *extended, *partitions);
            json!({
                "@type": "sourceDescription",
                "statementText": statement,
                "sourceDescription": with_queries(description, (read_queries, write_queries), *extended),
                "warnings": []
            })
        }
        StatementResult::ConnectorInfo {
            statement,
            name,
            kind,
            config,
        } => json!({
            "@type": "connector_info",
            "statementText": statement,
            "info": {
                "name": name,
                "config": config,
                "tasks": [{"connector": name, "task": 0}],
                "type": kind.name().to_ascii_lowercase(),
            },
            "warnings": []
        }),
        StatementResult::DropConnector { statement, name } => json!({
            "@type": "drop_connector",
            "statementText": statement,
            "connectorName": name,
            "warnings": []
        }),
        StatementResult::Connectors {
            statement,
            connectors,
        } => json!({
            "@type": "connector_list",
            "statementText": statement,
            "connectors": connectors.iter().map(|c| json!({
                "name": c.name,
                "type": c.kind.name(),
                "className": c.class,
                "state": connector_state(&c.state),
            })).collect::<Vec<_>>(),
            "warnings": []
        }),
        StatementResult::ConnectorDescription {
            statement,
            connector,
        } => connector_description(statement, connector),
        StatementResult::Types { statement, types } => {
            let map: serde_json::Map<String, Value> = types
                .iter()
                .map(|(k, v)| (k.clone(), field_schema(v)))
                .collect();
            json!({"@type": "type_list", "statementText": statement, "types": map, "warnings": []})
        }
        StatementResult::Properties {
            statement,
            properties,
        } => json!({
            "@type": "properties",
            "statementText": statement,
            "properties": properties.iter().map(|(k, v)| json!({"name": k, "scope": "KSQL", "value": v})).collect::<Vec<_>>(),
            "overwrittenProperties": [],
            "defaultProperties": [],
            "warnings": []
        }),
        StatementResult::QueryDescription { statement, query } => json!({
            "@type": "queryDescription",
            "statementText": statement,
            "queryDescription": query_description(query),
            "warnings": []
        }),
        StatementResult::Queries {
            statement,
            queries,
            extended: false,
        } => json!({
            "@type": "queries",
            "statementText": statement,
            "queries": queries.iter().map(running_query).collect::<Vec<_>>(),
            "warnings": []
        }),
        StatementResult::Queries {
            statement,
            queries,
            extended: true,
        } => json!({
            "@type": "query_descriptions",
            "statementText": statement,
            "queryDescriptions": queries.iter().map(extended_query).collect::<Vec<_>>(),
            "warnings": []
        }),
        StatementResult::Functions {
            statement,
            functions,
        } => json!({
            "@type": "function_names",
            "statementText": statement,
            "functions": functions.iter().map(|(name, kind)| json!({"name": name, "type": kind, "category": ""})).collect::<Vec<_>>(),
            "warnings": []
        }),
        StatementResult::FunctionDescription {
            statement,
            function,
        } => function_description(statement, function),
        StatementResult::Variables {
            statement,
            variables,
        } => json!({
            "@type": "variables",
            "statementText": statement,
            "variables": variables.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "warnings": []
        }),
    })
}

/// `SHOW STREAMS` or `SHOW TABLES`.
fn source_list(statement: &str, kind: &str, sources: &[SourceSummary]) -> Value {
    let list: Vec<Value> = sources
        .iter()
        .map(|s| {
            json!({
                "type": s.kind,
                "name": s.name,
                "topic": s.topic,
                "keyFormat": s.key_format,
                "valueFormat": s.value_format,
                "isWindowed": s.windowed
            })
        })
        .collect();
    let (entity_type, key) = if kind == "STREAM" {
        ("streams", "streams")
    } else {
        ("tables", "tables")
    };
    json!({"@type": entity_type, "statementText": statement, key: list, "warnings": []})
}

/// A source's description with the queries reading and writing it, and for `EXTENDED` their
/// statistics, errors and positions.
fn with_queries(
    mut description: Value,
    (read_queries, write_queries): (&[QuerySummary], &[QuerySummary]),
    extended: bool,
) -> Value {
    description["readQueries"] = json!(read_queries.iter().map(running_query).collect::<Vec<_>>());
    description["writeQueries"] =
        json!(write_queries.iter().map(running_query).collect::<Vec<_>>());
    if !extended {
        return description;
    }
    let processed: u64 = read_queries.iter().map(|q| q.processed).sum();
    let failed: u64 = read_queries.iter().map(|q| q.failed).sum();
    let rate: f64 = read_queries.iter().map(|q| q.messages_per_sec).sum();
    let lag: i64 = read_queries.iter().map(QuerySummary::lag).sum();
    let mut statistics = format!(
        "consumer-messages-per-sec: {rate:.2} consumer-total-messages: {processed} consumer-lag: {lag}"
    );
    if let Some(last) = read_queries.iter().filter_map(|q| q.last_message_ms).max() {
        statistics.push_str(&format!(" last-message: {}", timestamp_text(last)));
    }
    description["statistics"] = json!(statistics);
    description["errorStats"] = json!(format!("consumer-failed-messages: {failed}"));
    description["queryOffsetSummaries"] = json!(
        read_queries
            .iter()
            .flat_map(|q| &q.offsets)
            .map(offset_summary)
            .collect::<Vec<_>>()
    );
    description
}

/// A query as ksqlDB's `queryDescription` shows it.
fn query_description(query: &QueryDescription) -> Value {
    json!({
        "id": query.id,
        "statementText": query.sql,
        "windowType": null,
        "fields": query.fields.iter().map(|c| {
            let mut field = json!({"name": c.name, "schema": field_schema(&c.ty)});
            if c.kind == ColumnKind::Key {
                field["type"] = json!("KEY");
            }
            field
        }).collect::<Vec<_>>(),
        "sources": query.sources,
        "sinks": query.sinks,
        "topology": "",
        "executionPlan": query.execution_plan,
        "overriddenProperties": {},
        "ksqlHostQueryStatus": {},
        "queryType": "PERSISTENT",
        "queryErrors": query.error.iter().map(|(at, message)| json!({
            "timestamp": at,
            "errorMessage": message,
            "type": "UNKNOWN"
        })).collect::<Vec<_>>(),
        "tasksMetadata": [],
        "state": query.state
    })
}

/// A running query as `SHOW QUERIES EXTENDED` shows it: with its statistics and positions.
fn extended_query(q: &QuerySummary) -> Value {
    let mut description = running_query(q);
    description["statementText"] = json!(q.sql);
    description["sources"] = json!(
        q.offsets
            .iter()
            .flat_map(|o| &o.topics)
            .map(|t| t.topic.clone())
            .collect::<Vec<_>>()
    );
    description["statistics"] = json!(query_statistics(q));
    description["errorStats"] = json!(format!("failed-messages: {}", q.failed));
    description["consumerLag"] = json!(q.lag());
    description["queryOffsetSummaries"] =
        json!(q.offsets.iter().map(offset_summary).collect::<Vec<_>>());
    description
}

/// ksqlDB's `describe_function` entity: the function, each variation's arguments (a variadic
/// one by its element type, flagged) and return type.
fn function_description(
    statement: &str,
    function: &eddy_sql::functions::FunctionDescription,
) -> Value {
    let variations: Vec<Value> = function
        .variations
        .iter()
        .map(|variation| {
            let arguments: Vec<Value> = variation
                .arguments
                .iter()
                .map(|a| {
                    json!({
                        "name": a.name,
                        "type": a.sql_type,
                        "description": "",
                        "isVariadic": a.variadic,
                    })
                })
                .collect();
            json!({
                "arguments": arguments,
                "argumentTypes": variation.arguments.iter().map(|a| &a.sql_type).collect::<Vec<_>>(),
                "returnType": variation.returns,
                "description": "",
            })
        })
        .collect();
    json!({
        "@type": "describe_function",
        "statementText": statement,
        "name": function.name,
        "description": function.overview,
        "author": function.author,
        "version": "",
        "path": "internal",
        "functions": variations,
        "type": function.kind.name(),
        "warnings": []
    })
}

/// A connector's state as ksqlDB lists it: the connector's, then how many of its one task run.
fn connector_state(state: &eddy_engine::connectors::ConnectorState) -> String {
    let running = usize::from(*state == eddy_engine::connectors::ConnectorState::Running);
    format!("{} ({running}/1 tasks RUNNING)", state.name())
}

/// `DESCRIBE CONNECTOR`'s entity: Kafka Connect's status of the connector and its task (with
/// the error as the task's trace), the topics it writes, and a sink's lag.
fn connector_description(
    statement: &str,
    connector: &eddy_engine::connectors::ConnectorSummary,
) -> Value {
    let state = connector.state.name();
    let mut task = json!({"id": 0, "state": state, "worker_id": "eddy"});
    if let eddy_engine::connectors::ConnectorState::Failed(error) = &connector.state {
        task["trace"] = json!(error);
    }
    json!({
        "@type": "connector_description",
        "statementText": statement,
        "connectorClass": connector.class,
        "status": {
            "name": connector.name,
            "connector": {"state": state, "worker_id": "eddy"},
            "tasks": [task],
            "type": connector.kind.name().to_ascii_lowercase(),
        },
        "sources": [],
        "topics": connector.topics,
        // Eddy's: a sink's records not yet written, a source's WAL bytes not yet read.
        "lag": connector.lag,
        "walLagBytes": connector.wal_lag_bytes,
        "warnings": []
    })
}
