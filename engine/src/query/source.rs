//! Turning records read from a source's topic into one Arrow batch: key, value and header
//! columns decoded a batch at a time, plus the pseudo-columns `ROWTIME`, `ROWPARTITION` and
//! `ROWOFFSET`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanArray, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringBuilder, StructBuilder, TimestampMillisecondArray, new_null_array,
};
use datafusion::arrow::compute::{cast, nullif};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use eddy_sql::ast::SqlType;
use eddy_storage::LogRecord;

use crate::catalog::{DataSource, WindowInfo, WindowType};
use crate::codec::{RowCodec, Schemas};
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::schema::{Column, ColumnKind};

/// Name of the record-timestamp pseudo-column.
pub const ROWTIME: &str = "ROWTIME";
/// Name of the partition pseudo-column.
pub const ROWPARTITION: &str = "ROWPARTITION";
/// Name of the offset pseudo-column.
pub const ROWOFFSET: &str = "ROWOFFSET";
/// Name of a windowed row's window start.
pub const WINDOWSTART: &str = "WINDOWSTART";
/// Name of a windowed row's window end.
pub const WINDOWEND: &str = "WINDOWEND";

/// Splits a windowed key as ksqlDB lays it out: the key, then for time windows the window
/// start (8 bytes, big-endian), for session windows the end and then the start. Returns the
/// inner key, the start and the end.
pub fn split_windowed_key<'k>(key: &'k [u8], window: &WindowInfo) -> Option<(&'k [u8], i64, i64)> {
    let read = |b: &[u8]| b.try_into().ok().map(i64::from_be_bytes);
    match window.window_type {
        WindowType::Session => {
            let at = key.len().checked_sub(16)?;
            let end = read(&key[at..at + 8])?;
            let start = read(&key[at + 8..])?;
            Some((&key[..at], start, end))
        }
        WindowType::Tumbling | WindowType::Hopping => {
            let at = key.len().checked_sub(8)?;
            let start = read(&key[at..])?;
            let size = window.size_ms.unwrap_or(0) as i64;
            Some((&key[..at], start, start.saturating_add(size)))
        }
    }
}

/// Appends a window to an encoded key, in ksqlDB's layout (see [`split_windowed_key`]).
/// The bound a window store orders a windowed key by: a time window's start, a session's end.
pub fn window_bound_in_key(key: &[u8], window_type: WindowType) -> Option<i64> {
    let at = key.len().checked_sub(8)?;
    let at = if window_type == WindowType::Session {
        at.checked_sub(8)?
    } else {
        at
    };
    key.get(at..at + 8)?.try_into().ok().map(i64::from_be_bytes)
}

/// How many bytes a window adds to the end of a key (see [`append_window`]).
pub fn window_bytes(window: &WindowInfo) -> usize {
    if window.window_type == WindowType::Session {
        16
    } else {
        8
    }
}

/// Appends a window's bounds to a key, as ksqlDB lays out a windowed key: the start, and a
/// session's end.
pub fn append_window(key: &mut Vec<u8>, window: &WindowInfo, start: i64, end: i64) {
    if window.window_type == WindowType::Session {
        key.extend_from_slice(&end.to_be_bytes());
    }
    key.extend_from_slice(&start.to_be_bytes());
}

/// What part of processing a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// The key could not be decoded; the record is dropped.
    Key,
    /// The value could not be decoded; the record is dropped.
    Value,
    /// The timestamp could not be read or is negative; the record is dropped.
    Timestamp,
    /// An expression failed; its result is null and the record goes on.
    Expression,
    /// An expression the record's way through the query depends on (a condition, a grouping,
    /// a join key, `EXPLODE`) failed or was null; the record is dropped.
    Dropped,
    /// The record came after every window it falls in had closed (its end plus the grace
    /// period); it is dropped.
    Late,
    /// The record is in another partition than its key hashes to, which a query split by
    /// partition relies on; it goes on.
    Misplaced,
}

impl RecordErrorKind {
    /// Whether the record failed and was dropped, so that it belongs in a dead-letter topic: not
    /// for a failed expression (the record went on with a null) nor a late record (dropped by
    /// design, and late again if replayed).
    pub fn dead_letters(self) -> bool {
        !matches!(
            self,
            RecordErrorKind::Expression | RecordErrorKind::Late | RecordErrorKind::Misplaced
        )
    }

