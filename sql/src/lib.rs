//! The KSQL dialect: text to a typed AST with source spans, and back to SQL.
//!
//! Built on sqlparser's tokenizer (through `datafusion::sql::sqlparser`) with a dialect of our
//! own; the grammar follows ksqlDB's. Unquoted identifiers are upper-cased as in ksqlDB.
//!
//! ```
//! let statements = eddy_sql::parse_statements(
//!     "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='t', value_format='JSON');",
//! ).unwrap();
//! assert_eq!(statements.len(), 1);
//! ```

pub mod analysis;
pub mod ast;
pub mod coercion;
pub mod display;
mod error;
pub mod functions;
mod lexer;
mod parser;
mod span;
pub mod types;
mod variables;

pub use error::ParseError;
pub use lexer::{KsqlDialect, split_statements, tokenize};
pub use parser::{
    ParseOptions, ParsedStatement, parse_expression, parse_schema, parse_statement,
    parse_statements, parse_statements_with,
};
pub use span::{Position, Span};
pub use variables::substitute_variables;
