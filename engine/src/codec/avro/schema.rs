//! ksqlDB's translation between its column types and Avro schemas: the schema it registers for
//! a source's columns, and the columns it infers from a registered schema.

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use eddy_registry::{SchemaRequest, SchemaType};
use eddy_sql::ast::{Ident, SqlType, StructField};
use serde_json::{Value, json};

use crate::error::{EngineError, Result};

/// The record name ksqlDB gives the schemas it generates, unless `VALUE_AVRO_SCHEMA_FULL_NAME`
/// (or `KEY_...`) names another.
pub const DEFAULT_FULL_NAME: &str = "io.confluent.ksql.avro_schemas.KsqlDataSourceSchema";

/// The column a single unwrapped value or key is inferred as, as ksqlDB names it.
pub const UNWRAPPED_VALUE: &str = "ROWVAL";
/// The column a single unwrapped key is inferred as.
pub const UNWRAPPED_KEY: &str = "ROWKEY";

/// The Avro schema ksqlDB writes `columns` with: a record named `full_name` whose fields are
/// optional (a union with null, default null), or, for one unwrapped column, that column's
/// optional type alone.
pub fn generate(columns: &[(&str, &SqlType)], wrapped: bool, full_name: &str) -> Result<Value> {
    if !wrapped && let [(_, ty)] = columns {
        return Ok(optional(field_type(ty, full_name)?));
    }
    let (namespace, name) = match full_name.rsplit_once('.') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, full_name),
    };
    let mut record = json!({
        "type": "record",
        "name": name,
        "fields": fields(columns, full_name)?,
    });
    if let Some(namespace) = namespace {
        record["namespace"] = json!(namespace);
    }
    Ok(record)
}

/// The record name ksqlDB gives a source's key schema: its name in upper camel case, then
/// `Key` (`MY_STREAM` -> `io.confluent.ksql.avro_schemas.MyStreamKey`), so that the key records
/// of different sources never clash in generated classes.
pub fn key_schema_name(source: &str) -> String {
    let camel: String = source
        .split('_')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect()
            })
        })
        .collect();
    format!("io.confluent.ksql.avro_schemas.{camel}Key")
}

/// The schema Eddy writes `columns` with, as the registry takes it: what statements register
/// and what encoders look the id up by, so both always agree on the text.
pub fn registry_request(
    columns: &[(&str, &SqlType)],
    wrapped: bool,
    full_name: Option<&str>,
) -> Result<SchemaRequest> {
    Ok(SchemaRequest {
        schema: generate(columns, wrapped, full_name.unwrap_or(DEFAULT_FULL_NAME))?.to_string(),
        schema_type: SchemaType::Avro,
        references: Vec::new(),
    })
}

fn fields(columns: &[(&str, &SqlType)], record_name: &str) -> Result<Vec<Value>> {
    columns
        .iter()
        .map(|(name, ty)| {
            let nested = format!("{record_name}_{name}");
            Ok(json!({
                "name": name,
                "type": optional(field_type(ty, &nested)?),
                "default": null,
            }))
        })
        .collect()
}

fn optional(ty: Value) -> Value {
    json!(["null", ty])
}

/// The Avro type of a column; `name` is the full name a record type gets.
fn field_type(ty: &SqlType, name: &str) -> Result<Value> {
    Ok(match ty {
        SqlType::Boolean => json!("boolean"),
        SqlType::Int => json!("int"),
        SqlType::Bigint => json!("long"),
        SqlType::Double => json!("double"),
        SqlType::String => json!("string"),
        SqlType::Bytes => json!("bytes"),
        SqlType::Decimal { precision, scale } => json!({
            "type": "bytes",
            "logicalType": "decimal",
            "precision": precision,
            "scale": scale,
        }),
        SqlType::Date => json!({"type": "int", "logicalType": "date"}),
        SqlType::Time => json!({"type": "int", "logicalType": "time-millis"}),
        SqlType::Timestamp => json!({"type": "long", "logicalType": "timestamp-millis"}),
        SqlType::Array(element) => json!({
            "type": "array",
            "items": optional(field_type(element, name)?),
        }),
        SqlType::Map(key, value) => {
            if **key != SqlType::String {
                return Err(EngineError::statement(
                    "Avro only supports MAPs with STRING keys",
                ));
            }
            json!({
                "type": "map",
                "values": optional(field_type(value, &format!("{name}_MapValue"))?),
            })
        }
        SqlType::Struct(struct_fields) => {
            let columns: Vec<(&str, &SqlType)> = struct_fields
                .iter()
                .map(|f| (f.name.value.as_str(), &f.ty))
                .collect();
            generate(&columns, true, name)?
        }
        SqlType::Named(name) => {
            return Err(EngineError::statement(format!(
                "Unknown type: {}",
                name.value
            )));
        }
    })
}

