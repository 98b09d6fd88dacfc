//! The columns of a stream or table: key, value and header columns, with ksqlDB's names for types.

use eddy_sql::ast::SqlType;
pub use eddy_sql::types::{type_base_name, type_display};

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

/// Key and value columns as ksqlDB prints a schema: `ID STRING KEY, V INTEGER`, with each
/// name in back-quotes when `quoted` (`` `ID` STRING KEY ``).
pub fn schema_text(columns: &[Column], quoted: bool) -> String {
    columns
        .iter()
        .filter(|c| matches!(c.kind, ColumnKind::Key | ColumnKind::Value))
        .map(|c| {
            let key = if c.kind == ColumnKind::Key {
                " KEY"
            } else {
                ""
            };
            if quoted {
                format!("`{}` {}{key}", c.name, type_display(&c.ty))
            } else {
                format!("{} {}{key}", c.name, type_display(&c.ty))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
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
