//! Protobuf messages to and from rows, with ksqlDB's rules: a proto3 field without presence
//! that is unset reads as its type's default (0, false, "", an empty list or map), a message
//! field that is unset reads as null; enums read as their names; Google's and Confluent's
//! well-known messages read as TIMESTAMP, DATE, TIME, DECIMAL and the wrapped scalars.
//!
//! Reading builds each message's JSON object (ksqlDB's JSON rules then make it the columns);
//! writing sets each field from the column or struct field of its name.

use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float64Array, Int32Array, Int64Array, StringArray, Time32MillisecondArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::DataType;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json, json};

/// A message as the JSON object of its fields.
pub fn message_json(message: &DynamicMessage) -> Json {
    let mut object = Map::new();
    for field in message.descriptor().fields() {
        // An unset message, an unset field with presence, and (as Confluent's converter reads
        // it) unset bytes are null; other unset fields read as their defaults.
        let unset = !message.has_field(&field);
        let value = if unset
            && (field.supports_presence()
                || (matches!(field.kind(), Kind::Bytes) && !field.is_list()))
        {
            Json::Null
        } else {
            field_json(&field, &message.get_field(&field))
        };
        object.insert(field.name().to_string(), value);
    }
    Json::Object(object)
}

fn field_json(field: &FieldDescriptor, value: &Value) -> Json {
    match value {
        Value::List(items) => Json::Array(items.iter().map(|v| value_json(field, v)).collect()),
        Value::Map(entries) => {
            let value_field = match field.kind() {
                Kind::Message(entry) => Some(entry.map_entry_value_field()),
                _ => None,
            };
            let mut object = Map::new();
            for (key, v) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                let v = value_field
                    .as_ref()
                    .map_or(Json::Null, |f| value_json(f, v));
                object.insert(key, v);
            }
            Json::Object(object)
        }
        other => value_json(field, other),
    }
}

/// One value (an element, for a repeated field) of `field`.
fn value_json(field: &FieldDescriptor, value: &Value) -> Json {
    match value {
        Value::Bool(b) => json!(b),
        Value::I32(n) => json!(n),
        Value::I64(n) => json!(n),
        Value::U32(n) => json!(n),
        Value::U64(n) => json!(n),
        Value::F32(n) => json!(f64::from(*n)),
        Value::F64(n) => json!(n),
        Value::String(s) => json!(s),
        Value::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| json!(n.to_string()), |v| json!(v.name())),
            _ => json!(n),
        },
        Value::Message(m) => well_known_json(m).unwrap_or_else(|| message_json(m)),
        Value::List(_) | Value::Map(_) => field_json(field, value),
    }
}

/// A well-known message as the value of the column type it maps to.
fn well_known_json(message: &DynamicMessage) -> Option<Json> {
    let int = |name: &str| -> i64 {
        message
            .get_field_by_name(name)
            .and_then(|v| match v.as_ref() {
                Value::I32(n) => Some(i64::from(*n)),
                Value::I64(n) => Some(*n),
                Value::U32(n) => Some(i64::from(*n)),
                Value::U64(n) => i64::try_from(*n).ok(),
                _ => None,
            })
            .unwrap_or(0)
    };
    let name = message.descriptor().full_name().to_string();
    Some(match name.as_str() {
        "google.protobuf.Timestamp" => json!(
            int("seconds")
                .saturating_mul(1000)
                .saturating_add(int("nanos") / 1_000_000)
        ),
        "google.type.Date" => {
            let date = chrono::NaiveDate::from_ymd_opt(
                i32::try_from(int("year")).ok()?,
                u32::try_from(int("month")).ok()?,
                u32::try_from(int("day")).ok()?,
            )?;
            json!(
                date.signed_duration_since(chrono::NaiveDate::default())
                    .num_days()
            )
        }
        // Saturating: the fields are any int32s a writer put there.
        "google.type.TimeOfDay" => json!(
            int("hours")
                .saturating_mul(60)
                .saturating_add(int("minutes"))
                .saturating_mul(60)
                .saturating_add(int("seconds"))
                .saturating_mul(1000)
                .saturating_add(int("nanos") / 1_000_000)
        ),
        "confluent.type.Decimal" => {
            let bytes = match message.get_field_by_name("value")?.as_ref() {
                Value::Bytes(b) => b.to_vec(),
                _ => return None,
            };
            json!(decimal_text(&bytes, int("scale")))
        }
        wrapper if wrapper.starts_with("google.protobuf.") && wrapper.ends_with("Value") => {
            let field = message.descriptor().get_field_by_name("value")?;
            value_json(&field, &message.get_field(&field))
        }
        _ => return None,
    })
}

