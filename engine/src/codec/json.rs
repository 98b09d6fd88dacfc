//! The JSON format, decoded straight into Arrow builders with serde's streaming deserializer (no
//! intermediate JSON tree), with ksqlDB's rules: field names match case-insensitively when no
//! exact match exists, and scalars are coerced as ksqlDB does (numbers from strings, strings
//! from any scalar).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, BooleanBufferBuilder, Date32Array, Decimal128Array,
    Float64Array, Int32Array, Int64Array, ListArray, MapArray, StringArray, StructArray,
    Time32MillisecondArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, SchemaRef, TimeUnit};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Decoded;
use super::json_text::OrderedJson;
use super::primitive::PrimitiveBuilder;
use crate::error::{EngineError, Result};

/// A builder for any column type JSON carries.
enum JsonBuilder {
    Primitive(PrimitiveBuilder),
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        validity: BooleanBufferBuilder,
        child: Box<JsonBuilder>,
    },
    Struct {
        fields: Fields,
        children: Vec<JsonBuilder>,
        validity: BooleanBufferBuilder,
    },
    Map {
        entries: FieldRef,
        offsets: Vec<i32>,
        validity: BooleanBufferBuilder,
        keys: Box<JsonBuilder>,
        values: Box<JsonBuilder>,
    },
}

impl JsonBuilder {
    fn new(data_type: &DataType, capacity: usize) -> Option<Self> {
        if let Some(p) = PrimitiveBuilder::new(data_type, capacity) {
            return Some(JsonBuilder::Primitive(p));
        }
        Some(match data_type {
            DataType::List(field) => JsonBuilder::List {
                field: field.clone(),
                offsets: vec![0],
                validity: BooleanBufferBuilder::new(capacity),
                child: Box::new(JsonBuilder::new(field.data_type(), capacity)?),
            },
            DataType::Struct(fields) => JsonBuilder::Struct {
                fields: fields.clone(),
                children: fields
                    .iter()
                    .map(|f| JsonBuilder::new(f.data_type(), capacity))
                    .collect::<Option<Vec<_>>>()?,
                validity: BooleanBufferBuilder::new(capacity),
            },
            DataType::Map(entries, _) => {
                let DataType::Struct(kv) = entries.data_type() else {
                    return None;
                };
                JsonBuilder::Map {
                    entries: entries.clone(),
                    offsets: vec![0],
                    validity: BooleanBufferBuilder::new(capacity),
                    keys: Box::new(JsonBuilder::new(kv.first()?.data_type(), capacity)?),
                    values: Box::new(JsonBuilder::new(kv.get(1)?.data_type(), capacity)?),
                }
            }
            _ => return None,
        })
    }

    fn len(&self) -> usize {
        match self {
            JsonBuilder::Primitive(p) => p.len(),
            JsonBuilder::List { validity, .. }
            | JsonBuilder::Struct { validity, .. }
            | JsonBuilder::Map { validity, .. } => validity.len(),
        }
    }

    fn append_null(&mut self) {
        match self {
            JsonBuilder::Primitive(p) => p.append_null(),
            JsonBuilder::List {
                offsets, validity, ..
            }
            | JsonBuilder::Map {
                offsets, validity, ..
            } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                validity.append(false);
            }
            JsonBuilder::Struct {
                children, validity, ..
            } => {
                children.iter_mut().for_each(JsonBuilder::append_null);
                validity.append(false);
            }
        }
    }

    /// Pads to `len` slots with nulls, after a value that failed part-way.
    fn pad_to(&mut self, len: usize) {
        while self.len() < len {
            self.append_null();
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            JsonBuilder::Primitive(p) => p.finish(),
            JsonBuilder::List {
                field,
                offsets,
                validity,
                child,
            } => {
                let values = child.finish();
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::new(validity.finish());
                Arc::new(ListArray::new(field.clone(), offsets, values, Some(nulls)))
            }
            JsonBuilder::Struct {
                fields,
                children,
                validity,
            } => {
                let arrays: Vec<ArrayRef> = children.iter_mut().map(JsonBuilder::finish).collect();
                let nulls = NullBuffer::new(validity.finish());
                Arc::new(StructArray::new(fields.clone(), arrays, Some(nulls)))
            }
            JsonBuilder::Map {
                entries,
                offsets,
                validity,
                keys,
                values,
            } => {
                let DataType::Struct(kv) = entries.data_type() else {
                    unreachable!("map entries are a struct, checked in JsonBuilder::new");
                };
                let entry_array =
                    StructArray::new(kv.clone(), vec![keys.finish(), values.finish()], None);
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::new(validity.finish());
                Arc::new(MapArray::new(
                    entries.clone(),
                    offsets,
                    entry_array,
                    Some(nulls),
                    false,
                ))
            }
        }
    }
}

