//! The JSON_SR format end to end: JSON behind Confluent's framing, columns inferred from a
//! registered JSON Schema in its property order, a sink registering ksqlDB's Connect schema,
//! and payloads without the magic byte in the processing log.

use eddy_registry::{SchemaRequest, SchemaType, VersionSpec};
use eddy_storage::Record;

mod common;

fn framed(id: u32, json: &str) -> Record {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(json.as_bytes());
    Record {
        key: None,
        value: Some(bytes.into()),
        timestamp: 10,
        headers: Vec::new(),
    }
}

#[tokio::test]
async fn json_schema_records_are_inferred_read_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open_engine(dir.path()).await;
    // Properties deliberately out of alphabetical order: columns follow the schema's order.
    let request = SchemaRequest {
        schema: r#"{"type":"object","properties":{"zone":{"type":"string"},"count":{"type":"integer","connect.type":"int32"},"tags":{"type":"array","items":{"type":"string"}}}}"#.into(),
        schema_type: SchemaType::Json,
        references: Vec::new(),
    };
    let id = engine
        .schema_registry()
        .register("events-value", &request)
        .await
        .unwrap();
    engine
        .store()
        .create_topic("events", eddy_storage::TopicConfig::with_partitions(1))
        .unwrap();
    let mut session = eddy_engine::Session::default();
    session
        .properties
        .insert("auto.offset.reset".into(), "earliest".into());
    engine
        .execute(
            &mut session,
            "CREATE STREAM EVENTS WITH (KAFKA_TOPIC='events', VALUE_FORMAT='JSON_SR'); \
             CREATE STREAM BUSY AS SELECT ZONE, COUNT * 2 AS TWICE FROM EVENTS WHERE COUNT > 1;",
        )
        .await
        .unwrap();
    let catalog = engine.catalog().await;
    let columns: Vec<String> = catalog
        .source("EVENTS")
        .unwrap()
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, eddy_engine::schema::type_display(&c.ty)))
        .collect();
    assert_eq!(
        columns,
        ["ZONE STRING", "COUNT INTEGER", "TAGS ARRAY<STRING>"]
    );
    common::feed(
        &engine,
        "events",
        vec![
            framed(id, r#"{"zone":"a","count":3,"tags":["x"]}"#),
            Record {
                key: None,
                value: Some(br#"{"zone":"plain json","count":9}"#.to_vec().into()),
                timestamp: 11,
                headers: Vec::new(),
            },
            framed(id, r#"{"zone":"b","count":1}"#),
        ],
    )
    .await;
    let log = common::values(engine.store(), "default_ksql_processing_log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].contains("did not start with the magic byte"),
        "{}",
        log[0]
    );
    let sink = engine
        .schema_registry()
        .version("BUSY-value", VersionSpec::Latest, false)
        .await
        .unwrap();
    assert_eq!(sink.schema.schema_type, SchemaType::Json);
    let out = engine
        .store()
        .read_records("BUSY", 0, 0, usize::MAX)
        .unwrap()
        .records;
    assert_eq!(out.len(), 1);
    let bytes = out[0].record.value.clone().unwrap();
    assert_eq!(&bytes[..5], [&[0][..], &sink.id.to_be_bytes()].concat());
    assert_eq!(&bytes[5..], br#"{"ZONE":"a","TWICE":6}"#);
}
