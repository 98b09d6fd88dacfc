//! A registered schema: its type, its text, the schemas it references, and its parsed form.
//!
//! Avro schemas are parsed with `apache-avro`, which also checks their compatibility. The
//! registry keeps a schema's text as JSON re-serialized from what was sent, so two texts that
//! differ only in spacing or key order are one schema with one id.

use std::fmt;

use apache_avro::Schema as AvroSchema;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::protobuf::ProtobufSchema;

/// The kinds of schema Confluent's registry keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    /// Apache Avro, the default when a request names none.
    Avro,
    /// JSON Schema.
    Json,
    /// Protocol Buffers.
    Protobuf,
}

impl SchemaType {
    /// The type a request names (`AVRO`, `JSON`, `PROTOBUF`, any case), Avro when it names none.
    pub fn parse(name: Option<&str>) -> Result<Self> {
        match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("JSON") => Ok(SchemaType::Json),
            Some("PROTOBUF") => Ok(SchemaType::Protobuf),
            Some(other) => Err(RegistryError::invalid_schema(format!(
                "unknown schema type {other}"
            ))),
        }
    }

    /// The types this registry takes today.
    pub const SUPPORTED: &'static [&'static str] = &["AVRO", "JSON", "PROTOBUF"];
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        })
    }
}

/// A schema a registered one refers to by name: another subject's version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    /// The name the referring schema uses for it (an Avro full name, a `.proto` import).
    pub name: String,
    /// The subject it is registered under.
    pub subject: String,
    /// Its version under that subject.
    pub version: i32,
}

/// A schema as the registry keeps it: type, normalized text and references.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaText {
    /// Its kind.
    #[serde(rename = "schemaType")]
    pub schema_type: SchemaType,
    /// Its text, normalized.
    pub schema: String,
    /// The schemas it refers to.
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// A schema parsed, for compatibility checks and for the formats that read with it.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// An Avro schema.
    Avro(AvroSchema),
    /// A compiled Protobuf schema.
    Protobuf(ProtobufSchema),
    /// A JSON Schema document.
    Json(serde_json::Value),
}

/// Parses `text` as a schema of `schema_type`, with the schemas it references (each by the
/// name it refers to it by, with its text, in the order given); returns its normalized text
/// and its parsed form, or 42201 with the parser's message.
pub fn parse(
    schema_type: SchemaType,
    text: &str,
    referenced: &[(String, String)],
) -> Result<(String, Parsed)> {
    match schema_type {
        SchemaType::Avro => {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| RegistryError::invalid_schema(format!("{text}, details: {e}")))?;
            let normalized = json.to_string();
            let texts: Vec<String> = referenced.iter().map(|(_, t)| t.clone()).collect();
            let schema = if texts.is_empty() {
                AvroSchema::parse_str(&normalized)
            } else {
                // The named types of the references are written into the schema where first
                // used, so that the parsed form reads and checks alone.
                AvroSchema::parse_str_with_list(&normalized, &texts).and_then(|(mut s, list)| {
                    s.denormalize(&list)?;
                    Ok(s)
                })
            }
            .map_err(|e| RegistryError::invalid_schema(format!("{normalized}, details: {e}")))?;
            Ok((normalized, Parsed::Avro(schema)))
        }
        SchemaType::Json => {
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| RegistryError::invalid_schema(format!("{text}, details: {e}")))?;
            if !json.is_object() && !json.is_boolean() {
                return Err(RegistryError::invalid_schema(format!(
                    "{text}, details: a JSON Schema is an object or a boolean"
                )));
            }
            crate::json_schema::check(&json).map_err(|e| {
                RegistryError::invalid_schema(format!("{}, details: {e}", text.trim()))
            })?;
            // Kept as written: a JSON Schema's `properties` are ordered, and the columns
            // inferred from it follow that order.
            Ok((text.trim().to_string(), Parsed::Json(json)))
        }
        // Kept as written (without surrounding space): Protobuf text has no one normal form.
        SchemaType::Protobuf => {
            let normalized = text.trim().to_string();
            let schema = crate::protobuf::compile(&normalized, referenced)?;
            Ok((normalized, Parsed::Protobuf(schema)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avro_texts_that_differ_in_spacing_normalize_alike_and_bad_ones_get_42201() {
        let (a, _) = parse(SchemaType::Avro, r#"{"type": "string"}"#, &[]).unwrap();
        let (b, _) = parse(SchemaType::Avro, r#"{ "type":"string" }"#, &[]).unwrap();
        assert_eq!(a, b);
        let bad = parse(SchemaType::Avro, r#"{"type": "record"}"#, &[]).unwrap_err();
        assert_eq!(bad.code, 42201);
        let not_json = parse(SchemaType::Avro, "{", &[]).unwrap_err();
        assert_eq!(not_json.code, 42201);
        let not_a_schema = parse(SchemaType::Json, "[1]", &[]).unwrap_err();
        assert_eq!(not_a_schema.code, 42201);
        parse(SchemaType::Json, r#"{"type": "object"}"#, &[]).unwrap();
    }

    #[test]
    fn a_record_may_use_a_referenced_named_type() {
        let address =
            r#"{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}"#;
        let (_, parsed) = parse(
            SchemaType::Avro,
            r#"{"type":"record","name":"Person","fields":[{"name":"home","type":"Address"}]}"#,
            &[("Address".to_string(), address.to_string())],
        )
        .unwrap();
        assert!(matches!(parsed, Parsed::Avro(AvroSchema::Record(_))));
    }
}
