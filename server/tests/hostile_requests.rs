//! Requests an attacker or a careless script would send to a real `eddy`: each gets a clear
//! error, and the server goes on serving with its memory where it was.

mod common;

use common::{exchange, ksql, request};
use serde_json::json;

/// The server still answers, so the request before did not take it down.
fn assert_alive(server: &common::Server) {
    let (status, info) = request(&server.http, "GET", "/info", None);
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["KsqlServerInfo"]["serverStatus"], "RUNNING");
}

/// A statement of 300,000 chained additions (600 KB, under the body limit) is refused as
/// too deep to plan rather than overflowing the stack; 900 alternatives in a `WHERE` and a
/// sum of 990 terms are planned and run.
#[test]
fn a_long_operator_chain_is_refused_and_a_reasonable_one_runs() {
    let server = common::start();
    let sql = format!("SELECT 1{} FROM s EMIT CHANGES;", "+1".repeat(300_000));
    let (status, body) = ksql(&server, &sql);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_code"], 40001);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("line 1:2008: Syntax Error") && message.contains("too deep"),
        "{message}"
    );
    assert_alive(&server);

    let alternatives: Vec<String> = (0..900).map(|i| format!("id = {i}")).collect();
    let (status, body) = ksql(
        &server,
        &format!(
            "CREATE STREAM clicks (id INT KEY, page STRING) WITH (kafka_topic='clicks', partitions=1, value_format='JSON');
             CREATE STREAM picked AS SELECT id, page || '!' AS page, id{} AS n FROM clicks WHERE {};
             INSERT INTO clicks (id, page) VALUES (899, 'last');
             INSERT INTO clicks (id, page) VALUES (900, 'none');",
            " + 1".repeat(990),
            alternatives.join(" OR ")
        ),
    );
    assert_eq!(status, 200, "{body}");
    // A push query from the start: the first row through the filter, then the limit ends it.
    let (status, text) = request(
        &server.http,
        "POST",
        "/query-stream",
        Some(
            &json!({
                "sql": "SELECT * FROM picked EMIT CHANGES LIMIT 1;",
                "properties": {"auto.offset.reset": "earliest"}
            })
            .to_string(),
        ),
    );
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap_or_default().to_string();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows, [json!([899, "last!", 1889])]);
}

/// Values whose size a statement chooses: past 1 MiB they are row errors, not allocations.
#[test]
fn functions_cannot_be_asked_to_build_terabytes() {
    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM s (k STRING KEY, v STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');",
    );
    assert_eq!(status, 200, "{body}");
    for value in [
        "LPAD('a', 1000000000000, 'x')",
        "RPAD('a', 1000000000000, 'x')",
        "CAST(GENERATE_SERIES(1, 9000000000000000000) AS STRING)",
    ] {
        let (status, body) = ksql(
            &server,
            &format!("INSERT INTO s (k, v) VALUES ('a', {value});"),
        );
        assert_eq!(status, 400, "{value}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("the most a function may build is 1048576"),
            "{value}: {body}"
        );
        assert_alive(&server);
    }
}

/// Made-up HTTP methods are counted under one `other` label, so a client cannot grow
/// `/metrics` without bound by inventing them.
#[test]
fn invented_http_methods_do_not_grow_the_metrics() {
    let server = common::start();
    let scrape = || {
        exchange(
            &server.http,
            &format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.http
            ),
        )
        .1
    };
    for i in 0..200 {
        let _ = exchange(
            &server.http,
            &format!(
                "M{i}X /info HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.http
            ),
        );
    }
    let metrics = scrape();
    assert!(!metrics.contains("M17X"), "{metrics}");
    let other = metrics
        .lines()
        .filter(|l| l.starts_with("eddy_http_requests_total{") && l.contains("method=\"other\""))
        .count();
    assert!(other >= 1, "{metrics}");
    assert!(metrics.len() < 64 * 1024, "{} bytes", metrics.len());
}

