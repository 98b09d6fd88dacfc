//! ksqlDB's SQL types and their Arrow representation.
//!
//! | ksqlDB | Arrow |
//! |---|---|
//! | `BOOLEAN` | `Boolean` |
//! | `INT` | `Int32` |
//! | `BIGINT` | `Int64` |
//! | `DOUBLE` | `Float64` |
//! | `DECIMAL(p, s)` | `Decimal128(p, s)` |
//! | `STRING` | `Utf8` |
//! | `BYTES` | `Binary` |
//! | `DATE` | `Date32` (days since the epoch) |
//! | `TIME` | `Time32(Millisecond)` (milliseconds of the day) |
//! | `TIMESTAMP` | `Timestamp(Millisecond, None)` |
//! | `ARRAY<T>` | `List<T>` |
//! | `MAP<K, V>` | `Map<K, V>` with non-null keys |
//! | `STRUCT<...>` | `Struct<...>` |

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use thiserror::Error;

use crate::ast::{Ident, SqlType, StructField};

/// ksqlDB's name for a type's base: `INTEGER`, `ARRAY`, `STRUCT`, ...
pub fn type_base_name(ty: &SqlType) -> &'static str {
    match ty {
        SqlType::Boolean => "BOOLEAN",
        SqlType::Int => "INTEGER",
        SqlType::Bigint => "BIGINT",
        SqlType::Double => "DOUBLE",
        SqlType::Decimal { .. } => "DECIMAL",
        SqlType::String => "STRING",
        SqlType::Bytes => "BYTES",
        SqlType::Date => "DATE",
        SqlType::Time => "TIME",
        SqlType::Timestamp => "TIMESTAMP",
        SqlType::Array(_) => "ARRAY",
        SqlType::Map(..) => "MAP",
        SqlType::Struct(_) => "STRUCT",
        SqlType::Named(_) => "TYPE",
    }
}

/// A type written as ksqlDB writes it in messages and `DESCRIBE`: `INTEGER`,
/// `STRUCT<`F` DOUBLE>`, `DECIMAL(4, 2)`.
pub fn type_display(ty: &SqlType) -> String {
    match ty {
        SqlType::Decimal { precision, scale } => format!("DECIMAL({precision}, {scale})"),
        SqlType::Array(element) => format!("ARRAY<{}>", type_display(element)),
        SqlType::Map(key, value) => format!("MAP<{}, {}>", type_display(key), type_display(value)),
        SqlType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("`{}` {}", f.name.value, type_display(&f.ty)))
                .collect();
            format!("STRUCT<{}>", inner.join(", "))
        }
        SqlType::Named(name) => name.value.clone(),
        other => type_base_name(other).to_string(),
    }
}

/// The largest `DECIMAL` precision ksqlDB allows.
pub const MAX_DECIMAL_PRECISION: u32 = 38;

/// A type that cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypeError {
    /// A named type that was never created.
    #[error("type '{0}' is not defined; create it with CREATE TYPE")]
    UnknownType(String),
    /// `DECIMAL` with a precision or scale out of range.
    #[error(
        "DECIMAL({precision}, {scale}) is invalid: precision must be 1 to 38 and scale 0 to the precision"
    )]
    InvalidDecimal {
        /// The precision given.
        precision: u32,
        /// The scale given.
        scale: u32,
    },
    /// An Arrow type with no ksqlDB counterpart.
    #[error("the Arrow type {0} has no ksqlDB type")]
    Unsupported(String),
}

/// Replaces named types with what they stand for, recursively.
pub fn resolve(
    ty: &SqlType,
    named: &dyn Fn(&str) -> Option<SqlType>,
) -> Result<SqlType, TypeError> {
    Ok(match ty {
        SqlType::Named(name) => {
            let target =
                named(&name.value).ok_or_else(|| TypeError::UnknownType(name.value.clone()))?;
            resolve(&target, named)?
        }
        SqlType::Array(element) => SqlType::Array(Box::new(resolve(element, named)?)),
        SqlType::Map(key, value) => SqlType::Map(
            Box::new(resolve(key, named)?),
            Box::new(resolve(value, named)?),
        ),
        SqlType::Struct(fields) => SqlType::Struct(
            fields
                .iter()
                .map(|f| {
                    Ok(StructField {
                        name: f.name.clone(),
                        ty: resolve(&f.ty, named)?,
                    })
                })
                .collect::<Result<_, TypeError>>()?,
        ),
        SqlType::Decimal { precision, scale } => {
            if *precision == 0 || *precision > MAX_DECIMAL_PRECISION || scale > precision {
                return Err(TypeError::InvalidDecimal {
                    precision: *precision,
                    scale: *scale,
                });
            }
            ty.clone()
        }
        other => other.clone(),
    })
}

