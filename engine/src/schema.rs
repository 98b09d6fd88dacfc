//! The columns of a stream or table: key, value and header columns, with ksqlDB's names for types.

use eddy_sql::ast::SqlType;

/// Pseudo-columns every source has; user columns may not take these names.
pub const PSEUDO_COLUMNS: &[&str] = &["ROWTIME", "ROWPARTITION", "ROWOFFSET"];
/// Window bounds of windowed sources.
pub const WINDOW_COLUMNS: &[&str] = &["WINDOWSTART", "WINDOWEND"];

/// Where a column's data lives in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// In the record key.
    Key,
    /// In the record value.
    Value,
    /// All headers, as `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`.
    Headers,
    /// The last header with this key, as `BYTES`.
    Header(String),
}

/// A column of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The name, as ksqlDB stores it (upper-cased unless quoted).
    pub name: String,
    /// The type, with named types resolved.
    pub ty: SqlType,
    /// Where it lives.
    pub kind: ColumnKind,
}

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

/// The type a `HEADERS` column must have.
pub fn headers_type() -> SqlType {
    eddy_sql::parse_schema("X ARRAY<STRUCT<`KEY` STRING, `VALUE` BYTES>>")
        .map(|mut cols| cols.remove(0).ty)
        .unwrap_or(SqlType::Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_print_as_ksqldb_does() {
        let ty = eddy_sql::parse_schema(
            "X STRUCT<a INT, `b` ARRAY<DECIMAL(4,2)>, M MAP<STRING, BIGINT>>",
        )
        .unwrap()
        .remove(0)
        .ty;
        assert_eq!(
            type_display(&ty),
            "STRUCT<`A` INTEGER, `b` ARRAY<DECIMAL(4, 2)>, `M` MAP<STRING, BIGINT>>"
        );
        assert_eq!(
            type_display(&headers_type()),
            "ARRAY<STRUCT<`KEY` STRING, `VALUE` BYTES>>"
        );
    }
}
