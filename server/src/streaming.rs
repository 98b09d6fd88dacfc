//! ksqlDB's query endpoints: `/query` (a JSON array streamed with chunked encoding),
//! `/query-stream` (a metadata line, then one JSON array per row), `/close-query`, and
//! `/inserts-stream` (rows in, one acknowledgement per row out).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use eddy_engine::codec::protobuf::rows::ProtobufRows;
use eddy_engine::print::PrintLine;
use eddy_engine::query::transient::{TransientEvent, TransientQuery};
use eddy_engine::schema::{Column, ColumnKind, type_display};
use eddy_engine::{Engine, Session};
use prometheus::HistogramTimer;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::ServerMetrics;
use crate::rest::{ErrorCode, RequestCaller, RestError, field_schema, session};

/// The body of `POST /query`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest {
    ksql: String,
    #[serde(default)]
    streams_properties: HashMap<String, Value>,
    #[serde(default)]
    session_variables: HashMap<String, Value>,
}

/// The body of `POST /query-stream`.
#[derive(Debug, Deserialize)]
pub struct QueryStreamRequest {
    sql: String,
    #[serde(default)]
    properties: HashMap<String, Value>,
    #[serde(default, rename = "sessionVariables")]
    session_variables: HashMap<String, Value>,
}

/// The body of `POST /close-query`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseQueryRequest {
    query_id: String,
}

/// Reads a JSON request body whatever its declared content type, as ksqlDB's clients send
/// several (`application/json`, `application/vnd.ksql.v1+json`, none).
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            RestError::new(
                ErrorCode::BadRequest,
                format!("Invalid JSON in request: {e}"),
            )
            .into_response(),
        )
    })
}

/// Starts a query; a pull query comes with a timer that records its latency when its answer
/// has been sent (when the timer drops).
async fn start(
    engine: &Engine,
    metrics: &ServerMetrics,
    session: &Session,
    sql: &str,
) -> Result<(TransientQuery, Option<HistogramTimer>), Box<Response>> {
    let timer = metrics.pull_latency.start_timer();
    let query = match engine.query(session, sql).await {
        Ok(query) => query,
        Err(e) => {
            timer.stop_and_discard();
            return Err(Box::new(
                RestError::from_engine(&e, json!({"statementText": sql, "entities": []}))
                    .into_response(),
            ));
        }
    };
    Ok(if query.push {
        timer.stop_and_discard();
        (query, None)
    } else {
        (query, Some(timer))
    })
}

/// A streamed body: `first`, then one chunk per event as `render` writes it, then `last`.
fn stream_body(
    (query, timer): (TransientQuery, Option<HistogramTimer>),
    first: String,
    render: impl Fn(TransientEvent) -> Option<String> + Clone + Send + Sync + 'static,
    last: &'static str,
) -> Body {
    let (mut query, timer) = (query, timer);
    // What is answered already (a pull query's point reads are, before it is returned) goes
    // out in one piece; the rest streams as it comes.
    let mut first = first;
    loop {
        match query.events.try_recv() {
            Ok(event) => {
                let end = !matches!(event, TransientEvent::Row { .. });
                match render(event) {
                    Some(text) => first.push_str(&text),
                    None if end => first.push_str(last),
                    None => {}
                }
                if end {
                    drop(timer);
                    return Body::from(first);
                }
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                first.push_str(last);
                drop(timer);
                return Body::from(first);
            }
        }
    }
    // The timer lives as long as the stream: it observes when the answer ends or the client
    // goes away.
    let query = (query, timer);
    let state = Some((query, Some(first)));
    let stream = futures::stream::unfold(state, move |state| {
        let render = render.clone();
        async move {
            let ((mut query, timer), first) = state?;
            if let Some(first) = first {
                return Some((
                    Ok::<_, Infallible>(Bytes::from(first)),
                    Some(((query, timer), None)),
                ));
            }
            loop {
                match query.events.recv().await {
                    Some(event) => {
                        let end = !matches!(event, TransientEvent::Row { .. });
                        if let Some(text) = render(event) {
                            let next = if end {
                                None
                            } else {
                                Some(((query, timer), None))
                            };
                            return Some((Ok(Bytes::from(text)), next));
                        }
                        if end {
                            return Some((Ok(Bytes::from_static(last.as_bytes())), None));
                        }
                    }
                    None => return Some((Ok(Bytes::from_static(last.as_bytes())), None)),
                }
            }
        }
    });
    Body::from_stream(stream)
}