/// A raw request with the given extra header lines; the status and body.
fn with_headers(server: &common::Server, head: &str, body: &str) -> (u16, String) {
    exchange(
        &server.http,
        &format!(
            "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A web page on another site cannot use Eddy through the visitor's browser: a WebSocket or a
/// request from a foreign Origin is refused, a name re-pointed at 127.0.0.1 (DNS rebinding)
/// is not served, and a `text/plain` body, which a form can post without CORS, is not accepted
/// where state changes. Eddy's own pages, and non-browser clients, go on working.
#[test]
fn web_pages_from_elsewhere_cannot_read_or_change_data() {
    let server = common::start();
    let host = &server.http;
    let (status, body) = ksql(
        &server,
        "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) WITH (kafka_topic='users', partitions=1, value_format='JSON');",
    );
    assert_eq!(status, 200, "{body}");

    let socket = "GET /ws/query?request=%7B%22sql%22%3A%22SELECT%20*%20FROM%20users%3B%22%7D HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";
    let (status, body) = with_headers(
        &server,
        &format!("{socket}\r\nHost: {host}\r\nOrigin: https://evil.example"),
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("40300") && body.contains("https://evil.example"),
        "{body}"
    );

    let statement = r#"{"ksql": "DROP TABLE users;"}"#;
    let (status, body) = with_headers(
        &server,
        &format!(
            "POST /ksql HTTP/1.1\r\nHost: {host}\r\nOrigin: null\r\nContent-Type: application/json"
        ),
        statement,
    );
    assert_eq!(status, 403, "{body}");

    let (status, body) = with_headers(
        &server,
        "GET /info HTTP/1.1\r\nHost: rebound.example:8088",
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("--http-allowed-hosts rebound.example"),
        "{body}"
    );

    let (status, body) = with_headers(
        &server,
        &format!("POST /ksql HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain;charset=UTF-8"),
        statement,
    );
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("41500"), "{body}");

    // The table is still there, and the server's own page may use the API.
    let (status, body) = with_headers(
        &server,
        &format!(
            "POST /ksql HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nContent-Type: application/json"
        ),
        r#"{"ksql": "DESCRIBE users;"}"#,
    );
    assert_eq!(status, 200, "{body}");
}

/// Origins named in --http-allowed-origins are served with CORS, so a dashboard on another
/// site can read answers; others still are not.
#[test]
fn listed_origins_get_cors_answers() {
    let server = common::start_with(&["--http-allowed-origins", "https://dash.example"]);
    let host = &server.http;
    let (status, _) = with_headers(
        &server,
        &format!(
            "OPTIONS /ksql HTTP/1.1\r\nHost: {host}\r\nOrigin: https://dash.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type"
        ),
        "",
    );
    assert_eq!(status, 200);
    let body = r#"{"ksql": "SHOW TOPICS;"}"#;
    let raw = format!(
        "POST /ksql HTTP/1.1\r\nHost: {host}\r\nOrigin: https://dash.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: https://dash.example"),
        "{response}"
    );
    let (status, _) = with_headers(
        &server,
        &format!("GET /info HTTP/1.1\r\nHost: {host}\r\nOrigin: https://other.example"),
        "",
    );
    assert_eq!(status, 403);
}

/// A `/ws/query` client has nothing to send but a close or a ping: a 1 MiB message ends its
/// query instead of being buffered (the WebSocket library's default would take 64 MiB).
#[tokio::test]
async fn a_websocket_client_cannot_make_the_server_buffer_large_messages() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = common::start();
    let (status, body) = ksql(
        &server,
        "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', partitions=1, value_format='JSON');",
    );
    assert_eq!(status, 200, "{body}");
    let request = json!({"ksql": "SELECT * FROM s EMIT CHANGES;"});
    let url = reqwest::Url::parse_with_params(
        &format!("ws://{}/ws/query", server.http),
        [("request", request.to_string())],
    )
    .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let columns = socket.next().await.unwrap().unwrap();
    assert!(columns.to_text().unwrap().contains("ID"));
    let _ = socket.send(Message::Text("x".repeat(1 << 20).into())).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server kept the socket open");
    // The query it ran is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, queries) = ksql(&server, "SHOW QUERIES;");
        if queries[0]["queries"]
            .as_array()
            .is_some_and(|q| q.is_empty())
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{queries}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_alive(&server);
}

/// Slow clients that announce bodies and send them a byte at a time hold their body's size of
/// the request memory; once it is full, the next body waits up to 5 s and gets 503, while a
/// request without a body is still served. When the slow clients go, bodies are accepted again.
#[test]
fn slow_bodies_fill_the_request_memory_and_further_bodies_get_503() {
    use std::io::Write;
    let server = common::start_with(&[
        "--max-request-bytes",
        "1024",
        "--request-memory-bytes",
        "4096",
    ]);
    let head = |length: usize| {
        format!(
            "POST /ksql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
            server.http
        )
    };
    let slow: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&server.http).unwrap();
            stream.write_all(head(1024).as_bytes()).unwrap();
            stream.write_all(b"{").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_alive(&server);
    let started = std::time::Instant::now();
    let body = r#"{"ksql": "SHOW STREAMS;"}"#;
    let (status, answer) = exchange(&server.http, &format!("{}{body}", head(body.len())));
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("50300"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    drop(slow);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, answer) = exchange(&server.http, &format!("{}{body}", head(body.len())));
    assert_eq!(status, 200, "{answer}");
}
