//! ksqlDB's REST API: `/ksql` for the statements the engine runs, `/info` and `/healthcheck`,
//! with ksqlDB's entity shapes and error codes; the query endpoints are in `streaming`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eddy_engine::catalog::DataSource;
use eddy_engine::query::stats::GroupOffsets;
use eddy_engine::schema::ColumnKind;
use eddy_engine::{Engine, EngineError, QuerySummary, Session, StatementResult};
use eddy_sql::ast::SqlType;
use serde::Deserialize;

use crate::metrics::{MetricsError, ServerMetrics};
use serde_json::{Value, json};

/// The body of `POST /ksql`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KsqlRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: HashMap<String, Value>,
    #[serde(default)]
    session_variables: HashMap<String, Value>,
}

/// What every handler can reach: the engine and the metrics it records into.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The server's metrics.
    pub metrics: Arc<ServerMetrics>,
}

impl FromRef<AppState> for Arc<Engine> {
    fn from_ref(state: &AppState) -> Self {
        state.engine.clone()
    }
}

impl FromRef<AppState> for Arc<ServerMetrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl AppState {
    /// The state of a server over `engine`, with its metrics registered.
    pub fn new(engine: Arc<Engine>) -> Result<Self, MetricsError> {
        let metrics = Arc::new(ServerMetrics::new(&engine)?);
        Ok(AppState { engine, metrics })
    }
}

/// The HTTP routes, accepting bodies up to `max_request_bytes`.
pub fn router(state: AppState, max_request_bytes: usize) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/ksql", post(ksql))
        .route("/query", post(crate::streaming::query))
        .route("/query-stream", post(crate::streaming::query_stream))
        .route("/close-query", post(crate::streaming::close_query))
        .route("/ws/query", get(crate::streaming::ws_query))
        .route("/inserts-stream", post(crate::streaming::inserts_stream))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .route("/status", get(statuses))
        .route("/status/{kind}/{entity}/{action}", get(status))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/", get(crate::console::index))
        .route("/console/{file}", get(crate::console::file))
        .route("/api/topics", get(crate::console::topics))
        .route("/api/dashboards", get(crate::console::list))
        .route(
            "/api/dashboards/{id}",
            get(crate::console::get)
                .put(crate::console::put)
                .delete(crate::console::delete),
        )
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(too_large_as_ksqldb_error))
        .layer(axum::extract::DefaultBodyLimit::max(max_request_bytes))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track_http,
        ))
}

/// Serves `router` on `listener` until the task is dropped, with Nagle's algorithm off: a
/// streamed query answer goes out in small writes (a header, then rows), and with Nagle each
/// write after the first waited for the client's delayed ACK, about 40 ms.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot turn Nagle's algorithm off");
        }
    });
    axum::serve(listener, router).await
}

/// A body over the limit is refused by the extractor with a plain-text 413; clients expect
/// ksqlDB's error shape.
async fn too_large_as_ksqldb_error(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "generic_error",
        41300,
        "The request body is larger than this server accepts (see --max-request-bytes).",
        Value::Null,
    )
}

pub(crate) fn error(
    status: StatusCode,
    kind: &str,
    code: u32,
    message: impl Into<String>,
    extra: Value,
) -> Response {
    let mut body = json!({"@type": kind, "error_code": code, "message": message.into()});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (status, Json(body)).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "generic_error",
        40400,
        "Not found: no such endpoint",
        Value::Null,
    )
}

async fn info() -> Json<Value> {
    Json(json!({"KsqlServerInfo": {
        "version": env!("CARGO_PKG_VERSION"),
        "kafkaClusterId": "eddy",
        "ksqlServiceId": "default_",
        "serverStatus": "RUNNING"
    }}))
}

async fn healthcheck() -> Json<Value> {
    Json(json!({
        "isHealthy": true,
        "details": {"metastore": {"isHealthy": true}, "kafka": {"isHealthy": true}},
        "serverState": "READY"
    }))
}

/// A request's properties and variables as the engine's session.
pub(crate) fn session(
    properties: &HashMap<String, Value>,
    variables: &HashMap<String, Value>,
) -> Session {
    Session {
        properties: properties
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect(),
        variables: variables
            .iter()
            .map(|(k, v)| (k.to_uppercase(), scalar_text(v)))
            .collect(),
    }
}