/// How inferred field names are spelled: upper-cased (a subject's latest schema), or as the
/// schema writes them (a schema named by its id), as ksqlDB's translation policies do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// `UPPERCASE_FIELD_NAME`.
    Upper,
    /// `ORIGINAL_FIELD_NAME`.
    Original,
}

impl Names {
    fn spell(self, name: &str) -> String {
        match self {
            Names::Upper => name.to_uppercase(),
            Names::Original => name.to_string(),
        }
    }
}

/// The columns ksqlDB infers from a registered schema: a record's fields, or, for any other
/// schema, one column named `single` (`ROWVAL` or `ROWKEY`). Also when `wrapped` is false
/// (keys, always), the whole schema is that one column.
pub fn infer(
    schema: &Schema,
    wrapped: bool,
    single: &str,
    names: Names,
) -> Result<Vec<(String, SqlType)>> {
    // Named types used again (here or from a referenced schema) are references to where they
    // were first written.
    let resolved = ResolvedSchema::try_from(schema)
        .map_err(|e| EngineError::statement(format!("The Avro schema cannot be resolved: {e}")))?;
    let budget = std::cell::Cell::new(MAX_INFERRED_TYPES);
    let context = Context {
        names,
        defined: resolved.get_names(),
        depth: 0,
        budget: &budget,
    };
    match non_null(schema)? {
        Schema::Record(record) if wrapped => record
            .fields
            .iter()
            .map(|f| Ok((names.spell(&f.name), context.sql_type(&f.schema, &f.name)?)))
            .collect(),
        other => Ok(vec![(single.to_string(), context.sql_type(other, single)?)]),
    }
}

/// What inferring a column type needs besides the type: how names are spelled, the schema's
/// named types, and how deep in references the type is.
#[derive(Clone, Copy)]
struct Context<'a> {
    names: Names,
    defined: &'a NamesRef<'a>,
    depth: usize,
    /// Types left to infer: a named type used twice at each of many levels expands to
    /// exponentially many column types.
    budget: &'a std::cell::Cell<usize>,
}

/// The most Avro types one inference turns into column types.
const MAX_INFERRED_TYPES: usize = 100_000;

/// How deep references may nest: deeper, the type refers to itself, which no column holds.
const MAX_REFERENCE_DEPTH: usize = 32;

/// `schema` without a null branch: `["null", T]` is an optional `T`.
fn non_null(schema: &Schema) -> Result<&Schema> {
    match schema {
        Schema::Union(union) => {
            let branches: Vec<&Schema> = union
                .variants()
                .iter()
                .filter(|s| !matches!(s, Schema::Null))
                .collect();
            match branches.as_slice() {
                [one] => Ok(one),
                _ => Err(EngineError::statement(format!(
                    "Unsupported Avro type: a union of {} types; only unions of one type with \
                     null are supported",
                    branches.len()
                ))),
            }
        }
        other => Ok(other),
    }
}

