//! ksqlDB's query endpoints: `/query` (a JSON array streamed with chunked encoding),
//! `/query-stream` (a metadata line, then one JSON array per row) and `/close-query`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::query::transient::{TransientEvent, TransientQuery};
use eddy_engine::schema::{ColumnKind, type_display};
use eddy_engine::{Engine, Session};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{error, scalar_text};

/// The body of `POST /query`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: HashMap<String, Value>,
}

/// The body of `POST /query-stream`.
#[derive(Debug, Deserialize)]
pub struct QueryStreamRequest {
    sql: String,
    #[serde(default)]
    properties: HashMap<String, Value>,
}

/// The body of `POST /close-query`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseQueryRequest {
    query_id: String,
}

fn session(properties: &HashMap<String, Value>) -> Session {
    Session {
        properties: properties
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect(),
        variables: HashMap::new(),
    }
}

/// Reads a JSON request body whatever its declared content type, as ksqlDB's clients send
/// several (`application/json`, `application/vnd.ksql.v1+json`, none).
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "generic_error",
            40000,
            format!("Invalid JSON in request: {e}"),
            Value::Null,
        ))
    })
}

async fn start(
    engine: &Engine,
    session: &Session,
    sql: &str,
) -> Result<TransientQuery, Box<Response>> {
    engine.query(session, sql).await.map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "statement_error",
            40001,
            e.to_string(),
            json!({"statementText": sql, "entities": []}),
        ))
    })
}

/// The query's schema as ksqlDB writes it in headers: `` `ID` STRING KEY, `COUNT` BIGINT ``.
fn schema_text(query: &TransientQuery) -> String {
    query
        .columns
        .iter()
        .map(|c| {
            format!(
                "`{}` {}{}",
                c.name,
                type_display(&c.ty),
                if c.kind == ColumnKind::Key {
                    " KEY"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A streamed body: `first`, then one chunk per event as `render` writes it, then `last`.
fn stream_body(
    query: TransientQuery,
    first: String,
    render: fn(TransientEvent) -> Option<String>,
    last: &'static str,
) -> Body {
    let state = Some((query, Some(first)));
    let stream = futures::stream::unfold(state, move |state| async move {
        let (mut query, first) = state?;
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(Bytes::from(first)), Some((query, None))));
        }
        loop {
            match query.events.recv().await {
                Some(event) => {
                    let end = !matches!(event, TransientEvent::Row { .. });
                    if let Some(text) = render(event) {
                        let next = if end { None } else { Some((query, None)) };
                        return Some((Ok(Bytes::from(text)), next));
                    }
                    if end {
                        return Some((Ok(Bytes::from_static(last.as_bytes())), None));
                    }
                }
                None => return Some((Ok(Bytes::from_static(last.as_bytes())), None)),
            }
        }
    });
    Body::from_stream(stream)
}

/// `POST /query`: `[{"header":...},\n{"row":...},\n...{"finalMessage":...}]`.
pub async fn query(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    let request: QueryRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let query = match start(
        &engine,
        &session(&request.streams_properties),
        &request.ksql,
    )
    .await
    {
        Ok(query) => query,
        Err(response) => return *response,
    };
    let header = json!({"header": {"queryId": query.id, "schema": schema_text(&query)}});
    let body = stream_body(
        query,
        format!("[{header},\n"),
        |event| {
            Some(match event {
                TransientEvent::Row { columns, tombstone } => {
                    let mut row = json!({"columns": columns});
                    if tombstone {
                        row["tombstone"] = json!(true);
                    }
                    format!("{},\n", json!({"row": row}))
                }
                TransientEvent::Finished(message) => {
                    format!("{}]\n", json!({"finalMessage": message}))
                }
                TransientEvent::Error(message) => format!(
                    "{}]\n",
                    json!({"errorMessage": {"@type": "generic_error", "error_code": 50000, "message": message}})
                ),
            })
        },
        "]\n",
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.ksql.v1+json")],
        body,
    )
        .into_response()
}

/// `POST /query-stream`: a metadata line, then one JSON array per row (tombstones are left
/// out); with `Accept: application/json`, the same items as one JSON array.
pub async fn query_stream(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: QueryStreamRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let json_array = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let query = match start(&engine, &session(&request.properties), &request.sql).await {
        Ok(query) => query,
        Err(response) => return *response,
    };
    let mut metadata = json!({
        "columnNames": query.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "columnTypes": query.columns.iter().map(|c| type_display(&c.ty)).collect::<Vec<_>>(),
    });
    if query.push {
        metadata["queryId"] = json!(query.id);
    }
    let (content_type, body) = if json_array {
        (
            "application/json",
            stream_body(
                query,
                format!("[{metadata}"),
                |event| match event {
                    TransientEvent::Row {
                        tombstone: true, ..
                    } => None,
                    TransientEvent::Row { columns, .. } => {
                        Some(format!(",\n{}", Value::Array(columns)))
                    }
                    TransientEvent::Finished(_) => None,
                    TransientEvent::Error(message) => Some(format!(
                        ",\n{}",
                        json!({"@type": "generic_error", "error_code": 50000, "message": message})
                    )),
                },
                "]\n",
            ),
        )
    } else {
        (
            "application/vnd.ksqlapi.delimited.v1",
            stream_body(
                query,
                format!("{metadata}\n"),
                |event| match event {
                    TransientEvent::Row {
                        tombstone: true, ..
                    } => None,
                    TransientEvent::Row { columns, .. } => {
                        Some(format!("{}\n", Value::Array(columns)))
                    }
                    TransientEvent::Finished(_) => None,
                    TransientEvent::Error(message) => Some(format!(
                        "{}\n",
                        json!({"@type": "generic_error", "error_code": 50000, "message": message})
                    )),
                },
                "",
            ),
        )
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `POST /close-query`: stops a push query.
pub async fn close_query(State(engine): State<Arc<Engine>>, body: Bytes) -> Response {
    let request: CloseQueryRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if engine.close_query(&request.query_id) {
        StatusCode::OK.into_response()
    } else {
        error(
            StatusCode::BAD_REQUEST,
            "generic_error",
            40000,
            format!("No query with id {}", request.query_id),
            Value::Null,
        )
    }
}