/// `GET /status`: every command's status by id, as ksqlDB's `commandStatuses`.
async fn statuses(State(engine): State<Arc<Engine>>) -> Json<Value> {
    let statuses: serde_json::Map<String, Value> = engine
        .command_statuses()
        .await
        .into_iter()
        .map(|(id, _)| (id, json!("SUCCESS")))
        .collect();
    Json(json!({"commandStatuses": statuses}))
}

/// `GET /status/{kind}/{entity}/{action}`: one command's status; the entity may be written with
/// or without its back-quotes.
async fn status(
    State(engine): State<Arc<Engine>>,
    axum::extract::Path((kind, entity, action)): axum::extract::Path<(String, String, String)>,
) -> Response {
    let entity = entity.trim_matches('`');
    let id = format!(
        "{}/`{entity}`/{}",
        kind.to_ascii_lowercase(),
        action.to_ascii_lowercase()
    );
    let found = engine
        .command_statuses()
        .await
        .into_iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(&id));
    match found {
        Some((_, message)) => (
            StatusCode::OK,
            Json(json!({"status": "SUCCESS", "message": message, "queryId": null})),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "generic_error",
            40400,
            format!("Could not find command {id}"),
            Value::Null,
        ),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn ksql(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<KsqlRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large_as_ksqldb_error(rejection.into_response()).await;
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "generic_error",
                40000,
                rejection.body_text(),
                Value::Null,
            );
        }
    };
    // Queries are streamed by /query and /query-stream, as in ksqlDB.
    if let Ok(statements) = eddy_sql::parse_statements(&request.ksql) {
        let streaming = statements.iter().any(|s| {
            matches!(
                s.statement.kind,
                eddy_sql::ast::StatementKind::Query(_) | eddy_sql::ast::StatementKind::Print(_)
            )
        });
        if streaming {
            return error(
                StatusCode::BAD_REQUEST,
                "statement_error",
                40002,
                "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT",
                json!({"statementText": request.ksql, "entities": []}),
            );
        }
    }
    let mut session = session(&request.streams_properties, &request.session_variables);
    match engine.execute(&mut session, &request.ksql).await {
        Ok(results) => {
            let entities: Vec<Value> = results.iter().filter_map(entity).collect();
            (StatusCode::OK, Json(Value::Array(entities))).into_response()
        }
        Err(failure) => {
            let entities: Vec<Value> = failure.completed.iter().filter_map(entity).collect();
            let (status, code) = match &failure.error {
                EngineError::Storage(_) | EngineError::CorruptCommandLog { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, 50000)
                }
                _ => (StatusCode::BAD_REQUEST, 40001),
            };
            error(
                status,
                "statement_error",
                code,
                failure.error.to_string(),
                json!({"statementText": failure.statement, "entities": entities}),
            )
        }
    }
}

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
fn entity(result: &StatementResult) -> Option<Value> {
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
        } => {
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
            let (entity_type, key) = if *kind == "STREAM" {
                ("streams", "streams")
            } else {
                ("tables", "tables")
            };
            json!({"@type": entity_type, "statementText": statement, key: list, "warnings": []})
        }
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
            let mut description = source_description(source, *extended, *partitions);
            description["readQueries"] =
                json!(read_queries.iter().map(running_query).collect::<Vec<_>>());
            description["writeQueries"] =
                json!(write_queries.iter().map(running_query).collect::<Vec<_>>());
            if *extended {
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
            }
            json!({
                "@type": "sourceDescription",
                "statementText": statement,
                "sourceDescription": description,
                "warnings": []
            })
        }
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
            "queryDescription": {
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
                "queryErrors": [],
                "tasksMetadata": [],
                "state": query.state
            },
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
            "queryDescriptions": queries.iter().map(|q| {
                let mut description = running_query(q);
                description["statementText"] = json!(q.sql);
                description["sources"] = json!(q.offsets.iter().flat_map(|o| &o.topics).map(|t| t.topic.clone()).collect::<Vec<_>>());
                description["statistics"] = json!(query_statistics(q));
                description["errorStats"] = json!(format!("failed-messages: {}", q.failed));
                description["consumerLag"] = json!(q.lag());
                description["queryOffsetSummaries"] = json!(q.offsets.iter().map(offset_summary).collect::<Vec<_>>());
                description
            }).collect::<Vec<_>>(),
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
