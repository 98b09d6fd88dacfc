//! Math functions with Java's results where DataFusion's differ: `SIGN`, `ROUND` (half up,
//! to a scale), `SQRT` and `LOG` (NaN where Java's Math gives it), and `GEO_DISTANCE`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int32Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::TypeSignature;

use super::udf::{INT, Scalar, any1, at, doubles, function, long_at, longs, string_at, strings};

/// `SIGN(x)`: -1, 0 or 1 as an INT.
fn sign(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let values = cast(&args[0], &DataType::Float64).map_err(|e| e.to_string())?;
    let values = values
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .cloned()
        .ok_or("expected a number")?;
    Ok(Arc::new(Int32Array::from(
        (0..rows)
            .map(|i| {
                let i = at(i, values.len());
                (!values.is_null(i)).then(|| {
                    let v = values.value(i);
                    if v > 0.0 {
                        1
                    } else if v < 0.0 {
                        -1
                    } else {
                        0
                    }
                })
            })
            .collect::<Vec<_>>(),
    )))
}

/// `ROUND(x)` and `ROUND(x, places)`: halves round up (towards positive infinity) for DOUBLE, as
/// Java's `Math.round`, and away from zero for DECIMAL; `ROUND(DOUBLE)` is a BIGINT.
fn round_type(args: &[DataType]) -> Result<DataType, String> {
    Ok(match (args.first(), args.len()) {
        (Some(DataType::Decimal128(p, s)), 1) => {
            DataType::Decimal128((p.saturating_sub(*s as u8)).max(1), 0)
        }
        (Some(DataType::Float64 | DataType::Float32), 1) => DataType::Int64,
        (Some(DataType::Float32), _) => DataType::Float64,
        (Some(t), _) if t.is_numeric() => t.clone(),
        (Some(t), _) => return Err(format!("ROUND does not accept {t}")),
        (None, _) => return Err("ROUND takes one or two arguments".into()),
    })
}

fn round(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let places = match args.get(1) {
        Some(p) => Some(longs(p)?),
        None => None,
    };
    let places_at = |i: usize| places.as_ref().map_or(Some(0), |p| long_at(p, i));
    let input = &args[0];
    let out_type = round_type(
        &args
            .iter()
            .map(|a| a.data_type().clone())
            .collect::<Vec<_>>(),
    )?;
    match input.data_type() {
        DataType::Decimal128(_, scale) => {
            let scale = i64::from(*scale);
            let decimals = input
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Decimal128Array>()
                .ok_or("expected a decimal")?;
            let mut out = Vec::with_capacity(rows);
            for i in 0..rows {
                let j = at(i, decimals.len());
                let (Some(n), false) = (places_at(i), decimals.is_null(j)) else {
                    out.push(None);
                    continue;
                };
                let v = decimals.value(j);
                // Negative places round left of the point (ROUND(123.4, -1) is 120); past 38
                // digits every value rounds to zero.
                let drop = (scale - n.min(scale)).min(39) as u32;
                if drop > 38 {
                    out.push(Some(0));
                    continue;
                }
                let d = 10i128.pow(drop);
                let (mut q, r) = (v / d, v % d);
                if r.abs() * 2 >= d {
                    q += v.signum();
                }
                out.push(Some(if args.len() == 1 { q } else { q * d }));
            }
            let array = datafusion::arrow::array::Decimal128Array::from(out);
            let (p, s) = match out_type {
                DataType::Decimal128(p, s) => (p, s),
                _ => (38, 0),
            };
            Ok(Arc::new(
                array
                    .with_precision_and_scale(p, s)
                    .map_err(|e| e.to_string())?,
            ))
        }
        DataType::Float64 | DataType::Float32 => {
            let values = doubles(input)?;
            let rounded: Vec<Option<f64>> = (0..rows)
                .map(|i| {
                    let j = at(i, values.len());
                    let n = places_at(i)?;
                    (!values.is_null(j)).then(|| {
                        let factor = 10f64.powi(n as i32);
                        (values.value(j) * factor + 0.5).floor() / factor
                    })
                })
                .collect();
            if args.len() == 1 {
                Ok(Arc::new(Int64Array::from(
                    rounded
                        .into_iter()
                        .map(|v| v.map(|v| v as i64))
                        .collect::<Vec<_>>(),
                )))
            } else {
                Ok(Arc::new(datafusion::arrow::array::Float64Array::from(
                    rounded,
                )))
            }
        }
        // Whole numbers are already round.
        _ => Ok(input.clone()),
    }
}

