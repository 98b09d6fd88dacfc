//! `CAST` where ksqlDB's rules are not Arrow's: an array, map or struct cast to `STRING` is its
//! Java text (`[1, 2]`, `{k=1}`, `Struct{F0=1,f1=3}`), a `BIGINT` cast to `INT` wraps around as
//! Java's `(int)` does, and casts between arrays, maps and structs apply those rules to every
//! element (a struct keeps the fields the target names, matched case-sensitively, and the rest
//! of the target's are null). A string cast to `DATE` may leave out the day, or the month and
//! the day (`2024-05` is 2024-05-01), as ksqlDB completes a partial date. The planner calls `KSQL_CAST(value, <null of the target type>)`
//! for these; other casts stay Arrow's.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Float32Array, Float64Array, Int32Array,
    Int64Array, ListArray, MapArray, StringArray, StringBuilder, StructArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{Scalar, function};

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
    )
}

/// Whether casting `from` to `to` follows ksqlDB's rules rather than Arrow's (see the module).
pub fn needs_ksql_cast(from: &DataType, to: &DataType) -> bool {
    match (from, to) {
        // Java writes doubles its own way (`1.0E7`, `4.9E-324`), not as Arrow does.
        (DataType::Float64 | DataType::Float32, DataType::Utf8) => true,
        (f, DataType::Utf8) => nested(f),
        (DataType::Int64, DataType::Int32) => true,
        (DataType::Utf8, DataType::Date32) => true,
        (f, t) => nested(f) && nested(t),
    }
}

/// A double as Java's `Double.toString` writes it.
pub fn java_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let magnitude = v.abs();
    if v == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let text = format!("{v}");
        return if text.contains('.') {
            text
        } else {
            format!("{text}.0")
        };
    }
    let mut text = format!("{v:e}");
    if !text.split_once('e').is_some_and(|(m, _)| m.contains('.')) {
        // One significant digit is too few for Java, which always writes `d.d`: it writes the
        // two-digit decimal nearest the exact value (Double.MIN_VALUE is 4.9E-324, not 5.0E-324).
        text = format!("{v:.1e}");
    }
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    format!("{mantissa}E{exponent}")
}

