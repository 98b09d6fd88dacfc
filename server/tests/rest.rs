//! The ksqlDB REST API of the `eddy` binary, over plain HTTP/1.1: statements through `/ksql`,
//! their entities, errors with ksqlDB's codes, and the records an insert writes, read back by a
//! Kafka client.

use std::process::Command;

use common::{Server, exchange, ksql, request};
use serde_json::{Value, json};

mod common;

#[test]
fn statements_run_through_ksql_with_ksqldb_entities() {
    let server = common::start();
    let (status, info) = request(&server.http, "GET", "/info", None);
    assert_eq!(status, 200);
    assert_eq!(info["KsqlServerInfo"]["serverStatus"], "RUNNING");
    let (status, health) = request(&server.http, "GET", "/healthcheck", None);
    assert_eq!((status, &health["isHealthy"]), (200, &json!(true)));

    let (status, body) = ksql(
        &server,
        "CREATE STREAM orders (id INT KEY, item STRING) WITH (kafka_topic='orders', partitions=2, value_format='JSON');
         INSERT INTO orders (id, item) VALUES (7, 'apple');
         SHOW STREAMS;
         DESCRIBE orders;",
    );
    assert_eq!(status, 200, "{body}");
    let entities = body.as_array().unwrap();
    assert_eq!(entities.len(), 3, "INSERT returns no entity: {body}");
    assert_eq!(entities[0]["@type"], "currentStatus");
    assert_eq!(entities[0]["commandId"], "stream/`ORDERS`/create");
    assert_eq!(entities[0]["commandStatus"]["status"], "SUCCESS");
    assert_eq!(entities[1]["@type"], "streams");
    let names: Vec<&str> = entities[1]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["KSQL_PROCESSING_LOG", "ORDERS"]);
    assert_eq!(entities[1]["streams"][1]["valueFormat"], "JSON");
    assert_eq!(entities[2]["@type"], "sourceDescription");
    let fields = &entities[2]["sourceDescription"]["fields"];
    assert_eq!(
        fields[0],
        json!({"name": "ID", "schema": {"type": "INTEGER", "fields": null, "memberSchema": null}, "type": "KEY"})
    );
    assert_eq!(entities[2]["sourceDescription"]["partitions"], 2);

    // The inserted row is in the topic, as a Kafka client reads it.
    let out = Command::new("kcat")
        .args([
            "-b",
            &server.kafka,
            "-t",
            "orders",
            "-C",
            "-e",
            "-f",
            "%s\n",
        ])
        .output()
        .expect("kcat is needed for this test; .ci/run installs it");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"ITEM\":\"apple\"}\n"
    );
}

#[test]
fn errors_carry_ksqldb_codes_and_what_already_ran() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM a (v STRING) WITH (kafka_topic='a', partitions=1, value_format='JSON');
         CREATE STREAM b (v STRING) WITH (kafka_topic='b', partitions=1, value_format='NOPE');",
    );
    assert_eq!(status, 400);
    assert_eq!(body["@type"], "statement_error");
    assert_eq!(body["error_code"], 40001);
    assert_eq!(body["message"], "Unknown format: NOPE");
    assert!(
        body["statementText"]
            .as_str()
            .unwrap()
            .starts_with("CREATE STREAM b")
    );
    assert_eq!(body["entities"].as_array().unwrap().len(), 1);

    let (status, body) = ksql(&server, "SELECT * FROM a EMIT CHANGES;");
    assert_eq!((status, &body["error_code"]), (400, &json!(40002)));

    let (status, body) = ksql(&server, "SELECT * FROM;");
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("line 1:14: Syntax Error"),
        "{body}"
    );

    let (status, body) = request(&server.http, "POST", "/ksql", Some("{not json"));
    assert_eq!((status, &body["error_code"]), (400, &json!(40000)));
    let (status, body) = request(&server.http, "GET", "/no/such/endpoint", None);
    assert_eq!((status, &body["error_code"]), (404, &json!(40400)));
}

