//! Serialization formats of keys and values, and which types and options each one allows.

use eddy_sql::ast::SqlType;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::schema::{Column, type_base_name, type_display};

/// The formats ksqlDB names. Eddy reads and writes the ones without a schema registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// JSON objects, or bare values when unwrapped.
    Json,
    /// Comma-separated (or another delimiter) values.
    Delimited,
    /// Kafka's primitive serializers: one INT, BIGINT, DOUBLE, STRING or BYTES.
    Kafka,
    /// No data: keyless streams.
    None,
    /// Avro through a schema registry.
    Avro,
    /// Protobuf through a schema registry.
    Protobuf,
    /// Protobuf without a schema registry.
    ProtobufNoSr,
    /// JSON with a schema-registry prefix.
    JsonSr,
}

impl Format {
    /// Parses a format name, case-insensitively.
    pub fn parse(name: &str) -> Result<Format> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "JSON" => Format::Json,
            "DELIMITED" => Format::Delimited,
            "KAFKA" => Format::Kafka,
            "NONE" => Format::None,
            "AVRO" => Format::Avro,
            "PROTOBUF" => Format::Protobuf,
            "PROTOBUF_NOSR" => Format::ProtobufNoSr,
            "JSON_SR" => Format::JsonSr,
            other => return Err(EngineError::statement(format!("Unknown format: {other}"))),
        })
    }

    /// ksqlDB's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Delimited => "DELIMITED",
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
            Format::Avro => "AVRO",
            Format::Protobuf => "PROTOBUF",
            Format::ProtobufNoSr => "PROTOBUF_NOSR",
            Format::JsonSr => "JSON_SR",
        }
    }

    /// Whether Eddy can read and write it.
    pub fn is_supported(self) -> bool {
        matches!(
            self,
            Format::Json
                | Format::Delimited
                | Format::Kafka
                | Format::None
                | Format::Avro
                | Format::Protobuf
                | Format::ProtobufNoSr
                | Format::JsonSr
        )
    }

    /// Whether its payloads name their schema in a schema registry.
    pub fn uses_registry(self) -> bool {
        matches!(self, Format::Avro | Format::Protobuf | Format::JsonSr)
    }

    /// Refuses the formats Eddy does not implement, with the reason.
    pub fn ensure_supported(self) -> Result<()> {
        if self.is_supported() {
            Ok(())
        } else {
            Err(EngineError::Unsupported(format!(
                "The '{}' format (it needs a schema registry or Protobuf schemas)",
                self.name()
            )))
        }
    }
}

/// A format with its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatSpec {
    /// The format.
    pub format: Format,
    /// `KEY_DELIMITER` / `VALUE_DELIMITER` for `DELIMITED`.
    pub delimiter: Option<char>,
    /// `KEY_SCHEMA_ID` / `VALUE_SCHEMA_ID`: the registered schema records are written with,
    /// for the registry formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<u32>,
    /// `KEY_SCHEMA_FULL_NAME` / `VALUE_SCHEMA_FULL_NAME` (`VALUE_AVRO_SCHEMA_FULL_NAME`): the
    /// name of the record schema Eddy generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// `KEY_PROTOBUF_NULLABLE_REPRESENTATION` / `VALUE_...`: how the PROTOBUF schema Eddy
    /// generates lets a field be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protobuf_nullable: Option<ProtobufNullable>,
}

/// How a generated Protobuf schema lets a field be null; without one, proto3 fields have no
/// null and read as their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProtobufNullable {
    /// `optional` fields, whose presence is kept.
    Optional,
    /// Google's wrapper messages (`google.protobuf.Int32Value`, ...).
    Wrapper,
}

impl FormatSpec {
    /// A format with no options.
    pub fn of(format: Format) -> Self {
        FormatSpec {
            format,
            delimiter: None,
            schema_id: None,
            full_name: None,
            protobuf_nullable: None,
        }
    }

    /// The delimiter in force: the option, or a comma.
    pub fn delimiter(&self) -> char {
        self.delimiter.unwrap_or(',')
    }
}

/// Parses a `KEY_DELIMITER` / `VALUE_DELIMITER` value: one character, `SPACE` or `TAB`.
pub fn parse_delimiter(property: &str, value: &str) -> Result<char> {
    let invalid = |why: String| {
        EngineError::statement(format!(
            "Failed to prepare statement: Configuration {property} is invalid: {why}"
        ))
    };
    let invalid = |why: &str| invalid(format!("{why}\nExample valid value: ';'"));
    match value.to_ascii_uppercase().as_str() {
        "SPACE" => return Ok(' '),
        "TAB" => return Ok('\t'),
        _ => {}
    }
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_whitespace() => Ok(c),
        (None, _) | (Some(_), None) => Err(invalid(
            "Delimiter cannot be empty, if you meant to have a tab or space for delimiter, please use the special values 'TAB' or 'SPACE'",
        )),
        _ => Err(invalid(&format!(
            "Invalid delimiter value: '{value}'. Delimiter must be a single character or TAB,SPACE"
        ))),
    }
}

fn contains_map(ty: &SqlType) -> bool {
    match ty {
        SqlType::Map(..) => true,
        SqlType::Array(element) => contains_map(element),
        SqlType::Struct(fields) => fields.iter().any(|f| contains_map(&f.ty)),
        _ => false,
    }
}

fn map_with_non_string_key(ty: &SqlType) -> bool {
    match ty {
        SqlType::Map(key, value) => **key != SqlType::String || map_with_non_string_key(value),
        SqlType::Array(element) => map_with_non_string_key(element),
        SqlType::Struct(fields) => fields.iter().any(|f| map_with_non_string_key(&f.ty)),
        _ => false,
    }
}

