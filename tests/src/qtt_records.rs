//! Records of query-validation-test cases: inputs serialized in the format of the source that
//! reads their topic, and outputs read back and compared with the expected JSON.

use base64::Engine as _;
use eddy_engine::catalog::{Catalog, DataSource, WindowType};
use eddy_engine::format::{Format, FormatSpec};
use eddy_engine::query::source::{append_window, split_windowed_key};
use eddy_engine::schema::Column;
use eddy_registry::SchemaRegistry;
use eddy_sql::ast::SqlType;
use eddy_storage::{Record, RecordHeader};
use serde_json::Value;

/// The schema a topic's inputs are written with: AVRO or PROTOBUF, from the registry.
#[derive(Debug, Clone)]
pub enum Writer {
    /// An AVRO schema.
    Avro(crate::qtt_avro::Writer),
    /// A PROTOBUF message.
    Protobuf(crate::qtt_protobuf::Writer),
    /// JSON_SR: JSON framed with a schema id.
    JsonSr(u32),
}

impl Writer {
    fn write(&self, json: &Value) -> Result<Vec<u8>, String> {
        match self {
            Writer::Avro(w) => w.write(json),
            Writer::Protobuf(w) => w.write(json),
            Writer::JsonSr(id) => {
                let mut bytes = vec![0];
                bytes.extend_from_slice(&id.to_be_bytes());
                bytes.extend(serde_json::to_vec(json).map_err(|e| e.to_string())?);
                Ok(bytes)
            }
        }
    }
}

/// The source declared over `topic`; the first one declared wins, as inputs are written
/// in the format of the stream the test reads.
pub fn source_for_topic<'a>(catalog: &'a Catalog, topic: &str) -> Option<&'a DataSource> {
    catalog.sources().find(|s| s.topic == topic)
}

/// The single column of a key or value in the `KAFKA` format, if there is exactly one.
fn single<'a>(columns: &[&'a Column]) -> Option<&'a Column> {
    (columns.len() == 1).then(|| columns[0])
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Serializes one key or value as the format would have written it; `writer` is the schema
/// an AVRO one is written with.
fn serialize(
    value: &Value,
    format: Format,
    columns: &[&Column],
    writer: Option<&Writer>,
) -> Result<Option<Vec<u8>>, String> {
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(match format {
        Format::Avro | Format::Protobuf | Format::ProtobufNoSr | Format::JsonSr => writer
            .ok_or("the topic's subject has no schema to write with")?
            .write(value)?,
        Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string())?,
        Format::Delimited => text_of(value).into_bytes(),
        Format::None => return Ok(None),
        Format::Kafka => match single(columns).map(|c| &c.ty) {
            Some(SqlType::Int) => {
                let n = value.as_i64().ok_or("expected an INT")?;
                (n as i32).to_be_bytes().to_vec()
            }
            Some(SqlType::Bigint) => value
                .as_i64()
                .ok_or("expected a BIGINT")?
                .to_be_bytes()
                .to_vec(),
            Some(SqlType::Double) => value
                .as_f64()
                .ok_or("expected a DOUBLE")?
                .to_be_bytes()
                .to_vec(),
            Some(SqlType::Bytes) => base64::engine::general_purpose::STANDARD
                .decode(text_of(value))
                .map_err(|e| e.to_string())?,
            _ => text_of(value).into_bytes(),
        },
    }))
}

/// Reads one key or value back as the JSON the test files write.
fn deserialize(
    bytes: Option<&[u8]>,
    spec: &FormatSpec,
    columns: &[&Column],
    registry: &SchemaRegistry,
) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let format = spec.format;
    let text = || String::from_utf8_lossy(bytes).into_owned();
    match format {
        Format::Avro => crate::qtt_avro::read(registry, bytes).unwrap_or_else(Value::String),
        Format::Protobuf => {
            crate::qtt_protobuf::read(registry, bytes).unwrap_or_else(Value::String)
        }
        Format::ProtobufNoSr => {
            crate::qtt_protobuf::read_bare(columns, spec, bytes).unwrap_or_else(Value::String)
        }
        Format::JsonSr => match bytes {
            [0, _, _, _, _, body @ ..] => {
                serde_json::from_slice(body).unwrap_or_else(|_| Value::String(text()))
            }
            _ => Value::String(text()),
        },
        Format::Json => serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(text())),
        Format::Kafka => match single(columns).map(|c| &c.ty) {
            Some(SqlType::Int) if bytes.len() == 4 => {
                Value::from(i32::from_be_bytes(bytes.try_into().unwrap_or([0; 4])))
            }
            Some(SqlType::Bigint) if bytes.len() == 8 => {
                Value::from(i64::from_be_bytes(bytes.try_into().unwrap_or([0; 8])))
            }
            Some(SqlType::Double) if bytes.len() == 8 => {
                Value::from(f64::from_be_bytes(bytes.try_into().unwrap_or([0; 8])))
            }
            Some(SqlType::Bytes) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => Value::String(text()),
        },
        _ => Value::String(text()),
    }
}