/// `SQRT(x)`: a DOUBLE; NaN for a negative number, as Java's `Math.sqrt` (DataFusion's refuses).
fn sqrt(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef, String> {
    let values = doubles(&args[0])?;
    Ok(Arc::new(
        datafusion::arrow::compute::kernels::arity::unary::<
            _,
            _,
            datafusion::arrow::datatypes::Float64Type,
        >(&values, f64::sqrt),
    ))
}

fn log(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let (base, value) = match args {
        [value] => (None, doubles(value)?),
        [base, value] => (Some(doubles(base)?), doubles(value)?),
        _ => return Err("LOG takes one or two arguments".into()),
    };
    let out: Vec<Option<f64>> = (0..rows)
        .map(|i| {
            let j = at(i, value.len());
            if value.is_null(j) {
                return None;
            }
            let ln = value.value(j).ln();
            match &base {
                None => Some(ln),
                Some(b) => {
                    let k = at(i, b.len());
                    // As ksqlDB: no logarithm to a base of 1 or below zero.
                    (!b.is_null(k)).then(|| match b.value(k) {
                        base if base <= 0.0 || base == 1.0 => f64::NAN,
                        base => ln / base.ln(),
                    })
                }
            }
        })
        .collect();
    Ok(Arc::new(datafusion::arrow::array::Float64Array::from(out)))
}

/// `GEO_DISTANCE(lat1, lon1, lat2, lon2[, 'KM'|'MI'])`: the great-circle distance, with the
/// earth's mean radius as ksqlDB takes it.
fn geo_distance(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let coords = args[..4]
        .iter()
        .map(doubles)
        .collect::<Result<Vec<_>, _>>()?;
    let unit = match args.get(4) {
        Some(u) => Some(strings(u)?),
        None => None,
    };
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let values: Option<Vec<f64>> = coords
            .iter()
            .map(|c| {
                let j = at(i, c.len());
                (!c.is_null(j)).then(|| c.value(j))
            })
            .collect();
        let Some(v) = values else {
            out.push(None);
            continue;
        };
        let radius = match unit.as_ref().map(|u| string_at(u, i)) {
            None => 6371.0,
            Some(Some(u))
                if u.eq_ignore_ascii_case("KM") || u.eq_ignore_ascii_case("KILOMETERS") =>
            {
                6371.0
            }
            Some(Some(u)) if u.eq_ignore_ascii_case("MI") || u.eq_ignore_ascii_case("MILES") => {
                3959.0
            }
            Some(Some(u)) => {
                return Err(format!(
                    "GeoDistance function units parameter must be one of 'MI', 'MILES', 'KM', 'KILOMETERS'. Values passed were: {u}"
                ));
            }
            // No unit is kilometres.
            Some(None) => 6371.0,
        };
        for (lat, lon) in [(v[0], v[1]), (v[2], v[3])] {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!(
                    "valid latitude values for GeoDistance function are in the range of -90 to 90 decimal degrees, and longitude values -180 to 180; got {lat}, {lon}"
                ));
            }
        }
        // In ksqlDB's order of operations, so results agree to the last bit.
        let dlat = (v[2] - v[0]).to_radians();
        let dlon = (v[3] - v[1]).to_radians();
        let a = (dlat / 2.0).sin().powi(2)
            + (dlon / 2.0).sin().powi(2) * v[0].to_radians().cos() * v[2].to_radians().cos();
        out.push(Some(2.0 * a.sqrt().asin() * radius));
    }
    Ok(Arc::new(datafusion::arrow::array::Float64Array::from(out)))
}

/// The functions of this file, as the catalogue registers them.
pub(super) fn functions() -> Vec<Scalar> {
    vec![
        function("SIGN", any1(), INT, sign),
        function(
            "GEO_DISTANCE",
            TypeSignature::OneOf(vec![TypeSignature::Any(4), TypeSignature::Any(5)]),
            |args| {
                if args
                    .iter()
                    .take(4)
                    .all(|t| t.is_numeric() || *t == DataType::Null)
                {
                    Ok(DataType::Float64)
                } else {
                    Err("Function 'geo_distance' does not accept parameters".into())
                }
            },
            geo_distance,
        ),
        function(
            "SQRT",
            any1(),
            |args| match args.first() {
                Some(t) if t.is_numeric() || *t == DataType::Null => Ok(DataType::Float64),
                _ => Err("Function 'sqrt' does not accept parameters".into()),
            },
            sqrt,
        ),
        function(
            "ROUND",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            round_type,
            round,
        ),
        function(
            "LOG",
            TypeSignature::OneOf(vec![TypeSignature::Any(1), TypeSignature::Any(2)]),
            |_| Ok(DataType::Float64),
            log,
        ),
    ]
}