/// Where each JSON object field goes: an exact name match, else a case-insensitive one.
/// Records of a topic usually list their fields in one order, so the field after the previous
/// match (`hint`) is tried first.
fn field_index(fields: &Fields, name: &str, hint: usize) -> Option<usize> {
    let hinted = fields.get(hint);
    if hinted.is_some_and(|f| f.name() == name) {
        return Some(hint);
    }
    if let Some(exact) = fields.iter().position(|f| f.name() == name) {
        return Some(exact);
    }
    if hinted.is_some_and(|f| f.name().eq_ignore_ascii_case(name)) {
        return Some(hint);
    }
    fields
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
}

/// An object key, borrowed from the payload when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// Deserializes one JSON value into a builder, appending exactly one slot even on error.
struct ValueSeed<'a>(&'a mut JsonBuilder);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let before = self.0.len();
        let builder = self.0;
        let result = deserializer.deserialize_any(ValueVisitor(builder));
        if result.is_err() {
            builder.pad_to(before + 1);
        }
        result
    }
}

struct ValueVisitor<'a>(&'a mut JsonBuilder);

fn mismatch<E: de::Error>(found: &str, builder: &JsonBuilder) -> E {
    let wanted = match builder {
        JsonBuilder::Primitive(p) => primitive_name(p),
        JsonBuilder::List { .. } => "ARRAY",
        JsonBuilder::Struct { .. } => "STRUCT",
        JsonBuilder::Map { .. } => "MAP",
    };
    E::custom(format!(
        "Can't convert type. sourceType: {found}, requiredType: {wanted}"
    ))
}