/// Confluent's decimal (big-endian two's-complement unscaled bytes) as text.
fn decimal_text(bytes: &[u8], scale: i64) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut unscaled: i128 = if negative { -1 } else { 0 };
    for b in bytes.iter().take(16) {
        unscaled = (unscaled << 8) | i128::from(*b);
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::try_from(scale).unwrap_or(0);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Row `row` of `columns` (named by `names`) as a message of `descriptor`: each column sets
/// the field of its name (exactly, else ignoring case); a null leaves its field unset.
pub fn row_message(
    descriptor: &MessageDescriptor,
    names: &[String],
    columns: &[ArrayRef],
    row: usize,
) -> Result<DynamicMessage, String> {
    let mut message = DynamicMessage::new(descriptor.clone());
    for (name, column) in names.iter().zip(columns) {
        let Some(field) = field_named(descriptor, name) else {
            continue;
        };
        if let Some(value) = field_value(&field, column.as_ref(), row)? {
            message.set_field(&field, value);
        }
    }
    Ok(message)
}

fn field_named(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor.get_field_by_name(name).or_else(|| {
        descriptor
            .fields()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    })
}

/// The value `field` takes from `array` at `row`; `None` for a null.
fn field_value(
    field: &FieldDescriptor,
    array: &dyn Array,
    row: usize,
) -> Result<Option<Value>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    if field.is_map() {
        let map = array.as_map_opt().ok_or("a MAP column for a map field")?;
        let Kind::Message(entry) = field.kind() else {
            return Err("a map field without an entry message".into());
        };
        let value_field = entry.map_entry_value_field();
        let entries = map.value(row);
        let keys = entries.column(0);
        let values = entries.column(1);
        let mut out = std::collections::HashMap::new();
        for i in 0..entries.len() {
            let key = keys
                .as_string_opt::<i32>()
                .map(|k| k.value(i).to_string())
                .ok_or("map keys are not strings")?;
            let value = single_value(&value_field, values.as_ref(), i)?
                .unwrap_or_else(|| value_field.default_value());
            out.insert(MapKey::String(key), value);
        }
        return Ok(Some(Value::Map(out)));
    }
    if field.is_list() {
        let list = array
            .as_list_opt::<i32>()
            .ok_or("an ARRAY column for a repeated field")?;
        let items = list.value(row);
        let mut out = Vec::with_capacity(items.len());
        for i in 0..items.len() {
            // Protobuf lists hold no nulls: a null element is written as the default.
            out.push(
                single_value(field, items.as_ref(), i)?.unwrap_or_else(|| default_element(field)),
            );
        }
        return Ok(Some(Value::List(out)));
    }
    single_value(field, array, row)
}

fn default_element(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Message(m) => Value::Message(DynamicMessage::new(m)),
        Kind::Enum(e) => Value::EnumNumber(e.default_value().number()),
        other => match other {
            Kind::Bool => Value::Bool(false),
            Kind::String => Value::String(String::new()),
            Kind::Bytes => Value::Bytes(Default::default()),
            Kind::Float => Value::F32(0.0),
            Kind::Double => Value::F64(0.0),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(0),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(0),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(0),
            _ => Value::I64(0),
        },
    }
}

