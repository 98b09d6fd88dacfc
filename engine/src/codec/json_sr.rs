//! The JSON_SR format: JSON behind Confluent's framing (a zero magic byte and the schema's
//! 4-byte registry id), read and written with the JSON format's rules; and ksqlDB's translation
//! between column types and JSON Schemas (through Connect's JSON Schema converter): the schema
//! it registers for a source's columns, and the columns it infers from a registered one.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use eddy_registry::{SchemaRegistry, SchemaRequest, SchemaType};
use eddy_sql::ast::{Ident, SqlType, StructField};
use serde_json::{Map, Value, json};

use super::json_text::OrderedJson;
use super::{Decoded, json};
use crate::codec::avro::schema::Names;
use crate::error::{EngineError, Result};

/// What ksqlDB says of a JSON_SR payload without the magic byte.
const NO_MAGIC: &str = "Got unexpected JSON serialization format that did not start with the magic byte. If this stream was not serialized using the JsonSchemaConverter, then make sure the stream is declared with JSON format (not JSON_SR).";

/// A codec of the JSON_SR format for one set of columns.
pub struct JsonSrCodec {
    registry: Arc<SchemaRegistry>,
    columns: Vec<(String, SqlType)>,
    schema: SchemaRef,
    wrapped: bool,
    schema_id: Option<u32>,
    json: json::DecoderCache,
    /// The id rows are framed with, once known.
    id: OnceLock<u32>,
}

impl std::fmt::Debug for JsonSrCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSrCodec")
            .field("columns", &self.columns)
            .field("wrapped", &self.wrapped)
            .finish_non_exhaustive()
    }
}

impl JsonSrCodec {
    /// A codec for `columns` (with their Arrow `schema`), framing with `schema_id` or with the
    /// id of the schema the columns generate.
    pub fn new(
        registry: Arc<SchemaRegistry>,
        columns: Vec<(String, SqlType)>,
        schema: SchemaRef,
        wrapped: bool,
        schema_id: Option<u32>,
    ) -> Self {
        JsonSrCodec {
            registry,
            columns,
            schema,
            wrapped,
            schema_id,
            json: json::DecoderCache::default(),
            id: OnceLock::new(),
        }
    }

    /// Decodes a batch: each payload's JSON after its framing (the id is not needed to read
    /// JSON, as ksqlDB's deserializer does not look it up either).
    pub fn decode(&self, payloads: &[Option<&[u8]>]) -> Decoded {
        let mut errors = Vec::new();
        let bodies: Vec<Option<&[u8]>> = payloads
            .iter()
            .enumerate()
            .map(|(row, payload)| match *payload {
                Some([0, _, _, _, _, body @ ..]) => Some(body),
                Some(_) => {
                    errors.push((row, NO_MAGIC.to_string()));
                    None
                }
                None => None,
            })
            .collect();
        let mut decoded = json::decode(&self.schema, self.wrapped, &bodies, &self.json);
        decoded.errors.extend(errors);
        decoded.errors.sort_by_key(|(row, _)| *row);
        decoded
    }

