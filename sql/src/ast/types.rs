//! ksqlDB's SQL types, as written in statements.

use crate::ast::Ident;

/// A type as written: `INT`, `DECIMAL(4, 2)`, `ARRAY<STRING>`, `STRUCT<A INT>`, or a named type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlType {
    /// `BOOLEAN`.
    Boolean,
    /// `INT` / `INTEGER`: 32-bit signed.
    Int,
    /// `BIGINT`: 64-bit signed.
    Bigint,
    /// `DOUBLE`.
    Double,
    /// `DECIMAL(precision, scale)`.
    Decimal {
        /// Total digits.
        precision: u32,
        /// Digits after the point.
        scale: u32,
    },
    /// `STRING` / `VARCHAR`.
    String,
    /// `BYTES`.
    Bytes,
    /// `DATE`.
    Date,
    /// `TIME`.
    Time,
    /// `TIMESTAMP`.
    Timestamp,
    /// `ARRAY<T>`.
    Array(Box<SqlType>),
    /// `MAP<K, V>`.
    Map(Box<SqlType>, Box<SqlType>),
    /// `STRUCT<name T, ...>`.
    Struct(Vec<StructField>),
    /// A type registered with `CREATE TYPE`.
    Named(Ident),
}

/// One field of a `STRUCT` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructField {
    /// The field name.
    pub name: Ident,
    /// The field type.
    pub ty: SqlType,
}
