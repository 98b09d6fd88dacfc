//! Runs ksqlDB rest-query-validation-test cases against a real Eddy server: the REST API on a
//! free port, over a fresh store, driven over HTTP as ksqlDB's `RestTestExecutor` drives it.
//!
//! The statements before the first `SELECT` go to `/ksql` in one request, and each entity of
//! the answer is checked against an `admin` response (the fields given must match). The inputs
//! are then appended, and once every persistent query has processed them, each `SELECT` goes
//! to `/query`; its header schema, rows and final message are checked against the `query`
//! response. Rows of pull queries may come in any order (they are read from a store keyed by
//! bytes); rows of push queries must come in order. Cases with `outputs` then have their topics
//! compared record by record, as the QTT runner does. A case with an `expectedError` passes when
//! a request fails with its HTTP status and a message containing its text.

use std::sync::Arc;
use std::time::Duration;

use eddy_engine::Engine;
use serde_json::{Value, json};

use crate::conformance::ConformanceCase;
use crate::qtt::{append_inputs, check_outputs, close_case_engine, open_case_engine};
use crate::qtt_records::same_json;

/// How long one `/query` request may take; push queries in these files end at their `LIMIT`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs one case against a server of its own.
pub async fn run_case(case: &ConformanceCase) -> Result<(), String> {
    let (dir, engine) = open_case_engine(case).await?;
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot listen: {e}"))?;
    let router = eddy_server::http::router(
        eddy_server::http::AppState::new(engine.clone()).map_err(|e| e.to_string())?,
        eddy_server::http::BodyLimits::new(10 * 1024 * 1024),
        eddy_server::http::BrowserPolicy::new(address, &[], &[]),
    );
    let connections = eddy_server::connections::ConnectionLimit::new("http", 1024);
    let server =
        tokio::spawn(
            async move { eddy_server::http::serve(listener, router, connections, None).await },
        );
    eddy_security::tls::install_default_provider();
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?,
        url: format!("http://{address}"),
        properties: properties(case),
    };
    let outcome = exchange(&engine, &client, case).await;
    drop(client);
    server.abort();
    let _ = server.await;
    close_case_engine(&engine).await?;
    drop(engine);
    drop(dir);
    outcome
}

/// The properties sent with every request: the runner's defaults, then the case's own.
fn properties(case: &ConformanceCase) -> Value {
    let mut properties = serde_json::Map::new();
    // ksqlDB's REST test app reads topics from the start, so rows produced before a push
    // query starts are part of its answer.
    properties.insert("auto.offset.reset".into(), json!("earliest"));
    // And its record cache is off, so every update of an aggregation comes out.
    properties.insert("cache.max.bytes.buffering".into(), json!("0"));
    for (name, value) in &case.properties {
        properties.insert(name.clone(), json!(value));
    }
    Value::Object(properties)
}

struct Client {
    http: reqwest::Client,
    url: String,
    properties: Value,
}

/// A request's answer: the HTTP status and the body (parsed as JSON when it is).
struct Answer {
    status: u16,
    body: Value,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> Result<Answer, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/vnd.ksql.v1+json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {path} failed: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| format!("POST {path}: reading the answer failed: {e}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    async fn ksql(&self, sql: &str) -> Result<Answer, String> {
        self.post(
            "/ksql",
            json!({"ksql": sql, "streamsProperties": self.properties}),
        )
        .await
    }

    async fn query(&self, sql: &str) -> Result<Answer, String> {
        self.post(
            "/query",
            json!({"ksql": sql, "streamsProperties": self.properties}),
        )
        .await
    }
}

fn is_query(statement: &str) -> bool {
    statement
        .trim_start()
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("SELECT"))
}

