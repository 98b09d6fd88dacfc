//! Writing rows with a registered schema (`KEY_SCHEMA_ID` / `VALUE_SCHEMA_ID`) instead of the
//! one Eddy generates, as ksqlDB's `AvroSRSchemaDataTranslator` does: every field of the
//! schema takes the column (or struct field) of exactly its name; a field the rows lack takes
//! its default, or null where the schema allows it; a required field without a default, or a
//! null where the schema does not allow one, refuses the batch.
//!
//! The arrays are made into the Arrow shape `arrow-avro` decodes the schema as, so its encoder
//! writes them field by field in the schema's order.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, RecordField, ResolvedSchema};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, StructArray, new_null_array,
};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast, is_not_null};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::ScalarValue;
use serde_json::Value;

/// A registered schema, with its named types resolved, to shape rows into.
pub struct Physical {
    schema: Schema,
}

impl Physical {
    /// The parsed schema `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let schema = Schema::parse_str(text).map_err(|e| e.to_string())?;
        ResolvedSchema::try_from(&schema).map_err(|e| e.to_string())?;
        Ok(Physical { schema })
    }

    /// `array` in the shape of `target` (the Arrow field `arrow-avro` reads the schema as).
    /// `top_nulls` lets nulls through at the top, where they are written as no payload.
    pub fn shape(
        &self,
        array: &ArrayRef,
        target: &FieldRef,
        top_nulls: bool,
    ) -> Result<ArrayRef, String> {
        let resolved = ResolvedSchema::try_from(&self.schema).map_err(|e| e.to_string())?;
        let shaper = Shaper {
            names: resolved.get_names(),
        };
        let (schema, nullable) = shaper.branch(&self.schema)?;
        shaper.shape(array, target.data_type(), schema, nullable || top_nulls, "")
    }
}

struct Shaper<'s, 'n> {
    names: &'n NamesRef<'s>,
}

