//! ksqlDB's translation between its column types and Protobuf schemas (through Confluent's
//! Protobuf converter): the `.proto` text it registers for a source's columns, and the columns
//! it infers from a registered message.

use eddy_registry::{SchemaRequest, SchemaType};
use eddy_sql::ast::{Ident, SqlType, StructField};
use prost_reflect::{FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use crate::codec::avro::schema::Names;
use crate::error::{EngineError, Result};
use crate::format::ProtobufNullable;

/// The name Confluent's converter gives the message of an unnamed schema; nested ones count on.
const DEFAULT_NAME: &str = "ConnectDefault";

/// The `.proto` text ksqlDB registers for `columns`: one message (named `full_name`, or
/// `ConnectDefault1`) with a field per column, numbered from 1, nested messages inside it.
pub fn generate(
    columns: &[(&str, &SqlType)],
    full_name: Option<&str>,
    nullable: Option<ProtobufNullable>,
) -> Result<String> {
    let mut generator = Generator {
        next: 1,
        imports: Vec::new(),
        options: None,
        nullable,
    };
    let (package, name) = match full_name.and_then(|n| n.rsplit_once('.')) {
        Some((package, name)) => (Some(package), name.to_string()),
        None => (
            None,
            full_name.map_or_else(|| generator.name(), str::to_string),
        ),
    };
    let body = generator.message(&name, columns, 0)?;
    let mut text = String::from("syntax = \"proto3\";\n");
    if let Some(package) = package {
        text.push_str(&format!("package {package};\n"));
    }
    text.push('\n');
    generator.imports.sort();
    generator.imports.dedup();
    for import in &generator.imports {
        text.push_str(&format!("import \"{import}\";\n"));
    }
    if !generator.imports.is_empty() {
        text.push('\n');
    }
    text.push_str(&body);
    Ok(text)
}

/// The schema Eddy writes `columns` with, as the registry takes it.
pub fn registry_request(
    columns: &[(&str, &SqlType)],
    full_name: Option<&str>,
    nullable: Option<ProtobufNullable>,
) -> Result<SchemaRequest> {
    Ok(SchemaRequest {
        schema: generate(columns, full_name, nullable)?,
        schema_type: SchemaType::Protobuf,
        references: Vec::new(),
    })
}

struct Generator {
    next: usize,
    imports: Vec<&'static str>,
    /// Options the field being declared needs (a decimal's precision and scale).
    options: Option<String>,
    /// How scalar fields may be null.
    nullable: Option<ProtobufNullable>,
}

impl Generator {
    fn name(&mut self) -> String {
        let name = format!("{DEFAULT_NAME}{}", self.next);
        self.next += 1;
        name
    }

    /// A message of `fields`, indented `depth` levels, with its nested messages inside.
    fn message(&mut self, name: &str, fields: &[(&str, &SqlType)], depth: usize) -> Result<String> {
        let pad = "  ".repeat(depth);
        let mut lines = Vec::new();
        let mut nested = Vec::new();
        for (number, (field, ty)) in fields.iter().enumerate() {
            let declared = self.field_type(ty, depth + 1, &mut nested)?;
            let options = self
                .options
                .take()
                .map(|o| format!(" [{o}]"))
                .unwrap_or_default();
            lines.push(format!(
                "{pad}  {declared} {field} = {}{options};\n",
                number + 1
            ));
        }
        let mut out = format!("{pad}message {name} {{\n");
        for line in lines {
            out.push_str(&line);
        }
        for message in nested {
            out.push('\n');
            out.push_str(&message);
        }
        out.push_str(&format!("{pad}}}\n"));
        Ok(out)
    }

    /// A field's declared type (`repeated T`, `map<K, V>`, or `T`); nested messages it needs
    /// are added to `nested`.
    fn field_type(
        &mut self,
        ty: &SqlType,
        depth: usize,
        nested: &mut Vec<String>,
    ) -> Result<String> {
        Ok(match ty {
            SqlType::Array(element) => {
                if matches!(**element, SqlType::Array(_) | SqlType::Map(..)) {
                    return Err(EngineError::statement(
                        "PROTOBUF cannot hold an ARRAY of ARRAY or MAP",
                    ));
                }
                format!("repeated {}", self.scalar_type(element, depth, nested)?)
            }
            SqlType::Map(key, value) => {
                if **key != SqlType::String {
                    return Err(EngineError::statement(
                        "PROTOBUF format only supports MAP types with STRING keys",
                    ));
                }
                if matches!(**value, SqlType::Array(_) | SqlType::Map(..)) {
                    return Err(EngineError::statement(
                        "PROTOBUF cannot hold a MAP of ARRAY or MAP",
                    ));
                }
                format!("map<string, {}>", self.scalar_type(value, depth, nested)?)
            }
            SqlType::Boolean
            | SqlType::Int
            | SqlType::Bigint
            | SqlType::Double
            | SqlType::String
            | SqlType::Bytes => match self.nullable {
                Some(ProtobufNullable::Optional) => {
                    format!("optional {}", self.scalar_type(ty, depth, nested)?)
                }
                Some(ProtobufNullable::Wrapper) => {
                    self.imports.push("google/protobuf/wrappers.proto");
                    let wrapper = match ty {
                        SqlType::Boolean => "BoolValue",
                        SqlType::Int => "Int32Value",
                        SqlType::Bigint => "Int64Value",
                        SqlType::Double => "DoubleValue",
                        SqlType::String => "StringValue",
                        _ => "BytesValue",
                    };
                    format!("google.protobuf.{wrapper}")
                }
                None => self.scalar_type(ty, depth, nested)?,
            },
            other => self.scalar_type(other, depth, nested)?,
        })
    }

    fn scalar_type(
        &mut self,
        ty: &SqlType,
        depth: usize,
        nested: &mut Vec<String>,
    ) -> Result<String> {
        Ok(match ty {
            SqlType::Boolean => "bool".into(),
            SqlType::Int => "int32".into(),
            SqlType::Bigint => "int64".into(),
            SqlType::Double => "double".into(),
            SqlType::String => "string".into(),
            SqlType::Bytes => "bytes".into(),
            SqlType::Decimal { precision, scale } => {
                self.imports.push("confluent/type/decimal.proto");
                self.imports.push("confluent/meta.proto");
                self.options = Some(format!(
                    "(confluent.field_meta) = {{ params: [{{ key: \"precision\", value: \"{precision}\" }}, {{ key: \"scale\", value: \"{scale}\" }}] }}"
                ));
                "confluent.type.Decimal".into()
            }
            SqlType::Date => {
                self.imports.push("google/type/date.proto");
                "google.type.Date".into()
            }
            SqlType::Time => {
                self.imports.push("google/type/timeofday.proto");
                "google.type.TimeOfDay".into()
            }
            SqlType::Timestamp => {
                self.imports.push("google/protobuf/timestamp.proto");
                "google.protobuf.Timestamp".into()
            }
            SqlType::Struct(fields) => {
                let name = self.name();
                let columns: Vec<(&str, &SqlType)> = fields
                    .iter()
                    .map(|f| (f.name.value.as_str(), &f.ty))
                    .collect();
                nested.push(self.message(&name, &columns, depth)?);
                name
            }
            SqlType::Array(_) | SqlType::Map(..) => {
                return Err(EngineError::statement(
                    "PROTOBUF cannot nest an ARRAY or MAP directly in another",
                ));
            }
            SqlType::Named(name) => {
                return Err(EngineError::statement(format!(
                    "Unknown type: {}",
                    name.value
                )));
            }
        })
    }
}

/// The columns ksqlDB infers from a message: one per field, names upper-cased unless the
/// schema was named by its id.
pub fn infer(message: &MessageDescriptor, names: Names) -> Result<Vec<(String, SqlType)>> {
    message
        .fields()
        .map(|f| Ok((spell(names, f.name()), field_type(&f, names, 0)?)))
        .collect()
}

fn spell(names: Names, name: &str) -> String {
    match names {
        Names::Upper => name.to_uppercase(),
        Names::Original => name.to_string(),
    }
}

fn field_type(field: &FieldDescriptor, names: Names, depth: usize) -> Result<SqlType> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(EngineError::internal(
                "a map field without an entry message",
            ));
        };
        let key = entry.map_entry_key_field();
        if !matches!(key.kind(), Kind::String) {
            return Err(EngineError::statement(
                "PROTOBUF format only supports MAP types with STRING keys",
            ));
        }
        let value = kind_type(&entry.map_entry_value_field(), names, depth)?;
        return Ok(SqlType::Map(Box::new(SqlType::String), Box::new(value)));
    }
    let element = kind_type(field, names, depth)?;
    Ok(if field.is_list() {
        SqlType::Array(Box::new(element))
    } else {
        element
    })
}