/// A request whose body is returned as text, chunked transfer decoded.
fn request_text(server: &Server, path: &str, body: &Value, accept: &str) -> (u16, String) {
    let body = body.to_string();
    exchange(
        &server.http,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.http,
            body.len()
        ),
    )
}

#[test]
fn pull_and_push_queries_stream_rows_over_query_and_query_stream() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM pv (id STRING KEY, page STRING, ms INT) WITH (kafka_topic='pv', partitions=1, value_format='JSON');
         INSERT INTO pv (id, page, ms) VALUES ('a', 'home', 10);
         INSERT INTO pv (id, page, ms) VALUES ('b', 'cart', 20);",
    );
    assert_eq!(status, 200, "{body}");

    // /query: a JSON array with a header, the rows and a final message; a stream's schema
    // marks no key, as in ksqlDB.
    let (status, text) = request_text(
        &server,
        "/query",
        &json!({"ksql": "SELECT * FROM pv WHERE ms > 5;"}),
        "application/vnd.ksql.v1+json",
    );
    assert_eq!(status, 200, "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        items[0]["header"]["schema"],
        "`ID` STRING, `PAGE` STRING, `MS` INTEGER"
    );
    assert_eq!(items[1], json!({"row": {"columns": ["a", "home", 10]}}));
    assert_eq!(items[2], json!({"row": {"columns": ["b", "cart", 20]}}));
    assert_eq!(items[3], json!({"finalMessage": "Query Completed"}));
    assert_eq!(items.as_array().map(Vec::len), Some(4));

    // Over a table: the latest row per key in key order, the key marked, no final message.
    let (status, body) = request(
        &server.http,
        "POST",
        "/ksql",
        Some(
            &json!({
                "ksql": "CREATE TABLE pages AS SELECT page, COUNT(*) AS n FROM pv GROUP BY page;",
                "streamsProperties": {"auto.offset.reset": "earliest"}
            })
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let mut items = Value::Null;
    for _ in 0..100 {
        let (status, text) = request_text(
            &server,
            "/query",
            &json!({"ksql": "SELECT * FROM pages;"}),
            "application/vnd.ksql.v1+json",
        );
        assert_eq!(status, 200, "{text}");
        items = serde_json::from_str(&text).unwrap();
        if items.as_array().map(Vec::len) == Some(3) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        items[0]["header"]["schema"],
        "`PAGE` STRING KEY, `N` BIGINT"
    );
    assert_eq!(items[1], json!({"row": {"columns": ["cart", 1]}}));
    assert_eq!(items[2], json!({"row": {"columns": ["home", 1]}}));
    assert_eq!(items.as_array().map(Vec::len), Some(3), "{items}");

    // /query-stream: a metadata line, then one array per row.
    let (status, text) = request_text(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT page, ms * 2 AS twice FROM pv;"}),
        "application/vnd.ksqlapi.delimited.v1",
    );
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"columnNames": ["PAGE", "TWICE"], "columnTypes": ["STRING", "INTEGER"]}),
            json!(["home", 20]),
            json!(["cart", 40]),
        ]
    );

    // A push query from the beginning, with a limit.
    let (status, text) = request_text(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT id FROM pv EMIT CHANGES LIMIT 2;", "properties": {"auto.offset.reset": "earliest"}}),
        "application/json",
    );
    assert_eq!(status, 200, "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    assert!(
        items[0]["queryId"]
            .as_str()
            .unwrap()
            .starts_with("transient_PV_")
    );
    assert_eq!(items[1], json!(["a"]));
    assert_eq!(items[2], json!(["b"]));

    // Errors come as ksqlDB's error objects.
    let (status, text) = request_text(
        &server,
        "/query",
        &json!({"ksql": "SELECT nope FROM pv;"}),
        "application/json",
    );
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error_code"], 40001);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("SELECT column 'NOPE' cannot be resolved")
    );
    let (status, _) = request_text(
        &server,
        "/close-query",
        &json!({"queryId": "no_such_query"}),
        "application/json",
    );
    assert_eq!(status, 400);
}