impl<'s> Shaper<'s, '_> {
    /// The schema a value takes (a union's one non-null branch, a named type's definition),
    /// and whether it may be null.
    fn branch(&self, schema: &'s Schema) -> Result<(&'s Schema, bool), String> {
        let (schema, nullable) = match schema {
            Schema::Union(union) => {
                let branches: Vec<&Schema> = union
                    .variants()
                    .iter()
                    .filter(|s| !matches!(s, Schema::Null))
                    .collect();
                match branches.as_slice() {
                    [one] => (*one, branches.len() < union.variants().len()),
                    _ => return Err("a union of several types cannot be written".into()),
                }
            }
            other => (other, false),
        };
        match schema {
            Schema::Ref { name } => self
                .names
                .get(name)
                .map(|s| (*s, nullable))
                .ok_or_else(|| format!("the schema names an undefined type {name}")),
            other => Ok((other, nullable)),
        }
    }

    fn shape(
        &self,
        array: &ArrayRef,
        target: &DataType,
        schema: &'s Schema,
        nullable: bool,
        path: &str,
    ) -> Result<ArrayRef, String> {
        let shaped: ArrayRef = match (target, schema) {
            (DataType::Struct(fields), Schema::Record(record)) => {
                let source = array
                    .as_struct_opt()
                    .ok_or_else(|| format!("{path} is not a STRUCT, as the schema's record is"))?;
                let columns = fields
                    .iter()
                    .zip(&record.fields)
                    .map(|(field, avro)| {
                        let at = join(path, &avro.name);
                        let Some(child) = source.column_by_name(&avro.name) else {
                            return self.default(avro, field, source.len(), &at);
                        };
                        let (schema, nullable) = self.branch(&avro.schema)?;
                        // A null in a required field with a default is written as the
                        // default, as Connect's Avro converter does.
                        let defaulted = !nullable
                            && avro.default.as_ref().is_some_and(|d| !d.is_null())
                            && child.null_count() > 0;
                        let shaped = self.shape(
                            child,
                            field.data_type(),
                            schema,
                            nullable || defaulted,
                            &at,
                        )?;
                        if !defaulted {
                            return Ok(shaped);
                        }
                        let defaults = self.default(avro, field, source.len(), &at)?;
                        let present = is_not_null(&shaped).map_err(|e| format!("{at}: {e}"))?;
                        zip(&present, &shaped, &defaults).map_err(|e| format!("{at}: {e}"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Arc::new(
                    StructArray::try_new(fields.clone(), columns, source.nulls().cloned())
                        .map_err(|e| format!("{path}: {e}"))?,
                )
            }
            (DataType::List(item), Schema::Array(avro)) => {
                let list = array
                    .as_list_opt::<i32>()
                    .ok_or_else(|| format!("{path} is not an ARRAY, as the schema's array is"))?;
                let (schema, nullable) = self.branch(&avro.items)?;
                let values = self.shape(list.values(), item.data_type(), schema, nullable, path)?;
                Arc::new(
                    ListArray::try_new(
                        item.clone(),
                        list.offsets().clone(),
                        values,
                        list.nulls().cloned(),
                    )
                    .map_err(|e| format!("{path}: {e}"))?,
                )
            }
            (DataType::Map(entries, sorted), Schema::Map(avro)) => {
                let map = array
                    .as_map_opt()
                    .ok_or_else(|| format!("{path} is not a MAP, as the schema's map is"))?;
                let DataType::Struct(entry_fields) = entries.data_type() else {
                    return Err(format!("{path}: map entries are not a struct"));
                };
                let (schema, nullable) = self.branch(&avro.types)?;
                let keys = cast(map.keys(), entry_fields[0].data_type())
                    .map_err(|e| format!("{path}: {e}"))?;
                let values = self.shape(
                    map.values(),
                    entry_fields[1].data_type(),
                    schema,
                    nullable,
                    path,
                )?;
                let entry_struct =
                    StructArray::try_new(entry_fields.clone(), vec![keys, values], None)
                        .map_err(|e| format!("{path}: {e}"))?;
                Arc::new(
                    MapArray::try_new(
                        entries.clone(),
                        map.offsets().clone(),
                        entry_struct,
                        map.nulls().cloned(),
                        *sorted,
                    )
                    .map_err(|e| format!("{path}: {e}"))?,
                )
            }
            _ if array.data_type() == target => array.clone(),
            _ => cast(array, target).map_err(|e| {
                format!(
                    "{} cannot be written as the schema's {target}: {e}",
                    if path.is_empty() { "the value" } else { path }
                )
            })?,
        };
        if !nullable && shaped.null_count() > 0 {
            return Err(format!(
                "Invalid value: null used for required field: \"{}\"",
                if path.is_empty() { "the value" } else { path }
            ));
        }
        Ok(shaped)
    }

    /// A field the rows lack: its default in every row, or null where the schema allows it.
    fn default(
        &self,
        avro: &RecordField,
        field: &Field,
        rows: usize,
        path: &str,
    ) -> Result<ArrayRef, String> {
        let (_, nullable) = self.branch(&avro.schema)?;
        let scalar = match &avro.default {
            None if nullable => return Ok(new_null_array(field.data_type(), rows)),
            None => {
                return Err(format!(
                    "Missing default value for required Avro field: [{}]. This field appears in Avro schema in Schema Registry",
                    avro.name
                ));
            }
            Some(Value::Null) => return Ok(new_null_array(field.data_type(), rows)),
            Some(value) => scalar(value, field.data_type())
                .ok_or_else(|| format!("{path}: the default {value} cannot be written"))?,
        };
        scalar
            .to_array_of_size(rows)
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// A JSON default as a value of `ty`.
fn scalar(value: &Value, ty: &DataType) -> Option<ScalarValue> {
    let number = value.as_f64();
    Some(match ty {
        DataType::Boolean => ScalarValue::Boolean(Some(value.as_bool()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i32::try_from(value.as_i64()?).ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(value.as_i64()?)),
        DataType::Float32 => ScalarValue::Float32(Some(number? as f32)),
        DataType::Float64 => ScalarValue::Float64(Some(number?)),
        DataType::Utf8 => ScalarValue::Utf8(Some(value.as_str()?.to_string())),
        // Avro writes a bytes default as a string of code points 0-255.
        DataType::Binary => ScalarValue::Binary(Some(
            value
                .as_str()?
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<Vec<u8>>>()?,
        )),
        other => {
            let text = ScalarValue::Utf8(Some(value.as_str()?.to_string()));
            return text.cast_to(other).ok();
        }
    })
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The struct of `columns` under `fields`' names: a wrapped row as one value.
pub fn row_struct(fields: &[FieldRef], columns: &[ArrayRef]) -> Result<ArrayRef, String> {
    let fields: Fields = fields.iter().cloned().collect();
    StructArray::try_new(fields, columns.to_vec(), None)
        .map(|s| Arc::new(s) as ArrayRef)
        .map_err(|e| e.to_string())
}