/// The record a test input describes, in the formats of `source`; `writers` are the key's and
/// the value's AVRO schemas.
pub fn input_record(
    input: &Value,
    source: Option<&DataSource>,
    writers: [Option<&Writer>; 2],
) -> Result<Record, String> {
    let (key_format, value_format, keys, values) = match source {
        Some(s) => (
            s.key_format.format,
            s.value_format.format,
            s.key_columns().collect::<Vec<_>>(),
            s.value_columns().collect::<Vec<_>>(),
        ),
        None => (Format::Kafka, Format::Json, Vec::new(), Vec::new()),
    };
    let null = Value::Null;
    let mut key = serialize(
        input.get("key").unwrap_or(&null),
        key_format,
        &keys,
        writers[0],
    )
    .map_err(|e| format!("input key: {e}"))?;
    if let (Some(window), Some(bounds)) = (source.and_then(|s| s.window), input.get("window")) {
        let start = bounds.get("start").and_then(Value::as_i64).unwrap_or(0);
        let end = bounds.get("end").and_then(Value::as_i64).unwrap_or(0);
        append_window(key.get_or_insert_with(Vec::new), &window, start, end);
    }
    let value = serialize(
        input.get("value").unwrap_or(&null),
        value_format,
        &values,
        writers[1],
    )
    .map_err(|e| format!("input value: {e}"))?;
    let headers = input
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|h| RecordHeader {
            key: h
                .get("KEY")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            value: h
                .get("VALUE")
                .and_then(Value::as_str)
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(Into::into),
        })
        .collect();
    Ok(Record {
        key: key.map(Into::into),
        value: value.map(Into::into),
        timestamp: input.get("timestamp").and_then(Value::as_i64).unwrap_or(0),
        headers,
    })
}

/// An output record's window as the test files write it, when its sink is windowed.
pub fn output_window(record: &Record, sink: Option<&DataSource>) -> Option<Value> {
    let window = sink?.window?;
    let (_, start, end) = split_windowed_key(record.key.as_deref()?, &window)?;
    let kind = if window.window_type == WindowType::Session {
        "session"
    } else {
        "time"
    };
    Some(serde_json::json!({"start": start, "end": end, "type": kind}))
}

/// An output record as JSON, in the shape of the test files.
pub fn output_json(
    record: &Record,
    sink: Option<&DataSource>,
    registry: &SchemaRegistry,
) -> (Value, Value) {
    let key = match (sink.and_then(|s| s.window), record.key.as_deref()) {
        (Some(window), Some(k)) => split_windowed_key(k, &window).map(|(inner, _, _)| inner),
        (_, k) => k,
    };
    match sink {
        Some(s) => (
            deserialize(
                key,
                &s.key_format,
                &s.key_columns().collect::<Vec<_>>(),
                registry,
            ),
            deserialize(
                record.value.as_deref(),
                &s.value_format,
                &s.value_columns().collect::<Vec<_>>(),
                registry,
            ),
        ),
        None => (
            deserialize(
                record.key.as_deref(),
                &FormatSpec::of(Format::Kafka),
                &[],
                registry,
            ),
            deserialize(
                record.value.as_deref(),
                &FormatSpec::of(Format::Json),
                &[],
                registry,
            ),
        ),
    }
}

/// An expected JSON value object read through the sink's value columns, as ksqlDB's runner
/// deserializes expectations with the sink's schema: fields match case-insensitively, missing
/// ones are null and unknown ones are dropped.
pub fn expected_through_schema(expected: &Value, sink: Option<&DataSource>) -> Value {
    let (Some(sink), Value::Object(fields)) = (sink, expected) else {
        return expected.clone();
    };
    let columns: Vec<&Column> = sink.value_columns().collect();
    let wrapped = sink.wrap_single_value.unwrap_or(true) || columns.len() != 1;
    // A sink writing with a registered schema writes that schema's fields, not its columns.
    if !matches!(sink.value_format.format, Format::Json | Format::Avro)
        || !wrapped
        || sink.value_format.schema_id.is_some()
    {
        return expected.clone();
    }
    let avro = sink.value_format.format == Format::Avro;
    let mut out = serde_json::Map::new();
    for column in columns {
        let value = fields
            .get(&column.name)
            .or_else(|| {
                fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&column.name))
                    .map(|(_, v)| v)
            })
            .cloned()
            .unwrap_or(Value::Null);
        // AVRO carries decimals as numbers; the files write some as text.
        let value = match (&column.ty, value) {
            (SqlType::Decimal { .. }, Value::String(text)) if avro => {
                text.parse::<f64>().map_or(Value::String(text), Value::from)
            }
            (_, value) => value,
        };
        out.insert(column.name.clone(), value);
    }
    Value::Object(out)
}

/// JSON equality with numbers compared by value, so `1` and `1.0` agree as ksqlDB's runner
/// compares deserialized values.
pub fn same_json(expected: &Value, actual: &Value) -> bool {
    same_json_within(expected, actual, None)
}

/// [`same_json`], with doubles compared to `places` decimal places when given (ksqlDB's
/// `use.exact.numeric.comparison=false`).
pub fn same_json_within(expected: &Value, actual: &Value, places: Option<i32>) -> bool {
    let same = |a: &Value, b: &Value| same_json_within(a, b, places);
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => match places {
                Some(p) => {
                    let scale = 10f64.powi(p);
                    (x * scale).round() == (y * scale).round()
                }
                None => x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
            },
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        // Field names match case-insensitively, as ksqlDB reads JSON.
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(k, v)| {
                    b.get(k)
                        .or_else(|| {
                            b.iter()
                                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                                .map(|(_, w)| w)
                        })
                        .is_some_and(|w| same(v, w))
                })
        }
        (a, b) => a == b,
    }
}