#[test]
fn inserts_stream_appends_rows_and_acknowledges_each() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM readings (sensor STRING KEY, temp DOUBLE, ok BOOLEAN) WITH (kafka_topic='readings', partitions=1, value_format='JSON');",
    );
    assert_eq!(status, 200, "{body}");
    let body = "{\"target\": \"readings\"}\n{\"SENSOR\": \"a\", \"TEMP\": 21.5, \"OK\": true}\n{\"sensor\": \"b\", \"nope\": 1}\nnot json\n{\"sensor\": \"c\", \"temp\": 19}\n";
    let (status, rest) = exchange(
        &server.http,
        &format!(
            "POST /inserts-stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.http,
            body.len()
        ),
    );
    assert_eq!(status, 200, "{rest}");
    let acks: Vec<Value> = rest
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(acks.len(), 4, "{rest}");
    assert_eq!(acks[0], json!({"status": "ok", "seq": 0}));
    assert_eq!(acks[1]["status"], "error");
    assert_eq!(acks[1]["message"], "Column name `nope` does not exist.");
    assert_eq!(acks[2]["status"], "error");
    assert_eq!(acks[3], json!({"status": "ok", "seq": 3}));
    // The rows are there for a pull query.
    let (status, text) = request_text(
        &server,
        "/query",
        &json!({"ksql": "SELECT sensor, temp FROM readings;"}),
        "application/json",
    );
    assert_eq!(status, 200, "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(items[1], json!({"row": {"columns": ["a", 21.5]}}));
    assert_eq!(items[2], json!({"row": {"columns": ["c", 19.0]}}));
}