fn primitive_name(p: &PrimitiveBuilder) -> &'static str {
    match p {
        PrimitiveBuilder::Boolean(_) => "BOOLEAN",
        PrimitiveBuilder::Int(_) => "INTEGER",
        PrimitiveBuilder::Bigint(_) => "BIGINT",
        PrimitiveBuilder::Double(_) => "DOUBLE",
        PrimitiveBuilder::Decimal(..) => "DECIMAL",
        PrimitiveBuilder::String(_) => "STRING",
        PrimitiveBuilder::Bytes(_) => "BYTES",
        PrimitiveBuilder::Date(_) => "DATE",
        PrimitiveBuilder::Time(_) => "TIME",
        PrimitiveBuilder::Timestamp(_) => "TIMESTAMP",
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.append_null();
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.append_null();
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.0 {
            JsonBuilder::Primitive(PrimitiveBuilder::Boolean(b)) => b.append_value(v),
            JsonBuilder::Primitive(PrimitiveBuilder::String(b)) => {
                b.append_value(if v { "true" } else { "false" })
            }
            other => return Err(mismatch("BooleanNode", other)),
        }
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.0 {
            JsonBuilder::Primitive(PrimitiveBuilder::Int(b)) => b.append_value(
                i32::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is out of range for INTEGER")))?,
            ),
            JsonBuilder::Primitive(PrimitiveBuilder::Bigint(b)) => b.append_value(v),
            JsonBuilder::Primitive(PrimitiveBuilder::Double(b)) => b.append_value(v as f64),
            JsonBuilder::Primitive(PrimitiveBuilder::String(b)) => b.append_value(v.to_string()),
            JsonBuilder::Primitive(PrimitiveBuilder::Timestamp(b)) => b.append_value(v),
            JsonBuilder::Primitive(PrimitiveBuilder::Date(b)) => b.append_value(
                i32::try_from(v).map_err(|_| E::custom(format!("{v} is out of range for DATE")))?,
            ),
            JsonBuilder::Primitive(PrimitiveBuilder::Time(b)) => b.append_value(
                i32::try_from(v).map_err(|_| E::custom(format!("{v} is out of range for TIME")))?,
            ),
            JsonBuilder::Primitive(p @ PrimitiveBuilder::Decimal(..)) => {
                p.append_text(&v.to_string()).map_err(E::custom)?
            }
            other => return Err(mismatch("NumericNode", other)),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => match self.0 {
                JsonBuilder::Primitive(PrimitiveBuilder::Double(b)) => {
                    b.append_value(v as f64);
                    Ok(())
                }
                JsonBuilder::Primitive(PrimitiveBuilder::String(b)) => {
                    b.append_value(v.to_string());
                    Ok(())
                }
                other => Err(mismatch("NumericNode", other)),
            },
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.0 {
            JsonBuilder::Primitive(PrimitiveBuilder::Double(b)) => b.append_value(v),
            // ksqlDB takes the integer part of a fractional number for integer columns.
            JsonBuilder::Primitive(PrimitiveBuilder::Int(b)) => b.append_value(v as i32),
            JsonBuilder::Primitive(PrimitiveBuilder::Bigint(b)) => b.append_value(v as i64),
            JsonBuilder::Primitive(PrimitiveBuilder::String(b)) => b.append_value(format_double(v)),
            JsonBuilder::Primitive(p @ PrimitiveBuilder::Decimal(..)) => {
                p.append_text(&format_double(v)).map_err(E::custom)?
            }
            other => return Err(mismatch("NumericNode", other)),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.0 {
            JsonBuilder::Primitive(PrimitiveBuilder::Boolean(b)) => {
                b.append_value(v.eq_ignore_ascii_case("true"))
            }
            JsonBuilder::Primitive(p) => p.append_text(v).map_err(E::custom)?,
            other => return Err(mismatch("TextNode", other)),
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.0 {
            JsonBuilder::List {
                offsets,
                validity,
                child,
                ..
            } => {
                let mut outcome = Ok(());
                loop {
                    match seq.next_element_seed(ValueSeed(child)) {
                        Ok(Some(())) => {}
                        Ok(None) => break,
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    }
                }
                offsets.push(i32::try_from(child.len()).unwrap_or(i32::MAX));
                validity.append(true);
                outcome
            }
            JsonBuilder::Primitive(PrimitiveBuilder::String(b)) => {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<OrderedJson>()? {
                    items.push(item);
                }
                b.append_value(OrderedJson::Array(items).to_string());
                Ok(())
            }
            other => Err(mismatch("ArrayNode", other)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.0 {
            JsonBuilder::Struct {
                fields,
                children,
                validity,
            } => {
                let start = validity.len();
                let mut outcome = Ok(());
                let mut hint = 0;
                loop {
                    let key = match map.next_key_seed(KeySeed) {
                        Ok(Some(key)) => key,
                        Ok(None) => break,
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    };
                    let step = match field_index(fields, &key, hint) {
                        // A repeated field keeps its first value.
                        Some(i) if children[i].len() == start => {
                            hint = i + 1;
                            map.next_value_seed(ValueSeed(&mut children[i]))
                        }
                        _ => map.next_value::<IgnoredAny>().map(|_| ()),
                    };
                    if let Err(e) = step {
                        outcome = Err(e);
                        break;
                    }
                }
                children.iter_mut().for_each(|c| c.pad_to(start + 1));
                validity.append(true);
                outcome
            }
            JsonBuilder::Map {
                offsets,
                validity,
                keys,
                values,
                ..
            } => {
                let mut outcome = Ok(());
                loop {
                    let key = match map.next_key_seed(KeySeed) {
                        Ok(Some(key)) => key,
                        Ok(None) => break,
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    };
                    let slot = keys.len();
                    if let JsonBuilder::Primitive(p) = keys.as_mut()
                        && let Err(e) = p.append_text(&key)
                    {
                        outcome = Err(de::Error::custom(e));
                        break;
                    }
                    if let Err(e) = map.next_value_seed(ValueSeed(values)) {
                        values.pad_to(slot + 1);
                        outcome = Err(e);
                        break;
                    }
                }
                let n = keys.len().min(values.len());
                keys.pad_to(n);
                values.pad_to(n);
                offsets.push(i32::try_from(keys.len()).unwrap_or(i32::MAX));
                validity.append(true);
                outcome
            }
            JsonBuilder::Primitive(PrimitiveBuilder::String(b)) => {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, OrderedJson>()? {
                    entries.push(entry);
                }
                b.append_value(OrderedJson::Object(entries).to_string());
                Ok(())
            }
            other => Err(mismatch("ObjectNode", other)),
        }
    }
}

fn format_double(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}

/// Decodes JSON payloads. `wrapped`: each payload is an object whose fields are the columns;
/// otherwise the payload is the single column's value.
pub(super) fn decode(
    schema: &SchemaRef,
    wrapped: bool,
    payloads: &[Option<&[u8]>],
    cache: &DecoderCache,
) -> Decoded {
    if wrapped && let Some(decoded) = decode_flat_objects(schema, payloads, cache) {
        return decoded;
    }
    decode_each(schema, wrapped, payloads)
}

/// The fast path's arrow-json decoder, kept between batches so that its buffers, grown to a
/// batch's size once, are reused; keyed by the field names it reads. Clones start empty.
#[derive(Default)]
pub(super) struct DecoderCache(
    parking_lot::Mutex<Option<(Vec<String>, usize, datafusion::arrow::json::reader::Decoder)>>,
);

impl Clone for DecoderCache {
    fn clone(&self) -> Self {
        DecoderCache::default()
    }
}

impl std::fmt::Debug for DecoderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecoderCache")
    }
}

/// The smallest batch a cached decoder is built for, so small batches share one.
const MIN_DECODER_BATCH: usize = 8192;

/// Whether arrow-json's tape decoder reads this type as ksqlDB's JSON rules do.
fn fast_type(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Boolean
            | DataType::Int32
            | DataType::Int64
            | DataType::Float64
            | DataType::Utf8
            | DataType::Decimal128(..)
    )
}

/// The fast path for the common case: objects of primitive fields, every payload present.
/// arrow-json's decoder matches names exactly, so fields are named as the first payload spells
/// them; a row where any column comes out null (a differently spelled field, or a real null)
/// is decoded again one by one, with ksqlDB's case-insensitive rules. Anything the fast decoder
/// refuses falls back to the exact path for the whole batch.
fn decode_flat_objects(
    schema: &SchemaRef,
    payloads: &[Option<&[u8]>],
    cache: &DecoderCache,
) -> Option<Decoded> {
    if payloads.is_empty()
        || payloads.iter().any(Option::is_none)
        || !schema.fields().iter().all(|f| fast_type(f.data_type()))
    {
        return None;
    }
    let first: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(payloads[0]?).ok()?;
    let spelled: Vec<datafusion::arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = if first.contains_key(f.name()) {
                f.name().clone()
            } else {
                first
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(f.name()))
                    .cloned()
                    .unwrap_or_else(|| f.name().clone())
            };
            datafusion::arrow::datatypes::Field::new(name, f.data_type().clone(), true)
        })
        .collect();
    let names: Vec<String> = spelled.iter().map(|f| f.name().clone()).collect();
    let cached = cache.0.lock().take();
    let mut decoder = match cached {
        Some((cached_names, capacity, decoder))
            if cached_names == names && capacity >= payloads.len() =>
        {
            decoder
        }
        _ => datafusion::arrow::json::ReaderBuilder::new(Arc::new(
            datafusion::arrow::datatypes::Schema::new(spelled),
        ))
        .with_coerce_primitive(true)
        .with_batch_size(payloads.len().max(MIN_DECODER_BATCH))
        .build_decoder()
        .ok()?,
    };
    // A decoder that failed midway holds part of a batch, so it is dropped, not cached.
    for payload in payloads.iter().flatten() {
        let consumed = decoder.decode(payload).ok()?;
        if consumed != payload.len() {
            return None;
        }
    }
    let batch = decoder.flush().ok()??;
    *cache.0.lock() = Some((names, payloads.len().max(MIN_DECODER_BATCH), decoder));
    if batch.num_rows() != payloads.len() {
        return None;
    }
    let n = payloads.len();
    let redo: Vec<usize> = if batch.columns().iter().all(|c| c.null_count() == 0) {
        Vec::new()
    } else {
        (0..n)
            .filter(|&i| batch.columns().iter().any(|c| c.is_null(i)))
            .collect()
    };
    if redo.is_empty() {
        return Some(Decoded {
            columns: batch.columns().to_vec(),
            errors: Vec::new(),
        });
    }
    let again: Vec<Option<&[u8]>> = redo.iter().map(|&i| payloads[i]).collect();
    let exact = decode_each(schema, true, &again);
    // Rows come from the fast batch (source 0) except the ones decoded again (source 1).
    let mut picks: Vec<(usize, usize)> = (0..n).map(|i| (0, i)).collect();
    for (j, &i) in redo.iter().enumerate() {
        picks[i] = (1, j);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(&exact.columns)
        .map(|(fast, slow)| {
            datafusion::arrow::compute::interleave(&[fast.as_ref(), slow.as_ref()], &picks)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .ok()?;
    let errors = exact
        .errors
        .into_iter()
        .map(|(j, reason)| (redo[j], reason))
        .collect();
    Some(Decoded { columns, errors })
}

/// Decodes payloads one by one with ksqlDB's JSON rules: names match case-insensitively,
/// values coerce as ksqlDB coerces them, and a bad payload is an error for its row only.
fn decode_each(schema: &SchemaRef, wrapped: bool, payloads: &[Option<&[u8]>]) -> Decoded {
    let n = payloads.len();
    let row_type = DataType::Struct(schema.fields().clone());
    let Some(mut row) = JsonBuilder::new(&row_type, n) else {
        return Decoded {
            columns: schema
                .fields()
                .iter()
                .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), n))
                .collect(),
            errors: (0..n)
                .map(|i| (i, "the schema has a type JSON cannot carry".to_string()))
                .collect(),
        };
    };
    let mut errors = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let Some(bytes) = payload else {
            row.append_null();
            continue;
        };
        let result = if wrapped {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            ValueSeed(&mut row)
                .deserialize(&mut de)
                .and_then(|()| de.end())
        } else {
            let JsonBuilder::Struct {
                children, validity, ..
            } = &mut row
            else {
                unreachable!("the row builder is a struct");
            };
            let before = validity.len();
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let result = match children.first_mut() {
                Some(child) => ValueSeed(child)
                    .deserialize(&mut de)
                    .and_then(|()| de.end()),
                None => Ok(()),
            };
            children.iter_mut().for_each(|c| c.pad_to(before + 1));
            validity.append(true);
            result
        };
        if let Err(e) = result {
            errors.push((i, format!("Failed to deserialize JSON: {e}")));
        }
    }
    let array = row.finish();
    let Some(rows) = array.as_any().downcast_ref::<StructArray>() else {
        return Decoded {
            columns: Vec::new(),
            errors,
        };
    };
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    if !errors.is_empty() || rows.null_count() > 0 {
        // Rows that failed, and null payloads, are null in every column.
        let mut keep = vec![true; n];
        for (i, _) in &errors {
            keep[*i] = false;
        }
        for (i, k) in keep.iter_mut().enumerate() {
            if rows.is_null(i) {
                *k = false;
            }
        }
        let bad = BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<_>>());
        for column in &mut columns {
            if let Ok(nulled) = datafusion::arrow::compute::nullif(column.as_ref(), &bad) {
                *column = nulled;
            }
        }
    }
    Decoded { columns, errors }
}