/// The Arrow type of a resolved ksqlDB type. Named types must be resolved first.
pub fn to_arrow(ty: &SqlType) -> Result<DataType, TypeError> {
    Ok(match ty {
        SqlType::Boolean => DataType::Boolean,
        SqlType::Int => DataType::Int32,
        SqlType::Bigint => DataType::Int64,
        SqlType::Double => DataType::Float64,
        SqlType::Decimal { precision, scale } => {
            if *precision == 0 || *precision > MAX_DECIMAL_PRECISION || scale > precision {
                return Err(TypeError::InvalidDecimal {
                    precision: *precision,
                    scale: *scale,
                });
            }
            DataType::Decimal128(*precision as u8, *scale as i8)
        }
        SqlType::String => DataType::Utf8,
        SqlType::Bytes => DataType::Binary,
        SqlType::Date => DataType::Date32,
        SqlType::Time => DataType::Time32(TimeUnit::Millisecond),
        SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        SqlType::Array(element) => {
            DataType::List(Arc::new(Field::new("item", to_arrow(element)?, true)))
        }
        SqlType::Map(key, value) => {
            let entries = Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", to_arrow(key)?, false),
                    Field::new("value", to_arrow(value)?, true),
                ])),
                false,
            );
            DataType::Map(Arc::new(entries), false)
        }
        SqlType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Ok(Field::new(f.name.value.clone(), to_arrow(&f.ty)?, true)))
                .collect::<Result<Vec<_>, TypeError>>()?
                .into(),
        ),
        SqlType::Named(name) => return Err(TypeError::UnknownType(name.value.clone())),
    })
}

/// The ksqlDB type of an Arrow type, where there is one.
pub fn from_arrow(data_type: &DataType) -> Result<SqlType, TypeError> {
    Ok(match data_type {
        DataType::Boolean => SqlType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 => SqlType::Int,
        DataType::Int64 => SqlType::Bigint,
        DataType::Float32 | DataType::Float64 => SqlType::Double,
        DataType::Decimal128(p, s) if *s >= 0 => SqlType::Decimal {
            precision: u32::from(*p),
            scale: *s as u32,
        },
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytes,
        DataType::Date32 => SqlType::Date,
        DataType::Time32(TimeUnit::Millisecond) => SqlType::Time,
        DataType::Timestamp(TimeUnit::Millisecond, _) => SqlType::Timestamp,
        DataType::List(f) | DataType::LargeList(f) => {
            SqlType::Array(Box::new(from_arrow(f.data_type())?))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => SqlType::Map(
                Box::new(from_arrow(kv[0].data_type())?),
                Box::new(from_arrow(kv[1].data_type())?),
            ),
            other => return Err(TypeError::Unsupported(other.to_string())),
        },
        DataType::Struct(fields) => SqlType::Struct(
            fields
                .iter()
                .map(|f| {
                    Ok(StructField {
                        name: field_ident(f.name()),
                        ty: from_arrow(f.data_type())?,
                    })
                })
                .collect::<Result<_, TypeError>>()?,
        ),
        other => return Err(TypeError::Unsupported(other.to_string())),
    })
}

/// An identifier for a field name, quoted when ksqlDB would have to quote it.
fn field_ident(name: &str) -> Ident {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        Ident::new(name)
    } else {
        Ident::quoted(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_schema;

    fn ty(schema: &str) -> SqlType {
        parse_schema(&format!("X {schema}")).unwrap().remove(0).ty
    }

    #[test]
    fn every_type_maps_to_arrow_and_back() {
        for schema in [
            "BOOLEAN",
            "INT",
            "BIGINT",
            "DOUBLE",
            "DECIMAL(10, 2)",
            "STRING",
            "BYTES",
            "DATE",
            "TIME",
            "TIMESTAMP",
            "ARRAY<STRING>",
            "MAP<STRING, ARRAY<INT>>",
            "STRUCT<A INT, `b c` STRUCT<D DOUBLE>>",
        ] {
            let original = ty(schema);
            let arrow = to_arrow(&original).unwrap();
            assert_eq!(from_arrow(&arrow).unwrap(), original, "{schema} -> {arrow}");
        }
        assert_eq!(
            to_arrow(&ty("DECIMAL(4, 2)")).unwrap(),
            DataType::Decimal128(4, 2)
        );
    }

    #[test]
    fn named_types_resolve_and_bad_decimals_are_refused() {
        let address = ty("STRUCT<STREET STRING>");
        let resolved = resolve(&ty("ARRAY<ADDRESS>"), &|name| {
            (name == "ADDRESS").then(|| address.clone())
        })
        .unwrap();
        assert_eq!(resolved, SqlType::Array(Box::new(address)));
        let err = resolve(&ty("ARRAY<NOPE>"), &|_| None).unwrap_err();
        assert_eq!(err, TypeError::UnknownType("NOPE".into()));
        assert!(to_arrow(&ty("DECIMAL(2, 3)")).is_err());
        assert!(to_arrow(&ty("DECIMAL(39, 0)")).is_err());
    }
}