/// Row `i` of `array` as Java's `toString` writes the value ksqlDB holds: text bare, and
/// `null` for a null.
fn java_text(array: &dyn Array, i: usize) -> Result<String, String> {
    if array.is_null(i) {
        return Ok("null".into());
    }
    let any = array.as_any();
    let wrong = || format!("cannot write {} as text", array.data_type());
    Ok(match array.data_type() {
        DataType::Utf8 => any
            .downcast_ref::<StringArray>()
            .ok_or_else(wrong)?
            .value(i)
            .to_string(),
        DataType::Boolean => any
            .downcast_ref::<BooleanArray>()
            .ok_or_else(wrong)?
            .value(i)
            .to_string(),
        DataType::Int32 => any
            .downcast_ref::<Int32Array>()
            .ok_or_else(wrong)?
            .value(i)
            .to_string(),
        DataType::Int64 => any
            .downcast_ref::<Int64Array>()
            .ok_or_else(wrong)?
            .value(i)
            .to_string(),
        DataType::Float64 => java_double(
            any.downcast_ref::<Float64Array>()
                .ok_or_else(wrong)?
                .value(i),
        ),
        DataType::Float32 => java_double(f64::from(
            any.downcast_ref::<Float32Array>()
                .ok_or_else(wrong)?
                .value(i),
        )),
        DataType::Decimal128(..) => any
            .downcast_ref::<Decimal128Array>()
            .ok_or_else(wrong)?
            .value_as_string(i),
        DataType::List(_) => {
            let items = any.downcast_ref::<ListArray>().ok_or_else(wrong)?.value(i);
            let texts = (0..items.len())
                .map(|j| java_text(items.as_ref(), j))
                .collect::<Result<Vec<_>, _>>()?;
            format!("[{}]", texts.join(", "))
        }
        DataType::Map(..) => {
            let entries = any.downcast_ref::<MapArray>().ok_or_else(wrong)?.value(i);
            let texts = (0..entries.len())
                .map(|j| {
                    Ok(format!(
                        "{}={}",
                        java_text(entries.column(0).as_ref(), j)?,
                        java_text(entries.column(1).as_ref(), j)?
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            format!("{{{}}}", texts.join(", "))
        }
        DataType::Struct(fields) => {
            // As Kafka Connect's Struct writes itself: null fields left out.
            let s = any.downcast_ref::<StructArray>().ok_or_else(wrong)?;
            let mut texts = Vec::new();
            for (j, field) in fields.iter().enumerate() {
                if !s.column(j).is_null(i) {
                    texts.push(format!(
                        "{}={}",
                        field.name(),
                        java_text(s.column(j).as_ref(), i)?
                    ));
                }
            }
            format!("Struct{{{}}}", texts.join(","))
        }
        _ => datafusion::arrow::util::display::array_value_to_string(array, i).map_err(fail)?,
    })
}

/// `array` cast to `to` by ksqlDB's rules where they differ from Arrow's.
pub fn ksql_cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    let from = array.data_type();
    if from == to {
        return Ok(array.clone());
    }
    match (from, to) {
        (f, DataType::Utf8) if nested(f) || matches!(f, DataType::Float64 | DataType::Float32) => {
            let mut out = StringBuilder::new();
            for i in 0..array.len() {
                if array.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(java_text(array.as_ref(), i)?);
                }
            }
            Ok(Arc::new(out.finish()))
        }
        (DataType::Int64, DataType::Int32) => {
            let longs = array
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or("expected a BIGINT")?;
            Ok(Arc::new(
                longs
                    .iter()
                    .map(|v| v.map(|v| v as i32))
                    .collect::<Int32Array>(),
            ))
        }
        (DataType::Utf8, DataType::Date32) => {
            let texts = array
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or("expected a string")?;
            let completed: StringArray = texts.iter().map(|t| t.map(complete_date)).collect();
            cast(&completed, to).map_err(fail)
        }
        (DataType::List(_), DataType::List(item)) => {
            let list = array
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or("expected an array")?;
            let values = ksql_cast(list.values(), item.data_type())?;
            let cast = ListArray::try_new(
                item.clone(),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )
            .map_err(fail)?;
            Ok(Arc::new(cast))
        }
        (DataType::Map(..), DataType::Map(entries_field, sorted)) => {
            let map = array
                .as_any()
                .downcast_ref::<MapArray>()
                .ok_or("expected a map")?;
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let entries = ksql_cast(&entries, entries_field.data_type())?;
            let entries = entries
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or("expected map entries")?
                .clone();
            let cast = MapArray::try_new(
                entries_field.clone(),
                map.offsets().clone(),
                entries,
                map.nulls().cloned(),
                *sorted,
            )
            .map_err(fail)?;
            Ok(Arc::new(cast))
        }
        (DataType::Struct(from_fields), DataType::Struct(to_fields)) => {
            let s = array
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or("expected a struct")?;
            let columns = to_fields
                .iter()
                .map(
                    |target| match from_fields.iter().position(|f| f.name() == target.name()) {
                        Some(at) => ksql_cast(s.column(at), target.data_type()),
                        None => Ok(new_null_array(target.data_type(), s.len())),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?;
            let cast = StructArray::try_new(to_fields.clone(), columns, s.nulls().cloned())
                .map_err(fail)?;
            Ok(Arc::new(cast))
        }
        _ => cast(array, to).map_err(fail),
    }
}

/// A date written as `yyyy` or `yyyy-MM` with the month and day it leaves out (the first);
/// any other text as it is.
fn complete_date(text: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = text.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match trimmed.split_once('-') {
        None if trimmed.len() == 4 && digits(trimmed) => format!("{trimmed}-01-01").into(),
        Some((year, month))
            if year.len() == 4
                && digits(year)
                && (1..=2).contains(&month.len())
                && digits(month) =>
        {
            format!("{year}-{month:0>2}-01").into()
        }
        _ => text.into(),
    }
}

/// `KSQL_CAST(value, target)`: the value cast to the type of `target` (a typed null).
fn ksql_cast_fn(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    let to = args[1].data_type().clone();
    let value = if args[0].len() == 1 && args[1].len() > 1 {
        // A constant value against a batch: cast once, then repeat.
        let one = ksql_cast(&args[0], &to)?;
        let indices = datafusion::arrow::array::UInt32Array::from(vec![0u32; args[1].len()]);
        datafusion::arrow::compute::take(one.as_ref(), &indices, None).map_err(fail)?
    } else {
        ksql_cast(&args[0], &to)?
    };
    Ok(value)
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![function(
        "KSQL_CAST",
        TypeSignature::Any(2),
        |args| {
            args.get(1)
                .cloned()
                .ok_or_else(|| "KSQL_CAST takes a value and a target".to_string())
        },
        ksql_cast_fn,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_dates_are_completed_with_the_first_day() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1970-01-10"),
            Some("1970-01"),
            Some("1970"),
            Some("2024-5"),
            Some("foo"),
            Some("19700"),
            Some("1970-"),
            None,
        ]));
        let dates = ksql_cast(&texts, &DataType::Date32).unwrap();
        let days = dates
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Date32Array>()
            .unwrap();
        let got: Vec<Option<i32>> = days.iter().collect();
        assert_eq!(
            got,
            vec![
                Some(9),
                Some(0),
                Some(0),
                Some(19844),
                None,
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn doubles_are_written_as_java_writes_them() {
        for (v, text) in [
            (1.0, "1.0"),
            (15.3, "15.3"),
            (-0.5, "-0.5"),
            (1e7, "1.0E7"),
            (1.5e-5, "1.5E-5"),
            (f64::from_bits(1), "4.9E-324"),
            (1e23, "1.0E23"),
            (2e-323, "2.0E-323"),
            (0.001, "0.001"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(java_double(v), text);
        }
    }
}
