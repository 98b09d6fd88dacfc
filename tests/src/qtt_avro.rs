//! AVRO records of test cases, as a client of the registry writes and reads them: JSON inputs
//! written with the latest schema of their topic's subject, and outputs read back, as JSON,
//! with the schema their bytes name. Conversions go through `apache-avro`'s values, so they
//! share no code with the engine's decoder and encoder.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use base64::Engine as _;
use eddy_registry::SchemaRegistry;
use serde_json::{Map, Value};

/// A schema a topic's records are written with, and its registry id.
#[derive(Debug, Clone)]
pub struct Writer {
    /// The schema's id.
    pub id: u32,
    /// The schema.
    pub schema: Schema,
}

impl Writer {
    /// The latest schema of `subject`, if it has one.
    pub async fn latest(registry: &SchemaRegistry, subject: &str) -> Option<Writer> {
        let latest = registry
            .version(subject, eddy_registry::VersionSpec::Latest, false)
            .await
            .ok()?;
        let schema = Schema::parse_str(&latest.schema.schema).ok()?;
        Some(Writer {
            id: latest.id,
            schema,
        })
    }

    /// `json` in Confluent's framing: zero, the id, the Avro body.
    pub fn write(&self, json: &Value) -> Result<Vec<u8>, String> {
        let value = to_avro(json, &self.schema)?;
        let writer = GenericDatumWriter::builder(&self.schema)
            .build()
            .map_err(|e| e.to_string())?;
        let body = writer
            .write_value_to_vec(value)
            .map_err(|e| format!("{e} (writing {json})"))?;
        let mut bytes = vec![0];
        bytes.extend_from_slice(&self.id.to_be_bytes());
        bytes.extend(body);
        Ok(bytes)
    }
}

/// A framed AVRO payload as JSON, read with the schema it names; what went wrong otherwise.
pub fn read(registry: &SchemaRegistry, bytes: &[u8]) -> Result<Value, String> {
    let [0, a, b, c, d, body @ ..] = bytes else {
        return Err("not in Confluent's wire format".into());
    };
    let id = u32::from_be_bytes([*a, *b, *c, *d]);
    let text = registry
        .schema_by_id(id)
        .ok_or_else(|| format!("no schema {id}"))?;
    let schema = Schema::parse_str(&text.schema).map_err(|e| e.to_string())?;
    let reader = GenericDatumReader::builder(&schema)
        .build()
        .map_err(|e| e.to_string())?;
    let value = reader
        .read_value(&mut &body[..])
        .map_err(|e| e.to_string())?;
    Ok(to_json(&value, &schema))
}

fn number(json: &Value) -> Result<f64, String> {
    match json {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is no number")),
        Value::String(s) => s.parse().map_err(|_| format!("{s:?} is no number")),
        other => Err(format!("{other} is no number")),
    }
}

fn integer(json: &Value) -> Result<i64, String> {
    match json {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| format!("{n} is no integer")),
        Value::String(s) => s.parse().map_err(|_| format!("{s:?} is no integer")),
        other => Err(format!("{other} is no integer")),
    }
}

fn field_of<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).or_else(|| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The unscaled two's-complement big-endian bytes of a decimal written as `text`.
fn decimal_bytes(text: &str, scale: usize) -> Result<Vec<u8>, String> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let mut fraction = fraction.to_string();
    fraction.truncate(scale);
    while fraction.len() < scale {
        fraction.push('0');
    }
    let mut unscaled: i128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| format!("{text:?} is no decimal"))?;
    if negative {
        unscaled = -unscaled;
    }
    let bytes = unscaled.to_be_bytes();
    // The shortest form that keeps the sign.
    let mut start = 0;
    while start < 15
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    Ok(bytes[start..].to_vec())
}