#[test]
fn a_body_over_the_configured_limit_gets_ksqldbs_413() {
    let server = common::start_with(&["--max-request-bytes", "1024"]);
    let big = format!(r#"{{"ksql": "SHOW STREAMS; -- {}"}}"#, "x".repeat(4096));
    for path in ["/ksql", "/query-stream"] {
        let (status, body) = request(&server.http, "POST", path, Some(&big));
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(body["error_code"], 41300, "{path}: {body}");
        assert_eq!(body["@type"], "generic_error", "{path}: {body}");
    }
    // Under the limit, the same endpoint answers as usual.
    let (status, _) = ksql(&server, "SHOW STREAMS;");
    assert_eq!(status, 200);
}

#[test]
fn show_functions_lists_scalar_aggregate_and_table_functions() {
    let server = common::start();
    let (status, body) = ksql(&server, "SHOW FUNCTIONS;");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["@type"], "function_names");
    let functions = body[0]["functions"].as_array().unwrap();
    let kind = |name: &str| {
        functions
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["type"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(kind("UCASE").as_deref(), Some("SCALAR"));
    assert_eq!(kind("COUNT").as_deref(), Some("AGGREGATE"));
    assert_eq!(kind("EXPLODE").as_deref(), Some("TABLE"));
    assert_eq!(kind("CUBE_EXPLODE").as_deref(), Some("TABLE"));
    assert_eq!(kind("TRANSFORM").as_deref(), Some("SCALAR"));
    assert_eq!(kind("URL_EXTRACT_HOST").as_deref(), Some("SCALAR"));
    assert_eq!(kind("NO_SUCH_FUNCTION"), None);
}

/// `DESCRIBE FUNCTION` answers with ksqlDB's `describe_function` entity: each variation's
/// arguments (a variadic one by its element type, flagged) and return type; an aggregate and a
/// table function say so; a name no function has gets ksqlDB's error.
#[test]
fn describe_function_lists_each_variation_of_a_function() {
    let server = common::start();
    let (status, body) = ksql(&server, "DESCRIBE FUNCTION substring;");
    assert_eq!(status, 200, "{body}");
    let described = &body[0];
    assert_eq!(described["@type"], "describe_function", "{body}");
    assert_eq!(described["name"], "SUBSTRING");
    assert_eq!(described["type"], "SCALAR");
    assert_eq!(described["path"], "internal");
    let variations = described["functions"].as_array().unwrap();
    let shapes: Vec<String> = variations
        .iter()
        .map(|v| {
            let arguments: Vec<String> = v["arguments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    format!(
                        "{} {}",
                        a["name"].as_str().unwrap(),
                        a["type"].as_str().unwrap()
                    )
                })
                .collect();
            format!(
                "({}) -> {}",
                arguments.join(", "),
                v["returnType"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        shapes.contains(&"(str VARCHAR, pos INT, length INT) -> VARCHAR".to_string()),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&"(bytes BYTES, pos INT) -> BYTES".to_string()),
        "{shapes:?}"
    );

    let (_, body) = ksql(&server, "DESCRIBE FUNCTION CONCAT_WS;");
    let argument = &body[0]["functions"][0]["arguments"][0];
    assert_eq!(argument["type"], "VARCHAR", "{body}");
    assert_eq!(argument["isVariadic"], true, "{body}");
    let (_, body) = ksql(&server, "DESCRIBE FUNCTION TOPK;");
    assert_eq!(body[0]["type"], "AGGREGATE", "{body}");
    let (_, body) = ksql(&server, "DESCRIBE FUNCTION EXPLODE;");
    assert_eq!(body[0]["type"], "TABLE", "{body}");

    let (status, body) = ksql(&server, "DESCRIBE FUNCTION no_such_function;");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["@type"], "statement_error", "{body}");
    assert_eq!(
        body["message"], "Can't find any functions with the name 'NO_SUCH_FUNCTION'",
        "{body}"
    );
    let long = format!("DESCRIBE FUNCTION `{}`;", "\u{1F600}".repeat(5000));
    let (status, body) = ksql(&server, &long);
    assert_eq!(status, 400, "{body}");
}

/// A client may name a property as ksqlDB's config resolver accepts it: with the
/// `ksql.streams.` prefix, or a consumer property with `consumer.`; a push query asked to start
/// from `earliest` under any of those names reads what is already there.
#[test]
fn request_properties_are_read_under_every_name_ksqldb_accepts() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM pv (id STRING KEY, page STRING) WITH (kafka_topic='pv', partitions=1, value_format='JSON');
         INSERT INTO pv (id, page) VALUES ('a', 'home');",
    );
    assert_eq!(status, 200, "{body}");
    for name in [
        "ksql.streams.auto.offset.reset",
        "ksql.streams.consumer.auto.offset.reset",
        "auto.offset.reset",
    ] {
        let (status, text) = request_text(
            &server,
            "/query",
            &json!({
                "ksql": "SELECT * FROM pv EMIT CHANGES LIMIT 1;",
                "streamsProperties": {name: "earliest"}
            }),
            "application/vnd.ksql.v1+json",
        );
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains(r#"["a","home"]"#), "{name}: {text}");
    }
}

