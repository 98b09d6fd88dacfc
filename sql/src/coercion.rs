//! ksqlDB's typing rules for comparisons: which types compare, and how literals are read as
//! the type they are compared with (`ID IN ('10', 11)` reads `'10'` as a number, and fails on
//! `'ten'` as ksqlDB does); and which numbers widen to a column's type without a cast.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, ExprSchemable, lit};

use crate::ast::{self, BinaryOp, ExprKind, Literal};
use crate::types::{from_arrow, type_base_name, type_display};

/// Kinds of types that compare with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Null,
    Numeric,
    String,
    Boolean,
    Bytes,
    Temporal,
    Complex,
}

fn family(ty: &DataType) -> Family {
    match ty {
        DataType::Null => Family::Null,
        t if t.is_numeric() => Family::Numeric,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Family::String,
        DataType::Boolean => Family::Boolean,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Family::Bytes,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Time32(_) => {
            Family::Temporal
        }
        _ => Family::Complex,
    }
}

/// A type as ksqlDB names it in messages.
pub fn type_name(ty: &DataType) -> String {
    from_arrow(ty)
        .map(|t| type_display(&t))
        .unwrap_or_else(|_| ty.to_string())
}

/// Whether two types may be compared.
fn comparable(left: &DataType, right: &DataType, equality: bool) -> bool {
    let (l, r) = (family(left), family(right));
    match (l, r) {
        (Family::Null, _) | (_, Family::Null) => true,
        (Family::Temporal, Family::String) | (Family::String, Family::Temporal) => true,
        (Family::Complex, Family::Complex) => equality && same_shape(left, right),
        (Family::Boolean, Family::Boolean) => equality,
        _ => l == r,
    }
}

/// Complex types compare when their structure matches; nullability and field order aside.
fn same_shape(left: &DataType, right: &DataType) -> bool {
    match (left, right) {
        (DataType::List(a), DataType::List(b)) => comparable(a.data_type(), b.data_type(), true),
        (DataType::Map(a, _), DataType::Map(b, _)) => {
            comparable(a.data_type(), b.data_type(), true)
        }
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter().all(|f| {
                    b.iter()
                        .find(|g| g.name() == f.name())
                        .is_some_and(|g| comparable(f.data_type(), g.data_type(), true))
                })
        }
        _ => false,
    }
}

fn operator_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Eq => "EQUAL",
        BinaryOp::NotEq => "NOT_EQUAL",
        BinaryOp::Lt => "LESS_THAN",
        BinaryOp::LtEq => "LESS_THAN_OR_EQUAL",
        BinaryOp::Gt => "GREATER_THAN",
        BinaryOp::GtEq => "GREATER_THAN_OR_EQUAL",
        _ => "COMPARISON",
    }
}

/// Whether ksqlDB casts `from` to `to`: primitives to primitives, anything to STRING, and
/// arrays, maps and structs only to their own kind.
pub fn castable(from: &DataType, to: &DataType) -> bool {
    let complex = |t: &DataType| {
        matches!(
            t,
            DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
        )
    };
    match (from, to) {
        (DataType::Null, _) => true,
        (_, DataType::Utf8) => true,
        (DataType::List(_), DataType::List(_))
        | (DataType::Map(..), DataType::Map(..))
        | (DataType::Struct(_), DataType::Struct(_)) => true,
        (f, t) => !complex(f) && !complex(t),
    }
}

/// Checks `left op right` for a comparison operator, as ksqlDB's type checker does.
pub fn check_comparison(
    op: BinaryOp,
    (left_ast, left): (&ast::Expr, &Expr),
    (right_ast, right): (&ast::Expr, &Expr),
    schema: &DFSchema,
) -> Result<(), String> {
    let (Ok(lt), Ok(rt)) = (left.get_type(schema), right.get_type(schema)) else {
        return Ok(());
    };
    let is_null = |e: &ast::Expr| matches!(e.kind, ast::ExprKind::Literal(ast::Literal::Null));
    if is_null(left_ast) || is_null(right_ast) {
        let side = |e: &ast::Expr, t: &DataType| {
            if is_null(e) {
                "NULL".to_string()
            } else {
                type_name(t)
            }
        };
        return Err(format!(
            "Comparison with NULL not supported: {} {} {}\nUse 'IS NULL' or 'IS NOT NULL' instead.",
            side(left_ast, &lt),
            op.symbol(),
            side(right_ast, &rt)
        ));
    }
    let equality = matches!(op, BinaryOp::Eq | BinaryOp::NotEq);
    if comparable(&lt, &rt, equality) {
        return Ok(());
    }
    Err(format!(
        "Cannot compare {left_ast} ({}) to {right_ast} ({}) with {}.",
        type_name(&lt),
        type_name(&rt),
        operator_name(op)
    ))
}

