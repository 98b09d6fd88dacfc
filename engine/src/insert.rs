//! `INSERT INTO ... VALUES`: one row, evaluated, coerced to the source's columns, encoded in its
//! formats and appended to its topic.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, RecordBatchOptions, StructArray, new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::DFSchema;
use datafusion::prelude::SessionContext;
use eddy_sql::analysis::{Scope, to_datafusion};
use eddy_sql::ast::{Expr, Ident, SqlType};
use eddy_storage::Record;

use crate::catalog::{Catalog, DataSource};
use crate::codec::{RowCodec, Schemas};
use crate::error::{EngineError, Result};
use crate::format::Format;
use crate::schema::{Column, ColumnKind};

/// Constants may use types from `CREATE TYPE` but no columns.
struct ConstantScope<'a>(&'a Catalog);

impl Scope for ConstantScope<'_> {
    fn column(
        &self,
        source: Option<&str>,
        name: &str,
    ) -> Result<datafusion::logical_expr::Expr, String> {
        eddy_sql::analysis::ConstantScope.column(source, name)
    }

    fn named_type(&self, name: &str) -> Option<SqlType> {
        self.0.named_type(name).cloned()
    }
}

/// Evaluates a constant expression to a one-row array. A function that fails on its
/// arguments fails the insert, as in ksqlDB, rather than inserting a null.
fn evaluate(ctx: &SessionContext, catalog: &Catalog, expr: &Expr) -> Result<ArrayRef> {
    let logical = to_datafusion(expr, &ConstantScope(catalog)).map_err(|e| {
        EngineError::statement(format!("Failed to prepare statement: {}", e.message))
    })?;
    let (value, function_errors) = eddy_sql::functions::collect_function_errors(|| {
        let physical = crate::physical::physical_expr(ctx, logical, &DFSchema::empty())
            .map_err(|e| EngineError::statement(format!("Failed to prepare statement: {e}")))?;
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .map_err(|e| EngineError::statement(e.to_string()))?;
        physical
            .evaluate(&batch)
            .and_then(|v| v.into_array(1))
            .map_err(|e| EngineError::statement(format!("Failed to insert values: {e}")))
    });
    if let Some(failed) = function_errors.first() {
        return Err(EngineError::statement(format!(
            "Failed to insert values: {} failed: {}",
            failed.function, failed.message
        )));
    }
    value
}

