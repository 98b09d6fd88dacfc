//! ksqlDB's statement endpoints: `/ksql` for the statements the engine runs, `/status` for
//! the commands it ran, and `/info` and `/healthcheck`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_engine::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::rest::{ErrorCode, RequestCaller, RestError, entity, session};

/// The body of `POST /ksql`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KsqlRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: HashMap<String, Value>,
    #[serde(default)]
    session_variables: HashMap<String, Value>,
}

/// `GET /info`.
pub(crate) async fn info() -> Json<Value> {
    Json(json!({"KsqlServerInfo": {
        "version": env!("CARGO_PKG_VERSION"),
        "kafkaClusterId": "eddy",
        "ksqlServiceId": "default_",
        "serverStatus": "RUNNING"
    }}))
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
    caller: RequestCaller,
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
    if let Ok(statements) = eddy_sql::parse_statements(&request.ksql) {
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
    let mut session = session(
        &request.streams_properties,
        &request.session_variables,
        &caller,
    );
    match engine.execute(&mut session, &request.ksql).await {
        Ok(results) => {
            let entities: Vec<Value> = results.iter().filter_map(entity).collect();
            (StatusCode::OK, Json(Value::Array(entities))).into_response()
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
