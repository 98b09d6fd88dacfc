//! PROTOBUF records of test cases, as a client of the registry writes and reads them: JSON
//! inputs written as the first message of their subject's latest schema, and outputs read back
//! as JSON with the message their framing names. Conversions are written here against
//! `prost-reflect`'s values, apart from the engine's.

use base64::Engine as _;
use eddy_engine::format::FormatSpec;
use eddy_engine::schema::Column;
use eddy_registry::{Parsed, SchemaRegistry};
use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as Pb,
};
use serde_json::{Map, Value, json};

/// The message a topic's records are written as, and its schema's registry id.
#[derive(Debug, Clone)]
pub struct Writer {
    /// The schema's id.
    pub id: u32,
    /// The message records are written as.
    pub message: MessageDescriptor,
    /// Its index among the schema's top-level messages.
    pub index: usize,
    /// Whether records are framed with the id (PROTOBUF) or bare (PROTOBUF_NOSR).
    pub framed: bool,
}

impl Writer {
    /// The message `full_name` names (the first one when `None`) in the latest schema of
    /// `subject`, if it has a Protobuf one.
    pub async fn latest(
        registry: &SchemaRegistry,
        subject: &str,
        full_name: Option<&str>,
    ) -> Option<Writer> {
        let latest = registry
            .version(subject, eddy_registry::VersionSpec::Latest, false)
            .await
            .ok()?;
        let Ok(Some(Parsed::Protobuf(schema))) = registry.parsed_by_id(latest.id) else {
            return None;
        };
        let messages = schema.messages();
        let index = match full_name {
            Some(name) => messages
                .iter()
                .position(|m| m.full_name() == name || m.name() == name)?,
            None => 0,
        };
        Some(Writer {
            id: latest.id,
            message: messages.get(index)?.clone(),
            index,
            framed: true,
        })
    }

    /// PROTOBUF_NOSR's writer for `columns` in `spec`: the message ksqlDB's schema for them
    /// generates, written bare.
    pub fn without_registry(columns: &[&Column], spec: &FormatSpec) -> Option<Writer> {
        Some(Writer {
            id: 0,
            message: nosr_message(columns, spec)?,
            index: 0,
            framed: false,
        })
    }

    /// `json` in Confluent's framing: zero, the id, the message's index, the message.
    pub fn write(&self, json: &Value) -> Result<Vec<u8>, String> {
        let message = to_message(json, &self.message)?;
        if !self.framed {
            return Ok(message.encode_to_vec());
        }
        let mut bytes = vec![0];
        bytes.extend_from_slice(&self.id.to_be_bytes());
        if self.index == 0 {
            bytes.push(0);
        } else {
            // One index, zig-zag encoded: a count of 1, then the index.
            bytes.push(2);
            bytes.push((self.index as u8) << 1);
        }
        bytes.extend(message.encode_to_vec());
        Ok(bytes)
    }
}

/// The message ksqlDB's schema for `columns` generates, as PROTOBUF_NOSR reads and writes.
fn nosr_message(columns: &[&Column], spec: &FormatSpec) -> Option<MessageDescriptor> {
    let named: Vec<(&str, &eddy_sql::ast::SqlType)> =
        columns.iter().map(|c| (c.name.as_str(), &c.ty)).collect();
    let text = eddy_engine::codec::protobuf::schema::generate(
        &named,
        spec.full_name.as_deref(),
        spec.protobuf_nullable,
    )
    .ok()?;
    let compiled = eddy_registry::protobuf::compile(&text, &[]).ok()?;
    compiled.messages().into_iter().next()
}

/// A bare PROTOBUF_NOSR payload of `columns` in `spec` as JSON.
pub fn read_bare(columns: &[&Column], spec: &FormatSpec, bytes: &[u8]) -> Result<Value, String> {
    let descriptor = nosr_message(columns, spec).ok_or("no schema for the columns")?;
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| e.to_string())?;
    Ok(to_json(&message))
}

fn to_message(json: &Value, descriptor: &MessageDescriptor) -> Result<DynamicMessage, String> {
    let object = json
        .as_object()
        .ok_or_else(|| format!("{json} is not an object for {}", descriptor.full_name()))?;
    let mut message = DynamicMessage::new(descriptor.clone());
    for (name, value) in object {
        if value.is_null() {
            continue;
        }
        // A field the schema lacks is dropped, as ksqlDB's runner writes inputs through the
        // source's columns.
        let Some(field) = descriptor.get_field_by_name(name).or_else(|| {
            descriptor
                .fields()
                .find(|f| f.name().eq_ignore_ascii_case(name))
        }) else {
            continue;
        };
        let converted = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return Err("a map without entries".into());
            };
            let value_field = entry.map_entry_value_field();
            let mut map = std::collections::HashMap::new();
            for (k, v) in value.as_object().ok_or("a map that is not an object")? {
                map.insert(MapKey::String(k.clone()), to_value(v, &value_field)?);
            }
            Pb::Map(map)
        } else if field.is_list() {
            let items = value.as_array().ok_or("a list that is not an array")?;
            Pb::List(
                items
                    .iter()
                    .map(|v| to_value(v, &field))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            to_value(value, &field)?
        };
        message.set_field(&field, converted);
    }
    Ok(message)
}