/// Reads a boolean as ksqlDB does: any prefix of `true`, `yes`, `false` or `no`.
fn parse_boolean(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    if "true".starts_with(&t) || "yes".starts_with(&t) {
        Some(true)
    } else if "false".starts_with(&t) || "no".starts_with(&t) {
        Some(false)
    } else {
        None
    }
}

/// A string literal read as `target`, or ksqlDB's error.
fn parse_as(text: &str, target: &DataType) -> Result<Expr, String> {
    let invalid = || {
        let name = from_arrow(target)
            .map(|t| type_base_name(&t).to_string())
            .unwrap_or_else(|_| target.to_string());
        format!("invalid input syntax for type {name}: \"{text}\".")
    };
    if *target == DataType::Boolean {
        return parse_boolean(text)
            .map(|b| lit(ScalarValue::Boolean(Some(b))))
            .ok_or_else(invalid);
    }
    if target.is_numeric() {
        // Any number reads: '4.000' equals an INT 4, and '2147483648' may be compared with an INT.
        let trimmed = text.trim();
        if let Ok(n) = trimmed.parse::<i64>() {
            return Ok(lit(ScalarValue::Int64(Some(n))));
        }
        if let DataType::Decimal128(..) = target
            && let Ok(v) = ScalarValue::Utf8(Some(trimmed.to_string())).cast_to(target)
            && !v.is_null()
        {
            return Ok(lit(v));
        }
        return match trimmed.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(lit(ScalarValue::Float64(Some(x)))),
            _ => Err(invalid()),
        };
    }
    Ok(lit(ScalarValue::Utf8(Some(text.to_string()))))
}

/// The numeric type a string literal holds, as ksqlDB reads a number in text for an expression
/// list: an INT or a BIGINT when it is a whole number that fits, else the DECIMAL of its digits
/// (`'2e1'` is DECIMAL(2, 0), `'1.50'` DECIMAL(3, 2)); `None` when it is not a number.
pub fn numeric_literal_type(text: &str) -> Option<DataType> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Some(if i32::try_from(n).is_ok() {
            DataType::Int32
        } else {
            DataType::Int64
        });
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0').len().max(1) as i32;
    let scale = fraction.len() as i32 - exponent;
    let (precision, scale) = if scale < 0 {
        (significant - scale, 0)
    } else {
        (significant.max(scale), scale)
    };
    if precision > 38 {
        return Some(DataType::Float64);
    }
    Some(DataType::Decimal128(precision as u8, scale as i8))
}

/// The numeric type wide enough for every one of `types`, as ksqlDB widens an expression list:
/// any DOUBLE makes it DOUBLE; any DECIMAL a DECIMAL holding every whole part (an INT's 10
/// digits, a BIGINT's 19) and every scale; else BIGINT if any is, else INT.
pub fn widest_numeric(types: &[DataType]) -> Option<DataType> {
    let mut widest: Option<DataType> = None;
    let (mut whole, mut scale) = (0i32, 0i32);
    let mut decimal = false;
    for t in types {
        let (w, s) = match t {
            DataType::Int8 | DataType::Int16 | DataType::Int32 => (10, 0),
            DataType::Int64 => (19, 0),
            DataType::Decimal128(p, s) => {
                decimal = true;
                (i32::from(*p) - i32::from(*s), i32::from(*s))
            }
            DataType::Float32 | DataType::Float64 => return Some(DataType::Float64),
            DataType::Null => continue,
            _ => return None,
        };
        whole = whole.max(w);
        scale = scale.max(s);
        widest = Some(match (&widest, t) {
            (Some(DataType::Int64), _) | (_, DataType::Int64) => DataType::Int64,
            _ => DataType::Int32,
        });
    }
    if decimal {
        let precision = (whole + scale).min(38);
        return Some(DataType::Decimal128(
            precision as u8,
            scale.min(precision) as i8,
        ));
    }
    widest
}