    /// Kafka Connect's name for the stage a record failed at.
    pub fn stage(self) -> &'static str {
        match self {
            RecordErrorKind::Key => "KEY_CONVERTER",
            RecordErrorKind::Value => "VALUE_CONVERTER",
            _ => "TRANSFORMATION",
        }
    }

    /// The kind as an error class name, for a dead letter's headers.
    pub fn class_name(self) -> &'static str {
        match self {
            RecordErrorKind::Key | RecordErrorKind::Value => "DeserializationError",
            RecordErrorKind::Timestamp => "TimestampError",
            RecordErrorKind::Expression | RecordErrorKind::Dropped => "RecordProcessingError",
            RecordErrorKind::Late => "LateRecord",
            RecordErrorKind::Misplaced => "PartitioningError",
        }
    }
}

/// A record that could not be processed, and why.
#[derive(Debug, Clone)]
pub struct RecordError {
    /// What failed.
    pub kind: RecordErrorKind,
    /// The partition it was in.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// What went wrong.
    pub reason: String,
}

/// Decoded records of one partition read.
#[derive(Debug)]
pub struct SourceBatch {
    /// Rows that decoded, in offset order, with the schema of [`SourceDecoder::schema`].
    pub batch: RecordBatch,
    /// For each row, whether the record had a value; a stream record without one passes
    /// through as a record without a value.
    pub has_value: Vec<bool>,
    /// Records dropped because they could not be decoded.
    pub errors: Vec<RecordError>,
}

/// Decodes records of one source into batches with its columns and pseudo-columns.
#[derive(Debug, Clone)]
pub struct SourceDecoder {
    source: DataSource,
    key_codec: Option<RowCodec>,
    value_codec: RowCodec,
    schema: SchemaRef,
}

fn arrow_type(ty: &SqlType) -> Result<DataType> {
    eddy_sql::types::to_arrow(ty).map_err(|e| EngineError::statement(e.to_string()))
}