/// The fast path of [`encode`]: objects of booleans, integers, finite doubles, decimals and
/// strings, all written by arrow-json's encoder in one buffer, which each row's bytes are a
/// slice of. Its decimals are bare numbers with every digit of the scale, as `write_value`
/// writes them.
fn encode_flat_objects(
    schema: &SchemaRef,
    columns: &[ArrayRef],
    rows: usize,
) -> Option<Vec<Option<bytes::Bytes>>> {
    let simple = schema
        .fields()
        .iter()
        .zip(columns)
        .all(|(f, c)| match f.data_type() {
            DataType::Boolean
            | DataType::Int32
            | DataType::Int64
            | DataType::Utf8
            | DataType::Decimal128(..) => true,
            DataType::Float64 => c
                .as_any()
                .downcast_ref::<Float64Array>()
                .is_some_and(|a| a.iter().flatten().all(f64::is_finite)),
            _ => false,
        });
    if !simple || columns.is_empty() || rows == 0 {
        return None;
    }
    let batch =
        datafusion::arrow::array::RecordBatch::try_new(schema.clone(), columns.to_vec()).ok()?;
    let mut buffer = Vec::with_capacity(flat_objects_bytes(schema, columns, rows));
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(std::sync::Arc::new(super::json_decimal::DecimalEncoders))
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buffer);
    writer.write(&batch).ok()?;
    writer.finish().ok()?;
    drop(writer);
    // Strings escape newlines, so each line is one row.
    let whole = bytes::Bytes::from(buffer);
    let mut out = Vec::with_capacity(rows);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &whole) {
        if end > start {
            out.push(Some(whole.slice(start..end)));
        }
        start = end + 1;
    }
    if start < whole.len() {
        out.push(Some(whole.slice(start..)));
    }
    (out.len() == rows).then_some(out)
}

