//! The schema registry on its own listener, as Confluent's clients call it: registering,
//! looking up, versions, levels and compatibility, Confluent's error codes for what it refuses,
//! and everything back after a restart.

mod common;

use common::{exchange, request};
use serde_json::{Value, json};

const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"qty","type":"int"}]}"#;

fn body(schema: &str) -> String {
    json!({ "schema": schema }).to_string()
}

/// Posts a body of `len` bytes while reading the answer on another thread: the server answers
/// 413 before the body is all sent and closes, so the write may fail (and the answer must be
/// read as it comes, not after the write).
fn post_oversized(address: &str, path: &str, len: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        let mut result = writer.write_all(head.as_bytes());
        while result.is_ok() && sent < len {
            let n = chunk.len().min(len - sent);
            result = writer.write_all(&chunk[..n]);
            sent += n;
        }
    });
    // A reset after the answer ends the read with an error, but the answer is in.
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    sender.join().unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn post(address: &str, path: &str, payload: &str) -> (u16, Value) {
    request(address, "POST", path, Some(payload))
}

#[test]
fn confluent_clients_register_look_up_and_evolve_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::start_in(&data, &[]);
    let registry = server.registry.clone();

    let (status, types) = request(&registry, "GET", "/schemas/types", None);
    assert_eq!((status, types), (200, json!(["AVRO", "JSON", "PROTOBUF"])));
    let raw = exchange(
        &registry,
        &format!("GET /config HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(raw.0, 200);

    let (status, first) = post(&registry, "/subjects/orders-value/versions", &body(V1));
    assert_eq!((status, &first), (200, &json!({"id": 1})));
    let (_, again) = post(&registry, "/subjects/orders-value/versions", &body(V1));
    assert_eq!(again, first, "registering it again gives the same id");
    let (status, second) = post(&registry, "/subjects/orders-value/versions", &body(V2));
    assert_eq!((status, &second), (200, &json!({"id": 2})));

    let (status, refused) = post(&registry, "/subjects/orders-value/versions", &body(BREAKS));
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error_code"], 409);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("incompatible"),
        "{refused}"
    );
    let (_, verdict) = post(
        &registry,
        "/compatibility/subjects/orders-value/versions/latest?verbose=true",
        &body(BREAKS),
    );
    assert_eq!(verdict["is_compatible"], false, "{verdict}");
    assert_eq!(
        verdict["messages"].as_array().unwrap().len(),
        1,
        "{verdict}"
    );

    let (_, by_id) = request(&registry, "GET", "/schemas/ids/1", None);
    assert!(
        by_id["schema"].as_str().unwrap().contains("Order"),
        "{by_id}"
    );
    assert!(
        by_id.get("schemaType").is_none(),
        "Avro is the default: {by_id}"
    );
    for path in [
        "/schemas/ids/1/schema",
        "/subjects/orders-value/versions/1/schema",
    ] {
        let (status, text) = request(&registry, "GET", path, None);
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(
            text["name"], "Order",
            "{path}: the schema's text alone: {text}"
        );
        assert_eq!(
            text["fields"].as_array().unwrap().len(),
            1,
            "{path}: {text}"
        );
    }
    let (status, missing) = request(&registry, "GET", "/schemas/ids/99/schema", None);
    assert_eq!((status, missing["error_code"].clone()), (404, json!(40403)));
    let (_, latest) = request(
        &registry,
        "GET",
        "/subjects/orders-value/versions/latest",
        None,
    );
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["id"], 2);
    let (status, missing) = post(&registry, "/subjects/orders-value", &body(BREAKS));
    assert_eq!(status, 404, "{missing}");
    assert_eq!(
        missing,
        json!({"error_code": 40403, "message": "Schema not found"})
    );
    let (_, found) = post(&registry, "/subjects/orders-value", &body(V1));
    assert_eq!(
        (found["version"].clone(), found["id"].clone()),
        (json!(1), json!(1))
    );
    let (_, subjects) = request(&registry, "GET", "/subjects", None);
    assert_eq!(subjects, json!(["orders-value"]));

    let (status, level) = request(
        &registry,
        "PUT",
        "/config/orders-value",
        Some(r#"{"compatibility": "none"}"#),
    );
    assert_eq!((status, level), (200, json!({"compatibility": "NONE"})));
    let (status, _) = post(&registry, "/subjects/orders-value/versions", &body(BREAKS));
    assert_eq!(status, 200);
    let (_, global) = request(&registry, "GET", "/config", None);
    assert_eq!(global, json!({"compatibilityLevel": "BACKWARD"}));

    drop(server);
    let server = common::start_in(&data, &[]);
    let (_, versions) = request(
        &server.registry,
        "GET",
        "/subjects/orders-value/versions",
        None,
    );
    assert_eq!(
        versions,
        json!([1, 2, 3]),
        "the registry survives a restart"
    );
    let (_, level) = request(&server.registry, "GET", "/config/orders-value", None);
    assert_eq!(level, json!({"compatibilityLevel": "NONE"}));
    // Its log is a topic Kafka clients can see, which they may not write.
    let (_, topics) = common::ksql(&server, "SHOW ALL TOPICS;");
    assert!(topics.to_string().contains("__eddy_schemas"), "{topics}");
}