/// How `/query`'s answer (and `/query-stream`'s, when asked for it) carries rows: as JSON
/// columns, or as Protobuf messages of a schema sent in the header
/// (`application/vnd.ksql.v1+protobuf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowFormat {
    Json,
    Protobuf,
}

impl RowFormat {
    /// The format the `Accept` header asks for.
    fn accepted(headers: &HeaderMap) -> RowFormat {
        let protobuf = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(PROTOBUF_CONTENT_TYPE));
        if protobuf {
            RowFormat::Protobuf
        } else {
            RowFormat::Json
        }
    }
}

const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.ksql.v1+protobuf";
const KSQL_JSON_CONTENT_TYPE: &str = "application/vnd.ksql.v1+json";

/// `POST /query`: `[{"header":...},\n{"row":...},\n...{"finalMessage":...}]`.
pub async fn query(
    State(engine): State<Arc<Engine>>,
    State(metrics): State<Arc<ServerMetrics>>,
    caller: RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: QueryRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    if Engine::is_print(&request.ksql) {
        let session = session(
            &request.streams_properties,
            &request.session_variables,
            &caller,
        );
        return print(&engine, &session, &request.ksql, true).await;
    }
    let started = match start(
        &engine,
        &metrics,
        &session(
            &request.streams_properties,
            &request.session_variables,
            &caller,
        ),
        &request.ksql,
    )
    .await
    {
        Ok(started) => started,
        Err(response) => return *response,
    };
    streamed_rows(started, RowFormat::accepted(&headers))
}

/// The answer of `/query`: a JSON array of a header, rows and a final message, streamed.
fn streamed_rows(started: (TransientQuery, Option<HistogramTimer>), format: RowFormat) -> Response {
    let query = &started.0;
    // As in ksqlDB, only a pull query over a table marks its key columns, and only it ends
    // without a final message.
    let materialized = query.materialized;
    let columns: Vec<Column> = query
        .columns
        .iter()
        .map(|c| Column {
            kind: if materialized {
                c.kind.clone()
            } else {
                ColumnKind::Value
            },
            ..c.clone()
        })
        .collect();
    let mut header =
        json!({"queryId": query.id, "schema": eddy_engine::schema::schema_text(&columns, true)});
    let protobuf = match format {
        RowFormat::Json => None,
        RowFormat::Protobuf => match ProtobufRows::new(&query.columns) {
            Ok(rows) => {
                header["protoSchema"] = json!(rows.schema());
                Some(Arc::new(rows))
            }
            Err(e) => {
                return RestError::new(
                    ErrorCode::BadRequest,
                    format!("The query's rows cannot be written as PROTOBUF: {e}"),
                )
                .into_response();
            }
        },
    };
    let header = json!({ "header": header });
    let body = stream_body(
        started,
        // Each item brings its separator, so the array is whole however the query ends.
        format!("[{header}"),
        move |event| {
            Some(match event {
                TransientEvent::Row { columns, tombstone } => {
                    let row = match &protobuf {
                        Some(rows) => match rows.encode(&columns) {
                            Ok(bytes) => json!({"protobufBytes": BASE64.encode(bytes)}),
                            Err(e) => {
                                let error = RestError::new(ErrorCode::ServerError, e.to_string());
                                return Some(format!(
                                    ",\n{}\n]\n",
                                    json!({"errorMessage": error.body()})
                                ));
                            }
                        },
                        None if tombstone => json!({"columns": columns, "tombstone": true}),
                        None => json!({"columns": columns}),
                    };
                    format!(",\n{}", json!({"row": row}))
                }
                TransientEvent::Finished(_) if materialized => "\n]\n".to_string(),
                TransientEvent::Finished(message) => {
                    format!(",\n{}\n]\n", json!({"finalMessage": message}))
                }
                TransientEvent::Error(message) => format!(
                    ",\n{}\n]\n",
                    json!({"errorMessage": RestError::new(ErrorCode::ServerError, message).body()})
                ),
            })
        },
        "\n]\n",
    );
    let content_type = match format {
        RowFormat::Json => KSQL_JSON_CONTENT_TYPE,
        RowFormat::Protobuf => PROTOBUF_CONTENT_TYPE,
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `POST /query-stream`: a metadata line, then one JSON array per row (tombstones are left
/// out); with `Accept: application/json`, the same items as one JSON array.
pub async fn query_stream(
    State(engine): State<Arc<Engine>>,
    State(metrics): State<Arc<ServerMetrics>>,
    caller: RequestCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: QueryStreamRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // ksqlDB answers the two ksql.v1 types as `/query` does.
    let streamed = if accept.contains(PROTOBUF_CONTENT_TYPE) {
        Some(RowFormat::Protobuf)
    } else if accept.contains(KSQL_JSON_CONTENT_TYPE) {
        Some(RowFormat::Json)
    } else {
        None
    };
    let json_array = accept.contains("application/json");
    if Engine::is_print(&request.sql) {
        // As in ksqlDB, PRINT answers only in the delimited format.
        if streamed.is_some() || json_array {
            return StatusCode::NOT_ACCEPTABLE.into_response();
        }
        let session = session(&request.properties, &request.session_variables, &caller);
        return print(&engine, &session, &request.sql, false).await;
    }
    let started = match start(
        &engine,
        &metrics,
        &session(&request.properties, &request.session_variables, &caller),
        &request.sql,
    )
    .await
    {
        Ok(started) => started,
        Err(response) => return *response,
    };
    if let Some(format) = streamed {
        return streamed_rows(started, format);
    }
    let query = &started.0;
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
                started,
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
                        RestError::new(ErrorCode::ServerError, message).body()
                    )),
                },
                "]\n",
            ),
        )
    } else {
        (
            "application/vnd.ksqlapi.delimited.v1",
            stream_body(
                started,
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
                        RestError::new(ErrorCode::ServerError, message).body()
                    )),
                },
                "",
            ),
        )
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A `PRINT`'s answer: one line per record as it arrives (after `Key format:` and `Value
/// format:` lines when `with_formats`, as `/query` answers), until its `LIMIT`.
async fn print(engine: &Engine, session: &Session, sql: &str, with_formats: bool) -> Response {
    let print = match engine.print(session, sql).await {
        Ok(print) => print,
        Err(e) => {
            return RestError::from_engine(&e, json!({"statementText": sql, "entities": []}))
                .into_response();
        }
    };
    tracing::info!(topic = %print.topic, "printing topic");
    let stream = futures::stream::unfold(print, move |mut print| async move {
        loop {
            match print.lines.recv().await? {
                PrintLine::Record(line) => {
                    return Some((Ok::<_, Infallible>(Bytes::from(line + "\n")), print));
                }
                PrintLine::Formats(line) if with_formats => {
                    return Some((Ok(Bytes::from(line + "\n")), print));
                }
                PrintLine::Formats(_) => {}
            }
        }
    });
    let content_type = if with_formats {
        "text/plain; charset=utf-8"
    } else {
        "application/vnd.ksqlapi.delimited.v1"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
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
        RestError::new(
            ErrorCode::BadRequest,
            format!("No query with id {}", request.query_id),
        )
        .into_response()
    }
}