/// [`encode`], each row's bytes shared with the batch's where the fast path wrote them in one
/// buffer.
pub(super) fn encode_shared(
    schema: &SchemaRef,
    columns: &[ArrayRef],
    rows: usize,
    wrapped: bool,
) -> Result<Vec<Option<bytes::Bytes>>> {
    if wrapped && let Some(out) = encode_flat_objects(schema, columns, rows) {
        return Ok(out);
    }
    Ok(encode(schema, columns, rows, wrapped)?
        .into_iter()
        .map(|row| row.map(bytes::Bytes::from))
        .collect())
}

/// About the bytes `rows` objects of `columns` take as JSON, so the buffer they are written to
/// need not grow: each row's names, quotes and punctuation, a number's digits at most, and the
/// strings' bytes (with a little room for escapes).
fn flat_objects_bytes(schema: &SchemaRef, columns: &[ArrayRef], rows: usize) -> usize {
    let mut per_row = 2;
    let mut strings = 0;
    for (field, column) in schema.fields().iter().zip(columns) {
        per_row += field.name().len() + 4;
        match column.as_any().downcast_ref::<StringArray>() {
            Some(text) => {
                per_row += 2;
                // The bytes of these rows only: a sliced array shares its parent's data.
                let offsets = text.value_offsets();
                strings += (offsets[offsets.len() - 1] - offsets[0]) as usize;
            }
            None => per_row += 24,
        }
    }
    rows * per_row + strings + strings / 16
}

