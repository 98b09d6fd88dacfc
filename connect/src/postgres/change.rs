//! A row change as Debezium writes it: the key (the primary key's columns) and the envelope
//! (`before`, `after`, `source`, `op`, `ts_ms`), in JSON without schemas, so consumers of
//! Debezium's topics, and ksqlDB-style streams over them, read Eddy's the same way.

use base64::Engine as _;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use eddy_storage::Record;
use serde_json::{Map, Value, json};

use super::source_config::DecimalHandling;

/// Debezium's placeholder for a value PostgreSQL did not send (an unchanged TOASTed column).
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// A captured table's columns, as the snapshot's query or pgoutput's `Relation` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub table: String,
    /// Its columns in order.
    pub columns: Vec<Column>,
}

/// One column of a captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
    /// Whether it is part of the key (the replica identity's columns, normally the primary key).
    pub key: bool,
}

/// One value of a row in PostgreSQL's text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL `NULL`.
    Null,
    /// The value as PostgreSQL prints it.
    Text(String),
    /// Not sent: an unchanged TOASTed value.
    Unchanged,
}

/// What happened to the row (Debezium's `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read by the snapshot (`r`).
    Read,
    /// Inserted (`c`).
    Create,
    /// Updated (`u`).
    Update,
    /// Deleted (`d`).
    Delete,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// Where a change came from: Debezium's `source` block.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The connector's `topic.prefix` (Debezium's `name`).
    pub name: &'a str,
    /// The database.
    pub db: &'a str,
    /// When the change committed (or the snapshot read it), in milliseconds.
    pub ts_ms: i64,
    /// `"true"` while snapshotting, `"last"` for the snapshot's last row, else `"false"`.
    pub snapshot: &'static str,
    /// The transaction's id, for streamed changes.
    pub tx_id: Option<u32>,
    /// The change's position in the WAL, for streamed changes.
    pub lsn: Option<u64>,
}

/// How values are written.
#[derive(Debug, Clone, Copy)]
pub struct ValueStyle {
    /// `NUMERIC` as a string or a double.
    pub decimals: DecimalHandling,
}

/// The records of one change: the envelope, and after a delete a tombstone when asked for.
pub fn change_records(
    shape: &TableShape,
    (op, before, after): (Op, Option<&[Cell]>, Option<&[Cell]>),
    source: &Source<'_>,
    (style, tombstone): (ValueStyle, bool),
) -> Vec<Record> {
    let key_row = after.or(before);
    let key = key_row.and_then(|row| key_json(shape, row, style));
    let envelope = json!({
        "before": before.map(|row| row_json(shape, row, style)),
        "after": after.map(|row| row_json(shape, row, style)),
        "source": source_json(shape, source),
        "op": op.code(),
        "ts_ms": chrono::Utc::now().timestamp_millis(),
        "transaction": Value::Null,
    });
    let key_bytes = key.map(|k| bytes::Bytes::from(k.to_string()));
    let mut records = vec![Record {
        key: key_bytes.clone(),
        value: Some(bytes::Bytes::from(envelope.to_string())),
        timestamp: source.ts_ms,
        headers: Vec::new(),
    }];
    if op == Op::Delete && tombstone && key_bytes.is_some() {
        records.push(Record {
            key: key_bytes,
            value: None,
            timestamp: source.ts_ms,
            headers: Vec::new(),
        });
    }
    records
}

fn source_json(shape: &TableShape, source: &Source<'_>) -> Value {
    json!({
        "version": concat!("eddy-", env!("CARGO_PKG_VERSION")),
        "connector": "postgresql",
        "name": source.name,
        "ts_ms": source.ts_ms,
        "snapshot": source.snapshot,
        "db": source.db,
        "sequence": Value::Null,
        "schema": shape.schema,
        "table": shape.table,
        "txId": source.tx_id,
        "lsn": source.lsn,
        "xmin": Value::Null,
    })
}

/// The key: the key columns' values, or none for a table without a key.
fn key_json(shape: &TableShape, row: &[Cell], style: ValueStyle) -> Option<Value> {
    let mut key = Map::new();
    for (column, cell) in shape.columns.iter().zip(row) {
        if column.key {
            key.insert(column.name.clone(), cell_json(column.type_oid, cell, style));
        }
    }
    (!key.is_empty()).then_some(Value::Object(key))
}

fn row_json(shape: &TableShape, row: &[Cell], style: ValueStyle) -> Value {
    let mut out = Map::new();
    for (column, cell) in shape.columns.iter().zip(row) {
        out.insert(column.name.clone(), cell_json(column.type_oid, cell, style));
    }
    Value::Object(out)
}

/// PostgreSQL type OIDs the conversion knows.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
}