/// ksqlDB's Java client speaks HTTP/2 with prior knowledge over plaintext; the same port serves
/// it next to HTTP/1.1, push queries included.
#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    let server = common::start();
    eddy_security::tls::install_default_provider();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let base = format!("http://{}", server.http);
    let info = client.get(format!("{base}/info")).send().await.unwrap();
    assert_eq!(info.version(), reqwest::Version::HTTP_2);
    let body: Value = serde_json::from_str(&info.text().await.unwrap()).unwrap();
    assert_eq!(body["KsqlServerInfo"]["serverStatus"], "RUNNING");

    let created = client
        .post(format!("{base}/ksql"))
        .header("content-type", "application/vnd.ksql.v1+json")
        .body(
            json!({"ksql": "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON'); INSERT INTO s (id, v) VALUES (1, 'a');"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let mut push = client
        .post(format!("{base}/query-stream"))
        .body(
            json!({"sql": "SELECT * FROM s EMIT CHANGES LIMIT 2;", "properties": {"auto.offset.reset": "earliest"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(push.version(), reqwest::Version::HTTP_2);
    // The first row arrives while the query is still running; the second is inserted after.
    let mut text = String::new();
    while text.lines().count() < 2 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), push.chunk())
            .await
            .expect("the first row did not arrive")
            .unwrap()
            .expect("the answer ended early");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    client
        .post(format!("{base}/ksql"))
        .header("content-type", "application/vnd.ksql.v1+json")
        .body(json!({"ksql": "INSERT INTO s (id, v) VALUES (2, 'b');"}).to_string())
        .send()
        .await
        .unwrap();
    while let Some(chunk) = push.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows, vec![r#"[1,"a"]"#, r#"[2,"b"]"#], "{text}");
}

#[test]
fn status_reports_each_command_by_its_id() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM orders (id INT KEY, item STRING) WITH (kafka_topic='orders', partitions=1, value_format='JSON');",
    );
    assert_eq!(status, 200, "{body}");
    let (status, all) = request(&server.http, "GET", "/status", None);
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["commandStatuses"]["stream/`ORDERS`/create"], "SUCCESS");
    for path in [
        "/status/stream/ORDERS/create",
        "/status/stream/%60ORDERS%60/create",
    ] {
        let (status, one) = request(&server.http, "GET", path, None);
        assert_eq!(status, 200, "{path}: {one}");
        assert_eq!(one["status"], "SUCCESS");
        assert_eq!(one["message"], "Stream created");
    }
    let (status, missing) = request(&server.http, "GET", "/status/stream/NOPE/create", None);
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error_code"], 40400);
}

/// ksqlDB's WebSocket endpoint: the columns, then rows as they arrive, then a close frame with
/// the final message; a bad statement closes with its error.
#[tokio::test]
async fn ws_query_streams_rows_and_closes_with_the_final_message() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');
         INSERT INTO s (id, v) VALUES (1, 'a');",
    );
    assert_eq!(status, 200, "{body}");
    let url = |sql: &str| {
        let request = json!({"ksql": sql, "streamsProperties": {"auto.offset.reset": "earliest"}});
        reqwest::Url::parse_with_params(
            &format!("ws://{}/ws/query", server.http),
            [("request", request.to_string())],
        )
        .unwrap()
        .to_string()
    };
    let (mut socket, _) =
        tokio_tungstenite::connect_async(url("SELECT * FROM s EMIT CHANGES LIMIT 2;"))
            .await
            .unwrap();
    let mut next = async || -> Message {
        tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s")
            .expect("the socket ended")
            .unwrap()
    };
    let columns: Value = serde_json::from_str(next().await.to_text().unwrap()).unwrap();
    assert_eq!(columns[0]["name"], "ID");
    assert_eq!(columns[1]["schema"]["type"], "STRING");
    let first: Value = serde_json::from_str(next().await.to_text().unwrap()).unwrap();
    assert_eq!(first, json!({"row": {"columns": [1, "a"]}}));
    ksql(&server, "INSERT INTO s (id, v) VALUES (2, 'b');");
    let second: Value = serde_json::from_str(next().await.to_text().unwrap()).unwrap();
    assert_eq!(second, json!({"row": {"columns": [2, "b"]}}));
    match next().await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1000);
            assert_eq!(frame.reason.as_str(), "Limit Reached");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    let (mut socket, _) =
        tokio_tungstenite::connect_async(url("SELECT * FROM nowhere EMIT CHANGES;"))
            .await
            .unwrap();
    let mut saw_error = false;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Text(text) => {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    body["message"].as_str().unwrap().contains("NOWHERE"),
                    "{body}"
                );
                saw_error = true;
            }
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1003);
                break;
            }
            _ => {}
        }
    }
    assert!(saw_error);
    let _ = socket.close(None).await;
}