/// Whether values of type `from` go into a column of type `to` without an explicit cast, as
/// ksqlDB lets `INSERT INTO` widen numbers: `INT` to `BIGINT`, `DECIMAL` or `DOUBLE`, `BIGINT`
/// to `DECIMAL` or `DOUBLE`, `DECIMAL` to `DOUBLE`, and a decimal to one with as many digits
/// on each side of the point.
pub fn widens_to(from: &ast::SqlType, to: &ast::SqlType) -> bool {
    use ast::SqlType;
    let rank = |ty: &SqlType| match ty {
        SqlType::Int => Some(0),
        SqlType::Bigint => Some(1),
        SqlType::Decimal { .. } => Some(2),
        SqlType::Double => Some(3),
        _ => None,
    };
    match (from, to) {
        (
            SqlType::Decimal {
                precision: p1,
                scale: s1,
            },
            SqlType::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 <= s2 && p1.saturating_sub(*s1) <= p2.saturating_sub(*s2),
        _ => matches!((rank(from), rank(to)), (Some(a), Some(b)) if a < b),
    }
}

/// Rewrites a literal (or a constructor of literals) compared with a value of type `target`
/// into that type, as ksqlDB does for `IN` lists. `None` when the expression is not one.
#[recursive::recursive]
pub fn coerce_literal(
    expr: &ast::Expr,
    target: &DataType,
    schema: &DFSchema,
    translate: &dyn Fn(&ast::Expr) -> Result<Expr, String>,
) -> Option<Result<Expr, String>> {
    match (&expr.kind, target) {
        (ExprKind::Literal(Literal::String(s)), t) if t.is_numeric() || *t == DataType::Boolean => {
            Some(parse_as(s, t))
        }
        (ExprKind::Literal(l), DataType::Utf8)
            if !matches!(l, Literal::String(_) | Literal::Null | Literal::Bytes(_)) =>
        {
            Some(Ok(lit(ScalarValue::Utf8(Some(l.to_string())))))
        }
        (ExprKind::Array(items), DataType::List(field)) => Some(
            items
                .iter()
                .map(|item| {
                    coerce_literal(item, field.data_type(), schema, translate)
                        .unwrap_or_else(|| translate(item))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(datafusion::functions_nested::expr_fn::make_array),
        ),
        (ExprKind::Map(entries), DataType::Map(field, _)) => {
            let DataType::Struct(kv) = field.data_type() else {
                return None;
            };
            let (kt, vt) = (kv[0].data_type(), kv[1].data_type());
            let coerce = |e: &ast::Expr, t: &DataType| {
                coerce_literal(e, t, schema, translate).unwrap_or_else(|| translate(e))
            };
            let keys = entries
                .iter()
                .map(|(k, _)| coerce(k, kt))
                .collect::<Result<Vec<_>, _>>();
            let values = entries
                .iter()
                .map(|(_, v)| coerce(v, vt))
                .collect::<Result<Vec<_>, _>>();
            Some(keys.and_then(|k| values.map(|v| datafusion::functions_nested::map::map(k, v))))
        }
        (ExprKind::Struct(fields), DataType::Struct(target_fields)) => {
            // A field whose value cannot compare with the target's leaves the constructor as
            // written, so the comparison reports both types.
            for (name, value) in fields {
                let Some(target) = target_fields.iter().find(|f| *f.name() == name.value) else {
                    continue;
                };
                if matches!(value.kind, ExprKind::Literal(_)) {
                    continue;
                }
                if let Ok(translated) = translate(value)
                    && let Ok(ty) = translated.get_type(schema)
                    && !comparable(target.data_type(), &ty, true)
                {
                    return None;
                }
            }
            let mut args = Vec::with_capacity(target_fields.len() * 2);
            for field in target_fields.iter() {
                let given = fields.iter().find(|(name, _)| name.value == *field.name());
                let value = match given {
                    Some((_, e)) => coerce_literal(e, field.data_type(), schema, translate)
                        .unwrap_or_else(|| translate(e)),
                    None => Ok(lit(ScalarValue::Null)),
                };
                let value = match value {
                    Ok(v) => v.cast_to(field.data_type(), schema),
                    Err(e) => return Some(Err(e)),
                };
                match value {
                    Ok(v) => {
                        args.push(lit(field.name().clone()));
                        args.push(v);
                    }
                    Err(e) => return Some(Err(e.to_string())),
                }
            }
            Some(Ok(datafusion::functions::core::named_struct().call(args)))
        }
        _ => None,
    }
}

/// Whether a struct constructor names a field the tested struct lacks, so it can never equal it.
pub fn never_equal(element: &ast::Expr, target: &DataType) -> bool {
    match (&element.kind, target) {
        (ExprKind::Struct(fields), DataType::Struct(target_fields)) => fields
            .iter()
            .any(|(name, _)| !target_fields.iter().any(|f| *f.name() == name.value)),
        _ => false,
    }
}

/// Checks that an `IN` list element may be compared with the tested value.
pub fn check_in_element(
    target: &DataType,
    element_ast: &ast::Expr,
    element: &Expr,
    schema: &DFSchema,
) -> Result<(), String> {
    let Ok(ty) = element.get_type(schema) else {
        return Ok(());
    };
    if comparable(target, &ty, true) {
        return Ok(());
    }
    Err(format!(
        "operator does not exist: {} = {} ({element_ast})\nHint: You might need to add explicit type casts.",
        type_name(target),
        type_name(&ty)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_widen_but_never_narrow() {
        use ast::SqlType::{Bigint, Decimal, Double, Int, String};
        let dec = |precision, scale| Decimal { precision, scale };
        for (from, to) in [
            (Int, Bigint),
            (Int, dec(5, 2)),
            (Int, Double),
            (Bigint, dec(10, 0)),
            (Bigint, Double),
            (dec(2, 1), dec(5, 2)),
            (dec(10, 2), Double),
        ] {
            assert!(widens_to(&from, &to), "{from:?} to {to:?}");
        }
        for (from, to) in [
            (Bigint, Int),
            (Double, Int),
            (Double, dec(10, 2)),
            (dec(10, 2), Bigint),
            (dec(10, 2), dec(5, 2)),
            (dec(3, 2), dec(3, 1)),
            (Int, Int),
            (Int, String),
            (String, Int),
        ] {
            assert!(!widens_to(&from, &to), "{from:?} to {to:?}");
        }
    }

    #[test]
    fn booleans_read_as_ksqldb_reads_them() {
        assert_eq!(parse_boolean("TrUe"), Some(true));
        assert_eq!(parse_boolean("tr"), Some(true));
        assert_eq!(parse_boolean("Y"), Some(true));
        assert_eq!(parse_boolean("no"), Some(false));
        assert_eq!(parse_boolean("Not a boolean"), None);
    }

    #[test]
    fn numbers_in_text_have_the_type_of_their_digits_and_lists_widen_to_hold_them_all() {
        use super::{numeric_literal_type, widest_numeric};
        assert_eq!(numeric_literal_type("10"), Some(DataType::Int32));
        assert_eq!(numeric_literal_type("3000000000"), Some(DataType::Int64));
        assert_eq!(
            numeric_literal_type("2e1"),
            Some(DataType::Decimal128(2, 0))
        );
        assert_eq!(
            numeric_literal_type("1.50"),
            Some(DataType::Decimal128(3, 2))
        );
        assert_eq!(
            numeric_literal_type("0.05"),
            Some(DataType::Decimal128(2, 2))
        );
        assert_eq!(numeric_literal_type("ten"), None);
        assert_eq!(numeric_literal_type("."), None);
        assert_eq!(
            widest_numeric(&[DataType::Int32, DataType::Decimal128(2, 0), DataType::Int64]),
            Some(DataType::Decimal128(19, 0))
        );
        assert_eq!(
            widest_numeric(&[DataType::Int32, DataType::Decimal128(3, 2)]),
            Some(DataType::Decimal128(12, 2))
        );
        assert_eq!(
            widest_numeric(&[DataType::Int32, DataType::Int64]),
            Some(DataType::Int64)
        );
        assert_eq!(
            widest_numeric(&[DataType::Int32, DataType::Float64]),
            Some(DataType::Float64)
        );
    }

    #[test]
    fn string_literals_read_as_numbers_or_fail() {
        assert_eq!(
            parse_as("10", &DataType::Int32).unwrap(),
            lit(ScalarValue::Int64(Some(10)))
        );
        assert_eq!(
            parse_as("10 - not a number", &DataType::Int64).unwrap_err(),
            "invalid input syntax for type BIGINT: \"10 - not a number\"."
        );
    }
}