/// One value as Debezium's JSON converter writes it with `time.precision.mode=adaptive`:
/// integers and booleans as JSON's, dates as days since the epoch, timestamps as microseconds
/// since the epoch, times as microseconds since midnight, `timestamptz` as an ISO-8601 string
/// in UTC, `bytea` in base64, and everything else (text, `json`, `uuid`, ...) as its text. A
/// value that does not parse as its type is kept as text rather than dropped.
pub fn cell_json(type_oid: u32, cell: &Cell, style: ValueStyle) -> Value {
    let text = match cell {
        Cell::Null => return Value::Null,
        Cell::Unchanged => return Value::String(UNAVAILABLE_VALUE.into()),
        Cell::Text(text) => text.as_str(),
    };
    let parsed = match type_oid {
        oid::BOOL => match text {
            "t" | "true" => Some(Value::Bool(true)),
            "f" | "false" => Some(Value::Bool(false)),
            _ => None,
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => text.parse::<i64>().ok().map(Value::from),
        oid::FLOAT4 | oid::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        oid::NUMERIC => match style.decimals {
            DecimalHandling::String => Some(Value::String(text.to_string())),
            DecimalHandling::Double => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
        },
        oid::DATE => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|d| Value::from((d - NaiveDate::default()).num_days())),
        oid::TIME => NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
            .ok()
            .map(|t| {
                Value::from(
                    i64::from(t.num_seconds_from_midnight()) * 1_000_000
                        + i64::from(t.nanosecond() / 1_000),
                )
            }),
        oid::TIMESTAMP => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|t| Value::from(t.and_utc().timestamp_micros())),
        oid::TIMESTAMPTZ => parse_timestamptz(text)
            .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())),
        oid::BYTEA => text
            .strip_prefix("\\x")
            .and_then(decode_hex)
            .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

/// `timestamptz` as PostgreSQL prints it (`2024-05-01 12:00:00.5+02`, the offset in hours,
/// or hours and minutes), in UTC.
fn parse_timestamptz(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let split = text.rfind(['+', '-']).filter(|&at| at > 10)?;
    let (time, offset) = text.split_at(split);
    let offset = match offset.len() {
        3 => format!("{offset}:00"),
        _ => offset.to_string(),
    };
    chrono::DateTime::parse_from_str(&format!("{time}{offset}"), "%Y-%m-%d %H:%M:%S%.f%:z")
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STYLE: ValueStyle = ValueStyle {
        decimals: DecimalHandling::String,
    };

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn values_take_debeziums_json_forms() {
        assert_eq!(cell_json(oid::INT4, &text("42"), STYLE), json!(42));
        assert_eq!(cell_json(oid::BOOL, &text("t"), STYLE), json!(true));
        assert_eq!(
            cell_json(oid::NUMERIC, &text("12.50"), STYLE),
            json!("12.50")
        );
        let double = ValueStyle {
            decimals: DecimalHandling::Double,
        };
        assert_eq!(cell_json(oid::NUMERIC, &text("12.5"), double), json!(12.5));
        assert_eq!(cell_json(oid::DATE, &text("1970-01-11"), STYLE), json!(10));
        assert_eq!(
            cell_json(oid::TIMESTAMP, &text("1970-01-01 00:00:01.5"), STYLE),
            json!(1_500_000)
        );
        assert_eq!(
            cell_json(oid::TIMESTAMPTZ, &text("2024-05-01 12:00:00.25+02"), STYLE),
            json!("2024-05-01T10:00:00.250000Z")
        );
        assert_eq!(
            cell_json(oid::TIMESTAMPTZ, &text("2024-05-01 12:00:00-05:30"), STYLE),
            json!("2024-05-01T17:30:00.000000Z")
        );
        assert_eq!(
            cell_json(oid::TIME, &text("00:00:02.000001"), STYLE),
            json!(2_000_001)
        );
        assert_eq!(
            cell_json(oid::BYTEA, &text("\\x6869"), STYLE),
            json!("aGk=")
        );
        assert_eq!(cell_json(oid::FLOAT8, &text("NaN"), STYLE), json!("NaN"));
        assert_eq!(cell_json(25, &text("hello"), STYLE), json!("hello"));
        assert_eq!(cell_json(25, &Cell::Null, STYLE), Value::Null);
        assert_eq!(
            cell_json(25, &Cell::Unchanged, STYLE),
            json!(UNAVAILABLE_VALUE)
        );
        // Malformed text stays text.
        assert_eq!(cell_json(oid::INT4, &text("4x"), STYLE), json!("4x"));
        assert_eq!(cell_json(oid::BYTEA, &text("\\x6"), STYLE), json!("\\x6"));
    }

    #[test]
    fn a_delete_carries_before_and_is_followed_by_a_tombstone() {
        let shape = TableShape {
            schema: "public".into(),
            table: "orders".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: oid::INT4,
                    key: true,
                },
                Column {
                    name: "status".into(),
                    type_oid: 25,
                    key: false,
                },
            ],
        };
        let source = Source {
            name: "shop",
            db: "db",
            ts_ms: 1_000,
            snapshot: "false",
            tx_id: Some(7),
            lsn: Some(99),
        };
        let before = [text("1"), text("paid")];
        let records = change_records(
            &shape,
            (Op::Delete, Some(&before), None),
            &source,
            (STYLE, true),
        );
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key.as_deref(), Some(&br#"{"id":1}"#[..]));
        let value: Value = serde_json::from_slice(records[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(value["op"], "d");
        assert_eq!(value["before"], json!({"id": 1, "status": "paid"}));
        assert_eq!(value["after"], Value::Null);
        assert_eq!(value["source"]["table"], "orders");
        assert_eq!(value["source"]["lsn"], 99);
        assert_eq!(records[1].key, records[0].key);
        assert!(records[1].value.is_none());
        assert_eq!(records[0].timestamp, 1_000);
    }
}