impl Context<'_> {
    /// The column type of an Avro type, for the field (or column) `path`.
    fn sql_type(self, schema: &Schema, path: &str) -> Result<SqlType> {
        match self.budget.get() {
            0 => {
                return Err(EngineError::statement(format!(
                    "The Avro schema expands to more than {MAX_INFERRED_TYPES} column types \
                     (at field '{path}'); declare the columns instead"
                )));
            }
            left => self.budget.set(left - 1),
        }
        let unsupported = |what: &str| {
            EngineError::statement(format!(
                "Unsupported Avro type {what} for field '{path}': ksqlDB has no column type for it"
            ))
        };
        Ok(match non_null(schema)? {
            Schema::Boolean => SqlType::Boolean,
            Schema::Int => SqlType::Int,
            Schema::Long | Schema::TimestampMicros | Schema::TimeMicros => SqlType::Bigint,
            Schema::Float | Schema::Double => SqlType::Double,
            Schema::String | Schema::Enum(_) | Schema::Uuid(_) => SqlType::String,
            Schema::Bytes | Schema::Fixed(_) => SqlType::Bytes,
            Schema::Decimal(d) => SqlType::Decimal {
                precision: d.precision as u32,
                scale: d.scale as u32,
            },
            Schema::Date => SqlType::Date,
            Schema::TimeMillis => SqlType::Time,
            Schema::TimestampMillis | Schema::LocalTimestampMillis => SqlType::Timestamp,
            Schema::Array(array) => SqlType::Array(Box::new(self.sql_type(&array.items, path)?)),
            Schema::Map(map) => SqlType::Map(
                Box::new(SqlType::String),
                Box::new(self.sql_type(&map.types, path)?),
            ),
            Schema::Record(record) => SqlType::Struct(
                record
                    .fields
                    .iter()
                    .map(|f| {
                        Ok(StructField {
                            name: Ident::exact(&self.names.spell(&f.name)),
                            ty: self.sql_type(&f.schema, &f.name)?,
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            Schema::Null => return Err(unsupported("null")),
            Schema::Ref { name } => match self.defined.get(name) {
                Some(named) if self.depth < MAX_REFERENCE_DEPTH => Context {
                    depth: self.depth + 1,
                    ..self
                }
                .sql_type(named, path)?,
                Some(_) => return Err(unsupported(&format!("{name}, which contains itself"))),
                None => return Err(unsupported(&format!("reference to {name}"))),
            },
            other => return Err(unsupported(&format!("{other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_schemas_are_optional_records_and_infer_back() {
        let columns = [
            ("ID", &SqlType::Bigint),
            ("NAME", &SqlType::String),
            ("AT", &SqlType::Timestamp),
        ];
        let generated = generate(&columns, true, DEFAULT_FULL_NAME).unwrap();
        assert_eq!(generated["name"], "KsqlDataSourceSchema");
        assert_eq!(generated["namespace"], "io.confluent.ksql.avro_schemas");
        assert_eq!(generated["fields"][0]["type"], json!(["null", "long"]));
        let parsed = Schema::parse(&generated).unwrap();
        let inferred = infer(&parsed, true, UNWRAPPED_VALUE, Names::Upper).unwrap();
        let names: Vec<&str> = inferred.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ID", "NAME", "AT"]);
        assert_eq!(inferred[2].1, SqlType::Timestamp);
    }

    #[test]
    fn a_schema_named_by_id_keeps_its_field_names() {
        let parsed = Schema::parse_str(
            r#"{"type":"record","name":"T","fields":[{"name":"eventId","type":"string"},
               {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"x","type":"int"}]}}]}"#,
        )
        .unwrap();
        let inferred = infer(&parsed, true, UNWRAPPED_VALUE, Names::Original).unwrap();
        assert_eq!(inferred[0].0, "eventId");
        let SqlType::Struct(fields) = &inferred[1].1 else {
            panic!("{:?}", inferred[1]);
        };
        assert_eq!(fields[0].name.value, "x");
        // Unwrapped (as keys always are), a record is one struct column.
        let key = infer(&parsed, false, UNWRAPPED_KEY, Names::Upper).unwrap();
        assert_eq!(key.len(), 1);
        assert_eq!(key[0].0, "ROWKEY");
    }

    #[test]
    fn key_schemas_are_named_after_their_source() {
        assert_eq!(
            key_schema_name("OUTPUT"),
            "io.confluent.ksql.avro_schemas.OutputKey"
        );
        assert_eq!(
            key_schema_name("MY_BIG_STREAM"),
            "io.confluent.ksql.avro_schemas.MyBigStreamKey"
        );
    }

    #[test]
    fn unwrapped_columns_and_unsupported_unions() {
        let generated = generate(&[("FOO", &SqlType::Int)], false, DEFAULT_FULL_NAME).unwrap();
        assert_eq!(generated, json!(["null", "int"]));
        let union = Schema::parse_str(r#"["null", "int", "string"]"#).unwrap();
        let err = infer(&union, true, UNWRAPPED_VALUE, Names::Upper)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a union of 2 types"), "{err}");
    }

    #[test]
    fn named_types_used_twice_are_inferred_and_recursive_ones_refused() {
        let twice = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":{"type":"record","name":"P","fields":[{"name":"x","type":"int"}]}},
                {"name":"b","type":"P"}]}"#,
        )
        .unwrap();
        let columns = infer(&twice, true, UNWRAPPED_VALUE, Names::Upper).unwrap();
        assert_eq!(columns[0].1, columns[1].1);
        let recursive = Schema::parse_str(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#,
        )
        .unwrap();
        let err = infer(&recursive, true, UNWRAPPED_VALUE, Names::Upper)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Node, which contains itself"), "{err}");
        // Each level uses the one below twice: 2^30 column types, refused rather than built.
        let mut levels = vec![
            json!({"type": "record", "name": "L30", "fields": [{"name": "v", "type": "int"}]}),
        ];
        for i in (0..30).rev() {
            levels.push(
                json!({"type": "record", "name": format!("L{i}"), "fields": [
                {"name": "a", "type": format!("L{}", i + 1)},
                {"name": "b", "type": format!("L{}", i + 1)}]}),
            );
        }
        let texts: Vec<String> = levels[..30].iter().map(Value::to_string).collect();
        let (top, _) = Schema::parse_str_with_list(&levels[30].to_string(), &texts).unwrap();
        let mut top = top;
        let list: Vec<Schema> = texts
            .iter()
            .map(|t| Schema::parse_str_with_list(t, &texts).unwrap().0)
            .collect();
        let _ = top.denormalize(&list);
        let err = infer(&top, true, UNWRAPPED_VALUE, Names::Upper)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expands to more than"), "{err}");
    }
}