/// `POST /inserts-stream`: a first line `{"target": "stream"}`, then one JSON object per line;
/// the answer is one line per row, `{"status":"ok","seq":n}` or an error object with its `seq`.
pub async fn inserts_stream(
    State(engine): State<Arc<Engine>>,
    caller: RequestCaller,
    body: Bytes,
) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(text) => text,
        Err(e) => {
            return RestError::new(
                ErrorCode::BadRequest,
                format!("The request is not UTF-8: {e}"),
            )
            .into_response();
        }
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let target = lines
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v.get("target").and_then(Value::as_str).map(str::to_string));
    let Some(target) = target else {
        return RestError::new(
            ErrorCode::BadRequest,
            "The first line must be {\"target\": \"<stream>\"}",
        )
        .into_response();
    };
    let mut rows = Vec::new();
    let mut parse_errors = Vec::new();
    for (seq, line) in lines.enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(row) => rows.push((seq, row)),
            Err(e) => parse_errors.push((seq, format!("Invalid JSON in inserts stream: {e}"))),
        }
    }
    let values: Vec<Value> = rows.iter().map(|(_, r)| r.clone()).collect();
    let session = session(&HashMap::new(), &HashMap::new(), &caller);
    let results = match engine.insert_rows(&session, &target, &values).await {
        Ok(results) => results,
        Err(e @ eddy_engine::EngineError::Forbidden(_)) => {
            return RestError::from_engine(&e, Value::Null).into_response();
        }
        Err(e) => {
            return RestError::new(ErrorCode::BadRequest, e.to_string()).into_response();
        }
    };
    let mut acks: Vec<(usize, Value)> = rows
        .iter()
        .zip(results)
        .map(|((seq, _), result)| {
            let ack = match result {
                Ok(()) => json!({"status": "ok", "seq": seq}),
                Err(e) => RestError::new(ErrorCode::BadRequest, e.to_string())
                    .with(json!({"status": "error", "seq": seq}))
                    .body(),
            };
            (*seq, ack)
        })
        .collect();
    acks.extend(parse_errors.into_iter().map(|(seq, message)| {
        (
            seq,
            RestError::new(ErrorCode::BadRequest, message)
                .with(json!({"status": "error", "seq": seq}))
                .body(),
        )
    }));
    acks.sort_by_key(|(seq, _)| *seq);
    let body: String = acks.iter().map(|(_, ack)| format!("{ack}\n")).collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/vnd.ksqlapi.delimited.v1")],
        body,
    )
        .into_response()
}