/// Checks that `format` can carry `columns` (all keys, or all values), with ksqlDB's messages.
pub fn check_columns(format: Format, columns: &[&Column], is_key: bool) -> Result<()> {
    if is_key && let Some(c) = columns.iter().find(|c| contains_map(&c.ty)) {
        return Err(EngineError::statement(format!(
            "Map keys, including types that contain maps, are not supported as they may lead to unexpected behavior due to inconsistent serialization. Key column name: `{}`. Column type: {}. See https://github.com/confluentinc/ksql/issues/6621 for more.",
            c.name,
            type_display(&c.ty)
        )));
    }
    check_format_types(format, columns, is_key).map_err(|reason| {
        if !is_key {
            return reason;
        }
        // ksqlDB reports key problems with the whole key schema, then the reason.
        let schema: Vec<String> = columns
            .iter()
            .map(|c| format!("`{}` {} KEY", c.name, type_display(&c.ty)))
            .collect();
        EngineError::statement(format!(
            "Key format does not support schema.\nformat: {}\nschema: Persistence{{columns=[{}], features=[]}}\nreason: {reason}",
            format.name(),
            schema.join(", ")
        ))
    })
}

fn check_format_types(format: Format, columns: &[&Column], is_key: bool) -> Result<()> {
    // ksqlDB lists key columns as its schema writes them, marked KEY.
    let marker = if is_key { " KEY" } else { "" };
    match format {
        Format::Kafka => {
            if columns.len() > 1 {
                let listed: Vec<String> = columns
                    .iter()
                    .map(|c| format!("`{}` {}{marker}", c.name, type_display(&c.ty)))
                    .collect();
                return Err(EngineError::statement(format!(
                    "The 'KAFKA' format only supports a single field. Got: [{}]",
                    listed.join(", ")
                )));
            }
            for c in columns {
                if !matches!(
                    c.ty,
                    SqlType::Int
                        | SqlType::Bigint
                        | SqlType::Double
                        | SqlType::String
                        | SqlType::Bytes
                ) {
                    return Err(EngineError::statement(format!(
                        "The 'KAFKA' format does not support type '{}'",
                        type_base_name(&c.ty)
                    )));
                }
            }
        }
        Format::Delimited => {
            for c in columns {
                if matches!(
                    c.ty,
                    SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)
                ) {
                    return Err(EngineError::statement(format!(
                        "The 'DELIMITED' format does not support type '{}', column: `{}`",
                        type_base_name(&c.ty),
                        c.name
                    )));
                }
            }
        }
        Format::Json => {
            if columns.iter().any(|c| map_with_non_string_key(&c.ty)) {
                return Err(EngineError::statement(
                    "JSON only supports MAP types with STRING keys",
                ));
            }
        }
        Format::None => {
            if let Some(c) = columns.first() {
                return Err(EngineError::statement(format!(
                    "The 'NONE' format can only be used when no columns are defined. Got: [`{}` {}]",
                    c.name,
                    type_display(&c.ty)
                )));
            }
        }
        Format::Avro => {
            if columns.iter().any(|c| map_with_non_string_key(&c.ty)) {
                return Err(EngineError::statement(
                    "Avro only supports MAPs with STRING keys",
                ));
            }
            for c in columns {
                avro_names(&c.name, &c.ty)?;
            }
        }
        Format::Protobuf | Format::ProtobufNoSr => {
            if columns.iter().any(|c| map_with_non_string_key(&c.ty)) {
                return Err(EngineError::statement(format!(
                    "{} format only supports MAP types with STRING keys",
                    format.name()
                )));
            }
        }
        Format::JsonSr => {
            if columns.iter().any(|c| map_with_non_string_key(&c.ty)) {
                return Err(EngineError::statement(
                    "JSON_SR only supports MAP types with STRING keys",
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a column or field name Avro cannot carry (`[A-Za-z_][A-Za-z0-9_]*`), as ksqlDB does.
fn avro_names(name: &str, ty: &SqlType) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok {
        return Err(EngineError::statement(format!(
            "Schema is not compatible with Avro: Illegal initial character: {name}"
        )));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(EngineError::statement(format!(
            "Schema is not compatible with Avro: Illegal character in: {name}"
        )));
    }
    match ty {
        SqlType::Array(element) => avro_names(name, element),
        SqlType::Map(_, value) => avro_names(name, value),
        SqlType::Struct(fields) => fields
            .iter()
            .try_for_each(|f| avro_names(&f.name.value, &f.ty)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_are_case_insensitive_and_unknown_ones_refused() {
        assert_eq!(Format::parse("KafkA").unwrap(), Format::Kafka);
        assert_eq!(Format::parse("delimited").unwrap(), Format::Delimited);
        let err = Format::parse("foo").unwrap_err();
        assert_eq!(err.to_string(), "Unknown format: FOO");
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("VALUE_DELIMITER", "|").unwrap(), '|');
        assert_eq!(parse_delimiter("VALUE_DELIMITER", "tab").unwrap(), '\t');
        assert_eq!(parse_delimiter("VALUE_DELIMITER", "SPACE").unwrap(), ' ');
        for bad in ["", " ", "\t"] {
            let err = parse_delimiter("VALUE_DELIMITER", bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("Delimiter cannot be empty"), "{err}");
        }
        let err = parse_delimiter("VALUE_DELIMITER", "<~>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Invalid delimiter value: '<~>'"), "{err}");
    }
}