#[test]
fn dashboards_are_saved_checked_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let dashboard = r#"{"title": "Ops", "panels": [{"title": "Lag", "sql": "SELECT * FROM t EMIT CHANGES;", "chart": "line", "series": "PAGE"}]}"#;
    let (status, saved) = request(&server.http, "PUT", "/api/dashboards/ops", Some(dashboard));
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["id"], "ops");
    assert!(saved["updatedMs"].as_i64().unwrap() > 0);
    // Checked before saving: an unknown chart, an id mismatch, no SQL.
    let (status, error) = request(
        &server.http,
        "PUT",
        "/api/dashboards/ops",
        Some(r#"{"title": "Ops", "panels": [{"title": "x", "sql": "SELECT 1;", "chart": "pie"}]}"#),
    );
    assert_eq!((status, error["error_code"].as_i64()), (400, Some(40000)));
    assert!(
        error["message"].as_str().unwrap().contains("pie"),
        "{error}"
    );
    let (status, error) = request(
        &server.http,
        "PUT",
        "/api/dashboards/other",
        Some(r#"{"id": "ops", "title": "Ops"}"#),
    );
    assert_eq!(status, 400);
    assert!(
        error["message"].as_str().unwrap().contains("differs"),
        "{error}"
    );
    drop(server);

    let server = common::start_in(&data, &[]);
    let (status, listed) = request(&server.http, "GET", "/api/dashboards", None);
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["panels"][0]["series"], "PAGE");
    let (status, _) = request(&server.http, "DELETE", "/api/dashboards/ops", None);
    assert_eq!(status, 204);
    let (status, error) = request(&server.http, "GET", "/api/dashboards/ops", None);
    assert_eq!((status, error["error_code"].as_i64()), (404, Some(40400)));
}