/// The type of one value of `field` (an element, when it is repeated).
fn kind_type(field: &FieldDescriptor, names: Names, depth: usize) -> Result<SqlType> {
    if depth > 64 {
        return Err(EngineError::statement(format!(
            "The Protobuf field {} nests messages too deeply (or recursively) for a column type",
            field.full_name()
        )));
    }
    Ok(match field.kind() {
        Kind::Bool => SqlType::Boolean,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => SqlType::Int,
        Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64
        | Kind::Uint32
        | Kind::Fixed32
        | Kind::Uint64
        | Kind::Fixed64 => SqlType::Bigint,
        Kind::Float | Kind::Double => SqlType::Double,
        Kind::String | Kind::Enum(_) => SqlType::String,
        Kind::Bytes => SqlType::Bytes,
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => SqlType::Timestamp,
            "google.type.Date" => SqlType::Date,
            "google.type.TimeOfDay" => SqlType::Time,
            "confluent.type.Decimal" => {
                let param = |name: &str| meta_param(field, name)?.parse::<u32>().ok();
                let precision = param("precision").ok_or_else(|| {
                    EngineError::statement(format!(
                        "The Protobuf field {} is a confluent.type.Decimal without a precision in its confluent.field_meta params, so no DECIMAL can be inferred for it; declare the column",
                        field.full_name()
                    ))
                })?;
                SqlType::Decimal {
                    precision,
                    scale: param("scale").unwrap_or(0),
                }
            }
            "google.protobuf.BoolValue" => SqlType::Boolean,
            "google.protobuf.Int32Value" => SqlType::Int,
            "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value" => SqlType::Bigint,
            "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => SqlType::Double,
            "google.protobuf.StringValue" => SqlType::String,
            "google.protobuf.BytesValue" => SqlType::Bytes,
            _ => SqlType::Struct(
                message
                    .fields()
                    .map(|f| {
                        Ok(StructField {
                            name: Ident::exact(&spell(names, f.name())),
                            ty: field_type(&f, names, depth + 1)?,
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
        },
    })
}

/// A `params` entry of the field's `confluent.field_meta` option, as Confluent's converter
/// writes a decimal's precision and scale.
fn meta_param(field: &FieldDescriptor, name: &str) -> Option<String> {
    let extension = field
        .parent_pool()
        .get_extension_by_name("confluent.field_meta")?;
    let options = field.options();
    if !options.has_extension(&extension) {
        return None;
    }
    let meta = options.get_extension(&extension);
    let Value::Message(meta) = meta.as_ref() else {
        return None;
    };
    let params = meta.get_field_by_name("params")?;
    let Value::Map(params) = params.as_ref() else {
        return None;
    };
    match params.get(&MapKey::String(name.to_string()))? {
        Value::String(v) => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_schemas_compile_and_infer_back() {
        let st = SqlType::Struct(vec![StructField {
            name: Ident::exact("F0"),
            ty: SqlType::Int,
        }]);
        let columns = [
            ("I", &SqlType::Int),
            ("L", &SqlType::Bigint),
            ("A", &SqlType::Array(Box::new(SqlType::String))),
            (
                "M",
                &SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Double)),
            ),
            ("S", &st),
            ("T", &SqlType::Timestamp),
            (
                "D",
                &SqlType::Decimal {
                    precision: 4,
                    scale: 2,
                },
            ),
        ];
        let text = generate(&columns, None, None).unwrap();
        assert!(
            text.starts_with("syntax = \"proto3\";\n\nimport \"confluent/meta.proto\";\nimport \"confluent/type/decimal.proto\";\nimport \"google/protobuf/timestamp.proto\";\n\nmessage ConnectDefault1 {\n  int32 I = 1;\n  int64 L = 2;\n"),
            "{text}"
        );
        let compiled = eddy_registry::protobuf::compile(&text, &[]).unwrap();
        let message = &compiled.messages()[0];
        let inferred = infer(message, Names::Upper).unwrap();
        let back: Vec<(&str, &SqlType)> = inferred.iter().map(|(n, t)| (n.as_str(), t)).collect();
        assert_eq!(back, columns);
        let named = generate(&columns[..1], Some("com.acme.Row"), None).unwrap();
        assert!(named.contains("package com.acme;"), "{named}");
        assert!(named.contains("message Row {"), "{named}");
    }
}