/// One value of `field`'s kind from `array` at `row`.
fn single_value(
    field: &FieldDescriptor,
    array: &dyn Array,
    row: usize,
) -> Result<Option<Value>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    let mismatch = || {
        format!(
            "a {} column cannot be written to the Protobuf field {} ({:?})",
            array.data_type(),
            field.full_name(),
            field.kind()
        )
    };
    let int = || -> Option<i64> {
        match array.data_type() {
            DataType::Int32 => Some(i64::from(
                array.as_any().downcast_ref::<Int32Array>()?.value(row),
            )),
            DataType::Int64 => Some(array.as_any().downcast_ref::<Int64Array>()?.value(row)),
            _ => None,
        }
    };
    let float = || -> Option<f64> {
        match array.data_type() {
            DataType::Float64 => Some(array.as_any().downcast_ref::<Float64Array>()?.value(row)),
            _ => int().map(|n| n as f64),
        }
    };
    let text = || {
        array
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|s| s.value(row).to_string())
    };
    Ok(Some(match field.kind() {
        Kind::Bool => Value::Bool(
            array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(mismatch)?
                .value(row),
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(int().ok_or_else(mismatch)? as i32)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int().ok_or_else(mismatch)?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(int().ok_or_else(mismatch)? as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(int().ok_or_else(mismatch)? as u64),
        Kind::Float => Value::F32(float().ok_or_else(mismatch)? as f32),
        Kind::Double => Value::F64(float().ok_or_else(mismatch)?),
        Kind::String => Value::String(text().ok_or_else(mismatch)?),
        Kind::Bytes => Value::Bytes(
            array
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(mismatch)?
                .value(row)
                .to_vec()
                .into(),
        ),
        Kind::Enum(e) => {
            let name = text().ok_or_else(mismatch)?;
            let value = e
                .get_value_by_name(&name)
                .ok_or_else(|| format!("{name} is not a value of the enum {}", e.full_name()))?;
            Value::EnumNumber(value.number())
        }
        Kind::Message(m) => Value::Message(message_value(&m, array, row).ok_or_else(mismatch)??),
    }))
}

/// A message-typed value: a well-known type from its column type, or a nested message from a
/// STRUCT column.
fn message_value(
    descriptor: &MessageDescriptor,
    array: &dyn Array,
    row: usize,
) -> Option<Result<DynamicMessage, String>> {
    let mut message = DynamicMessage::new(descriptor.clone());
    let mut set = |name: &str, value: Value| {
        if let Some(field) = descriptor.get_field_by_name(name) {
            message.set_field(&field, value);
        }
    };
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let millis = array
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()?
                .value(row);
            set("seconds", Value::I64(millis.div_euclid(1000)));
            set(
                "nanos",
                Value::I32((millis.rem_euclid(1000) * 1_000_000) as i32),
            );
        }
        "google.type.Date" => {
            let days = array.as_any().downcast_ref::<Date32Array>()?.value(row);
            let date = chrono::NaiveDate::default()
                .checked_add_signed(chrono::Duration::days(i64::from(days)))?;
            use chrono::Datelike;
            set("year", Value::I32(date.year()));
            set("month", Value::I32(date.month() as i32));
            set("day", Value::I32(date.day() as i32));
        }
        "google.type.TimeOfDay" => {
            let millis = array
                .as_any()
                .downcast_ref::<Time32MillisecondArray>()?
                .value(row);
            set("hours", Value::I32(millis / 3_600_000));
            set("minutes", Value::I32(millis / 60_000 % 60));
            set("seconds", Value::I32(millis / 1000 % 60));
            set("nanos", Value::I32(millis % 1000 * 1_000_000));
        }
        "confluent.type.Decimal" => {
            let decimals = array.as_any().downcast_ref::<Decimal128Array>()?;
            let unscaled = decimals.value(row);
            set("value", Value::Bytes(minimal_bytes(unscaled).into()));
            set("precision", Value::U32(u32::from(decimals.precision())));
            set("scale", Value::I32(i32::from(decimals.scale())));
        }
        wrapper if wrapper.starts_with("google.protobuf.") && wrapper.ends_with("Value") => {
            let field = descriptor.get_field_by_name("value")?;
            match single_value(&field, array, row) {
                Ok(Some(value)) => message.set_field(&field, value),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        _ => {
            let structs = array.as_struct_opt()?;
            let names: Vec<String> = structs.fields().iter().map(|f| f.name().clone()).collect();
            return Some(row_message(descriptor, &names, structs.columns(), row));
        }
    }
    Some(Ok(message))
}

/// The shortest big-endian two's-complement bytes of `value`, as Java's BigInteger writes it.
fn minimal_bytes(value: i128) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_read_back_from_their_minimal_bytes() {
        for (value, scale, text) in [
            (12345i128, 2, "123.45"),
            (-5, 3, "-0.005"),
            (0, 0, "0"),
            (-128, 0, "-128"),
            (255, 1, "25.5"),
        ] {
            assert_eq!(decimal_text(&minimal_bytes(value), scale), text);
        }
        assert_eq!(minimal_bytes(255), [0, 255]);
        assert_eq!(minimal_bytes(-1), [255]);
    }
}
