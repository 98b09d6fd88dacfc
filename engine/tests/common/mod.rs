//! What the engine's end-to-end tests share: a store in a directory, running statements,
//! feeding topics, and reading back what queries wrote.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use eddy_engine::{Engine, Session};
use eddy_storage::{Record, Store, StoreOptions, SyncPolicy};

/// A store in `dir` that leaves syncing to the OS, as tests need no durability across crashes.
pub fn open_store(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync: SyncPolicy::Os,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// An engine over a store in `dir`.
pub async fn open_engine(dir: &std::path::Path) -> Engine {
    Engine::open(open_store(dir)).await.unwrap()
}

/// Runs statements in a fresh session, failing the test with the statement and its error.
/// The session's record cache is off, as in ksqlDB's own tests, so every update of an
/// aggregation comes out; a test of the cache sets `cache.max.bytes.buffering` itself.
pub async fn run(engine: &Engine, sql: &str) {
    let mut session = Session::default();
    session
        .properties
        .insert("cache.max.bytes.buffering".into(), "0".into());
    engine
        .execute(&mut session, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
}

/// The error a statement fails with; the test fails if it succeeds.
pub async fn fails(engine: &Engine, sql: &str) -> String {
    match engine.execute(&mut Session::default(), sql).await {
        Ok(_) => panic!("{sql} should fail"),
        Err(e) => e.to_string(),
    }
}

/// Appends `records` to `topic` and waits until every query has processed them, so results
/// come in the order the inputs do.
pub async fn feed(engine: &Engine, topic: &str, records: Vec<Record>) {
    engine.store().produce(topic, records).await.unwrap();
    assert!(engine.wait_until_processed(Duration::from_secs(60)).await);
}

/// A record with a text key and, unless `value` is none, a text value.
pub fn text_record(key: &str, value: Option<&str>, timestamp: i64) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec().into()),
        value: value.map(|v| v.as_bytes().to_vec().into()),
        timestamp,
        headers: Vec::new(),
    }
}

/// (key, value as text, timestamp) of every record in `topic`, partition by partition.
pub fn records(store: &Store, topic: &str) -> Vec<(Option<Vec<u8>>, Option<String>, i64)> {
    let mut out = Vec::new();
    for p in 0..store.partition_count(topic).unwrap() {
        for r in store.read_records(topic, p, 0, usize::MAX).unwrap().records {
            out.push((
                r.record.key.map(|k| k.to_vec()),
                r.record
                    .value
                    .map(|v| String::from_utf8(v.to_vec()).unwrap()),
                r.record.timestamp,
            ));
        }
    }
    out
}

/// [`records`] with each key as bytes, empty for a record without one.
pub fn keyed_records(store: &Store, topic: &str) -> Vec<(Vec<u8>, Option<String>, i64)> {
    records(store, topic)
        .into_iter()
        .map(|(k, v, t)| (k.unwrap_or_default(), v, t))
        .collect()
}

/// [`records`] with each key as text, empty for a record without one.
pub fn text_records(store: &Store, topic: &str) -> Vec<(String, Option<String>, i64)> {
    records(store, topic)
        .into_iter()
        .map(|(k, v, t)| (String::from_utf8(k.unwrap_or_default()).unwrap(), v, t))
        .collect()
}

/// Every value in `topic`, in partition then offset order; records without one are skipped.
pub fn values(store: &Store, topic: &str) -> Vec<String> {
    records(store, topic)
        .into_iter()
        .filter_map(|(_, v, _)| v)
        .collect()
}

/// The rows a pull query answers, each as a JSON array; panics on an error.
pub async fn pull(engine: &Engine, sql: &str) -> Vec<serde_json::Value> {
    use eddy_engine::query::transient::TransientEvent;
    let mut query = engine.query(&Session::default(), sql).await.unwrap();
    let mut rows = Vec::new();
    while let Some(event) = query.events.recv().await {
        match event {
            TransientEvent::Row { columns, .. } => rows.push(serde_json::Value::Array(columns)),
            TransientEvent::Finished(_) => break,
            TransientEvent::Error(e) => panic!("{sql}: {e}"),
        }
    }
    rows
}