impl SourceDecoder {
    /// A decoder for `source`.
    pub fn new(source: &DataSource, schemas: &Schemas) -> Result<Self> {
        source.key_format.format.ensure_supported()?;
        source.value_format.format.ensure_supported()?;
        let keys: Vec<&Column> = source.key_columns().collect();
        let values: Vec<&Column> = source.value_columns().collect();
        let key_codec = if keys.is_empty() || source.key_format.format == Format::None {
            None
        } else {
            Some(RowCodec::new(&source.key_format, &keys, false, schemas)?)
        };
        let value_codec = RowCodec::new(
            &source.value_format,
            &values,
            source.wrap_single_value.unwrap_or(true),
            schemas,
        )?;
        let mut fields = Vec::with_capacity(source.columns.len() + 3);
        for column in &source.columns {
            fields.push(Field::new(&column.name, arrow_type(&column.ty)?, true));
        }
        fields.push(Field::new(ROWTIME, DataType::Int64, true));
        fields.push(Field::new(ROWPARTITION, DataType::Int32, true));
        fields.push(Field::new(ROWOFFSET, DataType::Int64, true));
        if source.window.is_some() {
            fields.push(Field::new(WINDOWSTART, DataType::Int64, true));
            fields.push(Field::new(WINDOWEND, DataType::Int64, true));
        }
        Ok(SourceDecoder {
            source: source.clone(),
            key_codec,
            value_codec,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The schema of decoded batches: the source's columns in declaration order, then
    /// `ROWTIME`, `ROWPARTITION` and `ROWOFFSET`.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes records read from `partition`. Records that fail to decode are left out and
    /// reported; the rest keep their order.
    pub fn decode(&self, partition: u32, records: &[LogRecord]) -> Result<SourceBatch> {
        let n = records.len();
        let mut errors: Vec<(usize, RecordErrorKind, String)> = Vec::new();
        let mut keys: Vec<Option<&[u8]>> =
            records.iter().map(|r| r.record.key.as_deref()).collect();
        let mut bounds: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        if let Some(window) = &self.source.window {
            bounds.reserve(n);
            for (i, key) in keys.iter_mut().enumerate() {
                match key.map(|k| split_windowed_key(k, window)) {
                    Some(Some((inner, start, end))) => {
                        *key = Some(inner);
                        bounds.push((Some(start), Some(end)));
                    }
                    Some(None) => {
                        errors.push((
                            i,
                            RecordErrorKind::Key,
                            "the key is too short to hold a window".to_string(),
                        ));
                        *key = None;
                        bounds.push((None, None));
                    }
                    None => bounds.push((None, None)),
                }
            }
        }
        let values: Vec<Option<&[u8]>> =
            records.iter().map(|r| r.record.value.as_deref()).collect();
        let key_columns = match &self.key_codec {
            Some(codec) => {
                let decoded = codec.decode(&keys);
                errors.extend(
                    decoded
                        .errors
                        .into_iter()
                        .map(|(i, e)| (i, RecordErrorKind::Key, e)),
                );
                decoded.columns
            }
            None => Vec::new(),
        };
        let decoded_values = self.value_codec.decode(&values);
        errors.extend(
            decoded_values
                .errors
                .into_iter()
                .map(|(i, e)| (i, RecordErrorKind::Value, e)),
        );
        let value_columns = decoded_values.columns;
        let has_value: Vec<bool> = values.iter().map(Option::is_some).collect();
        // A record without a value has no row: its value columns and its pseudo-columns are
        // null, as in ksqlDB, while its key columns still decode.
        let no_value = BooleanArray::from(has_value.iter().map(|v| !v).collect::<Vec<_>>());
        let any_missing = has_value.iter().any(|v| !v);
        let null_where_no_value = |array: ArrayRef| -> Result<ArrayRef> {
            if any_missing {
                nullif(array.as_ref(), &no_value)
                    .map_err(|e| EngineError::internal_from("cannot null missing values", e))
            } else {
                Ok(array)
            }
        };

        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let (mut next_key, mut next_value) = (0, 0);
        for column in &self.source.columns {
            let ty = arrow_type(&column.ty)?;
            let array = match &column.kind {
                ColumnKind::Key => {
                    next_key += 1;
                    key_columns
                        .get(next_key - 1)
                        .cloned()
                        .unwrap_or_else(|| new_null_array(&ty, n))
                }
                ColumnKind::Value => {
                    next_value += 1;
                    value_columns
                        .get(next_value - 1)
                        .cloned()
                        .unwrap_or_else(|| new_null_array(&ty, n))
                }
                ColumnKind::Headers => null_where_no_value(all_headers(records, &ty)?)?,
                ColumnKind::Header(name) => null_where_no_value(one_header(records, name))?,
            };
            columns.push(array);
        }
        let rowtime = self.rowtime(records, &columns, &mut errors)?;
        columns.push(null_where_no_value(rowtime)?);
        columns.push(null_where_no_value(Arc::new(Int32Array::from(vec![
            partition as i32;
            n
        ])))?);
        columns.push(null_where_no_value(Arc::new(
            Int64Array::from_iter_values(records.iter().map(|r| r.offset)),
        ))?);

        if self.source.window.is_some() {
            columns.push(Arc::new(Int64Array::from(
                bounds.iter().map(|b| b.0).collect::<Vec<_>>(),
            )));
            columns.push(Arc::new(Int64Array::from(
                bounds.iter().map(|b| b.1).collect::<Vec<_>>(),
            )));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| EngineError::internal_from("cannot assemble a batch", e))?;
        let mut keep = vec![true; n];
        for (i, _, _) in &errors {
            keep[*i] = false;
        }
        let errors = errors
            .into_iter()
            .map(|(i, kind, reason)| RecordError {
                kind,
                partition,
                offset: records[i].offset,
                reason,
            })
            .collect::<Vec<_>>();
        if errors.is_empty() {
            return Ok(SourceBatch {
                batch,
                has_value,
                errors,
            });
        }
        let mask = BooleanArray::from(keep.clone());
        let batch = datafusion::arrow::compute::filter_record_batch(&batch, &mask)
            .map_err(|e| EngineError::internal_from("cannot drop unreadable records", e))?;
        let has_value = has_value
            .into_iter()
            .zip(keep)
            .filter_map(|(v, k)| k.then_some(v))
            .collect();
        Ok(SourceBatch {
            batch,
            has_value,
            errors,
        })
    }

    /// `ROWTIME`: the record timestamp, or the source's `TIMESTAMP` column. A row whose
    /// timestamp column is null or negative cannot be placed in time and is reported.
    fn rowtime(
        &self,
        records: &[LogRecord],
        columns: &[ArrayRef],
        errors: &mut Vec<(usize, RecordErrorKind, String)>,
    ) -> Result<ArrayRef> {
        let record_times = || -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| r.record.timestamp),
            ))
        };
        let Some(name) = &self.source.timestamp_column else {
            return Ok(record_times());
        };
        let Some(index) = self.source.columns.iter().position(|c| &c.name == name) else {
            return Ok(record_times());
        };
        let column = &columns[index];
        let millis: ArrayRef = match column.data_type() {
            DataType::Utf8 => {
                let pattern = self.source.timestamp_format.as_deref().unwrap_or_default();
                let strings = column
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .ok_or_else(|| EngineError::internal("TIMESTAMP column is not a string"))?;
                let mut out = Vec::with_capacity(strings.len());
                for i in 0..strings.len() {
                    if strings.is_null(i) {
                        out.push(None);
                        continue;
                    }
                    match eddy_sql::functions::time::parse_timestamp(strings.value(i), pattern) {
                        Ok(ms) => out.push(Some(ms)),
                        Err(e) => {
                            errors.push((
                                i,
                                RecordErrorKind::Timestamp,
                                format!(
                                    "Failed to parse the TIMESTAMP column {name} value '{}': {e}",
                                    strings.value(i)
                                ),
                            ));
                            out.push(None);
                        }
                    }
                }
                Arc::new(Int64Array::from(out))
            }
            DataType::Timestamp(..) => {
                let ts = cast(
                    column,
                    &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
                )
                .map_err(|e| EngineError::internal_from("cannot read a timestamp column", e))?;
                let ts = ts
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .ok_or_else(|| EngineError::internal("TIMESTAMP column is not a timestamp"))?;
                Arc::new(Int64Array::from_iter(ts.iter()))
            }
            _ => cast(column, &DataType::Int64)
                .map_err(|e| EngineError::internal_from("cannot read a timestamp column", e))?,
        };
        let values = millis
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| EngineError::internal("ROWTIME is not BIGINT"))?;
        for (i, record) in records.iter().enumerate() {
            // Records without a value have no timestamp column to read; they keep theirs.
            if record.record.value.is_none() {
                continue;
            }
            match (!values.is_null(i)).then(|| values.value(i)) {
                Some(ms) if ms >= 0 => {}
                Some(ms) => errors.push((
                    i,
                    RecordErrorKind::Timestamp,
                    format!("Timestamp column {name} has the negative value {ms}"),
                )),
                None if errors.iter().any(|(j, _, _)| *j == i) => {}
                None => errors.push((
                    i,
                    RecordErrorKind::Timestamp,
                    format!("Timestamp column {name} is null"),
                )),
            }
        }
        let merged: Int64Array = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if r.record.value.is_none() || values.is_null(i) {
                    Some(r.record.timestamp)
                } else {
                    Some(values.value(i))
                }
            })
            .collect();
        Ok(Arc::new(merged))
    }
}