/// Coerces a value to a column's type: structs field by field by name (missing fields are
/// null), everything else with Arrow's cast, failing rather than silently nulling.
pub(crate) fn coerce(array: ArrayRef, target: &DataType) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array);
    }
    if let (DataType::Struct(_), DataType::Struct(target_fields)) = (array.data_type(), target)
        && let Some(source) = array.as_any().downcast_ref::<StructArray>()
    {
        let columns = target_fields
            .iter()
            .map(|field| {
                let matching = source
                    .fields()
                    .iter()
                    .position(|f| f.name() == field.name())
                    .or_else(|| {
                        source
                            .fields()
                            .iter()
                            .position(|f| f.name().eq_ignore_ascii_case(field.name()))
                    });
                match matching {
                    Some(i) => coerce(source.column(i).clone(), field.data_type()),
                    None => Ok(new_null_array(field.data_type(), source.len())),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Arc::new(StructArray::new(
            target_fields.clone(),
            columns,
            source.nulls().cloned(),
        )));
    }
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(&array, target, &options).map_err(|e| {
        EngineError::statement(format!(
            "Failed to insert values: cannot convert {} to {target}: {e}",
            array.data_type()
        ))
    })
}

/// The record an `INSERT ... VALUES` appends, and its topic.
pub(crate) fn build_record(
    ctx: &SessionContext,
    catalog: &Catalog,
    source: &DataSource,
    columns: &Option<Vec<Ident>>,
    values: &[Expr],
) -> Result<Record> {
    // Without a column list every column is meant, header columns too, which cannot be set.
    if columns.is_none()
        && let Some(header) = source
            .columns
            .iter()
            .find(|c| matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
    {
        return Err(EngineError::statement(format!(
            "Cannot insert into HEADER columns: {}",
            header.name
        )));
    }
    let names: Vec<String> = match columns {
        Some(columns) => columns.iter().map(|c| c.value.clone()).collect(),
        None => source
            .key_columns()
            .chain(source.value_columns())
            .map(|c| c.name.clone())
            .collect(),
    };
    if names.len() != values.len() {
        return Err(EngineError::statement(format!(
            "Failed to prepare statement: Expected number columns and values to match: {}, {}",
            names.len(),
            values.len()
        )));
    }
    let mut timestamp = None;
    let mut given: Vec<(&Column, ArrayRef)> = Vec::new();
    for (name, expr) in names.iter().zip(values) {
        match name.as_str() {
            "ROWTIME" => {
                let value = coerce(evaluate(ctx, catalog, expr)?, &DataType::Int64)?;
                let ts = value
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .filter(|a| !a.is_null(0))
                    .map(|a| a.value(0));
                timestamp = ts;
                continue;
            }
            "ROWPARTITION" | "ROWOFFSET" => {
                return Err(EngineError::statement(format!(
                    "Inserting into column `{name}` is not allowed."
                )));
            }
            _ => {}
        }
        let column = source
            .columns
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| {
                EngineError::statement(format!("Column name `{name}` does not exist."))
            })?;
        if matches!(column.kind, ColumnKind::Headers | ColumnKind::Header(_)) {
            return Err(EngineError::statement(format!(
                "Cannot insert into HEADER columns: {name}"
            )));
        }
        let target = eddy_sql::types::to_arrow(&column.ty)
            .map_err(|e| EngineError::statement(e.to_string()))?;
        given.push((column, coerce(evaluate(ctx, catalog, expr)?, &target)?));
    }
    let arrays_for = |cols: &[&Column]| -> Result<Vec<ArrayRef>> {
        cols.iter()
            .map(|c| match given.iter().find(|(g, _)| g.name == c.name) {
                Some((_, array)) => Ok(array.clone()),
                None => eddy_sql::types::to_arrow(&c.ty)
                    .map(|t| new_null_array(&t, 1))
                    .map_err(|e| EngineError::statement(e.to_string())),
            })
            .collect()
    };
    let keys: Vec<&Column> = source.key_columns().collect();
    let values: Vec<&Column> = source.value_columns().collect();
    encode_row(
        source,
        &arrays_for(&keys)?,
        &arrays_for(&values)?,
        timestamp.unwrap_or_else(eddy_storage::now_ms),
        &Schemas::of(ctx),
    )
}

/// The record for one row, given its key and value columns as one-row arrays, in the source's
/// formats. A key of only nulls, or in the `NONE` format, is no key.
fn encode_row(
    source: &DataSource,
    key_arrays: &[ArrayRef],
    value_arrays: &[ArrayRef],
    timestamp: i64,
    schemas: &Schemas,
) -> Result<Record> {
    let keys: Vec<&Column> = source.key_columns().collect();
    let values: Vec<&Column> = source.value_columns().collect();
    let key = if keys.is_empty()
        || key_arrays.iter().all(|a| a.is_null(0))
        || source.key_format.format == Format::None
    {
        None
    } else {
        RowCodec::new(&source.key_format, &keys, false, schemas)?
            .encode(key_arrays, 1)?
            .pop()
            .flatten()
    };
    let wrapped = source.wrap_single_value.unwrap_or(true);
    let value = RowCodec::new(&source.value_format, &values, wrapped, schemas)?
        .encode(value_arrays, 1)?
        .pop()
        .flatten();
    Ok(Record {
        key: key.map(Into::into),
        value: value.map(Into::into),
        timestamp,
        headers: Vec::new(),
    })
}

/// A one-column key as the table's key format writes it, for a key lookup: directly for the
/// layouts that are fixed (KAFKA `INT`, `BIGINT` and `STRING`; JSON and DELIMITED integers),
/// through the codecs otherwise. `None` when the value cannot be such a key.
pub(crate) fn encode_lookup_key(source: &DataSource, value: &serde_json::Value) -> Option<Vec<u8>> {
    let key = source.key_columns().next()?;
    // A registry format's key bytes name the schema they were written with, which a lookup
    // cannot know: such tables are scanned.
    if source.key_format.format.uses_registry() {
        return None;
    }
    let direct = match (source.key_format.format, &key.ty, value) {
        (Format::Kafka, SqlType::Int, serde_json::Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(|i| i.to_be_bytes().to_vec()),
        (Format::Kafka, SqlType::Bigint, serde_json::Value::Number(n)) => {
            n.as_i64().map(|i| i.to_be_bytes().to_vec())
        }
        (Format::Kafka, SqlType::String, serde_json::Value::String(text)) => {
            Some(text.as_bytes().to_vec())
        }
        (Format::Json | Format::Delimited, SqlType::Int, serde_json::Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(|i| i.to_string().into_bytes()),
        (Format::Json | Format::Delimited, SqlType::Bigint, serde_json::Value::Number(n)) => {
            n.as_i64().map(|i| i.to_string().into_bytes())
        }
        _ => None,
    };
    if direct.is_some() {
        return direct;
    }
    let row = serde_json::json!({ key.name.clone(): value });
    record_from_json(source, &row, &Schemas::default())
        .ok()?
        .key
        .map(|k| k.to_vec())
}

/// The record for a row given as a JSON object (as `/inserts-stream` sends them): fields match
/// the source's key and value columns case-insensitively, missing ones are null, and `ROWTIME`
/// sets the timestamp.
pub(crate) fn record_from_json(
    source: &DataSource,
    row: &serde_json::Value,
    schemas: &Schemas,
) -> Result<Record> {
    let serde_json::Value::Object(fields) = row else {
        return Err(EngineError::statement("Each row must be a JSON object"));
    };
    if let Some(header) = source
        .columns
        .iter()
        .find(|c| matches!(c.kind, ColumnKind::Headers | ColumnKind::Header(_)))
        && fields.keys().any(|k| k.eq_ignore_ascii_case(&header.name))
    {
        return Err(EngineError::statement(format!(
            "Cannot insert into HEADER columns: {}",
            header.name
        )));
    }
    for name in fields.keys() {
        let known = source
            .columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
            || name.eq_ignore_ascii_case("ROWTIME");
        if !known {
            return Err(EngineError::statement(format!(
                "Column name `{name}` does not exist."
            )));
        }
    }
    let keys: Vec<&Column> = source.key_columns().collect();
    let values: Vec<&Column> = source.value_columns().collect();
    let payload = row.to_string();
    let decode = |columns: &[&Column]| -> Result<Vec<ArrayRef>> {
        let codec = RowCodec::new(
            &crate::format::FormatSpec::of(Format::Json),
            columns,
            true,
            &Schemas::default(),
        )?;
        let decoded = codec.decode(&[Some(payload.as_bytes())]);
        if let Some((_, reason)) = decoded.errors.first() {
            return Err(EngineError::statement(format!(
                "Failed to insert values: {reason}"
            )));
        }
        Ok(decoded.columns)
    };
    let timestamp = fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("ROWTIME"))
        .and_then(|(_, v)| v.as_i64())
        .unwrap_or_else(eddy_storage::now_ms);
    encode_row(
        source,
        &decode(&keys)?,
        &decode(&values)?,
        timestamp,
        schemas,
    )
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    fn table(sql: &str) -> DataSource {
        crate::catalog::declared(sql)
    }

    /// The direct encodings are the codecs' bytes, whatever the format and key type.
    #[test]
    fn lookup_keys_encode_as_inserted_keys_do() {
        let cases = [
            ("INT", "KAFKA", vec![json!(0), json!(-7), json!(2147483647)]),
            (
                "BIGINT",
                "KAFKA",
                vec![json!(0), json!(-1), json!(9_007_199_254_740_993i64)],
            ),
            (
                "STRING",
                "KAFKA",
                vec![json!(""), json!("k1"), json!("ünï")],
            ),
            ("INT", "JSON", vec![json!(5), json!(-12)]),
            ("BIGINT", "JSON", vec![json!(1_700_000_000_000i64)]),
            ("STRING", "JSON", vec![json!("a\"b")]),
            ("BIGINT", "DELIMITED", vec![json!(42)]),
            ("DOUBLE", "KAFKA", vec![json!(1.5)]),
        ];
        for (ty, format, values) in cases {
            let t = table(&format!(
                "CREATE TABLE t (id {ty} PRIMARY KEY, v STRING) WITH (kafka_topic='t', key_format='{format}', value_format='JSON');"
            ));
            for value in values {
                let general =
                    record_from_json(&t, &json!({"ID": value.clone()}), &Schemas::default())
                        .unwrap()
                        .key
                        .map(|k| k.to_vec());
                assert_eq!(
                    encode_lookup_key(&t, &value),
                    general,
                    "{ty} {format} {value}"
                );
            }
        }
        let t = table(
            "CREATE TABLE t (id INT PRIMARY KEY, v STRING) WITH (kafka_topic='t', key_format='KAFKA', value_format='JSON');",
        );
        assert_eq!(encode_lookup_key(&t, &json!(4_294_967_296i64)), None);
    }
}
