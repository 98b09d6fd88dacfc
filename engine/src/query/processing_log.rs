//! The processing log: a stream, as ksqlDB's `KSQL_PROCESSING_LOG`, of the records queries could
//! not process, with the reason and where each record was.
//!
//! A query writes its log entries in the same commit as its output and offsets, so an entry is
//! written exactly once, whatever crashes.

use base64::Engine as _;
use eddy_storage::{LogRecord, Record};
use serde_json::json;

use crate::query::source::{RecordError, RecordErrorKind};

/// The processing log's stream.
pub const PROCESSING_LOG_STREAM: &str = "KSQL_PROCESSING_LOG";
/// The processing log's topic, named as ksqlDB names it for the default service id.
pub const PROCESSING_LOG_TOPIC: &str = "default_ksql_processing_log";

/// The statement that declares the processing-log stream: ksqlDB's schema, in which `MESSAGE`
/// holds one of the error kinds.
pub fn declaration() -> String {
    format!(
        "CREATE STREAM {PROCESSING_LOG_STREAM} (\
            LOGGER STRING, LEVEL STRING, `TIME` BIGINT, \
            MESSAGE STRUCT<`TYPE` INT, \
                DESERIALIZATIONERROR STRUCT<TARGET STRING, ERRORMESSAGE STRING, RECORDB64 STRING, CAUSE ARRAY<STRING>, `topic` STRING>, \
                RECORDPROCESSINGERROR STRUCT<ERRORMESSAGE STRING, RECORD STRING, CAUSE ARRAY<STRING>>>) \
         WITH (KAFKA_TOPIC='{PROCESSING_LOG_TOPIC}', VALUE_FORMAT='JSON', KEY_FORMAT='KAFKA');"
    )
}

/// ksqlDB's message types.
const DESERIALIZATION_ERROR: i32 = 0;
const RECORD_PROCESSING_ERROR: i32 = 1;

/// The log entry for one failed record read from `topic`.
pub fn entry(
    query_id: &str,
    topic: &str,
    error: &RecordError,
    input: Option<&LogRecord>,
) -> Record {
    let now = eddy_storage::now_ms();
    let location = format!(
        "{} (topic {topic}, partition {}, offset {})",
        error.reason, error.partition, error.offset
    );
    let b64 =
        |bytes: Option<&[u8]>| bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let message = match error.kind {
        RecordErrorKind::Key | RecordErrorKind::Value => {
            let (target, bytes) = if error.kind == RecordErrorKind::Key {
                ("key", input.and_then(|r| r.record.key.as_deref()))
            } else {
                ("value", input.and_then(|r| r.record.value.as_deref()))
            };
            json!({
                "TYPE": DESERIALIZATION_ERROR,
                "DESERIALIZATIONERROR": {
                    "TARGET": target,
                    "ERRORMESSAGE": location,
                    "RECORDB64": b64(bytes),
                    "CAUSE": [],
                    "topic": topic,
                },
                "RECORDPROCESSINGERROR": null,
            })
        }
        RecordErrorKind::Timestamp
        | RecordErrorKind::Expression
        | RecordErrorKind::Dropped
        | RecordErrorKind::Late
        | RecordErrorKind::Misplaced => json!({
            "TYPE": RECORD_PROCESSING_ERROR,
            "DESERIALIZATIONERROR": null,
            "RECORDPROCESSINGERROR": {
                "ERRORMESSAGE": location,
                "RECORD": input
                    .and_then(|r| r.record.value.as_deref())
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                "CAUSE": [],
            },
        }),
    };
    let value = json!({
        "LOGGER": format!("processing.{query_id}"),
        "LEVEL": "ERROR",
        "TIME": now,
        "MESSAGE": message,
    });
    Record {
        key: None,
        value: Some(value.to_string().into_bytes().into()),
        timestamp: now,
        headers: Vec::new(),
    }
}