/// The `HEADERS` column: every header of each record, as `ARRAY<STRUCT<KEY, VALUE>>`.
fn all_headers(records: &[LogRecord], ty: &DataType) -> Result<ArrayRef> {
    let DataType::List(item) = ty else {
        return Ok(new_null_array(ty, records.len()));
    };
    let DataType::Struct(fields) = item.data_type() else {
        return Ok(new_null_array(ty, records.len()));
    };
    let fields: Fields = fields.clone();
    let mut builder = ListBuilder::new(StructBuilder::new(
        fields.clone(),
        vec![
            Box::new(StringBuilder::new()),
            Box::new(BinaryBuilder::new()),
        ],
    ))
    .with_field(item.clone());
    for record in records {
        for header in &record.record.headers {
            let entry = builder.values();
            entry
                .field_builder::<StringBuilder>(0)
                .ok_or_else(|| EngineError::internal("HEADERS key builder"))?
                .append_value(&header.key);
            let value = entry
                .field_builder::<BinaryBuilder>(1)
                .ok_or_else(|| EngineError::internal("HEADERS value builder"))?;
            match &header.value {
                Some(v) => value.append_value(v),
                None => value.append_null(),
            }
            entry.append(true);
        }
        builder.append(true);
    }
    Ok(Arc::new(builder.finish()))
}

/// A `HEADER('k')` column: the last header named `k`, or null.
fn one_header(records: &[LogRecord], name: &str) -> ArrayRef {
    let mut builder = BinaryBuilder::new();
    for record in records {
        match record
            .record
            .headers
            .iter()
            .rev()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_ref())
        {
            Some(v) => builder.append_value(v),
            None => builder.append_null(),
        }
    }
    Arc::new(builder.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_keys_round_trip_in_ksqldb_layout() {
        let tumbling = WindowInfo {
            window_type: WindowType::Tumbling,
            size_ms: Some(30_000),
            retention_ms: None,
        };
        let mut key = b"k1".to_vec();
        append_window(&mut key, &tumbling, 60_000, 90_000);
        assert_eq!(key.len(), 2 + 8);
        assert_eq!(&key[2..], &60_000i64.to_be_bytes());
        assert_eq!(
            split_windowed_key(&key, &tumbling),
            Some((&b"k1"[..], 60_000, 90_000))
        );

        let session = WindowInfo {
            window_type: WindowType::Session,
            size_ms: None,
            retention_ms: None,
        };
        let mut key = b"k".to_vec();
        append_window(&mut key, &session, 10, 25);
        // Session keys hold the end, then the start.
        assert_eq!(&key[1..9], &25i64.to_be_bytes());
        assert_eq!(
            split_windowed_key(&key, &session),
            Some((&b"k"[..], 10, 25))
        );
        assert_eq!(split_windowed_key(b"short", &session), None);
    }
}