fn to_value(json: &Value, field: &FieldDescriptor) -> Result<Pb, String> {
    let int = || {
        json.as_i64()
            .ok_or_else(|| format!("{json} is not an integer"))
    };
    let float = || {
        json.as_f64()
            .ok_or_else(|| format!("{json} is not a number"))
    };
    Ok(match field.kind() {
        Kind::Bool => Pb::Bool(json.as_bool().ok_or("not a boolean")?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Pb::I32(int()? as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => Pb::U32(int()? as u32),
        Kind::Uint64 | Kind::Fixed64 => Pb::U64(int()? as u64),
        Kind::Float => Pb::F32(float()? as f32),
        Kind::Double => Pb::F64(float()?),
        Kind::String => Pb::String(match json {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Kind::Bytes => Pb::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(json.as_str().ok_or("bytes that are not base64 text")?)
                .map_err(|e| e.to_string())?
                .into(),
        ),
        Kind::Enum(e) => Pb::EnumNumber(match json {
            Value::String(name) => e
                .get_value_by_name(name)
                .ok_or_else(|| format!("{name} is not in {}", e.full_name()))?
                .number(),
            other => other.as_i64().ok_or("not an enum")? as i32,
        }),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => {
                let millis = int()?;
                let mut t = DynamicMessage::new(m.clone());
                t.set_field_by_name("seconds", Pb::I64(millis.div_euclid(1000)));
                t.set_field_by_name(
                    "nanos",
                    Pb::I32((millis.rem_euclid(1000) * 1_000_000) as i32),
                );
                Pb::Message(t)
            }
            "google.type.Date" => {
                use chrono::Datelike;
                let date = chrono::NaiveDate::default()
                    .checked_add_signed(chrono::Duration::days(int()?))
                    .ok_or("a date out of range")?;
                let mut d = DynamicMessage::new(m.clone());
                d.set_field_by_name("year", Pb::I32(date.year()));
                d.set_field_by_name("month", Pb::I32(date.month() as i32));
                d.set_field_by_name("day", Pb::I32(date.day() as i32));
                Pb::Message(d)
            }
            "google.type.TimeOfDay" => {
                let millis = int()?;
                let mut t = DynamicMessage::new(m.clone());
                t.set_field_by_name("hours", Pb::I32((millis / 3_600_000) as i32));
                t.set_field_by_name("minutes", Pb::I32((millis / 60_000 % 60) as i32));
                t.set_field_by_name("seconds", Pb::I32((millis / 1000 % 60) as i32));
                t.set_field_by_name("nanos", Pb::I32((millis % 1000 * 1_000_000) as i32));
                Pb::Message(t)
            }
            "confluent.type.Decimal" => {
                let text = match json {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
                let unscaled: i128 = format!("{whole}{fraction}")
                    .parse()
                    .map_err(|e| format!("{text} is not a decimal: {e}"))?;
                let mut d = DynamicMessage::new(m.clone());
                let bytes = unscaled.to_be_bytes();
                let skip = bytes
                    .windows(2)
                    .take_while(|w| (w[0] == 0 && w[1] < 0x80) || (w[0] == 0xff && w[1] >= 0x80))
                    .count();
                d.set_field_by_name("value", Pb::Bytes(bytes[skip..].to_vec().into()));
                d.set_field_by_name("scale", Pb::I32(fraction.len() as i32));
                d.set_field_by_name("precision", Pb::U32((whole.len() + fraction.len()) as u32));
                Pb::Message(d)
            }
            wrapper if wrapper.starts_with("google.protobuf.") && wrapper.ends_with("Value") => {
                let inner = m
                    .get_field_by_name("value")
                    .ok_or("a wrapper without value")?;
                let mut w = DynamicMessage::new(m.clone());
                w.set_field(&inner, to_value(json, &inner)?);
                Pb::Message(w)
            }
            _ => Pb::Message(to_message(json, &m)?),
        },
    })
}

/// A framed PROTOBUF payload as JSON, read as the message its framing names; what went wrong
/// otherwise.
pub fn read(registry: &SchemaRegistry, bytes: &[u8]) -> Result<Value, String> {
    let [0, a, b, c, d, rest @ ..] = bytes else {
        return Err("not in Confluent's wire format".into());
    };
    let id = u32::from_be_bytes([*a, *b, *c, *d]);
    let Ok(Some(Parsed::Protobuf(schema))) = registry.parsed_by_id(id) else {
        return Err(format!("no PROTOBUF schema {id}"));
    };
    // Only the first message (one zero byte of indexes) is written by Eddy's sinks.
    let [0, body @ ..] = rest else {
        return Err("message indexes other than [0]".into());
    };
    let descriptor = schema.messages().into_iter().next().ok_or("no message")?;
    let message = DynamicMessage::decode(descriptor, body).map_err(|e| e.to_string())?;
    Ok(to_json(&message))
}

fn to_json(message: &DynamicMessage) -> Value {
    let mut object = Map::new();
    for field in message.descriptor().fields() {
        // ksqlDB reads an unset message, optional field or bytes field as null.
        let unset = !message.has_field(&field);
        let value = if unset
            && (field.supports_presence()
                || (matches!(field.kind(), Kind::Bytes) && !field.is_list()))
        {
            Value::Null
        } else {
            match message.get_field(&field).as_ref() {
                Pb::List(items) => Value::Array(items.iter().map(|v| json_of(v, &field)).collect()),
                Pb::Map(entries) => {
                    let value_field = match field.kind() {
                        Kind::Message(entry) => entry.map_entry_value_field(),
                        _ => field.clone(),
                    };
                    let mut map = Map::new();
                    for (k, v) in entries {
                        if let MapKey::String(k) = k {
                            map.insert(k.clone(), json_of(v, &value_field));
                        }
                    }
                    Value::Object(map)
                }
                other => json_of(other, &field),
            }
        };
        object.insert(field.name().to_string(), value);
    }
    Value::Object(object)
}

fn json_of(value: &Pb, field: &FieldDescriptor) -> Value {
    match value {
        Pb::Bool(b) => json!(b),
        Pb::I32(n) => json!(n),
        Pb::I64(n) => json!(n),
        Pb::U32(n) => json!(n),
        Pb::U64(n) => json!(n),
        Pb::F32(n) => json!(f64::from(*n)),
        Pb::F64(n) => json!(n),
        Pb::String(s) => json!(s),
        Pb::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Pb::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => e.get_value(*n).map_or(json!(n), |v| json!(v.name())),
            _ => json!(n),
        },
        Pb::Message(m) if m.descriptor().full_name() == "google.protobuf.Timestamp" => {
            let get = |name: &str| match m.get_field_by_name(name).as_deref() {
                Some(Pb::I64(n)) => *n,
                Some(Pb::I32(n)) => i64::from(*n),
                _ => 0,
            };
            json!(get("seconds") * 1000 + get("nanos") / 1_000_000)
        }
        Pb::Message(m) if m.descriptor().full_name() == "google.type.Date" => {
            let get = |name: &str| match m.get_field_by_name(name).as_deref() {
                Some(Pb::I32(n)) => *n,
                _ => 0,
            };
            chrono::NaiveDate::from_ymd_opt(get("year"), get("month") as u32, get("day") as u32)
                .map_or(Value::Null, |d| {
                    json!(
                        d.signed_duration_since(chrono::NaiveDate::default())
                            .num_days()
                    )
                })
        }
        Pb::Message(m) if m.descriptor().full_name() == "google.type.TimeOfDay" => {
            let get = |name: &str| match m.get_field_by_name(name).as_deref() {
                Some(Pb::I32(n)) => i64::from(*n),
                _ => 0,
            };
            json!(
                ((get("hours") * 60 + get("minutes")) * 60 + get("seconds")) * 1000
                    + get("nanos") / 1_000_000
            )
        }
        Pb::Message(m) if m.descriptor().full_name() == "confluent.type.Decimal" => {
            let bytes = match m.get_field_by_name("value").as_deref() {
                Some(Pb::Bytes(b)) => b.to_vec(),
                _ => Vec::new(),
            };
            let scale = match m.get_field_by_name("scale").as_deref() {
                Some(Pb::I32(n)) => *n,
                _ => 0,
            };
            let mut unscaled: i128 = if bytes.first().is_some_and(|b| *b >= 0x80) {
                -1
            } else {
                0
            };
            for b in &bytes {
                unscaled = (unscaled << 8) | i128::from(*b);
            }
            json!(unscaled as f64 / 10f64.powi(scale))
        }
        Pb::Message(m)
            if m.descriptor().full_name().starts_with("google.protobuf.")
                && m.descriptor().full_name().ends_with("Value") =>
        {
            match m.descriptor().get_field_by_name("value") {
                Some(inner) => json_of(&m.get_field(&inner), &inner),
                None => Value::Null,
            }
        }
        Pb::Message(m) => to_json(m),
        Pb::List(items) => Value::Array(items.iter().map(|v| json_of(v, field)).collect()),
        Pb::Map(_) => Value::Null,
    }
}