/// The largest message a `/ws/query` client may send.
const WS_MAX_INCOMING_BYTES: usize = 64 * 1024;

/// `GET /ws/query?request={"ksql": "SELECT ...", "streamsProperties": {...}}`: ksqlDB's WebSocket
/// query endpoint. The first message is the columns (`[{"name", "schema"}]`), then one
/// `{"row": {"columns": [...]}}` per row; the server closes with code 1000 and the final message
/// when the query ends, or with 1003 and the error. Closing the socket stops the query.
pub async fn ws_query(
    State(engine): State<Arc<Engine>>,
    State(metrics): State<Arc<ServerMetrics>>,
    caller: RequestCaller,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let request: QueryRequest = match params.get("request").map(|r| serde_json::from_str(r)) {
        Some(Ok(request)) => request,
        Some(Err(e)) => {
            return RestError::new(
                ErrorCode::BadRequest,
                format!("Invalid JSON in the request parameter: {e}"),
            )
            .into_response();
        }
        None => {
            return RestError::new(
                ErrorCode::BadRequest,
                "The request parameter is missing: /ws/query?request={\"ksql\": \"SELECT ...\"}",
            )
            .into_response();
        }
    };
    // A client only closes or pings: it has no reason to send a large message, which would be
    // buffered whole (tungstenite's default allows 64 MiB).
    upgrade
        .max_message_size(WS_MAX_INCOMING_BYTES)
        .max_frame_size(WS_MAX_INCOMING_BYTES)
        .on_upgrade(move |socket| stream_to_socket(engine, metrics, (request, caller), socket))
}

async fn stream_to_socket(
    engine: Arc<Engine>,
    metrics: Arc<ServerMetrics>,
    (request, caller): (QueryRequest, RequestCaller),
    mut socket: axum::extract::ws::WebSocket,
) {
    use axum::extract::ws::{CloseFrame, Message};
    let close = |code: u16, reason: &str| {
        // A close frame's reason is at most 123 bytes.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Message::Close(Some(CloseFrame {
            code,
            reason: reason[..end].into(),
        }))
    };
    let session = session(
        &request.streams_properties,
        &request.session_variables,
        &caller,
    );
    let timer = metrics.pull_latency.start_timer();
    let mut query = match engine.query(&session, &request.ksql).await {
        Ok(query) => query,
        Err(e) => {
            timer.stop_and_discard();
            let error = RestError::from_engine(&e, json!({"statementText": request.ksql}));
            let _ = socket
                .send(Message::Text(error.body().to_string().into()))
                .await;
            let _ = socket.send(close(1003, error.message())).await;
            return;
        }
    };
    // A pull query's latency is recorded when this function returns and the timer drops.
    let _timer = if query.push {
        timer.stop_and_discard();
        None
    } else {
        Some(timer)
    };
    let columns: Vec<Value> = query
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "schema": field_schema(&c.ty)}))
        .collect();
    if socket
        .send(Message::Text(Value::Array(columns).to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            event = query.events.recv() => {
                let sent = match event {
                    Some(TransientEvent::Row { columns, tombstone }) => {
                        let mut row = json!({"columns": columns});
                        if tombstone {
                            row["tombstone"] = json!(true);
                        }
                        socket.send(Message::Text(json!({"row": row}).to_string().into())).await
                    }
                    Some(TransientEvent::Finished(message)) => {
                        let _ = socket.send(close(1000, message)).await;
                        return;
                    }
                    Some(TransientEvent::Error(message)) => {
                        let _ = socket.send(close(1011, &message)).await;
                        return;
                    }
                    None => {
                        let _ = socket.send(close(1000, "Query Completed")).await;
                        return;
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // The client went away or said goodbye: dropping the query stops it.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