#[test]
fn what_the_registry_refuses_gets_confluents_codes() {
    let server = common::start();
    let registry = &server.registry;
    let cases: &[(&str, &str, Option<String>, u16, u32)] = &[
        ("GET", "/schemas/ids/7", None, 404, 40403),
        ("GET", "/schemas/ids/not-a-number", None, 404, 40403),
        ("GET", "/subjects/nothing/versions", None, 404, 40401),
        ("GET", "/subjects/nothing/versions/abc", None, 422, 42202),
        ("GET", "/subjects/nothing/versions/0", None, 422, 42202),
        ("GET", "/config/nothing", None, 404, 40408),
        (
            "POST",
            "/subjects/s/versions",
            Some("not json".into()),
            422,
            422,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(body(r#"{"type": "record"}"#)),
            422,
            42201,
        ),
        ("POST", "/subjects/s/versions", Some(body("{")), 422, 42201),
        (
            "POST",
            "/subjects/s/versions",
            Some(json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}).to_string()),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(json!({"schema": V1, "schemaType": "XML"}).to_string()),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(json!({"schema": "[1, 2]", "schemaType": "JSON"}).to_string()),
            422,
            42201,
        ),
        // JSON that is not a JSON Schema: a type no draft has, deep inside.
        (
            "POST",
            "/subjects/s/versions",
            Some(
                json!({"schema": r#"{"type": "object", "properties": {"a": {"type": "text"}}}"#,
                       "schemaType": "JSON"})
                .to_string(),
            ),
            422,
            42201,
        ),
        (
            "PUT",
            "/config",
            Some(r#"{"compatibility": "sideways"}"#.into()),
            422,
            42203,
        ),
        ("DELETE", "/subjects/nothing", None, 404, 40401),
        (
            "PUT",
            "/mode",
            Some(r#"{"mode": "SIDEWAYS"}"#.into()),
            422,
            42204,
        ),
        ("GET", "/mode/nothing", None, 404, 40409),
        (
            "POST",
            "/subjects/s/versions",
            Some(json!({"schema": V1, "id": 5}).to_string()),
            422,
            42205,
        ),
        (
            "POST",
            "/subjects/s/versions",
            Some(json!({"schema": V1, "id": -7}).to_string()),
            422,
            422,
        ),
        ("GET", "/no/such/path", None, 404, 404),
    ];
    for (method, path, payload, status, code) in cases {
        let (got, answer) = request(registry, method, path, payload.as_deref());
        assert_eq!(got, *status, "{method} {path}: {answer}");
        assert_eq!(answer["error_code"], *code, "{method} {path}: {answer}");
        assert!(answer["message"].is_string(), "{method} {path}: {answer}");
    }
    // A body over the limit (--max-request-bytes, 10 MiB by default, as for the REST API), and
    // a deeply nested one, get an answer and the server lives on.
    let (status, answer) = post_oversized(registry, "/subjects/s/versions", 11 << 20);
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains(r#""error_code":413"#), "{answer}");
    let deep = body(&format!(
        "{}\"string\"{}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    ));
    let (status, answer) = post(registry, "/subjects/s/versions", &deep);
    assert_eq!(
        (status, answer["error_code"].clone()),
        (422, json!(42201)),
        "{answer}"
    );
    let (status, _) = request(registry, "GET", "/subjects", None);
    assert_eq!(status, 200);
}

/// Request bodies on the registry's listener count against the same memory budget as the REST
/// API's: while slow REST uploads fill it, a registration waits, then gets 503 in Confluent's
/// shape; once they are gone, it is served.
#[test]
fn the_registry_shares_the_request_memory_budget() {
    use std::io::Write;
    let server = common::start_with(&[
        "--max-request-bytes",
        "1024",
        "--request-memory-bytes",
        "4096",
    ]);
    let head = |address: &str, path: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        )
    };
    let slow: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&server.http).unwrap();
            stream
                .write_all(head(&server.http, "/ksql", 1024).as_bytes())
                .unwrap();
            stream.write_all(b"{").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let payload = body(V1);
    let registration = format!(
        "{}{payload}",
        head(&server.registry, "/subjects/s/versions", payload.len())
    );
    let started = std::time::Instant::now();
    let (status, answer) = exchange(&server.registry, &registration);
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("50301"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    drop(slow);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, answer) = exchange(&server.registry, &registration);
    assert_eq!(status, 200, "{answer}");
}

/// A migration from another registry keeps its ids: in IMPORT mode a registration names its id
/// and version, and Confluent's deserializers then find the schema under that id.
#[test]
fn import_mode_registers_schemas_at_the_ids_they_had() {
    let server = common::start();
    let registry = &server.registry;
    let put = |path: &str, payload: &str| request(registry, "PUT", path, Some(payload));

    assert_eq!(
        request(registry, "GET", "/mode", None),
        (200, json!({"mode": "READWRITE"}))
    );
    assert_eq!(
        put("/mode/orders-value", r#"{"mode": "IMPORT"}"#),
        (200, json!({"mode": "IMPORT"}))
    );
    let imported = json!({"schema": V1, "id": 4321, "version": 7}).to_string();
    assert_eq!(
        post(registry, "/subjects/orders-value/versions", &imported),
        (200, json!({"id": 4321}))
    );
    let (status, by_id) = request(registry, "GET", "/schemas/ids/4321", None);
    assert_eq!(status, 200, "{by_id}");
    let stored: Value = serde_json::from_str(by_id["schema"].as_str().unwrap()).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(V1).unwrap());
    let (status, version) = request(registry, "GET", "/subjects/orders-value/versions/7", None);
    assert_eq!((status, version["id"].clone()), (200, json!(4321)));
    // Without an id, IMPORT mode refuses; back in READWRITE, ids continue past the import.
    let (status, refused) = post(registry, "/subjects/orders-value/versions", &body(V2));
    assert_eq!((status, refused["error_code"].clone()), (422, json!(42205)));
    assert_eq!(
        request(registry, "DELETE", "/mode/orders-value", None),
        (200, json!({"mode": "IMPORT"}))
    );
    assert_eq!(
        post(registry, "/subjects/orders-value/versions", &body(V2)),
        (200, json!({"id": 4322}))
    );
    // IMPORT for the whole registry needs it empty, or force.
    let (status, busy) = put("/mode", r#"{"mode": "IMPORT"}"#);
    assert_eq!((status, busy["error_code"].clone()), (422, json!(42205)));
    assert_eq!(
        put("/mode?force=true", r#"{"mode": "READONLY"}"#),
        (200, json!({"mode": "READONLY"}))
    );
    let (status, frozen) = post(registry, "/subjects/other-value/versions", &body(V1));
    assert_eq!(
        (status, frozen["message"].clone()),
        (422, json!("Subject other-value is in read-only mode"))
    );
}
