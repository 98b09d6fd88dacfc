//! ksqlDB's statement endpoints: `/ksql` for the statements the engine runs, `/status` for
//! the commands it ran, and `/info` and `/healthcheck`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eddy_engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rest::{ErrorCode, RequestCaller, RestError, entity, session};
use crate::service::Service;

/// The body of `POST /ksql`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KsqlRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: HashMap<String, Value>,
    #[serde(default)]
    session_variables: HashMap<String, Value>,
}

/// `GET /info`.
pub(crate) async fn info(State(service): State<Arc<Service>>) -> Json<Value> {
    Json(json!({"KsqlServerInfo": {
        "version": env!("CARGO_PKG_VERSION"),
        "kafkaClusterId": "eddy",
        "ksqlServiceId": service.service_id(),
        "serverStatus": "RUNNING"
    }}))
}

/// `GET /clusterStatus`: every node of the service, as ksqlDB's heartbeats see them.
pub(crate) async fn cluster_status(State(service): State<Arc<Service>>) -> Json<Value> {
    Json(service.cluster_status().await)
}

/// `GET /healthcheck`: ksqlDB's checks, 503 when one fails. `kafka` is the log, which fails
/// while the disk is too full to write or a write failed; `commandRunner` fails when command-log
/// entries could not be replayed at start. A failed check says why in `message`.
pub(crate) async fn healthcheck(State(engine): State<Arc<Engine>>) -> Response {
    let check = |failure: Option<String>| match failure {
        None => json!({"isHealthy": true}),
        Some(message) => json!({"isHealthy": false, "message": message}),
    };
    let disk = engine.store().disk_health();
    let log = if disk.low_space {
        Some(format!(
            "the store's disk has {} bytes free, less than the {} kept in reserve: writes are refused until space is freed",
            disk.free_bytes, disk.reserve_bytes
        ))
    } else {
        disk.write_failure
            .map(|e| format!("the store's last write failed: {e}"))
    };
    let damaged = engine.damaged_commands();
    let commands = (!damaged.is_empty()).then(|| {
        let entries: Vec<String> = damaged
            .iter()
            .map(|d| match d.seq {
                Some(seq) => format!("entry {seq}: {}", d.reason),
                None => d.reason.clone(),
            })
            .collect();
        format!(
            "{} command-log entries could not be replayed and were skipped: {}",
            damaged.len(),
            entries.join("; ")
        )
    });
    let healthy = log.is_none() && commands.is_none();
    let body = json!({
        "isHealthy": healthy,
        "details": {
            "metastore": {"isHealthy": true},
            "kafka": check(log),
            "commandRunner": check(commands),
        },
        "serverState": "READY"
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /status`: every command's status by id, as ksqlDB's `commandStatuses`.
pub(crate) async fn statuses(State(engine): State<Arc<Engine>>) -> Json<Value> {
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
pub(crate) async fn status(
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
        None => RestError::new(ErrorCode::NotFound, format!("Could not find command {id}"))
            .into_response(),
    }
}

/// `POST /ksql`: runs the statements in order; a failure answers with the entities of those
/// that ran before it.
pub(crate) async fn ksql(
    State(engine): State<Arc<Engine>>,
    State(service): State<Arc<Service>>,
    caller: RequestCaller,
    headers: HeaderMap,
    body: Result<Json<KsqlRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return RestError::too_large().into_response();
        }
        Err(rejection) => {
            return RestError::new(ErrorCode::BadRequest, rejection.body_text()).into_response();
        }
    };
    // Queries are streamed by /query and /query-stream, as in ksqlDB.
    let parsed = eddy_sql::parse_statements(&request.ksql);
    if let Ok(statements) = &parsed {
        let streaming = statements.iter().any(|s| {
            matches!(
                s.statement.kind,
                eddy_sql::ast::StatementKind::Query(_) | eddy_sql::ast::StatementKind::Print(_)
            )
        });
        if streaming {
            return RestError::statement(
                ErrorCode::QueryEndpoint,
                "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT",
                json!({"statementText": request.ksql, "entities": []}),
            )
            .into_response();
        }
    }
    // A standby runs what only reads; statements that change the catalog or write records
    // run on the active node (text with variables is sent whole, as it cannot be told apart).
    let reads_only = parsed
        .as_ref()
        .is_ok_and(|statements| statements.iter().all(|s| only_reads(&s.statement.kind)));
    if !reads_only && let Some(target) = service.forward_target(&headers).await {
        return match (target, serde_json::to_vec(&request)) {
            (Ok(active), Ok(body)) => service.forward(&active, "/ksql", &headers, body).await,
            (Err(error), _) => error.into_response(),
            (_, Err(error)) => {
                RestError::new(ErrorCode::ServerError, error.to_string()).into_response()
            }
        };
    }
    let mut session = session(
        &request.streams_properties,
        &request.session_variables,
        &caller,
    );
    match engine.execute(&mut session, &request.ksql).await {
        Ok(results) => {
            let mut entities: Vec<Value> = results.iter().filter_map(entity).collect();
            service.annotate(&mut entities).await;
            let mut response = (StatusCode::OK, Json(Value::Array(entities))).into_response();
            if !reads_only && let Some((name, value)) = service.command_seq_header().await {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Err(failure) => {
            let entities: Vec<Value> = failure.completed.iter().filter_map(entity).collect();
            RestError::from_engine(
                &failure.error,
                json!({"statementText": failure.statement, "entities": entities}),
            )
            .into_response()
        }
    }
}

/// Whether a statement only reads: a standby runs it itself rather than forwarding it.
fn only_reads(kind: &eddy_sql::ast::StatementKind) -> bool {
    use eddy_sql::ast::StatementKind as K;
    matches!(
        kind,
        K::List { .. }
            | K::Describe { .. }
            | K::DescribeAll { .. }
            | K::DescribeFunction(_)
            | K::DescribeConnector(_)
            | K::Explain(_)
            | K::ExplainQuery(_)
            | K::SetProperty { .. }
            | K::UnsetProperty(_)
            | K::DefineVariable { .. }
            | K::UndefineVariable(_)
            | K::AssertTopic { .. }
            | K::AssertSchema { .. }
    )
}