/// A test file's JSON as a value of `schema`: record fields match case-insensitively, a
/// missing field is null, and a union takes the first branch the value fits.
pub fn to_avro(json: &Value, schema: &Schema) -> Result<Avro, String> {
    Ok(match schema {
        Schema::Null if json.is_null() => Avro::Null,
        _ if json.is_null() && !matches!(schema, Schema::Union(_)) => {
            return Err(format!("null where {schema:?} is required"));
        }
        Schema::Union(union) => {
            for (i, branch) in union.variants().iter().enumerate() {
                if let Ok(v) = to_avro(json, branch) {
                    return Ok(Avro::Union(i as u32, Box::new(v)));
                }
            }
            return Err(format!("{json} fits no branch of {schema:?}"));
        }
        Schema::Boolean => Avro::Boolean(json.as_bool().ok_or("expected a boolean")?),
        Schema::Int => Avro::Int(integer(json)? as i32),
        Schema::Long => Avro::Long(integer(json)?),
        Schema::Float => Avro::Float(number(json)? as f32),
        Schema::Double => Avro::Double(number(json)?),
        Schema::String => Avro::String(match json {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Schema::Bytes | Schema::Fixed(_) => {
            let text = json.as_str().ok_or("expected base64 text")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| e.to_string())?;
            match schema {
                Schema::Fixed(f) => Avro::Fixed(f.size, bytes),
                _ => Avro::Bytes(bytes),
            }
        }
        Schema::Enum(e) => {
            let symbol = json.as_str().ok_or("expected an enum symbol")?;
            let index = e
                .symbols
                .iter()
                .position(|s| s == symbol)
                .ok_or_else(|| format!("{symbol} is no symbol of {}", e.name))?;
            Avro::Enum(index as u32, symbol.to_string())
        }
        Schema::Decimal(d) => {
            let text = match json {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Avro::Decimal(decimal_bytes(&text, d.scale)?.into())
        }
        Schema::Date => Avro::Date(integer(json)? as i32),
        Schema::TimeMillis => Avro::TimeMillis(integer(json)? as i32),
        Schema::TimeMicros => Avro::TimeMicros(integer(json)?),
        Schema::TimestampMillis => Avro::TimestampMillis(integer(json)?),
        Schema::TimestampMicros => Avro::TimestampMicros(integer(json)?),
        Schema::LocalTimestampMillis => Avro::LocalTimestampMillis(integer(json)?),
        Schema::Array(array) => Avro::Array(
            json.as_array()
                .ok_or("expected an array")?
                .iter()
                .map(|item| to_avro(item, &array.items))
                .collect::<Result<_, _>>()?,
        ),
        Schema::Map(map) => Avro::Map(
            json.as_object()
                .ok_or("expected an object")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_avro(v, &map.types)?)))
                .collect::<Result<_, String>>()?,
        ),
        Schema::Record(record) => {
            let fields = json.as_object().ok_or("expected an object")?;
            Avro::Record(
                record
                    .fields
                    .iter()
                    .map(|f| {
                        let value = field_of(fields, &f.name).unwrap_or(&Value::Null);
                        Ok((f.name.clone(), to_avro(value, &f.schema)?))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        other => return Err(format!("the tests do not write {other:?}")),
    })
}

/// An Avro value of `schema` as the JSON the test files expect: unions unwrapped, bytes in
/// base64, decimals as numbers, dates and times as numbers.
pub fn to_json(value: &Avro, schema: &Schema) -> Value {
    match (value, schema) {
        (Avro::Union(i, inner), Schema::Union(union)) => union
            .variants()
            .get(*i as usize)
            .map_or(Value::Null, |branch| to_json(inner, branch)),
        (Avro::Union(_, inner), other) => to_json(inner, other),
        (Avro::Null, _) => Value::Null,
        (Avro::Boolean(b), _) => Value::Bool(*b),
        (Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n), _) => Value::from(*n),
        (
            Avro::Long(n)
            | Avro::TimeMicros(n)
            | Avro::TimestampMillis(n)
            | Avro::TimestampMicros(n)
            | Avro::LocalTimestampMillis(n),
            _,
        ) => Value::from(*n),
        (Avro::Float(f), _) => Value::from(f64::from(*f)),
        (Avro::Double(f), _) => Value::from(*f),
        (Avro::String(s) | Avro::Enum(_, s), _) => Value::String(s.clone()),
        (Avro::Bytes(b) | Avro::Fixed(_, b), _) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Avro::Decimal(d), Schema::Decimal(ds)) => {
            let bytes: Vec<u8> = d.try_into().unwrap_or_default();
            let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
            let mut full = [if negative { 0xff } else { 0 }; 16];
            let len = bytes.len().min(16);
            full[16 - len..].copy_from_slice(&bytes[bytes.len() - len..]);
            let unscaled = i128::from_be_bytes(full);
            let text = format!("{}e-{}", unscaled, ds.scale);
            text.parse::<f64>().map_or(Value::Null, Value::from)
        }
        (Avro::Array(items), Schema::Array(array)) => {
            Value::Array(items.iter().map(|v| to_json(v, &array.items)).collect())
        }
        (Avro::Map(entries), Schema::Map(map)) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v, &map.types)))
                .collect(),
        ),
        (Avro::Record(fields), Schema::Record(record)) => Value::Object(
            fields
                .iter()
                .zip(&record.fields)
                .map(|((name, v), f)| (name.clone(), to_json(v, &f.schema)))
                .collect(),
        ),
        (other, _) => Value::String(format!("{other:?}")),
    }
}