/// Checks a failed request against the case's expected error; `Ok` when it is the one.
fn expected_failure(case: &ConformanceCase, what: &str, answer: &Answer) -> Result<(), String> {
    let message = answer.body["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| answer.body.to_string());
    let Some(expected) = case.raw.get("expectedError") else {
        return Err(format!(
            "{what} failed with HTTP {}: {message}",
            answer.status
        ));
    };
    if let Some(status) = expected.get("status").and_then(Value::as_u64)
        && u64::from(answer.status) != status
    {
        return Err(format!(
            "{what} failed with HTTP {} (expected {status}): {message}",
            answer.status
        ));
    }
    if let Some(text) = expected.get("message").and_then(Value::as_str)
        && !message.contains(text)
    {
        return Err(format!(
            "{what} failed with another message: `{message}`; expected `{text}`"
        ));
    }
    Ok(())
}

async fn exchange(engine: &Engine, client: &Client, case: &ConformanceCase) -> Result<(), String> {
    let first_query = case
        .statements
        .iter()
        .position(|s| is_query(s))
        .unwrap_or(case.statements.len());
    let (admin, queries) = case.statements.split_at(first_query);
    let expected: Vec<Value> = case
        .raw
        .get("responses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut expected = expected.iter();

    if !admin.is_empty() {
        let answer = client.ksql(&admin.join("\n")).await?;
        if answer.status != 200 {
            return expected_failure(case, "the statements", &answer);
        }
        let entities = answer.body.as_array().cloned().unwrap_or_default();
        for (i, entity) in entities.iter().enumerate() {
            match expected.next().map(|r| r.get("admin")) {
                Some(Some(want)) if contains(want, entity) => {}
                Some(Some(want)) => {
                    return Err(format!("entity {i} is {entity}; expected {want}"));
                }
                Some(None) => return Err(format!("entity {i} is {entity}; expected a query")),
                None if case.raw.get("responses").is_some() => {
                    return Err(format!("entity {i} ({entity}) was not expected"));
                }
                None => {}
            }
        }
    }

    append_inputs(engine, case, false).await?;

    for sql in queries {
        let answer = if is_query(sql) {
            client.query(sql).await?
        } else {
            client.ksql(sql).await?
        };
        if answer.status != 200 {
            return expected_failure(case, sql, &answer);
        }
        let Some(response) = expected.next() else {
            if case.raw.get("responses").is_some() {
                return Err(format!("the answer to `{sql}` was not expected"));
            }
            continue;
        };
        if let Some(want) = response.get("query").and_then(Value::as_array) {
            let push = sql.to_ascii_uppercase().contains("EMIT CHANGES");
            check_query(sql, want, &answer.body, push)?;
        } else if let Some(want) = response.get("admin") {
            let entity = answer.body.get(0).cloned().unwrap_or(Value::Null);
            if !contains(want, &entity) {
                return Err(format!("`{sql}` answered {entity}; expected {want}"));
            }
        }
    }

    if let Some(expected) = case.raw.get("expectedError") {
        return Err(format!("nothing failed; expected {expected}"));
    }
    if let Some(left) = expected.next() {
        return Err(format!("a response was expected but not given: {left}"));
    }
    check_outputs(engine, case).await
}

/// Compares a `/query` answer (header, rows, final message) with the expected one.
fn check_query(sql: &str, want: &[Value], got: &Value, push: bool) -> Result<(), String> {
    let got = got
        .as_array()
        .ok_or_else(|| format!("`{sql}` did not answer a JSON array: {got}"))?;
    let part = |items: &[Value], key: &str| -> Vec<Value> {
        items.iter().filter_map(|i| i.get(key).cloned()).collect()
    };
    let (want_header, got_header) = (part(want, "header"), part(got, "header"));
    let want_schema = want_header.first().map(|h| &h["schema"]);
    let got_schema = got_header.first().map(|h| &h["schema"]);
    if want_schema.is_some() && want_schema != got_schema {
        return Err(format!(
            "`{sql}`: header schema {}, expected {}",
            got_schema.cloned().unwrap_or(Value::Null),
            want_schema.cloned().unwrap_or(Value::Null)
        ));
    }
    let (want_rows, got_rows) = (part(want, "row"), part(got, "row"));
    let rows_match = want_rows.len() == got_rows.len()
        && if push {
            want_rows.iter().zip(&got_rows).all(|(w, g)| same_row(w, g))
        } else {
            let mut left: Vec<&Value> = got_rows.iter().collect();
            want_rows
                .iter()
                .all(|w| match left.iter().position(|g| same_row(w, g)) {
                    Some(at) => {
                        left.remove(at);
                        true
                    }
                    None => false,
                })
        };
    if !rows_match {
        let show = |rows: &[Value]| {
            rows.iter()
                .map(|r| r["columns"].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "`{sql}`: rows [{}], expected [{}]",
            show(&got_rows),
            show(&want_rows)
        ));
    }
    let (want_final, got_final) = (part(want, "finalMessage"), part(got, "finalMessage"));
    if want_final != got_final {
        return Err(format!(
            "`{sql}`: final message {got_final:?}, expected {want_final:?}"
        ));
    }
    let errors = part(got, "errorMessage");
    if !errors.is_empty() && part(want, "errorMessage").is_empty() {
        return Err(format!("`{sql}` ended with an error: {}", errors[0]));
    }
    Ok(())
}

fn same_row(want: &Value, got: &Value) -> bool {
    same_json(&want["columns"], &got["columns"])
        && want
            .get("tombstone")
            .is_none_or(|t| Some(t) == got.get("tombstone"))
}

/// Whether `actual` has every field `expected` gives, with the same values (recursively).
fn contains(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| contains(v, g))),
        (Value::Array(want), Value::Array(got)) => {
            want.len() == got.len() && want.iter().zip(got).all(|(w, g)| contains(w, g))
        }
        _ => same_json(expected, actual),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_responses_match_on_the_fields_given() {
        let entity = json!({"@type": "currentStatus", "commandStatus": {"status": "SUCCESS"}});
        assert!(contains(&json!({"@type": "currentStatus"}), &entity));
        assert!(contains(
            &json!({"commandStatus": {"status": "SUCCESS"}}),
            &entity
        ));
        assert!(!contains(&json!({"@type": "streams"}), &entity));
    }

    #[test]
    fn pull_rows_match_in_any_order_and_push_rows_in_order() {
        let want = vec![
            json!({"header": {"schema": "`K` STRING KEY"}}),
            json!({"row": {"columns": ["a"]}}),
            json!({"row": {"columns": ["b"]}}),
        ];
        let got = json!([
            {"header": {"queryId": "x", "schema": "`K` STRING KEY"}},
            {"row": {"columns": ["b"]}},
            {"row": {"columns": ["a"]}}
        ]);
        assert!(check_query("q", &want, &got, false).is_ok());
        assert!(check_query("q", &want, &got, true).is_err());
        let wrong_schema = json!([{"header": {"schema": "`K` STRING"}}]);
        assert!(check_query("q", &want[..1], &wrong_schema, false).is_err());
    }
}