    /// Encodes rows as framed JSON.
    pub fn encode(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Option<Vec<u8>>>> {
        let id = match self.id.get() {
            Some(id) => *id,
            None => {
                let id = self.writer_id()?;
                *self.id.get_or_init(|| id)
            }
        };
        Ok(json::encode(&self.schema, columns, rows, self.wrapped)?
            .into_iter()
            .map(|body| {
                body.map(|body| {
                    let mut framed = Vec::with_capacity(body.len() + 5);
                    framed.push(0);
                    framed.extend_from_slice(&id.to_be_bytes());
                    framed.extend(body);
                    framed
                })
            })
            .collect())
    }

    fn writer_id(&self) -> Result<u32> {
        if let Some(id) = self.schema_id {
            return Ok(id);
        }
        let named: Vec<(&str, &SqlType)> =
            self.columns.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let request = registry_request(&named, self.wrapped)?;
        self.registry
            .registered_id(&request)
            .map_err(|e| EngineError::internal_from("the generated JSON schema is invalid", e))?
            .ok_or_else(|| {
                EngineError::statement(format!(
                    "The JSON schema {} is not registered in the schema registry",
                    request.schema
                ))
            })
    }
}

/// The JSON Schema ksqlDB registers for `columns`: an object of optional properties (each a
/// `oneOf` null or its type, with Connect's `connect.index` and `connect.type`), or, for one
/// unwrapped column, that column's optional type alone.
pub fn generate(columns: &[(&str, &SqlType)], wrapped: bool) -> Result<Value> {
    if !wrapped && let [(_, ty)] = columns {
        return Ok(optional(type_schema(ty)?));
    }
    let mut properties = Map::new();
    for (index, (name, ty)) in columns.iter().enumerate() {
        let mut schema = optional(type_schema(ty)?);
        if let Value::Object(o) = &mut schema {
            o.insert("connect.index".into(), json!(index));
        }
        properties.insert((*name).to_string(), schema);
    }
    Ok(json!({"type": "object", "properties": properties}))
}

/// The schema Eddy writes `columns` with, as the registry takes it.
pub fn registry_request(columns: &[(&str, &SqlType)], wrapped: bool) -> Result<SchemaRequest> {
    Ok(SchemaRequest {
        schema: generate(columns, wrapped)?.to_string(),
        schema_type: SchemaType::Json,
        references: Vec::new(),
    })
}

fn optional(schema: Value) -> Value {
    json!({"oneOf": [{"type": "null"}, schema]})
}

fn type_schema(ty: &SqlType) -> Result<Value> {
    let connect = |name: &str| format!("org.apache.kafka.connect.data.{name}");
    Ok(match ty {
        SqlType::Boolean => json!({"type": "boolean"}),
        SqlType::Int => json!({"type": "integer", "connect.type": "int32"}),
        SqlType::Bigint => json!({"type": "integer", "connect.type": "int64"}),
        SqlType::Double => json!({"type": "number", "connect.type": "float64"}),
        SqlType::String => json!({"type": "string"}),
        SqlType::Bytes => json!({"type": "string", "connect.type": "bytes"}),
        SqlType::Decimal { precision, scale } => json!({
            "type": "number",
            "title": connect("Decimal"),
            "connect.version": 1,
            "connect.type": "bytes",
            "connect.parameters": {
                "scale": scale.to_string(),
                "connect.decimal.precision": precision.to_string(),
            },
        }),
        SqlType::Date => {
            json!({"type": "integer", "title": connect("Date"), "connect.version": 1, "connect.type": "int32"})
        }
        SqlType::Time => {
            json!({"type": "integer", "title": connect("Time"), "connect.version": 1, "connect.type": "int32"})
        }
        SqlType::Timestamp => {
            json!({"type": "integer", "title": connect("Timestamp"), "connect.version": 1, "connect.type": "int64"})
        }
        SqlType::Array(element) => {
            json!({"type": "array", "items": optional(type_schema(element)?)})
        }
        SqlType::Map(key, value) => {
            if **key != SqlType::String {
                return Err(EngineError::statement(
                    "JSON_SR only supports MAP types with STRING keys",
                ));
            }
            json!({
                "type": "object",
                "additionalProperties": optional(type_schema(value)?),
                "connect.type": "map",
            })
        }
        SqlType::Struct(fields) => {
            let columns: Vec<(&str, &SqlType)> = fields
                .iter()
                .map(|f| (f.name.value.as_str(), &f.ty))
                .collect();
            generate(&columns, true)?
        }
        SqlType::Named(name) => {
            return Err(EngineError::statement(format!(
                "Unknown type: {}",
                name.value
            )));
        }
    })
}

/// The columns ksqlDB infers from a JSON Schema's text: an object's properties in the order
/// written, or one column named `single` for any other schema (and always when not `wrapped`).
pub fn infer(
    text: &str,
    wrapped: bool,
    single: &str,
    names: Names,
) -> Result<Vec<(String, SqlType)>> {
    let schema: OrderedJson = serde_json::from_str(text)
        .map_err(|e| EngineError::statement(format!("The JSON schema cannot be read: {e}")))?;
    let schema = non_null(&schema);
    match schema.get("properties").and_then(OrderedJson::entries) {
        Some(properties) if wrapped => properties
            .iter()
            .map(|(name, s)| Ok((spell(names, name), sql_type(s, name, names, 0)?)))
            .collect(),
        _ => Ok(vec![(
            single.to_string(),
            sql_type(schema, single, names, 0)?,
        )]),
    }
}

fn spell(names: Names, name: &str) -> String {
    match names {
        Names::Upper => name.to_uppercase(),
        Names::Original => name.to_string(),
    }
}

/// `schema` without a `oneOf` null branch.
fn non_null(schema: &OrderedJson) -> &OrderedJson {
    if let Some(OrderedJson::Array(branches)) = schema.get("oneOf") {
        let others: Vec<&OrderedJson> = branches
            .iter()
            .filter(|b| b.get("type").and_then(OrderedJson::as_str) != Some("null"))
            .collect();
        if let [one] = others.as_slice() {
            return one;
        }
    }
    schema
}

fn sql_type(schema: &OrderedJson, path: &str, names: Names, depth: usize) -> Result<SqlType> {
    if depth > 64 {
        return Err(EngineError::statement(format!(
            "The JSON schema of {path} nests too deeply for a column type"
        )));
    }
    let schema = non_null(schema);
    let text = |key: &str| schema.get(key).and_then(OrderedJson::as_str);
    let connect_type = text("connect.type");
    let title = text("title").unwrap_or("");
    let unsupported =
        || EngineError::statement(format!("Unsupported JSON schema for field '{path}'"));
    Ok(match (text("type"), connect_type) {
        _ if title == "org.apache.kafka.connect.data.Decimal" => {
            let parameter = |name: &str| {
                schema
                    .get("connect.parameters")
                    .and_then(|p| p.get(name))
                    .and_then(OrderedJson::as_str)
                    .and_then(|v| v.parse::<u32>().ok())
            };
            SqlType::Decimal {
                precision: parameter("connect.decimal.precision").unwrap_or(38),
                scale: parameter("scale").unwrap_or(0),
            }
        }
        _ if title == "org.apache.kafka.connect.data.Timestamp" => SqlType::Timestamp,
        _ if title == "org.apache.kafka.connect.data.Date" => SqlType::Date,
        _ if title == "org.apache.kafka.connect.data.Time" => SqlType::Time,
        (Some("boolean"), _) => SqlType::Boolean,
        (Some("integer"), Some("int8" | "int16" | "int32")) => SqlType::Int,
        (Some("integer"), _) => SqlType::Bigint,
        (Some("number"), _) => SqlType::Double,
        (Some("string"), Some("bytes")) => SqlType::Bytes,
        (Some("string"), _) => SqlType::String,
        (Some("array"), _) => SqlType::Array(Box::new(sql_type(
            schema.get("items").ok_or_else(unsupported)?,
            path,
            names,
            depth + 1,
        )?)),
        (Some("object"), _) => match schema.get("properties").and_then(OrderedJson::entries) {
            Some(properties) => SqlType::Struct(
                properties
                    .iter()
                    .map(|(name, s)| {
                        Ok(StructField {
                            name: Ident::exact(&spell(names, name)),
                            ty: sql_type(s, name, names, depth + 1)?,
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            None => SqlType::Map(
                Box::new(SqlType::String),
                Box::new(match schema.get("additionalProperties") {
                    Some(values @ OrderedJson::Object(_)) => {
                        sql_type(values, path, names, depth + 1)?
                    }
                    _ => SqlType::String,
                }),
            ),
        },
        _ => return Err(unsupported()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_schemas_infer_back() {
        let columns = [
            ("I", &SqlType::Int),
            ("L", &SqlType::Bigint),
            ("A", &SqlType::Array(Box::new(SqlType::String))),
            (
                "M",
                &SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Double)),
            ),
            ("T", &SqlType::Timestamp),
            (
                "D",
                &SqlType::Decimal {
                    precision: 4,
                    scale: 2,
                },
            ),
        ];
        let schema = generate(&columns, true).unwrap();
        let text = schema.to_string();
        assert_eq!(
            schema["properties"]["I"],
            json!({"connect.index": 0, "oneOf": [{"type": "null"}, {"type": "integer", "connect.type": "int32"}]})
        );
        let inferred = infer(&text, true, "ROWVAL", Names::Upper).unwrap();
        let back: Vec<(&str, &SqlType)> = inferred.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut expected = columns.to_vec();
        expected.sort_by_key(|(n, _)| *n);
        let mut back_sorted = back.clone();
        back_sorted.sort_by_key(|(n, _)| *n);
        assert_eq!(back_sorted, expected);
    }
}