/// Encodes rows as JSON: objects keyed by column name when `wrapped`, else the bare value of the
/// single column.
pub(super) fn encode(
    schema: &SchemaRef,
    columns: &[ArrayRef],
    rows: usize,
    wrapped: bool,
) -> Result<Vec<Option<Vec<u8>>>> {
    if wrapped && let Some(out) = encode_flat_objects(schema, columns, rows) {
        return Ok(out.into_iter().map(|row| row.map(Vec::from)).collect());
    }
    let mut out = Vec::with_capacity(rows);
    // Each field's `"NAME":` (with its leading comma), escaped once for the whole batch.
    let mut prefixes = Vec::with_capacity(columns.len());
    for (i, field) in schema.fields().iter().enumerate() {
        let mut prefix = Vec::with_capacity(field.name().len() + 4);
        prefix.push(if i == 0 { b'{' } else { b',' });
        write_json_string(&mut prefix, field.name())?;
        prefix.push(b':');
        prefixes.push(prefix);
    }
    let mut capacity = 64;
    for row in 0..rows {
        let mut buf = Vec::with_capacity(capacity);
        if wrapped {
            if columns.is_empty() {
                buf.push(b'{');
            }
            for (prefix, column) in prefixes.iter().zip(columns) {
                buf.extend_from_slice(prefix);
                write_value(&mut buf, column.as_ref(), row)?;
            }
            buf.push(b'}');
            capacity = capacity.max(buf.len());
            out.push(Some(buf));
        } else {
            match columns.first() {
                Some(column) if !column.is_null(row) => {
                    write_value(&mut buf, column.as_ref(), row)?;
                    out.push(Some(buf));
                }
                _ => out.push(None),
            }
        }
    }
    Ok(out)
}