#[test]
fn the_console_and_its_assets_are_served_from_the_binary() {
    let server = common::start();
    for (path, marker) in [
        ("/", "<!doctype html>"),
        ("/console/app.js", "const Dashboards"),
        ("/console/charts.js", "const Charts"),
        ("/console/app.css", ":root"),
    ] {
        let (status, body) = common::exchange(
            &server.http,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(marker), "{path}");
    }
    let (status, _) = common::exchange(
        &server.http,
        "GET /console/missing.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
}

/// With `Accept: application/vnd.ksql.v1+protobuf`, `/query` and `/query-stream` answer as
/// ksqlDB does: the header carries the rows' `.proto` schema and each row is the base64 of a
/// message of it, here decoded with a schema compiled from that text.
#[test]
fn protobuf_rows_come_with_their_schema() {
    use base64::Engine as _;
    use prost_reflect::{DynamicMessage, Value as Proto};

    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE TABLE currentLocation (profileId STRING PRIMARY KEY, la DOUBLE, lo DOUBLE)
             WITH (kafka_topic='locations', partitions=1, value_format='JSON');
         INSERT INTO currentLocation (profileId, la, lo) VALUES ('18f4ea86', 37.3903, -122.0643);
         INSERT INTO currentLocation (profileId, la, lo) VALUES ('4ab5cbad', 37.3952, -122.0813);
         CREATE STREAM events (id STRING KEY, tags ARRAY<STRING>, at TIMESTAMP, amount DECIMAL(6, 2), nested STRUCT<a INT>)
             WITH (kafka_topic='events', partitions=1, value_format='JSON');
         INSERT INTO events (id, tags, at, amount, nested) VALUES ('e1', ARRAY['x', 'y'], FROM_UNIXTIME(1000), 12.5, STRUCT(a := 7));",
    );
    assert_eq!(status, 200, "{body}");
    let accept = "application/vnd.ksql.v1+protobuf";
    let mut items = Value::Null;
    for _ in 0..100 {
        let (status, text) = request_text(
            &server,
            "/query",
            &json!({"ksql": "SELECT * FROM currentLocation;"}),
            accept,
        );
        assert_eq!(status, 200, "{text}");
        items = serde_json::from_str(&text).unwrap();
        if items.as_array().map(Vec::len) == Some(3) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // ksqlDB's documentation shows this header and this first row for the same table.
    assert_eq!(
        items[0]["header"]["protoSchema"],
        "syntax = \"proto3\";\n\nmessage ConnectDefault1 {\n  string PROFILEID = 1;\n  double LA = 2;\n  double LO = 3;\n}\n"
    );
    assert_eq!(
        items[0]["header"]["schema"],
        "`PROFILEID` STRING KEY, `LA` DOUBLE, `LO` DOUBLE"
    );
    assert_eq!(
        items[1],
        json!({"row": {"protobufBytes": "CggxOGY0ZWE4NhF90LNZ9bFCQBmASL99HYRewA=="}})
    );

    // Every type, over /query-stream, read with the schema the header sends.
    let (status, text) = request_text(
        &server,
        "/query-stream",
        &json!({"sql": "SELECT * FROM events EMIT CHANGES LIMIT 1;", "properties": {"auto.offset.reset": "earliest"}}),
        accept,
    );
    assert_eq!(status, 200, "{text}");
    let items: Value = serde_json::from_str(&text).unwrap();
    let schema = items[0]["header"]["protoSchema"].as_str().unwrap();
    let compiled = eddy_registry::protobuf::compile(schema, &[]).unwrap();
    let message = compiled.messages()[0].clone();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(items[1]["row"]["protobufBytes"].as_str().unwrap())
        .unwrap();
    let row = DynamicMessage::decode(message, bytes.as_slice()).unwrap();
    assert_eq!(row.get_field_by_name("ID").unwrap().as_str(), Some("e1"));
    let tags = row.get_field_by_name("TAGS").unwrap();
    assert_eq!(
        tags.as_list().unwrap(),
        &[Proto::String("x".into()), Proto::String("y".into())]
    );
    let at = row.get_field_by_name("AT").unwrap();
    let at = at.as_message().unwrap();
    assert_eq!(at.get_field_by_name("seconds").unwrap().as_i64(), Some(1));
    let amount = row.get_field_by_name("AMOUNT").unwrap();
    let amount = amount.as_message().unwrap();
    // Confluent's decimal: the unscaled value 1250 as big-endian bytes, scale 2.
    assert_eq!(
        amount
            .get_field_by_name("value")
            .unwrap()
            .as_bytes()
            .map(|b| b.to_vec()),
        Some(vec![0x04, 0xe2])
    );
    let nested = row.get_field_by_name("NESTED").unwrap();
    let nested = nested.as_message().unwrap();
    assert_eq!(nested.get_field_by_name("A").unwrap().as_i32(), Some(7));
    assert_eq!(items[2], json!({"finalMessage": "Limit Reached"}));

    // Rows Protobuf cannot hold are refused before any is sent.
    let (status, text) = request_text(
        &server,
        "/query",
        &json!({"ksql": "SELECT ARRAY[tags] AS nested FROM events EMIT CHANGES LIMIT 1;"}),
        accept,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("cannot be written as PROTOBUF"), "{text}");
}

/// `PRINT` over `/query` (with ksqlDB's format lines) and `/query-stream` (records only): the
/// formats are told from the records, registry formats included, and a live `PRINT` sees
/// records appended after it started.
#[test]
fn print_shows_records_in_the_formats_they_turn_out_to_be_in() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM pv (id STRING KEY, page STRING, ms INT) WITH (kafka_topic='pv', partitions=1, value_format='JSON');
         INSERT INTO pv (id, page, ms) VALUES ('a', 'home', 10);
         INSERT INTO pv (id, page, ms) VALUES ('b', 'cart', 20);
         CREATE STREAM av (id STRING KEY, page STRING, ms INT) WITH (kafka_topic='av', partitions=1, value_format='AVRO');
         INSERT INTO av (id, page, ms) VALUES ('c', 'home', 30);",
    );
    assert_eq!(status, 200, "{body}");
    let print = |path: &str, sql: &str, accept: &str| {
        let body = if path == "/query" {
            json!({"ksql": sql})
        } else {
            json!({"sql": sql})
        };
        request_text(&server, path, &body, accept)
    };
    let delimited = "application/vnd.ksqlapi.delimited.v1";
    let (status, text) = print("/query", "PRINT 'pv' FROM BEGINNING LIMIT 2;", delimited);
    assert_eq!(status, 200, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "Key format: KAFKA_STRING",
            "Value format: JSON or KAFKA_STRING"
        ]
    );
    let record = |line: &str| -> (String, String) {
        // rowtime: 2026/12/03 23:00:00.000 Z, key: a, value: {...}, partition: 0
        let rest = line.strip_prefix("rowtime: ").expect(line);
        let (time, rest) = rest.split_once(", key: ").expect(line);
        assert_eq!(time.len(), "2026/12/03 23:00:00.000 Z".len(), "{line}");
        let (rest, partition) = rest.rsplit_once(", partition: ").expect(line);
        assert_eq!(partition, "0");
        let (key, value) = rest.split_once(", value: ").expect(line);
        (key.to_string(), value.to_string())
    };
    assert_eq!(
        record(lines[2]),
        ("a".to_string(), r#"{"PAGE":"home","MS":10}"#.to_string())
    );
    assert_eq!(record(lines[3]).0, "b");
    assert_eq!(lines.len(), 4, "{text}");

    // /query-stream: the records only; any other answer format is refused.
    let (status, body) = ksql(
        &server,
        "INSERT INTO pv (id, page, ms) VALUES ('c', 'home', 30);",
    );
    assert_eq!(status, 200, "{body}");
    let (status, text) = print(
        "/query-stream",
        "PRINT pv FROM BEGINNING INTERVAL 2 LIMIT 2;",
        delimited,
    );
    assert_eq!(status, 200, "{text}");
    let keys: Vec<String> = text.lines().map(|l| record(l).0).collect();
    assert_eq!(keys, ["a", "c"], "every second record: {text}");
    let (status, _) = print(
        "/query-stream",
        "PRINT pv FROM BEGINNING;",
        "application/json",
    );
    assert_eq!(status, 406);

    // A registry format is read with the schema its id names.
    let (status, text) = print("/query", "PRINT av FROM BEGINNING LIMIT 1;", delimited);
    assert_eq!(status, 200, "{text}");
    // The Avro bytes of this record happen to be UTF-8 too.
    assert!(
        text.contains("Value format: AVRO or KAFKA_STRING\n"),
        "{text}"
    );
    let last = text.lines().last().unwrap();
    assert_eq!(
        record(last),
        ("c".to_string(), r#"{"PAGE": "home", "MS": 30}"#.to_string())
    );

    // A topic that is not there, and one named in another case.
    let (status, text) = print("/query", "PRINT 'PV';", delimited);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Could not find topic 'PV'"), "{text}");
    assert!(text.contains("print 'pv';"), "{text}");

    // Without FROM BEGINNING, only what comes after.
    std::thread::scope(|scope| {
        let live = scope.spawn(|| print("/query-stream", "PRINT pv LIMIT 1;", delimited));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let (status, body) = ksql(
            &server,
            "INSERT INTO pv (id, page, ms) VALUES ('z', 'new', 1);",
        );
        assert_eq!(status, 200, "{body}");
        let (status, text) = live.join().unwrap();
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            record(text.lines().next().unwrap()),
            ("z".to_string(), r#"{"PAGE":"new","MS":1}"#.to_string())
        );
    });
}
