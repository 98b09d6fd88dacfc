//! `TO_JSON_STRING`: any value as JSON text, as ksqlDB writes it with Jackson. A struct's
//! fields and a map's keys come out sorted by name (ksqlDB puts them in a `TreeMap` so the text
//! is predictable), bytes as base64, and dates, times and timestamps as the text `CAST(... AS
//! STRING)` gives them.

use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, Float32Array, Float64Array,
    ListArray, MapArray, StringArray, StringBuilder, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::logical_expr::TypeSignature;

use super::udf::{STRING, Scalar, function};

/// `ty` with every date, time and timestamp in it (however deep) turned into text.
fn temporal_as_text(ty: &DataType) -> DataType {
    let field = |f: &Arc<Field>| {
        Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(temporal_as_text(f.data_type())),
        )
    };
    match ty {
        DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Timestamp(..) => DataType::Utf8,
        DataType::List(item) => DataType::List(field(item)),
        DataType::Struct(fields) => {
            DataType::Struct(Fields::from(fields.iter().map(field).collect::<Vec<_>>()))
        }
        DataType::Map(entries, sorted) => DataType::Map(field(entries), *sorted),
        other => other.clone(),
    }
}

/// Appends `text` as a JSON string.
fn write_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::Value::from(text).to_string());
}

/// A double as Java writes it: a whole number keeps its `.0`; NaN and the infinities, which
/// JSON has no number for, are strings as Jackson quotes them.
fn write_double(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(&serde_json::to_string(&v).unwrap_or_else(|_| v.to_string()));
    } else if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v > 0.0 {
        out.push_str("\"Infinity\"");
    } else {
        out.push_str("\"-Infinity\"");
    }
}

/// Appends row `i` of `array` (with no temporal types left, see [`temporal_as_text`]) as JSON.
fn write_value(out: &mut String, array: &dyn Array, i: usize) -> Result<(), String> {
    if array.is_null(i) {
        out.push_str("null");
        return Ok(());
    }
    let any = array.as_any();
    let unexpected = || format!("TO_JSON_STRING cannot write {}", array.data_type());
    match array.data_type() {
        DataType::Null => out.push_str("null"),
        DataType::Boolean => {
            let b = any.downcast_ref::<BooleanArray>().ok_or_else(unexpected)?;
            out.push_str(if b.value(i) { "true" } else { "false" });
        }
        t if t.is_integer() => out.push_str(
            &datafusion::arrow::util::display::array_value_to_string(array, i)
                .map_err(|e| e.to_string())?,
        ),
        DataType::Float64 => {
            write_double(
                out,
                any.downcast_ref::<Float64Array>()
                    .ok_or_else(unexpected)?
                    .value(i),
            );
        }
        DataType::Float32 => {
            let v = any
                .downcast_ref::<Float32Array>()
                .ok_or_else(unexpected)?
                .value(i);
            write_double(out, f64::from(v));
        }
        DataType::Decimal128(..) => out.push_str(
            &any.downcast_ref::<Decimal128Array>()
                .ok_or_else(unexpected)?
                .value_as_string(i),
        ),
        DataType::Utf8 => write_string(
            out,
            any.downcast_ref::<StringArray>()
                .ok_or_else(unexpected)?
                .value(i),
        ),
        DataType::Binary => write_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(
                any.downcast_ref::<BinaryArray>()
                    .ok_or_else(unexpected)?
                    .value(i),
            ),
        ),
        DataType::List(_) => {
            let items = any
                .downcast_ref::<ListArray>()
                .ok_or_else(unexpected)?
                .value(i);
            out.push('[');
            for j in 0..items.len() {
                if j > 0 {
                    out.push(',');
                }
                write_value(out, items.as_ref(), j)?;
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let s = any.downcast_ref::<StructArray>().ok_or_else(unexpected)?;
            let mut order: Vec<usize> = (0..fields.len()).collect();
            order.sort_by(|&a, &b| fields[a].name().cmp(fields[b].name()));
            write_object(
                out,
                order
                    .into_iter()
                    .map(|j| (fields[j].name().clone(), s.column(j).clone(), i)),
            )?;
        }
        DataType::Map(..) => {
            let entries = any
                .downcast_ref::<MapArray>()
                .ok_or_else(unexpected)?
                .value(i);
            let keys = cast(entries.column(0), &DataType::Utf8).map_err(|e| e.to_string())?;
            let keys = keys
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(unexpected)?;
            let values = entries.column(1).clone();
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_by(|&a, &b| keys.value(a).cmp(keys.value(b)));
            write_object(
                out,
                order
                    .into_iter()
                    .map(|j| (keys.value(j).to_string(), values.clone(), j)),
            )?;
        }
        _ => return Err(unexpected()),
    }
    Ok(())
}

/// Appends an object of the given (name, column, row) members, in the order given.
fn write_object(
    out: &mut String,
    members: impl Iterator<Item = (String, ArrayRef, usize)>,
) -> Result<(), String> {
    out.push('{');
    for (k, (name, column, row)) in members.enumerate() {
        if k > 0 {
            out.push(',');
        }
        write_string(out, &name);
        out.push(':');
        write_value(out, column.as_ref(), row)?;
    }
    out.push('}');
    Ok(())
}

/// `TO_JSON_STRING(value)`: the value as JSON text; `null` for a null value.
fn to_json_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let wanted = temporal_as_text(args[0].data_type());
    let values = if &wanted == args[0].data_type() {
        args[0].clone()
    } else {
        cast(&args[0], &wanted).map_err(|e| e.to_string())?
    };
    let mut out = StringBuilder::new();
    let mut text = String::new();
    for i in 0..rows {
        text.clear();
        let row = if values.len() == 1 { 0 } else { i };
        write_value(&mut text, values.as_ref(), row)?;
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![function(
        "TO_JSON_STRING",
        TypeSignature::Any(1),
        STRING,
        to_json_string,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, TimestampMillisecondArray};

    fn json_of(array: ArrayRef) -> Vec<String> {
        let rows = array.len();
        let out = to_json_string(&[array], rows).unwrap();
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        (0..rows).map(|i| out.value(i).to_string()).collect()
    }

    #[test]
    fn values_come_out_as_ksqldb_writes_them() {
        assert_eq!(
            json_of(Arc::new(Int32Array::from(vec![Some(1), None]))),
            ["1", "null"]
        );
        assert_eq!(
            json_of(Arc::new(Float64Array::from(vec![15.3, 1.0, f64::NAN]))),
            ["15.3", "1.0", "\"NaN\""]
        );
        assert_eq!(
            json_of(Arc::new(StringArray::from(vec!["a\"b"]))),
            [r#""a\"b""#]
        );
        assert_eq!(
            json_of(Arc::new(TimestampMillisecondArray::from(vec![10]))),
            [r#""1970-01-01T00:00:00.010""#]
        );
        // A struct's fields sorted by name.
        let s = StructArray::from(vec![
            (
                Arc::new(Field::new("NAME", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["A"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("ID", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![1])) as ArrayRef,
            ),
        ]);
        assert_eq!(json_of(Arc::new(s)), [r#"{"ID":1,"NAME":"A"}"#]);
    }
}