fn write_json_string(buf: &mut Vec<u8>, s: &str) -> Result<()> {
    serde_json::to_writer(&mut *buf, s)
        .map_err(|e| EngineError::internal_from("cannot write JSON", e))
}

fn write_value(buf: &mut Vec<u8>, array: &dyn Array, i: usize) -> Result<()> {
    if array.is_null(i) {
        buf.extend_from_slice(b"null");
        return Ok(());
    }
    let any = array.as_any();
    let missing = || EngineError::internal(format!("cannot write {} as JSON", array.data_type()));
    match array.data_type() {
        DataType::Boolean => {
            let v = any
                .downcast_ref::<BooleanArray>()
                .ok_or_else(missing)?
                .value(i);
            buf.extend_from_slice(if v { b"true" } else { b"false" });
        }
        DataType::Int32 => buf.extend_from_slice(
            any.downcast_ref::<Int32Array>()
                .ok_or_else(missing)?
                .value(i)
                .to_string()
                .as_bytes(),
        ),
        DataType::Int64 => buf.extend_from_slice(
            any.downcast_ref::<Int64Array>()
                .ok_or_else(missing)?
                .value(i)
                .to_string()
                .as_bytes(),
        ),
        DataType::Float64 => {
            let v = any
                .downcast_ref::<Float64Array>()
                .ok_or_else(missing)?
                .value(i);
            if v.is_finite() {
                buf.extend_from_slice(format_double(v).as_bytes());
            } else {
                write_json_string(buf, &format!("{v}").replace("inf", "Infinity"))?;
            }
        }
        DataType::Decimal128(..) => buf.extend_from_slice(
            any.downcast_ref::<Decimal128Array>()
                .ok_or_else(missing)?
                .value_as_string(i)
                .as_bytes(),
        ),
        DataType::Utf8 => write_json_string(
            buf,
            any.downcast_ref::<StringArray>()
                .ok_or_else(missing)?
                .value(i),
        )?,
        DataType::Binary => write_json_string(
            buf,
            &base64::engine::general_purpose::STANDARD.encode(
                any.downcast_ref::<BinaryArray>()
                    .ok_or_else(missing)?
                    .value(i),
            ),
        )?,
        DataType::Date32 => buf.extend_from_slice(
            any.downcast_ref::<Date32Array>()
                .ok_or_else(missing)?
                .value(i)
                .to_string()
                .as_bytes(),
        ),
        DataType::Time32(TimeUnit::Millisecond) => buf.extend_from_slice(
            any.downcast_ref::<Time32MillisecondArray>()
                .ok_or_else(missing)?
                .value(i)
                .to_string()
                .as_bytes(),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, None) => buf.extend_from_slice(
            any.downcast_ref::<TimestampMillisecondArray>()
                .ok_or_else(missing)?
                .value(i)
                .to_string()
                .as_bytes(),
        ),
        DataType::List(_) => {
            let list = any.downcast_ref::<ListArray>().ok_or_else(missing)?;
            let values = list.value(i);
            buf.push(b'[');
            for j in 0..values.len() {
                if j > 0 {
                    buf.push(b',');
                }
                write_value(buf, values.as_ref(), j)?;
            }
            buf.push(b']');
        }
        DataType::Struct(fields) => {
            let s = any.downcast_ref::<StructArray>().ok_or_else(missing)?;
            buf.push(b'{');
            for (j, field) in fields.iter().enumerate() {
                if j > 0 {
                    buf.push(b',');
                }
                write_json_string(buf, field.name())?;
                buf.push(b':');
                write_value(buf, s.column(j).as_ref(), i)?;
            }
            buf.push(b'}');
        }
        DataType::Map(..) => {
            let map = any.downcast_ref::<MapArray>().ok_or_else(missing)?;
            let entries = map.value(i);
            let keys = entries.column(0);
            let values = entries.column(1);
            buf.push(b'{');
            for j in 0..entries.len() {
                if j > 0 {
                    buf.push(b',');
                }
                let key = super::primitive::to_text(keys.as_ref(), j).unwrap_or_default();
                write_json_string(buf, &key)?;
                buf.push(b':');
                write_value(buf, values.as_ref(), j)?;
            }
            buf.push(b'}');
        }
        _ => return Err(missing()),
    }
    Ok(())
}
